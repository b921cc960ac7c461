"""The Asterisk manager (AMI) client: one connection per worker, shared by all its calls.

:class:`Manager` keeps one TCP connection to Asterisk's manager, logged in with ``Login``: an
:class:`asyncio.Protocol` around the sans-I/O :class:`~engine.agent.ami.Parser` (no streams,
no task per action). Every action carries its own ``ActionID``, so concurrent actions from
many calls are told apart, and each has its own timeout. A list action (``Status``) returns
its events up to the ``...Complete`` event. Events that answer no action go to the callbacks
of :meth:`Manager.subscribe`.

The connection is kept. When it drops (Asterisk restarted, the network failed, a Ping went
unanswered), actions in flight fail with :class:`~engine.errors.ManagerConnectionLost`:
Asterisk may or may not have run them, so nothing is sent again. The client reconnects with
exponential backoff (``backoff_first``, doubled per failure up to ``backoff_cap``, with
jitter so that the workers of a node do not knock together; reset by a login). Actions begun
while it is down wait for the reconnect up to their own timeout, then fail with
:class:`~engine.errors.ManagerUnavailable`.

The secret goes into the bytes of the Login action and nowhere else: no log line, exception
or repr carries it.

Which channel is the caller's: the dialplan sets ``VE_UUID`` to the call's UUID on the channel
that runs it (``asterisk/extensions.conf``), and :meth:`Manager.find_channel` asks ``Status``
for that variable (each ``Event: Status`` then carries ``Variable: VE_UUID=<value>``, as
``generate_status()`` in Asterisk 22's ``main/manager.c`` writes it). The same event gives
the caller ID and the dialled number for the agent's templates.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import random
import re
import socket
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from engine import logs
from engine.agent.ami import (
    DEFAULT_MAX_LINE,
    DEFAULT_MAX_MESSAGE,
    Banner,
    ChannelInfo,
    Fields,
    Message,
    Parser,
    PeerClosed,
    ProtocolViolation,
    encode_action,
)
from engine.errors import (
    ConfigError,
    ManagerActionFailed,
    ManagerAuthFailed,
    ManagerBadAction,
    ManagerConnectionLost,
    ManagerError,
    ManagerTimeout,
    ManagerUnavailable,
)

__all__ = ["EventCallback", "Manager", "Reply"]

log = logging.getLogger(__name__)

EventCallback = Callable[[Message], None]
Sleep = Callable[[float], Awaitable[None]]

_LIST_ENDS = frozenset({"complete", "cancelled"})
_VARIABLE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
# The engine's own end of a Dial(AudioSocket/...) is never the caller's channel.
_OWN_TECH = "AudioSocket"


@dataclass(frozen=True, slots=True)
class Reply:
    """What an action got back: its response and, for a list action, the listed events.

    ``complete`` is the closing ``...Complete`` event (its ``ListItems`` counts the events).
    """

    response: Message
    events: tuple[Message, ...] = ()
    complete: Message | None = None


@dataclass(slots=True, eq=False)
class _Pending:
    action: str
    future: asyncio.Future[Reply]
    response: Message | None = None
    events: list[Message] = field(default_factory=list)


class _Connection(asyncio.Protocol):
    """One TCP connection: feeds the parser and hands what it reads to the manager."""

    def __init__(self, manager: Manager, parser: Parser) -> None:
        loop = asyncio.get_running_loop()
        self._manager = manager
        self._parser = parser
        self.transport: asyncio.Transport | None = None
        #: The AMI version from the banner; None if the connection ended first.
        self.banner: asyncio.Future[str | None] = loop.create_future()
        self.lost: asyncio.Future[None] = loop.create_future()
        self.pending: dict[str, _Pending] = {}
        self.reason = "Asterisk closed the connection"
        self._paused = False
        self._resumed: asyncio.Future[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        self._parser.receive_data(data)
        self._deliver()

    def eof_received(self) -> bool:
        self._parser.receive_eof()
        self._deliver()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if exc is not None:
            self.reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        if not self.banner.done():
            self.banner.set_result(None)
        self._wake()
        self._manager._connection_lost(self)
        if not self.lost.done():
            self.lost.set_result(None)

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        self._wake()

    @property
    def closing(self) -> bool:
        """True once the transport is closing or gone: nothing more can be sent."""
        return self.transport is None or self.transport.is_closing() or self.lost.done()

    def write(self, data: bytes) -> bool:
        """Writes ``data``; False when the connection is already closing."""
        if self.closing:
            return False
        assert self.transport is not None
        self.transport.write(data)
        return True

    async def drain(self) -> None:
        """Waits while the transport's buffer is over its high-water mark."""
        while self._paused and not self.lost.done():
            if self._resumed is None or self._resumed.done():  # one for every writer waiting
                self._resumed = asyncio.get_running_loop().create_future()
            await asyncio.wait([self._resumed, self.lost], return_when=asyncio.FIRST_COMPLETED)

    def abort(self, reason: str) -> None:
        """Drops the connection at once; pending actions fail with ``reason``."""
        self.reason = reason
        if self.transport is not None:
            self.transport.abort()
        elif not self.lost.done():  # uvloop makes the protocol before it connects
            self.lost.set_result(None)

    def close(self, reason: str) -> None:
        """Closes after what is written has gone; pending actions fail with ``reason``."""
        self.reason = reason
        if self.transport is not None:
            self.transport.close()
        elif not self.lost.done():
            self.lost.set_result(None)

    def _wake(self) -> None:
        if self._resumed is not None and not self._resumed.done():
            self._resumed.set_result(None)

    def _deliver(self) -> None:
        for event in self._parser.events_received():
            if type(event) is Message:
                self._manager._message(self, event)
            elif type(event) is Banner:
                if not self.banner.done():
                    self.banner.set_result(event.version)
            elif type(event) is ProtocolViolation:
                self._manager._violation(event)
                self.abort(str(event.error))
            elif type(event) is PeerClosed and event.truncated:
                self.reason = "Asterisk closed the connection in the middle of a message"


class Manager:
    """An AMI client that keeps one logged-in connection and runs actions on it.

    Call :meth:`start` (keep trying in the background) or :meth:`connect` (wait for the first
    login and raise if it fails), then run actions from any task; :meth:`close` at the end.

    Args:
        host, port: the manager's address (manager.conf ``bindaddr``, ``port``).
        username, secret: the manager.conf user; the secret is never logged or shown.
        events: the Login's ``Events`` (``on``, ``off`` or a class list such as ``call``).
        connect_timeout: seconds for TCP, the banner and the login together.
        action_timeout: the default seconds an action may take, waiting for a reconnect
            included.
        backoff_first, backoff_cap, backoff_jitter: reconnect delays (the jitter is a
            fraction: 0.2 is ±20 %).
        ping_interval: seconds between Pings that find a dead connection; None for none.
        max_line, max_message: the parser's bounds.
        sleep: how to wait between attempts (a test's clock).
    """

    def __init__(
        self,
        host: str,
        port: int,
        username: str,
        secret: str,
        *,
        events: str = "on",
        connect_timeout: float = 5.0,
        action_timeout: float = 5.0,
        backoff_first: float = 0.5,
        backoff_cap: float = 30.0,
        backoff_jitter: float = 0.2,
        ping_interval: float | None = 20.0,
        max_line: int = DEFAULT_MAX_LINE,
        max_message: int = DEFAULT_MAX_MESSAGE,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        for name, value in (("connect_timeout", connect_timeout),
                            ("action_timeout", action_timeout),
                            ("backoff_first", backoff_first), ("backoff_cap", backoff_cap),
                            ("ping_interval", 1.0 if ping_interval is None else ping_interval)):
            if not value > 0:
                raise ConfigError(f"the manager's {name} must be above 0, not {value!r}")
        if not 0 <= backoff_jitter < 1:
            raise ConfigError(f"the manager's backoff_jitter must be in [0, 1), not "
                              f"{backoff_jitter!r}")
        Parser(max_line, max_message)  # checks the bounds now rather than at connect
        self._host = host
        self._port = port
        self._username = username
        self._secret = secret
        self._events = events
        self._connect_timeout = connect_timeout
        self._action_timeout = action_timeout
        self._backoff = (backoff_first, max(backoff_cap, backoff_first), backoff_jitter)
        self._ping_interval = ping_interval
        self._bounds = (max_line, max_message)
        self._sleep = sleep
        self._random = random.Random()
        self._ids = itertools.count(1)
        self._id_prefix = f"ve-{os.getpid()}-"
        self._subscribers: dict[str | None, list[EventCallback]] = {}
        self._conn: _Connection | None = None  # logged in and usable
        self._current: _Connection | None = None  # the latest, logged in or not yet
        self._ready = asyncio.Event()
        self._keeper: asyncio.Task[None] | None = None
        self._first = asyncio.Event()
        self._first_error: ManagerError | None = None
        self._last_reason = "not connected yet"
        self._closed = False

    def __repr__(self) -> str:
        return (f"Manager(host={self._host!r}, port={self._port}, username={self._username!r}, "
                f"connected={self.connected})")

    @property
    def connected(self) -> bool:
        """True while a logged-in connection is up."""
        return self._conn is not None

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> None:
        """Starts keeping the connection in the background; returns at once.

        Raises:
            ManagerUnavailable: the client was closed.
        """
        if self._closed:
            raise self._unavailable("the client is closed")
        if self._keeper is None:
            self._keeper = asyncio.get_running_loop().create_task(
                self._keep(), name=f"ami {self._host}:{self._port}")

    async def connect(self) -> None:
        """Starts the client and waits for its first login.

        Raises:
            ManagerUnavailable: no connection (refused, unreachable, no banner in time).
            ManagerAuthFailed: Asterisk refused the user or secret.
            After either the client is closed.
        """
        self.start()
        await self._first.wait()
        if self._first_error is not None and self._conn is None:
            await self.close()
            raise self._first_error

    async def close(self) -> None:
        """Stops reconnecting and closes the connection; pending actions fail."""
        if not self._closed:
            self._closed = True
            self._ready.set()  # wakes actions waiting for a connection: they see it closed
            if self._keeper is not None:
                self._keeper.cancel()
        if self._keeper is not None:
            await asyncio.wait([self._keeper])
        conn = self._current
        if conn is not None:
            conn.abort("the client was closed")  # a stalled peer must not hold the close
            await asyncio.wait([conn.lost])

    # -- actions ----------------------------------------------------------------------

    async def action(self, action: str, fields: Fields = (), *,
                     timeout: float | None = None) -> Reply:
        """Runs one action and returns its reply (with its events for a list action).

        Waits for a connection if there is none, within the same ``timeout`` (default: the
        client's ``action_timeout``).

        Raises:
            ManagerActionFailed: Asterisk answered ``Response: Error``.
            ManagerTimeout: no complete answer in time (the connection is kept).
            ManagerConnectionLost: the connection dropped after the action was sent.
            ManagerUnavailable: no connection within the timeout, or the client is closed.
            ManagerBadAction: a field AMI cannot carry.
        """
        seconds = self._action_timeout if timeout is None else timeout
        action_id = self._next_id()
        data = encode_action(action, fields, action_id=action_id)
        if self._keeper is None and not self._closed:
            raise self._unavailable("not started: call start() or connect() first")
        sent = False
        try:
            async with asyncio.timeout(seconds):
                conn = await self._connection()
                sent = True
                return await self._exchange(conn, action, data, action_id)
        except TimeoutError:
            if sent:
                raise ManagerTimeout(action, seconds) from None
            raise self._unavailable(f"no connection within {seconds:g} s "
                                    f"({self._last_reason})") from None

    async def redirect(self, channel: str, context: str, exten: str, priority: int | str = 1,
                       *, timeout: float | None = None) -> None:
        """Sends ``channel`` to ``context,exten,priority`` (a number or a label)."""
        await self.action("Redirect", (("Channel", channel), ("Context", context),
                                       ("Exten", exten), ("Priority", str(priority))),
                          timeout=timeout)

    async def getvar(self, channel: str, variable: str, *,
                     timeout: float | None = None) -> str:
        """The value of a channel variable (or function); empty when it is not set."""
        reply = await self.action("Getvar", (("Channel", channel), ("Variable", variable)),
                                  timeout=timeout)
        return reply.response.get("Value", "")

    async def setvar(self, channel: str, variable: str, value: str, *,
                     timeout: float | None = None) -> None:
        """Sets a channel variable."""
        await self.action("Setvar", (("Channel", channel), ("Variable", variable),
                                     ("Value", value)), timeout=timeout)

    async def hangup(self, channel: str, cause: int | None = None, *,
                     timeout: float | None = None) -> None:
        """Hangs up one channel, by its exact name (``cause``: a Q.850 cause code)."""
        if channel.startswith("/"):
            raise ManagerBadAction("Hangup", "Channel", "a name starting with '/' is a regular "
                                   "expression to Asterisk, which would hang up every match")
        fields = [("Channel", channel)]
        if cause is not None:
            fields.append(("Cause", str(cause)))
        await self.action("Hangup", fields, timeout=timeout)

    async def status(self, variables: Sequence[str] = (), *, channel: str | None = None,
                     timeout: float | None = None) -> tuple[Message, ...]:
        """The ``Event: Status`` of every live channel (or of ``channel``), in Asterisk's order.

        Each event carries ``Variable: NAME=value`` for each of ``variables``.
        """
        fields: list[tuple[str, str]] = []
        if channel is not None:
            fields.append(("Channel", channel))
        for name in variables:
            if not _VARIABLE_NAME.match(name):
                raise ManagerBadAction("Status", "Variables",
                                       f"{name!r} is not a channel variable name")
        if variables:
            fields.append(("Variables", ",".join(variables)))
        reply = await self.action("Status", fields, timeout=timeout)
        return tuple(e for e in reply.events if (e.event or "").lower() == "status")

    async def find_channel(self, variable: str, value: str, *,
                           timeout: float | None = None) -> ChannelInfo | None:
        """The live channel whose ``variable`` equals ``value``; None if there is none.

        The engine's own AudioSocket channels are skipped (a ``_``-inherited variable would
        reach them too); of several matches, the first Asterisk lists is returned.
        """
        for event in await self.status((variable,), timeout=timeout):
            found = event.variables()
            if found.get(variable) == value and event.get("Type") != _OWN_TECH:
                return ChannelInfo.from_status(event)
        return None

    def subscribe(self, callback: EventCallback, event: str | None = None
                  ) -> Callable[[], None]:
        """Calls ``callback(message)`` for each event named ``event`` (any case), or all.

        Callbacks run inside the protocol's ``data_received``: they must return quickly
        (start a task for slow work); an exception is logged and does not stop the others.
        Events that carry one of this client's ActionIDs (the items of a list action's reply,
        even one that timed out) are replies, not passed to callbacks.

        Returns:
            A function that removes the subscription.
        """
        key = event.lower() if event else None
        self._subscribers.setdefault(key, []).append(callback)

        def unsubscribe() -> None:
            callbacks = self._subscribers.get(key, [])
            if callback in callbacks:
                callbacks.remove(callback)

        return unsubscribe

    # -- the connection -----------------------------------------------------------------

    def _next_id(self) -> str:
        return f"{self._id_prefix}{next(self._ids)}"

    def _unavailable(self, reason: str) -> ManagerUnavailable:
        return ManagerUnavailable(self._host, self._port, reason)

    def _fields(self, **more: Any) -> dict[str, Any]:
        return {"host": self._host, "port": self._port, "user": self._username, **more}

    async def _connection(self) -> _Connection:
        while True:
            if self._closed:
                raise self._unavailable("the client is closed")
            conn = self._conn
            if conn is None:
                await self._ready.wait()
            elif conn.closing:  # dropped, and connection_lost is on its way
                await asyncio.wait([conn.lost])
            else:
                return conn

    async def _exchange(self, conn: _Connection, action: str, data: bytes,
                        action_id: str) -> Reply:
        future: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        conn.pending[action_id] = _Pending(action, future)
        try:
            if not conn.write(data):
                raise ManagerConnectionLost(self._host, self._port, action, conn.reason)
            await conn.drain()
            return await future
        finally:
            conn.pending.pop(action_id, None)

    async def _keep(self) -> None:
        first, cap, _ = self._backoff
        delay = first
        while True:
            try:
                conn = await self._attempt()
            except ManagerError as exc:
                self._last_reason = getattr(exc, "reason", str(exc))
                wait = self._jittered(delay)
                level = logging.ERROR if isinstance(exc, ManagerAuthFailed) else logging.WARNING
                logs.event(log, "manager_unavailable", level,
                           **self._fields(error=str(exc), retry_in=round(wait, 3)))
                self._first_outcome(exc)
            else:
                delay = first
                if not conn.closing:  # it may have dropped right after the login
                    self._conn = conn
                    self._ready.set()
                self._first_outcome(None)
                await self._hold(conn)
                if self._conn is conn:
                    self._conn = None
                    self._ready.clear()
                self._last_reason = conn.reason
                wait = self._jittered(delay)
                logs.event(log, "manager_disconnected", logging.WARNING,
                           **self._fields(reason=conn.reason, retry_in=round(wait, 3)))
            await self._sleep(wait)
            delay = min(delay * 2, cap)

    def _first_outcome(self, error: ManagerError | None) -> None:
        if not self._first.is_set():
            self._first_error = error
            self._first.set()

    def _jittered(self, delay: float) -> float:
        jitter = self._backoff[2]
        return delay * (1 + self._random.uniform(-jitter, jitter)) if jitter else delay

    async def _attempt(self) -> _Connection:
        """Connects, reads the banner and logs in, all within ``connect_timeout``."""
        loop = asyncio.get_running_loop()
        conn: _Connection | None = None

        def factory() -> _Connection:
            nonlocal conn
            conn = self._current = _Connection(self, Parser(*self._bounds))
            return conn

        try:
            async with asyncio.timeout(self._connect_timeout):
                await loop.create_connection(factory, self._host, self._port)
                assert conn is not None
                version = await conn.banner
                if version is None:
                    raise self._unavailable(f"no banner: {conn.reason}")
                await self._login(conn)
        except TimeoutError:
            error: ManagerError = self._unavailable(
                f"no connection, banner and login within {self._connect_timeout:g} s")
            await self._discard(conn, error.args[0])
            raise error from None
        except OSError as exc:
            await self._discard(conn, str(exc))
            raise self._unavailable(exc.strerror or str(exc)) from None
        except ManagerError as exc:
            await self._discard(conn, str(exc))
            raise
        except BaseException:
            if conn is not None:
                conn.abort("the client was closed")
            raise
        logs.event(log, "manager_connected", **self._fields(version=version))
        return conn

    async def _discard(self, conn: _Connection | None, reason: str) -> None:
        if conn is not None:
            conn.abort(reason)
            await asyncio.wait([conn.lost])

    async def _login(self, conn: _Connection) -> None:
        action_id = self._next_id()
        data = encode_action("Login", (("Username", self._username), ("Secret", self._secret),
                                       ("Events", self._events)), action_id=action_id)
        try:
            await self._exchange(conn, "Login", data, action_id)
        except ManagerActionFailed as exc:
            raise ManagerAuthFailed(self._username, exc.message) from None

    async def _hold(self, conn: _Connection) -> None:
        """Waits for ``conn`` to end, pinging it every ``ping_interval``."""
        while self._ping_interval is not None:
            done, _ = await asyncio.wait([conn.lost], timeout=self._ping_interval)
            if done:
                return
            action_id = self._next_id()
            try:
                async with asyncio.timeout(self._action_timeout):
                    await self._exchange(conn, "Ping", encode_action(
                        "Ping", action_id=action_id), action_id)
            except TimeoutError:
                reason = f"no answer to Ping within {self._action_timeout:g} s"
                logs.event(log, "manager_ping_timeout", logging.WARNING, **self._fields())
                conn.abort(reason)
            except ManagerError:
                pass  # lost meanwhile, or an error answer: either way the loop decides
        await asyncio.wait([conn.lost])

    # -- called by the protocol ----------------------------------------------------------

    def _message(self, conn: _Connection, message: Message) -> None:
        action_id = message.action_id
        pending = conn.pending.get(action_id) if action_id is not None else None
        if pending is not None and not pending.future.done():
            if pending.response is None and message.response is not None:
                self._response(conn, pending, message)
                return
            if pending.response is not None and message.event is not None:
                self._list_item(conn, pending, message)
                return
        if message.event is not None and not (action_id or "").startswith(self._id_prefix):
            self._dispatch(message)
        else:  # the rest of a reply that timed out, or a response nobody waits for
            logs.event(log, "manager_unclaimed_message", logging.DEBUG,
                       **self._fields(action_id=action_id, response=message.response,
                                      event=message.event))

    def _response(self, conn: _Connection, pending: _Pending, message: Message) -> None:
        if message.is_error:
            pending.future.set_exception(
                ManagerActionFailed(pending.action, message.get("Message", "")))
        elif (message.get("EventList") or "").lower() == "start":
            pending.response = message  # the events follow, up to ...Complete
        else:
            pending.future.set_result(Reply(message))

    def _list_item(self, conn: _Connection, pending: _Pending, message: Message) -> None:
        name = (message.event or "").lower()
        if (message.get("EventList") or "").lower() in _LIST_ENDS or name.endswith("complete"):
            assert pending.response is not None
            pending.future.set_result(Reply(pending.response, tuple(pending.events), message))
        else:
            pending.events.append(message)

    def _dispatch(self, message: Message) -> None:
        name = (message.event or "").lower()
        callbacks = [*self._subscribers.get(name, ()), *self._subscribers.get(None, ())]
        for callback in callbacks:
            try:
                callback(message)
            except Exception as exc:  # a subscriber's bug must not break the connection
                logs.event(log, "manager_event_callback_failed", logging.ERROR,
                           **self._fields(event=message.event, error=repr(exc)))

    def _violation(self, event: ProtocolViolation) -> None:
        logs.event(log, "manager_protocol_error", logging.WARNING,
                   **self._fields(error=str(event.error)))

    def _connection_lost(self, conn: _Connection) -> None:
        for pending in conn.pending.values():
            if not pending.future.done():
                pending.future.set_exception(ManagerConnectionLost(
                    self._host, self._port, pending.action, conn.reason))
        if self._conn is conn:
            self._conn = None
            if not self._closed:
                self._ready.clear()
