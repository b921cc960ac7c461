"""Fuzz target: the Realtime event decoder (pure Python around orjson and the native base64).

The settings byte: bits 0-1 the dialect (:data:`DIALECTS`). The stream is messages split at
NUL bytes, decoded in order by one decoder (so function-call names are remembered across
them), as bytes and, when they are UTF-8, as text by a second (bytes that are not UTF-8
must be refused as not JSON). The decoder may raise only
:class:`~engine.errors.UpstreamBadEvent`; anything else is a finding, as is a result that is
not a server event, bytes and text that decode differently, or audio that the twin's base64
decodes otherwise.
"""

from __future__ import annotations

import orjson

from engine import _impl, realtime
from engine._pure import b64 as twin_b64
from engine.errors import UpstreamBadEvent

from . import split

__all__ = ["DIALECTS", "SEPARATOR", "TestOneInput", "outcome"]

DIALECTS = (realtime.Dialect.GA, realtime.Dialect.BETA, realtime.Dialect.AZURE,
            realtime.Dialect.GA)
SEPARATOR = b"\x00"
_NOT_JSON = "not JSON"


def outcome(decoder: realtime.Decoder, message: bytes | str) -> object:
    """The event ``message`` decodes to, or ("bad", reason) for an UpstreamBadEvent."""
    try:
        event = decoder.decode(message)
    except UpstreamBadEvent as bad:
        # orjson counts a text's position in characters and a byte string's in bytes.
        return ("bad", _NOT_JSON if bad.reason.startswith(_NOT_JSON) else bad.reason)
    if not isinstance(event, realtime.ServerEvent):
        raise AssertionError(f"not a server event: {event!r}")
    return event


def TestOneInput(data: bytes) -> None:
    job = split(data)
    dialect = DIALECTS[job.flags & 3]
    as_bytes, as_text = realtime.Decoder(dialect), realtime.Decoder(dialect)
    for message in job.stream.split(SEPARATOR):
        got = outcome(as_bytes, message)
        try:
            text = message.decode("utf-8")
        except UnicodeDecodeError:
            # JSON is UTF-8: such a message must be refused, and so leaves no name behind.
            if got != ("bad", _NOT_JSON):
                raise AssertionError(f"bytes that are not UTF-8 decoded to {got!r}") from None
        else:
            again = outcome(as_text, text)
            if again != got:
                raise AssertionError(f"text and bytes decode differently:\n{got}\n{again}")
        if isinstance(got, realtime.AudioDelta) and _impl.IMPL == "native":
            want = twin_b64.b64decode(orjson.loads(message)["delta"])
            if got.audio != want:
                raise AssertionError(f"the native base64 decoded {got.audio!r}, not {want!r}")
