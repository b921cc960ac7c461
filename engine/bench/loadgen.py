"""The load generator: many AudioSocket calls from one process, as Asterisk would make them.

One shared clock (the engine's own :class:`~engine.pacer.Pacer`: absolute 20 ms deadlines,
calls spread over phase buckets) sends one prebuilt message per call per tick, the caller's
speech or silence, chosen by each call's :class:`Talker` (a seeded, sans-I/O talk pattern that
listens to what the engine plays back and sometimes talks over it). :class:`BenchCall`
records, per call, whether each frame that came back carried model audio and, on the few
probe calls, when each frame went out and when each came in (the kernel's receive time): the
raw material of :mod:`engine.bench.measure`. Nothing is judged here.

With churn (``churn_s``) every call hangs up after a seeded length around ``churn_s`` and a new
call takes its *slot* at once, so the same number stay up while calls keep starting and
ending; a probe slot's calls are all probe calls, so the timing figures cover the whole run.

Each call owns its socket (no asyncio transport): a probe call's must be read with
``recvmsg`` for its timestamps, which a transport's socket does not offer, and every other
call is cheapest read by the clock itself, every other tick, with no readiness wake-up and no
callback per frame. Writes go straight to the socket, one per call per tick, as Asterisk's do.
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
from typing import Any

from engine._impl import audiosocket
from engine.bench import rxstamp
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
_READ_SIZE = 65536
# A churning call lasts a uniform draw from this range times ``churn_s``.
CHURN_SPREAD = (0.5, 1.5)
# A slot whose call failed (no connection, or an end the caller did not plan) is filled again
# after this long: an engine that refuses every call is not hammered in a loop.
CHURN_RETRY_S = 1.0
# How long stop() lets calls that are still connecting finish before it cancels them.
_STOP_CONNECT_WAIT_S = 2.0


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


class BenchCall:
    """One call: the socket it owns, what it recorded, and how it ended.

    A probe call is read as soon as the socket is readable, with ``recvmsg`` and kernel
    receive timestamps, and records when each frame came and when each went out. Every other
    call is read by the generator's clock every other tick (all that has arrived, no callback
    per frame) and records per frame only whether it carried model audio.

    ``index`` numbers every call the generator made; ``slot`` is the place among the
    concurrent calls it fills (a churning call's successor takes the same slot).
    """

    def __init__(self, gen: LoadGenerator, index: int, slot: int | None = None) -> None:
        self.gen = gen
        self.index = index
        self.slot = index if slot is None else slot
        self.uuid = uuidlib.UUID(int=gen.seed_uuid + index)
        self.talker = Talker(gen.pattern, gen.seed * 1_000_003 + index)
        self.trace = CallTrace(array("d"), bytearray(), array("d"), gen.up_samples_per_frame)
        self.outcome = Outcome()
        self.probe = self.slot < gen.probe_calls
        self.placed_at = time.monotonic()
        self.ended_at: float | None = None
        self.length_s = gen.call_length()  # None: held until the generator stops
        self._hangup: asyncio.TimerHandle | None = None
        self.sock: socket.socket | None = None
        self.fd = -1
        self.unstamped = 0  # probe reads that came without a kernel timestamp
        self._parser = audiosocket.Parser(client=True)
        self._heard = 0  # audio frames received
        self._heard_at_tick = 0
        self._read_now = False  # flips every tick: a batched call is read every other one
        self._backlog: bytearray | None = None  # what the socket would not take yet
        self._silence = gen.silence_pcm
        self.captures: list[bytearray] = []  # the first responses' audio, on a few calls
        self._capture = index < gen.capture_calls
        self._capturing: bytearray | None = None

    def connected(self, sock: socket.socket) -> None:
        """The socket is connected: sends the UUID and joins the generator's clock."""
        self.sock = sock
        self.fd = sock.fileno()
        self.outcome.connected = True
        self.gen.joined(self)
        self._send(b"\x01\x00\x10" + self.uuid.bytes)
        if self.probe and self.sock is not None:
            self.gen.loop.add_reader(self.fd, self._readable)
        if self.length_s is not None and self.sock is not None:
            self._hangup = self.gen.loop.call_later(self.length_s, self.hang_up)

    # -- receiving ---------------------------------------------------------------------------

    def _readable(self) -> int:
        """A probe call's socket is readable: one ``recvmsg``, its frames stamped alike."""
        return self._read(stamped=True)

    def _read(self, stamped: bool = False) -> int:
        """One read (with the kernel's receive stamp when ``stamped``); returns the bytes
        read (0: nothing had arrived, or the call ended)."""
        sock = self.sock
        if sock is None:
            return 0
        try:
            if stamped:
                data, ancillary, _, _ = sock.recvmsg(_READ_SIZE, rxstamp.ANCILLARY_SIZE)
            else:
                data = sock.recv(_READ_SIZE)
        except (BlockingIOError, InterruptedError):
            return 0
        except OSError as exc:
            self._ended(f"connection_lost: {exc}")
            return 0
        if not data:
            self._ended("engine_closed")
            return 0
        at = None
        if stamped:
            stamp = rxstamp.stamp_ns(ancillary)
            if stamp is None:
                self.unstamped += 1
                at = time.monotonic()
            else:
                at = self.gen.clock_offset.monotonic(stamp)
        self._frames(data, at)
        return len(data)

    def read_batch(self) -> None:
        """Reads all that has arrived on a batched call (the clock calls it)."""
        # A short read took all there was: the syscall that would say so is spared.
        while self._read() == _READ_SIZE:
            pass

    def _frames(self, data: bytes, at: float | None) -> None:
        """Parses ``data``; records each audio frame (and its time ``at``, on a probe call)."""
        parser = self._parser
        parser.receive_data(data)
        trace = self.trace
        silence = self._silence
        for event in parser.events_received():
            if type(event) is audiosocket.AudioReceived:
                payload = event.payload
                audio = payload != silence
                if at is not None:
                    trace.rx_times.append(at)
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

    # -- sending -----------------------------------------------------------------------------

    def tick(self, speech: bytes, silence: bytes) -> None:
        """This tick's work: a batched call's read every other tick, then its frame out
        (speech or silence, as the talker decides)."""
        if self.sock is None:
            return
        if not self.probe:
            self._read_now = not self._read_now
            if self._read_now:
                self.read_batch()
                if self.sock is None:
                    return
        heard = self._heard
        talking = self.talker.tick(heard != self._heard_at_tick)
        self._heard_at_tick = heard
        self._send(speech if talking else silence)
        if self.probe:
            self.trace.tx_times.append(time.monotonic())

    def _send(self, message: bytes) -> None:
        """Writes ``message`` straight to the socket; what it will not take waits for it."""
        backlog = self._backlog
        if backlog is not None:
            backlog += message
            return
        sock = self.sock
        assert sock is not None
        try:
            sent = sock.send(message)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError as exc:
            self._lost(exc)
            return
        if sent < len(message):
            self._backlog = bytearray(message[sent:])
            self.gen.loop.add_writer(self.fd, self._writable)

    def _writable(self) -> None:
        backlog, sock = self._backlog, self.sock
        if backlog is None or sock is None:
            return
        try:
            sent = sock.send(backlog)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._lost(exc)
            return
        del backlog[:sent]
        if not backlog:
            self._backlog = None
            self.gen.loop.remove_writer(self.fd)

    # -- ending ------------------------------------------------------------------------------

    def _lost(self, exc: OSError) -> None:
        """A write failed: the engine has gone. What it sent before going (audio, a hangup,
        its close) is read first, since that says how the call ended."""
        read = self._readable if self.probe else self._read
        while read():
            pass
        if self.sock is not None:
            self._ended(f"connection_lost: {exc}")

    def _ended(self, how: str, error: str | None = None) -> None:
        if self._hangup is not None:
            self._hangup.cancel()
            self._hangup = None
        if self.outcome.ended_by is None:
            self.outcome.ended_by = how
            self.outcome.error = error
            self.ended_at = time.monotonic()
            self.gen.left(self)
        sock = self.sock
        if sock is not None:
            self.sock = None
            loop = self.gen.loop
            if self.probe:
                loop.remove_reader(self.fd)
            if self._backlog is not None:
                self._backlog = None
                loop.remove_writer(self.fd)
            sock.close()

    @property
    def dropped(self) -> bool:
        """The call was up and ended other than by the bench hanging up."""
        return self.outcome.connected and self.outcome.ended_by not in (None, "bench")

    @property
    def failed(self) -> bool:
        """The call ended, and not by the caller's own hang-up: no connection, or dropped."""
        return self.outcome.ended_by not in (None, "bench")

    def hang_up(self) -> None:
        """The caller ends the call the way Asterisk does: it closes the socket."""
        self._ended("bench")


@dataclass
class LoadGenerator:
    """Makes ``calls`` calls to ``host:port`` at ``ramp`` calls per second and keeps them up.

    Run :meth:`start` (returns once every call has been placed), then :meth:`stop` to hang up
    all. :attr:`calls` holds every call in order; :attr:`live` those up now. The first
    ``probe_calls`` slots hold the probe calls (see :class:`BenchCall`): the timing figures
    come from them alone. With ``churn_s`` above 0 each call hangs up after a length drawn
    around it (seeded) and the next call in its slot starts at once, until :meth:`stop`.
    """

    host: str
    port: int
    rate: int = 8000
    up_samples_per_frame: int = 480
    pattern: TalkPattern = field(default_factory=TalkPattern)
    tone: CallerTone = field(default_factory=CallerTone)
    seed: int = 1
    capture_calls: int = 20
    probe_calls: int = 20
    churn_s: float = 0.0
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
        self.clock_offset = rxstamp.ClockOffset.measure()
        self._address: tuple[int, tuple[Any, ...]] | None = None
        self._stamping: socket.socket | None = None
        self._connecting: set[asyncio.Task[None]] = set()
        self._churn_rng = random.Random(f"churn {self.seed}")
        self._churning = False
        self._refills: dict[int, asyncio.TimerHandle] = {}  # slot: its refill

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The loop :meth:`start` runs on."""
        assert self._loop is not None, "the generator has not started"
        return self._loop

    async def start(self, calls: int, ramp: float) -> None:
        """Places ``calls`` calls, ``ramp`` per second, with the clock running."""
        loop = self._loop = asyncio.get_running_loop()
        if self._stamping is None and self.probe_calls:
            self._stamping = rxstamp.hold_stamping()
            await asyncio.sleep(0.01)  # the kernel turns stamping on a moment later
        if self.pacer is None:
            self.pacer = Pacer(loop.time(), PERIOD, SUBTICKS, _MAX_CATCH_UP)
        self._churning = self.churn_s > 0
        begin = loop.time()
        for i in range(calls):
            delay = begin + i / ramp - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            self._place(i)
        if self._connecting:
            await asyncio.wait(set(self._connecting))

    def call_length(self) -> float | None:
        """The next call's length with churn (the seeded draw), None without."""
        if self.churn_s <= 0:
            return None
        return self._churn_rng.uniform(*CHURN_SPREAD) * self.churn_s

    def _place(self, slot: int) -> None:
        """A new call in ``slot``: it connects in a task of its own."""
        call = BenchCall(self, len(self.calls), slot)
        self.calls.append(call)
        task = self.loop.create_task(self._connect(call))
        self._connecting.add(task)
        task.add_done_callback(self._connecting.discard)

    def _vacated(self, call: BenchCall) -> None:
        """``call`` has ended: with churn its slot gets the next call (after a failure, a
        moment later)."""
        if not self._churning:
            return
        if not call.failed:
            self._place(call.slot)
        elif call.slot not in self._refills:
            self._refills[call.slot] = self.loop.call_later(CHURN_RETRY_S, self._refill,
                                                            call.slot)

    def _refill(self, slot: int) -> None:
        del self._refills[slot]
        if self._churning:
            self._place(slot)

    async def _connect(self, call: BenchCall) -> None:
        sock: socket.socket | None = None
        try:
            family, address = await self._resolve()
            sock = socket.socket(family, socket.SOCK_STREAM)
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if call.probe:
                rxstamp.enable(sock)
            await asyncio.wait_for(self.loop.sock_connect(sock, address), 10.0)
        except (OSError, TimeoutError) as exc:
            if sock is not None:
                sock.close()
            self.failed += 1
            call.outcome.ended_by = "connect_failed"
            call.outcome.error = getattr(exc, "strerror", None) or type(exc).__name__
            call.ended_at = time.monotonic()
            self._vacated(call)
            return
        except BaseException:
            if sock is not None:
                sock.close()
            raise
        call.connected(sock)

    async def _resolve(self) -> tuple[int, tuple[Any, ...]]:
        """The engine's address family and address, looked up once."""
        if self._address is None:
            infos = await self.loop.getaddrinfo(self.host, self.port, type=socket.SOCK_STREAM)
            family, _, _, _, address = infos[0]
            self._address = (family, address)
        return self._address

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
        self._vacated(call)

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
        """How the generator's own clock kept up (a late generator skews what it measures),
        and how many probe reads had no kernel timestamp (those were stamped on waking)."""
        unstamped = sum(call.unstamped for call in self.calls)
        p = self.pacer
        if p is None:
            return {"ticks": 0, "late_ticks": 0, "resyncs": 0, "max_late_ms": 0.0,
                    "unstamped_reads": unstamped}
        return {"ticks": p.ticks, "late_ticks": p.late_wakeups, "resyncs": p.resyncs,
                "max_late_ms": round(p.max_lateness * 1000, 3), "unstamped_reads": unstamped}

    async def stop(self) -> None:
        """Stops the churn and the clock, and hangs up every call still up."""
        self._churning = False
        for handle in self._refills.values():
            handle.cancel()
        self._refills.clear()
        if self._connecting:
            # A churning slot's next call, placed a moment ago, connects and is hung up like
            # the others rather than left half made.
            await asyncio.wait(set(self._connecting), timeout=_STOP_CONNECT_WAIT_S)
        for task in list(self._connecting):
            task.cancel()
        if self._connecting:
            await asyncio.wait(set(self._connecting))
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for call in list(self.live):
            call.hang_up()
        if self._stamping is not None:
            self._stamping.close()
            self._stamping = None
        await asyncio.sleep(0.05)
