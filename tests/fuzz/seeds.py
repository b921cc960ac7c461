"""Writes the fuzz targets' seed corpora, built from the engine's own encoders so they stay
true: ``python -m tests.fuzz.seeds`` (``--check`` only says whether the committed ones match).

Each seed is an input as :func:`tests.fuzz.split` reads it: a settings byte, chunk sizes, then
a stream of valid messages or an edge of the protocol. They are kept small (a few hundred
bytes each): the fuzzer mutates small inputs best.
"""

from __future__ import annotations

import binascii
import json
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from websockets.frames import Close, Frame, Opcode

from engine import caller
from engine._pure import audiosocket, wsframe
from engine.node.proxy import build_v2
from engine.sim import events as sim
from engine.sim.config import Dialect as SimDialect

from . import HERE, make_input

__all__ = ["SEEDS", "build", "main"]

CALL_ID = uuid.UUID("12345678-1234-5678-1234-567812345678")
CAPTURE = HERE.parent / "fixtures" / "audiosocket" / "app8k_dtmf"


def _captured_messages(count: int) -> bytes:
    """The first ``count`` messages of a real Asterisk capture, and its first DTMF digit."""
    data = CAPTURE.with_suffix(".bin").read_bytes()
    index = [json.loads(line) for line in CAPTURE.with_suffix(".jsonl").read_text().splitlines()]
    spans = [(m["offset"], m["offset"] + 3 + m["len"], m["kind"]) for m in index]
    dtmf = next(s for s in spans if s[2] == audiosocket.KIND_DTMF)
    return b"".join(data[a:b] for a, b, _ in spans[:count]) + data[dtmf[0]:dtmf[1]]


def audiosocket_seeds() -> dict[str, bytes]:
    call = caller.CallerSession(CALL_ID, audiosocket.KIND_AUDIO_8K, frame_ms=1)
    opening = call.opening()
    tone = bytes(range(16))
    call16 = caller.CallerSession(CALL_ID, audiosocket.KIND_AUDIO_16K, frame_ms=1)
    engine_side = audiosocket.encode_audio(audiosocket.KIND_AUDIO_8K, tone) + audiosocket.HANGUP
    return {
        "call": make_input(opening + call.frame(tone) + call.dtmf("5") + call.silence_frame()),
        "call_byte_by_byte": make_input(opening + call.frame(tone) + call.dtmf("#"), 0, [1]),
        "call_split_headers": make_input(opening + call.frame(tone) + audiosocket.HANGUP,
                                         0, [2, 1, 4]),
        "wideband": make_input(opening + call16.frame(bytes(32)) + call16.dtmf("D"), 0, [7]),
        "captured": make_input(_captured_messages(2), 0, [5, 200]),
        "error_message": make_input(opening + b"\xff\x00\x01\x02", 0, [3]),
        "small_limit": make_input(opening + call.frame(tone) + b"\x10\x00\x12" + bytes(18),
                                  2 << 1),
        "truncated": make_input(opening + b"\x10\x00\x20" + bytes(8)),
        "no_eof": make_input(opening + call.frame(tone), 0x10),
        "engine_side": make_input(engine_side, 1, [1, 2]),
        "engine_side_wideband": make_input(
            audiosocket.encode_audio(audiosocket.KIND_AUDIO_24K, bytes(48)), 1 | 0x20),
    }


def _random(n: int) -> bytes:
    """A fixed mask source, so the seeds are the same on every run."""
    return bytes(i * 7 + 3 & 0xFF for i in range(n))


def _server(frame: Frame) -> bytes:
    return frame.serialize(mask=False)


def wsframe_seeds() -> dict[str, bytes]:
    builder = wsframe.FrameBuilder(_random)
    event = json.dumps({"type": "response.output_audio.delta", "delta": "AAAA"}).encode()
    fragments = (_server(Frame(Opcode.TEXT, event[:10], fin=False))
                 + _server(Frame(Opcode.PING, b"hi"))
                 + _server(Frame(Opcode.CONT, event[10:])))
    masked = (builder.frame(event) + builder.frame(bytes(200), wsframe.OP_BINARY)
              + builder.frame(bytes(130)))
    return {
        "server_text": make_input(_server(Frame(Opcode.TEXT, event))),
        "server_fragments": make_input(fragments, 0, [1, 3, 9]),
        "server_long": make_input(_server(Frame(Opcode.BINARY, bytes(300))), 0, [2, 2, 200]),
        "server_close": make_input(_server(Frame(Opcode.TEXT, b"{}"))
                                   + _server(Frame(Opcode.CLOSE, Close(1000, "bye").serialize()))
                                   + b"after"),
        "server_rsv1": make_input(bytes([0xC1, 2]) + b"{}" + _server(Frame(Opcode.TEXT, b"x"))),
        "too_big": make_input(_server(Frame(Opcode.TEXT, bytes(130))), 3 << 1),
        "continuation_first": make_input(_server(Frame(Opcode.CONT, b"x"))),
        "huge_length": make_input(bytes([0x81, 127]) + (2**63 - 1).to_bytes(8, "big"), 7 << 1),
        "client_frames": make_input(masked, 1, [4, 100]),
    }


def proxy_seeds() -> dict[str, bytes]:
    v4 = build_v2("proxy", ("192.0.2.10", 40000), ("198.51.100.1", 9093))
    v6 = build_v2("proxy", ("2001:db8::1", 5060), ("2001:db8::2", 9093),
                  tlvs=b"\x04\x00\x03abc")
    local = build_v2("local", None, None)
    audio = caller.CallerSession(CALL_ID, audiosocket.KIND_AUDIO_8K, frame_ms=1).opening()
    unix = v4[:13] + b"\x31" + (216).to_bytes(2, "big") + bytes(216)
    return {
        "v4_then_audiosocket": make_input(v4 + audio),
        "v4_byte_by_byte": make_input(v4, 0, [1]),
        "v6_tlvs": make_input(v6 + audio, 0, [13, 1, 2]),
        "local": make_input(local + audio, 0, [16]),
        "local_with_block": make_input(local[:14] + b"\x00\x08" + bytes(8) + audio),
        "unix": make_input(unix, 1),
        "v1_text": make_input(b"PROXY TCP4 192.0.2.10 198.51.100.1 40000 9093\r\n"),
        "not_a_proxy": make_input(audio),
        "too_large": make_input(v4[:14] + b"\x02\x01", 1),
        "short_addresses": make_input(v4[:14] + b"\x00\x04" + bytes(4)),
    }


def _realtime_events(dialect: SimDialect) -> list[dict[str, Any]]:
    session = sim.default_session(dialect, "sess_1", "gpt-realtime")
    session["expires_at"] = 1_700_000_000  # not the clock: seeds are the same on every run
    tool = sim.function_call_item("item_2", "in_progress", "end_call", "call_1", "")
    done = sim.response_object(dialect, "resp_1", session, "completed", [tool],
                               usage_block=sim.usage(dialect, 10, 1000, 5, 2000, 4))
    done["metadata"] = {"purpose": "summary"}
    done["output"].append({"type": "message", "content": [{"type": "text", "text": "ok"}]})
    transcript = sim.TRANSCRIPT_DONE[dialect]
    return [
        {"type": "session.created", "session": session},
        {"type": "session.updated", "session": session},
        {"type": "input_audio_buffer.speech_started", "audio_start_ms": 120, "item_id": "item_1"},
        {"type": "input_audio_buffer.speech_stopped", "audio_end_ms": 900, "item_id": "item_1"},
        {"type": "conversation.item.input_audio_transcription.completed", "item_id": "item_1",
         "content_index": 0, "transcript": "hello"},
        {"type": "response.created",
         "response": sim.response_object(dialect, "resp_1", session, "in_progress", [])},
        {"type": "response.output_item.added", "response_id": "resp_1", "output_index": 0,
         "item": tool},
        {"type": sim.AUDIO_DELTA[dialect], "response_id": "resp_1", "item_id": "item_3",
         "output_index": 0, "content_index": 0,
         "delta": binascii.b2a_base64(bytes(range(7)), newline=False).decode()},
        {"type": sim.AUDIO_DONE[dialect], "response_id": "resp_1", "item_id": "item_3"},
        {"type": transcript, "response_id": "resp_1", "item_id": "item_3", "transcript": "hi"},
        {"type": "response.function_call_arguments.done", "response_id": "resp_1",
         "item_id": "item_2", "call_id": "call_1", "arguments": '{"summary": "x"}'},
        {"type": "response.output_item.done", "response_id": "resp_1", "item": tool},
        {"type": "response.done", "response": done},
        sim.rate_limits(100),
        sim.error("bad event", "invalid_value", "ev_3"),
        {"type": "response.text.delta", "delta": "unknown to the decoder"},
    ]


def realtime_seeds() -> dict[str, bytes]:
    out = {}
    for flags, name, dialect in ((0, "ga", SimDialect.GA), (1, "beta", SimDialect.BETA),
                                 (2, "azure", SimDialect.GA)):
        messages = [json.dumps(e, separators=(",", ":")).encode()
                    for e in _realtime_events(dialect)]
        out[f"{name}_session"] = make_input(b"\x00".join(messages), flags)
        out[f"{name}_delta"] = make_input(messages[7], flags)
    out["not_json"] = make_input(b'{"type": "session.created", \xff}')
    out["not_an_object"] = make_input(b'[1, 2]\x00"x"\x00{}\x00{"type": 7}')
    return out


def b64_seeds() -> dict[str, bytes]:
    out = {}
    for n in (0, 1, 2, 3, 4, 5, 48):
        text = binascii.b2a_base64(bytes(range(n)), newline=False)
        out[f"bytes_{n}"] = b"\x00" + text
        out[f"text_{n}"] = b"\x01" + text
    for i, odd in enumerate((b"QQ=", b"QQ=A", b"=QQQ", b"QQQQ=", b"QR==", b"Q===",
                             b"QQQ=QQQQ", b"QQQQ\n", b"QUJD\xe9===")):
        out[f"edge_{i}"] = bytes([i & 1]) + odd
    out["encoded"] = b"\x02\x00\x00" + bytes(range(30))
    out["encoded_damaged"] = b"\x03\x07=" + bytes(range(30))
    return out


SEEDS: dict[str, Callable[[], dict[str, bytes]]] = {
    "audiosocket": audiosocket_seeds, "proxy": proxy_seeds, "wsframe": wsframe_seeds,
    "realtime": realtime_seeds, "b64": b64_seeds,
}


def build() -> dict[Path, bytes]:
    """Every seed file, by its path under ``tests/fuzz/seeds``."""
    return {HERE / "seeds" / target / name: data
            for target, make in SEEDS.items() for name, data in make().items()}


def main(argv: list[str]) -> int:
    seeds = build()
    root = HERE / "seeds"
    present = {p for p in root.rglob("*") if p.is_file()} if root.exists() else set()
    stale = sorted(str(p.relative_to(root)) for p in seeds if
                   not p.exists() or p.read_bytes() != seeds[p])
    extra = sorted(str(p.relative_to(root)) for p in present - set(seeds))
    if "--check" in argv:
        for name in stale + extra:
            print(f"seeds: {name} differs from what tests/fuzz/seeds.py builds", file=sys.stderr)
        return 1 if stale or extra else 0
    for path in present - set(seeds):
        path.unlink()
    for path, data in seeds.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    print(f"seeds: wrote {len(seeds)} files, {sum(map(len, seeds.values()))} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
