"""The simulator's side of the bench: when each call's events went out and its audio came in.

A :class:`SimRecorder` is the simulator's :class:`~engine.sim.server.SimObserver`. It keys
sessions by the ``X-Client-Request-Id`` the engine sends (the AudioSocket call's UUID), so
what the upstream saw can be lined up with what the caller saw, on one clock.
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass, field
from typing import Any

from engine.bench.measure import SimTrace
from engine.sim.server import LiveSession, SimObserver

__all__ = ["SessionLog", "SimRecorder"]

SPEECH_STARTED = "input_audio_buffer.speech_started"
MAX_INPUT_RATE = 24000  # pcm16; a pcmu session captures more seconds in the same bytes


@dataclass(slots=True)
class SessionLog:
    """One session's timings, in compact arrays (they grow 25 times a second per call)."""

    first_deltas: list[float] = field(default_factory=list)
    speech_started: list[float] = field(default_factory=list)
    append_times: array = field(default_factory=lambda: array("d"))
    append_samples: array = field(default_factory=lambda: array("q"))
    capture: bytearray | None = None

    def trace(self) -> SimTrace:
        """The log as :mod:`engine.bench.measure` takes it."""
        return SimTrace(
            list(self.first_deltas), list(self.speech_started),
            list(zip(self.append_times, self.append_samples, strict=True)),
        )


class SimRecorder(SimObserver):
    """Records every identified session; captures the input audio of the first few."""

    def __init__(self, capture_sessions: int = 20, capture_seconds: float = 8.0) -> None:
        self.logs: dict[str, SessionLog] = {}
        self.unidentified = 0
        self._by_live: dict[int, SessionLog] = {}
        self._capture_sessions = capture_sessions
        self._capture_seconds = capture_seconds
        self._captured = 0

    def opened(self, live: LiveSession) -> None:
        rid = live.report.client_request_id
        if rid is None:
            self.unidentified += 1
            return
        entry = SessionLog()
        self.logs[rid] = entry
        self._by_live[id(live)] = entry
        if self._captured < self._capture_sessions:
            self._captured += 1
            entry.capture = live.core.capture = bytearray()
            live.core.capture_limit = int(2 * MAX_INPUT_RATE * self._capture_seconds)

    def received(self, live: LiveSession, now: float) -> None:
        entry = self._by_live.get(id(live))
        if entry is None:
            return
        samples = live.core.input_samples
        if not entry.append_samples or entry.append_samples[-1] != samples:
            entry.append_times.append(now)
            entry.append_samples.append(samples)

    def sent(self, live: LiveSession, event: dict[str, Any], now: float) -> None:
        if event.get("type") == SPEECH_STARTED:
            entry = self._by_live.get(id(live))
            if entry is not None:
                entry.speech_started.append(now)

    def delta_sent(self, live: LiveSession, index: int, now: float) -> None:
        if index == 0:
            entry = self._by_live.get(id(live))
            if entry is not None:
                entry.first_deltas.append(now)

    def closed(self, live: LiveSession) -> None:
        self._by_live.pop(id(live), None)
