"""The AMI client against a scripted Asterisk manager over real loopback sockets, on uvloop."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import uvloop

from engine.agent.ami import ChannelInfo, Message
from engine.agent.manager import Manager
from engine.errors import (
    ManagerActionFailed,
    ManagerAuthFailed,
    ManagerBadAction,
    ManagerConnectionLost,
    ManagerTimeout,
    ManagerUnavailable,
)
from tests.amipeer import SECRET, USER, AmiPeer, Channel

UUID_A = "4f0c2a9e-1d3b-4c5a-9e8f-7a6b5c4d3e2f"
UUID_B = "0b7e1c2d-3a4f-4e5d-8c9b-1a2b3c4d5e6f"

CALLER = Channel("PJSIP/trunk-00000001", "1767225600.1", caller_num="+15551234",
                 caller_name="Ana Núñez", dnid="8000", variables={"VE_UUID": UUID_A})
OTHER = Channel("PJSIP/trunk-00000002", "1767225600.3", caller_num="+15559876",
                variables={"VE_UUID": UUID_B})
# The engine's end of a Dial(AudioSocket/...): it would carry an inherited _VE_UUID.
ENGINE_LEG = Channel("AudioSocket/127.0.0.1:9093-00000002", "1767225600.2", tech="AudioSocket",
                     application="AppDial", variables={"VE_UUID": UUID_B})
NO_VAR = Channel("PJSIP/desk-00000004", "1767225600.4", caller_num="201")

_PEERS: list[AmiPeer] = []
_MANAGERS: list[Manager] = []


def run(body: Callable[[], Awaitable[None]]) -> None:
    """Runs one test body on a fresh uvloop and fails on any task it leaves behind."""

    async def main() -> None:
        try:
            async with asyncio.timeout(10):
                await body()
        finally:
            while _MANAGERS:
                await _MANAGERS.pop().close()
            while _PEERS:
                await _PEERS.pop().stop()
        current = asyncio.current_task()
        leaked = [t for t in asyncio.all_tasks() if t is not current and not t.done()]
        assert not leaked, f"leaked tasks: {leaked}"

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main())


async def peer(*channels: Channel) -> AmiPeer:
    started = await AmiPeer(list(channels)).start()
    _PEERS.append(started)
    return started


def manager(port: int, secret: str = SECRET, **options: Any) -> Manager:
    options = {"action_timeout": 1.0, "connect_timeout": 1.0, "backoff_first": 0.01,
               "backoff_cap": 0.05, "backoff_jitter": 0.0, "ping_interval": None, **options}
    made = Manager("127.0.0.1", port, USER, secret, **options)
    _MANAGERS.append(made)
    return made


async def until(condition: Callable[[], bool], seconds: float = 2.0) -> None:
    async with asyncio.timeout(seconds):
        while not condition():
            await asyncio.sleep(0.005)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- login ----------------------------------------------------------------------------------


def test_login_ok() -> None:
    async def body() -> None:
        ami = await peer()
        client = manager(ami.port, events="call")
        assert not client.connected
        await client.connect()
        assert client.connected and ami.logins == 1
        login = ami.actions[0]
        assert login["Action"] == "Login" and login["Username"] == USER
        assert login["Secret"] == SECRET and login["Events"] == "call"
        assert login["ActionID"].startswith("ve-")
        assert SECRET not in repr(client)
        reply = await client.action("Ping")
        assert reply.response["Ping"] == "Pong" and reply.events == ()

    run(body)


def test_login_failed() -> None:
    async def body() -> None:
        ami = await peer()
        client = manager(ami.port, secret="wrong-secret-123")
        with pytest.raises(ManagerAuthFailed) as caught:
            await client.connect()
        assert caught.value.user == USER and caught.value.reason == "Authentication failed"
        assert "wrong-secret-123" not in str(caught.value) and USER in str(caught.value)
        assert not client.connected
        with pytest.raises(ManagerUnavailable, match="closed"):
            await client.action("Ping")

    run(body)


def test_connect_refused_and_not_started() -> None:
    async def body() -> None:
        client = manager(free_port())
        with pytest.raises(ManagerUnavailable) as caught:
            await client.action("Ping")
        assert "not started" in caught.value.reason
        with pytest.raises(ManagerUnavailable) as caught:
            await client.connect()
        assert caught.value.port == client._port and "refused" in caught.value.reason.lower()

    run(body)


def test_no_banner_is_unavailable() -> None:
    async def body() -> None:
        silent: list[asyncio.StreamWriter] = []

        async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            silent.append(writer)  # says nothing, and closes when the client goes
            await reader.read()
            writer.close()

        server = await asyncio.start_server(accept, "127.0.0.1", 0)
        try:
            client = manager(server.sockets[0].getsockname()[1], connect_timeout=0.2)
            with pytest.raises(ManagerUnavailable, match="within 0.2 s"):
                await client.connect()
            assert len(silent) == 1
        finally:
            server.close()
            await server.wait_closed()

    run(body)


# --- actions ----------------------------------------------------------------------------


def test_concurrent_actions_are_correlated_by_action_id() -> None:
    async def body() -> None:
        channels = [Channel(f"PJSIP/t-{i:08x}", f"1767225600.{i}", variables={"N": str(i)})
                    for i in range(6)]
        ami = await peer(*channels)
        ami.chunk = 7  # and every answer arrives in 7-byte pieces
        client = manager(ami.port)
        await client.connect()
        ami.reverse(len(channels))
        values = await asyncio.gather(*(client.getvar(c.name, "N") for c in channels))
        assert values == [str(i) for i in range(6)]
        ids = [a["ActionID"] for a in ami.actions[1:]]
        assert len(set(ids)) == len(ids) == 6

    run(body)


def test_redirect_ok_and_error_with_its_message() -> None:
    async def body() -> None:
        ami = await peer(CALLER)
        client = manager(ami.port)
        await client.connect()
        await client.redirect(CALLER.name, "human-agents", "s", 1)
        assert ami.redirects == [(CALLER.name, "human-agents", "s", "1")]
        with pytest.raises(ManagerActionFailed) as caught:
            await client.redirect("PJSIP/gone-00000009", "human-agents", "s", "start")
        assert caught.value.action == "Redirect"
        assert caught.value.message == "Channel does not exist: PJSIP/gone-00000009"
        assert ami.actions[-1]["Priority"] == "start"

    run(body)


def test_getvar_setvar_hangup_and_a_scripted_error() -> None:
    async def body() -> None:
        ami = await peer(CALLER, OTHER)
        client = manager(ami.port)
        await client.connect()
        assert await client.getvar(CALLER.name, "VE_UUID") == UUID_A
        assert await client.getvar(CALLER.name, "UNSET") == ""
        await client.setvar(CALLER.name, "VE_TRANSFER", "sales")
        assert CALLER.variables["VE_TRANSFER"] == "sales"
        hangups: list[Message] = []
        client.subscribe(hangups.append, "Hangup")
        await client.hangup(OTHER.name, cause=16)
        assert ami.actions[-1]["Cause"] == "16" and ami.channel(OTHER.name) is None
        await until(lambda: len(hangups) == 1)
        assert hangups[0]["Channel"] == OTHER.name
        with pytest.raises(ManagerActionFailed, match="No such channel"):
            await client.getvar("PJSIP/nope", "X")
        with pytest.raises(ManagerBadAction, match="regular expression"):
            await client.hangup("/PJSIP/.*/")
        ami.fail("Setvar", "Variable not set")
        with pytest.raises(ManagerActionFailed, match="Variable not set"):
            await client.setvar(CALLER.name, "X", "1")
        with pytest.raises(ManagerActionFailed, match="Invalid/unknown command: Bogus"):
            await client.action("Bogus")

    run(body)
    CALLER.variables.pop("VE_TRANSFER", None)


def test_find_channel_by_its_variable() -> None:
    async def body() -> None:
        ami = await peer(NO_VAR, ENGINE_LEG, OTHER, CALLER)
        client = manager(ami.port)
        await client.connect()
        found = await client.find_channel("VE_UUID", UUID_A)
        assert found == ChannelInfo(
            channel=CALLER.name, uniqueid=CALLER.uniqueid, linkedid=CALLER.uniqueid,
            caller_id_num="+15551234", caller_id_name="Ana Núñez", context="voice-engine",
            exten="s", dnid="8000", state="Up")
        assert found.dialled == "8000" and found.variables == {"VE_UUID": UUID_A}
        status = ami.actions[-1]
        assert status["Action"] == "Status" and status["Variables"] == "VE_UUID"
        # The engine's own AudioSocket leg is skipped: the caller's channel is the one.
        other = await client.find_channel("VE_UUID", UUID_B)
        assert other is not None and other.channel == OTHER.name
        assert other.caller_id_name == "" and other.dialled == "s"
        assert await client.find_channel("VE_UUID", "no-such-call") is None
        events = await client.status(("VE_UUID",), channel=CALLER.name)
        assert [e["Channel"] for e in events] == [CALLER.name]
        with pytest.raises(ManagerBadAction):
            await client.find_channel("VE_UUID,SHELL(id)", "x")

    run(body)


def test_list_action_returns_events_up_to_complete() -> None:
    async def body() -> None:
        ami = await peer(CALLER, OTHER)
        client = manager(ami.port)
        await client.connect()
        reply = await client.action("CoreShowChannels")
        assert reply.response["EventList"] == "start"
        assert [e["Channel"] for e in reply.events] == [CALLER.name, OTHER.name]
        assert reply.complete is not None and reply.complete["ListItems"] == "2"
        assert reply.complete.event == "CoreShowChannelsComplete"

    run(body)


# --- events ---------------------------------------------------------------------------


def test_event_callbacks_by_name_and_for_all() -> None:
    async def body() -> None:
        ami = await peer(CALLER)
        client = manager(ami.port)
        await client.connect()
        named: list[str] = []
        every: list[str] = []

        def broken(message: Message) -> None:
            raise RuntimeError("a subscriber's bug")

        client.subscribe(broken, "newchannel")
        stop = client.subscribe(lambda m: named.append(m["Channel"]), "NewChannel")
        client.subscribe(lambda m: every.append(m.event or ""))
        ami.emit_newchannel(CALLER)
        ami.emit_hangup(CALLER)
        await until(lambda: len(every) == 2)
        assert named == [CALLER.name] and every == ["Newchannel", "Hangup"]
        # Status events answer an action: they never reach subscribers.
        await client.status(("VE_UUID",))
        stop()
        ami.emit_newchannel(OTHER)
        await until(lambda: len(every) == 3)
        assert named == [CALLER.name] and every[-1] == "Newchannel"
        stop()  # twice is harmless

    run(body)


def test_events_off_asks_for_none() -> None:
    async def body() -> None:
        ami = await peer()
        client = manager(ami.port, events="off")
        await client.connect()
        seen: list[Message] = []
        client.subscribe(seen.append)
        ami.emit_newchannel(CALLER)
        await client.action("Ping")
        assert seen == [] and ami.actions[0]["Events"] == "off"

    run(body)


# --- drops, reconnects, timeouts -----------------------------------------------------------


def test_in_flight_actions_fail_on_a_drop_and_later_ones_wait_for_the_reconnect() -> None:
    async def body() -> None:
        ami = await peer(CALLER)
        client = manager(ami.port, action_timeout=2.0)
        await client.connect()
        ami.stall("Redirect")
        in_flight = asyncio.create_task(client.redirect(CALLER.name, "human-agents", "s"))
        await until(lambda: ami.actions[-1]["Action"] == "Redirect")
        ami.refusing = 2  # the restarted Asterisk is not ready at once
        ami.drop_all()
        with pytest.raises(ManagerConnectionLost) as caught:
            await in_flight
        assert caught.value.action == "Redirect" and "may or may not" in str(caught.value)
        await until(lambda: not client.connected)
        ami.heal("Redirect")
        later = await client.getvar(CALLER.name, "VE_UUID")  # waits for the reconnect
        assert later == UUID_A and client.connected
        assert ami.logins == 2 and ami.connections == 4

    run(body)


def test_reconnect_backoff_doubles_to_its_cap_and_resets_after_a_login() -> None:
    async def body() -> None:
        ami = await peer()
        delays: list[float] = []

        async def sleep(seconds: float) -> None:
            delays.append(seconds)
            await asyncio.sleep(0)

        client = manager(ami.port, sleep=sleep, backoff_first=0.5, backoff_cap=3.0)
        ami.refusing = 5
        client.start()
        await until(lambda: client.connected)
        assert delays == [0.5, 1.0, 2.0, 3.0, 3.0]
        ami.drop_all()
        await until(lambda: ami.logins == 2 and client.connected)
        assert delays[5:] == [0.5]

    run(body)


def test_jitter_stays_within_its_fraction() -> None:
    async def body() -> None:
        ami = await peer()
        delays: list[float] = []

        async def sleep(seconds: float) -> None:
            delays.append(seconds)
            await asyncio.sleep(0)

        client = manager(ami.port, sleep=sleep, backoff_first=1.0, backoff_cap=1.0,
                         backoff_jitter=0.2)
        ami.refusing = 20
        client.start()
        await until(lambda: client.connected)
        assert len(delays) == 20 and all(0.8 <= d <= 1.2 for d in delays)
        assert len(set(delays)) > 1

    run(body)


def test_a_stalled_action_times_out_and_the_connection_stays() -> None:
    async def body() -> None:
        ami = await peer(CALLER)
        client = manager(ami.port)
        await client.connect()
        ami.stall("Getvar")
        with pytest.raises(ManagerTimeout) as caught:
            await client.getvar(CALLER.name, "VE_UUID", timeout=0.1)
        assert caught.value.action == "Getvar" and caught.value.seconds == 0.1
        assert str(caught.value) == "the Asterisk manager did not answer Getvar within 0.1 s"
        ami.heal("Getvar")
        assert await client.getvar(CALLER.name, "VE_UUID") == UUID_A
        assert client.connected and ami.logins == 1

    run(body)


def test_a_late_list_reply_reaches_no_subscriber() -> None:
    async def body() -> None:
        ami = await peer(CALLER)
        client = manager(ami.port)
        await client.connect()
        seen: list[Message] = []
        client.subscribe(seen.append)
        ami.reverse(2)  # the Status answer is held until the Ping after it
        with pytest.raises(ManagerTimeout):
            await client.status(("VE_UUID",), timeout=0.05)
        await client.action("Ping")
        assert seen == []

    run(body)


def test_no_connection_within_the_timeout_is_unavailable() -> None:
    async def body() -> None:
        ami = await peer()
        client = manager(ami.port)
        ami.refusing = 10_000
        client.start()
        with pytest.raises(ManagerUnavailable) as caught:
            await client.action("Ping", timeout=0.1)
        assert "no connection within 0.1 s" in caught.value.reason
        assert "no banner" in caught.value.reason

    run(body)


def test_a_dropped_action_fails_and_the_client_reconnects() -> None:
    async def body() -> None:
        ami = await peer(CALLER)
        client = manager(ami.port)
        await client.connect()
        ami.drop_on("Hangup")
        with pytest.raises(ManagerConnectionLost, match="Hangup"):
            await client.hangup(CALLER.name)
        ami.heal("Hangup")
        await client.hangup(CALLER.name)
        assert ami.logins == 2

    run(body)


def test_an_unanswered_ping_drops_a_dead_connection() -> None:
    async def body() -> None:
        ami = await peer()
        client = manager(ami.port, ping_interval=0.05, action_timeout=0.1)
        await client.connect()
        ami.stall("Ping")
        await until(lambda: ami.logins == 2)
        ami.heal("Ping")
        await until(lambda: client.connected)
        assert [a["Action"] for a in ami.actions].count("Ping") >= 1

    run(body)


def test_a_protocol_violation_drops_the_connection() -> None:
    async def body() -> None:
        ami = await peer()
        client = manager(ami.port, max_line=100, max_message=1000)
        await client.connect()
        ami.emit("UserEvent", "Data: " + "x" * 300 + "\r\n")
        await until(lambda: ami.logins == 2 and client.connected)

    run(body)


def test_close_fails_pending_actions() -> None:
    async def body() -> None:
        ami = await peer()
        client = manager(ami.port)
        await client.connect()
        ami.stall("Ping")
        pending = asyncio.create_task(client.action("Ping"))
        await until(lambda: ami.actions[-1]["Action"] == "Ping")
        await client.close()
        with pytest.raises(ManagerConnectionLost, match="the client was closed"):
            await pending
        with pytest.raises(ManagerUnavailable, match="closed"):
            await client.action("Ping")
        with pytest.raises(ManagerUnavailable, match="closed"):
            client.start()
        await client.close()  # twice is harmless

    run(body)


# --- secrets -------------------------------------------------------------------------------


def test_the_secret_never_appears_in_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    errors: list[str] = []

    async def body() -> None:
        ami = await peer(CALLER)
        wrong = manager(ami.port, secret=SECRET + "-wrong")
        try:
            await wrong.connect()
        except ManagerAuthFailed as exc:
            errors.append(repr(exc) + str(exc) + repr(exc.__cause__) + repr(exc.__context__))
        client = manager(ami.port)
        await client.connect()
        ami.drop_all()
        await until(lambda: ami.logins == 2 and client.connected)
        ami.stall("Ping")
        try:
            await client.action("Ping", timeout=0.05)
        except ManagerTimeout as exc:
            errors.append(repr(exc))

    run(body)
    assert len(errors) == 2
    assert any(r.getMessage() == "manager_connected" for r in caplog.records)
    assert any(r.getMessage() == "manager_unavailable" for r in caplog.records)
    assert SECRET not in caplog.text
    for record in caplog.records:
        assert SECRET not in repr(record.__dict__)
    assert not any(SECRET in e for e in errors)
