"""The native code under ASan and UBSan: the harness of ``tests/sanitize.py`` and a short run.

A machine without clang or its ASan runtime skips these, unless
``VOICE_ENGINE_REQUIRE_SANITIZERS=1`` (as CI sets) makes that a failure. The full run is
``python tests/sanitize.py``; this one builds the same way and runs the tests that reach every
native module quickest.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import sanitize

SCRIPT = Path(sanitize.__file__)
# Every native module: the parser both ways, uplink (resampler, μ-law, frame headers and
# masks), the frame builder and reader, the playout buffer, the clock's pass and timerfd,
# G.711, the VAD, and the call's state machine with base64 deltas.
SUBSET = [
    "tests/test_audiosocket_client.py", "tests/test_call.py", "tests/test_clock.py",
    "tests/test_energy.py", "tests/test_g711.py", "tests/test_playout.py",
    "tests/test_uplink.py", "tests/test_wsframe.py",
]
# An overrun in uninstrumented code still meets ASan's memset interceptor: the preload, the
# report files and the verdict are checked with it, without a native build.
OVERRUN = "import ctypes; b = ctypes.create_string_buffer(64); ctypes.memset(b, 0, 65)"


@pytest.fixture(scope="module")
def tools() -> sanitize.Tools:
    try:
        return sanitize.find_tools()
    except sanitize.MissingTool as missing:
        if os.environ.get("VOICE_ENGINE_REQUIRE_SANITIZERS") == "1":
            pytest.fail(f"VOICE_ENGINE_REQUIRE_SANITIZERS=1 but {missing}")
        pytest.skip(f"sanitizer run not possible: {missing}")


def test_a_report_fails_the_run_and_is_shown(tools: sanitize.Tools, tmp_path: Path,
                                             capfd: pytest.CaptureFixture[str]) -> None:
    reports = tmp_path / "reports"
    env = sanitize.sanitizer_env(tmp_path, tools, reports)
    status = sanitize.run_checked([sys.executable, "-c", OVERRUN], tmp_path, env, reports)
    assert status != 0
    assert "AddressSanitizer: heap-buffer-overflow" in capfd.readouterr().err


def test_a_child_report_fails_a_run_whose_command_passed(tools: sanitize.Tools,
                                                        tmp_path: Path) -> None:
    # The child's abort is ignored; its report is not.
    parent = f"import subprocess, sys; subprocess.run([sys.executable, '-c', {OVERRUN!r}])"
    reports = tmp_path / "reports"
    env = sanitize.sanitizer_env(tmp_path, tools, reports)
    assert sanitize.run_checked([sys.executable, "-c", parent], tmp_path, env, reports) == 1


def test_the_native_tests_are_clean_under_the_sanitizers(tools: sanitize.Tools) -> None:
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--only", *SUBSET, "-q"],
        capture_output=True, text=True, timeout=280,
    )
    if result.returncode != 0:  # in the captured output, which pytest shows whole
        print(result.stdout)
        print(result.stderr, file=sys.stderr)
    assert result.returncode == 0, "the sanitized run failed: its output is above"
    assert "sanitize: pytest ran in" in result.stderr
