"""An AudioSocket caller that acts like Asterisk: for tests, ``voice-engine dial`` and load.

:class:`CallerSession` is the sans-I/O core: it builds what the caller sends (the UUID, audio
frames, DTMF) and judges what the engine sends back (with the client-mode parser), with time
passed in. :class:`CallerProtocol` is the thin asyncio adapter: one ``loop.call_at`` timer on
absolute deadlines (``t0 + k * 20 ms``, so it never drifts) sends one frame per tick, the way
Asterisk sends continuously for the whole call. :func:`call` runs one call and returns its
:class:`CallReport`.

A caller hangs up the way Asterisk does: it closes the socket (Asterisk never sends 00 00 00).
"""

from __future__ import annotations

import asyncio
import socket
import uuid as uuidlib
from array import array
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import cast

from engine._impl import audiosocket
from engine.errors import BadOutgoingAudio, ConfigError
from engine.stats import Pacing, pacing

__all__ = [
    "CALLER_FINISHED",
    "CONNECT_FAILED",
    "ENGINE_CLOSED",
    "ENGINE_HANGUP",
    "PROTOCOL_ERROR",
    "CallReport",
    "CallerProtocol",
    "CallerSession",
    "call",
]

ENGINE_HANGUP = "engine_hangup"
ENGINE_CLOSED = "engine_closed"
CALLER_FINISHED = "caller_finished"
CONNECT_FAILED = "connect_failed"
PROTOCOL_ERROR = "protocol_error"

# Asterisk sends and reads frames continuously; a late loop catches up this many frames at
# most, then moves its deadlines on rather than bursting (a burst is what we test engines for).
_MAX_CATCH_UP = 5


@dataclass(frozen=True, slots=True)
class CallReport:
    """What happened on one call, from the caller's side.

    ``hangup`` is how the call ended: ``engine_hangup`` (00 00 00 received), ``engine_closed``
    (EOF without a hangup message), ``caller_finished``, ``connect_failed: …`` or
    ``protocol_error: …``. ``pacing`` covers every interval between consecutive audio
    arrivals; ``burst_pacing`` only those inside a burst (a run of non-silent frames), where
    the engine's pacing is judged. ``received_pcm`` holds the audio of our kind, capped.
    """

    uuid: uuidlib.UUID
    kind: int
    rate: int
    frames_sent: int
    frames_received: int
    bytes_received: int
    wrong_kind_frames: int
    odd_size_frames: int
    hangup: str
    duration: float
    pacing: Pacing
    burst_pacing: Pacing
    bursts: int
    dtmf_sent: int = 0
    frames_skipped: int = 0
    received_pcm: bytes = field(default=b"", repr=False)

    @property
    def ok(self) -> bool:
        """True when the call ran: it connected and the engine kept to the protocol."""
        return not self.hangup.startswith((CONNECT_FAILED, PROTOCOL_ERROR))

    def as_dict(self) -> dict[str, object]:
        """Plain values for JSON (without the received audio)."""
        return {
            "uuid": str(self.uuid), "kind": self.kind, "rate": self.rate,
            "frames_sent": self.frames_sent, "frames_received": self.frames_received,
            "bytes_received": self.bytes_received, "wrong_kind_frames": self.wrong_kind_frames,
            "odd_size_frames": self.odd_size_frames, "hangup": self.hangup,
            "duration": round(self.duration, 3), "pacing": self.pacing.as_dict(),
            "burst_pacing": self.burst_pacing.as_dict(), "bursts": self.bursts,
            "dtmf_sent": self.dtmf_sent, "frames_skipped": self.frames_skipped,
            "ok": self.ok,
        }


class CallerSession:
    """One call as Asterisk makes it, sans I/O: bytes to send out, engine bytes in.

    Send ``opening()`` first, then a ``frame()`` every 20 ms; feed what arrives to
    ``receive()`` and the end of the stream to ``receive_eof()``; once ``ended`` is set, stop
    and close. ``report()`` summarises the call at any time.
    """

    def __init__(
        self, call_id: uuidlib.UUID, kind: int, *, frame_ms: int = 20,
        max_record_seconds: float = 600.0,
    ) -> None:
        if kind not in audiosocket.AUDIO_RATES:
            raise ConfigError(f"0x{kind:02x} is not an AudioSocket audio kind")
        self.uuid = call_id
        self.kind = kind
        self.rate = audiosocket.AUDIO_RATES[kind]
        self.frame_ms = frame_ms
        self.period = frame_ms / 1000.0
        samples, rest = divmod(self.rate * frame_ms, 1000)
        if frame_ms <= 0 or rest:
            raise ConfigError(f"{frame_ms} ms is not a whole number of samples at {self.rate} Hz")
        self.frame_bytes = 2 * samples
        self._silence = bytes(self.frame_bytes)
        self._max_frames = max(1, int(max_record_seconds * 1000 / frame_ms))
        self._max_pcm = self._max_frames * self.frame_bytes
        self._parser = audiosocket.Parser(client=True)
        self._arrivals = array("d")
        self._silent = bytearray()
        self._pcm = bytearray()
        self.frames_sent = self.frames_received = self.bytes_received = 0
        self.wrong_kind_frames = self.odd_size_frames = self.dtmf_sent = 0
        self.frames_skipped = 0
        self.started: float | None = None
        self.ended: str | None = None
        self.ended_at: float | None = None

    def opening(self, now: float = 0.0) -> bytes:
        """The UUID message, the first thing Asterisk sends; ``now`` starts the call's clock."""
        self.started = now
        return b"\x01\x00\x10" + self.uuid.bytes

    def frame(self, pcm: bytes | bytearray | memoryview) -> bytes:
        """One audio message of exactly one frame of ``pcm`` (int16 LE at the call's rate).

        Raises:
            BadOutgoingAudio: ``pcm`` is not one frame long.
        """
        if len(pcm) != self.frame_bytes:
            raise BadOutgoingAudio(self.kind, len(pcm), f"a frame is {self.frame_bytes} bytes")
        self.frames_sent += 1
        return audiosocket.encode_audio(self.kind, pcm)

    def silence_frame(self) -> bytes:
        """One frame of silence, as Asterisk sends while the caller says nothing."""
        return self.frame(self._silence)

    def dtmf(self, digit: str) -> bytes:
        """One DTMF message, as Asterisk sends when a digit ends.

        Raises:
            ConfigError: ``digit`` is not one of 0-9 * # A-D.
        """
        if len(digit) != 1 or digit not in audiosocket.DTMF_DIGITS:
            raise ConfigError(f"DTMF digit must be one of {audiosocket.DTMF_DIGITS}, not {digit!r}")
        self.dtmf_sent += 1
        return b"\x03\x00\x01" + digit.encode("ascii")

    def skipped(self) -> None:
        """Counts a frame that was due but not sent (the engine was not reading)."""
        self.frames_skipped += 1

    def receive(self, data: bytes, now: float) -> None:
        """Parses engine bytes that arrived at ``now`` and records each audio frame."""
        if self.ended is not None:
            return
        self._parser.receive_data(data)
        for event in self._parser.events_received():
            if type(event) is audiosocket.AudioReceived:
                self._audio(event.kind, event.payload, now)
            elif type(event) is audiosocket.HangupReceived:
                self._end(ENGINE_HANGUP, now)
            elif type(event) is audiosocket.ProtocolViolation:
                self._end(f"{PROTOCOL_ERROR}: {event.error}", now)

    def receive_eof(self, now: float) -> None:
        """The engine closed the connection (or it was lost)."""
        if self.ended is not None:
            return
        self._parser.receive_eof()
        for event in self._parser.events_received():
            if type(event) is audiosocket.ProtocolViolation:
                self._end(f"{PROTOCOL_ERROR}: {event.error}", now)
        self._end(ENGINE_CLOSED, now)

    def finish(self, now: float) -> None:
        """The caller hangs up (closes the socket) after its audio: the normal end."""
        self._end(CALLER_FINISHED, now)

    def fail(self, reason: str, now: float) -> None:
        """The call could not be made: ``reason`` says why (never a secret)."""
        self._end(f"{CONNECT_FAILED}: {reason}", now)

    def _end(self, how: str, now: float) -> None:
        if self.ended is None:
            self.ended = how
            self.ended_at = now

    def _audio(self, kind: int, payload: bytes, now: float) -> None:
        self.frames_received += 1
        self.bytes_received += len(payload)
        if len(payload) != self.frame_bytes:
            self.odd_size_frames += 1
        if kind != self.kind:
            # Another rate's samples would garble the recording: counted, not kept.
            self.wrong_kind_frames += 1
        elif len(self._pcm) < self._max_pcm:
            self._pcm += payload[: self._max_pcm - len(self._pcm)]
        if len(self._arrivals) < self._max_frames:
            self._arrivals.append(now)
            silent = payload == self._silence or not payload.strip(b"\x00")
            self._silent.append(silent)

    def _intervals(self) -> tuple[list[float], list[float], int]:
        """All arrival intervals, those inside bursts, and the number of bursts."""
        times, silent = self._arrivals, self._silent
        every = [b - a for a, b in zip(times, times[1:], strict=False)]
        inside = [every[i - 1] for i in range(1, len(times)) if not silent[i] and not silent[i - 1]]
        bursts = sum(1 for i in range(len(times)) if not silent[i] and (i == 0 or silent[i - 1]))
        return every, inside, bursts

    def report(self) -> CallReport:
        """The call so far (or in full, once ``ended`` is set)."""
        every, inside, bursts = self._intervals()
        start = self.started if self.started is not None else 0.0
        end = self.ended_at if self.ended_at is not None else start
        return CallReport(
            uuid=self.uuid, kind=self.kind, rate=self.rate, frames_sent=self.frames_sent,
            frames_received=self.frames_received, bytes_received=self.bytes_received,
            wrong_kind_frames=self.wrong_kind_frames, odd_size_frames=self.odd_size_frames,
            hangup=self.ended or "in progress", duration=max(0.0, end - start),
            pacing=pacing(every, self.period), burst_pacing=pacing(inside, self.period),
            bursts=bursts, dtmf_sent=self.dtmf_sent, frames_skipped=self.frames_skipped,
            received_pcm=bytes(self._pcm),
        )


class CallerProtocol(asyncio.Protocol):
    """Drives a :class:`CallerSession` over one TCP connection.

    ``pcm`` is sent as frames on the clock (or all at once unless ``realtime``), then
    ``tail_frames`` of silence, then the socket is closed; the call stops early when the
    engine hangs up, closes or breaks the protocol. ``done`` resolves when the connection is
    gone.
    """

    def __init__(
        self, session: CallerSession, loop: asyncio.AbstractEventLoop, pcm: bytes, *,
        realtime: bool = True, tail_frames: int = 0, dtmf: Sequence[tuple[float, str]] = (),
        preamble: bytes = b"",
    ) -> None:
        self.session = session
        self._preamble = preamble
        self.loop = loop
        self.done: asyncio.Future[None] = loop.create_future()
        self._pcm = memoryview(pcm)
        self._frames = len(pcm) // session.frame_bytes
        self._total = self._frames + tail_frames
        self._realtime = realtime
        # Each digit goes out before the first frame due at or after its time.
        self._dtmf = sorted((max(0, round(at / session.period)), d) for at, d in dtmf)
        self._k = 0
        self._t0 = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._transport: asyncio.Transport | None = None
        self._paused = False
        self.error: Exception | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self._transport = cast(asyncio.Transport, transport)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._guarded(self._start)

    def _start(self) -> None:
        assert self._transport is not None
        now = self.loop.time()
        self._transport.write(self._preamble + self.session.opening(now))
        if not self._realtime:
            self._transport.write(b"".join(self._message(k) for k in range(self._frames)))
            self._k = self._frames
        self._t0 = now - self._k * self.session.period
        self._tick()

    def _guarded(self, step: Callable[[], None]) -> None:
        """Runs ``step``; a bug in it aborts the call and reaches ``call()``'s caller instead
        of leaving ``done`` pending for ever."""
        try:
            step()
        except Exception as exc:
            self.error = exc
            self._cancel()
            if self._transport is not None:
                self._transport.abort()

    def _message(self, k: int) -> bytes:
        out = b""
        while self._dtmf and self._dtmf[0][0] <= k:
            out += self.session.dtmf(self._dtmf.pop(0)[1])
        if k < self._frames:
            size = self.session.frame_bytes
            return out + self.session.frame(self._pcm[k * size : (k + 1) * size])
        return out + self.session.silence_frame()

    def _tick(self) -> None:
        self._timer = None
        transport = self._transport
        if transport is None or self.session.ended is not None:
            return
        now = self.loop.time()
        period = self.session.period
        sent = 0
        while self._k < self._total and self._t0 + self._k * period <= now:
            if sent == _MAX_CATCH_UP:
                # Too late: move the clock on instead of bursting.
                self._t0 = now - self._k * period
                break
            if self._paused:
                self.session.skipped()
            else:
                transport.write(self._message(self._k))
            self._k += 1
            sent += 1
        if self._k >= self._total:
            self.session.finish(now)
            transport.close()
            return
        self._timer = self.loop.call_at(self._t0 + self._k * period, self._guarded, self._tick)

    def data_received(self, data: bytes) -> None:
        self.session.receive(data, self.loop.time())
        if self.session.ended is not None:
            self._stop()

    def eof_received(self) -> bool | None:
        self.session.receive_eof(self.loop.time())
        self._stop()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.session.receive_eof(self.loop.time())
        self._cancel()
        self._transport = None
        if not self.done.done():
            self.done.set_result(None)

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False

    def _cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _stop(self) -> None:
        self._cancel()
        if self._transport is not None:
            self._transport.close()


def _fit(pcm: bytes, frame_bytes: int, seconds: float | None, rate: int) -> bytes:
    """``pcm`` cut to whole frames: trimmed or padded with silence to ``seconds`` if given."""
    if seconds is not None:
        want = int(round(seconds * rate)) * 2
        pcm = pcm[:want] + bytes(max(0, want - len(pcm)))
    return pcm[: len(pcm) - len(pcm) % frame_bytes]


async def call(
    host: str, port: int, *, pcm: bytes, kind: int, uuid: uuidlib.UUID | None = None,
    realtime: bool = True, seconds: float | None = None,
    dtmf: Iterable[tuple[float, str]] = (), tail_seconds: float = 0.0,
    loop: asyncio.AbstractEventLoop | None = None, max_record_seconds: float = 600.0,
    local_addr: tuple[str, int] | None = None, preamble: bytes = b"",
) -> CallReport:
    """Makes one call to an AudioSocket server and returns what happened.

    ``pcm`` (int16 LE at ``kind``'s rate) is streamed as 20 ms frames (a last partial frame
    is dropped; ``seconds`` trims or pads with silence), then ``tail_seconds`` of silence while
    the engine's answer is recorded. A refused connection is a report, not an exception.
    ``local_addr`` binds the caller's end (another loopback address, say); ``preamble`` goes
    out before the UUID, in the same write (a PROXY v2 header, as HAProxy would send).

    Raises:
        ConfigError: ``kind`` is not an audio kind or a DTMF digit is invalid.
    """
    loop = loop or asyncio.get_running_loop()
    session = CallerSession(uuid or uuidlib.uuid4(), kind, max_record_seconds=max_record_seconds)
    digits = list(dtmf)
    for _, digit in digits:
        if len(digit) != 1 or digit not in audiosocket.DTMF_DIGITS:
            raise ConfigError(f"DTMF digit must be one of {audiosocket.DTMF_DIGITS}, not {digit!r}")
    body = _fit(pcm, session.frame_bytes, seconds, session.rate)
    tail = max(0, round(tail_seconds / session.period))
    started = loop.time()
    try:
        _, protocol = await loop.create_connection(
            lambda: CallerProtocol(
                session, loop, body, realtime=realtime, tail_frames=tail, dtmf=digits,
                preamble=preamble,
            ),
            host, port, local_addr=local_addr,
        )
    except OSError as exc:
        session.opening(started)
        session.fail(exc.strerror or str(exc), loop.time())
        return session.report()
    await protocol.done
    if protocol.error is not None:
        raise protocol.error
    return session.report()
