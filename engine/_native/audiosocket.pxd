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
    HEADER_SIZE = 3


cdef inline void write_header(unsigned char *dst, int kind, Py_ssize_t length) noexcept nogil:
    dst[0] = <unsigned char>kind
    dst[1] = <unsigned char>((length >> 8) & 0xFF)
    dst[2] = <unsigned char>(length & 0xFF)


cdef class Parser:
    cdef readonly int max_payload
    cdef readonly object uuid
    cdef readonly bint finished
    cdef list _events
    cdef unsigned char *_pend
    cdef Py_ssize_t _have

    cdef bint _header_ok(self, int kind, Py_ssize_t length) except -1
    cdef int _message(self, int kind, const unsigned char *payload, Py_ssize_t length) except -1
    cdef int _fail(self, object error) except -1
