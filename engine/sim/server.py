"""The simulator's WebSocket server: handshake policy, faults, and one adapter per session.

:class:`Simulator` runs in any asyncio loop (the engine's own uvloop with ``--simulator``, or
standalone with ``voice-engine sim``). The protocol logic lives in
:class:`~engine.sim.session.SimSession`; :class:`LiveSession` only moves its events over the
connection, paces response audio, and injects faults (close, stall) on demand.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import http
import logging
import math
import secrets
import socket
import ssl
import time
import urllib.parse
from typing import Any, cast

import orjson
from websockets.datastructures import Headers
from websockets.frames import Frame, Opcode
from websockets.http11 import Request, Response
from websockets.protocol import State
from websockets.server import ServerProtocol

from engine import logs
from engine._impl import wsframe
from engine.sim.config import (
    SESSION_FAULTS,
    Dialect,
    Fault,
    FaultKind,
    SimConfig,
    ValidationMode,
)
from engine.sim.session import (
    Response as SimResponse,
)
from engine.sim.session import (
    SessionReport,
    SimSession,
    StartResponse,
    StopResponse,
)
from engine.sim.validate import sdk_available, shared_validator
from engine.upstream import CLIENT_REQUEST_ID, write_output

__all__ = ["LiveSession", "SimObserver", "Simulator"]

log = logging.getLogger("engine.sim")

MAX_MESSAGE = 2**24
_DATA = (Opcode.TEXT, Opcode.BINARY, Opcode.CONT)
CLOSE_TIMEOUT = 1.0
SESSION_LIMIT_CODE = 1000  # a normal close: nothing tells the client why


def _text_header(n: int) -> bytes:
    """The header of a final, unmasked server text frame of ``n`` bytes (RFC 6455 5.2)."""
    if n < 126:
        return bytes((0x81, n))
    if n < 65536:
        return b"\x81\x7e" + n.to_bytes(2, "big")
    return b"\x81\x7f" + n.to_bytes(8, "big")


class SimObserver:
    """Hears, with a ``time.monotonic()`` stamp, what the sessions receive and send.

    The load generator uses one to time the engine from the upstream's side; a test can too.
    The methods do nothing here: override the ones you need. They run inline on the hot path,
    so they must be cheap and must not raise.
    """

    def opened(self, live: LiveSession) -> None:
        """A session's handshake succeeded."""

    def received(self, live: LiveSession, now: float) -> None:
        """A client message was handled (``live.core`` shows its effect)."""

    def sent(self, live: LiveSession, event: dict[str, Any], now: float) -> None:
        """A server event (not an audio delta) is about to be sent."""

    def delta_sent(self, live: LiveSession, index: int, now: float) -> None:
        """Audio delta ``index`` of the active response is about to be sent."""

    def closed(self, live: LiveSession) -> None:
        """The session is over."""


class LiveSession(asyncio.Protocol):
    """One connection: websockets' sans-I/O server protocol driven from this ``asyncio.Protocol``.

    No task or coroutine per message (the asyncio server's per-message machinery was most of
    the simulator's CPU under the bench's load): bytes in, events out, sends written at once.
    Only a response's paced audio runs as a task. :attr:`core` exists once the handshake is
    accepted; :attr:`done` resolves when the connection is gone.
    """

    def __init__(self, sim: Simulator) -> None:
        self.sim = sim
        self.config = sim.config
        self.observer = sim.observer
        self.protocol = ServerProtocol(max_size=MAX_MESSAGE)
        self.transport: asyncio.Transport | None = None
        self.core: SimSession = None  # type: ignore[assignment]  # set when accepted
        self.stalled = False
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._stream: asyncio.Task[None] | None = None
        self._timers: list[asyncio.TimerHandle] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._fragments: list[bytes] | None = None
        self._reader: Any = None  # a wsframe.FrameReader once the session is open
        self._close_timer: asyncio.TimerHandle | None = None
        self.faults: list[Fault] = []  # the session faults, applied once it is open
        self._damage: Fault | None = None  # an audio fault waiting for the next delta

    @property
    def report(self) -> SessionReport:
        """What this session saw so far."""
        return self.core.report

    @property
    def dialect(self) -> Dialect:
        return self.core.dialect

    # -- asyncio.Protocol ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sim._live.add(self)

    def data_received(self, data: bytes) -> None:
        reader = self._reader
        if reader is None:
            protocol = self.protocol
            protocol.receive_data(data)
            self._events()
            if (protocol.state is State.OPEN and self.core is not None
                    and not protocol.reader.buffer):
                # At a frame boundary once open: data frames skip websockets' parser from here.
                self._reader = wsframe.FrameReader(MAX_MESSAGE, True)
            return
        for item in reader.feed(data):
            if type(item) is tuple:
                self._data_frame(*item)
            else:
                self.protocol.receive_data(item)
                self._events()
        if reader.violation is not None and self.protocol.state is State.OPEN:
            self.protocol.fail(*reader.violation)
            self._flush()
            self._expect_close()

    def eof_received(self) -> bool:
        self.protocol.receive_eof()
        self._events()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.sim._live.discard(self)
        for timer in self._timers:
            timer.cancel()
        if self._close_timer is not None:
            self._close_timer.cancel()
        self._stop_stream()
        for task in list(self._tasks):
            task.cancel()
        if self.core is not None:
            if self.report.closed is None:
                self.report.closed = str(self.protocol.close_code)
            if self.observer is not None:
                self.observer.closed(self)
            logs.event(log, "sim_session_closed", session=self.core.id,
                       closed=self.report.closed, responses=self.report.responses,
                       invalid=len(self.report.invalid), mistakes=len(self.report.mistakes))
        if not self.done.done():
            self.done.set_result(None)

    # -- faults and closing -------------------------------------------------------------------

    async def close(self, code: int = 1011, reason: str = "simulated server error") -> None:
        """Closes the connection with ``code`` (a stalled one is dropped without a handshake)."""
        if self.stalled:
            self.abort()
        elif self.protocol.state is State.OPEN:
            self.protocol.send_close(code, reason)
            self._flush()
            self._expect_close()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self.done), CLOSE_TIMEOUT + 1.0)

    def stall(self) -> None:
        """Stops reading and sending, without closing: the peer sees silence."""
        if self.stalled:
            return
        self.stalled = True
        self.report.closed = "stalled"
        self._stop_stream()
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.pause_reading()
        logs.event(log, "sim_session_stalled", session=self.core.id)

    def abort(self) -> None:
        """Drops the TCP connection at once."""
        if self.transport is not None:
            self.transport.abort()

    def apply(self, fault: Fault) -> None:
        """Schedules a session fault ``fault.after_ms`` from now."""
        loop = asyncio.get_running_loop()
        delay = fault.after_ms / 1000
        if fault.kind is FaultKind.STALL:
            self._timers.append(loop.call_later(delay, self.stall))
        elif fault.kind is FaultKind.CLOSE:
            self._timers.append(loop.call_later(delay, self._spawn_close, fault.close_code))
        elif fault.kind in (FaultKind.BAD_AUDIO, FaultKind.ODD_AUDIO):
            self._timers.append(loop.call_later(delay, setattr, self, "_damage", fault))
        else:
            self._timers.append(loop.call_later(delay, self._inject, fault))

    def _inject(self, fault: Fault) -> None:
        """Sends the message a GARBAGE, UNKNOWN, HUGE or ERROR fault stands for."""
        self.report.injected.append(fault.kind.value)
        logs.event(log, "sim_fault_injected", session=self.core.id, fault=fault.kind.value)
        self._send(fault_message(fault))

    def _expire(self) -> None:
        """The session reached its time limit: closed, as the real API does, without a
        warning event first."""
        self.report.closed = "session_limit"
        logs.event(log, "sim_session_expired", session=self.core.id)
        self._spawn_close(SESSION_LIMIT_CODE, "session reached its maximum duration")

    def _spawn_close(self, code: int, reason: str = "simulated server error") -> None:
        task = asyncio.get_running_loop().create_task(self.close(code, reason))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _expect_close(self) -> None:
        """The TCP connection should end now; if the peer lingers, it is dropped."""
        if self._close_timer is None and self.transport is not None:
            self._close_timer = asyncio.get_running_loop().call_later(CLOSE_TIMEOUT, self.abort)

    # -- protocol events ----------------------------------------------------------------------

    def _events(self) -> None:
        for event in self.protocol.events_received():
            if isinstance(event, Frame):
                if event.opcode in _DATA:
                    self._data_frame(event.opcode, event.fin, cast(bytes, event.data))
            elif isinstance(event, Request):
                self._handshake(event)
        self._flush()
        if self.protocol.close_expected():
            self._expect_close()

    def _data_frame(self, opcode: int, fin: bool, payload: bytes) -> None:
        """A text, binary or continuation frame: whole messages go to the session."""
        if opcode:
            if fin:
                self._message(payload)
            else:
                self._fragments = [payload]
        elif self._fragments is not None:
            self._fragments.append(payload)
            if fin:
                data, self._fragments = b"".join(self._fragments), None
                self._message(data)

    def _handshake(self, request: Request) -> None:
        response = self.sim._process_request(self, request)
        if response is None:
            response = self.protocol.accept(request)
        self.protocol.send_response(response)
        self._flush()
        if response.status_code == 101:
            self._open(request)

    def _open(self, request: Request) -> None:
        sim = self.sim
        split = urllib.parse.urlsplit(request.path)
        model = urllib.parse.parse_qs(split.query).get("model", [None])[0]
        dialect = sim._dialect(request.headers)
        validator = shared_validator(dialect.value, "client") if sim._validate else None
        config = self.config
        sample = config.sample_every if config.validation is ValidationMode.SAMPLE else 1
        core = self.core = SimSession(config, dialect, model, split.path, validator, sample)
        core.report.client_request_id = request.headers.get(CLIENT_REQUEST_ID)
        sim.sessions.append(self)
        if self.observer is not None:
            self.observer.opened(self)
        logs.event(log, "sim_session_opened", session=core.id, dialect=dialect.value,
                   model=model, path=split.path)
        for fault in self.faults:
            self.apply(fault)
        if config.session_limit_s is not None:
            self._timers.append(asyncio.get_running_loop().call_later(
                config.session_limit_s, self._expire))
        for event in core.opening():
            self._send(event)

    def _message(self, data: bytes) -> None:
        if self.stalled or self.core is None:
            return
        outs = self.core.receive(data)
        if self.observer is not None:
            self.observer.received(self, time.monotonic())
        for out in outs:
            self._dispatch(out)

    def _dispatch(self, out: Any) -> None:
        if isinstance(out, dict):
            self._send(out)
        elif isinstance(out, StartResponse):
            for event in self.core.response_head(out.response):
                self._send(event)
            self._stream = asyncio.get_running_loop().create_task(self._play(out.response))
        elif isinstance(out, StopResponse):
            response = self.core.active
            self._stop_stream()
            if response is not None:
                for event in self.core.response_tail(response, out.reason):
                    self._send(event)

    def _send(self, event: dict[str, Any] | bytes) -> None:
        if self.stalled or self.protocol.state is not State.OPEN:
            return
        if isinstance(event, bytes):
            data = event
        else:
            if self.observer is not None:
                self.observer.sent(self, event, time.monotonic())
            data = orjson.dumps(event)
        # The frame written here, not by websockets' send_text: its protocol keeps no state
        # for data frames it sends, and its own output is flushed as soon as it arises.
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.writelines((_text_header(len(data)), data))

    def _flush(self) -> None:
        write_output(self.protocol, self.transport)

    async def _play(self, r: SimResponse) -> None:
        loop = asyncio.get_running_loop()
        start = loop.time() + self.config.first_delta_ms / 1000
        step = 0.0 if math.isinf(self.config.pacing) else self.config.delta_ms / 1000 / (
            self.config.pacing
        )
        for i in range(r.deltas):
            delay = start + i * step - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            if self.stalled or self.protocol.state is not State.OPEN:
                return
            # Counted before the send: a cancel arriving later must not under-count audio the
            # peer may already hold, or its valid truncate would look invalid.
            r.mark_sent(i)
            if self.observer is not None:
                self.observer.delta_sent(self, i, time.monotonic())
            if self._damage is None:
                self._send(r.delta(i))
            else:
                fault, self._damage = self._damage, None
                self.report.injected.append(fault.kind.value)
                logs.event(log, "sim_fault_injected", session=self.core.id,
                           fault=fault.kind.value, delta=i)
                self._send(damaged_delta(r.delta(i), fault))
        self._stream = None
        for event in self.core.response_tail(r):
            self._send(event)

    def _stop_stream(self) -> None:
        """Cancels the paced audio: it is suspended in a sleep, so nothing more goes out."""
        task, self._stream = self._stream, None
        if task is not None and not task.done():
            task.cancel()


def fault_message(fault: Fault) -> bytes:
    """The text message of a message fault, as the server would put it on the wire."""
    if fault.kind is FaultKind.GARBAGE:
        return b'{"type": "response.output_audio.delta", "delta": "AAAA'
    if fault.kind is FaultKind.ERROR:
        return orjson.dumps({
            "type": "error", "event_id": "event_" + secrets.token_hex(8),
            "error": {"type": "server_error", "code": "server_error", "param": None,
                      "message": "The server had an error while processing your request "
                                 "(simulated).", "event_id": None},
        })
    head = b'{"type": "conversation.future_event", "event_id": "event_' + (
        secrets.token_hex(8).encode() + b'", "padding": "')
    tail = b'"}'
    if fault.kind is FaultKind.UNKNOWN:
        return head + tail
    return head + b"x" * max(0, fault.size - len(head) - len(tail)) + tail


def damaged_delta(event: bytes, fault: Fault) -> bytes:
    """Audio delta ``event`` as a BAD_AUDIO fault (its base64 broken by a character outside
    the alphabet) or an ODD_AUDIO fault (its audio a byte short) sends it."""
    doc = orjson.loads(event)
    if fault.kind is FaultKind.BAD_AUDIO:
        doc["delta"] = "*" + doc["delta"][1:]
    else:
        doc["delta"] = base64.b64encode(base64.b64decode(doc["delta"])[:-1]).decode()
    return orjson.dumps(doc)


class Simulator:
    """A local OpenAI Realtime server for tests and benchmarks.

    ``await start()``, point a client at :attr:`url`, read :attr:`sessions` (in arrival order)
    for what each connection saw, ``await stop()`` at the end. ``keep_sessions`` bounds how
    many of the latest sessions are kept (a long-running simulator must not grow without
    end); :meth:`totals` covers the kept ones. With ``ssl_context`` (a server context holding
    its certificate) it serves ``wss://``.
    """

    def __init__(
        self, config: SimConfig | None = None, observer: SimObserver | None = None,
        keep_sessions: int | None = None, ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.config = config or SimConfig()
        self.ssl_context = ssl_context
        self.observer = observer
        self.sessions: collections.deque[LiveSession] = collections.deque(maxlen=keep_sessions)
        self.handshakes: collections.Counter[str] = collections.Counter()
        self._faults: collections.deque[Fault] = collections.deque()
        self._live: set[LiveSession] = set()
        self._server: asyncio.Server | None = None
        self._host = "127.0.0.1"
        self._port = 0
        self._validate = self.config.validation is not ValidationMode.OFF

    @property
    def port(self) -> int:
        return self._port

    @property
    def validating(self) -> bool:
        """True when client events are checked against the SDK's models (set by start())."""
        return self._validate

    @property
    def url(self) -> str:
        """The Realtime URL to give a client (without ``?model=``)."""
        host = f"[{self._host}]" if ":" in self._host else self._host
        scheme = "wss" if self.ssl_context is not None else "ws"
        return f"{scheme}://{host}:{self._port}/v1/realtime"

    def queue_fault(self, fault: Fault, count: int = 1) -> None:
        """Applies ``fault`` to each of the next ``count`` connections."""
        self._faults.extend([fault] * count)

    def clear_faults(self) -> None:
        """Drops the queued faults that have not been applied yet."""
        self._faults.clear()

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        """Starts listening; returns the bound port."""
        if self._validate and not sdk_available():
            self._validate = False
            level = logging.WARNING if self.config.validation_required else logging.INFO
            logs.event(log, "sim_validation_off", level=level,
                       reason="the openai package is not installed, so the simulator does not "
                       "check the engine's events against the OpenAI SDK",
                       fix="pip install openai (or pip install 'voice-engine[test]') turns it on")
        if self._validate:
            dialects = [self.config.dialect] if self.config.dialect else list(Dialect)
            for d in dialects:
                shared_validator(d.value, "client")
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: LiveSession(self), host, port, backlog=1024, ssl=self.ssl_context
        )
        sock = self._server.sockets[0]
        self._host, self._port = host, sock.getsockname()[1]
        logs.event(log, "sim_listening", url=self.url,
                   dialect=self.config.dialect.value if self.config.dialect else "auto",
                   auth=self.config.api_key is not None, validation=self.config.validation.value
                   if self._validate else "off")
        return self._port

    async def stop(self) -> None:
        """Closes the listener and every connection; returns when all are gone."""
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        live = list(self._live)
        for session in live:
            if session.stalled or session.core is None:
                session.abort()
        await asyncio.gather(*(s.close(1001, "going away") for s in live
                               if not s.stalled and s.core is not None))
        # A session's own close (a fault, its time limit) may still be finishing its task.
        left = [t for s in (*live, *self.sessions) for t in s._tasks]
        await asyncio.gather(*left, return_exceptions=True)
        await server.wait_closed()
        logs.event(log, "sim_stopped", **self.totals())

    def _next_faults(self) -> list[Fault]:
        faults = list(self.config.faults)
        if self._faults:
            faults.append(self._faults.popleft())
        return faults

    def _process_request(self, live: LiveSession, request: Request) -> Response | None:
        """The handshake policy: None accepts; a response refuses (or drops) the connection."""
        faults = self._next_faults()
        kinds = {f.kind: f for f in faults}
        protocol = live.protocol
        if FaultKind.REFUSE in kinds:
            self.handshakes["refused"] += 1
            live.abort()
            return protocol.reject(http.HTTPStatus.SERVICE_UNAVAILABLE, "refused\n")
        if FaultKind.RATE_LIMITED in kinds:
            self.handshakes["429"] += 1
            response = _json_response(protocol, http.HTTPStatus.TOO_MANY_REQUESTS,
                                      "Rate limit reached (simulated).", "rate_limit_exceeded",
                                      "requests")
            response.headers["Retry-After"] = f"{kinds[FaultKind.RATE_LIMITED].retry_after:g}"
            return response
        if FaultKind.FORBIDDEN in kinds:
            self.handshakes["403"] += 1
            return _json_response(protocol, http.HTTPStatus.FORBIDDEN,
                                  "You are not allowed to use this model (simulated).",
                                  "model_not_found", "invalid_request_error")
        if FaultKind.UNAUTHORIZED in kinds or not self._authorized(request.headers):
            self.handshakes["401"] += 1
            logs.event(log, "sim_unauthorized", path=urllib.parse.urlsplit(request.path).path)
            return _json_response(protocol, http.HTTPStatus.UNAUTHORIZED,
                                  "Incorrect API key provided.", "invalid_api_key",
                                  "invalid_request_error")
        self.handshakes["accepted"] += 1
        live.faults = [f for f in faults if f.kind in SESSION_FAULTS]
        return None

    def _authorized(self, headers: Headers) -> bool:
        key = self.config.api_key
        if key is None:
            return True
        bearer = headers.get("Authorization", "")
        given = bearer[7:] if bearer[:7].lower() == "bearer " else headers.get("api-key", "")
        return secrets.compare_digest(given.encode(), key.encode())

    def _dialect(self, headers: Headers) -> Dialect:
        if self.config.dialect is not None:
            return self.config.dialect
        beta = headers.get("OpenAI-Beta", "").replace(" ", "").lower()
        return Dialect.BETA if "realtime=v1" in beta else Dialect.GA

    def totals(self) -> dict[str, Any]:
        """Sums over every session, plus handshake outcomes."""
        events: collections.Counter[str] = collections.Counter()
        out: dict[str, Any] = {"sessions": len(self.sessions), "handshakes": dict(self.handshakes)}
        counts: collections.Counter[str] = collections.Counter()
        for live in self.sessions:
            r = live.report
            events.update(r.events)
            counts["responses"] += r.responses
            counts["function_calls"] += r.function_calls
            counts["invalid"] += len(r.invalid)
            counts["truncates"] += len(r.truncates)
            counts["bad_truncates"] += sum(not t.ok for t in r.truncates)
            counts["client_cancels"] += sum(by == "client" for by, _ in r.cancels)
            counts["server_cancels"] += sum(by == "server" for by, _ in r.cancels)
            counts["mistakes"] += len(r.mistakes)
        out.update({k: counts[k] for k in (
            "responses", "function_calls", "invalid", "truncates", "bad_truncates",
            "client_cancels", "server_cancels", "mistakes")})
        out["events"] = dict(events)
        return out


def _json_response(
    protocol: ServerProtocol, status: http.HTTPStatus, message: str, code: str, kind: str
) -> Response:
    body = orjson.dumps({"error": {"message": message, "type": kind, "code": code,
                                   "param": None}}).decode()
    response = protocol.reject(status, body)
    del response.headers["Content-Type"]
    response.headers["Content-Type"] = "application/json"
    return response
