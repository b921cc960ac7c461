"""The uplink: caller bytes to finished upstream frames in one native pass, against its twin."""

from __future__ import annotations

import base64
import binascii
import random
from types import ModuleType

import orjson
import pytest
from conftest import IMPLS, UPLINK_RATES, Rig, media_module
from conftest import parse_client_frame as parse
from hypothesis import given, settings
from hypothesis import strategies as st
from websockets.frames import Opcode

from engine.errors import ConfigError

RATES = UPLINK_RATES


def message(kind: int, payload: bytes) -> bytes:
    return bytes((kind, len(payload) >> 8, len(payload) & 0xFF)) + payload


def reference_upstream(impl: str, kind: int, fmt: str, pcm: bytes) -> bytes:
    """What the upstream should receive for ``pcm``: the public resampler and codec."""
    rs, g711 = media_module(impl, "resample"), media_module(impl, "g711")
    rate, target = RATES[kind], (8000 if fmt == "pcmu" else 24000)
    out = pcm
    if rate != target:
        try:
            out = rs.Resampler(rate, target).process(out)
        except Exception:
            out = rs.Resampler(24000, target).process(rs.Resampler(rate, 24000).process(out))
    return g711.ulaw_encode(out) if fmt == "pcmu" else out


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=5000))
def test_the_native_base64_is_binascii(data: bytes) -> None:
    assert media_module("native", "uplink").b64encode(data) == binascii.b2a_base64(
        data, newline=False)


@settings(max_examples=80, deadline=None)
@given(
    kind=st.sampled_from(sorted(RATES)), fmt=st.sampled_from(["pcm16", "pcmu"]),
    append_ms=st.sampled_from([20, 40, 100]), prebuffer_ms=st.sampled_from([0, 60, 2000]),
    frames=st.integers(1, 40), open_at=st.integers(0, 45), seed=st.integers(0, 10**6),
    cuts=st.lists(st.integers(1, 2000), min_size=1, max_size=30),
)
def test_native_equals_twin_in_every_chunking(
    kind: int, fmt: str, append_ms: int, prebuffer_ms: int, frames: int, open_at: int,
    seed: int, cuts: list[int],
) -> None:
    rng = random.Random(seed)
    size = RATES[kind] // 50 * 2
    payloads = [rng.randbytes(size) for _ in range(frames)]
    dtmf_at = rng.randrange(frames)
    stream = b"".join(
        message(kind, p) + (b"\x03\x00\x015" if i == dtmf_at else b"")
        for i, p in enumerate(payloads))
    rigs = [Rig(impl, kind, fmt, append_ms, prebuffer_ms, seed) for impl in IMPLS]
    taps: list[list[bytes]] = [[], []]
    for rig in rigs:
        rig.uplink.tap = bytearray()
    seen: list[list[object]] = [[], []]
    pos = k = 0
    while pos < len(stream):
        end = pos + cuts[k % len(cuts)]
        for rig, trace, tap in zip(rigs, seen, taps, strict=True):
            if k == open_at:
                rig.uplink.sending = True
                trace.append(("flush", rig.uplink.flush()))
            if k % 3 == 2:  # the recorder takes what the tap holds and gives a fresh one
                tap.append(bytes(rig.uplink.tap))
                rig.uplink.tap = bytearray()
            trace.append(rig.feed(stream[pos:end]))
            trace.append(rig.counters())
        pos, k = end, k + 1
    assert seen[0] == seen[1]
    assert rigs[0].out == rigs[1].out
    for rig, tap in zip(rigs, taps, strict=True):
        assert rig.uplink.frames == frames
        # The tap holds the caller's audio as it arrived, before any resampling.
        assert b"".join(tap) + bytes(rig.uplink.tap) == b"".join(payloads)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize(("kind", "fmt"), [(0x10, "pcm16"), (0x12, "pcm16"), (0x13, "pcm16"),
                                           (0x10, "pcmu"), (0x16, "pcmu")])
def test_frames_carry_the_resampled_audio_in_appends_a_server_reads(
    impl: str, kind: int, fmt: str,
) -> None:
    rig = Rig(impl, kind, fmt, append_ms=40, prebuffer_ms=2000)
    rig.uplink.sending = True
    size = RATES[kind] // 50 * 2
    rng = random.Random(kind)
    pcm = rng.randbytes(size * 50)
    stream = b"".join(message(kind, pcm[i:i + size]) for i in range(0, len(pcm), size))
    for i in range(0, len(stream), 999):
        rig.feed(stream[i:i + 999])
    events = []
    for frame in rig.out:
        got = parse(frame)
        assert got.fin and got.opcode is Opcode.TEXT
        events.append(orjson.loads(got.data))
    assert [e["type"] for e in events] == ["input_audio_buffer.append"] * len(events)
    assert [e["event_id"] for e in events] == [f"au_{i}" for i in range(1, len(events) + 1)]
    assert len(events) in (24, 25)
    up = b"".join(base64.b64decode(e["audio"]) for e in events)
    expected = reference_upstream(impl, kind, fmt, pcm)
    assert expected.startswith(up) and len(expected) - len(up) == rig.uplink.pending_bytes


@pytest.mark.parametrize("impl", IMPLS)
def test_before_the_upstream_opens_only_the_newest_prebuffer_is_kept(impl: str) -> None:
    rig = Rig(impl, 0x10, "pcm16", append_ms=40, prebuffer_ms=100)
    rng = random.Random(7)
    pcm = rng.randbytes(320 * 30)
    for i in range(0, len(pcm), 320):
        assert rig.feed(message(0x10, pcm[i:i + 320])) == (False, [])
    assert rig.out == []
    assert rig.uplink.pending_bytes == 100 * 48
    rig.uplink.sending = True
    assert rig.uplink.flush() is True
    (frame,) = rig.out
    up = base64.b64decode(orjson.loads(parse(frame).data)["audio"])
    expected = reference_upstream(impl, 0x10, "pcm16", pcm)
    assert up == expected[-100 * 48:]
    assert rig.uplink.dropped_bytes == len(expected) - 100 * 48


@pytest.mark.parametrize("impl", IMPLS)
def test_other_messages_still_reach_python_in_order_and_a_violation_stops_the_sink(
    impl: str,
) -> None:
    rig = Rig(impl, 0x10, "pcm16", append_ms=20, prebuffer_ms=2000)
    rig.uplink.sending = True
    audio = message(0x10, bytes(320))
    ready, names = rig.feed(audio + b"\x03\x00\x01#" + message(0x12, bytes(640)) + audio)
    assert ready and names == ["DtmfReceived", "AudioReceived"]
    assert rig.uplink.frames == 2 and rig.out
    ready, names = rig.feed(audio + b"\x02\x00\x00" + audio)
    assert ready and names == ["ProtocolViolation"]
    assert rig.uplink.frames == 3
    assert rig.feed(audio) == (False, [])
    assert rig.uplink.frames == 3


@pytest.mark.parametrize("impl", IMPLS)
def test_a_finished_parser_and_a_detached_sink(impl: str) -> None:
    rig = Rig(impl, 0x10, "pcm16", append_ms=20, prebuffer_ms=2000)
    rig.parser.attach(None)
    ready, names = rig.feed(message(0x10, bytes(320)))
    assert ready and names == ["AudioReceived"] and rig.uplink.frames == 0
    rig.parser.attach(rig.uplink)
    rig.feed(message(0x10, bytes(320)))
    rig.parser.finish()
    assert rig.feed(message(0x10, bytes(320))) == (False, [])
    assert rig.uplink.frames == 1


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize(("kind", "fmt"), [(0x10, "pcm16"), (0x13, "pcm16"), (0x10, "pcmu")])
def test_an_empty_payload_pushed_from_python_counts_and_adds_nothing(impl: str, kind: int,
                                                                     fmt: str) -> None:
    # It reaches the native sink as a NULL pointer, which memcpy was once given (with no
    # resampler in the way, as at 24 kHz or for μ-law at 8 kHz).
    rig = Rig(impl, kind, fmt, append_ms=20, prebuffer_ms=2000)
    rig.uplink.tap = bytearray()
    assert rig.uplink.push(b"") is False
    assert rig.counters() == (1, 0, 0, 0) and rig.uplink.tap == b""
    rig.uplink.push(bytes(2 * UPLINK_RATES[kind] // 50))
    assert rig.counters()[:2] == (2, 0) and rig.uplink.pending_bytes


@pytest.mark.parametrize("impl", IMPLS)
def test_bad_settings_are_refused(impl: str) -> None:
    up, ws = media_module(impl, "uplink"), media_module(impl, "wsframe")
    with pytest.raises(ConfigError):
        up.Uplink(0x10, [], False, 0, 100, ws.FrameBuilder(), [])
    with pytest.raises(ConfigError):
        up.Uplink(0x10, [], False, 10, -1, ws.FrameBuilder(), [])


def test_the_module_is_chosen_like_the_others() -> None:
    from engine import _impl

    assert "uplink" in _impl.MODULES
    native: ModuleType = media_module("native", "uplink")
    assert native.APPEND_ID_PREFIX == media_module("python", "uplink").APPEND_ID_PREFIX
