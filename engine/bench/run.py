"""One bench run: the engine in its own process, the simulator and the load generator in this one.

:func:`run` starts the engine as ``voice-engine run`` would (pinned to its cores, pointed at
the simulator, logging to a file), ramps the load generator to the requested calls, holds
them, samples the engine's CPU and memory from ``/proc`` while it holds, then hangs up, stops
the engine and returns a :class:`~engine.bench.report.BenchResult`. With ``target`` it loads an
engine that is already running instead (CPU and memory are then not measured).

With ``churn`` (a soak) the calls keep ending and being replaced through the hold, and the
engine's resources (RSS, open fds and threads from ``/proc``, its loop tasks from its
``/metrics``) are sampled at the end of every minute, before the first call and after the
last has ended and the engine has settled: :mod:`engine.bench.soak` reads them.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson

import engine as engine_package
from engine import logs
from engine.bench import measure, soak
from engine.bench.loadgen import CallerTone, LoadGenerator, TalkPattern
from engine.bench.observe import SimRecorder
from engine.bench.procstat import ProcessTree
from engine.bench.report import BenchResult
from engine.bench.soak import Resources
from engine.bench.wakeup import WakeupProbe
from engine.config import FIELDS
from engine.errors import BenchError
from engine.sim import SimConfig, Simulator
from engine.sim.config import ValidationMode
from engine.sim.tls import ThrowawayTls

__all__ = ["BenchOptions", "log_lines", "run"]

UP_SAMPLES = {"pcm16": 480, "pcmu": 160}  # upstream samples per 20 ms caller frame
UP_RATE = {"pcm16": 24000, "pcmu": 8000}
ENGINE_START_TIMEOUT = 30.0
ENGINE_STOP_TIMEOUT = 15.0
_SETTLE = 1.0  # after the ramp, before the hold is measured
# A soak's baselines are read this long after the engine is ready and after its last call
# has ended: the worker counts its tasks once a second, and a hung-up call's socket may
# linger for up to LINGER_S (2 s) until the caller closes it.
SOAK_SETTLE_S = 3.0
SOAK_IDLE_TIMEOUT = 10.0  # for the engine to report no call once the generator hung up


@dataclass(frozen=True, slots=True)
class BenchOptions:
    """Everything one run needs; the CLI fills it in."""

    calls: int = 100
    duration: float = 30.0
    ramp: float = 50.0
    rate: int = 8000
    upstream_format: str = "pcm16"
    append_ms: int = 40
    workers: int = 1
    impl: str = "native"
    floor: bool = False  # load the AudioSocket floor server instead of the engine
    target: tuple[str, int] | None = None
    engine_cpus: frozenset[int] | None = None
    load_cpus: frozenset[int] | None = None
    response_ms: int = 3000
    sim_pacing: float = 4.0
    sample_every: int = 200
    seed: int = 1
    pattern: TalkPattern = field(default_factory=TalkPattern)
    tone: CallerTone = field(default_factory=CallerTone)
    model_tone_hz: float = 440.0
    extra_env: tuple[tuple[str, str], ...] = ()
    sim_port: int = 0
    tls: bool = False  # the simulator serves wss:// with a throwaway CA the engine trusts
    probe_calls: int = 20  # read with kernel timestamps; the timing figures come from these
    churn: float = 0.0  # a soak: each call lasts 0.5-1.5x this many seconds (0: held)
    minute_s: float = 60.0  # a soak's timeline has a row this long

    @property
    def probes(self) -> int:
        """The probe calls this run makes (``probe_calls``, at most ``calls``)."""
        return min(self.probe_calls, self.calls)

    def __post_init__(self) -> None:
        if self.upstream_format not in UP_SAMPLES:
            raise BenchError(f"upstream format must be pcm16 or pcmu, not {self.upstream_format!r}")
        if self.calls < 1 or self.duration <= 0 or self.ramp <= 0:
            raise BenchError("calls, duration and ramp must be positive")
        if self.probe_calls < 1:
            raise BenchError("at least one probe call is needed for the timing figures")
        if self.churn < 0 or self.minute_s <= 0:
            raise BenchError("churn must be 0 (calls held) or positive, the timeline's row "
                             "positive")
        if self.tls and (self.floor or self.target is not None):
            raise BenchError("--tls is for an engine the bench starts: the floor has no "
                             "upstream, and a running engine cannot be given the bench's CA")


class EngineProcess:
    """``voice-engine run`` in a child process, its log in a file, its tree measured."""

    def __init__(self, opts: BenchOptions, sim_url: str, workdir: Path,
                 ca_file: Path | None = None) -> None:
        self.opts = opts
        self.log_path = workdir / "engine.log"
        env = {k: v for k, v in os.environ.items() if k not in _CONFIG_NAMES}
        env.update({
            "OPENAI_API_KEY": "bench-not-a-secret",
            "OPENAI_REALTIME_URL": sim_url,
            "UPSTREAM_FORMAT": opts.upstream_format,
            "APPEND_MS": str(opts.append_ms),
            "MAX_CONCURRENT_CALLS": str(max(1000, opts.calls * 2)),
            "MAX_CALL_SECONDS": str(int(opts.duration + opts.calls / opts.ramp + 600)),
            "LISTEN_HOST": "127.0.0.1",
            "LISTEN_PORT": str(_free_port()),
            "HEALTH_PORT": "0",
            "AGENT_PORT": "0",
            "DRAIN_SECONDS": "0",
            "LOG_LEVEL": "INFO",
            "LOG_FORMAT": "json",
            "VOICE_ENGINE_IMPL": opts.impl,
            # Records are kept as in production, in the run's own folder.
            "RECORDS_URL": f"sqlite:///{workdir / 'calls.db'}",
        })
        if ca_file is not None:
            env["UPSTREAM_CA_FILE"] = str(ca_file)
        env.update(dict(opts.extra_env))
        # The engine imports the same package this process runs (an installed one or a tree).
        root = str(Path(engine_package.__file__).resolve().parent.parent)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
        self._log = self.log_path.open("wb")
        argv = [sys.executable, "-m", "engine", "run", "--workers", str(opts.workers)]
        if opts.floor:
            argv = [sys.executable, "-m", "engine.bench.floor", env["LISTEN_PORT"],
                    str(opts.rate)]
        self.proc = subprocess.Popen(
            argv,
            cwd=workdir, env=env, stdin=subprocess.DEVNULL, stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        if opts.engine_cpus:
            os.sched_setaffinity(self.proc.pid, opts.engine_cpus)
        self.tree = ProcessTree(self.proc.pid)
        self.health_port: int | None = None

    async def _get(self, path: str) -> bytes | None:
        """The body of ``path`` on the node's health port (None: the floor, or no answer)."""
        if self.health_port is None:
            return None
        url = f"http://127.0.0.1:{self.health_port}{path}"
        try:
            timeout = aiohttp.ClientTimeout(total=5)
            async with (aiohttp.ClientSession(timeout=timeout) as session,
                        session.get(url) as response):
                return await response.read()
        except (aiohttp.ClientError, TimeoutError):
            return None

    async def _health(self) -> dict[str, Any] | None:
        body = await self._get("/health")
        try:
            doc = orjson.loads(body) if body is not None else None
        except orjson.JSONDecodeError:
            return None
        return doc if isinstance(doc, dict) else None

    async def worker_calls(self) -> list[int] | None:
        """Calls per worker as the node's ``/health`` reports them (None for the floor)."""
        doc = await self._health()
        return None if doc is None else [int(w["calls"]) for w in doc["workers"]]

    async def loop_tasks(self) -> int | None:
        """The workers' unfinished asyncio tasks, from the node's ``/metrics``."""
        body = await self._get("/metrics")
        value = soak.gauge_value(body.decode(), "voice_engine_event_loop_tasks") if body else None
        return None if value is None else int(value)

    async def wait_idle(self, timeout: float) -> None:
        """Until the node's ``/health`` reports no call, at most ``timeout`` seconds."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            doc = await self._health()
            if doc is None or doc.get("calls") == 0:
                return
            await asyncio.sleep(0.2)

    async def ready(self) -> int:
        """Waits for the node's ``node_ready`` line (the floor's ``listening``); returns the
        AudioSocket port and remembers the health port.

        Raises:
            BenchError: the engine exited or did not listen in time (its last lines say why).
        """
        end = time.monotonic() + ENGINE_START_TIMEOUT
        wanted = "listening" if self.opts.floor else "node_ready"
        while time.monotonic() < end:
            for line in self.lines():
                if line.get("event") == wanted:
                    self.health_port = line.get("health_port")
                    return int(line["port"])
            if self.proc.poll() is not None:
                raise BenchError(f"the engine exited with status {self.proc.returncode}: "
                                 + self.tail())
            await asyncio.sleep(0.05)
        raise BenchError(f"the engine did not listen within {ENGINE_START_TIMEOUT:g} s: "
                         + self.tail())

    def lines(self) -> list[dict[str, Any]]:
        """The engine's log so far, parsed."""
        return log_lines(self.log_path)

    def tail(self, n: int = 5) -> str:
        text = self.log_path.read_bytes().decode(errors="replace").strip().splitlines()
        return " | ".join(text[-n:]) or "(no output)"

    async def stop(self) -> int:
        """SIGTERM, then SIGKILL if it lingers; returns the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            end = time.monotonic() + ENGINE_STOP_TIMEOUT
            while self.proc.poll() is None and time.monotonic() < end:
                await asyncio.sleep(0.05)
            if self.proc.poll() is None:
                self.proc.kill()
        status = self.proc.wait()
        self._log.close()
        return status


def log_lines(path: Path) -> list[dict[str, Any]]:
    """A JSON log file, one dict a line (lines that are not JSON are kept as text)."""
    out = []
    for raw in path.read_bytes().splitlines():
        try:
            doc = orjson.loads(raw)
        except orjson.JSONDecodeError:
            doc = {"text": raw.decode(errors="replace")}
        out.append(doc if isinstance(doc, dict) else {"text": str(doc)})
    return out


def _free_port() -> int:
    """A loopback port free right now (the engine binds it a moment later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


_CONFIG_NAMES = frozenset(s.env for s in FIELDS) | {"VOICE_ENGINE_IMPL"}
_SECRET_NAMES = frozenset(s.env for s in FIELDS if s.secret)


def _shown_env(items: tuple[tuple[str, str], ...]) -> dict[str, str]:
    """The extra settings as the result records them: a secret's value is hidden."""
    return {k: "(hidden)" if k in _SECRET_NAMES else v for k, v in items}


@dataclass(slots=True)
class _Window:
    """CPU, call-seconds and peak memory over the hold (call-seconds and memory sampled every
    half second)."""

    cpu0: tuple[float, float] = (0.0, 0.0)
    cpu1: tuple[float, float] = (0.0, 0.0)
    started: float = 0.0
    ended: float = 0.0
    call_seconds: float = 0.0
    rss_peak: int = 0
    bench_cpu0: float = 0.0
    bench_cpu1: float = 0.0
    wakeup: measure.Spread | None = None
    # A soak's: the baselines, a sample at the end of each minute, when the calls were hung up.
    before: Resources | None = None
    after: Resources | None = None
    samples: list[Resources] = field(default_factory=list)
    stopped: float = 0.0


def _own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


Progress = Callable[[dict[str, Any]], None]


async def run(opts: BenchOptions, progress: Progress | None = None) -> BenchResult:
    """Runs the bench once and measures it.

    Raises:
        BenchError: the engine could not be started, or no call could be placed.
    """
    if opts.load_cpus:
        os.sched_setaffinity(0, opts.load_cpus)
    with tempfile.TemporaryDirectory(prefix="voice-engine-bench-") as tmp:
        tls = ThrowawayTls.create(Path(tmp)) if opts.tls else None
        recorder = SimRecorder()
        sim = Simulator(SimConfig(
            response_ms=opts.response_ms, pacing=opts.sim_pacing, tone_hz=opts.model_tone_hz,
            validation=ValidationMode.SAMPLE, sample_every=opts.sample_every,
        ), observer=recorder, ssl_context=tls.server_context if tls else None)
        await sim.start("127.0.0.1", opts.sim_port)
        if opts.target is not None and progress is not None:
            progress({"note": f"simulator listening on {sim.url}: the target engine's "
                              "OPENAI_REALTIME_URL must point there for the upstream-side "
                              "figures"})
        engine: EngineProcess | None = None
        try:
            if opts.target is None:
                engine = EngineProcess(opts, sim.url, Path(tmp), tls.ca_file if tls else None)
                host, port = "127.0.0.1", await engine.ready()
            else:
                host, port = opts.target
            return await _load(opts, host, port, sim, recorder, engine, progress)
        finally:
            if engine is not None:
                await engine.stop()
            await sim.stop()


async def _load(
    opts: BenchOptions, host: str, port: int, sim: Simulator, recorder: SimRecorder,
    engine: EngineProcess | None, progress: Progress | None,
) -> BenchResult:
    gen = LoadGenerator(host, port, rate=opts.rate,
                        up_samples_per_frame=UP_SAMPLES[opts.upstream_format],
                        pattern=opts.pattern, tone=opts.tone, seed=opts.seed,
                        probe_calls=opts.probes, churn_s=opts.churn)
    window = _Window()
    await asyncio.sleep(SOAK_SETTLE_S if opts.churn else 0.5)
    rss_idle = engine.tree.rss_bytes() if engine is not None else 0
    if opts.churn:
        window.before = await _resources(engine, gen)
    loop = asyncio.get_running_loop()
    began = loop.time()
    stop_progress = asyncio.Event()
    reporter = loop.create_task(_progress(gen, engine, began, window, stop_progress, progress))
    wakeup: WakeupProbe | None = None
    try:
        await gen.start(opts.calls, opts.ramp)
        if not gen.live:
            raise BenchError(f"no call could be placed to {host}:{port} "
                             f"({gen.failed} failed to connect)")
        # The generator and the simulator keep what they made so far (calls, sessions,
        # prebuilt audio): out of the collector's sight, or a full collection during the hold
        # stalls both for 50-100 ms at 300 calls, and the engine is blamed for it. (No
        # collection first: over 170,000 objects it would be such a stall itself.)
        gc.freeze()
        # The probe starts now, so that its own start-up is over before the hold it measures.
        planned = time.monotonic() + _SETTLE
        wakeup = WakeupProbe(planned, planned + opts.duration, opts.engine_cpus)
        await asyncio.sleep(planned - time.monotonic())
        window.started = time.monotonic()
        window.cpu0 = engine.tree.cpu_times() if engine is not None else (0.0, 0.0)
        window.bench_cpu0 = _own_cpu()
        last = window.started
        end = window.started + opts.duration
        minute_ends = soak.minute_ends(window.started, end, opts.minute_s) if opts.churn else []
        while (now := time.monotonic()) < end:
            await asyncio.sleep(min(0.5, (minute_ends[0] if minute_ends else end) - now))
            now = time.monotonic()
            window.call_seconds += len(gen.live) * (now - last)
            last = now
            if engine is not None:
                window.rss_peak = max(window.rss_peak, engine.tree.rss_bytes())
            if minute_ends and now >= minute_ends[0] - 0.002:
                del minute_ends[0]
                window.samples.append(await _resources(engine, gen))
                if progress is not None:
                    progress({"note": soak.minute_note(gen.calls, window.samples)})
                # What the churn made meanwhile joins what is frozen (see above).
                gc.freeze()
        window.ended = time.monotonic()
        window.cpu1 = engine.tree.cpu_times() if engine is not None else (0.0, 0.0)
        window.bench_cpu1 = _own_cpu()
        held = len(gen.live)
        per_worker = await engine.worker_calls() if engine is not None else None
        window.wakeup = await wakeup.result()
    finally:
        gc.unfreeze()  # a later round in this process must be able to free this one
        stop_progress.set()
        await reporter
        window.stopped = time.monotonic()
        await gen.stop()
        if wakeup is not None:
            wakeup.close()
    await asyncio.sleep(0.3)
    if opts.churn:
        if engine is not None:
            await engine.wait_idle(SOAK_IDLE_TIMEOUT)
        await asyncio.sleep(SOAK_SETTLE_S)
        window.after = await _resources(engine, gen)
    engine_lines = engine.lines() if engine is not None else []
    result = _result(opts, gen, sim, recorder, window, rss_idle, held, engine_lines)
    if window.before is not None and window.after is not None:
        result.soak = soak.soak_of(opts.churn, opts.minute_s, window.started, opts.duration,
                                   window.stopped, gen.calls, recorder, window.samples,
                                   window.before, window.after)
    result.calls["per_worker"] = per_worker
    if engine is not None and engine.proc.poll() is not None:
        result.calls["engine_exit"] = (f"the engine exited with status {engine.proc.returncode} "
                                       f"during the run: {engine.tail()}")
    return result


async def _resources(engine: EngineProcess | None, gen: LoadGenerator) -> Resources:
    """The engine's figures now: /proc first, then its /metrics (the request is an fd too)."""
    at = time.monotonic()
    if engine is None:
        return Resources(at, len(gen.live))
    tree = engine.tree
    rss, fds, threads = tree.rss_bytes(), tree.fds(), tree.threads()
    return Resources(at, len(gen.live), rss, fds, threads, await engine.loop_tasks())


async def _progress(
    gen: LoadGenerator, engine: EngineProcess | None, began: float, window: _Window,
    stop: asyncio.Event, progress: Progress | None,
) -> None:
    if progress is None:
        return
    loop = asyncio.get_running_loop()
    cpu_then = engine.tree.cpu_seconds() if engine is not None else 0.0
    then = time.monotonic()
    frames_then = 0
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 1.0)
        now = time.monotonic()
        cpu = engine.tree.cpu_seconds() if engine is not None else 0.0
        frames = sum(len(c.trace.rx_audio) for c in gen.calls)
        live = len(gen.live)
        dt = max(1e-6, now - then)
        progress({
            "t": round(loop.time() - began, 1),
            "phase": "hold" if window.started else "ramp",
            "calls_up": live,
            "calls_placed": len(gen.calls),
            "failed": gen.failed,
            "dropped": sum(1 for c in gen.calls if c.dropped),
            "rx_fps": round((frames - frames_then) / dt),
            "engine_cpu_pct": round(100 * (cpu - cpu_then) / dt, 1) if engine else None,
            "ms_per_call_s": round(1000 * (cpu - cpu_then) / dt / live, 3)
            if engine and live else None,
        })
        cpu_then, then, frames_then = cpu, now, frames


def _result(
    opts: BenchOptions, gen: LoadGenerator, sim: Simulator, recorder: SimRecorder,
    window: _Window, rss_idle: int, held: int, engine_lines: list[dict[str, Any]],
) -> BenchResult:
    # Counts come from every call; times from the probe calls alone, the only ones stamped.
    traces = [c.trace for c in gen.calls if c.outcome.connected]
    probes = [c.trace for c in gen.calls if c.outcome.connected and c.probe]
    pairs = []
    for call in gen.calls:
        entry = recorder.logs.get(str(call.uuid))
        if call.outcome.connected and call.probe and entry is not None:
            pairs.append((call.trace, entry.trace()))
    cuts = {id(t): s.speech_started for t, s in pairs}
    first = [d for t, s in pairs for d in measure.first_frame_delays(t, s)]
    stops = [d for t, s in pairs for d in measure.barge_in_stops(t, s)]
    newest: list[float] = []
    oldest: list[float] = []
    for t, s in pairs:
        n, o = measure.append_latencies(t, s)
        newest += n
        oldest += o
    connected = sum(1 for c in gen.calls if c.outcome.connected)
    dropped = [c for c in gen.calls if c.dropped]
    ends: Counter[str] = Counter()
    engine_counts: Counter[str] = Counter()
    for line in engine_lines:
        if line.get("event") == "call_ended":
            ends[str(line.get("reason"))] += 1
            for key in ("underruns", "rephases", "bargeins", "truncates"):
                engine_counts[key] += int(line.get(key) or 0)
    hold = max(1e-9, window.ended - window.started)
    user = window.cpu1[0] - window.cpu0[0]
    system = window.cpu1[1] - window.cpu0[1]
    cpu = user + system
    bench_cpu = window.bench_cpu1 - window.bench_cpu0
    totals = sim.totals()
    return BenchResult(
        options={
            "calls": opts.calls, "duration_s": opts.duration, "ramp_per_s": opts.ramp,
            "rate": opts.rate, "upstream_format": opts.upstream_format,
            "append_ms": opts.append_ms, "workers": opts.workers, "impl": opts.impl,
            "floor": opts.floor,
            "target": f"{opts.target[0]}:{opts.target[1]}" if opts.target else None,
            "engine_cpus": sorted(opts.engine_cpus) if opts.engine_cpus else None,
            "load_cpus": sorted(opts.load_cpus) if opts.load_cpus else None,
            "response_ms": opts.response_ms, "seed": opts.seed,
            "engine_env": _shown_env(opts.extra_env), "tls": opts.tls,
            "probe_calls": opts.probes, "churn_s": opts.churn or None,
        },
        calls={
            "placed": len(gen.calls), "connected": connected, "failed": gen.failed,
            "held_to_end": held, "dropped": len(dropped),
            "dropped_how": dict(Counter(c.outcome.ended_by or "" for c in dropped)),
            "errors": sorted({c.outcome.error for c in gen.calls if c.outcome.error})[:5],
            "engine_end_reasons": dict(ends),
        },
        pacing_in_response=measure.response_pacing(
            probes, cuts=[cuts.get(id(t), ()) for t in probes]),
        pacing_all=measure.all_pacing(probes),
        responses=measure.response_count(traces),
        underruns=measure.underruns(traces),
        model_share=measure.model_share(traces),
        first_frame=measure.summary(first),
        append_newest=measure.summary(newest),
        append_oldest=measure.summary(oldest),
        barge_in_stop=measure.summary(stops),
        barge_ins_attempted=sum(c.talker.barge_ins for c in gen.calls),
        no_answers=sum(c.talker.no_answers for c in gen.calls),
        engine_cpu_ms_per_call_s=(1000 * cpu / window.call_seconds
                                  if opts.target is None and window.call_seconds else None),
        engine_cpu_pct=100 * cpu / hold if opts.target is None else None,
        engine_system_share=system / cpu if opts.target is None and cpu else None,
        engine_rss_idle_mb=rss_idle / 2**20 if opts.target is None else None,
        engine_kb_per_call=((window.rss_peak - rss_idle) / 1024 / held
                            if opts.target is None and held else None),
        hold_s=hold,
        call_seconds=window.call_seconds,
        bench_cpu_pct=100 * bench_cpu / hold,
        bench_cpu_ms_per_call_s=(1000 * bench_cpu / window.call_seconds
                                 if window.call_seconds else None),
        wakeup=window.wakeup,
        generator_clock=gen.clock_stats(),
        snr_down_db=_snr_down(gen, opts),
        snr_up_db=_snr_up(recorder, opts),
        sim={k: totals[k] for k in ("sessions", "handshakes", "responses", "invalid",
                                     "truncates", "bad_truncates", "mistakes")}
        | {"unidentified_sessions": recorder.unidentified, "validating": sim.validating},
        engine_counts=dict(engine_counts),
    )


def _snr_down(gen: LoadGenerator, opts: BenchOptions) -> list[float]:
    """Tone SNR of the longest captured response on each capturing call."""
    out = []
    for call in gen.calls:
        if call.captures:
            longest = max(call.captures, key=len)
            if len(longest) >= 2 * opts.rate * 0.3:
                out.append(measure.tone_snr(bytes(longest), opts.rate, opts.model_tone_hz))
    return out


def _snr_up(recorder: SimRecorder, opts: BenchOptions) -> list[float]:
    """Tone SNR of the longest caller turn the simulator captured, per capturing session."""
    out = []
    rate = UP_RATE[opts.upstream_format]  # the format the engine was started with
    for entry in recorder.logs.values():
        if entry.capture:
            turn = measure.loudest_stretch(bytes(entry.capture), rate)
            if len(turn) >= 2 * rate * 0.3:
                out.append(measure.tone_snr(turn, rate, opts.tone.hz))
    return out


def main_loop(opts: BenchOptions, progress: Progress | None) -> BenchResult:
    """Runs :func:`run` on a fresh uvloop loop (what the CLI calls)."""
    import uvloop

    logs.setup("WARNING")
    return uvloop.run(run(opts, progress))
