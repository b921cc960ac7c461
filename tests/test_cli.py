"""The command line: what exists works, what does not yet exist says so and fails."""

from __future__ import annotations

import subprocess
import sys

import pytest


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "engine", *args], capture_output=True, text=True, timeout=60
    )


def test_info_names_the_implementation() -> None:
    out = _cli("info")
    assert out.returncode == 0, out.stderr
    assert "media core: native" in out.stdout
    assert "8000" in out.stdout and "16000" in out.stdout
    assert '"event":"media_core"' in out.stderr and '"impl":"native"' in out.stderr


@pytest.mark.parametrize("command", ["run", "sim", "dial", "bench", "check"])
def test_unbuilt_commands_refuse(command: str) -> None:
    out = _cli(command, "--workers", "2")
    assert out.returncode == 2
    assert "not built yet" in out.stderr


def test_version() -> None:
    out = _cli("--version")
    assert out.returncode == 0
    assert "voice-engine" in out.stdout
