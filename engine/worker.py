"""A worker: one uvloop event loop serving AudioSocket calls, each bridged to the Realtime API.

The adapters here are thin: :class:`CallConnection` feeds a caller's bytes and its upstream's
messages into the call's pure state machine (:class:`engine.call.Call`), writes what it returns
and carries out its actions; the worker's one :class:`engine.clock.Clock` ticks every call
that has media. Nothing here runs per message but a method call or two and a write.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import os
import resource
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, cast

from engine import fdlimit, heap, logs, upstream
from engine.agent.agentfile import AgentFile, default_agent
from engine.agent.callagent import CallAgent
from engine.agent.runner import ToolRunner
from engine.call import (
    REFUSALS,
    Call,
    CallSettings,
    ConnectUpstream,
    DtmfPressed,
    EndCall,
    EndReason,
    Handover,
    Rephase,
    RunTool,
    StartGoodbye,
    StartPacing,
)
from engine.clock import READ_EOF, READ_EVENTS, READ_FAILED, Clock, Outlet
from engine.config import Config
from engine.errors import (
    ProxyProtocolError,
    SourceNotAllowed,
    UntrustedProxyHeader,
    UpstreamError,
)
from engine.handover import HANDOVER_GRACE_S, handover_after
from engine.metrics import METRICS
from engine.node.admission import NODE_FULL, SOURCE_CAP, SOURCE_TABLE_FULL, SourcePolicy
from engine.node.proxy import ProxyParser, looks_like_proxy
from engine.records.record import CallRecord
from engine.records.recording import RecordingWriter
from engine.records.usage import prices_for
from engine.records.writer import RecordWriter

__all__ = ["LINGER_S", "CallConnection", "Counts", "LocalCounts", "Worker", "WorkerLimits"]

LINGER_S = 2.0
CALLER_SNDBUF = 32 * 1024  # the kernel doubles it: about 1.4 s of 24 kHz audio
FD_LOG_S = 10.0
TRIM_SLOW_S = 0.005  # a trim longer than this delays frames: said in the log
RECORDING_TAKE_S = 0.5
HANDOVER_POLL_S = 0.1
LAG_PROBE_S = 0.1
LAG_HOLD_S = 2.0
# Every this many lag probes the loop's tasks are counted: all_tasks() costs about 1 us per
# task, so once a second keeps even a loop with a thousand tasks (a leak) to 1 ms a second.
TASKS_EVERY = 10
HANDOVER_RETRY_S = 2.0
SUMMARY_WAIT_S = 10.0

log = logging.getLogger("engine.worker")


_REFUSAL_FOR = {
    NODE_FULL: EndReason.OVER_CAPACITY,
    SOURCE_CAP: EndReason.SOURCE_CAP,
    SOURCE_TABLE_FULL: EndReason.OVER_CAPACITY,
}


class Counts(Protocol):
    """Admission counts: :class:`engine.node.admission.NodeCounts` under the node."""

    def admit(self, source: str, max_calls: int, max_per_source: int) -> str | None: ...

    def release(self, source: str) -> None: ...


class LocalCounts:
    """The counts of a worker that runs alone (tests, embedding): its own calls only, by the
    same rules as :meth:`engine.node.admission.NodeCounts.admit`."""

    def __init__(self) -> None:
        self.calls = 0
        self.by_source: dict[str, int] = {}

    def admit(self, source: str, max_calls: int, max_per_source: int) -> str | None:
        if self.calls >= max_calls:
            return NODE_FULL
        held = self.by_source.get(source, 0)
        if max_per_source and held >= max_per_source:
            return SOURCE_CAP
        self.calls += 1
        self.by_source[source] = held + 1
        return None

    def release(self, source: str) -> None:
        self.calls -= 1
        held = self.by_source.pop(source) - 1
        if held:
            self.by_source[source] = held


@dataclass(frozen=True, slots=True)
class WorkerLimits:
    """Per-call deadlines and bounds (seconds and bytes)."""

    handshake_timeout: float = 2.0
    caller_silence: float = 60.0  # seconds; 0 never ends a call for it
    max_call_seconds: float = 600.0
    wrapup_seconds: float = 20.0
    max_calls: int = 1000
    max_calls_per_source: int = 0
    caller_send_buffer: int = 64 * 1024
    upstream_send_buffer: int = 256 * 1024
    connect_deadline: float = 8.0
    open_timeout: float = 5.0
    ping_interval: float = 10.0
    ping_timeout: float = 10.0
    max_loop_lag: float = 0.25  # seconds; 0 never refuses for lag
    handover_s: float = 0.0  # 0: by the dialect's session limit (engine.handover)
    handover_grace_s: float = HANDOVER_GRACE_S

    @classmethod
    def from_config(cls, config: Config) -> WorkerLimits:
        return cls(
            handshake_timeout=config.handshake_timeout_ms / 1000,
            caller_silence=float(config.caller_silence_seconds),
            max_call_seconds=float(config.max_call_seconds),
            max_calls=config.max_concurrent_calls,
            max_calls_per_source=config.max_calls_per_source,
            handover_s=float(config.session_handover_seconds),
            max_loop_lag=config.max_loop_lag_ms / 1000,
        )


class _Leg:
    """The listener of one upstream connection: it speaks for the call only while it is the
    call's current session (a handover leaves the old one to close on its own)."""

    __slots__ = ("conn",)

    def __init__(self, conn: CallConnection) -> None:
        self.conn = conn

    def upstream_message(self, data: bytes | str) -> None:
        if self.conn._leg is self:
            self.conn.upstream_message(data)

    def upstream_closed(self, error: UpstreamError | None) -> None:
        if self.conn._leg is self:
            self.conn.upstream_closed(error)


class CallConnection(asyncio.Protocol):
    """The adapter of one AudioSocket connection and its Realtime upstream."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self.agent = CallAgent(worker.agents, worker.settings)
        self.call: Call = Call(worker.settings, choose=self.agent.choose,
                               framer=upstream.frame_builder())
        self.transport: asyncio.Transport | None = None
        self.upstream: upstream.UpstreamConnection | None = None
        self._connect_task: asyncio.Task[None] | None = None
        self._timers: list[asyncio.TimerHandle] = []
        self._started = 0.0
        self._outlet: Any = None
        self._fd = -1
        self._proxy: ProxyParser | None = None
        self._first = True
        self._host = ""
        self._source: str | None = None
        self._wall_started = 0.0
        self._answered: float | None = None
        self._late_at_answer = 0
        self._recording: Path | None = None
        self._leg: _Leg | None = None
        self._handover_task: asyncio.Task[None] | None = None
        self._handover_poll: asyncio.TimerHandle | None = None
        self._summary_asked: float | None = None
        self._session_opened = 0.0
        self._reads = 0  # the transport's deliveries (the clock's reads count as frames)
        self._heard = (0, 0.0)  # (reads + caller frames, when that last changed)

    # -- caller transport ----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.transport = transport
        worker = self.worker
        transport.set_write_buffer_limits(high=worker.limits.caller_send_buffer)
        self._started = time.monotonic()
        self._wall_started = time.time()
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            # A fixed kernel send buffer: a caller that stops reading is found within seconds,
            # and holds at most this much kernel memory, not the megabytes autotuning allows.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, CALLER_SNDBUF)
        if sock is not None and worker.direct_writes:
            self._fd = sock.fileno()
        local = transport.get_extra_info("sockname")
        self.agent.port = int(local[1]) if local else 0
        peer = transport.get_extra_info("peername")
        host = self._host = str(peer[0]) if peer else ""
        self.call.peer = f"{peer[0]}:{peer[1]}" if peer else "?"
        crowded = worker.crowded
        worker.connections.add(self)
        self.call.recording = worker.recorder is not None
        METRICS.active_calls.inc()
        self._later(worker.limits.handshake_timeout, self.call.handshake_timeout)
        policy = worker.policy
        if crowded:
            worker.fd_limit_reached()
            self.call.refuse(EndReason.FD_LIMIT)
        elif not host:
            self.call.reject(EndReason.NOT_ALLOWED, SourceNotAllowed(host))
        elif policy is not None and policy.is_trusted_proxy(host):
            self._proxy = ProxyParser()
        else:
            self._admit(host)
        self._act()

    def data_received(self, data: bytes) -> None:
        self._reads += 1
        if self._proxy is not None:
            data = self._proxy_data(data)
            if not data:
                return
        elif self._first and self.worker.policy is not None:
            self._first = False
            if looks_like_proxy(data):
                self.call.reject(EndReason.PROTOCOL_VIOLATION, UntrustedProxyHeader(self.call.peer))
                self._act()
                return
        if self.call.receive_data(data):
            self._act()

    def _proxy_data(self, data: bytes) -> bytes:
        """Feeds the PROXY v2 parser; once its header is complete, admits the real source and
        returns the bytes that followed it (the AudioSocket stream)."""
        parser = self._proxy
        assert parser is not None
        try:
            parser.receive_data(data)
        except ProxyProtocolError as exc:
            self._proxy = None
            self.call.reject(EndReason.PROTOCOL_VIOLATION, exc)
            self._act()
            return b""
        if not parser.done:
            return b""
        self._proxy = None
        header = parser.header
        assert header is not None
        self._first = False
        if header.source is not None:
            self.call.peer = f"{header.source[0]}:{header.source[1]}"
            self._admit(header.source[0])
        else:
            # LOCAL is the proxy's own check; an address-less PROXY is judged as the proxy.
            self._admit(self._host, allowlist=header.command != "local")
        if self.call.end_reason is not None:
            self._act()
            return b""
        return parser.remainder

    def _admit(self, host: str, *, allowlist: bool = True) -> None:
        """The allowlist, then the node's limits: a refusal is a clean hangup."""
        worker = self.worker
        call = self.call
        if allowlist and worker.policy is not None and not worker.policy.allows(host):
            call.reject(EndReason.NOT_ALLOWED, SourceNotAllowed(host))
            return
        if worker.draining:
            call.refuse(EndReason.DRAINING)
            return
        if worker.lagging:
            call.refuse(EndReason.OVERLOADED)
            return
        limits = worker.limits
        cause = worker.counts.admit(host, limits.max_calls, limits.max_calls_per_source)
        if cause is not None:
            call.refuse(_REFUSAL_FOR[cause])
            return
        self._source = host

    def eof_received(self) -> bool:
        self.call.receive_eof()
        self._act()
        self._unlinger()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.call.connection_lost()
        self._act()
        self._unlinger()

    def _unlinger(self) -> None:
        """The caller closed its side: a half-closed socket need not wait any longer."""
        if self.transport is not None:
            timer = self.worker.lingering.pop(self.transport, None)
            if timer is not None:
                timer.cancel()

    def check_heard(self, now: float, limit: float) -> None:
        """Ends the call if the caller has sent nothing for ``limit`` seconds."""
        heard = self._reads + self.call.caller_frames
        if heard != self._heard[0] or not self._heard[1]:
            self._heard = (heard, now)
        elif now - self._heard[1] >= limit and self.call.end_reason is None:
            self.call.caller_silent()
            self._act()

    def pause_writing(self) -> None:
        """The caller has not read ``caller_send_buffer`` bytes: it is stalled; end the call."""
        self.call.caller_stalled()
        self._act()

    def clock_attention(self) -> None:
        """The clock: its read of this caller left events, met the end of the stream or
        failed, or this call's watched playout has played out (its goodbye is heard)."""
        call = self.call
        outlet = self._outlet
        status = outlet.take_status() if outlet is not None else 0
        if outlet is not None and outlet.error is not None:
            call.failed(outlet.error)
        if status & READ_EVENTS:
            call.caller_parsed()
        if status & READ_EOF:
            call.receive_eof()
        elif status & READ_FAILED:
            call.connection_lost()
        call.check_played_out()
        self._act()

    @property
    def ended(self) -> bool:
        """The call is over (tools drop what they would have said)."""
        return self.call.end_reason is not None

    def act(self) -> None:
        """Carries out what the call decided (for tools that change it from a task)."""
        self._act()

    # -- upstream listener -----------------------------------------------------------------

    def upstream_message(self, data: bytes | str) -> None:
        call = self.call
        call.upstream_message(data)
        # A goodbye can become pending with nothing to do yet; the clock must then watch it
        # (a clock that reads the caller calls back only when it has something to say).
        if call.wants_attention or call.goodbye_pending:
            self._act()

    def upstream_closed(self, error: UpstreamError | None) -> None:
        self.upstream = None
        if self._outlet is not None:
            self._outlet.upstream_send = None
        if error is not None:
            self.call.upstream_failed(error)
            self._act()

    def _open_upstream(self, leg: _Leg) -> Any:
        """Connects a Realtime session for this call (a coroutine), ``leg`` its listener."""
        worker = self.worker
        limits = worker.limits
        endpoint = worker.endpoint
        if self.call.uuid is not None:
            endpoint = endpoint.for_call(str(self.call.uuid))
        return upstream.connect(
            endpoint, leg, open_timeout=limits.open_timeout, deadline=limits.connect_deadline,
            max_send_buffer=limits.upstream_send_buffer, ping_interval=limits.ping_interval,
            ping_timeout=limits.ping_timeout,
        )

    async def _connect(self) -> None:
        worker = self.worker
        try:
            leg = self._leg = _Leg(self)
            details = asyncio.ensure_future(self.agent.fill(worker.manager, self.call.uuid))
            try:
                conn = await self._open_upstream(leg)
            finally:
                try:
                    filled = await details
                except Exception:
                    log.exception("caller_details_failed")
                    filled = None
            if filled is not None:
                self.call.settings = filled
        except UpstreamError as exc:
            METRICS.upstream_connects.labels(outcome=type(exc).__name__).inc()
            self.call.upstream_failed(exc)
            self._act()
            return
        METRICS.upstream_connects.labels(outcome="ok").inc()
        if self.call.end_reason is not None:
            conn.close()
            return
        self.upstream = conn
        self.call.upstream_opened()
        self._act()
        if self._outlet is not None and self._outlet.reading:
            self._outlet.upstream_send = conn.send_frames
        self._session_started()

    # -- long calls: handing over to a fresh session ---------------------------------------

    def _session_started(self) -> None:
        """A session is up: arm its handover, ``handover_s`` from now, then at most
        ``handover_grace_s`` more waiting for a pause."""
        limits = self.worker.limits
        self._session_opened = time.monotonic()
        after = handover_after(self.call.settings.dialect.value, limits.handover_s)
        self._later(after, self._handover_due)

    def _handover_due(self) -> None:
        call = self.call
        call.handover_due()
        if call.handing_over:
            limits = self.worker.limits
            self._later(limits.handover_grace_s, lambda: call.try_handover(force=True))
            self._poll_handover()

    def _poll_handover(self) -> None:
        """While a handover waits for a pause, the call is asked again every tenth of a
        second (a pause is a state, not an event)."""
        call = self.call
        self._handover_poll = None
        if call.end_reason is not None or not call.handing_over:
            return
        if call.summarising:
            now = time.monotonic()
            if self._summary_asked is None:
                self._summary_asked = now
            elif now - self._summary_asked > SUMMARY_WAIT_S:
                call.summary_timed_out()
        else:
            self._summary_asked = None
        started = call.try_handover()
        if started or call.wants_attention:
            self._act()  # the handover, or the summary request it sent first
        if not started:
            self._handover_poll = asyncio.get_running_loop().call_later(
                HANDOVER_POLL_S, self._poll_handover)

    async def _hand_over(self) -> None:
        call = self.call
        started = time.monotonic()
        leg = _Leg(self)
        try:
            conn = await self._open_upstream(leg)
        except UpstreamError as exc:
            METRICS.upstream_connects.labels(outcome=type(exc).__name__).inc()
            logs.event(log, "upstream_handover_failed", logging.WARNING, call=str(call.uuid),
                       error=str(exc), error_class=type(exc).__name__)
            call.handover_failed()
            self._handover_poll = asyncio.get_running_loop().call_later(
                HANDOVER_RETRY_S, self._poll_handover)
            return
        METRICS.upstream_connects.labels(outcome="ok").inc()
        if call.end_reason is not None:
            conn.close()
            return
        old, self.upstream, self._leg = self.upstream, conn, leg
        if self._outlet is not None and self._outlet.reading:
            self._outlet.upstream_send = conn.send_frames
        session_s = time.monotonic() - self._session_opened
        call.handover_opened()
        self._act()
        if old is not None:
            old.close()
        logs.event(log, "upstream_handover", call=str(call.uuid),
                   session=call.stats.upstream_sessions, after_s=round(session_s, 3),
                   opened_ms=round(1000 * (time.monotonic() - started)))
        self._session_started()

    # -- actions ---------------------------------------------------------------------------

    def _act(self) -> None:
        call = self.call
        if call.to_upstream:
            conn = self.upstream
            if conn is not None:
                for message in call.to_upstream:
                    conn.send(message)
            call.to_upstream.clear()
        frames = call.upstream_frames
        if frames:
            conn = self.upstream
            if conn is not None:
                conn.send_frames(frames)
            frames.clear()
        for action in call.actions():
            if type(action) is Rephase:
                if self._outlet is not None:
                    self.worker.clock.rephase(self._outlet)
            elif type(action) is StartPacing:
                self._answered = time.time()
                self._late_at_answer = self.worker.clock.pacer.late_wakeups
                if self.transport is not None and call.playout is not None:
                    self._start_outlet(self.transport, call)
                seconds = self.agent.max_call_seconds or self.worker.limits.max_call_seconds
                self._later(seconds, self._max_duration)
            elif type(action) is ConnectUpstream:
                self._connect_task = asyncio.get_running_loop().create_task(self._connect())
            elif type(action) is Handover:
                self._handover_task = asyncio.get_running_loop().create_task(self._hand_over())
            elif type(action) is RunTool:
                self.agent.run_tool(self, self.worker.runner, action)
            elif type(action) is DtmfPressed:
                self.agent.dtmf(self, self.worker.runner, action.digit)
            elif type(action) is StartGoodbye:
                self._later(self.worker.limits.wrapup_seconds, self.call.wrapup_expired)
            elif type(action) is EndCall:
                self._end(action)
        if self._outlet is not None and call.goodbye_pending:
            self._outlet.watch = True

    def _start_outlet(self, transport: asyncio.Transport, call: Call) -> None:
        """The call's media flows: its frames go out on the clock, which also reads the
        caller (when the worker's clock reads) with the transport's own reading paused."""
        outlet = self._outlet = Outlet(self, call.playout, transport, self._fd)
        recorder = self.worker.recorder
        if recorder is not None and call.uuid is not None and call.rate is not None:
            outlet.tap = bytearray()
            self._recording = recorder.path_for(str(call.uuid), _utc(self._wall_started),
                                                id(self))
            recorder.open(str(id(self)), self._recording, call.rate)
            self.worker.recording.add(self)
        if self.worker.clock_reads and self._fd >= 0:
            outlet.read_with(call.parser, call.upstream_frames)
            if self.upstream is not None:
                outlet.upstream_send = self.upstream.send_frames
            transport.pause_reading()
        self.worker.clock.add(outlet)

    def take_recording(self) -> None:
        """Hands the audio both taps hold to the recorder."""
        outlet = self._outlet
        recorder = self.worker.recorder
        if outlet is None or outlet.tap is None or recorder is None:
            return
        played, outlet.tap = outlet.tap, bytearray()
        recorder.audio(str(id(self)), self.call.take_caller_audio(), played)

    def _max_duration(self) -> None:
        self.call.max_duration_reached()
        self._later(self.worker.limits.wrapup_seconds, self.call.wrapup_expired)
        self._act()

    def _later(self, delay: float, what: Any) -> None:
        if self.call.end_reason is not None:
            return  # an ended call arms nothing (a timer would keep it alive until it fired)

        def fire() -> None:
            what()
            self._act()

        self._timers.append(asyncio.get_running_loop().call_later(delay, fire))

    def _end(self, action: EndCall) -> None:
        worker = self.worker
        outlet = self._outlet
        if self in worker.recording:
            self.take_recording()
            worker.recording.discard(self)
            if worker.recorder is not None:
                worker.recorder.close(str(id(self)))
        if outlet is not None:
            worker.clock.remove(outlet)
            outlet.upstream_send = None
            outlet.tap = None
            if outlet.reading:
                outlet.read_with(None, None)
                if self.transport is not None and not self.transport.is_closing():
                    # The rest the caller sends (lingering) is read and dropped as before.
                    self.transport.resume_reading()
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()
        if self._handover_poll is not None:
            self._handover_poll.cancel()
            self._handover_poll = None
        for task in (self._connect_task, self._handover_task):
            if task is not None and not task.done():
                task.cancel()
        worker.runner.cancel(self)
        self.agent.close()
        if self.upstream is not None:
            self.upstream.close()
            self.upstream = None
        transport = self.transport
        if transport is not None and not transport.is_closing():
            if action.hangup and worker.crowded:
                # Short of descriptors, nothing lingers: what the caller sent so far is read
                # first, so that the close is a FIN and not a reset overtaking the hangup.
                _drain(transport)
                transport.write(action.hangup)
                transport.close()
            elif action.hangup and transport.can_write_eof():
                # Half-close and let the caller close: closing with its bytes unread would
                # send a reset, which can reach Asterisk before the hangup it must read.
                transport.write(action.hangup)
                transport.write_eof()
                worker.linger(transport)
            elif action.reason is EndReason.CALLER_STALLED:
                # It does not read: a close would wait for the buffer to drain, for ever.
                transport.abort()
            else:
                transport.write(action.hangup)
                transport.close()
        worker.connections.discard(self)
        if self._source is not None:
            worker.counts.release(self._source)
            self._source = None
        METRICS.active_calls.dec()
        worker.call_ended(self, action)
        # The outlet and the upstream listener point back at this connection, and a task
        # holds it from its frame: let go of them, so that the call is freed when its
        # transport lets go of it, not by a cyclic collection minutes later.
        self._outlet = self._leg = self._connect_task = self._handover_task = None
        _drop_tracebacks(action.error)


def _drop_tracebacks(error: BaseException | None) -> None:
    """An error kept by the ended call holds, through its traceback (and its causes'), the
    frames that raised it and their locals, this connection among them: a cycle."""
    seen: set[int] = set()
    todo = [error]
    while todo:
        e = todo.pop()
        if not isinstance(e, BaseException) or id(e) in seen:
            continue
        seen.add(id(e))
        e.__traceback__ = None
        todo += (e.__cause__, e.__context__, getattr(e, "cause", None))


def _drain(transport: asyncio.Transport, limit: int = 1 << 16) -> None:
    """Reads and drops what is waiting in the socket's receive buffer (at most ``limit``)."""
    sock = transport.get_extra_info("socket")
    if sock is None:
        return
    with contextlib.suppress(OSError):
        fd = sock.fileno()
        while limit > 0:
            data = os.read(fd, min(limit, 1 << 14))
            if not data:
                return
            limit -= len(data)


def _utc(moment: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(moment, dt.UTC)


@dataclass(slots=True)
class _Totals:
    ended: dict[str, int] = field(default_factory=dict)


class Worker:
    """Serves AudioSocket calls on one event loop.

    Args:
        config: the checked configuration.
        endpoint: where and how to reach the Realtime API.
        settings: per-call settings (derived from ``config`` when None).
        limits: deadlines and bounds (derived from ``config`` when None).
        counts: the node's call counts, shared with the other workers; None counts this
            worker's calls alone.
        agents: the agent file (the default agent when None).
        manager: the Asterisk manager client, for transfers and caller details.
        records: where each call's record goes (None: nowhere).
        recorder: writes each call's two-track recording (None: calls are not recorded).
    """

    def __init__(
        self,
        config: Config,
        endpoint: upstream.Endpoint,
        settings: CallSettings | None = None,
        limits: WorkerLimits | None = None,
        counts: Counts | None = None,
        agents: AgentFile | None = None,
        manager: Any = None,
        records: RecordWriter | None = None,
        recorder: RecordingWriter | None = None,
    ) -> None:
        self.config = config
        self.records = records
        self.recorder = recorder
        self.recording: set[CallConnection] = set()
        self._recording_task: asyncio.Task[None] | None = None
        self._lag_task: asyncio.Task[None] | None = None
        self._silence_task: asyncio.Task[None] | None = None
        self.loop_lag = 0.0
        self._lagging_until = 0.0
        self.node = socket.gethostname()
        self.agents = agents if agents is not None else default_agent(config)
        self.manager = manager
        self.runner = ToolRunner(manager=manager)
        self.endpoint = endpoint
        self.settings = settings or CallSettings.from_config(config)
        self.limits = limits or WorkerLimits.from_config(config)
        self.counts: Counts = counts if counts is not None else LocalCounts()
        self.policy: SourcePolicy | None = None
        if config.allow_sources or config.trusted_proxies:
            self.policy = SourcePolicy(config.allow_sources, config.trusted_proxies)
        self.connections: set[CallConnection] = set()
        self.draining = False
        # The clock writes a frame straight to the caller's socket when its transport holds
        # nothing (the bytes stay in order); False sends every frame through the transport.
        self.direct_writes = True
        # Once a call's media flows, the clock reads its caller every this many ticks (with
        # direct writes only); 0 leaves reading to the transport, once per arriving frame.
        self.clock_reads = config.clock_read_ticks
        self.clock: Clock = None  # type: ignore[assignment]
        self.totals = _Totals()
        self._servers: list[asyncio.Server] = []
        self.lingering: dict[asyncio.Transport, asyncio.TimerHandle] = {}
        self._idle: asyncio.Event | None = None
        self._clock_seen = (0, 0)
        self.max_connections = 1 << 30  # set from the descriptor limit by start()
        self._fd_logged = -FD_LOG_S
        self._fd_refused = 0

    async def start(self, host: str | None = None, port: int | None = None) -> int:
        """Binds the AudioSocket listener (and one per agent profile's port) and starts the
        clock; returns the main listener's port."""
        loop = asyncio.get_running_loop()
        self.clock = Clock(loop, on_stats=self._clock_stats,
                           read_every=max(1, self.clock_reads))
        self.clock.start()
        if self.recorder is not None:
            self._recording_task = loop.create_task(self._take_recordings())
        self._lag_task = loop.create_task(self._probe_lag())
        self._silence_task = (loop.create_task(self._watch_silence())
                              if self.limits.caller_silence > 0 else None)
        self._idle = asyncio.Event()
        host = self.config.listen_host if host is None else host
        ports = [self.config.listen_port if port is None else port, *self.agents.listen_ports]
        for each in ports:
            server = await loop.create_server(
                lambda: CallConnection(self), host, each, reuse_port=True, backlog=1024)
            self._servers.append(server)
            bound: int = server.sockets[0].getsockname()[1]
            logs.event(log, "listening", host=host, port=bound,
                       profile=self.agents.profile_for_port(bound).name,
                       dialect=self.settings.dialect.value,
                       upstream_format=self.settings.upstream_format)
        self._fd_budget()
        first: int = self._servers[0].sockets[0].getsockname()[1]
        return first

    def _fd_budget(self) -> None:
        """How many connections the descriptor limit leaves room for; a limit too low for
        MAX_CONCURRENT_CALLS is said at start, not found out at the busiest hour."""
        per_call = fdlimit.FDS_PER_CALL + (1 if self.recorder is not None else 0)
        self.max_connections = fdlimit.connection_budget(per_call)
        nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        if self.max_connections < self.limits.max_calls:
            logs.event(log, "fd_limit_low", logging.WARNING, nofile=nofile,
                       max_connections=self.max_connections,
                       max_concurrent_calls=self.limits.max_calls,
                       hint="raise LimitNOFILE (or ulimit -n): each call needs "
                            f"{per_call} descriptors")

    async def stop(self, grace: float = 0.0) -> None:
        """Stops accepting, lets calls run up to ``grace`` seconds, then hangs up the rest."""
        self.draining = True
        if grace > 0:
            await self.wait_idle(grace)
        for conn in list(self.connections):
            conn.call.shutdown()
            conn._act()
        for server in self._servers:
            server.close()
            await server.wait_closed()
        self._servers.clear()
        for transport, timer in list(self.lingering.items()):
            timer.cancel()
            transport.close()
        self.lingering.clear()
        if self.clock is not None:
            self.clock.stop()
        for task in (self._recording_task, self._lag_task, self._silence_task):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        self._recording_task = self._lag_task = self._silence_task = None
        await self.runner.close()
        await asyncio.sleep(0)

    @property
    def lagging(self) -> bool:
        """The loop ran a probe later than ``max_loop_lag`` within the last ``LAG_HOLD_S``:
        new calls are refused (the calls it has need the loop more)."""
        return time.monotonic() < self._lagging_until

    async def _probe_lag(self) -> None:
        """Every ``LAG_PROBE_S``, how late the loop ran a timer: a gauge, and admission; every
        ``TASKS_EVERY`` probes, the loop's unfinished tasks: a gauge (a soak reads it to tell a
        task that outlives its call); every ``heap.TRIM_S``, freed heap back to the kernel."""
        loop = asyncio.get_running_loop()
        limit = self.limits.max_loop_lag
        probes = 0
        trim_every = round(heap.TRIM_S / LAG_PROBE_S)
        while True:
            if probes % TASKS_EVERY == 0:
                METRICS.loop_tasks.set(len(asyncio.all_tasks(loop)))
            if probes % trim_every == trim_every - 1:
                took = heap.trim()
                if took is not None and took > TRIM_SLOW_S:
                    logs.event(log, "heap_trim_slow", logging.WARNING,
                               ms=round(took * 1000, 2), calls=len(self.connections))
            probes += 1
            expected = loop.time() + LAG_PROBE_S
            await asyncio.sleep(LAG_PROBE_S)
            lag = max(0.0, loop.time() - expected)
            self.loop_lag = lag
            METRICS.loop_lag.set(lag)
            if limit > 0 and lag > limit:
                if not self.lagging:
                    logs.event(log, "worker_loop_lagging", logging.WARNING,
                               lag_ms=round(lag * 1000, 1), limit_ms=round(limit * 1000),
                               calls=len(self.connections))
                self._lagging_until = time.monotonic() + LAG_HOLD_S

    async def _watch_silence(self) -> None:
        """Several times per silence limit, every call is asked whether its caller still
        sends (a call at a time; nothing per frame)."""
        limit = self.limits.caller_silence
        every = min(1.0, limit / 4)
        while True:
            await asyncio.sleep(every)
            self._check_heard(time.monotonic(), limit)

    def _check_heard(self, now: float, limit: float) -> None:
        # A loop of its own: the watch's frame would keep its last call alive for a second.
        for conn in list(self.connections):
            conn.check_heard(now, limit)

    async def _take_recordings(self) -> None:
        """Every ``RECORDING_TAKE_S``, the recording calls' audio goes to the recorder."""
        while True:
            await asyncio.sleep(RECORDING_TAKE_S)
            self._take_recordings_now()

    def _take_recordings_now(self) -> None:
        for conn in list(self.recording):  # here, not in the task's frame (see _check_heard)
            conn.take_recording()

    def linger(self, transport: asyncio.Transport) -> None:
        """Keeps a hung-up caller's socket half-open until the caller closes it, at most
        ``LINGER_S`` (its bytes meanwhile are read and dropped)."""
        self.lingering[transport] = asyncio.get_running_loop().call_later(
            LINGER_S, self._unlinger, transport)

    @property
    def crowded(self) -> bool:
        """The connections held (lingering ones too) have used the descriptors this worker
        may spend on them: new callers are refused while the reserve is still free."""
        return len(self.connections) + len(self.lingering) >= self.max_connections

    def fd_limit_reached(self) -> None:
        """Logs, at most every ``FD_LOG_S``, that callers are refused for descriptors."""
        now = time.monotonic()
        self._fd_refused += 1
        if now - self._fd_logged >= FD_LOG_S:
            logs.event(log, "fd_limit_reached", logging.WARNING,
                       max_connections=self.max_connections, connections=len(self.connections),
                       lingering=len(self.lingering), refused=self._fd_refused,
                       nofile=resource.getrlimit(resource.RLIMIT_NOFILE)[0])
            self._fd_logged = now
            self._fd_refused = 0

    def _unlinger(self, transport: asyncio.Transport) -> None:
        self.lingering.pop(transport, None)
        transport.close()

    def _clock_stats(self, pacer: Any) -> None:
        """Once per tick: the clock's counters into the metrics, as increments."""
        late, resyncs = pacer.late_wakeups, pacer.resyncs
        seen_late, seen_resyncs = self._clock_seen
        if late != seen_late or resyncs != seen_resyncs:
            METRICS.clock_late_wakeups.inc(late - seen_late)
            METRICS.clock_resyncs.inc(resyncs - seen_resyncs)
            self._clock_seen = (late, resyncs)

    async def wait_idle(self, timeout: float) -> bool:
        """Waits until no call is left, up to ``timeout`` seconds; True if none is left."""
        if self.connections and self._idle is not None:
            self._idle.clear()
            try:
                await asyncio.wait_for(self._idle.wait(), timeout)
            except TimeoutError:
                return False
        return not self.connections

    def _record(self, conn: CallConnection, action: EndCall) -> CallRecord:
        """The call's record, as it ended."""
        call, agent, stats = conn.call, conn.agent, conn.call.stats
        usage = stats.usage
        ended = time.time()
        fields = agent.fields
        outlet = conn._outlet
        late = (self.clock.pacer.late_wakeups - conn._late_at_answer
                if conn._answered is not None and self.clock is not None else 0)
        model = self.config.openai_model
        return CallRecord(
            uuid=str(call.uuid), node=self.node, peer=call.peer, listen_port=agent.port,
            profile=agent.agent.profile if agent.agent is not None else "",
            variant=agent.variant, caller_id=fields.get("caller_id") or None,
            caller_name=fields.get("caller_name") or None, dialled=fields.get("dialled") or None,
            started_at=_utc(conn._wall_started),
            answered_at=_utc(conn._answered) if conn._answered is not None else None,
            ended_at=_utc(ended), duration_s=round(ended - conn._wall_started, 3),
            end_reason=action.reason.value,
            error_class=type(action.error).__name__ if action.error is not None else None,
            error=str(action.error) if action.error is not None else None,
            model=model, dialect=call.settings.dialect.value,
            upstream_format=call.settings.upstream_format, rate=call.rate,
            upstream_sessions=stats.upstream_sessions,
            caller_frames=stats.caller_frames,
            frames_out=outlet.frames if outlet is not None else 0,
            underruns=call.playout.underruns if call.playout is not None else 0,
            rephases=stats.rephases, clock_late_wakeups=late, bargeins=stats.bargeins,
            truncates=stats.truncates, dtmf="".join(stats.dtmf), responses=usage.responses,
            input_text_tokens=usage.input_text, input_audio_tokens=usage.input_audio,
            cached_text_tokens=usage.cached_text, cached_audio_tokens=usage.cached_audio,
            output_text_tokens=usage.output_text, output_audio_tokens=usage.output_audio,
            cost_usd=usage.cost(prices_for(model, self.agents.prices)),
            tools=list(stats.tools),
            recording=str(conn._recording) if conn._recording is not None else None,
            transcript=([list(line) for line in stats.transcript]
                        if call.settings.log_transcripts else None),
        )

    def call_ended(self, conn: CallConnection, action: EndCall) -> None:
        """Logs the call's end line and counts its reason."""
        call = conn.call
        reason = action.reason.value
        self.totals.ended[reason] = self.totals.ended.get(reason, 0) + 1
        stats = call.stats
        METRICS.calls_ended.labels(reason=reason).inc()
        METRICS.dtmf_digits.inc(len(stats.dtmf))
        METRICS.bargeins.inc(stats.bargeins)
        for cause, count in (("undecodable", stats.bad_events), ("bad_audio", stats.bad_deltas),
                             ("error_event", stats.server_errors)):
            if count:
                METRICS.upstream_bad_events.labels(cause=cause).inc(count)
        if call.playout is not None:
            METRICS.underruns.inc(call.playout.underruns)
        if call.uuid is not None and action.reason not in REFUSALS:
            METRICS.call_seconds.observe(time.monotonic() - conn._started)
        if isinstance(action.error, UpstreamError):
            METRICS.upstream_errors.labels(error=type(action.error).__name__).inc()
        if stats.usage.input_tokens or stats.usage.output_tokens:
            METRICS.tokens.labels(direction="input").inc(stats.usage.input_tokens)
            METRICS.tokens.labels(direction="output").inc(stats.usage.output_tokens)
        level = logging.INFO
        if action.reason in (EndReason.PROTOCOL_VIOLATION, EndReason.UPSTREAM_FAILED,
                             EndReason.NOT_ALLOWED):
            level = logging.WARNING
        playout = call.playout
        fields: dict[str, Any] = {
            "call": str(call.uuid) if call.uuid else None,
            "peer": call.peer,
            "reason": reason,
            "seconds": round(time.monotonic() - conn._started, 3),
            "rate": call.rate,
            "caller_frames": stats.caller_frames,
            "appends": stats.appends,
            "deltas": stats.deltas,
            "bad_deltas": stats.bad_deltas,
            "bad_events": stats.bad_events,
            "server_errors": stats.server_errors,
            "bargeins": stats.bargeins,
            "truncates": stats.truncates,
            "rephases": stats.rephases,
            "dtmf": "".join(stats.dtmf),
            "underruns": playout.underruns if playout is not None else 0,
            **conn.agent.describe(),
            "tool_calls": stats.tool_calls,
            "sessions": stats.upstream_sessions,
            "responses": stats.usage.responses,
            "input_tokens": stats.usage.input_tokens,
            "output_tokens": stats.usage.output_tokens,
        }
        if action.error is not None:
            fields["error"] = str(action.error)
            fields["error_class"] = type(action.error).__name__
        if call.settings.log_transcripts:
            fields["transcript"] = list(stats.transcript)
        record = self._record(conn, action) if call.uuid is not None else None
        if record is not None and record.cost_usd is not None:
            fields["cost_usd"] = round(record.cost_usd, 6)
            METRICS.cost.inc(record.cost_usd)
        logs.event(log, "call_ended", level, **fields)
        if record is not None and self.records is not None:
            self.records.submit(record)
        if not self.connections and self._idle is not None:
            self._idle.set()
