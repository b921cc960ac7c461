"""Tools as the agent file declares them: actions, compiled schemas, and reading ``[[tool]]``.

A :class:`ToolSpec` is what the model is offered (:meth:`ToolSpec.declaration`) and what its
arguments are checked against (:meth:`ToolSpec.validate`, a schema compiled once with
fastjsonschema, which follows no ``$ref`` outside the schema). Its action says what a call of
it does; running it is the tool runner's job. :class:`ToolReader` reads ``[[tool]]`` tables
for :mod:`engine.agent.agentfile` (the format is described there), reporting each problem
with its place rather than stopping at the first.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import re
import string
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlsplit

import fastjsonschema
import orjson

from engine.errors import EngineError

__all__ = [
    "BACKEND_URL",
    "NAME",
    "Action",
    "Destination",
    "HangupAction",
    "Header",
    "HttpAction",
    "PythonAction",
    "TableReader",
    "Template",
    "ToolArgumentsInvalid",
    "ToolReader",
    "ToolSpec",
    "TransferAction",
    "kind_of",
]

NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
BACKEND_URL = "BACKEND_API_URL"
_ENV_REF = re.compile(r"\$\{([^}]*)\}")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
_JSON_TYPES = ("string", "number", "integer", "boolean", "object", "array", "null")
_TOOL_KEYS = ("name", "description", "parameters", "timeout_s", "action")
_ACTION_KEYS = {
    "hangup": ("type",),
    "transfer": ("type", "destinations"),
    "http": ("type", "method", "url", "headers", "body", "max_response_bytes"),
    "python": ("type", "callable"),
}

_KINDS: dict[str, tuple[type, ...]] = {
    "string": (str,), "integer": (int,), "number": (int, float), "boolean": (bool,),
    "table": (dict,), "array": (list,),
}
_ARTICLE = {"integer": "an integer", "array": "an array"}


def kind_of(value: Any) -> str:
    for name, types in (("boolean", (bool,)), ("integer", (int,)), ("float", (float,)),
                        ("string", (str,)), ("table", (dict,)), ("array", (list,))):
        if isinstance(value, types):
            return _ARTICLE.get(name, f"a {name}")
    return "a date or time"




class ToolArgumentsInvalid(EngineError):
    """The model's arguments for ``tool`` are not JSON or fail its schema; ``reason`` is short
    enough to give back to the model."""

    def __init__(self, tool: str, reason: str) -> None:
        self.tool = tool
        self.reason = reason
        super().__init__(f"invalid arguments for tool {tool}: {reason}")


# -- templates ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Template:
    """Text with ``{field}`` places, checked when it is made; fill it with :meth:`fill`."""

    source: str
    pieces: tuple[tuple[str, str | None], ...] = field(repr=False, compare=False)

    @classmethod
    def parse(cls, source: str, allowed: Sequence[str] | None = None) -> Template:
        """Raises ValueError naming a bad brace, a field with a format, or one not in
        ``allowed`` (any name when None)."""
        pieces: list[tuple[str, str | None]] = []
        for literal, name, spec, conversion in string.Formatter().parse(source):
            if name is not None:
                if not name or not name.isidentifier() and not NAME.match(name):
                    raise ValueError(f"{{{name}}} is not a field name")
                if allowed is not None and name not in allowed:
                    shown = ", ".join(allowed) if allowed else "none"
                    raise ValueError(f"unknown field {{{name}}}; the fields are {shown}")
                if spec or conversion:
                    raise ValueError(f"field {{{name}}} may not have a format or conversion")
            pieces.append((literal, name))
        return cls(source, tuple(pieces))

    @classmethod
    def literal(cls, text: str) -> Template:
        return cls(text.replace("{", "{{").replace("}", "}}"), ((text, None),))

    @property
    def fields(self) -> tuple[str, ...]:
        return tuple(name for _, name in self.pieces if name is not None)

    def fill(self, values: Mapping[str, str], escape: Callable[[str], str] = str) -> str:
        """The text with each field's value (passed through ``escape``); missing is empty."""
        return "".join(lit + (escape(values.get(name, "")) if name else "")
                       for lit, name in self.pieces)

    def bind(self, name: str, value: str) -> Template:
        """A template with ``name`` replaced by ``value`` for good."""
        pieces: list[tuple[str, str | None]] = []
        for lit, field_name in self.pieces:
            if field_name == name:
                lit, field_name = lit + value, None
            if pieces and pieces[-1][1] is None:
                lit = pieces.pop()[0] + lit
            pieces.append((lit, field_name))
        source = "".join(lit.replace("{", "{{").replace("}", "}}") + (f"{{{n}}}" if n else "")
                         for lit, n in pieces)
        return Template(source, tuple(pieces))


# -- tools and their actions --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HangupAction:
    """End the call once the model's goodbye has been played to the caller."""


@dataclass(frozen=True, slots=True)
class Destination:
    context: str
    exten: str
    priority: int = 1


@dataclass(frozen=True, slots=True)
class TransferAction:
    """Redirect the caller to ``destinations[arguments[argument]]``, nowhere else."""

    destinations: Mapping[str, Destination]
    argument: str


@dataclass(frozen=True, slots=True)
class Header:
    """An HTTP header; ``template`` is as written, ``value`` has ``${NAME}`` expanded and is
    never shown."""

    name: str
    template: str
    value: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class HttpAction:
    """One HTTP request per tool call; the body (at most ``max_response_bytes``) is the
    result."""

    method: str
    url: Template
    headers: tuple[Header, ...] = ()
    body: str | None = None
    max_response_bytes: int = 16384

    def url_for(self, arguments: Mapping[str, Any]) -> str:
        """The URL with each field replaced by its argument, percent-encoded, dots too.

        Send it as it is (aiohttp: ``yarl.URL(url, encoded=True)``): a client that normalises
        the path would turn an argument of ``..`` into a step up to another endpoint.
        """
        return self.url.fill({k: _url_text(v) for k, v in arguments.items()},
                             lambda text: quote(text, safe="").replace(".", "%2E"))

    def header_values(self) -> dict[str, str]:
        """The headers to send, secrets expanded: hand them to the client, never to a log."""
        return {h.name: h.value for h in self.headers}


@dataclass(frozen=True, slots=True)
class PythonAction:
    """``await function(arguments)``; ``target`` is the ``module:function`` it came from."""

    target: str
    function: Callable[..., Awaitable[Any]] = field(repr=False, compare=False)


Action = HangupAction | TransferAction | HttpAction | PythonAction


def _url_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return ""
    if isinstance(value, dict | list):
        return orjson.dumps(value).decode()
    return str(value)


class _NoRemoteRefs(dict[str, Callable[[str], Any]]):
    """fastjsonschema's ref handlers: a ``$ref`` to another document fetches nothing."""

    def __contains__(self, scheme: object) -> bool:
        return True

    def __getitem__(self, scheme: str) -> Callable[[str], Any]:
        def refuse(uri: str) -> Any:
            raise fastjsonschema.JsonSchemaDefinitionException(
                f"$ref {uri} is outside the schema: only local references (#/...) are followed")
        return refuse


@dataclass(frozen=True, slots=True)
class ToolSpec:
    """A tool the model may call. Its schema is compiled when it is made (errors from
    fastjsonschema propagate)."""

    name: str
    description: str
    parameters: dict[str, Any]
    action: Action
    timeout_s: float = 8.0
    _check: Callable[[Any], Any] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_check", fastjsonschema.compile(
            self.parameters, handlers=_NoRemoteRefs()))

    def declaration(self) -> dict[str, Any]:
        """The tool in ``session.tools`` (the same in GA and beta)."""
        return {"type": "function", "name": self.name, "description": self.description,
                "parameters": orjson.loads(orjson.dumps(self.parameters))}  # a copy to keep

    def validate(self, arguments: str) -> dict[str, Any]:
        """The model's ``arguments`` (JSON text) as a checked dict, schema defaults filled.

        Raises:
            ToolArgumentsInvalid: not JSON, not an object, or not what the schema allows.
        """
        try:
            value = orjson.loads(arguments) if arguments.strip() else {}
        except orjson.JSONDecodeError as exc:
            raise ToolArgumentsInvalid(self.name, f"arguments are not valid JSON: {exc}") from None
        if not isinstance(value, dict):
            raise ToolArgumentsInvalid(self.name, "arguments must be a JSON object")
        try:
            checked = self._check(value)
        except fastjsonschema.JsonSchemaValueException as exc:
            reason = re.sub(r"^data\b", "arguments", exc.message)
            raise ToolArgumentsInvalid(self.name, reason) from None
        return checked if isinstance(checked, dict) else value




# -- reading TOML tables ------------------------------------------------------------------


class TableReader:
    """Typed look-ups in parsed TOML that report problems as ``FILE: [table] key: message``."""

    def __init__(self, file: str, env: Mapping[str, str]) -> None:
        self.file = file
        self.env = env
        self.problems: list[str] = []
        self.broken: set[str] = set()  # tools declared with problems: no follow-on errors

    def problem(self, table: str, key: str, message: str) -> None:
        self.problems.append(f"{self.file}: {table}{' ' + key if key else ''}: {message}")

    def keys(self, doc: Mapping[str, Any], table: str, known: Sequence[str],
             prefix: str = "") -> None:
        for key in doc:
            if key not in known:
                close = difflib.get_close_matches(key, known, 1)
                hint = f"did you mean {close[0]}?" if close else "known: " + ", ".join(known)
                self.problem(table, prefix + key, f"unknown key; {hint}")

    def get(self, doc: Mapping[str, Any], table: str, key: str, kind: str, prefix: str = "",
            *, required: str = "") -> Any:
        """``doc[key]`` if it is of ``kind``; None if absent (a problem if ``required`` says
        why it is needed) or of another type (a problem)."""
        value = doc.get(key)
        if value is None:
            if required:
                self.problem(table, prefix + key, f"missing: {required}")
            return None
        if not isinstance(value, _KINDS[kind]) or isinstance(value, bool) != (kind == "boolean"):
            self.problem(table, prefix + key,
                         f"expected {_ARTICLE.get(kind, 'a ' + kind)}, got {kind_of(value)}")
            return None
        return value

    def ranged(self, doc: Mapping[str, Any], table: str, key: str, kind: str, low: float,
               high: float, prefix: str = "") -> Any:
        value = self.get(doc, table, key, kind, prefix)
        if value is not None and not low <= value <= high:
            self.problem(table, prefix + key, f"{value} is not between {low:g} and {high:g}")
            return None
        return value

    def choice(self, doc: Mapping[str, Any], table: str, key: str, options: Sequence[str],
               prefix: str = "") -> str | None:
        value = self.get(doc, table, key, "string", prefix)
        if value is not None and value not in options:
            self.problem(table, prefix + key, f"{value!r} is not one of {', '.join(options)}")
            return None
        return value  # type: ignore[no-any-return]

    # -- the document -------------------------------------------------------------------


class ToolReader(TableReader):
    """Reads ``[[tool]]`` arrays; ``env`` supplies ``${NAME}`` and ``{BACKEND_API_URL}``."""

    def tools(self, array: list[Any], label: str) -> tuple[ToolSpec, ...]:
        out: list[ToolSpec] = []
        seen: dict[str, str] = {}
        for i, tdoc in enumerate(array, 1):
            if not isinstance(tdoc, dict):
                self.problem(f"{label} #{i}", "", f"expected a table, got {kind_of(tdoc)}")
                continue
            name = tdoc.get("name")
            where = f"{label} #{i}" + (f' "{name}"' if isinstance(name, str) else "")
            if isinstance(name, str) and name in seen:
                self.problem(where, "name", f'"{name}" is already the name of {seen[name]}: '
                             "each tool needs its own")
            spec = self.tool(tdoc, where)
            if isinstance(name, str):
                seen.setdefault(name, f"{label} #{i}")
                if spec is None:
                    self.broken.add(name)
            if spec is not None and all(t.name != spec.name for t in out):
                out.append(spec)
        return tuple(out)

    def tool(self, doc: dict[str, Any], where: str) -> ToolSpec | None:
        before = len(self.problems)
        self.keys(doc, where, _TOOL_KEYS)
        name = self.get(doc, where, "name", "string", required="the name the model calls")
        if name is not None and not NAME.match(name):
            self.problem(where, "name", f"{name!r} must be 1 to 64 letters, digits, _ or -")
        description = self.get(doc, where, "description", "string",
                               required="the model decides when to call a tool from it")
        timeout = self.ranged(doc, where, "timeout_s", "number", 0.1, 300)
        params = self.parameters(doc, where)
        action_doc = self.get(doc, where, "action", "table",
                              required='an action table, e.g. action = { type = "hangup" }')
        action = None
        if action_doc is not None:
            action, params = self.action(action_doc, where, params)
        if len(self.problems) > before or action is None:
            return None
        try:
            return ToolSpec(name, description, params or {"type": "object", "properties": {}},
                            action, 8.0 if timeout is None else float(timeout))
        except Exception as exc:  # fastjsonschema raises more than its own errors on odd input
            self.problem(where, "parameters", f"not a schema fastjsonschema can compile: {exc}")
            return None

    def parameters(self, doc: dict[str, Any], where: str) -> dict[str, Any] | None:
        raw = doc.get("parameters")
        if raw is None:
            return None
        if isinstance(raw, str):
            try:
                raw = orjson.loads(raw)
            except orjson.JSONDecodeError as exc:
                self.problem(where, "parameters", f"not valid JSON: {exc}")
                return None
        if not isinstance(raw, dict):
            self.problem(where, "parameters",
                         f"expected a table (or a string of JSON), got {kind_of(raw)}")
            return None
        if raw.get("type") != "object":
            self.problem(where, "parameters.type", 'must be "object": a tool takes named '
                         "arguments")
        for key, message in _schema_problems(raw, "parameters"):
            self.problem(where, key, message)
        return raw

    def action(self, doc: dict[str, Any], where: str, params: dict[str, Any] | None,
               ) -> tuple[Action | None, dict[str, Any] | None]:
        kind = doc.get("type")
        if kind not in _ACTION_KEYS:
            self.problem(where, "action.type", f"{kind!r} is not one of "
                         + ", ".join(_ACTION_KEYS))
            return None, params
        self.keys(doc, where, _ACTION_KEYS[kind], "action.")
        if kind == "hangup":
            return HangupAction(), params
        if kind == "transfer":
            return self.transfer(doc, where, params)
        if kind == "http":
            return self.http(doc, where, params), params
        return self.python(doc, where), params

    def transfer(self, doc: dict[str, Any], where: str, params: dict[str, Any] | None,
                 ) -> tuple[TransferAction | None, dict[str, Any] | None]:
        table = self.get(doc, where, "destinations", "table", "action.",
                         required="the allow-list: name = { context, exten, priority }")
        if not table:
            if table is not None:
                self.problem(where, "action.destinations", "is empty: list where the model "
                             "may transfer to")
            return None, params
        destinations = {}
        for key, dest in table.items():
            at = f"action.destinations.{key}"
            if not NAME.match(key):
                self.problem(where, at, "a destination's name is 1 to 64 letters, digits, _ "
                             "or -")
            if not isinstance(dest, dict):
                self.problem(where, at, f"expected a table with context, exten and priority, "
                             f"got {kind_of(dest)}")
                continue
            self.keys(dest, where, ("context", "exten", "priority"), at + ".")
            if isinstance(dest.get("exten"), int) and not isinstance(dest["exten"], bool):
                self.problem(where, at + ".exten", f'expected a string: quote it (exten = '
                             f'"{dest["exten"]}")')
                continue
            context = self.get(dest, where, "context", "string", at + ".",
                               required="the dialplan context")
            exten = self.get(dest, where, "exten", "string", at + ".",
                             required="the extension")
            priority = self.ranged(dest, where, "priority", "integer", 1, 99_999, at + ".")
            for key_name, value in (("context", context), ("exten", exten)):
                if value is not None and (not value or _CONTROL.search(value) or " " in value):
                    self.problem(where, f"{at}.{key_name}", "must be non-empty, without spaces "
                                 "or control characters")
            if context and exten:
                destinations[key] = Destination(context, exten, priority or 1)
        names = list(table)
        if params is None:
            params = {"type": "object", "properties": {"destination": {
                "type": "string", "enum": names, "description": "Where to transfer the caller."}},
                "required": ["destination"], "additionalProperties": False}
            argument: str | None = "destination"
        else:
            argument = self.enum_property(params, names, where)
        if argument is None or len(destinations) != len(table):
            return None, params
        return TransferAction(destinations, argument), params

    def enum_property(self, params: dict[str, Any], names: list[str], where: str) -> str | None:
        """The one required property whose enum is exactly the destinations' names."""
        props = params.get("properties")
        props = props if isinstance(props, dict) else {}
        enums = {k: s["enum"] for k, s in props.items()
                 if isinstance(s, dict) and isinstance(s.get("enum"), list)}
        same = [k for k, e in enums.items() if len(e) == len(names) and set(e) == set(names)]
        if len(same) == 1:
            if same[0] not in (params.get("required") or ()):
                self.problem(where, "parameters.required", f"must list {same[0]}: a transfer "
                             "needs its destination")
                return None
            return same[0]
        if same:
            self.problem(where, "parameters.properties", f"{', '.join(same)} all have the "
                         "destinations as their enum: keep one")
            return None
        seen = "; ".join(f"{k} has enum {e}" for k, e in enums.items())
        self.problem(where, "parameters", f"no property's enum is the destinations {names}"
                     + (f"; {seen}" if seen else ": add one (type string, required), or leave "
                        "parameters out to have it made"))
        return None

    def http(self, doc: dict[str, Any], where: str, params: dict[str, Any] | None,
             ) -> HttpAction | None:
        before = len(self.problems)
        method = (self.get(doc, where, "method", "string", "action.") or "GET").upper()
        if method not in _METHODS:
            self.problem(where, "action.method", f"{method!r} is not one of {', '.join(_METHODS)}")
        body = self.choice(doc, where, "body", ("json", "none"), "action.")
        if body is None:
            body = "json" if method in ("POST", "PUT", "PATCH") else "none"
        elif body == "json" and method in ("GET", "DELETE"):
            self.problem(where, "action.body", f"{method} sends no body: put the arguments in "
                         "the URL")
        limit = self.ranged(doc, where, "max_response_bytes", "integer", 1, 1 << 20, "action.")
        url = self.url(doc, where, params)
        headers = []
        for name, text in (self.get(doc, where, "headers", "table", "action.") or {}).items():
            at = f"action.headers.{name}"
            if not _HEADER_NAME.match(name):
                self.problem(where, at, "not an HTTP header name")
            if not isinstance(text, str):
                self.problem(where, at, f"expected a string, got {kind_of(text)}")
                continue
            value = self.expand(text, where, at)
            if value is not None and _CONTROL.search(value):
                self.problem(where, at, "has a line break or control character once expanded")
            headers.append(Header(name, text, value or ""))
        if url is None or len(self.problems) > before:
            return None
        return HttpAction(method, url, tuple(headers), None if body == "none" else body,
                          16384 if limit is None else limit)

    def url(self, doc: dict[str, Any], where: str, params: dict[str, Any] | None,
            ) -> Template | None:
        text = self.get(doc, where, "url", "string", "action.",
                        required='the URL, e.g. "{BACKEND_API_URL}/customers/{phone}"')
        if text is None:
            return None
        try:
            url = Template.parse(text)
        except ValueError as exc:
            self.problem(where, "action.url", str(exc))
            return None
        props = (params or {}).get("properties")
        props = props if isinstance(props, dict) else {}
        required = (params or {}).get("required") or ()
        ok = True
        for name in url.fields:
            if name == BACKEND_URL:
                continue
            if name not in props:
                have = ", ".join(props) or "none"
                self.problem(where, "action.url", f"unknown field {{{name}}}; the tool's "
                             f"parameters have {have}")
                ok = False
            elif name not in required and "default" not in props[name]:
                self.problem(where, "action.url", f"{{{name}}} is not in the parameters' "
                             "required list: the URL needs it on every call")
        if BACKEND_URL in url.fields:
            base = self.env.get(BACKEND_URL)
            if not base:
                self.problem(where, "action.url", f"{{{BACKEND_URL}}} needs the environment "
                             f"variable {BACKEND_URL}, which is {'empty' if base else 'not set'}")
                return None
            if urlsplit(base).username is not None:
                self.problem(where, "action.url", f"{BACKEND_URL} holds credentials: put them "
                             "in a header")
                return None
            url = url.bind(BACKEND_URL, base.rstrip("/"))
        prefix = url.pieces[0][0] if url.pieces else ""
        parts = urlsplit(prefix)
        host_fixed = not url.fields or "/" in prefix.partition("://")[2] or "?" in prefix
        if parts.scheme not in ("http", "https") or not parts.netloc or not host_fixed:
            self.problem(where, "action.url", "must start with http:// or https:// and a host "
                         "that no field changes")
            ok = False
        return url if ok else None

    def expand(self, text: str, where: str, at: str) -> str | None:
        """``text`` with each ``${NAME}`` from the environment; None (reported) if one is
        missing. Problems name the variable, never its value."""
        missing = False

        def value(match: re.Match[str]) -> str:
            nonlocal missing
            name = match[1]
            found = self.env.get(name) if _ENV_NAME.match(name) else None
            if found:
                return found
            missing = True
            if not _ENV_NAME.match(name):
                self.problem(where, at, f"${{{name}}} is not an environment variable name")
            else:
                state = "empty" if found == "" else "not set"
                self.problem(where, at, f"environment variable {name} is {state}")
            return ""

        expanded = _ENV_REF.sub(value, text)
        return None if missing else expanded

    def python(self, doc: dict[str, Any], where: str) -> PythonAction | None:
        target = self.get(doc, where, "callable", "string", "action.",
                          required='"package.module:function", an async function')
        if target is None:
            return None
        module_name, _, attr = target.partition(":")
        if not module_name or not attr:
            self.problem(where, "action.callable", f'{target!r} is not "package.module:function"')
            return None
        try:
            obj: Any = importlib.import_module(module_name)
            for part in attr.split("."):
                obj = getattr(obj, part)
        except AttributeError:
            self.problem(where, "action.callable", f"{module_name} has no {attr}")
            return None
        except Exception as exc:  # the operator's module: any error in it is theirs to see
            self.problem(where, "action.callable",
                         f"cannot import {module_name}: {type(exc).__name__}: {exc}")
            return None
        if not inspect.iscoroutinefunction(obj):
            self.problem(where, "action.callable", f"{target} is not an async function "
                         "(async def)")
            return None
        return PythonAction(target, obj)

    # -- DTMF ---------------------------------------------------------------------------

def _schema_problems(node: Any, path: str) -> list[tuple[str, str]]:
    """What fastjsonschema would reject without saying where: bad types, shapes, required."""
    if isinstance(node, bool):
        return []
    if not isinstance(node, dict):
        return [(path, f"a schema must be a table, got {kind_of(node)}")]
    found: list[tuple[str, str]] = []
    kinds = node.get("type")
    for kind in kinds if isinstance(kinds, list) else [kinds] if kinds is not None else []:
        if kind not in _JSON_TYPES:
            found.append((f"{path}.type", f"{kind!r} is not a JSON schema type "
                          f"({', '.join(_JSON_TYPES)})"))
    for key in ("properties", "patternProperties", "definitions", "$defs"):
        sub = node.get(key)
        if sub is not None and not isinstance(sub, dict):
            found.append((f"{path}.{key}", "expected a table of schemas"))
        for name, schema in (sub if isinstance(sub, dict) else {}).items():
            found.extend(_schema_problems(schema, f"{path}.{key}.{name}"))
    for key in ("items", "additionalProperties", "not", "if", "then", "else", "contains",
                "propertyNames", "additionalItems", "anyOf", "oneOf", "allOf"):
        sub = node.get(key)
        if isinstance(sub, list):
            for i, schema in enumerate(sub):
                found.extend(_schema_problems(schema, f"{path}.{key}[{i}]"))
        elif sub is not None:
            found.extend(_schema_problems(sub, f"{path}.{key}"))
    required = node.get("required")
    props = node.get("properties")
    if required is not None and (not isinstance(required, list)
                                 or not all(isinstance(r, str) for r in required)):
        found.append((f"{path}.required", "expected an array of property names"))
    elif required and isinstance(props, dict):
        for name in required:
            if name not in props:
                found.append((f"{path}.required", f"names {name}, which properties does not "
                              "declare"))
    enum = node.get("enum")
    if enum is not None and (not isinstance(enum, list) or not enum):
        found.append((f"{path}.enum", "expected a non-empty array"))
    return found

