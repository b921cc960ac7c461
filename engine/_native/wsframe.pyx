# cython: language_level=3
"""Client WebSocket frames, built and masked in one pass (RFC 6455 section 5.2).

The upstream sends every audio append as one text frame. websockets builds each frame from
Python objects and draws its 4-byte mask from ``secrets`` (one ``getrandom`` system call per
frame); :class:`FrameBuilder` writes header, mask and masked payload into one new ``bytes``
and takes masks from a pool of random bytes refilled 4 KiB at a time from the same source
(``os.urandom`` unless a test injects one), so masks stay unpredictable to intermediaries.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from libc.stdint cimport uint8_t, uint32_t, uint64_t
from libc.string cimport memcpy

import os

__all__ = ["FrameBuilder", "OP_BINARY", "OP_TEXT", "POOL_BYTES"]

OP_TEXT = 0x1
OP_BINARY = 0x2
POOL_BYTES = 4096


cdef class FrameBuilder:
    """Builds masked client frames; ``random(n)`` supplies the masks (default ``os.urandom``)."""

    def __init__(self, random=None):
        self._random = os.urandom if random is None else random
        self._pool = b""
        self._used = 0

    cdef const uint8_t* mask(self) except NULL:
        if self._used + 4 > PyBytes_GET_SIZE(self._pool):
            pool = self._random(POOL_BYTES)
            if not isinstance(pool, bytes) or len(pool) != POOL_BYTES:
                raise ValueError(f"random({POOL_BYTES}) must return {POOL_BYTES} bytes")
            self._pool = pool
            self._used = 0
        cdef const uint8_t* mask = <const uint8_t*>PyBytes_AS_STRING(self._pool) + self._used
        self._used += 4
        return mask

    def frame(self, data, int opcode=OP_TEXT):
        """One final, masked frame of ``opcode`` carrying ``data`` (bytes-like)."""
        cdef const uint8_t[::1] view = data
        cdef Py_ssize_t n = view.shape[0]
        cdef Py_ssize_t head = 2 + (0 if n < 126 else (2 if n < 65536 else 8))
        cdef const uint8_t* mask = self.mask()
        out = PyBytes_FromStringAndSize(NULL, head + 4 + n)
        cdef uint8_t* p = <uint8_t*>PyBytes_AS_STRING(out)
        cdef Py_ssize_t i
        cdef uint32_t m32
        cdef uint64_t m64, word
        p[0] = 0x80 | (opcode & 0x0F)
        if n < 126:
            p[1] = 0x80 | <uint8_t>n
        elif n < 65536:
            p[1] = 0x80 | 126
            p[2] = <uint8_t>(n >> 8)
            p[3] = <uint8_t>n
        else:
            p[1] = 0x80 | 127
            for i in range(8):
                p[2 + i] = <uint8_t>((<uint64_t>n) >> (8 * (7 - i)))
        memcpy(p + head, mask, 4)
        p += head + 4
        memcpy(&m32, mask, 4)
        m64 = (<uint64_t>m32 << 32) | m32
        i = 0
        while i + 8 <= n:
            memcpy(&word, &view[i], 8)
            word ^= m64
            memcpy(p + i, &word, 8)
            i += 8
        while i < n:
            p[i] = view[i] ^ mask[i & 3]
            i += 1
        return out
