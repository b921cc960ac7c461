"""The test caller: pacing statistics, the sans-I/O session, and calls over real loopback TCP."""

from __future__ import annotations

import asyncio
import math
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
import pytest
import uvloop

from engine import caller
from engine._impl import audiosocket
from engine.errors import BadOutgoingAudio, ConfigError
from engine.stats import pacing, percentile

CALL_ID = uuid.UUID("0f0e0d0c-0b0a-0908-0706-050403020100")
K8, K16 = audiosocket.KIND_AUDIO_8K, audiosocket.KIND_AUDIO_16K


def frame(kind: int, payload: bytes) -> bytes:
    """One message, built here independently of the encoder under test."""
    return bytes((kind, len(payload) >> 8, len(payload) & 0xFF)) + payload


def tone(rate: int, seconds: float, hz: float = 440.0) -> bytes:
    t = np.arange(int(rate * seconds)) / rate
    return (np.sin(2 * math.pi * hz * t) * 12000).astype("<i2").tobytes()


# --- statistics ------------------------------------------------------------------------------

def test_percentile_nearest_rank_on_known_values() -> None:
    values = [float(v) for v in range(100, 0, -1)]  # 1..100 in reverse order
    assert percentile(values, 50) == 50.0
    assert percentile(values, 99) == 99.0
    assert percentile(values, 100) == 100.0
    assert percentile([7.0], 50) == 7.0
    assert math.isnan(percentile([], 50))
    with pytest.raises(ValueError):
        percentile(values, 0)


def test_pacing_of_known_intervals() -> None:
    # 100 intervals: 98 on time, one 3 ms late, one 10 ms early.
    intervals = [0.020] * 98 + [0.023, 0.010]
    p = pacing(intervals, 0.020)
    assert p.intervals == 100
    assert p.p50_ms == pytest.approx(0.0, abs=1e-9)
    assert p.p99_ms == pytest.approx(3.0)
    assert p.max_ms == pytest.approx(10.0)
    empty = pacing([], 0.020)
    assert empty.intervals == 0 and math.isnan(empty.max_ms)
    assert empty.as_dict()["max_ms"] is None


# --- the session, with an injected clock ------------------------------------------------------

def test_session_builds_what_asterisk_sends() -> None:
    s = caller.CallerSession(CALL_ID, K16)
    assert s.frame_bytes == 640 and s.rate == 16000
    assert s.opening(5.0) == b"\x01\x00\x10" + CALL_ID.bytes
    pcm = tone(16000, 0.02)
    assert s.frame(pcm) == frame(K16, pcm)
    assert s.silence_frame() == frame(K16, bytes(640))
    assert s.dtmf("#") == b"\x03\x00\x01#"
    with pytest.raises(ConfigError):
        s.dtmf("x")
    with pytest.raises(BadOutgoingAudio):
        s.frame(pcm[:100])
    with pytest.raises(ConfigError):
        caller.CallerSession(CALL_ID, 0x03)
    report = s.report()
    assert (report.frames_sent, report.dtmf_sent) == (2, 1)
    # The server-mode parser, as the engine reads it, sees a UUID then the audio.
    parser = audiosocket.Parser()
    parser.receive_data(caller.CallerSession(CALL_ID, K16).opening() + frame(K16, pcm))
    assert parser.events_received() == [
        audiosocket.UuidReceived(CALL_ID), audiosocket.AudioReceived(K16, 16000, pcm)
    ]


def test_session_records_frames_pacing_and_bursts() -> None:
    s = caller.CallerSession(CALL_ID, K8)
    s.opening(100.0)
    voice = tone(8000, 0.02)
    silent = bytes(320)
    # Arrival times: a silent lead-in, a burst of 4 with one frame 5 ms late, then silence.
    plan = [(silent, 0.0), (silent, 0.020), (voice, 0.040), (voice, 0.060), (voice, 0.085),
            (voice, 0.100), (silent, 0.120), (voice, 0.140), (voice, 0.160)]
    for payload, at in plan:
        s.receive(frame(K8, payload), 100.0 + at)
    s.receive(frame(K16, bytes(640)) + frame(K8, bytes(100)), 100.18)
    s.receive(b"\x00\x00", 100.2)
    assert s.ended is None
    s.receive(b"\x00" + frame(K8, voice), 100.2)  # hangup completes; the rest is ignored
    r = s.report()
    assert r.hangup == caller.ENGINE_HANGUP and r.ok
    assert r.frames_received == 11
    assert r.bytes_received == 9 * 320 + 640 + 100
    assert (r.wrong_kind_frames, r.odd_size_frames) == (1, 2)
    assert r.duration == pytest.approx(0.2)
    assert r.received_pcm == b"".join(p for p, _ in plan) + bytes(100)
    assert r.bursts == 2
    # Intervals: 20,20,20,25,15,20,20,20, then 20 (to the 16 kHz frame), 0 (same read).
    assert r.pacing.intervals == 10
    assert r.pacing.max_ms == pytest.approx(20.0)
    # Inside bursts: 40->60 (20), 60->85 (25), 85->100 (15), 140->160 (20).
    assert r.burst_pacing.intervals == 4
    assert r.burst_pacing.p50_ms == pytest.approx(0.0, abs=1e-6)
    assert r.burst_pacing.p99_ms == pytest.approx(5.0)
    assert r.burst_pacing.max_ms == pytest.approx(5.0)


def test_session_ends_on_protocol_error_and_eof() -> None:
    s = caller.CallerSession(CALL_ID, K8)
    s.opening(0.0)
    s.receive(frame(K8, bytes(320)) + frame(0x01, CALL_ID.bytes), 1.0)
    r = s.report()
    assert r.hangup.startswith(caller.PROTOCOL_ERROR) and "0x01" in r.hangup and not r.ok
    assert r.frames_received == 1
    s.receive_eof(2.0)
    assert s.report().hangup == r.hangup

    closed = caller.CallerSession(CALL_ID, K8)
    closed.opening(0.0)
    closed.receive(frame(K8, bytes(320)), 0.5)
    closed.receive_eof(0.6)
    assert closed.report().hangup == caller.ENGINE_CLOSED and closed.report().ok

    cut = caller.CallerSession(CALL_ID, K8)
    cut.receive(frame(K8, bytes(320))[:50], 0.5)
    cut.receive_eof(0.6)
    assert cut.report().hangup.startswith(caller.PROTOCOL_ERROR)


def test_session_recording_is_bounded() -> None:
    s = caller.CallerSession(CALL_ID, K8, max_record_seconds=0.1)  # 5 frames
    for i in range(20):
        s.receive(frame(K8, bytes([i + 1]) * 320), i * 0.02)
    r = s.report()
    assert r.frames_received == 20
    assert len(r.received_pcm) == 5 * 320
    assert r.received_pcm == b"".join(bytes([i + 1]) * 320 for i in range(5))
    assert r.pacing.intervals == 4


# --- an honest echo server on loopback --------------------------------------------------------

@dataclass
class EchoServer:
    """Acts as the engine: parses like the engine (server-mode parser) and echoes each audio
    frame back at once, optionally in another kind; hangs up (00 00 00, then close) after
    ``hangup_after`` frames, or just closes after ``close_after``; ``bad`` is sent instead
    of the first echo."""

    hangup_after: int | None = None
    close_after: int | None = None
    reply_kind: int | None = None
    bad: bytes | None = None
    events: list[object] = field(default_factory=list)
    port: int = 0
    # Set when the server has seen the connection end, so every byte sent has been parsed.
    finished: threading.Event = field(default_factory=threading.Event)

    def protocol(self) -> asyncio.Protocol:
        server = self

        class Echo(asyncio.Protocol):
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                self.t = cast(asyncio.Transport, transport)
                self.parser = audiosocket.Parser()
                self.frames = 0

            def data_received(self, data: bytes) -> None:
                self.parser.receive_data(data)
                for ev in self.parser.events_received():
                    server.events.append(ev)
                    if isinstance(ev, audiosocket.AudioReceived) and not self.t.is_closing():
                        self.echo(ev)

            def echo(self, ev: Any) -> None:
                if server.bad is not None:
                    self.t.write(server.bad)
                    return
                self.t.write(frame(server.reply_kind or ev.kind, ev.payload))
                self.frames += 1
                if self.frames == server.hangup_after:
                    self.t.write(audiosocket.HANGUP)
                    self.t.close()
                elif self.frames == server.close_after:
                    self.t.close()

            def eof_received(self) -> bool | None:
                self.parser.receive_eof()
                server.events += self.parser.events_received()
                return None

            def connection_lost(self, exc: Exception | None) -> None:
                server.finished.set()

        return Echo()

    async def start(self) -> asyncio.Server:
        srv = await asyncio.get_running_loop().create_server(self.protocol, "127.0.0.1", 0)
        self.port = srv.sockets[0].getsockname()[1]
        return srv

    def audio(self) -> bytes:
        """The audio the server received, once it has seen the connection end."""
        deadline = time.monotonic() + 5
        while not self.finished.is_set() and time.monotonic() < deadline:
            time.sleep(0.002)
        return b"".join(e.payload for e in self.events if isinstance(e, audiosocket.AudioReceived))


def run(coro_fn: object) -> object:
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coro_fn())  # type: ignore[operator]


async def call_echo(server: EchoServer, pcm: bytes, **kw: object) -> caller.CallReport:
    srv = await server.start()
    try:
        report = await caller.call("127.0.0.1", server.port, pcm=pcm, **kw)  # type: ignore[arg-type]
        # Let the server's side finish on this loop before the test reads what it got.
        for _ in range(1000):
            if server.finished.is_set():
                break
            await asyncio.sleep(0.005)
        return report
    finally:
        srv.close()
        await srv.wait_closed()


def test_engine_hangs_up_after_n_frames() -> None:
    server = EchoServer(hangup_after=10)
    pcm = tone(16000, 0.5)  # 25 frames; the engine hangs up after echoing 10
    report = run(lambda: call_echo(server, pcm, kind=K16, uuid=CALL_ID))
    assert isinstance(report, caller.CallReport)
    assert report.hangup == caller.ENGINE_HANGUP and report.ok
    assert report.uuid == CALL_ID and (report.kind, report.rate) == (K16, 16000)
    assert report.frames_received == 10
    assert report.received_pcm == pcm[: 10 * 640]
    assert (report.wrong_kind_frames, report.odd_size_frames) == (0, 0)
    assert 10 <= report.frames_sent < 25  # the caller stopped early
    assert report.pacing.intervals == 9
    assert server.events[0] == audiosocket.UuidReceived(CALL_ID)


def test_caller_finishes_and_tail_is_recorded() -> None:
    server = EchoServer()
    pcm = tone(8000, 0.2)  # 10 frames, then 5 of silence
    report = run(lambda: call_echo(server, pcm, kind=K8, tail_seconds=0.1))
    assert isinstance(report, caller.CallReport)
    assert report.hangup == caller.CALLER_FINISHED
    assert report.frames_sent == 15
    # What the engine got is what we sent; the echo of the last frames may race our close.
    assert server.audio() == pcm + bytes(5 * 320)
    assert report.received_pcm[: len(pcm)] == pcm
    assert report.frames_received >= 10
    assert report.bursts == 1


def test_dtmf_goes_out_at_its_frame_and_seconds_pads() -> None:
    server = EchoServer()
    report = run(lambda: call_echo(
        server, tone(8000, 0.1), kind=K8, seconds=0.3, dtmf=[(0.2, "7"), (0.04, "#")]
    ))
    assert isinstance(report, caller.CallReport)
    assert report.frames_sent == 15 and report.dtmf_sent == 2
    names = [type(e).__name__ for e in server.events]
    # UUID, then "#" before frame 2, then "7" before frame 10.
    assert names[0] == "UuidReceived"
    assert names.index("DtmfReceived") == 3
    digits = [(i, e.digit) for i, e in enumerate(server.events)
              if isinstance(e, audiosocket.DtmfReceived)]
    assert digits == [(3, "#"), (12, "7")]
    assert server.audio() == tone(8000, 0.1) + bytes(10 * 320)


def test_engine_closes_without_hangup() -> None:
    server = EchoServer(close_after=3)
    report = run(lambda: call_echo(server, tone(8000, 0.2), kind=K8))
    assert isinstance(report, caller.CallReport)
    assert report.hangup == caller.ENGINE_CLOSED and report.frames_received == 3


def test_wrong_kind_from_engine_is_counted() -> None:
    server = EchoServer(reply_kind=K16, hangup_after=4)
    report = run(lambda: call_echo(server, tone(8000, 0.2), kind=K8))
    assert isinstance(report, caller.CallReport)
    assert report.hangup == caller.ENGINE_HANGUP
    assert (report.frames_received, report.wrong_kind_frames) == (4, 4)
    assert report.received_pcm == b""  # another rate's samples are not recorded


def test_engine_protocol_error_ends_the_call() -> None:
    server = EchoServer(bad=b"\x03\x00\x01" + b"5")
    report = run(lambda: call_echo(server, tone(8000, 0.2), kind=K8))
    assert isinstance(report, caller.CallReport)
    assert report.hangup.startswith(caller.PROTOCOL_ERROR) and not report.ok


def test_non_realtime_sends_everything_at_once() -> None:
    server = EchoServer()
    pcm = tone(24000, 0.4)
    report = run(lambda: call_echo(server, pcm, kind=audiosocket.KIND_AUDIO_24K, realtime=False,
                                   tail_seconds=0.06))
    assert isinstance(report, caller.CallReport)
    assert report.frames_sent == 23 and report.hangup == caller.CALLER_FINISHED
    assert server.audio() == pcm + bytes(3 * 960)


@pytest.fixture
def refused_port() -> Iterator[int]:
    """A loopback port with nothing listening: bound, never listened on, so nothing else
    takes it while the test runs."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


def test_refused_port_is_connect_failed(refused_port: int) -> None:
    report = run(lambda: caller.call("127.0.0.1", refused_port, pcm=bytes(320), kind=K8))
    assert isinstance(report, caller.CallReport)
    assert report.hangup.startswith(caller.CONNECT_FAILED) and not report.ok
    assert report.frames_sent == 0 and report.frames_received == 0


def test_bad_dtmf_digit_is_refused_before_connecting() -> None:
    with pytest.raises(ConfigError):
        run(lambda: caller.call("127.0.0.1", 9, pcm=b"", kind=K8, dtmf=[(0.0, "Z")]))


def echo_in_thread(server: EchoServer) -> tuple[threading.Thread, asyncio.AbstractEventLoop,
                                                 asyncio.Event]:
    """Runs ``server`` on its own uvloop loop in a thread (for synchronous callers like the
    click runner); set the returned event (thread-safely) to stop it."""
    loop = uvloop.new_event_loop()
    ready = threading.Event()
    stop = asyncio.Event()

    async def main() -> None:
        srv = await server.start()
        ready.set()
        await stop.wait()
        srv.close()
        await srv.wait_closed()

    def target() -> None:
        try:
            loop.run_until_complete(main())
        finally:
            loop.close()

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    assert ready.wait(5)
    return thread, loop, stop
