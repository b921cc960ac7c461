"""Resampler benchmark: our streaming polyphase FIR against soxr and scipy, in one run.

Run from a checkout with the extension built: ``python3 benchmarks/resampler.py [--json]``
(needs the ``[bench]`` extra: soxr and scipy). For each direction of 8<->24 and 16<->24 kHz
every method streams 20 ms chunks, bytes in and bytes out as the engine does (soxr's and
scipy's figures include the numpy conversions both ways), and the report gives:

- cost: mean microseconds per 20 ms chunk, Python call included. Methods run in interleaved
  rounds (a batch of chunks each, in a shuffled order per round); the figure is the median
  over rounds of each batch's mean, so a noisy neighbour spoils a round, not the result.
- snr: a -6 dBFS 1 kHz tone through the stream; the tone against everything else, in dB.
- reject: an out-of-band tone's alias (24->8: 6 kHz onto 2 kHz, 24->16: 10 kHz onto 6 kHz)
  or an in-band tone's images (8->24: 3 kHz onto 5 and 11 kHz, 16->24: 7 kHz onto 9 and
  1 kHz), the worst of them below the tone, in dB. When the output rounds to silence (the
  leak is under half a bit) the figure is that 16-bit floor, 90.3 dB, marked ">=".
- delay: audio owed but not yet given while streaming (steady state), in ms; for ours it is
  also ``delay() / out_rate``.
- seam: the tone's largest error (output minus the fitted sine) within 2 samples of a chunk
  seam, in dB against the tone. Rounding alone gives about -90; resample_poly called per
  chunk restarts its filter at every chunk, and clicks.
"""

from __future__ import annotations

import argparse
import datetime
import math
import platform
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout

__all__ = ["main"]

PAIRS = [(8000, 24000), (24000, 8000), (16000, 24000), (24000, 16000)]
LEVEL = 32767 * 10 ** (-6 / 20)
FLOOR_DB = 20 * math.log10(LEVEL / 0.5)  # a leak under half a bit rounds to silence
# (tone in, where its alias or images land) for the rejection figure
OUT_OF_BAND = {
    (8000, 24000): (3000, [5000, 11000]),
    (24000, 8000): (6000, [2000]),
    (16000, 24000): (7000, [9000, 1000]),
    (24000, 16000): (10000, [6000]),
}
Process = Callable[[bytes, bool], bytes]  # (chunk, last) -> output
Maker = Callable[[], Process]


def _methods(src: int, dst: int) -> dict[str, Maker]:
    import soxr
    from scipy import signal

    from engine._native import resample as native
    from engine._pure import resample as twin

    def ours(module: object) -> Maker:
        def make() -> Process:
            return module.Resampler(src, dst).process  # type: ignore[attr-defined,no-any-return]

        return make

    def soxr_stream(quality: str) -> Maker:
        def make() -> Process:
            stream = soxr.ResampleStream(src, dst, 1, dtype="int16", quality=quality)

            def process(chunk: bytes, last: bool = False) -> bytes:
                x = np.frombuffer(chunk, dtype="<i2")
                return stream.resample_chunk(x, last=last).tobytes()  # type: ignore[no-any-return]

            return process

        return make

    def poly() -> Process:
        g = math.gcd(src, dst)

        def process(chunk: bytes, last: bool = False) -> bytes:
            x = np.frombuffer(chunk, dtype="<i2").astype(np.float64)
            y = signal.resample_poly(x, dst // g, src // g)
            return np.clip(np.rint(y), -32768, 32767).astype("<i2").tobytes()  # type: ignore[no-any-return]

        return process

    return {
        "voice-engine native": ours(native),
        "voice-engine twin": ours(twin),
        "soxr HQ": soxr_stream("HQ"),
        "soxr VHQ": soxr_stream("VHQ"),
        "scipy resample_poly": poly,
    }


def _tone(rate: int, freq: float, seconds: float) -> bytes:
    n = np.arange(int(rate * seconds))
    x = LEVEL * np.sin(2 * math.pi * freq * n / rate + 0.3)
    return np.rint(x).astype("<i2").tobytes()  # type: ignore[no-any-return]


def _speechlike(rate: int, seconds: float) -> bytes:
    """Noise shaped like speech (most energy low, nothing above 0.45 of 8 kHz's band)."""
    n = int(rate * seconds)
    spectrum = np.fft.rfft(np.random.default_rng(5).standard_normal(n))
    freqs = np.fft.rfftfreq(n, 1 / rate)
    spectrum *= 1 / (1 + freqs / 500) * (freqs < 3600)
    x = np.fft.irfft(spectrum, n)
    return np.rint(x * (3000 / x.std())).astype("<i2").tobytes()  # type: ignore[no-any-return]


def _stream(make: Maker, pcm: bytes, chunk: int, last: bool) -> tuple[np.ndarray, list[int]]:
    """The output of ``pcm`` in ``chunk``-byte pieces, and where each piece's output ends."""
    process = make()
    outs = [process(pcm[i : i + chunk], False) for i in range(0, len(pcm), chunk)]
    if last:
        outs.append(process(b"", True))
    y = np.frombuffer(b"".join(outs), dtype="<i2").astype(np.float64)
    return y, np.cumsum([len(o) // 2 for o in outs]).tolist()


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


def _seam_db(residual: np.ndarray, seams: list[int], amp: float) -> float:
    """The largest error within 2 samples of a chunk seam, in dB against the tone."""
    worst = max(np.abs(residual[max(0, s - 2) : s + 2]).max() for s in seams)
    return 20 * math.log10(max(float(worst), 1e-12) / amp)


def _quality(make: Maker, src: int, dst: int, seconds: float) -> dict[str, object]:
    chunk = src // 50 * 2
    pcm = _tone(src, 1000, seconds)
    y, ends = _stream(make, pcm, chunk, last=False)
    held_ms = (len(pcm) // 2 * dst / src - len(y)) / dst * 1000
    y, ends = _stream(make, pcm, chunk, last=True)
    skip = dst // 5
    (amp,), residual = _fit(y[skip:-skip], dst, 1000)
    snr = 20 * math.log10(amp / math.sqrt(2) / max(residual.std(), 1e-12))
    seam = _seam_db(residual, [e - skip for e in ends if 2 * skip < e < len(y) - 2 * skip], amp)
    freq, leaks = OUT_OF_BAND[(src, dst)]
    y, _ = _stream(make, _tone(src, freq, seconds), chunk, last=True)
    body = y[dst // 5 : -dst // 5]
    silent = not body.any()  # the leak rounded to zero: below the 16-bit floor
    worst = max(_fit(body, dst, freq, *leaks)[0][1:])
    reject = FLOOR_DB if silent else 20 * math.log10(LEVEL / worst)
    return {"snr_db": snr, "reject_db": reject, "reject_floor": silent, "delay_ms": held_ms,
            "seam_db": seam}


def _batch(process: Process, chunks: list[bytes], count: int) -> float:
    """Mean seconds per call over ``count`` consecutive chunks."""
    n = len(chunks)
    t0 = time.perf_counter()
    for i in range(count):
        process(chunks[i % n], False)
    return (time.perf_counter() - t0) / count


def _costs(methods: dict[str, Maker], src: int, rounds: int, budget: float) -> dict[str, float]:
    pcm = _speechlike(src, 4.0)
    size = src // 50 * 2
    chunks = [pcm[i : i + size] for i in range(0, len(pcm), size)]
    streams = {name: make() for name, make in methods.items()}
    # Each method's batch lasts about `budget` seconds, whatever its speed.
    counts = {
        name: max(20, int(budget / _batch(process, chunks, 20)))
        for name, process in streams.items()
    }
    samples: dict[str, list[float]] = {name: [] for name in methods}
    order = list(methods)
    shuffle = random.Random(1).shuffle
    for _ in range(rounds):
        shuffle(order)
        for name in order:
            samples[name].append(_batch(streams[name], chunks, counts[name]))
    return {name: statistics.median(values) * 1e6 for name, values in samples.items()}


def run(rounds: int, budget: float, seconds: float) -> list[dict[str, object]]:
    from engine._native import resample as native

    rows = []
    for src, dst in PAIRS:
        methods = _methods(src, dst)
        costs = _costs(methods, src, rounds, budget)
        for name, make in methods.items():
            q = _quality(make, src, dst, seconds)
            if name == "voice-engine native":
                q["delay_ms_reported"] = native.Resampler(src, dst).delay() / dst * 1000
            rows.append({"pair": f"{src // 1000}k->{dst // 1000}k", "method": name,
                         "us_per_chunk": costs[name], **q})
    return rows


def _machine() -> dict[str, str]:
    info = {"machine": platform.machine(), "python": platform.python_version()}
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return info
    for line in lscpu.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("Model name", "CPU(s)", "Hypervisor vendor"):
            info[key.strip()] = value.strip()
    return info


def _versions() -> dict[str, str]:
    import scipy
    import soxr

    return {"numpy": np.__version__, "scipy": scipy.__version__, "soxr": soxr.__version__}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true", help="print JSON instead of a table")
    ap.add_argument("--rounds", type=int, default=41, help="interleaved rounds (median taken)")
    ap.add_argument("--budget", type=float, default=0.004, help="seconds per method and round")
    ap.add_argument("--seconds", type=float, default=2.0, help="length of the quality signals")
    args = ap.parse_args()
    rows = run(args.rounds, args.budget, args.seconds)
    meta = {"date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
            **_machine(), **_versions(), "rounds": args.rounds, "budget_s": args.budget}
    if args.json:
        print(orjson.dumps({**meta, "rows": rows}).decode())
        return
    print(f"<!-- {orjson.dumps(meta).decode()} -->")
    print("| pair | method | µs / 20 ms chunk | SNR dB | rejection dB | delay ms | seam dB |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for r in rows:
        reject = f"≥ {r['reject_db']:.1f}" if r["reject_floor"] else f"{r['reject_db']:.1f}"
        print(f"| {r['pair']} | {r['method']} | {r['us_per_chunk']:.2f} | {r['snr_db']:.1f} | "
              f"{reject} | {r['delay_ms']:.2f} | {r['seam_db']:.1f} |")


if __name__ == "__main__":
    main()
