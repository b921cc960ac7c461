"""What a load test measured, computed from what the load generator and the simulator recorded.

Pure functions over finished recordings: no I/O, no clock. Times are seconds from
``time.monotonic()``; the load generator and the simulator run in one process, so their times
compare directly. Frames are 20 ms.

A response's audio shows up at the caller as a *run*: a stretch of audio frames in which gaps of
at most ``max_gap`` silent frames are underruns (the engine had nothing to play on time), not the
end of the response. A longer gap ends the run: the next response cannot start sooner, because the
caller must speak in between.
"""

from __future__ import annotations

import array
import math
from bisect import bisect_right
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from engine.stats import Pacing, json_ms, pacing, percentile

__all__ = [
    "CallTrace",
    "Run",
    "SimTrace",
    "Spread",
    "all_pacing",
    "append_latencies",
    "barge_in_stops",
    "first_frame_delays",
    "loud_stretches",
    "loudest_stretch",
    "model_share",
    "response_count",
    "response_intervals",
    "response_pacing",
    "runs",
    "summary",
    "tone_snr",
    "underruns",
]

FRAME_PERIOD = 0.020
MIN_TONE_SECONDS = 0.1


@dataclass(slots=True)
class CallTrace:
    """What the load generator recorded on one call.

    Attributes:
        rx_times: ``'d'`` array, the arrival time of every frame received from the engine.
        rx_audio: one byte per received frame: 1 if it carried model audio (not all zeros).
        tx_times: ``'d'`` array, the send time of caller audio frame k at index k.
        up_samples_per_frame: upstream samples one caller frame becomes (480 for pcm16 at
            24 kHz, 160 for pcmu).
    """

    rx_times: array.array[float]
    rx_audio: bytearray
    tx_times: array.array[float]
    up_samples_per_frame: int


@dataclass(slots=True)
class SimTrace:
    """What the simulator recorded for the same call.

    Attributes:
        first_deltas: send time of the first audio delta of each response.
        speech_started: send time of every ``input_audio_buffer.speech_started``.
        appends: (receive time, cumulative input samples received after that append).
    """

    first_deltas: list[float]
    speech_started: list[float]
    appends: list[tuple[float, int]]


@dataclass(frozen=True, slots=True)
class Run:
    """One response's audio: indices of its first and last audio frame, and its silent frames."""

    first: int
    last: int
    underruns: int


@dataclass(frozen=True, slots=True)
class Spread:
    """Count, p50, p99 and max of a set of durations, in ms (NaN when empty)."""

    count: int
    p50_ms: float
    p99_ms: float
    max_ms: float

    def as_dict(self) -> dict[str, float | int | None]:
        """Plain values for JSON (NaN becomes None)."""
        return {"count": self.count, "p50_ms": json_ms(self.p50_ms),
                "p99_ms": json_ms(self.p99_ms), "max_ms": json_ms(self.max_ms)}


def _times(values: array.array[float]) -> npt.NDArray[np.float64]:
    """A no-copy numpy view of a ``'d'`` array."""
    return np.frombuffer(values, dtype=np.float64) if len(values) else np.empty(0, np.float64)


def runs(trace: CallTrace, max_gap: int = 10) -> list[Run]:
    """The runs of audio frames in ``trace``, in order.

    Gaps of at most ``max_gap`` silent frames between two audio frames stay inside the run and
    count as underruns; a longer gap starts a new run.
    """
    audio = np.flatnonzero(np.frombuffer(trace.rx_audio, dtype=np.uint8))
    if audio.size == 0:
        return []
    breaks = np.flatnonzero(np.diff(audio) > max_gap + 1)
    starts = [0, *(breaks + 1).tolist()]
    ends = [*breaks.tolist(), audio.size - 1]
    found = []
    for start, end in zip(starts, ends, strict=True):
        first, last = int(audio[start]), int(audio[end])
        found.append(Run(first, last, (last - first + 1) - (end - start + 1)))
    return found


def response_pacing(
    traces: Iterable[CallTrace], max_gap: int = 10, period: float = FRAME_PERIOD,
    cuts: Iterable[Sequence[float]] | None = None,
) -> Pacing:
    """Pacing of the arrival intervals between consecutive frames inside the same run.

    ``cuts`` gives, per trace, the times the caller barged in (the simulator's
    ``speech_started``): a run is judged only up to the first cut inside it, because the faded
    tail after a barge-in is sent early on purpose and is not part of the paced response.
    """
    _, intervals = response_intervals(traces, max_gap, cuts)
    return pacing(intervals.tolist(), period)


def response_intervals(
    traces: Iterable[CallTrace], max_gap: int = 10,
    cuts: Iterable[Sequence[float]] | None = None,
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """The intervals :func:`response_pacing` judges, and when each ended.

    Returns:
        (ends, intervals): per interval, the arrival time of its second frame, and its
        length in seconds, in the traces' order.
    """
    stretches: list[npt.NDArray[np.float64]] = []
    cut_lists = iter(cuts) if cuts is not None else None
    for trace in traces:
        times = _times(trace.rx_times)
        cut = sorted(next(cut_lists)) if cut_lists is not None else []
        for run in runs(trace, max_gap):
            stretch = times[run.first:run.last + 1]
            j = bisect_right(cut, float(stretch[0]))
            if j < len(cut) and cut[j] <= stretch[-1]:
                stretch = stretch[stretch <= cut[j]]
            stretches.append(stretch)
    if not stretches:
        return np.empty(0, np.float64), np.empty(0, np.float64)
    return (np.concatenate([s[1:] for s in stretches]),
            np.concatenate([np.diff(s) for s in stretches]))


def all_pacing(traces: Iterable[CallTrace], period: float = FRAME_PERIOD) -> Pacing:
    """Pacing of every arrival interval of every call, silence included."""
    intervals: list[float] = []
    for trace in traces:
        intervals.extend(np.diff(_times(trace.rx_times)).tolist())
    return pacing(intervals, period)


def first_frame_delays(trace: CallTrace, sim: SimTrace, window: float = 2.0) -> list[float]:
    """Seconds from each response's first audio delta (sent by the simulator) to its first frame.

    A run is matched with the latest first delta sent at or before its first frame arrived; a run
    with none within ``window`` seconds is skipped.
    """
    deltas = sorted(sim.first_deltas)
    delays = []
    for run in runs(trace):
        arrived = trace.rx_times[run.first]
        i = bisect_right(deltas, arrived) - 1
        if i >= 0 and arrived - deltas[i] <= window:
            delays.append(arrived - deltas[i])
    return delays


def barge_in_stops(trace: CallTrace, sim: SimTrace, max_gap: int = 10) -> list[float]:
    """Seconds model audio kept arriving after the model heard the caller speak over it.

    For each ``speech_started`` sent while a run was arriving (between its first and last frame),
    the time from that event to the run's last frame. Events outside every run give nothing.
    """
    found = runs(trace, max_gap)
    starts = [trace.rx_times[run.first] for run in found]
    stops = []
    for started in sim.speech_started:
        i = bisect_right(starts, started) - 1
        if i >= 0:
            end = trace.rx_times[found[i].last]
            if started <= end:
                stops.append(end - started)
    return stops


def append_latencies(trace: CallTrace, sim: SimTrace) -> tuple[list[float], list[float]]:
    """Seconds from a caller frame's send to the simulator's receipt of the append carrying it.

    Returns:
        (newest, oldest): per append, the latency of the newest caller frame any of whose audio it
        includes, and of the oldest frame not entirely included by the appends before it. An
        append that adds no samples, or whose frame was not recorded as sent, is skipped.
    """
    per_frame = trace.up_samples_per_frame
    sent = len(trace.tx_times)
    newest: list[float] = []
    oldest: list[float] = []
    before = 0
    for received, total in sim.appends:
        if total <= before:
            continue
        new_index = -(-total // per_frame) - 1
        old_index = before // per_frame
        if 0 <= new_index < sent:
            newest.append(received - trace.tx_times[new_index])
        if 0 <= old_index < sent:
            oldest.append(received - trace.tx_times[old_index])
        before = total
    return newest, oldest


def tone_snr(
    pcm: bytes | npt.NDArray[np.floating] | npt.NDArray[np.integer],
    rate: int,
    freq: float,
    trim_s: float = 0.05,
) -> float:
    """SNR in dB of a sine at ``freq`` in ``pcm``: fitted sinusoid energy over residual energy.

    ``pcm`` is little-endian int16 bytes or an array of samples. ``trim_s`` seconds at each end
    are left out (resampler edges). The fit is least squares on sin, cos and a constant, so a DC
    offset is not counted as noise. Returns ``math.inf`` for an exact fit.

    Raises:
        ValueError: fewer than 0.1 s of samples remain after trimming.
    """
    if isinstance(pcm, bytes | bytearray | memoryview):
        samples = np.frombuffer(pcm, dtype="<i2").astype(np.float64)
    else:
        samples = np.asarray(pcm, dtype=np.float64).ravel()
    trim = round(trim_s * rate)
    kept = samples[trim:samples.size - trim]
    if kept.size < MIN_TONE_SECONDS * rate:
        raise ValueError(
            f"tone_snr needs at least {MIN_TONE_SECONDS:g} s after trimming {trim_s:g} s at each "
            f"end; {samples.size} samples at {rate} Hz leave {max(kept.size, 0)}"
        )
    phase = 2.0 * math.pi * freq * np.arange(kept.size) / rate
    basis = np.column_stack((np.sin(phase), np.cos(phase), np.ones(kept.size)))
    coef = np.linalg.lstsq(basis, kept, rcond=None)[0]
    tone = basis[:, :2] @ coef[:2]
    residual = kept - basis @ coef
    noise = float(np.dot(residual, residual))
    signal = float(np.dot(tone, tone))
    if noise == 0.0:
        return math.inf
    if signal == 0.0:
        return -math.inf
    return 10.0 * math.log10(signal / noise)


def loud_stretches(pcm: bytes, rate: int, threshold_rms: float = 300.0) -> list[tuple[int, int]]:
    """(first sample, samples) of each run of 10 ms blocks of int16 ``pcm`` above ``threshold_rms``.

    One response's audio at the caller, or one caller turn at the upstream.
    """
    x = np.frombuffer(pcm, "<i2", count=len(pcm) // 2).astype(np.float64)
    block = rate // 100
    blocks = x[: x.size // block * block].reshape(-1, block)
    loud = np.sqrt(np.mean(blocks**2, axis=1)) > threshold_rms
    found, start = [], None
    for i, flag in enumerate([*loud.tolist(), False]):
        if flag and start is None:
            start = i
        elif not flag and start is not None:
            found.append((start * block, (i - start) * block))
            start = None
    return found


def loudest_stretch(pcm: bytes, rate: int) -> bytes:
    """The samples of the longest of :func:`loud_stretches` (empty when there is none)."""
    found = loud_stretches(pcm, rate)
    if not found:
        return b""
    first, length = max(found, key=lambda stretch: stretch[1])
    return pcm[2 * first: 2 * (first + length)]


def summary(values_s: Sequence[float]) -> Spread:
    """Count, p50, p99 and max of durations given in seconds, reported in ms."""
    if not values_s:
        return Spread(0, math.nan, math.nan, math.nan)
    ms = [value * 1000.0 for value in values_s]
    return Spread(len(ms), percentile(ms, 50), percentile(ms, 99), max(ms))


def model_share(traces: Iterable[CallTrace]) -> float:
    """Fraction of all received frames that carried model audio; NaN with no frame."""
    frames = audio = 0
    for trace in traces:
        frames += len(trace.rx_audio)
        audio += int(np.count_nonzero(np.frombuffer(trace.rx_audio, dtype=np.uint8)))
    return audio / frames if frames else math.nan


def underruns(traces: Iterable[CallTrace], max_gap: int = 10) -> int:
    """Silent frames inside runs, over all calls."""
    return sum(run.underruns for trace in traces for run in runs(trace, max_gap))


def response_count(traces: Iterable[CallTrace], max_gap: int = 10) -> int:
    """Runs (responses heard by the caller), over all calls."""
    return sum(len(runs(trace, max_gap)) for trace in traces)
