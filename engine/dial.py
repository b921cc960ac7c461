"""``voice-engine dial``: one test call to an AudioSocket server, acting like Asterisk.

Streams a WAV (converted to the call's rate) as 20 ms frames on the clock, records what comes
back, and prints what happened. Exit status: 0 when the call ran, 1 when it could not connect
or the engine broke the protocol, 2 for bad arguments (click's usage errors included).
"""

from __future__ import annotations

import math
import os
import sys
import uuid as uuidlib
from pathlib import Path

import click
import numpy as np
import orjson
import uvloop

from engine import caller, wav
from engine._impl import audiosocket
from engine.errors import ConfigError, MediaError
from engine.stats import Pacing

__all__ = ["check_record_path", "command", "parse_dtmf", "parse_target", "render", "test_phrase"]

CALL_FAILED = 1
BAD_ARGUMENTS = 2


def parse_target(target: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT`` for IPv6) as (host, port).

    Raises:
        ConfigError: not of that form, or the port is not 1..65535.
    """
    host, sep, port = target.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"target must be HOST:PORT, not {target!r}")
    return host.strip("[]"), int(port)


def parse_dtmf(spec: str) -> list[tuple[float, str]]:
    """``"2.0:5,3.0:#"`` as [(2.0, "5"), (3.0, "#")]: seconds into the call, then the digit.

    Raises:
        ConfigError: an item is not ``SECONDS:DIGIT`` with a digit of 0-9 * # A-D.
    """
    out: list[tuple[float, str]] = []
    for item in filter(None, (part.strip() for part in spec.split(","))):
        at, sep, digit = item.rpartition(":")
        try:
            seconds = float(at)
        except ValueError:
            seconds = math.nan
        if not sep or not math.isfinite(seconds) or seconds < 0 or len(digit) != 1 or (
            digit not in audiosocket.DTMF_DIGITS
        ):
            raise ConfigError(
                f"DTMF item {item!r} must be SECONDS:DIGIT, digit one of {audiosocket.DTMF_DIGITS}"
            )
        out.append((seconds, digit))
    return out


def check_record_path(path: Path) -> None:
    """Checks, before the call, that the recording can be written to ``path``.

    Raises:
        ConfigError: its folder does not exist, or the file cannot be created or replaced.
    """
    folder = path.parent
    if not folder.is_dir():
        raise ConfigError(f"--record {path}: the folder {folder} does not exist")
    if path.exists():
        if not os.access(path, os.W_OK):
            raise ConfigError(f"--record {path}: the file is not writable")
    elif not os.access(folder, os.W_OK | os.X_OK):
        raise ConfigError(f"--record {path}: the folder {folder} is not writable")


def test_phrase(rate: int, tone_seconds: float = 1.0, quiet_seconds: float = 4.0) -> bytes:
    """A caller "turn" without a WAV: a 440 Hz tone at -12 dBFS, then silence to hear the reply.

    Loud enough for any voice activity detector, so the model answers in the silence.
    """
    n = round(rate * tone_seconds)
    amplitude = 32767 * 10 ** (-12 / 20)
    tone = np.round(amplitude * np.sin(2 * np.pi * 440.0 * np.arange(n) / rate))
    return tone.astype("<i2").tobytes() + bytes(2 * round(rate * quiet_seconds))


def _ms(p: Pacing) -> str:
    if not p.intervals:
        return "n/a (fewer than two frames)"
    return f"p50 {p.p50_ms:.2f} ms, p99 {p.p99_ms:.2f} ms, max {p.max_ms:.2f} ms"


def render(report: caller.CallReport) -> str:
    """The report as lines of text for people."""
    return "\n".join([
        f"call {report.uuid} at {report.rate} Hz (kind 0x{report.kind:02x})",
        f"ended: {report.hangup} after {report.duration:.2f} s",
        f"frames sent: {report.frames_sent} (DTMF digits: {report.dtmf_sent}, "
        f"skipped while the engine did not read: {report.frames_skipped})",
        f"frames received: {report.frames_received} ({report.bytes_received} bytes), "
        f"wrong kind: {report.wrong_kind_frames}, not 20 ms: {report.odd_size_frames}",
        f"pacing error, all frames: {_ms(report.pacing)}",
        f"pacing error, inside {report.bursts} bursts: {_ms(report.burst_pacing)}",
    ])


def _fail(message: str, code: int) -> None:
    click.echo(f"voice-engine dial: {message}", err=True)
    sys.exit(code)


@click.command("dial")
@click.argument("target", metavar="HOST:PORT")
@click.option("--wav", "wav_in", default=None,
              type=click.Path(exists=True, dir_okay=False, readable=True, path_type=Path),
              help="audio to send (16-bit PCM WAV, any rate; first channel if stereo); "
              "default: a built-in 1 s, 440 Hz tone at -12 dBFS, then 4 s of silence")
@click.option("--record", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="write the engine's audio here, at the call's rate")
@click.option("--rate", type=click.Choice([str(r) for r in audiosocket.AUDIO_RATES.values()]),
              default="8000", show_default=True, help="the call's rate (its AudioSocket kind)")
@click.option("--seconds", type=click.FloatRange(min=0.02), default=None,
              help="call length: the WAV is cut or padded with silence to it")
@click.option("--tail", type=click.FloatRange(min=0), default=0.0, show_default=True,
              help="seconds of silence to send after the audio while recording")
@click.option("--dtmf", default="", help='digits at times into the call, e.g. "2.0:5,3.0:#"')
@click.option("--uuid", "call_id", default=None, help="the call's UUID (default: random)")
@click.option("--json", "as_json", is_flag=True, help="print the report as JSON")
def command(
    target: str, wav_in: Path | None, record: Path | None, rate: str, seconds: float | None,
    tail: float, dtmf: str, call_id: str | None, as_json: bool,
) -> None:
    """Calls HOST:PORT like Asterisk does, streams a WAV and reports what came back.

    Without --wav it sends a short built-in test phrase (a tone, then silence).
    """
    try:
        the_uuid = uuidlib.UUID(call_id) if call_id else uuidlib.uuid4()
    except ValueError:
        _fail(f"--uuid {call_id!r} is not a UUID", BAD_ARGUMENTS)
        return
    try:
        host, port = parse_target(target)
        digits = parse_dtmf(dtmf)
        kind = audiosocket.kind_for_rate(int(rate))
        pcm = wav.read_wav_at(wav_in, int(rate)) if wav_in else test_phrase(int(rate))
        if record is not None:
            check_record_path(record)
    except (ConfigError, MediaError, OSError) as exc:
        _fail(str(exc), BAD_ARGUMENTS)
        return
    report = uvloop.run(caller.call(
        host, port, pcm=pcm, kind=kind, uuid=the_uuid, seconds=seconds, dtmf=digits,
        tail_seconds=tail,
    ))
    if record is not None and not report.hangup.startswith(caller.CONNECT_FAILED):
        wav.write_wav(record, report.rate, report.received_pcm)
    if as_json:
        click.echo(orjson.dumps(report.as_dict()).decode())
    else:
        click.echo(render(report))
    if not report.ok:
        _fail(f"the call failed: {report.hangup}", CALL_FAILED)

