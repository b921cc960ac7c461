from libc.stdint cimport int64_t


cdef extern from "resample_kernel.h":
    enum:
        RS_SLACK
    void rs_widen(const unsigned char *src, long n, float *dst) noexcept nogil
    size_t rs_scratch_size(long up, long down, long taps, long length, long n_out) noexcept nogil
    void rs_run(const float *table, long up, long down, long centre, long taps, int64_t j0,
                long n_out, const float *x, long length, int64_t start, unsigned char *scratch,
                unsigned char *dst) noexcept nogil


cdef class Resampler:
    cdef readonly int in_rate
    cdef readonly int out_rate
    cdef object _design
    cdef const float[:, ::1] _table
    cdef long _up, _down, _centre, _taps
    cdef bint _passthrough, _finished
    cdef int _odd                      # the dangling byte of an odd-length input, or -1
    cdef float *_x                     # float32 history from input index _start on
    cdef Py_ssize_t _xcap, _hist
    cdef unsigned char *_scratch
    cdef size_t _scratch_cap
    cdef int64_t _start, _n, _j        # _n samples received, _j the next output index

    cdef int _reserve(self, Py_ssize_t floats) except -1
    cdef int _reserve_scratch(self, size_t size) except -1
    cdef object _process(self, object data, const unsigned char *src, Py_ssize_t size,
                         bint last)
    cdef object _pass(self, object data, const unsigned char *src, Py_ssize_t size)
    cdef bytes _filter(self, const unsigned char *src, Py_ssize_t size, bint last)
