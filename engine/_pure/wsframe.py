"""Client WebSocket frames (RFC 6455 section 5.2), written out field by field.

The twin of ``engine._native.wsframe``, slow on purpose: the header byte by byte, then the
payload masked one byte at a time, with masks taken 4 bytes at a time from a pool that is
refilled ``POOL_BYTES`` at a time from ``random`` (``os.urandom`` unless a test injects one),
exactly as the native builder takes them.
"""

from __future__ import annotations

import os
from collections.abc import Callable

__all__ = ["OP_BINARY", "OP_TEXT", "POOL_BYTES", "FrameBuilder"]

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
