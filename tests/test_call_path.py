"""The call path end to end: real loopback TCP, a real uvloop loop, the real websockets client
against the built-in simulator, and callers that behave like Asterisk."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import ssl
import uuid
import weakref
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import uvloop

from engine import caller, upstream
from engine._impl import audiosocket
from engine.bench import measure
from engine.call import CallSettings
from engine.config import Config
from engine.metrics import METRICS
from engine.sim import Fault, FaultKind, SimConfig, Simulator
from engine.sim.tls import ThrowawayTls
from engine.worker import CallConnection, Worker, WorkerLimits

TONE_HZ = 1000.0


def run(coro: Coroutine[Any, Any, Any]) -> Any:
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coro)


def speech(rate: int, seconds: float, freq: float = 440.0, dbfs: float = -12.0) -> bytes:
    n = round(rate * seconds)
    amp = 32767 * 10 ** (dbfs / 20)
    return np.round(amp * np.sin(2 * np.pi * freq * np.arange(n) / rate)).astype("<i2").tobytes()


def quiet(rate: int, seconds: float) -> bytes:
    return bytes(2 * round(rate * seconds))


def loud_runs(pcm: bytes, rate: int) -> list[tuple[int, int]]:
    """(first sample, samples) of each run of 10 ms blocks with audio in them."""
    return measure.loud_stretches(pcm, rate)


def tone_quality(pcm: bytes, rate: int, freq: float) -> tuple[float, float]:
    """(dominant frequency in Hz, SNR in dB of a fitted sine) inside one response's audio.

    50 ms at each end are left out: the edges of a response are not a steady tone.
    """
    run_ = measure.loudest_stretch(pcm, rate)
    assert run_, "no audio came back"
    seg = np.frombuffer(run_, "<i2").astype(np.float64)[rate // 20: len(run_) // 2 - rate // 20]
    assert seg.size > rate // 10, "the response was too short to measure"
    spectrum = np.abs(np.fft.rfft(seg * np.hanning(seg.size)))
    peak = float(np.argmax(spectrum) * rate / seg.size)
    return peak, measure.tone_snr(run_, rate, freq)


@dataclass
class Node:
    worker: Worker
    sim: Simulator
    port: int

    async def call(self, **kwargs: Any) -> caller.CallReport:
        """One call; returns once the engine has seen it end too."""
        report = await caller.call("127.0.0.1", self.port, **kwargs)
        await asyncio.sleep(0.05)
        return report

    async def idle(self) -> None:
        assert await self.worker.wait_idle(3.0)


def make_config(**changes: Any) -> Config:
    base = Config(vad_silence_ms=300, transcription_model="")
    return base.replace(**changes)


@contextlib.asynccontextmanager
async def node(
    sim_config: SimConfig | None = None,
    config: Config | None = None,
    limits: WorkerLimits | None = None,
    settings: Callable[[CallSettings], CallSettings] | None = None,
    sim_tls: ssl.SSLContext | None = None,
    upstream_url: str | None = None,
) -> AsyncIterator[Node]:
    config = config or make_config()
    sim = Simulator(sim_config or SimConfig(response_ms=1000, tone_hz=TONE_HZ),
                    ssl_context=sim_tls)
    await sim.start()
    call_settings = CallSettings.from_config(config)
    if settings is not None:
        call_settings = settings(call_settings)
    endpoint = upstream.Endpoint.for_dialect(
        call_settings.dialect, upstream_url or sim.url, config.openai_model, "sk-test",
        config.upstream_ca_file,
    )
    worker = Worker(config, endpoint, call_settings, limits or WorkerLimits(connect_deadline=2.0))
    port = await worker.start("127.0.0.1", 0)
    try:
        yield Node(worker, sim, port)
        await Node(worker, sim, port).idle()
    finally:
        await worker.stop()
        await sim.stop()
    assert not worker.connections


def assert_clean(sim: Simulator) -> None:
    totals = sim.totals()
    assert totals["invalid"] == 0, [live.report.invalid for live in sim.sessions]
    assert totals["mistakes"] == 0, [live.report.mistakes for live in sim.sessions]
    assert totals["bad_truncates"] == 0


@pytest.mark.parametrize("kind", [0x10, 0x12, 0x13])
def test_a_call_at_each_rate_carries_audio_both_ways(kind: int, figures: list[str]) -> None:
    rate = audiosocket.AUDIO_RATES[kind]

    async def main() -> None:
        async with node() as n:
            report = await n.call(pcm=speech(rate, 1.0) + quiet(rate, 2.2), kind=kind)
            assert report.hangup == caller.CALLER_FINISHED
            assert report.wrong_kind_frames == 0 and report.odd_size_frames == 0
            assert abs(report.frames_received - report.frames_sent) <= 3
            peak, snr = tone_quality(report.received_pcm, rate, TONE_HZ)
            assert abs(peak - TONE_HZ) < 5
            assert snr > 70
            (live,) = n.sim.sessions
            assert live.report.responses >= 1
            assert live.report.events["input_audio_buffer.append"] >= 70
            assert_clean(n.sim)
            figures.append(
                f"call at {rate} Hz: pacing inside the response p50 "
                f"{report.burst_pacing.p50_ms:.2f} ms, p99 {report.burst_pacing.p99_ms:.2f} ms, "
                f"max {report.burst_pacing.max_ms:.2f} ms; tone SNR {snr:.1f} dB"
            )

    run(main())


def log_fields(record: logging.LogRecord) -> dict[str, Any]:
    """The fields of one of the engine's structured log lines."""
    fields: dict[str, Any] = vars(record)["_fields"]
    return fields


def test_pcmu_upstream_carries_an_8k_call_without_resampling(figures: list[str]) -> None:
    async def main() -> None:
        async with node(config=make_config(upstream_format="pcmu")) as n:
            report = await n.call(pcm=speech(8000, 1.0) + quiet(8000, 2.2), kind=0x10)
            assert report.hangup == caller.CALLER_FINISHED
            peak, snr = tone_quality(report.received_pcm, 8000, TONE_HZ)
            assert abs(peak - TONE_HZ) < 5
            assert snr > 30  # mu-law coding tops out near 38 dB
            (live,) = n.sim.sessions
            assert live.core.settings.input_format == "pcmu"
            assert_clean(n.sim)
            figures.append(f"call at 8000 Hz over pcmu: tone SNR {snr:.1f} dB")

    run(main())


@pytest.mark.parametrize("on", [True, False])
def test_transcripts_are_logged_only_when_asked(on: bool,
                                                caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        config = make_config(log_transcripts=on, transcription_model="whisper-1")
        async with node(config=config) as n:
            await n.call(pcm=speech(8000, 1.0) + quiet(8000, 2.2), kind=0x10)

    with caplog.at_level(logging.INFO, logger="engine"):
        run(main())
    (end,) = [log_fields(r) for r in caplog.records if r.getMessage() == "call_ended"]
    lines = [log_fields(r) for r in caplog.records if r.getMessage() == "transcript"]
    if on:
        roles = {role for role, _ in end["transcript"]}
        assert roles == {"user", "assistant"} and len(lines) == len(end["transcript"])
    else:
        assert "transcript" not in end and not lines


def ended(worker: Worker) -> dict[str, int]:
    return dict(worker.totals.ended)


@pytest.mark.parametrize("dialect", ["ga", "beta"])
@pytest.mark.parametrize("interrupt", [True, False])
def test_barge_in_clears_and_truncates_what_was_played(dialect: str, interrupt: bool) -> None:
    rate = 8000

    def engine_settings(s: CallSettings) -> CallSettings:
        from dataclasses import replace

        return replace(s, session=replace(s.session, interrupt_response=interrupt))

    async def main() -> None:
        # Sent at 1.5x real time, the response is still streaming when the caller barges in.
        sim_config = SimConfig(response_ms=4000, tone_hz=TONE_HZ, pacing=1.5)
        async with node(sim_config, make_config(realtime_dialect=dialect),
                        settings=engine_settings) as n:
            # Speak 0.6 s, pause (the model answers after 0.3 s of silence), speak over it.
            signal = speech(rate, 0.6) + quiet(rate, 1.4) + speech(rate, 0.6) + quiet(rate, 1.4)
            report = await n.call(pcm=signal, kind=0x10)
            (live,) = n.sim.sessions
            assert live.dialect.value == dialect
            assert_clean(n.sim)
            (truncate,) = live.report.truncates
            assert truncate.ok
            # The model's audio started ~0.9 s in and the caller spoke again at 2.0 s: about
            # 1.1 s was played, and the truncate says so, within the VAD's own latency.
            assert 700 <= truncate.audio_end_ms <= 1500
            cancels = {by for by, _ in live.report.cancels}
            assert cancels == ({"server"} if interrupt else {"client"})
            _, played = loud_runs(report.received_pcm, rate)[0]
            assert abs(played / rate * 1000 - truncate.audio_end_ms) <= 30
            assert ended(n.worker) == {"caller_hangup": 1}

    run(main())


def metric(name: str, **labels: str) -> float:
    return METRICS.registry.get_sample_value(name, labels) or 0.0


def test_dtmf_is_received_logged_and_counted(caplog: pytest.LogCaptureFixture) -> None:
    digits_before = metric("voice_engine_dtmf_digits_total")
    ended_before = metric("voice_engine_calls_ended_total", reason="caller_hangup")

    async def main() -> None:
        async with node() as n:
            report = await n.call(pcm=quiet(8000, 1.0), kind=0x10,
                                  dtmf=[(0.2, "4"), (0.4, "2"), (0.6, "#")])
            assert report.dtmf_sent == 3

    with caplog.at_level(logging.INFO, logger="engine"):
        run(main())
    (end,) = [r for r in caplog.records if r.getMessage() == "call_ended"]
    assert log_fields(end)["dtmf"] == "42#"
    assert [log_fields(r)["digit"] for r in caplog.records
            if r.getMessage() == "dtmf"] == ["4", "2", "#"]
    assert metric("voice_engine_dtmf_digits_total") == digits_before + 3
    assert metric("voice_engine_calls_ended_total", reason="caller_hangup") == ended_before + 1
    assert metric("voice_engine_active_calls") == 0


@pytest.mark.parametrize("read_ticks", [0, 1, 2, 3])
def test_the_clock_reads_callers_or_the_transport_does(read_ticks: int) -> None:
    """With CLOCK_READ_TICKS the clock reads a call's caller every N ticks once media flows
    (the transport's reading paused); with 0 the transport reads each frame as it arrives.
    Either way the audio, the digits and the hangup arrive, and no call is left behind."""

    async def main() -> None:
        async with node(config=make_config(clock_read_ticks=read_ticks)) as n:
            task = asyncio.create_task(n.call(
                pcm=speech(8000, 1.0) + quiet(8000, 1.6), kind=0x10,
                dtmf=[(0.3, "7"), (1.5, "9")]))
            await asyncio.sleep(1.2)
            (conn,) = n.worker.connections
            outlet = conn._outlet
            assert outlet.reading == (read_ticks > 0)
            report = await task
            assert report.hangup == caller.CALLER_FINISHED and report.dtmf_sent == 2
            assert abs(report.frames_received - report.frames_sent) <= 3
            (live,) = n.sim.sessions
            assert live.report.events["input_audio_buffer.append"] >= 60
            assert conn.call.stats.dtmf == ["7", "9"]
            if read_ticks:
                frames = conn.call.stats.caller_frames
                assert outlet.reads <= frames / read_ticks * 1.2 + 5
                assert outlet.reads >= frames / read_ticks * 0.5
            assert ended(n.worker) == {"caller_hangup": 1}
            assert_clean(n.sim)

    run(main())


@pytest.mark.parametrize("how", ["eof", "eof_inside_a_message", "reset"])
def test_a_caller_read_by_the_clock_that_closes_or_resets_ends_its_call(how: str) -> None:
    import socket
    import struct

    async def main() -> None:
        async with node() as n:
            reader, writer = await raw_connection(n.port)
            writer.write(b"\x01\x00\x10" + uuid.uuid4().bytes)
            for _ in range(25):
                writer.write(b"\x10\x01\x40" + bytes(320))
                await asyncio.sleep(0.02)
            (conn,) = n.worker.connections
            assert conn._outlet.reading
            started = asyncio.get_running_loop().time()
            if how == "reset":
                sock = writer.get_extra_info("socket")
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                writer.transport.abort()
            else:
                if how == "eof_inside_a_message":
                    writer.write(b"\x10\x01")
                writer.write_eof()
            assert await n.worker.wait_idle(1.0)
            assert asyncio.get_running_loop().time() - started < 0.3
            reason = "protocol_violation" if how == "eof_inside_a_message" else "caller_hangup"
            assert ended(n.worker) == {reason: 1}
            if how != "reset":
                data = await asyncio.wait_for(reader.read(), 3)
                assert len(data) % 323 == 0
            writer.close()

    run(main())


def test_max_duration_plays_a_goodbye_then_hangs_up() -> None:
    async def main() -> None:
        limits = WorkerLimits(max_call_seconds=1.0, connect_deadline=2.0)
        async with node(SimConfig(response_ms=500, tone_hz=TONE_HZ), limits=limits) as n:
            report = await n.call(pcm=quiet(8000, 5.0), kind=0x10)
            assert report.hangup == caller.ENGINE_HANGUP
            assert 1.4 <= report.duration <= 2.5
            x = np.abs(np.frombuffer(report.received_pcm, "<i2"))
            loud = np.flatnonzero(x > 1000)
            assert loud.size and (loud[-1] - loud[0]) / 8000 >= 0.45
            assert ended(n.worker) == {"max_duration": 1}
            (live,) = n.sim.sessions
            assert live.report.events["response.create"] == 1
            assert_clean(n.sim)

    run(main())


async def raw_connection(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", port)


def test_handshake_timeout_closes_a_silent_connection() -> None:
    async def main() -> None:
        config = make_config(handshake_timeout_ms=300)
        async with node(config=config, limits=WorkerLimits(handshake_timeout=0.3)) as n:
            reader, writer = await raw_connection(n.port)
            started = asyncio.get_running_loop().time()
            assert await asyncio.wait_for(reader.read(), 3) == b""
            assert asyncio.get_running_loop().time() - started >= 0.25
            writer.close()
            await writer.wait_closed()
            assert ended(n.worker) == {"handshake_timeout": 1}
            assert not n.sim.sessions

    run(main())


def test_protocol_violation_closes_only_that_call() -> None:
    async def main() -> None:
        async with node() as n:
            good = asyncio.create_task(n.call(pcm=speech(8000, 0.6) + quiet(8000, 2.0),
                                              kind=0x10))
            await asyncio.sleep(0.3)
            reader, writer = await raw_connection(n.port)
            writer.write(b"\x01\x00\x10" + uuid.uuid4().bytes + b"\x10\x01\x40" + bytes(320))
            writer.write(b"\x02\x00\x00")
            data = await asyncio.wait_for(reader.read(), 3)
            assert len(data) % 323 == 0  # silence frames, then a close without a hangup
            writer.close()
            await writer.wait_closed()
            report = await good
            assert report.hangup == caller.CALLER_FINISHED
            assert ended(n.worker) == {"protocol_violation": 1, "caller_hangup": 1}

    run(main())


def test_node_shutdown_hangs_up_cleanly() -> None:
    async def main() -> None:
        async with node() as n:
            task = asyncio.create_task(n.call(pcm=quiet(8000, 5.0), kind=0x10))
            await asyncio.sleep(0.5)
            await n.worker.stop()
            report = await asyncio.wait_for(task, 3)
            assert report.hangup == caller.ENGINE_HANGUP
            assert ended(n.worker) == {"shutdown": 1}

    run(main())


FAULTS = {
    # name: (fault, connections it hits, error class of the call's end, words in its error)
    "refuse": (Fault(FaultKind.REFUSE), 50, "UpstreamRefused", "connection lost"),
    "401": (Fault(FaultKind.UNAUTHORIZED), 1, "UpstreamAuthFailed", "HTTP 401"),
    "403": (Fault(FaultKind.FORBIDDEN), 1, "UpstreamAuthFailed", "HTTP 403"),
    "close": (Fault(FaultKind.CLOSE, after_ms=1200), 1, "UpstreamClosed", "code 1011"),
    # 1013 is "try again later", the code a server sheds load with; 1008 a policy refusal.
    "close_1013": (Fault(FaultKind.CLOSE, after_ms=1200, close_code=1013), 1, "UpstreamClosed",
                   "code 1013"),
    "close_1008": (Fault(FaultKind.CLOSE, after_ms=1200, close_code=1008), 1, "UpstreamClosed",
                   "code 1008"),
    "stall": (Fault(FaultKind.STALL, after_ms=1200), 1, "UpstreamStalled", "no pong"),
    "huge": (Fault(FaultKind.HUGE, after_ms=1200, size=upstream.MAX_MESSAGE + 1), 1,
             "UpstreamBadEvent", "message over 16777216 bytes"),
}


def failed_ends(records: list[logging.LogRecord]) -> list[dict[str, Any]]:
    return [log_fields(r) for r in records
            if r.getMessage() == "call_ended" and log_fields(r)["reason"] == "upstream_failed"]


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_an_upstream_fault_hangs_up_that_call_only(
    fault: str, caplog: pytest.LogCaptureFixture
) -> None:
    injected, count, error_class, words = FAULTS[fault]
    errors_before = metric("voice_engine_upstream_errors_total", error=error_class)

    async def main() -> None:
        limits = WorkerLimits(connect_deadline=1.0, ping_interval=0.2, ping_timeout=0.3)
        async with node(limits=limits) as n:
            signal = speech(8000, 0.6) + quiet(8000, 2.4)
            first = asyncio.create_task(n.call(pcm=signal, kind=0x10))
            await asyncio.sleep(0.2)
            n.sim.queue_fault(injected, count)
            broken = await n.call(pcm=signal, kind=0x10)
            assert broken.hangup == caller.ENGINE_HANGUP
            n.sim.clear_faults()
            healthy = [await first, await n.call(pcm=signal, kind=0x10)]
            for report in healthy:
                assert report.hangup == caller.CALLER_FINISHED
                peak, snr = tone_quality(report.received_pcm, 8000, TONE_HZ)
                assert abs(peak - TONE_HZ) < 5 and snr > 60
            assert ended(n.worker) == {"caller_hangup": 2, "upstream_failed": 1}

    with caplog.at_level(logging.INFO, logger="engine"):
        run(main())
    (end,) = failed_ends(caplog.records)
    assert end["error_class"] == error_class and words in end["error"], end
    assert metric("voice_engine_upstream_errors_total", error=error_class) == errors_before + 1


MESSAGE_FAULTS = {
    # name: (fault, the call's end-line field that counts it, the metric's cause)
    "garbage": (Fault(FaultKind.GARBAGE, after_ms=300), "bad_events", "undecodable"),
    "error": (Fault(FaultKind.ERROR, after_ms=300), "server_errors", "error_event"),
    "unknown": (Fault(FaultKind.UNKNOWN, after_ms=300), None, None),
    "huge_but_allowed": (Fault(FaultKind.HUGE, after_ms=300, size=4 * 1024 * 1024), None, None),
    # The first delta of the answer, damaged: the answer plays from the next one.
    "bad_base64": (Fault(FaultKind.BAD_AUDIO, after_ms=300), "bad_events", "undecodable"),
    "odd_length": (Fault(FaultKind.ODD_AUDIO, after_ms=300), "bad_deltas", "bad_audio"),
}


@pytest.mark.parametrize("fault", sorted(MESSAGE_FAULTS))
def test_an_event_the_call_can_live_with_is_dropped_or_logged_and_the_call_goes_on(
    fault: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Policy: an undecodable message (bad base64 too) or audio that is not whole samples is
    dropped, an ``error`` event logged, an unknown or large event ignored; the call goes on (a
    server that cannot go on closes)."""
    injected, field, cause = MESSAGE_FAULTS[fault]
    before = metric("voice_engine_upstream_bad_events_total", cause=cause) if cause else 0.0

    async def main() -> None:
        async with node() as n:
            signal = speech(8000, 0.6) + quiet(8000, 2.4)
            n.sim.queue_fault(injected)
            report = await n.call(pcm=signal, kind=0x10)
            assert report.hangup == caller.CALLER_FINISHED
            assert abs(report.frames_received - report.frames_sent) <= 3
            peak, snr = tone_quality(report.received_pcm, 8000, TONE_HZ)
            assert abs(peak - TONE_HZ) < 5 and snr > 60
            assert n.sim.sessions[0].report.injected == [injected.kind.value]
            assert_clean(n.sim)

    with caplog.at_level(logging.INFO, logger="engine"):
        run(main())
    (end,) = [log_fields(r) for r in caplog.records if r.getMessage() == "call_ended"]
    assert end["reason"] == "caller_hangup"
    counted = ("bad_events", "server_errors", "bad_deltas")
    assert [end[f] for f in counted] == [int(f == field) for f in counted]
    if field is None:
        return
    name = {"bad_events": "upstream_bad_event", "server_errors": "upstream_error_event",
            "bad_deltas": "upstream_bad_audio"}[field]
    (line,) = [log_fields(r) for r in caplog.records if r.getMessage() == name]
    assert line["call"] == end["call"]
    assert metric("voice_engine_upstream_bad_events_total", cause=cause) == before + 1


def test_an_upstream_host_that_does_not_resolve_hangs_up_cleanly_and_says_why(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def main() -> None:
        async with node(upstream_url="ws://no-such-host.invalid:9/v1/realtime") as n:
            report = await n.call(pcm=quiet(8000, 1.0), kind=0x10)
            assert report.hangup == caller.ENGINE_HANGUP
            assert ended(n.worker) == {"upstream_failed": 1}

    with caplog.at_level(logging.INFO, logger="engine"):
        run(main())
    (end,) = failed_ends(caplog.records)
    assert end["error_class"] == "UpstreamUnresolved" and "no-such-host.invalid" in end["error"]


def test_a_call_over_tls_carries_audio_both_ways(tmp_path: Path) -> None:
    tls = ThrowawayTls.create(tmp_path)

    async def main() -> None:
        config = make_config(upstream_ca_file=str(tls.ca_file))
        async with node(config=config, sim_tls=tls.server_context) as n:
            assert n.sim.url.startswith("wss://")
            report = await n.call(pcm=speech(8000, 1.0) + quiet(8000, 2.2), kind=0x10)
            assert report.hangup == caller.CALLER_FINISHED
            assert abs(report.frames_received - report.frames_sent) <= 3
            peak, snr = tone_quality(report.received_pcm, 8000, TONE_HZ)
            assert abs(peak - TONE_HZ) < 5 and snr > 60
            (live,) = n.sim.sessions
            assert live.report.responses >= 1
            assert live.report.events["input_audio_buffer.append"] >= 70
            assert_clean(n.sim)

    run(main())


def test_an_untrusted_upstream_certificate_hangs_up_cleanly(
    tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    tls = ThrowawayTls.create(tmp_path)

    async def main() -> None:
        # No UPSTREAM_CA_FILE: the system store does not know the simulator's throwaway CA.
        limits = WorkerLimits(connect_deadline=2.0)
        async with node(limits=limits, sim_tls=tls.server_context) as n:
            started = asyncio.get_running_loop().time()
            report = await n.call(pcm=speech(8000, 0.6) + quiet(8000, 2.4), kind=0x10)
            assert report.hangup == caller.ENGINE_HANGUP
            # Refused at once, not retried until the connect deadline.
            assert asyncio.get_running_loop().time() - started < 1.5
            assert ended(n.worker) == {"upstream_failed": 1}
            assert not n.sim.sessions and not n.sim.handshakes

    with caplog.at_level(logging.DEBUG):
        run(main())
    (end,) = [log_fields(r) for r in caplog.records if r.getMessage() == "call_ended"]
    assert end["error_class"] == "UpstreamTlsFailed"
    assert "certificate" in end["error"] and "UPSTREAM_CA_FILE" in end["error"]
    assert "sk-test" not in caplog.text
    assert all("sk-test" not in str(log_fields(r)) for r in caplog.records
               if "_fields" in vars(r))


def test_rate_limited_connect_is_retried() -> None:
    async def main() -> None:
        async with node() as n:
            n.sim.queue_fault(Fault(FaultKind.RATE_LIMITED, retry_after=0.2), 2)
            report = await n.call(pcm=speech(8000, 0.6) + quiet(8000, 2.2), kind=0x10)
            assert report.hangup == caller.CALLER_FINISHED
            assert n.sim.handshakes["429"] == 2 and n.sim.handshakes["accepted"] == 1
            peak, _ = tone_quality(report.received_pcm, 8000, TONE_HZ)
            assert abs(peak - TONE_HZ) < 5

    run(main())


def test_over_capacity_is_refused_with_a_hangup() -> None:
    async def main() -> None:
        config = make_config(max_concurrent_calls=1)
        async with node(config=config, limits=WorkerLimits(max_calls=1)) as n:
            first = asyncio.create_task(n.call(pcm=quiet(8000, 1.0), kind=0x10))
            await asyncio.sleep(0.2)
            second = await n.call(pcm=quiet(8000, 1.0), kind=0x10)
            assert second.hangup == caller.ENGINE_HANGUP
            assert (await first).hangup == caller.CALLER_FINISHED

    run(main())


def replay(name: str) -> tuple[bytes, list[tuple[float, int, int]]]:
    """A captured Asterisk session: its bytes and (t_ms, offset, end) of each message."""
    import orjson

    from tests.conftest import FIXTURES

    folder = FIXTURES / "audiosocket"
    data = (folder / f"{name}.bin").read_bytes()
    lines = [orjson.loads(x) for x in (folder / f"{name}.jsonl").read_text().splitlines()]
    return data, [(d["t_ms"], d["offset"], d["offset"] + 3 + d["len"]) for d in lines]


@pytest.mark.parametrize("name", ["app8k", "app8k_dtmf", "chan16k", "chan24k"])
def test_real_asterisk_sessions_replayed_at_their_timing(
    name: str, caplog: pytest.LogCaptureFixture
) -> None:
    data, messages = replay(name)
    kind = data[messages[1][1]] if data[messages[1][1]] != 0x03 else 0x10
    rate = audiosocket.AUDIO_RATES[kind]

    async def main() -> tuple[int, bytes]:
        async with node() as n:
            reader, writer = await raw_connection(n.port)
            parser = audiosocket.Parser(client=True)
            got: list[bytes] = []

            async def read() -> None:
                while chunk := await reader.read(65536):
                    parser.receive_data(chunk)
                    got.extend(e.payload for e in parser.events_received()
                               if type(e) is audiosocket.AudioReceived and e.kind == kind)

            reading = asyncio.create_task(read())
            loop = asyncio.get_running_loop()
            t0 = loop.time()
            for t_ms, start, end in messages:
                await asyncio.sleep(max(0.0, t0 + t_ms / 1000 - loop.time()))
                writer.write(data[start:end])
            await asyncio.sleep(0.3)
            writer.write_eof()
            await asyncio.wait_for(reading, 3)
            writer.close()
            await writer.wait_closed()
            assert_clean(n.sim)
            (live,) = n.sim.sessions
            assert live.report.responses >= 1
            return len(got), b"".join(got)

    with caplog.at_level(logging.INFO, logger="engine"):
        frames, pcm = run(main())
    seconds = messages[-1][0] / 1000
    assert abs(frames - seconds * 50) <= 25
    peak, snr = tone_quality(pcm, rate, TONE_HZ)
    assert abs(peak - TONE_HZ) < 5 and snr > 60
    (end,) = [r for r in caplog.records if r.getMessage() == "call_ended"]
    fields = log_fields(end)
    assert fields["reason"] == "caller_hangup" and fields["rate"] == rate
    if name == "app8k_dtmf":
        assert fields["dtmf"]


def test_an_ended_call_is_freed_at_once_not_by_the_cyclic_collector(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Under churn, calls that only a gen-2 collection frees pile up for minutes: RSS saws.
    alive: list[weakref.ref[Any]] = []
    made = CallConnection.connection_made

    def tracked(self: CallConnection, transport: asyncio.BaseTransport) -> None:
        alive.extend((weakref.ref(self), weakref.ref(self.call)))
        made(self, transport)

    monkeypatch.setattr(CallConnection, "connection_made", tracked)

    async def main() -> None:
        limits = WorkerLimits(connect_deadline=1.0)
        async with node(SimConfig(response_ms=300, tone_hz=TONE_HZ), limits=limits) as n:
            gc.collect()
            gc.disable()
            try:
                await n.call(pcm=speech(8000, 0.6) + quiet(8000, 0.6), kind=0x10)
                reader, writer = await raw_connection(n.port)  # a protocol violation
                writer.write(b"\x01\x00\x10" + uuid.uuid4().bytes + b"\x02\x00\x00")
                await asyncio.wait_for(reader.read(), 3)
                writer.close()
                n.sim.queue_fault(Fault(FaultKind.UNAUTHORIZED), 1)
                assert (await n.call(pcm=speech(8000, 0.6), kind=0x10)).hangup \
                    == caller.ENGINE_HANGUP
                await n.idle()
                await asyncio.sleep(0.3)
                assert len(alive) == 6
                assert [ref() for ref in alive if ref() is not None] == []
            finally:
                gc.enable()

    run(main())


def test_an_ended_calls_error_lets_go_of_every_frame_along_its_chain() -> None:
    from engine.errors import ClockFailed
    from engine.worker import _drop_tracebacks

    def raised(make: Callable[[], BaseException]) -> BaseException:
        try:
            raise make()
        except BaseException as exc:
            return exc

    context, cause, inner = raised(OSError), raised(ValueError), raised(BrokenPipeError)
    clock = ClockFailed(inner)
    top = raised(lambda: RuntimeError("top"))
    top.__context__, top.__cause__ = context, clock
    clock.__cause__ = cause
    odd = raised(KeyError)
    odd.cause = "not an exception"  # type: ignore[attr-defined]
    odd.__context__ = top
    _drop_tracebacks(odd)
    assert all(e.__traceback__ is None for e in (odd, top, context, cause, inner))
