"""The playout buffer as a state machine (hypothesis): random sequences of pushes (random
items and sizes), pops, completions, clears and resets, run on the native buffer and its twin
side by side. Every step must give the same results in both, and the invariants hold: a frame
is always exactly one frame (a message one header and one frame), the buffer never holds more
than its capacity, and an item's played time only grows until it starts over at zero."""

from __future__ import annotations

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from tests.conftest import media_module

RATE = 8000
FRAME = RATE // 50
CAPACITY_MS = 400
ITEMS = ("item_a", "item_b", "item_c", None)


class PlayoutStates(RuleBasedStateMachine):
    @initialize(start_frames=st.integers(1, 4), fade_ms=st.sampled_from([0, 5, 10]))
    def make(self, start_frames: int, fade_ms: int) -> None:
        self.buffers = [media_module(impl, "playout").PlayoutBuffer(
            RATE, start_frames=start_frames, capacity_ms=CAPACITY_MS, fade_ms=fade_ms,
            kind=0x10) for impl in ("native", "python")]
        self.played: dict[str | None, int] = {}

    def both(self, method: str, *args: object) -> object:
        native, python = (getattr(b, method)(*args) for b in self.buffers)
        assert native == python, (method, args)
        return native

    @rule(item=st.sampled_from(ITEMS), samples=st.integers(0, 1200),
          seed=st.integers(0, 2**32 - 1))
    def push(self, item: str | None, samples: int, seed: int) -> None:
        import random

        pcm = random.Random(seed).randbytes(2 * samples)
        self.both("push", pcm, item)

    @rule()
    def pop_frame(self) -> None:
        frame = self.both("pop_frame")
        assert isinstance(frame, bytes) and len(frame) == 2 * FRAME

    @rule()
    def pop_message(self) -> None:
        message = self.both("pop_message")
        assert isinstance(message, bytes) and len(message) == 3 + 2 * FRAME
        assert message[:3] == bytes((0x10,)) + (2 * FRAME).to_bytes(2, "big")

    @rule()
    def mark_complete(self) -> None:
        self.both("mark_complete")

    @rule()
    def clear(self) -> None:
        self.both("clear")

    @rule()
    def reset(self) -> None:
        self.both("reset")
        self.played.clear()

    @invariant()
    def alike_and_bounded(self) -> None:
        if not hasattr(self, "buffers"):
            return
        native, python = self.buffers
        for name in ("buffered_samples", "playing", "complete", "underruns",
                     "dropped_samples", "current_item"):
            assert getattr(native, name) == getattr(python, name), name
        assert 0 <= native.buffered_samples <= native.capacity_samples
        for item in ITEMS:
            ms = native.played_ms(item)
            assert ms == python.played_ms(item)
            assert ms >= self.played.get(item, 0) or ms == 0  # a reset or new item starts over
            self.played[item] = ms


PlayoutStates.TestCase.settings = settings(max_examples=150, stateful_step_count=60,
                                           deadline=None)
test_playout_states = PlayoutStates.TestCase
