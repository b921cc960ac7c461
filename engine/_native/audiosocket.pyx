# cython: language_level=3
"""AudioSocket framing, sans-I/O, native. The twin ``engine._pure.audiosocket`` states the rules.

Whole messages are sliced straight out of the caller's buffer: one bytes object per payload
and one event object per message, nothing copied aside. Only a message split across reads is
held back, in a buffer that grows on demand up to one header plus ``max_payload``; its header
is judged as soon as its three bytes are in, so a bad header never buffers its payload.
"""

cimport cython
from cpython.buffer cimport (
    PyBUF_FULL_RO,
    PyBuffer_IsContiguous,
    PyBuffer_Release,
    PyObject_GetBuffer,
)
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from libc.stdlib cimport free, realloc
from libc.string cimport memcpy

from operator import index
from uuid import UUID

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

cdef int[9] _RATES = [8000, 12000, 16000, 24000, 32000, 44100, 48000, 96000, 192000]

AUDIO_RATES = {KIND_AUDIO_8K + i: _RATES[i] for i in range(9)}
DTMF_DIGITS = "0123456789*#ABCD"
DEFAULT_MAX_PAYLOAD = 16384
HANGUP = b"\x00\x00\x00"

_NOT_AUDIO = "not an audio kind (0x10..0x18); Asterisk hangs up on any other kind but hangup"
_EMPTY = "empty; Asterisk hangs up on an audio message of length 0"
_ODD = "odd length; not whole 16-bit samples"
_TOO_LONG = "over 65535 bytes; does not fit the 16-bit length field"


def kind_for_rate(rate):
    """The audio kind that carries ``rate`` Hz.

    Raises:
        UnsupportedRate: AudioSocket has no kind for that rate.
    """
    for i in range(9):
        if _RATES[i] == rate:
            return KIND_AUDIO_8K + i
    raise UnsupportedRate(rate, "AudioSocket has no audio kind for it")


cdef int _acquire(object obj, Py_buffer *view) except -1:
    """Gets ``obj``'s bytes. Contiguity is judged here, so a strided buffer is one BufferError,
    as in the twin, rather than whatever error its exporter would raise.
    """
    PyObject_GetBuffer(obj, view, PyBUF_FULL_RO)
    if not PyBuffer_IsContiguous(view, b"C"):
        PyBuffer_Release(view)
        raise BufferError("AudioSocket needs a C-contiguous buffer")
    return 0


cdef inline bint _is_dtmf(unsigned char c) noexcept nogil:
    return c"0" <= c <= c"9" or c == c"*" or c == c"#" or c"A" <= c <= c"D"


cdef class _Event:
    """Equality, hash and repr of a frozen dataclass over the fields in ``__match_args__``."""

    __match_args__ = ()

    cdef tuple _values(self):
        return ()

    def __eq__(self, other):
        if type(other) is not type(self):
            return NotImplemented
        return self._values() == (<_Event>other)._values()

    def __hash__(self):
        return hash(self._values())

    def __repr__(self):
        fields = ", ".join(
            [f"{name}={getattr(self, name)!r}" for name in type(self).__match_args__]
        )
        return f"{type(self).__name__}({fields})"


cdef class UuidReceived(_Event):
    """The call's UUID: always the first message."""

    __match_args__ = ("uuid",)

    def __init__(self, uuid):
        self.uuid = uuid

    cdef tuple _values(self):
        return (self.uuid,)



# The one event of the hot path: outside the _Event family because Cython keeps a freelist
# only for a base class, and reusing these objects saves an allocation on most messages.
@cython.freelist(64)
cdef class AudioReceived:
    """One audio message: ``payload`` is int16 little-endian at ``rate`` Hz."""

    __match_args__ = ("kind", "rate", "payload")

    def __init__(self, int kind, int rate, bytes payload not None):
        self.kind = kind
        self.rate = rate
        self.payload = payload

    def __eq__(self, other):
        if type(other) is not AudioReceived:
            return NotImplemented
        cdef AudioReceived that = <AudioReceived>other
        return self.kind == that.kind and self.rate == that.rate and self.payload == that.payload

    def __hash__(self):
        return hash((self.kind, self.rate, self.payload))

    def __repr__(self):
        return f"AudioReceived(kind={self.kind!r}, rate={self.rate!r}, payload={self.payload!r})"


cdef class DtmfReceived(_Event):
    """One DTMF digit, sent by Asterisk when the digit ends."""

    __match_args__ = ("digit",)

    def __init__(self, str digit not None):
        self.digit = digit

    cdef tuple _values(self):
        return (self.digit,)


cdef class HangupReceived(_Event):
    """A hangup message from the peer (Asterisk itself never sends one)."""


cdef class ErrorReceived(_Event):
    """An error message (kind 0xFF) with its flags; not terminal, worth a log line."""

    __match_args__ = ("payload",)

    def __init__(self, bytes payload not None):
        self.payload = payload

    cdef tuple _values(self):
        return (self.payload,)


cdef class ProtocolViolation(_Event):
    """The peer broke the protocol: terminal; ``error`` says how. Close the connection."""

    __match_args__ = ("error",)

    def __init__(self, error):
        self.error = error

    cdef tuple _values(self):
        # Exceptions compare by identity; two violations are equal when they say the same.
        return (type(self.error), self.error.args)


cdef class PeerClosed(_Event):
    """The peer closed the connection between messages: the normal end of a call."""


Event = (
    UuidReceived | AudioReceived | DtmfReceived | HangupReceived | ErrorReceived
    | ProtocolViolation | PeerClosed
)


cdef class AudioSink:
    """Where a parser delivers audio of ``kind`` instead of making an AudioReceived of it.

    A subclass overrides the C method ``audio``; ``push(payload)`` is the same step from
    Python, for audio that reached Python as an event (a call's first message).
    """

    def __init__(self, int kind):
        self.kind = kind

    cdef bint audio(self, const unsigned char *data, Py_ssize_t length) except -1:
        raise NotImplementedError("AudioSink.audio must be overridden")

    def push(self, payload):
        """One audio message's payload; True when it left something for the adapter."""
        cdef const unsigned char[::1] view = payload
        return self.audio(&view[0] if view.shape[0] else NULL, view.shape[0])


cdef class Parser:
    """Turns the bytes Asterisk sends into events (or, with ``client=True``, the engine's).

    Feed it with ``receive_data()`` and ``receive_eof()``, then drain ``events_received()``.
    Nothing the peer sends makes it raise: a violation becomes one terminal
    ProtocolViolation and everything after it is ignored. In client mode (a caller that acts
    like Asterisk) no UUID is expected, only audio and hangup are accepted, and a hangup is
    terminal.
    """

    def __cinit__(self):
        self._pending = NULL
        self._capacity = 0
        self._have = 0

    def __init__(self, max_payload=DEFAULT_MAX_PAYLOAD, *, client=False):
        try:
            limit = index(max_payload)
        except TypeError:
            raise ConfigError(f"max_payload must be an integer, not {max_payload!r}") from None
        if not MIN_MAX_PAYLOAD <= limit <= MAX_LENGTH:
            raise ConfigError(
                f"max_payload must be {MIN_MAX_PAYLOAD}..{MAX_LENGTH} bytes, not {limit}"
            )
        self.max_payload = limit
        self.client = bool(client)
        # A client never sees a UUID: its audio is welcome from the first byte.
        self._open = self.client
        self.uuid = None
        self.finished = False
        self._events = []
        self._have = 0
        self._sink = None
        self._ready = False

    def __dealloc__(self):
        free(self._pending)

    def events_received(self):
        """The events parsed since the last call, oldest first; the parser forgets them."""
        events = self._events
        self._events = []
        return events

    def attach(self, AudioSink sink):
        """From now on, audio of ``sink.kind`` goes to ``sink`` instead of becoming events;
        None stops it. Audio of any other kind is still an event."""
        self._sink = sink

    def finish(self):
        """Ignores everything the peer sends from now on (its call is over)."""
        self.finished = True
        self._have = 0

    def receive_data(self, data):
        """Parses more bytes from the peer (bytes, bytearray or any C-contiguous buffer).

        Returns True when events wait in ``events_received()`` or the attached sink said it
        left something for the adapter: the adapter has work only then.

        Raises:
            BufferError: ``data`` is not C-contiguous (a caller's bug, not the peer's).
        """
        cdef Py_buffer view
        if type(data) is bytes:
            return self.feed(<const unsigned char *>PyBytes_AS_STRING(data),
                             PyBytes_GET_SIZE(data))
        _acquire(data, &view)
        try:
            return self.feed(<const unsigned char *>view.buf, view.len)
        finally:
            PyBuffer_Release(&view)

    cdef bint feed(self, const unsigned char *data, Py_ssize_t n) except -1:
        """:meth:`receive_data` for native callers (the clock's reads), on raw bytes."""
        if self.finished:
            return False
        self._ready = False
        self._feed(data, n)
        return self._ready or len(self._events) > 0

    @property
    def has_events(self):
        """Events wait in ``events_received()``."""
        return len(self._events) > 0

    def receive_eof(self):
        """The peer closed its side: PeerClosed, or TruncatedMessage inside a message.

        TruncatedMessage counts whole-message bytes, header included: ``expected`` is 3 and
        ``kind`` None inside the header, else 3 + the header's length.
        """
        if self.finished:
            return
        if self._have == 0:
            self.finished = True
            self._events.append(PeerClosed())
        elif self._have < HEADER_SIZE:
            self._fail(TruncatedMessage(None, HEADER_SIZE, self._have))
        else:
            self._fail(TruncatedMessage(
                self._pending[0],
                HEADER_SIZE + ((self._pending[1] << 8) | self._pending[2]),
                self._have,
            ))

    cdef int _feed(self, const unsigned char *p, Py_ssize_t n) except -1:
        cdef Py_ssize_t pos = 0, length = 0, take
        cdef int kind
        if self._have:
            if self._have < HEADER_SIZE:
                take = min(HEADER_SIZE - self._have, n)
                memcpy(self._pending + self._have, p, take)
                self._have += take
                pos = take
                if self._have < HEADER_SIZE:
                    return 0
                if not self._accept(self._pending[0], (self._pending[1] << 8) | self._pending[2]):
                    return 0
            kind = self._pending[0]
            length = (self._pending[1] << 8) | self._pending[2]
            self._reserve(HEADER_SIZE + length)
            take = min(HEADER_SIZE + length - self._have, n - pos)
            memcpy(self._pending + self._have, p + pos, take)
            self._have += take
            pos += take
            if self._have < HEADER_SIZE + length:
                return 0
            self._have = 0
            self._message(kind, self._pending + HEADER_SIZE, length)
        while n - pos >= HEADER_SIZE and not self.finished:
            kind = p[pos]
            length = (p[pos + 1] << 8) | p[pos + 2]
            if not self._accept(kind, length):
                return 0
            if n - pos - HEADER_SIZE < length:
                return self._hold(p + pos, n - pos, HEADER_SIZE + length)
            self._message(kind, p + pos + HEADER_SIZE, length)
            pos += HEADER_SIZE + length
        if pos < n and not self.finished:
            self._hold(p + pos, n - pos, HEADER_SIZE)
        return 0

    cdef int _hold(self, const unsigned char *data, Py_ssize_t n, Py_ssize_t size) except -1:
        """Appends ``n`` bytes to the pending message, with room for ``size`` bytes in all."""
        self._reserve(size)
        memcpy(self._pending + self._have, data, n)
        self._have += n
        return 0

    cdef int _reserve(self, Py_ssize_t size) except -1:
        cdef unsigned char *grown
        if size > self._capacity:
            size = max(size, INITIAL_PENDING)
            grown = <unsigned char *>realloc(self._pending, size)
            if grown == NULL:
                raise MemoryError()
            self._pending = grown
            self._capacity = size
        return 0

    cdef bint _accept(self, int kind, Py_ssize_t length) except -1:
        if (
            is_audio_kind(kind) and length and not (length & 1)
            and length <= self.max_payload and self._open
        ):
            return True
        error = self._header_error(kind, length)
        if error is None:
            return True
        self._fail(error)
        return False

    cdef object _header_error(self, int kind, Py_ssize_t length):
        if self.client:
            return self._client_header_error(kind, length)
        if not (
            is_audio_kind(kind) or kind == KIND_UUID or kind == KIND_DTMF
            or kind == KIND_HANGUP or kind == KIND_ERROR
        ):
            return UnknownKind(kind)
        if self.uuid is None and kind != KIND_UUID:
            return FirstMessageNotUuid(kind)
        if length > self.max_payload:
            return FrameTooLarge(kind, length, self.max_payload)
        if kind == KIND_UUID:
            if length != UUID_SIZE:
                return MalformedUuid(length)
            if self.uuid is not None:
                return DuplicateUuid()
        elif is_audio_kind(kind):
            if length == 0 or length & 1:
                return BadAudioLength(kind, length)
        elif kind == KIND_HANGUP and length:
            return MalformedHangup(length)
        return None

    cdef object _client_header_error(self, int kind, Py_ssize_t length):
        # An engine may send only what Asterisk accepts: audio and hangup.
        if not (is_audio_kind(kind) or kind == KIND_HANGUP):
            return UnknownKind(kind)
        if length > self.max_payload:
            return FrameTooLarge(kind, length, self.max_payload)
        if kind == KIND_HANGUP:
            if length:
                return MalformedHangup(length)
        elif length == 0 or length & 1:
            return BadAudioLength(kind, length)
        return None

    cdef int _message(self, int kind, const unsigned char *data, Py_ssize_t length) except -1:
        cdef AudioReceived audio
        cdef bytes payload
        if is_audio_kind(kind):
            if self._sink is not None and kind == self._sink.kind:
                if self._sink.audio(data, length):
                    self._ready = True
                return 0
            audio = AudioReceived.__new__(AudioReceived)
            audio.kind = kind
            audio.rate = _RATES[kind - KIND_AUDIO_8K]
            audio.payload = PyBytes_FromStringAndSize(<const char *>data, length)
            self._events.append(audio)
        elif kind == KIND_DTMF:
            if length == 1 and _is_dtmf(data[0]):
                self._events.append(DtmfReceived(chr(data[0])))
            else:
                self._fail(MalformedDtmf(PyBytes_FromStringAndSize(<const char *>data, length)))
        elif kind == KIND_UUID:
            self.uuid = UUID(bytes=PyBytes_FromStringAndSize(<const char *>data, length))
            self._open = True
            self._events.append(UuidReceived(self.uuid))
        elif kind == KIND_HANGUP:
            self._events.append(HangupReceived())
            if self.client:
                # The engine ends the call with it; whatever follows is not the call's.
                self.finished = True
                self._have = 0
        else:
            payload = PyBytes_FromStringAndSize(<const char *>data, length)
            self._events.append(ErrorReceived(payload))
        return 0

    cdef int _fail(self, object error) except -1:
        self.finished = True
        self._have = 0
        self._events.append(ProtocolViolation(error))
        return 0


def encode_audio(int kind, pcm):
    """One audio message of ``kind`` carrying ``pcm`` (int16 LE), as one new bytes object.

    ``pcm`` is any C-contiguous buffer; its bytes are copied once, straight after the header.

    Raises:
        BadOutgoingAudio: not an audio kind, or ``pcm`` is empty, odd or over 65535 bytes.
        BufferError: ``pcm`` is not C-contiguous.
    """
    cdef Py_buffer view
    cdef bytes out
    cdef char *dst
    _acquire(pcm, &view)
    try:
        if not is_audio_kind(kind):
            raise BadOutgoingAudio(kind, view.len, _NOT_AUDIO)
        if view.len == 0:
            raise BadOutgoingAudio(kind, 0, _EMPTY)
        if view.len & 1:
            raise BadOutgoingAudio(kind, view.len, _ODD)
        if view.len > MAX_LENGTH:
            raise BadOutgoingAudio(kind, view.len, _TOO_LONG)
        out = PyBytes_FromStringAndSize(NULL, HEADER_SIZE + view.len)
        dst = PyBytes_AS_STRING(out)
        write_header(dst, kind, view.len)
        memcpy(dst + HEADER_SIZE, view.buf, view.len)
    finally:
        PyBuffer_Release(&view)
    return out


# One cache per audio kind, keyed by duration in ms: a lookup by a small int allocates nothing.
cdef list _SILENCE = [{} for _ in range(9)]


def silence(int kind, int ms=20):
    """A complete silent audio message of ``ms`` at ``kind``'s rate: the same object each call.

    Raises:
        BadOutgoingAudio: not an audio kind, ``ms`` not positive, not a whole number of
            samples at that rate, or too long for one message.
    """
    if not is_audio_kind(kind):
        raise BadOutgoingAudio(kind, 0, _NOT_AUDIO)
    cdef dict cache = <dict>_SILENCE[kind - KIND_AUDIO_8K]
    message = cache.get(ms)
    if message is None:
        message = cache[ms] = _silent_message(kind, _RATES[kind - KIND_AUDIO_8K], ms)
    return message


cdef bytes _silent_message(int kind, long long rate, long long ms):
    if ms <= 0:
        raise BadOutgoingAudio(kind, 0, f"{ms} ms is not a positive duration")
    samples, rest = divmod(rate * ms, 1000)
    if rest:
        raise BadOutgoingAudio(
            kind, 2 * samples, f"{ms} ms at {rate} Hz is not a whole number of samples"
        )
    return encode_audio(kind, bytes(2 * samples))
