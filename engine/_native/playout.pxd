from libc.stdint cimport int16_t


cpdef enum:
    MAX_ITEMS = 16

cdef enum:
    STATE_IDLE = 0
    STATE_BUFFERING = 1
    STATE_PLAYING = 2


cdef class PlayoutBuffer:
    cdef readonly int rate
    cdef readonly object kind
    cdef readonly Py_ssize_t frame_samples
    cdef readonly Py_ssize_t capacity_samples
    cdef readonly Py_ssize_t allocated_samples
    cdef readonly Py_ssize_t underruns
    cdef readonly Py_ssize_t dropped_samples
    cdef readonly bint complete
    cdef readonly object current_item
    cdef Py_ssize_t _start_samples, _fade, _initial
    cdef int _state
    cdef int16_t *_ring
    cdef Py_ssize_t _head, _count
    cdef list _segments
    cdef object _items
    cdef bytes _silence, _silence_message

    cdef int _resize(self, Py_ssize_t size) except -1
    cdef void _read(self, int16_t *dst, Py_ssize_t n) noexcept nogil
    cdef int _credit(self, Py_ssize_t n) except -1
    cdef bytes _frame(self, Py_ssize_t header)
