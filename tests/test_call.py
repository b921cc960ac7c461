"""The call's state machine, driven with real AudioSocket bytes and real Realtime JSON."""

from __future__ import annotations

import base64
import math
import struct
import uuid

import orjson
import pytest
from conftest import parse_client_frame
from hypothesis import given, settings
from hypothesis import strategies as st

from engine import realtime
from engine._impl import audiosocket, g711, resample
from engine.call import (
    Call,
    CallSettings,
    ConnectUpstream,
    EndCall,
    EndReason,
    Handover,
    Rephase,
    RunTool,
    StartGoodbye,
    StartPacing,
    State,
)
from engine.errors import KindChanged, UnknownKind, UpstreamClosed

UUID = uuid.UUID("6f1c2b9e-5a4d-4c3b-9e8f-0a1b2c3d4e5f")


def settings_for(dialect: str = "ga", fmt: str = "pcm16", **changes: object) -> CallSettings:
    session = realtime.SessionSettings(
        instructions="Be brief.", voice="alloy", audio_format=fmt, vad_type="server_vad",
        vad_threshold=0.5, vad_silence_ms=500, vad_prefix_padding_ms=300, vad_eagerness="auto",
        interrupt_response=bool(changes.pop("interrupt_response", True)),
        transcription_model="whisper-1", max_output_tokens=4096, temperature=None,
    )
    return CallSettings(dialect=realtime.Dialect(dialect), session=session, upstream_format=fmt,
                        **changes)  # type: ignore[arg-type]


def tone(rate: int, ms: int, freq: float = 440.0, amp: int = 8000, start: int = 0) -> bytes:
    n = rate * ms // 1000
    w = 2 * math.pi * freq / rate
    return struct.pack(f"<{n}h", *(round(amp * math.sin(w * (start + i))) for i in range(n)))


def uuid_message() -> bytes:
    return b"\x01\x00\x10" + UUID.bytes


def audio(kind: int, pcm: bytes) -> bytes:
    return bytes([kind]) + struct.pack(">H", len(pcm)) + pcm


def sent(call: Call) -> list[dict]:
    """What the call has for the upstream: its JSON events, then its framed appends (the
    order the adapter writes them in)."""
    events = [orjson.loads(m) for m in call.to_upstream]
    events += [orjson.loads(parse_client_frame(f).data) for f in call.upstream_frames]
    call.to_upstream.clear()
    call.upstream_frames.clear()
    return events


def active_call(fmt: str = "pcm16", kind: int = 0x10, **changes: object) -> Call:
    call = Call(settings_for(fmt=fmt, **changes), peer="127.0.0.1:5000")
    call.receive_data(uuid_message())
    rate = audiosocket.AUDIO_RATES[kind]
    call.receive_data(audio(kind, bytes(rate // 50 * 2)))
    assert [type(a) for a in call.actions()] == [ConnectUpstream, StartPacing]
    call.upstream_opened()
    assert call.state is State.ACTIVE
    return call


def server(event_type: str, **fields: object) -> bytes:
    return orjson.dumps({"type": event_type, "event_id": "ev_1", **fields})


def delta(pcm24: bytes, response_id: str = "resp_1", item_id: str = "item_1") -> bytes:
    return server("response.output_audio.delta", response_id=response_id, item_id=item_id,
                  output_index=0, content_index=0, delta=base64.b64encode(pcm24).decode())


def start_response(call: Call, response_id: str = "resp_1") -> None:
    call.upstream_message(server("response.created", response={
        "id": response_id, "object": "realtime.response", "status": "in_progress", "output": [],
    }))


def test_handshake_then_audio_starts_upstream_and_pacing() -> None:
    call = Call(settings_for(), peer="p")
    assert call.state is State.HANDSHAKE
    call.receive_data(uuid_message()[:5])
    assert call.actions() == []
    call.receive_data(uuid_message()[5:])
    assert call.uuid == UUID and call.state is State.CONNECTING
    assert call.actions() == [ConnectUpstream()]
    call.receive_data(audio(0x12, bytes(640)))
    assert (call.kind, call.rate) == (0x12, 16000)
    assert call.actions() == [StartPacing()]
    assert call.to_upstream == []


def test_session_update_then_held_audio_once_the_upstream_opens() -> None:
    call = Call(settings_for(), peer="p")
    call.receive_data(uuid_message())
    caller = tone(8000, 200)
    for i in range(0, len(caller), 320):
        call.receive_data(audio(0x10, caller[i:i + 320]))
    assert call.to_upstream == []
    call.upstream_opened()
    events = sent(call)
    assert events[0]["type"] == "session.update"
    assert events[0]["session"]["audio"]["input"]["format"] == {"type": "audio/pcm", "rate": 24000}
    assert [e["type"] for e in events[1:]] == ["input_audio_buffer.append"]
    up = b"".join(base64.b64decode(e["audio"]) for e in events[1:])
    assert up == resample.Resampler(8000, 24000).process(caller)


def test_audio_that_starts_after_the_upstream_opened_goes_straight_up() -> None:
    call = Call(settings_for(), peer="p")
    call.receive_data(uuid_message())
    call.upstream_opened()
    assert [e["type"] for e in sent(call)] == ["session.update"]
    caller = tone(8000, 200)
    for i in range(0, len(caller), 320):
        call.receive_data(audio(0x10, caller[i:i + 320]))
    appends = sent(call)
    assert len(appends) >= 4 and {e["type"] for e in appends} == {"input_audio_buffer.append"}
    up = b"".join(base64.b64decode(e["audio"]) for e in appends)
    assert resample.Resampler(8000, 24000).process(caller).startswith(up)


def test_prebuffer_keeps_only_the_newest_audio_while_connecting() -> None:
    call = Call(settings_for(prebuffer_ms=100), peer="p")
    call.receive_data(uuid_message())
    for _ in range(100):
        call.receive_data(audio(0x10, bytes(320)))
    call.upstream_opened()
    appended = [e for e in sent(call) if e["type"] == "input_audio_buffer.append"]
    size = sum(len(base64.b64decode(e["audio"])) for e in appended)
    assert 100 * 48 <= size <= 140 * 48


@pytest.mark.parametrize("append_ms", [20, 40, 100])
@pytest.mark.parametrize("kind", [0x10, 0x12, 0x13])
def test_caller_audio_is_resampled_and_batched(kind: int, append_ms: int) -> None:
    call = active_call(kind=kind, append_ms=append_ms)
    rate = audiosocket.AUDIO_RATES[kind]
    caller = tone(rate, 1000, freq=300)
    frame = rate // 50 * 2
    for i in range(0, len(caller), frame):
        call.receive_data(audio(kind, caller[i:i + frame]))
    events = sent(call)
    assert events[0]["type"] == "session.update"
    appends = events[1:]
    assert all(e["type"] == "input_audio_buffer.append" for e in appends)
    sizes = [len(base64.b64decode(e["audio"])) for e in appends]
    assert all(append_ms * 48 - 200 <= n < append_ms * 48 + 960 for n in sizes)
    assert abs(len(appends) - 1000 // append_ms) <= 1
    up = b"".join(base64.b64decode(e["audio"]) for e in appends)
    expected = resample.Resampler(rate, 24000).process(bytes(frame) + caller) if rate != 24000 \
        else bytes(frame) + caller
    assert expected.startswith(up) and len(expected) - len(up) < append_ms * 48


def test_pcmu_at_8k_is_a_table_lookup_both_ways() -> None:
    call = active_call(fmt="pcmu")
    events = sent(call)
    assert events[0]["session"]["audio"]["output"]["format"] == {"type": "audio/pcmu"}
    caller = tone(8000, 80)
    for i in range(0, len(caller), 320):
        call.receive_data(audio(0x10, caller[i:i + 320]))
    up = b"".join(base64.b64decode(e["audio"]) for e in sent(call))
    assert up == g711.ulaw_encode(bytes(320) + caller)[:len(up)]
    start_response(call)
    model = g711.ulaw_encode(tone(8000, 100, freq=500))
    call.upstream_message(delta(model))
    frames = [call.next_frame() for _ in range(5)]
    assert b"".join(f[3:] for f in frames if f) == g711.ulaw_decode(model)


def test_model_audio_is_paced_out_in_the_call_kind() -> None:
    call = active_call(kind=0x12)
    start_response(call)
    model = tone(24000, 200, freq=700)
    call.upstream_message(delta(model[:4800]))
    assert call.actions() == [Rephase()]
    call.upstream_message(delta(model[4800:]))
    assert call.actions() == []
    frames = [call.next_frame() for _ in range(12)]
    assert all(f is not None and f[0] == 0x12 and len(f) == 3 + 640 for f in frames)
    out = b"".join(f[3:] for f in frames if f)
    expected = resample.Resampler(24000, 16000).process(model)
    assert out.startswith(expected[: len(expected) // 640 * 640])


def test_silence_before_any_response_and_nothing_before_media() -> None:
    call = Call(settings_for(), peer="p")
    call.receive_data(uuid_message())
    assert call.next_frame() is None
    call.receive_data(audio(0x10, bytes(320)))
    assert call.next_frame() == audiosocket.silence(0x10)


@pytest.mark.parametrize("interrupt", [True, False])
def test_barge_in_clears_truncates_what_was_played_and_cancels_if_needed(interrupt: bool) -> None:
    call = active_call(interrupt_response=interrupt)
    sent(call)
    start_response(call)
    call.upstream_message(delta(tone(24000, 1000)))
    for _ in range(10):
        call.next_frame()
    call.upstream_message(server("input_audio_buffer.speech_started", audio_start_ms=1200,
                                 item_id="item_in_1"))
    events = sent(call)
    types = [e["type"] for e in events]
    assert ("response.cancel" in types) is (not interrupt)
    (truncate,) = [e for e in events if e["type"] == "conversation.item.truncate"]
    assert truncate["item_id"] == "item_1" and truncate["content_index"] == 0
    assert 200 <= truncate["audio_end_ms"] <= 210
    assert call.stats.bargeins == 1
    assert Rephase() in call.actions()  # the faded tail is sent at once, not at the next tick
    call.upstream_message(delta(tone(24000, 500)))
    assert call.stats.dropped_deltas == 1
    frames = [call.next_frame() for _ in range(3)]
    assert frames[-1] == audiosocket.silence(0x10)


def test_speech_while_quiet_is_not_a_barge_in() -> None:
    call = active_call()
    sent(call)
    call.upstream_message(server("input_audio_buffer.speech_started", audio_start_ms=10,
                                 item_id="item_in_1"))
    assert sent(call) == [] and call.stats.bargeins == 0


@settings(max_examples=60, deadline=None)
@given(
    chunks=st.lists(st.integers(1, 4000), min_size=1, max_size=12),
    pops=st.integers(0, 80),
    kind=st.sampled_from([0x10, 0x12, 0x13]),
)
def test_truncate_never_exceeds_the_item_audio(chunks: list[int], pops: int, kind: int) -> None:
    call = active_call(kind=kind)
    sent(call)
    start_response(call)
    total = 0
    for n in chunks:
        call.upstream_message(delta(b"\x10\x00" * n))
        total += n
    for _ in range(pops):
        call.next_frame()
    call.upstream_message(server("input_audio_buffer.speech_started", audio_start_ms=0,
                                 item_id="in"))
    for event in sent(call):
        if event["type"] == "conversation.item.truncate":
            assert event["audio_end_ms"] <= total * 1000 // 24000


def test_dtmf_is_recorded() -> None:
    call = active_call()
    for digit in b"12#":
        call.receive_data(b"\x03\x00\x01" + bytes([digit]))
    assert call.stats.dtmf == ["1", "2", "#"]
    assert call.state is State.ACTIVE


def test_caller_eof_ends_without_hangup_bytes() -> None:
    call = active_call()
    call.receive_eof()
    (end,) = call.actions()
    assert end == EndCall(EndReason.CALLER_HANGUP, b"", None)
    call.receive_data(audio(0x10, bytes(320)))
    assert call.actions() == [] and call.to_upstream == []


def test_protocol_violation_ends_the_call_with_its_error() -> None:
    call = active_call()
    call.receive_data(b"\x02\x00\x00")
    (end,) = call.actions()
    assert isinstance(end, EndCall) and end.reason is EndReason.PROTOCOL_VIOLATION
    assert isinstance(end.error, UnknownKind) and end.hangup == b""


def test_audio_of_another_kind_mid_call_is_a_violation() -> None:
    call = active_call()
    call.receive_data(audio(0x12, bytes(640)))
    (end,) = call.actions()
    assert isinstance(end, EndCall) and isinstance(end.error, KindChanged)


def test_upstream_failure_gives_the_caller_a_clean_hangup() -> None:
    call = active_call()
    call.upstream_failed(UpstreamClosed(1011, "boom"))
    (end,) = call.actions()
    assert isinstance(end, EndCall)
    assert (end.reason, end.hangup) == (EndReason.UPSTREAM_FAILED, audiosocket.HANGUP)
    assert call.state is State.ENDED


def test_handshake_timeout_only_before_the_uuid() -> None:
    call = Call(settings_for(), peer="p")
    call.handshake_timeout()
    (end,) = call.actions()
    assert isinstance(end, EndCall) and end.reason is EndReason.HANDSHAKE_TIMEOUT
    late = active_call()
    late.handshake_timeout()
    assert late.actions() == []


def test_max_duration_plays_the_goodbye_then_hangs_up() -> None:
    call = active_call()
    sent(call)
    call.max_duration_reached()
    (create,) = sent(call)
    assert create["type"] == "response.create"
    assert "time limit" in create["response"]["instructions"]
    start_response(call, "resp_bye")
    call.upstream_message(delta(tone(24000, 100), "resp_bye", "item_bye"))
    call.upstream_message(server("response.done", response={
        "id": "resp_bye", "object": "realtime.response", "status": "completed", "output": [],
    }))
    ends = []
    for _ in range(10):
        frame = call.next_frame()
        ends += [a for a in call.actions() if isinstance(a, EndCall)]
        if ends:
            assert frame is not None and frame != audiosocket.silence(0x10)
            break
    assert ends and ends[0].reason is EndReason.MAX_DURATION
    assert ends[0].hangup == audiosocket.HANGUP


def function_call(call: Call, call_id: str = "call_1", name: str = "lookup",
                  response_id: str = "resp_1", arguments: str = "{}") -> None:
    item_id = f"fc_{call_id}"
    call.upstream_message(server("response.output_item.added", response_id=response_id,
                                 output_index=0, item={"id": item_id, "type": "function_call",
                                                       "name": name, "call_id": call_id,
                                                       "arguments": ""}))
    call.upstream_message(server("response.function_call_arguments.done",
                                 response_id=response_id, item_id=item_id, output_index=0,
                                 call_id=call_id, arguments=arguments))


def response_done(call: Call, response_id: str = "resp_1", status: str = "completed") -> None:
    call.upstream_message(server("response.done", response={
        "id": response_id, "object": "realtime.response", "status": status, "output": [],
    }))


def test_a_function_call_asks_the_adapter_to_run_its_tool() -> None:
    call = active_call()
    sent(call)
    start_response(call)
    function_call(call, arguments='{"phone": "+15551234"}')
    (run,) = [a for a in call.actions() if isinstance(a, RunTool)]
    assert (run.call_id, run.name, run.arguments) == ("call_1", "lookup", '{"phone": "+15551234"}')
    assert sent(call) == []
    response_done(call)
    assert sent(call) == []
    call.tool_result("call_1", '{"name": "Ada"}')
    output, create = sent(call)
    assert output["item"] == {"type": "function_call_output", "call_id": "call_1",
                              "output": '{"name": "Ada"}'}
    assert create["type"] == "response.create"


def test_parallel_calls_get_one_response_once_all_are_answered() -> None:
    call = active_call()
    sent(call)
    start_response(call)
    function_call(call, "call_a", "lookup")
    function_call(call, "call_b", "availability")
    assert len([a for a in call.actions() if isinstance(a, RunTool)]) == 2
    call.tool_result("call_b", "{}")
    response_done(call)
    assert [e["type"] for e in sent(call)] == ["conversation.item.create"]
    call.tool_result("call_a", "{}")
    assert [e["type"] for e in sent(call)] == ["conversation.item.create", "response.create"]


def test_a_tool_call_from_a_response_cancelled_by_barge_in_does_not_run() -> None:
    call = active_call()
    sent(call)
    start_response(call)
    call.upstream_message(delta(tone(24000, 200)))
    call.next_frame()
    call.upstream_message(server("input_audio_buffer.speech_started", audio_start_ms=100,
                                 item_id="in_1"))
    function_call(call)
    assert not [a for a in call.actions() if isinstance(a, RunTool)]


def test_a_late_result_waits_for_the_current_response() -> None:
    call = active_call()
    sent(call)
    start_response(call, "resp_2")
    call.tool_late_result("lookup", '{"name": "Ada"}')
    assert sent(call) == []
    response_done(call, "resp_2")
    message, create = sent(call)
    assert message["item"]["role"] == "system" and "Ada" in message["item"]["content"][0]["text"]
    assert create["type"] == "response.create"
    call.tool_late_result("lookup", "{}")
    assert [e["type"] for e in sent(call)] == ["conversation.item.create", "response.create"]


def _play_out(call: Call, frames: int = 50) -> tuple[list[bytes], EndCall | None]:
    out = []
    for _ in range(frames):
        frame = call.next_frame()
        assert frame is not None
        out.append(frame)
        ends = [a for a in call.actions() if isinstance(a, EndCall)]
        if ends:
            return out, ends[0]
    return out, None


def test_hangup_after_the_goodbye_in_the_same_response_has_played() -> None:
    call = active_call()
    sent(call)
    start_response(call)
    call.upstream_message(delta(tone(24000, 200)))
    function_call(call, name="end_call")
    call.tool_result("call_1", '{"ok": true}', hangup=True)
    assert [e["type"] for e in sent(call)] == ["conversation.item.create"]
    response_done(call)
    assert [type(a) for a in call.actions()][-1] is StartGoodbye
    assert not [e for e in sent(call) if e["type"] == "response.create"]
    frames, end = _play_out(call)
    assert end is not None and end.reason is EndReason.AGENT_HANGUP
    assert end.hangup == audiosocket.HANGUP
    loud = [f for f in frames if f != audiosocket.silence(0x10)]
    assert len(loud) >= 9 and frames[-1] != audiosocket.silence(0x10)


def test_hangup_result_after_the_spoken_response_finished_waits_for_playout() -> None:
    call = active_call()
    sent(call)
    start_response(call)
    call.upstream_message(delta(tone(24000, 200)))
    function_call(call, name="end_call")
    response_done(call)
    call.tool_result("call_1", '{"ok": true}', hangup=True)
    assert not [e for e in sent(call) if e["type"] == "response.create"]
    frames, end = _play_out(call)
    assert end is not None and end.reason is EndReason.AGENT_HANGUP
    assert frames[-1] != audiosocket.silence(0x10)


def test_hangup_without_a_goodbye_asks_for_one_first() -> None:
    call = active_call()
    sent(call)
    start_response(call)
    function_call(call, name="end_call")
    response_done(call)
    call.tool_result("call_1", '{"ok": true}', hangup=True)
    output, create = sent(call)
    assert create["type"] == "response.create" and "goodbye" in create["response"]["instructions"]
    start_response(call, "resp_bye")
    call.upstream_message(delta(tone(24000, 100), "resp_bye", "item_bye"))
    _, early = _play_out(call, 2)
    assert early is None
    response_done(call, "resp_bye")
    frames, end = _play_out(call)
    assert end is not None and end.reason is EndReason.AGENT_HANGUP
    assert sum(f != audiosocket.silence(0x10) for f in frames) >= 3


def test_the_goodbye_deadline_hangs_up_regardless() -> None:
    call = active_call()
    sent(call)
    start_response(call)
    function_call(call, name="end_call")
    response_done(call)
    call.tool_result("call_1", "{}", hangup=True)
    call.actions()
    call.wrapup_expired()
    (end,) = [a for a in call.actions() if isinstance(a, EndCall)]
    assert end.reason is EndReason.AGENT_HANGUP


def test_a_late_result_queued_during_a_tool_response_is_sent_with_one_response_create() -> None:
    call = active_call()
    sent(call)
    start_response(call)
    function_call(call)
    call.tool_late_result("older_tool", '{"done": true}')
    call.tool_result("call_1", "{}")
    assert [e["type"] for e in sent(call)] == ["conversation.item.create"]
    response_done(call)
    message, create = sent(call)
    assert message["item"]["role"] == "system" and create["type"] == "response.create"


def test_no_response_is_asked_for_while_a_tool_call_is_unanswered() -> None:
    call = active_call()
    sent(call)
    start_response(call)
    function_call(call)
    response_done(call)
    call.forward_dtmf("12")
    assert [e["type"] for e in sent(call)] == ["conversation.item.create"]
    call.tool_result("call_1", "{}")
    assert [e["type"] for e in sent(call)] == ["conversation.item.create", "response.create"]


def test_a_hangup_result_during_a_later_response_makes_that_response_the_goodbye() -> None:
    call = active_call()
    sent(call)
    start_response(call)
    call.upstream_message(delta(tone(24000, 100)))
    function_call(call, "call_a", "lookup")
    function_call(call, "call_b", "end_call")
    response_done(call)
    call.tool_result("call_a", "{}")
    sent(call)
    start_response(call, "resp_2")
    call.tool_result("call_b", "{}", hangup=True)
    assert not [a for a in call.actions() if isinstance(a, EndCall)]
    assert not [e for e in sent(call) if e["type"] == "response.create"]
    call.upstream_message(delta(tone(24000, 200), "resp_2", "item_2"))
    response_done(call, "resp_2")
    frames, end = _play_out(call)
    assert end is not None and end.reason is EndReason.AGENT_HANGUP
    assert sum(f != audiosocket.silence(0x10) for f in frames) >= 10


# -- handing over to a fresh session -----------------------------------------------------


def test_a_handover_waits_for_a_pause_and_a_forced_one_leaves_no_stale_ids() -> None:
    call = active_call()
    sent(call)
    call.actions()
    start_response(call)
    call.upstream_message(delta(bytes(960 * 2)))  # 40 ms of the model's audio, item_1
    call.handover_due()
    assert call.handing_over and not call.at_pause
    assert not [a for a in call.actions() if isinstance(a, Handover)]
    function_call(call)  # the same response asks for a tool that is still running
    call.actions()
    assert call.try_handover(force=True)  # the limit is near: it goes regardless
    assert [a for a in call.actions() if isinstance(a, Handover)]
    call.handover_opened()
    update, note = sent(call)[:2]
    assert update["type"] == "session.update"
    assert note["item"]["role"] == "system"
    # The old session's audio still plays; a barge-in now names no item of the old session.
    call.upstream_message(server("input_audio_buffer.speech_started", audio_start_ms=0,
                                 item_id="item_user"))
    assert [e["type"] for e in sent(call)] == []
    # The tool asked for by the old session answers as a message, not a function output.
    call.tool_result("call_1", '{"name": "Ada"}')
    told, create = sent(call)
    assert told["item"]["type"] == "message" and told["item"]["role"] == "system"
    assert '{"name": "Ada"}' in told["item"]["content"][0]["text"]
    assert create["type"] == "response.create"
    assert call.stats.upstream_sessions == 2


def test_a_failed_handover_keeps_the_session_and_is_tried_again() -> None:
    call = active_call()
    sent(call)
    call.handover_due()
    assert [a for a in call.actions() if isinstance(a, Handover)]
    assert not call.try_handover()  # one is under way
    call.handover_failed()
    assert call.handing_over and call.try_handover()
    call.handover_opened()
    assert not call.handing_over and call.stats.upstream_sessions == 2


def test_an_odd_length_pcm16_delta_is_dropped_counted_and_the_stream_stays_aligned() -> None:
    call = active_call()
    sent(call)
    start_response(call)
    call.upstream_message(delta(bytes(961)))
    call.upstream_message(delta(b"\x01\x00" * 960))
    assert call.stats.bad_deltas == 1 and call.stats.deltas == 1
    clean = active_call()
    start_response(clean)
    clean.upstream_message(delta(b"\x01\x00" * 960))
    assert call.playout.buffered_samples == clean.playout.buffered_samples > 0


def test_what_waited_for_the_old_sessions_response_goes_to_the_new_one() -> None:
    call = active_call()
    sent(call)
    start_response(call)
    call.tool_late_result("lookup", '{"late": true}')  # held behind the response
    call.handover_due()
    assert call.try_handover(force=True)
    call.handover_opened()
    texts = [e["item"]["content"][0]["text"] for e in sent(call)
             if e["type"] == "conversation.item.create"]
    assert any('{"late": true}' in t for t in texts)


def test_a_hangup_pending_on_the_cut_response_still_hangs_up_after_a_handover() -> None:
    call = active_call()
    sent(call)
    start_response(call)
    call.upstream_message(delta(bytes(960 * 2)))
    call.tool_result("call_x", '{"ok": true}', hangup=True)  # the goodbye is playing
    call.handover_due()
    assert call.try_handover(force=True)
    call.handover_opened()
    assert call.state is State.WRAPPING_UP


def test_an_out_of_band_response_never_runs_a_tool_or_blocks_a_pause() -> None:
    call = active_call()
    sent(call)
    call.upstream_message(server("response.created", response={
        "id": "resp_oob", "object": "realtime.response", "status": "in_progress",
        "output": [], "metadata": {"purpose": "summary"}}))
    function_call(call, response_id="resp_oob")
    assert not [a for a in call.actions() if isinstance(a, RunTool)]
    assert call.at_pause
