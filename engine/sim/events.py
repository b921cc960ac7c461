"""Shapes of the server events the simulator sends, in the GA and beta dialects.

Plain functions returning JSON-ready dicts (without ``event_id``: the session stamps it).
Only the names and shapes differ between dialects; the session decides what to send and when.
"""

from __future__ import annotations

import math
import time
from typing import Any

from engine.sim.config import Dialect

__all__ = [
    "AUDIO_DELTA",
    "AUDIO_DONE",
    "TRANSCRIPT_DELTA",
    "TRANSCRIPT_DONE",
    "assistant_item",
    "default_session",
    "error",
    "function_call_item",
    "item_added",
    "item_done",
    "rate_limits",
    "response_object",
    "usage",
    "user_audio_item",
]

AUDIO_DELTA = {Dialect.GA: "response.output_audio.delta", Dialect.BETA: "response.audio.delta"}
AUDIO_DONE = {Dialect.GA: "response.output_audio.done", Dialect.BETA: "response.audio.done"}
TRANSCRIPT_DELTA = {
    Dialect.GA: "response.output_audio_transcript.delta",
    Dialect.BETA: "response.audio_transcript.delta",
}
TRANSCRIPT_DONE = {
    Dialect.GA: "response.output_audio_transcript.done",
    Dialect.BETA: "response.audio_transcript.done",
}

_TURN_DETECTION = {
    "type": "server_vad",
    "threshold": 0.5,
    "prefix_padding_ms": 300,
    "silence_duration_ms": 200,
    "create_response": True,
    "interrupt_response": True,
}


def default_session(dialect: Dialect, session_id: str, model: str) -> dict[str, Any]:
    """The session as the API describes it in ``session.created``, before any update."""
    expires_at = int(time.time()) + (3600 if dialect is Dialect.GA else 1800)
    if dialect is Dialect.BETA:
        return {
            "id": session_id,
            "object": "realtime.session",
            "expires_at": expires_at,
            "model": model,
            "modalities": ["audio", "text"],
            "instructions": "",
            "voice": "alloy",
            "input_audio_format": "pcm16",
            "output_audio_format": "pcm16",
            "input_audio_transcription": None,
            "turn_detection": dict(_TURN_DETECTION),
            "tools": [],
            "tool_choice": "auto",
            "temperature": 0.8,
            "max_response_output_tokens": "inf",
            "speed": 1.0,
            "tracing": None,
        }
    return {
        "type": "realtime",
        "object": "realtime.session",
        "id": session_id,
        "expires_at": expires_at,
        "model": model,
        "output_modalities": ["audio"],
        "instructions": "",
        "tools": [],
        "tool_choice": "auto",
        "max_output_tokens": "inf",
        "tracing": None,
        "truncation": "auto",
        "prompt": None,
        "include": None,
        "audio": {
            "input": {
                "format": {"type": "audio/pcm", "rate": 24000},
                "transcription": None,
                "noise_reduction": None,
                "turn_detection": dict(_TURN_DETECTION, idle_timeout_ms=None),
            },
            "output": {
                "format": {"type": "audio/pcm", "rate": 24000},
                "voice": "alloy",
                "speed": 1.0,
            },
        },
    }


def error(
    message: str,
    code: str | None,
    client_event_id: str | None,
    param: str | None = None,
    kind: str = "invalid_request_error",
) -> dict[str, Any]:
    """An ``error`` event; ``client_event_id`` echoes the client event that caused it."""
    return {
        "type": "error",
        "error": {
            "type": kind,
            "code": code,
            "message": message,
            "param": param,
            "event_id": client_event_id,
        },
    }


def user_audio_item(item_id: str, transcript: str | None) -> dict[str, Any]:
    """The user message that a committed audio buffer becomes."""
    return {
        "id": item_id,
        "object": "realtime.item",
        "type": "message",
        "status": "completed",
        "role": "user",
        "content": [{"type": "input_audio", "transcript": transcript}],
    }


def assistant_item(
    dialect: Dialect, item_id: str, status: str, transcript: str | None
) -> dict[str, Any]:
    """The assistant's audio message; content is empty while it is in progress."""
    content = []
    if transcript is not None:
        kind = "output_audio" if dialect is Dialect.GA else "audio"
        content.append({"type": kind, "transcript": transcript})
    return {
        "id": item_id,
        "object": "realtime.item",
        "type": "message",
        "status": status,
        "role": "assistant",
        "content": content,
    }


def function_call_item(
    item_id: str, status: str, name: str, call_id: str, arguments: str
) -> dict[str, Any]:
    """A ``function_call`` output item."""
    return {
        "id": item_id,
        "object": "realtime.item",
        "type": "function_call",
        "status": status,
        "name": name,
        "call_id": call_id,
        "arguments": arguments,
    }


def item_added(dialect: Dialect, item: dict[str, Any], previous: str | None) -> list[dict]:
    """What the server sends when an item joins the conversation."""
    if dialect is Dialect.BETA:
        return [{"type": "conversation.item.created", "previous_item_id": previous, "item": item}]
    return [{"type": "conversation.item.added", "previous_item_id": previous, "item": item}]


def item_done(dialect: Dialect, item: dict[str, Any], previous: str | None) -> list[dict]:
    """GA's ``conversation.item.done`` (beta has no such event)."""
    if dialect is Dialect.BETA:
        return []
    return [{"type": "conversation.item.done", "previous_item_id": previous, "item": item}]


def usage(
    dialect: Dialect, input_text: int, input_audio_ms: int, output_text: int,
    output_audio_ms: int, cached_text: int = 0,
) -> dict[str, Any]:
    """A ``usage`` block with realistic token counts (audio: 10/s in, 20/s out);
    ``cached_text`` of the input text tokens were cached (beta reports no breakdown)."""
    in_audio = math.ceil(input_audio_ms / 100)
    out_audio = math.ceil(output_audio_ms / 50)
    in_total = input_text + in_audio
    out_total = output_text + out_audio
    cached_text = min(cached_text, input_text)
    input_details: dict[str, Any] = {
        "text_tokens": input_text,
        "audio_tokens": in_audio,
        "cached_tokens": cached_text,
    }
    if dialect is Dialect.GA:
        input_details["image_tokens"] = 0
        input_details["cached_tokens_details"] = {
            "text_tokens": cached_text, "audio_tokens": 0, "image_tokens": 0}
    return {
        "total_tokens": in_total + out_total,
        "input_tokens": in_total,
        "output_tokens": out_total,
        "input_token_details": input_details,
        "output_token_details": {"text_tokens": output_text, "audio_tokens": out_audio},
    }


def response_object(
    dialect: Dialect,
    response_id: str,
    session: dict[str, Any],
    status: str,
    output: list[dict[str, Any]],
    status_details: dict[str, Any] | None = None,
    usage_block: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The ``response`` of ``response.created``/``response.done``."""
    body: dict[str, Any] = {
        "object": "realtime.response",
        "id": response_id,
        "status": status,
        "status_details": status_details,
        "output": output,
        "conversation_id": "conv_" + response_id[5:],
        "usage": usage_block,
        "metadata": None,
    }
    if dialect is Dialect.BETA:
        body.update(
            modalities=["audio", "text"],
            voice=session.get("voice", "alloy"),
            output_audio_format=session.get("output_audio_format", "pcm16"),
            temperature=session.get("temperature", 0.8),
            max_output_tokens=session.get("max_response_output_tokens", "inf"),
        )
    else:
        out = session["audio"]["output"]
        body.update(
            output_modalities=["audio"],
            max_output_tokens=session.get("max_output_tokens", "inf"),
            audio={"output": {"format": out["format"], "voice": out.get("voice", "alloy")}},
        )
    return body


def rate_limits(tokens_used: int) -> dict[str, Any]:
    """A ``rate_limits.updated`` event after a response."""
    return {
        "type": "rate_limits.updated",
        "rate_limits": [
            {"name": "requests", "limit": 5000, "remaining": 4999, "reset_seconds": 0.012},
            {
                "name": "tokens",
                "limit": 40000,
                "remaining": max(0, 40000 - tokens_used),
                "reset_seconds": round(tokens_used * 60 / 40000, 3),
            },
        ],
    }
