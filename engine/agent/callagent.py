"""One call's agent: which profile and A/B variant it gets, its instructions' fields, and
what its keypad digits do.

The worker makes one :class:`CallAgent` per connection. :meth:`CallAgent.choose` runs when
the call's UUID arrives (before any of its audio is handled): the listener's profile, the
variant by the UUID's hash, the session and upstream format that follow. :meth:`fill` puts the
caller's details (from the Asterisk manager, when there is one) into the instructions before
the session is configured. :meth:`dtmf` applies the agent's DTMF policy: a mapped digit runs
its tool at once (hang up, transfer); other digits are forwarded to the model as text, a
burst of them together (after ``DTMF_QUIET_S`` without a new digit, or at ``#``), or ignored.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Mapping
from typing import Any
from uuid import UUID

from engine import logs
from engine.agent.agentfile import Agent, AgentFile
from engine.agent.runner import CALLER_UUID_VARIABLE, ToolHost, ToolRunner
from engine.agent.toolspec import HangupAction
from engine.call import CallSettings, EndReason, RunTool

__all__ = ["DTMF_QUIET_S", "CallAgent"]

log = logging.getLogger("engine.agent")

DTMF_QUIET_S = 1.5
MAX_DIGITS = 32
_AGENT_SESSION = ("instructions", "voice", "audio_format", "vad_type", "vad_threshold",
                  "vad_silence_ms", "vad_prefix_padding_ms", "vad_eagerness",
                  "transcription_model", "max_output_tokens", "tools")
FIELDS_TIMEOUT_S = 1.0


class CallAgent:
    """The agent side of one call."""

    def __init__(self, agents: AgentFile, base: CallSettings) -> None:
        self.agents = agents
        self.base = base
        self.port = 0
        self.agent: Agent | None = None
        self.variant: str | None = None
        self.fields: dict[str, str] = {}
        self._digits: list[str] = []
        self._flush: asyncio.TimerHandle | None = None

    def choose(self, uuid: UUID) -> CallSettings:
        """The call's settings once its UUID is known."""
        agent, variant = self.agents.profile_for_port(self.port).agent_for_call(uuid)
        self.agent, self.variant = agent, variant
        self.fields = {"call_id": str(uuid), "variant": variant or ""}
        return self._settings()

    def _settings(self) -> CallSettings:
        """The worker's settings with the agent's on top: with no agent file, the engine's
        settings are the agent's, and only its tools are added."""
        assert self.agent is not None
        ours = self.agent.session_settings(self.fields, temperature=self.base.session.temperature)
        if self.agents.path is None:
            session = dataclasses.replace(self.base.session, tools=ours.tools)
            return dataclasses.replace(self.base, session=session)
        session = dataclasses.replace(
            self.base.session, **{name: getattr(ours, name) for name in _AGENT_SESSION})
        transcripts = self.agent.transcripts
        return dataclasses.replace(
            self.base, session=session, upstream_format=self.agent.upstream_format,
            log_transcripts=self.base.log_transcripts if transcripts is None else transcripts)

    async def fill(self, manager: Any, uuid: UUID | None) -> CallSettings | None:
        """The caller's number, name and dialled number from the manager (bounded in time);
        the settings to use if they changed the instructions, else None."""
        if manager is None or uuid is None or self.agent is None:
            return None
        try:
            channel = await asyncio.wait_for(
                manager.find_channel(CALLER_UUID_VARIABLE, str(uuid)), FIELDS_TIMEOUT_S)
        except Exception as exc:  # caller details are optional: never the call's failure
            logs.event(log, "caller_details_unavailable", logging.WARNING, call=str(uuid),
                       error=str(exc) or type(exc).__name__)
            return None
        if channel is None:
            return None
        self.fields.update(caller_id=channel.caller_id_num, caller_name=channel.caller_id_name,
                           dialled=channel.dialled)
        return self._settings()

    @property
    def max_call_seconds(self) -> int | None:
        """The agent file's call length, if it has one (else the worker's limit holds)."""
        if self.agent is None or self.agents.path is None:
            return None
        return self.agent.max_call_seconds

    @property
    def tool_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.agent.tools) if self.agent is not None else ()

    def run_tool(self, host: ToolHost, runner: ToolRunner, request: RunTool) -> None:
        spec = self.agent.tool(request.name) if self.agent is not None else None
        runner.start(host, spec, request, self.tool_names)

    def dtmf(self, host: ToolHost, runner: ToolRunner, digit: str) -> None:
        """Applies the DTMF policy to one digit."""
        agent = self.agent
        if agent is None:
            return
        binding = agent.dtmf.map.get(digit)
        if binding is not None:
            spec = agent.tool(binding.tool)
            logs.event(log, "dtmf_action", call=str(host.call.uuid), digit=digit,
                       tool=binding.tool)
            if spec is not None and isinstance(spec.action, HangupAction):
                host.call.end_now(EndReason.AGENT_HANGUP)
                host.act()
            elif spec is not None:
                runner.run_direct(host, spec, dict(binding.arguments))
            return
        if agent.dtmf.mode != "forward":
            return
        self._digits.append(digit)
        if self._flush is not None:
            self._flush.cancel()
        if digit == "#" or len(self._digits) >= MAX_DIGITS:
            self.flush(host)
        else:
            self._flush = asyncio.get_running_loop().call_later(DTMF_QUIET_S, self.flush, host)

    def flush(self, host: ToolHost) -> None:
        self._flush = None
        digits, self._digits = "".join(self._digits), []
        host.call.forward_dtmf(digits)
        host.act()

    def close(self) -> None:
        if self._flush is not None:
            self._flush.cancel()
            self._flush = None

    def describe(self) -> Mapping[str, Any]:
        """For the call's end line: its profile and variant."""
        if self.agent is None:
            return {}
        return {"profile": self.agent.profile, "variant": self.variant}
