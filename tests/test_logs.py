"""Log lines: JSON for machines, text for a person at a terminal, and who chooses."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import orjson
import pytest

from engine import logs

log = logging.getLogger("engine.test")


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level, chosen = root.handlers[:], root.level, logs._chosen
    yield
    root.handlers[:], logs._chosen = handlers, chosen
    root.setLevel(level)


def test_text_line_has_time_level_event_and_fields() -> None:
    out = Terminal()
    logs.setup("INFO", "text", out)
    logs.event(log, "listening", host="127.0.0.1", port=9093, prompt="Be brief", gone=None,
               empty="", sizes=[1, 2])
    stamp, level, rest = out.getvalue().split(maxsplit=2)
    assert len(stamp) == 8 and stamp[2] == stamp[5] == ":"
    assert level == "info"
    assert rest == ('listening host=127.0.0.1 port=9093 prompt="Be brief" empty="" '
                    'sizes=[1,2]\n')


def test_text_line_quotes_what_would_be_ambiguous() -> None:
    record = logging.LogRecord("engine", logging.WARNING, __file__, 1, "odd", None, None)
    record._fields = {"a": 'say "hi"', "b": "x=y", "c": "two\nlines"}
    line = logs.TextFormatter().format(record)
    assert line.split(maxsplit=1)[1] == (
        'warning odd a="say \\"hi\\"" b="x=y" c="two\\nlines"'
    )


def test_auto_is_text_on_a_terminal_and_json_elsewhere() -> None:
    assert logs.resolve_format("auto", Terminal()) == "text"
    assert logs.resolve_format("auto", io.StringIO()) == "json"
    assert logs.resolve_format("json", Terminal()) == "json"
    with pytest.raises(ValueError, match="auto, text, json"):
        logs.resolve_format("xml")
    out = io.StringIO()
    logs.setup("INFO", "auto", out)
    logs.event(log, "ready", port=1)
    assert orjson.loads(out.getvalue()) | {"ts": 0} == {
        "ts": 0, "level": "info", "logger": "engine.test", "event": "ready", "port": 1,
    }


def test_setup_without_a_format_keeps_the_one_chosen_before() -> None:
    """The group chooses the format; a command that sets the level again keeps it."""
    logs.setup("INFO", "text")
    out = io.StringIO()
    logs.setup("warning", stream=out)
    logs.event(log, "hidden")
    logs.event(log, "shown", level=logging.WARNING)
    assert out.getvalue().split()[1:] == ["warning", "shown"]


def test_credential_headers_are_redacted_from_any_logger_even_at_debug() -> None:
    import io
    import logging

    from engine import logs

    stream = io.StringIO()
    logs.setup("debug", "json", stream)
    try:
        other = logging.getLogger("somelib.http")
        other.debug("> Authorization: Bearer sk-abc123")
        other.debug("> api-key: azure-XYZ")
        other.debug("headers %s", {"Cookie": "session=s3cr3t"})
        logging.getLogger("websockets.client").debug("> Authorization: Bearer sk-frame")
    finally:
        logs.setup("info", "json")
    text = stream.getvalue()
    assert "sk-abc123" not in text and "azure-XYZ" not in text and "s3cr3t" not in text
    assert "Authorization: Bearer ***" in text and "api-key: ***" in text
    assert "sk-frame" not in text  # websockets' header lines are not logged at all
