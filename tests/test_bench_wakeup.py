"""The wake-up latency probe: absolute 5 ms deadlines, lateness never negative."""

from __future__ import annotations

import math
import os
import time

import uvloop

from engine.bench.measure import Spread, summary
from engine.bench.wakeup import WakeupProbe, lateness, spread_from


def test_each_wake_up_is_at_or_after_its_deadline() -> None:
    start = time.monotonic()
    late = lateness(start, start + 0.2, 0.005)
    # A wake-up that finds several deadlines passed counts once: a busy machine gives fewer.
    assert 1 <= len(late) <= 41
    assert min(late) >= 0 and max(late) < 0.2
    assert time.monotonic() >= start + 0.2


def test_the_probe_process_reports_the_window_it_was_given() -> None:
    async def go() -> tuple[float, Spread]:
        start = time.monotonic() + 1.0  # after the process has started, as a rule
        probe = WakeupProbe(start, start + 0.5, sorted(os.sched_getaffinity(0))[:1])
        try:
            return start, await probe.result()
        finally:
            probe.close()

    start, spread = uvloop.run(go())
    assert time.monotonic() >= start + 0.5
    assert 1 <= spread.count <= 101  # fewer when it starts late: what it missed is not late
    assert 0 <= spread.p50_ms <= spread.p99_ms <= spread.max_ms


def test_a_late_start_is_not_counted_as_lateness() -> None:
    start = time.monotonic() - 1.0
    late = lateness(start, start + 1.1, 0.005)
    # The second already past is skipped, not one wake-up a second late (a loaded machine
    # may still be late by some milliseconds, and then serve fewer deadlines).
    assert 1 <= len(late) <= 21 and max(late) < 0.5


def test_a_spread_survives_its_json_form() -> None:
    s = summary([0.001, 0.002, 0.004])
    assert spread_from(s.as_dict()) == s
    empty = spread_from(summary([]).as_dict())
    assert empty.count == 0 and math.isnan(empty.p99_ms)
