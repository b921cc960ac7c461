"""``voice-engine calls``: what happened on a call, from its record, without SQL.

``calls list`` shows the latest calls (``--since 1h``, ``--reason upstream_failed``,
``--limit``), ``calls show UUID`` one call in full: its timing, caller, agent, tools,
usage and cost, and its transcript when one was kept. ``--json`` prints the records as
JSON (a list for ``list``, one object for ``show``). The store is ``RECORDS_URL`` (from the
environment or ``.env``) unless ``--records-url`` names another. Exit status: 0, 1 when the
store cannot be read or ``show`` finds no such call, 2 for bad arguments.
"""

from __future__ import annotations

import datetime as dt
import re
import sys
from pathlib import Path
from typing import Any

import click
import orjson

from engine.errors import ConfigError, RecordsError
from engine.records.record import CallRecord
from engine.records.store import Store, open_store

__all__ = ["command", "parse_since"]

_SPAN = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw])")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_since(text: str, now: dt.datetime | None = None) -> dt.datetime:
    """``90s``, ``15m``, ``1h``, ``2d``, ``1w`` before ``now``, or an ISO 8601 date or time
    (UTC unless it says otherwise).

    Raises:
        ValueError: neither.
    """
    now = now or dt.datetime.now(dt.UTC)
    span = _SPAN.fullmatch(text.strip().lower())
    if span is not None:
        return now - dt.timedelta(seconds=float(span[1]) * _UNIT_S[span[2]])
    try:
        moment = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"{text!r} is not a span (90s, 15m, 1h, 2d, 1w) or an ISO date/time"
                         ) from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=dt.UTC)


def _store(records_url: str | None, env_file: Path | None) -> Store:
    from engine import config as settings

    try:
        url = records_url
        if url is None:
            url = settings.load(None, env_file, require_key=False).records_url
        if not url:
            raise ConfigError("RECORDS_URL is empty: this node keeps no call records")
        return open_store(url, readonly=True)
    except ConfigError as exc:
        click.echo(f"voice-engine: {exc}", err=True)
        sys.exit(2)
    except RecordsError as exc:
        click.echo(f"voice-engine: {exc}", err=True)
        sys.exit(1)


def _json(doc: Any) -> None:
    click.echo(orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode())


@click.group(name="calls", context_settings={"help_option_names": ["-h", "--help"]})
def command() -> None:
    """Show call records (RECORDS_URL): what happened on a call."""


_url_option = click.option("--records-url", default=None, metavar="URL",
                           help="read this store instead of RECORDS_URL")
_env_option = click.option("--env-file", type=click.Path(dir_okay=False, path_type=Path),
                           default=None, help="read RECORDS_URL from this file, not ./.env")
_json_option = click.option("--json", "as_json", is_flag=True, help="print JSON")


@command.command(name="list")
@click.option("--since", default=None, metavar="WHEN",
              help="calls started since: 90s, 15m, 1h, 2d, 1w, or an ISO date/time")
@click.option("--reason", default=None, help="only calls that ended for this reason")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 100_000))
@_json_option
@_url_option
@_env_option
def list_calls(since: str | None, reason: str | None, limit: int, as_json: bool,
               records_url: str | None, env_file: Path | None) -> None:
    """The latest calls, newest first."""
    try:
        start = parse_since(since) if since is not None else None
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--since") from None
    store = _store(records_url, env_file)
    try:
        records = store.recent(since=start, reason=reason, limit=limit)
    except RecordsError as exc:
        click.echo(f"voice-engine: {exc}", err=True)
        sys.exit(1)
    finally:
        store.close()
    if as_json:
        _json([r.as_doc() for r in records])
        return
    if not records:
        click.echo("no calls")
        return
    click.echo(f"{'started (UTC)':19}  {'call':36}  {'secs':>7}  {'reason':18}  "
               f"{'caller':16}  {'agent':18}  {'tools':>5}  {'cost $':>8}")
    for r in records:
        agent = r.profile + (f"/{r.variant}" if r.variant else "")
        cost = f"{r.cost_usd:.4f}" if r.cost_usd is not None else "-"
        click.echo(f"{_when(r.started_at):19}  {r.uuid:36}  {r.duration_s:7.1f}  "
                   f"{r.end_reason:18}  {(r.caller_id or '-')[:16]:16}  {agent[:18]:18}  "
                   f"{len(r.tools):5}  {cost:>8}")


@command.command(name="show")
@click.argument("uuid")
@_json_option
@_url_option
@_env_option
def show_call(uuid: str, as_json: bool, records_url: str | None,
              env_file: Path | None) -> None:
    """One call in full (the latest, if Asterisk used its UUID more than once)."""
    store = _store(records_url, env_file)
    try:
        records = store.get(uuid.strip().lower())
    except RecordsError as exc:
        click.echo(f"voice-engine: {exc}", err=True)
        sys.exit(1)
    finally:
        store.close()
    if not records:
        click.echo(f"voice-engine: no call record for {uuid}", err=True)
        sys.exit(1)
    record = records[0]
    if as_json:
        _json(record.as_doc())
        return
    for line in describe(record):
        click.echo(line)
    if len(records) > 1:
        click.echo(f"({len(records) - 1} earlier call(s) with this UUID: --json shows the "
                   "latest; list them with calls list)")


def _when(moment: dt.datetime | None) -> str:
    if moment is None:
        return "-"
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


def describe(r: CallRecord) -> list[str]:
    """The lines ``calls show`` prints."""
    lines = [
        f"call        {r.uuid}",
        f"node        {r.node}  (peer {r.peer}, port {r.listen_port})",
        f"agent       {r.profile}" + (f", variant {r.variant}" if r.variant else ""),
        f"caller      {r.caller_id or '-'}" + (f" ({r.caller_name})" if r.caller_name else "")
        + (f", dialled {r.dialled}" if r.dialled else ""),
        f"started     {_when(r.started_at)} UTC",
        f"answered    {_when(r.answered_at)}",
        f"ended       {_when(r.ended_at)}  after {r.duration_s:.1f} s: {r.end_reason}",
    ]
    if r.error:
        lines.append(f"error       {r.error_class}: {r.error}")
    lines += [
        f"upstream    {r.model} ({r.dialect}, {r.upstream_format}), "
        f"{r.upstream_sessions} session(s); caller at {r.rate or '-'} Hz",
        f"audio       {r.caller_frames} frames in, {r.frames_out} out, {r.underruns} underruns, "
        f"{r.clock_late_wakeups} late clock wake-ups",
        f"turns       {r.responses} responses, {r.bargeins} barge-ins, "
        f"DTMF {r.dtmf or '-'}",
        f"tokens      in {r.input_text_tokens} text + {r.input_audio_tokens} audio "
        f"(cached {r.cached_text_tokens} + {r.cached_audio_tokens}), out "
        f"{r.output_text_tokens} text + {r.output_audio_tokens} audio",
        "cost        " + (f"${r.cost_usd:.4f}" if r.cost_usd is not None
                          else "- (no prices for this model)"),
    ]
    if r.recording:
        lines.append(f"recording   {r.recording}")
    for tool in r.tools:
        by = f" (by {tool['by']})" if tool.get("by") else ""
        args = tool.get("arguments")
        shown = args if isinstance(args, str) else orjson.dumps(args).decode()
        lines.append(f"tool        {tool.get('name')}{by}: {tool.get('outcome')} in "
                     f"{tool.get('ms')} ms" + (f", arguments {shown}" if args else ""))
    if r.transcript is not None:
        lines.append("transcript")
        lines += [f"  {role}: {text}" for role, text in r.transcript]
    return lines
