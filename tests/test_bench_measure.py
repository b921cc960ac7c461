"""The load test's figures from synthetic recordings whose answers are known by hand."""

from __future__ import annotations

import array
import math
from collections.abc import Sequence

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.bench.measure import (
    CallTrace,
    Run,
    SimTrace,
    Spread,
    all_pacing,
    append_latencies,
    barge_in_stops,
    first_frame_delays,
    loud_stretches,
    loudest_stretch,
    model_share,
    response_count,
    response_intervals,
    response_pacing,
    runs,
    summary,
    tone_snr,
    underruns,
)

T0 = 100.0


def trace(audio: str, times: list[float] | None = None, tx: list[float] | None = None,
          per_frame: int = 480) -> CallTrace:
    """A trace from a pattern like ``"..##.#"`` (``#`` audio); frames 20 ms apart from T0."""
    if times is None:
        times = [T0 + 0.020 * i for i in range(len(audio))]
    return CallTrace(array.array("d", times), bytearray(c == "#" for c in audio),
                     array.array("d", tx or []), per_frame)


def sim(first_deltas: Sequence[float] = (), speech_started: Sequence[float] = (),
        appends: Sequence[tuple[float, int]] = ()) -> SimTrace:
    return SimTrace(list(first_deltas), list(speech_started), list(appends))


# runs


def test_runs_merge_short_gaps_as_underruns_and_split_on_long_ones() -> None:
    gap11 = "." * 11
    t = trace("..###..##" + gap11 + "#.#..")
    assert runs(t) == [Run(2, 8, 2), Run(20, 22, 1)]
    assert underruns([t]) == 3
    assert response_count([t]) == 2


def test_a_gap_of_exactly_max_gap_stays_inside_the_run() -> None:
    assert runs(trace("#" + "." * 10 + "#")) == [Run(0, 11, 10)]
    assert runs(trace("#" + "." * 3 + "#"), max_gap=2) == [Run(0, 0, 0), Run(4, 4, 0)]


def test_runs_of_silence_and_of_nothing() -> None:
    assert runs(trace("")) == []
    assert runs(trace("....")) == []
    assert model_share([trace("")]) != model_share([trace("")])  # NaN
    assert model_share([trace("#..."), trace("##..")]) == pytest.approx(3 / 8)


def reference_runs(audio: list[bool], max_gap: int) -> list[Run]:
    """Walk the frames one by one, the obvious way."""
    found: list[Run] = []
    first = last = None
    for i, is_audio in enumerate(audio):
        if not is_audio:
            continue
        if last is not None and i - last - 1 > max_gap:
            assert first is not None
            found.append(Run(first, last, sum(not a for a in audio[first:last + 1])))
            first = None
        if first is None:
            first = i
        last = i
    if first is not None and last is not None:
        found.append(Run(first, last, sum(not a for a in audio[first:last + 1])))
    return found


@given(st.lists(st.booleans(), max_size=200), st.integers(min_value=0, max_value=12))
def test_runs_partition_the_audio_frames(audio: list[bool], max_gap: int) -> None:
    t = CallTrace(array.array("d", range(len(audio))), bytearray(audio), array.array("d"), 480)
    found = runs(t, max_gap)
    assert found == reference_runs(audio, max_gap)
    for a, b in zip(found, found[1:], strict=False):
        assert a.last < b.first
    covered = [i for r in found for i in range(r.first, r.last + 1) if audio[i]]
    assert covered == [i for i, a in enumerate(audio) if a]
    assert underruns([t], max_gap) == sum(
        not audio[i] for r in found for i in range(r.first, r.last + 1))


# pacing


def test_response_pacing_sees_one_late_frame() -> None:
    times = [T0 + 0.020 * i for i in range(10)]
    times[5:] = [t + 0.003 for t in times[5:]]
    t = trace("#" * 10, times)
    p = response_pacing([t])
    assert p.intervals == 9
    assert p.max_ms == pytest.approx(3.0)
    assert p.p50_ms == pytest.approx(0.0, abs=1e-6)
    assert all_pacing([t]).max_ms == pytest.approx(3.0)


def test_response_pacing_leaves_out_intervals_outside_runs() -> None:
    times = [T0 + 0.020 * i for i in range(30)]
    times[2] += 0.050  # between two silent frames: only all_pacing sees it
    times[25] += 0.007  # inside the second run
    pattern = "...." + "#" * 5 + "." * 11 + "#" * 8 + ".."
    p = response_pacing([trace(pattern, times)])
    assert p.intervals == 4 + 7
    assert p.max_ms == pytest.approx(7.0)
    everything = all_pacing([trace(pattern, times)])
    assert everything.intervals == 29
    assert everything.max_ms == pytest.approx(50.0)


def test_response_intervals_say_when_each_judged_interval_ended() -> None:
    times = [T0 + 0.020 * i for i in range(30)]
    times[25] += 0.007
    pattern = "...." + "#" * 5 + "." * 11 + "#" * 8 + ".."
    ends, intervals = response_intervals([trace(pattern, times), trace("#" * 3)])
    assert ends.tolist() == [*times[5:9], *times[21:28], T0 + 0.020, T0 + 0.040]
    assert intervals.tolist() == pytest.approx(
        [0.020] * 4 + [0.020] * 4 + [0.027, 0.013, 0.020] + [0.020] * 2)
    empty_ends, empty = response_intervals([trace("....")])
    assert empty_ends.size == 0 and empty.size == 0


def test_pacing_with_no_interval_is_nan() -> None:
    assert math.isnan(response_pacing([trace("....")]).max_ms)
    assert all_pacing([]).intervals == 0


# first frame, barge-in, appends


def test_first_frame_delay_matches_the_latest_delta_before_the_run() -> None:
    t = trace("." * 5 + "#" * 5 + "." * 20 + "#" * 5)
    first_a, first_b = t.rx_times[5], t.rx_times[30]
    s = sim(first_deltas=[first_a - 0.5, first_a - 0.0032, first_b - 0.010])
    assert first_frame_delays(t, s) == [pytest.approx(0.0032), pytest.approx(0.010)]


def test_a_run_with_no_delta_in_the_window_is_skipped() -> None:
    times = [T0 + 0.020 * i for i in range(5)] + [T0 + 3.0 + 0.020 * i for i in range(20)]
    t = trace("#" * 5 + "." * 15 + "#" * 5, times)
    s = sim(first_deltas=[T0 - 0.004])
    assert first_frame_delays(t, s) == [pytest.approx(0.004)]
    assert first_frame_delays(t, s, window=4.0) == [pytest.approx(0.004),
                                                     pytest.approx(3.0 + 0.3 + 0.004)]


def test_first_frame_delay_ignores_deltas_after_the_first_frame() -> None:
    t = trace("..###")
    assert first_frame_delays(t, sim(first_deltas=[t.rx_times[2] + 0.001])) == []


def test_barge_in_stop_is_time_from_speech_started_to_last_audio_frame() -> None:
    t = trace("#" * 10 + "." * 20 + "#" * 3)
    last = t.rx_times[9]
    s = sim(speech_started=[last - 0.015, t.rx_times[20], t.rx_times[32] + 1.0])
    assert barge_in_stops(t, s) == [pytest.approx(0.015)]


def test_barge_in_at_the_edges_of_a_run() -> None:
    t = trace("..####..")
    s = sim(speech_started=[t.rx_times[2], t.rx_times[5], t.rx_times[1]])
    assert barge_in_stops(t, s) == [pytest.approx(0.060), 0.0]


def test_append_latencies_by_hand() -> None:
    tx = [10.0 + 0.020 * k for k in range(6)]
    t = trace("", tx=tx, per_frame=480)
    # 480: frame 0 whole; 1200: frames 1 and half of 2; 1440: rest of 2; 4000: up to frame 8,
    # which was never sent.
    s = sim(appends=[(10.05, 480), (10.10, 1200), (10.12, 1440), (10.30, 4000)])
    newest, oldest = append_latencies(t, s)
    assert newest == pytest.approx([10.05 - tx[0], 10.10 - tx[2], 10.12 - tx[2]])
    assert oldest == pytest.approx([10.05 - tx[0], 10.10 - tx[1], 10.12 - tx[2], 10.30 - tx[3]])


def test_append_latencies_for_pcmu_frames() -> None:
    tx = [0.0, 0.020, 0.040]
    t = trace("", tx=tx, per_frame=160)
    newest, oldest = append_latencies(t, sim(appends=[(0.1, 161), (0.2, 320)]))
    assert newest == pytest.approx([0.1 - 0.020, 0.2 - 0.020])
    assert oldest == pytest.approx([0.1, 0.2 - 0.020])


# tone


def sine(freq: float, rate: int = 8000, seconds: float = 1.0, amp: float = 10000.0) -> np.ndarray:
    return amp * np.sin(2 * np.pi * freq * np.arange(int(rate * seconds)) / rate + 0.3)


def test_pure_sine_has_a_very_high_snr() -> None:
    assert tone_snr(sine(440.0), 8000, 440.0) > 120.0


def test_int16_bytes_are_accepted() -> None:
    pcm = np.round(sine(440.0)).astype("<i2").tobytes()
    assert 80.0 < tone_snr(pcm, 8000, 440.0) < 120.0  # int16 quantisation noise


def test_snr_with_known_white_noise() -> None:
    rng = np.random.default_rng(1234)
    amp, sigma = 1000.0, 10.0
    noisy = sine(440.0, amp=amp) + rng.normal(0.0, sigma, 8000)
    true = 10 * math.log10((amp * amp / 2) / (sigma * sigma))
    assert tone_snr(noisy, 8000, 440.0) == pytest.approx(true, abs=0.5)


def test_wrong_frequency_click_step_and_dc() -> None:
    assert tone_snr(sine(441.0), 8000, 440.0) < 10.0
    clicked = sine(440.0)
    clicked[4000] += 30000.0
    assert tone_snr(clicked, 8000, 440.0) < 40.0
    stepped = sine(440.0)
    stepped[4000:] += 500.0
    assert tone_snr(stepped, 8000, 440.0) < 40.0
    assert tone_snr(sine(440.0) + 3000.0, 8000, 440.0) > 120.0


def test_exact_fit_is_infinite_and_short_input_is_refused() -> None:
    assert tone_snr(np.zeros(8000), 8000, 440.0) == math.inf
    with pytest.raises(ValueError, match="at least 0.1 s"):
        tone_snr(sine(440.0, seconds=0.19), 8000, 440.0)
    assert tone_snr(sine(440.0, seconds=0.2), 8000, 440.0) > 120.0


# summary


def test_summary_in_ms() -> None:
    s = summary([0.001 * v for v in range(1, 101)])
    assert s == Spread(100, 50.0, 99.0, 100.0)
    assert s.as_dict() == {"count": 100, "p50_ms": 50.0, "p99_ms": 99.0, "max_ms": 100.0}
    assert summary([]).as_dict() == {"count": 0, "p50_ms": None, "p99_ms": None, "max_ms": None}


def test_response_pacing_stops_at_a_barge_in() -> None:
    # 20 ms frames of audio, then a barge-in at 0.105 s and the faded tail 2 ms later.
    times = [0.02 * i for i in range(6)] + [0.102]
    times.sort()
    trace = CallTrace(array.array("d", times), bytearray([1] * len(times)), array.array("d"), 480)
    uncut = response_pacing([trace])
    cut = response_pacing([trace], cuts=[[0.101]])
    assert uncut.max_ms == pytest.approx(18.0)
    assert cut.intervals == 5 and cut.max_ms == pytest.approx(0.0, abs=1e-9)
    assert response_pacing([trace], cuts=[[5.0]]) == uncut  # a cut outside every run


def test_loud_stretches_find_each_turn_and_the_longest() -> None:
    rate = 8000
    tone = (np.sin(2 * np.pi * 400 * np.arange(rate) / rate) * 8000).astype("<i2")
    quiet = np.zeros(rate // 2, "<i2")
    pcm = np.concatenate([quiet, tone[:1600], quiet, tone, quiet]).tobytes()
    assert loud_stretches(pcm, rate) == [(4000, 1600), (9600, 8000)]
    assert loudest_stretch(pcm, rate) == tone.tobytes()
    assert loudest_stretch(bytes(2 * rate), rate) == b""
