"""Giving freed heap memory back to the kernel.

Calls churn: each one allocates and frees its buffers (the playout ring grows by doubling,
the resamplers', the parser's), and glibc keeps what is freed inside its heap for reuse.
Between long-lived allocations that memory fragments, so a worker's RSS climbs with calls
ended while the memory in use stays flat. ``malloc_trim`` returns the free pages; a worker
calls it every ``TRIM_S`` so each trim has little to do (well under a millisecond).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import time

__all__ = ["TRIM_S", "trim"]

TRIM_S = 30.0


def _malloc_trim() -> object | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        function = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):  # not glibc (musl has no malloc_trim)
        return None
    function.argtypes = [ctypes.c_size_t]
    function.restype = ctypes.c_int
    return function


_TRIM = _malloc_trim()


def trim() -> float | None:
    """Returns free heap pages to the kernel; the seconds it took, or None where the C
    library cannot."""
    if _TRIM is None:
        return None
    started = time.perf_counter()
    _TRIM(0)  # type: ignore[operator]
    return time.perf_counter() - started
