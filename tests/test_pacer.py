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


def test_rephase_moves_the_next_frame_to_the_next_subtick_once() -> None:
    pacer = Pacer(0.0)
    pacer.add("a", 0.0)
    pacer.add("b", 0.0)
    pacer.advance(0.0)
    pacer.advance(SUB)
    now = SUB + 0.001
    assert pacer.rephase("b", now) is True
    served = pacer.advance(2 * SUB)
    assert served == [(["b"], 1)]
    # b sits in bucket 2 and sub-tick 3 is next: a second rephase moves it again ...
    assert pacer.rephase("b", 2 * SUB + 0.001) is True
    # ... and asking once more before the clock moves changes nothing.
    assert pacer.rephase("b", 2 * SUB + 0.002) is False
    assert pacer.rephases == 2


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
