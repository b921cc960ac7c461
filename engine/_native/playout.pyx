# cython: language_level=3
"""Per-call playout buffer, native. The twin ``engine._pure.playout`` states the behaviour:
its states, the storage policy, the item accounting and the exact fade arithmetic.

Samples live in a ring of int16 LE bytes that doubles on demand up to the capacity and
shrinks back whenever it drains, is cleared or reset. A pop copies one frame out of the ring
with at most two memcpy calls into the bytes object it returns, the AudioSocket header
included for ``pop_message``: one allocation and no other Python object. Item accounting on
that path is two integer updates; Python objects are touched only where one item's run of
samples ends.
"""

from collections import OrderedDict, deque
from operator import index

from cpython.buffer cimport (
    PyBUF_FULL_RO,
    PyBuffer_IsContiguous,
    PyBuffer_Release,
    PyObject_GetBuffer,
)
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from libc.stdlib cimport free, malloc, realloc
from libc.string cimport memcpy, memset

from engine.errors import BadSampleData, ConfigError

__all__ = ["MAX_ITEMS", "PlayoutBuffer", "fade_gain"]

# AudioSocket audio kinds and the one rate each carries.
_KIND_RATES = {
    0x10: 8000, 0x11: 12000, 0x12: 16000, 0x13: 24000, 0x14: 32000,
    0x15: 44100, 0x16: 48000, 0x17: 96000, 0x18: 192000,
}


cdef inline int _gain(Py_ssize_t k, Py_ssize_t n) noexcept nogil:
    return <int>(((n - 1 - k) << 15) // n)


def fade_gain(k, n):
    """The Q15 gain of sample ``k`` of an ``n``-sample fade-out: ((n - 1 - k) << 15) // n.

    Raises:
        ValueError: not 0 <= k < n.
    """
    if not 0 <= k < n:
        raise ValueError(f"fade sample {k} is outside a fade of {n} samples")
    return ((n - 1 - k) << 15) // n


def _integer(name, value):
    try:
        return index(value)
    except TypeError:
        raise ConfigError(f"{name} must be an integer, not {value!r}") from None


def _validate(rate, frame_ms, start_frames, capacity_ms, fade_ms, kind):
    rate = _integer("rate", rate)
    frame_ms = _integer("frame_ms", frame_ms)
    start_frames = _integer("start_frames", start_frames)
    capacity_ms = _integer("capacity_ms", capacity_ms)
    fade_ms = _integer("fade_ms", fade_ms)
    kind = None if kind is None else _integer("kind", kind)
    if not 0 < rate <= MAX_RATE:
        raise ConfigError(f"rate must be 1..{MAX_RATE} Hz, not {rate}")
    if not 10 <= frame_ms <= 100:
        raise ConfigError(f"frame_ms must be 10..100, not {frame_ms}")
    if rate * frame_ms % 1000:
        raise ConfigError(f"a {frame_ms} ms frame at {rate} Hz is not a whole number of samples")
    if start_frames < 1:
        raise ConfigError(f"start_frames must be at least 1, not {start_frames}")
    least = max(INITIAL_FRAMES, start_frames) * frame_ms
    if not least <= capacity_ms <= MAX_CAPACITY_MS:
        raise ConfigError(
            f"capacity_ms must be {least}..{MAX_CAPACITY_MS} (at least {INITIAL_FRAMES} frames "
            f"and the start threshold), not {capacity_ms}"
        )
    if not 0 <= fade_ms <= 10:
        raise ConfigError(f"fade_ms must be 0..10, not {fade_ms}")
    if kind is not None and _KIND_RATES.get(kind) != rate:
        if kind not in _KIND_RATES:
            raise ConfigError(f"kind must be an AudioSocket audio kind 0x10..0x18, not {kind:#x}")
        raise ConfigError(f"kind {kind:#04x} carries {_KIND_RATES[kind]} Hz audio, not {rate} Hz")
    return rate, frame_ms, start_frames, capacity_ms, fade_ms, kind


cdef int _acquire(object obj, Py_buffer *view) except -1:
    """Gets ``obj``'s bytes, whatever its item format; refuses a non-contiguous layout.

    Asked for any layout (as ``memoryview()`` asks), every exporter answers and the layout is
    judged here, so a strided buffer is one BufferError, as in the twin.
    """
    PyObject_GetBuffer(obj, view, PyBUF_FULL_RO)
    if not PyBuffer_IsContiguous(view, b"C"):
        PyBuffer_Release(view)
        raise BufferError("the playout buffer needs a C-contiguous buffer")
    return 0


cdef class _Item:
    """One item's audio: samples pushed (kept) and popped so far."""

    def __cinit__(self, item_id):
        self.id = item_id


cdef class PlayoutBuffer:
    """One call's model audio, waiting to be paced out one frame at a time.

    Args:
        rate: sample rate in Hz, 1..192000; ``rate * frame_ms`` a multiple of 1000.
        frame_ms: frame length, 10..100 ms.
        start_frames: frames to buffer before a burst starts playing (jitter allowance).
        capacity_ms: hard limit of buffered audio, from 4 frames (and the start threshold)
            up to 10 minutes; storage grows to it only on demand.
        fade_ms: length of the barge-in fade-out, 0..10 ms.
        kind: the AudioSocket audio kind of ``rate`` (0x10..0x18), needed by
            ``pop_message``.

    Raises:
        ConfigError: any argument out of range, or a kind that does not carry ``rate``.
    """

    def __init__(self, rate, *, frame_ms=20, start_frames=2, capacity_ms=60000, fade_ms=5,
                 kind=None):
        rate, frame_ms, start_frames, capacity_ms, fade_ms, kind = _validate(
            rate, frame_ms, start_frames, capacity_ms, fade_ms, kind
        )
        self.rate = rate
        self.kind = kind
        self.frame_samples = rate * frame_ms // 1000
        self.capacity_samples = rate * capacity_ms // 1000
        self._start_samples = start_frames * self.frame_samples
        self._fade_samples = rate * fade_ms // 1000
        self._initial_samples = INITIAL_FRAMES * self.frame_samples
        self._silence = bytes(2 * self.frame_samples)
        self._has_kind = kind is not None
        self._silence_message = None
        if kind is not None:
            self._header[0] = <unsigned char>kind
            self._header[1] = <unsigned char>((2 * self.frame_samples) >> 8)
            self._header[2] = <unsigned char>((2 * self.frame_samples) & 0xFF)
            self._silence_message = bytes(self._header[:HEADER_SIZE]) + self._silence
        self.underruns = 0
        self.dropped_samples = 0
        self._items = OrderedDict()
        self._last = None
        self._runs = deque()
        self.reset()

    def __dealloc__(self):
        free(self._ring)

    @property
    def buffered_samples(self):
        """Samples waiting to be popped."""
        return self._count

    @property
    def buffered_ms(self):
        """Milliseconds waiting to be popped (floor)."""
        return self._count * 1000 // self.rate

    @property
    def playing(self):
        """Pops return audio."""
        return self._state == PLAYING

    @property
    def current_item(self):
        """The item of the audio popped last, or None."""
        return None if self._current is None else self._current.id

    def played_ms(self, item_id):
        """Milliseconds of ``item_id`` popped so far (floor); 0 for an unknown item."""
        item = self._items.get(item_id)
        return 0 if item is None else (<_Item>item).popped * 1000 // self.rate

    def push(self, pcm, item_id=None):
        """Appends int16 LE audio of ``item_id``; returns the samples kept.

        Beyond the capacity the newest samples are dropped and counted in ``dropped_samples``.
        Any push ends a completed burst's completeness: more audio is coming.

        Raises:
            BadSampleData: ``pcm`` has an odd number of bytes.
            BufferError: ``pcm`` is not C-contiguous.
        """
        cdef Py_buffer view
        _acquire(pcm, &view)
        try:
            return self._push(<const unsigned char *>view.buf, view.len, item_id)
        finally:
            PyBuffer_Release(&view)

    def mark_complete(self):
        """No more audio is coming for now: the tail plays out, and running dry is no underrun."""
        self.complete = True
        if self._count == 0:
            self._state = IDLE

    cpdef bytes pop_frame(self):
        """Exactly one frame of int16 LE samples: audio, or the cached silence frame."""
        return self._pop(False)

    cpdef bytes pop_message(self):
        """The next frame as one AudioSocket audio message of ``kind``: header and payload.

        Raises:
            ConfigError: the buffer was made without ``kind``.
        """
        if not self._has_kind:
            raise ConfigError("pop_message needs the AudioSocket kind given at construction")
        return self._pop(True)

    def clear(self):
        """Barge-in: drops the buffered audio but a faded tail of what is playing.

        When PLAYING, the next ``fade_ms`` of the playing item stay, faded out to zero, and
        play on the following pops; then silence. The burst is over: ``complete`` is set.

        Returns:
            ``(item_id, audio_end_ms)`` for the item playing or about to play: the
            milliseconds of it the caller will have heard, fade included (floor), never more
            than its audio. With nothing buffered, the item of a burst still in progress (it
            ran dry mid-response) with what was popped of it. None when no burst was going.
        """
        cdef Py_ssize_t keep = 0
        cdef _Item item
        result = None
        if self._count:
            item = self._head_item
            if self._state == PLAYING:
                keep = min(self._fade_samples, self._head_left)
            result = (item.id, (item.popped + keep) * 1000 // self.rate)
            self._fade_out(keep)
            self._count = keep
            self._head_left = keep
            self._runs.clear()
            if not keep:
                self._head_item = None
        elif self._state != IDLE and self._current is not None:
            result = (self._current.id, self._current.popped * 1000 // self.rate)
        if self.allocated_samples != self._initial_samples:
            self._resize(self._initial_samples)
        self._state = PLAYING if keep else IDLE
        self.complete = True
        return result

    def reset(self):
        """Drops all audio: IDLE, not complete, initial storage; counters and items are kept."""
        self._count = 0
        self._head = 0
        self._runs.clear()
        self._head_item = None
        self._head_left = 0
        if self.allocated_samples != self._initial_samples:
            self._resize(self._initial_samples)
        self._state = IDLE
        self.complete = False
        self._current = None

    cdef bytes _pop(self, bint message):
        cdef Py_ssize_t n = self.frame_samples
        cdef Py_ssize_t offset = HEADER_SIZE if message else 0
        cdef Py_ssize_t take
        cdef bytes out
        cdef unsigned char *dst
        if self._ring == NULL:  # made by __new__ alone: no ring to read (memcpy of NULL)
            raise TypeError("PlayoutBuffer.__init__ was never called")
        if self._state != PLAYING:
            if self._count >= self._start_samples or (self.complete and self._count):
                self._state = PLAYING
            else:
                return self._silence_message if message else self._silence
        if self._count < n and not self.complete:
            self.underruns += 1
            self._state = BUFFERING
            return self._silence_message if message else self._silence
        take = n if self._count >= n else self._count
        out = PyBytes_FromStringAndSize(NULL, offset + 2 * n)
        dst = <unsigned char *>PyBytes_AS_STRING(out)
        if message:
            memcpy(dst, self._header, HEADER_SIZE)
        self._read(dst + offset, take)
        if take < n:
            memset(dst + offset + 2 * take, 0, 2 * (n - take))
        self._head += take
        if self._head >= self.allocated_samples:
            self._head -= self.allocated_samples
        self._count -= take
        self._credit(take)
        if not self._count:
            if self.allocated_samples != self._initial_samples:
                self._resize(self._initial_samples)
            if self.complete:
                self._state = IDLE
        return out

    cdef int _credit(self, Py_ssize_t n) except -1:
        """Credits n popped samples to the items they belong to, oldest run first."""
        cdef Py_ssize_t step
        while n:
            step = n if n < self._head_left else self._head_left
            self._head_left -= step
            self._head_item.popped += step
            if self._current is not self._head_item:
                self._current = self._head_item
            n -= step
            if not self._head_left:
                self._next_run()
        return 0

    cdef int _next_run(self) except -1:
        if self._runs:
            run = self._runs.popleft()
            self._head_item = run[0]
            self._head_left = run[1]
        else:
            self._head_item = None
            self._head_left = 0
        return 0

    cdef Py_ssize_t _push(self, const unsigned char *data, Py_ssize_t size,
                          object item_id) except -1:
        cdef Py_ssize_t n, kept, grown
        cdef _Item item
        if size & 1:
            raise BadSampleData(size)
        n = size >> 1
        if not n:
            return 0
        kept = min(n, self.capacity_samples - self._count)
        if self._count + kept > self.allocated_samples:
            grown = self.allocated_samples
            while grown < self._count + kept:
                grown = min(2 * grown, self.capacity_samples)
            self._resize(grown)
        self.dropped_samples += n - kept
        self.complete = False
        if not kept:
            return 0
        item = self._item(item_id)
        self._write(data, kept)
        item.pushed += kept
        if self._head_item is None:
            self._head_item = item
            self._head_left = kept
        elif not self._runs:
            if self._head_item is item:
                self._head_left += kept
            else:
                self._runs.append([item, kept])
        else:
            run = self._runs[len(self._runs) - 1]
            if run[0] is item:
                run[1] += kept
            else:
                self._runs.append([item, kept])
        if self._state == IDLE:
            self._state = BUFFERING
        return kept

    cdef _Item _item(self, object item_id):
        """The record of ``item_id``, made if new, as the most recently pushed item."""
        cdef _Item item = self._last
        # The last pushed item is already the newest entry: no dictionary work per delta.
        if item is not None and item.id == item_id:
            return item
        item = self._items.get(item_id)
        if item is None:
            item = _Item(item_id)
            self._items[item_id] = item
            if len(self._items) > MAX_ITEMS:
                self._items.popitem(last=False)
        else:
            self._items.move_to_end(item_id)
        self._last = item
        return item

    cdef int _resize(self, Py_ssize_t samples) except -1:
        """Reallocates the ring to ``samples``, its audio moved to the front."""
        cdef unsigned char *ring
        if not self._count:
            # Nothing to keep. A shrink that fails leaves the larger block, which still holds
            # a ring of the smaller size.
            ring = <unsigned char *>realloc(self._ring, 2 * samples)
            if ring != NULL:
                self._ring = ring
            elif samples > self.allocated_samples:
                raise MemoryError()
        else:
            ring = <unsigned char *>malloc(2 * samples)
            if ring == NULL:
                raise MemoryError()
            self._read(ring, self._count)
            free(self._ring)
            self._ring = ring
        self._head = 0
        self.allocated_samples = samples
        return 0

    cdef void _write(self, const unsigned char *data, Py_ssize_t n) noexcept nogil:
        """Appends n samples; the caller made room."""
        cdef Py_ssize_t tail = self._head + self._count
        cdef Py_ssize_t first
        if tail >= self.allocated_samples:
            tail -= self.allocated_samples
        first = min(n, self.allocated_samples - tail)
        memcpy(self._ring + 2 * tail, data, 2 * first)
        if n > first:
            memcpy(self._ring, data + 2 * first, 2 * (n - first))
        self._count += n

    cdef void _read(self, unsigned char *dst, Py_ssize_t n) noexcept nogil:
        """Copies the oldest n samples to dst without consuming them."""
        cdef Py_ssize_t first = min(n, self.allocated_samples - self._head)
        memcpy(dst, self._ring + 2 * self._head, 2 * first)
        if n > first:
            memcpy(dst + 2 * first, self._ring, 2 * (n - first))

    cdef void _fade_out(self, Py_ssize_t n) noexcept nogil:
        """Applies the n-sample fade-out to the oldest n samples, in place."""
        cdef Py_ssize_t k, pos = self._head
        cdef int sample, magnitude
        cdef unsigned char *p
        for k in range(n):
            p = self._ring + 2 * pos
            sample = p[0] | (p[1] << 8)
            if sample >= 0x8000:
                sample -= 0x10000
            magnitude = ((-sample if sample < 0 else sample) * _gain(k, n) + Q15_HALF) >> 15
            if sample < 0:
                magnitude = (0x10000 - magnitude) & 0xFFFF
            p[0] = <unsigned char>(magnitude & 0xFF)
            p[1] = <unsigned char>(magnitude >> 8)
            pos += 1
            if pos == self.allocated_samples:
                pos = 0
