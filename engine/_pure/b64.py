"""Strict base64 decoding: the twin of ``engine._native.b64``.

What is valid is said once, as a pattern: whole groups of four characters of the standard
alphabet, the last of them ``xxx=`` or ``xx==`` at most. (``binascii``'s own strict mode lets
some stray padding through, ``QQQQ=`` among it, so it only decodes what the pattern passed.)
"""

from __future__ import annotations

import binascii
import re

__all__ = ["b64decode"]

_VALID = re.compile(rb"(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?")


def b64decode(data: str | bytes) -> bytes:
    """The bytes ``data`` (an ASCII ``str`` or ``bytes``) encodes in standard base64.

    Raises:
        ValueError: ``data`` is not strictly valid base64.
    """
    if isinstance(data, str):
        if not data.isascii():
            raise ValueError("base64 text must be ASCII")
        data = data.encode("ascii")
    elif type(data) is not bytes:
        raise TypeError(f"base64 text must be str or bytes, not {type(data).__name__}")
    if _VALID.fullmatch(data) is None:
        raise ValueError("not valid base64 (a character outside the alphabet, or misplaced "
                         "padding)")
    return binascii.a2b_base64(data, strict_mode=True)
