"""The Realtime API's two dialects behind one internal event set (sans-I/O, no I/O at all).

:class:`Encoder` builds the client events the engine sends, as UTF-8 JSON bytes, each with an
``event_id`` so a server ``error`` can be traced back to the event that caused it.
:class:`Decoder` turns one server message into one internal event (:class:`AudioDelta`,
:class:`SpeechStarted`, …, or :class:`Ignored`).

GA and Azure share one shape (nested ``session.audio``, ``response.output_audio.*``); beta is
flat (``input_audio_format``, ``response.audio.*``). See /work/shared/PROTOCOLS.md.

Audio deltas are a hot path: the decoder handles one with one ``orjson.loads``, one
``a2b_base64`` and one object. Appends, the other, are not built here: the native uplink
(``engine._native.uplink``) writes them straight into their WebSocket frames.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

import orjson

from engine._impl import b64
from engine.errors import ConfigError, UpstreamBadEvent

__all__ = [
    "SUMMARY_PURPOSE",
    "AudioDelta",
    "AudioDone",
    "Decoder",
    "Dialect",
    "Encoder",
    "FunctionCallDone",
    "Ignored",
    "OutputItemAdded",
    "RateLimits",
    "ResponseCreated",
    "ResponseDone",
    "ServerError",
    "ServerEvent",
    "SessionCreated",
    "SessionSettings",
    "SessionUpdated",
    "SpeechStarted",
    "SpeechStopped",
    "Transcript",
]


class Dialect(enum.Enum):
    """Which Realtime interface we speak; AZURE encodes and decodes like GA."""

    GA = "ga"
    BETA = "beta"
    AZURE = "azure"


_AUDIO_FORMATS = ("pcm16", "pcmu")
_VAD_TYPES = ("server_vad", "semantic_vad")
_EAGERNESS = ("low", "medium", "high", "auto")
_ROLES = ("user", "system", "assistant")
SUMMARY_PURPOSE = "summary"


@dataclass(frozen=True, slots=True)
class SessionSettings:
    """What the engine asks of a Realtime session, in dialect-neutral terms.

    ``audio_format`` is ``pcm16`` (24 kHz) or ``pcmu`` (G.711 μ-law, 8 kHz); an empty
    ``transcription_model`` turns input transcription off; ``temperature`` is sent on beta
    only (GA has none). ``tools`` are function declarations (``{"type": "function", "name",
    "description", "parameters"}``, the same in both dialects); with any, the model chooses
    when to call them (``tool_choice: "auto"``).
    """

    instructions: str
    voice: str
    audio_format: str = "pcm16"
    vad_type: str = "server_vad"
    vad_threshold: float = 0.5
    vad_silence_ms: int = 500
    vad_prefix_padding_ms: int = 300
    vad_eagerness: str = "auto"
    interrupt_response: bool = True
    create_response: bool = True
    transcription_model: str = "whisper-1"
    max_output_tokens: int = 4096
    temperature: float | None = None
    tools: tuple[dict[str, Any], ...] = ()

    def __post_init__(self) -> None:
        problems = []
        if self.audio_format not in _AUDIO_FORMATS:
            problems.append(f"audio_format {self.audio_format!r} is not one of {_AUDIO_FORMATS}")
        if self.vad_type not in _VAD_TYPES:
            problems.append(f"vad_type {self.vad_type!r} is not one of {_VAD_TYPES}")
        if self.vad_eagerness not in _EAGERNESS:
            problems.append(f"vad_eagerness {self.vad_eagerness!r} is not one of {_EAGERNESS}")
        if problems:
            raise ConfigError("; ".join(problems))


# -- client events ------------------------------------------------------------------------

_GA_FORMATS = {"pcm16": {"type": "audio/pcm", "rate": 24000}, "pcmu": {"type": "audio/pcmu"}}
_BETA_FORMATS = {"pcm16": "pcm16", "pcmu": "g711_ulaw"}


def _turn_detection(s: SessionSettings) -> dict[str, Any]:
    """The turn_detection object; its keys are the same in both dialects."""
    td: dict[str, Any] = {"type": s.vad_type}
    if s.vad_type == "server_vad":
        td["threshold"] = s.vad_threshold
        td["prefix_padding_ms"] = s.vad_prefix_padding_ms
        td["silence_duration_ms"] = s.vad_silence_ms
    else:
        td["eagerness"] = s.vad_eagerness
    td["create_response"] = s.create_response
    td["interrupt_response"] = s.interrupt_response
    return td


def _tools(session: dict[str, Any], s: SessionSettings) -> dict[str, Any]:
    if s.tools:
        session["tools"] = list(s.tools)
        session["tool_choice"] = "auto"
    return session


def _ga_session(s: SessionSettings) -> dict[str, Any]:
    fmt = _GA_FORMATS[s.audio_format]
    transcription = {"model": s.transcription_model} if s.transcription_model else None
    return _tools({
        "type": "realtime",
        "instructions": s.instructions,
        "output_modalities": ["audio"],
        "max_output_tokens": s.max_output_tokens,
        "audio": {
            "input": {
                "format": fmt,
                "transcription": transcription,
                "turn_detection": _turn_detection(s),
            },
            "output": {"format": fmt, "voice": s.voice},
        },
    }, s)


def _beta_session(s: SessionSettings) -> dict[str, Any]:
    fmt = _BETA_FORMATS[s.audio_format]
    transcription = {"model": s.transcription_model} if s.transcription_model else None
    session: dict[str, Any] = {
        "modalities": ["audio", "text"],
        "instructions": s.instructions,
        "voice": s.voice,
        "input_audio_format": fmt,
        "output_audio_format": fmt,
        "input_audio_transcription": transcription,
        "turn_detection": _turn_detection(s),
        "max_response_output_tokens": s.max_output_tokens,
    }
    if s.temperature is not None:
        session["temperature"] = s.temperature
    return _tools(session, s)


class Encoder:
    """Builds client events as UTF-8 JSON bytes, one per call; keep one per connection.

    Every event carries ``event_id`` = ``prefix`` + a counter, unique within this encoder, so
    an ``error`` event's ``event_id`` names the event that caused it.
    """

    __slots__ = ("_beta", "_n", "_prefix", "dialect")

    def __init__(self, dialect: Dialect, prefix: str = "ev") -> None:
        self.dialect = dialect
        self._beta = dialect is Dialect.BETA
        self._prefix = prefix
        self._n = 0

    def _event(self, doc: dict[str, Any]) -> bytes:
        self._n += 1
        doc["event_id"] = f"{self._prefix}_{self._n}"
        return orjson.dumps(doc)

    @property
    def last_event_id(self) -> str:
        """The ``event_id`` of the event built last (empty before the first)."""
        return f"{self._prefix}_{self._n}" if self._n else ""

    def session_update(self, settings: SessionSettings) -> bytes:
        """``session.update`` in this dialect's shape (GA nested, beta flat)."""
        session = _beta_session(settings) if self._beta else _ga_session(settings)
        return self._event({"type": "session.update", "session": session})

    def truncate(self, item_id: str, audio_end_ms: int) -> bytes:
        """``conversation.item.truncate``: the caller heard ``audio_end_ms`` of ``item_id``."""
        return self._event({
            "type": "conversation.item.truncate",
            "item_id": item_id,
            "content_index": 0,
            "audio_end_ms": int(audio_end_ms),
        })

    def cancel(self, response_id: str | None = None) -> bytes:
        """``response.cancel``, of one response when ``response_id`` is given."""
        doc: dict[str, Any] = {"type": "response.cancel"}
        if response_id is not None:
            doc["response_id"] = response_id
        return self._event(doc)

    def summary_request(self, instructions: str, text: str, max_tokens: int = 600) -> bytes:
        """An out-of-band text response (``conversation: "none"``: nothing of it joins the
        call's conversation) that answers ``instructions`` about ``text``; its response
        carries ``metadata.purpose`` ``summary``."""
        item = {"type": "message", "role": "user",
                "content": [{"type": "input_text", "text": text}]}
        response: dict[str, Any] = {
            "conversation": "none", "instructions": instructions, "input": [item],
            "metadata": {"purpose": SUMMARY_PURPOSE}, "tools": [], "tool_choice": "none",
        }
        if self._beta:
            response.update(modalities=["text"], max_response_output_tokens=max_tokens)
        else:
            response.update(output_modalities=["text"], max_output_tokens=max_tokens)
        return self._event({"type": "response.create", "response": response})

    def response_create(self, instructions: str | None = None) -> bytes:
        """``response.create``; ``instructions`` overrides the session's for this response."""
        doc: dict[str, Any] = {"type": "response.create"}
        if instructions is not None:
            doc["response"] = {"instructions": instructions}
        return self._event(doc)

    def item_create_text(self, text: str, role: str = "user") -> bytes:
        """``conversation.item.create`` of a text message from ``role``."""
        if role not in _ROLES:
            raise ValueError(f"role {role!r} is not one of {_ROLES}")
        if role == "assistant":
            kind = "text" if self._beta else "output_text"
        else:
            kind = "input_text"
        item = {"type": "message", "role": role, "content": [{"type": kind, "text": text}]}
        return self._event({"type": "conversation.item.create", "item": item})

    def function_output(self, call_id: str, output: str) -> bytes:
        """``conversation.item.create`` of a tool's result; follow it with response_create."""
        item = {"type": "function_call_output", "call_id": call_id, "output": output}
        return self._event({"type": "conversation.item.create", "item": item})

    def commit(self) -> bytes:
        """``input_audio_buffer.commit`` (only needed with turn detection off)."""
        return self._event({"type": "input_audio_buffer.commit"})

    def clear_input(self) -> bytes:
        """``input_audio_buffer.clear``: drop caller audio the server has not committed."""
        return self._event({"type": "input_audio_buffer.clear"})


# -- server events ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SessionCreated:
    session_id: str


@dataclass(frozen=True, slots=True)
class SessionUpdated:
    pass


@dataclass(frozen=True, slots=True)
class SpeechStarted:
    item_id: str
    audio_start_ms: int


@dataclass(frozen=True, slots=True)
class SpeechStopped:
    item_id: str
    audio_end_ms: int


@dataclass(frozen=True, slots=True)
class ResponseCreated:
    response_id: str
    purpose: str | None = None  # an out-of-band response's metadata.purpose (ours)


@dataclass(frozen=True, slots=True)
class OutputItemAdded:
    """A response's new output item; ``name``/``call_id`` only for a function_call item."""

    response_id: str
    item_id: str
    item_type: str
    name: str | None
    call_id: str | None


@dataclass(frozen=True, slots=True)
class AudioDelta:
    """Model audio in the session's format, base64 already decoded."""

    response_id: str
    item_id: str
    audio: bytes


@dataclass(frozen=True, slots=True)
class AudioDone:
    response_id: str
    item_id: str


@dataclass(frozen=True, slots=True)
class Transcript:
    """A finished transcript: ``user`` (input transcription) or ``assistant`` (output audio)."""

    role: str
    item_id: str
    text: str


@dataclass(frozen=True, slots=True)
class FunctionCallDone:
    """The model's complete call of a tool; ``arguments`` is untrusted JSON text."""

    response_id: str
    item_id: str
    call_id: str
    name: str
    arguments: str


@dataclass(frozen=True, slots=True)
class ResponseDone:
    """A response ended: ``status`` completed, cancelled, failed or incomplete."""

    response_id: str
    status: str
    usage: dict[str, Any] | None
    purpose: str | None = None  # an out-of-band response's metadata.purpose (ours)
    text: str = ""  # an out-of-band response's text output


@dataclass(frozen=True, slots=True)
class RateLimits:
    """``rate_limits.updated``: a tuple of ``{name, limit, remaining, reset_seconds}`` dicts."""

    limits: tuple[dict[str, Any], ...]


@dataclass(frozen=True, slots=True)
class ServerError:
    """An ``error`` event; ``event_id`` names our client event that caused it, if any."""

    type: str
    code: str | None
    message: str
    event_id: str | None


@dataclass(frozen=True, slots=True)
class Ignored:
    """A server event the engine does not act on."""

    type: str


ServerEvent = (
    SessionCreated | SessionUpdated | SpeechStarted | SpeechStopped | ResponseCreated
    | OutputItemAdded | AudioDelta | AudioDone | Transcript | FunctionCallDone | ResponseDone
    | RateLimits | ServerError | Ignored
)

#: How many function_call item names the decoder remembers until their arguments are done.
MAX_PENDING_NAMES = 64


def _str(doc: dict[str, Any], key: str) -> str:
    value = doc.get(key)
    if type(value) is not str:
        raise UpstreamBadEvent(f"{doc.get('type')}: {key} is not a string")
    return value


def _opt_str(doc: dict[str, Any], key: str) -> str | None:
    value = doc.get(key)
    if value is not None and type(value) is not str:
        raise UpstreamBadEvent(f"{doc.get('type')}: {key} is not a string")
    return value


def _int(doc: dict[str, Any], key: str) -> int:
    value = doc.get(key)
    if type(value) is not int:
        raise UpstreamBadEvent(f"{doc.get('type')}: {key} is not an integer")
    return value


def _obj(doc: dict[str, Any], key: str) -> dict[str, Any]:
    value = doc.get(key)
    if type(value) is not dict:
        raise UpstreamBadEvent(f"{doc.get('type')}: {key} is not an object")
    return value


class Decoder:
    """Decodes one server message into one internal event; keep one per connection.

    It remembers the names of function_call items (at most :data:`MAX_PENDING_NAMES`) so a
    ``response.function_call_arguments.done`` without ``name`` still gets one.
    """

    __slots__ = ("_audio_delta", "_handlers", "_names", "dialect")

    def __init__(self, dialect: Dialect) -> None:
        self.dialect = dialect
        beta = dialect is Dialect.BETA
        self._audio_delta = "response.audio.delta" if beta else "response.output_audio.delta"
        audio_done = "response.audio.done" if beta else "response.output_audio.done"
        transcript_done = (
            "response.audio_transcript.done" if beta
            else "response.output_audio_transcript.done"
        )
        self._handlers = {
            "session.created": Decoder._session_created,
            "session.updated": Decoder._session_updated,
            "input_audio_buffer.speech_started": Decoder._speech_started,
            "input_audio_buffer.speech_stopped": Decoder._speech_stopped,
            "response.created": Decoder._response_created,
            "response.output_item.added": Decoder._output_item_added,
            "response.output_item.done": Decoder._output_item_done,
            audio_done: Decoder._audio_done,
            transcript_done: Decoder._assistant_transcript,
            "conversation.item.input_audio_transcription.completed": Decoder._user_transcript,
            "response.function_call_arguments.done": Decoder._function_call_done,
            "response.done": Decoder._response_done,
            "rate_limits.updated": Decoder._rate_limits,
            "error": Decoder._error,
        }
        self._names: dict[str, str] = {}

    def decode(self, message: bytes | str) -> ServerEvent:
        """One server event from one WebSocket message.

        Raises:
            UpstreamBadEvent: not JSON, not an object, no ``type``, or a field of the wrong type.
        """
        try:
            doc = orjson.loads(message)
        except orjson.JSONDecodeError as exc:
            raise UpstreamBadEvent(f"not JSON ({exc})") from None
        if type(doc) is not dict:
            raise UpstreamBadEvent("not a JSON object")
        kind = doc.get("type")
        if kind == self._audio_delta:
            response_id = doc.get("response_id")
            item_id = doc.get("item_id")
            delta = doc.get("delta")
            if type(response_id) is str and type(item_id) is str and type(delta) is str:
                try:
                    return AudioDelta(response_id, item_id, b64.b64decode(delta))
                except ValueError:
                    raise UpstreamBadEvent(f"{kind}: delta is not base64") from None
            raise UpstreamBadEvent(f"{kind}: response_id, item_id or delta is not a string")
        if type(kind) is not str:
            raise UpstreamBadEvent("the event has no type")
        handler = self._handlers.get(kind)
        if handler is None:
            return Ignored(kind)
        return handler(self, doc)

    def _session_created(self, doc: dict[str, Any]) -> ServerEvent:
        return SessionCreated(_opt_str(_obj(doc, "session"), "id") or "")

    def _session_updated(self, doc: dict[str, Any]) -> ServerEvent:
        return SessionUpdated()

    def _speech_started(self, doc: dict[str, Any]) -> ServerEvent:
        return SpeechStarted(_str(doc, "item_id"), _int(doc, "audio_start_ms"))

    def _speech_stopped(self, doc: dict[str, Any]) -> ServerEvent:
        return SpeechStopped(_str(doc, "item_id"), _int(doc, "audio_end_ms"))

    def _response_created(self, doc: dict[str, Any]) -> ServerEvent:
        response = _obj(doc, "response")
        return ResponseCreated(_str(response, "id"), _purpose(response))

    def _remember(self, item: dict[str, Any]) -> tuple[str, str, str | None, str | None]:
        item_id = _str(item, "id")
        item_type = _str(item, "type")
        name = call_id = None
        if item_type == "function_call":
            name = _opt_str(item, "name")
            call_id = _opt_str(item, "call_id")
            if name is not None:
                names = self._names
                names[item_id] = name
                if len(names) > MAX_PENDING_NAMES:
                    del names[next(iter(names))]
        return item_id, item_type, name, call_id

    def _output_item_added(self, doc: dict[str, Any]) -> ServerEvent:
        item_id, item_type, name, call_id = self._remember(_obj(doc, "item"))
        return OutputItemAdded(_str(doc, "response_id"), item_id, item_type, name, call_id)

    def _output_item_done(self, doc: dict[str, Any]) -> ServerEvent:
        self._remember(_obj(doc, "item"))
        return Ignored("response.output_item.done")

    def _audio_done(self, doc: dict[str, Any]) -> ServerEvent:
        return AudioDone(_str(doc, "response_id"), _str(doc, "item_id"))

    def _assistant_transcript(self, doc: dict[str, Any]) -> ServerEvent:
        return Transcript("assistant", _str(doc, "item_id"), _str(doc, "transcript"))

    def _user_transcript(self, doc: dict[str, Any]) -> ServerEvent:
        return Transcript("user", _str(doc, "item_id"), _str(doc, "transcript"))

    def _function_call_done(self, doc: dict[str, Any]) -> ServerEvent:
        item_id = _str(doc, "item_id")
        remembered = self._names.pop(item_id, None)
        name = remembered or _opt_str(doc, "name")
        if name is None:
            raise UpstreamBadEvent(
                f"response.function_call_arguments.done: no name known for item {item_id}"
            )
        return FunctionCallDone(
            _str(doc, "response_id"), item_id, _str(doc, "call_id"), name,
            _str(doc, "arguments"),
        )

    def _response_done(self, doc: dict[str, Any]) -> ServerEvent:
        response = _obj(doc, "response")
        usage = response.get("usage")
        if usage is not None and type(usage) is not dict:
            raise UpstreamBadEvent("response.done: usage is not an object")
        purpose = _purpose(response)
        if purpose is None:
            return ResponseDone(_str(response, "id"), _str(response, "status"), usage)
        return ResponseDone(_str(response, "id"), _str(response, "status"), usage, purpose,
                            _output_text(response))

    def _rate_limits(self, doc: dict[str, Any]) -> ServerEvent:
        limits = doc.get("rate_limits")
        if type(limits) is not list or any(type(x) is not dict for x in limits):
            raise UpstreamBadEvent("rate_limits.updated: rate_limits is not a list of objects")
        return RateLimits(tuple(limits))

    def _error(self, doc: dict[str, Any]) -> ServerEvent:
        error = _obj(doc, "error")
        return ServerError(
            _str(error, "type"), _opt_str(error, "code"), _str(error, "message"),
            _opt_str(error, "event_id"),
        )


def _purpose(response: dict[str, Any]) -> str | None:
    """``metadata.purpose`` of a response, if it is one of ours (out of band)."""
    metadata = response.get("metadata")
    if type(metadata) is dict:
        purpose = metadata.get("purpose")
        if type(purpose) is str:
            return purpose
    return None


def _output_text(response: dict[str, Any]) -> str:
    """The text parts of a response's message items, joined."""
    parts = []
    output = response.get("output")
    for item in output if type(output) is list else ():
        content = item.get("content") if type(item) is dict else None
        for part in content if type(content) is list else ():
            if type(part) is dict and type(part.get("text")) is str:
                parts.append(part["text"])
    return "".join(parts)
