"""Fuzz target: strict base64, the twin against the native build and both against binascii.

The settings byte: bit 0 the text is given as ``str`` (decoded as Latin-1, so non-ASCII text
comes too) rather than ``bytes``; bit 1 the text is the rest of the input encoded, with one
character damaged: ``at | bad | payload`` puts ``bad`` at position ``at`` (none when 0), so
long valid text and its near misses come often (the twin is one regular expression, whose
inside line coverage cannot see). Both builds may raise only ``ValueError``, and must accept
and refuse alike and decode alike; what they accept, ``binascii`` in strict mode must decode
to the same bytes. Anything else is a finding.
"""

from __future__ import annotations

import binascii

from engine._native import b64 as native
from engine._pure import b64 as twin

__all__ = ["TestOneInput", "outcome"]


def outcome(decode: object, text: str | bytes) -> object:
    """The bytes ``text`` decodes to, or ValueError."""
    try:
        return decode(text)  # type: ignore[operator]
    except ValueError:
        return ValueError


def _damaged(data: bytes) -> bytes:
    at, bad = (data[0], data[1]) if len(data) > 1 else (0, 0)
    text = bytearray(binascii.b2a_base64(data[2:], newline=False))
    if bad and text:
        text[at % len(text)] = bad
    return bytes(text)


def TestOneInput(data: bytes) -> None:
    flags, raw = (data[0], data[1:]) if data else (0, b"")
    if flags & 2:
        raw = _damaged(raw)
    text: str | bytes = raw.decode("latin-1") if flags & 1 else raw
    got = outcome(twin.b64decode, text)
    native_got = outcome(native.b64decode, text)
    if native_got != got:
        raise AssertionError(f"native gives {native_got!r}, the twin {got!r}")
    if got is not ValueError and binascii.a2b_base64(raw, strict_mode=True) != got:
        raise AssertionError(f"binascii decodes {raw!r} otherwise")
