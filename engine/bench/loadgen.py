"""The load generator: many AudioSocket calls from one process, as Asterisk would make them.

One shared clock (the engine's own :class:`~engine.pacer.Pacer`: absolute 20 ms deadlines,
calls spread over phase buckets) sends one prebuilt message per call per tick, the caller's
speech or silence, chosen by each call's :class:`Talker` (a seeded, sans-I/O talk pattern that
listens to what the engine plays back and sometimes talks over it). :class:`BenchCall`
records, per call, when each frame went out and when each frame came back and whether it
carried model audio: the raw material of :mod:`engine.bench.measure`. Nothing is judged here.
"""

from __future__ import annotations

import asyncio
import math
import random
import socket
import time
import uuid as uuidlib
from array import array
from dataclasses import dataclass, field
from typing import cast

from engine._impl import audiosocket
from engine.bench.measure import CallTrace
from engine.errors import ConfigError
from engine.pacer import Pacer

__all__ = ["BenchCall", "CallerTone", "LoadGenerator", "TalkPattern", "Talker"]

FRAME_MS = 20
PERIOD = FRAME_MS / 1000
# A late loop sends what is due up to this many frames, then moves its deadlines on.
_MAX_CATCH_UP = 5
# Calls are spread over this many phases of the 20 ms tick, as Asterisk's channels are: the
# generator writes a fifth of them every 4 ms instead of all at once, which keeps its own
# bursts (and the delay they add to what it timestamps) short.
SUBTICKS = 5
# Model audio is over once this many ticks pass without any.
_QUIET_TICKS = 15


@dataclass(frozen=True, slots=True)
class TalkPattern:
    """How the simulated callers talk: turn lengths, pauses and barge-ins, in seconds.

    A caller speaks for ``speak_s``, listens until the model's answer has ended, waits
    ``pause_s`` and speaks again. On a ``barge_in`` share of turns it talks over the model
    once it has heard ``barge_after_s`` of the answer (for ``barge_speak_s``). With no answer
    within ``no_answer_s`` it speaks again (and that turn is counted).
    """

    speak_s: tuple[float, float] = (1.0, 2.0)
    pause_s: tuple[float, float] = (1.5, 3.5)
    barge_in: float = 0.25
    barge_after_s: tuple[float, float] = (0.4, 1.2)
    barge_speak_s: tuple[float, float] = (0.6, 1.0)
    no_answer_s: float = 6.0
    first_pause_s: tuple[float, float] = (0.0, 2.0)

    def __post_init__(self) -> None:
        for name in ("speak_s", "pause_s", "barge_after_s", "barge_speak_s", "first_pause_s"):
            low, high = getattr(self, name)
            if not 0 <= low <= high:
                raise ConfigError(f"talk pattern: {name} must be a range 0 <= low <= high")
        if not 0 <= self.barge_in <= 1:
            raise ConfigError("talk pattern: barge_in is a share between 0 and 1")


class Talker:
    """One caller's turn-taking, tick by tick: :meth:`tick` says whether to send speech."""

    __slots__ = ("_barge", "_heard", "_left", "_quiet", "_rng", "_state", "_waited",
                 "barge_ins", "no_answers", "pattern", "turns")

    SPEAK, LISTEN, PAUSE = 0, 1, 2

    def __init__(self, pattern: TalkPattern, seed: int) -> None:
        self.pattern = pattern
        self._rng = random.Random(seed)
        self._state = self.PAUSE
        self._left = self._ticks(pattern.first_pause_s)
        self._heard = self._quiet = self._waited = 0
        self._barge: int | None = None
        self.turns = self.barge_ins = self.no_answers = 0

    def _ticks(self, span: tuple[float, float]) -> int:
        return max(1, round(self._rng.uniform(*span) / PERIOD))

    def _speak(self, span: tuple[float, float]) -> None:
        self._state, self._left = self.SPEAK, self._ticks(span)
        self.turns += 1

    def tick(self, model_audio: bool) -> bool:
        """Advances one tick and says whether the caller speaks in it.

        ``model_audio``: model audio arrived since the last tick. A listening caller reacts
        in the same tick (a barge-in or a retry starts at once); a turn or a pause that runs
        out gives way from the next tick.
        """
        p = self.pattern
        if self._state == self.LISTEN:
            self._waited += 1
            if model_audio:
                self._heard += 1
                self._quiet = 0
            elif self._heard:
                self._quiet += 1
            if self._barge is not None and self._heard >= self._barge:
                self.barge_ins += 1
                self._speak(p.barge_speak_s)
            elif self._heard and self._quiet >= _QUIET_TICKS:
                self._state, self._left = self.PAUSE, self._ticks(p.pause_s)
            elif not self._heard and self._waited * PERIOD >= p.no_answer_s:
                self.no_answers += 1
                self._speak(p.speak_s)
            return self._state == self.SPEAK
        speaking = self._state == self.SPEAK
        self._left -= 1
        if self._left <= 0:
            if self._state == self.PAUSE:
                self._speak(p.speak_s)
            else:
                self._state = self.LISTEN
                self._heard = self._quiet = self._waited = 0
                barge = self._rng.random() < p.barge_in
                self._barge = self._ticks(p.barge_after_s) if barge else None
        return speaking


@dataclass(frozen=True, slots=True)
class CallerTone:
    """The caller's 'speech': a sine whose 20 ms frame repeats exactly (so it is prebuilt)."""

    hz: float = 400.0
    level_dbfs: float = -12.0

    def frame_pcm(self, rate: int) -> bytes:
        """One 20 ms frame of the tone at ``rate`` (int16 LE).

        Raises:
            ConfigError: the tone does not fit a whole number of cycles in a frame.
        """
        cycles = self.hz * PERIOD
        if abs(cycles - round(cycles)) > 1e-9 or not 0 < self.hz < rate / 2:
            raise ConfigError(f"caller tone {self.hz} Hz must repeat every 20 ms below Nyquist")
        n = rate * FRAME_MS // 1000
        amp = 32767 * 10 ** (self.level_dbfs / 20)
        return array("h", (round(amp * math.sin(2 * math.pi * self.hz * i / rate))
                           for i in range(n))).tobytes()


@dataclass(slots=True)
class Outcome:
    """How one call went from the generator's side."""

    connected: bool = False
    ended_by: str | None = None  # None while up; "bench", "engine_hangup", "engine_closed", …
    error: str | None = None


class BenchCall(asyncio.Protocol):
    """One call: the connection's adapter and what it recorded."""

    def __init__(self, gen: LoadGenerator, index: int) -> None:
        self.gen = gen
        self.uuid = uuidlib.UUID(int=gen.seed_uuid + index)
        self.talker = Talker(gen.pattern, gen.seed * 1_000_003 + index)
        self.trace = CallTrace(array("d"), bytearray(), array("d"), gen.up_samples_per_frame)
        self.outcome = Outcome()
        self.transport: asyncio.Transport | None = None
        self._parser = audiosocket.Parser(client=True)
        self._heard = 0  # audio frames received
        self._heard_at_tick = 0
        self._silence = gen.silence_pcm
        self.captures: list[bytearray] = []  # the first responses' audio, on a few calls
        self._capture = index < gen.capture_calls
        self._capturing: bytearray | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.outcome.connected = True
        transport.write(b"\x01\x00\x10" + self.uuid.bytes)
        self.gen.joined(self)

    def data_received(self, data: bytes) -> None:
        now = time.monotonic()
        parser = self._parser
        parser.receive_data(data)
        trace = self.trace
        for event in parser.events_received():
            if type(event) is audiosocket.AudioReceived:
                payload = event.payload
                audio = payload != self._silence
                trace.rx_times.append(now)
                trace.rx_audio.append(audio)
                if audio:
                    self._heard += 1
                    if self._capture:
                        self._keep(payload)
                elif self._capturing is not None:
                    self._capturing = None
            elif type(event) is audiosocket.HangupReceived:
                self._ended("engine_hangup")
            elif type(event) is audiosocket.ProtocolViolation:
                self._ended("protocol_error", str(event.error))

    def _keep(self, payload: bytes) -> None:
        if self._capturing is None:
            if len(self.captures) >= 3:
                self._capture = False
                return
            self._capturing = bytearray()
            self.captures.append(self._capturing)
        self._capturing += payload

    def eof_received(self) -> bool:
        self._ended("engine_closed")
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._ended("engine_closed" if exc is None else f"connection_lost: {exc}")

    def _ended(self, how: str, error: str | None = None) -> None:
        if self.outcome.ended_by is None:
            self.outcome.ended_by = how
            self.outcome.error = error
            self.gen.left(self)
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.close()

    @property
    def dropped(self) -> bool:
        """The call was up and ended other than by the bench hanging up."""
        return self.outcome.connected and self.outcome.ended_by not in (None, "bench")

    def hang_up(self) -> None:
        """The caller ends the call the way Asterisk does: it closes the socket."""
        self._ended("bench")

    def tick(self, speech: bytes, silence: bytes) -> None:
        """Sends this tick's frame: speech or silence, as the talker decides."""
        heard = self._heard
        talking = self.talker.tick(heard != self._heard_at_tick)
        self._heard_at_tick = heard
        transport = self.transport
        if transport is not None:
            transport.write(speech if talking else silence)
            self.trace.tx_times.append(time.monotonic())


@dataclass
class LoadGenerator:
    """Makes ``calls`` calls to ``host:port`` at ``ramp`` calls per second and keeps them up.

    Run :meth:`start` (returns once every call has been placed), then :meth:`stop` to hang up
    all. :attr:`calls` holds every call in order; :attr:`live` those up now.
    """

    host: str
    port: int
    rate: int = 8000
    up_samples_per_frame: int = 480
    pattern: TalkPattern = field(default_factory=TalkPattern)
    tone: CallerTone = field(default_factory=CallerTone)
    seed: int = 1
    capture_calls: int = 20
    calls: list[BenchCall] = field(default_factory=list)
    live: set[BenchCall] = field(default_factory=set)
    failed: int = 0

    def __post_init__(self) -> None:
        kind = audiosocket.kind_for_rate(self.rate)
        self.seed_uuid = random.Random(self.seed).getrandbits(96) << 32
        self.silence_pcm = bytes(2 * self.rate * FRAME_MS // 1000)
        self._speech = audiosocket.encode_audio(kind, self.tone.frame_pcm(self.rate))
        self._silence_msg = audiosocket.encode_audio(kind, self.silence_pcm)
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.pacer: Pacer | None = None
        self._connecting: set[asyncio.Task[None]] = set()

    async def start(self, calls: int, ramp: float) -> None:
        """Places ``calls`` calls, ``ramp`` per second, with the clock running."""
        loop = self._loop = asyncio.get_running_loop()
        if self.pacer is None:
            self.pacer = Pacer(loop.time(), PERIOD, SUBTICKS, _MAX_CATCH_UP)
        begin = loop.time()
        for i in range(calls):
            delay = begin + i / ramp - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            call = BenchCall(self, len(self.calls))
            self.calls.append(call)
            task = loop.create_task(self._connect(call))
            self._connecting.add(task)
            task.add_done_callback(self._connecting.discard)
        if self._connecting:
            await asyncio.wait(set(self._connecting))

    async def _connect(self, call: BenchCall) -> None:
        loop = asyncio.get_running_loop()
        try:
            await asyncio.wait_for(
                loop.create_connection(lambda: call, self.host, self.port), 10.0
            )
        except (OSError, TimeoutError) as exc:
            self.failed += 1
            call.outcome.ended_by = "connect_failed"
            call.outcome.error = getattr(exc, "strerror", None) or type(exc).__name__

    def joined(self, call: BenchCall) -> None:
        assert self.pacer is not None and self._loop is not None
        self.live.add(call)
        self.pacer.add(call, self._loop.time())
        if self._timer is None:
            self._schedule()

    def left(self, call: BenchCall) -> None:
        self.live.discard(call)
        if self.pacer is not None:
            self.pacer.remove(call)

    def _schedule(self) -> None:
        assert self._loop is not None and self.pacer is not None
        self._timer = self._loop.call_at(self.pacer.next_deadline(), self._tick)

    def _tick(self) -> None:
        loop = self._loop
        assert loop is not None and self.pacer is not None
        speech, silence = self._speech, self._silence_msg
        for members, frames in self.pacer.advance(loop.time()):
            for call in members:
                for _ in range(frames):
                    call.tick(speech, silence)
        if self.live:
            self._schedule()
        else:
            self._timer = None

    def clock_stats(self) -> dict[str, float]:
        """How the generator's own clock kept up (a late generator skews what it measures)."""
        p = self.pacer
        if p is None:
            return {"ticks": 0, "late_ticks": 0, "resyncs": 0, "max_late_ms": 0.0}
        return {"ticks": p.ticks, "late_ticks": p.late_wakeups, "resyncs": p.resyncs,
                "max_late_ms": round(p.max_lateness * 1000, 3)}

    async def stop(self) -> None:
        """Stops the clock and hangs up every call still up."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for task in list(self._connecting):
            task.cancel()
        for call in list(self.live):
            call.hang_up()
        await asyncio.sleep(0.05)
