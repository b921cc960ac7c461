"""The call's state machine under random sequences of everything that can happen to a call:
caller bytes (good, bad, early, late), the upstream opening or failing, any server event in
any order, tool results, timers, barge-ins, handovers and the clock's ticks.

After every step the call's documented invariants must hold: it never raises, ``EndCall``
comes exactly once and nothing follows it, every frame is one whole 20 ms message, a
``response.create`` never goes out while a response of ours is in progress, a tool's output is
sent once, and a truncate never claims more audio than the item had.
"""

from __future__ import annotations

import base64
import uuid as uuidlib
from typing import Any

import orjson
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from engine._impl import audiosocket
from engine.call import (
    Call,
    ConnectUpstream,
    EndCall,
    EndReason,
    Handover,
    RunTool,
    StartPacing,
    State,
)
from engine.errors import UpstreamClosed
from tests.conftest import parse_client_frame
from tests.test_call import audio, server, settings_for, tone

KINDS = (0x10, 0x12, 0x16)
RARE = st.integers(0, 19).map(lambda n: n == 7)
"""Drawn by the rules that end or break a call: they act on True only, so that most runs
live long enough to reach the states worth exploring."""


class CallMachine(RuleBasedStateMachine):
    """One call, driven as the worker's adapter drives it, with a model of what was sent."""

    def __init__(self) -> None:
        super().__init__()
        self.call = Call(settings_for(), peer="127.0.0.1:5000")
        self.ended: list[EndCall] = []
        self.connecting = False
        self.handover_opening = False
        self.pacing = False
        self.pending_tools: list[str] = []
        self.outputs: set[str] = set()
        self.responses = 0
        self.current: str | None = None  # our response in progress, as the server sees it
        self.asked = 0  # response.create not yet answered with response.created
        self.item_ms: dict[str, float] = {}
        self.items = 0

    # -- the adapter ------------------------------------------------------------------------

    def drain(self) -> None:
        """What the worker does after every input: sends, then carries out the actions."""
        call = self.call
        for message in call.to_upstream:
            self.sent(orjson.loads(message))
        for frame in call.upstream_frames:
            self.sent(orjson.loads(parse_client_frame(frame).data))
        call.to_upstream.clear()
        call.upstream_frames.clear()
        for action in call.actions():
            assert not self.ended, f"{action} after the call ended"
            if isinstance(action, EndCall):
                self.ended.append(action)
            elif isinstance(action, ConnectUpstream):
                assert not self.connecting
                self.connecting = True
            elif isinstance(action, StartPacing):
                assert not self.pacing
                self.pacing = True
            elif isinstance(action, RunTool):
                self.pending_tools.append(action.call_id)
            elif isinstance(action, Handover):
                assert not self.handover_opening
                self.handover_opening = True

    def sent(self, event: dict[str, Any]) -> None:
        assert not self.ended, f"{event['type']} sent after the call ended"
        kind = event["type"]
        if kind == "response.create":
            out_of_band = event.get("response", {}).get("conversation") == "none"
            if not out_of_band:
                assert self.current is None and self.asked == 0, "a second response.create"
                self.asked += 1
        elif kind == "response.cancel":
            if event.get("response_id") in (None, self.current):
                self.current = None
        elif kind == "conversation.item.create" and event["item"]["type"] == "function_call_output":
            call_id = event["item"]["call_id"]
            assert call_id not in self.outputs, f"output for {call_id} sent twice"
            self.outputs.add(call_id)
        elif kind == "conversation.item.truncate":
            had = self.item_ms.get(event["item_id"])
            assert had is not None, f"truncate of an item never played: {event}"
            assert 0 <= event["audio_end_ms"] <= had + 1, (event, had)

    def feed(self, data: bytes) -> None:
        self.call.receive_data(data)
        self.drain()

    def upstream(self, event_type: str, **fields: Any) -> None:
        self.call.upstream_message(server(event_type, **fields))
        self.drain()

    # -- the caller -------------------------------------------------------------------------

    @initialize(kind=st.sampled_from(KINDS), how_far=st.sampled_from(["none", "uuid", "all"]))
    def start(self, kind: int, how_far: str) -> None:
        """Most runs begin with a call in progress; some from the first byte."""
        if how_far == "none":
            return
        self.uuid(False)
        if how_far == "all":
            self.caller_audio(kind, 1, False, False)
            self.upstream_opens()

    @rule(rare=RARE)
    def uuid(self, rare: bool) -> None:
        if self.call.state is State.HANDSHAKE or rare:  # a second UUID is a violation
            self.feed(b"\x01\x00\x10" + uuidlib.uuid4().bytes)

    @rule(kind=st.sampled_from(KINDS), frames=st.integers(1, 6), loud=st.booleans(), rare=RARE)
    def caller_audio(self, kind: int, frames: int, loud: bool, rare: bool) -> None:
        if self.call.state is State.HANDSHAKE and not rare:
            return  # audio before the UUID is a violation
        if self.call.kind is not None and not rare:
            kind = self.call.kind  # another kind mid-call is a violation
        rate = audiosocket.AUDIO_RATES[kind]
        pcm = tone(rate, 20) if loud else bytes(rate // 50 * 2)
        self.feed(audio(kind, pcm) * frames)

    @rule(data=st.binary(max_size=40), rare=RARE)
    def caller_bytes(self, data: bytes, rare: bool) -> None:
        if rare:
            self.feed(data)

    @rule(digit=st.sampled_from("0123456789*#"), rare=RARE)
    def dtmf(self, digit: str, rare: bool) -> None:
        if self.call.state is State.HANDSHAKE and not rare:
            return
        self.feed(b"\x03\x00\x01" + digit.encode())

    @rule(how=st.sampled_from(["hangup", "eof", "reset", "stalled"]), rare=RARE)
    def caller_leaves(self, how: str, rare: bool) -> None:
        if not rare:
            return
        if how == "hangup":
            self.feed(b"\x00\x00\x00")
            return
        if how == "eof":
            self.call.receive_eof()
        elif how == "reset":
            self.call.connection_lost()
        else:
            self.call.caller_stalled()
        self.drain()

    # -- the upstream -----------------------------------------------------------------------

    @precondition(lambda self: self.connecting)
    @rule()
    def upstream_opens(self) -> None:
        self.connecting = False
        self.call.upstream_opened()
        self.drain()

    @rule(code=st.sampled_from([1000, 1011, 1013]), rare=RARE)
    def upstream_fails(self, code: int, rare: bool) -> None:
        if not rare:
            return
        self.connecting = False
        self.call.upstream_failed(UpstreamClosed(code, "gone"))
        self.drain()

    @rule()
    def response_created(self) -> None:
        self.responses += 1
        self.current = f"resp_{self.responses}"
        self.asked = max(0, self.asked - 1)
        self.upstream("response.created", response={
            "id": self.current, "object": "realtime.response", "status": "in_progress",
            "output": []})

    @rule(ms=st.integers(0, 300), odd=st.booleans(), stale=st.booleans())
    def audio_delta(self, ms: int, odd: bool, stale: bool) -> None:
        response = "resp_old" if stale or self.current is None else self.current
        item = f"item_{response}"
        pcm = tone(24000, ms) + (b"\x01" if odd else b"")
        if not odd and not stale:
            self.item_ms[item] = self.item_ms.get(item, 0.0) + ms
        self.upstream("response.output_audio.delta", response_id=response, item_id=item,
                      output_index=0, content_index=0, delta=base64.b64encode(pcm).decode())

    @rule()
    def audio_done(self) -> None:
        response = self.current or "resp_old"
        self.upstream("response.output_audio.done", response_id=response,
                      item_id=f"item_{response}", output_index=0, content_index=0)

    @rule(ms=st.integers(20, 2000), done=st.booleans())
    def model_answers(self, ms: int, done: bool) -> None:
        """A whole spoken answer: created, its audio in 100 ms deltas, audio done."""
        self.response_created()
        for left in range(ms, 0, -100):
            self.audio_delta(min(100, left), False, False)
        self.audio_done()
        if done:
            self.response_done("completed")

    @rule(status=st.sampled_from(["completed", "cancelled", "failed"]))
    def response_done(self, status: str) -> None:
        response = self.current or "resp_old"
        self.current = None
        self.upstream("response.done", response={
            "id": response, "object": "realtime.response", "status": status, "output": []})

    @rule(name=st.sampled_from(["end_call", "lookup"]))
    def function_call(self, name: str) -> None:
        response = self.current or "resp_old"
        self.items += 1
        call_id = f"call_{self.items}"
        self.upstream("response.output_item.added", response_id=response, output_index=0,
                      item={"id": f"fc_{call_id}", "type": "function_call", "name": name,
                            "call_id": call_id, "arguments": ""})
        self.upstream("response.function_call_arguments.done", response_id=response,
                      item_id=f"fc_{call_id}", output_index=0, call_id=call_id,
                      arguments="{}")

    @rule(started=st.booleans())
    def caller_speech(self, started: bool) -> None:
        self.items += 1
        name = "started" if started else "stopped"
        if started:
            self.current = None  # interrupt_response: the server cancels its response itself
        self.upstream(f"input_audio_buffer.speech_{name}", audio_start_ms=100,
                      audio_end_ms=200, item_id=f"item_in_{self.items}")

    @rule(text=st.sampled_from(["hello", "", "x" * 500]))
    def transcript(self, text: str) -> None:
        self.upstream("conversation.item.input_audio_transcription.completed",
                      item_id="item_in", content_index=0, transcript=text)

    @rule(what=st.sampled_from([b"not json", b"[]", b'{"type": 5}', b'{"type": "x.y"}',
                                b'{"type": "error", "error": {"type": "server_error", '
                                b'"message": "oops"}}']))
    def odd_message(self, what: bytes) -> None:
        self.call.upstream_message(what)
        self.drain()

    # -- the adapter's own inputs ------------------------------------------------------------

    @precondition(lambda self: self.pending_tools)
    @rule(data=st.data(), hangup=st.booleans())
    def tool_finishes(self, data: st.DataObject, hangup: bool) -> None:
        call_id = data.draw(st.sampled_from(self.pending_tools))
        self.pending_tools.remove(call_id)
        self.call.tool_result(call_id, '{"ok": true}', hangup=hangup)
        self.drain()

    @rule(ticks=st.integers(1, 30))
    def clock(self, ticks: int) -> None:
        for _ in range(ticks):
            frame = self.call.next_frame()
            if frame is None:
                assert not self.pacing or self.call.playout is None
                continue
            kind = self.call.kind
            assert kind is not None
            rate = audiosocket.AUDIO_RATES[kind]
            assert frame[0] == kind and len(frame) == 3 + rate // 50 * 2
            self.drain()

    @rule(which=st.sampled_from(["handshake", "max_duration", "wrapup", "shutdown"]), rare=RARE)
    def timer(self, which: str, rare: bool) -> None:
        if not rare and which != "max_duration":
            return
        call = self.call
        {"handshake": call.handshake_timeout, "max_duration": call.max_duration_reached,
         "wrapup": call.wrapup_expired, "shutdown": call.shutdown}[which]()
        self.drain()

    @rule(force=st.booleans())
    def handover(self, force: bool) -> None:
        self.call.handover_due()
        self.call.try_handover(force=force)
        self.drain()

    @precondition(lambda self: self.handover_opening)
    @rule(opened=st.booleans())
    def handover_answers(self, opened: bool) -> None:
        self.handover_opening = False
        if opened:
            self.current = None  # the new session has no response of ours in progress
            self.asked = 0
            self.call.handover_opened()
        else:
            self.call.handover_failed()
        self.drain()

    # -- what must always hold --------------------------------------------------------------

    @invariant()
    def ends_once_and_consistently(self) -> None:
        call = self.call
        assert len(self.ended) <= 1
        assert (call.state is State.ENDED) == bool(self.ended) == (call.end_reason is not None)
        if self.ended:
            (end,) = self.ended
            assert end.reason is call.end_reason
            assert end.hangup in (b"", audiosocket.HANGUP)
            if end.reason in (EndReason.PROTOCOL_VIOLATION, EndReason.CALLER_HANGUP,
                              EndReason.CALLER_STALLED):
                assert end.hangup == b""
            assert not call.to_upstream and not call.upstream_frames
            assert not call.wants_attention


TestCallStates = CallMachine.TestCase
TestCallStates.settings = settings(
    max_examples=100, stateful_step_count=60, deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
