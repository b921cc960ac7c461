"""G.711: the native tables against the G.191 reference twin, and against audioop."""

from __future__ import annotations

import struct
import warnings

import pytest
from conftest import IMPLS, both, media_module
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.errors import BadSampleData

ALL_SAMPLES = struct.pack("<65536h", *range(-32768, 32768))
ALL_CODES = bytes(range(256))
native, twin = both("g711")


def _ints(pcm: bytes) -> list[int]:
    return list(struct.unpack(f"<{len(pcm) // 2}h", pcm))


@pytest.mark.parametrize("fn", ["ulaw_encode", "alaw_encode"])
def test_encoders_agree_on_every_sample(fn: str) -> None:
    assert getattr(native, fn)(ALL_SAMPLES) == getattr(twin, fn)(ALL_SAMPLES)


@pytest.mark.parametrize("fn", ["ulaw_decode", "alaw_decode"])
def test_decoders_agree_on_every_code(fn: str) -> None:
    assert getattr(native, fn)(ALL_CODES) == getattr(twin, fn)(ALL_CODES)


@pytest.mark.parametrize("impl", IMPLS)
def test_reference_values(impl: str) -> None:
    g = media_module(impl, "g711")
    # G.191: μ-law silence is 0xFF, and -1 lands on the "negative zero" code 0x7F.
    assert g.ulaw_encode(struct.pack("<3h", 0, -1, 32767)) == b"\xff\x7f\x80"
    assert _ints(g.ulaw_decode(b"\xff\x7f\x80\x00")) == [0, 0, 32124, -32124]
    # A-law silence is 0xD5 (even bits toggled), and it decodes to half a step: 8.
    assert g.alaw_encode(struct.pack("<3h", 0, -1, 32767)) == b"\xd5\x55\xaa"
    assert _ints(g.alaw_decode(b"\xd5\x55\xaa\x2a")) == [8, -8, 32256, -32256]


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("law", ["ulaw", "alaw"])
def test_round_trip_error_is_within_half_a_step(impl: str, law: str) -> None:
    g = media_module(impl, "g711")
    encode, decode = getattr(g, f"{law}_encode"), getattr(g, f"{law}_decode")
    for x, y in zip(range(-32768, 32768, 7), _ints(decode(encode(ALL_SAMPLES)))[::7], strict=True):
        # Logarithmic coding: the error grows with the magnitude, 1/32 of it at most, plus
        # the smallest step near zero.
        assert abs(x - y) <= max(abs(x) // 16, 16), (law, x, y)
    decoded = _ints(decode(ALL_CODES))
    assert _ints(decode(encode(struct.pack(f"<{len(decoded)}h", *decoded)))) == decoded


@pytest.mark.parametrize("impl", IMPLS)
def test_odd_length_is_rejected(impl: str) -> None:
    g = media_module(impl, "g711")
    for fn in (g.ulaw_encode, g.alaw_encode):
        with pytest.raises(BadSampleData) as err:
            fn(b"\x00\x01\x02")
        assert err.value.length == 3


@pytest.mark.parametrize("impl", IMPLS)
def test_buffer_types_and_empty(impl: str) -> None:
    g = media_module(impl, "g711")
    pcm = struct.pack("<4h", 1, -300, 5000, -32768)
    expected = g.ulaw_encode(pcm)
    assert g.ulaw_encode(bytearray(pcm)) == expected
    assert g.ulaw_encode(memoryview(pcm)) == expected
    assert g.ulaw_encode(memoryview(pcm).cast("h")) == expected
    assert g.ulaw_encode(b"") == b"" and g.alaw_decode(b"") == b""


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=2000).map(lambda b: b[: len(b) & ~1]))
def test_native_equals_twin_on_random_audio(pcm: bytes) -> None:
    for fn in ("ulaw_encode", "alaw_encode"):
        assert getattr(native, fn)(pcm) == getattr(twin, fn)(pcm)
    for fn in ("ulaw_decode", "alaw_decode"):
        assert getattr(native, fn)(pcm) == getattr(twin, fn)(pcm)


def _audioop():  # type: ignore[no-untyped-def]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            import audioop
        except ImportError:
            pytest.skip("audioop is gone from this Python (3.13+)")
    return audioop


def test_against_audioop_alaw_exact() -> None:
    audioop = _audioop()
    assert native.alaw_encode(ALL_SAMPLES) == audioop.lin2alaw(ALL_SAMPLES, 2)
    assert native.alaw_decode(ALL_CODES) == audioop.alaw2lin(ALL_CODES, 2)


def test_against_audioop_ulaw_differs_only_at_negative_decision_points() -> None:
    """audioop's μ-law takes a negative sample's magnitude as -x with its own bias and clip;
    G.191 takes ~x = -x-1 on 14 bits. Decoding agrees everywhere and encoding agrees for
    every x >= 0; for negative x, G.191 chooses the next smaller magnitude (code + 1) on the
    few samples right at a decision point: 508 of the 32,768 negative inputs.
    """
    audioop = _audioop()
    assert native.ulaw_decode(ALL_CODES) == audioop.ulaw2lin(ALL_CODES, 2)
    ours = native.ulaw_encode(ALL_SAMPLES)
    theirs = audioop.lin2ulaw(ALL_SAMPLES, 2)
    assert ours[32768:] == theirs[32768:]
    differ = [i - 32768 for i in range(32768) if ours[i] != theirs[i]]
    assert all(ours[x + 32768] == theirs[x + 32768] + 1 for x in differ)
    assert len(differ) == 508
    assert -1 in differ and ours[32767] == 0x7F
