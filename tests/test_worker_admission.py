"""Admission on the AudioSocket port: the source allowlist, PROXY v2 from trusted proxies
only, the per-source cap. Real loopback sockets (several 127.0.0.0/8 addresses stand in for
hosts), a real uvloop worker and the simulator."""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Any

import pytest

from engine import caller
from engine.node.proxy import build_v2
from engine.worker import WorkerLimits
from tests.test_call_path import make_config, node, quiet, run, speech

PROXY = "127.0.0.2"
STRANGER = "127.0.0.3"


def _ended(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    return [getattr(r, "_fields", {}) for r in caplog.records if r.getMessage() == "call_ended"]


async def _call(n: Any, *, local: str = "127.0.0.1", preamble: bytes = b"",
                seconds: float = 1.0) -> caller.CallReport:
    pcm = speech(8000, 0.4) + quiet(8000, seconds - 0.4)
    return await n.call(pcm=pcm, kind=0x10, local_addr=(local, 0), preamble=preamble)


def test_a_trusted_proxy_carries_the_real_source_to_the_allowlist(
        caplog: pytest.LogCaptureFixture) -> None:
    config = make_config(trusted_proxies=(f"{PROXY}/32",), allow_sources=("10.0.0.0/8",))

    async def main() -> None:
        async with node(config=config) as n:
            ok = await _call(n, local=PROXY,
                             preamble=build_v2("proxy", ("10.1.2.3", 40000), ("10.9.9.9", 9093)))
            assert ok.hangup == caller.CALLER_FINISHED and ok.frames_received > 30
            barred = await _call(n, local=PROXY, preamble=build_v2(
                "proxy", ("192.0.2.7", 40001), ("10.9.9.9", 9093)))
            assert barred.hangup == caller.ENGINE_CLOSED and barred.frames_received == 0
            check = await _call(n, local=PROXY, preamble=build_v2("local", None, None))
            assert check.hangup == caller.CALLER_FINISHED

    with caplog.at_level(logging.INFO):
        run(main())
    ends = _ended(caplog)
    assert [e["peer"] for e in ends][:2] == ["10.1.2.3:40000", "192.0.2.7:40001"]
    assert [e["reason"] for e in ends] == ["caller_hangup", "not_allowed", "caller_hangup"]
    assert "192.0.2.7 are not allowed by ALLOW_SOURCES" in ends[1]["error"]


def test_a_trusted_proxy_without_a_header_is_closed_with_the_reason(
        caplog: pytest.LogCaptureFixture) -> None:
    config = make_config(trusted_proxies=(f"{PROXY}/32",))

    async def main() -> None:
        async with node(config=config) as n:
            report = await _call(n, local=PROXY)
            assert report.hangup == caller.ENGINE_CLOSED and report.frames_received == 0
            good = await _call(n, local="127.0.0.1")
            assert good.hangup == caller.CALLER_FINISHED

    with caplog.at_level(logging.INFO):
        run(main())
    bad, good = _ended(caplog)
    assert bad["reason"] == "protocol_violation" and bad["error_class"] == "BadProxySignature"
    assert good["reason"] == "caller_hangup"


def test_a_proxy_header_from_an_untrusted_peer_is_not_believed(
        caplog: pytest.LogCaptureFixture) -> None:
    config = make_config(trusted_proxies=(f"{PROXY}/32",))

    async def main() -> None:
        async with node(config=config) as n:
            forged = build_v2("proxy", ("10.1.2.3", 1), ("10.9.9.9", 9093))
            report = await _call(n, local=STRANGER, preamble=forged)
            assert report.hangup == caller.ENGINE_CLOSED and report.frames_received == 0

    with caplog.at_level(logging.INFO):
        run(main())
    (end,) = _ended(caplog)
    assert end["peer"].startswith(STRANGER) and end["error_class"] == "UntrustedProxyHeader"
    assert "not in TRUSTED_PROXIES" in end["error"]


def test_a_direct_caller_outside_the_allowlist_is_closed(
        caplog: pytest.LogCaptureFixture) -> None:
    config = make_config(allow_sources=("127.0.0.1/32",))

    async def main() -> None:
        async with node(config=config) as n:
            assert (await _call(n, local=STRANGER)).hangup == caller.ENGINE_CLOSED
            assert (await _call(n, local="127.0.0.1")).hangup == caller.CALLER_FINISHED

    with caplog.at_level(logging.INFO):
        run(main())
    assert [e["reason"] for e in _ended(caplog)] == ["not_allowed", "caller_hangup"]


def test_the_per_source_cap_refuses_cleanly_and_others_still_get_in(
        caplog: pytest.LogCaptureFixture) -> None:
    limits = WorkerLimits(connect_deadline=2.0, max_calls_per_source=2)

    async def main() -> None:
        async with node(limits=limits) as n:
            held = [asyncio.ensure_future(_call(n, local=PROXY, seconds=2.0)) for _ in range(2)]
            await asyncio.sleep(0.5)
            over = await _call(n, local=PROXY)
            assert over.hangup == caller.ENGINE_HANGUP and over.frames_received == 0
            other = await _call(n, local=STRANGER)
            assert other.hangup == caller.CALLER_FINISHED
            assert all(r.hangup == caller.CALLER_FINISHED for r in await asyncio.gather(*held))
            again = await _call(n, local=PROXY)
            assert again.hangup == caller.CALLER_FINISHED

    with caplog.at_level(logging.INFO):
        run(main())
    assert sorted(e["reason"] for e in _ended(caplog)).count("source_cap") == 1


def test_uuid_is_still_the_first_message_after_the_header() -> None:
    config = make_config(trusted_proxies=(f"{PROXY}/32",))
    call_id = uuid.uuid4()

    async def main() -> None:
        async with node(config=config) as n:
            pcm = speech(8000, 0.4) + quiet(8000, 0.6)
            report = await n.call(pcm=pcm, kind=0x10, uuid=call_id, local_addr=(PROXY, 0),
                                  preamble=build_v2("proxy", ("10.0.0.1", 5), ("10.0.0.2", 6)))
            assert report.hangup == caller.CALLER_FINISHED
            (live,) = n.sim.sessions
            assert live.report.client_request_id == str(call_id)

    run(main())


def test_a_refused_caller_reads_the_hangup_even_while_it_keeps_sending() -> None:
    """The refusal half-closes: bytes the caller sends after it are read and dropped, so no
    reset can overtake the 00 00 00 it must read (Asterisk then runs the fallback)."""
    limits = WorkerLimits(connect_deadline=2.0, max_calls=0)

    async def main() -> None:
        async with node(limits=limits) as n:
            reader, writer = await asyncio.open_connection("127.0.0.1", n.port)
            await asyncio.sleep(0.2)
            frame = b"\x10\x01\x40" + bytes(320)
            writer.write(b"\x01\x00\x10" + uuid.uuid4().bytes + frame * 20)
            await writer.drain()
            await asyncio.sleep(0.2)
            writer.write(frame * 20)
            await writer.drain()
            got = await reader.read()
            assert got == b"\x00\x00\x00"
            writer.close()
            await writer.wait_closed()

    run(main())


def test_a_worker_whose_loop_lags_refuses_new_calls_for_a_while_then_takes_them(
        caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    from engine import worker as worker_module

    monkeypatch.setattr(worker_module, "LAG_HOLD_S", 0.6)
    limits = WorkerLimits(connect_deadline=2.0, max_loop_lag=0.05)

    async def main() -> None:
        async with node(limits=limits) as n:
            first = await _call(n)
            assert first.hangup == caller.CALLER_FINISHED
            time.sleep(0.3)  # the loop is blocked, as a long garbage collection would do
            await asyncio.sleep(0.15)
            assert n.worker.lagging
            refused = await _call(n)
            assert refused.hangup == caller.ENGINE_HANGUP and refused.frames_received == 0
            await asyncio.sleep(0.7)
            assert not n.worker.lagging
            again = await _call(n)
            assert again.hangup == caller.CALLER_FINISHED and again.frames_received > 30

    with caplog.at_level(logging.INFO):
        run(main())
    assert [e["reason"] for e in _ended(caplog)] == ["caller_hangup", "overloaded",
                                                     "caller_hangup"]
    (lagging,) = [r for r in caplog.records if r.getMessage() == "worker_loop_lagging"]
    assert vars(lagging)["_fields"]["lag_ms"] >= 200


def test_the_worker_counts_its_loops_tasks_for_the_gauge(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from engine import worker as worker_module
    from engine.metrics import METRICS

    monkeypatch.setattr(worker_module, "TASKS_EVERY", 1)

    def gauge() -> float | None:
        return METRICS.registry.get_sample_value("voice_engine_event_loop_tasks")

    async def main() -> None:
        async with node() as n:
            await asyncio.sleep(0.25)
            before = gauge()
            assert before is not None and before >= 1  # the probe's own task at least
            stop = asyncio.Event()
            waiting = [asyncio.ensure_future(stop.wait()) for _ in range(5)]
            await asyncio.sleep(0.25)
            assert gauge() == before + 5
            stop.set()
            await asyncio.gather(*waiting)
            await asyncio.sleep(0.25)
            assert gauge() == before
            assert n.worker.connections == set()

    run(main())
