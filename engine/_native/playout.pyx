# cython: language_level=3
"""Per-call playout buffer (native). Twin and full description: ``engine._pure.playout``.

Samples live in a ring that grows on demand and shrinks back when drained; a pop copies one
frame out of the ring into the one bytes object it returns (AudioSocket header included for
``pop_message``). Item accounting is per segment, touched once per pop.
"""

from collections import OrderedDict

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from libc.stdint cimport int16_t
from libc.stdlib cimport free, malloc
from libc.string cimport memcpy, memset

from engine.errors import BadSampleData, ConfigError

__all__ = ["MAX_ITEMS", "PlayoutBuffer", "fade_gain"]



def fade_gain(int k, int n):
    """Q15 gain of sample k of an n-sample fade-out: 32767 at k=0, falling linearly to 0."""
    return 32767 * (n - k) // n


cdef class PlayoutBuffer:
    """One call's model audio, waiting to be paced out one frame at a time."""

    def __cinit__(self, *args, **kwargs):
        self._ring = NULL

    def __init__(self, int rate, *, int frame_ms=20, int start_frames=2, int capacity_ms=60000,
                 int fade_ms=5, kind=None):
        from engine._pure.playout import _check
        _check(rate, frame_ms, start_frames, capacity_ms, fade_ms, kind)
        self.rate = rate
        self.kind = kind
        self.frame_samples = rate * frame_ms // 1000
        self.capacity_samples = <Py_ssize_t>rate * capacity_ms // 1000
        self._start_samples = start_frames * self.frame_samples
        self._fade = rate * fade_ms // 1000
        self._initial = 4 * self.frame_samples
        self._silence = bytes(2 * self.frame_samples)
        self._silence_message = None
        if kind is not None:
            self._silence_message = bytes(
                (kind, (2 * self.frame_samples) >> 8, (2 * self.frame_samples) & 0xFF)
            ) + self._silence
        self.underruns = 0
        self.dropped_samples = 0
        self._items = OrderedDict()
        self.reset()

    def __dealloc__(self):
        free(self._ring)

    def reset(self):
        """Drops all audio; back to idle with the initial small storage (counters kept)."""
        self._count = 0
        self._head = 0
        self._resize(self._initial)
        self._segments = []
        self._state = STATE_IDLE
        self.complete = False
        self.current_item = None

    @property
    def buffered_samples(self):
        return self._count

    @property
    def buffered_ms(self):
        return self._count * 1000 // self.rate

    @property
    def playing(self):
        return self._state == STATE_PLAYING

    def played_ms(self, item_id):
        """Milliseconds of ``item_id`` popped so far (0 for an unknown item)."""
        record = self._items.get(item_id)
        return record[1] * 1000 // self.rate if record else 0

    def push(self, pcm, item_id=None):
        """Appends int16 LE audio of ``item_id``; returns the samples kept (the rest is dropped).

        Raises:
            BadSampleData: an odd number of bytes.
        """
        if isinstance(pcm, memoryview) and pcm.format != "B":
            pcm = pcm.cast("B")
        cdef const unsigned char[::1] view = pcm
        cdef Py_ssize_t size = view.shape[0]
        if size & 1:
            raise BadSampleData(size)
        cdef Py_ssize_t n = size >> 1
        cdef Py_ssize_t kept = min(n, self.capacity_samples - self._count)
        cdef Py_ssize_t grown, tail, first
        self.dropped_samples += n - kept
        self.complete = False
        record = self._items.get(item_id)
        if record is None:
            record = self._items[item_id] = [0, 0]
            while len(self._items) > MAX_ITEMS:
                self._items.popitem(last=False)
        if not kept:
            return 0
        if self._count + kept > self.allocated_samples:
            grown = self.allocated_samples
            while grown < self._count + kept:
                grown = min(2 * grown, self.capacity_samples)
            self._resize(grown)
        tail = (self._head + self._count) % self.allocated_samples
        first = min(kept, self.allocated_samples - tail)
        memcpy(self._ring + tail, &view[0], 2 * first)
        if kept > first:
            memcpy(self._ring, &view[2 * first], 2 * (kept - first))
        self._count += kept
        record[0] += kept
        last = self._segments[len(self._segments) - 1] if self._segments else None
        if last is not None and last[0] == item_id:
            last[1] += kept
        else:
            self._segments.append([item_id, kept])
        return kept

    def mark_complete(self):
        """No more audio is coming for now: the tail plays out, and running dry is no underrun."""
        self.complete = True

    def pop_frame(self):
        """Exactly one frame of int16 LE samples: audio, or silence."""
        return self._frame(0)

    def pop_message(self):
        """The next frame as a complete AudioSocket audio message for ``kind``."""
        if self._silence_message is None:
            raise ConfigError("pop_message needs the AudioSocket kind given at construction")
        return self._frame(3)

    def clear(self):
        """Barge-in: drops the buffered audio but a short faded tail of what is playing.

        Returns (item_id, audio_end_ms) of the item that was playing or about to, where
        audio_end_ms counts what the caller will have heard, the fade included; None if no
        item audio was buffered.
        """
        if not self._segments:
            self._state = STATE_IDLE
            return None
        item_id, left = self._segments[0]
        cdef Py_ssize_t keep = min(self._fade, left) if self._state == STATE_PLAYING else 0
        cdef int16_t tail[2000]
        cdef Py_ssize_t k
        self._read(tail, keep)
        for k in range(keep):
            tail[k] = <int16_t>((<int>tail[k] * (32767 * (keep - k) // keep)) >> 15)
        self._head = 0
        self._count = 0
        self._resize(self._initial)
        memcpy(self._ring, tail, 2 * keep)
        self._count = keep
        self._segments = [[item_id, keep]] if keep else []
        self._state = STATE_PLAYING if keep else STATE_IDLE
        self.complete = True
        record = self._items.get(item_id)
        popped = record[1] if record else 0
        return item_id, (popped + keep) * 1000 // self.rate

    cdef int _resize(self, Py_ssize_t size) except -1:
        cdef int16_t *ring = <int16_t *>malloc(2 * size)
        if ring == NULL:
            raise MemoryError()
        self._read(ring, self._count)
        free(self._ring)
        self._ring = ring
        self._head = 0
        self.allocated_samples = size
        return 0

    cdef void _read(self, int16_t *dst, Py_ssize_t n) noexcept nogil:
        """Copies the oldest n samples to dst without consuming them."""
        cdef Py_ssize_t first
        if n <= 0:
            return
        first = min(n, self.allocated_samples - self._head)
        memcpy(dst, self._ring + self._head, 2 * first)
        if n > first:
            memcpy(dst + first, self._ring, 2 * (n - first))

    cdef int _credit(self, Py_ssize_t n) except -1:
        cdef Py_ssize_t step
        while n:
            segment = self._segments[0]
            step = min(n, <Py_ssize_t>segment[1])
            segment[1] -= step
            record = self._items.get(segment[0])
            if record is not None:
                record[1] += step
            self.current_item = segment[0]
            n -= step
            if not segment[1]:
                del self._segments[0]
        return 0

    cdef bytes _frame(self, Py_ssize_t header):
        cdef Py_ssize_t n = self.frame_samples, take
        if self._state != STATE_PLAYING:
            if self._count >= self._start_samples or (self.complete and self._count):
                self._state = STATE_PLAYING
            else:
                return self._silence_message if header else self._silence
        if self._count >= n:
            take = n
        elif self.complete:
            take = self._count
        else:
            self.underruns += 1
            self._state = STATE_BUFFERING
            return self._silence_message if header else self._silence
        cdef bytes out = PyBytes_FromStringAndSize(NULL, header + 2 * n)
        cdef unsigned char *dst = <unsigned char *>PyBytes_AS_STRING(out)
        if header:
            memcpy(dst, PyBytes_AS_STRING(self._silence_message), header)
        self._read(<int16_t *>(dst + header), take)
        if take < n:
            memset(dst + header + 2 * take, 0, 2 * (n - take))
        self._head = (self._head + take) % self.allocated_samples
        self._count -= take
        self._credit(take)
        if self._count == 0:
            if self.allocated_samples != self._initial:
                self._resize(self._initial)
            if self.complete:
                self._state = STATE_IDLE
        return out
