"""AudioSocket framing, sans-I/O: the plain-Python twin of ``engine._native.audiosocket``.

Each message is ``kind: u8 | length: u16 big-endian | payload``. The parser takes bytes in any
chunking and turns them into events. It never raises for what the peer sent: a violation
becomes one terminal :class:`ProtocolViolation` and later input is ignored. A header is judged
as soon as its three bytes are in, so a bad header never waits for its payload; only a DTMF
message is judged on its payload too, so that the error can carry it. The rules, in order:

1. an unknown kind is :class:`~engine.errors.UnknownKind`;
2. anything before the UUID is :class:`~engine.errors.FirstMessageNotUuid`;
3. a length over ``max_payload`` is :class:`~engine.errors.FrameTooLarge`;
4. then by kind: a UUID not of 16 bytes, or a second UUID; audio empty or odd; a hangup with
   a payload; DTMF that is not one byte of ``0-9 * # A-D``.

In client mode (``Parser(client=True)``: a caller that acts like Asterisk parses what an engine
sends) the only kinds are audio and hangup: any other kind, UUID, DTMF and error included, is
:class:`~engine.errors.UnknownKind` (Asterisk accepts nothing else from an engine), no UUID is
expected, the length and per-kind rules 3 and 4 stay, and a hangup is terminal.

The encoder builds only what Asterisk accepts from us: audio (and :data:`HANGUP`).
"""

from __future__ import annotations

import uuid as uuidlib
from dataclasses import dataclass
from operator import index

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
    "AudioSink",
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

_HEADER_SIZE = 3
_MAX_LENGTH = 0xFFFF
_MIN_MAX_PAYLOAD = 16
_UUID_SIZE = 16
_KNOWN_KINDS = frozenset((KIND_HANGUP, KIND_UUID, KIND_DTMF, KIND_ERROR, *AUDIO_RATES))
_DTMF_BYTES = frozenset(DTMF_DIGITS.encode())

_NOT_AUDIO = "not an audio kind (0x10..0x18); Asterisk hangs up on any other kind but hangup"
_EMPTY = "empty; Asterisk hangs up on an audio message of length 0"
_ODD = "odd length; not whole 16-bit samples"
_TOO_LONG = "over 65535 bytes; does not fit the 16-bit length field"


def _contiguous(data: bytes | bytearray | memoryview) -> memoryview:
    view = memoryview(data)
    if not view.c_contiguous:
        view.release()
        raise BufferError("AudioSocket needs a C-contiguous buffer")
    return view


def kind_for_rate(rate: int) -> int:
    """The audio kind that carries ``rate`` Hz.

    Raises:
        UnsupportedRate: AudioSocket has no kind for that rate.
    """
    for kind, kind_rate in AUDIO_RATES.items():
        if kind_rate == rate:
            return kind
    raise UnsupportedRate(rate, "AudioSocket has no audio kind for it")


@dataclass(frozen=True, slots=True)
class UuidReceived:
    """The call's UUID: always the first message."""

    uuid: uuidlib.UUID


@dataclass(frozen=True, slots=True)
class AudioReceived:
    """One audio message: ``payload`` is int16 little-endian at ``rate`` Hz."""

    kind: int
    rate: int
    payload: bytes


@dataclass(frozen=True, slots=True)
class DtmfReceived:
    """One DTMF digit, sent by Asterisk when the digit ends."""

    digit: str


@dataclass(frozen=True, slots=True)
class HangupReceived:
    """A hangup message from the peer (Asterisk itself never sends one)."""


@dataclass(frozen=True, slots=True)
class ErrorReceived:
    """An error message (kind 0xFF) with its flags; not terminal, worth a log line."""

    payload: bytes


@dataclass(frozen=True, slots=True)
class ProtocolViolation:
    """The peer broke the protocol: terminal; ``error`` says how. Close the connection."""

    error: PeerProtocolError

    # Exceptions compare by identity; two violations are equal when they say the same.
    def __eq__(self, other: object) -> bool:
        if type(other) is not ProtocolViolation:
            return NotImplemented
        return type(self.error) is type(other.error) and self.error.args == other.error.args

    def __hash__(self) -> int:
        return hash((type(self.error), self.error.args))


@dataclass(frozen=True, slots=True)
class PeerClosed:
    """The peer closed the connection between messages: the normal end of a call."""


Event = (
    UuidReceived | AudioReceived | DtmfReceived | HangupReceived | ErrorReceived
    | ProtocolViolation | PeerClosed
)


class AudioSink:
    """Where a parser delivers audio of ``kind`` instead of making an AudioReceived of it."""

    def __init__(self, kind: int) -> None:
        self.kind = kind

    def push(self, payload: bytes) -> bool:
        """One audio message's payload; True when it left something for the adapter."""
        raise NotImplementedError("AudioSink.push must be overridden")


class Parser:
    """Turns the bytes Asterisk sends into events (or, with ``client=True``, the engine's).

    Feed it with ``receive_data()`` and ``receive_eof()``, then drain ``events_received()``.
    Nothing the peer sends makes it raise: a violation becomes one terminal
    ProtocolViolation and everything after it is ignored. In client mode (a caller that acts
    like Asterisk) no UUID is expected, only audio and hangup are accepted, and a hangup is
    terminal.
    """

    def __init__(self, max_payload: int = DEFAULT_MAX_PAYLOAD, *, client: bool = False) -> None:
        try:
            limit = index(max_payload)
        except TypeError:
            raise ConfigError(f"max_payload must be an integer, not {max_payload!r}") from None
        if not _MIN_MAX_PAYLOAD <= limit <= _MAX_LENGTH:
            raise ConfigError(
                f"max_payload must be {_MIN_MAX_PAYLOAD}..{_MAX_LENGTH} bytes, not {limit}"
            )
        self._max_payload = limit
        self._client = bool(client)
        self._uuid: uuidlib.UUID | None = None
        self._finished = False
        self._pending = bytearray()
        self._events: list[Event] = []
        self._sink: AudioSink | None = None
        self._ready = False

    @property
    def max_payload(self) -> int:
        """The largest payload accepted, in bytes."""
        return self._max_payload

    @property
    def client(self) -> bool:
        """True when parsing what an engine sends (audio and hangup only, no UUID)."""
        return self._client

    @property
    def uuid(self) -> uuidlib.UUID | None:
        """The call's UUID, once it has arrived."""
        return self._uuid

    @property
    def finished(self) -> bool:
        """True after a terminal event: ProtocolViolation, PeerClosed, a client's hangup."""
        return self._finished

    def events_received(self) -> list[Event]:
        """The events parsed since the last call, oldest first; the parser forgets them."""
        events, self._events = self._events, []
        return events

    @property
    def has_events(self) -> bool:
        """Events wait in ``events_received()``."""
        return bool(self._events)

    def attach(self, sink: AudioSink | None) -> None:
        """From now on, audio of ``sink.kind`` goes to ``sink`` instead of becoming events;
        None stops it. Audio of any other kind is still an event."""
        self._sink = sink

    def finish(self) -> None:
        """Ignores everything the peer sends from now on (its call is over)."""
        self._finished = True
        self._pending.clear()

    def receive_data(self, data: bytes | bytearray | memoryview) -> bool:
        """Parses more bytes from the peer (bytes, bytearray or any C-contiguous buffer).

        Returns True when events wait in ``events_received()`` or the attached sink said it
        left something for the adapter: the adapter has work only then.

        Raises:
            BufferError: ``data`` is not C-contiguous (a caller's bug, not the peer's).
        """
        if self._finished:
            return False
        self._ready = False
        buf = self._pending
        with _contiguous(data) as view:
            buf += view
        pos = 0
        while len(buf) - pos >= _HEADER_SIZE and not self._finished:
            kind = buf[pos]
            length = int.from_bytes(buf[pos + 1 : pos + 3], "big")
            # Judged again on every read while its payload is incomplete; the verdict cannot
            # change, since only a completed message changes the parser's state.
            error = self._header_error(kind, length)
            if error is not None:
                self._fail(error)
                return True
            end = pos + _HEADER_SIZE + length
            if len(buf) < end:
                break
            self._message(kind, bytes(buf[pos + _HEADER_SIZE : end]))
            pos = end
        if self._finished:
            buf.clear()
        else:
            del buf[:pos]
        return self._ready or bool(self._events)

    def receive_eof(self) -> None:
        """The peer closed its side: PeerClosed, or TruncatedMessage inside a message.

        TruncatedMessage counts whole-message bytes, header included: ``expected`` is 3 and
        ``kind`` None inside the header, else 3 + the header's length.
        """
        if self._finished:
            return
        buf = self._pending
        if not buf:
            self._finished = True
            self._events.append(PeerClosed())
        elif len(buf) < _HEADER_SIZE:
            self._fail(TruncatedMessage(None, _HEADER_SIZE, len(buf)))
        else:
            expected = _HEADER_SIZE + int.from_bytes(buf[1:3], "big")
            self._fail(TruncatedMessage(buf[0], expected, len(buf)))

    def _header_error(self, kind: int, length: int) -> PeerProtocolError | None:
        if self._client:
            return self._client_header_error(kind, length)
        if kind not in _KNOWN_KINDS:
            return UnknownKind(kind)
        if self._uuid is None and kind != KIND_UUID:
            return FirstMessageNotUuid(kind)
        if length > self._max_payload:
            return FrameTooLarge(kind, length, self._max_payload)
        if kind == KIND_UUID:
            if length != _UUID_SIZE:
                return MalformedUuid(length)
            if self._uuid is not None:
                return DuplicateUuid()
        elif kind in AUDIO_RATES:
            if length == 0 or length % 2:
                return BadAudioLength(kind, length)
        elif kind == KIND_HANGUP and length:
            return MalformedHangup(length)
        return None

    def _client_header_error(self, kind: int, length: int) -> PeerProtocolError | None:
        # An engine may send only what Asterisk accepts: audio and hangup.
        if kind not in AUDIO_RATES and kind != KIND_HANGUP:
            return UnknownKind(kind)
        if length > self._max_payload:
            return FrameTooLarge(kind, length, self._max_payload)
        if kind == KIND_HANGUP:
            if length:
                return MalformedHangup(length)
        elif length == 0 or length % 2:
            return BadAudioLength(kind, length)
        return None

    def _message(self, kind: int, payload: bytes) -> None:
        if kind in AUDIO_RATES:
            sink = self._sink
            if sink is not None and kind == sink.kind:
                if sink.push(payload):
                    self._ready = True
                return
            self._events.append(AudioReceived(kind, AUDIO_RATES[kind], payload))
        elif kind == KIND_DTMF:
            if len(payload) == 1 and payload[0] in _DTMF_BYTES:
                self._events.append(DtmfReceived(payload.decode("ascii")))
            else:
                self._fail(MalformedDtmf(payload))
        elif kind == KIND_UUID:
            self._uuid = uuidlib.UUID(bytes=payload)
            self._events.append(UuidReceived(self._uuid))
        elif kind == KIND_HANGUP:
            self._events.append(HangupReceived())
            if self._client:
                # The engine ends the call with it; whatever follows is not the call's.
                self._finished = True
        else:
            self._events.append(ErrorReceived(payload))

    def _fail(self, error: PeerProtocolError) -> None:
        self._finished = True
        self._pending.clear()
        self._events.append(ProtocolViolation(error))


def encode_audio(kind: int, pcm: bytes | bytearray | memoryview) -> bytes:
    """One audio message of ``kind`` carrying ``pcm`` (int16 LE), as one new bytes object.

    ``pcm`` is any C-contiguous buffer; its bytes are copied once, straight after the header.

    Raises:
        BadOutgoingAudio: not an audio kind, or ``pcm`` is empty, odd or over 65535 bytes.
        BufferError: ``pcm`` is not C-contiguous.
    """
    with _contiguous(pcm) as view:
        n = view.nbytes
        if kind not in AUDIO_RATES:
            raise BadOutgoingAudio(kind, n, _NOT_AUDIO)
        if n == 0:
            raise BadOutgoingAudio(kind, 0, _EMPTY)
        if n % 2:
            raise BadOutgoingAudio(kind, n, _ODD)
        if n > _MAX_LENGTH:
            raise BadOutgoingAudio(kind, n, _TOO_LONG)
        header = bytes((kind, n >> 8, n & 0xFF))
        with view.cast("B") as raw:
            return header + raw


_SILENCE: dict[tuple[int, int], bytes] = {}


def silence(kind: int, ms: int = 20) -> bytes:
    """A complete silent audio message of ``ms`` at ``kind``'s rate: the same object each call.

    Raises:
        BadOutgoingAudio: not an audio kind, ``ms`` not positive, not a whole number of
            samples at that rate, or too long for one message.
    """
    rate = AUDIO_RATES.get(kind)
    if rate is None:
        raise BadOutgoingAudio(kind, 0, _NOT_AUDIO)
    message = _SILENCE.get((kind, ms))
    if message is None:
        if ms <= 0:
            raise BadOutgoingAudio(kind, 0, f"{ms} ms is not a positive duration")
        samples, rest = divmod(rate * ms, 1000)
        if rest:
            raise BadOutgoingAudio(
                kind, 2 * samples, f"{ms} ms at {rate} Hz is not a whole number of samples"
            )
        message = _SILENCE[(kind, ms)] = encode_audio(kind, bytes(2 * samples))
    return message
