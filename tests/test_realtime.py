"""The Realtime dialect codec: every client event passes the SDK's models (no unknown keys),
and realistic server events of both dialects decode to the one internal event set."""

from __future__ import annotations

import base64
import binascii

import orjson
import pytest
from conftest import parse_client_frame
from hypothesis import given
from hypothesis import strategies as st

from engine import realtime
from engine._impl import uplink, wsframe
from engine.errors import UpstreamBadEvent
from engine.realtime import Dialect
from engine.sim.validate import shared_validator

DIALECTS = [Dialect.GA, Dialect.BETA, Dialect.AZURE]


def sdk_dialect(dialect: Dialect) -> str:
    return "beta" if dialect is Dialect.BETA else "ga"


def check_client(dialect: Dialect, data: bytes) -> dict:
    event = orjson.loads(data)
    problem = shared_validator(sdk_dialect(dialect), "client").problem(event)
    assert problem is None, (event["type"], problem)
    return event


def settings(**changes: object) -> realtime.SessionSettings:
    base: dict[str, object] = dict(
        instructions="Be brief.", voice="alloy", audio_format="pcm16", vad_type="server_vad",
        vad_threshold=0.5, vad_silence_ms=500, vad_prefix_padding_ms=300, vad_eagerness="auto",
        transcription_model="whisper-1", max_output_tokens=4096, temperature=None,
    )
    base.update(changes)
    return realtime.SessionSettings(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize("dialect", DIALECTS)
@pytest.mark.parametrize("fmt", ["pcm16", "pcmu"])
@pytest.mark.parametrize("vad", ["server_vad", "semantic_vad"])
def test_session_update_validates_in_each_dialect(dialect: Dialect, fmt: str, vad: str) -> None:
    temperature = 0.8 if dialect is Dialect.BETA else None
    enc = realtime.Encoder(dialect)
    event = check_client(dialect, enc.session_update(
        settings(audio_format=fmt, vad_type=vad, temperature=temperature,
                 transcription_model="" if vad == "semantic_vad" else "whisper-1")))
    session = event["session"]
    if dialect is Dialect.BETA:
        assert session["input_audio_format"] == ("g711_ulaw" if fmt == "pcmu" else "pcm16")
        assert session["turn_detection"]["type"] == vad
        assert session["temperature"] == 0.8
    else:
        assert session["type"] == "realtime"
        expected = {"type": "audio/pcmu"} if fmt == "pcmu" else {"type": "audio/pcm",
                                                                  "rate": 24000}
        assert session["audio"]["input"]["format"] == expected
        assert session["audio"]["output"]["voice"] == "alloy"
        assert "temperature" not in session


TOOLS = (
    {"type": "function", "name": "end_call", "description": "End the call.",
     "parameters": {"type": "object", "properties": {"summary": {"type": "string"}},
                    "required": ["summary"], "additionalProperties": False}},
    {"type": "function", "name": "transfer", "description": "Transfer the caller.",
     "parameters": {"type": "object", "properties": {
         "destination": {"type": "string", "enum": ["sales", "support"]}},
         "required": ["destination"]}},
)


@pytest.mark.parametrize("dialect", DIALECTS)
def test_session_update_with_tools_validates_in_each_dialect(dialect: Dialect) -> None:
    enc = realtime.Encoder(dialect)
    session = check_client(dialect, enc.session_update(settings(tools=TOOLS)))["session"]
    assert session["tools"] == list(TOOLS)
    assert session["tool_choice"] == "auto"
    plain = check_client(dialect, enc.session_update(settings()))["session"]
    assert "tools" not in plain and "tool_choice" not in plain


def append_event(pcm: bytes) -> bytes:
    """The ``input_audio_buffer.append`` the engine sends for ``pcm``: built by the uplink,
    the only place appends are made, and read back out of its frame."""
    frames: list[bytes] = []
    up = uplink.Uplink(0x13, (), False, len(pcm), 0, wsframe.FrameBuilder(), frames)
    up.sending = True
    up.push(pcm)
    (frame,) = frames
    return bytes(parse_client_frame(frame).data)


@pytest.mark.parametrize("dialect", DIALECTS)
def test_every_client_event_validates_and_carries_a_unique_event_id(dialect: Dialect) -> None:
    enc = realtime.Encoder(dialect)
    events = [
        append_event(b"\x01\x02" * 960),
        enc.truncate("item_1", 1234),
        enc.cancel(),
        enc.cancel("resp_1"),
        enc.response_create(),
        enc.response_create("Say goodbye."),
        enc.item_create_text("hello"),
        enc.item_create_text("earlier answer", role="assistant"),
        enc.function_output("call_1", '{"ok": true}'),
        enc.commit(),
        enc.clear_input(),
    ]
    ids = [check_client(dialect, e)["event_id"] for e in events]
    assert len(set(ids)) == len(ids)
    assert ids[-1] == enc.last_event_id


@given(pcm=st.binary(min_size=1, max_size=4000))
def test_append_carries_the_audio_exactly(pcm: bytes) -> None:
    event = orjson.loads(append_event(pcm))
    assert event["type"] == "input_audio_buffer.append"
    assert base64.b64decode(event["audio"]) == pcm


def delta_event(dialect: Dialect, pcm: bytes) -> bytes:
    name = "response.audio.delta" if dialect is Dialect.BETA else "response.output_audio.delta"
    return orjson.dumps({
        "type": name, "event_id": "ev_9", "response_id": "resp_1", "item_id": "item_1",
        "output_index": 0, "content_index": 0, "delta": base64.b64encode(pcm).decode(),
    })


@pytest.mark.parametrize("dialect", DIALECTS)
def test_audio_delta_and_done_decode_in_each_dialect(dialect: Dialect) -> None:
    dec = realtime.Decoder(dialect)
    pcm = bytes(range(256)) * 10
    event = dec.decode(delta_event(dialect, pcm))
    assert event == realtime.AudioDelta("resp_1", "item_1", pcm)
    beta = dialect is Dialect.BETA
    done = orjson.dumps({
        "type": "response.audio.done" if beta else "response.output_audio.done",
        "event_id": "e", "response_id": "resp_1", "item_id": "item_1", "output_index": 0,
        "content_index": 0,
    })
    assert dec.decode(done) == realtime.AudioDone("resp_1", "item_1")
    other = realtime.Decoder(Dialect.GA if beta else Dialect.BETA)
    assert isinstance(other.decode(done), realtime.Ignored)


@pytest.mark.parametrize("damage", ["AAA!AAAA", "AAAAA", "AA=A", "=AAA", "AAAA====", "AAAé"])
def test_a_damaged_delta_is_a_bad_event_not_shifted_noise(damage: str) -> None:
    """A lenient decoder would skip the bad characters and play the rest shifted by a byte."""
    dec = realtime.Decoder(Dialect.GA)
    doc = orjson.loads(delta_event(Dialect.GA, bytes(6)))
    doc["delta"] = damage
    with pytest.raises(UpstreamBadEvent, match="delta is not base64"):
        dec.decode(orjson.dumps(doc))


@pytest.mark.parametrize("dialect", DIALECTS)
def test_turn_response_and_error_events_decode(dialect: Dialect) -> None:
    dec = realtime.Decoder(dialect)
    beta = dialect is Dialect.BETA

    def decode(**doc: object) -> object:
        return dec.decode(orjson.dumps({"event_id": "ev", **doc}))

    assert decode(type="input_audio_buffer.speech_started", audio_start_ms=120,
                  item_id="in_1") == realtime.SpeechStarted("in_1", 120)
    assert decode(type="input_audio_buffer.speech_stopped", audio_end_ms=900,
                  item_id="in_1") == realtime.SpeechStopped("in_1", 900)
    assert decode(type="response.created", response={
        "id": "resp_1", "object": "realtime.response", "status": "in_progress", "output": []
    }) == realtime.ResponseCreated("resp_1")
    usage = {"total_tokens": 30, "input_tokens": 10, "output_tokens": 20}
    done = decode(type="response.done", response={
        "id": "resp_1", "object": "realtime.response", "status": "cancelled", "output": [],
        "usage": usage,
    })
    assert done == realtime.ResponseDone("resp_1", "cancelled", usage)
    transcript = decode(
        type="response.audio_transcript.done" if beta
        else "response.output_audio_transcript.done",
        response_id="resp_1", item_id="item_1", output_index=0, content_index=0,
        transcript="Hello there.",
    )
    assert transcript == realtime.Transcript("assistant", "item_1", "Hello there.")
    user = decode(type="conversation.item.input_audio_transcription.completed",
                  item_id="in_1", content_index=0, transcript="Hi.")
    assert user == realtime.Transcript("user", "in_1", "Hi.")
    error = decode(type="error", error={
        "type": "invalid_request_error", "code": "bad", "message": "nope", "param": None,
        "event_id": "ev_3",
    })
    assert error == realtime.ServerError("invalid_request_error", "bad", "nope", "ev_3")
    assert isinstance(decode(type="rate_limits.updated", rate_limits=[
        {"name": "requests", "limit": 100, "remaining": 99, "reset_seconds": 1.0}
    ]), realtime.RateLimits)
    assert decode(type="conversation.item.added") == realtime.Ignored("conversation.item.added")


@pytest.mark.parametrize("dialect", DIALECTS)
def test_function_call_name_comes_from_the_output_item(dialect: Dialect) -> None:
    dec = realtime.Decoder(dialect)
    added = dec.decode(orjson.dumps({
        "type": "response.output_item.added", "event_id": "e", "response_id": "resp_1",
        "output_index": 0, "item": {"id": "fc_1", "type": "function_call", "name": "lookup",
                                    "call_id": "call_1", "arguments": ""},
    }))
    assert added == realtime.OutputItemAdded("resp_1", "fc_1", "function_call", "lookup",
                                             "call_1")
    done = dec.decode(orjson.dumps({
        "type": "response.function_call_arguments.done", "event_id": "e",
        "response_id": "resp_1", "item_id": "fc_1", "output_index": 0, "call_id": "call_1",
        "arguments": '{"id": 7}',
    }))
    assert done == realtime.FunctionCallDone("resp_1", "fc_1", "call_1", "lookup", '{"id": 7}')


@pytest.mark.parametrize("message", [
    b"not json", b"[1, 2]", b'{"no": "type"}', b'{"type": 7}',
    b'{"type": "response.output_audio.delta", "response_id": "r", "item_id": "i", "delta": 5}',
    b'{"type": "input_audio_buffer.speech_started", "audio_start_ms": "soon", "item_id": "i"}',
])
def test_bad_server_events_raise_a_specific_error(message: bytes) -> None:
    with pytest.raises(UpstreamBadEvent):
        realtime.Decoder(Dialect.GA).decode(message)


def test_base64_is_the_standard_alphabet() -> None:
    pcm = bytes([0xFB, 0xFF, 0xBF]) * 100
    event = orjson.loads(append_event(pcm))
    assert event["audio"] == binascii.b2a_base64(pcm, newline=False).decode()
    assert "+" in event["audio"] or "/" in event["audio"]
