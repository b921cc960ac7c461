"""The WebSocket transport to the Realtime API: websockets' sans-I/O client in an asyncio.Protocol.

:func:`connect` opens TCP (and TLS), runs the opening handshake with retries, and returns an
:class:`UpstreamConnection`. Messages then flow without a coroutine or task per message: the
connection hands each text message to its :class:`UpstreamListener` from ``data_received``,
and :meth:`UpstreamConnection.send` writes a frame at once. Permessage-deflate is never
offered: audio does not compress and the CPU cost is large.

The connection never blocks and never buffers without bound: when more than
``max_send_buffer`` bytes wait in the transport, or a ping goes unanswered, it fails with
:class:`~engine.errors.UpstreamStalled`. The listener hears ``upstream_closed`` exactly once.
"""

from __future__ import annotations

import asyncio
import functools
import os
import random
import socket
import ssl
from dataclasses import dataclass, replace
from typing import Any, Protocol, cast
from urllib.parse import parse_qsl, quote, urlsplit

from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.http11 import Response
from websockets.protocol import Protocol as WsProtocol
from websockets.protocol import State
from websockets.uri import parse_uri

from engine._impl import wsframe
from engine.errors import (
    UpstreamAuthFailed,
    UpstreamBadEvent,
    UpstreamClosed,
    UpstreamError,
    UpstreamRateLimited,
    UpstreamRefused,
    UpstreamRejected,
    UpstreamStalled,
    UpstreamTlsFailed,
    UpstreamUnresolved,
)
from engine.realtime import Dialect

__all__ = [
    "Endpoint",
    "UpstreamConnection",
    "UpstreamListener",
    "build_url",
    "connect",
]

USER_AGENT = "voice-engine/0.1"
#: Incoming messages (fragments included) above this size fail the connection.
MAX_MESSAGE = 16 * 1024 * 1024
# OpenAI records a client-chosen request id (at most 512 ASCII characters) for support tickets.
CLIENT_REQUEST_ID = "X-Client-Request-Id"
MAX_REQUEST_ID = 512
CLOSE_TIMEOUT = 2.0
_RETRY_FIRST = 0.1
_RETRY_CAP = 1.0


def build_url(base: str, model: str) -> str:
    """``base`` with ``model=<model>`` added, unless it already names a model or deployment."""
    query = urlsplit(base).query
    if any(key in ("model", "deployment") for key, _ in parse_qsl(query)):
        return base
    return f"{base}{'&' if query else '?'}model={quote(model, safe='')}"


@dataclass(frozen=True)
class Endpoint:
    """Where the upstream is, the headers it needs and the CAs it is trusted by (``ca_file``
    None: the system store); repr shows header names, never values."""

    url: str
    headers: tuple[tuple[str, str], ...] = ()
    ca_file: str | None = None

    def __repr__(self) -> str:
        names = tuple(name for name, _ in self.headers)
        return f"Endpoint(url={self.url!r}, headers={names!r}, ca_file={self.ca_file!r})"

    __str__ = __repr__

    @classmethod
    def for_dialect(
        cls, dialect: Dialect, base_url: str, model: str, api_key: str | None,
        ca_file: str | None = None,
    ) -> Endpoint:
        """The endpoint of ``dialect``; ``api_key`` None sends no credentials (the simulator),
        ``ca_file`` is the PEM bundle trusted instead of the system store (UPSTREAM_CA_FILE)."""
        headers: list[tuple[str, str]] = []
        if api_key:
            if dialect is Dialect.AZURE:
                headers.append(("api-key", api_key))
            else:
                headers.append(("Authorization", f"Bearer {api_key}"))
        if dialect is Dialect.BETA:
            headers.append(("OpenAI-Beta", "realtime=v1"))
        return cls(build_url(base_url, model), tuple(headers), ca_file)

    def for_call(self, call_id: str) -> Endpoint:
        """This endpoint with ``X-Client-Request-Id: call_id``, so the upstream's own records of
        the session (and the simulator's) carry the AudioSocket call's UUID."""
        return replace(
            self, headers=(*self.headers, (CLIENT_REQUEST_ID, call_id[:MAX_REQUEST_ID]))
        )


class UpstreamListener(Protocol):
    """Who hears an upstream connection's messages and its end."""

    def upstream_message(self, data: bytes | str) -> None: ...

    def upstream_closed(self, error: UpstreamError | None) -> None:
        """The connection is gone; ``error`` None means we closed it ourselves."""


class UpstreamConnection(asyncio.Protocol):
    """One WebSocket connection to the Realtime API; made by :func:`connect`.

    Messages that arrive with the handshake are held until :func:`connect` has returned, so
    the listener never hears from a connection it does not know yet.
    """

    def __init__(
        self,
        listener: UpstreamListener,
        protocol: ClientProtocol,
        loop: asyncio.AbstractEventLoop,
        *,
        headers: tuple[tuple[str, str], ...] = (),
        max_send_buffer: int,
        ping_interval: float,
        ping_timeout: float,
    ) -> None:
        self._listener = listener
        self._protocol = protocol
        self._loop = loop
        self._headers = headers
        self.max_send_buffer = max_send_buffer
        self.ping_interval = ping_interval
        self.ping_timeout = ping_timeout
        self.transport: asyncio.Transport | None = None
        self.paused = False
        self.handshake: asyncio.Future[None] = loop.create_future()
        self._held: list[bytes | str] | None = []
        self._held_close: tuple[UpstreamError | None] | None = None
        self._fragments: list[bytes] = []
        self._reader: Any = None  # a wsframe.FrameReader once the handshake is done
        self._closing = False
        self._notified = False
        self._ping_timer: asyncio.TimerHandle | None = None
        self._pong_timer: asyncio.TimerHandle | None = None
        self._close_timer: asyncio.TimerHandle | None = None
        self._frames = frame_builder()
        self._ping_data = b""

    # -- public ------------------------------------------------------------------------------

    @property
    def open(self) -> bool:
        """True while messages can be sent."""
        return self._protocol.state is State.OPEN and not self._closing

    def send(self, data: bytes) -> None:
        """Sends ``data`` (UTF-8 JSON) as one text frame; ignored once closing.

        Fails the connection with ``UpstreamStalled("send buffer", n)`` when more than
        ``max_send_buffer`` bytes are waiting to be written.
        """
        # Our own frame, not websockets' send_text: one native pass, and masks from a pooled
        # random source instead of a getrandom call per frame. The protocol keeps no state
        # about data frames we send, and its own output (pongs, close) is flushed as soon as
        # it arises, so the byte order on the wire is unchanged.
        self.send_frames([self._frames.frame(data)])

    def send_frames(self, frames: list[bytes]) -> None:
        """Writes finished, masked text frames (the call's appends, built natively); ignored
        once closing. The send buffer is bounded as for :meth:`send`."""
        if self._protocol.state is not State.OPEN or self._closing:
            return
        transport = self.transport
        if transport is not None and not transport.is_closing():
            if len(frames) == 1:
                transport.write(frames[0])
            else:
                transport.writelines(frames)
            waiting = transport.get_write_buffer_size()
            if waiting > self.max_send_buffer:
                self._fail(UpstreamStalled("send buffer", waiting))

    def close(self) -> None:
        """Closes cleanly: a close frame, then the TCP close within a short deadline.

        The listener then hears ``upstream_closed(None)``; held messages are dropped.
        """
        if self._closing or self._notified:
            return
        self._closing = True
        self._held = None
        self._cancel_pings()
        if self._protocol.state is State.OPEN:
            self._protocol.send_close(1000)
            self._flush()
        self._expect_close()

    def abort(self) -> None:
        """Drops the TCP connection at once, without telling the listener (connect failed)."""
        self._notified = True
        self._cancel_pings()
        if not self.handshake.done():
            self.handshake.cancel()
        if self.transport is not None:
            self.transport.abort()

    # -- asyncio.Protocol ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        request = self._protocol.connect()
        request.headers["User-Agent"] = USER_AGENT
        for name, value in self._headers:
            request.headers[name] = value
        self._protocol.send_request(request)
        self._flush()

    def data_received(self, data: bytes) -> None:
        reader = self._reader
        if reader is None:
            self._receive(data)
            protocol = self._protocol
            if (protocol.state is State.OPEN and self.handshake.done()
                    and not protocol.reader.buffer):
                # At a frame boundary once open: data frames skip websockets' parser from here.
                self._reader = wsframe.FrameReader(MAX_MESSAGE, False)
            return
        for item in reader.feed(data):
            if type(item) is tuple:
                self._data_frame(*item)
            else:
                self._receive(item)
        violation = reader.violation
        if violation is not None and self._protocol.state is State.OPEN:
            self._protocol.fail(*violation)
            self._flush()
            if not self._closing:
                self._notify(UpstreamBadEvent(f"WebSocket protocol error: {violation[1]}"))
            self._expect_close()

    def _receive(self, data: bytes) -> None:
        """Bytes for websockets' protocol: the handshake, control frames, anything unusual."""
        protocol = self._protocol
        protocol.receive_data(data)
        for event in protocol.events_received():
            if type(event) is Frame:
                self._frame(event)
            elif type(event) is Response:
                self._response(event)
        self._flush()
        if protocol.handshake_exc is not None and not self.handshake.done():
            self.handshake.set_exception(UpstreamRefused("the handshake answer is not valid HTTP"))
        if protocol.parser_exc is not None and not self._closing:
            self._notify(UpstreamBadEvent(f"WebSocket protocol error: {protocol.parser_exc}"))
        if protocol.close_expected():
            self._expect_close()

    def eof_received(self) -> bool | None:
        self._protocol.receive_eof()
        self._flush()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_pings()
        if self._close_timer is not None:
            self._close_timer.cancel()
        if not self.handshake.done():
            reason = "connection lost during the handshake"
            self.handshake.set_exception(UpstreamRefused(f"{reason}: {exc}" if exc else reason))
            self._notified = True
            return
        if self._closing:
            self._notify(None)
            return
        rcvd = self._protocol.close_rcvd
        if rcvd is not None:
            self._notify(UpstreamClosed(rcvd.code, rcvd.reason))
        else:
            self._notify(UpstreamClosed(None, str(exc) if exc else "end of stream"))

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False

    # -- internals ----------------------------------------------------------------------------

    def _response(self, response: Response) -> None:
        if self.handshake.done():
            return
        if self._protocol.state is State.OPEN:
            self.handshake.set_result(None)
            self._schedule_ping()
        else:
            self.handshake.set_exception(_handshake_error(response))

    def _data_frame(self, opcode: int, fin: bool, payload: bytes) -> None:
        """A text, binary or continuation frame: whole messages go to the listener."""
        if opcode:
            if fin:
                self._deliver(payload)
            else:
                self._fragments = [payload]
        else:
            self._fragments.append(payload)
            if fin:
                data = b"".join(self._fragments)
                self._fragments = []
                self._deliver(data)

    def _frame(self, frame: Frame) -> None:
        opcode = frame.opcode
        if opcode is Opcode.TEXT or opcode is Opcode.BINARY or opcode is Opcode.CONT:
            self._data_frame(opcode, frame.fin, bytes(frame.data))
        elif opcode is Opcode.PONG:
            if frame.data == self._ping_data and self._pong_timer is not None:
                self._pong_timer.cancel()
                self._pong_timer = None
        elif opcode is Opcode.CLOSE and not self._closing:
            rcvd = self._protocol.close_rcvd
            code = rcvd.code if rcvd is not None else None
            self._notify(UpstreamClosed(code, rcvd.reason if rcvd is not None else ""))

    def _deliver(self, data: bytes) -> None:
        if self._notified or self._closing:
            return
        held = self._held
        if held is not None:
            held.append(data)
        else:
            self._listener.upstream_message(data)

    def release(self) -> None:
        """Delivers what arrived with the handshake; :func:`connect` schedules it on return."""
        held, self._held = self._held, None
        if held is None:
            return
        for data in held:
            if self._notified or self._closing:
                return
            self._listener.upstream_message(data)
        pending = self._held_close
        if pending is not None:
            self._held_close = None
            self._listener.upstream_closed(pending[0])

    def _notify(self, error: UpstreamError | None) -> None:
        if self._notified:
            return
        self._notified = True
        self._cancel_pings()
        if self._held is not None and error is not None:
            self._held_close = (error,)
            return
        self._listener.upstream_closed(error)

    def _fail(self, error: UpstreamError) -> None:
        """Ends the connection at once: nothing more can usefully reach a stalled peer."""
        self._notify(error)
        self._closing = True
        if self.transport is not None:
            self.transport.abort()

    def _flush(self) -> None:
        write_output(self._protocol, self.transport)

    def _expect_close(self) -> None:
        """The peer should close TCP now; if it does not within the deadline, we do."""
        if self._close_timer is None and self.transport is not None:
            self._close_timer = self._loop.call_later(CLOSE_TIMEOUT, self._close_deadline)

    def _close_deadline(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def _schedule_ping(self) -> None:
        if self.ping_interval > 0:
            self._ping_timer = self._loop.call_later(self.ping_interval, self._ping)

    def _ping(self) -> None:
        self._ping_timer = None
        if self._protocol.state is not State.OPEN or self._closing:
            return
        if self._pong_timer is None:
            self._ping_data = os.urandom(4)
            self._protocol.send_ping(self._ping_data)
            self._flush()
            self._pong_timer = self._loop.call_later(self.ping_timeout, self._no_pong)
        self._schedule_ping()

    def _no_pong(self) -> None:
        self._pong_timer = None
        self._fail(UpstreamStalled("no pong", self.ping_timeout))

    def _cancel_pings(self) -> None:
        for timer in (self._ping_timer, self._pong_timer):
            if timer is not None:
                timer.cancel()
        self._ping_timer = self._pong_timer = None


def write_output(protocol: WsProtocol, transport: asyncio.Transport | None) -> None:
    """Writes what a websockets sans-I/O protocol has to send; an empty chunk is its EOF."""
    if transport is None or transport.is_closing():
        return
    for data in protocol.data_to_send():
        if data:
            transport.write(data)
        elif transport.can_write_eof():
            transport.write_eof()


@functools.cache
def frame_builder() -> Any:  # wsframe.FrameBuilder of the chosen implementation
    """One per process: its random pool serves every call (one refill per 1,024 frames)."""
    return wsframe.FrameBuilder()


# A forked worker must not replay its parent's pool of mask bytes.
os.register_at_fork(after_in_child=frame_builder.cache_clear)


@functools.cache
def _ssl_context(ca_file: str | None) -> ssl.SSLContext:
    """One verifying context per process and CA bundle: loading a CA store costs milliseconds.

    ``ca_file`` replaces the system store (UPSTREAM_CA_FILE); None uses the system store.
    """
    return ssl.create_default_context(cafile=ca_file)


def _retry_after(response: Response) -> float | None:
    value = response.headers.get("Retry-After")
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return max(0.0, seconds)


def _handshake_error(response: Response) -> UpstreamError:
    status = response.status_code
    if status in (401, 403):
        return UpstreamAuthFailed(status)
    if status == 429:
        return UpstreamRateLimited(_retry_after(response))
    return UpstreamRejected(status)


def _retryable(error: UpstreamError) -> bool:
    if isinstance(error, UpstreamRefused | UpstreamRateLimited):
        return True
    if isinstance(error, UpstreamUnresolved):
        return error.temporary
    return isinstance(error, UpstreamRejected) and error.status >= 500


async def _attempt(
    endpoint: Endpoint,
    listener: UpstreamListener,
    loop: asyncio.AbstractEventLoop,
    timeout: float,
    **options: float,
) -> UpstreamConnection:
    """One connection attempt, bounded by ``timeout``; leaves no transport behind on failure."""
    wsuri = parse_uri(endpoint.url)
    protocol = ClientProtocol(wsuri, max_size=MAX_MESSAGE)
    conn = UpstreamConnection(
        listener, protocol, loop, headers=endpoint.headers,
        max_send_buffer=int(options["max_send_buffer"]),
        ping_interval=options["ping_interval"], ping_timeout=options["ping_timeout"],
    )
    ssl_context = _ssl_context(endpoint.ca_file) if wsuri.secure else None
    try:
        async with asyncio.timeout(timeout):
            await loop.create_connection(
                lambda: conn, wsuri.host, wsuri.port, ssl=ssl_context,
                server_hostname=wsuri.host if ssl_context else None,
            )
            await conn.handshake
    except TimeoutError:
        conn.abort()
        raise UpstreamRefused(f"no answer within {timeout:.3g} s") from None
    except socket.gaierror as exc:
        conn.abort()
        raise UpstreamUnresolved(wsuri.host, exc.strerror or str(exc),
                                 temporary=exc.errno == socket.EAI_AGAIN) from None
    except UnicodeError:
        conn.abort()  # the IDNA codec refused the name before any lookup
        raise UpstreamUnresolved(wsuri.host, "not a valid host name", temporary=False) from None
    except ssl.SSLCertVerificationError as exc:
        conn.abort()
        raise UpstreamTlsFailed(f"certificate not trusted: {exc.verify_message}") from None
    except ssl.SSLError as exc:
        conn.abort()
        raise UpstreamTlsFailed(exc.reason or type(exc).__name__) from None
    except OSError as exc:
        conn.abort()
        raise UpstreamRefused(exc.strerror or type(exc).__name__) from None
    except BaseException:
        conn.abort()
        raise
    return conn


async def connect(
    endpoint: Endpoint,
    listener: UpstreamListener,
    *,
    loop: asyncio.AbstractEventLoop | None = None,
    open_timeout: float = 5.0,
    deadline: float = 8.0,
    max_send_buffer: int = 256 * 1024,
    ping_interval: float = 10.0,
    ping_timeout: float = 10.0,
) -> UpstreamConnection:
    """Opens the upstream connection, retrying transient failures until ``deadline`` seconds.

    Refusals, timeouts, a resolver's "try again", 429 and 5xx are retried with exponential
    backoff and jitter (a 429's Retry-After is honoured when it fits in the deadline); a name
    that does not exist, 401/403 and other statuses are not.
    Messages that arrived with the handshake reach ``listener`` just after this returns.

    Raises:
        UpstreamError: the last failure (UpstreamRefused, UpstreamUnresolved, UpstreamAuthFailed,
            UpstreamTlsFailed, UpstreamRateLimited or UpstreamRejected).
    """
    loop = loop or asyncio.get_running_loop()
    end = loop.time() + deadline
    delay = _RETRY_FIRST
    while True:
        remaining = end - loop.time()
        try:
            conn = await _attempt(
                endpoint, listener, loop, max(0.001, min(open_timeout, remaining)),
                max_send_buffer=max_send_buffer, ping_interval=ping_interval,
                ping_timeout=ping_timeout,
            )
        except UpstreamError as exc:
            if not _retryable(exc):
                raise
            wait = random.uniform(delay / 2, delay)
            if isinstance(exc, UpstreamRateLimited) and exc.retry_after is not None:
                wait = max(wait, exc.retry_after)
            if loop.time() + wait >= end:
                raise
            await asyncio.sleep(wait)
            delay = min(delay * 2, _RETRY_CAP)
            continue
        loop.call_soon(conn.release)
        return conn
