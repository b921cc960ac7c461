"""Per-call CPU of the call's state machine (engine/call.py), native media core against twins.

Run: ``PYTHONPATH=. python3 benchmarks/call_core.py [--json]``. Each figure is the mean over
many calls, Python call included, of one :class:`engine.call.Call` input fed real AudioSocket
bytes or real Realtime JSON: a caller frame in (its upstream frames drained, as the adapter
would), a model audio delta in, a clock tick out. The twins run in a child process with
``VOICE_ENGINE_IMPL=python``, because ``engine.call`` binds its media modules at import.

It leaves out the kernel, the websocket framing and the event loop: ``voice-engine bench``
measures those.
"""

from __future__ import annotations

import argparse
import base64
import math
import os
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import orjson

__all__ = ["main"]

ROUNDS = 7
UUID_MESSAGE = b"\x01\x00\x10" + uuid.UUID("6f1c2b9e-5a4d-4c3b-9e8f-0a1b2c3d4e5f").bytes
DELTA_MS = 100
DELTAS_PER_BATCH = 100
"""10 s of model audio per batch, well inside the playout buffer's 60 s capacity."""


@dataclass(frozen=True, slots=True)
class Case:
    """One timed operation; ``refill`` runs untimed after every ``batch`` operations."""

    op: Callable[[], object]
    batch: int = 500
    refill: Callable[[], object] | None = None


def _tone(rate: int, ms: int, freq: float = 440.0) -> bytes:
    n = rate * ms // 1000
    t = np.arange(n) / rate
    return (np.sin(2 * math.pi * freq * t) * 8000).astype("<i2").tobytes()


def _audio(kind: int, payload: bytes) -> bytes:
    return bytes([kind]) + len(payload).to_bytes(2, "big") + payload


def _server(event_type: str, **fields: object) -> bytes:
    return orjson.dumps({"type": event_type, "event_id": "ev_1", **fields})


def _delta(audio: bytes) -> bytes:
    return _server("response.output_audio.delta", response_id="resp_1", item_id="item_1",
                   output_index=0, content_index=0, delta=base64.b64encode(audio).decode())


def _cases() -> dict[str, Case]:
    from engine import realtime
    from engine._impl import g711
    from engine.call import Call, CallSettings, State

    def active_call(fmt: str, kind: int) -> Call:
        session = realtime.SessionSettings(
            instructions="Be brief.", voice="alloy", audio_format=fmt, vad_type="server_vad",
            vad_threshold=0.5, vad_silence_ms=500, vad_prefix_padding_ms=300,
            vad_eagerness="auto", interrupt_response=True, transcription_model="whisper-1",
            max_output_tokens=4096, temperature=None,
        )
        call = Call(CallSettings(dialect=realtime.Dialect.GA, session=session,
                                 upstream_format=fmt), peer="127.0.0.1:5000")
        call.receive_data(UUID_MESSAGE)
        rate = {0x10: 8000, 0x12: 16000}[kind]
        call.receive_data(_audio(kind, bytes(rate // 50 * 2)))
        call.upstream_opened()
        if call.state is not State.ACTIVE:
            raise RuntimeError(f"the benchmark call is {call.state.value}, not active")
        call.actions()
        call.to_upstream.clear()
        call.upstream_frames.clear()
        return call

    def speaking(call: Call) -> Call:
        call.upstream_message(_server("response.created", response={
            "id": "resp_1", "object": "realtime.response", "status": "in_progress",
            "output": [],
        }))
        return call

    def caller_frame(fmt: str, kind: int) -> Case:
        call = active_call(fmt, kind)
        message = _audio(kind, _tone({0x10: 8000, 0x12: 16000}[kind], 20))
        receive, drain = call.receive_data, call.upstream_frames.clear

        def op() -> None:
            if receive(message):
                drain()

        return Case(op)

    def model_delta(fmt: str) -> Case:
        call = speaking(active_call(fmt, 0x10))
        pcm24 = _tone(24000, DELTA_MS)
        message = _delta(pcm24 if fmt == "pcm16" else g711.ulaw_encode(_tone(8000, DELTA_MS)))
        frames = DELTAS_PER_BATCH * DELTA_MS // 20

        def pop() -> None:
            for _ in range(frames):
                call.playout.pop_message()
            call.actions()

        return Case(lambda: call.upstream_message(message), DELTAS_PER_BATCH, pop)

    playing = speaking(active_call("pcm16", 0x10))
    refill = _delta(_tone(24000, 1000))
    for _ in range(5):
        playing.upstream_message(refill)
    silent = active_call("pcm16", 0x10)

    def top_up() -> None:
        for _ in range(5):
            playing.upstream_message(refill)

    return {
        "caller frame 20 ms @8k, pcm16 up": caller_frame("pcm16", 0x10),
        "caller frame 20 ms @16k, pcm16 up": caller_frame("pcm16", 0x12),
        "caller frame 20 ms @8k, pcmu up": caller_frame("pcmu", 0x10),
        "model delta 100 ms pcm16 -> 8k": model_delta("pcm16"),
        "model delta 100 ms pcmu -> 8k": model_delta("pcmu"),
        "tick, audio playing @8k": Case(playing.next_frame, 250, top_up),
        "tick, silent @8k": Case(silent.next_frame),
    }


def _time(case: Case, seconds: float) -> float:
    """Mean microseconds per operation over about ``seconds`` of timed operations."""
    op, batch, refill = case.op, case.batch, case.refill
    took, count = 0.0, 0
    while took < seconds:
        t0 = time.perf_counter()
        for _ in range(batch):
            op()
        took += time.perf_counter() - t0
        count += batch
        if refill is not None:
            refill()
    return took / count * 1e6


def _measure(seconds: float) -> dict[str, float]:
    cases = _cases()
    runs: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(ROUNDS):
        for name, case in cases.items():
            runs[name].append(_time(case, seconds))
    return {name: statistics.median(r) for name, r in runs.items()}


def _per_call_second(us: dict[str, float], fmt: str) -> float:
    """µs of work per second of an 8 kHz call with the model speaking 40 % of the time."""
    talk = 0.4
    return (
        50 * us[f"caller frame 20 ms @8k, {fmt} up"]
        + 50 * talk * us["tick, audio playing @8k"]
        + 50 * (1 - talk) * us["tick, silent @8k"]
        + talk * 1000 / DELTA_MS * us[f"model delta 100 ms {fmt} -> 8k"]
    )


def _twin(seconds: float) -> dict[str, float]:
    env = {**os.environ, "VOICE_ENGINE_IMPL": "python"}
    out = subprocess.run(
        [sys.executable, __file__, "--worker", "--seconds", str(seconds)],
        env=env, check=True, capture_output=True,
    ).stdout
    result: dict[str, float] = orjson.loads(out)
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true", help="print JSON instead of a table")
    ap.add_argument("--seconds", type=float, default=0.2, help="timing per case and round")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(orjson.dumps(_measure(args.seconds)).decode())
        return
    from engine._impl import IMPL

    if IMPL != "native":
        raise SystemExit("run without VOICE_ENGINE_IMPL=python: the twins run in a child")
    native = _measure(args.seconds)
    twin = _twin(args.seconds / 4)
    rows = [(name, native[name], twin[name]) for name in native]
    derived = [(f"per call-second, 8k, {fmt} up, model 40 %", _per_call_second(native, fmt),
                _per_call_second(twin, fmt)) for fmt in ("pcm16", "pcmu")]
    if args.json:
        keys = ("case", "native_us", "python_us")
        print(orjson.dumps({"rows": [dict(zip(keys, r, strict=True)) for r in rows],
                            "derived": [dict(zip(keys, r, strict=True)) for r in derived]})
              .decode())
        return
    print("| operation | native µs | twin µs | twin / native |")
    print("|---|---:|---:|---:|")
    for name, n_us, t_us in rows + derived:
        print(f"| {name} | {n_us:.2f} | {t_us:.1f} | {t_us / n_us:.0f}× |")
    for name, n_us, t_us in derived:
        print(f"\n{name}: native {n_us:.0f} µs ({1e6 / n_us:.0f} calls per core), "
              f"twin {t_us:.0f} µs ({1e6 / t_us:.0f} calls per core)")

if __name__ == "__main__":
    main()
