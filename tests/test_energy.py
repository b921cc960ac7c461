"""The simulator VAD's window energies: the native pass against its twin and a plain sum."""

from __future__ import annotations

from array import array

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine._native import energy as native
from engine._pure import energy as pure
from engine.sim.vad import EnergyVad, SpeechStarted, SpeechStopped

samples = st.lists(st.integers(-32768, 32767), max_size=1200)


def plain(data: bytes, window: int, threshold: float) -> bytes:
    """The definition, one window at a time in Python integers."""
    x = array("h", data[: len(data) // 2 * 2])
    return bytes(int(sum(v * v for v in x[i:i + window]) >= threshold)
                 for i in range(0, len(x) // window * window, window))


@settings(max_examples=300, deadline=None)
@given(values=samples, window=st.integers(1, 300), threshold=st.floats(0, 2.0**40),
       odd=st.booleans())
def test_native_equals_twin_equals_the_definition(values: list[int], window: int,
                                                  threshold: float, odd: bool) -> None:
    data = array("h", values).tobytes() + (b"\x01" if odd else b"")
    want = plain(data, window, threshold)
    assert native.voiced_windows(data, window, threshold) == want
    assert pure.voiced_windows(bytearray(data), window, threshold) == want


def test_full_scale_windows_and_the_exact_threshold() -> None:
    loud = array("h", [-32768] * 240).tobytes()
    edge = 240 * 32768.0**2
    for m in (native, pure):
        assert m.voiced_windows(loud * 3, 240, edge) == b"\x01\x01\x01"  # reaches: voiced
        assert m.voiced_windows(loud, 240, edge + 1) == b"\x00"
        assert m.voiced_windows(loud[:-2], 240, 0.0) == b""  # no whole window
        with pytest.raises(ValueError, match="positive"):
            m.voiced_windows(loud, 0, 1.0)


@pytest.mark.parametrize("window", [2**62, 2**63 - 1])
def test_a_window_too_long_for_any_buffer_has_no_window(window: int) -> None:
    # Twice the window once overflowed in the native pass.
    for m in (native, pure):
        assert m.voiced_windows(bytes(64), window, 0.0) == b""


@settings(max_examples=100, deadline=None)
@given(turns=st.lists(st.tuples(st.booleans(), st.integers(1, 40)), min_size=1, max_size=12),
       cuts=st.lists(st.integers(1, 4000), max_size=20))
def test_vad_events_do_not_depend_on_how_the_audio_is_split(
        turns: list[tuple[bool, int]], cuts: list[int]) -> None:
    pcm = b"".join((array("h", [9000, -9000] * 40).tobytes() if loud else bytes(160)) * n
                   for loud, n in turns)  # 10 ms windows at 8 kHz, loud or silent
    whole = EnergyVad(8000, -30.0, 200, 100)
    want = whole.feed(pcm)
    split = EnergyVad(8000, -30.0, 200, 100)
    got: list[SpeechStarted | SpeechStopped] = []
    points = sorted({c % (len(pcm) + 1) for c in cuts} | {0, len(pcm)})
    for a, b in zip(points, points[1:], strict=False):
        got += split.feed(pcm[a:b])
    assert got == want and split.received_ms == whole.received_ms
    starts = sum(isinstance(e, SpeechStarted) for e in want)
    assert (starts > 0) == any(loud for loud, _ in turns)
