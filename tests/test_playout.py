"""The playout buffer: threshold, underruns, completion, capacity, storage, barge-in fade and
item accounting, on both implementations, and the two against each other."""

from __future__ import annotations

import struct
from itertools import pairwise
from types import ModuleType

import numpy as np
import pytest
from conftest import IMPLS, both, media_module
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.errors import BadSampleData, ConfigError

native, twin = both("playout")
FRAME = 160  # 20 ms at 8 kHz
SILENCE = bytes(2 * FRAME)


@pytest.fixture(params=IMPLS)
def m(request: pytest.FixtureRequest) -> ModuleType:
    return media_module(request.param, "playout")


def _ramp(start: int, n: int) -> bytes:
    """n distinct, recognisable samples."""
    return struct.pack(f"<{n}h", *(((start + i) % 60000) - 30000 for i in range(n)))


def _ints(pcm: bytes) -> list[int]:
    return list(struct.unpack(f"<{len(pcm) // 2}h", pcm))


def _tone(n: int, rate: int = 8000, hz: float = 300.0, amplitude: float = 20000.0) -> np.ndarray:
    return (np.sin(np.arange(n) * 2 * np.pi * hz / rate) * amplitude).astype("<i2")


def test_frames_are_exact_and_in_order(m: ModuleType) -> None:
    buf = m.PlayoutBuffer(8000)
    audio = _ramp(0, 7 * FRAME + 33)
    cut = 0
    for size in (1, 159, 161, 7, 480, 33, 312):
        assert buf.push(audio[2 * cut : 2 * (cut + size)], "a") == size
        cut += size
    assert cut == 7 * FRAME + 33
    buf.mark_complete()
    frames = [buf.pop_frame() for _ in range(9)]
    assert all(len(frame) == 2 * FRAME for frame in frames)
    assert b"".join(frames) == audio + bytes(2 * (FRAME - 33)) + SILENCE
    assert buf.played_ms("a") == (7 * FRAME + 33) * 1000 // 8000
    assert buf.current_item == "a" and buf.underruns == 0


@pytest.mark.parametrize("start_frames", [1, 3])
def test_playing_starts_at_the_threshold(m: ModuleType, start_frames: int) -> None:
    buf = m.PlayoutBuffer(8000, start_frames=start_frames)
    audio = _ramp(5, start_frames * FRAME)
    buf.push(audio[:-2])
    assert buf.pop_frame() is buf.pop_frame() and not buf.playing
    assert buf.buffered_samples == start_frames * FRAME - 1
    buf.push(audio[-2:])
    assert buf.pop_frame() == audio[: 2 * FRAME] and buf.playing


def test_underrun_is_counted_once_and_rebuffers(m: ModuleType) -> None:
    buf = m.PlayoutBuffer(8000, start_frames=2)
    audio = _ramp(0, 4 * FRAME + 50)
    buf.push(audio[: 2 * (2 * FRAME + 50)], "a")
    assert buf.pop_frame() + buf.pop_frame() == audio[: 4 * FRAME]
    assert buf.pop_frame() == SILENCE and buf.underruns == 1 and not buf.playing
    assert buf.buffered_samples == 50  # the partial frame is kept, not dropped
    assert buf.pop_frame() == SILENCE and buf.underruns == 1  # waiting is not underrunning
    buf.push(audio[2 * (2 * FRAME + 50) : 2 * (3 * FRAME + 50)], "a")
    assert buf.pop_frame() == SILENCE  # 210 samples: over a frame, under the threshold
    buf.push(audio[2 * (3 * FRAME + 50) :], "a")
    assert buf.pop_frame() == audio[4 * FRAME : 6 * FRAME] and buf.playing
    assert buf.underruns == 1


def test_complete_tail_is_zero_padded_then_idle(m: ModuleType) -> None:
    buf = m.PlayoutBuffer(8000, start_frames=4)
    buf.push(_ramp(7, 100), "a")
    buf.mark_complete()
    assert buf.complete
    assert buf.pop_frame() == _ramp(7, 100) + bytes(2 * (FRAME - 100))
    assert not buf.playing and buf.complete
    assert buf.pop_frame() == SILENCE and buf.underruns == 0
    assert buf.played_ms("a") == 12


def test_no_underrun_at_the_end_of_a_completed_response(m: ModuleType) -> None:
    buf = m.PlayoutBuffer(8000)
    buf.push(_ramp(0, 3 * FRAME), "a")
    buf.pop_frame()
    buf.pop_frame()
    buf.pop_frame()  # exactly drained: still playing, the response is not done
    assert buf.playing and buf.buffered_samples == 0
    buf.mark_complete()  # response.output_audio.done
    assert not buf.playing
    assert [buf.pop_frame() for _ in range(5)] == [SILENCE] * 5
    assert buf.underruns == 0
    # Complete while rebuffering after an underrun: the partial samples play at once.
    buf.push(_ramp(1, 2 * FRAME + 30), "b")
    buf.pop_frame(), buf.pop_frame()
    assert buf.pop_frame() == SILENCE and buf.underruns == 1
    buf.mark_complete()
    assert buf.pop_frame() == _ramp(1 + 2 * FRAME, 30) + bytes(2 * (FRAME - 30))
    assert buf.pop_frame() == SILENCE and buf.underruns == 1


def test_push_after_complete_starts_a_new_burst(m: ModuleType) -> None:
    buf = m.PlayoutBuffer(8000, start_frames=2)
    buf.push(_ramp(0, FRAME), "a")
    buf.mark_complete()
    buf.pop_frame()
    buf.push(_ramp(1, FRAME), "b")
    assert not buf.complete
    assert buf.pop_frame() == SILENCE  # below the threshold again: a new burst
    buf.push(_ramp(2, FRAME), "b")
    assert buf.pop_frame() == _ramp(1, FRAME)
    # Audio arriving while a completed tail still plays just continues the burst.
    buf.mark_complete()
    buf.push(_ramp(3, 10), "c")
    assert buf.pop_frame() == _ramp(2, FRAME)
    assert buf.pop_frame() == SILENCE and buf.underruns == 1


def test_capacity_drops_the_newest_audio(m: ModuleType) -> None:
    buf = m.PlayoutBuffer(8000, capacity_ms=1000)
    assert buf.capacity_samples == 8000
    audio = _ramp(0, 9500)
    assert buf.push(audio[: 2 * 6000], "a") == 6000
    assert buf.push(audio[2 * 6000 : 2 * 9000], "a") == 2000
    assert buf.push(audio[2 * 9000 :], "a") == 0
    assert buf.dropped_samples == 1000 + 500 and buf.buffered_samples == 8000
    assert buf.buffered_ms == 1000
    buf.mark_complete()
    out = b"".join(buf.pop_frame() for _ in range(50))
    assert out == audio[: 2 * 8000]  # the oldest audio was kept
    assert buf.played_ms("a") == 1000


def test_storage_grows_on_demand_and_shrinks_when_drained(m: ModuleType) -> None:
    buf = m.PlayoutBuffer(8000, capacity_ms=1000)
    initial = buf.allocated_samples
    assert initial == 4 * FRAME
    sizes = []
    for _ in range(12):
        buf.push(bytes(2 * 600))
        sizes.append(buf.allocated_samples)
    assert sizes == [640, 1280, 2560, 2560, 5120, 5120, 5120, 5120, 8000, 8000, 8000, 8000]
    assert buf.buffered_samples == 7200 and buf.dropped_samples == 0
    for _ in range(3):
        buf.pop_frame()
    assert buf.allocated_samples == 8000  # not drained yet
    buf.mark_complete()
    while buf.buffered_samples:
        buf.pop_frame()
    assert buf.allocated_samples == initial
    buf.push(bytes(2 * 3000))
    assert buf.allocated_samples == 5120
    buf.reset()
    assert buf.allocated_samples == initial
    buf.push(bytes(2 * 3000), "x")
    buf.pop_frame()
    buf.clear()
    assert buf.allocated_samples == initial


def test_clear_fades_out_without_a_click(m: ModuleType) -> None:
    buf = m.PlayoutBuffer(8000, fade_ms=5)
    tone = _tone(20 * FRAME)
    buf.push(tone.tobytes(), "item1")
    played = _ints(b"".join(buf.pop_frame() for _ in range(3)))
    assert buf.clear() == ("item1", 65)  # 60 ms played, plus the 5 ms fade still to come
    assert buf.buffered_samples == 40 and buf.playing and buf.complete
    tail = _ints(buf.pop_frame())
    fade, rest = tail[:40], tail[40:]
    assert rest == [0] * (FRAME - 40)
    source = [int(x) for x in tone[3 * FRAME : 3 * FRAME + 40]]
    for k, (f, x) in enumerate(zip(fade, source, strict=True)):
        # The exact ramp, but for the Q15 gain's truncation and the final rounding.
        assert abs(f - x * (39 - k) / 40) <= 0.5 + abs(x) / 32768, k
        assert abs(f) <= abs(x)
    assert fade[-1] == 0  # the ramp ends at zero, so the silence after it joins smoothly
    # The first faded sample continues the waveform: its step from the last played sample
    # is the signal's own step plus at most one ramp step.
    assert abs(fade[0] - played[-1]) <= abs(source[0] - played[-1]) + abs(source[0]) // 40 + 1
    slope = int(np.max(np.abs(np.diff(tone.astype(int)))))
    joined = played + tail
    assert max(abs(b - a) for a, b in pairwise(joined)) <= slope + 20000 // 40 + 1
    assert buf.played_ms("item1") == 65 and buf.current_item == "item1"
    assert buf.pop_frame() == SILENCE and buf.underruns == 0 and not buf.playing


def test_fade_is_symmetric_in_sign(m: ModuleType) -> None:
    tails = []
    for sign in (1, -1):
        buf = m.PlayoutBuffer(8000, fade_ms=10, start_frames=1)
        values = [sign * v for v in (32767, 30001, -1, 1, 2, 3, 12345, -32767)] * 40
        buf.push(struct.pack(f"<{len(values)}h", *values))
        buf.pop_frame()
        buf.clear()
        tails.append(_ints(buf.pop_frame())[:80])
    assert tails[0] == [-x for x in tails[1]]
    buf = m.PlayoutBuffer(8000, fade_ms=10, start_frames=1)
    buf.push(struct.pack("<320h", *([-32768] * 320)))
    buf.pop_frame()
    buf.clear()
    faded = _ints(buf.pop_frame())[:80]
    assert faded[0] == -((32768 * m.fade_gain(0, 80) + 16384) >> 15) and faded[-1] == 0


def test_fade_gain_definition(m: ModuleType) -> None:
    for n in (1, 2, 3, 40, 80, 220, 441, 1920):
        gains = [m.fade_gain(k, n) for k in range(n)]
        assert gains == [twin.fade_gain(k, n) for k in range(n)]
        assert gains[0] == ((n - 1) << 15) // n and gains[-1] == 0
        assert all(a > b for a, b in pairwise(gains))
        assert all(g < 32768 for g in gains)
    for k, n in ((-1, 4), (4, 4), (0, 0)):
        with pytest.raises(ValueError):
            m.fade_gain(k, n)


def test_fade_across_the_end_of_the_ring(m: ModuleType) -> None:
    """Moves the native ring's read position near its end so the fade wraps around it."""
    buf = m.PlayoutBuffer(8000, frame_ms=10, start_frames=1, fade_ms=10)
    frame = 80
    assert buf.allocated_samples == 4 * frame
    buf.push(_ramp(0, 50), "a")
    buf.mark_complete()
    buf.pop_frame()  # the read position rests at 50 of 320
    audio = _tone(340, amplitude=30000).tobytes()
    buf.push(audio[: 2 * 300], "b")
    for i in range(3):
        assert buf.pop_frame() == audio[2 * frame * i : 2 * frame * (i + 1)]
    buf.push(audio[2 * 300 :], "b")  # 100 buffered, from ring position 290 over the end
    assert buf.allocated_samples == 4 * frame
    assert buf.clear() == ("b", (240 + 80) * 1000 // 8000)
    source = _ints(audio)[240:320]
    assert min(source) < 0 < max(source)
    expected = []
    for k, x in enumerate(source):
        magnitude = (abs(x) * (((79 - k) << 15) // 80) + 16384) >> 15
        expected.append(-magnitude if x < 0 else magnitude)
    assert _ints(buf.pop_frame()) == expected


def test_clear_reports_what_was_heard(m: ModuleType) -> None:
    buf = m.PlayoutBuffer(8000, start_frames=2)
    assert buf.clear() is None
    buf.push(_ramp(0, 100), "x")  # buffered, not started
    assert buf.clear() == ("x", 0)
    assert buf.buffered_samples == 0 and not buf.playing
    assert buf.pop_frame() == SILENCE
    buf.push(_ramp(0, 2 * FRAME + 50), "a")
    buf.pop_frame(), buf.pop_frame(), buf.pop_frame()  # underrun: 50 left, silence playing
    assert buf.clear() == ("a", 40)  # nothing audible to fade
    assert buf.buffered_samples == 0 and buf.pop_frame() == SILENCE
    buf.push(_ramp(0, 2 * FRAME), "b")
    buf.pop_frame(), buf.pop_frame()  # ran dry exactly; the response may still be coming
    assert buf.clear() == ("b", 40)
    buf.push(_ramp(0, FRAME), "c")
    buf.mark_complete()
    buf.pop_frame()  # a finished response
    assert buf.clear() is None
    quiet = m.PlayoutBuffer(8000, fade_ms=0, start_frames=1)
    quiet.push(_ramp(0, 3 * FRAME), "d")
    quiet.pop_frame()
    assert quiet.clear() == ("d", 20)
    assert quiet.buffered_samples == 0 and not quiet.playing


def test_audio_end_ms_is_exact_and_never_beyond_the_item(m: ModuleType) -> None:
    buf = m.PlayoutBuffer(44100, start_frames=1, fade_ms=5)  # 882-sample frames, 220 fade
    buf.push(_ramp(0, 882 + 100), "short")
    buf.push(_ramp(1, 5 * 882), "next")
    buf.pop_frame()
    assert buf.clear() == ("short", (882 + 100) * 1000 // 44100)  # 22 ms: the whole item
    tail = _ints(buf.pop_frame())
    assert tail[99] == 0 and tail[100:] == [0] * 782
    assert buf.played_ms("short") == 22 and buf.played_ms("next") == 0
    long = m.PlayoutBuffer(44100, start_frames=1, fade_ms=5)
    long.push(_ramp(0, 10 * 882), "long")
    long.pop_frame(), long.pop_frame()
    assert long.clear() == ("long", (2 * 882 + 220) * 1000 // 44100)  # 44.98 ms: floor 44


def test_items_are_accounted_as_they_play(m: ModuleType) -> None:
    buf = m.PlayoutBuffer(8000, start_frames=1)
    buf.push(_ramp(0, 100), "a")
    buf.push(_ramp(0, 300), "b")
    buf.pop_frame()
    assert (buf.played_ms("a"), buf.played_ms("b"), buf.current_item) == (12, 7, "b")
    assert buf.played_ms("nobody") == 0
    buf.push(_ramp(0, 140), "a")  # an id seen before continues its item
    buf.pop_frame(), buf.pop_frame()
    assert (buf.played_ms("a"), buf.played_ms("b")) == (22, 37)  # 180 and 300 samples
    for i in range(20):
        buf.push(bytes(2), f"i{i}")
    assert buf.played_ms("a") == 0  # only the 16 most recently pushed items are remembered


def test_a_forgotten_item_still_reports_its_audio(m: ModuleType) -> None:
    buf = m.PlayoutBuffer(8000, start_frames=1)
    buf.push(_ramp(0, 3 * FRAME), "old")
    for i in range(m.MAX_ITEMS):
        buf.push(bytes(2), f"later{i}")
    assert buf.played_ms("old") == 0  # forgotten by id...
    buf.pop_frame()
    assert buf.clear() == ("old", 25)  # ...but its buffered audio keeps the count


def test_pop_message_header_and_silence_identity(m: ModuleType) -> None:
    buf = m.PlayoutBuffer(16000, kind=0x12, start_frames=1)
    silent = buf.pop_message()
    assert silent == b"\x12\x02\x80" + bytes(640)
    assert silent is buf.pop_message()
    assert buf.pop_frame() is buf.pop_frame()
    buf.push(_ramp(3, 320 + 10))
    assert buf.pop_message() == b"\x12\x02\x80" + _ramp(3, 320)
    buf.mark_complete()
    padded = buf.pop_message()
    assert padded == b"\x12\x02\x80" + _ramp(323, 10) + bytes(620) and padded is not silent
    big = m.PlayoutBuffer(48000, kind=0x16, frame_ms=100)
    assert big.pop_message()[:3] == bytes((0x16,)) + (9600).to_bytes(2, "big")


def test_pop_message_needs_the_kind(m: ModuleType) -> None:
    buf = m.PlayoutBuffer(8000, start_frames=1)
    buf.push(_ramp(0, FRAME), "a")
    with pytest.raises(ConfigError):
        buf.pop_message()
    assert buf.buffered_samples == FRAME and buf.played_ms("a") == 0


BAD_CONFIGS = [
    {"rate": 0},
    {"rate": -8000},
    {"rate": 384000},
    {"rate": 8000.0},
    {"rate": 44100, "frame_ms": 15},
    {"frame_ms": 9},
    {"frame_ms": 101},
    {"start_frames": 0},
    {"capacity_ms": 60},
    {"start_frames": 10, "capacity_ms": 100},
    {"capacity_ms": 600001},
    {"fade_ms": -1},
    {"fade_ms": 11},
    {"fade_ms": "5"},
    {"kind": 0x01},
    {"kind": 0x12},
    {"kind": 0x19},
]


@pytest.mark.parametrize("config", BAD_CONFIGS)
def test_bad_configuration(config: dict[str, object]) -> None:
    kwargs = {"rate": 8000, **config}
    messages = []
    for module in (native, twin):
        with pytest.raises(ConfigError) as err:
            module.PlayoutBuffer(**kwargs)
        messages.append(str(err.value))
    assert messages[0] == messages[1]


def test_good_configurations(m: ModuleType) -> None:
    for rate, kind in ((8000, 0x10), (12000, 0x11), (24000, 0x13), (32000, 0x14),
                       (44100, 0x15), (96000, 0x17), (192000, 0x18)):
        buf = m.PlayoutBuffer(rate, kind=kind, frame_ms=10, capacity_ms=40, fade_ms=10)
        assert buf.frame_samples == rate // 100 and buf.kind == kind and buf.rate == rate
        assert len(buf.pop_message()) == 3 + rate // 50
    assert m.PlayoutBuffer(np.int64(8000)).rate == 8000


def test_bad_push_changes_nothing(m: ModuleType) -> None:
    buf = m.PlayoutBuffer(8000)
    with pytest.raises(BadSampleData) as err:
        buf.push(b"\x00\x01\x02", "a")
    assert err.value.length == 3
    with pytest.raises(BufferError):
        buf.push(np.zeros(8, dtype="<i2")[::2], "a")
    with pytest.raises(TypeError):
        buf.push("not audio", "a")
    assert buf.buffered_samples == 0 and not buf.complete and buf.dropped_samples == 0
    assert buf.push(b"", "a") == 0
    assert buf.push(memoryview(_ramp(0, 4)).cast("h"), "a") == 4
    assert buf.push(np.arange(4, dtype="<i2"), "a") == 4
    assert buf.push(bytearray(_ramp(0, 4)), "a") == 4


def test_counters_are_read_only(m: ModuleType) -> None:
    buf = m.PlayoutBuffer(8000)
    for name in ("underruns", "dropped_samples", "buffered_samples", "buffered_ms", "playing",
                 "complete", "frame_samples", "capacity_samples", "allocated_samples",
                 "current_item", "rate", "kind"):
        with pytest.raises(AttributeError):
            setattr(buf, name, 1)


def test_a_buffer_never_initialised_refuses_to_pop(m: ModuleType) -> None:
    # The native one once copied from its NULL ring; the twin has no attributes to read.
    buf = m.PlayoutBuffer.__new__(m.PlayoutBuffer)
    with pytest.raises((TypeError, AttributeError)):
        buf.pop_frame()
    with pytest.raises((TypeError, AttributeError, ConfigError)):
        buf.pop_message()


def test_reset_keeps_the_counters(m: ModuleType) -> None:
    buf = m.PlayoutBuffer(8000, capacity_ms=100)
    assert buf.push(_ramp(0, 900), "a") == 800
    for _ in range(5):
        buf.pop_frame()
    buf.push(_ramp(0, 10), "a")
    assert buf.pop_frame() == SILENCE
    before = (buf.underruns, buf.dropped_samples, buf.played_ms("a"))
    assert before == (1, 100, 100)
    buf.reset()
    assert (buf.underruns, buf.dropped_samples, buf.played_ms("a")) == before
    assert (buf.buffered_samples, buf.playing, buf.complete, buf.current_item) == (
        0, False, False, None,
    )
    assert buf.clear() is None


ITEM_IDS = [None, "a", "b", "c", *(f"x{i}" for i in range(18))]

# Operation kinds, weighted by repetition. Push sizes are in frames, so that on average a
# little more audio comes in than the pops take out: the buffer wanders between empty and
# full, through underruns, growth, drops at capacity and shrinking, at every rate.
_KINDS = (["push"] * 3 + ["trickle"] * 3 + ["burst"] + ["pop_frame"] * 4 + ["pop_message"] * 4
          + ["complete"] * 2 + ["clear", "reset", "odd"])
_PUSH_FRAMES = {"push": (0.0, 3.0), "trickle": (0.0, 0.3), "burst": (2.0, 6.0)}
operations = st.lists(
    st.tuples(st.sampled_from(_KINDS), st.floats(0.0, 1.0), st.sampled_from(ITEM_IDS)),
    min_size=20,
    max_size=150,
)

RATES_AND_KINDS = st.sampled_from([(8000, 0x10), (12000, 0x11), (16000, 0x12),
                                   (24000, 0x13), (44100, 0x15)])


@settings(max_examples=250, deadline=None)
@given(
    ops=operations,
    config=RATES_AND_KINDS,
    frame_ms=st.sampled_from([10, 20, 30]),
    start=st.integers(1, 4),
    fade=st.integers(0, 10),
    capacity=st.integers(0, 300),
    seed=st.integers(0, 2**32 - 1),
)
def test_native_equals_twin(ops: list[tuple[str, float, str | None]], config: tuple[int, int],
                            frame_ms: int, start: int, fade: int, capacity: int,
                            seed: int) -> None:
    rate, kind = config
    rng = np.random.default_rng(seed)
    kwargs = {"frame_ms": frame_ms, "start_frames": start, "fade_ms": fade, "kind": kind,
              "capacity_ms": max(4, start) * frame_ms + capacity}
    a, b = native.PlayoutBuffer(rate, **kwargs), twin.PlayoutBuffer(rate, **kwargs)
    for op, fraction, item_id in ops:
        if op in _PUSH_FRAMES:
            low, high = _PUSH_FRAMES[op]
            n = int((low + (high - low) * fraction) * a.frame_samples)
            pcm = rng.integers(-32768, 32768, n, dtype="<i2").tobytes()
            assert a.push(pcm, item_id) == b.push(pcm, item_id)
        elif op == "odd":
            pcm = bytes(2 * int(rng.integers(0, 50)) + 1)
            with pytest.raises(BadSampleData):
                a.push(pcm)
            with pytest.raises(BadSampleData):
                b.push(pcm)
        elif op in ("pop_frame", "pop_message"):
            assert getattr(a, op)() == getattr(b, op)()
        elif op == "complete":
            a.mark_complete(), b.mark_complete()
        elif op == "clear":
            assert a.clear() == b.clear()
        else:
            a.reset(), b.reset()
        for attr in ("underruns", "dropped_samples", "buffered_samples", "buffered_ms",
                     "playing", "complete", "allocated_samples", "current_item"):
            assert getattr(a, attr) == getattr(b, attr), attr
        for item in ITEM_IDS:
            assert a.played_ms(item) == b.played_ms(item), item
