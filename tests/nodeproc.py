"""A real node in a child process (``python -m engine run``) for tests: start, read its log,
query its health and agent ports, signal it."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson

from engine.bench.run import log_lines

ROOT = Path(__file__).resolve().parent.parent
CONFIG_NAMES = ("OPENAI_API_KEY", "LISTEN_PORT", "HEALTH_PORT", "AGENT_PORT", "WORKERS",
                "DRAIN_SECONDS", "LOG_FORMAT", "MAX_CONCURRENT_CALLS", "ALLOW_SOURCES",
                "TRUSTED_PROXIES", "MAX_CALLS_PER_SOURCE", "PROMETHEUS_MULTIPROC_DIR")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class NodeProcess:
    """``voice-engine run --simulator`` with ``env`` on top of quiet defaults."""

    def __init__(self, tmp: Path, *, workers: int = 2, port: int | None = None,
                 name: str = "node", simulator: bool = True, nofile: int | None = None,
                 **env: str) -> None:
        self.log_path = tmp / f"{name}.log"
        self.port = port if port is not None else free_port()
        base = {k: v for k, v in os.environ.items() if k not in CONFIG_NAMES}
        base.update({"LISTEN_PORT": str(self.port), "HEALTH_PORT": "0", "AGENT_PORT": "0",
                     "WORKERS": str(workers), "LOG_FORMAT": "json", "DRAIN_SECONDS": "30",
                     "PYTHONPATH": str(ROOT)})
        base.update(env)
        self._log = self.log_path.open("wb")
        # util-linux's prlimit sets the descriptor limit the way systemd's LimitNOFILE does.
        limit = ["prlimit", f"--nofile={nofile}:{nofile}", "--"] if nofile else []
        self.proc = subprocess.Popen(
            [*limit, sys.executable, "-m", "engine", "run",
             *(["--simulator"] if simulator else [])],
            cwd=tmp, env=base,
            stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
        )
        self.health_port = 0
        self.agent_port = 0

    def lines(self) -> list[dict[str, Any]]:
        return log_lines(self.log_path)

    def events(self, name: str) -> list[dict[str, Any]]:
        return [line for line in self.lines() if line.get("event") == name]

    def text(self) -> str:
        return self.log_path.read_bytes().decode(errors="replace")

    async def ready(self, timeout: float = 30.0) -> NodeProcess:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            (line, *_) = self.events("node_ready") or [None]
            if line is not None:
                self.health_port = int(line["health_port"])
                self.agent_port = int(line["agent_port"])
                return self
            if self.proc.poll() is not None:
                raise AssertionError(f"node exited {self.proc.returncode}: {self.text()}")
            await asyncio.sleep(0.05)
        raise AssertionError(f"node not ready in {timeout} s: {self.text()}")

    async def wait_event(self, name: str, timeout: float = 10.0, count: int = 1,
                         **fields: Any) -> list[dict[str, Any]]:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            found = [e for e in self.events(name)
                     if all(e.get(k) == v for k, v in fields.items())]
            if len(found) >= count:
                return found
            await asyncio.sleep(0.05)
        raise AssertionError(f"no {count} {name} {fields} in {timeout} s: {self.text()}")

    async def get(self, path: str) -> tuple[int, Any]:
        """(status, body) of ``GET path`` on the health port; JSON bodies parsed."""
        reader, writer = await asyncio.open_connection("127.0.0.1", self.health_port)
        writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        raw = await reader.read()
        writer.close()
        head, _, body = raw.partition(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        if b"application/json" in head:
            return status, orjson.loads(body)
        return status, body.decode()

    async def agent(self) -> str:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.agent_port)
        line = await reader.read()
        writer.close()
        return line.decode()

    def signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    async def exited(self, timeout: float = 20.0) -> int:
        end = time.monotonic() + timeout
        while self.proc.poll() is None:
            if time.monotonic() > end:
                raise AssertionError(f"node still running after {timeout} s: {self.text()}")
            await asyncio.sleep(0.05)
        return self.proc.returncode

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
