"""Fuzz target: the PROXY v2 header parser (pure Python; it has no native build).

The settings byte: bits 0-1 the length limit (:data:`LIMITS`). The parser may raise only
:class:`~engine.errors.ProxyProtocolError` subclasses, and once failed must raise again when
fed more; anything else is a finding, as is a chunking that changes the header, the bytes
after it or the class of the error, or a remainder that is not what followed the header.
"""

from __future__ import annotations

from engine.errors import ProxyProtocolError
from engine.node.proxy import ProxyHeader, ProxyParser

from . import split

__all__ = ["LIMITS", "TestOneInput", "run"]

LIMITS = (512, 216, 217, 65535)
_FIXED = 16


def run(chunks: list[bytes], limit: int) -> tuple[object, ...]:
    """Feeds ``chunks`` to a parser; returns ("header", header, remainder) or ("error", class)."""
    parser = ProxyParser(limit)
    for chunk in chunks:
        try:
            parser.receive_data(chunk)
        except ProxyProtocolError as error:
            try:
                parser.receive_data(b"more")
            except ProxyProtocolError as again:
                if again is not error:
                    raise AssertionError(f"a failed parser raised anew: {again!r}") from None
            else:
                raise AssertionError("a failed parser took more bytes") from error
            if parser.done:
                raise AssertionError("a failed parser is done") from error
            return ("error", type(error))
    if not parser.done:
        return ("partial",)
    if not isinstance(parser.header, ProxyHeader):
        raise AssertionError(f"done without a header: {parser.header!r}")
    return ("header", parser.header, parser.remainder)


def TestOneInput(data: bytes) -> None:
    job = split(data)
    limit = LIMITS[job.flags & 3]
    got = run(job.chunks, limit)
    whole = run([job.stream], limit)
    if got != whole:
        raise AssertionError(f"the chunking changed the outcome:\n{got}\n{whole}")
    if got[0] == "header":
        length = int.from_bytes(job.stream[14:_FIXED], "big")
        if got[2] != job.stream[_FIXED + length:]:
            raise AssertionError(f"the remainder is not what followed the header: {got[2]!r}")
