# cython: language_level=3
"""Caller audio on its way upstream, in one native pass per read: converted, batched, framed.

The AudioSocket parser hands every audio message of the call's kind to :class:`Uplink` as a C
call. The uplink resamples the payload (and μ-law encodes it for a pcmu session), adds it to
the pending append, and once ``append_bytes`` are pending and the upstream is open writes the
finished client frame: an ``input_audio_buffer.append`` event with the base64 written straight
into its preformatted text, masked in the same buffer. Only that frame reaches Python, in
``out``; while the upstream is not open, at most ``prebuffer_bytes`` (the newest) are kept.
"""

from cpython.bytearray cimport PyByteArray_AS_STRING, PyByteArray_GET_SIZE, PyByteArray_Resize
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from libc.stdint cimport uint8_t
from libc.stdlib cimport free, realloc
from libc.string cimport memcpy, memmove

from engine._native.audiosocket cimport AudioSink
from engine._native.g711 cimport ulaw_encode_into
from engine._native.resample cimport Resampler
from engine._native.wsframe cimport FrameBuilder, header_size, mask_in_place, write_header

from engine.errors import ConfigError

__all__ = ["APPEND_ID_PREFIX", "Uplink", "b64encode"]

APPEND_ID_PREFIX = "au"

cdef bytes _HEAD = b'{"type":"input_audio_buffer.append","event_id":"au_'
cdef bytes _MID = b'","audio":"'
cdef bytes _TAIL = b'"}'
cdef const char *_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
# Two base64 characters for every 12-bit value: one lookup per 12 input bits.
cdef uint8_t _PAIRS[4096 * 2]


cdef void _build_pairs() noexcept:
    cdef int v
    for v in range(4096):
        _PAIRS[2 * v] = _ALPHABET[v >> 6]
        _PAIRS[2 * v + 1] = _ALPHABET[v & 63]


_build_pairs()


cdef inline Py_ssize_t _b64_size(Py_ssize_t n) noexcept nogil:
    return (n + 2) // 3 * 4


cdef void _b64_encode(const uint8_t *src, Py_ssize_t n, uint8_t *dst) noexcept nogil:
    """Standard base64 with padding, as ``binascii.b2a_base64(newline=False)`` writes it."""
    cdef Py_ssize_t i = 0
    cdef unsigned int v
    while i + 3 <= n:
        v = (<unsigned int>src[i] << 16) | (<unsigned int>src[i + 1] << 8) | src[i + 2]
        memcpy(dst, &_PAIRS[2 * (v >> 12)], 2)
        memcpy(dst + 2, &_PAIRS[2 * (v & 0xFFF)], 2)
        dst += 4
        i += 3
    if n - i == 1:
        v = <unsigned int>src[i] << 16
        dst[0] = _ALPHABET[v >> 18]
        dst[1] = _ALPHABET[(v >> 12) & 63]
        dst[2] = b"="
        dst[3] = b"="
    elif n - i == 2:
        v = (<unsigned int>src[i] << 16) | (<unsigned int>src[i + 1] << 8)
        dst[0] = _ALPHABET[v >> 18]
        dst[1] = _ALPHABET[(v >> 12) & 63]
        dst[2] = _ALPHABET[(v >> 6) & 63]
        dst[3] = b"="


def b64encode(data):
    """``data`` in base64 (the uplink's encoder, for tests against ``binascii``)."""
    cdef const uint8_t[::1] view = data
    cdef Py_ssize_t n = view.shape[0]
    out = PyBytes_FromStringAndSize(NULL, _b64_size(n))
    if n:
        _b64_encode(&view[0], n, <uint8_t *>PyBytes_AS_STRING(out))
    return out


cdef Py_ssize_t _decimal(long long value, uint8_t *dst) noexcept nogil:
    """Writes ``value`` (not negative) in decimal at ``dst``; returns the digits written."""
    cdef uint8_t digits[24]
    cdef Py_ssize_t k = 0, i
    while True:
        digits[k] = <uint8_t>(48 + value % 10)
        k += 1
        value //= 10
        if value == 0:
            break
    for i in range(k):
        dst[i] = digits[k - 1 - i]
    return k


cdef class Uplink(AudioSink):
    """One call's caller audio, from AudioSocket payloads to finished upstream frames.

    Args:
        kind: the call's AudioSocket audio kind (the parser hands over only this kind).
        stages: at most two resamplers run in turn (none when the rates are equal).
        ulaw: μ-law encode after resampling (a pcmu session).
        append_bytes: the pending size, in upstream bytes, that makes one append.
        prebuffer_bytes: the most kept while the upstream is not open (the newest).
        framer: masks the frames (the process's pool of random bytes).
        out: the list the finished frames are appended to, for the adapter to write.

    ``tap``, when set to a bytearray, gets every caller payload as it arrived (the call's
    recording); the adapter swaps in a fresh one when it takes what it holds.
    """

    cdef readonly Py_ssize_t frames, appends, append_bytes, prebuffer_bytes, dropped_bytes
    cdef public bint sending
    cdef public bytearray tap
    cdef readonly list out
    cdef Resampler _first, _second
    cdef bint _ulaw
    cdef FrameBuilder _framer
    cdef uint8_t *_pending
    cdef Py_ssize_t _have, _cap
    cdef long long _n

    def __cinit__(self, *args, **kwargs):
        self._pending = NULL
        self._have = 0
        self._cap = 0

    def __dealloc__(self):
        free(self._pending)

    def __init__(self, int kind, stages, bint ulaw, Py_ssize_t append_bytes,
                 Py_ssize_t prebuffer_bytes, FrameBuilder framer not None, list out not None):
        stages = tuple(stages)
        if len(stages) > 2 or any(type(s) is not Resampler for s in stages):
            raise ConfigError("an uplink takes at most two resamplers")
        if append_bytes <= 0 or prebuffer_bytes < 0:
            raise ConfigError(
                f"append_bytes must be positive and prebuffer_bytes not negative, not "
                f"{append_bytes} and {prebuffer_bytes}"
            )
        self.kind = kind
        self._first = stages[0] if len(stages) > 0 else None
        self._second = stages[1] if len(stages) > 1 else None
        self._ulaw = ulaw
        self.append_bytes = append_bytes
        self.prebuffer_bytes = prebuffer_bytes
        self._framer = framer
        self.out = out
        self.sending = False
        self.tap = None
        self.frames = self.appends = self.dropped_bytes = 0
        self._n = 0

    @property
    def pending_bytes(self):
        """Upstream bytes waiting for the next append."""
        return self._have

    def flush(self):
        """Sends what is pending if it makes an append (the upstream just opened)."""
        if self.sending and self._have >= self.append_bytes:
            self._emit()
            return True
        return False

    def clear(self):
        """Drops the pending audio and the frames not yet taken (the call is over)."""
        self._have = 0
        del self.out[:]

    cdef bint audio(self, const unsigned char *data, Py_ssize_t length) except -1:
        cdef bytes pcm
        cdef const uint8_t *src = data
        cdef Py_ssize_t n = length
        cdef Py_ssize_t old
        self.frames += 1
        # An empty payload (push(b"")) comes as NULL: memcpy must not see it, nor a NULL
        # _pending before the first reserve, even for zero bytes.
        if self.tap is not None and length:
            old = PyByteArray_GET_SIZE(self.tap)
            PyByteArray_Resize(self.tap, old + length)
            memcpy(PyByteArray_AS_STRING(self.tap) + old, data, length)
        if self._first is not None:
            pcm = self._first._process(None, src, n, False)
            if self._second is not None:
                pcm = self._second._process(
                    None, <const uint8_t *>PyBytes_AS_STRING(pcm), PyBytes_GET_SIZE(pcm), False)
            src = <const uint8_t *>PyBytes_AS_STRING(pcm)
            n = PyBytes_GET_SIZE(pcm)
        if n and self._ulaw:
            self._reserve(self._have + n // 2)
            ulaw_encode_into(src, self._pending + self._have, n // 2)
            self._have += n // 2
        elif n:
            self._reserve(self._have + n)
            memcpy(self._pending + self._have, src, n)
            self._have += n
        if self._have < self.append_bytes:
            return False
        if self.sending:
            self._emit()
            return True
        if self._have > self.prebuffer_bytes:
            n = self._have - self.prebuffer_bytes
            memmove(self._pending, self._pending + n, self.prebuffer_bytes)
            self._have = self.prebuffer_bytes
            self.dropped_bytes += n
        return False

    cdef int _reserve(self, Py_ssize_t size) except -1:
        cdef uint8_t *grown
        if size > self._cap:
            size = max(size, 2 * self._cap, 4096)
            grown = <uint8_t *>realloc(self._pending, size)
            if grown == NULL:
                raise MemoryError()
            self._pending = grown
            self._cap = size
        return 0

    cdef int _emit(self) except -1:
        cdef uint8_t digits[24]
        cdef Py_ssize_t ndigits, size, head, b64
        cdef const uint8_t *mask
        cdef uint8_t *p
        self._n += 1
        ndigits = _decimal(self._n, digits)
        b64 = _b64_size(self._have)
        size = len(_HEAD) + ndigits + len(_MID) + b64 + len(_TAIL)
        head = header_size(size)
        frame = PyBytes_FromStringAndSize(NULL, head + size)
        p = <uint8_t *>PyBytes_AS_STRING(frame)
        mask = self._framer.mask()
        write_header(p, 1, size, mask)
        p += head
        memcpy(p, PyBytes_AS_STRING(_HEAD), len(_HEAD))
        p += len(_HEAD)
        memcpy(p, digits, ndigits)
        p += ndigits
        memcpy(p, PyBytes_AS_STRING(_MID), len(_MID))
        p += len(_MID)
        _b64_encode(self._pending, self._have, p)
        p += b64
        memcpy(p, PyBytes_AS_STRING(_TAIL), len(_TAIL))
        mask_in_place(<uint8_t *>PyBytes_AS_STRING(frame) + head, size, mask)
        self.out.append(frame)
        self.appends += 1
        self._have = 0
        return 0
