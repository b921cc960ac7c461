"""``voice-engine bench``: load an engine with many calls and report how it held them."""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, Any

import click
import orjson

from engine.bench.report import BenchResult, render, render_comparison
from engine.dial import parse_target
from engine.errors import BenchError, ConfigError

if TYPE_CHECKING:
    from engine.bench.run import BenchOptions, Progress

__all__ = ["command", "parse_cpus", "parse_engine_env"]


def parse_cpus(text: str) -> frozenset[int]:
    """``0``, ``0,2`` or ``1-3`` as a set of CPU numbers.

    Raises:
        ConfigError: the text is not a CPU list.
    """
    cpus: set[int] = set()
    try:
        for part in text.split(","):
            low, sep, high = part.strip().partition("-")
            cpus.update(range(int(low), int(high) + 1) if sep else [int(low)])
    except ValueError:
        raise ConfigError(f"{text!r} is not a CPU list (like 0, 0,2 or 1-3)") from None
    if not cpus or min(cpus) < 0:
        raise ConfigError(f"{text!r} is not a CPU list (like 0, 0,2 or 1-3)")
    return frozenset(cpus)


# Settings the bench has its own flag for (so the result's options stay true), and the ones it
# must set itself to start, reach and read the engine.
_OWN_FLAG = {"UPSTREAM_FORMAT": "--upstream-format", "APPEND_MS": "--append-ms",
             "WORKERS": "--workers"}
_BENCH_SETS = frozenset({"OPENAI_REALTIME_URL", "LISTEN_HOST", "LISTEN_PORT", "HEALTH_PORT",
                         "AGENT_PORT", "LOG_FORMAT"})


def parse_engine_env(items: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    """``NAME=VALUE`` items for the engine the bench starts, each NAME one of its settings.

    The bench keeps its own environment's settings away from the engine it starts, so these
    items are the only way to bench a setting.

    Raises:
        ConfigError: an item is not NAME=VALUE, or NAME is not an engine setting.
    """
    from engine.config import FIELDS

    known = {s.env for s in FIELDS}
    out = []
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise ConfigError(f"--engine-env {item!r}: expected NAME=VALUE")
        if name not in known:
            raise ConfigError(f"--engine-env {item!r}: {name} is not one of the engine's "
                              "settings (voice-engine run --help lists them)")
        if name in _OWN_FLAG:
            raise ConfigError(f"--engine-env {item!r}: use {_OWN_FLAG[name]} for {name}")
        if name in _BENCH_SETS:
            raise ConfigError(f"--engine-env {item!r}: the bench sets {name} itself to start "
                              "and reach the engine")
        out.append((name, value))
    return tuple(out)


def _default_pinning() -> tuple[frozenset[int] | None, frozenset[int] | None]:
    """The engine on the first allowed CPU, the generator on the rest (with two or more)."""
    allowed = sorted(os.sched_getaffinity(0))
    if len(allowed) < 2:
        return None, None
    return frozenset(allowed[:1]), frozenset(allowed[1:])


def _progress(line: dict[str, Any]) -> None:
    if "note" in line:
        click.echo(line["note"], err=True)
        return
    cpu = line["engine_cpu_pct"]
    per_call = line["ms_per_call_s"]
    text = (f"[{line['t']:6.1f} s] {line['phase']:<4} calls up {line['calls_up']}/"
            f"{line['calls_placed']}, failed {line['failed']}, dropped {line['dropped']}, "
            f"frames in {line['rx_fps']}/s"
            + (f", engine {cpu:.0f} % CPU" if cpu is not None else "")
            + (f" ({per_call:.3f} ms per call-second)" if per_call is not None else ""))
    click.echo(text, err=True)


@click.command(name="bench", context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--calls", default=100, show_default=True, type=click.IntRange(1))
@click.option("--duration", default=30.0, show_default=True, type=click.FloatRange(min=1),
              help="seconds to hold every call once all are up (with --churn: to keep "
                   "--calls calls up, churning)")
@click.option("--ramp", default=50.0, show_default=True, type=click.FloatRange(min=0.1),
              help="new calls per second until all are up")
@click.option("--rate", default=8000, show_default=True,
              type=click.Choice(["8000", "16000", "24000"]), help="AudioSocket rate of the calls")
@click.option("--upstream-format", default="pcm16", show_default=True,
              type=click.Choice(["pcm16", "pcmu"]))
@click.option("--append-ms", default=40, show_default=True, type=click.IntRange(20, 100),
              help="the engine's APPEND_MS")
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1))
@click.option("--target", default=None, metavar="HOST:PORT",
              help="load an engine already running there (its upstream must be this "
                   "bench's simulator for the upstream-side figures)")
@click.option("--sim-port", default=0, show_default=True, type=click.IntRange(0, 65535),
              help="port of the bench's simulator (0: any free one); fix it for --target")
@click.option("--engine-cpus", default=None, metavar="LIST",
              help="pin the engine to these CPUs (default: the first allowed one)")
@click.option("--load-cpus", default=None, metavar="LIST",
              help="pin the generator and simulator to these CPUs (default: the others)")
@click.option("--no-pin", is_flag=True, help="do not pin anything")
@click.option("--response-ms", default=3000, show_default=True, type=click.IntRange(100),
              help="length of each simulated model answer")
@click.option("--seed", default=1, show_default=True, type=int)
@click.option("--probe-calls", default=20, show_default=True, type=click.IntRange(1),
              help="calls read with kernel receive timestamps (at most --calls): pacing, "
                   "first-frame, barge-in and append latencies come from these alone")
@click.option("--compare-python", is_flag=True,
              help="run the same load on the plain-Python media core too and print the ratio")
@click.option("--floor", is_flag=True,
              help="load a minimal frame-moving server instead of the engine: this machine's "
                   "kernel and event-loop floor, to read the engine's CPU against")
@click.option("--engine-env", "engine_env", multiple=True, metavar="NAME=VALUE",
              help="a setting for the engine the bench starts (repeatable); the bench keeps "
                   "its own environment's settings from it")
@click.option("--vs-floor", is_flag=True,
              help="run the engine and the floor alternately, --rounds each, and judge the "
                   "ratio of their CPU per call-second")
@click.option("--rounds", default=2, show_default=True, type=click.IntRange(1),
              help="rounds of each for --vs-floor")
@click.option("--tls", is_flag=True,
              help="the simulator serves wss:// with a throwaway certificate, and the engine "
                   "trusts its CA (UPSTREAM_CA_FILE) for this run only")
@click.option("--churn", default=None, metavar="SECONDS",
              type=click.FloatRange(min=0, min_open=True),
              help="soak: each call hangs up after 0.5-1.5x SECONDS (seeded by --seed) and a "
                   "new one takes its place at once; adds a per-minute timeline (calls, "
                   "pacing, engine RSS, fds, threads, tasks) and judges memory growth, fds and "
                   "tasks back at baseline and every minute's pacing")
@click.option("--check", is_flag=True,
              help="exit with status 1 (after the result) when any target is missed")
@click.option("--json", "as_json", is_flag=True, help="print the result as JSON")
@click.option("--quiet", is_flag=True, help="no progress lines")
def command(
    calls: int, duration: float, ramp: float, rate: str, upstream_format: str, append_ms: int,
    workers: int, target: str | None, sim_port: int, engine_cpus: str | None, load_cpus: str | None,
    no_pin: bool, response_ms: int, seed: int, probe_calls: int, compare_python: bool,
    floor: bool,
    engine_env: tuple[str, ...], vs_floor: bool, rounds: int, tls: bool, churn: float | None,
    check: bool, as_json: bool, quiet: bool,
) -> None:
    """Load-test an engine: many calls against the built-in Realtime simulator."""
    from engine.bench.run import BenchOptions, main_loop

    try:
        pin_engine, pin_load = (None, None) if no_pin else _default_pinning()
        if engine_cpus:
            pin_engine = parse_cpus(engine_cpus)
        if load_cpus:
            pin_load = parse_cpus(load_cpus)
        opts = BenchOptions(
            calls=calls, duration=duration, ramp=ramp, rate=int(rate),
            upstream_format=upstream_format, append_ms=append_ms, workers=workers,
            target=parse_target(target) if target else None,
            engine_cpus=None if target else pin_engine, load_cpus=pin_load,
            response_ms=response_ms, seed=seed, floor=floor, sim_port=sim_port,
            extra_env=parse_engine_env(engine_env), tls=tls, probe_calls=probe_calls,
            churn=churn or 0.0,
        )
        if floor and (target or compare_python):
            raise BenchError("--floor starts its own server; it takes neither --target nor "
                             "--compare-python")
        if vs_floor and (floor or target or compare_python):
            raise BenchError("--vs-floor starts the engine and the floor itself; it takes "
                             "neither --floor, --target nor --compare-python")
    except (ConfigError, BenchError) as exc:
        raise click.UsageError(str(exc)) from None
    progress = None if quiet else _progress
    if vs_floor:
        _versus_floor(opts, rounds, progress, as_json=as_json, check=check)
        return
    results: list[BenchResult] = []
    try:
        results.append(main_loop(opts, progress))
        if compare_python:
            if target:
                raise BenchError("--compare-python starts its own engines; drop --target")
            from dataclasses import replace

            results.append(main_loop(replace(opts, impl="python"), progress))
    except BenchError as exc:
        click.echo(f"voice-engine bench: {exc}", err=True)
        sys.exit(1)
    if as_json:
        doc: dict[str, Any] = {"native": results[0].as_dict()}
        if len(results) > 1:
            doc["python"] = results[1].as_dict()
            a = results[0].engine_cpu_ms_per_call_s
            b = results[1].engine_cpu_ms_per_call_s
            doc["python_to_native_cpu_ratio"] = round(b / a, 2) if a and b else None
        click.echo(orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode())
    else:
        click.echo(render(results[0]))
        if len(results) > 1:
            click.echo("")
            click.echo(render(results[1]))
            click.echo("")
            click.echo(render_comparison(results[0], results[1]))
    # The plain-Python twins are a comparison, not a candidate: only the native run is judged.
    if check:
        _exit_on_missed(results[0].missed())


def _exit_on_missed(missed: list[str]) -> None:
    """``--check``: status 1, naming what was missed, when any target was."""
    if missed:
        click.echo(f"voice-engine bench: targets missed: {', '.join(missed)}", err=True)
        sys.exit(1)


def _versus_floor(opts: BenchOptions, rounds: int, progress: Progress | None, *,
                  as_json: bool, check: bool) -> None:
    """``--vs-floor``: the rounds, each engine round's table (or all as JSON), the ratio."""
    from engine.bench.run import main_loop
    from engine.bench.versus_floor import run_rounds

    try:
        result = run_rounds(lambda o: main_loop(o, progress), opts, rounds)
    except BenchError as exc:
        click.echo(f"voice-engine bench: {exc}", err=True)
        sys.exit(1)
    if as_json:
        doc = {"native": result.engine[0].as_dict(), "vs_floor": result.as_dict()}
        click.echo(orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode())
    else:
        for number, engine in enumerate(result.engine, 1):
            click.echo(f"-- round {number}: engine")
            click.echo(render(engine))
            click.echo("")
        click.echo(result.render())
    if check:
        _exit_on_missed(result.missed())
