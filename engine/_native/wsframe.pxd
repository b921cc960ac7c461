from libc.stdint cimport uint8_t, uint32_t, uint64_t
from libc.string cimport memcpy


cdef class FrameBuilder:
    cdef object _random
    cdef bytes _pool
    cdef Py_ssize_t _used

    # The next 4 mask bytes from the pool (valid until the next call).
    cdef const uint8_t* mask(self) except NULL


cdef inline Py_ssize_t header_size(Py_ssize_t n) noexcept nogil:
    """Bytes of a client frame's header for an ``n``-byte payload, mask included."""
    return 2 + (0 if n < 126 else (2 if n < 65536 else 8)) + 4


cdef inline void write_header(uint8_t *p, int opcode, Py_ssize_t n,
                              const uint8_t *mask) noexcept nogil:
    """A final frame's header of ``header_size(n)`` bytes at ``p``, ending with the mask."""
    cdef Py_ssize_t i, head
    p[0] = 0x80 | (opcode & 0x0F)
    if n < 126:
        p[1] = 0x80 | <uint8_t>n
        head = 2
    elif n < 65536:
        p[1] = 0x80 | 126
        p[2] = <uint8_t>(n >> 8)
        p[3] = <uint8_t>n
        head = 4
    else:
        p[1] = 0x80 | 127
        for i in range(8):
            p[2 + i] = <uint8_t>((<uint64_t>n) >> (8 * (7 - i)))
        head = 10
    memcpy(p + head, mask, 4)


cdef inline void mask_in_place(uint8_t *p, Py_ssize_t n, const uint8_t *mask) noexcept nogil:
    """XORs ``n`` bytes at ``p`` with the repeating 4-byte ``mask``, 8 bytes at a time."""
    cdef uint32_t m32
    cdef uint64_t m64, word
    cdef Py_ssize_t i = 0
    memcpy(&m32, mask, 4)
    m64 = (<uint64_t>m32 << 32) | m32
    while i + 8 <= n:
        memcpy(&word, p + i, 8)
        word ^= m64
        memcpy(p + i, &word, 8)
        i += 8
    while i < n:
        p[i] ^= mask[i & 3]
        i += 1
