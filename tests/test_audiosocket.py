"""AudioSocket framing: real Asterisk captures in every chunking, every violation, the encoder."""

from __future__ import annotations

import array
import json
import math
import sys
import tracemalloc
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from functools import cache
from types import ModuleType

import numpy as np
import pytest
from conftest import FIXTURES, IMPLS, both, media_module
from fuzz.audiosocket import norm  # one way to compare events, for the tests and the fuzzer
from hypothesis import given, settings
from hypothesis import strategies as st

from engine import errors

native, twin = both("audiosocket")
CAPTURES = FIXTURES / "audiosocket"
SESSIONS = ("app8k", "app8k_dtmf", "app8k_hangup_by_engine", "chan16k", "chan24k")
CALL_ID = uuid.UUID("12345678-1234-5678-1234-567812345678")
UUID_MSG = b"\x01\x00\x10" + CALL_ID.bytes
HANGUP_MSG = b"\x00\x00\x00"
RATES = {0x10: 8000, 0x11: 12000, 0x12: 16000, 0x13: 24000, 0x14: 32000,
         0x15: 44100, 0x16: 48000, 0x17: 96000, 0x18: 192000}


@pytest.fixture(params=IMPLS, scope="module")
def m(request: pytest.FixtureRequest) -> ModuleType:
    return media_module(request.param, "audiosocket")


def frame(kind: int, payload: bytes) -> bytes:
    """One message, built here independently of the encoder under test."""
    return bytes((kind, len(payload) >> 8, len(payload) & 0xFF)) + payload


def feed(m: ModuleType, chunks: Iterable[bytes], eof: bool = True, **kw: int) -> list[object]:
    parser = m.Parser(**kw)
    events: list[object] = []
    for chunk in chunks:
        parser.receive_data(chunk)
        events += parser.events_received()
    if eof:
        parser.receive_eof()
        events += parser.events_received()
    return events


def cut(data: bytes, at: Iterable[int]) -> list[bytes]:
    bounds = [0, *sorted(set(at) - {0, len(data)}), len(data)]
    return [data[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]


def sized(data: bytes, sizes: list[int]) -> list[bytes]:
    """``data`` in chunks of the given sizes, cycled."""
    out, at, i = [], 0, 0
    while at < len(data):
        out.append(data[at : at + sizes[i % len(sizes)]])
        at += sizes[i % len(sizes)]
        i += 1
    return out


@cache
def session(name: str) -> tuple[bytes, tuple[dict[str, int], ...]]:
    data = (CAPTURES / f"{name}.bin").read_bytes()
    lines = (CAPTURES / f"{name}.jsonl").read_text().splitlines()
    return data, tuple(json.loads(line) for line in lines)


@cache
def expected(impl: str, name: str) -> list[object]:
    """The events the capture's .jsonl says the parser must give, built from the record."""
    m = media_module(impl, "audiosocket")
    data, messages = session(name)
    out: list[object] = []
    for msg in messages:
        payload = data[msg["offset"] + 3 : msg["offset"] + 3 + msg["len"]]
        assert data[msg["offset"]] == msg["kind"]
        if msg["kind"] == 0x01:
            out.append(m.UuidReceived(uuid.UUID(bytes=payload)))
        elif msg["kind"] == 0x03:
            out.append(m.DtmfReceived(payload.decode("ascii")))
        else:
            out.append(m.AudioReceived(msg["kind"], RATES[msg["kind"]], payload))
    return [*out, m.PeerClosed()]


def check_session(m: ModuleType, name: str, events: list[object]) -> None:
    want = expected("native" if m is native else "python", name)
    assert len(events) == len(want)
    assert events == want
    assert type(events[0]).__name__ == "UuidReceived"
    assert type(events[-1]).__name__ == "PeerClosed"


# What the capture README states for each file: audio kind and frame sizes, DTMF digits.
SUMMARY = {
    "app8k": (0x10, {320: 199, 276: 1}, ""),
    "app8k_dtmf": (0x10, {320: 197, 276: 2}, "19#"),
    "app8k_hangup_by_engine": (0x10, {320: 100}, ""),
    "chan16k": (0x12, {640: 200}, ""),
    "chan24k": (0x13, {960: 200}, ""),
}


@pytest.mark.parametrize("name", SESSIONS)
def test_recorded_session_whole(m: ModuleType, name: str) -> None:
    data, _ = session(name)
    parser = m.Parser()
    parser.receive_data(data)
    parser.receive_eof()
    events = parser.events_received()
    check_session(m, name, events)
    assert parser.finished and parser.uuid == events[0].uuid
    assert parser.events_received() == []
    kind, sizes, digits = SUMMARY[name]
    audio = [e for e in events if type(e).__name__ == "AudioReceived"]
    assert {(e.kind, e.rate) for e in audio} == {(kind, RATES[kind])}
    assert Counter(len(e.payload) for e in audio) == sizes
    assert "".join(e.digit for e in events if type(e).__name__ == "DtmfReceived") == digits


@pytest.mark.parametrize("name", SESSIONS)
def test_recorded_session_byte_by_byte(m: ModuleType, name: str) -> None:
    data, _ = session(name)
    check_session(m, name, feed(m, (data[i : i + 1] for i in range(len(data)))))


@pytest.mark.parametrize("name", SESSIONS)
@pytest.mark.parametrize("inside", [(1,), (2,), (1, 2)], ids=["after1", "after2", "after1and2"])
def test_recorded_session_split_inside_every_header(
    m: ModuleType, name: str, inside: tuple[int, ...]
) -> None:
    data, messages = session(name)
    cuts = [msg["offset"] + k for msg in messages for k in inside]
    check_session(m, name, feed(m, cut(data, cuts)))


@settings(max_examples=25, deadline=None)
@given(
    name=st.sampled_from(SESSIONS),
    sizes=st.lists(st.integers(1, 3000), min_size=1, max_size=40),
)
def test_recorded_session_in_random_chunks(m: ModuleType, name: str, sizes: list[int]) -> None:
    data, _ = session(name)
    check_session(m, name, feed(m, sized(data, sizes)))


def test_dtmf_arrives_between_the_recorded_audio_frames(m: ModuleType) -> None:
    events = feed(m, [session("app8k_dtmf")[0]])
    names = [type(e).__name__ for e in events]
    # Messages 50, 51 and 52 of the capture, back to back, after the short frame 49.
    assert [i for i, n in enumerate(names) if n == "DtmfReceived"] == [50, 51, 52]
    assert [events[i].digit for i in (50, 51, 52)] == ["1", "9", "#"]
    assert names[49] == names[53] == "AudioReceived"
    assert len(events[49].payload) == 276 and len(events[53].payload) == 320


def signal(n: int) -> int:
    """Sample ``n`` of the 8 kHz test signal of the capture README."""
    amp = 32767 * 10 ** (-12 / 20)
    if n < 8000:
        return round(amp * math.sin(2 * math.pi * 440 * n / 8000))
    if 12000 <= n < 20000:
        k = n - 12000
        return round(
            0.5 * amp * (math.sin(2 * math.pi * 700 * k / 8000)
                         + math.sin(2 * math.pi * 1200 * k / 8000))
        )
    return 0


SIGNAL = np.array([signal(n) for n in range(32000)], dtype=np.int16)


@pytest.mark.parametrize(
    ("name", "samples"),
    [
        ("app8k", SIGNAL[:31978]),
        ("app8k_dtmf", np.concatenate([SIGNAL[160:7978], SIGNAL[8000:31978]])),
        ("app8k_hangup_by_engine", SIGNAL[160:16160]),
    ],
)
def test_8k_audio_is_the_test_signal_bit_exact(m: ModuleType, name: str, samples: object) -> None:
    events = feed(m, sized(session(name)[0], [1000, 7]))
    pcm = b"".join(e.payload for e in events if type(e).__name__ == "AudioReceived")
    assert np.array_equal(np.frombuffer(pcm, "<i2"), samples)


def test_audio_rates_match_the_tone(m: ModuleType) -> None:
    """The first active second of every capture is 440 Hz at the rate its kind implies."""
    for name in SESSIONS:
        events = feed(m, [session(name)[0]])
        audio = [e for e in events if type(e).__name__ == "AudioReceived"]
        rate = audio[0].rate
        x = np.frombuffer(b"".join(e.payload for e in audio), "<i2")[: rate // 2].astype(float)
        peak = np.argmax(np.abs(np.fft.rfft(x * np.hanning(len(x)))))
        assert abs(peak * rate / len(x) - 440) <= 2, name


@pytest.mark.parametrize(
    ("tail", "fields"),
    [
        (b"\x10", (None, 3, 1)),
        (b"\x10\x01", (None, 3, 2)),
        (b"\x10\x01\x40", (0x10, 323, 3)),
        (b"\x10\x01\x40" + bytes(100), (0x10, 323, 103)),
        (b"\x10\x01\x40" + bytes(319), (0x10, 323, 322)),
        (b"\x03\x00\x01", (0x03, 4, 3)),
    ],
)
def test_trailing_bytes_are_a_truncated_message(
    m: ModuleType, tail: bytes, fields: tuple[object, ...]
) -> None:
    data, _ = session("app8k")
    whole = data + tail
    for chunks in (
        [whole],
        [data, tail],
        [whole[:-2], whole[-2:]],
        cut(whole, range(len(data) - 400, len(whole))),
    ):
        events = feed(m, chunks)
        assert events[:-1] == expected("native" if m is native else "python", "app8k")[:-1]
        err = events[-1].error
        assert type(err) is errors.TruncatedMessage
        assert (err.kind, err.expected, err.received) == fields
        assert str(err)


# (bytes that decide the violation with their last byte, error class, fields, max_payload)
VIOLATIONS = [
    (b"\x02\x00\x00", errors.UnknownKind, {"kind": 0x02}, None),
    (b"\x04\xff\xff", errors.UnknownKind, {"kind": 0x04}, None),
    (UUID_MSG + b"\x19\x00\x02", errors.UnknownKind, {"kind": 0x19}, None),
    (UUID_MSG + b"\x0f\x01\x40", errors.UnknownKind, {"kind": 0x0F}, None),
    (UUID_MSG + b"\xfe\x00\x00", errors.UnknownKind, {"kind": 0xFE}, None),
    (b"\x10\x01\x40", errors.FirstMessageNotUuid, {"kind": 0x10}, None),
    (b"\x00\x00\x00", errors.FirstMessageNotUuid, {"kind": 0x00}, None),
    (b"\x03\x00\x01", errors.FirstMessageNotUuid, {"kind": 0x03}, None),
    (b"\xff\x00\x01", errors.FirstMessageNotUuid, {"kind": 0xFF}, None),
    (b"\x12\xff\xff", errors.FirstMessageNotUuid, {"kind": 0x12}, None),
    (UUID_MSG + b"\x10\x40\x02", errors.FrameTooLarge,
     {"kind": 0x10, "size": 16386, "limit": 16384}, None),
    (UUID_MSG + b"\x10\xff\xff", errors.FrameTooLarge,
     {"kind": 0x10, "size": 65535, "limit": 16384}, None),
    (UUID_MSG + b"\xff\x01\x00", errors.FrameTooLarge,
     {"kind": 0xFF, "size": 256, "limit": 255}, 255),
    (UUID_MSG + b"\x03\x00\x11", errors.FrameTooLarge, {"kind": 0x03, "size": 17, "limit": 16}, 16),
    (b"\x01\x01\x00", errors.FrameTooLarge, {"kind": 0x01, "size": 256, "limit": 255}, 255),
    (b"\x01\x00\x0f", errors.MalformedUuid, {"length": 15}, None),
    (b"\x01\x00\x11", errors.MalformedUuid, {"length": 17}, None),
    (b"\x01\x00\x00", errors.MalformedUuid, {"length": 0}, None),
    (UUID_MSG + b"\x01\x00\x10", errors.DuplicateUuid, {}, None),
    (UUID_MSG + b"\x01\x00\x04", errors.MalformedUuid, {"length": 4}, None),
    (UUID_MSG + b"\x10\x00\x00", errors.BadAudioLength, {"kind": 0x10, "length": 0}, None),
    (UUID_MSG + b"\x12\x01\x41", errors.BadAudioLength, {"kind": 0x12, "length": 321}, None),
    (UUID_MSG + b"\x18\x00\x01", errors.BadAudioLength, {"kind": 0x18, "length": 1}, None),
    (UUID_MSG + b"\x00\x00\x01", errors.MalformedHangup, {"length": 1}, None),
    (UUID_MSG + b"\x00\x01\x00", errors.MalformedHangup, {"length": 256}, None),
    (UUID_MSG + b"\x03\x00\x00", errors.MalformedDtmf, {"payload": b""}, None),
    (UUID_MSG + b"\x03\x00\x01x", errors.MalformedDtmf, {"payload": b"x"}, None),
    (UUID_MSG + b"\x03\x00\x01a", errors.MalformedDtmf, {"payload": b"a"}, None),
    (UUID_MSG + b"\x03\x00\x01\x00", errors.MalformedDtmf, {"payload": b"\x00"}, None),
    (UUID_MSG + b"\x03\x00\x0212", errors.MalformedDtmf, {"payload": b"12"}, None),
    (UUID_MSG + b"\x10\x00\x02ab\x03\x00\x01E", errors.MalformedDtmf, {"payload": b"E"}, None),
]


@pytest.mark.parametrize(("data", "cls", "fields", "limit"), VIOLATIONS)
def test_each_violation_is_one_terminal_event_as_soon_as_decided(
    m: ModuleType, data: bytes, cls: type, fields: dict[str, object], limit: int | None
) -> None:
    kw = {} if limit is None else {"max_payload": limit}
    for chunks in ([data], [data[i : i + 1] for i in range(len(data))], [data[:-1], data[-1:]]):
        parser = m.Parser(**kw)
        for chunk in chunks[:-1]:
            parser.receive_data(chunk)
        # Nothing is decided until the last byte: a bad header never waits for a payload.
        assert not parser.finished
        assert not any(type(e).__name__ == "ProtocolViolation" for e in parser.events_received())
        parser.receive_data(chunks[-1])
        assert parser.finished
        events = parser.events_received()
        assert [type(e).__name__ for e in events][-1:] == ["ProtocolViolation"]
        assert sum(type(e).__name__ == "ProtocolViolation" for e in events) == 1
        err = events[-1].error
        assert type(err) is cls and isinstance(err, errors.PeerProtocolError)
        assert {key: getattr(err, key) for key in fields} == fields
        assert str(err)
        # Everything later is ignored, EOF included, and nothing raises.
        parser.receive_data(UUID_MSG + frame(0x10, b"ab") + b"\x02\x00\x00")
        parser.receive_data(b"")
        parser.receive_eof()
        parser.receive_eof()
        assert parser.events_received() == []
        assert parser.finished


def test_the_rules_apply_in_order(m: ModuleType) -> None:
    """Unknown kind, then UUID first, then the size limit, then the per-kind rules."""

    def error(data: bytes, **kw: int) -> str:
        return type(feed(m, [data], **kw)[-1].error).__name__

    assert error(b"\x02\xff\xff") == "UnknownKind"  # not FirstMessageNotUuid, not too large
    assert error(b"\x10\xff\xff") == "FirstMessageNotUuid"  # not FrameTooLarge
    assert error(b"\x01\x00\x11", max_payload=16) == "FrameTooLarge"  # not MalformedUuid
    assert error(UUID_MSG + b"\x11\x40\x01") == "FrameTooLarge"  # not BadAudioLength
    assert error(UUID_MSG + b"\x00\x40\x01") == "FrameTooLarge"  # not MalformedHangup
    assert error(UUID_MSG + b"\x01\x00\x11") == "MalformedUuid"  # a second, malformed UUID


def test_violation_events_compare_by_error_type_and_args(m: ModuleType) -> None:
    a = m.ProtocolViolation(errors.UnknownKind(2))
    assert a == m.ProtocolViolation(errors.UnknownKind(2))
    assert hash(a) == hash(m.ProtocolViolation(errors.UnknownKind(2)))
    assert a != m.ProtocolViolation(errors.UnknownKind(3))
    assert a != m.ProtocolViolation(errors.FirstMessageNotUuid(2))
    assert a.error.kind == 2


def test_hangup_and_error_messages_are_events(m: ModuleType) -> None:
    data = UUID_MSG + frame(0xFF, b"\x07") + frame(0xFF, b"") + HANGUP_MSG + frame(0x10, b"ab")
    assert [norm(e) for e in feed(m, [data])[1:]] == [
        ("ErrorReceived", b"\x07"),
        ("ErrorReceived", b""),
        ("HangupReceived",),
        ("AudioReceived", 0x10, 8000, b"ab"),
        ("PeerClosed",),
    ]


def test_every_audio_kind_and_dtmf_digit(m: ModuleType) -> None:
    data = UUID_MSG + b"".join(frame(k, bytes(2 * k)) for k in RATES)
    data += b"".join(frame(0x03, bytes([d])) for d in b"0123456789*#ABCD")
    events = feed(m, [data])
    assert [norm(e) for e in events[1:10]] == [
        ("AudioReceived", k, r, bytes(2 * k)) for k, r in RATES.items()
    ]
    assert "".join(e.digit for e in events[10:26]) == "0123456789*#ABCD"
    assert norm(events[26]) == ("PeerClosed",)
    assert events[0].uuid == CALL_ID


def test_payload_limit_is_inclusive_and_large_messages_stream_in(m: ModuleType) -> None:
    big = frame(0x18, bytes(range(256)) * 255 + bytes(254))  # 65534 bytes, the largest audio
    data = UUID_MSG + frame(0x10, bytes(640)) + big + frame(0x10, b"ab")
    for chunks in ([data], sized(data, [997]), sized(data, [2, 70000])):
        events = feed(m, chunks, max_payload=65535)
        assert [len(e.payload) for e in events[1:4]] == [640, 65534, 2]
        assert events[2].payload == big[3:]
    data = UUID_MSG + frame(0x10, bytes(640)) + frame(0x10, bytes(642))
    events = feed(m, [data], max_payload=640)
    assert norm(events[1])[:2] == ("AudioReceived", 0x10)
    assert isinstance(events[2].error, errors.FrameTooLarge) and len(events) == 3


def test_parser_settings_and_state(m: ModuleType) -> None:
    parser = m.Parser()
    assert parser.max_payload == m.DEFAULT_MAX_PAYLOAD == 16384
    assert parser.uuid is None and not parser.finished
    parser.receive_data(bytearray(UUID_MSG[:10]))
    assert parser.uuid is None
    parser.receive_data(memoryview(UUID_MSG[10:] + b"\x10\x00\x04\x01\x00\x02\x00").cast("h"))
    assert parser.uuid == CALL_ID
    assert [norm(e) for e in parser.events_received()] == [
        ("UuidReceived", CALL_ID), ("AudioReceived", 0x10, 8000, b"\x01\x00\x02\x00")
    ]
    parser.receive_data(np.array([[0x10, 0], [2, 7], [8, 0]], dtype=np.uint8))
    assert norm(parser.events_received()[0]) == ("AudioReceived", 0x10, 8000, b"\x07\x08")
    with pytest.raises(AttributeError):
        parser.finished = True  # type: ignore[misc]
    with pytest.raises(BufferError):
        parser.receive_data(memoryview(bytes(8))[::2])
    with pytest.raises(TypeError):
        parser.receive_data("text")  # type: ignore[arg-type]
    assert m.Parser(16).max_payload == 16 and m.Parser(max_payload=65535).max_payload == 65535
    for bad in (15, 0, -1, 65536, "16", 16.0, None):
        with pytest.raises(errors.ConfigError):
            m.Parser(bad)  # type: ignore[arg-type]


def test_events_behave_like_frozen_dataclasses(m: ModuleType) -> None:
    a = m.AudioReceived(0x10, 8000, b"ab")
    assert a == m.AudioReceived(kind=0x10, rate=8000, payload=b"ab")
    assert a != m.AudioReceived(0x10, 8000, b"ac") and a != ("AudioReceived", 0x10)
    assert hash(a) == hash(m.AudioReceived(0x10, 8000, b"ab"))
    assert len({m.HangupReceived(), m.HangupReceived(), m.PeerClosed()}) == 2
    assert m.DtmfReceived("1") != m.DtmfReceived("9")
    assert m.ErrorReceived(b"\x01") == m.ErrorReceived(b"\x01")
    assert m.UuidReceived(CALL_ID) == m.UuidReceived(CALL_ID)
    with pytest.raises(AttributeError):
        a.payload = b""  # type: ignore[misc]
    match a:
        case m.AudioReceived(kind, rate, payload):
            assert (kind, rate, payload) == (0x10, 8000, b"ab")
        case _:
            pytest.fail("AudioReceived does not match positionally")


def test_native_and_twin_events_print_alike() -> None:
    for make in (
        lambda mod: mod.AudioReceived(0x13, 24000, b"\x00\x01"),
        lambda mod: mod.UuidReceived(CALL_ID),
        lambda mod: mod.DtmfReceived("#"),
        lambda mod: mod.HangupReceived(),
        lambda mod: mod.ErrorReceived(b"\x07"),
        lambda mod: mod.ProtocolViolation(errors.BadAudioLength(0x10, 3)),
        lambda mod: mod.PeerClosed(),
    ):
        assert repr(make(native)) == repr(make(twin))
        assert hash(make(native)) == hash(make(twin))
        assert type(make(native)).__match_args__ == type(make(twin)).__match_args__


def test_constants(m: ModuleType) -> None:
    assert (m.KIND_HANGUP, m.KIND_UUID, m.KIND_DTMF, m.KIND_ERROR) == (0x00, 0x01, 0x03, 0xFF)
    names = ["8K", "12K", "16K", "24K", "32K", "44K1", "48K", "96K", "192K"]
    assert [getattr(m, f"KIND_AUDIO_{n}") for n in names] == list(RATES)
    assert all(type(getattr(m, f"KIND_AUDIO_{n}")) is int for n in names)
    assert m.AUDIO_RATES == RATES
    assert m.HANGUP == HANGUP_MSG
    for kind, rate in RATES.items():
        assert m.kind_for_rate(rate) == kind
    for rate in (22050, 11025, 0, -8000):
        with pytest.raises(errors.UnsupportedRate) as info:
            m.kind_for_rate(rate)
        assert info.value.rate == rate
    assert sorted(m.__all__) == sorted(twin.__all__)
    assert all(hasattr(m, name) for name in m.__all__)


def messages_strategy() -> st.SearchStrategy[list[tuple[int, bytes]]]:
    audio = st.tuples(
        st.sampled_from(sorted(RATES)),
        st.integers(1, 250).flatmap(lambda n: st.binary(min_size=2 * n, max_size=2 * n)),
    )
    dtmf = st.sampled_from(b"0123456789*#ABCD").map(lambda d: (0x03, bytes([d])))
    error = st.binary(max_size=16).map(lambda b: (0xFF, b))
    hangup = st.just((0x00, b""))
    return st.lists(st.one_of(audio, audio, dtmf, error, hangup), max_size=25)


def expected_events(m: ModuleType, messages: list[tuple[int, bytes]]) -> list[object]:
    out: list[object] = [m.UuidReceived(CALL_ID)]
    for kind, payload in messages:
        if kind in RATES:
            out.append(m.AudioReceived(kind, RATES[kind], payload))
        elif kind == 0x03:
            out.append(m.DtmfReceived(payload.decode()))
        elif kind == 0xFF:
            out.append(m.ErrorReceived(payload))
        else:
            out.append(m.HangupReceived())
    return [*out, m.PeerClosed()]


@settings(max_examples=150, deadline=None)
@given(messages=messages_strategy(), sizes=st.lists(st.integers(1, 700), min_size=1, max_size=20))
def test_valid_streams_parse_to_their_messages_in_any_chunking(
    m: ModuleType, messages: list[tuple[int, bytes]], sizes: list[int]
) -> None:
    data = UUID_MSG + b"".join(frame(kind, payload) for kind, payload in messages)
    want = expected_events(m, messages)
    assert feed(m, [data]) == want
    assert feed(m, sized(data, sizes)) == want


def garbage_strategy() -> st.SearchStrategy[bytes]:
    """Byte strings near the protocol: real messages, odd headers and raw noise, mixed."""
    header = st.tuples(
        st.sampled_from([0x00, 0x01, 0x02, 0x03, 0x10, 0x12, 0x18, 0x19, 0xFF, 0x7F]),
        st.sampled_from([0, 1, 2, 15, 16, 17, 320, 321, 0x4000, 0x4001, 0xFFFF]),
    ).map(lambda t: bytes((t[0], t[1] >> 8, t[1] & 0xFF)))
    real = messages_strategy().map(lambda ms: b"".join(frame(k, p) for k, p in ms[:3]))
    part = st.one_of(header, real, st.binary(max_size=40), st.just(UUID_MSG))
    return st.lists(part, max_size=8).map(b"".join)


@settings(max_examples=300, deadline=None)
@given(
    data=st.one_of(st.binary(max_size=200), garbage_strategy()),
    prefix=st.booleans(),
    eof=st.booleans(),
    limit=st.sampled_from([16, 17, 320, 16384, 65535]),
    a=st.lists(st.integers(1, 64), min_size=1, max_size=10),
    b=st.lists(st.integers(1, 64), min_size=1, max_size=10),
)
def test_any_bytes_give_the_same_events_in_both(
    data: bytes, prefix: bool, eof: bool, limit: int, a: list[int], b: list[int]
) -> None:
    data = (UUID_MSG if prefix else b"") + data
    ours = [norm(e) for e in feed(native, sized(data, a), eof=eof, max_payload=limit)]
    ref = [norm(e) for e in feed(twin, sized(data, b), eof=eof, max_payload=limit)]
    assert ours == ref
    assert [norm(e) for e in feed(native, [data], eof=eof, max_payload=limit)] == ours
    violations = [e for e in ours if e[0] == "ProtocolViolation"]
    assert len(violations) <= 1 and (not violations or violations[0] == ours[-1])


PCM = np.arange(-80, 80, dtype="<i2").tobytes()


def test_encode_audio_round_trip(m: ModuleType) -> None:
    for kind in RATES:
        message = m.encode_audio(kind, PCM)
        assert type(message) is bytes and message == frame(kind, PCM)
        for same in (bytearray(PCM), memoryview(PCM), memoryview(PCM).cast("h"),
                     np.frombuffer(PCM, "<i2"), np.frombuffer(PCM, "<i2").reshape(4, 40),
                     array.array("h", np.frombuffer(PCM, "<i2").tolist())):
            assert m.encode_audio(kind, same) == message
        assert feed(m, [UUID_MSG + message])[1] == m.AudioReceived(kind, RATES[kind], PCM)
    assert m.encode_audio(0x10, bytes(65534)) == frame(0x10, bytes(65534))
    assert m.encode_audio(0x10, b"\xff\x7f") == b"\x10\x00\x02\xff\x7f"


@pytest.mark.parametrize(
    ("kind", "pcm", "length", "reason"),
    [
        (0x00, PCM, 320, "not an audio kind"),
        (0x01, PCM, 320, "not an audio kind"),
        (0x03, b"12", 2, "not an audio kind"),
        (0x0F, PCM, 320, "not an audio kind"),
        (0x19, PCM, 320, "not an audio kind"),
        (0xFF, PCM, 320, "not an audio kind"),
        (-1, PCM, 320, "not an audio kind"),
        (0x10, b"", 0, "empty"),
        (0x12, bytearray(), 0, "empty"),
        (0x10, b"abc", 3, "odd"),
        (0x18, bytes(65535), 65535, "odd"),
        (0x10, bytes(65536), 65536, "65535"),
        (0x13, np.zeros(40000, "<i2"), 80000, "65535"),
    ],
)
def test_encode_audio_refuses_what_asterisk_rejects(
    m: ModuleType, kind: int, pcm: bytes, length: int, reason: str
) -> None:
    with pytest.raises(errors.BadOutgoingAudio, match=reason) as info:
        m.encode_audio(kind, pcm)
    assert (info.value.kind, info.value.length) == (kind, length)
    assert isinstance(info.value, errors.LocalProtocolError)


def test_encode_audio_needs_a_contiguous_buffer(m: ModuleType) -> None:
    for strided in (memoryview(bytes(8))[::2], np.zeros((4, 4), "<i2")[:, 1]):
        with pytest.raises(BufferError):
            m.encode_audio(0x10, strided)
    with pytest.raises(TypeError):
        m.encode_audio(0x10, "text")


def test_silence_is_cached_and_silent(m: ModuleType) -> None:
    for kind, rate in RATES.items():
        for ms in (10, 20):
            message = m.silence(kind, ms)
            assert message is m.silence(kind, ms)
            assert message == frame(kind, bytes(rate * ms // 500))
    assert m.silence(0x10) is m.silence(0x10, 20)
    assert m.silence(0x10) == b"\x10\x01\x40" + bytes(320)
    assert m.silence(m.KIND_AUDIO_44K1) == b"\x15\x06\xe4" + bytes(1764)
    assert feed(m, [UUID_MSG + m.silence(0x13)])[1] == m.AudioReceived(0x13, 24000, bytes(960))
    for kind, ms, reason in [
        (0x01, 20, "not an audio kind"),
        (0x00, 20, "not an audio kind"),
        (0x10, 0, "not a positive duration"),
        (0x10, -20, "not a positive duration"),
        (0x15, 1, "not a whole number of samples"),
        (0x18, 200, "65535"),
    ]:
        with pytest.raises(errors.BadOutgoingAudio, match=reason):
            m.silence(kind, ms)


def traced(fn: Callable[..., object], *args: object) -> tuple[int, int]:
    """(bytes still allocated, peak bytes allocated) by one call of ``fn(*args)``.

    Only comparable with another figure from here: the ints that tracemalloc returns count too.
    """
    tracemalloc.start()
    try:
        # Keeps the traced total out of the small-int cache, so that every run makes the same
        # objects of its own.
        ballast = bytearray(4096)
        warm = fn(*args)
        tracemalloc.reset_peak()
        start = tracemalloc.get_traced_memory()[0]
        result = fn(*args)
        current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    del ballast, warm, result
    return current - start, peak - start


NOTHING = {}.get  # a call that makes no object


def test_encoding_a_frame_makes_exactly_one_allocation() -> None:
    """Native: the message is the only object made, and no second copy of the payload exists.

    Measured against ``bytes(n)``, which makes one object of the same size: any extra object,
    temporary or kept, would show in the retained or the peak figure.
    """
    for size in (320, 640, 960, 60000):
        pcm = bytes(size)
        assert traced(native.encode_audio, 0x10, pcm) == traced(bytes, size + 3)
    pcm16 = np.zeros(160, "<i2")
    assert traced(native.encode_audio, 0x10, pcm16) == traced(bytes, 323)


def retained(fn: Callable[[bytes], object], inputs: list[bytes]) -> tuple[int, int]:
    """(blocks, bytes) still allocated after ``fn`` ran on every input, results kept."""
    kept: list[object] = [None] * len(inputs)
    fn(inputs[0])
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        for i, pcm in enumerate(inputs):
            kept[i] = fn(pcm)
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    # The snapshots' own objects are made in tracemalloc.py, and their size varies.
    ours = [tracemalloc.Filter(False, tracemalloc.__file__)]
    diff = after.filter_traces(ours).compare_to(before.filter_traces(ours), "filename")
    return sum(stat.count_diff for stat in diff), sum(stat.size_diff for stat in diff)


def test_encoding_many_frames_keeps_one_block_each() -> None:
    """Native: encoding N frames leaves N blocks of message size, as N ``bytes(n)`` calls do."""
    frames = [bytes([i]) * 320 for i in range(200)]
    blocks, size = retained(lambda pcm: native.encode_audio(0x10, pcm), frames)
    assert blocks == len(frames)
    assert (blocks, size) == retained(lambda pcm: bytes(323), frames)


def test_silence_allocates_nothing(m: ModuleType) -> None:
    assert traced(m.silence, 0x12) == traced(NOTHING, 0x12)
    assert traced(m.silence, 0x12, 20) == traced(NOTHING, 0x12, 20)


def test_parsing_whole_messages_makes_one_payload_and_one_event_each() -> None:
    """Native: no copy of the input is kept, and at most two objects per message are made."""
    count = 200
    data = b"".join(frame(0x10, bytes([i]) * 320) for i in range(count))
    parser = native.Parser()
    parser.receive_data(UUID_MSG)
    parser.events_received()
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        parser.receive_data(data)
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    events = parser.events_received()
    assert len(events) == count
    ours = [tracemalloc.Filter(False, tracemalloc.__file__)]
    diff = after.filter_traces(ours).compare_to(before.filter_traces(ours), "filename")
    # A freelist may hand out some event objects without a new block; the event list is one.
    assert sum(stat.count_diff for stat in diff) <= 2 * count + 1
    payload_bytes = count * sys.getsizeof(events[0].payload)
    assert sum(stat.size_diff for stat in diff) < payload_bytes + count * 100
