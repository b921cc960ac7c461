"""``voice-engine bench --churn``: calls that keep starting and ending, read row by row.

One short real soak (a real engine process, the simulator, rows of 2 s instead of a minute)
shows the churn, the timeline and the baselines; the binning and the memory fit are checked
on figures known by hand.
"""

from __future__ import annotations

import json
import math
from dataclasses import replace

import numpy as np
import pytest
import uvloop

from engine.bench.report import BenchResult, render
from engine.bench.run import BenchOptions, run
from engine.bench.soak import (
    CallSpan,
    Resources,
    gauge_value,
    memory_growth,
    minute_ends,
    timeline,
)
from engine.errors import BenchError
from tests.test_bench import BRISK

SOAK_KEYS = {"soak_rss_kb_per_1000_calls", "soak_fds_over_baseline", "soak_tasks_over_baseline",
             "soak_pacing_p99_worst_minute_ms"}


@pytest.fixture(scope="module")
def soaked() -> BenchResult:
    opts = BenchOptions(calls=5, duration=8.0, ramp=50.0, churn=1.0, minute_s=2.0,
                        response_ms=600, pattern=BRISK)
    return uvloop.run(run(opts))


def test_a_soak_churns_its_calls_and_keeps_them_up(soaked: BenchResult) -> None:
    c = soaked.calls
    # Five slots of 0.5-1.5 s calls for 8 s and more: calls placed many times over.
    assert c["placed"] >= 5 * 5 and c["connected"] == c["placed"] and c["failed"] == 0
    # A slot may be between two calls at the moment the hold ends (the next one connecting).
    assert c["dropped"] == 0 and 3 <= c["held_to_end"] <= 5
    assert c["engine_end_reasons"] == {"caller_hangup": c["placed"]}
    assert soaked.sim["sessions"] == c["placed"] and soaked.sim["invalid"] == 0
    assert soaked.responses >= 1  # the calls spoke and were answered under churn
    assert soaked.options["churn_s"] == 1.0


def test_a_soak_has_a_row_per_stretch_with_its_calls_pacing_and_resources(
    soaked: BenchResult,
) -> None:
    s = soaked.soak
    assert s is not None and [m.number for m in s.minutes] == [1, 2, 3, 4]
    assert [(m.start_s, m.end_s) for m in s.minutes[:3]] == [(0, 2), (2, 4), (4, 6)]
    assert s.minutes[-1].end_s == 8.0
    assert sum(m.started for m in s.minutes) == soaked.calls["placed"]
    assert sum(m.ended for m in s.minutes) + s.hung_up_at_stop == soaked.calls["placed"]
    assert 3 <= s.hung_up_at_stop <= 5 and all(m.failed == 0 for m in s.minutes)
    assert all(m.started >= 1 and m.ended >= 1 for m in s.minutes)
    for m in s.minutes:
        r = m.resources
        assert 3 <= r.calls_up <= 5 and r.rss_bytes and r.fds and r.threads and r.tasks
    assert sum(m.pacing.intervals for m in s.minutes) > 0
    assert s.worst_pacing_p99_ms is not None
    assert s.growth.points == 4 and s.growth.calls > 10
    assert s.growth.kb_per_1000_calls is not None  # its size means nothing in 8 s


def test_after_a_soak_fds_and_tasks_are_back_at_baseline(soaked: BenchResult) -> None:
    s = soaked.soak
    assert s is not None
    before, after = s.before, s.after
    assert before.calls_up == 0 and after.calls_up == 0
    assert before.tasks is not None and after.tasks == before.tasks
    assert before.fds is not None and after.fds is not None
    # Only the records store's SQLite file, WAL and shared memory stay, opened at the first.
    assert 0 <= after.fds - before.fds <= 3
    # With calls up there were more of both than at either end.
    assert all(m.resources.fds > after.fds for m in s.minutes)  # type: ignore[operator]
    verdicts = soaked.verdicts()
    assert verdicts["soak_fds_over_baseline"] is True
    assert verdicts["soak_tasks_over_baseline"] is True


def test_a_soak_is_reported_in_json_and_in_the_table(soaked: BenchResult) -> None:
    doc = json.loads(json.dumps(soaked.as_dict()))
    soak = doc["soak"]
    assert soak["churn_s"] == 1.0 and soak["call_length_s"] == [0.5, 1.5]
    assert len(soak["timeline"]) == 4
    row = soak["timeline"][0]
    assert set(row) == {"minute", "from_s", "to_s", "started", "ended", "failed", "pacing",
                        "t_s", "calls_up", "rss_mb", "fds", "threads", "tasks"}
    assert soak["calls"]["started"] == doc["calls"]["placed"]
    assert soak["baseline"]["before"]["tasks"] == soak["baseline"]["after"]["tasks"]
    assert soak["tasks_over_baseline"] == 0
    assert SOAK_KEYS <= set(doc["targets"])
    text = render(soaked)
    assert "soak         calls of 0.5–1.5 s (--churn 1)" in text
    assert "  before  " in text and "   after  " in text and "baseline     " in text
    for key in SOAK_KEYS:
        assert any(line.startswith(key) for line in text.splitlines())
    assert "design: a call leaves no task behind" in text
    assert "issue: pacing promise, every minute" in text


def test_check_fails_a_soak_that_leaves_a_task_behind(
    soaked: BenchResult, monkeypatch: pytest.MonkeyPatch,
) -> None:
    from click.testing import CliRunner

    import engine.bench.run as bench_run
    from engine.bench.command import command

    s = soaked.soak
    assert s is not None and s.before.tasks is not None
    leaky = replace(soaked, soak=replace(s, after=replace(s.after, tasks=s.before.tasks + 2)))
    seen: list[BenchOptions] = []

    def main_loop(opts: BenchOptions, progress: object) -> BenchResult:
        seen.append(opts)
        return leaky

    monkeypatch.setattr(bench_run, "main_loop", main_loop)
    out = CliRunner().invoke(command, ["--calls", "5", "--churn", "1.5", "--check", "--quiet",
                                       "--no-pin"])
    assert out.exit_code == 1
    assert seen[0].churn == 1.5
    assert "soak_tasks_over_baseline" in out.output.splitlines()[-1]
    row = next(line for line in out.output.splitlines()
               if line.startswith("soak_tasks_over_baseline"))
    assert "2.000" in row and "MISSED" in row


def test_churn_must_be_positive() -> None:
    with pytest.raises(BenchError, match="churn"):
        BenchOptions(churn=-1.0)
    with pytest.raises(BenchError, match="row"):
        BenchOptions(churn=1.0, minute_s=0.0)
    assert BenchOptions().churn == 0.0


# -- the timeline and the fit, by hand --------------------------------------------------------


T0 = 1000.0


def _sample(t: float, rss_mb: float | None = 100.0, up: int = 2) -> Resources:
    rss = None if rss_mb is None else round(rss_mb * 2**20)
    return Resources(T0 + t, up, rss, 40, 9, 5)


def test_calls_and_intervals_fall_into_their_minute() -> None:
    calls = [
        CallSpan(T0 - 1.0, T0 + 30.0, True, False),  # placed in the ramp: the first minute
        CallSpan(T0 + 59.9, T0 + 61.0, True, True),  # ended badly in the second
        CallSpan(T0 + 70.0, None, True, False),  # still up
        CallSpan(T0 + 110.0, T0 + 130.5, True, False),  # hung up by the stop at 130
        CallSpan(T0 + 125.0, T0 + 125.0, False, True),  # never connected, after the hold
    ]
    ends = np.array([T0 + 1.0, T0 + 60.0, T0 + 61.0, T0 + 121.0])
    intervals = np.array([0.020, 0.021, 0.025, 0.019])
    samples = [_sample(60.0), _sample(120.0)]
    rows = timeline(T0, 60.0, 120.0, T0 + 130.0, calls, ends, intervals, samples)
    assert [(m.started, m.ended, m.failed) for m in rows] == [(2, 1, 0), (3, 2, 2)]
    assert [m.pacing.intervals for m in rows] == [1, 3]
    assert rows[1].pacing.max_ms == pytest.approx(5.0)
    assert rows[0].pacing.p50_ms == pytest.approx(0.0, abs=1e-9)
    assert [(m.start_s, m.end_s) for m in rows] == [(0.0, 60.0), (60.0, 120.0)]
    assert timeline(T0, 60.0, 120.0, T0, calls, ends, intervals, []) == []


def test_memory_is_fitted_against_calls_ended() -> None:
    # 100 calls end per minute and RSS grows by 1 MB per 1,000 of them: 1,024 KB per 1,000.
    calls = [CallSpan(T0, T0 + 0.6 * i, True, False) for i in range(1, 501)]
    calls.append(CallSpan(T0, T0 + 1.0, False, True))  # never connected: not counted
    samples = [_sample(60.0 * k, 100.0 + 0.1 * k) for k in range(1, 6)]
    g = memory_growth(samples, calls)
    assert g.points == 5 and g.calls == 400
    assert g.kb_per_1000_calls == pytest.approx(1024.0, rel=1e-6)
    assert g.fraction == pytest.approx(0.4 / 100.1, rel=1e-6)
    flat = memory_growth([_sample(60.0 * k) for k in range(1, 6)], calls)
    assert flat.kb_per_1000_calls == pytest.approx(0.0, abs=1e-6)
    assert flat.fraction == pytest.approx(0.0, abs=1e-9)


def test_memory_is_not_fitted_on_too_little() -> None:
    calls = [CallSpan(T0, T0 + i, True, False) for i in range(1, 200)]
    two = memory_growth([_sample(60.0), _sample(120.0)], calls)
    assert two.points == 2 and two.kb_per_1000_calls is None and two.fraction is None
    still = memory_growth([_sample(200.0 + k) for k in range(5)], calls)
    assert still.calls == 0 and still.kb_per_1000_calls is None
    blind = memory_growth([_sample(60.0 * k, None) for k in range(1, 6)], calls)
    assert blind.points == 0 and blind.kb_per_1000_calls is None


def test_minute_ends_and_gauges() -> None:
    assert minute_ends(0.0, 150.0, 60.0) == [60.0, 120.0, 150.0]
    assert minute_ends(0.0, 120.0, 60.0) == [60.0, 120.0]
    assert minute_ends(0.0, 8.0, 2.0) == [2.0, 4.0, 6.0, 8.0]
    text = ("# HELP voice_engine_event_loop_tasks Unfinished tasks\n"
            "# TYPE voice_engine_event_loop_tasks gauge\n"
            "voice_engine_event_loop_tasks_other 9.0\n"
            "voice_engine_event_loop_tasks 7.0\n")
    assert gauge_value(text, "voice_engine_event_loop_tasks") == 7.0
    assert gauge_value(text, "voice_engine_active_calls") is None
    assert math.isnan(gauge_value("x NaN\n", "x") or 0.0)
