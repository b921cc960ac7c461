"""Bad input on the AudioSocket port, over real loopback sockets, while a good call runs: each
bad connection gets its own clear end line and is closed, and the good call keeps every frame
and its pacing."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
import uuid
from typing import Any

import pytest

from engine import caller
from engine.worker import WorkerLimits
from tests.test_call_path import ended, log_fields, node, quiet, run, speech

UUID_MSG = b"\x01\x00\x10" + uuid.uuid4().bytes
FRAME = b"\x10\x01\x40" + bytes(320)
TLS_HELLO = bytes.fromhex("16030100c4010000c00303") + bytes(32) + b"\x00\x00\x02\x13\x01\x01\x00"

BAD = {
    # name: (bytes sent, then silence; the end reason; words its error must have)
    "garbage": (b"\xde\xad\xbe\xef" * 8, "protocol_violation", "kind 0xde"),
    "http": (b"GET / HTTP/1.1\r\nHost: engine\r\n\r\n", "protocol_violation", "HTTP request"),
    "tls_hello": (TLS_HELLO, "protocol_violation", "TLS handshake"),
    "oversize": (UUID_MSG + b"\x10\xff\xff" + bytes(100), "protocol_violation",
                 "65535 bytes exceeds"),
    "unknown_kind": (UUID_MSG + b"\x42\x00\x02\x00\x00", "protocol_violation", "0x42"),
    "zero_length_audio": (UUID_MSG + b"\x10\x00\x00", "protocol_violation", "length 0"),
    "odd_length_audio": (UUID_MSG + b"\x10\x00\x03abc", "protocol_violation", "length 3: odd"),
    "audio_before_uuid": (FRAME, "protocol_violation", "must be a UUID"),
    "second_uuid": (UUID_MSG + FRAME + UUID_MSG, "protocol_violation", "second UUID"),
    "malformed_uuid": (b"\x01\x00\x05abcde", "protocol_violation", "5 bytes, expected 16"),
    "half_header_at_start": (b"\x01\x00", "handshake_timeout", None),
    "half_header_mid_call": (UUID_MSG + FRAME * 3 + b"\x10\x01", "caller_silent", None),
}


async def bad_connection(port: int, data: bytes) -> tuple[bytes, float]:
    """Sends ``data``, then waits; returns what came back and how long until the close."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    started = time.monotonic()
    writer.write(data)
    await writer.drain()
    got = await asyncio.wait_for(reader.read(), 8)
    elapsed = time.monotonic() - started
    writer.close()
    return got, elapsed


def test_each_bad_input_closes_only_its_connection_with_a_clear_reason(
    caplog: pytest.LogCaptureFixture,
) -> None:
    results: dict[str, tuple[bytes, float]] = {}
    limits = WorkerLimits(connect_deadline=2.0, handshake_timeout=1.0, caller_silence=1.5)

    async def main() -> None:
        async with node(limits=limits) as n:
            good = asyncio.create_task(n.call(pcm=speech(8000, 0.6) + quiet(8000, 4.4),
                                              kind=0x10))
            await asyncio.sleep(0.5)
            names = sorted(BAD)
            outcomes = await asyncio.gather(*(bad_connection(n.port, BAD[k][0]) for k in names))
            results.update(zip(names, outcomes, strict=True))
            report = await good
            assert report.hangup == caller.CALLER_FINISHED
            assert abs(report.frames_received - report.frames_sent) <= 3
            assert report.burst_pacing.p99_ms < 15
            reasons = ended(n.worker)
            assert reasons.pop("caller_hangup") == 1
            assert reasons == {"protocol_violation": 10, "handshake_timeout": 1,
                               "caller_silent": 1}

    with caplog.at_level(logging.INFO, logger="engine"):
        run(main())
    ends = [log_fields(r) for r in caplog.records if r.getMessage() == "call_ended"]
    by_peer = {e["peer"]: e for e in ends}
    assert len(by_peer) == len(ends) == len(BAD) + 1
    for name, (_, reason, words) in BAD.items():
        got, elapsed = results[name]
        # A silent caller heard frames until it was hung up cleanly; a violation or a missing
        # UUID is closed without a word.
        if reason == "caller_silent":
            assert got.endswith(b"\x00\x00\x00") and len(got) > 3, name
        else:
            assert got == b"", name
        assert elapsed < 4, (name, elapsed)
        matching = [e for e in ends if e["reason"] == reason
                    and (words is None or words in e.get("error", ""))]
        assert matching, (name, "; ".join(f"{e['reason']}: {e.get('error')}" for e in ends))


def test_a_caller_that_stops_reading_is_ended_with_bounded_buffering(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Our writes back up in its socket, then in the transport up to ``caller_send_buffer``;
    past that the call ends (``caller_stalled``), and the next call is served normally."""
    limits = WorkerLimits(connect_deadline=2.0, caller_send_buffer=16 * 1024)
    seen: dict[str, Any] = {}

    async def main() -> None:
        async with node(limits=limits) as n:
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.setblocking(False)
            loop = asyncio.get_running_loop()
            await loop.sock_connect(sock, ("127.0.0.1", n.port))
            frame24 = b"\x13\x03\xc0" + bytes(960)  # 24 kHz: 48 kB/s back to us
            await loop.sock_sendall(sock, b"\x01\x00\x10" + uuid.uuid4().bytes)
            started = time.monotonic()
            with pytest.raises(OSError):  # the engine resets the connection at the end
                for _ in range(3000):  # sends for up to a minute, never reads
                    await loop.sock_sendall(sock, frame24)
                    await asyncio.sleep(0.02)
            seen["after"] = time.monotonic() - started
            sock.close()
            await asyncio.sleep(0.1)
            assert ended(n.worker) == {"caller_stalled": 1}
            report = await n.call(pcm=quiet(8000, 1.0), kind=0x10)
            assert report.hangup == caller.CALLER_FINISHED

    with caplog.at_level(logging.INFO, logger="engine"):
        run(main())
    assert seen["after"] < 30


def test_a_caller_faster_than_real_time_is_read_at_a_bounded_pace() -> None:
    """A minute of audio sent as fast as the socket takes it, once the call is up: the engine
    reads a bounded amount per clock pass (TCP holds the caller back, we buffer nothing
    unbounded), the call goes on and every sample reaches the model. (While the upstream
    connects, only the newest ``prebuffer_ms`` would be kept.)"""
    async def main() -> None:
        async with node() as n:
            minute = speech(8000, 1.0) + quiet(8000, 59.0)
            frames = [b"\x10\x01\x40" + minute[i:i + 320] for i in range(0, len(minute), 320)]
            reader, writer = await asyncio.open_connection("127.0.0.1", n.port)
            writer.write(b"\x01\x00\x10" + uuid.uuid4().bytes + frames[0])
            await asyncio.sleep(0.5)
            for frame in frames[1:]:
                writer.write(frame)
            await writer.drain()
            await asyncio.sleep(1.0)
            writer.write(b"\x00\x00\x00")
            await writer.drain()
            await asyncio.wait_for(reader.read(), 5)
            writer.close()
            await n.idle()
            assert ended(n.worker) == {"caller_hangup": 1}
            (session,) = n.sim.sessions
            heard_ms = session.core.input_samples / 24
            assert 59_950 <= heard_ms <= 60_050, heard_ms

    run(main())
