cimport cython

cpdef enum:
    MAX_ITEMS = 16              # items remembered for played_ms(), by last push

cdef enum:
    INITIAL_FRAMES = 4          # storage of an idle call, in frames
    MAX_RATE = 192000
    MAX_CAPACITY_MS = 600000
    HEADER_SIZE = 3             # AudioSocket: kind u8, length u16 big-endian
    Q15_HALF = 16384

cdef enum State:
    IDLE
    BUFFERING
    PLAYING


@cython.final
cdef class _Item:
    cdef readonly object id
    cdef Py_ssize_t pushed
    cdef Py_ssize_t popped


@cython.final
cdef class PlayoutBuffer:
    cdef readonly int rate
    cdef readonly object kind
    cdef readonly Py_ssize_t frame_samples
    cdef readonly Py_ssize_t capacity_samples
    cdef readonly Py_ssize_t allocated_samples
    cdef readonly Py_ssize_t underruns
    cdef readonly Py_ssize_t dropped_samples
    cdef readonly bint complete
    cdef Py_ssize_t _start_samples, _fade_samples, _initial_samples
    cdef State _state
    cdef unsigned char _header[HEADER_SIZE]
    cdef bint _has_kind
    # The ring: allocated_samples int16 LE samples, _count of them from _head on, wrapping.
    cdef unsigned char *_ring
    cdef Py_ssize_t _head, _count
    # The oldest buffered samples are _head_left samples of _head_item (None when empty);
    # _runs holds the [item, samples] runs after them, in order.
    cdef _Item _head_item
    cdef Py_ssize_t _head_left
    cdef object _runs
    cdef _Item _current, _last
    cdef object _items
    cdef bytes _silence, _silence_message

    cpdef bytes pop_frame(self)
    cpdef bytes pop_message(self)
    cdef bytes _pop(self, bint message)
    cdef int _credit(self, Py_ssize_t n) except -1
    cdef int _next_run(self) except -1
    cdef Py_ssize_t _push(self, const unsigned char *data, Py_ssize_t size, object item_id) except -1
    cdef _Item _item(self, object item_id)
    cdef int _resize(self, Py_ssize_t samples) except -1
    cdef void _write(self, const unsigned char *data, Py_ssize_t n) noexcept nogil
    cdef void _read(self, unsigned char *dst, Py_ssize_t n) noexcept nogil
    cdef void _fade_out(self, Py_ssize_t n) noexcept nogil
