"""Caller audio on its way upstream: the twin of ``engine._native.uplink``, step by step.

Each payload is resampled (and μ-law encoded for a pcmu session), added to the pending
append, and once ``append_bytes`` are pending and the upstream is open one
``input_audio_buffer.append`` event is built with ``binascii`` and framed by the
:class:`~engine._pure.wsframe.FrameBuilder` given; while the upstream is not open, at most
``prebuffer_bytes`` (the newest) are kept.
"""

from __future__ import annotations

import binascii
from collections.abc import Iterable
from typing import Any

from engine._pure import g711
from engine._pure.audiosocket import AudioSink
from engine._pure.wsframe import OP_TEXT, FrameBuilder
from engine.errors import ConfigError

__all__ = ["APPEND_ID_PREFIX", "Uplink", "b64encode"]

APPEND_ID_PREFIX = "au"
_HEAD = b'{"type":"input_audio_buffer.append","event_id":"' + APPEND_ID_PREFIX.encode() + b"_"


def b64encode(data: bytes | bytearray | memoryview) -> bytes:
    """``data`` in base64 (what the native uplink writes)."""
    return binascii.b2a_base64(data, newline=False)


class Uplink(AudioSink):
    """One call's caller audio, from AudioSocket payloads to finished upstream frames."""

    def __init__(
        self, kind: int, stages: Iterable[Any], ulaw: bool, append_bytes: int,
        prebuffer_bytes: int, framer: FrameBuilder, out: list[bytes],
    ) -> None:
        super().__init__(kind)
        self._stages = tuple(stages)
        if len(self._stages) > 2:
            raise ConfigError("an uplink takes at most two resamplers")
        if append_bytes <= 0 or prebuffer_bytes < 0:
            raise ConfigError(
                f"append_bytes must be positive and prebuffer_bytes not negative, not "
                f"{append_bytes} and {prebuffer_bytes}"
            )
        self._ulaw = bool(ulaw)
        self.append_bytes = append_bytes
        self.prebuffer_bytes = prebuffer_bytes
        self._framer = framer
        self.out = out
        self.sending = False
        self.tap: bytearray | None = None
        self.frames = self.appends = self.dropped_bytes = 0
        self._pending = bytearray()
        self._n = 0

    @property
    def pending_bytes(self) -> int:
        """Upstream bytes waiting for the next append."""
        return len(self._pending)

    def push(self, payload: bytes) -> bool:
        self.frames += 1
        if self.tap is not None:
            self.tap += payload
        pcm = bytes(payload)
        for stage in self._stages:
            pcm = stage.process(pcm)
        if self._ulaw:
            pcm = g711.ulaw_encode(pcm)
        self._pending += pcm
        have = len(self._pending)
        if have < self.append_bytes:
            return False
        if self.sending:
            self._emit()
            return True
        if have > self.prebuffer_bytes:
            drop = have - self.prebuffer_bytes
            del self._pending[:drop]
            self.dropped_bytes += drop
        return False

    def flush(self) -> bool:
        """Sends what is pending if it makes an append (the upstream just opened)."""
        if self.sending and len(self._pending) >= self.append_bytes:
            self._emit()
            return True
        return False

    def clear(self) -> None:
        """Drops the pending audio and the frames not yet taken (the call is over)."""
        self._pending.clear()
        del self.out[:]

    def _emit(self) -> None:
        self._n += 1
        event = b'%b%d","audio":"%b"}' % (_HEAD, self._n, b64encode(self._pending))
        self.out.append(self._framer.frame(event, OP_TEXT))
        self.appends += 1
        self._pending.clear()
