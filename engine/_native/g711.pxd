from libc.stdint cimport int16_t, uint8_t

cdef enum:
    ULAW_INDEX_SHIFT = 2     # μ-law looks at the 14 most significant bits
    ALAW_INDEX_SHIFT = 4     # A-law's result depends only on the 12 below the sign

cdef void ulaw_encode_into(const uint8_t *pcm, uint8_t *out, Py_ssize_t samples) noexcept nogil
cdef void alaw_encode_into(const uint8_t *pcm, uint8_t *out, Py_ssize_t samples) noexcept nogil
cdef void ulaw_decode_into(const uint8_t *codes, uint8_t *pcm, Py_ssize_t samples) noexcept nogil
cdef void alaw_decode_into(const uint8_t *codes, uint8_t *pcm, Py_ssize_t samples) noexcept nogil
