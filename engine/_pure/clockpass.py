"""The worker clock's pass: the twin of ``engine._native.clockpass``, on the Pacer's arithmetic.

:class:`ClockPass` is :class:`engine.pacer.Pacer` over :class:`Outlet` records, with
:meth:`ClockPass.run` doing each due call's step in Python: pop its playout buffer, write the
AudioSocket message through ``transport.write`` (the twin never writes to a socket itself),
and read a reading outlet's caller every ``read_every`` visits, after every due frame is out.
"""

from __future__ import annotations

import os
from typing import Any

from engine.pacer import LATENESS_BIN_MS, Pacer

__all__ = ["LATENESS_BIN_MS", "READ_EOF", "READ_EVENTS", "READ_FAILED", "ClockPass", "Outlet"]

READ_EVENTS = 1
READ_EOF = 2
READ_FAILED = 4

_READ_SIZE = 65536
_READ_CHUNKS = 4


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
        self.upstream_send: Any = None
        self.tap: bytearray | None = None
        self.status = 0
        self.read_errno = 0
        self.reads = 0
        self.visits = 0
        self._parser: Any = None
        self._up: list[bytes] | None = None

    @property
    def played_out(self) -> bool:
        """Nothing of the model's is left to play."""
        return not self.playout.playing and self.playout.buffered_samples == 0

    @property
    def reading(self) -> bool:
        """The pass reads this outlet's caller."""
        return self._parser is not None

    def read_with(self, parser: Any, upstream_frames: list[bytes] | None) -> None:
        """From now on the pass reads the caller into ``parser``; see the native twin."""
        if parser is not None and self.fd < 0:
            raise ValueError("an outlet without a socket cannot read")
        self._parser = parser
        self._up = upstream_frames

    def take_status(self) -> int:
        """What the reads found since the last call (READ_* bits); cleared."""
        status, self.status = self.status, 0
        return status

    def emit(self, frames: int) -> None:
        """Pops and writes ``frames`` messages (more than one only when catching up)."""
        messages = [self.playout.pop_message() for _ in range(frames)]
        self.frames += frames
        if self.tap is not None:
            for one in messages:
                self.tap += one[3:]
        self.transport.write(b"".join(messages))

    def read(self) -> None:
        """Reads what has arrived; sends finished upstream frames; sets status bits."""
        parser = self._parser
        for _ in range(_READ_CHUNKS):
            try:
                data = os.read(self.fd, _READ_SIZE)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:
                self.read_errno = exc.errno or 0
                self.status |= READ_FAILED
                break
            if not data:
                self.status |= READ_EOF
                break
            self.reads += 1
            parser.receive_data(data)
            if len(data) < _READ_SIZE or parser.finished:
                break
        if parser.has_events:
            self.status |= READ_EVENTS
        up = self._up
        if up:
            if self.upstream_send is None:
                self.status |= READ_EVENTS
            else:
                self.upstream_send(up)
                del up[:]


class ClockPass(Pacer):
    """Phase buckets of outlets on an absolute sub-tick grid, and the pass over the due ones."""

    def __init__(
        self, t0: float, tick: float = 0.020, subticks: int = 5, max_catchup: int = 3,
        read_every: int = 2,
    ) -> None:
        if read_every < 1:
            raise ValueError(
                "tick must be positive, subticks, max_catchup and read_every at least 1")
        super().__init__(t0, tick, subticks, max_catchup)
        self.read_every = read_every

    def rephase(self, member: Any, now: float) -> bool:
        due_now = super().rephase(member, now)
        if due_now:
            member.emit(1)
        return due_now

    def run(self, now: float) -> list[Outlet]:
        """Processes every sub-tick due by ``now``: each due outlet's frames are written, then
        the reading ones due a read are read.

        Returns the outlets Python must look at: watched ones that have played out, reading
        ones with a status, and those whose write or read raised (off the clock).
        """
        attention: list[Outlet] = []
        for outlets, frames in self.advance(now):
            reading = []
            for outlet in outlets:
                if outlet not in self:
                    continue
                try:
                    outlet.emit(frames)
                except Exception as exc:
                    self._failed(outlet, exc, attention)
                    continue
                if outlet.reading:
                    outlet.visits += 1
                    reading.append(outlet)
                elif outlet.watch and outlet.played_out:
                    attention.append(outlet)
            for outlet in reading:
                if outlet not in self or not outlet.reading:
                    continue
                if outlet.visits >= self.read_every:
                    outlet.visits = 0
                    try:
                        outlet.read()
                    except Exception as exc:
                        self._failed(outlet, exc, attention)
                        continue
                if outlet.status or (outlet.watch and outlet.played_out):
                    attention.append(outlet)
        return attention

    def _failed(self, outlet: Outlet, exc: Exception, attention: list[Outlet]) -> None:
        outlet.error = exc
        self.remove(outlet)
        attention.append(outlet)
