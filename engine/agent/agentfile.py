"""The agent file: what the model is told, how it hears, and the tools it may call.

A TOML file (``AGENT_FILE``); every key is optional but a tool's ``name``, ``description`` and
``action``. Keys left out take the engine's settings (``SYSTEM_PROMPT``, ``OPENAI_VOICE``,
``VAD_*``, …). A small one::

    [agent]
    instructions = "You answer for Example Ltd. The caller's number is {caller_id}."
    voice = "alloy"
    upstream_format = "pcmu"             # pcm16 (24 kHz) or pcmu (G.711 μ-law, 8 kHz)
    transcription_model = "whisper-1"    # "" turns transcription off
    max_output_tokens = 1024
    max_call_seconds = 600
    # type = "semantic_vad" takes eagerness = "low" | "medium" | "high" | "auto" instead
    turn_detection = { type = "server_vad", threshold = 0.5, silence_ms = 500 }

    [[tool]]
    name = "end_call"
    description = "End the call after saying goodbye."
    action = { type = "hangup" }

    [[tool]]
    name = "transfer_to_department"
    description = "Transfer the caller to a department."
    timeout_s = 8                        # the default
    action.type = "transfer"
    action.destinations.sales = { context = "from-internal", exten = "2001" }
    action.destinations.operator = { context = "from-internal", exten = "0", priority = 1 }

    [[tool]]
    name = "lookup_customer"
    description = "Look up the caller's account by phone number."
    parameters = { type = "object", required = ["phone"], properties.phone.type = "string" }
    [tool.action]
    type = "http"
    method = "GET"                       # GET, POST, PUT, PATCH, DELETE
    url = "{BACKEND_API_URL}/customers/{phone}"
    headers = { Authorization = "Bearer ${BACKEND_API_KEY}" }
    max_response_bytes = 16384           # the default

    [prices."gpt-realtime"]              # US dollars per million tokens (defaults: list prices)
    audio_input = 32.0
    audio_cached_input = 0.4

    [dtmf]
    mode = "forward"                     # digits to the model as text; or "ignore"
    map = { "0" = "transfer_to_department:operator", "#" = "end_call" }

    [[variant]]
    name = "short"
    weight = 1
    instructions = "Be very brief. The caller's number is {caller_id}."

    [[variant]]
    name = "control"
    weight = 3

    [profiles.spanish]
    listen_port = 9096
    instructions = "Atiendes las llamadas de Example Ltd en español."
    tools = ["end_call", "transfer_to_department"]

TOML wants an inline table on one line: write a long one as a table (``[tool.parameters]``,
``[tool.action]``) or with dotted keys, as the receptionist example does.

The rules:

- ``instructions`` is a template: ``{caller_id}``, ``{caller_name}``, ``{dialled}``,
  ``{call_id}`` and ``{variant}`` are filled per call (an unknown value is empty; ``{{`` is a
  brace); any other field is an error. ``SYSTEM_PROMPT`` is taken literally.
- A tool's ``parameters`` is a JSON schema of type object (a table, or a string of JSON); with
  none, the tool takes no arguments. The model's arguments are checked against it.
- Actions: ``hangup`` (after the goodbye has played); ``transfer`` to one of ``destinations``
  (``context``, ``exten``, ``priority``), which the model can only name: with no
  ``parameters`` the tool gets one, ``destination``, whose enum is the destinations' keys,
  and a tool that declares parameters needs a required property with exactly that enum;
  ``http``: ``url`` is a template of the tool's required parameters (URL-encoded) and
  ``{BACKEND_API_URL}``, header values may name environment variables as ``${NAME}`` (a
  missing one is an error), ``body = "json"`` (the default for POST, PUT and PATCH) sends the
  arguments as JSON; ``python``: ``callable = "package.module:function"``, an async function
  importable by the engine, awaited with the validated arguments (a dict).
- ``transcripts = true`` (an ``[agent]`` key) keeps transcripts in the logs and call records
  of this agent's calls whatever ``LOG_TRANSCRIPTS`` says (``false``: never).
- ``[prices."MODEL"]``: what ``MODEL``'s tokens cost, in US dollars per million, by kind
  (``text_input``, ``text_cached_input``, ``text_output``, ``audio_input``,
  ``audio_cached_input``, ``audio_output``); keys left out keep the engine's list price, and a
  model the engine has no price for (an Azure deployment's name) needs all six.
- ``[dtmf]``: ``mode`` says what happens to a digit not in ``map``; a digit in ``map`` runs
  a hangup or transfer tool by name, ``"tool:destination"`` for a transfer.
- ``[profiles.NAME]``: the agent of the listener on ``listen_port``; it may set any
  ``[agent]`` key (a ``turn_detection`` key by key), pick top-level tools with
  ``tools = [...]`` or declare its own ``[[profiles.NAME.tool]]``, and have its own ``dtmf``.
  Every other port (``LISTEN_PORT``) gets the top level.
- ``[[variant]]``: the top level's A/B variants (a profile's are its own
  ``[[profiles.NAME.variant]]``), each a ``name``, a positive ``weight`` (default 1) and
  ``[agent]`` keys that override the rest. A call's variant: the first 8 bytes of SHA-256
  of its UUID's 16 bytes, as a big-endian integer, modulo the total weight, picks a slot in
  the variants laid out in file order; the same UUID gets the same variant in every process
  and after restarts.

:func:`load` reports every problem at once, each as ``FILE: [table] key: message``.
"""

from __future__ import annotations

import hashlib
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from uuid import UUID

from engine import realtime
from engine.agent.toolspec import (
    NAME,
    Action,
    Destination,
    HangupAction,
    Header,
    HttpAction,
    PythonAction,
    Template,
    ToolArgumentsInvalid,
    ToolReader,
    ToolSpec,
    TransferAction,
    kind_of,
)
from engine.config import Config
from engine.errors import ConfigError
from engine.records.usage import DEFAULT_PRICES, PRICE_KEYS, Prices

__all__ = [
    "DISPOSITIONS",
    "TEMPLATE_FIELDS",
    "Action",
    "Agent",
    "AgentFile",
    "AgentFileError",
    "Destination",
    "DtmfBinding",
    "DtmfPolicy",
    "HangupAction",
    "Header",
    "HttpAction",
    "Profile",
    "PythonAction",
    "Template",
    "ToolArgumentsInvalid",
    "ToolSpec",
    "TransferAction",
    "TurnDetection",
    "default_agent",
    "load",
    "variant_slot",
]

TEMPLATE_FIELDS = ("caller_id", "caller_name", "dialled", "call_id", "variant")
# How a call ended, as a contact centre's wrap-up codes put it.
DISPOSITIONS = ("resolved", "unresolved", "callback_requested", "caller_request",
                "wrong_number", "no_response", "abusive", "other")
DTMF_DIGITS = "0123456789*#ABCD"

class AgentFileError(ConfigError):
    """The agent file cannot be used; ``problems`` lists each, with its place."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        super().__init__("invalid agent file:\n  " + "\n  ".join(self.problems))


# -- the agent ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TurnDetection:
    type: str = "server_vad"
    threshold: float = 0.5
    silence_ms: int = 500
    prefix_padding_ms: int = 300
    eagerness: str = "auto"


@dataclass(frozen=True, slots=True)
class DtmfBinding:
    """A digit that runs ``tool`` with ``arguments`` (ours, not the model's: not validated)."""

    tool: str
    arguments: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class DtmfPolicy:
    """``mode`` (``forward`` or ``ignore``) is for digits not in ``map``."""

    mode: str = "forward"
    map: Mapping[str, DtmfBinding] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Agent:
    """Everything one call's model session is given. Build it with :func:`load`."""

    profile: str
    variant: str | None
    instructions: Template
    voice: str
    turn_detection: TurnDetection
    transcription_model: str
    max_output_tokens: int
    upstream_format: str
    max_call_seconds: int
    tools: tuple[ToolSpec, ...]
    dtmf: DtmfPolicy = field(default_factory=DtmfPolicy)
    transcripts: bool | None = None  # None: LOG_TRANSCRIPTS decides

    def instructions_for(self, fields: Mapping[str, str]) -> str:
        """The instructions for one call; ``variant`` defaults to this agent's."""
        return self.instructions.fill({"variant": self.variant or "", **fields})

    def tool(self, name: str) -> ToolSpec | None:
        """The tool called ``name``, or None (the model invented it)."""
        return next((t for t in self.tools if t.name == name), None)

    def function_declarations(self) -> list[dict[str, Any]]:
        return [t.declaration() for t in self.tools]

    def session_settings(self, fields: Mapping[str, str], *, temperature: float | None = None,
                         ) -> realtime.SessionSettings:
        """The session this agent asks for on one call (``temperature`` for beta only)."""
        td = self.turn_detection
        return realtime.SessionSettings(
            instructions=self.instructions_for(fields), voice=self.voice,
            audio_format=self.upstream_format, vad_type=td.type, vad_threshold=td.threshold,
            vad_silence_ms=td.silence_ms, vad_prefix_padding_ms=td.prefix_padding_ms,
            vad_eagerness=td.eagerness, transcription_model=self.transcription_model,
            max_output_tokens=self.max_output_tokens, temperature=temperature,
            tools=tuple(self.function_declarations()),
        )


def variant_slot(uuid: UUID, total: int) -> int:
    """The call's slot in ``range(total)``: SHA-256 of the UUID's bytes, first 8 bytes as a
    big-endian integer, modulo ``total``; the same in every process and every run."""
    return int.from_bytes(hashlib.sha256(uuid.bytes).digest()[:8], "big") % total


@dataclass(frozen=True, slots=True)
class Profile:
    """The agent of one listener: one :class:`Agent` per variant (one, unnamed, without)."""

    name: str
    listen_port: int | None  # None: LISTEN_PORT, and any port no profile names
    agents: tuple[Agent, ...]
    weights: tuple[int, ...] = (1,)

    def agent_for_call(self, uuid: UUID) -> tuple[Agent, str | None]:
        """The call's agent and its variant's name (None without A/B)."""
        if len(self.agents) == 1:
            return self.agents[0], self.agents[0].variant
        slot = variant_slot(uuid, sum(self.weights))
        for agent, weight in zip(self.agents, self.weights, strict=True):
            if slot < weight:
                return agent, agent.variant
            slot -= weight
        raise AssertionError("unreachable: the slot is below the total weight")


@dataclass(frozen=True, slots=True)
class AgentFile:
    """The loaded file: the top-level profile and one per ``[profiles.NAME]``."""

    path: Path | None
    default: Profile
    profiles: tuple[Profile, ...] = ()
    warnings: tuple[str, ...] = ()
    prices: Mapping[str, Prices] = field(default_factory=lambda: dict(DEFAULT_PRICES))

    def profile_for_port(self, port: int) -> Profile:
        return next((p for p in self.profiles if p.listen_port == port), self.default)

    @property
    def listen_ports(self) -> tuple[int, ...]:
        """The ports the profiles add to LISTEN_PORT."""
        return tuple(p.listen_port for p in self.profiles if p.listen_port is not None)

    def describe(self) -> list[str]:
        """A few lines for people: each profile's port, tools, DTMF map and variants."""
        lines = [f"agent file: {self.path}" if self.path else
                 "agent: the default (SYSTEM_PROMPT and end_call); set AGENT_FILE for more"]
        for profile in (self.default, *self.profiles):
            agent = profile.agents[0]
            port = "LISTEN_PORT" if profile.listen_port is None else f"port {profile.listen_port}"
            tools = ", ".join(t.name for t in agent.tools) or "none"
            digits = ", ".join(f"{d}={b.tool}" + "".join(f":{v}" for v in b.arguments.values())
                               for d, b in agent.dtmf.map.items())
            lines.append(f"  profile {profile.name} on {port}: tools {tools}; dtmf "
                         f"{agent.dtmf.mode}" + (f", {digits}" if digits else ""))
            if len(profile.agents) > 1:
                total = sum(profile.weights)
                shares = ", ".join(f"{a.variant} {100 * w / total:.0f}%"
                                   for a, w in zip(profile.agents, profile.weights, strict=True))
                lines.append(f"    variants: {shares}")
        return lines


# -- the default agent --------------------------------------------------------------------

END_CALL = {
    "type": "object",
    "properties": {
        "summary": {"type": "string",
                    "description": "One or two sentences: what the caller wanted and the outcome."},
        "disposition": {"type": "string", "enum": list(DISPOSITIONS),
                        "description": "How the call ended."},
    },
    "required": ["summary", "disposition"],
    "additionalProperties": False,
}


def _end_call() -> ToolSpec:
    return ToolSpec(
        "end_call",
        "End the call. Say a short goodbye first: the line is hung up once it has been heard.",
        END_CALL, HangupAction())


def _base(config: Config) -> dict[str, Any]:
    return {
        "instructions": Template.literal(config.system_prompt),
        "voice": config.openai_voice,
        "turn_detection": {"type": config.vad_type, "threshold": config.vad_threshold,
                           "silence_ms": config.vad_silence_ms,
                           "prefix_padding_ms": config.vad_prefix_padding_ms,
                           "eagerness": config.vad_eagerness},
        "transcription_model": config.transcription_model,
        "max_output_tokens": config.max_output_tokens,
        "upstream_format": config.upstream_format,
        "max_call_seconds": config.max_call_seconds,
    }


def _agent(values: dict[str, Any], profile: str, variant: str | None,
           tools: tuple[ToolSpec, ...], dtmf: DtmfPolicy) -> Agent:
    values = {**values, "turn_detection": TurnDetection(**values["turn_detection"])}
    return Agent(profile=profile, variant=variant, tools=tools, dtmf=dtmf, **values)


def default_agent(config: Config) -> AgentFile:
    """The agent without a file: ``SYSTEM_PROMPT`` and ``end_call``, settings from ``config``."""
    agent = _agent(_base(config), "default", None, (_end_call(),), DtmfPolicy())
    return AgentFile(None, Profile("default", None, (agent,)))


# -- loading ------------------------------------------------------------------------------

_TOP_KEYS = ("agent", "tool", "dtmf", "profiles", "variant", "prices")
_AGENT_KEYS = ("instructions", "voice", "turn_detection", "transcription_model",
               "max_output_tokens", "upstream_format", "max_call_seconds", "transcripts")
_TURN_KEYS = ("type", "threshold", "silence_ms", "prefix_padding_ms", "eagerness")
_PROFILE_KEYS = ("listen_port", "tools", "tool", "dtmf", "variant", *_AGENT_KEYS)
_VARIANT_KEYS = ("name", "weight", *_AGENT_KEYS)
_TOML_PLACE = re.compile(r"\s*\((?:at line (\d+), column (\d+)|at end of document)\)$")


def load(path: Path, env: Mapping[str, str], config: Config) -> AgentFile:
    """Reads and checks the agent file at ``path``.

    Args:
        path: the TOML file.
        env: where ``${NAME}`` in headers and ``{BACKEND_API_URL}`` in URLs are looked up.
        config: the engine's settings: what the file leaves out, and the ports taken.

    Raises:
        AgentFileError: every problem, each with its file, table and key.
    """
    try:
        with path.open("rb") as handle:
            doc = tomllib.load(handle)
    except OSError as exc:
        raise AgentFileError([f"{path}: cannot read it: {exc.strerror}"]) from None
    except tomllib.TOMLDecodeError as exc:
        raise AgentFileError([f"{path}: {_toml_problem(str(exc))}"]) from None
    except UnicodeDecodeError:
        raise AgentFileError([f"{path}: not UTF-8 text"]) from None
    reader = _Reader(str(path), env, config)
    agent_file = reader.document(doc, path)
    if reader.problems:
        raise AgentFileError(list(dict.fromkeys(reader.problems)))
    return agent_file


def _toml_problem(message: str) -> str:
    place = _TOML_PLACE.search(message)
    if place is None:
        return f"invalid TOML: {message}"
    where = f"line {place[1]}, column {place[2]}" if place[1] else "at the end"
    return f"{where}: invalid TOML: {message[:place.start()]}"


def _merge(*layers: Mapping[str, Any]) -> dict[str, Any]:
    """Later layers win; ``turn_detection`` merges key by key."""
    out: dict[str, Any] = {}
    for layer in layers:
        for key, value in layer.items():
            out[key] = {**out.get(key, {}), **value} if key == "turn_detection" else value
    return out


_RawDtmf = tuple[str, dict[str, tuple[str, str | None]]]
_RawVariant = tuple[str, int, dict[str, Any]]


class _Reader(ToolReader):
    """Walks the parsed TOML once, collecting every problem with its place."""

    def __init__(self, file: str, env: Mapping[str, str], config: Config) -> None:
        super().__init__(file, env)
        self.config = config
        self.problems: list[str] = []
        self.warnings: list[str] = []
        self.broken: set[str] = set()  # tools declared with problems: no follow-on errors


    def document(self, doc: dict[str, Any], path: Path) -> AgentFile:
        top = "(top level)"
        self.keys(doc, top, _TOP_KEYS)
        agent_doc = self.get(doc, top, "agent", "table") or {}
        self.keys(agent_doc, "[agent]", _AGENT_KEYS)
        layers = [_base(self.config), self.layer(agent_doc, "[agent]")]
        tools = self.tools(self.get(doc, top, "tool", "array") or [], "[[tool]]")
        dtmf = self.dtmf(self.get(doc, top, "dtmf", "table"), "[dtmf]")
        variants = self.variants(self.get(doc, top, "variant", "array") or [], "[[variant]]")
        default = self.profile("default", None, layers, tools, (dtmf, "[dtmf]"), variants)
        taken: dict[int, str] = {}
        for env_name in ("LISTEN_PORT", "HEALTH_PORT", "AGENT_PORT"):
            port = getattr(self.config, env_name.lower())
            if port:
                taken.setdefault(port, env_name)
        profiles = []
        for name, pdoc in (self.get(doc, top, "profiles", "table") or {}).items():
            where = f"[profiles.{name}]"
            if not isinstance(pdoc, dict):
                self.problem("[profiles]", name, f"expected a table, got {kind_of(pdoc)}")
                continue
            if not NAME.match(name) or name == "default":
                self.problem(where, "", "a profile's name is letters, digits, _ and - (at most "
                             "64), and not default (the top level's)")
            self.keys(pdoc, where, _PROFILE_KEYS)
            port = self.ranged(pdoc, where, "listen_port", "integer", 1, 65535)
            if "listen_port" not in pdoc:
                self.problem(where, "listen_port", "missing: the port this profile answers on")
            elif port in taken:
                self.problem(where, "listen_port", f"{port} is taken by {taken[port]}")
            elif port is not None:
                taken[port] = f"profile {name}"
            ptools = self.profile_tools(pdoc, where, name, tools)
            pdtmf = (self.dtmf(self.get(pdoc, where, "dtmf", "table"), f"{where} dtmf")
                     if "dtmf" in pdoc else dtmf, f"{where} dtmf" if "dtmf" in pdoc else "[dtmf]")
            own = self.get(pdoc, where, "variant", "array") or []
            pvariants = self.variants(own, f"[[profiles.{name}.variant]]")
            player = self.layer(pdoc, where)
            profiles.append(self.profile(name, port, [*layers, player], ptools, pdtmf,
                                         pvariants))
        prices = self.prices(self.get(doc, top, "prices", "table"))
        return AgentFile(path, default, tuple(profiles), tuple(self.warnings), prices)

    def prices(self, doc: dict[str, Any] | None) -> dict[str, Prices]:
        """The engine's prices with the file's on top."""
        out = dict(DEFAULT_PRICES)
        for model, pdoc in (doc or {}).items():
            where = f'[prices."{model}"]'
            if not isinstance(pdoc, dict):
                self.problem("[prices]", model, f"expected a table, got {kind_of(pdoc)}")
                continue
            self.keys(pdoc, where, PRICE_KEYS)
            base = out.get(model)
            values = {}
            for key in PRICE_KEYS:
                value = self.ranged(pdoc, where, key, "number", 0, 100_000)
                if value is not None:
                    values[key] = float(value)
                elif key not in pdoc and base is None:
                    self.problem(where, key, "missing: the engine has no price for this model, "
                                 "so every kind needs one")
                elif base is not None:
                    values[key] = getattr(base, key)
            if len(values) == len(PRICE_KEYS):
                out[model] = Prices(**values)
        return out

    def profile_tools(self, pdoc: dict[str, Any], where: str, name: str,
                      tools: tuple[ToolSpec, ...]) -> tuple[ToolSpec, ...]:
        own = self.get(pdoc, where, "tool", "array")
        picked = self.get(pdoc, where, "tools", "array")
        if own is not None and picked is not None:
            self.problem(where, "tools", f"give tools = [...] or [[profiles.{name}.tool]], "
                         "not both")
        if own is not None:
            return self.tools(own, f"[[profiles.{name}.tool]]")
        if picked is None:
            return tools
        by_name = {t.name: t for t in tools}
        out: list[ToolSpec] = []
        for item in picked:
            if not isinstance(item, str):
                self.problem(where, "tools", f"expected tool names, got {kind_of(item)}")
            elif item in (t.name for t in out):
                self.problem(where, "tools", f"{item} is listed twice")
            elif item in by_name:
                out.append(by_name[item])
            elif item not in self.broken:
                known = ", ".join(by_name) or "none"
                self.problem(where, "tools", f"no [[tool]] is called {item}; there are: {known}")
        return tuple(out)

    def profile(self, name: str, port: int | None, layers: list[dict[str, Any]],
                tools: tuple[ToolSpec, ...], dtmf: tuple[_RawDtmf | None, str],
                variants: list[_RawVariant]) -> Profile:
        policy = self.resolve_dtmf(dtmf[0], dtmf[1], tools, name)
        if not any(isinstance(t.action, HangupAction) for t in tools):
            self.warnings.append(f"{self.file}: profile {name}: no tool hangs up, so the model "
                                 "cannot end a call (the caller or MAX_CALL_SECONDS will)")
        values = _merge(*layers)
        if not variants:
            return Profile(name, port, (_agent(values, name, None, tools, policy),))
        agents = tuple(_agent(_merge(values, layer), name, vname, tools, policy)
                       for vname, _, layer in variants)
        return Profile(name, port, agents, tuple(w for _, w, _ in variants))

    # -- [agent] keys, also in profiles and variants ------------------------------------

    def layer(self, doc: Mapping[str, Any], where: str) -> dict[str, Any]:
        """The ``[agent]`` keys of ``doc`` that are set and valid."""
        out: dict[str, Any] = {}
        text = self.get(doc, where, "instructions", "string")
        if text is not None:
            try:
                out["instructions"] = Template.parse(text, TEMPLATE_FIELDS)
            except ValueError as exc:
                self.problem(where, "instructions", str(exc))
        voice = self.get(doc, where, "voice", "string")
        if voice is not None and not voice.strip():
            self.problem(where, "voice", "must not be empty")
        elif voice is not None:
            out["voice"] = voice
        found = {
            "transcription_model": self.get(doc, where, "transcription_model", "string"),
            "max_output_tokens": self.ranged(doc, where, "max_output_tokens", "integer", 1, 4096),
            "upstream_format": self.choice(doc, where, "upstream_format", ("pcm16", "pcmu")),
            "max_call_seconds": self.ranged(doc, where, "max_call_seconds", "integer", 1,
                                            86_400),
            "transcripts": self.get(doc, where, "transcripts", "boolean"),
        }
        out.update((k, v) for k, v in found.items() if v is not None)
        td = self.get(doc, where, "turn_detection", "table")
        if td is not None:
            pre = "turn_detection."
            self.keys(td, where, _TURN_KEYS, pre)
            turn = {
                "type": self.choice(td, where, "type", ("server_vad", "semantic_vad"), pre),
                "threshold": self.ranged(td, where, "threshold", "number", 0, 1, pre),
                "silence_ms": self.ranged(td, where, "silence_ms", "integer", 0, 10_000, pre),
                "prefix_padding_ms": self.ranged(td, where, "prefix_padding_ms", "integer", 0,
                                                 10_000, pre),
                "eagerness": self.choice(td, where, "eagerness",
                                         ("low", "medium", "high", "auto"), pre),
            }
            out["turn_detection"] = {k: v for k, v in turn.items() if v is not None}
            if "threshold" in out["turn_detection"]:
                out["turn_detection"]["threshold"] = float(turn["threshold"])
        return out

    def variants(self, array: list[Any], label: str) -> list[_RawVariant]:
        out: list[_RawVariant] = []
        for i, vdoc in enumerate(array, 1):
            if not isinstance(vdoc, dict):
                self.problem(f"{label} #{i}", "", f"expected a table, got {kind_of(vdoc)}")
                continue
            name = vdoc.get("name")
            where = f"{label} #{i}" + (f' "{name}"' if isinstance(name, str) else "")
            self.keys(vdoc, where, _VARIANT_KEYS)
            name = self.get(vdoc, where, "name", "string", required="the name logged with "
                            "each call of this variant")
            weight = vdoc.get("weight", 1)
            if isinstance(weight, bool) or not isinstance(weight, int) or weight < 1:
                self.problem(where, "weight", "must be a whole number of at least 1 (its share "
                             f"of the calls), not {weight!r}")
            layer = self.layer(vdoc, where)
            if name is not None and not NAME.match(name):
                self.problem(where, "name", "must be letters, digits, _ and - (at most 64)")
            elif name is not None and name in (n for n, _, _ in out):
                self.problem(where, "name", f'"{name}" is already the name of a variant')
            elif name is not None and isinstance(weight, int) and weight >= 1:
                out.append((name, weight, layer))
        return out

    # -- tools --------------------------------------------------------------------------


    def dtmf(self, doc: dict[str, Any] | None, where: str) -> _RawDtmf | None:
        if doc is None:
            return None
        self.keys(doc, where, ("mode", "map"))
        mode = self.choice(doc, where, "mode", ("forward", "ignore")) or "forward"
        bindings: dict[str, tuple[str, str | None]] = {}
        for digit, target in (self.get(doc, where, "map", "table") or {}).items():
            at = f'map."{digit}"'
            if len(digit) != 1 or digit not in DTMF_DIGITS:
                self.problem(where, at, f"not a DTMF digit ({' '.join(DTMF_DIGITS)})")
            elif not isinstance(target, str):
                self.problem(where, at, f'expected "tool" or "tool:destination", got '
                             f"{kind_of(target)}")
            else:
                tool, _, argument = target.partition(":")
                bindings[digit] = (tool, argument or None)
        return mode, bindings

    def resolve_dtmf(self, raw: _RawDtmf | None, where: str, tools: tuple[ToolSpec, ...],
                     profile: str) -> DtmfPolicy:
        if raw is None:
            return DtmfPolicy()
        mode, bindings = raw
        by_name = {t.name: t for t in tools}
        out: dict[str, DtmfBinding] = {}
        for digit, (name, argument) in bindings.items():
            at = f'map."{digit}"'
            spec = by_name.get(name)
            if spec is None:
                if name not in self.broken:
                    known = ", ".join(by_name) or "none"
                    own = (f"; or give [profiles.{profile}] its own dtmf"
                           if profile != "default" and where == "[dtmf]" else "")
                    self.problem(where, at, f"no tool of profile {profile} is called {name}; "
                                 f"its tools are: {known}{own}")
                continue
            action = spec.action
            if isinstance(action, HangupAction) and argument is None:
                out[digit] = DtmfBinding(name)
            elif isinstance(action, HangupAction):
                self.problem(where, at, f"{name} hangs up: it takes no destination")
            elif isinstance(action, TransferAction):
                if argument is None and len(action.destinations) == 1:
                    argument = next(iter(action.destinations))
                if argument is not None and argument in action.destinations:
                    out[digit] = DtmfBinding(name, {action.argument: argument})
                else:
                    choices = ", ".join(f"{name}:{d}" for d in action.destinations)
                    self.problem(where, at, f"{name} needs one of its destinations: {choices}")
            else:
                self.problem(where, at, f"{name} is not a hangup or transfer tool: a digit runs "
                             "only those")
        return DtmfPolicy(mode, out)
