"""Fuzz target: the AudioSocket parser, the twin against the native build.

The settings byte: bit 0 client mode; bits 1-3 the payload limit (:data:`LIMITS`); bit 4 no
end of file after the stream; bit 5 the native parser is fed bytearrays instead of bytes.
The parser documents no exception for anything the peer sends, so any exception is a
finding; so is any difference between the two builds in events, return values or state
after a chunk, a chunking that changes the events, or events after a terminal one.
"""

from __future__ import annotations

from types import ModuleType

from engine._native import audiosocket as native
from engine._pure import audiosocket as twin

from . import differential, split

__all__ = ["LIMITS", "TestOneInput", "norm", "run"]

LIMITS = (16384, 16, 17, 320, 321, 4096, 65534, 65535)
_TERMINAL = ("ProtocolViolation", "PeerClosed")


def norm(event: object) -> tuple[object, ...]:
    """An event as (class name, fields), comparable across the two builds."""
    name = type(event).__name__
    if name == "ProtocolViolation":
        err = event.error  # type: ignore[attr-defined]
        return (name, type(err).__name__, err.args, tuple(sorted(vars(err).items())))
    return (name, *(getattr(event, field) for field in type(event).__match_args__))


def run(m: ModuleType, chunks: list[bytes], flags: int, *, buffers: bool = False
        ) -> tuple[list[object], list[tuple[object, ...]]]:
    """Feeds ``chunks`` to a parser of ``m``; returns (a trace of each step, the events)."""
    parser = m.Parser(LIMITS[flags >> 1 & 7], client=bool(flags & 1))
    trace: list[object] = []
    events: list[tuple[object, ...]] = []
    for chunk in chunks:
        ready = parser.receive_data(bytearray(chunk) if buffers else chunk)
        trace.append((ready, parser.has_events, parser.finished, parser.uuid))
        got = [norm(e) for e in parser.events_received()]
        trace.append(got)
        events += got
    if not flags & 0x10:
        parser.receive_eof()
        got = [norm(e) for e in parser.events_received()]
        trace.append((parser.finished, got))
        events += got
    return trace, events


def TestOneInput(data: bytes) -> None:
    job = split(data)
    _, events = differential(run, twin, native, job, buffers=bool(job.flags & 0x20))
    _, whole = run(twin, [job.stream], job.flags)
    if whole != events:
        raise AssertionError(f"the chunking changed the events:\n{events}\n{whole}")
    terminal = _TERMINAL + (("HangupReceived",) if job.flags & 1 else ())
    for i, event in enumerate(events):
        if event[0] in terminal and i != len(events) - 1:
            raise AssertionError(f"events after the terminal {event}: {events[i + 1:]}")
        if event[0] == "UuidReceived" and i:
            raise AssertionError(f"a UUID after the first event: {events}")
