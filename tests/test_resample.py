"""The streaming resampler: equal to its twin, chunking-proof, and meeting its quality targets."""

from __future__ import annotations

import math

import numpy as np
import pytest
from conftest import IMPLS, both, media_module
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.errors import BadSampleData, StreamFinished, UnsupportedRate
from engine.resample_filters import RATES, plan

native, twin = both("resample")
PAIRS = [(24000, r) for r in RATES if r != 24000] + [(r, 24000) for r in RATES if r != 24000]
CORE = [(8000, 24000), (24000, 8000), (16000, 24000), (24000, 16000)]


def _pcm(x: np.ndarray) -> bytes:
    return np.clip(np.rint(x), -32768, 32767).astype("<i2").tobytes()


def _samples(pcm: bytes) -> np.ndarray:
    return np.frombuffer(pcm, dtype="<i2").astype(np.float64)


def _tone(rate: int, freq: float, seconds: float, dbfs: float = -6.0) -> np.ndarray:
    n = np.arange(int(rate * seconds))
    return 32767 * 10 ** (dbfs / 20) * np.sin(2 * math.pi * freq * n / rate + 0.3)


def _chunked(r: object, pcm: bytes, sizes: list[int]) -> bytes:
    out, at, i = [], 0, 0
    while at < len(pcm):
        size = sizes[i % len(sizes)]
        out.append(r.process(pcm[at : at + size]))  # type: ignore[attr-defined]
        at += size
        i += 1
    out.append(r.process(b"", last=True))  # type: ignore[attr-defined]
    return b"".join(out)


def _fit(y: np.ndarray, rate: int, *freqs: float) -> tuple[list[float], np.ndarray]:
    """Amplitudes of ``freqs`` in ``y``, fitted jointly (least squares), and the residual.

    Fitting every frequency present at once matters: a lone fit of a weak leak would pick up
    the strong tone's own window leakage, around -80 dB for a second of audio.
    """
    n = np.arange(len(y))
    columns = [np.ones(len(y))]
    for freq in freqs:
        w = 2 * math.pi * freq * n / rate
        columns += [np.sin(w), np.cos(w)]
    basis = np.stack(columns, axis=1)
    coef, *_ = np.linalg.lstsq(basis, y, rcond=None)
    amps = [float(math.hypot(coef[1 + 2 * i], coef[2 + 2 * i])) for i in range(len(freqs))]
    return amps, y - basis @ coef


@settings(max_examples=40, deadline=None)
@given(
    pair=st.sampled_from(PAIRS),
    seed=st.integers(0, 2**32 - 1),
    length=st.integers(0, 3000),
    sizes=st.lists(st.integers(0, 700), min_size=1, max_size=8).filter(any),
    loud=st.booleans(),
)
def test_native_equals_twin_byte_for_byte(
    pair: tuple[int, int], seed: int, length: int, sizes: list[int], loud: bool
) -> None:
    rng = np.random.default_rng(seed)
    scale = 40000 if loud else 3000  # loud: clipping on the way in and out
    pcm = _pcm(rng.standard_normal(length) * scale)
    ours = _chunked(native.Resampler(*pair), pcm, sizes)
    assert ours == _chunked(twin.Resampler(*pair), pcm, sizes)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("pair", CORE + [(24000, 44100), (44100, 24000), (24000, 24000)])
def test_streaming_equals_one_shot_for_awkward_chunks(impl: str, pair: tuple[int, int]) -> None:
    m = media_module(impl, "resample")
    pcm = _pcm(np.random.default_rng(7).standard_normal(4801) * 5000)
    one_shot = m.Resampler(*pair).process(pcm, last=True)
    for sizes in ([1], [3, 5, 7], [320], [319, 2, 641], [0, 9999]):
        assert _chunked(m.Resampler(*pair), pcm, sizes) == one_shot, sizes


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("pair", PAIRS)
def test_total_output_after_last(impl: str, pair: tuple[int, int]) -> None:
    m = media_module(impl, "resample")
    for n in (0, 1, 159, 160, 1001):
        out = m.Resampler(*pair).process(bytes(2 * n), last=True)
        exact = n * pair[1] / pair[0]
        assert len(out) // 2 == math.ceil(exact)
        assert abs(len(out) // 2 - exact) < 1


@pytest.mark.parametrize("impl", IMPLS)
def test_errors_and_reset(impl: str) -> None:
    m = media_module(impl, "resample")
    with pytest.raises(UnsupportedRate) as err:
        m.Resampler(22050, 24000)
    assert err.value.rate == 22050
    with pytest.raises(UnsupportedRate, match="3 ms"):
        m.Resampler(8000, 48000)
    r = m.Resampler(8000, 24000)
    r.process(b"\x01\x02\x03")
    with pytest.raises(BadSampleData) as bad:
        r.process(b"\x04\x05", last=True)
    assert bad.value.length == 3  # the byte left over from before, and these two
    r.reset()
    pcm = _pcm(_tone(8000, 440, 0.1))
    first = r.process(pcm, last=True)
    with pytest.raises(StreamFinished):
        r.process(pcm)
    r.reset()
    assert r.process(pcm, last=True) == first
    assert (r.in_rate, r.out_rate) == (8000, 24000)


@pytest.mark.parametrize("impl", IMPLS)
def test_streams_keep_their_own_state_and_share_the_filter(impl: str) -> None:
    m = media_module(impl, "resample")
    a, b = m.Resampler(16000, 24000), m.Resampler(16000, 24000)
    tone, noise = _pcm(_tone(16000, 1000, 0.05)), _pcm(np.full(800, 12345.0))
    a.process(noise)
    assert b.process(tone, last=True) == m.Resampler(16000, 24000).process(tone, last=True)
    assert plan(16000, 24000) is plan(16000, 24000)
    assert not plan(16000, 24000).table.flags.writeable


@pytest.mark.parametrize("pair", PAIRS)
def test_filter_response_meets_the_targets(pair: tuple[int, int]) -> None:
    p = plan(*pair)
    proto = p.table.T.reshape(-1).astype(np.float64) / p.up  # back to the prototype, DC gain 1
    inter = min(pair) * max(p.up, p.down)
    freqs = np.fft.rfftfreq(1 << 20, 1 / inter)
    mag = np.abs(np.fft.rfft(proto, 1 << 20))
    low = min(pair)
    passband = mag[freqs <= 0.45 * low]
    stopband = mag[freqs >= 0.55 * low]
    assert 20 * math.log10(passband.max() / passband.min()) <= 0.1
    assert -20 * math.log10(stopband.max()) >= 90
    assert p.delay_samples / pair[1] <= 0.003


@pytest.mark.parametrize("pair", PAIRS)
def test_passband_tone_snr(pair: tuple[int, int]) -> None:
    src, dst = pair
    freq = 0.3 * min(pair)
    out = _samples(native.Resampler(src, dst).process(_pcm(_tone(src, freq, 0.5)), last=True))
    (amp,), residual = _fit(out[dst // 50 : -dst // 50], dst, freq)
    snr = 20 * math.log10(amp / math.sqrt(2) / residual.std())
    assert snr >= 85, snr
    assert abs(20 * math.log10(amp / (32767 * 10 ** (-6 / 20)))) <= 0.1


@pytest.mark.parametrize(
    ("src", "dst", "freq", "leaks"),
    [
        (24000, 16000, 10000, [6000]),  # above 16 kHz's band: would alias to 6 kHz
        (24000, 8000, 6000, [2000]),  # above 8 kHz's band: would alias to 2 kHz
        (16000, 24000, 7000, [9000, 1000]),  # a 7 kHz tone's images at 16-7 and 23 -> 1 kHz
    ],
)
def test_out_of_band_rejection(src: int, dst: int, freq: int, leaks: list[int]) -> None:
    level = 32767 * 10 ** (-6 / 20)
    out = _samples(native.Resampler(src, dst).process(_pcm(_tone(src, freq, 1.0)), last=True))
    body = out[dst // 20 : -dst // 20]
    amps, _ = _fit(body, dst, freq, *leaks)
    for leak, amp in zip(leaks, amps[1:], strict=True):
        assert 20 * math.log10(level / max(amp, 1e-9)) >= 90, leak


@pytest.mark.parametrize("pair", CORE)
def test_no_click_at_chunk_seams(pair: tuple[int, int]) -> None:
    src, dst = pair
    freq = 1000.0
    pcm = _pcm(_tone(src, freq, 0.4))
    frame = src // 50 * 2
    out = _samples(_chunked(native.Resampler(src, dst), pcm, [frame, frame - 2, 6, frame + 2]))
    body = out[dst // 50 : -dst // 50]
    second_difference = np.abs(np.diff(body, 2))
    ideal = 32767 * 10 ** (-6 / 20) * (2 * math.pi * freq / dst) ** 2
    assert second_difference.max() <= ideal + 4  # a click is a local jump far above the curve


@pytest.mark.parametrize("pair", CORE)
def test_output_is_time_aligned(pair: tuple[int, int]) -> None:
    src, dst = pair
    rng = np.random.default_rng(3)
    low = min(pair)
    # Band-limited noise, so both sides carry the same signal.
    spectrum = np.fft.rfft(rng.standard_normal(src))
    spectrum[np.fft.rfftfreq(src, 1 / src) > 0.4 * low] = 0
    x = np.fft.irfft(spectrum, src)
    x *= 8000 / x.std()
    y = _samples(native.Resampler(src, dst).process(_pcm(x), last=True))
    t = np.arange(len(y)) * src / dst  # where each output sample sits on the input's time axis
    expected = np.interp(t, np.arange(len(x)), x)
    lags = range(-5, 6)
    errors = [np.abs(np.roll(y, lag) - expected)[50:-50].mean() for lag in lags]
    assert lags[int(np.argmin(errors))] == 0
    assert native.Resampler(src, dst).delay() == twin.Resampler(src, dst).delay()
