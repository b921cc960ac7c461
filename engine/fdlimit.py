"""File-descriptor headroom: how many connections a worker can hold before the kernel would
refuse it a descriptor.

A worker that runs out of descriptors fails in the worst places: it cannot accept (the caller
waits in the backlog and hears nothing), cannot open a call's upstream, cannot write a record.
So the worker counts what its connections cost and refuses a new caller cleanly while a
reserve is still free, long before ``accept`` would fail.
"""

from __future__ import annotations

import os
import resource

__all__ = ["FDS_PER_CALL", "RESERVE", "connection_budget", "open_count", "raise_soft_limit"]

FDS_PER_CALL = 3
"""The caller's socket, the upstream's, and one more for a handover's second session or a
tool's HTTP connection."""

RESERVE = 64
"""Kept free for the worker itself: records, recordings' retention sweep, the manager, logs,
and the sockets of callers being refused."""


def raise_soft_limit() -> tuple[int, int]:
    """Raises this process's RLIMIT_NOFILE soft limit to its hard limit (children inherit
    it); returns ``(soft, hard)`` as they are now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass  # a container that forbids it: keep what we were given
    return soft, hard


def open_count() -> int:
    """Descriptors this process has open now."""
    try:
        return len(os.listdir("/proc/self/fd")) - 1  # the listing's own descriptor
    except OSError:
        return 0


def connection_budget(per_call: int = FDS_PER_CALL, reserve: int = RESERVE) -> int:
    """Connections this process can hold with ``reserve`` descriptors left over (at least 1)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        soft = 1 << 20
    return max(1, (soft - open_count() - reserve) // per_call)
