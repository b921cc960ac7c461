"""One simulated Realtime session, sans-I/O: client events in, server events and actions out.

:meth:`SimSession.receive` takes one client message (text) and returns what to send, in order:
dicts (server events, stamped with an ``event_id`` here), and :class:`StartResponse` or
:class:`StopResponse` actions the adapter carries out (it owns the paced sending). A response is
a :class:`Response`: the adapter sends :meth:`SimSession.response_head`, then the prebuilt
deltas of :meth:`Response.delta`, calling :meth:`Response.mark_sent` after each, then
:meth:`SimSession.response_tail`.

Invariants: at most one response is active; audio accounted as sent for an item is only what
the adapter reported sent, which is what ``conversation.item.truncate`` is checked against.
"""

from __future__ import annotations

import collections
import itertools
import secrets
from dataclasses import dataclass, field
from typing import Any

import orjson

from engine._impl import b64, g711
from engine.sim import events as ev
from engine.sim.config import Dialect, SimConfig, ToolScript
from engine.sim.response_audio import AudioFormat, ResponseAudio, response_audio
from engine.sim.session_config import SessionSettings, merge_session, settings_of
from engine.sim.vad import EnergyVad, SpeechStarted
from engine.sim.validate import EventValidator

__all__ = ["Response", "SessionReport", "SimSession", "StartResponse", "StopResponse", "Truncate"]


@dataclass(frozen=True, slots=True)
class StartResponse:
    """Action: start streaming ``response``."""

    response: Response


@dataclass(frozen=True, slots=True)
class StopResponse:
    """Action: stop streaming the active response, then send its cancelled tail."""

    reason: str  # "turn_detected" or "client_cancelled"


@dataclass(frozen=True, slots=True)
class Truncate:
    """One ``conversation.item.truncate`` the client sent, and whether it was valid."""

    item_id: str
    audio_end_ms: int
    audio_sent_ms: int | None  # None: no such assistant audio item
    ok: bool


@dataclass(slots=True)
class SessionReport:
    """What one session saw; read it from tests and the CLI summary."""

    dialect: str
    model: str | None
    path: str
    session: dict[str, Any] = field(default_factory=dict)
    events: collections.Counter[str] = field(default_factory=collections.Counter)
    invalid: list[tuple[str, str]] = field(default_factory=list)
    truncates: list[Truncate] = field(default_factory=list)
    cancels: list[tuple[str, str]] = field(default_factory=list)  # (by, response id)
    mistakes: list[str] = field(default_factory=list)
    responses: int = 0
    function_calls: int = 0
    usage: list[dict[str, Any]] = field(default_factory=list)  # each response.done's
    injected: list[str] = field(default_factory=list)  # message faults sent, by kind
    out_of_band: int = 0  # text responses outside the conversation (summaries)
    closed: str | None = None
    client_request_id: str | None = None  # the X-Client-Request-Id header, if any


class Response:
    """One response: audio (prebuilt deltas) or a scripted function call."""

    __slots__ = (
        "audio",
        "call_id",
        "head_sent",
        "id",
        "item_id",
        "script",
        "sent",
        "sent_samples",
        "_prefix",
        "_suffix",
    )

    def __init__(
        self, dialect: Dialect, audio: ResponseAudio | None, script: ToolScript | None
    ) -> None:
        self.id = "resp_" + secrets.token_hex(8)
        self.item_id = "item_" + secrets.token_hex(8)
        self.call_id = "call_" + secrets.token_hex(8)
        self.audio = audio
        self.script = script
        self.sent = 0
        self.sent_samples = 0
        self.head_sent = False
        self._prefix = (
            b'{"type":"' + ev.AUDIO_DELTA[dialect].encode() + b'","response_id":"'
            + self.id.encode() + b'","item_id":"' + self.item_id.encode()
            + b'","output_index":0,"content_index":0,"delta":"'
        )
        self._suffix = b'","event_id":"event_' + self.id[5:].encode() + b"_"

    @property
    def deltas(self) -> int:
        """How many audio deltas this response has (0 for a function call)."""
        return 0 if self.audio is None else len(self.audio.payloads)

    def delta(self, i: int) -> bytes:
        """Delta event ``i`` as JSON bytes (the base64 spliced into a prebuilt template)."""
        assert self.audio is not None
        return self._prefix + self.audio.payloads[i] + self._suffix + str(i).encode() + b'"}'

    def mark_sent(self, i: int) -> None:
        """Records that delta ``i`` went out (what truncation is checked against)."""
        assert self.audio is not None
        self.sent = i + 1
        self.sent_samples += self.audio.samples[i]

    @property
    def sent_ms(self) -> int:
        """Audio sent so far, in milliseconds."""
        return 0 if self.audio is None else self.sent_samples * 1000 // self.audio.rate


class SimSession:
    """The protocol logic of one connection."""

    def __init__(
        self,
        config: SimConfig,
        dialect: Dialect,
        model: str | None,
        path: str = "/v1/realtime",
        validator: EventValidator | None = None,
        sample_every: int = 1,
    ) -> None:
        self.config = config
        self.dialect = dialect
        self.id = "sess_" + secrets.token_hex(8)
        self.session = ev.default_session(dialect, self.id, model or "gpt-realtime")
        self.settings: SessionSettings = settings_of(dialect, self.session)
        self.report = SessionReport(dialect.value, model, path, session=self.session)
        self._validator = validator
        self._sample_every = sample_every
        self._counter = itertools.count(1)
        self._received = 0  # client events, for sampled validation
        self._vad = self._new_vad(0)
        self._input_ms = 0  # all input audio received
        self.input_samples = 0  # the same, in samples at the input format's rate
        self.capture: bytearray | None = None  # when set, received input audio (PCM) is kept
        self.capture_limit = 0  # bytes of PCM that ``capture`` keeps at most
        self._buffer_ms = 0  # input audio since the last commit or clear
        self._user_item: str | None = None
        self._speech_start_ms = 0
        self._last_item: str | None = None
        self._cue_text: list[str] = []
        self._fired: set[int] = set()
        self._sent_ms: dict[str, int] = {}  # assistant audio item → ms sent
        self.active: Response | None = None

    def _stamp(self, event: dict[str, Any]) -> dict[str, Any]:
        event["event_id"] = f"event_{self.id[5:13]}{next(self._counter)}"
        return event

    def _new_vad(self, received_ms: int) -> EnergyVad:
        s = self.settings
        silence = s.silence_ms if s.silence_ms is not None else self.config.vad_silence_ms
        vad = EnergyVad(
            AudioFormat.RATES[s.input_format], self.config.vad_threshold_dbfs, silence, s.prefix_ms
        )
        vad.received_ms = received_ms
        return vad

    def opening(self) -> list[dict[str, Any]]:
        """The events sent as soon as the connection opens."""
        return [self._stamp({"type": "session.created", "session": self.session})]

    def receive(self, text: str | bytes) -> list[Any]:
        """Handles one client message; returns events (dicts) and actions, in order."""
        try:
            event = orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            return self._invalid("(not JSON)", None, f"invalid JSON: {exc}")
        if not isinstance(event, dict):
            return self._invalid("(not an object)", None, "the event is not a JSON object")
        kind = str(event.get("type"))
        client_id = event.get("event_id") if isinstance(event.get("event_id"), str) else None
        self.report.events[kind] += 1
        self._received += 1
        if self._validator is not None and self._due_for_validation():
            problem = self._validator.problem(event)
            if problem is not None:
                return self._invalid(kind, client_id, problem)
        handler = _HANDLERS.get(kind)
        if handler is None:
            return self._invalid(kind, client_id, f"unknown or unsupported event type {kind!r}")
        out: list[Any] = handler(self, event, client_id)
        return [self._stamp(o) if isinstance(o, dict) else o for o in out]

    def _due_for_validation(self) -> bool:
        total = self._received
        return self._sample_every <= 1 or total % self._sample_every == 1

    def _invalid(self, kind: str, client_id: str | None, reason: str) -> list[Any]:
        self.report.invalid.append((kind, reason))
        return [self._stamp(ev.error(f"Invalid event {kind}: {reason}", "invalid_value",
                                     client_id))]

    def _mistake(self, what: str, message: str, code: str, client_id: str | None) -> list[Any]:
        self.report.mistakes.append(what)
        return [ev.error(message, code, client_id)]

    # -- session and input audio -------------------------------------------------------------

    def _on_session_update(self, event: dict[str, Any], client_id: str | None) -> list[Any]:
        update = event.get("session") or {}
        self.session = merge_session(self.session, update)
        self.report.session = self.session
        self.settings = settings_of(self.dialect, self.session)
        self._vad = self._new_vad(self._vad.received_ms)
        return [{"type": "session.updated", "session": self.session}]

    def _on_append(self, event: dict[str, Any], client_id: str | None) -> list[Any]:
        try:
            data = b64.b64decode(event.get("audio", ""))
        except (ValueError, TypeError):
            return self._mistake("bad base64", "Invalid base64 audio", "invalid_value", client_id)
        fmt = self.settings.input_format
        if fmt == AudioFormat.PCMU:
            pcm = g711.ulaw_decode(data)
        elif fmt == AudioFormat.PCMA:
            pcm = g711.alaw_decode(data)
        else:
            pcm = data
        samples = len(pcm) // 2
        self.input_samples += samples
        capture = self.capture
        if capture is not None and len(capture) < self.capture_limit:
            capture += pcm[: self.capture_limit - len(capture)]
        ms = samples * 1000 // AudioFormat.RATES[fmt]
        self._input_ms += ms
        self._buffer_ms += ms
        if self.settings.turn_detection is None:
            return []
        out: list[Any] = []
        for vad_event in self._vad.feed(pcm):
            if isinstance(vad_event, SpeechStarted):
                out.extend(self._speech_started(vad_event.audio_start_ms))
            else:
                out.extend(self._speech_stopped(vad_event.audio_end_ms))
        return out

    def _speech_started(self, start_ms: int) -> list[Any]:
        self._user_item = "item_" + secrets.token_hex(8)
        self._speech_start_ms = start_ms
        out: list[Any] = [{
            "type": "input_audio_buffer.speech_started",
            "audio_start_ms": start_ms,
            "item_id": self._user_item,
        }]
        if self.active is not None and self.settings.interrupt_response:
            self.report.cancels.append(("server", self.active.id))
            out.append(StopResponse("turn_detected"))
        return out

    def _speech_stopped(self, end_ms: int) -> list[Any]:
        item_id = self._user_item or "item_" + secrets.token_hex(8)
        out: list[Any] = [{
            "type": "input_audio_buffer.speech_stopped",
            "audio_end_ms": end_ms,
            "item_id": item_id,
        }]
        out.extend(self._commit(item_id, (end_ms - self._speech_start_ms) / 1000))
        if self.settings.create_response and self.active is None:
            out.extend(self._start_response())
        return out

    def _commit(self, item_id: str, seconds: float) -> list[Any]:
        previous, self._last_item = self._last_item, item_id
        self._buffer_ms = 0
        self._user_item = None
        transcript = f"caller speech {seconds:.1f} s" if self.settings.transcription else None
        item = ev.user_audio_item(item_id, None)
        out: list[Any] = [
            {"type": "input_audio_buffer.committed", "previous_item_id": previous,
             "item_id": item_id},
            *ev.item_added(self.dialect, item, previous),
            *ev.item_done(self.dialect, item, previous),
        ]
        if transcript is not None:
            out.append({
                "type": "conversation.item.input_audio_transcription.completed",
                "item_id": item_id,
                "content_index": 0,
                "transcript": transcript,
                "usage": {"type": "duration", "seconds": round(seconds, 3)},
            })
        return out

    def _on_commit(self, event: dict[str, Any], client_id: str | None) -> list[Any]:
        if self._buffer_ms < 100:
            return self._mistake(
                "commit of an empty buffer",
                "Error committing input audio buffer: buffer too small. Expected at least 100ms "
                f"of audio, but buffer only has {self._buffer_ms}.00ms of audio.",
                "input_audio_buffer_commit_empty",
                client_id,
            )
        return self._commit(self._user_item or "item_" + secrets.token_hex(8),
                            self._buffer_ms / 1000)

    def _on_clear(self, event: dict[str, Any], client_id: str | None) -> list[Any]:
        self._buffer_ms = 0
        return [{"type": "input_audio_buffer.cleared"}]

    # -- conversation items ------------------------------------------------------------------

    def _on_item_create(self, event: dict[str, Any], client_id: str | None) -> list[Any]:
        item = dict(event.get("item") or {})
        item.setdefault("id", "item_" + secrets.token_hex(8))
        item.setdefault("object", "realtime.item")
        item.setdefault("status", "completed")
        if item.get("type") == "message" and item.get("role") == "user":
            for part in item.get("content") or []:
                if isinstance(part, dict) and isinstance(part.get("text"), str):
                    self._cue_text.append(part["text"].lower())
        previous, self._last_item = self._last_item, item["id"]
        return [*ev.item_added(self.dialect, item, previous),
                *ev.item_done(self.dialect, item, previous)]

    def _on_item_delete(self, event: dict[str, Any], client_id: str | None) -> list[Any]:
        return [{"type": "conversation.item.deleted", "item_id": event.get("item_id")}]

    def _on_truncate(self, event: dict[str, Any], client_id: str | None) -> list[Any]:
        item_id = str(event.get("item_id"))
        end_ms = int(event.get("audio_end_ms", 0))
        sent = self._sent_ms.get(item_id)
        if self.active is not None and self.active.item_id == item_id:
            sent = self.active.sent_ms
        ok = sent is not None and end_ms <= sent
        self.report.truncates.append(Truncate(item_id, end_ms, sent, ok))
        if sent is None:
            return self._mistake(
                "truncate of an unknown item",
                f"Conversation item with id '{item_id}' not found or has no audio.",
                "item_truncate_invalid_item_id", client_id,
            )
        if not ok:
            return self._mistake(
                "truncate past the audio sent",
                f"Audio content of {sent}ms is already shorter than {end_ms}ms",
                "invalid_value", client_id,
            )
        self._sent_ms[item_id] = end_ms
        return [{"type": "conversation.item.truncated", "item_id": item_id,
                 "content_index": int(event.get("content_index", 0)), "audio_end_ms": end_ms}]

    def _on_unsupported(self, event: dict[str, Any], client_id: str | None) -> list[Any]:
        kind = str(event.get("type"))
        if kind == "output_audio_buffer.clear":
            return self._mistake(
                "output_audio_buffer.clear over WebSocket",
                "output_audio_buffer.clear is only supported for WebRTC and SIP sessions",
                "invalid_value", client_id,
            )
        self.report.invalid.append((kind, "not supported by the simulator"))
        return [ev.error(f"The simulator does not implement {kind}", "not_implemented",
                         client_id, kind="server_error")]

    # -- responses ---------------------------------------------------------------------------

    def _on_response_create(self, event: dict[str, Any], client_id: str | None) -> list[Any]:
        asked = event.get("response") or {}
        if asked.get("conversation") == "none":
            return self._out_of_band(asked)
        if self.active is not None:
            return self._mistake(
                "response.create during a response",
                f"Conversation already has an active response in progress: {self.active.id}. "
                "Wait until the response is finished before creating a new one.",
                "conversation_already_has_active_response", client_id,
            )
        return self._start_response()

    def _out_of_band(self, asked: dict[str, Any]) -> list[Any]:
        """A text response outside the conversation (``conversation: "none"``), sent at once:
        for input of ``Caller:``/``Assistant:`` lines (a transcript to summarise), a summary
        that counts them, naming the first thing the caller said."""
        self.report.out_of_band += 1
        text = "\n".join(part.get("text", "") for item in asked.get("input") or ()
                         for part in item.get("content") or () if isinstance(part, dict))
        lines = text.splitlines()
        callers = [line[len("Caller: "):] for line in lines if line.startswith("Caller: ")]
        answers = sum(line.startswith("Assistant: ") for line in lines)
        summary = (f"The caller spoke {len(callers)} times and the assistant answered "
                   f"{answers} times.")
        if callers:
            summary += f" The caller first said: {callers[0]}"
        response_id = "resp_" + secrets.token_hex(8)
        item_id = "item_" + secrets.token_hex(8)
        beta = self.dialect is Dialect.BETA
        kind = "text" if beta else "output_text"
        item = {"id": item_id, "object": "realtime.item", "type": "message",
                "status": "completed", "role": "assistant",
                "content": [{"type": kind, "text": summary}]}
        base = {"response_id": response_id, "output_index": 0}
        part = {**base, "item_id": item_id, "content_index": 0}
        metadata = asked.get("metadata")
        use = ev.usage(self.dialect, len(text) // 4 + 8, 0, len(summary) // 4, 0)
        self.report.usage.append(use)
        created = ev.response_object(self.dialect, response_id, self.session, "in_progress", [])
        done = ev.response_object(self.dialect, response_id, self.session, "completed", [item],
                                  None, use)
        for body in (created, done):
            body["metadata"] = metadata
            body["conversation_id"] = None
        prefix = "response.text" if beta else "response.output_text"
        out: list[dict[str, Any]] = [
            {"type": "response.created", "response": created},
            {"type": "response.output_item.added", **base,
             "item": {**item, "status": "in_progress", "content": []}},
            {"type": "response.content_part.added", **part, "part": {"type": "text", "text": ""}},
            {"type": f"{prefix}.delta", **part, "delta": summary},
            {"type": f"{prefix}.done", **part, "text": summary},
            {"type": "response.content_part.done", **part,
             "part": {"type": "text", "text": summary}},
            {"type": "response.output_item.done", **base, "item": item},
            {"type": "response.done", "response": done},
        ]
        return [self._stamp(o) for o in out]

    def _on_response_cancel(self, event: dict[str, Any], client_id: str | None) -> list[Any]:
        if self.active is None:
            return self._mistake(
                "response.cancel with no active response",
                "Cancellation failed: no active response found",
                "response_cancel_not_active", client_id,
            )
        self.report.cancels.append(("client", self.active.id))
        return [StopResponse("client_cancelled")]

    def _pick_script(self) -> ToolScript | None:
        number = self.report.responses
        for i, script in enumerate(self.config.tool_scripts):
            if i in self._fired:
                continue
            cued = script.cue is not None and any(script.cue.lower() in t for t in self._cue_text)
            if script.at_response == number or cued:
                self._fired.add(i)
                self._cue_text.clear()
                return script
        return None

    def _start_response(self) -> list[Any]:
        self.report.responses += 1
        script = self._pick_script()
        audio = None
        if script is None:
            c = self.config
            audio = response_audio(self.settings.output_format, c.signal.value, c.response_ms,
                                   c.delta_ms, c.tone_hz, c.level_dbfs)
        else:
            self.report.function_calls += 1
        self.active = Response(self.dialect, audio, script)
        return [StartResponse(self.active)]

    def _item(self, r: Response, status: str, done: bool) -> dict[str, Any]:
        if r.script is not None:
            args = r.script.arguments if done else ""
            return ev.function_call_item(r.item_id, status, r.script.name, r.call_id, args)
        transcript = self._transcript(r) if done else None
        return ev.assistant_item(self.dialect, r.item_id, status, transcript)

    def _transcript(self, r: Response) -> str:
        text = self.config.response_text
        if r.audio is None or r.sent >= r.deltas:
            return text
        return text[: len(text) * r.sent // max(1, r.deltas)]

    def response_head(self, r: Response) -> list[dict[str, Any]]:
        """Events from ``response.created`` to the content part (or the function arguments)."""
        r.head_sent = True
        previous, self._last_item = self._last_item, r.item_id
        item = self._item(r, "in_progress", done=False)
        base = {"response_id": r.id, "output_index": 0}
        out: list[dict[str, Any]] = [
            {"type": "response.created",
             "response": ev.response_object(self.dialect, r.id, self.session, "in_progress", [])},
            {"type": "response.output_item.added", **base, "item": item},
            *ev.item_added(self.dialect, item, previous),
        ]
        if r.script is not None:
            args = {**base, "item_id": r.item_id, "call_id": r.call_id}
            out.append({"type": "response.function_call_arguments.delta", **args,
                        "delta": r.script.arguments})
            done = {"type": "response.function_call_arguments.done", **args,
                    "arguments": r.script.arguments}
            if self.dialect is Dialect.GA:
                done["name"] = r.script.name  # GA releases name the function here too
            out.append(done)
        else:
            out.append({"type": "response.content_part.added", **base, "item_id": r.item_id,
                        "content_index": 0, "part": {"type": "audio", "transcript": ""}})
        return [self._stamp(o) for o in out]

    def response_tail(self, r: Response, reason: str | None = None) -> list[dict[str, Any]]:
        """Events that end ``r``: completed, or cancelled for ``reason``; clears ``active``."""
        out = [] if r.head_sent else self.response_head(r)
        status = "completed" if reason is None else "cancelled"
        item = self._item(r, "completed" if reason is None else "incomplete", done=True)
        base = {"response_id": r.id, "output_index": 0, "item_id": r.item_id}
        part = {**base, "content_index": 0}
        if r.audio is not None:
            text = self._transcript(r)
            self._sent_ms[r.item_id] = r.sent_ms
            tail: list[dict[str, Any]] = [{"type": ev.AUDIO_DONE[self.dialect], **part}]
            if text:
                tail.append({"type": ev.TRANSCRIPT_DELTA[self.dialect], **part, "delta": text})
            tail += [
                {"type": ev.TRANSCRIPT_DONE[self.dialect], **part, "transcript": text},
                {"type": "response.content_part.done", **part,
                 "part": {"type": "audio", "transcript": text}},
            ]
        else:
            tail = []
        # The instructions are the prompt's prefix: cached from the session's second response.
        prompt = len(self.settings.instructions) // 4 + 8
        use = ev.usage(self.dialect, prompt, self._input_ms, len(self.config.response_text) // 4,
                       r.sent_ms, cached_text=prompt if self.report.usage else 0)
        self.report.usage.append(use)
        details = None if reason is None else {"type": "cancelled", "reason": reason}
        tail += [
            {"type": "response.output_item.done", "response_id": r.id, "output_index": 0,
             "item": item},
            *ev.item_done(self.dialect, item, None),
            {"type": "response.done", "response": ev.response_object(
                self.dialect, r.id, self.session, status, [item], details, use)},
            ev.rate_limits(use["total_tokens"]),
        ]
        self.active = None
        return out + [self._stamp(o) for o in tail]


_HANDLERS = {
    "session.update": SimSession._on_session_update,
    "input_audio_buffer.append": SimSession._on_append,
    "input_audio_buffer.commit": SimSession._on_commit,
    "input_audio_buffer.clear": SimSession._on_clear,
    "conversation.item.create": SimSession._on_item_create,
    "conversation.item.delete": SimSession._on_item_delete,
    "conversation.item.truncate": SimSession._on_truncate,
    "conversation.item.retrieve": SimSession._on_unsupported,
    "output_audio_buffer.clear": SimSession._on_unsupported,
    "transcription_session.update": SimSession._on_unsupported,
    "response.create": SimSession._on_response_create,
    "response.cancel": SimSession._on_response_cancel,
}
