"""Streaming polyphase resampler: the plain-Python (numpy) twin of ``engine._native.resample``.

It states the behaviour both implementations share:

- Filters. Going from ``in_rate`` to ``out_rate`` with up/down = out/in in lowest terms, the
  input is (conceptually) zero-stuffed to the intermediate rate ``in_rate * up``, filtered by
  a linear-phase prototype ``h`` of odd length N, centre G = (N - 1) / 2 and DC gain ``up``,
  and every ``down``-th sample is kept. The prototype depends only on F = max(up, down): the
  equiripple designs shipped in ``engine.resample_filters`` for F = 2, 3, 4, 8 and a Kaiser
  design made here for F = 147 (24000 <-> 44100 Hz). :func:`design_for` prepares each ratio's
  polyphase table once and every stream of that ratio shares it, read-only.
- Timing. Output j is ``sum(table[p, i] * x[b - i] for i in range(taps))`` with
  ``b, p = divmod(j*down + G, up)``. It is time-aligned with input sample ``j * down / up``
  (the filter's delay is compensated, not added), x before the stream's start is 0, and it
  comes out as soon as input ``b`` has arrived: :meth:`Resampler.delay` is G / down output
  samples. ``last=True`` pads the end with zeros so that n input samples give
  ceil(n * up / down) outputs.
- Arithmetic. Samples become float32 once; coefficients are float32; each output sums from
  0.0 over taps i = 0..taps-1 as ``acc = acc + c * x`` (a rounded float32 multiply, then a
  rounded float32 add), then is rounded half to even and clipped to int16. numpy's float32
  operations are correctly rounded, so this twin and the native kernel agree byte for byte.
"""

from __future__ import annotations

import functools
import math
import operator
from dataclasses import dataclass

import numpy as np

from engine.errors import BadSampleData, StreamFinished, UnsupportedRate
from engine.resample_filters import PASS_EDGE, PROTOTYPES, REJECTION_DB, STOP_EDGE

__all__ = [
    "HUB_RATE",
    "KAISER_FACTORS",
    "MAX_DELAY_S",
    "RATES",
    "FilterDesign",
    "Resampler",
    "design_for",
    "supported_rates",
]

RATES = (8000, 12000, 16000, 24000, 32000, 44100, 48000, 96000, 192000)
HUB_RATE = 24000  # the Realtime API's rate: every AudioSocket rate converts to and from it
MAX_DELAY_S = 0.003
# F of 24000 <-> 44100 Hz, too long a filter for remez: a Kaiser window is designed on first
# use instead. Its delay is 1.26 ms, since the lower rate is 24 kHz.
KAISER_FACTORS = (147,)


def supported_rates() -> tuple[int, ...]:
    """Every rate a stream converts to and from 24000 Hz (24000 itself passes through)."""
    return RATES


@dataclass(frozen=True, slots=True)
class FilterDesign:
    """One ratio's polyphase filter, shared read-only by every stream of that ratio.

    ``table[p, i]`` is ``up * h[p + i * up]`` (zero past the prototype's end): phase p's
    coefficient for input ``x[b - i]``.
    """

    up: int
    down: int
    centre: int  # G, in samples of the intermediate rate
    taps: int  # per phase: ceil(length / up)
    length: int  # N, odd
    kind: str  # "equiripple" or "kaiser"
    table: np.ndarray  # float32, shape (up, taps), not writeable

    @property
    def factor(self) -> int:
        """F = max(up, down): the intermediate rate over the lower rate."""
        return max(self.up, self.down)

    def delay(self) -> float:
        """Latency in output samples: G / down."""
        return self.centre / self.down


def _kaiser(factor: int) -> np.ndarray:
    """A Kaiser-windowed sinc with the shipped designs' band edges and rejection, DC gain 1."""
    width = (STOP_EDGE - PASS_EDGE) / factor  # transition, in cycles per intermediate sample
    beta = 0.1102 * (REJECTION_DB - 8.7)
    length = math.ceil((REJECTION_DB - 8.0) / (2.285 * 2 * math.pi * width)) | 1
    n = np.arange(length) - (length - 1) / 2
    cutoff = (PASS_EDGE + STOP_EDGE) / 2 / factor
    h = 2 * cutoff * np.sinc(2 * cutoff * n) * np.kaiser(length, beta)
    return h / h.sum()  # type: ignore[no-any-return]


@functools.cache
def _prepare(up: int, down: int) -> FilterDesign:
    factor = max(up, down)
    if factor in PROTOTYPES:
        proto, kind = np.asarray(PROTOTYPES[factor], dtype=np.float64), "equiripple"
    else:
        proto, kind = _kaiser(factor), "kaiser"
    taps = -(-len(proto) // up)
    padded = np.zeros(taps * up)
    padded[: len(proto)] = proto * up
    table = np.ascontiguousarray(padded.reshape(taps, up).T, dtype=np.float32)
    table.flags.writeable = False
    return FilterDesign(up, down, (len(proto) - 1) // 2, taps, len(proto), kind, table)


def design_for(in_rate: int, out_rate: int) -> FilterDesign | None:
    """The shared filter for ``in_rate`` -> ``out_rate``, prepared on first use.

    Returns:
        The filter, or None for equal rates: a stream passes those through untouched.

    Raises:
        UnsupportedRate: a rate AudioSocket does not carry, or a pair whose ratio has no
            filter.
        TypeError: a rate is not an integer.
    """
    in_rate, out_rate = operator.index(in_rate), operator.index(out_rate)
    for rate in (in_rate, out_rate):
        if rate not in RATES:
            raise UnsupportedRate(rate, f"AudioSocket rates are {', '.join(map(str, RATES))}")
    if in_rate == out_rate:
        return None
    g = math.gcd(in_rate, out_rate)
    up, down = out_rate // g, in_rate // g
    other = max(in_rate, out_rate)  # the rate to blame: the higher one of the pair
    if max(up, down) not in PROTOTYPES and max(up, down) not in KAISER_FACTORS:
        raise UnsupportedRate(
            other,
            f"no filter for {in_rate} -> {out_rate} Hz (ratio {up}/{down}); filters exist for "
            f"{HUB_RATE} Hz to and from every rate, and for pairs sharing one of their ratios",
        )
    design = _prepare(up, down)
    delay_s = design.centre / (in_rate * up)
    if delay_s > MAX_DELAY_S:
        raise UnsupportedRate(
            other,
            f"the filter for {in_rate} -> {out_rate} Hz would delay audio by "
            f"{delay_s * 1000:.2f} ms, over the {MAX_DELAY_S * 1000:g} ms budget",
        )
    return design


def _bytes(data: bytes | bytearray | memoryview) -> bytes:
    view = memoryview(data)
    if not view.c_contiguous:
        raise BufferError("the resampler needs a C-contiguous buffer")
    return view.tobytes()


class Resampler:
    """One direction of one call's audio: int16 LE mono in at ``in_rate``, out at ``out_rate``.

    Feed chunks of any size (odd byte counts included: the dangling byte waits for the next
    call) to :meth:`process`; any chunking gives the same bytes as one call. End the stream
    with ``last=True`` to flush its tail, then :meth:`reset` to start another.

    Raises:
        UnsupportedRate, TypeError: see :func:`design_for`.
    """

    def __init__(self, in_rate: int, out_rate: int) -> None:
        self._design = design_for(in_rate, out_rate)
        self._in_rate = operator.index(in_rate)
        self._out_rate = operator.index(out_rate)
        self.reset()

    @property
    def in_rate(self) -> int:
        return self._in_rate

    @property
    def out_rate(self) -> int:
        return self._out_rate

    def reset(self) -> None:
        """Forgets all input: the next sample starts a new stream at time 0."""
        taps = self._design.taps if self._design else 1
        self._hist = np.zeros(taps - 1, dtype=np.float32)  # input from index self._start on
        self._start = -(taps - 1)
        self._n = 0  # samples received
        self._j = 0  # next output index
        self._odd = b""
        self._finished = False

    def delay(self) -> float:
        """Latency in output samples: the filter's centre, G / down (0 when passing through)."""
        return self._design.delay() if self._design else 0.0

    def process(self, data: bytes | bytearray | memoryview, last: bool = False) -> bytes:
        """Resamples the next chunk; every output whose input has arrived comes out now.

        Args:
            data: int16 little-endian samples, any number of bytes.
            last: the stream ends here: pad it with silence and flush everything.

        Raises:
            StreamFinished: the stream already ended; call reset().
            BadSampleData: ``last`` with half a sample left over (nothing is consumed).
            BufferError: ``data`` is not C-contiguous.
        """
        if self._finished:
            raise StreamFinished()
        raw = self._odd + _bytes(data)
        if last and len(raw) % 2:
            raise BadSampleData(len(raw))
        whole = len(raw) & ~1
        raw, self._odd = raw[:whole], raw[whole:]
        self._finished = last
        if self._design is None:
            return raw
        return self._filter(np.frombuffer(raw, dtype="<i2").astype(np.float32), last)

    def _filter(self, x: np.ndarray, last: bool) -> bytes:
        d = self._design
        assert d is not None
        n = self._n + len(x)
        buf = np.concatenate([self._hist, x])
        if last:
            j_end = -(-n * d.up // d.down)
            buf = np.concatenate([buf, np.zeros(d.centre // d.up + 1, dtype=np.float32)])
        else:
            j_end = max(self._j, (n * d.up - 1 - d.centre) // d.down + 1)
        pos = np.arange(self._j, j_end, dtype=np.int64) * d.down + d.centre
        newest, phase = np.divmod(pos, d.up)
        newest -= self._start
        acc = np.zeros(len(phase), dtype=np.float32)
        for i, coef in enumerate(d.table.T):
            acc = acc + coef[phase] * buf[newest - i]
        out = np.clip(np.rint(acc), -32768, 32767).astype("<i2")
        # Keep what output j_end will need: taps - 1 samples before its newest one.
        keep = (j_end * d.down + d.centre) // d.up - (d.taps - 1)
        keep = max(self._start, min(n, keep))
        self._hist = buf[keep - self._start : n - self._start].copy()
        self._start, self._n, self._j = keep, n, j_end
        return out.tobytes()
