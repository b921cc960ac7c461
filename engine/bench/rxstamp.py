"""Kernel receive timestamps on a TCP socket, moved onto the bench's monotonic timeline.

With ``SO_TIMESTAMPNS`` on, every ``recvmsg`` carries the time (``CLOCK_REALTIME``) the kernel
received the newest segment it returns, taken before any scheduling delay of the reader: what
the engine's pacing looks like on the wire, without the generator's own wake-up jitter. The
simulator's times are ``time.monotonic()``, so a :class:`ClockOffset` measured once at start
turns a stamp into a monotonic time. Linux only.
"""

from __future__ import annotations

import socket
import struct
import time
from dataclasses import dataclass

__all__ = ["ANCILLARY_SIZE", "SO_TIMESTAMPNS", "ClockOffset", "enable", "hold_stamping",
           "stamp_ns"]

# <asm-generic/socket.h>: Python's socket module does not name it. SCM_TIMESTAMPNS is the same.
SO_TIMESTAMPNS = 35
_TIMESPEC = struct.Struct("@qq")
ANCILLARY_SIZE = socket.CMSG_SPACE(_TIMESPEC.size)
_SAMPLES = 9


def enable(sock: socket.socket) -> None:
    """Asks the kernel to stamp what ``sock`` receives (read it with ``recvmsg``)."""
    sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)


def hold_stamping() -> socket.socket:
    """A socket that only asks for timestamps, to keep the kernel stamping: close it when done.

    The kernel stamps received packets only while some socket asks, and turns stamping on in
    a deferred work item when the first one does; a socket held from before the first call
    means that call's first frames are stamped too.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    enable(sock)
    return sock


def stamp_ns(ancillary: list[tuple[int, int, bytes]]) -> int | None:
    """The receive time in ``CLOCK_REALTIME`` ns from ``recvmsg``'s ancillary data, or None."""
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(data) >= _TIMESPEC.size:
            sec, nsec = _TIMESPEC.unpack_from(data)
            return int(sec * 1_000_000_000 + nsec)
    return None


@dataclass(frozen=True, slots=True)
class ClockOffset:
    """``CLOCK_REALTIME`` minus ``CLOCK_MONOTONIC``, in ns, and how tightly it was bracketed."""

    ns: int
    uncertainty_ns: int

    @classmethod
    def measure(cls) -> ClockOffset:
        """Reads the realtime clock between two monotonic reads, a few times, and keeps the
        tightest bracket (a preemption between the reads would widen it)."""
        best: ClockOffset | None = None
        for _ in range(_SAMPLES):
            before = time.monotonic_ns()
            real = time.time_ns()
            after = time.monotonic_ns()
            found = cls(real - (before + after) // 2, (after - before + 1) // 2)
            if best is None or found.uncertainty_ns < best.uncertainty_ns:
                best = found
        assert best is not None
        return best

    def monotonic(self, realtime_ns: int) -> float:
        """A ``CLOCK_REALTIME`` time in ns as seconds on ``time.monotonic()``'s clock."""
        return (realtime_ns - self.ns) * 1e-9
