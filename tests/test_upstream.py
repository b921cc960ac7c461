"""The WebSocket transport against real websockets servers on loopback, in a uvloop loop."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import pytest
import uvloop
from websockets.asyncio.server import ServerConnection, serve
from websockets.http11 import Request, Response

from engine import upstream
from engine.errors import (
    UpstreamAuthFailed,
    UpstreamBadEvent,
    UpstreamClosed,
    UpstreamError,
    UpstreamRateLimited,
    UpstreamRefused,
    UpstreamStalled,
    UpstreamUnresolved,
)
from engine.realtime import Dialect

KEY = "sk-secret-test-key-123"


def run(coro: Coroutine[Any, Any, Any]) -> Any:
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coro)


class Listener:
    def __init__(self) -> None:
        self.messages: list[bytes | str] = []
        self.closed: list[UpstreamError | None] = []
        self.done = asyncio.Event()

    def upstream_message(self, data: bytes | str) -> None:
        self.messages.append(data)

    def upstream_closed(self, error: UpstreamError | None) -> None:
        self.closed.append(error)
        self.done.set()


Handler = Callable[[ServerConnection], Awaitable[None]]
Gate = Callable[[ServerConnection, Request], Response | None]


async def server(handler: Handler, gate: Gate | None = None) -> tuple[Any, str]:
    srv = await serve(handler, "127.0.0.1", 0, compression=None, process_request=gate,
                      close_timeout=0.2)
    port = next(iter(srv.sockets)).getsockname()[1]
    return srv, f"ws://127.0.0.1:{port}/v1/realtime"


def endpoint(url: str, dialect: Dialect = Dialect.GA) -> upstream.Endpoint:
    return upstream.Endpoint.for_dialect(dialect, url, "gpt-realtime", KEY)


def test_build_url_and_endpoint_headers_never_show_the_key() -> None:
    assert upstream.build_url("wss://h/v1/realtime", "m 1") == "wss://h/v1/realtime?model=m%201"
    assert upstream.build_url("wss://h/r?deployment=d", "m") == "wss://h/r?deployment=d"
    assert upstream.build_url("wss://h/r?api-version=1", "m") == "wss://h/r?api-version=1&model=m"
    ga = endpoint("wss://h/v1/realtime")
    assert ("Authorization", f"Bearer {KEY}") in ga.headers
    beta = endpoint("wss://h/v1/realtime", Dialect.BETA)
    assert ("OpenAI-Beta", "realtime=v1") in beta.headers
    azure = endpoint("wss://x.openai.azure.com/openai/v1/realtime", Dialect.AZURE)
    assert ("api-key", KEY) in azure.headers
    for e in (ga, beta, azure):
        assert KEY not in repr(e) and KEY not in str(e)
    assert upstream.Endpoint.for_dialect(Dialect.GA, "ws://h/", "m", None).headers == ()


@pytest.mark.parametrize("dialect", [Dialect.GA, Dialect.BETA])
def test_messages_flow_both_ways_without_compression(dialect: Dialect) -> None:
    seen: dict[str, Any] = {}

    async def handler(ws: ServerConnection) -> None:
        assert ws.request is not None
        seen["headers"] = ws.request.headers
        seen["path"] = ws.request.path
        await ws.send('{"type":"session.created"}')
        async for message in ws:
            if message == "big":
                await ws.send(["x" * 70_000, "y" * 70_000])  # a fragmented message
            else:
                await ws.send(message)

    async def main() -> None:
        srv, url = await server(handler)
        listener = Listener()
        conn = await upstream.connect(endpoint(url, dialect), listener)
        for i in range(50):
            conn.send(b'{"n":%d}' % i)
        conn.send(b"big")
        for _ in range(100):
            if len(listener.messages) == 52:
                break
            await asyncio.sleep(0.01)
        conn.close()
        await asyncio.wait_for(listener.done.wait(), 3)
        srv.close()
        await srv.wait_closed()
        assert [bytes(m) if not isinstance(m, str) else m.encode() for m in listener.messages] \
            == [b'{"type":"session.created"}', *(b'{"n":%d}' % i for i in range(50)),
                b"x" * 70_000 + b"y" * 70_000]
        assert listener.closed == [None]

    run(main())
    headers = seen["headers"]
    assert headers["Authorization"] == f"Bearer {KEY}"
    assert ("OpenAI-Beta" in headers) is (dialect is Dialect.BETA)
    assert "Sec-WebSocket-Extensions" not in headers
    assert seen["path"] == "/v1/realtime?model=gpt-realtime"


def status_gate(statuses: list[int], hits: list[int], retry_after: str | None = None) -> Gate:
    def gate(conn: ServerConnection, request: Request) -> Response | None:
        hits.append(1)
        if statuses:
            response = conn.respond(statuses.pop(0), "no\n")
            if retry_after is not None:
                response.headers["Retry-After"] = retry_after
            return response
        return None

    return gate


async def idle(ws: ServerConnection) -> None:
    await ws.wait_closed()


@pytest.mark.parametrize("status", [401, 403])
def test_auth_failure_is_not_retried(status: int) -> None:
    async def main() -> None:
        hits: list[int] = []
        srv, url = await server(idle, status_gate([status] * 10, hits))
        with pytest.raises(UpstreamAuthFailed) as info:
            await upstream.connect(endpoint(url), Listener(), deadline=2.0)
        srv.close()
        await srv.wait_closed()
        assert info.value.status == status and len(hits) == 1
        assert KEY not in str(info.value)

    run(main())


def test_rate_limit_is_retried_after_its_delay_then_succeeds() -> None:
    async def main() -> None:
        hits: list[int] = []
        srv, url = await server(idle, status_gate([429, 429], hits, retry_after="0.1"))
        loop = asyncio.get_running_loop()
        started = loop.time()
        listener = Listener()
        conn = await upstream.connect(endpoint(url), listener, deadline=3.0)
        assert loop.time() - started >= 0.2 and len(hits) == 3
        conn.close()
        await asyncio.wait_for(listener.done.wait(), 3)
        srv.close()
        await srv.wait_closed()

    run(main())


def test_rate_limit_gives_up_at_the_deadline() -> None:
    async def main() -> None:
        hits: list[int] = []
        srv, url = await server(idle, status_gate([429] * 100, hits, retry_after="0.2"))
        with pytest.raises(UpstreamRateLimited) as info:
            await upstream.connect(endpoint(url), Listener(), deadline=0.7)
        srv.close()
        await srv.wait_closed()
        assert info.value.retry_after == 0.2 and 2 <= len(hits) <= 5

    run(main())


def test_refused_port_is_retried_until_the_deadline() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]

    async def main() -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(UpstreamRefused):
            await upstream.connect(endpoint(f"ws://127.0.0.1:{port}/"), Listener(), deadline=0.6)
        assert 0.1 <= loop.time() - started <= 0.7  # retried, never past the deadline

    run(main())


@pytest.mark.parametrize("host", ["no-such-host.invalid", "bad..name"])
def test_a_host_that_does_not_resolve_is_named_and_not_retried(host: str) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(UpstreamUnresolved) as info:
            await upstream.connect(endpoint(f"ws://{host}:9/"), Listener(), deadline=3.0)
        assert info.value.host == host and host in str(info.value)
        # A resolver that cannot be reached says "try again": retried until the deadline.
        assert info.value.temporary or loop.time() - started < 1.0

    run(main())


def test_server_close_mid_call_reports_its_code() -> None:
    async def handler(ws: ServerConnection) -> None:
        await ws.recv()
        await ws.close(1011, "simulated")

    async def main() -> None:
        srv, url = await server(handler)
        listener = Listener()
        conn = await upstream.connect(endpoint(url), listener)
        conn.send(b"{}")
        await asyncio.wait_for(listener.done.wait(), 3)
        srv.close()
        await srv.wait_closed()
        (error,) = listener.closed
        assert isinstance(error, UpstreamClosed) and error.code == 1011

    run(main())


def test_unanswered_pings_fail_a_stalled_connection() -> None:
    async def handler(ws: ServerConnection) -> None:
        ws.transport.pause_reading()  # stops reading: pings go unanswered
        await ws.wait_closed()

    async def main() -> None:
        srv, url = await server(handler)
        listener = Listener()
        await upstream.connect(endpoint(url), listener, ping_interval=0.1, ping_timeout=0.2)
        await asyncio.wait_for(listener.done.wait(), 3)
        (error,) = listener.closed
        assert isinstance(error, UpstreamStalled) and error.what == "no pong"
        srv.close()
        await srv.wait_closed()

    run(main())


def test_a_full_send_buffer_fails_instead_of_growing() -> None:
    async def handler(ws: ServerConnection) -> None:
        ws.transport.pause_reading()
        await ws.wait_closed()

    async def main() -> None:
        srv, url = await server(handler)
        listener = Listener()
        conn = await upstream.connect(endpoint(url), listener, max_send_buffer=64 * 1024,
                                      ping_interval=0)
        chunk = b'{"audio":"' + b"A" * 60_000 + b'"}'
        for _ in range(2000):
            conn.send(chunk)
            if listener.closed:
                break
            await asyncio.sleep(0)
        (error,) = listener.closed
        assert isinstance(error, UpstreamStalled) and error.what == "send buffer"
        srv.close()
        await srv.wait_closed()

    run(main())


def test_pongs_and_a_bad_continuation_through_the_frame_reader() -> None:
    async def handler(ws: ServerConnection) -> None:
        await ws.send('{"type":"session.created"}')
        await ws.recv()
        await asyncio.sleep(0.4)  # the client's pings are answered meanwhile
        ws.transport.write(bytes([0x80, 0x01]) + b"x")  # a continuation with no message begun
        await ws.wait_closed()

    async def main() -> None:
        srv, url = await server(handler)
        listener = Listener()
        conn = await upstream.connect(endpoint(url), listener, ping_interval=0.05,
                                      ping_timeout=0.3)
        for _ in range(100):
            if listener.messages:
                break
            await asyncio.sleep(0.01)
        conn.send(b"{}")
        await asyncio.wait_for(listener.done.wait(), 3)
        srv.close()
        await srv.wait_closed()
        assert listener.messages == [b'{"type":"session.created"}']
        assert conn._reader is not None and not conn._reader.passthrough
        (error,) = listener.closed
        assert isinstance(error, UpstreamBadEvent)
        assert "unexpected continuation frame" in str(error)

    run(main())
