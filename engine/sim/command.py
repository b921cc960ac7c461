"""``voice-engine sim``: the Realtime simulator alone, until SIGINT or SIGTERM.

Prints one line with the URL once listening, and a JSON summary of what it saw on exit.
"""

from __future__ import annotations

import asyncio
import math
import signal
import ssl
import sys

import click
import orjson
from click.core import ParameterSource

from engine.errors import ConfigError
from engine.sim.config import Dialect, Signal, SimConfig, ToolScript, ValidationMode, parse_fault
from engine.sim.server import Simulator

__all__ = ["command", "serve_until_signal"]


def _given(param: str) -> bool:
    """Whether ``--param`` was typed on the command line (not its default)."""
    source = click.get_current_context().get_parameter_source(param)
    return source is ParameterSource.COMMANDLINE


def _tool(text: str) -> ToolScript:
    name, sep, at = text.partition("@")
    if not name or (sep and not at.isdigit()):
        raise click.BadParameter(f"{text!r}: use NAME@N (N = response number) or NAME:CUE")
    if sep:
        return ToolScript(name=name, at_response=int(at))
    name, sep, cue = text.partition(":")
    if not sep or not cue:
        raise click.BadParameter(f"{text!r}: use NAME@N (N = response number) or NAME:CUE")
    return ToolScript(name=name, cue=cue)


def _server_tls(cert: str | None, key: str | None) -> ssl.SSLContext | None:
    """The server context for ``--tls-cert`` (and ``--tls-key``), or None to serve ws://."""
    if cert is None:
        if key is not None:
            raise click.UsageError("--tls-key needs --tls-cert")
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise click.UsageError(f"cannot use the TLS certificate {cert}: {exc}") from None
    return context


async def serve_until_signal(sim: Simulator, host: str, port: int) -> None:
    """Starts ``sim``, prints its URL, waits for SIGINT/SIGTERM, stops it."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        await sim.start(host, port)
        click.echo(f"voice-engine sim listening on {sim.url}")
        sys.stdout.flush()
        await stop.wait()
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
        await sim.stop()


@click.command(name="sim", context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=9095, show_default=True, type=click.IntRange(0, 65535))
@click.option("--dialect", type=click.Choice(["auto", "ga", "beta"]), default="auto",
              show_default=True, help="auto: beta when the client sends OpenAI-Beta: realtime=v1")
@click.option("--api-key", envvar="SIM_API_KEY", default=None,
              help="require this key (Bearer or api-key header); default: accept anything")
@click.option("--response-ms", default=2000, show_default=True, type=click.IntRange(min=1))
@click.option("--delta-ms", default=100, show_default=True, type=click.IntRange(min=1))
@click.option("--pacing", default=4.0, show_default=True, type=float,
              help="times real time; inf sends each response at once")
@click.option("--signal", "signal_name", type=click.Choice(["tone", "voice"]), default="tone",
              show_default=True)
@click.option("--tone-hz", default=440.0, show_default=True, type=float)
@click.option("--level-dbfs", default=-12.0, show_default=True, type=float)
@click.option("--vad-threshold-dbfs", default=-40.0, show_default=True, type=float)
@click.option("--vad-silence-ms", default=500, show_default=True, type=click.IntRange(min=10))
@click.option("--validation", type=click.Choice(["all", "sample", "off"]), default="all",
              show_default=True)
@click.option("--sample-every", default=50, show_default=True, type=click.IntRange(min=1))
@click.option("--fault", "faults", multiple=True,
              help="for every connection: refuse, 401, 403, 429[:SECONDS], close:MS[:CODE], "
                   "stall:MS, garbage:MS, unknown:MS, huge:MS[:BYTES], error:MS, "
                   "bad_audio:MS, odd_audio:MS")
@click.option("--tls-cert", default=None, metavar="PEM",
              help="serve wss:// with this certificate chain (and its key, unless --tls-key)")
@click.option("--tls-key", default=None, metavar="PEM", help="the key of --tls-cert")
@click.option("--session-limit", "session_limit_s", default=None, type=click.FloatRange(min=0.1),
              metavar="SECONDS", help="end each session this long after it opened, without "
              "warning, as the real API does after 60 minutes (30 on beta)")
@click.option("--tool", "tools", multiple=True,
              help="scripted function call: NAME@N on response N, or NAME:CUE on a user text cue")
def command(
    host: str, port: int, dialect: str, api_key: str | None, response_ms: int, delta_ms: int,
    pacing: float, signal_name: str, tone_hz: float, level_dbfs: float,
    vad_threshold_dbfs: float, vad_silence_ms: int, validation: str, sample_every: int,
    faults: tuple[str, ...], tools: tuple[str, ...], tls_cert: str | None, tls_key: str | None,
    session_limit_s: float | None,
) -> None:
    """Run the built-in OpenAI Realtime simulator alone (until SIGINT/SIGTERM)."""
    try:
        config = SimConfig(
            dialect=None if dialect == "auto" else Dialect(dialect),
            api_key=api_key or None,
            response_ms=response_ms,
            delta_ms=delta_ms,
            pacing=math.inf if pacing <= 0 or math.isinf(pacing) else pacing,
            signal=Signal(signal_name),
            tone_hz=tone_hz,
            level_dbfs=level_dbfs,
            vad_threshold_dbfs=vad_threshold_dbfs,
            vad_silence_ms=vad_silence_ms,
            validation=ValidationMode(validation),
            sample_every=sample_every,
            validation_required=_given("validation") and validation != "off",
            tool_scripts=tuple(_tool(t) for t in tools),
            faults=tuple(parse_fault(f) for f in faults),
            session_limit_s=session_limit_s,
        )
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    sim = Simulator(config, keep_sessions=1000, ssl_context=_server_tls(tls_cert, tls_key))
    try:
        import uvloop

        uvloop.run(serve_until_signal(sim, host, port))
    except OSError as exc:
        raise click.ClickException(f"cannot listen on {host}:{port}: {exc}") from None
    click.echo(orjson.dumps(sim.totals(), option=orjson.OPT_INDENT_2).decode())
