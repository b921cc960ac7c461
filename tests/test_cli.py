"""The command line: what exists works, what does not yet exist says so and fails."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import orjson

# No key, no .env: what a fresh machine has. The checkout on the path, whatever the cwd.
_ENV = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
_ENV["PYTHONPATH"] = os.pathsep.join(
    filter(None, [str(Path(__file__).resolve().parent.parent), os.environ.get("PYTHONPATH")])
)


def _cli(*args: str, cwd: Path | None = None, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "engine", *args], capture_output=True, text=True, timeout=60,
        env={**_ENV, **env}, cwd=cwd,
    )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def test_info_names_the_implementation() -> None:
    out = _cli("info")
    assert out.returncode == 0, out.stderr
    assert "media core: native" in out.stdout
    assert "8000" in out.stdout and "16000" in out.stdout
    assert '"event":"media_core"' in out.stderr and '"impl":"native"' in out.stderr


def test_version() -> None:
    out = _cli("--version")
    assert out.returncode == 0
    assert "voice-engine" in out.stdout


def test_log_level_is_a_choice() -> None:
    out = _cli("--log-level", "chatty", "info")
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "'chatty' is not one of 'debug', 'info', 'warning', 'error'" in out.stderr
    assert _cli("--log-level", "WARNING", "info").returncode == 0
    out = _cli("info", LOG_LEVEL="chatty")
    assert out.returncode == 2 and "Traceback" not in out.stderr


def test_log_format_text_for_people_json_for_pipes() -> None:
    out = _cli("--log-format", "text", "info")
    assert out.returncode == 0, out.stderr
    assert out.stderr.split()[1:4] == ["info", "media_core", "impl=native"]
    out = _cli("info", LOG_FORMAT="TEXT")
    assert out.stderr.split()[1:3] == ["info", "media_core"]
    assert '"event":"media_core"' in _cli("info").stderr  # auto, and stderr is a pipe
    out = _cli("--log-format", "xml", "info")
    assert out.returncode == 2 and "'xml' is not one of 'auto', 'text', 'json'" in out.stderr


def test_log_choices_before_the_command_reach_its_configuration(tmp_path: Path) -> None:
    """``voice-engine --log-format text run``: run loads LOG_FORMAT from its configuration."""
    out = _cli("--log-format", "text", "--log-level", "debug", "check", "--simulator",
               cwd=tmp_path)
    assert "LOG_FORMAT=text" in out.stdout and "LOG_LEVEL=debug" in out.stdout
    out = _cli("--log-format", "text", "check", "--simulator", "--log-format", "json",
               cwd=tmp_path)
    assert "LOG_FORMAT=json" in out.stdout
    (tmp_path / ".env").write_text("LOG_FORMAT=json\n")
    assert "LOG_FORMAT=json" in _cli("check", "--simulator", cwd=tmp_path).stdout


def test_unknown_impl_is_one_line_even_for_help() -> None:
    out = _cli("--help", VOICE_ENGINE_IMPL="fast")
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr == (
        "voice-engine: VOICE_ENGINE_IMPL must be 'native' or 'python', not 'fast'\n"
    )


def test_missing_native_build_is_one_paragraph_without_a_traceback() -> None:
    # A finder that hides the compiled modules, as on a checkout nobody built.
    code = (
        "import importlib.abc, runpy, sys\n"
        "class Hide(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.startswith('engine._native.'):\n"
        "            raise ImportError('no compiled module ' + name)\n"
        "sys.meta_path.insert(0, Hide())\n"
        "sys.argv = ['voice-engine', 'info']\n"
        "runpy.run_module('engine', run_name='__main__')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, env=_ENV)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert out.stderr.count("\n") == 1 and out.stderr.startswith("voice-engine: the native")
    assert "pip install" in out.stderr and "VOICE_ENGINE_IMPL=python" in out.stderr


def test_run_without_a_key_refuses_and_says_how(tmp_path: Path) -> None:
    out = _cli("run", cwd=tmp_path)
    assert out.returncode == 2
    assert "OPENAI_API_KEY is not set" in out.stderr and "--simulator" in out.stderr


def test_check_lists_every_problem(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("APPEND_MS=5\nUPSTREAM_FORMAT=opus\nOPENAI_API_KEY=sk-x\n")
    out = _cli("check", cwd=tmp_path)
    assert out.returncode == 2
    assert "APPEND_MS" in out.stderr and "UPSTREAM_FORMAT" in out.stderr
    out = _cli("check", "--append-ms", "60", "--upstream-format", "pcmu", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "APPEND_MS=60" in out.stdout and "OPENAI_API_KEY=(set)" in out.stdout
    assert "sk-x" not in out.stdout + out.stderr


def test_check_lists_the_agent_files_problems_with_the_settings(tmp_path: Path) -> None:
    (tmp_path / "agent.toml").write_text(
        '[agent]\nvoise = "alloy"\n[[tool]]\nname = "lookup"\ndescription = "d"\n'
        'action = { type = "http", url = "{BACKEND_API_URL}/c", headers = { Authorization = '
        '"Bearer ${BACKEND_API_KEY}" } }\n')
    out = _cli("check", "--simulator", "--append-ms", "5", "--agent", "agent.toml", cwd=tmp_path)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "APPEND_MS='5': must be between 20 and 100" in out.stderr
    assert "agent.toml: [agent] voise: unknown key; did you mean voice?" in out.stderr
    assert ('agent.toml: [[tool]] #1 "lookup" action.url: {BACKEND_API_URL} needs the '
            "environment variable BACKEND_API_URL, which is not set") in out.stderr
    assert "environment variable BACKEND_API_KEY is not set" in out.stderr
    assert out.stdout == ""


def test_check_summarises_a_good_agent_file_and_keeps_its_secret(tmp_path: Path) -> None:
    example = Path(__file__).resolve().parent.parent / "examples" / "receptionist.toml"
    (tmp_path / ".env").write_text(f"AGENT_FILE={example}\nBACKEND_API_URL=http://127.0.0.1:1\n"
                                   "BACKEND_API_KEY=sk-backend-hidden\n")
    out = _cli("check", "--simulator", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert f"AGENT_FILE={example}" in out.stdout
    assert "profile default on LISTEN_PORT: tools transfer_to_department, end_call" in out.stdout
    assert "profile spanish on port 9096" in out.stdout
    assert "0=transfer_to_department:operator" in out.stdout
    assert "sk-backend-hidden" not in out.stdout + out.stderr
    out = _cli("check", "--simulator", "--agent-file", str(tmp_path / "none.toml"), cwd=tmp_path)
    assert out.returncode == 2 and "none.toml: cannot read it" in out.stderr
    (tmp_path / "bare").mkdir()
    out = _cli("check", "--simulator", cwd=tmp_path / "bare")
    assert "agent: the default (SYSTEM_PROMPT and end_call)" in out.stdout


def test_run_with_the_simulator_answers_a_call(tmp_path: Path) -> None:
    """The README's quick start: no key, the built-in simulator, a test call, SIGTERM."""
    port = _free_port()
    engine = subprocess.Popen(
        [sys.executable, "-m", "engine", "run", "--simulator", "--listen-port", str(port),
         "--health-port", "0", "--agent-port", "0"],
        stderr=subprocess.PIPE, text=True, env=_ENV, cwd=tmp_path,
    )
    try:
        assert engine.stderr is not None
        deadline = time.monotonic() + 30
        lines = []
        while time.monotonic() < deadline:
            line = engine.stderr.readline()
            lines.append(line)
            if '"event":"node_ready"' in line or not line:
                break
        assert '"event":"node_ready"' in lines[-1], "".join(lines)
        record = tmp_path / "reply.wav"
        out = _cli("dial", f"127.0.0.1:{port}", "--seconds", "4", "--json",
                   "--record", str(record))
        assert out.returncode == 0, out.stderr
        report = orjson.loads(out.stdout)
        assert report["hangup"] == "caller_finished"
        assert report["bursts"] >= 1 and report["wrong_kind_frames"] == 0
        assert record.stat().st_size > 44 + 2 * 8000
    finally:
        engine.send_signal(signal.SIGTERM)
        rest = engine.communicate(timeout=30)[1]
    assert engine.returncode == 0, rest
    assert '"event":"call_ended"' in rest and '"reason":"caller_hangup"' in rest
    # The node kept the call's record where RECORDS_URL says by default: ./calls.db.
    listed = _cli("calls", "list", "--json", cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    (doc,) = orjson.loads(listed.stdout)
    assert doc["uuid"] == report["uuid"] and doc["end_reason"] == "caller_hangup"
    assert doc["responses"] >= 1 and doc["cost_usd"] > 0
