"""Response audio, made once per (config, format) and cut into base64 delta payloads.

The load benchmark runs hundreds of simulated sessions, so nothing here runs per delta: the
signal, its encoding and its base64 text are computed once and shared read-only.
"""

from __future__ import annotations

import binascii
import functools
import math

import numpy as np

from engine._impl import g711

__all__ = ["AudioFormat", "ResponseAudio", "response_audio", "synthesize"]


class AudioFormat:
    """Names of the upstream formats the simulator speaks."""

    PCM16 = "pcm16"  # 16-bit little-endian at 24 kHz
    PCMU = "pcmu"  # G.711 μ-law at 8 kHz
    PCMA = "pcma"  # G.711 A-law at 8 kHz

    RATES = {PCM16: 24000, PCMU: 8000, PCMA: 8000}
    BYTES_PER_SAMPLE = {PCM16: 2, PCMU: 1, PCMA: 1}


def synthesize(signal: str, rate: int, ms: int, tone_hz: float, level_dbfs: float) -> np.ndarray:
    """The response signal as int16 samples.

    ``tone`` is a sine whose peak is ``level_dbfs`` relative to full scale. ``voice`` is a
    harmonic series on a 140 Hz fundamental under a 3 Hz syllable envelope, peak-normalised to
    the same level, so it has speech-like spectrum and pauses.
    """
    n = rate * ms // 1000
    t = np.arange(n, dtype=np.float64) / rate
    peak = 32767.0 * 10.0 ** (level_dbfs / 20.0)
    if signal == "tone":
        x = np.sin(2.0 * math.pi * tone_hz * t)
    else:
        f0 = 140.0 * (1.0 + 0.05 * np.sin(2.0 * math.pi * 0.7 * t))
        phase = 2.0 * math.pi * np.cumsum(f0) / rate
        x = np.zeros(n)
        for k in range(1, 13):
            if 140.0 * k < rate / 2 * 0.9:
                x += np.sin(k * phase) / k
        envelope = 0.5 - 0.5 * np.cos(2.0 * math.pi * 3.0 * t)
        x *= envelope
        top = float(np.max(np.abs(x))) if n else 0.0
        if top > 0:
            x /= top
    return np.round(x * peak).astype("<i2")


class ResponseAudio:
    """One response's audio, encoded and split into deltas.

    Attributes:
        fmt: ``pcm16`` or ``pcmu``.
        rate: sample rate of ``fmt``.
        payloads: base64 text of each delta, as ASCII bytes ready to splice into JSON.
        samples: samples in each delta (for accounting audio sent per item).
        total_ms: length of the whole response.
        raw: the encoded audio (what the deltas decode to, concatenated).
    """

    __slots__ = ("fmt", "payloads", "rate", "raw", "samples", "total_ms")

    def __init__(self, fmt: str, raw: bytes, delta_ms: int) -> None:
        self.fmt = fmt
        self.rate = AudioFormat.RATES[fmt]
        self.raw = raw
        width = AudioFormat.BYTES_PER_SAMPLE[fmt]
        step = self.rate * delta_ms // 1000 * width
        chunks = [raw[i : i + step] for i in range(0, len(raw), step)]
        self.payloads = tuple(binascii.b2a_base64(c, newline=False) for c in chunks)
        self.samples = tuple(len(c) // width for c in chunks)
        self.total_ms = len(raw) // width * 1000 // self.rate


@functools.lru_cache(maxsize=32)
def response_audio(
    fmt: str, signal: str, ms: int, delta_ms: int, tone_hz: float, level_dbfs: float
) -> ResponseAudio:
    """The shared :class:`ResponseAudio` for these settings (computed on first use)."""
    rate = AudioFormat.RATES[fmt]
    pcm = synthesize(signal, rate, ms, tone_hz, level_dbfs).tobytes()
    if fmt == AudioFormat.PCMU:
        raw = g711.ulaw_encode(pcm)
    elif fmt == AudioFormat.PCMA:
        raw = g711.alaw_encode(pcm)
    else:
        raw = pcm
    return ResponseAudio(fmt, raw, delta_ms)
