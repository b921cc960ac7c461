"""Secrets never reach an output: the API key, the manager's secret and a backend's key go
through a whole node (a refused upstream handshake, a good call with records, recordings and
transcripts on, the metrics, the configuration check, the records command) and none of them
is found in anything the node wrote or printed."""

from __future__ import annotations

import signal
import subprocess
import sys
import uuid
from pathlib import Path

from engine import caller
from engine.sim import SimConfig, Simulator
from engine.sim.config import parse_fault
from tests.nodeproc import ROOT, NodeProcess
from tests.test_agent_tools import quiet, run, speech

API_KEY = "sk-proj-SECRET-1d2c3b4a5e6f7089"
AMI_SECRET = "ami-SECRET-5f4e3d2c"
BACKEND_KEY = "backend-SECRET-77aa88bb"
SECRETS = (API_KEY, AMI_SECRET, BACKEND_KEY)


def _everything_written(root: Path) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_no_secret_reaches_logs_metrics_records_recordings_or_commands(tmp_path: Path) -> None:
    agent = tmp_path / "agent.toml"
    agent.write_text('''
[[tool]]
name = "end_call"
description = "End the call."
action = { type = "hangup" }

[[tool]]
name = "lookup"
description = "Look the caller up."
[tool.action]
type = "http"
method = "GET"
url = "{BACKEND_API_URL}/c"
headers = { Authorization = "Bearer ${BACKEND_API_KEY}" }
''')
    env = {
        "OPENAI_API_KEY": API_KEY, "AMI_USER": "voice-engine", "AMI_PASS": AMI_SECRET,
        "AMI_HOST": "127.0.0.1", "AMI_PORT": "1", "BACKEND_API_URL": "http://127.0.0.1:1",
        "BACKEND_API_KEY": BACKEND_KEY, "AGENT_FILE": str(agent), "LOG_LEVEL": "debug",
        "LOG_TRANSCRIPTS": "true", "TRANSCRIPTION_MODEL": "whisper-1",
        "RECORDS_URL": f"sqlite:///{tmp_path}/calls.db",
        "RECORDINGS_DIR": str(tmp_path / "recordings"), "WORKERS": "1",
    }
    outputs: dict[str, str] = {}

    async def body() -> None:
        sim = Simulator(SimConfig(api_key=API_KEY, response_ms=400, tone_hz=1000.0))
        await sim.start()
        sim.queue_fault(parse_fault("401"))  # the first handshake is refused
        node = NodeProcess(tmp_path, simulator=False, OPENAI_REALTIME_URL=sim.url, **env)
        try:
            await node.ready()
            refused = await caller.call("127.0.0.1", node.port, kind=0x10,
                                        pcm=speech(0.3) + quiet(1.0))
            assert refused.hangup == caller.ENGINE_HANGUP
            good = await caller.call("127.0.0.1", node.port, kind=0x10, uuid=uuid.uuid4(),
                                     pcm=speech(0.4) + quiet(1.6))
            assert good.hangup == caller.CALLER_FINISHED and good.frames_received > 50
            await node.wait_event("call_ended", count=2)
            status, metrics = await node.get("/metrics")
            assert status == 200
            outputs["metrics"] = str(metrics)
            node.signal(signal.SIGTERM)
            assert await node.exited() == 0
            outputs["log"] = node.text()
        finally:
            node.close()
            await sim.stop()
        assert '"reason":"upstream_failed"' in outputs["log"]
        assert "UpstreamAuthFailed" in outputs["log"]

    run(body, 60)
    for args in (["check", "--env-file", str(tmp_path / "check.env")],
                 ["calls", "list", "--json", "--records-url", f"sqlite:///{tmp_path}/calls.db"]):
        (tmp_path / "check.env").write_text("".join(f"{k}={v}\n" for k, v in env.items()))
        done = subprocess.run([sys.executable, "-m", "engine", *args], capture_output=True,
                              text=True, timeout=60, cwd=tmp_path,
                              env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
        assert done.returncode == 0, done.stderr
        outputs[args[0]] = done.stdout + done.stderr
    assert '"end_reason": "caller_hangup"' in outputs["calls"]
    assert "OPENAI_API_KEY=(set)" in outputs["check"]
    written = _everything_written(tmp_path)
    assert any(name.endswith(".wav") for name in written)
    assert any(name.endswith("calls.db") for name in written)
    (tmp_path / "check.env").unlink()
    for secret in SECRETS:
        for name, text in outputs.items():
            assert secret not in text, f"{secret} in {name}"
        for name, data in _everything_written(tmp_path).items():
            if name.endswith("agent.toml"):
                continue
            assert secret.encode() not in data, f"{secret} in {name}"
