"""G.711: the native tables against the G.191 reference twin, and both against audioop."""

from __future__ import annotations

import array
import struct
import sys
import warnings
from types import ModuleType

import numpy as np
import pytest
from conftest import IMPLS, both, media_module
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.errors import BadSampleData

native, twin = both("g711")
ALL_SAMPLES = struct.pack("<65536h", *range(-32768, 32768))
ALL_CODES = bytes(range(256))


@pytest.fixture(params=IMPLS)
def g(request: pytest.FixtureRequest) -> ModuleType:
    return media_module(request.param, "g711")


def _ints(pcm: bytes) -> list[int]:
    return list(struct.unpack(f"<{len(pcm) // 2}h", pcm))


def _pcm(values: list[int]) -> bytes:
    return struct.pack(f"<{len(values)}h", *values)


@pytest.mark.parametrize("fn", ["ulaw_encode", "alaw_encode"])
def test_encoders_agree_on_every_sample(fn: str) -> None:
    assert getattr(native, fn)(ALL_SAMPLES) == getattr(twin, fn)(ALL_SAMPLES)


@pytest.mark.parametrize("fn", ["ulaw_decode", "alaw_decode"])
def test_decoders_agree_on_every_code(fn: str) -> None:
    assert getattr(native, fn)(ALL_CODES) == getattr(twin, fn)(ALL_CODES)


def test_codes_depend_only_on_the_bits_the_tables_index() -> None:
    """μ-law reads the top 14 bits, A-law the top 12: the native tables' index widths."""
    for fn, group in ((twin.ulaw_encode, 4), (twin.alaw_encode, 16)):
        codes = fn(ALL_SAMPLES)
        assert all(len(set(codes[i : i + group])) == 1 for i in range(0, 65536, group))
        assert len(set(codes[0::group])) == 256


def test_reference_values(g: ModuleType) -> None:
    # Worked through g711.c by hand. μ-law: 0 is 0xFF; -1 is (~-1) >> 2 = 0 in magnitude with
    # the sign bit clear, the "negative zero" 0x7F; 1000 is 250 on 14 bits, +33 = 283:
    # segment 4, mantissa 1, so 0x80 | (8 - 4) << 4 | (15 - 1) = 0xCE, which decodes to the
    # interval's middle, 988. The extremes clip to 32124.
    samples = _pcm([0, -1, 1000, -1000, 32767, -32768])
    assert g.ulaw_encode(samples) == bytes([0xFF, 0x7F, 0xCE, 0x4E, 0x80, 0x00])
    assert _ints(g.ulaw_decode(bytes([0xFF, 0x7F, 0xCE, 0x4E, 0x80, 0x00]))) == [
        0, 0, 988, -988, 32124, -32124,
    ]
    # A-law: 0 is 0xD5 (the even bits toggled) and decodes to half a step, 8; 1000 >> 4 = 62
    # is exponent 2, mantissa 15: (2 << 4 | 15 | 0x80) ^ 0x55 = 0xFA, decoding to 1008.
    assert g.alaw_encode(samples) == bytes([0xD5, 0x55, 0xFA, 0x7A, 0xAA, 0x2A])
    assert _ints(g.alaw_decode(bytes([0xD5, 0x55, 0xFA, 0x7A, 0xAA, 0x2A]))) == [
        8, -8, 1008, -1008, 32256, -32256,
    ]


def _half_step(law: str, code: int) -> int:
    if law == "ulaw":
        exponent = ((~code) >> 4) & 7
        return 4 << exponent  # a step is 8 << exponent on the 16-bit scale
    segment = ((code ^ 0x55) >> 4) & 7
    return 8 << max(segment - 1, 0)  # segments 0 and 1 share the 16-wide step


@pytest.mark.parametrize("law", ["ulaw", "alaw"])
def test_round_trip_error_is_half_a_step_at_most(g: ModuleType, law: str) -> None:
    encode, decode = getattr(g, f"{law}_encode"), getattr(g, f"{law}_decode")
    codes = encode(ALL_SAMPLES)
    decoded = _ints(decode(codes))
    top = max(decoded)
    for x, y, code in zip(range(-32768, 32768), decoded, codes, strict=True):
        # Above the largest level only clipping is left: μ-law's 32124 sits lower than
        # A-law's 32256, so it clips up to 644 at -32768.
        assert abs(x - y) <= max(_half_step(law, code), abs(x) - top), (x, y, code)
    # Every level encodes back to its own code, but μ-law's negative zero 0x7F: its level 0
    # is the positive zero's, 0xFF.
    levels = decode(ALL_CODES)
    expected = ALL_CODES.replace(b"\x7f", b"\xff") if law == "ulaw" else ALL_CODES
    assert encode(levels) == expected


def _native_order(samples: array.array[int]) -> array.array[int]:
    if sys.byteorder == "big":
        samples.byteswap()
    return samples


def test_odd_length_is_rejected(g: ModuleType) -> None:
    for fn in (g.ulaw_encode, g.alaw_encode):
        with pytest.raises(BadSampleData) as err:
            fn(b"\x00\x01\x02")
        assert err.value.length == 3


def test_any_contiguous_buffer_and_empty(g: ModuleType) -> None:
    values = [1, -300, 5000, -32768, 32767]
    pcm = _pcm(values)
    expected_u, expected_a = g.ulaw_encode(pcm), g.alaw_encode(pcm)
    for buf in (
        bytearray(pcm),
        memoryview(pcm),
        memoryview(pcm).cast("h"),
        _native_order(array.array("h", values)),
        np.array(values, dtype="<i2"),
    ):
        assert g.ulaw_encode(buf) == expected_u
        assert g.alaw_encode(buf) == expected_a
    assert g.ulaw_decode(memoryview(expected_u)) == g.ulaw_decode(expected_u)
    assert g.alaw_decode(bytearray(expected_a)) == g.alaw_decode(expected_a)
    assert g.ulaw_encode(b"") == g.alaw_encode(b"") == b""
    assert g.ulaw_decode(b"") == g.alaw_decode(b"") == b""


def test_non_contiguous_buffer_is_refused(g: ModuleType) -> None:
    strided = np.zeros(8, dtype="<i2")[::2]
    for fn in (g.ulaw_encode, g.alaw_encode, g.ulaw_decode, g.alaw_decode):
        with pytest.raises(BufferError):
            fn(strided)


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=3000), st.sampled_from(["bytes", "bytearray", "memoryview"]))
def test_native_equals_twin_on_random_buffers(data: bytes, kind: str) -> None:
    wrap = {"bytes": bytes, "bytearray": bytearray, "memoryview": memoryview}[kind]
    for fn in ("ulaw_decode", "alaw_decode"):
        assert getattr(native, fn)(wrap(data)) == getattr(twin, fn)(data)
    pcm = data[: len(data) & ~1]
    for fn in ("ulaw_encode", "alaw_encode"):
        assert getattr(native, fn)(wrap(pcm)) == getattr(twin, fn)(pcm)
    if len(data) % 2:
        for fn in ("ulaw_encode", "alaw_encode"):
            with pytest.raises(BadSampleData):
                getattr(native, fn)(wrap(data))


def _audioop() -> ModuleType:
    with warnings.catch_warnings():
        # 3.11 and 3.12 warn on import (PEP 594); the module is gone from 3.13.
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            import audioop
        except ImportError:
            pytest.skip("audioop is not in this Python (removed in 3.13)")
    return audioop


def test_alaw_matches_audioop_everywhere() -> None:
    audioop = _audioop()
    assert native.alaw_encode(ALL_SAMPLES) == audioop.lin2alaw(ALL_SAMPLES, 2)
    assert native.alaw_decode(ALL_CODES) == audioop.alaw2lin(ALL_CODES, 2)


def test_ulaw_matches_audioop_but_for_its_negative_magnitude() -> None:
    """audioop (Sun's g711.c) rounds a negative sample's magnitude differently.

    On 14 bits, audioop takes -(x >> 2), that is ceil(-x / 4); G.191 takes (~x) >> 2, that
    is floor((-x - 1) / 4), always one less. So for x < 0 audioop codes x as G.191 codes
    x - 4 (both clip to the same code at the bottom). Decoding agrees everywhere, and so does
    encoding for x >= 0. The codes differ only where x - 4 crosses one of G.191's 127
    negative decision levels: 4 samples each, 508 in all, -1 among them (G.191's 0x7F,
    audioop's 0x7E).
    """
    audioop = _audioop()
    assert native.ulaw_decode(ALL_CODES) == audioop.ulaw2lin(ALL_CODES, 2)
    ours = native.ulaw_encode(ALL_SAMPLES)
    theirs = audioop.lin2ulaw(ALL_SAMPLES, 2)
    assert ours[32768:] == theirs[32768:]
    shifted = bytes(ours[max(x - 4, -32768) + 32768] for x in range(-32768, 0))
    assert theirs[:32768] == shifted
    differ = [x for x in range(-32768, 0) if ours[x + 32768] != theirs[x + 32768]]
    assert len(differ) == 127 * 4
    assert (ours[32767], theirs[32767]) == (0x7F, 0x7E)
