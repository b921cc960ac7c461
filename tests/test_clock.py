"""The clock on a real uvloop loop: members get their frames, a failing one is dropped alone."""

from __future__ import annotations

import asyncio
import logging

import pytest
import uvloop

from engine.clock import Clock


class Counter:
    def __init__(self) -> None:
        self.frames = 0

    def tick(self, frames: int) -> None:
        self.frames += frames


class Broken:
    def tick(self, frames: int) -> None:
        raise RuntimeError("boom")


def run(coro):  # type: ignore[no-untyped-def]
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coro)


def test_members_get_a_frame_per_tick_and_a_failing_member_is_removed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def main() -> tuple[list[int], float, int]:
        loop = asyncio.get_running_loop()
        clock = Clock(loop)
        clock.start()
        counters = [Counter() for _ in range(20)]
        start = loop.time()
        for c in counters:
            clock.add(c)
        clock.add(Broken())
        await asyncio.sleep(0.5)
        elapsed = loop.time() - start
        remaining = len(clock)
        clock.stop()
        frames = [c.frames for c in counters]
        await asyncio.sleep(0.05)
        assert [c.frames for c in counters] == frames, "ticks after stop()"
        return frames, elapsed, remaining

    with caplog.at_level(logging.ERROR, logger="engine.clock"):
        frames, elapsed, remaining = run(main())
    expected = elapsed / 0.020
    assert all(abs(f - expected) <= 2 for f in frames), (frames, expected)
    assert remaining == 20
    assert [r.getMessage() for r in caplog.records] == ["clock_member_failed"]


def test_an_idle_clock_does_not_wake() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        clock = Clock(loop)
        clock.start()
        counter = Counter()
        clock.add(counter)
        await asyncio.sleep(0.1)
        clock.remove(counter)
        await asyncio.sleep(0.05)
        assert clock._handle is None or not len(clock)
        await asyncio.sleep(0.05)
        assert clock._handle is None
        clock.add(counter)
        before = counter.frames
        await asyncio.sleep(0.1)
        assert counter.frames - before >= 3
        assert clock.pacer.resyncs == 0
        clock.stop()
        assert clock._handle is None

    run(main())


class Stamps:
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.times: list[float] = []

    def tick(self, frames: int) -> None:
        self.times.extend([self.loop.time()] * frames)


def test_a_rephase_sends_at_once_or_within_half_a_subtick_and_keeps_the_period() -> None:
    async def main() -> list[tuple[float, float, float]]:
        loop = asyncio.get_running_loop()
        clock = Clock(loop)
        clock.start()
        out = []
        for offset in (0.0007, 0.0013, 0.0029, 0.0037):
            member = Stamps(loop)
            clock.add(member)
            await asyncio.sleep(0.1)
            # Just after one of the clock's sub-ticks, plus an offset into the next one.
            last = clock.pacer.next_deadline() - clock.pacer.interval
            await asyncio.sleep(max(0.0, last + offset - loop.time()))
            asked = loop.time()
            before = len(member.times)
            clock.rephase(member)
            await asyncio.sleep(0.05)
            first, second = member.times[before], member.times[before + 1]
            out.append((asked - last, first - asked, second - first))
            clock.remove(member)
        clock.stop()
        return out

    for since, wait, interval in run(main()):
        if since <= 0.002:  # within half a sub-tick of the last one: sent from rephase()
            assert wait == 0, (since, wait)
        else:
            assert 0 <= wait <= 0.005, (since, wait)  # the next sub-tick, plus timer slack
        assert abs(interval - 0.020) <= 0.005, (since, interval)
