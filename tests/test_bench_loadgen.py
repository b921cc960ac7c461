"""The load generator over real loopback sockets and uvloop: probe calls with kernel receive
timestamps, batched calls read by the clock, and how each kind of call learns it has ended."""

from __future__ import annotations

import asyncio
import socket
import statistics
import struct
import time
from collections.abc import Callable
from typing import cast

import pytest
import uvloop

from engine.bench.floor import FloorServer
from engine.bench.loadgen import BenchCall, LoadGenerator, TalkPattern
from engine.bench.rxstamp import ANCILLARY_SIZE, ClockOffset, enable, stamp_ns

RATE = 8000
SILENT = b"\x10\x01\x40" + bytes(320)
LOUD = b"\x10\x01\x40" + b"\x01\x02" * 160
# Callers that never speak: what they send does not matter here, only that they keep sending.
QUIET = TalkPattern(first_pause_s=(60.0, 60.0))


class _Peer(asyncio.Protocol):
    """One accepted call on a scripted engine: counts what the caller sent."""

    def __init__(self, script: Callable[[asyncio.Transport], None]) -> None:
        self.script = script
        self.received = bytearray()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        first = not self.received
        self.received += data
        if first and self.transport is not None:
            self.script(self.transport)


async def _scripted(script: Callable[[asyncio.Transport], None], calls: int, probes: int,
                    wait: float = 0.3) -> tuple[LoadGenerator, list[_Peer]]:
    loop = asyncio.get_running_loop()
    peers: list[_Peer] = []

    def accept() -> _Peer:
        peers.append(_Peer(script))
        return peers[-1]

    server = await loop.create_server(accept, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    gen = LoadGenerator("127.0.0.1", port, rate=RATE, pattern=QUIET, probe_calls=probes)
    try:
        await gen.start(calls, 200.0)
        await asyncio.sleep(wait)
    finally:
        await gen.stop()
        for peer in peers:
            if peer.transport is not None:
                peer.transport.close()
        server.close()
        await server.wait_closed()
    return gen, peers


def _hangup_after_audio(transport: asyncio.Transport) -> None:
    transport.write(LOUD * 3 + SILENT * 2 + b"\x00\x00\x00")


def _close_after_audio(transport: asyncio.Transport) -> None:
    transport.write(LOUD * 2)
    transport.close()


def _violate(transport: asyncio.Transport) -> None:
    transport.write(LOUD + b"\x01\x00\x10" + bytes(16))  # a UUID: engines never send one


def _reset(transport: asyncio.Transport) -> None:
    sock = transport.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


@pytest.mark.parametrize("probes", [0, 2], ids=["batched", "probe"])
@pytest.mark.parametrize(("script", "ended_by"), [
    (_hangup_after_audio, "engine_hangup"),
    (_close_after_audio, "engine_closed"),
    (_violate, "protocol_error"),
    (_reset, "connection_lost: [Errno 104] Connection reset by peer"),
], ids=["hangup", "eof", "violation", "reset"])
def test_every_call_learns_how_the_engine_ended_it(
    script: Callable[[asyncio.Transport], None], ended_by: str, probes: int,
) -> None:
    gen, peers = uvloop.run(_scripted(script, calls=2, probes=probes))
    assert len(peers) == 2 and gen.failed == 0
    for call in gen.calls:
        assert call.probe is (probes > 0)
        assert call.outcome.connected and call.outcome.ended_by == ended_by
        assert call.dropped and call.sock is None and call not in gen.live
    if script is _hangup_after_audio:
        for call in gen.calls:
            assert bytes(call.trace.rx_audio) == b"\x01\x01\x01\x00\x00"
            assert len(call.trace.rx_times) == (5 if call.probe else 0)
            assert call.captures == [bytearray(b"\x01\x02" * 480)]
    if script is _violate:
        assert all("UnknownKind" in (c.outcome.error or "") or "kind" in (c.outcome.error or "")
                   for c in gen.calls)


def _still_up(transport: asyncio.Transport) -> None:
    del transport


def test_each_call_sends_its_uuid_then_one_frame_a_tick_and_the_bench_hangs_up() -> None:
    gen, peers = uvloop.run(_scripted(_still_up, calls=3, probes=1, wait=1.0))
    assert all(c.outcome.ended_by == "bench" and not c.dropped for c in gen.calls)
    uuids = set()
    for peer in peers:
        data = bytes(peer.received)
        assert data[:3] == b"\x01\x00\x10"
        uuids.add(data[3:19])
        frames = (len(data) - 19) / len(SILENT)
        assert frames == int(frames) and 40 <= frames <= 60, frames
    assert uuids == {c.uuid.bytes for c in gen.calls}
    probe, *batched = gen.calls
    assert len(probe.trace.tx_times) >= 40
    assert all(len(c.trace.tx_times) == 0 for c in batched)


async def _against_the_floor(seconds: float) -> LoadGenerator:
    floor = FloorServer(RATE)
    port = await floor.start("127.0.0.1", 0)
    gen = LoadGenerator("127.0.0.1", port, rate=RATE, pattern=QUIET, probe_calls=2)
    try:
        await gen.start(4, 200.0)
        await asyncio.sleep(seconds)
        for call in gen.calls:
            if call.probe:
                now = time.monotonic()
                assert now - 0.1 < call.trace.rx_times[-1] <= now
    finally:
        await gen.stop()
        await floor.stop()
    return gen


def test_probe_calls_carry_kernel_receive_times_20_ms_apart() -> None:
    gen = uvloop.run(_against_the_floor(1.5))
    assert gen.clock_stats()["unstamped_reads"] == 0
    for call in gen.calls:
        if not call.probe:
            assert len(call.trace.rx_times) == 0 and len(call.trace.rx_audio) >= 60
            continue
        times = list(call.trace.rx_times)
        assert len(times) >= 60 and len(times) == len(call.trace.rx_audio)
        gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
        assert min(gaps) >= 0, "kernel receive times go forward"
        assert abs(statistics.median(gaps) - 0.020) < 0.002


def test_the_clock_offset_maps_a_kernel_stamp_onto_the_monotonic_clock() -> None:
    offset = ClockOffset.measure()
    assert 0 <= offset.uncertainty_ns < 1_000_000
    with socket.create_server(("127.0.0.1", 0)) as server:
        b = socket.create_connection(server.getsockname())
        a, _ = server.accept()
    with a, b:
        enable(b)
        for _ in range(100):  # the kernel turns stamping on a moment after it is first asked
            before = time.monotonic()
            a.send(b"x")
            _, ancillary, _, _ = b.recvmsg(16, ANCILLARY_SIZE)
            after = time.monotonic()
            if ancillary:
                break
            time.sleep(0.01)
    stamp = stamp_ns(ancillary)
    assert stamp is not None
    assert before - 0.001 <= offset.monotonic(stamp) <= after + 0.001
    assert stamp_ns([]) is None


def test_a_call_that_cannot_connect_is_counted_not_raised() -> None:
    async def go() -> LoadGenerator:
        with socket.socket() as unused:
            unused.bind(("127.0.0.1", 0))
            port = unused.getsockname()[1]
        gen = LoadGenerator("127.0.0.1", port, rate=RATE, probe_calls=1)
        await gen.start(2, 200.0)
        await gen.stop()
        return gen

    gen = uvloop.run(go())
    assert gen.failed == 2 and not gen.live
    assert all(c.outcome.ended_by == "connect_failed" and not c.dropped for c in gen.calls)


def test_bench_call_owns_no_transport() -> None:
    assert not issubclass(BenchCall, asyncio.BaseProtocol)


# -- churn -----------------------------------------------------------------------------------


async def _churning(script: Callable[[asyncio.Transport], None], seconds: float,
                    ) -> tuple[LoadGenerator, list[_Peer], float]:
    loop = asyncio.get_running_loop()
    peers: list[_Peer] = []

    def accept() -> _Peer:
        peers.append(_Peer(script))
        return peers[-1]

    server = await loop.create_server(accept, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    gen = LoadGenerator("127.0.0.1", port, rate=RATE, pattern=QUIET, probe_calls=1,
                        churn_s=0.2, seed=7)
    try:
        await gen.start(3, 200.0)
        await asyncio.sleep(seconds)
    finally:
        await gen.stop()
        stopped = time.monotonic()
        for peer in peers:
            if peer.transport is not None:
                peer.transport.close()
        server.close()
        await server.wait_closed()
    return gen, peers, stopped


def test_churning_calls_hang_up_after_their_length_and_are_replaced_in_their_slot() -> None:
    gen, peers, stopped = uvloop.run(_churning(_still_up, 1.5))
    # Three slots of calls of 0.1-0.3 s for 1.5 s: a dozen calls or more, three up at a time.
    assert len(gen.calls) >= 15 and len(peers) == len(gen.calls)
    assert gen.failed == 0 and not any(c.dropped for c in gen.calls)
    assert all(c.outcome.ended_by == "bench" for c in gen.calls)
    assert {c.slot for c in gen.calls} == {0, 1, 2}
    assert all(c.probe is (c.slot == 0) for c in gen.calls)
    assert len({c.uuid for c in gen.calls}) == len(gen.calls)
    for slot in range(3):
        mine = [c for c in gen.calls if c.slot == slot]
        for before, after in zip(mine, mine[1:], strict=False):
            assert before.ended_at is not None and before.ended_at <= after.placed_at
        for call in mine[:-1]:  # the last ones were hung up by stop()
            assert call.length_s is not None and 0.1 <= call.length_s <= 0.3
            assert call.ended_at is not None
            # (the loop's timers run on its cached clock, up to a millisecond behind)
            assert call.ended_at - call.placed_at >= call.length_s - 0.002
        assert mine[-1].ended_at is not None and mine[-1].ended_at <= stopped
    # The probe slot's calls recorded their send times (the last may have just begun).
    probes = [c for c in gen.calls if c.probe]
    assert all(len(c.trace.tx_times) >= 4 for c in probes[:-1])
    assert all(len(c.trace.tx_times) == 0 for c in gen.calls if not c.probe)
    # The same seed draws the same lengths.
    again = LoadGenerator("127.0.0.1", 9, churn_s=0.2, seed=7)
    assert [again.call_length() for _ in range(5)] == [c.length_s for c in gen.calls[:5]]
    assert LoadGenerator("127.0.0.1", 9).call_length() is None


def test_a_churning_slot_whose_call_failed_is_filled_again_a_moment_later(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from engine.bench import loadgen

    monkeypatch.setattr(loadgen, "CHURN_RETRY_S", 0.3)
    gen, _, _ = uvloop.run(_churning(_hangup_after_audio, 1.0))
    # The engine hangs up at once: each slot retries every 0.3 s, not in a tight loop.
    assert 3 * 3 <= len(gen.calls) <= 3 * 5
    assert all(c.failed and c.outcome.ended_by == "engine_hangup" for c in gen.calls)
