"""A ``CLOCK_MONOTONIC`` timerfd through ctypes: the twin of ``engine._native.timerfd``."""

from __future__ import annotations

import ctypes
import os
import time

__all__ = ["TimerFd", "monotonic"]

_CLOCK_MONOTONIC = 1
_TFD_NONBLOCK = os.O_NONBLOCK
_TFD_CLOEXEC = os.O_CLOEXEC
_TFD_TIMER_ABSTIME = 1


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class _Itimerspec(ctypes.Structure):
    _fields_ = [("it_interval", _Timespec), ("it_value", _Timespec)]


_libc = ctypes.CDLL(None, use_errno=True)
_libc.timerfd_create.argtypes = [ctypes.c_int, ctypes.c_int]
_libc.timerfd_settime.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.POINTER(_Itimerspec),
                                  ctypes.c_void_p]


def monotonic() -> float:
    """Seconds on ``CLOCK_MONOTONIC``."""
    return time.monotonic()


def _split(seconds: float) -> _Timespec:
    ns = int(seconds * 1e9 + 0.5)
    if ns >= 1 << 63:  # ctypes would wrap the seconds silently
        raise OverflowError(f"{seconds:g} s is beyond the range of a timespec")
    return _Timespec(ns // 1_000_000_000, ns % 1_000_000_000)


def _fail(call: str) -> OSError:
    err = ctypes.get_errno()
    return OSError(err, f"{call}: {os.strerror(err)}")


class TimerFd:
    """One non-blocking, close-on-exec timerfd on ``CLOCK_MONOTONIC``."""

    def __init__(self) -> None:
        self.fd = _libc.timerfd_create(_CLOCK_MONOTONIC, _TFD_NONBLOCK | _TFD_CLOEXEC)
        if self.fd < 0:
            raise _fail("timerfd_create")

    def __del__(self) -> None:
        self.close()

    def fileno(self) -> int:
        return int(self.fd)

    def arm(self, deadline: float, interval: float = 0.0) -> None:
        """Fires at ``deadline`` (absolute), then every ``interval`` if positive.

        Raises:
            ValueError, OverflowError: a time is NaN, or 2**63 ns or more.
        """
        self._check()
        spec = _Itimerspec(_split(max(interval, 0.0)), _split(max(deadline, 1e-9)))
        if _libc.timerfd_settime(self.fd, _TFD_TIMER_ABSTIME, ctypes.byref(spec), None) < 0:
            raise _fail("timerfd_settime")

    def disarm(self) -> None:
        """Stops it firing."""
        self._check()
        spec = _Itimerspec(_Timespec(0, 0), _Timespec(0, 0))
        if _libc.timerfd_settime(self.fd, 0, ctypes.byref(spec), None) < 0:
            raise _fail("timerfd_settime")

    def read(self) -> int:
        """The expirations since the last read (0 when it has not fired)."""
        self._check()
        try:
            return int.from_bytes(os.read(self.fd, 8), "little")
        except BlockingIOError:
            return 0

    def close(self) -> None:
        if getattr(self, "fd", -1) >= 0:
            os.close(self.fd)
            self.fd = -1

    def _check(self) -> None:
        if self.fd < 0:
            raise ValueError("the timerfd is closed")
