"""16-bit PCM WAV files in and out, and rate conversion for the test caller.

Reading accepts 16-bit PCM at any rate and any channel count (the first channel is kept);
writing produces 16-bit mono. Rate conversion uses the engine's own streaming resampler: the
direct filter when one exists for the pair, else two stages through 24 kHz (the resampler has
filters from and to 24 kHz for every AudioSocket rate), else a clear error.
"""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np

from engine._impl import resample
from engine.errors import BadWav, UnsupportedRate

__all__ = ["BadWav", "convert_rate", "read_wav", "read_wav_at", "write_wav"]

_HUB = 24000


def read_wav(path: str | Path) -> tuple[int, bytes]:
    """Reads a 16-bit PCM WAV: returns (rate, mono int16 LE bytes), first channel if several.

    Raises:
        BadWav: the file is not a 16-bit PCM WAV.
        OSError: the file cannot be opened.
    """
    try:
        with wave.open(str(path), "rb") as wav:
            width, channels, rate = wav.getsampwidth(), wav.getnchannels(), wav.getframerate()
            data = wav.readframes(wav.getnframes())
    except (wave.Error, EOFError) as exc:
        raise BadWav(str(path), f"not a PCM WAV file ({exc})") from None
    if width != 2:
        raise BadWav(str(path), f"{8 * width}-bit samples; only 16-bit PCM is supported")
    if channels > 1:
        usable = len(data) - len(data) % (2 * channels)
        samples = np.frombuffer(data[:usable], dtype="<i2").reshape(-1, channels)
        data = np.ascontiguousarray(samples[:, 0]).tobytes()
    return rate, data


def write_wav(path: str | Path, rate: int, pcm: bytes) -> None:
    """Writes ``pcm`` (mono int16 LE) as a 16-bit WAV at ``rate`` Hz."""
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(pcm)


def convert_rate(pcm: bytes, in_rate: int, out_rate: int) -> bytes:
    """``pcm`` (mono int16 LE) converted from ``in_rate`` to ``out_rate`` Hz, whole.

    Raises:
        UnsupportedRate: no filter for the pair, directly or through 24 kHz.
    """
    if in_rate == out_rate:
        return pcm
    try:
        return resample.Resampler(in_rate, out_rate).process(pcm, last=True)
    except UnsupportedRate as direct:
        if _HUB in (in_rate, out_rate):
            raise
        try:
            up = resample.Resampler(in_rate, _HUB)
            down = resample.Resampler(_HUB, out_rate)
        except UnsupportedRate:
            raise UnsupportedRate(
                in_rate, f"cannot convert {in_rate} Hz to {out_rate} Hz: {direct}"
            ) from None
        return down.process(up.process(pcm, last=True), last=True)


def read_wav_at(path: str | Path, rate: int) -> bytes:
    """Reads a WAV (as :func:`read_wav`) and converts it to ``rate`` Hz.

    Raises:
        BadWav: the file is not a 16-bit PCM WAV.
        UnsupportedRate: its rate cannot be converted to ``rate``.
    """
    file_rate, pcm = read_wav(path)
    return convert_rate(pcm, file_rate, rate)
