"""Client WebSocket frames: the native builder against its twin, RFC 6455 and websockets."""

from __future__ import annotations

import os
import random
from types import ModuleType

import pytest
from conftest import IMPLS, both, media_module, seeded
from conftest import parse_client_frame as parse
from hypothesis import given, settings
from hypothesis import strategies as st
from websockets.frames import Opcode

native, twin = both("wsframe")


@pytest.fixture(params=IMPLS)
def w(request: pytest.FixtureRequest) -> ModuleType:
    return media_module(request.param, "wsframe")


def test_the_rfc_6455_example(w: ModuleType) -> None:
    # Section 5.7: a single-frame masked text message containing "Hello".
    mask = bytes.fromhex("37fa213d")
    builder = w.FrameBuilder(lambda n: mask + bytes(n - 4))
    assert builder.frame(b"Hello") == bytes.fromhex("818537fa213d7f9f4d5158")


@pytest.mark.parametrize(("n", "head"), [(0, "8180"), (125, "81fd"), (126, "81fe007e"),
                                         (65535, "81feffff"),
                                         (65536, "81ff0000000000010000")])
def test_each_length_form(w: ModuleType, n: int, head: str) -> None:
    frame = w.FrameBuilder(seeded(1)).frame(bytes(n))
    assert frame.startswith(bytes.fromhex(head))
    assert len(frame) == len(head) // 2 + 4 + n
    assert parse(frame).data == bytes(n)


@settings(max_examples=60, deadline=None)
@given(sizes=st.lists(st.integers(0, 3000), min_size=1, max_size=40), seed=st.integers(0, 99),
       binary=st.booleans())
def test_native_equals_twin_and_websockets_reads_it(sizes: list[int], seed: int,
                                                    binary: bool) -> None:
    a, b = native.FrameBuilder(seeded(seed)), twin.FrameBuilder(seeded(seed))
    rng = random.Random(seed)
    opcode = native.OP_BINARY if binary else native.OP_TEXT
    for n in sizes:
        data = rng.randbytes(n)
        frame = a.frame(data, opcode)
        assert frame == b.frame(bytearray(data), opcode)
        got = parse(frame)
        assert got.fin and got.data == data
        assert got.opcode is (Opcode.BINARY if binary else Opcode.TEXT)


def test_masks_come_from_the_pool_a_refill_at_a_time(w: ModuleType) -> None:
    calls: list[int] = []

    def source(n: int) -> bytes:
        calls.append(n)
        return os.urandom(n)

    builder = w.FrameBuilder(source)
    masks = {builder.frame(b"x")[2:6] for _ in range(w.POOL_BYTES // 4 + 1)}
    assert calls == [w.POOL_BYTES, w.POOL_BYTES]  # one refill per POOL_BYTES / 4 frames
    assert len(masks) > w.POOL_BYTES // 4 - 5  # fresh masks, not one reused


def test_a_bad_random_source_is_refused(w: ModuleType) -> None:
    with pytest.raises(ValueError, match="must return"):
        w.FrameBuilder(lambda n: b"\x00" * 3).frame(b"x")


def test_memoryviews_and_bytearrays_are_framed_like_bytes(w: ModuleType) -> None:
    data = b'{"type":"input_audio_buffer.append","audio":"AAAA"}'
    frames = [w.FrameBuilder(seeded(2)).frame(x) for x in (data, bytearray(data),
                                                           memoryview(data))]
    assert frames[0] == frames[1] == frames[2]
