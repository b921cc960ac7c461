"""Pacing statistics of received frames: how far each arrival interval strays from the period.

Shared by the test caller and the load generator. Percentiles use the nearest-rank method (the
smallest value with at least q % of the values at or below it), so every figure is one that was
actually measured, never an interpolation between two.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

__all__ = ["Pacing", "json_ms", "pacing", "percentile"]


def percentile(values: Sequence[float], q: float) -> float:
    """The nearest-rank ``q``-th percentile (0 < q <= 100) of ``values``; NaN when empty.

    Raises:
        ValueError: ``q`` is outside (0, 100].
    """
    if not 0 < q <= 100:
        raise ValueError(f"percentile must be in (0, 100], not {q}")
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def json_ms(x: float) -> float | None:
    """A figure in ms as JSON carries it: rounded to the microsecond, NaN as None."""
    return None if math.isnan(x) else round(x, 3)


@dataclass(frozen=True, slots=True)
class Pacing:
    """Deviation of arrival intervals from the frame period, in ms (NaN with no interval)."""

    intervals: int
    p50_ms: float
    p99_ms: float
    max_ms: float

    def as_dict(self) -> dict[str, float | int | None]:
        """Plain values for JSON (NaN becomes None)."""
        return {"intervals": self.intervals, "p50_ms": json_ms(self.p50_ms),
                "p99_ms": json_ms(self.p99_ms), "max_ms": json_ms(self.max_ms)}


def pacing(intervals: Iterable[float], period: float) -> Pacing:
    """Pacing of arrival ``intervals`` (seconds) against ``period`` (seconds).

    Each interval's error is ``|interval - period|``; the result gives its p50, p99 and max in ms.
    """
    errors = [abs(interval - period) * 1000.0 for interval in intervals]
    if not errors:
        return Pacing(0, math.nan, math.nan, math.nan)
    return Pacing(len(errors), percentile(errors, 50), percentile(errors, 99), max(errors))
