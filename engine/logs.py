"""Structured logging: one JSON object per line, an event name plus fields.

Call :func:`setup` once at process start, then ``log.info("event_name", extra=fields(...))``
or the :func:`event` shortcut. Secrets must never be passed as fields.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

import orjson

__all__ = ["JsonFormatter", "event", "setup"]

_FIELDS = "_fields"


class JsonFormatter(logging.Formatter):
    """Renders a record as ``{"ts", "level", "logger", "event", ...fields}``."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": round(record.created, 6),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
        }
        doc.update(getattr(record, _FIELDS, None) or {})
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(doc, default=str).decode()


def setup(level: str = "INFO", stream: Any = None) -> None:
    """Sends every engine log line to ``stream`` (stderr) as JSON, at ``level``."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.Formatter.converter = time.gmtime


def event(logger: logging.Logger, name: str, level: int = logging.INFO, **fields: Any) -> None:
    """Logs one thing that happened: ``name`` plus its fields."""
    if logger.isEnabledFor(level):
        logger.log(level, name, extra={_FIELDS: fields})
