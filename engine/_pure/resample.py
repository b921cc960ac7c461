"""Streaming polyphase resampler: the plain-Python (numpy) twin of ``engine._native.resample``.

Same arithmetic as the native kernel, so the two agree byte for byte: history in float32, each
output accumulated from 0 over taps i = 0..K-1 as ``acc = acc + c * x`` (a rounded float32
multiply, then a rounded float32 add), rounded half to even and clipped to int16.
"""

from __future__ import annotations

import numpy as np

from engine.errors import BadSampleData, StreamFinished, UnsupportedRate
from engine.resample_filters import RATES, Plan, plan

__all__ = ["Resampler", "supported_rates"]


def supported_rates() -> tuple[int, ...]:
    """Every rate a stream can convert to and from 24000 Hz."""
    return RATES


class Resampler:
    """One direction of one call's audio: int16 LE in at ``in_rate``, out at ``out_rate``.

    Output is time-aligned with input (the filter's delay is compensated, not added), any
    chunking gives the same bytes as one call, and ``last=True`` flushes the tail so that n
    input samples give ceil(n * out_rate / in_rate) output samples.
    """

    def __init__(self, in_rate: int, out_rate: int) -> None:
        for rate in (in_rate, out_rate):
            if rate not in RATES:
                raise UnsupportedRate(rate, f"AudioSocket rates are {', '.join(map(str, RATES))}")
        self.in_rate = in_rate
        self.out_rate = out_rate
        self._plan: Plan | None = None if in_rate == out_rate else plan(in_rate, out_rate)
        self.reset()

    def reset(self) -> None:
        """Forgets all history: the next sample starts a new stream."""
        taps = self._plan.taps if self._plan else 1
        self._hist = np.zeros(taps - 1, dtype=np.float32)
        self._start = -(taps - 1)
        self._n = 0
        self._j = 0
        self._odd = b""
        self._finished = False

    def delay(self) -> float:
        """Latency in output samples (the filter's group delay; nothing else is buffered)."""
        return self._plan.delay_samples if self._plan else 0.0

    def process(self, data: bytes | bytearray | memoryview, last: bool = False) -> bytes:
        """Resamples the next chunk; ``last=True`` ends the stream and flushes its tail.

        Raises:
            StreamFinished: the stream already ended; call reset().
            BadSampleData: ``last`` with half a sample left over.
        """
        if self._finished:
            raise StreamFinished()
        raw = self._odd + bytes(memoryview(data).cast("B"))
        self._odd = b""
        if len(raw) % 2:
            if last:
                raise BadSampleData(len(raw))
            raw, self._odd = raw[:-1], raw[-1:]
        self._finished = last
        if self._plan is None:
            return raw
        return self._filter(np.frombuffer(raw, dtype="<i2").astype(np.float32), last)

    def _filter(self, x: np.ndarray, last: bool) -> bytes:
        p = self._plan
        assert p is not None
        n = self._n + len(x)
        buf = np.concatenate([self._hist, x])
        if last:
            j_end = -(-n * p.up // p.down)
            buf = np.concatenate([buf, np.zeros(p.centre // p.up + 2, dtype=np.float32)])
        else:
            j_end = max(self._j, (n * p.up - 1 - p.centre) // p.down + 1)
        j = np.arange(self._j, j_end, dtype=np.int64)
        centre = j * p.down + p.centre
        coef = p.table[centre % p.up]
        at = centre // p.up - self._start
        acc = np.zeros(len(j), dtype=np.float32)
        for i in range(p.taps):
            acc = acc + coef[:, i] * buf[at - i]
        out = np.clip(np.rint(acc), -32768, 32767).astype("<i2")
        keep = max(self._start, min(n, (j_end * p.down + p.centre) // p.up - (p.taps - 1)))
        self._hist = buf[keep - self._start : n - self._start].copy()
        self._start, self._n, self._j = keep, n, j_end
        return out.tobytes()
