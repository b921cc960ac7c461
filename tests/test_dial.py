"""``voice-engine dial`` against a real echo server on loopback, and the WAV helpers it uses."""

from __future__ import annotations

import json
import math
import os
import socket
import uuid
import wave
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from test_caller import EchoServer, echo_in_thread, tone

from engine import dial, wav
from engine._impl import audiosocket
from engine.caller import CallerSession
from engine.errors import ConfigError, UnsupportedRate

K8, K16 = audiosocket.KIND_AUDIO_8K, audiosocket.KIND_AUDIO_16K


@pytest.fixture
def echo(request: pytest.FixtureRequest) -> Iterator[EchoServer]:
    """An echo server on its own loop and thread; ``indirect`` params are its settings."""
    server = EchoServer(**getattr(request, "param", {}))
    thread, loop, stop = echo_in_thread(server)
    yield server
    loop.call_soon_threadsafe(stop.set)
    thread.join(5)
    assert not thread.is_alive()


def write(path: Path, rate: int, pcm: bytes, channels: int = 1, width: int = 2) -> Path:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(width)
        w.setframerate(rate)
        w.writeframes(pcm)
    return path


def invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(dial.command, list(args), catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


# --- wav ---------------------------------------------------------------------------------------

def test_wav_round_trip_and_first_channel(tmp_path: Path) -> None:
    pcm = tone(16000, 0.1)
    wav.write_wav(tmp_path / "a.wav", 16000, pcm)
    assert wav.read_wav(tmp_path / "a.wav") == (16000, pcm)
    left = np.frombuffer(tone(8000, 0.05, 300), "<i2")
    right = np.frombuffer(tone(8000, 0.05, 1000), "<i2")
    stereo = np.stack([left, right], axis=1).astype("<i2").tobytes()
    write(tmp_path / "s.wav", 8000, stereo, channels=2)
    assert wav.read_wav(tmp_path / "s.wav") == (8000, left.tobytes())


def test_wav_rejects_what_it_cannot_use(tmp_path: Path) -> None:
    write(tmp_path / "u8.wav", 8000, bytes(160), width=1)
    with pytest.raises(wav.BadWav, match="8-bit"):
        wav.read_wav(tmp_path / "u8.wav")
    (tmp_path / "text.wav").write_bytes(b"not a wav at all")
    with pytest.raises(wav.BadWav, match="not a PCM WAV"):
        wav.read_wav(tmp_path / "text.wav")


def test_convert_rate_direct_through_24k_and_unsupported() -> None:
    pcm = tone(16000, 0.2)
    assert wav.convert_rate(pcm, 16000, 16000) is pcm
    down = wav.convert_rate(pcm, 16000, 8000)
    assert len(down) == len(pcm) // 2
    # 48 kHz -> 8 kHz has no direct filter: two stages through 24 kHz, still a 440 Hz tone.
    via = np.frombuffer(wav.convert_rate(tone(48000, 0.2), 48000, 8000), "<i2")
    assert len(via) == 1600
    spectrum = np.abs(np.fft.rfft(via[400:].astype(float)))
    assert abs(np.argmax(spectrum) * 8000 / len(via[400:]) - 440) < 10
    with pytest.raises(UnsupportedRate):
        wav.convert_rate(pcm, 22050, 8000)


# --- argument parsing --------------------------------------------------------------------------

def test_parse_target_and_dtmf() -> None:
    assert dial.parse_target("127.0.0.1:9093") == ("127.0.0.1", 9093)
    assert dial.parse_target("[::1]:9093") == ("::1", 9093)
    for bad in ("127.0.0.1", ":9093", "host:0", "host:70000", "host:x"):
        with pytest.raises(ConfigError):
            dial.parse_target(bad)
    assert dial.parse_dtmf("2.0:5, 3:#") == [(2.0, "5"), (3.0, "#")]
    assert dial.parse_dtmf("") == []
    for bad in ("2.0", "x:5", "1:55", "1:E", "-1:5", "nan:5"):
        with pytest.raises(ConfigError):
            dial.parse_dtmf(bad)


# --- calls ------------------------------------------------------------------------------------

@pytest.mark.parametrize("echo", [{"hangup_after": 10}], indirect=True)
def test_dial_engine_hangup_records_what_came_back(echo: EchoServer, tmp_path: Path) -> None:
    pcm = tone(8000, 0.5)
    source = write(tmp_path / "in.wav", 8000, pcm)
    code, out, err = invoke(f"127.0.0.1:{echo.port}", "--wav", str(source),
                            "--record", str(tmp_path / "out.wav"), "--uuid",
                            "12345678-1234-5678-1234-567812345678")
    assert code == 0, err
    assert "ended: engine_hangup" in out
    assert "call 12345678-1234-5678-1234-567812345678 at 8000 Hz" in out
    assert "frames received: 10 (3200 bytes), wrong kind: 0" in out
    assert wav.read_wav(tmp_path / "out.wav") == (8000, pcm[: 10 * 320])


@pytest.mark.parametrize("echo", [{"reply_kind": K8}], indirect=True)
def test_dial_json_stereo_resampled_padded(echo: EchoServer, tmp_path: Path) -> None:
    left = tone(8000, 0.1)
    stereo = np.stack([np.frombuffer(left, "<i2"), np.zeros(800, "<i2")], axis=1)
    source = write(tmp_path / "in.wav", 8000, stereo.astype("<i2").tobytes(), channels=2)
    code, out, err = invoke(f"127.0.0.1:{echo.port}", "--wav", str(source), "--rate", "16000",
                            "--seconds", "0.2", "--dtmf", "0.1:5", "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["hangup"] == "caller_finished" and report["ok"] is True
    assert (report["kind"], report["rate"], report["frames_sent"]) == (K16, 16000, 10)
    assert report["dtmf_sent"] == 1
    # The engine (echo) answered in 8 kHz on a 16 kHz call: every frame it sent is wrong.
    assert report["wrong_kind_frames"] == report["frames_received"]
    sent = wav.convert_rate(left, 8000, 16000)
    assert echo.audio() == sent + bytes(6400 - len(sent))  # 0.2 s at 16 kHz
    digits = [e.digit for e in echo.events if isinstance(e, audiosocket.DtmfReceived)]
    assert digits == ["5"]


@pytest.mark.parametrize("echo", [{"bad": b"\x01\x00\x10" + bytes(16)}], indirect=True)
def test_dial_protocol_error_exits_non_zero(echo: EchoServer, tmp_path: Path) -> None:
    source = write(tmp_path / "in.wav", 8000, tone(8000, 0.2))
    code, out, err = invoke(f"127.0.0.1:{echo.port}", "--wav", str(source))
    assert code == 1
    assert "protocol_error" in out and "the call failed: protocol_error" in err


def test_dial_refused_port(tmp_path: Path) -> None:
    source = write(tmp_path / "in.wav", 8000, tone(8000, 0.1))
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))  # bound, not listening: connecting is refused
        port = sock.getsockname()[1]
        code, out, err = invoke(f"127.0.0.1:{port}", "--wav", str(source),
                                "--record", str(tmp_path / "out.wav"), "--json")
    assert code == 1
    assert json.loads(out)["hangup"].startswith("connect_failed")
    assert "connect_failed" in err
    assert not (tmp_path / "out.wav").exists()


def test_dial_bad_arguments(tmp_path: Path) -> None:
    source = write(tmp_path / "in.wav", 8000, tone(8000, 0.1))
    u8 = write(tmp_path / "u8.wav", 8000, bytes(160), width=1)
    odd = write(tmp_path / "odd.wav", 22050, tone(22050, 0.1))
    cases = [
        (["127.0.0.1:9", "--wav", str(source), "--dtmf", "1:x"], "DTMF"),
        (["nohostport", "--wav", str(source)], "HOST:PORT"),
        (["127.0.0.1:9", "--wav", str(source), "--uuid", "nope"], "not a UUID"),
        (["127.0.0.1:9", "--wav", str(u8)], "8-bit"),
        (["127.0.0.1:9", "--wav", str(odd)], "22050"),
    ]
    for args, message in cases:
        code, _, err = invoke(*args)
        assert code == 2 and message in err, (args, err)
    code, _, _ = invoke("127.0.0.1:9", "--wav", str(source), "--rate", "11025")
    assert code == 2


def test_dial_checks_the_record_path_before_calling(echo: EchoServer, tmp_path: Path) -> None:
    source = write(tmp_path / "in.wav", 8000, tone(8000, 0.1))
    target = f"127.0.0.1:{echo.port}"
    missing = tmp_path / "no" / "such" / "x.wav"
    code, out, err = invoke(target, "--wav", str(source), "--record", str(missing))
    assert code == 2 and out == ""
    folder = missing.parent
    assert err == f"voice-engine dial: --record {missing}: the folder {folder} does not exist\n"
    code, _, err = invoke(target, "--wav", str(source), "--record", str(tmp_path))
    assert code == 2 and "is a directory" in err
    code, _, err = invoke(target, "--wav", str(tmp_path / "absent.wav"))
    assert code == 2 and "does not exist" in err
    assert not echo.finished.is_set() and echo.events == []  # no call was placed


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_dial_refuses_an_unwritable_record_folder(tmp_path: Path) -> None:
    folder = tmp_path / "ro"
    folder.mkdir(mode=0o500)
    with pytest.raises(ConfigError, match="not writable"):
        dial.check_record_path(folder / "x.wav")


def test_render_without_intervals_says_so() -> None:
    session = CallerSession(uuid.UUID(int=1), K8)
    session.opening(0.0)
    session.fail("refused", 0.0)
    text = dial.render(session.report())
    assert "n/a" in text and "connect_failed: refused" in text
    assert not math.isnan(session.report().duration)
