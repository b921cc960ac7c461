"""Per-call playout buffer: the plain-Python twin of ``engine._native.playout``.

The model's audio arrives in bursts, faster than real time; the engine's clock pops exactly one
frame per call every 20 ms. This holds the audio between the two. Pure: no clock inside.

- Playing starts once ``start_frames`` frames are buffered (the jitter allowance), or at once
  when the upstream says the response's audio is complete.
- Running dry while the response is not complete is an underrun: silence, counted, and the
  buffer waits for the threshold again.
- ``clear()`` (barge-in) keeps a short faded tail so the cut does not click, and reports how
  much of the interrupted item the caller actually heard: ``audio_end_ms`` for the truncate.
- Storage grows on demand up to a hard capacity (beyond it the newest audio is dropped and
  counted) and shrinks back once drained, so an idle call holds a few frames.
"""

from __future__ import annotations

from collections import OrderedDict

from engine.errors import BadSampleData, ConfigError

__all__ = ["MAX_ITEMS", "PlayoutBuffer", "fade_gain"]

MAX_ITEMS = 16
_IDLE, _BUFFERING, _PLAYING = 0, 1, 2


class _Segment:
    """A run of buffered samples that belong to one item."""

    __slots__ = ("item_id", "left")

    def __init__(self, item_id: str | None, left: int) -> None:
        self.item_id = item_id
        self.left = left


def fade_gain(k: int, n: int) -> int:
    """Q15 gain of sample k of an n-sample fade-out: 32767 at k=0, falling linearly to 0."""
    return 32767 * (n - k) // n


def _check(rate: int, frame_ms: int, start_frames: int, capacity_ms: int, fade_ms: int,
           kind: int | None) -> None:
    if rate <= 0 or rate * frame_ms % 1000:
        raise ConfigError(f"a {frame_ms} ms frame at {rate} Hz is not a whole number of samples")
    if not 10 <= frame_ms <= 100:
        raise ConfigError(f"frame_ms must be 10..100, not {frame_ms}")
    if start_frames < 1:
        raise ConfigError(f"start_frames must be at least 1, not {start_frames}")
    if capacity_ms < 4 * frame_ms:
        raise ConfigError(f"capacity_ms must hold at least 4 frames, not {capacity_ms}")
    if not 0 <= fade_ms <= 10:
        raise ConfigError(f"fade_ms must be 0..10, not {fade_ms}")
    if kind is not None and not 0x10 <= kind <= 0x18:
        raise ConfigError(f"kind must be an AudioSocket audio kind (0x10..0x18), not {kind}")


class PlayoutBuffer:
    """One call's model audio, waiting to be paced out one frame at a time."""

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
        _check(rate, frame_ms, start_frames, capacity_ms, fade_ms, kind)
        self.rate = rate
        self.kind = kind
        self.frame_samples = rate * frame_ms // 1000
        self.capacity_samples = rate * capacity_ms // 1000
        self._start = start_frames * self.frame_samples
        self._fade = rate * fade_ms // 1000
        self._initial = 4 * self.frame_samples
        self._silence = bytes(2 * self.frame_samples)
        self._silence_message = (
            None if kind is None
            else bytes((kind, (2 * self.frame_samples) >> 8, (2 * self.frame_samples) & 0xFF))
            + self._silence
        )
        self.underruns = 0
        self.dropped_samples = 0
        self._items: OrderedDict[str | None, list[int]] = OrderedDict()
        self.reset()

    def reset(self) -> None:
        """Drops all audio; back to idle with the initial small storage (counters kept)."""
        self._data = bytearray()
        self._segments: list[_Segment] = []  # in buffer order
        self._state = _IDLE
        self.complete = False
        self.allocated_samples = self._initial
        self.current_item: str | None = None

    @property
    def buffered_samples(self) -> int:
        return len(self._data) // 2

    @property
    def buffered_ms(self) -> int:
        return self.buffered_samples * 1000 // self.rate

    @property
    def playing(self) -> bool:
        return self._state == _PLAYING

    def played_ms(self, item_id: str | None) -> int:
        """Milliseconds of ``item_id`` popped so far (0 for an unknown item)."""
        record = self._items.get(item_id)
        return record[1] * 1000 // self.rate if record else 0

    def push(self, pcm: bytes | bytearray | memoryview, item_id: str | None = None) -> int:
        """Appends int16 LE audio of ``item_id``; returns the samples kept (the rest is dropped).

        Raises:
            BadSampleData: an odd number of bytes.
        """
        data = memoryview(pcm).cast("B")
        if len(data) % 2:
            raise BadSampleData(len(data))
        n = len(data) // 2
        kept = min(n, self.capacity_samples - self.buffered_samples)
        self.dropped_samples += n - kept
        self.complete = False
        record = self._items.get(item_id)
        if record is None:
            record = self._items[item_id] = [0, 0]
            while len(self._items) > MAX_ITEMS:
                self._items.popitem(last=False)
        if not kept:
            return 0
        self._grow(self.buffered_samples + kept)
        self._data += data[: 2 * kept]
        record[0] += kept
        if self._segments and self._segments[-1].item_id == item_id:
            self._segments[-1].left += kept
        else:
            self._segments.append(_Segment(item_id, kept))
        return kept

    def mark_complete(self) -> None:
        """No more audio is coming for now: the tail plays out, and running dry is no underrun."""
        self.complete = True

    def pop_frame(self) -> bytes:
        """Exactly one frame of int16 LE samples: audio, or silence."""
        n = self.frame_samples
        buffered = self.buffered_samples
        if self._state != _PLAYING:
            if buffered >= self._start or (self.complete and buffered):
                self._state = _PLAYING
            else:
                return self._silence
        if buffered >= n:
            frame = self._take(n)
        elif self.complete:
            frame = self._take(buffered) + bytes(2 * (n - buffered))
        else:
            self.underruns += 1
            self._state = _BUFFERING
            return self._silence
        if not self._data:
            self.allocated_samples = self._initial
            if self.complete:
                self._state = _IDLE
        return frame

    def pop_message(self) -> bytes:
        """The next frame as a complete AudioSocket audio message for ``kind``."""
        if self._silence_message is None:
            raise ConfigError("pop_message needs the AudioSocket kind given at construction")
        frame = self.pop_frame()
        if frame is self._silence:
            return self._silence_message
        return self._silence_message[:3] + frame

    def clear(self) -> tuple[str | None, int] | None:
        """Barge-in: drops the buffered audio but a short faded tail of what is playing.

        Returns (item_id, audio_end_ms) of the item that was playing or about to, where
        audio_end_ms counts what the caller will have heard, the fade included; None if no
        item audio was buffered.
        """
        if not self._segments:
            self._state = _IDLE
            return None
        item_id, left = self._segments[0].item_id, self._segments[0].left
        keep = min(self._fade, left) if self._state == _PLAYING else 0
        tail = bytearray(self._data[: 2 * keep])
        for k in range(keep):
            s = int.from_bytes(tail[2 * k : 2 * k + 2], "little", signed=True)
            tail[2 * k : 2 * k + 2] = ((s * fade_gain(k, keep)) >> 15).to_bytes(
                2, "little", signed=True
            )
        self._data = tail
        self.allocated_samples = self._initial
        self._segments = [_Segment(item_id, keep)] if keep else []
        self._state = _PLAYING if keep else _IDLE
        self.complete = True
        record = self._items.get(item_id)
        popped = record[1] if record else 0
        return item_id, (popped + keep) * 1000 // self.rate

    def _grow(self, need: int) -> None:
        while self.allocated_samples < need:
            self.allocated_samples = min(2 * self.allocated_samples, self.capacity_samples)

    def _take(self, n: int) -> bytes:
        out = bytes(self._data[: 2 * n])
        del self._data[: 2 * n]
        while n:
            segment = self._segments[0]
            step = min(n, segment.left)
            segment.left -= step
            record = self._items.get(segment.item_id)
            if record is not None:
                record[1] += step
            self.current_item = segment.item_id
            n -= step
            if not segment.left:
                self._segments.pop(0)
        return out
