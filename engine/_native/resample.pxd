from libc.stdint cimport int64_t


cdef extern from "resample_kernel.h":
    void rs_run(const float *table, long up, long down, long centre, long taps,
                int64_t j0, long n_out, const float *x, long length, int64_t start,
                float *z, unsigned char *dst) noexcept nogil


cdef class Resampler:
    cdef readonly int in_rate
    cdef readonly int out_rate
    cdef object _plan
    cdef const float[:, ::1] _table
    cdef long _up, _down, _centre, _taps
    cdef bint _passthrough, _finished
    cdef int _odd
    cdef float *_buf
    cdef Py_ssize_t _cap, _hist
    cdef float *_z
    cdef Py_ssize_t _zcap
    cdef int64_t _start, _n, _j

    cdef int _reserve(self, Py_ssize_t need) except -1
    cdef bytes _process(self, const unsigned char *data, Py_ssize_t size, bint last)
    cdef bytes _pass(self, const unsigned char *data, Py_ssize_t size)
    cdef bytes _filter(self, const unsigned char *data, Py_ssize_t size, bint last)
