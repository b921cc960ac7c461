"""Coverage-guided fuzz targets for the engine's parsers, one module per target.

Each target module has ``TestOneInput(data: bytes)``: it reads a setting byte and a chunking
from the front of ``data`` (see :func:`split`), feeds the rest to the plain-Python twin, whose
lines atheris instruments for coverage (it cannot see inside gcc-built Cython), and the same
chunks to the native build, the differential oracle: both must give the same events and the
same errors. Any other exception, or any difference, is a finding.

``TestOneInput`` needs no atheris, so ``tests/test_fuzz.py`` replays the seeds and regressions
anywhere; ``python -m tests.fuzz TARGET`` runs the fuzzer itself (see ``__main__``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

__all__ = ["HERE", "TARGETS", "Input", "differential", "make_input", "merge_raw", "split"]

HERE = Path(__file__).resolve().parent
TARGETS = ("audiosocket", "proxy", "wsframe", "realtime", "b64")
_MAX_SIZES = 7


@dataclass(frozen=True, slots=True)
class Input:
    """One fuzz input taken apart: the setting byte, the stream, and its chunks in order."""

    flags: int
    stream: bytes
    chunks: list[bytes]


def split(data: bytes) -> Input:
    """Takes ``data`` apart: ``flags | n | n chunk sizes | stream``.

    ``flags`` is the target's settings byte; the low three bits of ``n`` say how many size
    bytes follow (0..7). The stream is cut into chunks of those sizes, cycled; a size of 0 is an
    empty chunk fed as it is. With no sizes, or only zeros, the stream is one chunk. Short
    inputs mean zeros, so every byte string is an input.
    """
    flags = data[0] if data else 0
    count = (data[1] & _MAX_SIZES) if len(data) > 1 else 0
    sizes = list(data[2:2 + count])
    stream = data[2 + count:]
    if not any(sizes):
        return Input(flags, stream, [stream])
    chunks, at, i = [], 0, 0
    while at < len(stream):
        size = sizes[i % len(sizes)]
        chunks.append(stream[at:at + size])
        at += size
        i += 1
    return Input(flags, stream, chunks)


def make_input(stream: bytes, flags: int = 0, sizes: Sequence[int] = ()) -> bytes:
    """The input that :func:`split` takes apart into ``flags``, ``stream`` and ``sizes``."""
    if len(sizes) > _MAX_SIZES or not all(0 <= s <= 255 for s in sizes):
        raise ValueError(f"at most {_MAX_SIZES} chunk sizes of 0..255, not {list(sizes)}")
    return bytes((flags, len(sizes), *sizes)) + stream


Run = Callable[..., tuple[list[Any], list[Any]]]


def differential(run: Run, twin: ModuleType, native: ModuleType, job: Input, *, buffers: bool
                 ) -> tuple[list[Any], list[Any]]:
    """Feeds ``job``'s chunks through ``run`` with the twin and with the native build (given
    bytearrays when ``buffers``); their traces of every step must be the same. Returns the
    twin's (trace, output)."""
    trace, out = run(twin, job.chunks, job.flags)
    native_trace, _ = run(native, job.chunks, job.flags, buffers=buffers)
    if native_trace != trace:
        raise AssertionError(f"native differs from the twin:\n{native_trace}\n{trace}")
    return trace, out


def merge_raw(items: Iterable[object]) -> list[object]:
    """``items`` with each run of ``bytes`` joined into one, so raw output of any chunking
    compares equal."""
    out: list[object] = []
    for item in items:
        if isinstance(item, bytes) and out and isinstance(out[-1], bytes):
            out[-1] += item
        else:
            out.append(item)
    return out
