"""G.711 μ-law and A-law, written as the ITU-T G.191 reference ``g711.c`` does it.

The twin of ``engine._native.g711``: a literal, per-sample transcription of the reference
functions ``ulaw_compress``/``ulaw_expand`` (μ-law on the 14 most significant bits) and
``alaw_compress``/``alaw_expand`` (A-law on the 13, of which the last never matters), slow on
purpose. Python's ``>>`` on a negative int floors like the arithmetic shift the reference was
written for. Samples are int16 little-endian in any C-contiguous buffer.
"""

from __future__ import annotations

import array
import sys

from engine.errors import BadSampleData

__all__ = ["alaw_decode", "alaw_encode", "ulaw_decode", "ulaw_encode"]


def _bytes(data: bytes | bytearray | memoryview) -> memoryview:
    view = memoryview(data)
    if not view.c_contiguous:
        raise BufferError("G.711 needs a C-contiguous buffer")
    return view.cast("B")


def _samples(pcm: bytes | bytearray | memoryview) -> array.array[int]:
    data = _bytes(pcm)
    if len(data) % 2:
        raise BadSampleData(len(data))
    out = array.array("h")
    out.frombytes(data)
    if sys.byteorder == "big":
        out.byteswap()
    return out


def _pcm(values: list[int]) -> bytes:
    out = array.array("h", values)
    if sys.byteorder == "big":
        out.byteswap()
    return out.tobytes()


def _ulaw_compress(x: int) -> int:
    """One 16-bit sample to its μ-law code (G.191 ``ulaw_compress``)."""
    absno = ((~x) >> 2) + 33 if x < 0 else (x >> 2) + 33
    if absno > 0x1FFF:
        absno = 0x1FFF
    i = absno >> 6
    segno = 1
    while i != 0:
        segno += 1
        i >>= 1
    high_nibble = 0x0008 - segno
    low_nibble = (absno >> segno) & 0x000F
    low_nibble = 0x000F - low_nibble
    code = (high_nibble << 4) | low_nibble
    if x >= 0:
        code |= 0x0080
    return code


def _ulaw_expand(code: int) -> int:
    """One μ-law code to its 16-bit sample (G.191 ``ulaw_expand``)."""
    sign = -1 if code < 0x0080 else 1
    mantissa = ~code
    exponent = (mantissa >> 4) & 0x0007
    segment = exponent + 1
    mantissa = mantissa & 0x000F
    step = 4 << segment
    return sign * ((0x0080 << exponent) + step * mantissa + step // 2 - 4 * 33)


def _alaw_compress(x: int) -> int:
    """One 16-bit sample to its A-law code (G.191 ``alaw_compress``)."""
    ix = (~x) >> 4 if x < 0 else x >> 4
    if ix > 15:
        iexp = 1
        while ix > 16 + 15:
            ix >>= 1
            iexp += 1
        ix -= 16
        ix += iexp << 4
    if x >= 0:
        ix |= 0x0080
    return ix ^ 0x0055


def _alaw_expand(code: int) -> int:
    """One A-law code to its 16-bit sample (G.191 ``alaw_expand``)."""
    ix = code ^ 0x0055
    ix &= 0x007F
    iexp = ix >> 4
    mant = ix & 0x000F
    if iexp > 0:
        mant = mant + 16
    mant = (mant << 4) + 0x0008
    if iexp > 1:
        mant = mant << (iexp - 1)
    return mant if code > 127 else -mant


def ulaw_encode(pcm: bytes | bytearray | memoryview) -> bytes:
    """int16 LE samples to μ-law, one byte a sample.

    Raises:
        BadSampleData: ``pcm`` has an odd number of bytes.
        BufferError: ``pcm`` is not C-contiguous.
    """
    return bytes(_ulaw_compress(x) for x in _samples(pcm))


def alaw_encode(pcm: bytes | bytearray | memoryview) -> bytes:
    """int16 LE samples to A-law, one byte a sample.

    Raises:
        BadSampleData: ``pcm`` has an odd number of bytes.
        BufferError: ``pcm`` is not C-contiguous.
    """
    return bytes(_alaw_compress(x) for x in _samples(pcm))


def ulaw_decode(data: bytes | bytearray | memoryview) -> bytes:
    """μ-law codes to int16 LE samples, two bytes a code.

    Raises:
        BufferError: ``data`` is not C-contiguous.
    """
    return _pcm([_ulaw_expand(code) for code in _bytes(data)])


def alaw_decode(data: bytes | bytearray | memoryview) -> bytes:
    """A-law codes to int16 LE samples, two bytes a code.

    Raises:
        BufferError: ``data`` is not C-contiguous.
    """
    return _pcm([_alaw_expand(code) for code in _bytes(data)])
