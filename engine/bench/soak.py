"""A soak: calls that keep starting and ending for many minutes, read minute by minute.

The load generator churns its calls (see :mod:`engine.bench.loadgen`); the run samples the
engine's resources at the end of every minute of the hold, once before the first call and once
after the last has ended and the engine has settled (the baselines). This module turns that
into the timeline and the figures the soak's targets judge:

- memory: a linear fit of the engine's RSS against the calls ended so far, over the samples
  from the end of the first minute (the warm-up) on, as KB per 1,000 calls ended and as the
  share of the RSS at the start of the fit that the fitted line adds by its end;
- open fds and asyncio tasks: after the run against before the first call;
- pacing: the p99 of each minute's probe intervals (the worst minute is judged).

Pure: the samples, the calls' times and the probe intervals come in; nothing is read here.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from engine.bench import measure
from engine.bench.loadgen import CHURN_SPREAD, BenchCall
from engine.bench.measure import FRAME_PERIOD
from engine.bench.observe import SimRecorder
from engine.stats import Pacing, pacing

__all__ = ["CallSpan", "Growth", "Minute", "Resources", "Soak", "gauge_value", "memory_growth",
           "minute_ends", "minute_note", "render_soak", "soak_of", "timeline"]

MIN_FIT_POINTS = 3  # samples the memory fit needs (two always make a line)


@dataclass(frozen=True, slots=True)
class Resources:
    """The engine's figures at one moment (``at``, ``time.monotonic()``); None where they
    cannot be read (an engine run elsewhere has no process here, the floor no metrics)."""

    at: float
    calls_up: int
    rss_bytes: int | None = None
    fds: int | None = None
    threads: int | None = None
    tasks: int | None = None

    def as_dict(self, t0: float) -> dict[str, Any]:
        """Plain values, the time in seconds from ``t0``."""
        return {"t_s": round(self.at - t0, 1), "calls_up": self.calls_up,
                "rss_mb": None if self.rss_bytes is None else round(self.rss_bytes / 2**20, 2),
                "fds": self.fds, "threads": self.threads, "tasks": self.tasks}


@dataclass(frozen=True, slots=True)
class CallSpan:
    """One call's times (``ended_at`` None: still up) and how it went."""

    placed_at: float
    ended_at: float | None
    connected: bool
    failed: bool  # ended, and not by the caller's own hang-up


@dataclass(frozen=True, slots=True)
class Minute:
    """One row of the timeline: what happened in it, and the engine at its end."""

    number: int  # from 1
    start_s: float  # from the start of the hold
    end_s: float
    started: int
    ended: int  # whichever way, failed ones included
    failed: int
    pacing: Pacing
    resources: Resources

    def as_dict(self, t0: float) -> dict[str, Any]:
        """Plain values for JSON."""
        return {"minute": self.number, "from_s": round(self.start_s, 1),
                "to_s": round(self.end_s, 1), "started": self.started, "ended": self.ended,
                "failed": self.failed, "pacing": self.pacing.as_dict(),
                **self.resources.as_dict(t0)}


@dataclass(frozen=True, slots=True)
class Growth:
    """RSS against calls ended, fitted: ``points`` samples over which ``calls`` calls ended."""

    points: int
    calls: int
    kb_per_1000_calls: float | None
    fraction: float | None

    def as_dict(self) -> dict[str, Any]:
        """Plain values for JSON."""
        return {"points": self.points, "calls": self.calls,
                "kb_per_1000_calls_ended": _round(self.kb_per_1000_calls, 1),
                "fraction": _round(self.fraction, 5)}


def _round(x: float | None, digits: int) -> float | None:
    return None if x is None else round(x, digits)


def _minute_of(times: npt.NDArray[np.float64], t0: float, minute_s: float,
               minutes: int) -> npt.NDArray[np.int64]:
    """Each time's minute (0-based): before the hold is the first, after it the last."""
    index = np.floor((times - t0) / minute_s).astype(np.int64)
    return np.clip(index, 0, minutes - 1)


def timeline(
    t0: float, minute_s: float, hold_s: float, stopped: float, calls: Iterable[CallSpan],
    interval_ends: npt.NDArray[np.float64], intervals: npt.NDArray[np.float64],
    samples: Sequence[Resources], period: float = FRAME_PERIOD,
) -> list[Minute]:
    """The timeline: one row per sample in ``samples`` (taken at the end of each minute).

    Minute k covers ``[t0 + (k-1) * minute_s, t0 + k * minute_s)``, the last ends with the
    hold (``hold_s`` after ``t0``); the first also counts what came before the hold (the
    ramp), the last what came after it until ``stopped``, when the generator hung up the calls
    still up (those hang-ups are counted in no minute).
    """
    n = len(samples)
    if n == 0:
        return []
    spans = list(calls)
    placed = np.array([c.placed_at for c in spans], np.float64)
    gone = [c for c in spans if c.ended_at is not None and c.ended_at < stopped]
    ended_at = np.array([c.ended_at for c in gone], np.float64)
    failed_at = np.array([c.ended_at for c in gone if c.failed], np.float64)
    counts = [np.bincount(_minute_of(t, t0, minute_s, n), minlength=n)
              for t in (placed, ended_at, failed_at)]
    which = _minute_of(interval_ends, t0, minute_s, n)
    rows = []
    for k, sample in enumerate(samples):
        mine = intervals[which == k]
        rows.append(Minute(
            number=k + 1, start_s=k * minute_s, end_s=min((k + 1) * minute_s, hold_s),
            started=int(counts[0][k]), ended=int(counts[1][k]), failed=int(counts[2][k]),
            pacing=pacing(mine.tolist(), period), resources=sample,
        ))
    return rows


def memory_growth(samples: Sequence[Resources], calls: Iterable[CallSpan]) -> Growth:
    """RSS fitted against the connected calls ended by each sample (least squares).

    ``samples`` are the ones the fit covers (from the end of the warm-up on). With fewer than
    :data:`MIN_FIT_POINTS`, no RSS, or no call ended between the first and the last, the
    figures are None.
    """
    points = [s for s in samples if s.rss_bytes is not None]
    ends = np.sort(np.array([c.ended_at for c in calls if c.connected and c.ended_at is not None],
                            np.float64))
    x = np.searchsorted(ends, [s.at for s in points], side="right").astype(np.float64)
    y = np.array([s.rss_bytes for s in points], np.float64)
    spread = int(x[-1] - x[0]) if len(points) else 0
    if len(points) < MIN_FIT_POINTS or spread <= 0:
        return Growth(len(points), spread, None, None)
    slope, intercept = np.polyfit(x, y, 1)
    start = intercept + slope * x[0]
    return Growth(len(points), spread, float(slope) * 1000 / 1024,
                  float(slope * spread / start) if start > 0 else None)


def minute_ends(started: float, end: float, minute_s: float) -> list[float]:
    """When a soak's minutes end, from ``started``: every ``minute_s``, the last at ``end``."""
    count = math.ceil((end - started) / minute_s - 1e-9)
    return [min(started + k * minute_s, end) for k in range(1, count + 1)]


def minute_note(calls: Sequence[BenchCall], samples: Sequence[Resources]) -> str:
    """A progress line for the minute the last of ``samples`` ended."""
    s = samples[-1]
    since = samples[-2].at if len(samples) > 1 else -math.inf
    started = sum(1 for c in calls if since < c.placed_at <= s.at)
    failed = sum(1 for c in calls if c.failed and since < (c.ended_at or -math.inf) <= s.at)
    rss = "—" if s.rss_bytes is None else f"{s.rss_bytes / 2**20:.1f} MB"
    return (f"minute {len(samples)}: {started} calls started, {failed} failed; engine RSS "
            f"{rss}, {_fmt(s.fds)} fds, {_fmt(s.threads)} threads, {_fmt(s.tasks)} tasks")


def soak_of(
    churn_s: float, minute_s: float, t0: float, hold_s: float, stopped: float,
    calls: Sequence[BenchCall],
    recorder: SimRecorder, samples: Sequence[Resources], before: Resources, after: Resources,
) -> Soak:
    """A soak's timeline and figures from its samples and what its calls recorded.

    Args:
        t0: the start of the hold, ``hold_s`` long. stopped: when the generator hung up the
            calls still up.
        calls: every call the generator made; its probe calls give the pacing.
        recorder: the simulator's side, for each probe call's barge-ins (pacing stops there).
    """
    spans = [CallSpan(c.placed_at, c.ended_at, c.outcome.connected, c.failed) for c in calls]
    probes = [c for c in calls if c.outcome.connected and c.probe]
    cuts = []
    for call in probes:
        entry = recorder.logs.get(str(call.uuid))
        cuts.append(entry.speech_started if entry is not None else [])
    ends, intervals = measure.response_intervals([c.trace for c in probes], cuts=cuts)
    return Soak(
        churn_s=churn_s, minute_s=minute_s, t0=t0,
        minutes=tuple(timeline(t0, minute_s, hold_s, stopped, spans, ends, intervals,
                               samples)),
        before=before, after=after, growth=memory_growth(samples, spans),
        hung_up_at_stop=sum(1 for c in spans if c.ended_at is not None and c.ended_at >= stopped),
    )


def gauge_value(text: str, name: str) -> float | None:
    """The value of the unlabelled gauge ``name`` in Prometheus text ``text`` (None: absent)."""
    prefix = name + " "
    for line in text.splitlines():
        if line.startswith(prefix):
            try:
                return float(line[len(prefix):].split()[0])
            except (ValueError, IndexError):
                return None
    return None


def _over(before: int | None, after: int | None) -> float | None:
    return None if before is None or after is None else float(after - before)


@dataclass(frozen=True, slots=True)
class Soak:
    """A soak's timeline, baselines and judged figures."""

    churn_s: float
    minute_s: float
    t0: float  # the start of the hold
    minutes: tuple[Minute, ...]
    before: Resources  # before the first call
    after: Resources  # after the last call ended, settled
    growth: Growth
    hung_up_at_stop: int

    def headline(self) -> dict[str, float | None]:
        """The figures the soak's targets judge (keys as in :func:`engine.bench.report.targets`)."""
        return {
            "soak_rss_kb_per_1000_calls": self.growth.kb_per_1000_calls,
            "soak_fds_over_baseline": _over(self.before.fds, self.after.fds),
            "soak_tasks_over_baseline": _over(self.before.tasks, self.after.tasks),
            "soak_pacing_p99_worst_minute_ms": self.worst_pacing_p99_ms,
        }

    @property
    def worst_pacing_p99_ms(self) -> float | None:
        """The highest per-minute pacing p99 (None: no minute had an interval)."""
        judged = [m.pacing.p99_ms for m in self.minutes if m.pacing.intervals]
        return max(judged) if judged else None

    def as_dict(self) -> dict[str, Any]:
        """Plain values for ``--json``."""
        t0 = self.t0
        low, high = CHURN_SPREAD
        head = self.headline()
        return {
            "churn_s": self.churn_s,
            "call_length_s": [low * self.churn_s, high * self.churn_s],
            "minute_s": self.minute_s,
            "calls": {"started": sum(m.started for m in self.minutes),
                      "ended": sum(m.ended for m in self.minutes),
                      "failed": sum(m.failed for m in self.minutes),
                      "hung_up_at_stop": self.hung_up_at_stop},
            "timeline": [m.as_dict(t0) for m in self.minutes],
            "baseline": {"before": self.before.as_dict(t0), "after": self.after.as_dict(t0)},
            "memory_growth": self.growth.as_dict(),
            "fds_over_baseline": head["soak_fds_over_baseline"],
            "tasks_over_baseline": head["soak_tasks_over_baseline"],
            "threads_over_baseline": _over(self.before.threads, self.after.threads),
            "pacing_p99_worst_minute_ms": _round(self.worst_pacing_p99_ms, 3),
            "minutes_without_pacing": sum(1 for m in self.minutes if not m.pacing.intervals),
        }


def _fmt(x: float | int | None, digits: int = 0) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "—"
    return f"{x:.{digits}f}"


def _resource_cells(r: Resources) -> str:
    rss = None if r.rss_bytes is None else r.rss_bytes / 2**20
    return (f"{_fmt(rss, 1):>7}  {_fmt(r.fds):>5}  {_fmt(r.threads):>7}  "
            f"{_fmt(r.tasks):>5}")


def render_soak(soak: Soak) -> list[str]:
    """The soak's lines of the table: what churned, the timeline, memory and the baselines."""
    low, high = (f * soak.churn_s for f in CHURN_SPREAD)
    doc = soak.as_dict()
    calls = doc["calls"]
    per = "a minute" if soak.minute_s == 60 else f"every {soak.minute_s:g} s"
    lines = [
        f"soak         calls of {low:g}–{high:g} s (--churn {soak.churn_s:g}): "
        f"{calls['started']} started, {calls['ended']} ended, {calls['failed']} of them failed; "
        f"{calls['hung_up_at_stop']} hung up at the end; one row {per}",
        f"  {'minute':>6}  {'started':>7}  {'ended':>5}  {'failed':>6}  {'up':>4}  "
        f"{'pacing p50/p99/max ms (n)':<30}  {'RSS MB':>7}  {'fds':>5}  {'threads':>7}  "
        f"{'tasks':>5}",
        f"  {'before':>6}  {'':>7}  {'':>5}  {'':>6}  {soak.before.calls_up:>4}  {'':<30}  "
        + _resource_cells(soak.before),
    ]
    for m in soak.minutes:
        p = m.pacing
        figures = (f"{_fmt(p.p50_ms, 2)}/{_fmt(p.p99_ms, 2)}/{_fmt(p.max_ms, 2)} "
                   f"({p.intervals})")
        lines.append(f"  {m.number:>6}  {m.started:>7}  {m.ended:>5}  {m.failed:>6}  "
                     f"{m.resources.calls_up:>4}  {figures:<30}  "
                     + _resource_cells(m.resources))
    lines.append(f"  {'after':>6}  {'':>7}  {'':>5}  {'':>6}  {soak.after.calls_up:>4}  "
                 f"{'':<30}  " + _resource_cells(soak.after))
    g = soak.growth
    if g.kb_per_1000_calls is None:
        memory = (f"not fitted ({g.points} samples from the end of the first row, {g.calls} "
                  f"calls ended between them; {MIN_FIT_POINTS} samples and a call needed)")
    else:
        share = "—" if g.fraction is None else f"{100 * g.fraction:+.2f} %"
        memory = (f"{g.kb_per_1000_calls:+.1f} KB per 1,000 calls ended, fitted from the end "
                  f"of the first row ({share} of the RSS there, over {g.calls} calls and "
                  f"{g.points} samples)")
    lines += [
        f"memory       {memory}",
        f"baseline     before the first call → after the last (settled): fds "
        f"{_fmt(soak.before.fds)} → {_fmt(soak.after.fds)}, tasks {_fmt(soak.before.tasks)} → "
        f"{_fmt(soak.after.tasks)}, threads {_fmt(soak.before.threads)} → "
        f"{_fmt(soak.after.threads)}",
    ]
    if doc["minutes_without_pacing"]:
        lines.append(f"WARNING: {doc['minutes_without_pacing']} minute(s) had no probe "
                     "interval in a response: more --probe-calls, or longer calls")
    return lines
