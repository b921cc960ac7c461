"""Per-frame cost of each media-core operation on the hot path, native against its twin.

Run: ``python benchmarks/media_core.py [--json]``. Each figure is the mean over many calls,
including the Python call itself, of what one call does every 20 ms. Native and twin run
interleaved in the same process, so their ratio holds even on a busy machine.
"""

from __future__ import annotations

import argparse
import math
import platform
import statistics
import time
from collections.abc import Callable
from types import ModuleType

import numpy as np
import orjson

from engine._impl import load

__all__ = ["main"]

ROUNDS = 7


def _tone(rate: int, ms: int) -> bytes:
    n = rate * ms // 1000
    t = np.arange(n) / rate
    return (np.sin(2 * math.pi * 440 * t) * 16000).astype("<i2").tobytes()


def _cases(impl: str) -> dict[str, Callable[[], object]]:
    m: dict[str, ModuleType] = {
        name: load(impl, name)
        for name in ("audiosocket", "g711", "playout", "resample", "wsframe")
    }
    a = m["audiosocket"]
    frame8 = _tone(8000, 20)
    message = a.encode_audio(a.KIND_AUDIO_8K, frame8)
    parser = a.Parser()
    parser.receive_data(b"\x01\x00\x10" + bytes(16))  # the UUID message comes first
    parser.events_received()

    def parse() -> object:
        parser.receive_data(message)
        return parser.events_received()

    buf = m["playout"].PlayoutBuffer(8000, kind=a.KIND_AUDIO_8K, start_frames=1)

    def playout_push_pop() -> object:
        buf.push(frame8, "item")
        return buf.pop_message()

    g = m["g711"]
    ulaw = g.ulaw_encode(frame8)
    up = m["resample"].Resampler(8000, 24000)
    down = m["resample"].Resampler(24000, 8000)
    up16 = m["resample"].Resampler(16000, 24000)
    down16 = m["resample"].Resampler(24000, 16000)
    frame16, frame24 = _tone(16000, 20), _tone(24000, 20)
    frames = m["wsframe"].FrameBuilder()
    return {
        "audiosocket parse 20 ms @8k": parse,
        "audiosocket encode 20 ms @8k": lambda: a.encode_audio(a.KIND_AUDIO_8K, frame8),
        "playout push+pop_message 20 ms @8k": playout_push_pop,
        "g711 ulaw_encode 20 ms": lambda: g.ulaw_encode(frame8),
        "g711 ulaw_decode 20 ms": lambda: g.ulaw_decode(ulaw),
        "resample 8k->24k 20 ms": lambda: up.process(frame8),
        "resample 24k->8k 20 ms": lambda: down.process(frame24),
        "resample 16k->24k 20 ms": lambda: up16.process(frame16),
        "resample 24k->16k 20 ms": lambda: down16.process(frame24),
        "wsframe 40 ms pcm16 append frame": lambda: frames.frame(APPEND_EVENT),
    }


# What the upstream sends every 40 ms for pcm16: 1,920 bytes of audio as base64 in JSON.
APPEND_EVENT = b'{"type":"input_audio_buffer.append","audio":"' + b"A" * 2560 + b'"}'


def _websockets_send() -> Callable[[], object]:
    """websockets' own path for the same frame: ``send_text`` then ``data_to_send``."""
    from websockets.client import ClientProtocol
    from websockets.protocol import State
    from websockets.uri import parse_uri

    protocol = ClientProtocol(parse_uri("ws://localhost/"))
    protocol.state = State.OPEN

    def send() -> object:
        protocol.send_text(APPEND_EVENT)
        return protocol.data_to_send()

    return send


def _time(fn: Callable[[], object], seconds: float) -> float:
    """Mean microseconds per call over about ``seconds`` of calls."""
    n = 1
    while True:
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        took = time.perf_counter() - t0
        if took > seconds / 10:
            break
        n *= 4
    reps = max(1, int(n * seconds / took))
    t0 = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - t0) / reps * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true", help="print JSON instead of a table")
    ap.add_argument("--seconds", type=float, default=0.2, help="timing per case and round")
    args = ap.parse_args()
    native, twin = _cases("native"), _cases("python")
    rows = []
    for name in native:
        n_runs, t_runs = [], []
        for _ in range(ROUNDS):
            n_runs.append(_time(native[name], args.seconds))
            t_runs.append(_time(twin[name], args.seconds / 4))
        n_us, t_us = statistics.median(n_runs), statistics.median(t_runs)
        rows.append({"case": name, "native_us": n_us, "python_us": t_us, "ratio": t_us / n_us})
    ws_us = statistics.median(_time(_websockets_send(), args.seconds) for _ in range(ROUNDS))
    if args.json:
        print(orjson.dumps({"machine": platform.processor() or platform.machine(), "rows": rows,
                            "websockets_send_text_us": ws_us}).decode())
        return
    print("| operation | native µs | twin µs | twin / native |")
    print("|---|---:|---:|---:|")
    for r in rows:
        print(f"| {r['case']} | {r['native_us']:.3f} | {r['python_us']:.1f} | {r['ratio']:.0f}× |")
    print(f"\nwebsockets send_text + data_to_send, the same append frame: {ws_us:.3f} µs")


if __name__ == "__main__":
    main()
