"""The worker clock's pass: the twin of ``engine._native.clockpass``, on the Pacer's arithmetic.

:class:`ClockPass` is :class:`engine.pacer.Pacer` over :class:`Outlet` records, with
:meth:`ClockPass.run` doing each due call's step in Python: pop its playout buffer, write the
AudioSocket message through ``transport.write`` (the twin never writes to a socket itself).
"""

from __future__ import annotations

from typing import Any

from engine.pacer import LATENESS_BIN_MS, Pacer

__all__ = ["LATENESS_BIN_MS", "ClockPass", "Outlet"]


class Outlet:
    """One call's place on the clock: its playout buffer and where its frames go."""

    def __init__(self, owner: Any, playout: Any, transport: Any, fd: int = -1) -> None:
        if playout is None:
            raise TypeError("an outlet needs a playout buffer")
        self.owner = owner
        self.playout = playout
        self.transport = transport
        self.fd = fd
        self.watch = False
        self.frames = 0
        self.direct = 0
        self.error: Exception | None = None

    @property
    def played_out(self) -> bool:
        """Nothing of the model's is left to play."""
        return not self.playout.playing and self.playout.buffered_samples == 0

    def emit(self, frames: int) -> None:
        """Pops and writes ``frames`` messages (more than one only when catching up)."""
        message = b"".join(self.playout.pop_message() for _ in range(frames))
        self.frames += frames
        self.transport.write(message)


class ClockPass(Pacer):
    """Phase buckets of outlets on an absolute sub-tick grid, and the pass over the due ones."""

    def rephase(self, member: Any, now: float) -> bool:
        due_now = super().rephase(member, now)
        if due_now:
            member.emit(1)
        return due_now

    def run(self, now: float) -> list[Outlet]:
        """Processes every sub-tick due by ``now``: each due outlet's frames are written.

        Returns the watched outlets that have played out and those whose write raised.
        """
        attention: list[Outlet] = []
        for outlets, frames in self.advance(now):
            for outlet in outlets:
                if outlet not in self:
                    continue
                try:
                    outlet.emit(frames)
                except Exception as exc:
                    outlet.error = exc
                    self.remove(outlet)
                    attention.append(outlet)
                    continue
                if outlet.watch and outlet.played_out:
                    attention.append(outlet)
        return attention
