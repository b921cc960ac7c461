"""Runs the model's tool calls for one worker's calls, off the audio path.

Each call of a tool is a task: the model's arguments are checked against the tool's schema
first (they are untrusted), then its action runs under the tool's timeout. Every outcome —
a result, a refusal, a failure, a timeout — goes back to the model as a JSON object, never as
an exception in the call. The rules:

- an unknown tool name, or arguments that fail the schema, answer at once with an error;
- a tool still running at its timeout answers ``{"status": "still_working", ...}`` so the
  model can tell the caller; its real result, if it comes within ``late_limit_s``, reaches the
  model as a late result (:meth:`engine.call.Call.tool_late_result`); after that, or once
  the call has ended, it is dropped (and its task cancelled);
- ``hangup`` answers at once and the call ends after the goodbye has played;
- ``transfer`` checks the destination against the tool's allow-list, finds the caller's
  channel through the Asterisk manager (by the ``VE_UUID`` channel variable the dialplan
  sets), answers the model, waits for what the model is saying to finish playing (up to
  ``transfer_wait_s``), then sends the manager's ``Redirect``;
- ``http`` sends one request (URL, headers and body from the tool; the response body read up
  to the tool's bound) and answers with its status and body;
- ``python`` awaits ``function(arguments)`` and answers with what it returns.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from typing import Any, Protocol

import orjson

from engine import logs
from engine.agent.toolspec import (
    HangupAction,
    HttpAction,
    PythonAction,
    ToolArgumentsInvalid,
    ToolSpec,
    TransferAction,
)
from engine.call import Call, RunTool
from engine.errors import EngineError

__all__ = ["CALLER_UUID_VARIABLE", "ToolHost", "ToolRunner"]

log = logging.getLogger("engine.agent.runner")

REPLY_START_S = 3.0
"""How long a transfer waits for the model to start the sentence it was asked for."""
MAX_NOTED_ARGUMENTS = 4096
"""A call's record keeps this many characters of a tool call's arguments."""
CALLER_UUID_VARIABLE = "VE_UUID"
"""The channel variable the dialplan sets to the call's UUID (see ``asterisk/``)."""


class ToolHost(Protocol):
    """What the runner needs of a call's adapter (:class:`engine.worker.CallConnection`)."""

    call: Call

    def act(self) -> None: ...

    @property
    def ended(self) -> bool: ...


class _Outcome:
    __slots__ = ("hangup", "output", "then")

    def __init__(self, output: dict[str, Any], *, hangup: bool = False,
                 then: Any = None) -> None:
        self.output = output
        self.hangup = hangup
        self.then = then


def _json(doc: Mapping[str, Any]) -> str:
    return orjson.dumps(doc, default=str).decode()


def _error(code: str, message: str, **more: Any) -> dict[str, Any]:
    return {"error": code, "message": message, **more}


def _ms(started: float) -> int:
    return round(1000 * (time.monotonic() - started))


def _note(host: ToolHost, name: str, arguments: str, outcome: str, started: float,
          level: int = logging.INFO, **more: Any) -> None:
    """A tool call's outcome: its log line, and an entry in the call's record (with the
    arguments as the model sent them)."""
    call = host.call
    ms = _ms(started)
    logs.event(log, "tool_call", level, call=str(call.uuid) if call.uuid else call.peer,
               tool=name, outcome=outcome, ms=ms, **more)
    if len(arguments) > MAX_NOTED_ARGUMENTS:
        arguments = arguments[:MAX_NOTED_ARGUMENTS] + "…"
    call.note_tool({"name": name, "arguments": arguments, "outcome": outcome, "ms": ms, **more})


class ToolRunner:
    """Runs tool calls as tasks; one per worker, shared by its calls.

    Args:
        manager: the Asterisk manager client (None: transfers answer that they are not
            available).
        http: an aiohttp ``ClientSession`` for ``http`` tools (made on first use if None).
        late_limit_s: how long a "still working" tool may still deliver its result.
        transfer_wait_s: how long a transfer waits for the model's words to play out.
    """

    def __init__(self, *, manager: Any = None, http: Any = None, late_limit_s: float = 120.0,
                 transfer_wait_s: float = 15.0) -> None:
        self.manager = manager
        self._http = http
        self._own_http = http is None
        self.late_limit_s = late_limit_s
        self.transfer_wait_s = transfer_wait_s
        self._tasks: dict[asyncio.Task[None], ToolHost] = {}

    def start(self, host: ToolHost, spec: ToolSpec | None, request: RunTool,
              known: tuple[str, ...]) -> None:
        """Runs ``request`` for ``host``'s call in a task of its own."""
        task = asyncio.get_running_loop().create_task(self._run(host, spec, request, known))
        self._tasks[task] = host
        task.add_done_callback(self._tasks.pop)

    def run_direct(self, host: ToolHost, spec: ToolSpec, arguments: dict[str, Any]) -> None:
        """Runs ``spec``'s action with ``arguments`` the agent file gave (a mapped keypad
        digit), not the model: nothing is answered, a transfer goes at once."""

        async def direct() -> None:
            started = time.monotonic()
            try:
                outcome = await asyncio.wait_for(
                    self._act(host, spec, arguments, wait=False), spec.timeout_s)
            except Exception as exc:
                logs.event(log, "dtmf_action_failed", logging.ERROR, call=str(host.call.uuid),
                           tool=spec.name, error=str(exc) or type(exc).__name__)
                host.call.note_tool({"name": spec.name, "by": "dtmf", "arguments": arguments,
                                     "outcome": "tool_failed", "ms": _ms(started)})
                return
            host.call.note_tool({"name": spec.name, "by": "dtmf", "arguments": arguments,
                                 "outcome": str(outcome.output.get("error", "ok")),
                                 "ms": _ms(started)})
            if outcome.then is not None:
                await outcome.then
            elif "error" in outcome.output:
                logs.event(log, "dtmf_action_failed", logging.ERROR, call=str(host.call.uuid),
                           tool=spec.name, error=outcome.output["message"])

        task = asyncio.get_running_loop().create_task(direct())
        self._tasks[task] = host
        task.add_done_callback(self._tasks.pop)

    def cancel(self, host: ToolHost) -> None:
        """The call ended: its tools stop; their results would have nowhere to go."""
        for task, owner in list(self._tasks.items()):
            if owner is host:
                task.cancel()

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._http is not None and self._own_http:
            await self._http.close()
            self._http = None

    async def _run(self, host: ToolHost, spec: ToolSpec | None, request: RunTool,
                   known: tuple[str, ...]) -> None:
        call_log = str(host.call.uuid) if host.call.uuid else host.call.peer
        started = time.monotonic()
        if spec is None:
            self._answer(host, request, _Outcome(_error(
                "unknown_tool", f"there is no tool named {request.name!r}", tools=list(known))))
            _note(host, request.name, request.arguments, "unknown_tool", started,
                  logging.WARNING)
            return
        try:
            arguments = spec.validate(request.arguments)
        except ToolArgumentsInvalid as exc:
            self._answer(host, request, _Outcome(_error("invalid_arguments", exc.reason)))
            _note(host, spec.name, request.arguments, "invalid_arguments", started,
                  logging.WARNING, reason=exc.reason)
            return
        work = asyncio.ensure_future(self._act(host, spec, arguments))
        try:
            done, _ = await asyncio.wait({work}, timeout=spec.timeout_s)
        except asyncio.CancelledError:
            self._abandon(work)
            raise
        if work in done:
            outcome = self._outcome(work, spec)
            self._answer(host, request, outcome)
            _note(host, spec.name, request.arguments, outcome.output.get("error", "ok"),
                  started)
            if outcome.then is not None:
                await outcome.then
            return
        self._answer(host, request, _Outcome({
            "status": "still_working",
            "message": f"{spec.name} is taking longer than usual; its result will follow. "
                       "Tell the caller you are still checking.",
        }))
        _note(host, spec.name, request.arguments, "still_working", started, logging.WARNING)
        try:
            await asyncio.wait_for(asyncio.shield(work), self.late_limit_s)
        except TimeoutError:
            work.cancel()
            logs.event(log, "tool_late_result_dropped", logging.WARNING, call=call_log,
                       tool=spec.name, after_s=round(time.monotonic() - started, 3))
            host.call.note_tool({"name": spec.name, "outcome": "late_result_dropped",
                                 "ms": _ms(started)})
            return
        except asyncio.CancelledError:
            work.cancel()
            raise
        outcome = self._outcome(work, spec)
        delivered = not host.ended
        if delivered:
            host.call.tool_late_result(spec.name, _json(outcome.output))
            host.act()
        logs.event(log, "tool_late_result", call=call_log, tool=spec.name,
                   delivered=delivered, ms=_ms(started))
        host.call.note_tool({"name": spec.name, "ms": _ms(started),
                             "outcome": "late_" + str(outcome.output.get("error", "ok"))})
        if outcome.then is not None:
            if delivered:
                await outcome.then
            else:
                outcome.then.close()

    @staticmethod
    def _abandon(work: asyncio.Future[_Outcome]) -> None:
        """The call ended mid-tool: its work stops, and a transfer it prepared is dropped."""
        if not work.done():
            work.cancel()
        elif not work.cancelled() and work.exception() is None and work.result().then:
            work.result().then.close()

    @staticmethod
    def _outcome(work: asyncio.Future[_Outcome], spec: ToolSpec) -> _Outcome:
        error = work.exception()
        if error is None:
            return work.result()
        if isinstance(error, EngineError):
            return _Outcome(_error("tool_failed", str(error)))
        log.error("tool_crashed", exc_info=error,
                  extra={"_fields": {"tool": spec.name, "error_class": type(error).__name__}})
        return _Outcome(_error("tool_failed", f"{spec.name} failed ({type(error).__name__})"))

    @staticmethod
    def _answer(host: ToolHost, request: RunTool, outcome: _Outcome) -> None:
        if host.ended:
            return
        host.call.tool_result(request.call_id, _json(outcome.output), hangup=outcome.hangup)
        host.act()

    async def _act(self, host: ToolHost, spec: ToolSpec, arguments: dict[str, Any], *,
                   wait: bool = True) -> _Outcome:
        action = spec.action
        if isinstance(action, HangupAction):
            return _Outcome({"ok": True, "message": "The call ends once your goodbye has "
                                                    "been played to the caller."}, hangup=True)
        if isinstance(action, TransferAction):
            return await self._transfer(host, spec.name, action, arguments, wait)
        if isinstance(action, HttpAction):
            return await self._request(action, arguments)
        if isinstance(action, PythonAction):
            result = await action.function(arguments)
            return _Outcome(result if isinstance(result, dict) else {"result": result})
        raise AssertionError(f"no runner for {type(action).__name__}")

    async def _transfer(self, host: ToolHost, name: str, action: TransferAction,
                        arguments: dict[str, Any], wait: bool) -> _Outcome:
        key = str(arguments.get(action.argument, ""))
        destination = action.destinations.get(key)
        if destination is None:
            return _Outcome(_error(
                "destination_not_allowed", f"{key!r} is not a destination this tool may "
                "transfer to", allowed=sorted(action.destinations)))
        if self.manager is None:
            return _Outcome(_error("transfer_unavailable", "transfers need the Asterisk "
                                   "manager, which this node is not configured to use"))
        uuid = host.call.uuid
        channel = None if uuid is None else await self.manager.find_channel(
            CALLER_UUID_VARIABLE, str(uuid))
        if channel is None:
            return _Outcome(_error("caller_channel_not_found", "the caller's channel was not "
                                   f"found (is {CALLER_UUID_VARIABLE} set by the dialplan?)"))
        redirect = self._redirect(host, name, channel.channel, destination,
                                  self.transfer_wait_s if wait else 0.0)
        return _Outcome({"ok": True, "transferring_to": key,
                         "message": "Say one short sentence; the caller is then transferred."},
                        then=redirect)

    async def _redirect(self, host: ToolHost, name: str, channel: str, destination: Any,
                        wait_s: float) -> None:
        """Redirects once the model's words have played, up to ``wait_s``: the words of the
        response the tool's answer asks for (it starts after this is called), or, if none
        starts within ``REPLY_START_S``, what is playing now."""
        call = host.call
        end = time.monotonic() + wait_s
        before = call.responses_created
        start_by = min(end, time.monotonic() + REPLY_START_S)
        while (not host.ended and call.responses_created == before
               and time.monotonic() < start_by):
            await asyncio.sleep(0.02)
        while not host.ended and time.monotonic() < end and call.speaking:
            await asyncio.sleep(0.02)
        if host.ended:
            return
        try:
            await self.manager.redirect(channel, destination.context, destination.exten,
                                        destination.priority)
        except EngineError as exc:
            logs.event(log, "transfer_failed", logging.ERROR, call=str(host.call.uuid),
                       channel=channel, error=str(exc))
            host.call.tool_late_result(name, _json(_error("transfer_failed", str(exc))))
            host.act()
            return
        logs.event(log, "transferred", call=str(host.call.uuid), channel=channel,
                   context=destination.context, exten=destination.exten)
        host.call.transferred()
        host.act()

    async def _request(self, action: HttpAction, arguments: dict[str, Any]) -> _Outcome:
        import aiohttp
        from yarl import URL

        if self._http is None:
            self._http = aiohttp.ClientSession()
        url = URL(action.url_for(arguments), encoded=True)
        body = None
        if action.body == "json":
            body = orjson.dumps(arguments)
        headers = action.header_values()
        if body is not None:
            headers.setdefault("Content-Type", "application/json")
        try:
            async with self._http.request(action.method, url, data=body, headers=headers,
                                          allow_redirects=False) as response:
                raw = await response.content.read(action.max_response_bytes + 1)
                status = response.status
                kind = response.headers.get("Content-Type", "")
        except aiohttp.ClientError as exc:
            return _Outcome(_error("backend_unreachable",
                                   f"the backend could not be reached ({type(exc).__name__})"))
        truncated = len(raw) > action.max_response_bytes
        raw = raw[: action.max_response_bytes]
        content: Any = raw.decode("utf-8", errors="replace")
        if "json" in kind and not truncated:
            try:
                content = orjson.loads(raw)
            except orjson.JSONDecodeError:
                pass
        doc: dict[str, Any] = {"status": status, "body": content}
        if truncated:
            doc["truncated"] = True
        if status >= 400:
            doc["error"] = "backend_error"
        return _Outcome(doc)
