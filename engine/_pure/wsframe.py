"""WebSocket frames (RFC 6455 section 5.2): client frames built, a stream split, field by field.

The twin of ``engine._native.wsframe``, slow on purpose: the header byte by byte, then the
payload masked one byte at a time, with masks taken 4 bytes at a time from a pool that is
refilled ``POOL_BYTES`` at a time from ``random`` (``os.urandom`` unless a test injects one),
exactly as the native builder takes them.
"""

from __future__ import annotations

import os
from collections.abc import Callable

__all__ = [
    "CLOSE_MESSAGE_TOO_BIG", "CLOSE_PROTOCOL_ERROR", "OP_BINARY", "OP_TEXT", "POOL_BYTES",
    "FrameBuilder", "FrameReader",
]

OP_TEXT = 0x1
OP_BINARY = 0x2
POOL_BYTES = 4096


class FrameBuilder:
    """Builds masked client frames; ``random(n)`` supplies the masks (default ``os.urandom``)."""

    def __init__(self, random: Callable[[int], bytes] | None = None) -> None:
        self._random = os.urandom if random is None else random
        self._pool = b""
        self._used = 0

    def _mask(self) -> bytes:
        if self._used + 4 > len(self._pool):
            pool = self._random(POOL_BYTES)
            if not isinstance(pool, bytes) or len(pool) != POOL_BYTES:
                raise ValueError(f"random({POOL_BYTES}) must return {POOL_BYTES} bytes")
            self._pool = pool
            self._used = 0
        mask = self._pool[self._used:self._used + 4]
        self._used += 4
        return mask

    def frame(self, data: bytes | bytearray | memoryview, opcode: int = OP_TEXT) -> bytes:
        """One final, masked frame of ``opcode`` carrying ``data`` (bytes-like)."""
        payload = memoryview(data).cast("B")
        n = len(payload)
        mask = self._mask()
        out = bytearray([0x80 | (opcode & 0x0F)])
        if n < 126:
            out.append(0x80 | n)
        elif n < 65536:
            out.append(0x80 | 126)
            out += n.to_bytes(2, "big")
        else:
            out.append(0x80 | 127)
            out += n.to_bytes(8, "big")
        out += mask
        for i in range(n):
            out.append(payload[i] ^ mask[i % 4])
        return bytes(out)


CLOSE_PROTOCOL_ERROR = 1002
CLOSE_MESSAGE_TOO_BIG = 1009


class FrameReader:
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

    def __init__(self, max_size: int, masked: bool) -> None:
        self.max_size = max_size
        self.masked = masked
        self.passthrough = False
        self.violation: tuple[int, str] | None = None
        self._buf = b""
        self._message: int | None = None  # bytes so far of a fragmented message

    def feed(self, data: bytes | bytearray | memoryview) -> list[tuple[int, bool, bytes] | bytes]:
        """The frames ``data`` completes, in order (see the class)."""
        if self.violation is not None:
            return []
        if self.passthrough:
            return [bytes(data)] if len(data) else []
        buf = self._buf + bytes(data)
        out: list[tuple[int, bool, bytes] | bytes] = []
        pos = 0
        while pos < len(buf):
            taken = self._frame(buf, pos, out)
            if taken == 0:
                break
            if self.passthrough:
                if taken > 0:
                    pos += taken
                if pos < len(buf):
                    out.append(buf[pos:])
                pos = len(buf)
                break
            if self.violation is not None:
                pos = len(buf)
                break
            pos += taken
        self._buf = buf[pos:]
        return out

    def _frame(self, buf: bytes, pos: int, out: list[tuple[int, bool, bytes] | bytes]) -> int:
        """Reads the frame at ``pos``: its length once consumed, 0 if incomplete, -1 when the
        stream goes raw from ``pos`` (``passthrough`` set)."""
        if len(buf) - pos < 2:
            return 0
        b0, b1 = buf[pos], buf[pos + 1]
        fin = bool(b0 & 0x80)
        opcode = b0 & 0x0F
        n = b1 & 0x7F
        head = 2
        if n == 126:
            head = 4
        elif n == 127:
            head = 10
        if len(buf) - pos < head:
            return 0
        if head == 4:
            n = int.from_bytes(buf[pos + 2:pos + 4], "big")
        elif head == 10:
            n = int.from_bytes(buf[pos + 2:pos + 10], "big")
        masked = bool(b1 & 0x80)
        if b0 & 0x70 or masked != self.masked or opcode not in (0, 1, 2, 8, 9, 10):
            self.passthrough = True
            return -1
        if opcode >= 8 and (n > 125 or not fin):
            self.passthrough = True
            return -1
        if opcode < 8:
            if opcode == 0 and self._message is None:
                self.violation = (CLOSE_PROTOCOL_ERROR, "unexpected continuation frame")
                return -1
            if opcode != 0 and self._message is not None:
                self.violation = (CLOSE_PROTOCOL_ERROR, "expected a continuation frame")
                return -1
            size = n + (self._message or 0)
            if size > self.max_size:
                self.violation = (CLOSE_MESSAGE_TOO_BIG,
                                  f"message over {self.max_size} bytes")
                return -1
        mask_len = 4 if masked else 0
        total = head + mask_len + n
        if len(buf) - pos < total:
            return 0
        if opcode >= 8:
            out.append(buf[pos:pos + total])
            if opcode == 8:
                self.passthrough = True
            return total
        start = pos + head + mask_len
        payload = buf[start:start + n]
        if masked:
            mask = buf[pos + head:pos + head + 4]
            payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self._message = None if fin else size
        out.append((opcode, fin, payload))
        return total
