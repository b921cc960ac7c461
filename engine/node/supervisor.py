"""The node's supervisor: owns the address, forks the workers, answers health checks, drains.

``voice-engine run`` is this. It takes the AudioSocket address for the node's whole life (an
abstract Unix socket named for host:port, so a second node on the same address refuses to
start instead of silently joining the SO_REUSEPORT group), serves ``/health``, ``/ready``,
``/metrics`` and the agent-check, starts N worker processes and keeps them running.

Signal handlers only enqueue; :meth:`Supervisor.run` acts. SIGTERM (and a first SIGINT) drains
in order, each step logged: not ready and agent ``drain``; a short notice so the balancer
hears it; workers refuse new calls with ``00 00 00`` (listeners stay open); calls run on until
``DRAIN_SECONDS``; the rest are hung up cleanly. A second SIGINT stops at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from engine import __version__, fdlimit, logs
from engine.config import Config, environment
from engine.errors import (
    AddressInUse,
    ControlChannelError,
    EngineError,
    NodeError,
    WorkerBootFailed,
)
from engine.node.control import Channel
from engine.node.state import NodePhase, NodeState, WorkerView
from engine.node.worker_process import EXIT_BOOT, boot_message, load_agents

__all__ = ["Supervisor", "usable_cpus"]

log = logging.getLogger("engine.node")

BOOT_TIMEOUT = 30.0
HEARTBEAT_TIMEOUT = 10.0
DRAIN_NOTICE = 3.0
STOP_GRACE = 5.0
CHANNEL_GRACE = 2.0
BACKOFF_FIRST = 0.5
BACKOFF_MAX = 30.0
STABLE_AFTER = 60.0
WATCH_EVERY = 0.2
SIM_KEEP_SESSIONS = 100


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity), not the machine's count."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


class _Interrupted(Exception):
    """A signal arrived while the node was starting: it stops instead of serving."""


def _reason(exc: BaseException) -> str:
    return exc.strerror or str(exc) if isinstance(exc, OSError) else str(exc)


@dataclass(slots=True)
class _Worker:
    """One worker slot: its process, its channel, its restart schedule."""

    view: WorkerView
    proc: subprocess.Popen[bytes] | None = None
    channel: _Channel | None = None
    failures: int = 0
    restart_at: float | None = None


class _Channel(Channel):
    """The supervisor's end of one worker's control channel."""

    def __init__(self, node: Supervisor, worker: _Worker) -> None:
        super().__init__()
        self.node = node
        self.worker = worker

    def message(self, message: dict[str, Any]) -> None:
        self.node.worker_message(self.worker, message)

    def broken(self, error: ControlChannelError) -> None:
        logs.event(log, "control_channel_broken", logging.ERROR, slot=self.worker.view.slot,
                   error=str(error))
        self.node.kill(self.worker)

    def closed(self) -> None:
        """A worker without its channel cannot be told to drain: unless it is exiting anyway
        (its end closes as it exits), it is replaced."""
        worker = self.worker
        if worker.channel is self and worker.proc is not None:
            proc = worker.proc

            def kill_if_still_there() -> None:
                if worker.proc is proc:
                    self.node.kill(worker)

            asyncio.get_running_loop().call_later(CHANNEL_GRACE, kill_if_still_there)


class Supervisor:
    """One node: N workers behind one address.

    Args:
        config: the checked configuration.
        simulator: run the built-in Realtime simulator in this process and point workers at it.
        log_format: ``text`` or ``json``, passed on to the workers.
        worker_program: the command that runs one worker (tests start a failing one).
        env_file: the ``.env`` file the configuration came from (the agent file's
            ``${NAME}`` references read it too).
    """

    def __init__(self, config: Config, *, simulator: bool = False,
                 log_format: str = "json", worker_program: list[str] | None = None,
                 env_file: Path | None = None) -> None:
        self.config = config
        self.env_file = env_file
        self._env: dict[str, str] = {}
        self._agents: Any = None
        # -P: the working folder is not put on the path, so a checkout in it cannot shadow
        # the installed package (and its built extensions).
        self.worker_program = worker_program or [sys.executable, "-P", "-m",
                                                 "engine.node.worker_process"]
        self.simulator = simulator
        self.log_format = log_format
        self.workers_wanted = config.workers or usable_cpus()
        self.state = NodeState(max_calls=config.max_concurrent_calls)
        self.started = time.monotonic()
        self.listen_port = config.listen_port
        self._workers: list[_Worker] = []
        self._signals: asyncio.Queue[str] = asyncio.Queue()
        self._lock: socket.socket | None = None
        self._rundir: Path | None = None
        self._metrics_dir: Path | None = None
        self._counts: Any = None
        self._sim: Any = None
        self._url = config.openai_realtime_url
        self._closers: list[Any] = []
        self._fatal: NodeError | None = None
        self._wake = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._refusing = False
        self._drain_ends = 0.0

    # -- the node's life -----------------------------------------------------------------

    async def run(self) -> int:
        """Serves until drained or stopped; returns the exit status."""
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self._signals.put_nowait, signal.Signals(signum).name)
        loop.add_signal_handler(signal.SIGHUP, self._reload)
        try:
            try:
                await self._boot()
            except (EngineError, OSError) as exc:
                logs.event(log, "node_failed", logging.ERROR, error=_reason(exc))
                await self._stop_workers()
                return 1
            except _Interrupted as exc:
                logs.event(log, "signal", signal=str(exc), action="stop_while_starting")
                await self._stop_workers()
                return 0
            watch = loop.create_task(self._watch())
            try:
                return await self._serve()
            finally:
                watch.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watch
        finally:
            await self._teardown()
            for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(signum)

    async def _boot(self) -> None:
        config = self.config
        self._env = environment(None, self.env_file)
        agents = self._agents = load_agents(config, self._env)
        logs.event(log, "agent", file=config.agent_file, summary=agents.describe())
        nofile, hard = fdlimit.raise_soft_limit()  # the workers inherit it
        logs.event(log, "fd_limit", nofile=nofile, hard=hard)
        self._own_address()
        for port in agents.listen_ports:
            self._probe(config.listen_host, port)
        self._make_rundir()
        from engine.node.admission import NodeCounts
        self._counts = NodeCounts.create(self._rundir / "calls", self.workers_wanted)  # type: ignore[operator]
        health_port, agent_port = await self._serve_checks()
        if self.simulator:
            from engine.sim import SimConfig, Simulator

            self._sim = Simulator(SimConfig(), keep_sessions=SIM_KEEP_SESSIONS)
            await self._sim.start("127.0.0.1", 0)
            self._url = self._sim.url
            logs.event(log, "simulator_started", url=self._url)
        self.state.workers = [WorkerView(slot=i) for i in range(self.workers_wanted)]
        self._workers = [_Worker(view) for view in self.state.workers]
        for worker in self._workers:
            self._spawn(worker)
        end = time.monotonic() + BOOT_TIMEOUT
        while not all(w.view.ready for w in self._workers):
            if not self._signals.empty():
                raise _Interrupted(self._signals.get_nowait())
            for worker in self._workers:
                self._reap(worker)
            if self._fatal is not None:
                raise self._fatal
            if time.monotonic() > end:
                slot = next(w.view.slot for w in self._workers if not w.view.ready)
                raise WorkerBootFailed(slot, None)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), WATCH_EVERY)
            self._wake.clear()
        self.state.phase = NodePhase.SERVING
        logs.event(log, "node_ready", host=config.listen_host, port=self.listen_port,
                   health_port=health_port, agent_port=agent_port,
                   workers=[w.view.pid for w in self._workers], version=__version__,
                   simulator=self.simulator)
        if self.log_format == "text":
            url = urlsplit(self._url)
            upstream = ("the built-in Realtime simulator" if self.simulator
                        else f"{url.scheme}://{url.hostname}")
            print(f"voice-engine is answering AudioSocket calls on {config.listen_host}:"
                  f"{self.listen_port} with {len(self._workers)} worker(s), bridged to "
                  f"{upstream}; health on http://{config.listen_host}:{health_port}/health, "
                  f"agent-check on port {agent_port}. Ctrl-C drains; a second Ctrl-C stops "
                  "at once.", file=sys.stderr, flush=True)

    async def _serve(self) -> int:
        drain: asyncio.Task[None] | None = None
        while True:
            get = asyncio.ensure_future(self._signals.get())
            waits: set[asyncio.Future[Any]] = {get}
            if drain is not None:
                waits.add(drain)
            done, _ = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            if get not in done:
                get.cancel()
                assert drain is not None
                drain.result()
                return 0
            name = get.result()
            if drain is None:
                logs.event(log, "signal", signal=name, action="drain")
                drain = asyncio.ensure_future(self._drain())
            elif name == "SIGINT":
                logs.event(log, "signal", signal=name, action="stop_now")
                drain.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await drain
                await self._stop_workers()
                return 0
            else:
                logs.event(log, "signal", signal=name, action="already_draining")

    async def _drain(self) -> None:
        began = time.monotonic()
        seconds = float(self.config.drain_seconds)
        self._drain_ends = began + seconds
        self.state.phase = NodePhase.DRAINING
        self._refresh()
        logs.event(log, "drain_not_ready", calls=self.state.calls, deadline_s=seconds)
        notice = min(DRAIN_NOTICE, seconds)
        await asyncio.sleep(notice)
        left = max(0.0, seconds - notice)
        self._refusing = True
        for worker in self._workers:
            self._command(worker)
        self._refresh()
        logs.event(log, "drain_refusing_new_calls", calls=self.state.calls, deadline_s=left)
        end = time.monotonic() + left + STOP_GRACE
        while any(w.proc is not None for w in self._workers):
            if time.monotonic() > end:
                logs.event(log, "drain_overran", logging.WARNING,
                           workers=[w.view.pid for w in self._workers if w.proc is not None])
                break
            await asyncio.sleep(WATCH_EVERY)
        await self._stop_workers()
        logs.event(log, "drained", drain_s=round(time.monotonic() - began, 3))

    async def _stop_workers(self) -> None:
        """Tells every worker to hang up and leave; kills those that linger."""
        self.state.phase = NodePhase.STOPPING
        for worker in self._workers:
            self._command(worker)
        end = time.monotonic() + STOP_GRACE
        while any(w.proc is not None for w in self._workers) and time.monotonic() < end:
            for worker in self._workers:
                self._reap(worker)
            await asyncio.sleep(0.05)
        for worker in self._workers:
            if worker.proc is not None:
                logs.event(log, "worker_killed", logging.WARNING, slot=worker.view.slot,
                           pid=worker.proc.pid, why="did not stop in time")
                worker.proc.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    worker.proc.wait(STOP_GRACE)
                self._reap(worker)

    async def _teardown(self) -> None:
        for close in reversed(self._closers):
            with contextlib.suppress(Exception):
                result = close()
                if asyncio.iscoroutine(result):
                    await result
        self._closers.clear()
        if self._sim is not None:
            await self._sim.stop()
            self._sim = None
        if self._counts is not None:
            self._counts.close()
            self._counts = None
        if self._rundir is not None:
            shutil.rmtree(self._rundir, ignore_errors=True)
            self._rundir = None
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    # -- boot steps ------------------------------------------------------------------------

    def _own_address(self) -> None:
        """Takes the node's name and checks the AudioSocket port is free for our workers."""
        host = self.config.listen_host
        port = self.listen_port
        if port != 0:
            self._take_name(host, port)
        self.listen_port = self._probe(host, port)
        if port == 0:
            self._take_name(host, self.listen_port)

    @staticmethod
    def _probe(host: str, port: int) -> int:
        """Binds ``host:port`` without SO_REUSEPORT and lets go: a program holding it (with or
        without the option) is found now, not by a worker that would silently share it."""
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((host, port))
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    raise AddressInUse("AudioSocket", host, port, by_node=False) from None
                raise NodeError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
            bound: int = probe.getsockname()[1]
            return bound

    def _take_name(self, host: str, port: int) -> None:
        lock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            lock.bind(f"\0voice-engine:{host}:{port}")
        except OSError as exc:
            lock.close()
            if exc.errno == errno.EADDRINUSE:
                raise AddressInUse("AudioSocket", host, port, by_node=True) from None
            raise
        self._lock = lock

    def _make_rundir(self) -> None:
        base = os.environ.get("RUNTIME_DIRECTORY") or None
        self._rundir = Path(tempfile.mkdtemp(prefix="voice-engine-", dir=base))
        given = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
        name = f"{self.config.listen_host}_{self.listen_port}".replace(":", "_")
        metrics = Path(given) / name if given else self._rundir / "metrics"
        metrics.mkdir(parents=True, exist_ok=True)
        for stale in metrics.glob("*.db"):
            stale.unlink()
        self._metrics_dir = metrics

    async def _serve_checks(self) -> tuple[int, int]:
        from aiohttp import web

        from engine.node.health import AgentCheck, health_app

        host = self.config.listen_host
        assert self._metrics_dir is not None
        runner = web.AppRunner(health_app(self.state, self._metrics_dir, self.started,
                                          self._refresh), access_log=None)
        await runner.setup()
        self._closers.append(runner.cleanup)
        site = web.TCPSite(runner, host, self.config.health_port, reuse_address=True)
        try:
            await site.start()
        except OSError as exc:
            raise self._bind_error("health", host, self.config.health_port, exc) from None
        health_port = int(runner.addresses[-1][1])
        loop = asyncio.get_running_loop()
        try:
            agent = await loop.create_server(lambda: AgentCheck(self.state, self._refresh),
                                             host, self.config.agent_port, reuse_address=True)
        except OSError as exc:
            raise self._bind_error("agent-check", host, self.config.agent_port, exc) from None
        self._closers.append(agent.close)
        agent_port: int = agent.sockets[0].getsockname()[1]
        return health_port, agent_port

    @staticmethod
    def _bind_error(what: str, host: str, port: int, exc: OSError) -> NodeError:
        if exc.errno == errno.EADDRINUSE:
            return AddressInUse(what, host, port, by_node=False)
        return NodeError(f"cannot listen for {what} on {host}:{port}: {exc.strerror or exc}")

    # -- workers ---------------------------------------------------------------------------

    def _spawn(self, worker: _Worker) -> None:
        assert self._metrics_dir is not None and self._rundir is not None
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        env = dict(os.environ, PROMETHEUS_MULTIPROC_DIR=str(self._metrics_dir))
        argv = [*self.worker_program, "--control-fd", str(theirs.fileno()),
                "--log-level", self.config.log_level, "--log-format", self.log_format]
        worker.proc = subprocess.Popen(argv, pass_fds=(theirs.fileno(),), env=env,
                                       stdin=subprocess.DEVNULL, process_group=0)
        theirs.close()
        view = worker.view
        view.pid = worker.proc.pid
        view.ready = False
        view.draining = False
        view.calls = 0
        view.started = view.last_beat = time.monotonic()
        channel = _Channel(self, worker)
        worker.channel = channel
        task = asyncio.get_running_loop().create_task(self._attach(ours, channel, worker))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        logs.event(log, "worker_started", slot=view.slot, pid=view.pid)

    async def _attach(self, sock: socket.socket, channel: _Channel, worker: _Worker) -> None:
        loop = asyncio.get_running_loop()
        await loop.connect_accepted_socket(lambda: channel, sock)
        channel.send(boot_message(
            self.config.replace(listen_port=self.listen_port), slot=worker.view.slot,
            counts=str(self._rundir / "calls"),  # type: ignore[operator]
            url=self._url, key_required=not self.simulator, env=self._env,
        ))

    def worker_message(self, worker: _Worker, message: dict[str, Any]) -> None:
        view = worker.view
        view.last_beat = time.monotonic()
        if "ready" in message:
            view.ready = True
            logs.event(log, "worker_ready", slot=view.slot, pid=view.pid)
            self._wake.set()
            self._command(worker)
        beat = message.get("beat")
        if isinstance(beat, dict):
            view.draining = bool(beat.get("draining", False))
            view.lag_ms = float(beat.get("lag_ms", 0.0))

    def _reload(self) -> None:
        """SIGHUP: the agent file is read again and, if it loads, every worker re-reads it
        for its new calls; if not, the node keeps the one it has and says why."""
        try:
            self._env = environment(None, self.env_file)
            agents = load_agents(self.config, self._env)
        except EngineError as exc:
            logs.event(log, "agent_reload_failed", logging.ERROR, error=str(exc),
                       kept="the agent file loaded before")
            return
        if sorted(agents.listen_ports) != sorted(self._agents.listen_ports):
            logs.event(log, "agent_reload_failed", logging.ERROR,
                       error="the profiles' listen ports changed; listeners are bound at start, "
                             "so restart the node to take this file",
                       kept="the agent file loaded before")
            return
        self._agents = agents
        logs.event(log, "agent_reload", file=self.config.agent_file, summary=agents.describe())
        for worker in self._workers:
            if worker.channel is not None:
                worker.channel.send({"cmd": "reload"})

    def _command(self, worker: _Worker) -> None:
        """Tells ``worker`` what the node is doing, if it is doing more than serving; sent
        again when a worker becomes ready, so one that was starting does not miss it."""
        if worker.channel is None:
            return
        if self.state.phase is NodePhase.STOPPING:
            worker.channel.send({"cmd": "stop"})
        elif self._refusing:
            left = max(0.0, self._drain_ends - time.monotonic())
            worker.channel.send({"cmd": "drain", "seconds": left})

    def kill(self, worker: _Worker) -> None:
        if worker.proc is not None and worker.proc.poll() is None:
            worker.proc.kill()

    def _reap(self, worker: _Worker) -> None:
        """Notices a worker that exited: frees its slot, and replaces it or stops the node."""
        proc = worker.proc
        if proc is None or proc.poll() is None:
            return
        from prometheus_client import multiprocess

        view = worker.view
        status = proc.returncode
        was_ready = view.ready
        worker.proc = None
        if worker.channel is not None:
            worker.channel.close()
            worker.channel = None
        assert view.pid is not None
        multiprocess.mark_process_dead(view.pid, str(self._metrics_dir))
        if self._counts is not None:
            self._counts.clear_slot(view.slot)
        lived = time.monotonic() - view.started
        view.pid = None
        view.ready = False
        view.calls = 0
        phase = self.state.phase
        if phase in (NodePhase.DRAINING, NodePhase.STOPPING):
            logs.event(log, "worker_exited", slot=view.slot, status=status)
            return
        if phase is NodePhase.STARTING and (status == EXIT_BOOT or not was_ready):
            self._fail(WorkerBootFailed(view.slot, status))
            return
        worker.failures = 1 if lived > STABLE_AFTER else worker.failures + 1
        delay = min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** (worker.failures - 1))
        worker.restart_at = time.monotonic() + delay
        logs.event(log, "worker_died", logging.ERROR, slot=view.slot, status=status,
                   booted=was_ready, lived_s=round(lived, 3), restart_in_s=delay)

    def _fail(self, error: NodeError) -> None:
        if self._fatal is None:
            self._fatal = error
            self._wake.set()

    async def _watch(self) -> None:
        """Reaps exited workers, restarts them on time, kills unresponsive ones."""
        while True:
            now = time.monotonic()
            for worker in self._workers:
                self._reap(worker)
                view = worker.view
                if (worker.proc is None and worker.restart_at is not None
                        and now >= worker.restart_at
                        and self.state.phase is NodePhase.SERVING):
                    worker.restart_at = None
                    view.restarts += 1
                    self._spawn(worker)
                elif worker.proc is not None and (
                        (view.ready and now - view.last_beat > HEARTBEAT_TIMEOUT)
                        or (not view.ready and now - view.started > BOOT_TIMEOUT)):
                    logs.event(log, "worker_unresponsive", logging.ERROR, slot=view.slot,
                               pid=view.pid, booted=view.ready,
                               silent_s=round(now - view.last_beat, 3))
                    self.kill(worker)
            self._refresh()
            await asyncio.sleep(WATCH_EVERY)

    def _refresh(self) -> None:
        """The node-wide call count and each worker's, from the shared counts (exact)."""
        if self._counts is None:
            return
        per_slot = self._counts.per_slot()
        self.state.calls = sum(per_slot)
        for view, calls in zip(self.state.workers, per_slot, strict=False):
            if view.pid is not None:
                view.calls = calls
