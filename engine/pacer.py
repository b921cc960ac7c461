"""Which calls owe a frame, and when: the worker clock's arithmetic, without a clock.

Every call sends one 20 ms frame per tick. A tick is split into ``subticks`` phases (4 ms
each by default) and each call belongs to one phase bucket, so a wake-up visits only the calls
whose frame is due. Time is passed in (``now``); the adapter in :mod:`engine.clock` owns the
timer.

Invariants:

- Deadlines are absolute: sub-tick ``k`` is due at ``t0 + k * tick / subticks``, never at
  "now plus an interval", so pacing does not drift however late the wake-ups are.
- Each sub-tick is processed once, in order; a bucket is due once per tick.
- A late wake-up owes each due bucket one frame per tick deadline it missed, up to
  ``max_catchup`` frames; a longer backlog is dropped (a resync, counted), so a stall never
  turns into a burst the caller's jitter buffer cannot take.
- A member is in exactly one bucket. ``add`` puts it in the bucket due soonest, so a new
  call's first frame goes out within one sub-tick; ``rephase`` puts it in the bucket nearest
  in time, so a response's first audio goes out at once or within half a sub-tick, and the
  interval after it is within half a sub-tick of the period.
- Re-phasing is the only way a member gets two frames closer together than a tick; it
  happens once per response, and a move to another bucket is counted.
"""

from __future__ import annotations

from typing import Any

__all__ = ["LATENESS_BIN_MS", "Pacer"]

LATENESS_BIN_MS = 0.5
_LATENESS_BINS = 200
# A deadline computed as t0 + k * interval must count as reached at exactly that time, despite
# the rounding of (now - t0) / interval.
_EPSILON = 1e-9


class Pacer:
    """Phase buckets on an absolute sub-tick grid.

    Args:
        t0: time of sub-tick 0 (the clock's start).
        tick: the frame period in seconds.
        subticks: phases per tick.
        max_catchup: the most frames a member is owed after a late wake-up.
    """

    def __init__(
        self, t0: float, tick: float = 0.020, subticks: int = 5, max_catchup: int = 3
    ) -> None:
        if tick <= 0 or subticks < 1 or max_catchup < 1:
            raise ValueError("tick must be positive, subticks and max_catchup at least 1")
        self.t0 = t0
        self.tick = tick
        self.subticks = subticks
        self.interval = tick / subticks
        self.max_catchup = max_catchup
        self._buckets: list[dict[Any, None]] = [{} for _ in range(subticks)]
        self._where: dict[Any, int] = {}
        self._next = 0
        self.ticks = 0
        self.late_wakeups = 0
        self.max_lateness = 0.0
        self.catchup_frames = 0
        self.resyncs = 0
        self.rephases = 0
        self.lateness_bins = [0] * _LATENESS_BINS

    def __len__(self) -> int:
        return len(self._where)

    def __contains__(self, member: Any) -> bool:
        return member in self._where

    def next_deadline(self) -> float:
        """Absolute time of the next sub-tick to process."""
        return self.t0 + self._next * self.interval

    def add(self, member: Any, now: float) -> None:
        """Puts a new member in the bucket due soonest after ``now``."""
        if member in self._where:
            return
        if not self._where:
            self._skip_to(now)
        bucket = self._next % self.subticks
        self._buckets[bucket][member] = None
        self._where[member] = bucket

    def remove(self, member: Any) -> None:
        """Takes a member off the clock; unknown members are ignored."""
        bucket = self._where.pop(member, None)
        if bucket is not None:
            del self._buckets[bucket][member]

    def rephase(self, member: Any, now: float) -> bool:
        """Moves ``member`` to the phase nearest ``now``; True when its frame is due at once.

        For a response's first audio, once per response. When the last processed sub-tick is
        at most half a sub-tick before ``now``, the member joins that bucket and its frame is
        due now (the adapter sends it at once; the next follows a tick after that sub-tick,
        at most half a sub-tick off the period). Otherwise it joins the next sub-tick's
        bucket, due at most half a sub-tick from now. Unknown members are ignored (False).
        """
        old = self._where.get(member)
        if old is None:
            return False
        last = self._next - 1
        due_now = last >= 0 and now - (self.t0 + last * self.interval) <= self.interval / 2
        target = (last if due_now else self._next) % self.subticks
        if target != old:
            del self._buckets[old][member]
            self._buckets[target][member] = None
            self._where[member] = target
            self.rephases += 1
        return due_now

    def advance(self, now: float) -> list[tuple[list[Any], int]]:
        """Processes every sub-tick due by ``now``: (members, frames owed) per due bucket."""
        first = self._next
        last = int((now - self.t0) / self.interval + _EPSILON)
        if last < first:
            return []
        self._record_lateness(now - (self.t0 + first * self.interval))
        due = last - first + 1
        n = self.subticks
        self._next = last + 1
        self.ticks += (last // n) - ((first - 1) // n)
        if due <= n:
            return [(list(self._buckets[k % n]), 1) for k in range(first, last + 1)
                    if self._buckets[k % n]]
        out = []
        capped = False
        for k in range(last - n + 1, last + 1):
            owed = (k - first) // n + 1
            if owed > self.max_catchup:
                owed, capped = self.max_catchup, True
            members = list(self._buckets[k % n])
            if members:
                out.append((members, owed))
                self.catchup_frames += (owed - 1) * len(members)
        if capped:
            self.resyncs += 1
        return out

    def _skip_to(self, now: float) -> None:
        """Moves the next sub-tick to the first one after ``now`` (an idle clock restarting)."""
        k = int((now - self.t0) / self.interval + _EPSILON) + 1
        self._next = max(self._next, k)

    def _record_lateness(self, lateness: float) -> None:
        if lateness > self.interval:
            self.late_wakeups += 1
        if lateness > self.max_lateness:
            self.max_lateness = lateness
        index = min(int(lateness * 1000 / LATENESS_BIN_MS), _LATENESS_BINS - 1)
        self.lateness_bins[max(index, 0)] += 1
