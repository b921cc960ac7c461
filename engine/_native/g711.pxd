from libc.stdint cimport uint8_t

cdef enum:
    # ulaw_compress reads x >> 2 (the 14 most significant bits); alaw_compress reads x >> 4:
    # its 13-bit input's last bit never moves a decision level ("only 12 MSBits are taken
    # into account", says g711.c). Each encode table holds one entry per value of those bits.
    ULAW_INDEX_SHIFT = 2
    ULAW_TABLE_SIZE = 16384
    ALAW_INDEX_SHIFT = 4
    ALAW_TABLE_SIZE = 4096

cdef void ulaw_encode_into(const uint8_t *pcm, uint8_t *codes, Py_ssize_t samples) noexcept nogil
cdef void alaw_encode_into(const uint8_t *pcm, uint8_t *codes, Py_ssize_t samples) noexcept nogil
cdef void ulaw_decode_into(const uint8_t *codes, uint8_t *pcm, Py_ssize_t samples) noexcept nogil
cdef void alaw_decode_into(const uint8_t *codes, uint8_t *pcm, Py_ssize_t samples) noexcept nogil
