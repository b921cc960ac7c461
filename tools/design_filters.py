"""Designs the resampler's equiripple prototypes and writes ``engine/resample_filters_data.py``.

Run once, by hand, when the targets change: ``python tools/design_filters.py``. It needs scipy
(the ``[bench]`` extra); the engine itself never does.

A prototype depends only on F = (intermediate rate) / (lower rate): its passband ends at
0.45 and its stopband starts at 0.55 times the lower rate (3.6 and 4.4 kHz for 8 kHz), so
24<->8 kHz and 24<->16 kHz share F = 3. For each F this finds the shortest odd length whose
Parks-McClellan design is flat within 0.08 dB (target 0.1) and rejects at least 95 dB
(target 90): short filters keep the delay of an 8 kHz call near 2.5 ms, where a Kaiser
window would need 3.8 ms.
"""

from __future__ import annotations

import datetime
import sys
from pathlib import Path

import numpy as np
from scipy import signal

__all__ = ["design", "main"]

FACTORS = (2, 3, 4, 8)
PASS, STOP = 0.45, 0.55
RIPPLE_DB, REJECT_DB = 0.08, 95.0
STOP_WEIGHT = 300.0
OUT = Path(__file__).resolve().parent.parent / "engine" / "resample_filters_data.py"


def measure(h: np.ndarray, factor: int) -> tuple[float, float]:
    """(passband ripple peak to peak in dB, stopband rejection in dB) of prototype ``h``."""
    w, resp = signal.freqz(h, worN=1 << 16, fs=1.0)
    band = 1.0 / factor
    mag = np.abs(resp)
    passband = mag[w <= PASS * band]
    stopband = mag[w >= STOP * band]
    ripple = 20 * np.log10(passband.max() / passband.min())
    reject = -20 * np.log10(stopband.max() / passband.mean())
    return float(ripple), float(reject)


def design(factor: int) -> np.ndarray:
    """The shortest odd-length equiripple prototype for ``factor`` meeting both targets."""
    band = 1.0 / factor
    for taps in range(11 * factor | 1, 100 * factor, 2):
        h = signal.remez(
            taps, [0, PASS * band, STOP * band, 0.5], [1, 0], weight=[1, STOP_WEIGHT], fs=1.0,
            maxiter=200,
        )
        ripple, reject = measure(h, factor)
        if ripple <= RIPPLE_DB and reject >= REJECT_DB:
            return h / h.sum()
    raise SystemExit(f"no design for F={factor} within {100 * factor} taps")


def main() -> None:
    lines = [
        '"""Equiripple resampler prototypes, made by ``tools/design_filters.py``: do not edit.',
        "",
        f"Generated {datetime.date.today().isoformat()} with scipy {_scipy()}"
        f" and numpy {np.__version__}.",
        f"Passband to {PASS} and stopband from {STOP} times the lower rate; targets",
        f"{RIPPLE_DB} dB ripple peak to peak, {REJECT_DB} dB rejection. Keys are F, the",
        "intermediate rate over the lower rate; values are the taps, DC gain 1, odd length.",
        '"""',
        "",
        "from __future__ import annotations",
        "",
        '__all__ = ["PROTOTYPES"]',
        "",
        "PROTOTYPES: dict[int, tuple[float, ...]] = {",
    ]
    for factor in FACTORS:
        h = design(factor)
        ripple, reject = measure(h, factor)
        print(f"F={factor}: {len(h)} taps, ripple {ripple:.3f} dB, rejection {reject:.1f} dB",
              file=sys.stderr)
        lines.append(f"    # {len(h)} taps; ripple {ripple:.3f} dB; rejection {reject:.1f} dB")
        lines.append(f"    {factor}: (")
        lines.extend(f"        {v!r}," for v in h.tolist())
        lines.append("    ),")
    lines.append("}")
    OUT.write_text("\n".join(lines) + "\n")
    print(f"wrote {OUT}", file=sys.stderr)


def _scipy() -> str:
    import scipy

    return str(scipy.__version__)


if __name__ == "__main__":
    main()
