"""The native strict base64 decoder against its twin, and both against binascii."""

from __future__ import annotations

import binascii

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from engine._native import b64 as native
from engine._pure import b64 as pure

ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
NEAR = st.text(alphabet=ALPHABET + "=-_ \n\x00é", max_size=40)


def outcome(decode, data):  # type: ignore[no-untyped-def]
    try:
        return decode(data)
    except ValueError:
        return ValueError


@settings(max_examples=400)
@given(st.binary(max_size=3000))
def test_round_trips_every_payload(data: bytes) -> None:
    text = binascii.b2a_base64(data, newline=False)
    assert native.b64decode(text) == data
    assert native.b64decode(text.decode()) == data
    assert pure.b64decode(text) == data


@settings(max_examples=2000)
@given(NEAR)
@example("QQ==")
@example("QQ=")
@example("QQ=A")
@example("=QQQ")
@example("QQQQ=")
@example("QR==")
@example("Q===")
@example("QQQ=QQQQ")
@example("QQQQ\n")
def test_native_accepts_and_refuses_what_the_twin_does(text: str) -> None:
    for data in (text, text.encode("utf-8")):
        assert outcome(native.b64decode, data) == outcome(pure.b64decode, data)


@given(st.binary(min_size=1, max_size=300), st.integers(0, 10_000), st.sampled_from("!-_ =\n"))
def test_one_bad_character_anywhere_is_refused(data: bytes, at: int, bad: str) -> None:
    text = binascii.b2a_base64(data, newline=False).decode()
    at %= len(text)
    damaged = text[:at] + bad + text[at + 1:]
    if damaged == text or pure_accepts(damaged):
        return
    with pytest.raises(ValueError):
        native.b64decode(damaged)


def pure_accepts(text: str) -> bool:
    return outcome(pure.b64decode, text) is not ValueError


def test_refuses_what_is_not_text() -> None:
    for impl in (native, pure):
        with pytest.raises(TypeError):
            impl.b64decode(bytearray(b"QUJD"))  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="ASCII"):
            impl.b64decode("QUJDé===")
        assert impl.b64decode("") == b""
