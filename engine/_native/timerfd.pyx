# cython: language_level=3
"""A ``CLOCK_MONOTONIC`` timerfd: wake-ups at absolute deadlines, to the microsecond.

The event loop's own timers have millisecond granularity and run after its other callbacks;
a timerfd is a descriptor the kernel makes readable at the deadline, so the loop wakes from
``epoll_wait`` then. Python 3.11 has no ``os.timerfd_create``; this is the small wrapper.
"""

from libc.errno cimport EAGAIN, errno
from libc.stdint cimport uint64_t
from posix.time cimport CLOCK_MONOTONIC, clock_gettime, itimerspec, timespec
from posix.unistd cimport close, read

import os

__all__ = ["TimerFd", "monotonic"]


cdef extern from "<sys/timerfd.h>" nogil:
    int timerfd_create(int clockid, int flags)
    int timerfd_settime(int fd, int flags, const itimerspec *new_value, itimerspec *old_value)
    enum:
        TFD_NONBLOCK
        TFD_CLOEXEC
        TFD_TIMER_ABSTIME


cdef double _NS_LIMIT = 9223372036854775808.0  # 2**63 ns, about 292 years


def monotonic():
    """Seconds on ``CLOCK_MONOTONIC`` (what ``time.monotonic`` reads on Linux)."""
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return ts.tv_sec + ts.tv_nsec * 1e-9


cdef int _split(double seconds, timespec *ts) except -1:
    cdef double rounded = seconds * 1e9 + 0.5
    # Checked first: C leaves the conversion of NaN or of a value out of range undefined.
    if rounded != rounded:
        raise ValueError("cannot convert float NaN to integer")
    if not rounded < _NS_LIMIT:
        raise OverflowError(f"{seconds:g} s is beyond the range of a timespec")
    cdef long long ns = <long long>rounded
    ts.tv_sec = ns // 1000000000
    ts.tv_nsec = ns % 1000000000
    return 0


cdef class TimerFd:
    """One non-blocking, close-on-exec timerfd on ``CLOCK_MONOTONIC``.

    Raises:
        OSError: the kernel refused to make one.
    """

    cdef readonly int fd

    def __cinit__(self):
        self.fd = -1

    def __init__(self):
        self.fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC)
        if self.fd < 0:
            raise OSError(errno, f"timerfd_create: {os.strerror(errno)}")

    def __dealloc__(self):
        if self.fd >= 0:
            close(self.fd)

    def fileno(self):
        return self.fd

    def arm(self, double deadline, double interval=0.0):
        """Fires at ``deadline`` (absolute, monotonic seconds), then every ``interval`` if
        positive, on that grid; replaces any earlier setting.

        Raises:
            ValueError, OverflowError: a time is NaN, or 2**63 ns or more.
        """
        cdef itimerspec spec
        self._check()
        _split(max(deadline, 1e-9), &spec.it_value)
        _split(max(interval, 0.0), &spec.it_interval)
        if timerfd_settime(self.fd, TFD_TIMER_ABSTIME, &spec, NULL) < 0:
            raise OSError(errno, f"timerfd_settime: {os.strerror(errno)}")

    def disarm(self):
        """Stops it firing."""
        cdef itimerspec spec
        self._check()
        spec.it_value.tv_sec = spec.it_value.tv_nsec = 0
        spec.it_interval.tv_sec = spec.it_interval.tv_nsec = 0
        if timerfd_settime(self.fd, 0, &spec, NULL) < 0:
            raise OSError(errno, f"timerfd_settime: {os.strerror(errno)}")

    def read(self):
        """The expirations since the last read (0 when it has not fired)."""
        cdef uint64_t count = 0
        self._check()
        if read(self.fd, &count, 8) != 8:
            if errno == EAGAIN:
                return 0
            raise OSError(errno, f"timerfd read: {os.strerror(errno)}")
        return count

    def close(self):
        if self.fd >= 0:
            close(self.fd)
            self.fd = -1

    cdef int _check(self) except -1:
        if self.fd < 0:
            raise ValueError("the timerfd is closed")
        return 0
