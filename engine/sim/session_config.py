"""A session's configuration: merging ``session.update`` and reading what the simulator needs.

The session is kept in the dialect's own shape (what ``session.updated`` echoes);
:func:`settings_of` reads the few values that drive the simulation from either shape.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from engine.sim.config import Dialect
from engine.sim.response_audio import AudioFormat

__all__ = ["SessionSettings", "merge_session", "settings_of"]

# Objects merged key by key on update; every other value (formats, turn_detection, tools, …)
# is replaced whole, as the API does.
_MERGED = frozenset({"audio", "input", "output"})

_GA_FORMATS: dict[Any, str] = {"audio/pcm": AudioFormat.PCM16, "audio/pcmu": AudioFormat.PCMU,
               "audio/pcma": AudioFormat.PCMA}
_BETA_FORMATS: dict[Any, str] = {"pcm16": AudioFormat.PCM16, "g711_ulaw": AudioFormat.PCMU,
                 "g711_alaw": AudioFormat.PCMA}


@dataclass(frozen=True, slots=True)
class SessionSettings:
    """What the simulation reads from the session."""

    input_format: str
    output_format: str
    turn_detection: str | None
    silence_ms: int | None
    prefix_ms: int
    create_response: bool
    interrupt_response: bool
    transcription: bool
    instructions: str


def merge_session(current: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """``current`` with ``update`` applied (a new dict; neither argument changes)."""
    merged = copy.deepcopy(current)
    _merge_into(merged, update)
    return merged


def _merge_into(target: dict[str, Any], update: dict[str, Any]) -> None:
    for key, value in update.items():
        if key in _MERGED and isinstance(value, dict) and isinstance(target.get(key), dict):
            _merge_into(target[key], value)
        else:
            target[key] = copy.deepcopy(value)


def settings_of(dialect: Dialect, session: dict[str, Any]) -> SessionSettings:
    """Reads the simulation settings from a session in ``dialect``'s shape."""
    if dialect is Dialect.GA:
        audio = session.get("audio") or {}
        inp, out = audio.get("input") or {}, audio.get("output") or {}
        in_fmt = _GA_FORMATS.get((inp.get("format") or {}).get("type"), AudioFormat.PCM16)
        out_fmt = _GA_FORMATS.get((out.get("format") or {}).get("type"), AudioFormat.PCM16)
        turn = inp.get("turn_detection")
        transcription = inp.get("transcription") is not None
    else:
        in_fmt = _BETA_FORMATS.get(session.get("input_audio_format"), AudioFormat.PCM16)
        out_fmt = _BETA_FORMATS.get(session.get("output_audio_format"), AudioFormat.PCM16)
        turn = session.get("turn_detection")
        transcription = session.get("input_audio_transcription") is not None
    turn = turn if isinstance(turn, dict) else None
    silence = None if turn is None else turn.get("silence_duration_ms")
    return SessionSettings(
        input_format=in_fmt,
        output_format=out_fmt,
        turn_detection=None if turn is None else str(turn.get("type", "server_vad")),
        silence_ms=silence if isinstance(silence, int) else None,
        prefix_ms=int((turn or {}).get("prefix_padding_ms") or 300),
        create_response=bool((turn or {}).get("create_response", True)),
        interrupt_response=bool((turn or {}).get("interrupt_response", True)),
        transcription=transcription,
        instructions=str(session.get("instructions") or ""),
    )
