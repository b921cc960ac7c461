"""Resampler filter plans: which FIR each rate pair uses, split into polyphase tables.

Both resampler implementations take their coefficients from :func:`plan`, so they compute with
the very same float32 numbers. A plan is built once per rate pair and shared read-only by every
stream of that pair (streams keep only their own history).

Prototypes: the shipped equiripple designs (``resample_filters_data``) where one exists for the
pair's F = intermediate rate / lower rate; otherwise a Kaiser-windowed sinc designed here, if
its delay stays within :data:`MAX_DELAY_S` (it does for 44.1 kHz <-> 24 kHz, about 1.3 ms).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np

from engine.errors import UnsupportedRate
from engine.resample_filters_data import PROTOTYPES

__all__ = ["MAX_DELAY_S", "RATES", "Plan", "plan"]

RATES = (8000, 12000, 16000, 24000, 32000, 44100, 48000, 96000, 192000)
MAX_DELAY_S = 0.003
PASS, STOP = 0.45, 0.55
KAISER_REJECT_DB = 95.0
MAX_TAPS = 1 << 16


@dataclass(frozen=True, slots=True)
class Plan:
    """How to resample ``in_rate`` to ``out_rate``.

    Output j is ``sum(table[p, i] * x[b - i] for i in range(taps))`` with
    ``p, b = (j*down + centre) % up, (j*down + centre) // up``: time-aligned with input
    sample ``j*down/up``, computable once input ``b`` has arrived.
    """

    in_rate: int
    out_rate: int
    up: int
    down: int
    centre: int
    taps: int
    table: np.ndarray  # float32, shape (up, taps), read-only, DC gain `up` across phases
    design: str

    @property
    def delay_samples(self) -> float:
        """Latency in output samples."""
        return self.centre / self.down


def _kaiser(factor: int) -> np.ndarray | None:
    """A Kaiser-windowed sinc prototype for ``factor``, or None if too long."""
    width = (STOP - PASS) / factor
    beta = 0.1102 * (KAISER_REJECT_DB - 8.7)
    taps = math.ceil((KAISER_REJECT_DB - 8.0) / (2.285 * 2 * math.pi * width)) | 1
    if taps > MAX_TAPS:
        return None
    n = np.arange(taps) - (taps - 1) / 2
    cutoff = 0.5 / factor
    h = 2 * cutoff * np.sinc(2 * cutoff * n) * np.kaiser(taps, beta)
    return h / h.sum()


@functools.cache
def plan(in_rate: int, out_rate: int) -> Plan:
    """The shared plan for ``in_rate`` -> ``out_rate`` (not for equal rates).

    Raises:
        UnsupportedRate: a rate outside :data:`RATES`, or no filter within the delay budget.
    """
    for rate in (in_rate, out_rate):
        if rate not in RATES:
            raise UnsupportedRate(rate, f"AudioSocket rates are {', '.join(map(str, RATES))}")
    if in_rate == out_rate:
        raise UnsupportedRate(in_rate, "equal rates need no filter (the stream passes through)")
    g = math.gcd(in_rate, out_rate)
    up, down = out_rate // g, in_rate // g
    factor = max(up, down)
    low = min(in_rate, out_rate)
    proto: np.ndarray | None
    if factor in PROTOTYPES:
        proto, design = np.asarray(PROTOTYPES[factor], dtype=np.float64), f"equiripple F={factor}"
    else:
        proto, design = _kaiser(factor), f"kaiser F={factor}"
    if proto is None or (len(proto) - 1) / 2 / (low * factor) > MAX_DELAY_S:
        other = out_rate if in_rate == low else in_rate
        raise UnsupportedRate(
            other, f"no filter from {in_rate} to {out_rate} Hz fits the 3 ms delay budget"
        )
    taps = -(-len(proto) // up)
    padded = np.zeros(taps * up)
    padded[: len(proto)] = proto * up
    table = np.ascontiguousarray(padded.reshape(taps, up).T, dtype=np.float32)
    table.flags.writeable = False
    return Plan(in_rate, out_rate, up, down, (len(proto) - 1) // 2, taps, table, design)
