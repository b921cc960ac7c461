"""One call's state machine: AudioSocket bytes and Realtime messages in, bytes and actions out.

Pure: no socket, task or clock. The worker's adapter feeds it the caller's bytes
(:meth:`Call.receive_data`), the upstream's messages (:meth:`Call.upstream_message`) and the
clock's ticks (:meth:`Call.next_frame`), then drains :attr:`Call.to_upstream` (client events
to send) and :meth:`Call.actions` (what only the adapter can do: connect, re-phase, end).

States and their moves are the table ``_MOVES``. Invariants:

- Media starts with the first caller audio: its kind fixes the call's rate for good and the
  engine answers in that kind; a later audio message of another kind is a protocol violation.
- Caller audio reaches the upstream in batches of ``append_ms``; while the upstream connects,
  at most ``prebuffer_ms`` of it is held (the newest), so a slow connect never grows memory.
- Model audio of a response that barge-in cancelled is dropped, however late it arrives.
- ``conversation.item.truncate`` reports what the playout buffer popped for that item: audio
  the caller heard, never more than the item's audio.
- ``EndCall`` is emitted exactly once; after it every input is ignored.
"""

from __future__ import annotations

import enum
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from engine import handover, logs, realtime
from engine._impl import audiosocket, g711, playout, resample, uplink, wsframe
from engine.config import Config, dialect_of
from engine.errors import ClockFailed, EngineError, KindChanged, UnsupportedRate, UpstreamError
from engine.handover import Conversation
from engine.records.usage import Usage
from engine.toolcalls import ToolCalls

__all__ = [
    "Action",
    "Call",
    "CallSettings",
    "ConnectUpstream",
    "DtmfPressed",
    "Handover",
    "EndCall",
    "EndReason",
    "REFUSALS",
    "RunTool",
    "StartGoodbye",
    "Rephase",
    "StartPacing",
    "State",
]

log = logging.getLogger("engine.call")

UPSTREAM_RATE = 24000
PCMU_RATE = 8000
MAX_TRANSCRIPT_LINES = 500
MAX_TOOL_NOTES = 100
_NO_HANDOVER, _WANTED, _SUMMARISING, _OPENING = "none", "wanted", "summarising", "opening"
MAX_DTMF = 256
GOODBYE_INSTRUCTIONS = "Say goodbye to the caller in one short sentence."
WRAPUP_INSTRUCTIONS = (
    "The call has reached its time limit. Tell the caller politely that you have to end the "
    "call now, and say goodbye in one short sentence."
)


class State(enum.Enum):
    HANDSHAKE = "handshake"
    CONNECTING = "connecting"
    ACTIVE = "active"
    WRAPPING_UP = "wrapping_up"
    ENDED = "ended"


_MOVES: dict[State, frozenset[State]] = {
    State.HANDSHAKE: frozenset({State.CONNECTING, State.ENDED}),
    State.CONNECTING: frozenset({State.ACTIVE, State.ENDED}),
    State.ACTIVE: frozenset({State.WRAPPING_UP, State.ENDED}),
    State.WRAPPING_UP: frozenset({State.ENDED}),
    State.ENDED: frozenset(),
}


class EndReason(enum.Enum):
    """Why a call ended; the value is the log field and the metric label."""

    CALLER_HANGUP = "caller_hangup"
    UPSTREAM_FAILED = "upstream_failed"
    MAX_DURATION = "max_duration"
    HANDSHAKE_TIMEOUT = "handshake_timeout"
    PROTOCOL_VIOLATION = "protocol_violation"
    CALLER_STALLED = "caller_stalled"
    CALLER_SILENT = "caller_silent"
    OVER_CAPACITY = "over_capacity"
    OVERLOADED = "overloaded"
    FD_LIMIT = "fd_limit"
    SOURCE_CAP = "source_cap"
    DRAINING = "draining"
    NOT_ALLOWED = "not_allowed"
    SHUTDOWN = "shutdown"
    AGENT_HANGUP = "agent_hangup"
    TRANSFERRED = "transferred"
    INTERNAL_ERROR = "internal_error"


REFUSALS = frozenset({EndReason.OVER_CAPACITY, EndReason.SOURCE_CAP, EndReason.DRAINING,
                      EndReason.OVERLOADED, EndReason.FD_LIMIT})
"""Reasons a call is refused before it starts: a clean hangup, so the dialplan falls back."""


@dataclass(frozen=True, slots=True)
class ConnectUpstream:
    """Open the Realtime connection; call :meth:`Call.upstream_opened` when it is up."""


@dataclass(frozen=True, slots=True)
class StartPacing:
    """The call's rate is known: give it a place on the worker clock."""


@dataclass(frozen=True, slots=True)
class Rephase:
    """The call's next frame should go out now, not at its next tick: a response's first audio
    is buffered, or a barge-in left a faded tail. The clock sends it at once or at the nearest
    sub-tick and keeps the period from there."""


@dataclass(frozen=True, slots=True)
class EndCall:
    """Stop pacing, send ``hangup`` bytes to the caller if any, close both sides."""

    reason: EndReason
    hangup: bytes
    error: EngineError | None = None


@dataclass(frozen=True, slots=True)
class RunTool:
    """Run the tool ``name`` with the model's ``arguments`` (untrusted JSON text), then call
    :meth:`Call.tool_result` with ``call_id``."""

    call_id: str
    name: str
    arguments: str


@dataclass(frozen=True, slots=True)
class Handover:
    """Open a fresh Realtime session beside this one; call :meth:`Call.handover_opened` once
    it is up (or :meth:`Call.handover_failed`), then move the call onto it."""


@dataclass(frozen=True, slots=True)
class DtmfPressed:
    """The caller pressed ``digit`` during the conversation: the agent's DTMF policy decides."""

    digit: str


@dataclass(frozen=True, slots=True)
class StartGoodbye:
    """The call is saying goodbye: arm the wrap-up deadline (:meth:`Call.wrapup_expired`)."""


Action = (ConnectUpstream | StartPacing | Rephase | EndCall | RunTool | StartGoodbye
          | DtmfPressed | Handover)


@dataclass(frozen=True, slots=True)
class CallSettings:
    """What a call needs from the configuration, resolved once per worker."""

    dialect: realtime.Dialect
    session: realtime.SessionSettings
    upstream_format: str = "pcm16"
    append_ms: int = 40
    prebuffer_ms: int = 2000
    start_frames: int = 2
    fade_ms: int = 5
    capacity_ms: int = 60_000
    max_payload: int = 16384
    log_transcripts: bool = False
    wrapup_instructions: str = WRAPUP_INSTRUCTIONS

    @classmethod
    def from_config(cls, config: Config) -> CallSettings:
        dialect = realtime.Dialect(dialect_of(config))
        session = realtime.SessionSettings(
            instructions=config.system_prompt,
            voice=config.openai_voice,
            audio_format=config.upstream_format,
            vad_type=config.vad_type,
            vad_threshold=config.vad_threshold,
            vad_silence_ms=config.vad_silence_ms,
            vad_prefix_padding_ms=config.vad_prefix_padding_ms,
            vad_eagerness=config.vad_eagerness,
            transcription_model=config.transcription_model,
            max_output_tokens=config.max_output_tokens,
            temperature=config.temperature if dialect is realtime.Dialect.BETA else None,
        )
        return cls(
            dialect=dialect,
            session=session,
            upstream_format=config.upstream_format,
            append_ms=config.append_ms,
            log_transcripts=config.log_transcripts,
        )


def _stages(in_rate: int, out_rate: int) -> tuple[Any, ...]:
    """The stateful int16 resamplers that take ``in_rate`` to ``out_rate``, run in turn: none
    when the rates are equal; a pair without its own filter goes through 24 kHz, which pairs
    with every rate."""
    if in_rate == out_rate:
        return ()
    try:
        return (resample.Resampler(in_rate, out_rate),)
    except UnsupportedRate:
        return (resample.Resampler(in_rate, UPSTREAM_RATE),
                resample.Resampler(UPSTREAM_RATE, out_rate))


def _converter(in_rate: int, out_rate: int) -> Callable[[bytes], bytes] | None:
    """A stateful int16 rate converter, or None when the rates are equal."""
    stages = _stages(in_rate, out_rate)
    if not stages:
        return None
    if len(stages) == 1:
        return stages[0].process  # type: ignore[no-any-return]
    first, second = stages[0].process, stages[1].process
    return lambda pcm: second(first(pcm))  # type: ignore[no-any-return]


@dataclass(slots=True)
class _Response:
    response_id: str
    audio_started: bool = False
    cancelled: bool = False
    wrapup: bool = False
    hangup_after: bool = False


@dataclass(slots=True)
class CallStats:
    """What a call did, for its end-of-call log line."""

    caller_frames: int = 0
    appends: int = 0
    deltas: int = 0
    dropped_deltas: int = 0
    bad_deltas: int = 0
    bad_events: int = 0
    bargeins: int = 0
    truncates: int = 0
    cancels: int = 0
    server_errors: int = 0
    rephases: int = 0
    tool_calls: int = 0
    upstream_sessions: int = 0
    dtmf: list[str] = field(default_factory=list)
    transcript: deque[tuple[str, str]] = field(
        default_factory=lambda: deque(maxlen=MAX_TRANSCRIPT_LINES)
    )
    usage: Usage = field(default_factory=Usage)
    tools: list[dict[str, Any]] = field(default_factory=list)


class Call:
    """One call, from the first byte on its socket to its end.

    Args:
        settings: shared, read-only per worker.
        peer: the caller's address, for log lines.
        choose: picks the call's own settings (its agent, A/B variant) once its UUID is
            known, before any of its audio is handled.
        framer: masks the upstream frames the call builds (a ``wsframe.FrameBuilder``; one
            per process serves every call).

    Caller audio reaches the upstream as finished WebSocket frames in
    :attr:`upstream_frames` (built natively, see ``engine._native.uplink``); every other
    client event is JSON in :attr:`to_upstream`, to be framed by the connection. The adapter
    writes ``to_upstream`` first.
    """

    def __init__(self, settings: CallSettings, peer: str = "",
                 choose: Callable[[UUID], CallSettings] | None = None,
                 framer: Any = None) -> None:
        self.settings = settings
        self._choose = choose
        self.peer = peer
        self.state = State.HANDSHAKE
        self.uuid: UUID | None = None
        self.kind: int | None = None
        self.rate: int | None = None
        self.playout: Any = None
        self._stats = CallStats()
        self.end_reason: EndReason | None = None
        self.responses_created = 0
        self.to_upstream: list[bytes] = []
        self.upstream_frames: list[bytes] = []
        self._framer = framer
        self.recording = False  # set before media starts: the caller's audio is tapped
        self._uplink: Any = None
        self._actions: list[Action] = []
        self._parser = audiosocket.Parser(settings.max_payload)
        self._encoder = realtime.Encoder(settings.dialect)
        self._decoder = realtime.Decoder(settings.dialect)
        self._from_upstream_format: Callable[[bytes], bytes] | None = None
        self._response: _Response | None = None
        self._goodbye_done = False
        self._goodbye_reason = EndReason.MAX_DURATION
        self._tools = ToolCalls()
        self._after_response: list[bytes] = []
        self._want_response = False
        self._last_done: tuple[str, bool] | None = None
        self.conversation = Conversation()
        self._caller_speaking = False
        self._handover = _NO_HANDOVER
        self._session_items: set[str] = set()
        self._stale_items: set[str] = set()
        self._orphans: set[str] = set()
        self._summary_upto = 0
        self._summary_failed = False
        self._out_of_band: set[str] = set()

    # -- inputs from the adapter -------------------------------------------------------------

    @property
    def stats(self) -> CallStats:
        """What the call did so far."""
        stats, up = self._stats, self._uplink
        if up is not None:
            stats.caller_frames, stats.appends = up.frames, up.appends
        return stats

    def receive_data(self, data: bytes) -> bool:
        """Bytes from the caller's socket; True when the adapter has something to do.

        The call's audio goes from the parser to its uplink in native code; only other
        messages (and the first audio) come back here as events.
        """
        if self.state is State.ENDED:
            return False
        if self._parser.receive_data(data):
            self._caller_events()
            return self.wants_attention
        return False

    @property
    def parser(self) -> Any:
        """The caller's AudioSocket parser (the clock may read the caller into it)."""
        return self._parser

    def caller_parsed(self) -> bool:
        """The clock read the caller into :attr:`parser`: the events it left are handled.
        True when the adapter has something to do."""
        if self.state is State.ENDED:
            return False
        self._caller_events()
        return self.wants_attention

    def receive_eof(self) -> None:
        """The caller closed its side (Asterisk's way of hanging up)."""
        if self.state is State.ENDED:
            return
        self._parser.receive_eof()
        self._caller_events()

    def connection_lost(self) -> None:
        """The caller's socket is gone without an EOF (reset)."""
        self._end(EndReason.CALLER_HANGUP, hangup=False)

    def upstream_opened(self) -> None:
        """The Realtime connection is up: configure the session, send held caller audio."""
        if self.state is not State.CONNECTING:
            return
        self._move(State.ACTIVE)
        self._stats.upstream_sessions += 1
        self.to_upstream.append(self._encoder.session_update(self.settings.session))
        if self._uplink is not None:
            self._uplink.sending = True
            self._uplink.flush()

    # -- handing over to a fresh session (long calls) --------------------------------------

    def handover_due(self) -> None:
        """The session nears its time limit: hand over at the next pause (the adapter then
        calls :meth:`try_handover` until it happens)."""
        if self.state is State.ACTIVE and self._handover == _NO_HANDOVER:
            self._handover = _WANTED
            self.try_handover()

    @property
    def at_pause(self) -> bool:
        """Nobody is speaking: no response in progress or playing, the caller silent, no tool
        call waiting for its result and no answer waiting to be asked for."""
        return (self.state is State.ACTIVE and self._response is None and self._played_out()
                and not self._caller_speaking and not len(self._tools)
                and not self._want_response and not self._after_response)

    def try_handover(self, *, force: bool = False) -> bool:
        """Starts the handover if one is due and the call is at a pause (or ``force``: the
        limit is near, whatever is going on). A conversation too long to carry whole is
        summarised first, by the old session, out of band. True when the handover started."""
        if self.state is not State.ACTIVE or self._handover not in (_WANTED, _SUMMARISING):
            return False
        if not (force or self.at_pause):
            return False
        if not force and self._handover == _SUMMARISING:
            return False
        if not force and self.conversation.needs_summary() and not self._summary_failed:
            text, upto = self.conversation.summary_source()
            self._summary_upto = upto
            self._handover = _SUMMARISING
            self.to_upstream.append(self._encoder.summary_request(
                handover.SUMMARY_INSTRUCTIONS, text))
            return False
        self._handover = _OPENING
        self._actions.append(Handover())
        return True

    def _on_summary_done(self, event: realtime.ResponseDone) -> None:
        """The old session's summary of the conversation: the handover can go on."""
        if self._handover != _SUMMARISING:
            return
        text = event.text.strip()
        if event.status == "completed" and text:
            self.conversation.summarised(text, self._summary_upto)
        else:
            self._summary_failed = True  # the new session gets the latest turns instead
            logs.event(log, "handover_summary_failed", logging.WARNING, call=self._id(),
                       status=event.status)
        self._handover = _WANTED
        self.try_handover()

    @property
    def handing_over(self) -> bool:
        """A handover is due or under way."""
        return self._handover != _NO_HANDOVER

    def summary_timed_out(self) -> None:
        """The summary did not come in time: hand over with the latest turns instead."""
        if self._handover == _SUMMARISING:
            self._summary_failed = True
            self._handover = _WANTED
            logs.event(log, "handover_summary_failed", logging.WARNING, call=self._id(),
                       status="timed_out")

    @property
    def summarising(self) -> bool:
        """The old session is writing the conversation's summary."""
        return self._handover == _SUMMARISING

    def handover_failed(self) -> None:
        """The new session did not open: the call stays on its session and tries again."""
        if self._handover == _OPENING:
            self._handover = _WANTED

    def handover_opened(self) -> None:
        """The fresh session is up and the adapter has moved the call onto it: configure it
        like the first, give it the conversation so far, and forget what belonged to the old
        session (its response, its items, its pending tool calls)."""
        if self.state is State.ENDED or self._handover != _OPENING:
            return
        self._handover = _NO_HANDOVER
        self._summary_failed = False
        self._stats.upstream_sessions += 1
        self.to_upstream.clear()
        self.to_upstream.append(self._encoder.session_update(self.settings.session))
        self.to_upstream.extend(handover.carried_items(self._encoder, self.conversation))
        dropped = self._response
        if dropped is not None and self.playout is not None:
            self.playout.mark_complete()  # the old session's audio ends with what was sent
        self._response = None
        self._last_done = None
        # What waited for the old session's response goes to the new session instead.
        self.to_upstream.extend(self._after_response)
        self._after_response.clear()
        self._out_of_band.clear()
        self._stale_items |= self._session_items
        self._session_items = set()
        self._orphans |= self._tools.pending()
        self._tools = ToolCalls()
        self._caller_speaking = False
        if self._uplink is not None:
            self._uplink.flush()
        if dropped is not None and dropped.hangup_after and self.state is State.ACTIVE:
            # The hangup tool had run: the goodbye is what was playing.
            self._begin_goodbye(EndReason.AGENT_HANGUP, said=dropped.audio_started)
        elif self.state is State.WRAPPING_UP and not self._goodbye_done:
            self.to_upstream.append(self._encoder.response_create(GOODBYE_INSTRUCTIONS))
        elif self._want_response:
            self._ask()

    def upstream_message(self, data: bytes | str) -> None:
        """One message from the Realtime upstream."""
        if self.state is State.ENDED:
            return
        try:
            event = self._decoder.decode(data)
        except UpstreamError as exc:
            # Dropped, the call goes on: one event we cannot read is not worth the call.
            self._stats.bad_events += 1
            logs.event(log, "upstream_bad_event", logging.WARNING, call=self._id(), error=str(exc))
            return
        handler = _UPSTREAM_HANDLERS.get(type(event))
        if handler is not None:
            handler(self, event)

    def upstream_failed(self, error: UpstreamError | None) -> None:
        """The upstream connection failed or closed: the caller gets a clean hangup."""
        if self.state is State.ENDED:
            return
        self._end(EndReason.UPSTREAM_FAILED, error=error)

    def next_frame(self) -> bytes | None:
        """The clock's tick: one AudioSocket message of 20 ms (model audio or silence)."""
        if self.playout is None:
            return None
        frame: bytes = self.playout.pop_message()
        self.check_played_out()
        return frame

    @property
    def goodbye_pending(self) -> bool:
        """The call ends once the model's audio has played out: the clock should say when."""
        return self._goodbye_done and self.state is not State.ENDED

    def check_played_out(self) -> None:
        """The clock popped a frame: a goodbye that has played out ends the call."""
        if self._goodbye_done and self._played_out():
            self._end(self._goodbye_reason)

    @property
    def speaking(self) -> bool:
        """The model is answering, or its audio is still playing to the caller."""
        return self.state is not State.ENDED and (
            self._response is not None or not self._played_out())

    def transferred(self) -> None:
        """The manager has moved the caller's channel elsewhere: this leg is over."""
        self._end(EndReason.TRANSFERRED, hangup=False)

    def _played_out(self) -> bool:
        """Nothing of the model's is left to play: the last frame is on the wire."""
        playout = self.playout
        return playout is None or (not playout.playing and playout.buffered_samples == 0)

    def handshake_timeout(self) -> None:
        """The handshake deadline passed; ends the call if the UUID has not arrived."""
        if self.state is State.HANDSHAKE:
            self._end(EndReason.HANDSHAKE_TIMEOUT, hangup=False)

    def max_duration_reached(self) -> None:
        """The call's time is up: ask the model for a goodbye, hang up once it has played."""
        if self.state is State.ACTIVE:
            self._move(State.WRAPPING_UP)
            if self._response is not None and not self._response.cancelled:
                self.to_upstream.append(self._encoder.cancel(self._response.response_id))
                self._cancel_current()
            self.to_upstream.append(
                self._encoder.response_create(self.settings.wrapup_instructions)
            )
        elif self.state is State.CONNECTING:
            self._end(EndReason.MAX_DURATION)

    def wrapup_expired(self) -> None:
        """The goodbye did not finish in time: hang up regardless."""
        if self.state is State.WRAPPING_UP:
            self._end(self._goodbye_reason)

    def tool_result(self, call_id: str, output: str, *, hangup: bool = False) -> None:
        """A tool's result (JSON text for the model); ``hangup`` ends the call once the
        goodbye has played out."""
        if self.state is State.ENDED:
            return
        if call_id in self._orphans:
            # Asked for by the session before a handover: the new one never heard of the call.
            self._orphans.discard(call_id)
            if hangup:
                self._hang_up_after_goodbye(None)
            else:
                self._tell(self._encoder.item_create_text(
                    f"A tool you called before has finished. Its result: {output}",
                    role="system"))
            return
        self.to_upstream.append(self._encoder.function_output(call_id, output))
        response_id = self._tools.owner(call_id)
        if self._tools.answered(call_id) and not hangup:
            self._want_response = True
        if hangup:
            self._hang_up_after_goodbye(response_id)
        self._ask()

    def take_caller_audio(self) -> bytearray:
        """The caller's audio since the last take, as it arrived (a recording call's)."""
        up = self._uplink
        if up is None or up.tap is None:
            return bytearray()
        taken, up.tap = up.tap, bytearray()
        return taken  # type: ignore[no-any-return]

    def note_tool(self, entry: dict[str, Any]) -> None:
        """A tool call's outcome, for the call's record (the first ``MAX_TOOL_NOTES``)."""
        if len(self._stats.tools) < MAX_TOOL_NOTES:
            self._stats.tools.append(entry)

    def tool_late_result(self, name: str, output: str) -> None:
        """A result that came after its tool's "still working" answer: told to the model as a
        system message, now if it is not speaking, else once its response is done."""
        if self.state is not State.ACTIVE:
            return
        self._tell(self._encoder.item_create_text(
            f"The tool {name} has now finished. Its result: {output}", role="system"))

    def shutdown(self) -> None:
        """The node is stopping: a clean hangup."""
        self._end(EndReason.SHUTDOWN, hangup=self.uuid is not None)

    def refuse(self, reason: EndReason = EndReason.OVER_CAPACITY) -> None:
        """The node is full, the source over its cap, the worker's loop lagging or short of
        file descriptors, or the node draining: a clean hangup before anything starts, so the
        dialplan can fall back."""
        if reason not in REFUSALS:
            raise ValueError(f"{reason.value} is not a refusal")
        self._end(reason)

    def reject(self, reason: EndReason, error: EngineError | None = None) -> None:
        """The connection itself is unacceptable (a source not allowed, a bad PROXY header):
        close it without a word, since what is on the other end is not a trusted Asterisk."""
        self._end(reason, error=error, hangup=False)

    def failed(self, error: BaseException) -> None:
        """A bug of ours broke this call's media (the clock could not serve it): hang up
        cleanly rather than hold a silent call."""
        self._end(EndReason.INTERNAL_ERROR, error=ClockFailed(error))

    def caller_silent(self) -> None:
        """The caller sent nothing for the silence limit: a host gone without closing, or a
        peer holding the connection open. Hung up cleanly, in case anyone still reads."""
        self._end(EndReason.CALLER_SILENT)

    @property
    def caller_frames(self) -> int:
        """Audio messages the caller has sent so far."""
        return self._uplink.frames if self._uplink is not None else 0

    def caller_stalled(self) -> None:
        """The caller stopped reading: its send buffer is over the bound."""
        self._end(EndReason.CALLER_STALLED, hangup=False)

    def actions(self) -> list[Action]:
        """The actions decided since the last call, oldest first."""
        actions, self._actions = self._actions, []
        return actions

    @property
    def wants_attention(self) -> bool:
        """True when :attr:`to_upstream` or the actions hold something for the adapter."""
        return bool(self.to_upstream or self._actions or self.upstream_frames)

    # -- caller side -------------------------------------------------------------------------

    def _caller_events(self) -> None:
        for event in self._parser.events_received():
            if self.state is State.ENDED:
                return
            if type(event) is audiosocket.AudioReceived:
                self._caller_audio(event.kind, event.payload)
            elif type(event) is audiosocket.UuidReceived:
                self.uuid = event.uuid
                if self._choose is not None:
                    self.settings = self._choose(event.uuid)
                self._move(State.CONNECTING)
                self._actions.append(ConnectUpstream())
            elif type(event) is audiosocket.DtmfReceived:
                self._dtmf(event.digit)
            elif type(event) is audiosocket.ProtocolViolation:
                self._end(EndReason.PROTOCOL_VIOLATION, error=event.error, hangup=False)
            elif type(event) in (audiosocket.PeerClosed, audiosocket.HangupReceived):
                self._end(EndReason.CALLER_HANGUP, hangup=False)
            elif type(event) is audiosocket.ErrorReceived:
                logs.event(
                    log, "caller_error_message", logging.WARNING,
                    call=self._id(), payload=event.payload.hex(),
                )

    def _caller_audio(self, kind: int, payload: bytes) -> None:
        if kind != self.kind:
            if self.kind is not None:
                self._end(EndReason.PROTOCOL_VIOLATION, error=KindChanged(self.kind, kind),
                          hangup=False)
                return
            self._start_media(kind)
        self._uplink.push(payload)

    def _start_media(self, kind: int) -> None:
        settings = self.settings
        rate = audiosocket.AUDIO_RATES[kind]
        self.kind, self.rate = kind, rate
        self.playout = playout.PlayoutBuffer(
            rate, start_frames=settings.start_frames, capacity_ms=settings.capacity_ms,
            fade_ms=settings.fade_ms, kind=kind,
        )
        pcmu = settings.upstream_format == "pcmu"
        if pcmu:
            down = _converter(PCMU_RATE, rate)
            decode = g711.ulaw_decode
            self._from_upstream_format = (
                decode if down is None else (lambda data: down(decode(data)))  # type: ignore[misc]
            )
            up_rate, bytes_per_ms = PCMU_RATE, PCMU_RATE // 1000
        else:
            self._from_upstream_format = _converter(UPSTREAM_RATE, rate)
            up_rate, bytes_per_ms = UPSTREAM_RATE, UPSTREAM_RATE // 1000 * 2
        if self._framer is None:
            self._framer = wsframe.FrameBuilder()
        self._uplink = uplink.Uplink(
            kind, _stages(rate, up_rate), pcmu, settings.append_ms * bytes_per_ms,
            settings.prebuffer_ms * bytes_per_ms, self._framer, self.upstream_frames,
        )
        self._uplink.sending = self.state is State.ACTIVE or self.state is State.WRAPPING_UP
        if self.recording:
            self._uplink.tap = bytearray()
        self._parser.attach(self._uplink)
        self._actions.append(StartPacing())

    def _dtmf(self, digit: str) -> None:
        if len(self._stats.dtmf) < MAX_DTMF:
            self._stats.dtmf.append(digit)
        logs.event(log, "dtmf", call=self._id(), digit=digit)
        if self.state is State.ACTIVE:
            self._actions.append(DtmfPressed(digit))

    def forward_dtmf(self, digits: str) -> None:
        """Tells the model which keys the caller pressed, as the caller's words; it answers
        now, or once its current response is done."""
        if self.state is not State.ACTIVE or not digits:
            return
        self._tell(self._encoder.item_create_text(
            f"[The caller pressed on the keypad: {' '.join(digits)}]", role="user"))

    def _tell(self, item: bytes) -> None:
        """A conversation item the model should answer: sent now, or after the response in
        progress (so it does not land inside it), then one ``response.create``."""
        if self._response is None:
            self.to_upstream.append(item)
        else:
            self._after_response.append(item)
        self._want_response = True
        self._ask()

    def _ask(self) -> None:
        """Sends the ``response.create`` wanted, once nothing stands in its way: no response
        in progress (a second would be refused) and no tool call still unanswered (the model
        would answer without its result)."""
        if (self._want_response and self.state is State.ACTIVE and self._response is None
                and not len(self._tools)):
            self._want_response = False
            self.to_upstream.append(self._encoder.response_create())

    def end_now(self, reason: EndReason) -> None:
        """Ends the call at once with a clean hangup (a key the agent maps to hanging up)."""
        self._end(reason)

    # -- upstream side -----------------------------------------------------------------------

    def _on_response_created(self, event: realtime.ResponseCreated) -> None:
        if event.purpose is not None:
            self._out_of_band.add(event.response_id)  # a summary: nothing the caller hears
            return
        self.responses_created += 1
        wrapup = self.state is State.WRAPPING_UP
        self._response = _Response(event.response_id, wrapup=wrapup)

    def _on_audio_delta(self, event: realtime.AudioDelta) -> None:
        response = self._response
        if (
            self.playout is None
            or response is None
            or response.cancelled
            or response.response_id != event.response_id
        ):
            self._stats.dropped_deltas += 1
            return
        if len(event.audio) & 1 and self.settings.upstream_format == "pcm16":
            # Not whole 16-bit samples: the stream would be shifted by a byte from here on.
            self._stats.bad_deltas += 1
            if self._stats.bad_deltas == 1:
                logs.event(log, "upstream_bad_audio", logging.WARNING, call=self._id(),
                           bytes=len(event.audio), reason="odd length for 16-bit audio")
            return
        self._stats.deltas += 1
        convert = self._from_upstream_format
        self.playout.push(event.audio if convert is None else convert(event.audio), event.item_id)
        if not response.audio_started:
            response.audio_started = True
            self._session_items.add(event.item_id)
            self._stats.rephases += 1
            self._actions.append(Rephase())

    def _on_audio_done(self, event: realtime.AudioDone) -> None:
        response = self._response
        if self.playout is not None and response is not None and not response.cancelled:
            self.playout.mark_complete()

    def _on_response_done(self, event: realtime.ResponseDone) -> None:
        self._stats.usage.add(event.usage)
        if event.purpose is not None:
            self._out_of_band.discard(event.response_id)
            if event.purpose == realtime.SUMMARY_PURPOSE:
                self._on_summary_done(event)
            return
        response = self._response
        if response is None or response.response_id != event.response_id:
            return
        if self.playout is not None and not response.cancelled:
            self.playout.mark_complete()
        self._response = None
        self._last_done = (response.response_id, response.audio_started)
        if response.hangup_after and self.state is State.ACTIVE:
            self._begin_goodbye(EndReason.AGENT_HANGUP, said=response.audio_started)
        elif response.wrapup and self.state is State.WRAPPING_UP:
            self._goodbye_done = True
            if self.playout is None:
                self._end(self._goodbye_reason)
        if self._tools.response_done(event.response_id):
            self._want_response = True
        if self.state is State.ACTIVE:
            self.to_upstream.extend(self._after_response)
        self._after_response.clear()
        self._ask()

    def _hang_up_after_goodbye(self, response_id: str | None) -> None:
        """The hangup tool ran. The goodbye is the response that called it: once it is done
        and played out, or, if it said nothing, one asked for now."""
        if self.state is not State.ACTIVE:
            return
        response = self._response
        if response is not None and not response.cancelled:
            # The response in progress (its own, or one that followed) is the goodbye.
            response.hangup_after = True
            return
        said = self._last_done is not None and self._last_done == (response_id, True)
        self._begin_goodbye(EndReason.AGENT_HANGUP, said=said)

    def _begin_goodbye(self, reason: EndReason, *, said: bool) -> None:
        """Hang up with ``reason`` once the goodbye has played: the audio already buffered
        when ``said``, else a goodbye the model is asked for now."""
        self._move(State.WRAPPING_UP)
        self._goodbye_reason = reason
        self._actions.append(StartGoodbye())
        if said:
            self._goodbye_done = True
            if self._played_out():
                self._end(reason)
        else:
            self.to_upstream.append(self._encoder.response_create(GOODBYE_INSTRUCTIONS))

    def _on_speech_stopped(self, event: realtime.SpeechStopped) -> None:
        self._caller_speaking = False

    def _on_speech_started(self, event: realtime.SpeechStarted) -> None:
        self._caller_speaking = True
        response = self._response
        cleared = self.playout.clear() if self.playout is not None else None
        if response is None and cleared is None:
            return
        self._stats.bargeins += 1
        if response is not None and not response.cancelled:
            if not self.settings.session.interrupt_response:
                self.to_upstream.append(self._encoder.cancel(response.response_id))
                self._stats.cancels += 1
            self._cancel_current()
        if cleared is not None and cleared[0] is not None and cleared[0] in self._stale_items:
            logs.event(log, "truncate_skipped", logging.DEBUG, call=self._id(),
                       reason="the item belongs to the session before a handover")
        elif cleared is not None and cleared[0] is not None:
            item_id, played_ms = cleared
            self.to_upstream.append(self._encoder.truncate(item_id, played_ms))
            self._stats.truncates += 1
            # The faded tail goes out now, not at this call's next tick up to 20 ms away: the
            # caller hears the model stop as soon as it heard the caller.
            self._actions.append(Rephase())
        logs.event(log, "barge_in", logging.DEBUG, call=self._id(), cleared=cleared)

    def _cancel_current(self) -> None:
        if self._response is not None:
            self._response.cancelled = True

    def _on_transcript(self, event: realtime.Transcript) -> None:
        self.conversation.add(event.role, event.text)  # memory only, for a handover
        if self.settings.log_transcripts:
            self._stats.transcript.append((event.role, event.text))
            logs.event(log, "transcript", call=self._id(), role=event.role, text=event.text)

    def _on_function_call(self, event: realtime.FunctionCallDone) -> None:
        if event.response_id in self._out_of_band:
            logs.event(log, "tool_call_dropped", logging.WARNING, call=self._id(),
                       tool=event.name, reason="asked for by an out-of-band response")
            return
        response = self._response
        if response is not None and response.cancelled:
            logs.event(log, "tool_call_dropped", call=self._id(), tool=event.name,
                       reason="its response was cancelled by barge-in")
            return
        if self.state is not State.ACTIVE:
            self.to_upstream.append(self._encoder.function_output(
                event.call_id, '{"error": "the call is ending; no tool can run now"}'))
            return
        self._stats.tool_calls += 1
        self._tools.started(event.response_id, event.call_id)
        self._actions.append(RunTool(event.call_id, event.name, event.arguments))

    def _on_server_error(self, event: realtime.ServerError) -> None:
        # Logged, the call goes on: an error the server cannot go on from ends in its close.
        self._stats.server_errors += 1
        logs.event(log, "upstream_error_event", logging.WARNING, call=self._id(),
                   type=event.type, code=event.code, message=event.message,
                   event_id=event.event_id)

    # -- ending ------------------------------------------------------------------------------

    def _move(self, state: State) -> None:
        if state not in _MOVES[self.state]:
            raise AssertionError(f"call state {self.state.value} cannot move to {state.value}")
        self.state = state

    def _end(self, reason: EndReason, *, error: EngineError | None = None,
             hangup: bool = True) -> None:
        if self.state is State.ENDED:
            return
        self._move(State.ENDED)
        self.end_reason = reason
        self.to_upstream.clear()
        self._parser.finish()
        if self._uplink is not None:
            self._uplink.sending = False
            self._uplink.clear()
        self._actions.append(EndCall(reason, audiosocket.HANGUP if hangup else b"", error))

    def _id(self) -> str:
        return str(self.uuid) if self.uuid is not None else f"({self.peer})"


_UPSTREAM_HANDLERS: dict[type, Callable[[Call, Any], None]] = {
    realtime.AudioDelta: Call._on_audio_delta,
    realtime.AudioDone: Call._on_audio_done,
    realtime.ResponseCreated: Call._on_response_created,
    realtime.ResponseDone: Call._on_response_done,
    realtime.SpeechStarted: Call._on_speech_started,
    realtime.SpeechStopped: Call._on_speech_stopped,
    realtime.Transcript: Call._on_transcript,
    realtime.FunctionCallDone: Call._on_function_call,
    realtime.ServerError: Call._on_server_error,
}
