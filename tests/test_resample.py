"""The streaming resampler: equal to its twin, chunking-proof, and meeting its targets for
quality (ripple, rejection, SNR, no clicks at chunk seams) and timing (at most 3 ms of delay,
output aligned with input)."""

from __future__ import annotations

import itertools
import math
from types import ModuleType

import numpy as np
import pytest
from conftest import IMPLS, both, media_module
from hypothesis import given, settings
from hypothesis import strategies as st

from engine._pure import resample as reference
from engine.errors import BadSampleData, StreamFinished, UnsupportedRate

native, twin = both("resample")
RATES = reference.RATES
HUB = [(24000, r) for r in RATES if r != 24000] + [(r, 24000) for r in RATES if r != 24000]
CORE = [(8000, 24000), (24000, 8000), (16000, 24000), (24000, 16000)]
LEVEL = 32767 * 10 ** (-6 / 20)  # -6 dBFS


def _supported_pairs() -> list[tuple[int, int]]:
    pairs = []
    for pair in itertools.permutations(RATES, 2):
        try:
            reference.design_for(*pair)
        except UnsupportedRate:
            continue
        pairs.append(pair)
    return pairs


SUPPORTED = _supported_pairs()


@pytest.fixture(params=IMPLS)
def m(request: pytest.FixtureRequest) -> ModuleType:
    return media_module(request.param, "resample")


def _pcm(x: np.ndarray) -> bytes:
    return np.clip(np.rint(x), -32768, 32767).astype("<i2").tobytes()  # type: ignore[no-any-return]


def _samples(pcm: bytes) -> np.ndarray:
    return np.frombuffer(pcm, dtype="<i2").astype(np.float64)


def _tone(rate: int, freq: float, seconds: float, level: float = LEVEL) -> np.ndarray:
    n = np.arange(int(rate * seconds))
    return level * np.sin(2 * math.pi * freq * n / rate + 0.3)  # type: ignore[no-any-return]


def _noise(rate: int, band: float, seconds: float, seed: int = 3) -> np.ndarray:
    """Periodic noise with every frequency below ``band`` Hz and none above, 8000 rms."""
    n = int(rate * seconds)
    spectrum = np.fft.rfft(np.random.default_rng(seed).standard_normal(n))
    spectrum[np.fft.rfftfreq(n, 1 / rate) >= band] = 0
    x = np.fft.irfft(spectrum, n)
    return x * (8000 / x.std())  # type: ignore[no-any-return]


def _chunks(pcm: bytes, sizes: list[int]) -> list[bytes]:
    """``pcm`` cut into pieces of ``sizes`` bytes, cycled (zeros give empty pieces)."""
    out, at = [], 0
    for size in itertools.cycle(sizes):
        if at >= len(pcm):
            return out
        out.append(pcm[at : at + size])
        at += size
    raise AssertionError("unreachable")


def _stream(r: object, pcm: bytes, sizes: list[int], last: bool = True) -> list[bytes]:
    outs = [r.process(chunk) for chunk in _chunks(pcm, sizes)]  # type: ignore[attr-defined]
    if last:
        outs.append(r.process(b"", last=True))  # type: ignore[attr-defined]
    return outs


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
    return amps, y - basis @ coef  # type: ignore[no-any-return]


def _body(y: np.ndarray, rate: int, ms: int = 20) -> np.ndarray:
    """``y`` without its first and last ``ms`` milliseconds (the edges of a finite signal)."""
    skip = rate * ms // 1000
    return y[skip:-skip]


def _db(ratio: float) -> float:
    return 20 * math.log10(max(ratio, 1e-12))


# --- native against twin, streaming against one shot -----------------------------------------


@settings(max_examples=200, deadline=None)
@given(
    pair=st.sampled_from([*SUPPORTED, (24000, 24000), (8000, 8000)]),
    seed=st.integers(0, 2**32 - 1),
    length=st.integers(0, 6001),
    sizes=st.lists(st.integers(0, 1001), min_size=1, max_size=8).filter(any),
    loud=st.booleans(),
    last=st.booleans(),
)
def test_native_equals_twin_byte_for_byte(
    pair: tuple[int, int], seed: int, length: int, sizes: list[int], loud: bool, last: bool
) -> None:
    rng = np.random.default_rng(seed)
    scale = 40000 if loud else 3000  # loud clips on the way in and overshoots on the way out
    dangling = b"\x7f" if length % 2 and not last else b""  # an open stream may end mid-sample
    pcm = _pcm(rng.standard_normal(length // 2) * scale) + dangling
    ours = _stream(native.Resampler(*pair), pcm, sizes, last)
    assert ours == _stream(twin.Resampler(*pair), pcm, sizes, last)


@settings(max_examples=25, deadline=None)
@given(
    pair=st.sampled_from([*CORE, (24000, 44100), (44100, 24000), (24000, 192000)]),
    sizes=st.lists(st.integers(0, 999), min_size=1, max_size=6).filter(any),
)
@pytest.mark.parametrize("impl", IMPLS)
def test_streaming_equals_one_shot(impl: str, pair: tuple[int, int], sizes: list[int]) -> None:
    m = media_module(impl, "resample")
    pcm = _pcm(np.random.default_rng(7).standard_normal(2401) * 5000)
    one_shot = m.Resampler(*pair).process(pcm, last=True)
    assert b"".join(_stream(m.Resampler(*pair), pcm, sizes)) == one_shot


@pytest.mark.parametrize("pair", [*CORE, (24000, 44100), (24000, 24000)])
def test_awkward_chunkings_equal_one_shot(m: ModuleType, pair: tuple[int, int]) -> None:
    n = 4801 if m is native else 1201  # the twin is slow byte by byte
    pcm = _pcm(np.random.default_rng(7).standard_normal(n) * 5000)
    one_shot = m.Resampler(*pair).process(pcm, last=True)
    frame = pair[0] // 50 * 2
    for sizes in ([1], [3, 5, 7], [frame], [frame - 1, 2, frame + 1], [0, 9999], [2, 0, 1]):
        assert b"".join(_stream(m.Resampler(*pair), pcm, sizes)) == one_shot, sizes


def test_inputs_may_be_any_contiguous_buffer(m: ModuleType) -> None:
    pcm = _pcm(np.random.default_rng(1).standard_normal(960) * 5000)
    expected = m.Resampler(16000, 24000).process(pcm, last=True)
    as_shorts = memoryview(bytearray(pcm)).cast("h")
    for data in (bytearray(pcm), memoryview(pcm), as_shorts, np.frombuffer(pcm, "<i2")):
        assert m.Resampler(16000, 24000).process(data, last=True) == expected
    with pytest.raises(BufferError):
        m.Resampler(16000, 24000).process(memoryview(pcm)[::2])


@pytest.mark.parametrize("pair", SUPPORTED + [(24000, 24000)])
def test_total_output_after_last(m: ModuleType, pair: tuple[int, int]) -> None:
    src, dst = pair
    for n in (0, 1, 2, 159, 160, 441, 1001):
        out = m.Resampler(src, dst).process(bytes(2 * n), last=True)
        exact = n * dst / src
        assert len(out) // 2 == math.ceil(exact) and len(out) // 2 - exact < 1


def test_passthrough_returns_the_input(m: ModuleType) -> None:
    r = m.Resampler(24000, 24000)
    pcm = bytes(range(256)) * 3
    assert r.process(pcm) == pcm
    assert r.process(pcm[:5]) + r.process(pcm[5:9]) + r.process(pcm[9:], last=True) == pcm
    assert r.delay() == 0.0


# --- errors and state ------------------------------------------------------------------------


def test_unsupported_rates(m: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(UnsupportedRate) as err:
        m.Resampler(22050, 24000)
    assert err.value.rate == 22050 and "8000" in err.value.reason
    with pytest.raises(UnsupportedRate) as err:
        m.Resampler(24000, 11025)
    assert err.value.rate == 11025
    for src, dst in [(8000, 48000), (96000, 8000), (44100, 48000), (8000, 44100)]:
        with pytest.raises(UnsupportedRate, match="no filter") as err:
            m.Resampler(src, dst)
        assert err.value.rate == max(src, dst)
    with pytest.raises(TypeError):
        m.Resampler(8000.0, 24000)
    # A Kaiser design for 8 kHz would need 3.8 ms: the budget refuses it.
    monkeypatch.setattr(reference, "KAISER_FACTORS", (147, 441))
    with pytest.raises(UnsupportedRate, match="over the 3 ms budget"):
        m.Resampler(8000, 44100)


def test_supported_rates_cover_every_audiosocket_rate(m: ModuleType) -> None:
    assert m.supported_rates() == (8000, 12000, 16000, 24000, 32000, 44100, 48000, 96000, 192000)
    for src, dst in HUB:
        r = m.Resampler(src, dst)
        assert (r.in_rate, r.out_rate) == (src, dst)
    # Beyond the 16 pairs with 24 kHz, those sharing a filter's ratio: F = 2, 3, 4, 8, 147.
    assert set(HUB) < set(SUPPORTED) and len(SUPPORTED) == 46
    for src, dst in SUPPORTED:
        g = math.gcd(src, dst)
        assert max(src, dst) // g in (2, 3, 4, 8, 147)
    with pytest.raises(AttributeError):
        r.in_rate = 8000  # type: ignore[misc]


def test_finished_stream_and_half_samples(m: ModuleType) -> None:
    r = m.Resampler(8000, 24000)
    first = r.process(b"\x01\x02\x03")
    with pytest.raises(BadSampleData) as bad:
        r.process(b"\x04\x05", last=True)
    assert bad.value.length == 3  # the byte left over from before, and these two
    # Nothing was consumed: the stream goes on as if the failed call never happened.
    one_shot = m.Resampler(8000, 24000).process(b"\x01\x02\x03\x04", last=True)
    assert first + r.process(b"\x04", last=True) == one_shot
    with pytest.raises(StreamFinished):
        r.process(b"")
    with pytest.raises(StreamFinished):
        r.process(b"\x00\x00", last=True)
    with pytest.raises(BadSampleData):
        m.Resampler(24000, 24000).process(b"\x01", last=True)


def test_reset_starts_a_fresh_stream(m: ModuleType) -> None:
    pcm = _pcm(_tone(8000, 440, 0.1))
    fresh = m.Resampler(8000, 24000).process(pcm, last=True)
    r = m.Resampler(8000, 24000)
    r.process(_pcm(np.full(333, 20000.0)) + b"\x55")  # history and a dangling byte
    r.reset()
    assert r.process(pcm, last=True) == fresh
    r.reset()
    assert b"".join(_stream(r, pcm, [77])) == fresh


def test_streams_keep_their_own_state_and_share_the_filter(m: ModuleType) -> None:
    a, b = m.Resampler(16000, 24000), m.Resampler(16000, 24000)
    tone, noise = _pcm(_tone(16000, 1000, 0.05)), _pcm(np.full(800, 12345.0))
    outs = []
    for chunk in _chunks(tone, [320]):
        a.process(noise)
        outs.append(b.process(chunk))
    outs.append(b.process(b"", last=True))
    assert b"".join(outs) == m.Resampler(16000, 24000).process(tone, last=True)
    design = m.design_for(16000, 24000)
    assert design is native.design_for(16000, 24000) is twin.design_for(16000, 24000)
    assert m.design_for(8000, 16000) is m.design_for(12000, 24000)  # same ratio, same table
    assert m.design_for(24000, 24000) is None
    assert not design.table.flags.writeable
    assert design.table.dtype == np.float32 and design.table.shape == (design.up, design.taps)
    # New streams of a known ratio prepare nothing: they take the cached table.
    before = reference._prepare.cache_info()
    streams = [m.Resampler(16000, 24000) for _ in range(5)]
    after = reference._prepare.cache_info()
    assert (after.misses, after.currsize) == (before.misses, before.currsize) and streams


# --- filters ---------------------------------------------------------------------------------


@pytest.mark.parametrize("pair", SUPPORTED)
def test_filter_response_meets_the_targets(pair: tuple[int, int]) -> None:
    design = reference.design_for(*pair)
    assert design is not None
    proto = design.table.T.reshape(-1).astype(np.float64) / design.up  # DC gain 1 again
    assert np.array_equal(proto[: design.length], proto[: design.length][::-1])  # linear phase
    assert not proto[design.length :].any()
    fi = min(pair) * design.factor
    size = 1 << max(18, math.ceil(math.log2(design.length * 64)))
    freqs = np.fft.rfftfreq(size, 1 / fi)
    mag = np.abs(np.fft.rfft(proto, size))
    low = min(pair)
    passband = mag[freqs <= 0.45 * low]
    stopband = mag[freqs >= 0.55 * low]
    assert _db(passband.max() / passband.min()) <= 0.1
    assert -_db(stopband.max()) >= 90
    phase_gains = design.table.astype(np.float64).sum(axis=1)
    assert np.allclose(phase_gains, 1, atol=0.01)  # every phase passes DC alike: no DC image


@pytest.mark.parametrize("pair", SUPPORTED)
def test_delay_is_within_3_ms_and_is_what_the_stream_holds_back(
    m: ModuleType, pair: tuple[int, int]
) -> None:
    src, dst = pair
    r = m.Resampler(src, dst)
    design = reference.design_for(src, dst)
    assert design is not None
    assert r.delay() == design.centre / design.down
    assert r.delay() / dst <= 0.003
    # Streaming, an output comes out once its newest input sample is in: what is owed but
    # not given yet is the delay, within the one-sample granularity of the output.
    fed = given = 0
    for n in (src // 50, 1, src // 100 + 3, src // 50, 7):
        given += len(r.process(bytes(2 * n))) // 2
        fed += n
        assert abs(fed * dst / src - given - r.delay()) <= 1


# --- quality, measured on the output ---------------------------------------------------------


@pytest.mark.parametrize("pair", SUPPORTED)
def test_passband_tone_snr(pair: tuple[int, int]) -> None:
    src, dst = pair
    freq = 0.2 * min(pair) + 37
    out = _samples(native.Resampler(src, dst).process(_pcm(_tone(src, freq, 0.5)), last=True))
    (amp,), residual = _fit(_body(out, dst), dst, freq)
    assert _db(amp / math.sqrt(2) / residual.std()) >= 85
    assert abs(_db(amp / LEVEL)) <= 0.1


@pytest.mark.parametrize("pair", CORE)
def test_passband_tone_snr_twin(pair: tuple[int, int]) -> None:
    src, dst = pair
    out = _samples(twin.Resampler(src, dst).process(_pcm(_tone(src, 1000, 0.1)), last=True))
    (amp,), residual = _fit(_body(out, dst), dst, 1000)
    assert _db(amp / math.sqrt(2) / residual.std()) >= 85


@pytest.mark.parametrize("pair", CORE + [(24000, 44100), (44100, 24000)])
def test_passband_is_flat_for_tones(pair: tuple[int, int]) -> None:
    src, dst = pair
    low = min(pair)
    gains = []
    for freq in np.linspace(0.01, 0.45, 12) * low:
        out = _samples(native.Resampler(src, dst).process(_pcm(_tone(src, freq, 0.1)), last=True))
        (amp,), _ = _fit(_body(out, dst), dst, freq)
        gains.append(_db(amp / LEVEL))
    assert max(gains) - min(gains) <= 0.1


@pytest.mark.parametrize(
    ("src", "dst", "freq", "leaks"),
    [
        (24000, 16000, 10000, [6000]),  # above 16 kHz's band: would alias to 16 - 10 = 6 kHz
        (24000, 8000, 6000, [2000]),  # above 8 kHz's band: would alias to 8 - 6 = 2 kHz
        # Zero-stuffing 16 kHz to 48 kHz images a 7 kHz tone at 16 - 7 = 9, 16 + 7 = 23 and
        # 32 - 7 = 25 kHz; keeping every other sample folds 23 and 25 kHz onto 1 kHz.
        (16000, 24000, 7000, [9000, 1000]),
        (8000, 24000, 3000, [5000, 11000]),  # images at 8 - 3 and 8 + 3 kHz
        (24000, 8000, 4500, [3500]),  # just past the 0.55 * 8 kHz stopband edge
    ],
)
def test_out_of_band_rejection(src: int, dst: int, freq: int, leaks: list[int]) -> None:
    out = _samples(native.Resampler(src, dst).process(_pcm(_tone(src, freq, 1.0)), last=True))
    amps, _ = _fit(_body(out, dst, 50), dst, freq, *leaks)
    for leak, amp in zip(leaks, amps[1:], strict=True):
        # An all-zero output (a leak under half a bit) fits 0: rejection is at least 90 dB.
        assert _db(LEVEL / max(amp, 1e-9)) >= 90, leak


def _clicks(y: np.ndarray, seams: np.ndarray, rate: int) -> np.ndarray:
    """The seams where the local second difference exceeds the signal's own elsewhere.

    A smooth signal's second difference is bounded by its curvature; a click (a step, a lost
    or repeated sample) shows up as a local spike above that bound. Rounding to int16 moves a
    second difference by at most 2. The first and last 20 ms (the signal's own edges) are not
    looked at.
    """
    d2 = np.abs(np.diff(y, 2))
    edge = rate // 50
    seams = seams[(seams > edge) & (seams < len(d2) - edge)]
    near = np.zeros(len(d2), dtype=bool)
    near[:edge] = near[-edge:] = True
    for s in seams:
        near[s - 3 : s + 2] = True
    bound = d2[~near].max() + 2
    return seams[[d2[s - 3 : s + 2].max() > bound for s in seams]]  # type: ignore[no-any-return]


@pytest.mark.parametrize("pair", CORE)
@pytest.mark.parametrize("impl", IMPLS)
def test_no_click_at_chunk_seams(impl: str, pair: tuple[int, int]) -> None:
    m = media_module(impl, "resample")
    src, dst = pair
    pcm = _pcm(_tone(src, 1000, 0.3))
    one_shot = m.Resampler(*pair).process(pcm, last=True)
    frame = src // 50 * 2
    for sizes in ([frame], [frame - 1, 7, frame + 3, 2]):
        outs = _stream(m.Resampler(*pair), pcm, sizes)
        assert b"".join(outs) == one_shot
        seams = np.cumsum([len(o) // 2 for o in outs])
        assert seams.size > 10 and not _clicks(_samples(b"".join(outs)), seams, dst).size
    # The detector does see a click: one output sample lost at a seam.
    glitch = np.delete(_samples(one_shot), dst // 10)
    assert _clicks(glitch, np.array([dst // 10]), dst).size


@pytest.mark.parametrize("pair", [*CORE, (24000, 44100), (44100, 24000), (12000, 24000)])
def test_output_is_time_aligned_with_input(pair: tuple[int, int]) -> None:
    src, dst = pair
    x = _noise(src, 0.4 * min(pair), 1.0)
    y = _samples(native.Resampler(src, dst).process(_pcm(x), last=True))
    # The same periodic band-limited noise sampled at the output rate: what an ideal,
    # delay-free resampler gives. Cross-correlation finds the output's lag against it.
    spectrum = np.fft.rfft(x)
    ideal = np.fft.irfft(spectrum, dst) * (dst / src) if dst != src else x
    lags = np.arange(-8, 9)
    body = slice(dst // 50, -dst // 50)
    corr = np.array([np.dot(y[body], np.roll(ideal, lag)[body]) for lag in lags])
    best = int(np.argmax(corr))
    assert lags[best] == 0
    # Sub-sample: the parabola through the peak and its neighbours peaks within 0.02 samples.
    c0, c1, c2 = corr[best - 1 : best + 2]
    assert abs(0.5 * (c0 - c2) / (c0 - 2 * c1 + c2)) < 0.02
    # What is left is the passband ripple's doing, not a lag: even 0.1 sample of lag at the
    # top of the band would leave -22 dB.
    assert _db(np.std(y[body] - ideal[body]) / 8000) < -40
