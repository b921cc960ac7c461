# cython: language_level=3
"""WebSocket frames: client frames built and masked, a stream split, in one pass (RFC 6455 5.2).

The upstream sends every audio append as one text frame. websockets builds each frame from
Python objects and draws its 4-byte mask from ``secrets`` (one ``getrandom`` system call per
frame); :class:`FrameBuilder` writes header, mask and masked payload into one new ``bytes``
and takes masks from a pool of random bytes refilled 4 KiB at a time from the same source
(``os.urandom`` unless a test injects one), so masks stay unpredictable to intermediaries.

Every model event and every client append is one frame in; websockets' parser spends about
10 µs of Python on each. :class:`FrameReader` splits the stream in one pass and unmasks data
frames, leaving control frames (and anything unusual) to websockets' protocol.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from libc.stdint cimport uint8_t, uint32_t, uint64_t

cdef extern from "Python.h":
    const Py_ssize_t PY_SSIZE_T_MAX
from libc.string cimport memcpy

import os

__all__ = [
    "CLOSE_MESSAGE_TOO_BIG", "CLOSE_PROTOCOL_ERROR", "FrameBuilder", "FrameReader", "OP_BINARY",
    "OP_TEXT", "POOL_BYTES",
]

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


CLOSE_PROTOCOL_ERROR = 1002
CLOSE_MESSAGE_TOO_BIG = 1009


cdef class FrameReader:
    """Splits a WebSocket byte stream into frames, so data frames skip websockets' parser.

    :meth:`feed` returns, in stream order, ``(opcode, fin, payload)`` for each complete text,
    binary or continuation frame (payload unmasked), and ``bytes`` for what websockets' own
    protocol must read: a control frame, whole, at a frame boundary. From the first frame this
    reader does not take (reserved bits set, an unknown opcode, a mask where none belongs or
    none where one must, an oversized or fragmented control frame, a close frame) the rest of
    the stream goes out raw and :attr:`passthrough` stays true, so websockets judges it.
    Fragment order and the message size (``max_size`` over all of a message's fragments) are
    judged here: a breach sets :attr:`violation` to ``(close code, reason)`` and the reader
    takes nothing more.
    """

    cdef readonly Py_ssize_t max_size
    cdef readonly bint masked
    cdef readonly bint passthrough
    cdef readonly object violation
    cdef bytearray _buf
    cdef Py_ssize_t _message  # bytes so far of a fragmented message; -1: none

    def __init__(self, Py_ssize_t max_size, bint masked):
        self.max_size = max_size
        self.masked = masked
        self.passthrough = False
        self.violation = None
        self._buf = bytearray()
        self._message = -1

    def feed(self, data):
        """The frames ``data`` completes, in order (see the class)."""
        cdef const uint8_t[::1] view = data
        cdef Py_ssize_t n = view.shape[0]
        cdef list out = []
        cdef Py_ssize_t used
        if self.violation is not None:
            return out
        if self.passthrough:
            if n:
                out.append(bytes(data))
            return out
        if len(self._buf) == 0:
            if n == 0:
                return out
            used = self._split(&view[0], n, out)
            if used < n:
                self._buf += data[used:]
            return out
        self._buf += view
        cdef const uint8_t[::1] held = self._buf
        used = self._split(&held[0], held.shape[0], out)
        held = None
        del self._buf[:used]
        return out

    cdef Py_ssize_t _split(self, const uint8_t* p, Py_ssize_t size, list out) except -1:
        """Takes the frames at ``p``; returns the bytes consumed (the rest is incomplete)."""
        cdef Py_ssize_t pos = 0, taken
        while pos < size:
            taken = self._frame(p + pos, size - pos, out)
            if taken == 0:
                break
            if self.passthrough:
                if taken > 0:
                    pos += taken
                if pos < size:
                    out.append(PyBytes_FromStringAndSize(<const char*>p + pos, size - pos))
                return size
            if self.violation is not None:
                return size
            pos += taken
        return pos

    cdef Py_ssize_t _frame(self, const uint8_t* p, Py_ssize_t avail, list out) except -2:
        """The frame at ``p``: its length once consumed, 0 if incomplete, -1 when the stream
        goes raw from here (``passthrough``) or is refused (``violation``)."""
        if avail < 2:
            return 0
        cdef uint8_t b0 = p[0], b1 = p[1]
        cdef bint fin = (b0 & 0x80) != 0
        cdef int opcode = b0 & 0x0F
        cdef uint64_t n = b1 & 0x7F
        cdef Py_ssize_t head = 2, i, mask_len, total, size = 0, so_far
        if n == 126:
            head = 4
        elif n == 127:
            head = 10
        if avail < head:
            return 0
        if head == 4:
            n = (<uint64_t>p[2] << 8) | p[3]
        elif head == 10:
            n = 0
            for i in range(8):
                n = (n << 8) | p[2 + i]
        cdef bint masked = (b1 & 0x80) != 0
        if (b0 & 0x70) or masked != self.masked or not (opcode <= 2 or 8 <= opcode <= 10):
            self.passthrough = True
            return -1
        if opcode >= 8 and (n > 125 or not fin):
            self.passthrough = True
            return -1
        if opcode < 8:
            if opcode == 0 and self._message < 0:
                self.violation = (CLOSE_PROTOCOL_ERROR, "unexpected continuation frame")
                return -1
            if opcode != 0 and self._message >= 0:
                self.violation = (CLOSE_PROTOCOL_ERROR, "expected a continuation frame")
                return -1
            so_far = self._message if self._message > 0 else 0
            # n + so_far > max_size, without a sum that could overflow (max_size may be huge).
            if so_far > self.max_size or n > <uint64_t>(self.max_size - so_far):
                self.violation = (CLOSE_MESSAGE_TOO_BIG, f"message over {self.max_size} bytes")
                return -1
            size = <Py_ssize_t>n + so_far
        mask_len = 4 if masked else 0
        if n > <uint64_t>(PY_SSIZE_T_MAX - head - mask_len):
            return 0  # more than memory can hold: it never completes
        total = head + mask_len + <Py_ssize_t>n
        if avail < total:
            return 0
        if opcode >= 8:
            out.append(PyBytes_FromStringAndSize(<const char*>p, total))
            if opcode == 8:
                self.passthrough = True
            return total
        if masked:
            # A fresh object to unmask in place (given the bytes, CPython may hand back its
            # shared one-byte object).
            payload = PyBytes_FromStringAndSize(NULL, <Py_ssize_t>n)
            memcpy(PyBytes_AS_STRING(payload), p + head + mask_len, <size_t>n)
            mask_in_place(<uint8_t*>PyBytes_AS_STRING(payload), <Py_ssize_t>n, p + head)
        else:
            payload = PyBytes_FromStringAndSize(<const char*>p + head, <Py_ssize_t>n)
        self._message = -1 if fin else size
        out.append((opcode, fin, payload))
        return total
