"""The built-in Realtime simulator, driven by a real websockets client over loopback on uvloop.

Every server event the tests receive is checked against the OpenAI SDK's server-event union of
its dialect (unknown keys included), which catches simulator bugs as well as the engine's.
"""

from __future__ import annotations

import asyncio
import base64
import math
import os
import signal
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
import orjson
import pytest
import uvloop
from click.testing import CliRunner
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidMessage, InvalidStatus

from engine._impl import g711
from engine.sim import (
    Dialect,
    Fault,
    FaultKind,
    SimConfig,
    Simulator,
    ToolScript,
    parse_fault,
)
from engine.sim.command import command
from engine.sim.validate import EventValidator

ROOT = Path(__file__).resolve().parent.parent

# Keys the live API sends in a session that the SDK's session models do not declare.
_SESSION_EXTRAS = ("session.object", "session.id", "session.expires_at")
SERVER_CHECK = {
    "ga": EventValidator("ga", "server", _SESSION_EXTRAS),
    "beta": EventValidator("beta", "server", _SESSION_EXTRAS),
}
BETA_HEADERS = {"OpenAI-Beta": "realtime=v1"}
FAST = SimConfig(response_ms=600, delta_ms=100, pacing=math.inf)


_STARTED: list[Simulator] = []


async def started(config: SimConfig | None = None) -> Simulator:
    """A started simulator that :func:`run` stops even when the test fails."""
    sim = Simulator(config)
    await sim.start()
    _STARTED.append(sim)
    return sim


def run(coro_fn: Callable[[], Awaitable[None]]) -> None:
    """Runs one test body on a fresh uvloop and fails on any task it leaves behind."""

    async def body() -> None:
        try:
            async with asyncio.timeout(20):
                await coro_fn()
        finally:
            while _STARTED:
                await _STARTED.pop().stop()
        current = asyncio.current_task()
        leaked = [t for t in asyncio.all_tasks() if t is not current and not t.done()]
        assert not leaked, f"leaked tasks: {leaked}"

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(body())


class Client:
    """A websockets client that validates every server event it receives."""

    def __init__(self, ws: ClientConnection, dialect: str) -> None:
        self.ws = ws
        self.dialect = dialect
        self.seen: list[dict[str, Any]] = []

    async def send(self, event: dict[str, Any]) -> None:
        await self.ws.send(orjson.dumps(event).decode())

    async def recv(self, timeout: float = 5.0) -> dict[str, Any]:
        event = orjson.loads(await asyncio.wait_for(self.ws.recv(), timeout))
        problem = SERVER_CHECK[self.dialect].problem(event)
        assert problem is None, f"simulator sent an invalid {event.get('type')}: {problem}"
        self.seen.append(event)
        return event

    async def until(self, kind: str, timeout: float = 5.0) -> list[dict[str, Any]]:
        """Events up to and including the first of type ``kind``."""
        got = []
        while True:
            event = await self.recv(timeout)
            got.append(event)
            if event["type"] == kind:
                return got

    async def append(self, pcm: bytes, chunk_ms: int = 40, rate: int = 24000) -> None:
        step = rate * chunk_ms // 1000 * 2
        for i in range(0, len(pcm), step):
            audio = base64.b64encode(pcm[i : i + step]).decode()
            await self.send({"type": "input_audio_buffer.append", "audio": audio})


def tone(ms: int, rate: int = 24000, hz: float = 300.0, dbfs: float = -20.0) -> bytes:
    t = np.arange(rate * ms // 1000) / rate
    peak = 32767 * 10 ** (dbfs / 20)
    return np.round(np.sin(2 * np.pi * hz * t) * peak).astype("<i2").tobytes()


def silence(ms: int, rate: int = 24000) -> bytes:
    return bytes(rate * ms // 1000 * 2)


def measure(pcm: bytes, rate: int) -> tuple[float, float]:
    """(dominant frequency in Hz, sine level in dBFS from RMS) of 16-bit audio."""
    x = np.frombuffer(pcm, dtype="<i2").astype(np.float64)
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    freq = float(np.argmax(spectrum)) * rate / len(x)
    rms = float(np.sqrt(np.mean(x**2)))
    return freq, 20 * math.log10(rms * math.sqrt(2) / 32767)


async def open_client(
    sim: Simulator, dialect: str = "ga", model: str = "gpt-realtime", **kw: Any
) -> tuple[ClientConnection, Client]:
    headers = dict(BETA_HEADERS) if dialect == "beta" else {}
    headers.update(kw.pop("headers", {}))
    ws = await connect(f"{sim.url}?model={model}", compression=None,
                       additional_headers=headers, **kw)
    return ws, Client(ws, dialect)


def ga_update(**audio_input: Any) -> dict[str, Any]:
    return {"type": "session.update", "event_id": "evt_update",
            "session": {"type": "realtime", "audio": {"input": audio_input}}}


def first_of(events: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    return next(e for e in events if e["type"] == kind)


def collect_audio(events: list[dict[str, Any]], delta_type: str) -> bytes:
    return b"".join(base64.b64decode(e["delta"]) for e in events if e["type"] == delta_type)


# -- lifecycle --------------------------------------------------------------------------------


@pytest.mark.parametrize("dialect", ["ga", "beta"])
def test_session_lifecycle(dialect: str) -> None:
    async def body() -> None:
        sim = await started(FAST)
        ws, c = await open_client(sim, dialect, model="gpt-realtime")
        async with ws:
            created = await c.recv()
            assert created["type"] == "session.created"
            if dialect == "ga":
                assert created["session"]["audio"]["output"]["format"]["type"] == "audio/pcm"
                update = {"type": "session.update", "session": {
                    "type": "realtime",
                    "audio": {"input": {"format": {"type": "audio/pcmu"}},
                              "output": {"format": {"type": "audio/pcmu"}, "voice": "marin"}}}}
            else:
                assert created["session"]["output_audio_format"] == "pcm16"
                update = {"type": "session.update", "session": {
                    "input_audio_format": "g711_ulaw", "output_audio_format": "g711_ulaw",
                    "voice": "verse"}}
            await c.send(update)
            updated = await c.recv()
            assert updated["type"] == "session.updated"
            s = updated["session"]
            if dialect == "ga":
                assert s["audio"]["input"]["format"] == {"type": "audio/pcmu"}
                assert s["audio"]["output"]["voice"] == "marin"
                # Untouched parts of the session survive a partial update.
                assert s["audio"]["input"]["turn_detection"]["type"] == "server_vad"
            else:
                assert s["output_audio_format"] == "g711_ulaw" and s["voice"] == "verse"
        await sim.stop()
        (live,) = sim.sessions
        assert live.report.dialect == dialect and live.report.model == "gpt-realtime"
        assert live.report.path == "/v1/realtime"
        assert live.report.events["session.update"] == 1
        assert live.core.settings.output_format == "pcmu"
        assert not live.report.invalid

    run(body)


def test_forced_dialect_ignores_header() -> None:
    async def body() -> None:
        sim = await started(SimConfig(dialect=Dialect.BETA))
        ws, c = await open_client(sim, "beta", headers={})
        async with ws:
            await c.recv()
        ws, c = await open_client(sim, "ga")
        async with ws:
            c.dialect = "beta"
            assert "modalities" in (await c.recv())["session"]
        await sim.stop()
        assert [s.report.dialect for s in sim.sessions] == ["beta", "beta"]

    run(body)


# -- VAD --------------------------------------------------------------------------------------


def test_vad_turn_on_loud_tone_with_transcript_and_response() -> None:
    async def body() -> None:
        sim = await started(FAST)
        ws, c = await open_client(sim)
        async with ws:
            await c.recv()
            await c.send(ga_update(transcription={"model": "whisper-1"},
                                   turn_detection={"type": "server_vad",
                                                   "silence_duration_ms": 300}))
            await c.until("session.updated")
            await c.append(silence(500) + tone(1200) + silence(600))
            got = await c.until("response.done")
        await sim.stop()
        kinds = [e["type"] for e in got]
        began = next(e for e in got if e["type"] == "input_audio_buffer.speech_started")
        stopped = next(e for e in got if e["type"] == "input_audio_buffer.speech_stopped")
        assert began["audio_start_ms"] == 500 - 300  # onset minus the prefix padding
        assert stopped["audio_end_ms"] == 1700 and stopped["item_id"] == began["item_id"]
        order = ["input_audio_buffer.speech_started", "input_audio_buffer.speech_stopped",
                 "input_audio_buffer.committed", "conversation.item.added",
                 "conversation.item.input_audio_transcription.completed", "response.created"]
        head = kinds[: kinds.index("response.created") + 1]
        assert [k for k in head if k in order] == order
        transcript = next(e for e in got if e["type"].endswith("transcription.completed"))
        assert transcript["transcript"] == "caller speech 1.5 s"

    run(body)


def test_vad_ignores_silence_and_quiet_noise() -> None:
    async def body() -> None:
        sim = await started(FAST)
        ws, c = await open_client(sim)
        async with ws:
            await c.recv()
            await c.append(silence(800) + tone(800, dbfs=-60.0))
            # A marker: the error for a cancel with nothing to cancel comes after every event
            # the audio could have caused.
            await c.send({"type": "response.cancel", "event_id": "evt_marker"})
            got = await c.until("error")
        await sim.stop()
        assert [e["type"] for e in got] == ["error"]
        assert got[0]["error"]["code"] == "response_cancel_not_active"
        assert got[0]["error"]["event_id"] == "evt_marker"
        assert sim.sessions[0].report.mistakes == ["response.cancel with no active response"]

    run(body)


def test_vad_on_mulaw_input_beta() -> None:
    async def body() -> None:
        sim = await started(FAST)
        ws, c = await open_client(sim, "beta")
        async with ws:
            await c.recv()
            await c.send({"type": "session.update", "session": {
                "input_audio_format": "g711_ulaw", "output_audio_format": "g711_ulaw"}})
            await c.until("session.updated")
            ulaw = g711.ulaw_encode(tone(600, rate=8000) + silence(600, rate=8000))
            for i in range(0, len(ulaw), 320):
                await c.send({"type": "input_audio_buffer.append",
                              "audio": base64.b64encode(ulaw[i : i + 320]).decode()})
            got = await c.until("response.done")
        await sim.stop()
        kinds = [e["type"] for e in got]
        assert "input_audio_buffer.speech_started" in kinds
        assert "conversation.item.created" in kinds  # beta's name for the new item
        assert "response.audio.delta" in kinds

    run(body)


# -- response audio ---------------------------------------------------------------------------


@pytest.mark.parametrize(("dialect", "fmt"), [("ga", "pcm16"), ("beta", "pcmu"), ("ga", "pcmu")])
def test_response_audio_is_the_configured_tone(dialect: str, fmt: str) -> None:
    config = SimConfig(response_ms=900, delta_ms=60, pacing=50.0, tone_hz=1000.0,
                       level_dbfs=-10.0)

    async def body() -> None:
        sim = await started(config)
        ws, c = await open_client(sim, dialect)
        async with ws:
            await c.recv()
            if fmt == "pcmu":
                if dialect == "ga":
                    await c.send({"type": "session.update", "session": {
                        "type": "realtime", "audio": {"output": {"format":
                                                                 {"type": "audio/pcmu"}}}}})
                else:
                    await c.send({"type": "session.update",
                                  "session": {"output_audio_format": "g711_ulaw"}})
                await c.until("session.updated")
            await c.send({"type": "response.create"})
            got = await c.until("rate_limits.updated")
        await sim.stop()
        delta = "response.output_audio.delta" if dialect == "ga" else "response.audio.delta"
        deltas = [e for e in got if e["type"] == delta]
        assert len(deltas) == math.ceil(900 / 60)
        raw = collect_audio(got, delta)
        rate = 24000 if fmt == "pcm16" else 8000
        pcm = raw if fmt == "pcm16" else g711.ulaw_decode(raw)
        assert len(pcm) == rate * 900 // 1000 * 2
        freq, level = measure(pcm, rate)
        assert abs(freq - 1000.0) < 5.0
        assert abs(level - (-10.0)) < 0.5
        done = next(e for e in got if e["type"] == "response.done")["response"]
        assert done["status"] == "completed"
        usage = done["usage"]
        assert usage["output_token_details"]["audio_tokens"] == 900 // 50
        assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]
        kinds = [e["type"] for e in got]
        assert kinds.index("response.content_part.added") < kinds.index(delta)
        assert kinds[-2:] == ["response.done", "rate_limits.updated"]

    run(body)


def test_voice_signal_is_voice_like() -> None:
    from engine.sim.response_audio import synthesize

    x = synthesize("voice", 24000, 2000, 440.0, -6.0).astype(np.float64)
    assert abs(20 * math.log10(np.max(np.abs(x)) / 32767) - (-6.0)) < 0.1
    spectrum = np.abs(np.fft.rfft(x))
    freqs = np.fft.rfftfreq(len(x), 1 / 24000)
    assert 120 < freqs[np.argmax(spectrum)] < 160  # the fundamental dominates
    frames = x[: len(x) // 480 * 480].reshape(-1, 480)
    energy = np.sqrt(np.mean(frames**2, axis=1))
    assert energy.min() < 0.05 * energy.max()  # syllable pauses


# -- truncate and cancel ----------------------------------------------------------------------


def test_truncate_valid_and_too_long() -> None:
    async def body() -> None:
        sim = await started(FAST)
        ws, c = await open_client(sim)
        async with ws:
            await c.recv()
            await c.send({"type": "response.create"})
            got = await c.until("response.done")
            item_id = first_of(got, "response.output_item.added")["item"]["id"]
            await c.send({"type": "conversation.item.truncate", "event_id": "evt_ok",
                          "item_id": item_id, "content_index": 0, "audio_end_ms": 250})
            ok = await c.until("conversation.item.truncated")
            await c.send({"type": "conversation.item.truncate", "event_id": "evt_long",
                          "item_id": item_id, "content_index": 0, "audio_end_ms": 400})
            bad = (await c.until("error"))[-1]
        await sim.stop()
        assert ok[-1]["audio_end_ms"] == 250 and ok[-1]["item_id"] == item_id
        # After a truncate to 250 ms the item holds 250 ms: 400 is past its end.
        assert bad["error"]["message"] == "Audio content of 250ms is already shorter than 400ms"
        assert bad["error"]["type"] == "invalid_request_error"
        assert bad["error"]["event_id"] == "evt_long"
        report = sim.sessions[0].report
        assert [(t.audio_end_ms, t.audio_sent_ms, t.ok) for t in report.truncates] == [
            (250, 600, True), (400, 250, False)]
        assert report.mistakes == ["truncate past the audio sent"]

    run(body)


SLOW = SimConfig(response_ms=20000, delta_ms=100, pacing=2.0)


@pytest.mark.parametrize("interrupt", [True, False])
def test_barge_in_server_cancel_or_wait_for_client(interrupt: bool) -> None:
    async def body() -> None:
        sim = await started(SLOW)
        ws, c = await open_client(sim)
        async with ws:
            await c.recv()
            await c.send(ga_update(turn_detection={
                "type": "server_vad", "interrupt_response": interrupt, "create_response": True}))
            await c.until("session.updated")
            await c.send({"type": "response.create"})
            first = await c.until("response.output_audio.delta")
            item_id = first_of(first, "response.output_item.added")["item"]["id"]
            await c.append(tone(300))
            got = await c.until("input_audio_buffer.speech_started")
            if not interrupt:
                # The response keeps streaming until the client cancels it.
                got += await c.until("response.output_audio.delta")
                await c.send({"type": "response.cancel", "event_id": "evt_cancel"})
            got += await c.until("response.done")
            received_ms = len(collect_audio(first + got, "response.output_audio.delta")) // 48
            await c.send({"type": "conversation.item.truncate", "item_id": item_id,
                          "content_index": 0, "audio_end_ms": received_ms})
            await c.until("conversation.item.truncated")
        await sim.stop()
        done = got[-1]["response"]
        assert done["status"] == "cancelled"
        reason = "turn_detected" if interrupt else "client_cancelled"
        assert done["status_details"] == {"type": "cancelled", "reason": reason}
        assert done["output"][0]["status"] == "incomplete"
        assert received_ms < 20000
        report = sim.sessions[0].report
        assert [by for by, _ in report.cancels] == ["server" if interrupt else "client"]
        assert report.truncates[0].ok and not report.mistakes

    run(body)


def test_response_create_during_response_is_an_error() -> None:
    async def body() -> None:
        sim = await started(SLOW)
        ws, c = await open_client(sim)
        async with ws:
            await c.recv()
            await c.send({"type": "response.create"})
            await c.until("response.created")
            await c.send({"type": "response.create", "event_id": "evt_twice"})
            err = (await c.until("error"))[-1]["error"]
            await c.send({"type": "response.cancel"})
            await c.until("response.done")
        await sim.stop()
        assert err["code"] == "conversation_already_has_active_response"
        assert err["event_id"] == "evt_twice"

    run(body)


# -- function calls ---------------------------------------------------------------------------


@pytest.mark.parametrize("trigger", ["at_response", "cue"])
def test_function_call_script_then_audio(trigger: str) -> None:
    script = (ToolScript("lookup_order", '{"order": "A17"}', at_response=1) if trigger ==
              "at_response" else ToolScript("lookup_order", '{"order": "A17"}', cue="ORDER"))

    async def body() -> None:
        sim = await started(SimConfig(response_ms=300, pacing=math.inf, tool_scripts=(script,)))
        dialect = "ga" if trigger == "at_response" else "beta"
        delta = "response.output_audio.delta" if dialect == "ga" else "response.audio.delta"
        created = "conversation.item.added" if dialect == "ga" else "conversation.item.created"
        ws, c = await open_client(sim, dialect)
        async with ws:
            await c.recv()
            if trigger == "cue":
                await c.send({"type": "conversation.item.create", "item": {
                    "type": "message", "role": "user",
                    "content": [{"type": "input_text", "text": "where is my order?"}]}})
                await c.until(created)
            await c.send({"type": "response.create"})
            call = await c.until("response.done")
            added = next(e for e in call if e["type"] == "response.output_item.added")["item"]
            args = next(e for e in call if e["type"] == "response.function_call_arguments.done")
            await c.send({"type": "conversation.item.create", "item": {
                "type": "function_call_output", "call_id": args["call_id"],
                "output": '{"status": "shipped"}'}})
            await c.until(created)
            await c.send({"type": "response.create"})
            audio = await c.until("response.done")
        await sim.stop()
        assert added["type"] == "function_call" and added["name"] == "lookup_order"
        assert args["arguments"] == '{"order": "A17"}' and args["call_id"] == added["call_id"]
        assert not [e for e in call if e["type"] == delta]
        assert call[-1]["response"]["output"][0]["arguments"] == '{"order": "A17"}'
        assert [e for e in audio if e["type"] == delta]
        assert sim.sessions[0].report.function_calls == 1

    run(body)


# -- faults and auth --------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "fault"), [
    ("403", Fault(FaultKind.FORBIDDEN)),
    ("close:250", Fault(FaultKind.CLOSE, after_ms=250)),
    ("close:250:1013", Fault(FaultKind.CLOSE, after_ms=250, close_code=1013)),
    ("garbage:10", Fault(FaultKind.GARBAGE, after_ms=10)),
    ("unknown", Fault(FaultKind.UNKNOWN)),
    ("huge:5:1000", Fault(FaultKind.HUGE, after_ms=5, size=1000)),
    ("error:40", Fault(FaultKind.ERROR, after_ms=40)),
    ("bad_audio:300", Fault(FaultKind.BAD_AUDIO, after_ms=300)),
    ("odd_audio", Fault(FaultKind.ODD_AUDIO)),
])
def test_fault_texts(text: str, fault: Fault) -> None:
    assert parse_fault(text) == fault


@pytest.mark.parametrize("text", [
    "401:3", "close:1:999", "close:1:1015", "stall:1:2", "huge:x", "error:", "flood",
])
def test_fault_texts_that_are_refused(text: str) -> None:
    from engine.errors import ConfigError

    with pytest.raises(ConfigError, match="fault"):
        parse_fault(text)


def test_message_faults_are_sent_as_the_server_would() -> None:
    async def body() -> None:
        sim = await started(SimConfig())
        for text in ("garbage", "unknown", "huge:0:100000", "error"):
            sim.queue_fault(parse_fault(text))
            ws, c = await open_client(sim)
            async with ws:
                assert (await c.recv())["type"] == "session.created"
                raw = await asyncio.wait_for(ws.recv(), 3)
                if text == "garbage":
                    with pytest.raises(orjson.JSONDecodeError):
                        orjson.loads(raw)
                    continue
                event = orjson.loads(raw)
                if text == "error":
                    assert SERVER_CHECK["ga"].problem(event) is None
                    assert event["error"]["type"] == "server_error"
                else:
                    assert event["type"] == "conversation.future_event"
                    assert text != "huge:0:100000" or len(raw) == 100000
        await sim.stop()
        assert [s.report.injected for s in sim.sessions] == [
            ["garbage"], ["unknown"], ["huge"], ["error"]]

    run(body)


def test_handshake_faults_and_auth() -> None:
    async def body() -> None:
        sim = await started(SimConfig(api_key="sk-test-secret"))
        sim.queue_fault(Fault(FaultKind.REFUSE))
        with pytest.raises((OSError, InvalidMessage)):
            ws, _ = await open_client(sim)
            await ws.close()
        sim.queue_fault(parse_fault("429:7"))
        with pytest.raises(InvalidStatus) as limited:
            await open_client(sim, headers={"Authorization": "Bearer sk-test-secret"})
        assert limited.value.response.status_code == 429
        assert limited.value.response.headers["Retry-After"] == "7"
        sim.queue_fault(parse_fault("403"))
        with pytest.raises(InvalidStatus) as forbidden:
            await open_client(sim, headers={"Authorization": "Bearer sk-test-secret"})
        assert forbidden.value.response.status_code == 403
        sim.queue_fault(parse_fault("401"))
        with pytest.raises(InvalidStatus) as unauthorized:
            await open_client(sim, headers={"Authorization": "Bearer sk-test-secret"})
        assert unauthorized.value.response.status_code == 401
        assert b"invalid_api_key" in unauthorized.value.response.body
        with pytest.raises(InvalidStatus):
            await open_client(sim, headers={"Authorization": "Bearer wrong"})
        for headers in ({"Authorization": "Bearer sk-test-secret"},
                        {"api-key": "sk-test-secret"}):
            ws, c = await open_client(sim, headers=headers)
            async with ws:
                assert (await c.recv())["type"] == "session.created"
        await sim.stop()
        assert sim.handshakes == {"refused": 1, "429": 1, "403": 1, "401": 2, "accepted": 2}
        assert "sk-test-secret" not in repr(sim.config)

    run(body)


def test_close_fault_after_ms_and_on_demand() -> None:
    async def body() -> None:
        sim = await started(FAST)
        sim.queue_fault(parse_fault("close:50"))
        ws, c = await open_client(sim)
        async with ws:
            await c.recv()
            with pytest.raises(ConnectionClosed):
                await c.recv(timeout=3)
        assert ws.close_code == 1011
        ws, c = await open_client(sim)
        async with ws:
            await c.recv()
            await sim.sessions[1].close(4000, "bye")
            with pytest.raises(ConnectionClosed):
                await c.recv(timeout=3)
        assert ws.close_code == 4000
        await sim.stop()

    run(body)


@pytest.mark.parametrize("how", ["queued", "on_demand"])
def test_stall_stops_reading_and_sending_without_closing(how: str) -> None:
    async def body() -> None:
        sim = await started(SimConfig(response_ms=20000, delta_ms=100, pacing=5.0))
        if how == "queued":
            sim.queue_fault(parse_fault("stall:100"))
        ws, c = await open_client(sim, ping_interval=None)
        await c.recv()
        await c.send({"type": "response.create"})
        await c.until("response.output_audio.delta")
        live = sim.sessions[0]
        if how == "on_demand":
            live.stall()
        await asyncio.sleep(0.15)
        while True:  # drain what was in flight before the stall
            try:
                await c.recv(timeout=0.3)
            except TimeoutError:
                break
        await c.send({"type": "response.cancel"})
        with pytest.raises(TimeoutError):
            await c.recv(timeout=0.4)
        assert ws.close_code is None  # still open: a stall, not a close
        assert live.report.events["response.cancel"] == 0  # never read
        await sim.stop()
        await ws.close()
        assert live.report.closed == "stalled"

    run(body)


# -- validation -------------------------------------------------------------------------------


def test_validation_catches_bad_events_and_unknown_keys() -> None:
    async def body() -> None:
        sim = await started(FAST)
        ws, c = await open_client(sim, "beta")
        async with ws:
            await c.recv()
            await c.send({"type": "conversation.item.truncate", "event_id": "evt_missing",
                          "item_id": "x", "content_index": 0})
            missing = (await c.until("error"))[-1]["error"]
            await c.send({"type": "response.create", "event_id": "evt_extra", "colour": "red"})
            extra = (await c.until("error"))[-1]["error"]
            # A GA-shaped update passes the beta models but for its undeclared keys.
            await c.send(ga_update(format={"type": "audio/pcmu"}))
            ga_shape = (await c.until("error"))[-1]["error"]
            await c.send({"type": "session.bogus"})
            unknown = (await c.until("error"))[-1]["error"]
        await sim.stop()
        assert missing["event_id"] == "evt_missing" and "audio_end_ms" in missing["message"]
        assert extra["event_id"] == "evt_extra" and "colour" in extra["message"]
        assert "session.type" in ga_shape["message"] and "session.audio" in ga_shape["message"]
        assert "session.bogus" in unknown["message"]
        report = sim.sessions[0].report
        assert [kind for kind, _ in report.invalid] == [
            "conversation.item.truncate", "response.create", "session.update", "session.bogus"]
        assert report.responses == 0  # invalid events are not acted on
        assert report.session["input_audio_format"] == "pcm16"

    run(body)


def test_validation_off_and_sampled() -> None:
    from engine.sim import ValidationMode

    async def body() -> None:
        for mode, expect in ((ValidationMode.OFF, 0), (ValidationMode.SAMPLE, 2)):
            sim = await started(SimConfig(validation=mode, sample_every=3))
            ws, c = await open_client(sim)
            async with ws:
                await c.recv()
                for _ in range(6):  # events 1 and 4 are sampled
                    await c.send({"type": "input_audio_buffer.clear", "colour": "red"})
                await c.send({"type": "response.cancel"})
                await c.until("error" if expect == 0 else "input_audio_buffer.cleared")
            await sim.stop()
            assert len(sim.sessions[0].report.invalid) == expect

    run(body)


# -- CLI --------------------------------------------------------------------------------------


def test_command_help_and_option_errors() -> None:
    runner = CliRunner()
    out = runner.invoke(command, ["--help"])
    assert out.exit_code == 0
    for option in ("--port", "--dialect", "--api-key", "--fault", "--response-ms", "--signal"):
        assert option in out.output
    bad = runner.invoke(command, ["--fault", "explode"])
    assert bad.exit_code == 2 and "unknown fault" in bad.output
    assert runner.invoke(command, ["--dialect", "azure"]).exit_code == 2


def test_command_serves_until_sigint_and_prints_summary() -> None:
    code = "from engine.sim.command import command; command()"
    env = dict(os.environ, PYTHONPATH=str(ROOT), SIM_API_KEY="sk-cli-secret")
    proc = subprocess.Popen(
        [sys.executable, "-c", code, "--port", "0", "--dialect", "beta", "--response-ms",
         "200", "--pacing", "inf", "--tone-hz", "500"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert "listening on ws://127.0.0.1:" in line, proc.stderr.read() if proc.stderr else ""
        url = line.rsplit(" ", 1)[1].strip()

        async def body() -> None:
            async with connect(url, compression=None,
                               additional_headers={"api-key": "sk-cli-secret"}) as ws:
                c = Client(ws, "beta")
                await c.recv()
                await c.send({"type": "response.create"})
                got = await c.until("response.done")
                freq, _ = measure(collect_audio(got, "response.audio.delta"), 24000)
                assert abs(freq - 500) < 10

        run(body)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, stderr
    summary = orjson.loads(stdout)
    assert summary["sessions"] == 1 and summary["responses"] == 1
    assert summary["events"] == {"response.create": 1}
    assert "sk-cli-secret" not in stdout + stderr


def test_command_serves_wss_with_the_given_certificate(tmp_path: Path) -> None:
    import ssl

    import trustme

    ca = trustme.CA()
    pem = tmp_path / "sim.pem"
    ca.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(str(pem))
    client = ssl.create_default_context()
    ca.configure_trust(client)
    code = "from engine.sim.command import command; command()"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(
        [sys.executable, "-c", code, "--port", "0", "--tls-cert", str(pem)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert "listening on wss://127.0.0.1:" in line, proc.stderr.read() if proc.stderr else ""
        url = line.rsplit(" ", 1)[1].strip()

        async def body() -> None:
            async with connect(url, compression=None, ssl=client) as ws:
                first = orjson.loads(await ws.recv())
                assert first["type"] == "session.created"

        run(body)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, stderr
    assert orjson.loads(stdout)["sessions"] == 1
    bad = CliRunner().invoke(command, ["--tls-cert", str(tmp_path / "missing.pem")])
    assert bad.exit_code == 2 and "cannot use the TLS certificate" in bad.output
    assert CliRunner().invoke(command, ["--tls-key", str(pem)]).exit_code == 2


# -- sans-I/O parts ---------------------------------------------------------------------------


def test_vad_events_do_not_depend_on_chunking() -> None:
    from engine.sim.vad import EnergyVad

    pcm = silence(330) + tone(710) + silence(90) + tone(200) + silence(800)
    whole = EnergyVad(24000, -40.0, 500, 300).feed(pcm)
    for step in (2, 962, 1918, 4800):
        vad = EnergyVad(24000, -40.0, 500, 300)
        pieces = [vad.feed(pcm[i : i + step]) for i in range(0, len(pcm), step)]
        assert [e for p in pieces for e in p] == whole
    # A 90 ms gap is shorter than the silence duration: one turn, ending after the second tone.
    assert [type(e).__name__ for e in whole] == ["SpeechStarted", "SpeechStopped"]
    assert whole[0].audio_start_ms == 30 and whole[1].audio_end_ms == 1330  # type: ignore[union-attr]


def test_parse_fault_and_config_errors() -> None:
    from engine.errors import ConfigError

    assert parse_fault("close:250") == Fault(FaultKind.CLOSE, after_ms=250)
    assert parse_fault("STALL:10") == Fault(FaultKind.STALL, after_ms=10)
    assert parse_fault("429:2.5").retry_after == 2.5
    assert parse_fault("refuse") == Fault(FaultKind.REFUSE)
    for bad in ("close:soon", "refuse:1", "boom", "401:3"):
        with pytest.raises(ConfigError):
            parse_fault(bad)
    with pytest.raises(ConfigError, match="tone_hz"):
        SimConfig(tone_hz=5000)
    with pytest.raises(ConfigError, match="pacing"):
        SimConfig(pacing=0)


def test_session_update_merges_nested_and_replaces_formats() -> None:
    from engine.sim.events import default_session
    from engine.sim.session_config import merge_session, settings_of

    base = default_session(Dialect.GA, "sess_x", "gpt-realtime")
    merged = merge_session(base, {"type": "realtime", "instructions": "Be brief.", "audio": {
        "input": {"format": {"type": "audio/pcmu"}, "turn_detection": {
            "type": "server_vad", "silence_duration_ms": 700, "interrupt_response": False}}}})
    assert merged["audio"]["input"]["format"] == {"type": "audio/pcmu"}  # replaced, not merged
    assert merged["audio"]["output"] == base["audio"]["output"]
    assert base["audio"]["input"]["format"]["type"] == "audio/pcm"  # the original is untouched
    s = settings_of(Dialect.GA, merged)
    assert (s.input_format, s.output_format, s.silence_ms) == ("pcmu", "pcm16", 700)
    assert not s.interrupt_response and s.create_response and s.instructions == "Be brief."
    off = settings_of(Dialect.GA, merge_session(merged, {"audio": {"input": {
        "turn_detection": None}}}))
    assert off.turn_detection is None


def test_stop_mid_response_closes_clients_and_leaks_nothing() -> None:
    async def body() -> None:
        sim = await started(SLOW)
        ws, c = await open_client(sim)
        async with ws:
            await c.recv()
            await c.send({"type": "response.create"})
            await c.until("response.output_audio.delta")
            await sim.stop()
            with pytest.raises(ConnectionClosed):
                while True:
                    await c.recv(timeout=3)
        assert ws.close_code == 1001
        assert sim.sessions[0].report.closed == "1001"

    run(body)


@pytest.mark.parametrize(("required", "level"), [(False, "info"), (True, "warning")])
def test_without_the_sdk_validation_is_off_with_one_log_line(required: bool, level: str) -> None:
    code = (
        "import sys, asyncio; sys.modules['openai'] = None\n"
        "from engine import logs; logs.setup('INFO', 'json')\n"
        "from engine.sim import Simulator, SimConfig\n"
        "async def main():\n"
        f"    sim = Simulator(SimConfig(validation_required={required}))\n"
        "    await sim.start(); await sim.stop()\n"
        "asyncio.run(main())\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert out.returncode == 0, out.stderr
    lines = [orjson.loads(line) for line in out.stderr.splitlines()]
    off = [line for line in lines if line["event"] == "sim_validation_off"]
    assert len(off) == 1 and off[0]["level"] == level
    assert "openai package is not installed" in off[0]["reason"]
    assert "pip install openai" in off[0]["fix"] and "turns it on" in off[0]["fix"]
    assert next(line for line in lines if line["event"] == "sim_listening")["validation"] == "off"


def test_sim_command_requires_validation_only_when_asked() -> None:
    seen: list[SimConfig] = []

    class Stop(Exception):
        pass

    def capture(config: SimConfig, keep_sessions: int, ssl_context: object) -> None:
        assert ssl_context is None  # no --tls-cert: ws://
        seen.append(config)
        raise Stop

    with mock.patch("engine.sim.command.Simulator", capture):
        for args in ([], ["--validation", "all"], ["--validation", "off"]):
            result = CliRunner().invoke(command, args)
            assert isinstance(result.exception, Stop), result.output
    assert [c.validation_required for c in seen] == [False, True, False]


def test_a_long_running_simulator_keeps_only_the_latest_sessions() -> None:
    async def body() -> None:
        sim = Simulator(FAST, keep_sessions=2)
        await sim.start()
        seen = []
        for _ in range(4):
            ws, c = await open_client(sim)
            async with ws:
                seen.append((await c.recv())["session"]["id"])
        await sim.stop()
        assert len(sim.sessions) == 2
        assert [live.core.id for live in sim.sessions] == seen[2:]
        assert sim.handshakes["accepted"] == 4

    run(body)


def test_fragmented_appends_pings_and_a_bad_continuation_over_the_frame_reader() -> None:
    async def body() -> None:
        sim = await started(FAST)
        ws, c = await open_client(sim)
        async with ws:
            await c.recv()
            live = next(iter(sim._live))
            assert live._reader is not None  # data frames now skip websockets' parser
            audio = base64.b64encode(silence(200)).decode()
            text = orjson.dumps({"type": "input_audio_buffer.append", "audio": audio}).decode()
            await ws.send([text[:100], text[100:2000], text[2000:]])  # one message, 3 frames
            pong = await ws.ping(b"still there")
            await asyncio.wait_for(pong, 2)
            assert live.core.input_samples == 24000 * 200 // 1000
            assert not live._reader.passthrough
            ws.transport.write(bytes([0x80, 0x81]) + bytes(4) + b"x")  # a stray continuation
            with pytest.raises(ConnectionClosed):
                await asyncio.wait_for(ws.recv(), 3)
        assert ws.close_code == 1002 and "unexpected continuation" in (ws.close_reason or "")

    run(body)


@pytest.mark.parametrize("n", [0, 125, 126, 65535, 65536])
def test_the_simulators_own_text_frames_parse_as_websockets_reads_them(n: int) -> None:
    from websockets.frames import Frame, Opcode
    from websockets.streams import StreamReader

    from engine.sim.server import _text_header

    data = b"a" * n
    reader = StreamReader()
    reader.feed_data(_text_header(n) + data)
    parser = Frame.parse(reader.read_exact, mask=False)
    with pytest.raises(StopIteration) as done:
        next(parser)
    frame = done.value.value
    assert frame.opcode is Opcode.TEXT and frame.fin and frame.data == data
    assert not reader.buffer


def test_audio_faults_damage_a_delta_as_they_say() -> None:
    from engine._pure import b64
    from engine.sim.server import damaged_delta

    audio = bytes(range(200)) * 3
    event = orjson.dumps({"type": "response.output_audio.delta", "response_id": "resp_1",
                          "item_id": "item_1", "output_index": 0, "content_index": 0,
                          "delta": base64.b64encode(audio).decode()})
    bad = orjson.loads(damaged_delta(event, Fault(FaultKind.BAD_AUDIO)))
    with pytest.raises(ValueError):
        b64.b64decode(bad["delta"])
    odd = orjson.loads(damaged_delta(event, Fault(FaultKind.ODD_AUDIO)))
    assert b64.b64decode(odd["delta"]) == audio[:-1]
    for doc in (bad, odd):
        assert {k: v for k, v in doc.items() if k != "delta"} == {
            k: v for k, v in orjson.loads(event).items() if k != "delta"}
