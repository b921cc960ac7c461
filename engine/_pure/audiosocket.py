"""AudioSocket framing, sans-I/O: the plain-Python twin of ``engine._native.audiosocket``.

Each message is ``kind: u8 | length: u16 big-endian | payload``. The parser takes bytes in any
chunking and returns events; it never raises for what the peer sent: a violation becomes one
terminal :class:`ProtocolViolation` and later input is ignored. The encoder builds only what
Asterisk accepts from us: hangup and audio.
"""

from __future__ import annotations

import uuid as uuidlib
from dataclasses import dataclass
from typing import Union

from engine.errors import (
    BadAudioLength,
    BadOutgoingAudio,
    ConfigError,
    DuplicateUuid,
    FirstMessageNotUuid,
    FrameTooLarge,
    MalformedDtmf,
    MalformedHangup,
    MalformedUuid,
    PeerProtocolError,
    TruncatedMessage,
    UnknownKind,
    UnsupportedRate,
)

__all__ = [
    "AUDIO_RATES",
    "DEFAULT_MAX_PAYLOAD",
    "DTMF_DIGITS",
    "HANGUP",
    "KIND_AUDIO_8K",
    "KIND_AUDIO_12K",
    "KIND_AUDIO_16K",
    "KIND_AUDIO_24K",
    "KIND_AUDIO_32K",
    "KIND_AUDIO_44K1",
    "KIND_AUDIO_48K",
    "KIND_AUDIO_96K",
    "KIND_AUDIO_192K",
    "KIND_DTMF",
    "KIND_ERROR",
    "KIND_HANGUP",
    "KIND_UUID",
    "AudioReceived",
    "DtmfReceived",
    "ErrorReceived",
    "Event",
    "HangupReceived",
    "Parser",
    "PeerClosed",
    "ProtocolViolation",
    "UuidReceived",
    "encode_audio",
    "kind_for_rate",
    "silence",
]

KIND_HANGUP = 0x00
KIND_UUID = 0x01
KIND_DTMF = 0x03
KIND_AUDIO_8K = 0x10
KIND_AUDIO_12K = 0x11
KIND_AUDIO_16K = 0x12
KIND_AUDIO_24K = 0x13
KIND_AUDIO_32K = 0x14
KIND_AUDIO_44K1 = 0x15
KIND_AUDIO_48K = 0x16
KIND_AUDIO_96K = 0x17
KIND_AUDIO_192K = 0x18
KIND_ERROR = 0xFF

AUDIO_RATES = {
    KIND_AUDIO_8K: 8000,
    KIND_AUDIO_12K: 12000,
    KIND_AUDIO_16K: 16000,
    KIND_AUDIO_24K: 24000,
    KIND_AUDIO_32K: 32000,
    KIND_AUDIO_44K1: 44100,
    KIND_AUDIO_48K: 48000,
    KIND_AUDIO_96K: 96000,
    KIND_AUDIO_192K: 192000,
}
DTMF_DIGITS = "0123456789*#ABCD"
DEFAULT_MAX_PAYLOAD = 16384
HANGUP = b"\x00\x00\x00"
_KNOWN = frozenset((KIND_HANGUP, KIND_UUID, KIND_DTMF, KIND_ERROR, *AUDIO_RATES))


def kind_for_rate(rate: int) -> int:
    """The audio kind that carries ``rate``. Raises UnsupportedRate."""
    for kind, r in AUDIO_RATES.items():
        if r == rate:
            return kind
    raise UnsupportedRate(rate, "AudioSocket has no audio kind for it")


@dataclass(frozen=True, slots=True)
class UuidReceived:
    uuid: uuidlib.UUID


@dataclass(frozen=True, slots=True)
class AudioReceived:
    kind: int
    rate: int
    payload: bytes


@dataclass(frozen=True, slots=True)
class DtmfReceived:
    digit: str


@dataclass(frozen=True, slots=True)
class HangupReceived:
    pass


@dataclass(frozen=True, slots=True)
class ErrorReceived:
    payload: bytes


@dataclass(frozen=True, slots=True)
class ProtocolViolation:
    error: PeerProtocolError

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, ProtocolViolation)
            and type(self.error) is type(other.error)
            and self.error.args == other.error.args
        )

    def __hash__(self) -> int:
        return hash((type(self.error), self.error.args))


@dataclass(frozen=True, slots=True)
class PeerClosed:
    pass


Event = Union[  # noqa: UP007
    UuidReceived,
    AudioReceived,
    DtmfReceived,
    HangupReceived,
    ErrorReceived,
    ProtocolViolation,
    PeerClosed,
]


class Parser:
    """Turns the bytes Asterisk sends into events. Feed it, then drain ``events_received()``."""

    def __init__(self, max_payload: int = DEFAULT_MAX_PAYLOAD) -> None:
        if not 16 <= max_payload <= 0xFFFF:
            raise ConfigError(f"max_payload must be 16..65535 bytes, not {max_payload}")
        self.max_payload = max_payload
        self.uuid: uuidlib.UUID | None = None
        self.finished = False
        self._buf = bytearray()
        self._events: list[Event] = []

    def events_received(self) -> list[Event]:
        """The events parsed since the last call (cleared)."""
        events, self._events = self._events, []
        return events

    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        """Parses more bytes; never raises for anything the peer sent."""
        if self.finished:
            return
        self._buf += data
        buf = self._buf
        while len(buf) >= 3:
            kind, length = buf[0], (buf[1] << 8) | buf[2]
            error = self._check_header(kind, length)
            if error is not None:
                self._fail(error)
                return
            if len(buf) < 3 + length:
                return
            payload = bytes(buf[3 : 3 + length])
            del buf[: 3 + length]
            self._message(kind, payload)
            if self.finished:
                return

    def receive_eof(self) -> None:
        """The peer closed its side: PeerClosed, or a violation if inside a message."""
        if self.finished:
            return
        buf = self._buf
        if not buf:
            self.finished = True
            self._events.append(PeerClosed())
        elif len(buf) < 3:
            self._fail(TruncatedMessage(None, 3, len(buf)))
        else:
            self._fail(TruncatedMessage(buf[0], 3 + ((buf[1] << 8) | buf[2]), len(buf)))

    def _check_header(self, kind: int, length: int) -> PeerProtocolError | None:
        if kind not in _KNOWN:
            return UnknownKind(kind)
        if self.uuid is None and kind != KIND_UUID:
            return FirstMessageNotUuid(kind)
        if length > self.max_payload:
            return FrameTooLarge(kind, length, self.max_payload)
        if kind == KIND_UUID:
            if self.uuid is not None:
                return DuplicateUuid()
            if length != 16:
                return MalformedUuid(length)
        elif kind in AUDIO_RATES:
            if length == 0 or length & 1:
                return BadAudioLength(kind, length)
        elif kind == KIND_HANGUP and length:
            return MalformedHangup(length)
        return None

    def _message(self, kind: int, payload: bytes) -> None:
        rate = AUDIO_RATES.get(kind)
        if rate is not None:
            self._events.append(AudioReceived(kind, rate, payload))
        elif kind == KIND_UUID:
            self.uuid = uuidlib.UUID(bytes=payload)
            self._events.append(UuidReceived(self.uuid))
        elif kind == KIND_DTMF:
            if len(payload) != 1 or chr(payload[0]) not in DTMF_DIGITS:
                self._fail(MalformedDtmf(payload))
            else:
                self._events.append(DtmfReceived(chr(payload[0])))
        elif kind == KIND_HANGUP:
            self._events.append(HangupReceived())
        else:
            self._events.append(ErrorReceived(payload))

    def _fail(self, error: PeerProtocolError) -> None:
        self.finished = True
        self._buf.clear()
        self._events.append(ProtocolViolation(error))


def encode_audio(kind: int, pcm: bytes | bytearray | memoryview) -> bytes:
    """One audio message for ``kind`` carrying ``pcm`` (int16 LE), in one bytes object.

    Raises:
        BadOutgoingAudio: not an audio kind, or empty, odd or over 65,535 bytes.
    """
    view = memoryview(pcm).cast("B")
    n = len(view)
    if kind not in AUDIO_RATES:
        raise BadOutgoingAudio(kind, n, "not an audio kind (0x10..0x18)")
    if n == 0:
        raise BadOutgoingAudio(kind, n, "Asterisk hangs up on an empty audio message")
    if n & 1:
        raise BadOutgoingAudio(kind, n, "odd length: not whole 16-bit samples")
    if n > 0xFFFF:
        raise BadOutgoingAudio(kind, n, "longer than the 16-bit length field")
    return bytes((kind, n >> 8, n & 0xFF)) + view.tobytes()


_SILENCE: dict[tuple[int, int], bytes] = {}


def silence(kind: int, ms: int = 20) -> bytes:
    """A complete silent audio message of ``ms`` at ``kind``'s rate; the same object each time."""
    key = (kind, ms)
    message = _SILENCE.get(key)
    if message is None:
        rate = AUDIO_RATES.get(kind)
        if rate is None:
            raise BadOutgoingAudio(kind, 0, "not an audio kind (0x10..0x18)")
        message = _SILENCE[key] = encode_audio(kind, bytes(rate * ms // 1000 * 2))
    return message
