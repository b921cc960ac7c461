# cython: language_level=3
"""Streaming polyphase resampler (native). The twin ``engine._pure.resample`` states the
behaviour (filters, timing, arithmetic); this module computes the same bytes.

The filter tables come from :func:`engine._pure.resample.design_for`, prepared once per ratio
and shared read-only by every stream of both implementations; a stream owns its float32
history and a scratch area, both grown on demand and reused, so a call allocates only the
bytes it returns. The FIR loops are C, in ``resample_kernel.h``.
"""

from cpython.buffer cimport (
    PyBUF_FULL_RO,
    PyBuffer_IsContiguous,
    PyBuffer_Release,
    PyObject_GetBuffer,
)
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from libc.stdint cimport int64_t
from libc.stdlib cimport free, malloc, realloc
from libc.string cimport memcpy, memmove, memset

from engine._pure.resample import FilterDesign, design_for, supported_rates
from engine.errors import BadSampleData, StreamFinished

__all__ = ["FilterDesign", "Resampler", "design_for", "supported_rates"]


cdef inline int64_t _floordiv(int64_t a, int64_t b) noexcept nogil:
    cdef int64_t q = a // b
    if (a % b != 0) and ((a < 0) != (b < 0)):
        q -= 1
    return q


cdef int _acquire(object obj, Py_buffer *view) except -1:
    """Gets ``obj``'s bytes, whatever its item format; refuses a non-contiguous layout."""
    PyObject_GetBuffer(obj, view, PyBUF_FULL_RO)
    if not PyBuffer_IsContiguous(view, b"C"):
        PyBuffer_Release(view)
        raise BufferError("the resampler needs a C-contiguous buffer")
    return 0


cdef class Resampler:
    """One direction of one call's audio: int16 LE mono in at ``in_rate``, out at ``out_rate``.

    Feed chunks of any size (odd byte counts included: the dangling byte waits for the next
    call) to :meth:`process`; any chunking gives the same bytes as one call. End the stream
    with ``last=True`` to flush its tail, then :meth:`reset` to start another.

    Raises:
        UnsupportedRate, TypeError: see :func:`design_for`.
    """

    def __init__(self, in_rate, out_rate):
        self._design = design_for(in_rate, out_rate)
        self.in_rate = in_rate
        self.out_rate = out_rate
        self._passthrough = self._design is None
        if self._passthrough:
            self._up = self._down = self._taps = 1
            self._centre = 0
        else:
            self._table = self._design.table
            self._up = self._design.up
            self._down = self._design.down
            self._centre = self._design.centre
            self._taps = self._design.taps
        self.reset()

    def __dealloc__(self):
        free(self._x)
        free(self._scratch)

    def reset(self):
        """Forgets all input: the next sample starts a new stream at time 0."""
        self._reserve(self._taps - 1)
        memset(self._x, 0, (self._taps - 1) * sizeof(float))
        self._hist = self._taps - 1
        self._start = -(self._taps - 1)
        self._n = 0
        self._j = 0
        self._odd = -1
        self._finished = False

    def delay(self):
        """Latency in output samples: the filter's centre, G / down (0 when passing through)."""
        return <double>self._centre / self._down

    def process(self, data, bint last=False):
        """Resamples the next chunk; every output whose input has arrived comes out now.

        Args:
            data: int16 little-endian samples, any number of bytes.
            last: the stream ends here: pad it with silence and flush everything.

        Raises:
            StreamFinished: the stream already ended; call reset().
            BadSampleData: ``last`` with half a sample left over (nothing is consumed).
            BufferError: ``data`` is not C-contiguous.
        """
        cdef Py_buffer view
        if self._finished:
            raise StreamFinished()
        if self._x == NULL:  # made by __new__ alone: there is no filter to run
            raise TypeError("Resampler.__init__ was never called")
        if type(data) is bytes:
            return self._process(data, <const unsigned char *>PyBytes_AS_STRING(data),
                                 PyBytes_GET_SIZE(data), last)
        _acquire(data, &view)
        try:
            return self._process(data, <const unsigned char *>view.buf, view.len, last)
        finally:
            PyBuffer_Release(&view)

    cdef object _process(self, object data, const unsigned char *src, Py_ssize_t size,
                         bint last):
        cdef Py_ssize_t total = size + (self._odd >= 0)
        if last and total & 1:
            raise BadSampleData(total)
        self._finished = last
        if self._passthrough:
            return self._pass(data, src, size)
        return self._filter(src, size, last)

    cdef int _reserve(self, Py_ssize_t floats) except -1:
        """Room for ``floats`` of history and the kernel's zero slack after them."""
        cdef Py_ssize_t need = floats + RS_SLACK
        cdef float *grown
        if need > self._xcap:
            need = max(need, 2 * self._xcap)
            grown = <float *>realloc(self._x, need * sizeof(float))
            if grown == NULL:
                raise MemoryError()
            self._x = grown
            self._xcap = need
        return 0

    cdef int _reserve_scratch(self, size_t size) except -1:
        if size > self._scratch_cap:
            size = max(size, 2 * self._scratch_cap)
            free(self._scratch)
            self._scratch = <unsigned char *>malloc(size)
            self._scratch_cap = 0 if self._scratch == NULL else size
            if self._scratch == NULL:
                raise MemoryError()
        return 0

    cdef object _pass(self, object data, const unsigned char *src, Py_ssize_t size):
        cdef Py_ssize_t total = size + (self._odd >= 0)
        cdef Py_ssize_t whole = total & ~1
        if self._odd < 0 and whole == size and type(data) is bytes:
            return data
        cdef bytes out = PyBytes_FromStringAndSize(NULL, whole)
        cdef unsigned char *dst = <unsigned char *>PyBytes_AS_STRING(out)
        if whole:
            if self._odd >= 0:
                dst[0] = <unsigned char>self._odd
                memcpy(dst + 1, src, whole - 1)
            else:
                memcpy(dst, src, whole)
        if total & 1:
            if size:
                self._odd = src[size - 1]
        else:
            self._odd = -1
        return out

    cdef bytes _filter(self, const unsigned char *src, Py_ssize_t size, bint last):
        cdef Py_ssize_t total = size + (self._odd >= 0)
        cdef Py_ssize_t samples = total >> 1
        cdef Py_ssize_t pad = self._centre // self._up + 1 if last else 0
        cdef Py_ssize_t length = self._hist + samples + pad
        self._reserve(length)
        cdef float *x = self._x + self._hist
        if samples and self._odd >= 0:
            x[0] = <short>(self._odd | (src[0] << 8))
            rs_widen(src + 1, samples - 1, x + 1)
        else:
            rs_widen(src, samples, x)
        if total & 1:
            if size:
                self._odd = src[size - 1]
        else:
            self._odd = -1
        memset(x + samples, 0, (pad + RS_SLACK) * sizeof(float))

        cdef int64_t n = self._n + samples
        cdef int64_t j_end
        if last:
            j_end = -_floordiv(-n * self._up, self._down)
        else:
            j_end = max(self._j, _floordiv(n * self._up - 1 - self._centre, self._down) + 1)
        cdef Py_ssize_t n_out = <Py_ssize_t>(j_end - self._j)
        cdef bytes out = PyBytes_FromStringAndSize(NULL, 2 * n_out)
        if n_out:
            self._reserve_scratch(rs_scratch_size(self._up, self._down, self._taps, length, n_out))
            rs_run(&self._table[0, 0], self._up, self._down, self._centre, self._taps, self._j,
                   n_out, self._x, length, self._start, self._scratch,
                   <unsigned char *>PyBytes_AS_STRING(out))

        # Keep what output j_end will need: taps - 1 samples before its newest one.
        cdef int64_t keep = _floordiv(j_end * self._down + self._centre, self._up) - (self._taps - 1)
        keep = max(self._start, min(n, keep))
        self._hist = <Py_ssize_t>(n - keep)
        memmove(self._x, self._x + (keep - self._start), self._hist * sizeof(float))
        self._start = keep
        self._n = n
        self._j = j_end
        return out
