# cython: language_level=3
"""G.711 μ-law and A-law by table, bit-exact with the ITU-T G.191 reference ``g711.c``.

The tables are built once at import from the reference algorithm (the same arithmetic as the
twin ``engine._pure.g711``). μ-law's code depends only on the top 14 bits of a sample and
A-law's on the top 12 below the sign, so the encode tables hold 16,384 and 4,096 entries.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from libc.stdint cimport int16_t, uint8_t

from engine.errors import BadSampleData

__all__ = ["alaw_decode", "alaw_encode", "ulaw_decode", "ulaw_encode"]


cdef int _ulaw_compress(int x) noexcept nogil:
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


cdef int _ulaw_expand(int code) noexcept nogil:
    cdef int sign = -1 if code < 0x0080 else 1
    cdef int mantissa = ~code
    cdef int exponent = (mantissa >> 4) & 0x0007
    cdef int step = 4 << (exponent + 1)
    mantissa &= 0x000F
    return sign * ((0x0080 << exponent) + step * mantissa + step // 2 - 4 * 33)


cdef int _alaw_compress(int x) noexcept nogil:
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


cdef int _alaw_expand(int code) noexcept nogil:
    cdef int ix = (code ^ 0x0055) & 0x007F
    cdef int iexp = ix >> 4
    cdef int mant = ix & 0x000F
    if iexp > 0:
        mant += 16
    mant = (mant << 4) + 0x0008
    if iexp > 1:
        mant <<= iexp - 1
    return mant if code > 127 else -mant




cdef uint8_t ULAW_ENCODE[16384]
cdef uint8_t ALAW_ENCODE[4096]
cdef int16_t ULAW_DECODE[256]
cdef int16_t ALAW_DECODE[256]


cdef void _build_tables() noexcept nogil:
    cdef int i
    for i in range(16384):
        ULAW_ENCODE[i] = <uint8_t>_ulaw_compress((i - 8192) << ULAW_INDEX_SHIFT)
    for i in range(4096):
        ALAW_ENCODE[i] = <uint8_t>_alaw_compress((i - 2048) << ALAW_INDEX_SHIFT)
    for i in range(256):
        ULAW_DECODE[i] = <int16_t>_ulaw_expand(i)
        ALAW_DECODE[i] = <int16_t>_alaw_expand(i)


_build_tables()


cdef inline int16_t _load(const uint8_t *pcm, Py_ssize_t i) noexcept nogil:
    return <int16_t>(pcm[2 * i] | (pcm[2 * i + 1] << 8))


cdef inline void _store(uint8_t *pcm, Py_ssize_t i, int16_t s) noexcept nogil:
    pcm[2 * i] = <uint8_t>(s & 0xFF)
    pcm[2 * i + 1] = <uint8_t>((s >> 8) & 0xFF)


cdef void ulaw_encode_into(const uint8_t *pcm, uint8_t *out, Py_ssize_t samples) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(samples):
        out[i] = ULAW_ENCODE[(_load(pcm, i) >> ULAW_INDEX_SHIFT) + 8192]


cdef void alaw_encode_into(const uint8_t *pcm, uint8_t *out, Py_ssize_t samples) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(samples):
        out[i] = ALAW_ENCODE[(_load(pcm, i) >> ALAW_INDEX_SHIFT) + 2048]


cdef void ulaw_decode_into(const uint8_t *codes, uint8_t *pcm, Py_ssize_t samples) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(samples):
        _store(pcm, i, ULAW_DECODE[codes[i]])


cdef void alaw_decode_into(const uint8_t *codes, uint8_t *pcm, Py_ssize_t samples) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(samples):
        _store(pcm, i, ALAW_DECODE[codes[i]])


ctypedef void (*convert_fn)(const uint8_t *, uint8_t *, Py_ssize_t) noexcept nogil


cdef bytes _encode(obj, convert_fn convert):
    cdef const uint8_t[::1] pcm = _bytes_view(obj)
    cdef Py_ssize_t n = pcm.shape[0]
    if n & 1:
        raise BadSampleData(n)
    cdef bytes out = PyBytes_FromStringAndSize(NULL, n >> 1)
    if n:
        convert(&pcm[0], <uint8_t *>PyBytes_AS_STRING(out), n >> 1)
    return out


cdef bytes _decode(obj, convert_fn convert):
    cdef const uint8_t[::1] codes = _bytes_view(obj)
    cdef Py_ssize_t n = codes.shape[0]
    cdef bytes out = PyBytes_FromStringAndSize(NULL, 2 * n)
    if n:
        convert(&codes[0], <uint8_t *>PyBytes_AS_STRING(out), n)
    return out


def ulaw_encode(pcm) -> bytes:
    """int16 LE samples to μ-law bytes, one byte a sample. Raises BadSampleData if odd."""
    return _encode(pcm, ulaw_encode_into)


def alaw_encode(pcm) -> bytes:
    """int16 LE samples to A-law bytes, one byte a sample. Raises BadSampleData if odd."""
    return _encode(pcm, alaw_encode_into)


def ulaw_decode(data) -> bytes:
    """μ-law bytes to int16 LE samples."""
    return _decode(data, ulaw_decode_into)


def alaw_decode(data) -> bytes:
    """A-law bytes to int16 LE samples."""
    return _decode(data, alaw_decode_into)


cdef const uint8_t[::1] _bytes_view(obj):
    if isinstance(obj, memoryview) and obj.format != "B":
        obj = obj.cast("B")
    return obj
