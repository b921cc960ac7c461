"""The AudioSocket floor: a uvloop server that only moves frames, for ``bench --floor``.

It reads and discards what callers send and writes one frame of silence per call every 20 ms
from one shared clock: the least any AudioSocket engine must do (no upstream, no resampling,
no parsing). Its CPU per call-second, measured the same way in the same conditions, is what
the engine's figure is compared against, because on a shared virtual machine the kernel's
share of the cost varies far more than ours. Run as ``python -m engine.bench.floor PORT
RATE``: its frames are of the bench's AudioSocket rate, so the kernel moves as many bytes as
it does for the engine. It logs the same ``listening`` line as the engine.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import sys
from typing import cast

from engine import logs
from engine._impl import audiosocket

__all__ = ["FloorServer", "main", "silence_frame"]

FRAME_MS = 20


def silence_frame(rate: int) -> bytes:
    """One AudioSocket message of 20 ms of silence at ``rate``.

    Raises:
        UnsupportedRate: ``rate`` has no AudioSocket kind.
    """
    return audiosocket.encode_audio(audiosocket.kind_for_rate(rate),
                                    bytes(2 * rate * FRAME_MS // 1000))


class _Conn(asyncio.Protocol):
    def __init__(self, server: FloorServer) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.conns.add(self)

    def data_received(self, data: bytes) -> None:
        self.server.bytes_in += len(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.conns.discard(self)


class FloorServer:
    """Accepts AudioSocket connections and writes silence at ``rate`` to each every 20 ms."""

    def __init__(self, rate: int = 8000) -> None:
        self.frame = silence_frame(rate)
        self.conns: set[_Conn] = set()
        self.bytes_in = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._t0 = 0.0
        self._k = 0
        self._server: asyncio.Server | None = None
        self._timer: asyncio.TimerHandle | None = None

    async def start(self, host: str, port: int) -> int:
        loop = self._loop = asyncio.get_running_loop()
        server = self._server = await loop.create_server(lambda: _Conn(self), host, port,
                                                         backlog=1024)
        self._t0 = loop.time()
        self._timer = loop.call_at(self._t0 + 0.020, self._tick)
        bound: int = server.sockets[0].getsockname()[1]
        return bound

    def _tick(self) -> None:
        loop = self._loop
        assert loop is not None
        self._k = max(self._k + 1, int((loop.time() - self._t0) / 0.020))
        frame = self.frame
        for conn in self.conns:
            if conn.transport is not None:
                conn.transport.write(frame)
        self._timer = loop.call_at(self._t0 + (self._k + 1) * 0.020, self._tick)

    async def stop(self) -> None:
        """Stops the clock, closes every connection and stops listening."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for conn in list(self.conns):
            if conn.transport is not None:
                conn.transport.close()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None


async def _serve(port: int, rate: int) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    server = FloorServer(rate)
    bound = await server.start("127.0.0.1", port)
    logs.event(logging.getLogger("engine.bench.floor"), "listening", host="127.0.0.1",
               port=bound, rate=rate)
    await stop.wait()


def main(argv: list[str]) -> int:
    """``python -m engine.bench.floor [PORT [RATE]]`` (any free port, 8 kHz by default)."""
    import uvloop

    logs.setup("INFO")
    port = int(argv[1]) if len(argv) > 1 else 0
    rate = int(argv[2]) if len(argv) > 2 else 8000
    uvloop.run(_serve(port, rate))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
