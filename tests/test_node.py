"""The node as an operator runs it: ``voice-engine run`` in its own process with real workers,
real loopback sockets, the built-in simulator, and callers that act like Asterisk."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import uvloop

from engine import caller
from tests.nodeproc import NodeProcess

RATE = 8000


def run(coro: Coroutine[Any, Any, Any]) -> Any:
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coro)


def speech(seconds: float) -> bytes:
    n = round(RATE * seconds)
    return np.round(6000 * np.sin(2 * np.pi * 440 * np.arange(n) / RATE)).astype("<i2").tobytes()


async def place(port: int, seconds: float, talk: float = 0.6) -> caller.CallReport:
    pcm = speech(talk) + bytes(2 * round(RATE * max(0.0, seconds - talk)))
    return await caller.call("127.0.0.1", port, pcm=pcm, kind=0x10)


@pytest.fixture
def tmp(tmp_path: Path) -> Path:
    return tmp_path


def test_two_workers_share_the_calls_and_health_shows_them(tmp: Path) -> None:
    async def main() -> None:
        node = await NodeProcess(tmp).ready()
        try:
            status, health = await node.get("/health")
            assert status == 200 and health["status"] == "serving"
            pids = [w["pid"] for w in health["workers"]]
            assert len(set(pids)) == 2 and node.proc.pid not in pids
            calls = [asyncio.ensure_future(place(node.port, 2.5)) for _ in range(16)]
            await asyncio.sleep(1.2)
            _, during = await node.get("/health")
            assert during["calls"] == 16
            assert all(w["calls"] >= 1 for w in during["workers"]), during
            assert (await node.agent()).startswith("ready up 98% maxconn:1000")
            reports = await asyncio.gather(*calls)
            assert all(r.hangup == caller.CALLER_FINISHED for r in reports)
            assert all(abs(r.frames_received - r.frames_sent) <= 3 for r in reports)
            await asyncio.sleep(0.3)
            status, text = await node.get("/metrics")
            assert status == 200
            assert 'voice_engine_calls_ended_total{reason="caller_hangup"} 16.0' in text
            assert "voice_engine_workers_live 2.0" in text
            assert "voice_engine_active_calls 0.0" in text
            # Both workers' loops are counted, summed: each has its lag probe at least.
            (tasks,) = [line for line in text.splitlines()
                        if line.startswith("voice_engine_event_loop_tasks ")]
            assert float(tasks.split()[1]) >= 2
            assert (await node.agent()) == "ready up 100% maxconn:1000\n"
        finally:
            node.close()

    run(main())


def test_a_second_node_on_the_same_address_refuses_to_start(tmp: Path) -> None:
    async def main() -> None:
        first = await NodeProcess(tmp, workers=1, name="first").ready()
        try:
            second = NodeProcess(tmp, workers=1, port=first.port, name="second")
            assert await second.exited() == 1
            text = second.text()
            assert f"127.0.0.1:{first.port} is already in use by another voice-engine node" in text
            assert "--listen-port" in text
            second.close()
            report = await place(first.port, 1.0)
            assert report.hangup == caller.CALLER_FINISHED
        finally:
            first.close()

    run(main())


def test_a_port_held_by_another_program_is_named(tmp: Path) -> None:
    async def main() -> None:
        with socket.socket() as other:
            other.bind(("127.0.0.1", 0))
            other.listen()
            node = NodeProcess(tmp, workers=1, port=other.getsockname()[1])
            assert await node.exited() == 1
            assert "already in use by another program" in node.text()
            node.close()

    run(main())


def test_sigterm_drains_in_order_and_loses_nothing(tmp: Path) -> None:
    async def main() -> None:
        node = await NodeProcess(tmp, DRAIN_SECONDS="20").ready()
        try:
            long_calls = [asyncio.ensure_future(place(node.port, 5.0)) for _ in range(4)]
            await asyncio.sleep(1.0)
            node.signal(signal.SIGTERM)
            await node.wait_event("drain_not_ready")
            status, ready = await node.get("/ready")
            assert (status, ready["reason"]) == (503, "draining")
            assert await node.agent() == "drain\n"
            await node.wait_event("drain_refusing_new_calls")
            started = time.monotonic()
            refused = await place(node.port, 2.0)
            assert refused.hangup == caller.ENGINE_HANGUP
            assert time.monotonic() - started < 0.5
            reports = await asyncio.gather(*long_calls)
            for report in reports:
                assert report.hangup == caller.CALLER_FINISHED
                assert abs(report.frames_received - report.frames_sent) <= 3
            assert await node.exited() == 0
            steps = [e["event"] for e in node.lines() if e.get("event") in (
                "drain_not_ready", "drain_refusing_new_calls", "worker_stopped", "drained")]
            assert steps[:2] == ["drain_not_ready", "drain_refusing_new_calls"]
            assert steps[-1] == "drained"
            ends = node.events("call_ended")
            assert sorted(e["reason"] for e in ends) == ["caller_hangup"] * 4 + ["draining"]
            assert all(e["hung_up"] == 0 for e in node.events("worker_stopped"))
        finally:
            node.close()

    run(main())


def test_calls_past_the_drain_deadline_get_a_clean_hangup(tmp: Path) -> None:
    async def main() -> None:
        node = await NodeProcess(tmp, workers=1, DRAIN_SECONDS="3").ready()
        try:
            call = asyncio.ensure_future(place(node.port, 15.0))
            await asyncio.sleep(0.8)
            node.signal(signal.SIGTERM)
            started = time.monotonic()
            report = await call
            assert report.hangup == caller.ENGINE_HANGUP
            assert 2.5 < time.monotonic() - started < 6.0
            assert await node.exited() == 0
            (end,) = node.events("call_ended")
            assert end["reason"] == "shutdown"
        finally:
            node.close()

    run(main())


def test_a_second_sigint_stops_at_once(tmp: Path) -> None:
    async def main() -> None:
        node = await NodeProcess(tmp, workers=1, DRAIN_SECONDS="60").ready()
        try:
            call = asyncio.ensure_future(place(node.port, 20.0))
            await asyncio.sleep(0.8)
            node.signal(signal.SIGINT)
            await node.wait_event("drain_not_ready")
            node.signal(signal.SIGINT)
            report = await asyncio.wait_for(call, 5.0)
            assert report.hangup == caller.ENGINE_HANGUP
            assert await node.exited(5.0) == 0
        finally:
            node.close()

    run(main())


def test_a_dead_worker_is_replaced_and_the_other_calls_go_on(tmp: Path) -> None:
    async def main() -> None:
        node = await NodeProcess(tmp).ready()
        try:
            calls = [asyncio.ensure_future(place(node.port, 4.0)) for _ in range(12)]
            await asyncio.sleep(1.0)
            _, health = await node.get("/health")
            victim, survivor = health["workers"]
            os.kill(victim["pid"], signal.SIGKILL)
            await node.wait_event("worker_died", slot=victim["slot"])
            reports = await asyncio.gather(*calls)
            lost = [r for r in reports if r.hangup != caller.CALLER_FINISHED]
            kept = [r for r in reports if r.hangup == caller.CALLER_FINISHED]
            assert len(lost) == victim["calls"] and len(kept) == survivor["calls"]
            for report in kept:
                assert abs(report.frames_received - report.frames_sent) <= 3
                assert report.burst_pacing.p99_ms < 15
            await node.wait_event("worker_ready", count=3)
            _, after = await node.get("/health")
            replaced = after["workers"][victim["slot"]]
            assert replaced["pid"] not in (victim["pid"], None) and replaced["restarts"] == 1
            assert after["workers"][survivor["slot"]]["pid"] == survivor["pid"]
            status, _ = await node.get("/ready")
            assert status == 200
            assert (await place(node.port, 1.0)).hangup == caller.CALLER_FINISHED
        finally:
            node.close()

    run(main())


def test_max_concurrent_calls_holds_across_workers(tmp: Path) -> None:
    async def main() -> None:
        node = await NodeProcess(tmp, MAX_CONCURRENT_CALLS="3").ready()
        try:
            calls = [asyncio.ensure_future(place(node.port, 3.0)) for _ in range(3)]
            await asyncio.sleep(0.8)
            assert (await node.agent()) == "ready up 0% maxconn:3\n"
            status, ready = await node.get("/ready")
            assert (status, ready["reason"]) == (503, "over_capacity")
            extra = await asyncio.gather(*(place(node.port, 1.0) for _ in range(4)))
            assert [r.hangup for r in extra] == [caller.ENGINE_HANGUP] * 4
            reports = await asyncio.gather(*calls)
            assert all(r.hangup == caller.CALLER_FINISHED for r in reports)
            await asyncio.sleep(0.3)
            reasons = [e["reason"] for e in node.events("call_ended")]
            assert reasons.count("over_capacity") == 4
            assert (await place(node.port, 1.0)).hangup == caller.CALLER_FINISHED
        finally:
            node.close()

    run(main())


def test_workers_leave_when_the_supervisor_dies(tmp: Path) -> None:
    async def main() -> None:
        node = await NodeProcess(tmp).ready()
        try:
            _, health = await node.get("/health")
            call = asyncio.ensure_future(place(node.port, 10.0))
            await asyncio.sleep(0.8)
            node.proc.kill()
            report = await asyncio.wait_for(call, 5.0)
            assert report.hangup in (caller.ENGINE_HANGUP, caller.ENGINE_CLOSED)
            end = time.monotonic() + 5
            pids = [w["pid"] for w in health["workers"]]
            while any(_alive(p) for p in pids) and time.monotonic() < end:
                await asyncio.sleep(0.05)
            assert not any(_alive(p) for p in pids)
        finally:
            node.close()

    run(main())


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


def test_a_worker_that_cannot_boot_stops_the_node_with_a_clear_message(
        caplog: pytest.LogCaptureFixture) -> None:
    import logging
    import sys

    from engine.config import Config
    from engine.node.supervisor import Supervisor

    config = Config(listen_port=0, health_port=0, agent_port=0, workers=2)
    failing = [sys.executable, "-c", "import sys; sys.exit(3)"]

    async def main() -> int:
        return await Supervisor(config, simulator=True, worker_program=failing).run()

    started = time.monotonic()
    with caplog.at_level(logging.INFO):
        assert run(main()) == 1
    assert time.monotonic() - started < 10
    failed = [r for r in caplog.records if r.getMessage() == "node_failed"]
    assert len(failed) == 1
    assert "exited with status 3 before it was listening" in failed[0]._fields["error"]
    assert not [r for r in caplog.records if r.getMessage() == "worker_started"][2:]


def test_a_hung_worker_is_killed_and_replaced(tmp: Path) -> None:
    async def main() -> None:
        node = await NodeProcess(tmp).ready()
        try:
            _, health = await node.get("/health")
            hung = health["workers"][0]
            os.kill(hung["pid"], signal.SIGSTOP)
            await node.wait_event("worker_unresponsive", timeout=15.0, slot=0)
            await node.wait_event("worker_ready", count=3, timeout=10.0)
            _, after = await node.get("/health")
            assert after["workers"][0]["pid"] != hung["pid"]
            assert not _alive(hung["pid"])
            assert (await place(node.port, 1.0)).hangup == caller.CALLER_FINISHED
        finally:
            node.close()

    run(main())


def test_a_signal_while_starting_stops_the_node_and_its_workers(tmp: Path) -> None:
    async def main() -> None:
        node = NodeProcess(tmp)
        try:
            await node.wait_event("worker_started", count=2)
            node.signal(signal.SIGINT)
            assert await node.exited(10.0) == 0
            pids = [e["pid"] for e in node.events("worker_started")]
            end = time.monotonic() + 5
            while any(_alive(p) for p in pids) and time.monotonic() < end:
                await asyncio.sleep(0.05)
            assert not any(_alive(p) for p in pids)
            assert not node.events("node_ready")
        finally:
            node.close()

    run(main())


def test_a_drain_right_after_a_restart_reaches_the_new_worker(tmp: Path) -> None:
    async def main() -> None:
        node = await NodeProcess(tmp, DRAIN_SECONDS="60").ready()
        try:
            _, health = await node.get("/health")
            os.kill(health["workers"][0]["pid"], signal.SIGKILL)
            await node.wait_event("worker_started", count=3, timeout=10.0)
            node.signal(signal.SIGTERM)
            assert await node.exited(15.0) == 0
            stopped = node.events("worker_stopped")
            assert len(stopped) == 2 and all(e["reason"] == "drained" for e in stopped)
        finally:
            node.close()

    run(main())


def test_sighup_rereads_the_agent_file_for_new_calls_and_keeps_it_when_broken(
        tmp: Path) -> None:
    agent = tmp / "agent.toml"
    agent.write_text('[agent]\ninstructions = "Be brief."\n\n[[variant]]\nname = "first"\n'
                     'weight = 1\n')

    async def main() -> None:
        node = await NodeProcess(tmp, workers=1, AGENT_FILE=str(agent)).ready()
        try:
            assert (await place(node.port, 1.0)).hangup == caller.CALLER_FINISHED
            agent.write_text('[agent]\ninstructions = "Be kind."\n\n[[variant]]\n'
                             'name = "second"\nweight = 1\n')
            node.signal(signal.SIGHUP)
            await node.wait_event("agent_reloaded")
            assert (await place(node.port, 1.0)).hangup == caller.CALLER_FINISHED
            agent.write_text('[agent]\ninstructions = 42\n')
            node.signal(signal.SIGHUP)
            (failed,) = await node.wait_event("agent_reload_failed")
            assert "instructions" in failed["error"]
            assert (await place(node.port, 1.0)).hangup == caller.CALLER_FINISHED
            ends = await node.wait_event("call_ended", count=3)
            assert [e["variant"] for e in ends] == ["first", "second", "second"]
        finally:
            node.close()

    run(main())


def test_a_broken_agent_file_stops_the_node_at_start_with_its_problems(tmp: Path) -> None:
    agent = tmp / "agent.toml"
    agent.write_text('[agent]\ninstructions = "Hi {nobody}"\n')

    async def main() -> None:
        node = NodeProcess(tmp, workers=1, AGENT_FILE=str(agent))
        try:
            assert await node.exited() == 1
            (failed,) = node.events("node_failed")
            assert "agent.toml" in failed["error"] and "nobody" in failed["error"]
            assert not node.events("worker_started")
        finally:
            node.close()

    run(main())


def test_a_profile_listens_on_its_own_port_with_its_own_agent(tmp: Path) -> None:
    from tests.nodeproc import free_port

    spanish = free_port()
    agent = tmp / "agent.toml"
    agent.write_text('[agent]\ninstructions = "Be brief."\n\n'
                     f'[profiles.spanish]\nlisten_port = {spanish}\n'
                     'instructions = "Atiendes en español."\n')

    async def main() -> None:
        node = await NodeProcess(tmp, AGENT_FILE=str(agent)).ready()
        try:
            assert (await place(spanish, 1.0)).hangup == caller.CALLER_FINISHED
            assert (await place(node.port, 1.0)).hangup == caller.CALLER_FINISHED
            ends = await node.wait_event("call_ended", count=2)
            assert sorted(e["profile"] for e in ends) == ["default", "spanish"]
            listening = node.events("listening")
            assert {e["port"] for e in listening} == {node.port, spanish}
        finally:
            node.close()

    run(main())


async def flood(port: int, count: int, held: list[tuple[socket.socket, asyncio.Future[bytes]]]
                ) -> None:
    """``count`` connections that send nothing, added to ``held`` as they open (so that the
    caller can close all of them whatever happens), each with what it reads until closed."""
    loop = asyncio.get_running_loop()
    for _ in range(count):
        sock = socket.socket()
        sock.setblocking(False)
        try:
            await asyncio.wait_for(loop.sock_connect(sock, ("127.0.0.1", port)), 5)
        except BaseException:
            sock.close()
            raise

        async def read_all(sock: socket.socket = sock) -> bytes:
            data = b""
            while chunk := await loop.sock_recv(sock, 64):
                data += chunk
            return data

        held.append((sock, asyncio.ensure_future(read_all())))


def test_idle_connections_past_the_descriptor_limit_are_refused_cleanly(tmp: Path) -> None:
    """Thousands of idle connections against a worker whose LimitNOFILE leaves room for
    about fifty: it keeps a reserve, refuses the rest with a clean hangup and says why once,
    the call it carries keeps its pacing, and it takes calls again once the crowd is gone."""
    async def main() -> None:
        node = await NodeProcess(tmp, workers=1, nofile=256, HANDSHAKE_TIMEOUT_MS="4000",
                                 RECORDS_URL="").ready()
        crowd: list[tuple[socket.socket, asyncio.Future[bytes]]] = []
        try:
            budget = (await node.wait_event("fd_limit_low"))[0]["max_connections"]
            assert 40 <= budget <= 70
            good = asyncio.ensure_future(place(node.port, 6.0))
            await asyncio.sleep(0.5)
            await flood(node.port, 2000, crowd)
            await asyncio.sleep(1.0)
            refused = sum(read.done() for _, read in crowd)
            held = len(crowd) - refused
            assert held <= budget and refused >= len(crowd) - budget, (held, refused)
            assert all(read.result() == b"\x00\x00\x00" for _, read in crowd if read.done())
            report = await good
            assert report.hangup == caller.CALLER_FINISHED
            # Nothing lost; and a frame per 20 ms while it lasted (this process's flood can
            # hold up the caller's own sending, and the call with it).
            assert (report.frames_sent - 3 <= report.frames_received
                    <= report.duration / 0.02 + 5), report
            assert report.burst_pacing.p99_ms < 15
            # The held ones time out (no UUID); then the worker takes calls again.
            await asyncio.wait_for(asyncio.gather(*(read for _, read in crowd)), 10)
            for sock, _ in crowd:
                sock.close()
            await asyncio.sleep(0.5)
            assert (await place(node.port, 1.0)).hangup == caller.CALLER_FINISHED
            lines = node.events("fd_limit_reached")
            assert 1 <= len(lines) <= 2 and lines[0]["nofile"] == 256
            await node.wait_event("call_ended", reason="caller_hangup", count=2)
            ends = [e["reason"] for e in node.events("call_ended")]
            assert ends.count("fd_limit") == refused and ends.count("handshake_timeout") == held
            assert "Too many open files" not in node.text()
        finally:
            for sock, read in crowd:  # not left for the collector after a failure
                read.cancel()
                sock.close()
            node.close()

    run(main())
