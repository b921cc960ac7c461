"""The simulator's settings: what it answers with, how it paces, which faults it injects.

A :class:`SimConfig` is fixed for the life of a :class:`~engine.sim.server.Simulator`; faults can
also be queued or applied to live sessions at run time.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field

from engine.errors import ConfigError

__all__ = [
    "Dialect",
    "Fault",
    "FaultKind",
    "SimConfig",
    "Signal",
    "ToolScript",
    "ValidationMode",
    "SESSION_FAULTS",
    "parse_fault",
]


class Dialect(enum.Enum):
    """Which Realtime interface a connection speaks."""

    GA = "ga"
    BETA = "beta"


class Signal(enum.Enum):
    """What the response audio sounds like."""

    TONE = "tone"
    VOICE = "voice"


class ValidationMode(enum.Enum):
    """How many client events are checked against the SDK's models."""

    ALL = "all"
    SAMPLE = "sample"
    OFF = "off"


class FaultKind(enum.Enum):
    """A failure the simulator can inject."""

    REFUSE = "refuse"  # drop the TCP connection before answering the handshake
    UNAUTHORIZED = "401"
    FORBIDDEN = "403"
    RATE_LIMITED = "429"
    CLOSE = "close"  # close with ``close_code`` (1011 unless given) after ``after_ms``
    STALL = "stall"  # stop reading and sending after ``after_ms``, without closing
    GARBAGE = "garbage"  # a text message that is not JSON, after ``after_ms``
    UNKNOWN = "unknown"  # an event of a type no client knows, after ``after_ms``
    HUGE = "huge"  # an unknown event of ``size`` bytes, after ``after_ms``
    ERROR = "error"  # an ``error`` event (a server error), after ``after_ms``
    BAD_AUDIO = "bad_audio"  # the first audio delta after ``after_ms`` is not base64
    # The first audio delta after ``after_ms`` loses its last byte: half a pcm16 sample (in
    # G.711, a byte a sample, it stays whole samples and is no fault).
    ODD_AUDIO = "odd_audio"


SESSION_FAULTS = frozenset({
    FaultKind.CLOSE, FaultKind.STALL, FaultKind.GARBAGE, FaultKind.UNKNOWN, FaultKind.HUGE,
    FaultKind.ERROR, FaultKind.BAD_AUDIO, FaultKind.ODD_AUDIO,
})
"""Faults applied once a session is open (the others answer the handshake)."""


@dataclass(frozen=True, slots=True)
class Fault:
    """One injected failure: ``after_ms`` applies to the session faults, ``retry_after`` to
    429, ``close_code`` to CLOSE and ``size`` (bytes of the message) to HUGE."""

    kind: FaultKind
    after_ms: int = 0
    retry_after: float = 1.0
    close_code: int = 1011
    size: int = 4 * 1024 * 1024


_FAULT_USAGE = ("refuse, 401, 403, 429[:SECONDS], close:MS[:CODE], stall:MS, garbage:MS, "
                "unknown:MS, huge:MS[:BYTES], error:MS, bad_audio:MS or odd_audio:MS")


def parse_fault(text: str) -> Fault:
    """Parses one fault: ``refuse``, ``401``, ``403``, ``429[:SECONDS]``, ``close:MS[:CODE]``,
    ``stall:MS``, ``garbage:MS``, ``unknown:MS``, ``huge:MS[:BYTES]``, ``error:MS``,
    ``bad_audio:MS`` or ``odd_audio:MS``.

    Raises:
        ConfigError: the text is none of these.
    """
    name, *args = text.strip().lower().split(":")
    try:
        kind = FaultKind(name)
    except ValueError:
        raise ConfigError(f"unknown fault {text!r}: use {_FAULT_USAGE}") from None
    takes = 1 if kind is FaultKind.RATE_LIMITED else 2 if kind in (
        FaultKind.CLOSE, FaultKind.HUGE) else 1 if kind in SESSION_FAULTS else 0
    if len(args) > takes or any(not a for a in args):
        raise ConfigError(f"fault {text!r}: use {_FAULT_USAGE}")
    try:
        if kind is FaultKind.RATE_LIMITED:
            return Fault(kind, retry_after=float(args[0]) if args else 1.0)
        numbers = [int(a) for a in args]
    except ValueError:
        raise ConfigError(f"fault {text!r}: {':'.join(args)!r} is not a number") from None
    if kind not in SESSION_FAULTS:
        return Fault(kind)
    after = numbers[0] if numbers else 0
    if kind is FaultKind.CLOSE and len(numbers) == 2:
        if not (numbers[1] == 1000 or 1001 <= numbers[1] <= 1014 or 3000 <= numbers[1] <= 4999):
            raise ConfigError(f"fault {text!r}: {numbers[1]} is not a close code a server sends")
        return Fault(kind, after_ms=after, close_code=numbers[1])
    if kind is FaultKind.HUGE and len(numbers) == 2:
        return Fault(kind, after_ms=after, size=numbers[1])
    return Fault(kind, after_ms=after)


@dataclass(frozen=True, slots=True)
class ToolScript:
    """A response that is a function call instead of audio.

    It fires on response number ``at_response`` (1-based, per session), or on the first
    response after a client ``conversation.item.create`` user text containing ``cue``
    (case-insensitive). Each script fires at most once per session.
    """

    name: str
    arguments: str = "{}"
    at_response: int | None = None
    cue: str | None = None


@dataclass(frozen=True, slots=True)
class SimConfig:
    """Everything a :class:`~engine.sim.server.Simulator` needs.

    Attributes:
        dialect: force one dialect for every connection; None picks per connection from the
            ``OpenAI-Beta: realtime=v1`` header.
        api_key: when set, connections must present it (Bearer or ``api-key``); never logged.
        response_ms: length of each audio response.
        delta_ms: audio per ``...audio.delta`` event.
        pacing: speed against real time (4.0 = four times real time); ``math.inf`` sends the
            whole response at once.
        first_delta_ms: delay between ``response.created`` and the first delta.
        signal: a pure tone or a voice-like harmonic signal.
        tone_hz, level_dbfs: tone frequency, and peak level relative to a full-scale sine.
        vad_threshold_dbfs: RMS level (per 10 ms) above which input counts as speech.
        vad_silence_ms: silence that ends a turn unless the session sets its own.
        validation, sample_every: event checking; SAMPLE checks one event in ``sample_every``.
        validation_required: the operator asked for checking by name, so a missing SDK is a
            warning, not the notice a default gets.
        tool_scripts: scripted function-call responses.
        faults: applied to every connection (the CLI's ``--fault``).
        session_limit_s: a session ends this long after it opened, without warning, as the
            real API's do after 60 minutes (30 on beta); None never ends one.
    """

    dialect: Dialect | None = None
    api_key: str | None = field(default=None, repr=False)
    response_ms: int = 2000
    delta_ms: int = 100
    pacing: float = 4.0
    first_delta_ms: int = 0
    signal: Signal = Signal.TONE
    tone_hz: float = 440.0
    level_dbfs: float = -12.0
    response_text: str = "This is the voice engine simulator speaking."
    vad_threshold_dbfs: float = -40.0
    vad_silence_ms: int = 500
    validation: ValidationMode = ValidationMode.ALL
    sample_every: int = 50
    validation_required: bool = False
    tool_scripts: tuple[ToolScript, ...] = ()
    faults: tuple[Fault, ...] = ()
    session_limit_s: float | None = None

    def __post_init__(self) -> None:
        problems = []
        if self.session_limit_s is not None and not self.session_limit_s > 0:
            problems.append("session_limit_s must be positive")
        if self.response_ms <= 0 or self.delta_ms <= 0:
            problems.append("response_ms and delta_ms must be positive")
        if not (self.pacing > 0 or math.isinf(self.pacing)):
            problems.append("pacing must be positive (math.inf sends all at once)")
        if not 0 < self.tone_hz < 4000:
            problems.append("tone_hz must be between 0 and 4000 (the μ-law band)")
        if self.level_dbfs > 0:
            problems.append("level_dbfs must be at most 0")
        if self.sample_every < 1:
            problems.append("sample_every must be at least 1")
        if problems:
            raise ConfigError("simulator config: " + "; ".join(problems))
