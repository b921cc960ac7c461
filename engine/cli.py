"""The ``voice-engine`` command line.

Commands that are not built yet say so and exit with status 2; none of them pretends.
"""

from __future__ import annotations

import logging
import sys

import click

from engine import __version__, logs

__all__ = ["main"]

log = logging.getLogger("engine.cli")

NOT_BUILT = 2


def _not_built(command: str, what: str) -> None:
    click.echo(
        f"voice-engine {command}: not built yet in {__version__} ({what}). "
        "Nothing was started.",
        err=True,
    )
    sys.exit(NOT_BUILT)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="voice-engine")
@click.option("--log-level", default="INFO", show_default=True, envvar="LOG_LEVEL")
def main(log_level: str) -> None:
    """Answers Asterisk AudioSocket calls and bridges each to a Realtime speech model."""
    logs.setup(log_level)


@main.command()
def info() -> None:
    """Loads the media core and prints which implementation runs and what it supports."""
    from engine import _impl

    logs.event(log, "media_core", impl=_impl.IMPL)
    click.echo(f"voice-engine {__version__}")
    click.echo(f"media core: {_impl.IMPL}")
    for name in _impl.MODULES:
        module = getattr(_impl, name)
        click.echo(f"  {name}: {module.__file__}")
    rates = ", ".join(str(r) for r in _impl.resample.supported_rates())
    click.echo(f"resampler rates (Hz, to and from 24000): {rates}")


@main.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
def run() -> None:
    """Serve AudioSocket calls (not built yet: the call path comes next)."""
    _not_built("run", "the AudioSocket-to-Realtime call path is the next step")


@main.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
def sim() -> None:
    """Run the built-in Realtime simulator alone (not built yet)."""
    _not_built("sim", "the Realtime simulator arrives with the call path")


@main.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
def dial() -> None:
    """Call an engine like Asterisk would, from a WAV file (not built yet)."""
    _not_built("dial", "the test caller arrives with the call path")


@main.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
def bench() -> None:
    """Load-test an engine with many calls (not built yet)."""
    _not_built(
        "bench",
        "the load generator needs the call path; the media core's own benchmark is "
        "`python benchmarks/resampler.py`",
    )


@main.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
def check() -> None:
    """Validate the configuration (not built yet)."""
    _not_built("check", "configuration arrives with the call path")
