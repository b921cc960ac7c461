"""Long calls: before the Realtime session's time limit the call moves to a fresh session at
a pause (or at the limit regardless), the conversation carried over, with no audio gap and
no stale item ids afterwards. The simulator's session-length limit makes it take seconds."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from engine import caller, handover
from engine.handover import CONTINUES, Conversation, carried_items, handover_after
from engine.realtime import Dialect, Encoder
from engine.sim import SimConfig
from engine.worker import WorkerLimits
from tests.test_agent_tools import (
    RATE,
    Node,
    assert_clean,
    log_fields,
    loud,
    make_config,
    node,
    quiet,
    run,
    speech,
    texts,
)

RESPONSE_MS = 900
SIM_TEXT = "This is the voice engine simulator speaking."


def long_call_node(handover_s: float, grace_s: float, limit_s: float,
                   dialect: str = "ga") -> Any:
    """A worker whose sessions hand over after ``handover_s`` (forced ``grace_s`` later),
    bridged to a simulator that ends each session ``limit_s`` after it opened."""
    return node(
        config=make_config(transcription_model="whisper-1", realtime_dialect=dialect),
        sim_config=SimConfig(response_ms=RESPONSE_MS, session_limit_s=limit_s,
                             vad_silence_ms=300),
        limits=WorkerLimits(connect_deadline=2.0, handover_s=handover_s,
                            handover_grace_s=grace_s))


def events_of(node: Node, index: int) -> list[dict[str, Any]]:
    live = node.sim.sessions[index]
    return [e for e in node.recorder.events[live.core.id]
            if e["type"] != "input_audio_buffer.append"]


def handovers(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    return [log_fields(r) for r in caplog.records if r.getMessage() == "upstream_handover"]


def ended(caplog: pytest.LogCaptureFixture) -> dict[str, Any]:
    (end,) = [log_fields(r) for r in caplog.records if r.getMessage() == "call_ended"]
    return end


@pytest.mark.parametrize("dialect", ["ga", "beta"])
def test_a_call_longer_than_a_session_moves_to_fresh_ones_at_pauses_and_loses_nothing(
        dialect: str, caplog: pytest.LogCaptureFixture) -> None:
    # Sessions end 3 s after they open; the call hands over after 1.2 s, at a pause. A turn
    # every 2 s: the caller speaks 0.4 s, the model answers 0.3 s later for 0.9 s, so the
    # handovers fall due while the model speaks and wait for the pause after it.
    turn = speech(0.4) + quiet(1.6)
    pcm = quiet(0.2) + turn * 5 + quiet(1.0)
    got: dict[str, Any] = {}

    async def body() -> None:
        async with long_call_node(1.2, 1.2, 3.0, dialect) as n:
            got["report"] = await n.call(pcm)
            got["sessions"] = [live.report for live in n.sim.sessions]
            got["events"] = [events_of(n, i) for i in range(len(n.sim.sessions))]
            assert_clean(n.sim)
            assert n.sim.totals()["bad_truncates"] == 0

    with caplog.at_level(logging.INFO, logger="engine"):
        run(body, 30)
    report, sessions = got["report"], got["sessions"]
    assert report.hangup == caller.CALLER_FINISHED
    assert len(sessions) >= 3
    # The engine closed each old session itself, before the simulator's limit cut it.
    assert all(s.closed != "session_limit" for s in sessions)
    moves = handovers(caplog)
    assert len(moves) == len(sessions) - 1
    assert all(1.2 <= m["after_s"] < 2.6 for m in moves), moves
    assert ended(caplog)["sessions"] == len(sessions)
    # No audio gap: every frame sent came back paced, and every response was heard whole.
    # (The caller's own pacing may fall a few frames behind the engine's clock over 10 s.)
    assert report.frames_received >= report.frames_sent - 3
    assert report.pacing.max_ms <= 25
    runs = loud(report)
    assert len(runs) == sum(s.responses for s in sessions) == 5
    assert all(samples >= 0.95 * RESPONSE_MS * RATE / 1000 for _, samples in runs), runs
    # Each new session is configured like the first and told the conversation so far.
    for before, events in enumerate(got["events"][1:]):
        assert events[0]["type"] == "session.update"
        assert events[0]["session"] == got["events"][0][0]["session"]
        notes = texts(events, "system")
        assert notes and notes[0][1].startswith(CONTINUES)
        heard = [t for _, t in texts(events, "assistant")]
        said = [t for _, t in texts(events, "user")]
        assert heard and all(t == SIM_TEXT for t in heard)
        assert len(heard) >= sum(s.responses for s in sessions[:before + 1])
        assert said and all(t.startswith("caller speech") for t in said)


def test_a_handover_waits_for_the_model_to_finish_speaking(
        caplog: pytest.LogCaptureFixture) -> None:
    # The model starts at about 0.9 s and speaks until about 1.8 s; the handover is due at
    # 1.2 s, so it waits until the response has played out.
    got: dict[str, Any] = {}

    async def body() -> None:
        async with long_call_node(1.2, 1.5, 4.0) as n:
            got["report"] = await n.call(quiet(0.2) + speech(0.4) + quiet(3.0))
            got["sessions"] = len(n.sim.sessions)

    with caplog.at_level(logging.INFO, logger="engine"):
        run(body, 20)
    move = handovers(caplog)[0]
    (first, samples), = loud(got["report"])
    played_to = (first + samples) / RATE  # from the caller's first frame, near the session's
    assert move["after_s"] >= played_to - 0.25, (move, played_to)
    assert move["after_s"] < 1.2 + 1.5
    assert got["sessions"] >= 2


def test_with_no_pause_the_handover_goes_at_its_deadline_before_the_limit(
        caplog: pytest.LogCaptureFixture) -> None:
    # The caller never stops talking: no pause comes, so the handover goes when its grace
    # is over (1.0 + 0.8 s), before the session's 2.5 s limit.
    async def body() -> None:
        async with long_call_node(1.0, 0.8, 2.5) as n:
            report = await n.call(speech(3.5) + quiet(0.4))
            assert report.hangup == caller.CALLER_FINISHED
            assert all(live.report.closed != "session_limit" for live in n.sim.sessions)
            assert_clean(n.sim)

    with caplog.at_level(logging.INFO, logger="engine"):
        run(body, 20)
    moves = handovers(caplog)
    assert moves and 1.75 <= moves[0]["after_s"] < 2.2, moves
    assert ended(caplog)["reason"] == "caller_hangup"


def test_without_a_handover_the_session_limit_ends_the_call_cleanly(
        caplog: pytest.LogCaptureFixture) -> None:
    """The control: the simulator's limit is real, and a call that outlives its session
    without handing over gets a clean hangup with the reason."""
    async def body() -> None:
        async with long_call_node(60.0, 1.0, 1.5) as n:
            report = await n.call(speech(0.3) + quiet(3.0))
            assert report.hangup == caller.ENGINE_HANGUP
            (live,) = n.sim.sessions
            assert live.report.closed == "session_limit"

    with caplog.at_level(logging.INFO, logger="engine"):
        run(body, 20)
    end = ended(caplog)
    assert end["reason"] == "upstream_failed" and end["error_class"] == "UpstreamClosed"
    assert not handovers(caplog)


def test_the_handover_times_follow_the_dialects_limits() -> None:
    assert handover_after("ga") == 55 * 60 and handover_after("azure") == 55 * 60
    assert handover_after("beta") == 28 * 60
    assert handover_after("ga", 600) == 600


def test_a_long_conversation_carries_its_latest_turns_and_says_how_many_are_left_out() -> None:
    conversation = Conversation()
    for n in range(50):
        conversation.add("user" if n % 2 == 0 else "assistant", f"turn {n:02d} " + "x" * 90)
    conversation.add("user", "   ")  # an empty transcript is no turn
    turns, omitted = conversation.recent(1000)
    assert omitted == 50 - len(turns) and sum(len(t) for _, t in turns) <= 1000
    assert turns[-1][1].startswith("turn 49") and turns[0][1].startswith("…")
    encoder = Encoder(Dialect.GA)
    items = carried_items(encoder, conversation, 1000)
    assert len(items) == len(turns) + 1
    assert b"earlier turns of the call are left out" in items[0]
    everything, none = conversation.recent(10**6)
    assert none == 0 and len(everything) == 50


def test_a_long_conversation_is_summarised_by_the_old_session_before_it_moves(
        caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    # A budget of 100 characters: four turns in, the conversation is too long to carry whole.
    monkeypatch.setattr(handover, "CARRY_CHARS", 100)
    monkeypatch.setattr(handover, "RECENT_CHARS", 70)
    turn = speech(0.4) + quiet(1.6)
    got: dict[str, Any] = {}

    async def body() -> None:
        async with long_call_node(3.5, 2.0, 8.0) as n:
            got["report"] = await n.call(quiet(0.2) + turn * 3 + quiet(0.5))
            got["events"] = [events_of(n, i) for i in range(len(n.sim.sessions))]
            got["reports"] = [live.report for live in n.sim.sessions]
            assert_clean(n.sim)

    with caplog.at_level(logging.INFO, logger="engine"):
        run(body, 20)
    first, second = got["reports"][:2]
    assert first.out_of_band == 1 and second.out_of_band == 0
    asks = [e for e in got["events"][0] if e["type"] == "response.create"
            and (e.get("response") or {}).get("conversation") == "none"]
    (ask,) = asks
    assert ask["response"]["metadata"] == {"purpose": "summary"}
    source = ask["response"]["input"][0]["content"][0]["text"]
    assert source.startswith("Caller: caller speech") and "Assistant: " + SIM_TEXT in source
    # The new session gets the summary, then the turns it does not cover, verbatim, within
    # the budget.
    notes = [t for _, t in texts(got["events"][1], "system")]
    assert notes[0].startswith(CONTINUES)
    assert notes[1].startswith("Summary of the call before the turns that follow: "
                               "The caller spoke")
    carried = texts(got["events"][1], "user") + texts(got["events"][1], "assistant")
    assert 0 < sum(len(t) for _, t in carried) <= 100
    # The summary costs tokens (counted) and is never heard: every response heard was audio.
    assert len(loud(got["report"])) == sum(r.responses for r in got["reports"])
    assert len(handovers(caplog)) == 1


def test_a_second_summary_covers_the_first_and_the_turns_since() -> None:
    conversation = Conversation()
    for n in range(6):
        conversation.add("user" if n % 2 == 0 else "assistant", f"turn {n} " + "y" * 40)
    text, upto = conversation.summary_source(keep=100)
    assert upto == 4  # the last two turns (94 characters) stay verbatim
    assert text.splitlines()[0].startswith("Caller: turn 0") and "turn 4" not in text
    conversation.summarised("S1", upto)
    for n in range(6, 9):
        conversation.add("user", f"turn {n} " + "z" * 40)
    text, upto = conversation.summary_source(keep=50)
    assert text.splitlines()[0] == "(Summary of the call before this part: S1)"
    assert "turn 4" in text and "turn 7" in text and "turn 8" not in text and upto == 8
    items = carried_items(Encoder(Dialect.BETA), conversation)
    assert b"Summary of the call before the turns that follow: S1" in items[1]
    assert len(items) == 2 + 5  # the turns since the summary, 4 to 8
