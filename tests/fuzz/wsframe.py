"""Fuzz target: the upstream WebSocket frame reader, the twin against the native build.

The settings byte: bit 0 masked frames expected (a server reading a client); bits 1-3 the
message size limit (:data:`LIMITS`); bit 4 the native reader is fed bytearrays. The reader
documents no exception for what the peer sends (a breach is its ``violation``), so any
exception is a finding; so is any difference between the builds in what a chunk gives or in
``passthrough``/``violation`` after it, or a chunking that changes the frames.
"""

from __future__ import annotations

import sys
from types import ModuleType

from engine._native import wsframe as native
from engine._pure import wsframe as twin

from . import differential, merge_raw, split

__all__ = ["LIMITS", "TestOneInput", "run"]

LIMITS = (1 << 20, 0, 1, 125, 126, 65535, 65536, sys.maxsize)


def run(m: ModuleType, chunks: list[bytes], flags: int, *, buffers: bool = False
        ) -> tuple[list[object], list[object]]:
    """Feeds ``chunks`` to a reader of ``m``; returns (a trace of each step, every item)."""
    reader = m.FrameReader(LIMITS[flags >> 1 & 7], bool(flags & 1))
    trace: list[object] = []
    items: list[object] = []
    for chunk in chunks:
        got = reader.feed(bytearray(chunk) if buffers else chunk)
        trace.append((got, reader.passthrough, reader.violation))
        items += got
    return trace, items


def TestOneInput(data: bytes) -> None:
    job = split(data)
    trace, items = differential(run, twin, native, job, buffers=bool(job.flags & 0x10))
    whole_trace, whole = run(twin, [job.stream], job.flags)
    final = trace[-1][1:] if trace else (False, None)
    if merge_raw(whole) != merge_raw(items) or whole_trace[-1][1:] != final:
        raise AssertionError(f"the chunking changed the frames:\n{items}\n{whole}")
    for item in items:
        if isinstance(item, tuple):
            opcode, fin, payload = item
            if opcode not in (0, 1, 2) or type(fin) is not bool or type(payload) is not bytes:
                raise AssertionError(f"not a data frame: {item!r}")
