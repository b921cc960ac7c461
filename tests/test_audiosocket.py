"""AudioSocket framing: real Asterisk captures in every chunking, every violation, the encoder."""

from __future__ import annotations

import json
import math
import random
import struct
import tracemalloc
import uuid
from pathlib import Path
from types import ModuleType

import pytest
from conftest import FIXTURES, IMPLS, both, media_module
from hypothesis import given, settings
from hypothesis import strategies as st

from engine import errors

native, twin = both("audiosocket")
CAPTURES = FIXTURES / "audiosocket"
SESSIONS = ["app8k", "app8k_dtmf", "app8k_hangup_by_engine", "chan16k", "chan24k"]
UUID_MSG = b"\x01\x00\x10" + uuid.UUID("12345678-1234-5678-1234-567812345678").bytes


@pytest.fixture(params=IMPLS)
def m(request: pytest.FixtureRequest) -> ModuleType:
    return media_module(request.param, "audiosocket")


def _norm(event: object) -> tuple[object, ...]:
    """An event as (class name, fields), comparable across the two implementations."""
    name = type(event).__name__
    if name == "ProtocolViolation":
        err = event.error  # type: ignore[attr-defined]
        return (name, type(err).__name__, err.args, tuple(sorted(vars(err).items())))
    fields = {
        "UuidReceived": ("uuid",),
        "AudioReceived": ("kind", "rate", "payload"),
        "DtmfReceived": ("digit",),
        "ErrorReceived": ("payload",),
    }.get(name, ())
    return (name, *(getattr(event, f) for f in fields))


def _parse(m: ModuleType, data: bytes, cuts: list[int], eof: bool = True) -> list[object]:
    parser = m.Parser()
    events: list[object] = []
    at = 0
    for cut in [*cuts, len(data)]:
        parser.receive_data(data[at:cut])
        events += parser.events_received()
        at = cut
    if eof:
        parser.receive_eof()
        events += parser.events_received()
    return events


def _session(name: str) -> tuple[bytes, list[dict[str, float]]]:
    data = (CAPTURES / f"{name}.bin").read_bytes()
    lines = (CAPTURES / f"{name}.jsonl").read_text().splitlines()
    return data, [json.loads(line) for line in lines]


def _check_session(name: str, events: list[object]) -> None:
    data, messages = _session(name)
    assert len(events) == len(messages) + 1
    assert type(events[-1]).__name__ == "PeerClosed"
    rates = {0x10: 8000, 0x12: 16000, 0x13: 24000}
    for event, msg in zip(events, messages, strict=False):
        payload = data[msg["offset"] + 3 : msg["offset"] + 3 + msg["len"]]
        kind = msg["kind"]
        if kind == 0x01:
            assert type(event).__name__ == "UuidReceived"
            assert event.uuid == uuid.UUID(bytes=payload)  # type: ignore[attr-defined]
        elif kind == 0x03:
            assert type(event).__name__ == "DtmfReceived"
            assert event.digit == payload.decode()  # type: ignore[attr-defined]
        else:
            assert _norm(event) == ("AudioReceived", kind, rates[kind], payload)
    assert type(events[0]).__name__ == "UuidReceived"


@pytest.mark.parametrize("name", SESSIONS)
def test_recorded_sessions_whole_and_byte_by_byte(m: ModuleType, name: str) -> None:
    data, messages = _session(name)
    _check_session(name, _parse(m, data, []))
    _check_session(name, _parse(m, data, list(range(1, len(data)))))
    inside_headers = sorted({msg["offset"] + k for msg in messages for k in (1, 2)})
    _check_session(name, _parse(m, data, inside_headers))


@settings(max_examples=15, deadline=None)
@given(name=st.sampled_from(SESSIONS), seed=st.integers(0, 2**32 - 1))
def test_recorded_sessions_in_random_chunks(name: str, seed: int) -> None:
    data, _ = _session(name)
    rng = random.Random(seed)
    cuts = sorted(rng.sample(range(1, len(data)), rng.randint(1, 400)))
    for m in (native, twin):
        _check_session(name, _parse(m, data, cuts))


def test_recorded_details() -> None:
    events = _parse(native, _session("app8k_dtmf")[0], [])
    kinds = [type(e).__name__ for e in events]
    first_dtmf = kinds.index("DtmfReceived")
    assert [e.digit for e in events if type(e).__name__ == "DtmfReceived"] == ["1", "9", "#"]
    assert kinds[first_dtmf - 1] == "AudioReceived" and kinds[first_dtmf + 3] == "AudioReceived"
    app8k = _parse(native, _session("app8k")[0], [])
    audio = [e.payload for e in app8k if type(e).__name__ == "AudioReceived"]
    assert [len(p) for p in audio].count(276) == 1 and len(audio) == 200
    samples = struct.unpack(f"<{sum(map(len, audio)) // 2}h", b"".join(audio))
    assert len(samples) == 31978
    # The capture README's test signal: 440 Hz for 1 s, silence, 700+1200 Hz from 1.5 s.
    amp = 32767 * 10 ** (-12 / 20)
    for n in range(0, 8000, 97):
        assert samples[n] == round(amp * math.sin(2 * math.pi * 440 * n / 8000))
    assert not any(samples[8000:12000])
    for k in range(0, 8000, 89):
        want = 0.5 * amp * (math.sin(2 * math.pi * 700 * k / 8000)
                            + math.sin(2 * math.pi * 1200 * k / 8000))
        assert samples[12000 + k] == round(want)


def test_trailing_bytes_are_a_truncated_message(m: ModuleType) -> None:
    data, _ = _session("app8k_hangup_by_engine")
    for tail, expected in [
        (b"\x10", (None, 3, 1)),
        (b"\x10\x01", (None, 3, 2)),
        (b"\x10\x01\x40" + bytes(100), (0x10, 323, 103)),
    ]:
        events = _parse(m, data + tail, [len(data) - 5, len(data) + 1])
        last = events[-1]
        assert type(last).__name__ == "ProtocolViolation"
        err = last.error  # type: ignore[attr-defined]
        assert isinstance(err, errors.TruncatedMessage)
        assert (err.kind, err.expected, err.received) == expected
        assert sum(type(e).__name__ == "ProtocolViolation" for e in events) == 1


VIOLATIONS = [
    (b"\x02\x00\x00", errors.UnknownKind, {"kind": 2}),
    (b"\x10\x00\x02ab", errors.FirstMessageNotUuid, {"kind": 0x10}),
    (b"\x00\x00\x10" + bytes(16), errors.FirstMessageNotUuid, {"kind": 0}),
    (b"\x01\x00\x0f" + bytes(15), errors.MalformedUuid, {"length": 15}),
    (UUID_MSG + UUID_MSG, errors.DuplicateUuid, {}),
    (UUID_MSG + b"\x10\x00\x00", errors.BadAudioLength, {"kind": 0x10, "length": 0}),
    (UUID_MSG + b"\x12\x01\x41", errors.BadAudioLength, {"kind": 0x12, "length": 321}),
    (UUID_MSG + b"\x10\x40\x02", errors.FrameTooLarge,
     {"kind": 0x10, "size": 16386, "limit": 16384}),
    (UUID_MSG + b"\x03\x00\x01x", errors.MalformedDtmf, {"payload": b"x"}),
    (UUID_MSG + b"\x03\x00\x0212", errors.MalformedDtmf, {"payload": b"12"}),
    (UUID_MSG + b"\x00\x00\x01z", errors.MalformedHangup, {"length": 1}),
    (UUID_MSG + b"\x19\x00\x02ab", errors.UnknownKind, {"kind": 0x19}),
]


@pytest.mark.parametrize(("data", "cls", "fields"), VIOLATIONS)
def test_violations_are_one_terminal_event(
    m: ModuleType, data: bytes, cls: type, fields: dict[str, object]
) -> None:
    for cuts in ([], list(range(1, len(data)))):
        parser = m.Parser()
        at = 0
        for cut in [*cuts, len(data)]:
            parser.receive_data(data[at:cut])
            at = cut
        parser.receive_data(UUID_MSG + b"\x10\x00\x02ab")  # ignored from now on
        parser.receive_eof()
        events = parser.events_received()
        assert parser.finished
        assert type(events[-1]).__name__ == "ProtocolViolation"
        err = events[-1].error
        assert type(err) is cls and isinstance(err, errors.PeerProtocolError)
        for key, value in fields.items():
            assert getattr(err, key) == value
        assert str(err)


def test_hangup_and_error_kinds_are_events(m: ModuleType) -> None:
    events = _parse(m, UUID_MSG + b"\xff\x00\x01\x07" + b"\x00\x00\x00", [])
    assert [_norm(e) for e in events[1:]] == [
        ("ErrorReceived", b"\x07"), ("HangupReceived",), ("PeerClosed",)
    ]


def test_a_smaller_payload_limit_bounds_buffering(m: ModuleType) -> None:
    parser = m.Parser(max_payload=640)
    parser.receive_data(UUID_MSG + b"\x10\x02\x80" + bytes(640) + b"\x10\x02\x82")
    events = parser.events_received()
    assert _norm(events[1])[:2] == ("AudioReceived", 0x10)
    assert isinstance(events[-1].error, errors.FrameTooLarge)
    with pytest.raises(errors.ConfigError):
        m.Parser(max_payload=70000)


def _message(kind: int, payload: bytes) -> bytes:
    return bytes((kind, len(payload) >> 8, len(payload) & 0xFF)) + payload


valid_messages = st.lists(
    st.one_of(
        st.tuples(st.integers(0x10, 0x18), st.binary(min_size=1, max_size=400)).map(
            lambda t: _message(t[0], t[1] + t[1][:1] if len(t[1]) % 2 else t[1])
        ),
        st.sampled_from("0123456789*#ABCD").map(lambda d: _message(0x03, d.encode())),
        st.binary(max_size=8).map(lambda b: _message(0xFF, b)),
    ),
    max_size=30,
)


@settings(max_examples=100, deadline=None)
@given(messages=valid_messages, seed=st.integers(0, 2**32 - 1))
def test_valid_streams_parse_identically_in_any_chunking(messages: list[bytes], seed: int) -> None:
    data = UUID_MSG + b"".join(messages)
    rng = random.Random(seed)
    cuts = sorted(rng.sample(range(1, len(data)), min(len(data) - 1, rng.randint(0, 50))))
    whole = [_norm(e) for e in _parse(native, data, [])]
    assert [_norm(e) for e in _parse(native, data, cuts)] == whole
    assert [_norm(e) for e in _parse(twin, data, cuts)] == whole
    assert len(whole) == len(messages) + 2 and whole[-1] == ("PeerClosed",)


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=300), seed=st.integers(0, 2**32 - 1), prefix=st.booleans())
def test_garbage_gives_the_same_events_in_both(data: bytes, seed: int, prefix: bool) -> None:
    data = (UUID_MSG if prefix else b"") + data
    rng = random.Random(seed)
    cuts = sorted(rng.sample(range(1, len(data)), max(0, min(len(data) - 1, rng.randint(0, 20)))))
    assert [_norm(e) for e in _parse(native, data, cuts)] == [
        _norm(e) for e in _parse(twin, data, [])
    ]


def test_encoder_round_trip_and_rejections(m: ModuleType) -> None:
    pcm = struct.pack("<160h", *range(-80, 80))
    for kind in range(0x10, 0x19):
        message = m.encode_audio(kind, pcm)
        assert message == bytes((kind, 1, 64)) + pcm
        assert m.encode_audio(kind, memoryview(pcm).cast("h")) == message
        events = _parse(m, UUID_MSG + message, [])
        assert _norm(events[1]) == ("AudioReceived", kind, m.AUDIO_RATES[kind], pcm)
    for kind, payload, reason in [
        (0x01, pcm, "audio kind"), (0x00, pcm, "audio kind"), (0x03, b"12", "audio kind"),
        (0x10, b"", "empty"), (0x10, b"abc", "odd"), (0x10, bytes(65536), "16-bit length"),
    ]:
        with pytest.raises(errors.BadOutgoingAudio, match=reason) as err:
            m.encode_audio(kind, payload)
        assert (err.value.kind, err.value.length) == (kind, len(payload))
    assert m.HANGUP == b"\x00\x00\x00"
    assert m.kind_for_rate(16000) == m.KIND_AUDIO_16K == 0x12
    with pytest.raises(errors.UnsupportedRate):
        m.kind_for_rate(22050)


def test_silence_is_cached(m: ModuleType) -> None:
    s = m.silence(m.KIND_AUDIO_8K)
    assert s is m.silence(m.KIND_AUDIO_8K)
    assert s == b"\x10\x01\x40" + bytes(320)
    assert m.silence(m.KIND_AUDIO_44K1) == b"\x15\x06\xe4" + bytes(1764)
    assert len(m.silence(m.KIND_AUDIO_24K, 10)) == 3 + 480
    with pytest.raises(errors.BadOutgoingAudio):
        m.silence(0x01)


def test_encoding_a_frame_allocates_one_object() -> None:
    pcm = bytes(320)
    native.encode_audio(0x10, pcm)
    kept = []
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        for _ in range(1000):
            kept.append(native.encode_audio(0x10, pcm))
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    stats = after.compare_to(before, "filename")
    blocks = sum(s.count_diff for s in stats)
    # 1000 messages plus the list's own growth; two objects per frame would be ~2000.
    assert 1000 <= blocks < 1100, blocks


def test_imports_from_path_do_not_matter() -> None:
    assert Path(native.__file__).suffix in {".so", ".pyd"}
