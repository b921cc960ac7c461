"""The agent's tools end to end: real loopback sockets, uvloop, the built-in simulator scripted
to call tools, the example HTTP backend (``tests/backend.py``) and the scripted Asterisk
manager (``tests/amipeer.py``), with callers that behave like Asterisk.

The simulator's :class:`~engine.sim.session.SessionReport` counts client events by type but
keeps none of their content, so :class:`Recorder` (a :class:`SimObserver`) keeps every client
event each session handled, in order, and the function calls the simulator sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
import uvloop

from engine import caller, upstream
from engine.agent.agentfile import AgentFile, load
from engine.agent.callagent import DTMF_QUIET_S
from engine.agent.manager import Manager
from engine.bench import measure
from engine.call import GOODBYE_INSTRUCTIONS, CallSettings
from engine.config import Config
from engine.sim import SimConfig, Simulator, ToolScript
from engine.sim.server import LiveSession, SimObserver
from engine.worker import Worker, WorkerLimits
from tests.amipeer import SECRET, USER, AmiPeer, Channel
from tests.backend import API_KEY, Backend

RATE = 8000
KIND = 0x10
FRAME = RATE // 50  # samples in one 20 ms frame
RESPONSE_MS = 1000
RECEPTIONIST = Path(__file__).parents[1] / "examples" / "receptionist.toml"
PHONE = "+15551234"
CHANNEL = "PJSIP/trunk-00000001"


# -- running a test body -------------------------------------------------------------------


def run(body: Callable[[], Awaitable[None]], seconds: float = 9.0) -> None:
    """Runs ``body`` on a fresh uvloop within ``seconds``; fails on a task left behind."""

    async def main() -> None:
        async with asyncio.timeout(seconds):
            await body()
        current = asyncio.current_task()
        leaked = [t for t in asyncio.all_tasks() if t is not current and not t.done()]
        assert not leaked, f"leaked tasks: {leaked}"

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main())


def speech(seconds: float, freq: float = 440.0, dbfs: float = -12.0) -> bytes:
    n = round(RATE * seconds)
    amp = 32767 * 10 ** (dbfs / 20)
    return np.round(amp * np.sin(2 * np.pi * freq * np.arange(n) / RATE)).astype("<i2").tobytes()


def quiet(seconds: float) -> bytes:
    return bytes(2 * round(RATE * seconds))


def make_config(**changes: Any) -> Config:
    return Config(vad_silence_ms=300, transcription_model="").replace(**changes)


def log_fields(record: logging.LogRecord) -> dict[str, Any]:
    fields: dict[str, Any] = vars(record)["_fields"]
    return fields


def call_ended(caplog: pytest.LogCaptureFixture) -> dict[str, Any]:
    """The one call's end line, from the worker's logger."""
    (end,) = [log_fields(r) for r in caplog.records
              if r.name == "engine.worker" and r.getMessage() == "call_ended"]
    return end


# -- what the simulator received -----------------------------------------------------------


@dataclass
class Recorder(SimObserver):
    """Every client event each session handled, in order (appends by their type alone), and
    the function calls the simulator sent (``call_id`` → ``name``)."""

    events: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    calls: dict[str, str] = field(default_factory=dict)

    def opened(self, live: LiveSession) -> None:
        core = live.core
        kept = self.events.setdefault(core.id, [])
        receive = core.receive

        def recording(text: str | bytes) -> list[Any]:
            doc = orjson.loads(text)
            kind = doc.get("type") if isinstance(doc, dict) else None
            kept.append({"type": kind} if kind == "input_audio_buffer.append" else doc)
            return receive(text)

        core.receive = recording  # type: ignore[method-assign]

    def sent(self, live: LiveSession, event: dict[str, Any], now: float) -> None:
        if event.get("type") == "response.function_call_arguments.done":
            active = live.core.active  # the response whose head this is
            assert active is not None and active.script is not None
            self.calls[str(event["call_id"])] = active.script.name


def session_events(node: Node) -> list[dict[str, Any]]:
    """The client events of the node's only session, without the audio appends."""
    (live,) = node.sim.sessions
    return [e for e in node.recorder.events[live.core.id]
            if e["type"] != "input_audio_buffer.append"]


def outputs(events: list[dict[str, Any]]) -> list[tuple[int, str, dict[str, Any]]]:
    """(index, call_id, parsed output) of each function_call_output item."""
    found: list[tuple[int, str, dict[str, Any]]] = []
    for i, event in enumerate(events):
        item = event.get("item") or {}
        if (event["type"] == "conversation.item.create"
                and item.get("type") == "function_call_output"):
            found.append((i, item["call_id"], orjson.loads(item["output"])))
    return found


def texts(events: list[dict[str, Any]], role: str) -> list[tuple[int, str]]:
    """(index, text) of each message item of ``role`` the client created."""
    found: list[tuple[int, str]] = []
    for i, event in enumerate(events):
        item = event.get("item") or {}
        if event["type"] == "conversation.item.create" and item.get("role") == role:
            found.extend((i, part["text"]) for part in item["content"])
    return found


def kinds(events: list[dict[str, Any]]) -> list[str]:
    return [e["type"] for e in events]


def assert_clean(sim: Simulator) -> None:
    totals = sim.totals()
    assert totals["invalid"] == 0, [live.report.invalid for live in sim.sessions]
    assert totals["mistakes"] == 0, [live.report.mistakes for live in sim.sessions]


def loud(report: caller.CallReport) -> list[tuple[int, int]]:
    return measure.loud_stretches(report.received_pcm, RATE)


# -- the node ------------------------------------------------------------------------------


@dataclass
class Node:
    worker: Worker
    sim: Simulator
    port: int
    recorder: Recorder

    async def call(self, pcm: bytes, **kwargs: Any) -> caller.CallReport:
        """One call; returns once the engine has seen it end too."""
        report = await caller.call("127.0.0.1", self.port, pcm=pcm, kind=KIND, **kwargs)
        assert await self.worker.wait_idle(3.0)
        return report


@contextlib.asynccontextmanager
async def node(*scripts: ToolScript, agents: AgentFile | None = None, manager: Any = None,
               config: Config | None = None, sim_config: SimConfig | None = None,
               limits: WorkerLimits | None = None) -> AsyncIterator[Node]:
    """A worker in this loop, bridged to a simulator that plays ``scripts``."""
    config = config or make_config()
    recorder = Recorder()
    sim_config = sim_config or SimConfig(response_ms=RESPONSE_MS, tool_scripts=scripts)
    sim = Simulator(sim_config, observer=recorder)
    await sim.start()
    settings = CallSettings.from_config(config)
    endpoint = upstream.Endpoint.for_dialect(settings.dialect, sim.url, config.openai_model,
                                             "sk-test")
    worker = Worker(config, endpoint, settings, limits or WorkerLimits(connect_deadline=2.0),
                    agents=agents, manager=manager)
    port = await worker.start("127.0.0.1", 0)
    try:
        yield Node(worker, sim, port, recorder)
        assert await worker.wait_idle(3.0)
    finally:
        await worker.stop()
        await sim.stop()
    assert not worker.connections


@contextlib.asynccontextmanager
async def backend_running() -> AsyncIterator[Backend]:
    backend = await Backend().start()
    try:
        yield backend
    finally:
        await backend.stop()


@contextlib.asynccontextmanager
async def asterisk(call_id: uuid.UUID, cls: type[Manager] = Manager, **options: Any,
                   ) -> AsyncIterator[tuple[AmiPeer, Manager]]:
    """A scripted manager whose caller's channel has ``VE_UUID`` = ``call_id`` (listed after
    the engine's own AudioSocket leg, which carries it too), and a client logged in to it."""
    engine_leg = Channel("AudioSocket/127.0.0.1:9093-00000002", "1767225600.2",
                         tech="AudioSocket", application="AppDial",
                         variables={"VE_UUID": str(call_id)})
    callers_leg = Channel(CHANNEL, "1767225600.1", caller_num=PHONE, caller_name="Ana Núñez",
                          dnid="8000", variables={"VE_UUID": str(call_id)})
    peer = await AmiPeer([engine_leg, callers_leg]).start()
    options = {"action_timeout": 1.0, "connect_timeout": 1.0, "backoff_first": 0.01,
               "backoff_cap": 0.05, "backoff_jitter": 0.0, "ping_interval": None, **options}
    manager = cls("127.0.0.1", peer.port, USER, SECRET, **options)
    try:
        await manager.connect()
        yield peer, manager
    finally:
        await manager.close()
        await peer.stop()


def receptionist(backend: Backend | None = None) -> AgentFile:
    """examples/receptionist.toml as the node loads it, wired to ``backend``.

    Its Spanish profile's port (9096) is left out: a test must not bind a fixed port.
    """
    url, key = (backend.url, backend.key) if backend else ("http://127.0.0.1:9", API_KEY)
    loaded = load(RECEPTIONIST, {"BACKEND_API_URL": url, "BACKEND_API_KEY": key},
                  make_config())
    return dataclasses.replace(loaded, profiles=())


def agent_file(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> AgentFile:
    path = tmp_path / "agent.toml"
    path.write_text(text)
    return load(path, env or {}, make_config())


END_CALL_TOOL = """
[[tool]]
name = "end_call"
description = "End the call after saying goodbye."
action = { type = "hangup" }
"""


def script(name: str, arguments: dict[str, Any] | str, at: int = 1) -> ToolScript:
    text = arguments if isinstance(arguments, str) else orjson.dumps(arguments).decode()
    return ToolScript(name, text, at_response=at)


# -- 1. hangup: the whole goodbye, then 00 00 00 -------------------------------------------


def test_end_call_plays_the_whole_goodbye_then_hangs_up(caplog: pytest.LogCaptureFixture,
                                                        figures: list[str]) -> None:
    arguments = {"summary": "The caller asked for the opening hours.", "disposition": "resolved"}

    async def body() -> None:
        async with node(script("end_call", arguments)) as n:
            report = await n.call(speech(0.6) + quiet(5.0))
            assert report.hangup == caller.ENGINE_HANGUP
            (goodbye,) = loud(report)  # the function call said nothing; the goodbye did
            first, samples = goodbye
            assert samples * 1000 / RATE >= 0.95 * RESPONSE_MS
            # Nothing cut: the 00 00 00 came right after the goodbye's last frame.
            trailing = len(report.received_pcm) // 2 - (first + samples)
            assert trailing <= 2 * FRAME, f"{trailing} samples of silence before the hangup"
            assert report.duration < 4.0  # the engine hung up; the caller had 5.6 s to go
            events = session_events(n)
            ((i, call_id, output),) = outputs(events)
            assert n.recorder.calls[call_id] == "end_call"
            assert output["ok"] is True
            # The model said no goodbye with the call, so the engine asked for one.
            ask = events[i + 1]
            assert ask["type"] == "response.create"
            assert ask["response"]["instructions"] == GOODBYE_INSTRUCTIONS
            assert kinds(events).count("response.create") == 1
            assert_clean(n.sim)
            figures.append(f"end_call: goodbye {samples / RATE * 1000:.0f} ms of "
                           f"{RESPONSE_MS} ms heard, {trailing / RATE * 1000:.1f} ms of "
                           "silence before 00 00 00")

    with caplog.at_level(logging.INFO, logger="engine"):
        run(body)
    end = call_ended(caplog)
    assert end["reason"] == "agent_hangup" and end["tool_calls"] == 1


# -- 2. http tools against the example backend ---------------------------------------------


def test_lookup_customer_reaches_the_backend_and_its_answer_the_model() -> None:
    async def body() -> None:
        async with backend_running() as backend, node(
                script("lookup_customer", {"phone": PHONE}),
                agents=receptionist(backend)) as n:
            report = await n.call(speech(0.6) + quiet(2.2))
            assert report.hangup == caller.CALLER_FINISHED
            (seen,) = backend.requests
            assert (seen.method, seen.path, seen.route) == ("GET", f"/customers/{PHONE}",
                                                            "customers")
            assert seen.headers["Authorization"] == f"Bearer {backend.key}"
            events = session_events(n)
            ((i, call_id, output),) = outputs(events)
            assert n.recorder.calls[call_id] == "lookup_customer"
            assert output["status"] == 200 and "error" not in output
            assert output["body"]["name"] == "Ana Núñez"
            assert output["body"]["patient_id"] == "P-1042"
            assert events[i + 1]["type"] == "response.create"
            assert "response" not in events[i + 1]  # the session's instructions hold
            assert len(loud(report)) == 1  # the model's answer reached the caller
            assert_clean(n.sim)

    run(body)


def test_a_booking_changes_what_the_backend_answers_next() -> None:
    day = "2026-03-02"  # a Monday
    booking = {"name": "Ana Núñez", "phone": PHONE, "date": day, "time": "10:00",
               "reason": "a cleaning"}
    scripts = (
        script("check_availability", {"date": day}, at=1),
        script("book_appointment", booking, at=2),
        script("check_availability", {"date": day}, at=3),
        script("book_appointment", {**booking, "name": "Ben Okafor"}, at=4),
        script("send_sms", {"to": PHONE, "message": f"Booked: {day} at 10:00."}, at=5),
    )

    async def body() -> None:
        async with backend_running() as backend, node(
                *scripts, agents=receptionist(backend)) as n:
            await n.call(speech(0.6) + quiet(2.4))
            assert [(r.method, r.route) for r in backend.requests] == [
                ("GET", "availability"), ("POST", "appointments"), ("GET", "availability"),
                ("POST", "appointments"), ("POST", "sms")]
            assert all(r.headers["Authorization"] == f"Bearer {backend.key}"
                       for r in backend.requests)
            first_post = backend.requests[1]
            assert first_post.json == booking
            assert first_post.headers["Content-Type"] == "application/json"
            assert backend.requests[0].query == {"date": day}
            results = [output for _, _, output in outputs(session_events(n))]
            before, booked, after, taken, sms = results
            assert "10:00" in before["body"]["free"]
            assert booked["status"] == 201 and booked["body"]["time"] == "10:00"
            assert "10:00" not in after["body"]["free"]
            assert after["body"]["free"] == [s for s in before["body"]["free"] if s != "10:00"]
            assert taken["status"] == 409 and taken["error"] == "backend_error"
            assert taken["body"]["error"] == "slot_taken"
            assert sms["status"] == 202
            assert [m.message for m in backend.messages] == [f"Booked: {day} at 10:00."]
            assert [b.name for b in backend.bookings] == ["Ana Núñez"]
            # Each result was followed by a request for the model to go on.
            events = session_events(n)
            assert all(events[i + 1]["type"] == "response.create"
                       for i, _, _ in outputs(events))
            assert_clean(n.sim)

    run(body)


@pytest.mark.parametrize(("tool", "arguments", "reason"), [
    ("book_appointment", {"name": "Ana", "phone": PHONE, "date": "2026-03-02",
                          "time": "10:75"}, "pattern"),
    ("book_appointment", {"name": "Ana", "phone": PHONE, "date": "2026-03-02"}, "time"),
    ("lookup_customer", {"phone": PHONE, "admin": True}, "admin"),
    ("lookup_customer", "{not json", "JSON"),
])
def test_invalid_arguments_are_answered_and_never_reach_the_backend(
        tool: str, arguments: dict[str, Any] | str, reason: str) -> None:
    async def body() -> None:
        async with backend_running() as backend, node(
                script(tool, arguments), agents=receptionist(backend)) as n:
            report = await n.call(speech(0.6) + quiet(2.0))
            assert report.hangup == caller.CALLER_FINISHED
            assert backend.requests == []
            events = session_events(n)
            ((i, _, output),) = outputs(events)
            assert output["error"] == "invalid_arguments"
            assert reason.lower() in output["message"].lower()
            assert events[i + 1]["type"] == "response.create"  # the model can try again
            assert_clean(n.sim)

    run(body)


def test_an_unknown_tool_is_answered_with_the_tools_there_are() -> None:
    async def body() -> None:
        async with backend_running() as backend, node(
                script("order_pizza", {"size": "large"}), agents=receptionist(backend)) as n:
            report = await n.call(speech(0.6) + quiet(2.0))
            assert report.hangup == caller.CALLER_FINISHED
            assert backend.requests == []
            events = session_events(n)
            ((i, _, output),) = outputs(events)
            assert output["error"] == "unknown_tool"
            assert "order_pizza" in output["message"]
            assert set(output["tools"]) == {
                "transfer_to_department", "end_call", "lookup_customer",
                "check_availability", "book_appointment", "send_sms"}
            assert events[i + 1]["type"] == "response.create"
            assert_clean(n.sim)

    run(body)


SLOW_AGENT = """
[agent]
instructions = "You look patients up."

[[tool]]
name = "lookup_customer"
description = "Look up a patient by phone number."
timeout_s = 0.3

[tool.parameters]
type = "object"
required = ["phone"]
properties.phone = { type = "string" }

[tool.action]
type = "http"
method = "GET"
url = "{BACKEND_API_URL}/customers/{phone}"
headers = { Authorization = "Bearer ${BACKEND_API_KEY}" }
""" + END_CALL_TOOL


def test_a_slow_backend_answers_still_working_then_its_late_result(tmp_path: Path) -> None:
    async def body() -> None:
        async with backend_running() as backend:
            backend.delays["customers"] = 1.0
            agents = agent_file(tmp_path, SLOW_AGENT, {"BACKEND_API_URL": backend.url,
                                                       "BACKEND_API_KEY": backend.key})
            async with node(script("lookup_customer", {"phone": PHONE}), agents=agents) as n:
                report = await n.call(speech(0.6) + quiet(3.2))
                assert report.hangup == caller.CALLER_FINISHED
                assert len(backend.seen("customers")) == 1  # asked once, not again
                events = session_events(n)
                ((i, _, output),) = outputs(events)
                assert output["status"] == "still_working"
                ((j, late),) = texts(events, "system")
                assert "lookup_customer" in late and "Ana Núñez" in late
                assert '"status":200' in late.replace(" ", "")
                # still working, the model speaks; the late result, the model speaks again
                assert kinds(events)[i:] == ["conversation.item.create", "response.create",
                                             "conversation.item.create", "response.create"]
                assert j == i + 2
                assert n.sim.sessions[0].report.responses == 3
                # Both answers reached the caller (back to back: one loud stretch or two).
                heard = sum(samples for _, samples in loud(report)) * 1000 / RATE
                assert heard >= 2 * 0.95 * RESPONSE_MS
                assert_clean(n.sim)

    run(body)


# -- 3. transfer through the Asterisk manager ----------------------------------------------


def test_transfer_redirects_the_callers_channel_to_the_allowed_destination(
        caplog: pytest.LogCaptureFixture) -> None:
    call_id = uuid.uuid4()

    async def body() -> None:
        async with asterisk(call_id) as (peer, manager), node(
                script("transfer_to_department", {"department": "sales"}),
                agents=receptionist(), manager=manager) as n:
            report = await n.call(speech(0.6) + quiet(4.0), uuid=call_id)
            # The engine's end of the call is over; no 00 00 00: the dialplan is elsewhere.
            assert report.hangup == caller.ENGINE_CLOSED
            assert peer.redirects == [(CHANNEL, "from-internal", "2001", "1")]
            (redirect,) = [a for a in peer.actions if a["Action"] == "Redirect"]
            assert redirect["Channel"] == CHANNEL
            events = session_events(n)
            ((_, call, output),) = outputs(events)
            assert n.recorder.calls[call] == "transfer_to_department"
            assert output["ok"] is True and output["transferring_to"] == "sales"
            # The same lookup gave the agent the caller's number for its instructions.
            update = next(e for e in events if e["type"] == "session.update")
            assert f"The caller's number is {PHONE}." in update["session"]["instructions"]
            assert_clean(n.sim)

    with caplog.at_level(logging.INFO, logger="engine"):
        run(body)
    assert call_ended(caplog)["reason"] == "transferred"


def test_transfer_waits_for_the_models_words_to_play_out() -> None:
    call_id = uuid.uuid4()

    async def body() -> None:
        async with asterisk(call_id) as (peer, manager), node(
                script("transfer_to_department", {"department": "sales"}),
                agents=receptionist(), manager=manager) as n:
            report = await n.call(speech(0.6) + quiet(4.0), uuid=call_id)
            assert peer.redirects == [(CHANNEL, "from-internal", "2001", "1")]
            events = session_events(n)
            ((i, _, output),) = outputs(events)
            # The result asks the model for "one short sentence"; the engine asks it to speak.
            assert "sentence" in output["message"]
            assert events[i + 1]["type"] == "response.create"
            # That sentence is heard whole before the leg is redirected away.
            stretches = loud(report)
            assert stretches, "the caller heard nothing before the transfer"
            first, samples = stretches[-1]
            assert samples * 1000 / RATE >= 0.95 * RESPONSE_MS
            assert len(report.received_pcm) // 2 - (first + samples) <= 3 * FRAME

    run(body)


def test_a_destination_outside_the_allow_list_is_refused_by_the_schema() -> None:
    call_id = uuid.uuid4()

    async def body() -> None:
        async with asterisk(call_id) as (peer, manager), node(
                script("transfer_to_department", {"department": "kitchen"}),
                agents=receptionist(), manager=manager) as n:
            report = await n.call(speech(0.6) + quiet(2.0), uuid=call_id)
            assert report.hangup == caller.CALLER_FINISHED
            assert peer.redirects == []
            assert not [a for a in peer.actions if a["Action"] == "Redirect"]
            events = session_events(n)
            ((i, _, output),) = outputs(events)
            assert output["error"] == "invalid_arguments"
            assert "sales" in output["message"]  # the allowed values are named
            assert events[i + 1]["type"] == "response.create"
            assert_clean(n.sim)

    run(body)


def test_a_transfer_without_a_manager_is_unavailable_and_the_call_goes_on(
        caplog: pytest.LogCaptureFixture) -> None:
    async def body() -> None:
        async with node(script("transfer_to_department", {"department": "sales"}),
                        agents=receptionist()) as n:
            report = await n.call(speech(0.6) + quiet(2.2))
            assert report.hangup == caller.CALLER_FINISHED
            events = session_events(n)
            ((i, _, output),) = outputs(events)
            assert output["error"] == "transfer_unavailable"
            assert events[i + 1]["type"] == "response.create"
            assert len(loud(report)) == 1  # the model told the caller
            assert_clean(n.sim)

    with caplog.at_level(logging.INFO, logger="engine"):
        run(body)
    assert call_ended(caplog)["reason"] == "caller_hangup"


def test_a_transfer_with_the_manager_down_is_a_structured_error_and_the_call_goes_on(
        caplog: pytest.LogCaptureFixture) -> None:
    call_id = uuid.uuid4()

    async def body() -> None:
        async with asterisk(call_id, action_timeout=0.4) as (peer, manager), node(
                script("transfer_to_department", {"department": "sales"}),
                agents=receptionist(), manager=manager) as n:
            await peer.stop()  # Asterisk is gone, and stays gone
            async with asyncio.timeout(2):
                while manager.connected:
                    await asyncio.sleep(0.01)
            report = await n.call(speech(0.6) + quiet(2.6), uuid=call_id)
            assert report.hangup == caller.CALLER_FINISHED
            assert peer.redirects == []
            events = session_events(n)
            ((i, _, output),) = outputs(events)
            assert output["error"] in ("transfer_unavailable", "tool_failed")
            assert output["message"] and SECRET not in output["message"]
            assert events[i + 1]["type"] == "response.create"
            assert len(loud(report)) == 1  # the call went on: the model answered
            assert_clean(n.sim)

    with caplog.at_level(logging.INFO, logger="engine"):
        run(body)
    assert call_ended(caplog)["reason"] == "caller_hangup"
    assert all(SECRET not in r.getMessage() and SECRET not in str(vars(r).get("_fields"))
               for r in caplog.records)


class SlowLookup(Manager):
    """A manager whose channel lookup takes 0.6 s (a busy Asterisk with many channels)."""

    async def find_channel(self, variable: str, value: str, *,
                           timeout: float | None = None) -> Any:
        await asyncio.sleep(0.6)
        return await super().find_channel(variable, value, timeout=timeout)


QUICK_TRANSFER = """
[agent]
instructions = "You transfer callers."

[[tool]]
name = "transfer_to_department"
description = "Transfer the caller to a department."
timeout_s = 0.3
action.type = "transfer"
action.destinations.sales = { context = "from-internal", exten = "2001" }
""" + END_CALL_TOOL


def test_a_transfer_slower_than_its_timeout_still_transfers(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    call_id = uuid.uuid4()

    async def body() -> None:
        async with asterisk(call_id, cls=SlowLookup) as (peer, manager), node(
                script("transfer_to_department", {"destination": "sales"}),
                agents=agent_file(tmp_path, QUICK_TRANSFER), manager=manager) as n:
            await n.call(speech(0.6) + quiet(3.4), uuid=call_id)
            events = session_events(n)
            ((_, _, output),) = outputs(events)
            assert output["status"] == "still_working"
            ((_, late),) = texts(events, "system")
            assert "transferring_to" in late
            # The model was told the caller is being transferred: the caller must be.
            assert peer.redirects == [(CHANNEL, "from-internal", "2001", "1")]

    with caplog.at_level(logging.INFO, logger="engine"):
        run(body)
    assert call_ended(caplog)["reason"] == "transferred"


# -- 4. DTMF -------------------------------------------------------------------------------


def test_forwarded_digits_reach_the_model_as_one_user_message(
        caplog: pytest.LogCaptureFixture) -> None:
    async def body() -> None:
        async with node() as n:
            await n.call(quiet(2.0), dtmf=[(0.3, "1"), (0.5, "2"), (0.7, "#")])
            events = session_events(n)
            ((i, text),) = texts(events, "user")
            assert text == "[The caller pressed on the keypad: 1 2 #]"
            assert events[i + 1]["type"] == "response.create"
            assert kinds(events).count("response.create") == 1
            assert_clean(n.sim)

    with caplog.at_level(logging.INFO, logger="engine"):
        run(body)
    assert call_ended(caplog)["dtmf"] == "12#"


def test_forwarded_digits_without_a_hash_go_after_a_pause() -> None:
    async def body() -> None:
        async with node() as n:
            await n.call(quiet(0.8 + DTMF_QUIET_S + 0.6), dtmf=[(0.3, "4"), (0.6, "2")])
            events = session_events(n)
            ((_, text),) = texts(events, "user")
            assert text == "[The caller pressed on the keypad: 4 2]"
            assert_clean(n.sim)

    run(body)


def test_a_mapped_digit_redirects_at_once(caplog: pytest.LogCaptureFixture) -> None:
    call_id = uuid.uuid4()

    async def body() -> None:
        async with asterisk(call_id) as (peer, manager), node(
                agents=receptionist(), manager=manager) as n:
            report = await n.call(quiet(4.0), uuid=call_id, dtmf=[(0.5, "0")])
            assert peer.redirects == [(CHANNEL, "from-internal", "2000", "1")]
            assert report.hangup == caller.ENGINE_CLOSED
            # Not forwarded, not held for the keypad's pause: the digit acts by itself.
            assert report.duration < 0.5 + DTMF_QUIET_S
            events = session_events(n)
            assert texts(events, "user") == [] and "response.create" not in kinds(events)

    with caplog.at_level(logging.INFO, logger="engine"):
        run(body)
    end = call_ended(caplog)
    assert end["reason"] == "transferred" and end["dtmf"] == "0"


IGNORE_AGENT = """
[agent]
instructions = "You answer the phone."

[dtmf]
mode = "ignore"
map = { "*" = "end_call" }
""" + END_CALL_TOOL


def test_ignored_digits_send_nothing(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    async def body() -> None:
        async with node(agents=agent_file(tmp_path, IGNORE_AGENT)) as n:
            report = await n.call(quiet(2.0), dtmf=[(0.3, "1"), (0.5, "2"), (0.7, "#")])
            assert report.hangup == caller.CALLER_FINISHED
            events = session_events(n)
            assert kinds(events) == ["session.update"]  # and the audio, nothing else
            assert_clean(n.sim)

    with caplog.at_level(logging.INFO, logger="engine"):
        run(body)
    end = call_ended(caplog)
    assert end["dtmf"] == "12#" and end["reason"] == "caller_hangup"


def test_a_digit_mapped_to_a_hangup_ends_the_call_at_once(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    async def body() -> None:
        async with node(agents=agent_file(tmp_path, IGNORE_AGENT)) as n:
            report = await n.call(quiet(3.0), dtmf=[(0.5, "*")])
            assert report.hangup == caller.ENGINE_HANGUP
            assert report.duration < 1.5
            assert kinds(session_events(n)) == ["session.update"]

    with caplog.at_level(logging.INFO, logger="engine"):
        run(body)
    end = call_ended(caplog)
    assert end["reason"] == "agent_hangup" and end["dtmf"] == "*"


# -- 5. A/B variants -----------------------------------------------------------------------


AB_AGENT = """
[agent]
instructions = "You answer for Example Ltd ({variant})."

[[variant]]
name = "short"
weight = 1
instructions = "Be very brief."

[[variant]]
name = "control"
weight = 3
""" + END_CALL_TOOL
AB_INSTRUCTIONS = {"short": "Be very brief.", "control": "You answer for Example Ltd (control)."}


def uuid_for(variant: str) -> uuid.UUID:
    """A UUID the documented rule gives ``variant``: SHA-256 of its bytes, the first 8 as a
    big-endian integer, modulo the total weight 4; slot 0 is short, 1 to 3 control."""
    for i in range(1, 1000):
        candidate = uuid.UUID(int=i * 0x9E3779B97F4A7C15 % (1 << 128))
        slot = int.from_bytes(hashlib.sha256(candidate.bytes).digest()[:8], "big") % 4
        if (slot == 0) == (variant == "short"):
            return candidate
    raise AssertionError("no UUID found")


@pytest.mark.parametrize("variant", ["short", "control"])
def test_the_variant_is_logged_and_its_instructions_sent(
        variant: str, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    async def body() -> None:
        async with node(agents=agent_file(tmp_path, AB_AGENT)) as n:
            await n.call(quiet(0.6), uuid=uuid_for(variant))
            (update,) = [e for e in session_events(n) if e["type"] == "session.update"]
            assert update["session"]["instructions"] == AB_INSTRUCTIONS[variant]
            assert n.sim.sessions[0].core.session["instructions"] == AB_INSTRUCTIONS[variant]
            assert [t["name"] for t in update["session"]["tools"]] == ["end_call"]
            assert_clean(n.sim)

    with caplog.at_level(logging.INFO, logger="engine"):
        run(body)
    end = call_ended(caplog)
    assert end["variant"] == variant and end["profile"] == "default"


PYTHON_AGENT = """
[agent]
instructions = "You quote prices."

[[tool]]
name = "quote"
description = "The price of a treatment."

[tool.parameters]
type = "object"
required = ["treatment"]
properties.treatment = { type = "string" }

[tool.action]
type = "python"
callable = "ve_test_tools:quote"
""" + END_CALL_TOOL

PYTHON_TOOLS = '''
calls = []


async def quote(arguments):
    calls.append(arguments)
    if arguments["treatment"] == "unknown":
        raise LookupError("no such treatment")
    return {"treatment": arguments["treatment"], "price_eur": 80}
'''


def test_a_python_tool_is_awaited_with_the_arguments_and_its_failure_is_structured(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    (tmp_path / "ve_test_tools.py").write_text(PYTHON_TOOLS)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "ve_test_tools", raising=False)
    agents = agent_file(tmp_path, PYTHON_AGENT)

    async def body() -> None:
        async with node(script("quote", {"treatment": "cleaning"}, at=1),
                        script("quote", {"treatment": "unknown"}, at=2), agents=agents) as n:
            report = await n.call(speech(0.6) + quiet(1.5) + speech(0.6) + quiet(2.5))
            assert report.hangup == caller.CALLER_FINISHED
            results = [o for _, _, o in outputs(session_events(n))]
            assert results[0] == {"treatment": "cleaning", "price_eur": 80}
            assert results[1]["error"] == "tool_failed"
            assert "LookupError" in results[1]["message"]
            assert sys.modules["ve_test_tools"].calls == [
                {"treatment": "cleaning"}, {"treatment": "unknown"}]

    run(body)
