"""The playout buffer: threshold, underruns, completion, capacity, barge-in fade and accounting."""

from __future__ import annotations

import struct
from types import ModuleType

import numpy as np
import pytest
from conftest import IMPLS, both, media_module
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.errors import BadSampleData, ConfigError

native, twin = both("playout")
FRAME = 160  # 20 ms at 8 kHz


@pytest.fixture(params=IMPLS)
def m(request: pytest.FixtureRequest) -> ModuleType:
    return media_module(request.param, "playout")


def _ramp(start: int, n: int) -> bytes:
    return struct.pack(f"<{n}h", *((start + i) % 30000 for i in range(n)))


def _ints(pcm: bytes) -> list[int]:
    return list(struct.unpack(f"<{len(pcm) // 2}h", pcm))


def test_threshold_then_frames_in_order(m: ModuleType) -> None:
    buf = m.PlayoutBuffer(8000, kind=0x10)
    audio = _ramp(0, 5 * FRAME)
    assert buf.push(audio[: 2 * FRAME], "a") == FRAME
    assert buf.pop_frame() == bytes(2 * FRAME) and not buf.playing  # below 2 frames
    buf.push(audio[2 * FRAME :], "a")
    frames = [buf.pop_frame() for _ in range(5)]
    assert b"".join(frames) == audio and buf.playing
    assert buf.played_ms("a") == 100 and buf.current_item == "a"
    assert buf.pop_frame() == bytes(2 * FRAME)
    assert buf.underruns == 1 and not buf.playing


def test_complete_tail_plays_below_threshold_and_is_no_underrun(m: ModuleType) -> None:
    buf = m.PlayoutBuffer(8000)
    buf.push(_ramp(7, 100), "a")
    buf.mark_complete()
    frame = buf.pop_frame()
    assert frame == _ramp(7, 100) + bytes(2 * (FRAME - 100))
    assert buf.pop_frame() == bytes(2 * FRAME)
    assert buf.underruns == 0 and not buf.playing and buf.played_ms("a") == 12


def test_underrun_rebuffers_until_the_threshold(m: ModuleType) -> None:
    buf = m.PlayoutBuffer(8000, start_frames=2)
    buf.push(_ramp(0, 2 * FRAME + 50), "a")
    buf.pop_frame(), buf.pop_frame()
    assert buf.pop_frame() == bytes(2 * FRAME) and buf.underruns == 1
    buf.push(_ramp(1, FRAME), "a")  # 210 samples: over one frame, under the threshold
    assert buf.pop_frame() == bytes(2 * FRAME)
    buf.push(_ramp(2, FRAME), "a")
    assert buf.pop_frame() == _ramp(2 * FRAME, 50)[:100] + _ramp(1, FRAME)[: 2 * (FRAME - 50)]


def test_pop_message_and_silence_identity(m: ModuleType) -> None:
    buf = m.PlayoutBuffer(16000, kind=0x12, start_frames=1)
    silent = buf.pop_message()
    assert silent == b"\x12\x02\x80" + bytes(640) and silent is buf.pop_message()
    assert buf.pop_frame() is buf.pop_frame()
    buf.push(_ramp(3, 320))
    assert buf.pop_message() == b"\x12\x02\x80" + _ramp(3, 320)
    with pytest.raises(ConfigError):
        m.PlayoutBuffer(8000).pop_message()


def test_capacity_drops_the_newest_and_storage_follows_demand(m: ModuleType) -> None:
    buf = m.PlayoutBuffer(8000, capacity_ms=1000)
    assert buf.allocated_samples == 4 * FRAME
    assert buf.push(bytes(2 * 6000), "a") == 6000
    assert buf.allocated_samples >= 6000
    assert buf.push(bytes(2 * 3000), "a") == 2000
    assert buf.dropped_samples == 1000 and buf.buffered_samples == 8000
    assert buf.allocated_samples == buf.capacity_samples == 8000
    buf.mark_complete()
    for _ in range(50):
        buf.pop_frame()
    assert buf.buffered_samples == 0 and buf.allocated_samples == 4 * FRAME


def test_clear_fades_and_reports_what_was_heard(m: ModuleType) -> None:
    buf = m.PlayoutBuffer(8000, fade_ms=5)
    tone = (np.sin(np.arange(20 * FRAME) * 2 * np.pi * 300 / 8000) * 20000).astype("<i2")
    buf.push(tone.tobytes(), "item1")
    played = b"".join(buf.pop_frame() for _ in range(3))
    assert buf.clear() == ("item1", 65)  # 60 ms played + the 5 ms fade still to come
    tail = _ints(buf.pop_frame())
    fade = tail[:40]
    assert tail[40:] == [0] * (FRAME - 40)
    last = _ints(played)[-1]
    step = max(abs(int(a) - int(b)) for a, b in zip(tone[1:], tone[:-1], strict=True))
    assert abs(fade[0] - last) <= step  # continues the waveform: no jump
    assert all(abs(f) <= abs(int(t)) for f, t in zip(fade, tone[480:520], strict=True))
    assert abs(fade[-1]) <= abs(int(tone[519])) // 30 + 1  # down to nothing
    assert buf.played_ms("item1") == 65
    assert buf.pop_frame() == bytes(2 * FRAME) and buf.underruns == 0


def test_clear_before_playing_and_when_empty(m: ModuleType) -> None:
    buf = m.PlayoutBuffer(8000)
    assert buf.clear() is None
    buf.push(_ramp(0, 100), "x")
    assert buf.clear() == ("x", 0)
    assert buf.buffered_samples == 0 and buf.pop_frame() == bytes(2 * FRAME)


def test_audio_end_never_exceeds_the_items_audio(m: ModuleType) -> None:
    buf = m.PlayoutBuffer(8000, start_frames=1)
    buf.push(_ramp(0, FRAME + 10), "short")
    buf.push(_ramp(0, 5 * FRAME), "next")
    buf.pop_frame()
    item, end_ms = buf.clear()
    assert item == "short" and end_ms == (FRAME + 10) * 1000 // 8000
    assert buf.played_ms("next") == 0


def test_items_are_accounted_across_frames(m: ModuleType) -> None:
    buf = m.PlayoutBuffer(8000, start_frames=1)
    buf.push(_ramp(0, 100), "a")
    buf.push(_ramp(0, 300), "b")
    buf.pop_frame()
    assert (buf.played_ms("a"), buf.played_ms("b"), buf.current_item) == (12, 7, "b")
    for i in range(20):
        buf.push(bytes(2), f"i{i}")
    assert buf.played_ms("a") == 0  # only the most recent 16 items are kept


def test_bad_input(m: ModuleType) -> None:
    buf = m.PlayoutBuffer(8000)
    with pytest.raises(BadSampleData):
        buf.push(b"\x00\x01\x02")
    for kwargs in ({"frame_ms": 7}, {"start_frames": 0}, {"fade_ms": 11}, {"kind": 1},
                   {"capacity_ms": 20}):
        with pytest.raises(ConfigError):
            m.PlayoutBuffer(8000, **kwargs)
    with pytest.raises(ConfigError):
        m.PlayoutBuffer(44100, frame_ms=15)


operations = st.lists(
    st.one_of(
        st.tuples(st.just("push"), st.integers(0, 900), st.sampled_from(["a", "b", "c", None])),
        st.tuples(st.just("pop"), st.booleans()),
        st.tuples(st.just("complete")),
        st.tuples(st.just("clear")),
        st.tuples(st.just("reset")),
    ),
    max_size=60,
)


@settings(max_examples=200, deadline=None)
@given(
    ops=operations,
    rate=st.sampled_from([8000, 16000, 24000, 44100]),
    start=st.integers(1, 4),
    fade=st.integers(0, 10),
    seed=st.integers(0, 1000),
)
def test_native_equals_twin(ops: list[tuple[object, ...]], rate: int, start: int, fade: int,
                            seed: int) -> None:
    rng = np.random.default_rng(seed)
    kwargs = {"start_frames": start, "fade_ms": fade, "capacity_ms": 500, "kind": 0x10}
    a, b = native.PlayoutBuffer(rate, **kwargs), twin.PlayoutBuffer(rate, **kwargs)
    for op in ops:
        if op[0] == "push":
            pcm = rng.integers(-32768, 32767, int(op[1]), dtype="<i2").tobytes()
            assert a.push(pcm, op[2]) == b.push(pcm, op[2])
        elif op[0] == "pop":
            pop = "pop_message" if op[1] else "pop_frame"
            assert getattr(a, pop)() == getattr(b, pop)()
        elif op[0] == "complete":
            a.mark_complete(), b.mark_complete()
        elif op[0] == "clear":
            assert a.clear() == b.clear()
        else:
            a.reset(), b.reset()
        for attr in ("underruns", "dropped_samples", "buffered_samples", "buffered_ms", "playing",
                     "complete", "allocated_samples", "current_item"):
            assert getattr(a, attr) == getattr(b, attr), attr
        for item in ("a", "b", "c", None):
            assert a.played_ms(item) == b.played_ms(item)
