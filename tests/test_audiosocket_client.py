"""AudioSocket parser in client mode: what a caller (acting like Asterisk) reads from an engine."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from types import ModuleType

import pytest
from conftest import IMPLS, both, media_module
from hypothesis import given, settings
from hypothesis import strategies as st

from engine import errors

native, twin = both("audiosocket")
RATES = {0x10: 8000, 0x11: 12000, 0x12: 16000, 0x13: 24000, 0x14: 32000,
         0x15: 44100, 0x16: 48000, 0x17: 96000, 0x18: 192000}
CALL_ID = uuid.UUID("12345678-1234-5678-1234-567812345678")


@pytest.fixture(params=IMPLS, scope="module")
def m(request: pytest.FixtureRequest) -> ModuleType:
    return media_module(request.param, "audiosocket")


def frame(kind: int, payload: bytes) -> bytes:
    """One message, built here independently of the encoder under test."""
    return bytes((kind, len(payload) >> 8, len(payload) & 0xFF)) + payload


def norm(event: object) -> tuple[object, ...]:
    """An event as (class name, fields), comparable across the two implementations."""
    name = type(event).__name__
    if name == "ProtocolViolation":
        err = event.error  # type: ignore[attr-defined]
        return (name, type(err).__name__, err.args, tuple(sorted(vars(err).items())))
    fields = type(event).__match_args__  # type: ignore[attr-defined]
    return (name, *(getattr(event, field) for field in fields))


def feed(m: ModuleType, chunks: Iterable[bytes], eof: bool = True, **kw: int) -> list[object]:
    parser = m.Parser(client=True, **kw)
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


def tone(n: int, seed: int) -> bytes:
    return bytes((seed * 7 + i * 13) & 0xFF for i in range(n))


ENGINE_CALL = (
    frame(0x12, tone(640, 1)) + frame(0x12, tone(640, 2)) + frame(0x12, bytes(640))
    + frame(0x00, b"")
)


def expected_call(m: ModuleType) -> list[object]:
    return [
        m.AudioReceived(0x12, 16000, tone(640, 1)),
        m.AudioReceived(0x12, 16000, tone(640, 2)),
        m.AudioReceived(0x12, 16000, bytes(640)),
        m.HangupReceived(),
    ]


def test_engine_call_whole(m: ModuleType) -> None:
    parser = m.Parser(client=True)
    assert parser.client and parser.uuid is None and not parser.finished
    parser.receive_data(ENGINE_CALL)
    assert parser.events_received() == expected_call(m)
    # A client's hangup is terminal: EOF after it adds nothing.
    assert parser.finished
    parser.receive_eof()
    assert parser.events_received() == []
    assert parser.uuid is None


def test_engine_call_byte_by_byte(m: ModuleType) -> None:
    chunks = [ENGINE_CALL[i : i + 1] for i in range(len(ENGINE_CALL))]
    assert feed(m, chunks) == expected_call(m)


def test_trailing_bytes_after_hangup_are_ignored(m: ModuleType) -> None:
    junk = frame(0x01, CALL_ID.bytes) + b"\xfe\xff"
    assert feed(m, [ENGINE_CALL + junk]) == expected_call(m)
    assert feed(m, [ENGINE_CALL, junk]) == expected_call(m)


def test_trailing_partial_message_is_truncated(m: ModuleType) -> None:
    audio = frame(0x10, tone(320, 3))
    events = feed(m, [audio + audio[:100]])
    assert events[0] == m.AudioReceived(0x10, 8000, tone(320, 3))
    assert norm(events[1]) == norm(m.ProtocolViolation(errors.TruncatedMessage(0x10, 323, 100)))
    assert len(events) == 2
    assert norm(feed(m, [audio + b"\x10"])[-1]) == norm(
        m.ProtocolViolation(errors.TruncatedMessage(None, 3, 1))
    )


def test_clean_close_without_hangup(m: ModuleType) -> None:
    audio = frame(0x13, tone(960, 4))
    assert feed(m, [audio]) == [m.AudioReceived(0x13, 24000, tone(960, 4)), m.PeerClosed()]
    assert feed(m, []) == [m.PeerClosed()]


@pytest.mark.parametrize(
    ("message", "error"),
    [
        # Asterisk accepts only audio and hangup from an engine; the rest is unknown to a
        # caller, whatever it means in the other direction.
        (frame(0x01, CALL_ID.bytes), errors.UnknownKind(0x01)),
        (frame(0x03, b"5"), errors.UnknownKind(0x03)),
        (frame(0xFF, b"\x01"), errors.UnknownKind(0xFF)),
        (frame(0x02, b""), errors.UnknownKind(0x02)),
        (frame(0x19, bytes(2)), errors.UnknownKind(0x19)),
        (frame(0x10, b""), errors.BadAudioLength(0x10, 0)),
        (frame(0x12, bytes(3)), errors.BadAudioLength(0x12, 3)),
        (frame(0x10, bytes(16386)), errors.FrameTooLarge(0x10, 16386, 16384)),
        (frame(0x00, b"\x00"), errors.MalformedHangup(1)),
    ],
)
def test_violations(m: ModuleType, message: bytes, error: errors.PeerProtocolError) -> None:
    lead = frame(0x10, tone(320, 5))
    want = [m.AudioReceived(0x10, 8000, tone(320, 5)), m.ProtocolViolation(error)]
    whole = feed(m, [lead + message + lead])
    assert [norm(e) for e in whole] == [norm(e) for e in want]
    data = lead + message + lead
    bytewise = feed(m, [data[i : i + 1] for i in range(len(data))])
    assert [norm(e) for e in bytewise] == [norm(e) for e in want]


def test_bad_header_is_judged_before_its_payload(m: ModuleType) -> None:
    parser = m.Parser(client=True)
    parser.receive_data(b"\x03\x00\x01")
    events = parser.events_received()
    assert [norm(e) for e in events] == [norm(m.ProtocolViolation(errors.UnknownKind(0x03)))]
    assert parser.finished


def test_server_mode_is_unchanged(m: ModuleType) -> None:
    parser = m.Parser()
    assert not parser.client
    parser.receive_data(frame(0x10, bytes(320)))
    assert [norm(e) for e in parser.events_received()] == [
        norm(m.ProtocolViolation(errors.FirstMessageNotUuid(0x10)))
    ]
    parser = m.Parser()
    parser.receive_data(frame(0x01, CALL_ID.bytes) + frame(0x00, b"") + frame(0x10, bytes(320)))
    assert parser.events_received() == [
        m.UuidReceived(CALL_ID), m.HangupReceived(), m.AudioReceived(0x10, 8000, bytes(320))
    ]
    assert not parser.finished


def test_client_is_keyword_only(m: ModuleType) -> None:
    with pytest.raises(TypeError):
        m.Parser(16384, True)


def model(messages: list[tuple[int, bytes]], max_payload: int) -> list[tuple[object, ...]]:
    """The client-mode rules, restated independently: the events a whole stream must give."""
    out: list[tuple[object, ...]] = []
    for kind, payload in messages:
        n = len(payload)
        if kind not in RATES and kind != 0:
            err: errors.PeerProtocolError = errors.UnknownKind(kind)
        elif n > max_payload:
            err = errors.FrameTooLarge(kind, n, max_payload)
        elif kind == 0:
            if n == 0:
                return [*out, ("HangupReceived",)]
            err = errors.MalformedHangup(n)
        elif n == 0 or n % 2:
            err = errors.BadAudioLength(kind, n)
        else:
            out.append(("AudioReceived", kind, RATES[kind], payload))
            continue
        return [*out, ("ProtocolViolation", type(err).__name__, err.args,
                       tuple(sorted(vars(err).items())))]
    return [*out, ("PeerClosed",)]


KINDS = st.sampled_from([0x00, 0x01, 0x02, 0x03, 0xFF, 0x20, *RATES])
GOOD_KINDS = st.sampled_from(list(RATES))


def messages_strategy() -> st.SearchStrategy[list[tuple[int, bytes]]]:
    """Mostly whole audio frames, some messages of any kind and length."""
    audio = st.tuples(GOOD_KINDS, st.integers(1, 200).flatmap(
        lambda n: st.binary(min_size=2 * n, max_size=2 * n)))
    anything = st.tuples(KINDS, st.binary(max_size=80))
    return st.lists(st.one_of(audio, audio, audio, anything), max_size=12)


@settings(max_examples=200, deadline=None)
@given(
    messages=messages_strategy(),
    hangup=st.booleans(),
    trailing=st.binary(max_size=10),
    cuts=st.lists(st.integers(0, 4000), max_size=12),
    max_payload=st.sampled_from([16, 64, 400, 16384]),
)
def test_native_equals_twin_equals_model_any_chunking(
    messages: list[tuple[int, bytes]], hangup: bool, trailing: bytes, cuts: list[int],
    max_payload: int,
) -> None:
    if hangup:
        messages = [*messages, (0x00, b"")]
    data = b"".join(frame(k, p) for k, p in messages)
    want = model(messages, max_payload)
    ends_clean = want[-1][0] in ("HangupReceived", "PeerClosed")
    chunks = cut(data, cuts)
    for impl in (native, twin):
        assert [norm(e) for e in feed(impl, [data], max_payload=max_payload)] == want
        assert [norm(e) for e in feed(impl, chunks, max_payload=max_payload)] == want
        with_tail = feed(impl, cut(data + trailing, cuts), max_payload=max_payload)
        if want[-1][0] == "HangupReceived" or want[-1][0] == "ProtocolViolation" or not trailing:
            # After a terminal event, trailing bytes change nothing.
            assert [norm(e) for e in with_tail] == want
        elif ends_clean:
            assert [norm(e) for e in with_tail][: len(want) - 1] == want[:-1]
    tail_chunks = cut(data + trailing, cuts)
    assert [norm(e) for e in feed(native, tail_chunks, max_payload=max_payload)] == [
        norm(e) for e in feed(twin, tail_chunks, max_payload=max_payload)
    ]
