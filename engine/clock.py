"""The worker's one 20 ms clock: a timer on the pacer's absolute deadlines.

Every call with media is a member; at each sub-tick the members whose frame is due get
``member.tick(frames)``, which pops their playout buffer and writes one AudioSocket message.
The arithmetic is :class:`engine.pacer.Pacer`'s; this adapter only owns the timer. With no
member the clock does not wake at all.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Protocol

from engine.pacer import Pacer

__all__ = ["Clock", "Member"]

log = logging.getLogger("engine.clock")


class Member(Protocol):
    def tick(self, frames: int) -> None: ...


class Clock:
    """Ticks its members on absolute deadlines; see :class:`engine.pacer.Pacer`.

    Args:
        loop: the worker's loop.
        on_stats: called with the pacer at most once per tick, for metrics.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        *,
        tick: float = 0.020,
        subticks: int = 5,
        max_catchup: int = 3,
        on_stats: Callable[[Pacer], None] | None = None,
    ) -> None:
        self.loop = loop
        self.pacer = Pacer(loop.time(), tick, subticks, max_catchup)
        self._on_stats = on_stats
        self._handle: asyncio.TimerHandle | None = None
        self._running = False
        self._last_stats_tick = 0

    def start(self) -> None:
        self._running = True
        self._arm()

    def stop(self) -> None:
        self._running = False
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def add(self, member: Member) -> None:
        self.pacer.add(member, self.loop.time())
        self._arm()

    def remove(self, member: Member) -> None:
        self.pacer.remove(member)

    def rephase(self, member: Member) -> None:
        """A response's first audio: the member's frame goes out now or at the nearest phase."""
        if self.pacer.rephase(member, self.loop.time()):
            member.tick(1)

    def __len__(self) -> int:
        return len(self.pacer)

    def _arm(self) -> None:
        if self._handle is None and self._running and len(self.pacer):
            self._handle = self.loop.call_at(self.pacer.next_deadline(), self._fire)

    def _fire(self) -> None:
        self._handle = None
        pacer = self.pacer
        for members, frames in pacer.advance(self.loop.time()):
            for member in members:
                try:
                    member.tick(frames)
                except Exception:
                    pacer.remove(member)
                    log.exception(
                        "clock_member_failed", extra={"_fields": {"member": repr(member)}}
                    )
        if self._on_stats is not None and pacer.ticks != self._last_stats_tick:
            self._last_stats_tick = pacer.ticks
            self._on_stats(pacer)
        self._arm()
