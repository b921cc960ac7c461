"""The ``voice-engine`` command line.

Usage errors and invalid configuration exit with status 2 and one line that says what to fix.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from click.core import ParameterSource

from engine import __version__, logs
from engine.config import FIELDS, Config
from engine.errors import ConfigError, NativeExtensionMissing

if TYPE_CHECKING:
    from engine.agent.agentfile import AgentFile

__all__ = ["main"]

log = logging.getLogger("engine.cli")

LOG_LEVELS = ("debug", "info", "warning", "error")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="voice-engine")
@click.option("--log-level", type=click.Choice(LOG_LEVELS, case_sensitive=False), default="info",
              show_default=True, envvar="LOG_LEVEL")
@click.option("--log-format", type=click.Choice(logs.FORMATS, case_sensitive=False),
              default="auto", show_default=True, envvar="LOG_FORMAT",
              help="text, json, or auto: text when stderr is a terminal")
@click.pass_context
def main(ctx: click.Context, log_level: str, log_format: str) -> None:
    """Answers Asterisk AudioSocket calls and bridges each to a Realtime speech model."""
    logs.setup(log_level, log_format)
    # Typed before the command, these stand for the command's own flags when it has none.
    ctx.obj = {name.upper(): ctx.params[name] for name in ("log_level", "log_format")
               if ctx.get_parameter_source(name) is ParameterSource.COMMANDLINE}


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


def _setting_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Adds a flag for every configuration name but the secrets (``--listen-port`` …)."""
    for setting in reversed(FIELDS):
        if not setting.secret:
            command = click.option(
                setting.flag, *setting.aliases, setting.attr, default=None, metavar="VALUE",
                help=f"{setting.help} [{setting.env}]",
            )(command)
    return command


def _env_file_option(command: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--env-file", type=click.Path(dir_okay=False, path_type=Path), default=None,
        help="read settings from this file instead of ./.env",
    )(command)


def _overrides(flags: dict[str, Any]) -> dict[str, Any]:
    """The settings given as flags, by environment name (None: not given)."""
    overrides = {s.env: flags.get(s.attr) for s in FIELDS if not s.secret}
    for name, value in (click.get_current_context().find_root().obj or {}).items():
        if overrides.get(name) is None:
            overrides[name] = value
    return overrides


def _config(env_file: Path | None, flags: dict[str, Any], *, require_key: bool) -> Config:
    from engine import config

    try:
        return config.load(None, env_file, _overrides(flags), require_key=require_key)
    except ConfigError as exc:
        click.echo(f"voice-engine: {exc}", err=True)
        sys.exit(2)


@main.command()
@click.option("--simulator", is_flag=True,
              help="run the built-in Realtime simulator in-process and use it (no key needed)")
@_env_file_option
@_setting_options
def run(simulator: bool, env_file: Path | None, **flags: Any) -> None:
    """Serve AudioSocket calls on N worker processes, each call bridged to the Realtime API.

    SIGTERM or Ctrl-C drains (calls in progress run on up to DRAIN_SECONDS); a second
    Ctrl-C stops at once.
    """
    config = _config(env_file, flags, require_key=not simulator)
    fmt = logs.resolve_format(config.log_format)
    logs.setup(config.log_level, fmt)
    import uvloop

    from engine.node.supervisor import Supervisor

    supervisor = Supervisor(config, simulator=simulator, log_format=fmt, env_file=env_file)
    sys.exit(uvloop.run(supervisor.run()))


@main.command()
@click.option("--simulator", is_flag=True, help="an API key is not required")
@_env_file_option
@_setting_options
def check(simulator: bool, env_file: Path | None, **flags: Any) -> None:
    """Validate the configuration and the agent file (AGENT_FILE, --agent); lists every
    problem with its place and exits non-zero if there is one."""
    from engine import config as settings

    overrides = _overrides(flags)
    config: Config | None = None
    try:
        config = settings.load(None, env_file, overrides, require_key=not simulator)
    except ConfigError as exc:
        click.echo(f"voice-engine: {exc}", err=True)
    # The agent file is checked even when a setting is not, so one run shows every problem.
    agent = _check_agent_file(config, env_file, overrides)
    if config is None or agent is None:
        sys.exit(2)
    for setting in FIELDS:
        value = getattr(config, setting.attr)
        shown = (setting.show(value) if setting.show is not None else
                 "(set)" if setting.secret and value else value)
        click.echo(f"{setting.env}={shown}")
    if config.temperature != 0.7 and config.realtime_dialect != "beta":
        click.echo("warning: TEMPERATURE is ignored by the GA interface", err=True)
    for line in agent.describe():
        click.echo(line)
    for warning in agent.warnings:
        click.echo(f"warning: {warning}", err=True)
    click.echo("configuration ok")


def _check_agent_file(config: Config | None, env_file: Path | None,
                      overrides: dict[str, Any]) -> AgentFile | None:
    """The agent file (or the default agent), or None once its problems are printed."""
    from engine import config as settings
    from engine.agent import agentfile

    try:
        env = settings.environment(None, env_file)
    except ConfigError:  # a broken .env: config.load has said so already
        env = dict(os.environ)
    path = config.agent_file if config else overrides.get("AGENT_FILE") or env.get("AGENT_FILE")
    base = config or Config()  # defaults, when a setting is bad, for the ports a profile takes
    if not path:
        return agentfile.default_agent(base)
    try:
        return agentfile.load(Path(path), env, base)
    except agentfile.AgentFileError as exc:
        click.echo(f"voice-engine: {exc}", err=True)
        return None


def _load_media_core() -> None:
    """Imports the media core, which the commands registered below import at once.

    A bad ``VOICE_ENGINE_IMPL`` or a missing native build ends the process with its message
    and status 2, not a traceback, whatever the command (``--help`` included).
    """
    try:
        import engine._impl  # noqa: F401
    except (ConfigError, NativeExtensionMissing) as exc:
        click.echo(f"voice-engine: {exc}", err=True)
        sys.exit(2)


def _register() -> None:
    _load_media_core()
    from engine.bench.command import command as bench_command
    from engine.dial import command as dial_command
    from engine.records.command import command as calls_command
    from engine.sim.command import command as sim_command

    main.add_command(bench_command, "bench")
    main.add_command(calls_command, "calls")
    main.add_command(dial_command, "dial")
    main.add_command(sim_command, "sim")


_register()
