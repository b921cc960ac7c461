"""A simple energy VAD, sans-I/O: 16-bit audio in, speech start and stop events out.

It stands in for the server's VAD: speech is any 10 ms window whose RMS level reaches the
threshold (in dBFS, where a full-scale square wave is 0); a turn ends after ``silence_ms`` of
windows below it. Times are milliseconds of input audio received, the same timeline the
Realtime API uses for ``audio_start_ms`` and ``audio_end_ms``.
"""

from __future__ import annotations

from dataclasses import dataclass

from engine._impl import energy

__all__ = ["EnergyVad", "SpeechStarted", "SpeechStopped"]

WINDOW_MS = 10


@dataclass(frozen=True, slots=True)
class SpeechStarted:
    """Speech began; ``audio_start_ms`` already has the prefix padding subtracted."""

    audio_start_ms: int


@dataclass(frozen=True, slots=True)
class SpeechStopped:
    """The turn ended: the last speech window ended at ``audio_end_ms``."""

    audio_end_ms: int


class EnergyVad:
    """Feeds on 16-bit little-endian samples at ``rate``; call :meth:`feed` per append."""

    def __init__(
        self,
        rate: int,
        threshold_dbfs: float,
        silence_ms: int,
        prefix_padding_ms: int = 300,
    ) -> None:
        self.rate = rate
        self.window = rate * WINDOW_MS // 1000
        # Compare mean squares, not levels: no log per window.
        self._threshold_ms = (32768.0 * 10.0 ** (threshold_dbfs / 20.0)) ** 2
        self.silence_ms = silence_ms
        self.prefix_padding_ms = prefix_padding_ms
        self.received_ms = 0
        self.in_speech = False
        self._last_voiced_end = 0
        self._pending = b""

    def feed(self, pcm: bytes) -> list[SpeechStarted | SpeechStopped]:
        """Consumes audio and returns the events it completes, in order."""
        data = self._pending + pcm if self._pending else pcm
        width = self.window * 2
        whole = len(data) // width * width
        self._pending = data[whole:]
        if not whole:
            return []
        flags = energy.voiced_windows(data, self.window, self._threshold_ms * self.window)
        if not self.in_speech and 1 not in flags:  # silence goes on: nothing to judge
            self.received_ms += WINDOW_MS * len(flags)
            return []
        events: list[SpeechStarted | SpeechStopped] = []
        for voiced in flags:
            self.received_ms += WINDOW_MS
            if voiced:
                if not self.in_speech:
                    self.in_speech = True
                    start = self.received_ms - WINDOW_MS - self.prefix_padding_ms
                    events.append(SpeechStarted(max(0, start)))
                self._last_voiced_end = self.received_ms
            elif self.in_speech and self.received_ms - self._last_voiced_end >= self.silence_ms:
                self.in_speech = False
                events.append(SpeechStopped(self._last_voiced_end))
        return events
