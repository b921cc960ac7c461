"""Resampler benchmark: our streaming polyphase FIR against soxr and scipy, in one run.

Run: ``python benchmarks/resampler.py [--json] [--seconds S]`` (needs the ``[bench]`` extra).

For each direction of 8<->24 and 16<->24 kHz it streams 20 ms chunks, bytes in and bytes out
as the engine does, and reports:
- cost: mean microseconds per 20 ms chunk, Python call and conversions included;
- snr: a -6 dBFS 1 kHz tone through the stream, tone against everything else, in dB;
- reject: an out-of-band tone (or the image of an in-band one), how far below the tone, in dB;
- held: audio held back inside the stream (output owed but not yet given), in ms: the delay.
Methods run interleaved, so their ratios hold on a busy machine.
"""

from __future__ import annotations

import argparse
import datetime
import math
import platform
import statistics
import time
from collections.abc import Callable

import numpy as np
import orjson

__all__ = ["main"]

PAIRS = [(8000, 24000), (24000, 8000), (16000, 24000), (24000, 16000)]
# (tone in, where its alias or image lands) for the rejection figure
OUT_OF_BAND = {
    (8000, 24000): (3000, [5000]),
    (24000, 8000): (6000, [2000]),
    (16000, 24000): (7000, [9000, 1000]),
    (24000, 16000): (10000, [6000]),
}
Stream = Callable[[bytes], bytes]


def _methods(src: int, dst: int) -> dict[str, Callable[[], Stream]]:
    import soxr
    from scipy import signal

    from engine._impl import load

    ours = load("native", "resample")
    g = math.gcd(src, dst)

    def voice_engine() -> Stream:
        return ours.Resampler(src, dst).process

    def soxr_stream(quality: str) -> Callable[[], Stream]:
        def make() -> Stream:
            stream = soxr.ResampleStream(src, dst, 1, dtype="int16", quality=quality)

            def process(chunk: bytes) -> bytes:
                x = np.frombuffer(chunk, dtype="<i2")
                return stream.resample_chunk(x).tobytes()  # type: ignore[no-any-return]

            return process

        return make

    def poly() -> Stream:
        def process(chunk: bytes) -> bytes:
            x = np.frombuffer(chunk, dtype="<i2").astype(np.float64)
            y = signal.resample_poly(x, dst // g, src // g)
            return np.clip(np.rint(y), -32768, 32767).astype("<i2").tobytes()  # type: ignore[no-any-return]

        return process

    return {
        "voice-engine": voice_engine,
        "soxr HQ": soxr_stream("HQ"),
        "soxr VHQ": soxr_stream("VHQ"),
        "scipy resample_poly": poly,
    }


def _tone(rate: int, freq: float, seconds: float) -> bytes:
    n = np.arange(int(rate * seconds))
    x = 32767 * 10 ** (-6 / 20) * np.sin(2 * math.pi * freq * n / rate + 0.3)
    return np.rint(x).astype("<i2").tobytes()  # type: ignore[no-any-return]


def _stream(make: Callable[[], Stream], pcm: bytes, chunk: int) -> tuple[np.ndarray, int]:
    process = make()
    out = [process(pcm[i : i + chunk]) for i in range(0, len(pcm), chunk)]
    y = np.frombuffer(b"".join(out), dtype="<i2").astype(np.float64)
    return y, len(y)


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


def _quality(make: Callable[[], Stream], src: int, dst: int) -> dict[str, float]:
    chunk = src // 50 * 2
    y, got = _stream(make, _tone(src, 1000, 2.0), chunk)
    (amp,), residual = _fit(y[dst // 5 : -dst // 10], dst, 1000)
    snr = 20 * math.log10(amp / math.sqrt(2) / max(residual.std(), 1e-12))
    held = (2.0 * dst - got) / dst * 1000
    freq, leaks = OUT_OF_BAND[(src, dst)]
    y, _ = _stream(make, _tone(src, freq, 2.0), chunk)
    body = y[dst // 5 : -dst // 10]
    worst = max(_fit(body, dst, freq, *leaks)[0][1:])
    level = 32767 * 10 ** (-6 / 20)
    reject = 20 * math.log10(level / max(worst, 1e-9))
    return {"snr_db": snr, "reject_db": reject, "held_ms": held}


def _cost(process: Stream, chunk: bytes, seconds: float) -> float:
    reps = 200
    t0 = time.perf_counter()
    for _ in range(reps):
        process(chunk)
    per = (time.perf_counter() - t0) / reps
    reps = max(reps, int(seconds / max(per, 1e-9)))
    t0 = time.perf_counter()
    for _ in range(reps):
        process(chunk)
    return (time.perf_counter() - t0) / reps * 1e6


def run(seconds: float, rounds: int) -> list[dict[str, object]]:
    rows = []
    for src, dst in PAIRS:
        methods = _methods(src, dst)
        chunk = _tone(src, 440, 0.02)
        costs: dict[str, list[float]] = {name: [] for name in methods}
        streams = {name: make() for name, make in methods.items()}
        for _ in range(rounds):
            for name, process in streams.items():
                costs[name].append(_cost(process, chunk, seconds))
        for name, make in methods.items():
            rows.append({
                "pair": f"{src // 1000}k->{dst // 1000}k",
                "method": name,
                "us_per_chunk": statistics.median(costs[name]),
                **_quality(make, src, dst),
            })
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true", help="print JSON instead of a table")
    ap.add_argument("--seconds", type=float, default=0.1, help="timing per method and round")
    ap.add_argument("--rounds", type=int, default=7, help="interleaved rounds (median taken)")
    args = ap.parse_args()
    rows = run(args.seconds, args.rounds)
    if args.json:
        print(orjson.dumps({"machine": platform.machine(), "rows": rows}).decode())
        return
    print(f"# {datetime.date.today()} {platform.machine()} python {platform.python_version()}")
    print("| pair | method | µs / 20 ms chunk | SNR dB | rejection dB | held back ms |")
    print("|---|---|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['pair']} | {r['method']} | {r['us_per_chunk']:.2f} | {r['snr_db']:.1f} | "
              f"{r['reject_db']:.1f} | {r['held_ms']:.2f} |")


if __name__ == "__main__":
    main()
