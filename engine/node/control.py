"""The channel between the supervisor and one worker: JSON lines over a socketpair.

Worker to supervisor: ``{"ready": {...}}`` once listening, then a heartbeat about once a
second (``{"beat": {"calls", "draining", "lag_ms"}}``). Supervisor to worker:
``{"cmd": "drain", "seconds": S}`` and ``{"cmd": "stop"}``. End of file on either side means
the other process is gone. :class:`LineReader` is the sans-I/O half: bytes in, messages out,
bounded so a broken peer cannot grow it.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson

from engine.errors import ControlChannelError

__all__ = ["MAX_LINE", "Channel", "LineReader", "encode"]

MAX_LINE = 4 * 1024 * 1024  # the boot line carries the configuration, instructions included


def encode(message: dict[str, Any]) -> bytes:
    """One message as a line."""
    return orjson.dumps(message) + b"\n"


class LineReader:
    """Splits a byte stream into JSON messages, one per line."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def receive_data(self, data: bytes) -> list[dict[str, Any]]:
        """Feeds bytes; returns the messages they completed.

        Raises:
            ControlChannelError: a line is too long or not a JSON object.
        """
        self._buffer += data
        out: list[dict[str, Any]] = []
        while True:
            end = self._buffer.find(b"\n")
            if end < 0:
                if len(self._buffer) > MAX_LINE:
                    raise ControlChannelError(f"a control line is over {MAX_LINE} bytes")
                return out
            line = bytes(self._buffer[:end])
            del self._buffer[: end + 1]
            try:
                message = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                raise ControlChannelError(f"a control line is not JSON: {exc}") from None
            if not isinstance(message, dict):
                raise ControlChannelError("a control line is not a JSON object")
            out.append(message)


class Channel(asyncio.Protocol):
    """One end of the channel: sends queue until the socket is connected; subclasses take
    :meth:`message`, :meth:`broken` (a bad line: the channel is closed) and :meth:`closed`."""

    def __init__(self) -> None:
        self.reader = LineReader()
        self.transport: asyncio.Transport | None = None
        self._queued: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        for line in self._queued:
            self.transport.write(line)  # type: ignore[union-attr]
        self._queued.clear()

    def data_received(self, data: bytes) -> None:
        try:
            messages = self.reader.receive_data(data)
        except ControlChannelError as exc:
            self.close()
            self.broken(exc)
            return
        for message in messages:
            self.message(message)

    def eof_received(self) -> bool:
        self.closed()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed()

    def send(self, message: dict[str, Any]) -> None:
        line = encode(message)
        if self.transport is None:
            self._queued.append(line)
        elif not self.transport.is_closing():
            self.transport.write(line)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def message(self, message: dict[str, Any]) -> None:
        raise NotImplementedError

    def broken(self, error: ControlChannelError) -> None:
        raise NotImplementedError

    def closed(self) -> None:
        raise NotImplementedError
