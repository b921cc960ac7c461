"""The channel between the supervisor and one worker: JSON lines over a socketpair.

Worker to supervisor: ``{"ready": {...}}`` once listening, then a heartbeat about once a
second (``{"beat": {"calls", "draining", "lag_ms"}}``). Supervisor to worker:
``{"cmd": "drain", "seconds": S}`` and ``{"cmd": "stop"}``. End of file on either side means
the other process is gone. :class:`LineReader` is the sans-I/O half: bytes in, messages out,
bounded so a broken peer cannot grow it.
"""

from __future__ import annotations

from typing import Any

import orjson

from engine.errors import ControlChannelError

__all__ = ["MAX_LINE", "LineReader", "encode"]

MAX_LINE = 64 * 1024


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
