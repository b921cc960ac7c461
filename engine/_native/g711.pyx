# cython: language_level=3
"""G.711 μ-law and A-law by table lookup, bit-exact with the ITU-T G.191 reference ``g711.c``.

The tables are built once at import by the reference algorithm itself, transcribed below with
the same arithmetic as the twin ``engine._pure.g711``. A code depends only on the top 14 bits
of a sample (μ-law) or the top 12 (A-law: G.191 reads 13 but shifts the last one out), so
each encode table is indexed by those bits of the sample's 16-bit pattern. Samples are int16
little-endian in any C-contiguous buffer; the loops read and write bytes, so the result does
not depend on the host's byte order.
"""

from cpython.buffer cimport (
    PyBUF_FULL_RO,
    PyBuffer_IsContiguous,
    PyBuffer_Release,
    PyObject_GetBuffer,
)
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from libc.stdint cimport uint8_t, uint16_t

from engine.errors import BadSampleData

__all__ = ["alaw_decode", "alaw_encode", "ulaw_decode", "ulaw_encode"]


cdef inline int _ulaw_compress(int x) noexcept nogil:
    """G.191 ``ulaw_compress`` for one sample."""
    cdef int absno = (((~x) >> 2) + 33) if x < 0 else ((x >> 2) + 33)
    cdef int i, segno, code
    if absno > 0x1FFF:
        absno = 0x1FFF
    i = absno >> 6
    segno = 1
    while i != 0:
        segno += 1
        i >>= 1
    code = ((0x0008 - segno) << 4) | (0x000F - ((absno >> segno) & 0x000F))
    if x >= 0:
        code |= 0x0080
    return code


cdef inline int _ulaw_expand(int code) noexcept nogil:
    """G.191 ``ulaw_expand`` for one code."""
    cdef int sign = -1 if code < 0x0080 else 1
    # Masked to 8 bits so the shift below never meets a negative number (whose right shift
    # C leaves to the compiler); bits 4..7 are what the reference reads.
    cdef int mantissa = (~code) & 0xFF
    cdef int exponent = (mantissa >> 4) & 0x0007
    cdef int step = 4 << (exponent + 1)
    mantissa &= 0x000F
    return sign * ((0x0080 << exponent) + step * mantissa + step // 2 - 4 * 33)


cdef inline int _alaw_compress(int x) noexcept nogil:
    """G.191 ``alaw_compress`` for one sample."""
    cdef int ix = ((~x) >> 4) if x < 0 else (x >> 4)
    cdef int iexp
    if ix > 15:
        iexp = 1
        while ix > 16 + 15:
            ix >>= 1
            iexp += 1
        ix -= 16
        ix += iexp << 4
    if x >= 0:
        ix |= 0x0080
    return ix ^ 0x0055


cdef inline int _alaw_expand(int code) noexcept nogil:
    """G.191 ``alaw_expand`` for one code."""
    cdef int ix = (code ^ 0x0055) & 0x007F
    cdef int iexp = ix >> 4
    cdef int mant = ix & 0x000F
    if iexp > 0:
        mant += 16
    mant = (mant << 4) + 0x0008
    if iexp > 1:
        mant <<= iexp - 1
    return mant if code > 127 else -mant


# Encode tables are indexed by the sample's unsigned 16-bit pattern shifted right, so the hot
# loop needs no sign handling; decode tables hold the 16-bit pattern of each code's sample.
cdef uint8_t ULAW_ENCODE[ULAW_TABLE_SIZE]
cdef uint8_t ALAW_ENCODE[ALAW_TABLE_SIZE]
cdef uint16_t ULAW_DECODE[256]
cdef uint16_t ALAW_DECODE[256]


cdef inline int _signed(int pattern) noexcept nogil:
    """The int16 value of a 16-bit pattern."""
    return pattern - 0x10000 if pattern >= 0x8000 else pattern


cdef void _build_tables() noexcept nogil:
    cdef int i
    for i in range(ULAW_TABLE_SIZE):
        ULAW_ENCODE[i] = <uint8_t>_ulaw_compress(_signed(i << ULAW_INDEX_SHIFT))
    for i in range(ALAW_TABLE_SIZE):
        ALAW_ENCODE[i] = <uint8_t>_alaw_compress(_signed(i << ALAW_INDEX_SHIFT))
    for i in range(256):
        ULAW_DECODE[i] = <uint16_t>(_ulaw_expand(i) & 0xFFFF)
        ALAW_DECODE[i] = <uint16_t>(_alaw_expand(i) & 0xFFFF)


_build_tables()


cdef inline uint16_t _load(const uint8_t *pcm, Py_ssize_t i) noexcept nogil:
    return <uint16_t>(pcm[2 * i] | (pcm[2 * i + 1] << 8))


cdef inline void _store(uint8_t *pcm, Py_ssize_t i, uint16_t pattern) noexcept nogil:
    pcm[2 * i] = <uint8_t>(pattern & 0xFF)
    pcm[2 * i + 1] = <uint8_t>(pattern >> 8)


cdef void ulaw_encode_into(const uint8_t *pcm, uint8_t *codes, Py_ssize_t samples) noexcept nogil:
    """Writes ``samples`` μ-law codes for the int16 LE samples at ``pcm``."""
    cdef Py_ssize_t i
    for i in range(samples):
        codes[i] = ULAW_ENCODE[_load(pcm, i) >> ULAW_INDEX_SHIFT]


cdef void alaw_encode_into(const uint8_t *pcm, uint8_t *codes, Py_ssize_t samples) noexcept nogil:
    """Writes ``samples`` A-law codes for the int16 LE samples at ``pcm``."""
    cdef Py_ssize_t i
    for i in range(samples):
        codes[i] = ALAW_ENCODE[_load(pcm, i) >> ALAW_INDEX_SHIFT]


cdef void ulaw_decode_into(const uint8_t *codes, uint8_t *pcm, Py_ssize_t samples) noexcept nogil:
    """Writes ``samples`` int16 LE samples (2 bytes each) for the μ-law codes at ``codes``."""
    cdef Py_ssize_t i
    for i in range(samples):
        _store(pcm, i, ULAW_DECODE[codes[i]])


cdef void alaw_decode_into(const uint8_t *codes, uint8_t *pcm, Py_ssize_t samples) noexcept nogil:
    """Writes ``samples`` int16 LE samples (2 bytes each) for the A-law codes at ``codes``."""
    cdef Py_ssize_t i
    for i in range(samples):
        _store(pcm, i, ALAW_DECODE[codes[i]])


ctypedef void (*convert_fn)(const uint8_t *, uint8_t *, Py_ssize_t) noexcept nogil


cdef int _acquire(object obj, Py_buffer *view) except -1:
    """Gets ``obj``'s bytes, whatever its item format; refuses a non-contiguous layout.

    Asked for any layout (as ``memoryview()`` asks), every exporter answers and the layout
    is judged here, so a strided buffer is one BufferError, as in the twin, rather than
    whatever error its exporter would raise.
    """
    PyObject_GetBuffer(obj, view, PyBUF_FULL_RO)
    if not PyBuffer_IsContiguous(view, b"C"):
        PyBuffer_Release(view)
        raise BufferError("G.711 needs a C-contiguous buffer")
    return 0


cdef bytes _encode(object pcm, convert_fn convert):
    cdef Py_buffer view
    cdef bytes out
    _acquire(pcm, &view)
    try:
        if view.len & 1:
            raise BadSampleData(view.len)
        out = PyBytes_FromStringAndSize(NULL, view.len >> 1)
        convert(<const uint8_t *>view.buf, <uint8_t *>PyBytes_AS_STRING(out), view.len >> 1)
    finally:
        PyBuffer_Release(&view)
    return out


cdef bytes _decode(object data, convert_fn convert):
    cdef Py_buffer view
    cdef bytes out
    _acquire(data, &view)
    try:
        out = PyBytes_FromStringAndSize(NULL, 2 * view.len)
        convert(<const uint8_t *>view.buf, <uint8_t *>PyBytes_AS_STRING(out), view.len)
    finally:
        PyBuffer_Release(&view)
    return out


def ulaw_encode(pcm):
    """int16 LE samples to μ-law, one byte a sample.

    Raises:
        BadSampleData: ``pcm`` has an odd number of bytes.
        BufferError: ``pcm`` is not C-contiguous.
    """
    return _encode(pcm, ulaw_encode_into)


def alaw_encode(pcm):
    """int16 LE samples to A-law, one byte a sample.

    Raises:
        BadSampleData: ``pcm`` has an odd number of bytes.
        BufferError: ``pcm`` is not C-contiguous.
    """
    return _encode(pcm, alaw_encode_into)


def ulaw_decode(data):
    """μ-law codes to int16 LE samples, two bytes a code.

    Raises:
        BufferError: ``data`` is not C-contiguous.
    """
    return _decode(data, ulaw_decode_into)


def alaw_decode(data):
    """A-law codes to int16 LE samples, two bytes a code.

    Raises:
        BufferError: ``data`` is not C-contiguous.
    """
    return _decode(data, alaw_decode_into)
