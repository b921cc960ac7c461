# cython: language_level=3
"""Streaming polyphase resampler (native). Twin: ``engine._pure.resample``.

The coefficients come from :func:`engine.resample_filters.plan`, shared read-only by every
stream of a rate pair; a stream owns only its float32 history. The FIR loops are in
``resample_kernel.h``.
"""

from cpython.buffer cimport PyBUF_C_CONTIGUOUS, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from libc.stdint cimport int64_t
from libc.stdlib cimport free, realloc
from libc.string cimport memcpy, memmove

from engine.errors import BadSampleData, StreamFinished, UnsupportedRate
from engine.resample_filters import RATES, plan

__all__ = ["Resampler", "supported_rates"]


def supported_rates():
    """Every rate a stream can convert to and from 24000 Hz."""
    return RATES


cdef inline int64_t _floordiv(int64_t a, int64_t b) noexcept nogil:
    cdef int64_t q = a // b
    if (a % b != 0) and ((a < 0) != (b < 0)):
        q -= 1
    return q


cdef class Resampler:
    """One direction of one call's audio: int16 LE in at ``in_rate``, out at ``out_rate``.

    Output is time-aligned with input (the filter's delay is compensated, not added), any
    chunking gives the same bytes as one call, and ``last=True`` flushes the tail so that n
    input samples give ceil(n * out_rate / in_rate) output samples.
    """

    def __cinit__(self, int in_rate, int out_rate):
        self._buf = NULL
        self._z = NULL

    def __init__(self, int in_rate, int out_rate):
        for rate in (in_rate, out_rate):
            if rate not in RATES:
                raise UnsupportedRate(rate, f"AudioSocket rates are {', '.join(map(str, RATES))}")
        self.in_rate = in_rate
        self.out_rate = out_rate
        self._passthrough = in_rate == out_rate
        if self._passthrough:
            self._up = self._down = self._taps = 1
            self._centre = 0
        else:
            self._plan = plan(in_rate, out_rate)
            self._table = self._plan.table
            self._up = self._plan.up
            self._down = self._plan.down
            self._centre = self._plan.centre
            self._taps = self._plan.taps
        self.reset()

    def __dealloc__(self):
        free(self._buf)
        free(self._z)

    def reset(self):
        """Forgets all history: the next sample starts a new stream."""
        cdef Py_ssize_t i
        self._reserve(self._taps - 1)
        for i in range(self._taps - 1):
            self._buf[i] = 0.0
        self._hist = self._taps - 1
        self._start = -(self._taps - 1)
        self._n = 0
        self._j = 0
        self._odd = -1
        self._finished = False

    def delay(self):
        """Latency in output samples (the filter's group delay; nothing else is buffered)."""
        return 0.0 if self._passthrough else <double>self._centre / self._down

    def process(self, data, bint last=False):
        """Resamples the next chunk; ``last=True`` ends the stream and flushes its tail.

        Raises:
            StreamFinished: the stream already ended; call reset().
            BadSampleData: ``last`` with half a sample left over.
        """
        cdef Py_buffer view
        cdef bytes out
        if self._finished:
            raise StreamFinished()
        if type(data) is bytes:
            return self._process(<const unsigned char *>PyBytes_AS_STRING(data),
                                 PyBytes_GET_SIZE(data), last)
        PyObject_GetBuffer(data, &view, PyBUF_C_CONTIGUOUS)
        try:
            out = self._process(<const unsigned char *>view.buf, view.len, last)
        finally:
            PyBuffer_Release(&view)
        return out

    cdef bytes _process(self, const unsigned char *data, Py_ssize_t size, bint last):
        cdef Py_ssize_t total = size + (self._odd >= 0)
        if total & 1 and last:
            raise BadSampleData(total)
        self._finished = last
        if self._passthrough:
            return self._pass(data, size)
        return self._filter(data, size, last)

    cdef int _reserve(self, Py_ssize_t need) except -1:
        cdef float *grown
        if need > self._cap:
            grown = <float *>realloc(self._buf, max(need, 2 * self._cap) * sizeof(float))
            if grown == NULL:
                raise MemoryError()
            self._buf = grown
            self._cap = max(need, 2 * self._cap)
        return 0

    cdef bytes _pass(self, const unsigned char *data, Py_ssize_t size):
        cdef Py_ssize_t total = size + (self._odd >= 0)
        cdef bytes out = PyBytes_FromStringAndSize(NULL, total & ~1)
        cdef unsigned char *dst = <unsigned char *>PyBytes_AS_STRING(out)
        cdef Py_ssize_t lead = 0
        if total & ~1:
            if self._odd >= 0:
                dst[0] = <unsigned char>self._odd
                lead = 1
            memcpy(dst + lead, data, (total & ~1) - lead)
        if not total & 1:
            self._odd = -1
        elif size:
            self._odd = data[size - 1]
        return out

    cdef bytes _filter(self, const unsigned char *data, Py_ssize_t size, bint last):
        cdef Py_ssize_t total = size + (self._odd >= 0)
        cdef Py_ssize_t samples = total >> 1
        cdef Py_ssize_t pad = self._centre // self._up + 2 if last else 0
        cdef Py_ssize_t i, at = 0, length
        self._reserve(self._hist + samples + pad)
        cdef float *x = self._buf + self._hist
        cdef float *fill = x
        cdef Py_ssize_t whole = samples
        if samples and self._odd >= 0:
            x[0] = <short>(self._odd | (data[0] << 8))
            at = 1
            fill += 1
            whole -= 1
        with nogil:
            for i in range(whole):
                fill[i] = <short>(data[at + 2 * i] | (data[at + 2 * i + 1] << 8))
        if total & 1:
            self._odd = data[size - 1] if size else self._odd
        else:
            self._odd = -1
        for i in range(pad):
            x[samples + i] = 0.0
        cdef int64_t n = self._n + samples
        cdef int64_t j_end
        if last:
            j_end = -_floordiv(-n * self._up, self._down)
        else:
            j_end = max(self._j, _floordiv(n * self._up - 1 - self._centre, self._down) + 1)
        length = self._hist + samples + pad
        cdef Py_ssize_t n_out = <Py_ssize_t>(j_end - self._j)
        cdef bytes out = PyBytes_FromStringAndSize(NULL, 2 * n_out)
        if self._down > 1 and self._zcap < length + self._down:
            free(self._z)
            self._z = <float *>realloc(NULL, (length + self._down) * sizeof(float))
            if self._z == NULL:
                self._zcap = 0
                raise MemoryError()
            self._zcap = length + self._down
        cdef unsigned char *dst = <unsigned char *>PyBytes_AS_STRING(out)
        if n_out:
            with nogil:
                rs_run(&self._table[0, 0], self._up, self._down, self._centre, self._taps,
                       self._j, n_out, self._buf, length, self._start, self._z, dst)
        cdef int64_t keep = _floordiv(j_end * self._down + self._centre, self._up) - (self._taps - 1)
        keep = max(self._start, min(n, keep))
        self._hist = <Py_ssize_t>(n - keep)
        memmove(self._buf, self._buf + (keep - self._start), self._hist * sizeof(float))
        self._start = keep
        self._n = n
        self._j = j_end
        return out
