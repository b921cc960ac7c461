"""The pacer's arithmetic on a fake clock: exact frames, bounded catch-up, no drift."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.pacer import Pacer

TICK = 0.020
SUB = TICK / 5


def frames_by_member(pacer: Pacer, now: float, sink: dict[object, list[tuple[float, int]]]) -> None:
    for members, frames in pacer.advance(now):
        for m in members:
            sink.setdefault(m, []).append((now, frames))


def test_every_member_gets_one_frame_per_tick_on_time() -> None:
    pacer = Pacer(0.0)
    sink: dict[object, list[tuple[float, int]]] = {}
    for i in range(10):
        pacer.add(f"call{i}", now=i * 0.0013)
    now = 0.0
    while now < 10.0:
        now = pacer.next_deadline()
        frames_by_member(pacer, now, sink)
    for got in sink.values():
        assert all(frames == 1 for _, frames in got)
        times = [t for t, _ in got]
        gaps = {round(b - a, 9) for a, b in zip(times, times[1:], strict=False)}
        assert gaps == {TICK}
        assert abs(len(got) - 500) <= 1


def test_a_new_member_starts_within_one_subtick() -> None:
    pacer = Pacer(0.0)
    pacer.add("a", 0.0)
    for _ in range(7):
        pacer.advance(pacer.next_deadline())
    now = pacer.next_deadline() - 0.0005
    pacer.add("b", now)
    assert 0 < pacer.next_deadline() - now <= SUB
    assert ["b"] in [m for m, _ in pacer.advance(pacer.next_deadline())]


def served_at(pacer: Pacer, k: int) -> list[object]:
    """The members served by processing sub-tick ``k`` (and any before it still due)."""
    return [m for members, _ in pacer.advance(k * SUB) for m in members]


def test_rephase_just_after_a_subtick_sends_at_once_and_keeps_the_period() -> None:
    pacer = Pacer(0.0)
    pacer.add("a", 0.0)  # joins the bucket of sub-tick 1
    pacer.add("b", 0.0)
    assert served_at(pacer, 1) == ["a", "b"]
    assert served_at(pacer, 2) == []
    # Half a sub-tick or less after sub-tick 2: "a" is due at once and joins bucket 2.
    assert pacer.rephase("a", 2 * SUB + 0.4 * SUB) is True
    assert pacer.rephases == 1
    assert [served_at(pacer, k) for k in range(3, 8)] == [[], [], [], ["b"], ["a"]]
    # The interval after the immediate frame: 7 * SUB - 2.4 * SUB = 4.6 sub-ticks = 18.4 ms,
    # within half a sub-tick (2 ms) of the 20 ms period.


def test_rephase_later_in_a_subtick_waits_for_the_next_one() -> None:
    pacer = Pacer(0.0)
    pacer.add("a", 0.0)
    served_at(pacer, 1)
    assert served_at(pacer, 2) == []
    assert pacer.rephase("a", 2 * SUB + 0.6 * SUB) is False
    assert served_at(pacer, 3) == ["a"]
    assert pacer.rephases == 1


def test_rephase_into_the_bucket_it_is_in_moves_nothing() -> None:
    pacer = Pacer(0.0)
    pacer.add("a", 0.0)
    served_at(pacer, 1)
    # Just after its own sub-tick: due at once (its silence went out a moment ago), no move.
    assert pacer.rephase("a", SUB + 0.1 * SUB) is True
    assert pacer.rephases == 0
    assert [served_at(pacer, k) for k in range(2, 7)] == [[], [], [], [], ["a"]]


def test_late_wakeup_is_caught_up_within_the_bound() -> None:
    pacer = Pacer(0.0, max_catchup=3)
    pacer.add("a", 0.0)
    first = pacer.next_deadline()
    assert pacer.advance(first) == [(["a"], 1)]
    # Wake 2.5 ticks late: two whole deadlines missed, both owed.
    out = pacer.advance(first + 2.5 * TICK)
    assert out == [(["a"], 2)]
    assert pacer.late_wakeups == 1 and pacer.resyncs == 0
    assert pacer.catchup_frames == 1


def test_a_long_stall_resynchronises_instead_of_bursting() -> None:
    pacer = Pacer(0.0, max_catchup=3)
    pacer.add("a", 0.0)
    pacer.advance(pacer.next_deadline())
    out = pacer.advance(1.0)
    assert out == [(["a"], 3)]
    assert pacer.resyncs == 1
    assert pacer.next_deadline() > 1.0
    nxt = pacer.advance(pacer.next_deadline() + 4 * SUB)
    assert nxt == [(["a"], 1)]


def test_remove_during_iteration_and_unknown_members() -> None:
    pacer = Pacer(0.0)
    for m in "abc":
        pacer.add(m, 0.0)
    for members, _ in pacer.advance(pacer.next_deadline()):
        for m in members:
            pacer.remove(m)
    assert len(pacer) == 0
    pacer.remove("zzz")
    assert pacer.rephase("zzz", 0.0) is False


def test_an_idle_clock_restarts_without_a_false_resync() -> None:
    pacer = Pacer(0.0)
    pacer.add("a", 0.0)
    pacer.advance(0.0)
    pacer.remove("a")
    pacer.add("b", 100.0)
    assert pacer.advance(pacer.next_deadline()) == [(["b"], 1)]
    assert pacer.resyncs == 0


@settings(max_examples=100, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    jitter_ms=st.floats(0.0, 15.0),
    members=st.integers(1, 30),
)
def test_no_drift_under_jittered_wakeups(seed: int, jitter_ms: float, members: int) -> None:
    """Wake-ups late by up to 15 ms, never more: every member gets exactly one frame per tick
    deadline that passed, none lost and none doubled."""
    rng = random.Random(seed)
    pacer = Pacer(0.0, max_catchup=3)
    for i in range(members):
        pacer.add(i, 0.0)
    # Every member joined the bucket of the next sub-tick: due then and every 5 sub-ticks on.
    phase = round(pacer.next_deadline() / SUB) % 5
    totals = dict.fromkeys(range(members), 0)
    now = 0.0
    end = 5.0
    while True:
        now = max(now, pacer.next_deadline() + rng.uniform(0, jitter_ms / 1000))
        if now > end:
            break
        for group, frames in pacer.advance(now):
            assert frames <= 3
            for m in group:
                totals[m] += frames
    last = pacer.next_deadline()
    for m, got in totals.items():
        due = sum(1 for k in range(int(round(last / SUB))) if k % 5 == phase)
        assert got == due, (m, got, due)
    assert pacer.resyncs == 0


def test_invalid_parameters() -> None:
    with pytest.raises(ValueError):
        Pacer(0.0, tick=0)
    with pytest.raises(ValueError):
        Pacer(0.0, subticks=0)
