# cython: language_level=3
"""AudioSocket framing, sans-I/O (native). Twin: ``engine._pure.audiosocket``.

Whole messages are sliced straight out of the bytes handed in (one bytes object per payload);
only a partial message is copied aside, into a buffer bounded by the payload limit.
"""

import uuid as uuidlib

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from libc.stdlib cimport free, malloc
from libc.string cimport memcpy

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
    TruncatedMessage,
    UnknownKind,
    UnsupportedRate,
)

__all__ = [
    "AUDIO_RATES", "DEFAULT_MAX_PAYLOAD", "DTMF_DIGITS", "HANGUP", "KIND_AUDIO_8K",
    "KIND_AUDIO_12K", "KIND_AUDIO_16K", "KIND_AUDIO_24K", "KIND_AUDIO_32K", "KIND_AUDIO_44K1",
    "KIND_AUDIO_48K", "KIND_AUDIO_96K", "KIND_AUDIO_192K", "KIND_DTMF", "KIND_ERROR",
    "KIND_HANGUP", "KIND_UUID", "AudioReceived", "DtmfReceived", "ErrorReceived",
    "HangupReceived", "Parser", "PeerClosed", "ProtocolViolation", "UuidReceived",
    "encode_audio", "kind_for_rate", "silence",
]

cdef int[9] _RATES = [8000, 12000, 16000, 24000, 32000, 44100, 48000, 96000, 192000]
AUDIO_RATES = {KIND_AUDIO_8K + i: _RATES[i] for i in range(9)}
DTMF_DIGITS = "0123456789*#ABCD"
DEFAULT_MAX_PAYLOAD = 16384
HANGUP = b"\x00\x00\x00"


def kind_for_rate(int rate):
    """The audio kind that carries ``rate``. Raises UnsupportedRate."""
    for i in range(9):
        if _RATES[i] == rate:
            return KIND_AUDIO_8K + i
    raise UnsupportedRate(rate, "AudioSocket has no audio kind for it")


cdef inline bint _is_audio(int kind) noexcept nogil:
    return KIND_AUDIO_8K <= kind <= KIND_AUDIO_192K


cdef class _Event:
    """Frozen-dataclass behaviour for the native events: equality by class and fields."""

    _names = ()

    cdef tuple _fields(self):
        return ()

    def __eq__(self, other):
        if type(other) is not type(self):
            return NotImplemented
        return self._fields() == (<_Event>other)._fields()

    def __hash__(self):
        return hash((type(self).__name__, self._fields()))

    def __repr__(self):
        fields = ", ".join(f"{k}={v!r}" for k, v in zip(self._names, self._fields()))
        return f"{type(self).__name__}({fields})"


cdef class UuidReceived(_Event):
    _names = ("uuid",)
    cdef readonly object uuid

    def __init__(self, uuid):
        self.uuid = uuid

    cdef tuple _fields(self):
        return (self.uuid,)


cdef class AudioReceived(_Event):
    _names = ("kind", "rate", "payload")
    cdef readonly int kind
    cdef readonly int rate
    cdef readonly bytes payload

    def __init__(self, int kind, int rate, bytes payload):
        self.kind = kind
        self.rate = rate
        self.payload = payload

    cdef tuple _fields(self):
        return (self.kind, self.rate, self.payload)


cdef class DtmfReceived(_Event):
    _names = ("digit",)
    cdef readonly str digit

    def __init__(self, str digit):
        self.digit = digit

    cdef tuple _fields(self):
        return (self.digit,)


cdef class HangupReceived(_Event):
    pass


cdef class ErrorReceived(_Event):
    _names = ("payload",)
    cdef readonly bytes payload

    def __init__(self, bytes payload):
        self.payload = payload

    cdef tuple _fields(self):
        return (self.payload,)


cdef class ProtocolViolation(_Event):
    _names = ("error",)
    cdef readonly object error

    def __init__(self, error):
        self.error = error

    cdef tuple _fields(self):
        return (type(self.error), self.error.args)

    def __repr__(self):
        return f"ProtocolViolation(error={self.error!r})"


cdef class PeerClosed(_Event):
    pass


cdef inline AudioReceived _audio(int kind, bytes payload):
    cdef AudioReceived event = AudioReceived.__new__(AudioReceived)
    event.kind = kind
    event.rate = _RATES[kind - KIND_AUDIO_8K]
    event.payload = payload
    return event


cdef class Parser:
    """Turns the bytes Asterisk sends into events. Feed it, then drain ``events_received()``."""

    def __cinit__(self, int max_payload=DEFAULT_MAX_PAYLOAD):
        self._pend = NULL

    def __init__(self, int max_payload=DEFAULT_MAX_PAYLOAD):
        if not 16 <= max_payload <= 0xFFFF:
            raise ConfigError(f"max_payload must be 16..65535 bytes, not {max_payload}")
        self.max_payload = max_payload
        self.uuid = None
        self.finished = False
        self._events = []
        self._have = 0
        self._pend = <unsigned char *>malloc(max_payload + HEADER_SIZE)
        if self._pend == NULL:
            raise MemoryError()

    def __dealloc__(self):
        free(self._pend)

    def events_received(self):
        """The events parsed since the last call (cleared)."""
        events = self._events
        self._events = []
        return events

    def receive_data(self, data):
        """Parses more bytes; never raises for anything the peer sent."""
        if self.finished:
            return
        if isinstance(data, memoryview) and data.format != "B":
            data = data.cast("B")
        cdef const unsigned char[::1] view = data
        cdef Py_ssize_t n = view.shape[0], pos = 0, length, take
        cdef const unsigned char *p = &view[0] if n else NULL
        cdef int kind
        while pos < n and not self.finished:
            if self._have:
                while self._have < HEADER_SIZE and pos < n:
                    self._pend[self._have] = p[pos]
                    self._have += 1
                    pos += 1
                if self._have < HEADER_SIZE:
                    return
                kind = self._pend[0]
                length = (self._pend[1] << 8) | self._pend[2]
                if not self._header_ok(kind, length):
                    return
                take = min(HEADER_SIZE + length - self._have, n - pos)
                memcpy(self._pend + self._have, p + pos, take)
                self._have += take
                pos += take
                if self._have < HEADER_SIZE + length:
                    return
                self._have = 0
                self._message(kind, self._pend + HEADER_SIZE, length)
            else:
                if n - pos < HEADER_SIZE:
                    memcpy(self._pend, p + pos, n - pos)
                    self._have = n - pos
                    return
                kind = p[pos]
                length = (p[pos + 1] << 8) | p[pos + 2]
                if not self._header_ok(kind, length):
                    return
                if n - pos - HEADER_SIZE < length:
                    memcpy(self._pend, p + pos, n - pos)
                    self._have = n - pos
                    return
                self._message(kind, p + pos + HEADER_SIZE, length)
                pos += HEADER_SIZE + length

    def receive_eof(self):
        """The peer closed its side: PeerClosed, or a violation if inside a message."""
        if self.finished:
            return
        if self._have == 0:
            self.finished = True
            self._events.append(PeerClosed())
        elif self._have < HEADER_SIZE:
            self._fail(TruncatedMessage(None, HEADER_SIZE, self._have))
        else:
            self._fail(TruncatedMessage(
                self._pend[0], HEADER_SIZE + ((self._pend[1] << 8) | self._pend[2]), self._have))

    cdef bint _header_ok(self, int kind, Py_ssize_t length) except -1:
        error = None
        if not (_is_audio(kind) or kind == KIND_UUID or kind == KIND_HANGUP
                or kind == KIND_DTMF or kind == KIND_ERROR):
            error = UnknownKind(kind)
        elif self.uuid is None and kind != KIND_UUID:
            error = FirstMessageNotUuid(kind)
        elif length > self.max_payload:
            error = FrameTooLarge(kind, length, self.max_payload)
        elif kind == KIND_UUID:
            if self.uuid is not None:
                error = DuplicateUuid()
            elif length != 16:
                error = MalformedUuid(length)
        elif _is_audio(kind):
            if length == 0 or length & 1:
                error = BadAudioLength(kind, length)
        elif kind == KIND_HANGUP and length:
            error = MalformedHangup(length)
        if error is None:
            return True
        self._fail(error)
        return False

    cdef int _message(self, int kind, const unsigned char *payload, Py_ssize_t length) except -1:
        cdef bytes data = PyBytes_FromStringAndSize(<const char *>payload, length)
        if _is_audio(kind):
            self._events.append(_audio(kind, data))
        elif kind == KIND_UUID:
            self.uuid = uuidlib.UUID(bytes=data)
            self._events.append(UuidReceived(self.uuid))
        elif kind == KIND_DTMF:
            if length != 1 or chr(payload[0]) not in DTMF_DIGITS:
                self._fail(MalformedDtmf(data))
            else:
                self._events.append(DtmfReceived(chr(payload[0])))
        elif kind == KIND_HANGUP:
            self._events.append(HangupReceived())
        else:
            self._events.append(ErrorReceived(data))
        return 0

    cdef int _fail(self, object error) except -1:
        self.finished = True
        self._have = 0
        self._events.append(ProtocolViolation(error))
        return 0


def encode_audio(int kind, pcm):
    """One audio message for ``kind`` carrying ``pcm`` (int16 LE), in one bytes object.

    Raises:
        BadOutgoingAudio: not an audio kind, or empty, odd or over 65,535 bytes.
    """
    if isinstance(pcm, memoryview) and pcm.format != "B":
        pcm = pcm.cast("B")
    cdef const unsigned char[::1] view = pcm
    cdef Py_ssize_t n = view.shape[0]
    if not _is_audio(kind):
        raise BadOutgoingAudio(kind, n, "not an audio kind (0x10..0x18)")
    if n == 0:
        raise BadOutgoingAudio(kind, n, "Asterisk hangs up on an empty audio message")
    if n & 1:
        raise BadOutgoingAudio(kind, n, "odd length: not whole 16-bit samples")
    if n > 0xFFFF:
        raise BadOutgoingAudio(kind, n, "longer than the 16-bit length field")
    cdef bytes out = PyBytes_FromStringAndSize(NULL, n + HEADER_SIZE)
    cdef unsigned char *dst = <unsigned char *>PyBytes_AS_STRING(out)
    write_header(dst, kind, n)
    memcpy(dst + HEADER_SIZE, &view[0], n)
    return out


cdef dict _SILENCE = {}


def silence(int kind, int ms=20):
    """A complete silent audio message of ``ms`` at ``kind``'s rate; the same object each time."""
    key = (kind, ms)
    message = _SILENCE.get(key)
    if message is None:
        if not _is_audio(kind):
            raise BadOutgoingAudio(kind, 0, "not an audio kind (0x10..0x18)")
        message = _SILENCE[key] = encode_audio(
            kind, bytes(_RATES[kind - KIND_AUDIO_8K] * ms // 1000 * 2))
    return message
