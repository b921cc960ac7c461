"""Per-call playout buffer: the plain-Python twin of ``engine._native.playout``.

The model's audio arrives in bursts, faster than real time; the engine's clock pops exactly one
frame per call every 20 ms. This buffer holds the audio in between. It is pure: no clock
inside, the caller says when to pop.

States and what moves between them:

- IDLE: no burst in progress. A push that keeps audio moves to BUFFERING.
- BUFFERING: a burst is in progress but not audible: before its first frame, or after an
  underrun. A pop starts PLAYING once ``start_frames`` frames are buffered (the jitter
  allowance), or at once if the upstream said the burst is complete and audio is left.
- PLAYING: each pop returns a full frame. With less than a frame left, a complete burst's
  tail is zero-padded and the buffer goes IDLE; an incomplete one underruns: silence,
  counted, the partial samples kept, back to BUFFERING. ``mark_complete()`` on an empty
  buffer ends the burst at once (IDLE), so running dry after the response's audio is done is
  never an underrun.
- ``clear()`` (barge-in) from any state keeps only a faded tail of what is playing (PLAYING
  until it has played, then IDLE) and reports how much of the interrupted item the caller
  heard. ``reset()`` drops everything: IDLE.

Invariant: PLAYING with nothing buffered implies the burst is not complete.

Storage starts at 4 frames, doubles on demand up to the hard capacity (beyond
it the newest audio is dropped and counted) and returns to its initial size whenever it
drains, is cleared or reset, so an idle call holds a few frames. This twin keeps its audio in
a ``bytearray`` and only models the storage size (``allocated_samples``) that the native
ring really allocates.

Items: each push names the item its audio belongs to (the Realtime ``item_id``); audio of
one item is credited to it as it is popped, whatever the chunking, and an id seen before
continues its item. The most recent ``MAX_ITEMS`` items (by last push) are remembered;
audio still buffered keeps its item's count even after the id is forgotten.

The fade (``clear``) is integer arithmetic, identical in both implementations: sample k of
an n-sample fade is multiplied by the Q15 gain ``fade_gain(k, n) = ((n - 1 - k) << 15) // n``
(a straight line from the unit gain of the audio before it down to exactly 0 at the last
sample) and rounded half away from zero on the magnitude, ``(|x| * g + 2**14) >> 15``, with
the sign put back. Working on magnitudes keeps C's and Python's different rounding of
negative quotients out of it, and a faded sample's magnitude never exceeds the original's.
"""

from __future__ import annotations

import array
import operator
import sys
from collections import OrderedDict, deque

from engine.errors import BadSampleData, ConfigError

__all__ = ["MAX_ITEMS", "PlayoutBuffer", "fade_gain"]

MAX_ITEMS = 16
_INITIAL_FRAMES = 4
_MAX_RATE = 192000
_MAX_CAPACITY_MS = 600_000
_IDLE, _BUFFERING, _PLAYING = 0, 1, 2

# AudioSocket audio kinds and the one rate each carries.
_KIND_RATES = {
    0x10: 8000, 0x11: 12000, 0x12: 16000, 0x13: 24000, 0x14: 32000,
    0x15: 44100, 0x16: 48000, 0x17: 96000, 0x18: 192000,
}


def fade_gain(k: int, n: int) -> int:
    """The Q15 gain of sample ``k`` of an ``n``-sample fade-out: ((n - 1 - k) << 15) // n.

    Raises:
        ValueError: not 0 <= k < n.
    """
    if not 0 <= k < n:
        raise ValueError(f"fade sample {k} is outside a fade of {n} samples")
    return ((n - 1 - k) << 15) // n


def _fade(sample: int, gain: int) -> int:
    magnitude = (abs(sample) * gain + (1 << 14)) >> 15
    return -magnitude if sample < 0 else magnitude


def _integer(name: str, value: object) -> int:
    try:
        return operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        raise ConfigError(f"{name} must be an integer, not {value!r}") from None


def _validate(rate: object, frame_ms: object, start_frames: object, capacity_ms: object,
              fade_ms: object, kind: object) -> tuple[int, int, int, int, int, int | None]:
    rate = _integer("rate", rate)
    frame_ms = _integer("frame_ms", frame_ms)
    start_frames = _integer("start_frames", start_frames)
    capacity_ms = _integer("capacity_ms", capacity_ms)
    fade_ms = _integer("fade_ms", fade_ms)
    kind = None if kind is None else _integer("kind", kind)
    if not 0 < rate <= _MAX_RATE:
        raise ConfigError(f"rate must be 1..{_MAX_RATE} Hz, not {rate}")
    if not 10 <= frame_ms <= 100:
        raise ConfigError(f"frame_ms must be 10..100, not {frame_ms}")
    if rate * frame_ms % 1000:
        raise ConfigError(f"a {frame_ms} ms frame at {rate} Hz is not a whole number of samples")
    if start_frames < 1:
        raise ConfigError(f"start_frames must be at least 1, not {start_frames}")
    least = max(_INITIAL_FRAMES, start_frames) * frame_ms
    if not least <= capacity_ms <= _MAX_CAPACITY_MS:
        raise ConfigError(
            f"capacity_ms must be {least}..{_MAX_CAPACITY_MS} (at least {_INITIAL_FRAMES} frames "
            f"and the start threshold), not {capacity_ms}"
        )
    if not 0 <= fade_ms <= 10:
        raise ConfigError(f"fade_ms must be 0..10, not {fade_ms}")
    if kind is not None and _KIND_RATES.get(kind) != rate:
        if kind not in _KIND_RATES:
            raise ConfigError(f"kind must be an AudioSocket audio kind 0x10..0x18, not {kind:#x}")
        raise ConfigError(f"kind {kind:#04x} carries {_KIND_RATES[kind]} Hz audio, not {rate} Hz")
    return rate, frame_ms, start_frames, capacity_ms, fade_ms, kind


def _bytes(data: bytes | bytearray | memoryview) -> memoryview:
    view = memoryview(data)
    if not view.c_contiguous:
        raise BufferError("the playout buffer needs a C-contiguous buffer")
    return view.cast("B")


class _Item:
    """One item's audio: samples pushed (kept) and popped so far."""

    __slots__ = ("id", "popped", "pushed")

    def __init__(self, item_id: str | None) -> None:
        self.id = item_id
        self.pushed = 0
        self.popped = 0


class PlayoutBuffer:
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

    __slots__ = (
        "_allocated", "_capacity", "_complete", "_current", "_data", "_dropped", "_fade",
        "_frame", "_header", "_initial", "_items", "_kind", "_rate", "_runs", "_silence",
        "_silence_message", "_start", "_state", "_underruns",
    )

    def __init__(
        self,
        rate: int,
        *,
        frame_ms: int = 20,
        start_frames: int = 2,
        capacity_ms: int = 60000,
        fade_ms: int = 5,
        kind: int | None = None,
    ) -> None:
        rate, frame_ms, start_frames, capacity_ms, fade_ms, kind = _validate(
            rate, frame_ms, start_frames, capacity_ms, fade_ms, kind
        )
        self._rate = rate
        self._kind = kind
        self._frame = rate * frame_ms // 1000
        self._capacity = rate * capacity_ms // 1000
        self._start = start_frames * self._frame
        self._fade = rate * fade_ms // 1000
        self._initial = _INITIAL_FRAMES * self._frame
        self._silence = bytes(2 * self._frame)
        self._header: bytes | None = None
        self._silence_message: bytes | None = None
        if kind is not None:
            self._header = bytes((kind,)) + (2 * self._frame).to_bytes(2, "big")
            self._silence_message = self._header + self._silence
        self._underruns = 0
        self._dropped = 0
        self._items: OrderedDict[str | None, _Item] = OrderedDict()
        self._data = bytearray()
        self._runs: deque[list] = deque()  # [item, samples] in buffer order
        self._allocated = self._initial
        self._state = _IDLE
        self._complete = False
        self._current: _Item | None = None

    @property
    def rate(self) -> int:
        """Sample rate in Hz."""
        return self._rate

    @property
    def kind(self) -> int | None:
        """AudioSocket audio kind, or None."""
        return self._kind

    @property
    def frame_samples(self) -> int:
        """Samples in one frame."""
        return self._frame

    @property
    def capacity_samples(self) -> int:
        """The most samples ever held; pushes beyond are dropped."""
        return self._capacity

    @property
    def allocated_samples(self) -> int:
        """Samples the storage holds room for now."""
        return self._allocated

    @property
    def underruns(self) -> int:
        """Silence frames popped because an incomplete burst ran dry."""
        return self._underruns

    @property
    def dropped_samples(self) -> int:
        """Samples refused because the buffer was at capacity."""
        return self._dropped

    @property
    def complete(self) -> bool:
        """The current burst has all its audio (``mark_complete``, ``clear``)."""
        return self._complete

    @property
    def playing(self) -> bool:
        """Pops return audio."""
        return self._state == _PLAYING

    @property
    def buffered_samples(self) -> int:
        """Samples waiting to be popped."""
        return len(self._data) // 2

    @property
    def buffered_ms(self) -> int:
        """Milliseconds waiting to be popped (floor)."""
        return self.buffered_samples * 1000 // self._rate

    @property
    def current_item(self) -> str | None:
        """The item of the audio popped last, or None."""
        return None if self._current is None else self._current.id

    def played_ms(self, item_id: str | None) -> int:
        """Milliseconds of ``item_id`` popped so far (floor); 0 for an unknown item."""
        item = self._items.get(item_id)
        return 0 if item is None else item.popped * 1000 // self._rate

    def push(self, pcm: bytes | bytearray | memoryview, item_id: str | None = None) -> int:
        """Appends int16 LE audio of ``item_id``; returns the samples kept.

        Beyond the capacity the newest samples are dropped and counted in ``dropped_samples``.
        Any push ends a completed burst's completeness: more audio is coming.

        Raises:
            BadSampleData: ``pcm`` has an odd number of bytes.
            BufferError: ``pcm`` is not C-contiguous.
        """
        data = _bytes(pcm)
        if len(data) % 2:
            raise BadSampleData(len(data))
        n = len(data) // 2
        if n == 0:
            return 0
        kept = min(n, self._capacity - self.buffered_samples)
        self._dropped += n - kept
        self._complete = False
        if kept == 0:
            return 0
        while self._allocated < self.buffered_samples + kept:
            self._allocated = min(2 * self._allocated, self._capacity)
        item = self._item(item_id)
        self._data += data[: 2 * kept]
        item.pushed += kept
        if self._runs and self._runs[-1][0] is item:
            self._runs[-1][1] += kept
        else:
            self._runs.append([item, kept])
        if self._state == _IDLE:
            self._state = _BUFFERING
        return kept

    def mark_complete(self) -> None:
        """No more audio is coming for now: the tail plays out, and running dry is no underrun."""
        self._complete = True
        if not self._data:
            self._state = _IDLE

    def pop_frame(self) -> bytes:
        """Exactly one frame of int16 LE samples: audio, or the cached silence frame."""
        n = self._frame
        buffered = self.buffered_samples
        if self._state != _PLAYING:
            if buffered >= self._start or (self._complete and buffered):
                self._state = _PLAYING
            else:
                return self._silence
        if buffered < n and not self._complete:
            self._underruns += 1
            self._state = _BUFFERING
            return self._silence
        take = min(n, buffered)
        frame = bytes(self._data[: 2 * take]) + bytes(2 * (n - take))
        del self._data[: 2 * take]
        self._credit(take)
        if not self._data:
            self._allocated = self._initial
            if self._complete:
                self._state = _IDLE
        return frame

    def pop_message(self) -> bytes:
        """The next frame as one AudioSocket audio message of ``kind``: header and payload.

        Raises:
            ConfigError: the buffer was made without ``kind``.
        """
        if self._header is None or self._silence_message is None:
            raise ConfigError("pop_message needs the AudioSocket kind given at construction")
        frame = self.pop_frame()
        if frame is self._silence:
            return self._silence_message
        return self._header + frame

    def clear(self) -> tuple[str | None, int] | None:
        """Barge-in: drops the buffered audio but a faded tail of what is playing.

        When PLAYING, the next ``fade_ms`` of the playing item stay, faded out to zero, and
        play on the following pops; then silence. The burst is over: ``complete`` is set.

        Returns:
            ``(item_id, audio_end_ms)`` for the item playing or about to play: the
            milliseconds of it the caller will have heard, fade included (floor), never more
            than its audio. With nothing buffered, the item of a burst still in progress (it
            ran dry mid-response) with what was popped of it. None when no burst was going.
        """
        result: tuple[str | None, int] | None = None
        keep = 0
        if self._runs:
            item, left = self._runs[0]
            keep = min(self._fade, left) if self._state == _PLAYING else 0
            result = item.id, (item.popped + keep) * 1000 // self._rate
            self._data = self._faded(keep)
            self._runs = deque([[item, keep]] if keep else [])
        elif self._state != _IDLE and self._current is not None:
            result = self._current.id, self._current.popped * 1000 // self._rate
        self._allocated = self._initial
        self._state = _PLAYING if keep else _IDLE
        self._complete = True
        return result

    def reset(self) -> None:
        """Drops all audio: IDLE, not complete, initial storage; counters and items are kept."""
        self._data = bytearray()
        self._runs = deque()
        self._allocated = self._initial
        self._state = _IDLE
        self._complete = False
        self._current = None

    def _item(self, item_id: str | None) -> _Item:
        item = self._items.get(item_id)
        if item is None:
            item = self._items[item_id] = _Item(item_id)
            if len(self._items) > MAX_ITEMS:
                self._items.popitem(last=False)
        else:
            self._items.move_to_end(item_id)
        return item

    def _faded(self, keep: int) -> bytearray:
        samples = array.array("h")
        samples.frombytes(self._data[: 2 * keep])
        if sys.byteorder == "big":
            samples.byteswap()
        for k in range(keep):
            samples[k] = _fade(samples[k], fade_gain(k, keep))
        if sys.byteorder == "big":
            samples.byteswap()
        return bytearray(samples.tobytes())

    def _credit(self, n: int) -> None:
        while n:
            run = self._runs[0]
            step = min(n, run[1])
            run[1] -= step
            run[0].popped += step
            self._current = run[0]
            n -= step
            if not run[1]:
                self._runs.popleft()
