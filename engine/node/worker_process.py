"""One worker process of the node: ``python -m engine.node.worker_process --control-fd N``.

The supervisor starts it with one end of a socketpair. The first line on it is the boot
message (the configuration, the worker's slot, the shared call counts, the upstream); the
worker binds the AudioSocket port with SO_REUSEPORT, says ``ready``, then heartbeats about once
a second with its calls and its event loop's lag. It drains on ``{"cmd": "drain"}`` or on
SIGTERM (systemd may send it to every process), stops at once on ``{"cmd": "stop"}``, and
exits when the supervisor's end closes: a worker never outlives its node. SIGINT is ignored:
a Ctrl-C reaches the whole process group, and the supervisor orders what follows.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import gc
import logging
import os
import signal
import socket
import sys
from pathlib import Path
from typing import Any

from engine import logs
from engine.config import Config
from engine.errors import ControlChannelError, EngineError
from engine.node.control import Channel

__all__ = ["EXIT_BOOT", "EXIT_SUPERVISOR_LOST", "boot_message", "config_from_wire",
           "load_agents", "main"]

log = logging.getLogger("engine.node.worker")

EXIT_BOOT = 3
"""The worker could not start (bind, configuration): the node stops instead of re-forking."""
EXIT_SUPERVISOR_LOST = 4
"""The supervisor's end of the channel closed: calls were hung up and the worker left."""

HEARTBEAT = 1.0
RECORDS_FLUSH_S = 5.0
"""How long a stopping worker waits for its last call records to be written."""


def boot_message(config: Config, *, slot: int, counts: str, url: str,
                 key_required: bool, env: dict[str, str]) -> dict[str, Any]:
    """What the supervisor sends a new worker first (``env``: what the agent file's
    ``${NAME}`` references are read from)."""
    return {"boot": {
        "config": dataclasses.asdict(config), "slot": slot, "counts": counts, "url": url,
        "key_required": key_required, "env": env,
    }}


def load_agents(config: Config, env: dict[str, str]) -> Any:
    """The agent file ``AGENT_FILE`` names, or the default agent.

    Raises:
        AgentFileError: the file does not load, with every problem and its place.
    """
    from engine.agent import agentfile

    if not config.agent_file:
        return agentfile.default_agent(config)
    return agentfile.load(Path(config.agent_file), env, config)


def config_from_wire(values: dict[str, Any]) -> Config:
    """The inverse of ``dataclasses.asdict`` for :class:`Config` (JSON turned tuples to lists)."""
    names = {f.name for f in dataclasses.fields(Config)}
    fields: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v
                              for k, v in values.items() if k in names}
    return Config(**fields)


class _Channel(Channel):
    """The worker's end of the control channel."""

    def __init__(self, runtime: _Runtime) -> None:
        super().__init__()
        self.runtime = runtime

    def message(self, message: dict[str, Any]) -> None:
        self.runtime.command(message)

    def broken(self, error: ControlChannelError) -> None:
        logs.event(log, "control_channel_broken", logging.ERROR, error=str(error))
        self.runtime.lost()

    def closed(self) -> None:
        self.runtime.lost()


class _Runtime:
    """Runs one :class:`engine.worker.Worker` under the supervisor's commands."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.done: asyncio.Future[int] | None = None
        self.channel: _Channel | None = None
        self.worker: Any = None
        self.slot = -1
        self._ending: asyncio.Task[None] | None = None
        self._cut = False
        self._lag_ms = 0.0
        self._early: dict[str, Any] | None = None
        self._env: dict[str, str] = {}
        self._boot: asyncio.Future[dict[str, Any]] | None = None

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        self.done = loop.create_future()
        self._boot = loop.create_future()
        _, self.channel = await loop.connect_accepted_socket(lambda: _Channel(self), self.sock)
        boot = await self._boot
        try:
            await self._start(boot)
        except (EngineError, OSError) as exc:
            error = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            logs.event(log, "worker_boot_failed", logging.ERROR, slot=self.slot, error=error)
            return EXIT_BOOT
        loop.add_signal_handler(signal.SIGTERM, self._drain_default)
        heartbeat = loop.create_task(self._heartbeat())
        if self._early is not None:
            self.command(self._early)
        try:
            return await self.done
        finally:
            heartbeat.cancel()
            loop.remove_signal_handler(signal.SIGTERM)

    async def _start(self, boot: dict[str, Any]) -> None:
        self.slot = int(boot["slot"])
        from engine import upstream
        from engine.call import CallSettings
        from engine.node.admission import NodeCounts
        from engine.worker import Worker

        config = config_from_wire(boot["config"])
        settings = CallSettings.from_config(config)
        key = config.openai_api_key if boot["key_required"] else None
        endpoint = upstream.Endpoint.for_dialect(settings.dialect, boot["url"],
                                                 config.openai_model, key,
                                                 config.upstream_ca_file)
        counts = NodeCounts.attach(Path(boot["counts"]), self.slot)
        self._env = dict(boot.get("env") or {})
        agents = load_agents(config, self._env)
        manager = None
        if config.ami_user:
            from engine.agent.manager import Manager

            manager = Manager(config.ami_host, config.ami_port, config.ami_user,
                              config.ami_pass or "")
            manager.start()
        records = None
        if config.records_url:
            from engine.records.writer import RecordWriter

            records = RecordWriter(config.records_url)
            records.start()
        recorder = None
        if config.recordings_dir:
            from engine.records.recording import RecordingWriter

            recorder = RecordingWriter(Path(config.recordings_dir),
                                       max_age_s=config.recordings_max_days * 86400,
                                       max_bytes=config.recordings_max_mb << 20)
            recorder.start()
        self.worker = Worker(config, endpoint, settings, counts=counts, agents=agents,
                             manager=manager, records=records, recorder=recorder)
        port = await self.worker.start()
        # Everything alive now (modules, configuration, agents) lives as long as the worker:
        # moved out of the collector's sight, so a full collection, which stops the clock while
        # it runs, walks only what calls made (it walked 50,000 start-up objects, 35 ms, with
        # 300 calls up).
        gc.collect()
        gc.freeze()
        assert self.channel is not None
        self.channel.send({"ready": {"pid": os.getpid(), "slot": self.slot, "port": port}})

    def command(self, message: dict[str, Any]) -> None:
        if "boot" in message and self._boot is not None and not self._boot.done():
            self._boot.set_result(message["boot"])
            return
        cmd = message.get("cmd")
        if self.worker is None and cmd in ("drain", "stop"):
            self._early = message
            return
        if cmd == "reload":
            self._reload()
        elif cmd == "drain":
            self._drain(float(message.get("seconds", 0)))
        elif cmd == "stop":
            self._stop(0, "stop")
        else:
            logs.event(log, "control_unknown_command", logging.WARNING, command=str(cmd))

    def _reload(self) -> None:
        """Re-reads the agent file for new calls; calls in progress keep theirs, and a
        file that no longer loads keeps the old agent."""
        worker = self.worker
        try:
            worker.agents = load_agents(worker.config, self._env)
        except EngineError as exc:
            logs.event(log, "agent_reload_failed", logging.ERROR, slot=self.slot,
                       error=str(exc))
            return
        logs.event(log, "agent_reloaded", slot=self.slot, file=worker.config.agent_file)

    def lost(self) -> None:
        """The supervisor is gone: hang up every call and leave."""
        if self._boot is not None and not self._boot.done():
            self._boot.set_exception(ControlChannelError("closed before the boot message"))
            return
        self._stop(EXIT_SUPERVISOR_LOST, "supervisor_lost")

    def _drain_default(self) -> None:
        if self.worker is not None:
            self._drain(float(self.worker.config.drain_seconds))

    def _drain(self, seconds: float) -> None:
        """Refuse new calls, let these run up to ``seconds``, then hang up the rest."""
        if self._ending is not None or self.worker is None:
            return
        logs.event(log, "worker_draining", slot=self.slot, calls=len(self.worker.connections),
                   deadline_s=round(seconds, 3))
        self._ending = asyncio.get_running_loop().create_task(self._finish(seconds, 0, "drained"))

    def _stop(self, status: int, why: str) -> None:
        """Hang up every call now (cutting a drain short) and leave with ``status``."""
        if self.worker is None:
            if self.done is not None and not self.done.done():
                self.done.set_result(status)
            return
        if self._ending is not None:
            if self._cut:
                return
            self._ending.cancel()
        self._cut = True
        self._ending = asyncio.get_running_loop().create_task(self._finish(0.0, status, why))

    async def _finish(self, grace: float, status: int, why: str) -> None:
        worker = self.worker
        worker.draining = True
        self._beat()
        left = len(worker.connections)
        if grace > 0 and left:
            await worker.wait_idle(grace)
        hung_up = len(worker.connections)
        await worker.stop()
        if worker.manager is not None:
            await worker.manager.close()
        if worker.recorder is not None:
            await asyncio.to_thread(worker.recorder.stop, RECORDS_FLUSH_S)
        if worker.records is not None:
            await asyncio.to_thread(worker.records.close, RECORDS_FLUSH_S)
        logs.event(log, "worker_stopped", slot=self.slot, reason=why, calls_at_start=left,
                   hung_up=hung_up)
        if self.done is not None and not self.done.done():
            self.done.set_result(status)

    async def _heartbeat(self) -> None:
        loop = asyncio.get_running_loop()
        expected = loop.time() + HEARTBEAT
        while True:
            await asyncio.sleep(max(0.0, expected - loop.time()))
            now = loop.time()
            self._lag_ms = max(0.0, (now - expected) * 1000)
            expected = now + HEARTBEAT
            self._beat()

    def _beat(self) -> None:
        if self.channel is not None and self.worker is not None:
            self.channel.send({"beat": {
                "draining": self.worker.draining, "lag_ms": round(self._lag_ms, 3),
            }})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="voice-engine worker")
    parser.add_argument("--control-fd", type=int, required=True)
    parser.add_argument("--log-level", default="info")
    parser.add_argument("--log-format", default="json")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logs.setup(args.log_level, args.log_format)
    import uvloop

    sock = socket.socket(fileno=args.control_fd)
    try:
        return uvloop.run(_Runtime(sock).run())
    except ControlChannelError as exc:
        logs.event(log, "worker_boot_failed", logging.ERROR, error=str(exc))
        return EXIT_BOOT


if __name__ == "__main__":
    sys.exit(main())
