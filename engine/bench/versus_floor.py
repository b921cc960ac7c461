"""``bench --vs-floor``: the engine and the floor server in alternate rounds, and their CPU ratio.

On a shared virtual machine the kernel's cost per frame drifts by more than the engine's own
work, so an absolute CPU figure says little; the engine's CPU per call-second over the floor's,
measured under the same load in adjacent rounds (engine, floor, engine, floor, ...), is the
figure that travels between machines. Each round's ratio is reported, and the median of each
column is what the ratio target judges. Beside them stand each round's pacing (from its probe
calls' kernel receive timestamps) and the machine's timer wake-up lateness on the engine's
CPUs: the floor's pacing and the wake-ups say how much of the engine's jitter the machine
alone would have caused.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from engine.bench.report import BenchResult, Target, render_targets, targets
from engine.bench.run import BenchOptions
from engine.stats import json_ms

__all__ = ["RATIO_KEY", "FloorRounds", "run_rounds"]

RATIO_KEY = "engine_to_floor_cpu_ratio"


def _ratio(engine: float | None, floor: float | None) -> float | None:
    return engine / floor if engine is not None and floor else None


def _timing(side: str, r: BenchResult) -> dict[str, float | None]:
    """One round's pacing p50/p99 (in responses and every frame) and wake-up p50/p99/max."""
    w = r.wakeup
    return {
        f"{side}_pacing_in_response_p50_ms": json_ms(r.pacing_in_response.p50_ms),
        f"{side}_pacing_in_response_p99_ms": json_ms(r.pacing_in_response.p99_ms),
        f"{side}_pacing_all_p50_ms": json_ms(r.pacing_all.p50_ms),
        f"{side}_pacing_all_p99_ms": json_ms(r.pacing_all.p99_ms),
        f"{side}_wakeup_p50_ms": json_ms(w.p50_ms) if w else None,
        f"{side}_wakeup_p99_ms": json_ms(w.p99_ms) if w else None,
        f"{side}_wakeup_max_ms": json_ms(w.max_ms) if w else None,
    }


def _median(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return statistics.median(known) if known else None


@dataclass(frozen=True, slots=True)
class FloorRounds:
    """Every round's engine and floor result, in the order they ran."""

    engine: tuple[BenchResult, ...]
    floor: tuple[BenchResult, ...]

    def rows(self) -> list[dict[str, float | None]]:
        """Per round: the engine's and the floor's CPU per call-second, their ratio, and each
        side's pacing and wake-up lateness."""
        out = []
        for e, f in zip(self.engine, self.floor, strict=True):
            a, b = e.engine_cpu_ms_per_call_s, f.engine_cpu_ms_per_call_s
            out.append({"engine_cpu_ms_per_call_s": a, "floor_cpu_ms_per_call_s": b,
                        "ratio": _ratio(a, b), **_timing("engine", e), **_timing("floor", f)})
        return out

    def median(self) -> dict[str, float | None]:
        """The median of each column over the rounds."""
        rows = self.rows()
        return {key: _median([row[key] for row in rows]) for key in rows[0]}

    def limit(self) -> Target:
        return targets(self.engine[0].options["upstream_format"])[RATIO_KEY]

    def missed(self) -> list[str]:
        """The targets missed: the ratio's, and any engine round's own."""
        out = [RATIO_KEY] if self.limit().met(self.median()["ratio"]) is False else []
        for number, result in enumerate(self.engine, 1):
            out += [f"{key} (round {number})" for key in result.missed()]
        return out

    def as_dict(self) -> dict[str, Any]:
        """Every round in full, the per-round figures, the medians and the verdict."""
        return {
            "rounds": [{"engine": e.as_dict(), "floor": f.as_dict(), **row}
                       for e, f, row in zip(self.engine, self.floor, self.rows(), strict=True)],
            "median": self.median(),
            "targets": {RATIO_KEY: self.limit().met(self.median()["ratio"])},
        }

    def render(self) -> str:
        """Per round and the median, then the ratio target with where it comes from."""

        def cell(x: float | None, digits: int = 3) -> str:
            return "—" if x is None else f"{x:.{digits}f}"

        lines = [f"engine against the floor, {len(self.engine)} round(s) each, alternated "
                 "(CPU ms per call-second)",
                 f"{'round':<8}{'engine':>10}{'floor':>10}{'ratio':>8}"]
        rows = self.rows()
        for number, row in enumerate(rows, 1):
            lines.append(f"{number:<8}{cell(row['engine_cpu_ms_per_call_s']):>10}"
                         f"{cell(row['floor_cpu_ms_per_call_s']):>10}{cell(row['ratio'], 2):>8}")
        m = self.median()
        lines.append(f"{'median':<8}{cell(m['engine_cpu_ms_per_call_s']):>10}"
                     f"{cell(m['floor_cpu_ms_per_call_s']):>10}{cell(m['ratio'], 2):>8}")
        lines += ["", *self._render_timing(rows, m), "",
                  render_targets({RATIO_KEY: m["ratio"]}, {RATIO_KEY: self.limit()})]
        return "\n".join(lines)

    def _render_timing(self, rows: list[dict[str, float | None]],
                       m: dict[str, float | None]) -> list[str]:
        """Pacing p50/p99 of each side and the wake-up p50/p99/max in its round, in ms."""

        def joined(row: dict[str, float | None], prefix: str, *quantiles: str) -> str:
            values = [row[f"{prefix}_{q}_ms"] for q in quantiles]
            return "/".join("—" if v is None else f"{v:.2f}" for v in values)

        def cells(row: dict[str, float | None]) -> str:
            out = ""
            for side in ("engine", "floor"):
                out += (f"{joined(row, f'{side}_pacing_in_response', 'p50', 'p99'):>14}"
                        f"{joined(row, f'{side}_pacing_all', 'p50', 'p99'):>13}")
            for side in ("engine", "floor"):
                out += f"{joined(row, f'{side}_wakeup', 'p50', 'p99', 'max'):>18}"
            return out

        probes = self.engine[0].timing_from
        lines = [f"pacing p50/p99 ({probes}) and 5 ms timer wake-up lateness p50/p99/max on "
                 "the engine's CPUs, ms",
                 f"{'round':<8}{'engine resp':>14}{'engine all':>13}{'floor resp':>14}"
                 f"{'floor all':>13}{'wake (engine)':>18}{'wake (floor)':>18}"]
        lines += [f"{number:<8}{cells(row)}" for number, row in enumerate(rows, 1)]
        lines.append(f"{'median':<8}{cells(m)}")
        return lines


def run_rounds(
    run_once: Callable[[BenchOptions], BenchResult], opts: BenchOptions, rounds: int,
) -> FloorRounds:
    """Runs the engine and the floor alternately, ``rounds`` times each, with ``opts``.

    Args:
        run_once: runs one bench (the CLI's :func:`~engine.bench.run.main_loop`).
        opts: the engine's options; the floor's differ in ``floor=True`` (and no TLS: it has
            no upstream).
    """
    engine: list[BenchResult] = []
    floor: list[BenchResult] = []
    for _ in range(rounds):
        engine.append(run_once(opts))
        floor.append(run_once(replace(opts, floor=True, tls=False)))  # the floor has no upstream
    return FloorRounds(tuple(engine), tuple(floor))
