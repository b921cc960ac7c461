"""The worker's one 20 ms clock: a timerfd on the pacer's absolute deadlines.

Every call with media has an :class:`Outlet` on it. At each sub-tick one call into
:class:`ClockPass` (native) pops the playout buffer of every call whose frame is due and
writes its AudioSocket message; Python runs once per sub-tick, not once per call. The
wake-ups come from a ``CLOCK_MONOTONIC`` timerfd registered with the loop as a reader, armed
periodically on the pacer's grid, so they land within microseconds of the deadline instead
of at the loop timers' millisecond granularity (``precise=False`` uses a loop timer). With no
outlet the clock does not wake at all.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from engine._impl import clockpass, timerfd

__all__ = ["READ_EOF", "READ_EVENTS", "READ_FAILED", "Clock", "Outlet"]

log = logging.getLogger("engine.clock")

Outlet = clockpass.Outlet
READ_EVENTS: int = clockpass.READ_EVENTS
READ_EOF: int = clockpass.READ_EOF
READ_FAILED: int = clockpass.READ_FAILED


class Clock:
    """Ticks its outlets on absolute deadlines; see :class:`engine.pacer.Pacer`.

    An outlet's owner hears ``clock_attention()`` when its outlet is watched and has played
    out, or when the pass read its caller and found events, the end of the stream or an error
    (``outlet.take_status()``); an outlet whose write or read raised is taken off the clock
    and logged.

    Args:
        loop: the worker's loop.
        on_stats: called with the pass at most once per tick, for metrics.
        precise: wake on a timerfd (else on a loop timer).
        read_every: reading outlets are read every this many of their ticks.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        *,
        tick: float = 0.020,
        subticks: int = 5,
        max_catchup: int = 3,
        on_stats: Callable[[Any], None] | None = None,
        precise: bool = True,
        read_every: int = 2,
    ) -> None:
        self.loop = loop
        self.now = timerfd.monotonic
        self.pacer = clockpass.ClockPass(self.now(), tick, subticks, max_catchup, read_every)
        self._on_stats = on_stats
        self._timer = timerfd.TimerFd() if precise else None
        self._handle: asyncio.TimerHandle | None = None
        self._armed = False
        self._running = False
        self._last_stats_tick = 0

    @property
    def precise(self) -> bool:
        return self._timer is not None

    @property
    def armed(self) -> bool:
        """The clock will wake (it has outlets and is running)."""
        return self._armed

    def start(self) -> None:
        self._running = True
        if self._timer is not None:
            self.loop.add_reader(self._timer.fileno(), self._fire)
        self._arm()

    def stop(self) -> None:
        self._running = False
        self._disarm()
        if self._timer is not None:
            self.loop.remove_reader(self._timer.fileno())
            self._timer.close()
            self._timer = None

    def add(self, outlet: Any) -> None:
        self.pacer.add(outlet, self.now())
        self._arm()

    def remove(self, outlet: Any) -> None:
        self.pacer.remove(outlet)

    def rephase(self, outlet: Any) -> None:
        """A response's first audio: the outlet's frame goes out now or at the nearest phase."""
        self.pacer.rephase(outlet, self.now())

    def __len__(self) -> int:
        return len(self.pacer)

    def _arm(self) -> None:
        if self._armed or not self._running or not len(self.pacer):
            return
        self._armed = True
        deadline = self.pacer.next_deadline()
        if self._timer is not None:
            self._timer.arm(deadline, self.pacer.interval)
        else:
            self._handle = self.loop.call_later(max(0.0, deadline - self.now()), self._fire)

    def _disarm(self) -> None:
        self._armed = False
        if self._timer is not None:
            self._timer.disarm()
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _fire(self) -> None:
        if self._timer is not None:
            self._timer.read()
        else:
            self._handle = None
            self._armed = False
        pacer = self.pacer
        for outlet in pacer.run(self.now()):
            if outlet.error is not None:
                log.error("clock_member_failed", exc_info=outlet.error,
                          extra={"_fields": {"member": repr(outlet.owner)}})
            try:
                outlet.owner.clock_attention()
            except Exception:
                log.exception("clock_member_failed",
                              extra={"_fields": {"member": repr(outlet.owner)}})
        if self._on_stats is not None and pacer.ticks != self._last_stats_tick:
            self._last_stats_tick = pacer.ticks
            self._on_stats(pacer)
        if not len(pacer):
            self._disarm()
        else:
            self._arm()
