cimport cython

# Message kinds (Asterisk's res_audiosocket.h). A cpdef enum is a cdef enum that the module
# also exports as plain Python ints.
cpdef enum:
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

cdef enum:
    HEADER_SIZE = 3             # kind u8, length u16 big-endian
    MAX_LENGTH = 0xFFFF         # what the length field can carry
    MIN_MAX_PAYLOAD = 16        # a parser must at least take the UUID message
    UUID_SIZE = 16
    INITIAL_PENDING = 1024      # room for one 20 ms frame up to 24 kHz before any realloc


cdef inline void write_header(char *dst, int kind, Py_ssize_t length) noexcept nogil:
    """Writes the 3-byte header of a ``kind`` message of ``length`` payload bytes at ``dst``.

    The caller has checked that ``kind`` fits a byte and ``length`` is at most MAX_LENGTH.
    """
    dst[0] = <char>kind
    dst[1] = <char>((length >> 8) & 0xFF)
    dst[2] = <char>(length & 0xFF)


cdef inline bint is_audio_kind(int kind) noexcept nogil:
    return KIND_AUDIO_8K <= kind <= KIND_AUDIO_192K


cdef class _Event:
    cdef tuple _values(self)


@cython.final
cdef class UuidReceived(_Event):
    cdef readonly object uuid


@cython.final
cdef class AudioReceived:
    cdef readonly int kind
    cdef readonly int rate
    cdef readonly bytes payload


@cython.final
cdef class DtmfReceived(_Event):
    cdef readonly str digit


@cython.final
cdef class HangupReceived(_Event):
    pass


@cython.final
cdef class ErrorReceived(_Event):
    cdef readonly bytes payload


@cython.final
cdef class ProtocolViolation(_Event):
    cdef readonly object error


@cython.final
cdef class PeerClosed(_Event):
    pass


cdef class AudioSink:
    """Takes a call's audio messages of one kind straight from the parser, as C calls."""
    cdef readonly int kind

    # One audio message's payload; returns True when it left something for the adapter.
    cdef bint audio(self, const unsigned char *data, Py_ssize_t length) except -1


@cython.final
cdef class Parser:
    cdef readonly int max_payload
    cdef readonly bint client
    cdef readonly object uuid
    cdef readonly bint finished
    cdef list _events
    cdef AudioSink _sink
    cdef bint _ready
    # Audio may arrive: the UUID has (server mode) or never will (client mode).
    cdef bint _open
    # A message split across reads: its first _have bytes (header first) wait in _pending,
    # which grows on demand up to HEADER_SIZE + max_payload. A complete header in it has
    # already passed _accept().
    cdef unsigned char *_pending
    cdef Py_ssize_t _capacity
    cdef Py_ssize_t _have

    cdef bint feed(self, const unsigned char *data, Py_ssize_t n) except -1
    cdef int _feed(self, const unsigned char *data, Py_ssize_t n) except -1
    cdef bint _accept(self, int kind, Py_ssize_t length) except -1
    cdef object _header_error(self, int kind, Py_ssize_t length)
    cdef object _client_header_error(self, int kind, Py_ssize_t length)
    cdef int _message(self, int kind, const unsigned char *payload, Py_ssize_t length) except -1
    cdef int _hold(self, const unsigned char *data, Py_ssize_t n, Py_ssize_t size) except -1
    cdef int _reserve(self, Py_ssize_t size) except -1
    cdef int _fail(self, object error) except -1
