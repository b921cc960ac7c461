"""Designs the resampler's equiripple prototypes and writes ``engine/resample_filters.py``.

Run once, by hand, when the targets change: ``python3 tools/design_filters.py``. It needs
scipy (the ``[bench]`` extra); the engine itself never does.

A prototype runs at the intermediate rate fi = in_rate * up and depends only on
F = fi / (the lower rate) = max(up, down): its passband ends at 0.45 and its stopband starts at
0.55 times the lower rate, so 24<->8 and 24<->16 kHz share F = 3, 24<->12 and 24<->48 F = 2,
24<->32 and 24<->96 F = 4, and 24<->192 F = 8. For each F this finds the shortest odd length
whose Parks-McClellan design is flat within 0.08 dB (target 0.1) and rejects at least 95 dB
(target 90) on a dense grid. Equiripple keeps an 8 kHz call's delay at 2.5 ms where a Kaiser
window needs 3.8 ms, over the 3 ms budget.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import scipy
from scipy import signal

__all__ = ["design", "main", "measure"]

FACTORS = (2, 3, 4, 8)
PASS_EDGE, STOP_EDGE = 0.45, 0.55  # of the lower rate
RIPPLE_DB, REJECTION_DB = 0.08, 95.0  # design targets, with margin over 0.1 dB and 90 dB
STOP_WEIGHT = 300.0  # about (passband ripple) / (stopband ripple) at the targets
GRID = 1 << 16
OUT = Path(__file__).resolve().parent.parent / "engine" / "resample_filters.py"
PER_LINE = 3


def measure(h: np.ndarray, factor: int) -> tuple[float, float]:
    """(passband ripple peak to peak in dB, stopband rejection in dB) of prototype ``h``."""
    freqs, resp = signal.freqz(h, worN=GRID, fs=1.0)
    mag = np.abs(resp)
    passband = mag[freqs <= PASS_EDGE / factor]
    stopband = mag[freqs >= STOP_EDGE / factor]
    ripple = 20 * np.log10(passband.max() / passband.min())
    rejection = -20 * np.log10(stopband.max() / passband.mean())
    return float(ripple), float(rejection)


def design(factor: int) -> np.ndarray:
    """The shortest odd-length equiripple prototype for ``factor``, DC gain 1."""
    for length in range(20 * factor + 1, 100 * factor, 2):
        h = signal.remez(
            length,
            [0, PASS_EDGE / factor, STOP_EDGE / factor, 0.5],
            [1, 0],
            weight=[1, STOP_WEIGHT],
            fs=1.0,
            maxiter=200,
        )
        h = h / h.sum()
        ripple, rejection = measure(h, factor)
        if ripple <= RIPPLE_DB and rejection >= REJECTION_DB:
            return h
    raise SystemExit(f"no design for F={factor} within {100 * factor} taps")


def render(prototypes: dict[int, np.ndarray]) -> str:
    """The text of ``engine/resample_filters.py``."""
    lines = [
        '"""Equiripple resampler prototypes, made by ``tools/design_filters.py``: do not edit.',
        "",
        "Command: ``python3 tools/design_filters.py``"
        f" (scipy {scipy.__version__}, numpy {np.__version__}).",
        "Design: scipy.signal.remez, one prototype per F = (intermediate rate) / (lower rate);",
        f"passband to {PASS_EDGE} and stopband from {STOP_EDGE} times the lower rate,"
        f" stopband weight {STOP_WEIGHT};",
        f"the shortest odd length meeting {RIPPLE_DB} dB ripple peak to peak and"
        f" {REJECTION_DB} dB rejection.",
        "Taps are float64 (so they round-trip float32), DC gain 1, symmetric (linear phase).",
        "The Kaiser design made at run time for 44.1 kHz uses the same edges and rejection.",
        '"""',
        "",
        "from __future__ import annotations",
        "",
        '__all__ = ["PASS_EDGE", "PROTOTYPES", "REJECTION_DB", "RIPPLE_DB", "STOP_EDGE"]',
        "",
        f"PASS_EDGE = {PASS_EDGE}",
        f"STOP_EDGE = {STOP_EDGE}",
        f"RIPPLE_DB = {RIPPLE_DB}",
        f"REJECTION_DB = {REJECTION_DB}",
        "",
        "PROTOTYPES: dict[int, tuple[float, ...]] = {",
    ]
    for factor, h in prototypes.items():
        ripple, rejection = measure(h, factor)
        lines.append(
            f"    # F={factor}: {len(h)} taps, ripple {ripple:.3f} dB, rejection {rejection:.1f} dB"
        )
        lines.append(f"    {factor}: (")
        values = [repr(v) for v in h.tolist()]
        for at in range(0, len(values), PER_LINE):
            lines.append("        " + ", ".join(values[at : at + PER_LINE]) + ",")
        lines.append("    ),")
    lines.append("}")
    return "\n".join(lines) + "\n"


def main() -> None:
    prototypes = {}
    for factor in FACTORS:
        h = design(factor)
        ripple, rejection = measure(h, factor)
        print(
            f"F={factor}: {len(h)} taps, ripple {ripple:.3f} dB, rejection {rejection:.1f} dB",
            file=sys.stderr,
        )
        prototypes[factor] = h
    OUT.write_text(render(prototypes))
    print(f"wrote {OUT}", file=sys.stderr)


if __name__ == "__main__":
    main()
