# cython: language_level=3
"""Which 10 ms windows of 16-bit audio are loud: the simulator's VAD, per append, in one pass.

The bench's simulator hears every caller's audio (25 appends a second per call); numpy's
per-call overhead made a 40 ms append's four windows cost about 12 µs. Sums of squares are
exact in 64-bit integers (a window of 2**16 samples of full scale still fits), so the twin's
float sums agree with these bit for bit.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from libc.stdint cimport int16_t, int64_t, uint8_t
from libc.string cimport memcpy

__all__ = ["voiced_windows"]


def voiced_windows(data, Py_ssize_t window, double threshold):
    """One byte per whole ``window`` of int16 little-endian samples in ``data``: 1 where the
    window's sum of squares reaches ``threshold``, else 0. A partial window at the end is
    left out.

    Raises:
        ValueError: ``window`` is not positive.
    """
    if window <= 0:
        raise ValueError(f"window must be positive, not {window}")
    cdef const uint8_t[::1] view = data
    cdef Py_ssize_t windows = view.shape[0] // 2 // window  # 2 * window may not fit
    out = PyBytes_FromStringAndSize(NULL, windows)
    cdef uint8_t *flags = <uint8_t*>PyBytes_AS_STRING(out)
    cdef Py_ssize_t w, i
    cdef int64_t total
    cdef int16_t sample
    cdef const uint8_t *p
    for w in range(windows):
        p = &view[2 * window * w]
        total = 0
        for i in range(window):
            memcpy(&sample, p + 2 * i, 2)
            total += <int64_t>sample * sample
        flags[w] = 1 if <double>total >= threshold else 0
    return out
