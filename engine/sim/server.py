"""The simulator's websockets server: handshake policy, faults, and one adapter per session.

:class:`Simulator` runs in any asyncio loop (the engine's own uvloop with ``--simulator``, or
standalone with ``voice-engine sim``). The protocol logic lives in
:class:`~engine.sim.session.SimSession`; :class:`LiveSession` only moves its events over the
connection, paces response audio, and injects faults (close, stall) on demand.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import http
import logging
import math
import secrets
import time
import urllib.parse
from typing import Any

import orjson
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from engine import logs
from engine.sim.config import Dialect, Fault, FaultKind, SimConfig, ValidationMode
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
from engine.upstream import CLIENT_REQUEST_ID

__all__ = ["LiveSession", "SimObserver", "Simulator"]

log = logging.getLogger("engine.sim")

_SESSION_FAULTS = (FaultKind.CLOSE, FaultKind.STALL)


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


class LiveSession:
    """One open connection: its :class:`SimSession`, its report and its fault switches."""

    def __init__(
        self, conn: ServerConnection, core: SimSession, config: SimConfig,
        observer: SimObserver | None = None,
    ) -> None:
        self.conn = conn
        self.core = core
        self.config = config
        self.observer = observer
        self.stalled = False
        self._unstalled = asyncio.Event()
        self._stream: asyncio.Task[None] | None = None
        self._timers: list[asyncio.TimerHandle] = []
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def report(self) -> SessionReport:
        """What this session saw so far."""
        return self.core.report

    @property
    def dialect(self) -> Dialect:
        return self.core.dialect

    async def close(self, code: int = 1011, reason: str = "simulated server error") -> None:
        """Closes the connection with ``code`` (a stalled one is dropped without a handshake)."""
        if self.stalled:
            self.abort()
            return
        await self.conn.close(code, reason)

    def stall(self) -> None:
        """Stops reading and sending, without closing: the peer sees silence."""
        if self.stalled:
            return
        self.stalled = True
        self.report.closed = "stalled"
        transport = self.conn.transport
        if not transport.is_closing():
            transport.pause_reading()
        logs.event(log, "sim_session_stalled", session=self.core.id)

    def abort(self) -> None:
        """Drops the TCP connection at once."""
        self.conn.transport.abort()

    def apply(self, fault: Fault) -> None:
        """Schedules a CLOSE or STALL fault ``fault.after_ms`` from now."""
        loop = asyncio.get_running_loop()
        if fault.kind is FaultKind.STALL:
            self._timers.append(loop.call_later(fault.after_ms / 1000, self.stall))
        elif fault.kind is FaultKind.CLOSE:
            self._timers.append(
                loop.call_later(fault.after_ms / 1000, self._spawn_close, fault.close_code)
            )

    def _spawn_close(self, code: int) -> None:
        task = asyncio.get_running_loop().create_task(self.close(code))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _gate(self) -> None:
        if self.stalled:
            await self._unstalled.wait()  # set only when the session is torn down

    async def _send(self, event: dict[str, Any] | bytes) -> None:
        await self._gate()
        if isinstance(event, bytes):
            data = event
        else:
            if self.observer is not None:
                self.observer.sent(self, event, time.monotonic())
            data = orjson.dumps(event)
        await self.conn.send(data, text=True)

    async def run(self) -> None:
        """Serves the connection until it closes."""
        try:
            for event in self.core.opening():
                await self._send(event)
            observer = self.observer
            async for message in self.conn:
                await self._gate()
                outs = self.core.receive(message)
                if observer is not None:
                    observer.received(self, time.monotonic())
                for out in outs:
                    await self._dispatch(out)
        except ConnectionClosed:
            pass
        finally:
            await self._teardown()

    async def _dispatch(self, out: Any) -> None:
        if isinstance(out, dict):
            await self._send(out)
        elif isinstance(out, StartResponse):
            # The head goes out from this task, so a cancel read later always follows it.
            for event in self.core.response_head(out.response):
                await self._send(event)
            self._stream = asyncio.get_running_loop().create_task(self._play(out.response))
        elif isinstance(out, StopResponse):
            response = self.core.active
            await self._stop_stream()
            if response is not None:
                for event in self.core.response_tail(response, out.reason):
                    await self._send(event)

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
            # Counted before the send: a cancel during the send must not under-count audio the
            # peer may already hold, or its valid truncate would look invalid.
            r.mark_sent(i)
            if self.observer is not None:
                self.observer.delta_sent(self, i, time.monotonic())
            await self._send(r.delta(i))
        self._stream = None
        for event in self.core.response_tail(r):
            await self._send(event)

    async def _stop_stream(self) -> None:
        task, self._stream = self._stream, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionClosed):
                await task

    async def _teardown(self) -> None:
        for timer in self._timers:
            timer.cancel()
        self._unstalled.set()
        with contextlib.suppress(ConnectionClosed):
            await self._stop_stream()
        for task in list(self._tasks):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionClosed):
                await task
        if self.report.closed is None:
            self.report.closed = str(self.conn.close_code)
        if self.observer is not None:
            self.observer.closed(self)
        logs.event(log, "sim_session_closed", session=self.core.id, closed=self.report.closed,
                   responses=self.report.responses, invalid=len(self.report.invalid),
                   mistakes=len(self.report.mistakes))


class Simulator:
    """A local OpenAI Realtime server for tests and benchmarks.

    ``await start()``, point a client at :attr:`url`, read :attr:`sessions` (in arrival order)
    for what each connection saw, ``await stop()`` at the end.
    """

    def __init__(
        self, config: SimConfig | None = None, observer: SimObserver | None = None
    ) -> None:
        self.config = config or SimConfig()
        self.observer = observer
        self.sessions: list[LiveSession] = []
        self.handshakes: collections.Counter[str] = collections.Counter()
        self._faults: collections.deque[Fault] = collections.deque()
        self._server: Server | None = None
        self._host = "127.0.0.1"
        self._port = 0
        self._validate = self.config.validation is not ValidationMode.OFF

    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        """The Realtime URL to give a client (without ``?model=``)."""
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"ws://{host}:{self._port}/v1/realtime"

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
            logs.event(log, "sim_validation_off", level=logging.WARNING,
                       reason="the openai package is not installed")
        if self._validate:
            dialects = [self.config.dialect] if self.config.dialect else list(Dialect)
            for d in dialects:
                shared_validator(d.value, "client")
        self._server = await serve(
            self._handler, host, port, process_request=self._process_request,
            compression=None, ping_interval=None, close_timeout=1.0, max_size=2**24,
        )
        sock = next(iter(self._server.sockets))
        self._host, self._port = host, sock.getsockname()[1]
        logs.event(log, "sim_listening", url=self.url,
                   dialect=self.config.dialect.value if self.config.dialect else "auto",
                   auth=self.config.api_key is not None, validation=self.config.validation.value
                   if self._validate else "off")
        return self._port

    async def stop(self) -> None:
        """Closes the listener and every connection; returns when all handlers are done."""
        server, self._server = self._server, None
        if server is None:
            return
        for live in self.sessions:
            if live.stalled:
                live.abort()
        server.close(close_connections=True)
        await server.wait_closed()
        logs.event(log, "sim_stopped", **self.totals())

    def _next_faults(self) -> list[Fault]:
        faults = list(self.config.faults)
        if self._faults:
            faults.append(self._faults.popleft())
        return faults

    def _process_request(self, conn: ServerConnection, request: Request) -> Response | None:
        faults = self._next_faults()
        kinds = {f.kind: f for f in faults}
        if FaultKind.REFUSE in kinds:
            self.handshakes["refused"] += 1
            conn.transport.abort()
            return conn.respond(http.HTTPStatus.SERVICE_UNAVAILABLE, "refused\n")
        if FaultKind.RATE_LIMITED in kinds:
            self.handshakes["429"] += 1
            response = _json_response(conn, http.HTTPStatus.TOO_MANY_REQUESTS,
                                      "Rate limit reached (simulated).", "rate_limit_exceeded",
                                      "requests")
            response.headers["Retry-After"] = f"{kinds[FaultKind.RATE_LIMITED].retry_after:g}"
            return response
        if FaultKind.UNAUTHORIZED in kinds or not self._authorized(request.headers):
            self.handshakes["401"] += 1
            logs.event(log, "sim_unauthorized", path=urllib.parse.urlsplit(request.path).path)
            return _json_response(conn, http.HTTPStatus.UNAUTHORIZED,
                                  "Incorrect API key provided.", "invalid_api_key",
                                  "invalid_request_error")
        self.handshakes["accepted"] += 1
        conn.sim_faults = [f for f in faults if f.kind in _SESSION_FAULTS]  # type: ignore[attr-defined]
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

    async def _handler(self, conn: ServerConnection) -> None:
        request = conn.request
        assert request is not None
        split = urllib.parse.urlsplit(request.path)
        model = urllib.parse.parse_qs(split.query).get("model", [None])[0]
        dialect = self._dialect(request.headers)
        validator = shared_validator(dialect.value, "client") if self._validate else None
        sample = self.config.sample_every if self.config.validation is ValidationMode.SAMPLE else 1
        core = SimSession(self.config, dialect, model, split.path, validator, sample)
        core.report.client_request_id = request.headers.get(CLIENT_REQUEST_ID)
        live = LiveSession(conn, core, self.config, self.observer)
        self.sessions.append(live)
        if self.observer is not None:
            self.observer.opened(live)
        logs.event(log, "sim_session_opened", session=core.id, dialect=dialect.value,
                   model=model, path=split.path)
        for fault in getattr(conn, "sim_faults", ()):
            live.apply(fault)
        await live.run()

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
    conn: ServerConnection, status: http.HTTPStatus, message: str, code: str, kind: str
) -> Response:
    body = orjson.dumps({"error": {"message": message, "type": kind, "code": code,
                                   "param": None}}).decode()
    response = conn.respond(status, body)
    del response.headers["Content-Type"]
    response.headers["Content-Type"] = "application/json"
    return response
