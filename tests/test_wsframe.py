"""WebSocket frames: the native builder and reader against their twins, RFC 6455 and websockets."""

from __future__ import annotations

import os
import random
import sys
from types import ModuleType

import pytest
from conftest import IMPLS, both, media_module, seeded
from conftest import parse_client_frame as parse
from hypothesis import given, settings
from hypothesis import strategies as st
from websockets.client import ClientProtocol
from websockets.frames import Close, Frame, Opcode
from websockets.protocol import State
from websockets.server import ServerProtocol
from websockets.streams import StreamReader
from websockets.uri import parse_uri

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


# -- the reader ---------------------------------------------------------------------------------

def _wire(frame: Frame, masked: bool, mask: bytes = b"\x9c\x01\xe7\x5a") -> bytes:
    """``frame`` as it travels, masked (with ``mask``) when a client sends it."""
    plain = frame.serialize(mask=False)
    if not masked:
        return plain
    head = 2 + {126: 2, 127: 8}.get(plain[1] & 0x7F, 0)
    body = bytes(b ^ mask[i % 4] for i, b in enumerate(plain[head:]))
    return plain[:1] + bytes([plain[1] | 0x80]) + plain[2:head] + mask + body


def _chunks(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in zip(points, points[1:], strict=False)]


_message = st.tuples(st.sampled_from([Opcode.TEXT, Opcode.BINARY]),
                     st.lists(st.binary(max_size=300), min_size=1, max_size=4))
_control = st.tuples(st.sampled_from([Opcode.PING, Opcode.PONG]), st.binary(max_size=125))


@st.composite
def _streams(draw: st.DrawFn) -> list[Frame]:
    """Messages, some fragmented, with pings and pongs between (and inside) them."""
    frames: list[Frame] = []
    for _ in range(draw(st.integers(0, 6))):
        if draw(st.booleans()):
            opcode, data = draw(_control)
            frames.append(Frame(opcode, data))
        opcode, parts = draw(_message)
        for i, part in enumerate(parts):
            frames.append(Frame(opcode if i == 0 else Opcode.CONT, part,
                                fin=i == len(parts) - 1))
            if i < len(parts) - 1 and draw(st.booleans()):
                frames.append(Frame(Opcode.PING, draw(st.binary(max_size=20))))
    return frames


@settings(max_examples=150, deadline=None)
@given(frames=_streams(), cuts=st.lists(st.integers(0, 10_000), max_size=12),
       masked=st.booleans())
def test_reader_native_equals_twin_over_any_chunking(frames: list[Frame], cuts: list[int],
                                                      masked: bool) -> None:
    stream = b"".join(_wire(f, masked) for f in frames)
    a, b = native.FrameReader(1 << 20, masked), twin.FrameReader(1 << 20, masked)
    got_a: list[object] = []
    got_b: list[object] = []
    for chunk in _chunks(stream, cuts):
        got_a += a.feed(chunk)
        got_b += b.feed(bytearray(chunk))
    assert got_a == got_b
    # Data frames come out unmasked in order; control frames come out whole, as sent.
    expected: list[object] = []
    for f in frames:
        if f.opcode in (Opcode.PING, Opcode.PONG):
            expected.append(None)
        else:
            expected.append((int(f.opcode), f.fin, f.data))
    assert len(got_a) == len(expected)
    for item, want, frame in zip(got_a, expected, frames, strict=True):
        if want is None:
            assert isinstance(item, bytes)
            reader = StreamReader()
            reader.feed_data(item)
            parsed = _parse(reader, masked)
            assert parsed.opcode is frame.opcode and parsed.data == frame.data
        else:
            assert item == want
    assert not a.passthrough and a.violation is None


def _parse(reader: StreamReader, masked: bool) -> Frame:
    parser = Frame.parse(reader.read_exact, mask=masked)
    try:
        next(parser)
    except StopIteration as done:
        assert not reader.buffer
        return done.value  # type: ignore[no-any-return]
    raise AssertionError("incomplete frame")


@pytest.fixture(params=IMPLS)
def reader_module(request: pytest.FixtureRequest) -> ModuleType:
    return media_module(request.param, "wsframe")


def _rsv1(wire: bytes) -> bytes:
    return bytes([wire[0] | 0x40]) + wire[1:]


def _unfinished(wire: bytes) -> bytes:
    return bytes([wire[0] & 0x7F]) + wire[1:]


@pytest.mark.parametrize("odd", [
    _rsv1(_wire(Frame(Opcode.TEXT, b"x"), True)),    # an extension's bit: websockets judges
    _unfinished(_wire(Frame(Opcode.PING, b"y"), True)),  # a fragmented control frame
    _wire(Frame(Opcode.CLOSE, Close(1000, "bye").serialize()), True),  # websockets from here
])
def test_the_stream_goes_raw_from_the_first_frame_it_does_not_take(
        reader_module: ModuleType, odd: bytes) -> None:
    before = _wire(Frame(Opcode.TEXT, b'{"a":1}'), True)
    tail = odd + _wire(Frame(Opcode.TEXT, b"after"), True)
    r = reader_module.FrameReader(1 << 20, True)
    items = r.feed(before + tail[:3]) + r.feed(tail[3:])
    assert items[0] == (1, True, b'{"a":1}')
    assert b"".join(i for i in items[1:] if isinstance(i, bytes)) == tail
    assert r.passthrough and r.violation is None


def test_an_unmasked_client_frame_goes_to_websockets(reader_module: ModuleType) -> None:
    r = reader_module.FrameReader(1 << 20, True)  # a server reading a client: masks required
    raw = Frame(Opcode.TEXT, b"x").serialize(mask=False)
    assert r.feed(raw) == [raw] and r.passthrough


@pytest.mark.parametrize(("frames", "code", "reason"), [
    ([Frame(Opcode.CONT, b"x")], 1002, "unexpected continuation"),
    ([Frame(Opcode.TEXT, b"x", fin=False), Frame(Opcode.TEXT, b"y")], 1002,
     "expected a continuation"),
    ([Frame(Opcode.BINARY, bytes(60), fin=False), Frame(Opcode.CONT, bytes(60))], 1009,
     "message over 100 bytes"),
    ([Frame(Opcode.TEXT, bytes(101))], 1009, "message over 100 bytes"),
])
def test_fragment_order_and_message_size_are_judged(
        reader_module: ModuleType, frames: list[Frame], code: int, reason: str) -> None:
    r = reader_module.FrameReader(100, False)
    items: list[object] = []
    for f in frames[:-1]:
        items += r.feed(f.serialize(mask=False))
    items += r.feed(frames[-1].serialize(mask=False)[:5])  # its header is enough to judge
    assert r.violation is not None
    assert r.violation[0] == code and reason in r.violation[1]
    assert r.feed(b"more") == []
    assert all(isinstance(i, tuple) for i in items)


def _header(first: int, n: int) -> bytes:
    return bytes([first, 127]) + n.to_bytes(8, "big")  # unmasked, 64-bit length


@pytest.mark.parametrize(("frames", "violation"), [
    # The sizes near 2**63 once overflowed a signed sum in the native reader.
    ([b"\x01\x05hello", _header(0x00, 2**63 - 3)], (1009, f"message over {sys.maxsize} bytes")),
    ([_header(0x81, 2**63 - 1)], None),  # within the limit, and never complete
    ([b"\x01\x05hello", _header(0x80, 2**63 - 6)], None),
])
def test_a_limit_as_large_as_memory_is_judged_without_overflow(
        reader_module: ModuleType, frames: list[bytes], violation: object) -> None:
    r = reader_module.FrameReader(sys.maxsize, False)
    items = [item for f in frames for item in r.feed(f)]
    assert r.violation == violation
    assert items == ([(1, False, b"hello")] if len(frames) > 1 else [])


def test_websockets_answers_the_pings_the_reader_hands_it() -> None:
    client = ClientProtocol(parse_uri("ws://sim.invalid/v1/realtime"))
    client.send_request(client.connect())
    server = ServerProtocol()
    server.receive_data(b"".join(client.data_to_send()))
    server.send_response(server.accept(server.events_received()[0]))
    client.receive_data(b"".join(server.data_to_send()))
    assert client.state is State.OPEN and len(client.events_received()) == 1  # the response
    client.send_ping(b"hi")
    client.send_text(b"hello")
    reader = native.FrameReader(1 << 20, True)
    items = reader.feed(b"".join(client.data_to_send()))
    assert isinstance(items[0], bytes) and items[1] == (1, True, b"hello")
    server.receive_data(items[0])
    assert [type(e) for e in server.events_received()] == [Frame]
    client.receive_data(b"".join(server.data_to_send()))
    pong = client.events_received()[0]
    assert pong.opcode is Opcode.PONG and pong.data == b"hi"
