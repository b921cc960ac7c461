"""Structured logging: an event name plus fields, one line per thing that happened.

Call :func:`setup` once at process start, then the :func:`event` shortcut. Lines are JSON
objects (for journald, Loki and friends) or, on a terminal, readable text
(``04:31:02 info  listening host=127.0.0.1 port=9093``); ``LOG_FORMAT`` chooses, ``auto``
picks text on a terminal. Secrets must never be passed as fields.
"""

from __future__ import annotations

import logging
import re
import sys
import time
from typing import Any

import orjson

__all__ = ["FORMATS", "JsonFormatter", "RedactCredentials", "TextFormatter", "event",
           "resolve_format", "setup"]

_FIELDS = "_fields"
FORMATS = ("auto", "text", "json")
_chosen = "auto"


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


def _text_value(value: Any) -> str:
    text = value if isinstance(value, str) else orjson.dumps(value, default=str).decode()
    if not text or any(c in text for c in ' ="\n'):
        return orjson.dumps(text).decode()
    return text


class TextFormatter(logging.Formatter):
    """Renders a record as ``HH:MM:SS level event key=value ...`` for a person."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%H:%M:%S", time.localtime(record.created))
        parts = [stamp, f"{record.levelname.lower():<7}", record.getMessage()]
        fields = getattr(record, _FIELDS, None) or {}
        parts += [f"{k}={_text_value(v)}" for k, v in fields.items() if v is not None]
        line = " ".join(parts)
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def resolve_format(fmt: str, stream: Any = None) -> str:
    """``text`` or ``json``: ``auto`` is text when ``stream`` (stderr) is a terminal."""
    if fmt == "auto":
        stream = stream or sys.stderr
        return "text" if getattr(stream, "isatty", lambda: False)() else "json"
    if fmt not in FORMATS:
        raise ValueError(f"log format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    return fmt


_CREDENTIAL = re.compile(
    r"(?i)((?:authorization|proxy-authorization|api-key|x-api-key|cookie|set-cookie)"
    r"[\"']?\s*[:=]\s*[\"']?)(?:(bearer|basic)\s+)?[^\s\"',;]+")


class RedactCredentials(logging.Filter):
    """Replaces credential header values in a line's text with ``***``: the last guard for a
    library that logs HTTP headers (websockets does, at debug level)."""

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        if _CREDENTIAL.search(text):
            record.msg = _CREDENTIAL.sub(lambda m: m[1] + (m[2] + " " if m[2] else "") + "***",
                                         text)
            record.args = None
        return True


def setup(level: str = "INFO", fmt: str | None = None, stream: Any = None) -> None:
    """Sends every engine log line to ``stream`` (stderr) at ``level``, in ``fmt``.

    Without ``fmt`` the format chosen by the last call that gave one is kept.
    """
    global _chosen
    if fmt is not None:
        _chosen = fmt
    stream = stream or sys.stderr
    handler = logging.StreamHandler(stream)
    json = resolve_format(_chosen, stream) == "json"
    handler.setFormatter(JsonFormatter() if json else TextFormatter())
    handler.addFilter(RedactCredentials())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # websockets' debug lines are every frame and every header (credentials too): the
    # engine's own debug lines say what matters about its connections.
    logging.getLogger("websockets").setLevel(max(logging.INFO, root.level))
    logging.Formatter.converter = time.gmtime


def event(logger: logging.Logger, name: str, level: int = logging.INFO, **fields: Any) -> None:
    """Logs one thing that happened: ``name`` plus its fields."""
    if logger.isEnabledFor(level):
        logger.log(level, name, extra={_FIELDS: fields})
