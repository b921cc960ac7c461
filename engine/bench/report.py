"""What a bench run found, as a table for people and JSON for machines, against the targets."""

from __future__ import annotations

import math
import os
import platform
from dataclasses import dataclass, field
from typing import Any

from engine.bench.measure import Spread
from engine.bench.soak import Soak, render_soak
from engine.stats import Pacing

__all__ = ["BenchResult", "Target", "render", "render_comparison", "render_targets", "targets"]


@dataclass(frozen=True, slots=True)
class Target:
    """One performance target: its limit, which way is better, and where the limit comes from
    (the table prints ``source`` so a reader can tell a promise from a derived figure)."""

    limit: float
    source: str
    at_most: bool = True

    def __str__(self) -> str:
        return f"{'≤' if self.at_most else '≥'} {self.limit:g}"

    def met(self, value: float | None) -> bool | None:
        if value is None or math.isnan(value):
            return None
        return value <= self.limit if self.at_most else value >= self.limit


def targets(upstream_format: str) -> dict[str, Target]:
    """The targets for a run with ``upstream_format``, keyed like :meth:`BenchResult.headline`."""
    pcmu = upstream_format == "pcmu"
    return {
        "engine_cpu_ms_per_call_s": Target(0.55 if pcmu else 0.7,
                                           "floor ratio: 1.75×/1.4× a 0.4 ms floor"),
        "pacing_p99_ms": Target(2.0, "issue: pacing promise"),
        "underruns": Target(0, "design: playout never starves in an answer"),
        "dropped": Target(0, "design: every call is held"),
        "first_frame_p99_ms": Target(5.0, "design: re-phase, first frame within ms"),
        "barge_in_stop_max_ms": Target(25.0, "design: barge-in stops within a frame"),
        "engine_kb_per_call": Target(150.0, "design: memory per call"),
        "snr_down_min_db": Target(35.0 if pcmu else 80.0,
                                  "G.711 / resampler quality" if pcmu else "resampler quality",
                                  at_most=False),
        # Judged by --vs-floor, from alternated rounds of the engine and the floor server.
        "engine_to_floor_cpu_ratio": Target(
            1.5 if pcmu else 1.75, "issue 12: 3× the calls per core of the Node.js bridge"),
        # Judged on a soak (--churn) alone.
        "soak_rss_kb_per_1000_calls": Target(
            1500.0, "design: a call leaves < 1 % of its 150 KB behind"),
        # The records store opens its SQLite file, WAL and shared memory at the first record.
        "soak_fds_over_baseline": Target(3, "design: a call leaves no fd behind (+3: records)"),
        "soak_tasks_over_baseline": Target(0, "design: a call leaves no task behind"),
        "soak_pacing_p99_worst_minute_ms": Target(2.0, "issue: pacing promise, every minute"),
    }



def _num(x: float | None, digits: int = 3) -> float | None:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return None
    return round(x, digits)


@dataclass(slots=True)
class BenchResult:
    """Every figure of one run. Times in ms unless named otherwise."""

    options: dict[str, Any]
    calls: dict[str, Any]
    pacing_in_response: Pacing
    pacing_all: Pacing
    responses: int
    underruns: int
    model_share: float
    first_frame: Spread
    append_newest: Spread
    append_oldest: Spread
    barge_in_stop: Spread
    barge_ins_attempted: int
    no_answers: int
    engine_cpu_ms_per_call_s: float | None
    engine_cpu_pct: float | None
    engine_system_share: float | None
    engine_rss_idle_mb: float | None
    engine_kb_per_call: float | None
    hold_s: float
    call_seconds: float
    bench_cpu_pct: float
    generator_clock: dict[str, Any]
    snr_down_db: list[float]
    snr_up_db: list[float]
    sim: dict[str, Any]
    engine_counts: dict[str, int]
    machine: dict[str, Any] = field(default_factory=lambda: {
        "cpu": _cpu_model(), "nproc": os.cpu_count(), "python": platform.python_version(),
    })
    bench_cpu_ms_per_call_s: float | None = None  # the generator and simulator together
    wakeup: Spread | None = None  # timer wake-up lateness on the engine's CPUs, in the hold
    soak: Soak | None = None  # with churn: the timeline, baselines and their figures

    @property
    def timing_from(self) -> str:
        """Which calls the timing figures come from, and on what clock."""
        return f"probe calls: {self.options.get('probe_calls')}, kernel receive timestamps"

    def headline(self) -> dict[str, float | None]:
        """The figures the targets judge (a soak's too, with churn)."""
        return {
            "engine_cpu_ms_per_call_s": self.engine_cpu_ms_per_call_s,
            "pacing_p99_ms": self.pacing_in_response.p99_ms,
            "underruns": float(self.underruns),
            "dropped": float(self.calls["dropped"]),
            "first_frame_p99_ms": self.first_frame.p99_ms,
            "barge_in_stop_max_ms": self.barge_in_stop.max_ms,
            "engine_kb_per_call": self.engine_kb_per_call,
            "snr_down_min_db": min(self.snr_down_db) if self.snr_down_db else None,
        } | (self.soak.headline() if self.soak is not None else {})

    def missed(self) -> list[str]:
        """The targets this run missed (what ``--check`` fails on); a floor run has none."""
        if self.options.get("floor"):
            return []
        return [key for key, verdict in self.verdicts().items() if verdict is False]

    def verdicts(self) -> dict[str, bool | None]:
        """Each target: met (True), missed (False) or not measured (None)."""
        limits = targets(self.options["upstream_format"])
        return {key: limits[key].met(value) for key, value in self.headline().items()}

    def as_dict(self) -> dict[str, Any]:
        """Plain values for ``--json`` (NaN becomes None)."""
        return {
            "options": self.options,
            "machine": self.machine,
            "calls": self.calls,
            "timing_from": self.timing_from,
            "pacing_in_response": self.pacing_in_response.as_dict(),
            "pacing_all": self.pacing_all.as_dict(),
            "responses": self.responses,
            "underruns": self.underruns,
            "model_share": _num(self.model_share),
            "first_frame": self.first_frame.as_dict(),
            "append_newest": self.append_newest.as_dict(),
            "append_oldest": self.append_oldest.as_dict(),
            "barge_in_stop": self.barge_in_stop.as_dict(),
            "barge_ins_attempted": self.barge_ins_attempted,
            "no_answers": self.no_answers,
            "engine_cpu_ms_per_call_s": _num(self.engine_cpu_ms_per_call_s, 4),
            "engine_cpu_pct": _num(self.engine_cpu_pct, 1),
            "engine_system_share": _num(self.engine_system_share, 3),
            "engine_rss_idle_mb": _num(self.engine_rss_idle_mb, 1),
            "engine_kb_per_call": _num(self.engine_kb_per_call, 1),
            "hold_s": _num(self.hold_s, 2),
            "call_seconds": _num(self.call_seconds, 1),
            "bench_cpu_pct": _num(self.bench_cpu_pct, 1),
            "bench_cpu_ms_per_call_s": _num(self.bench_cpu_ms_per_call_s, 4),
            "wakeup_latency": self.wakeup.as_dict() if self.wakeup is not None else None,
            "generator_clock": self.generator_clock,
            "snr_down_db": _spread_db(self.snr_down_db),
            "snr_up_db": _spread_db(self.snr_up_db),
            "simulator": self.sim,
            "engine_counts": self.engine_counts,
            "soak": self.soak.as_dict() if self.soak is not None else None,
            "targets": self.verdicts(),
        }


def _spread_db(values: list[float]) -> dict[str, Any]:
    if not values:
        return {"calls": 0, "min": None, "median": None}
    ordered = sorted(values)
    return {"calls": len(values), "min": _num(ordered[0], 1),
            "median": _num(ordered[len(ordered) // 2], 1)}


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _fmt(x: float | None, unit: str = "", digits: int = 2) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "—"
    return f"{x:.{digits}f}{unit}"


def _spread(s: Spread | Pacing) -> str:
    return (f"p50 {_fmt(s.p50_ms)}  p99 {_fmt(s.p99_ms)}  max {_fmt(s.max_ms)} ms"
            + (f"  (n={s.count})" if isinstance(s, Spread) else f"  (n={s.intervals})"))


def _settings_line(o: dict[str, Any]) -> list[str]:
    """The ``--engine-env`` settings the engine ran with, as one line (none: no line)."""
    extra = o.get("engine_env") or {}
    if not extra:
        return []
    return ["engine env: " + ", ".join(f"{k}={v}" for k, v in extra.items())]


def _wakeup_line(r: BenchResult) -> str:
    w = r.wakeup
    where = "the engine's CPUs" if r.options.get("engine_cpus") else "any CPU"
    figures = "not measured" if w is None else _spread(w)
    return f"wake-ups     5 ms timer on {where}, late by {figures}"


def _bench_cpu(r: BenchResult) -> str:
    return (f"{r.bench_cpu_pct:.0f} % of a core with the simulator "
            f"({_fmt(r.bench_cpu_ms_per_call_s, ' ms', 3)} per call-second)")


def render(r: BenchResult) -> str:
    """The human table: what ran, what came out, and each target's verdict."""
    o, c = r.options, r.calls
    verdicts = r.verdicts()
    mark = {True: "ok", None: "n/a"}

    limits = targets(o["upstream_format"])

    def judged(key: str) -> str:
        verdict = verdicts[key]
        return f"[{mark[verdict]}]" if verdict is not False else f"[MISSED: {limits[key]}]"

    share = r.engine_system_share
    kernel = _fmt(None if share is None else 100 * share, " %", 0)
    settings = _settings_line(o)
    if o.get("floor"):
        return "\n".join([
            f"AudioSocket floor (frames moved both ways, nothing else): {c['connected']} calls "
            f"at {o['rate']} Hz, held {c['held_to_end']}, dropped {c['dropped']}",
            *settings,
            f"floor CPU    {_fmt(r.engine_cpu_ms_per_call_s, ' ms', 3)} per call-second "
            f"({_fmt(r.engine_cpu_pct, ' %', 1)} of a core, {kernel} of it in the kernel)",
            f"memory       {_fmt(r.engine_kb_per_call, ' KB', 1)} per call",
            f"pacing       every frame: {_spread(r.pacing_all)}",
            f"             ({r.timing_from})",
            _wakeup_line(r),
            f"generator    {_bench_cpu(r)}",
            *(["", *render_soak(r.soak)] if r.soak is not None else []),
        ])
    snr_down = _spread_db(r.snr_down_db)
    snr_up = _spread_db(r.snr_up_db)
    lines = [
        f"voice-engine bench: {o['calls']} calls at {o['rate']} Hz, "
        f"upstream {o['upstream_format']}, append {o['append_ms']} ms, {o['impl']} media core, "
        + (f"target {o['target']}" if o["target"] else f"{o['workers']} worker(s)"),
        f"machine: {r.machine['cpu']}, {r.machine['nproc']} CPUs; engine on CPUs "
        f"{o['engine_cpus'] or 'any'}, generator+simulator on {o['load_cpus'] or 'any'}",
        *settings,
        "",
        f"calls        placed {c['placed']}, connected {c['connected']}, failed {c['failed']}, "
        f"held to the end {c['held_to_end']}, dropped {c['dropped']} {judged('dropped')}",
        f"hold         {r.hold_s:.1f} s, {r.call_seconds:.0f} call-seconds; model audio "
        f"{_fmt(100 * r.model_share, ' %', 1)} of frames; {r.responses} responses",
        f"engine CPU   {_fmt(r.engine_cpu_ms_per_call_s, ' ms', 3)} per call-second "
        f"({_fmt(r.engine_cpu_pct, ' %', 1)} of a core, {kernel} of it in the kernel) "
        f"{judged('engine_cpu_ms_per_call_s')}",
        f"memory       {_fmt(r.engine_kb_per_call, ' KB', 1)} per call beyond the idle "
        f"worker ({_fmt(r.engine_rss_idle_mb, ' MB', 1)}) {judged('engine_kb_per_call')}",
        f"pacing       in responses: {_spread(r.pacing_in_response)} {judged('pacing_p99_ms')}",
        f"             every frame:  {_spread(r.pacing_all)}",
        f"             timing figures from {r.timing_from}",
        _wakeup_line(r),
        f"underruns    {r.underruns} inside responses {judged('underruns')}",
        f"first frame  {_spread(r.first_frame)} {judged('first_frame_p99_ms')}",
        f"caller→up    newest frame {_spread(r.append_newest)}",
        f"             oldest frame {_spread(r.append_oldest)}",
        f"barge-in     {r.barge_ins_attempted} attempted; stop {_spread(r.barge_in_stop)} "
        f"{judged('barge_in_stop_max_ms')}",
        f"tone SNR     model→caller min {_fmt(snr_down['min'], ' dB', 1)} "
        f"(median {_fmt(snr_down['median'], ' dB', 1)}, {snr_down['calls']} calls) "
        f"{judged('snr_down_min_db')}; caller→model min {_fmt(snr_up['min'], ' dB', 1)} "
        f"({snr_up['calls']} calls)",
        f"simulator    {r.sim['sessions']} sessions, {r.sim['responses']} responses, "
        + (f"{r.sim['invalid']} invalid events (sampled), " if r.sim.get("validating") else
           "events not validated (the openai package is not installed), ")
        + f"{r.sim['bad_truncates']} bad truncates, "
        f"{r.no_answers} turns unanswered",
        f"generator    {_bench_cpu(r)}; clock late "
        f"{r.generator_clock['late_ticks']} of {r.generator_clock['ticks']} ticks "
        f"(max {r.generator_clock['max_late_ms']:.0f} ms)",
    ]
    if c.get("per_worker"):
        lines.append("workers      calls at the end of the hold, per worker (/health): "
                     + ", ".join(str(n) for n in c["per_worker"]))
    if c["engine_end_reasons"]:
        reasons = ", ".join(f"{k} {v}" for k, v in sorted(c["engine_end_reasons"].items()))
        lines.append(f"engine ends  {reasons}")
    if c.get("errors"):
        lines.append("call errors  " + "; ".join(c["errors"]))
    if c.get("engine_exit"):
        lines.append(f"ENGINE FAILED: {c['engine_exit']}")
    if r.soak is not None:
        lines += ["", *render_soak(r.soak)]
    if r.bench_cpu_pct > 90 or r.generator_clock["late_ticks"] > r.generator_clock["ticks"] / 100:
        lines.append("WARNING: the generator and simulator were near saturation; their own "
                     "delays are in the timing figures. Fewer calls, or more CPUs for them.")
    lines += ["", render_targets(r.headline(), limits)]
    return "\n".join(lines)


def render_targets(values: dict[str, float | None], limits: dict[str, Target]) -> str:
    """One line per target: the figure, its limit, the verdict and where the limit comes from."""
    verdict = {True: "ok", False: "MISSED", None: "n/a"}
    width = max(len(key) for key in values)
    lines = [f"{'target':<{width}}  {'value':>9}  {'limit':>8}  {'verdict':<7}  source"]
    for key, value in values.items():
        limit = limits[key]
        lines.append(f"{key:<{width}}  {_fmt(value, '', 3):>9}  {str(limit):>8}  "
                     f"{verdict[limit.met(value)]:<7}  {limit.source}")
    return "\n".join(lines)


def render_comparison(native: BenchResult, python: BenchResult) -> str:
    """The same load on the native media core and on the plain-Python twins."""
    a, b = native.engine_cpu_ms_per_call_s, python.engine_cpu_ms_per_call_s
    ratio = b / a if a and b else None
    return (f"plain-Python twins: {_fmt(b, ' ms', 3)} per call-second against "
            f"{_fmt(a, ' ms', 3)} native: {_fmt(ratio, '×', 1)}; "
            f"pacing p99 {_fmt(python.pacing_in_response.p99_ms)} ms against "
            f"{_fmt(native.pacing_in_response.p99_ms)} ms; dropped {python.calls['dropped']} "
            f"against {native.calls['dropped']}")
