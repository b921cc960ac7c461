"""Checks Asterisk configuration for the things voice-engine depends on.

asterisklint does not know AudioSocket, so this is a focused checker of our own. It reads
Asterisk's .conf syntax (``[section]``, templates ``[name](!)`` and ``[name](template)``,
``key => value`` and ``key = value``, ``;`` and ``;-- --;`` comments) and checks:

- extensions.conf: priorities are a number or ``n`` and each extension starts at 1, with no
  gaps or duplicates; every context, extension and label that ``Goto``/``GotoIf``/``Gosub``/
  ``include`` name exists; ``AudioSocket(uuid,host:port)`` has exactly those two arguments
  (the UUID: ``${UUID()}``, a literal UUID, or ``${NAME}`` where ``Set(NAME=${UUID()})``
  comes earlier in the same extension, as the samples' ``VE_UUID`` by which the engine finds
  the caller's channel; the address: a literal ``host:port`` or a ``[globals]`` name holding
  one), runs inside ``TryExec()`` after ``Answer()`` and is followed by a test of
  ``${TRYSTATUS}``; ``Dial(AudioSocket/host:port/uuid/c(slinNN),,g)`` has the ``g`` option,
  a known slin format and a UUID of those kinds; ``${UUID}`` (an unset variable) appears
  nowhere.
- modules.conf: the four AudioSocket modules load.
- manager.conf: the manager is enabled; each user (or the one named) has a ``secret``, a
  ``deny`` of every address before its ``permit``, and ``write`` with ``call`` (what
  ``Redirect`` needs) and nothing more.

Usage: ``python tools/check_asterisk.py [PATH ...]`` (files or directories; default: the
repository's ``asterisk/``). Prints ``file:line: message`` for each problem; exits 1 if any.
"""

from __future__ import annotations

import argparse
import ipaddress
import re
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "REQUIRED_MODULES",
    "SLIN_FORMATS",
    "Entry",
    "Problem",
    "Section",
    "check_extensions",
    "check_file",
    "check_manager",
    "check_modules",
    "check_paths",
    "main",
    "parse_conf",
    "split_args",
]

REQUIRED_MODULES = ("res_audiosocket.so", "app_audiosocket.so", "chan_audiosocket.so",
                    "func_uuid.so")
# The formats chan_audiosocket's c() maps to an AudioSocket kind (0x10-0x18); any other
# format goes out as kind 0x10 with bytes that are not 8 kHz slin.
SLIN_FORMATS = ("slin", "slin12", "slin16", "slin24", "slin32", "slin44", "slin48", "slin96",
                "slin192")
_RESERVED = {"general", "globals"}
_UNSET_UUID = re.compile(r"\$\{\s*UUID\s*(?::[^}]*)?\}", re.IGNORECASE)
_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-"
                   r"[0-9a-fA-F]{12}$")
_HOST_PORT = re.compile(r"^(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?)"
                        r":(\d{1,5})$")
_VARIABLE = re.compile(r"^\$\{(?:GLOBAL\(([A-Za-z0-9_]+)\)|([A-Za-z0-9_]+))\}$")
_PLAIN_VARIABLE = re.compile(r"^\$\{([A-Za-z0-9_]+)\}$")
_FRESH_UUID = "${UUID()}"
_SECTION = re.compile(r"^\[([^\]]+)\]\s*(?:\(([^)]*)\))?\s*$")
_ENTRY = re.compile(r"^([^=]+?)\s*(=>|=)\s*(.*)$")
_PRIORITY = re.compile(r"^([^()\s]+)\s*(?:\(([^)]*)\))?$")
_TRUE = {"yes", "true", "y", "t", "1", "on"}


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong, at a file and line."""

    path: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.message}"


@dataclass(frozen=True, slots=True)
class Entry:
    """One ``key = value`` (or ``key => value``) line."""

    key: str
    value: str
    line: int


@dataclass(slots=True)
class Section:
    """One ``[name]`` and its entries, templates already applied."""

    name: str
    line: int
    template: bool = False
    parents: tuple[str, ...] = ()
    entries: list[Entry] = field(default_factory=list)


# --- The .conf syntax -------------------------------------------------------------------


def _strip_comment(line: str, in_block: bool) -> tuple[str, bool]:
    """The line without comments; whether a ``;-- --;`` block comment is still open."""
    out, i = [], 0
    while i < len(line):
        if in_block:
            end = line.find("--;", i)
            if end < 0:
                return "".join(out), True
            in_block, i = False, end + 3
        elif line.startswith("\\;", i):
            out.append(";")
            i += 2
        elif line.startswith(";--", i):
            in_block, i = True, i + 3
        elif line[i] == ";":
            break
        else:
            out.append(line[i])
            i += 1
    return "".join(out), in_block


def parse_conf(text: str, path: str) -> tuple[list[Section], list[Problem]]:
    """Parses Asterisk .conf text into sections, with templates and ``(+)`` merged in.

    Returns:
        The sections in file order (a name given twice is one section), and syntax problems.
    """
    raw: list[Section] = []
    problems: list[Problem] = []
    in_block = False
    for number, line in enumerate(text.splitlines(), 1):
        stripped, in_block = _strip_comment(line, in_block)
        stripped = stripped.strip()
        if not stripped or stripped.startswith("#"):
            continue  # blank, or #include / #exec, which this checker does not follow
        header = _SECTION.match(stripped)
        if header:
            options = [o.strip() for o in (header.group(2) or "").split(",") if o.strip()]
            raw.append(Section(header.group(1).strip(), number, "!" in options,
                               tuple(o for o in options if o not in ("!", "+"))))
            continue
        entry = _ENTRY.match(stripped)
        if entry is None:
            problems.append(Problem(path, number, f"not a [section] or key = value: {stripped!r}"))
        elif not raw:
            problems.append(Problem(path, number, "a setting before any [section]"))
        else:
            raw[-1].entries.append(Entry(entry.group(1).strip(), entry.group(3).strip(), number))
    return _merge(raw, path, problems), problems


def _merge(raw: list[Section], path: str, problems: list[Problem]) -> list[Section]:
    merged: dict[str, Section] = {}
    for section in raw:
        inherited: list[Entry] = []
        for parent in section.parents:
            if parent not in merged:
                problems.append(Problem(path, section.line,
                                        f"[{section.name}] uses template {parent!r}, which is "
                                        "not defined above it"))
            else:
                inherited.extend(merged[parent].entries)
        if section.name in merged:
            merged[section.name].entries.extend(inherited + section.entries)
        else:
            section.entries[:0] = inherited
            merged[section.name] = section
    return list(merged.values())


def split_args(text: str, separator: str = ",") -> list[str]:
    """Splits at ``separator`` outside quotes, ``()``, ``[]`` and ``{}``, as Asterisk does."""
    parts, depth, quoted, current = [], 0, False, []
    i = 0
    while i < len(text):
        char = text[i]
        if char == "\\" and i + 1 < len(text):
            current.append(text[i:i + 2])
            i += 2
            continue
        if char == '"':
            quoted = not quoted
        elif not quoted and char in "([{":
            depth += 1
        elif not quoted and char in ")]}":
            depth -= 1
        elif not quoted and depth == 0 and char == separator:
            parts.append("".join(current))
            current = []
            i += 1
            continue
        current.append(char)
        i += 1
    parts.append("".join(current))
    return parts


def _split_app(text: str) -> tuple[str, str | None]:
    """``App(args)`` (or the old ``App,args``) as name and arguments; None if unclosed."""
    text = text.strip()
    paren, comma = text.find("("), text.find(",")
    if comma >= 0 and (paren < 0 or comma < paren):
        return text[:comma].strip(), text[comma + 1:]
    if paren < 0:
        return text, ""
    if not text.endswith(")"):
        return text[:paren].strip(), None
    return text[:paren].strip(), text[paren + 1:-1]


# --- extensions.conf ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Step:
    context: str
    exten: str
    priority: int
    label: str | None
    app: str
    args: str | None
    line: int


@dataclass(slots=True)
class _Dialplan:
    path: str
    globals: dict[str, str]
    steps: dict[str, dict[str, dict[int, _Step]]] = field(default_factory=dict)
    includes: dict[str, list[tuple[str, int]]] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)

    def problem(self, line: int, message: str) -> None:
        self.problems.append(Problem(self.path, line, message))


def _read_priority(dialplan: _Dialplan, entry: Entry, text: str, first: bool,
                   last: int | None) -> tuple[int, str | None] | None:
    match = _PRIORITY.match(text.strip())
    if match is None or not (match.group(1).isdigit() or match.group(1) == "n"):
        dialplan.problem(entry.line, f"priority {text.strip()!r} must be a number or n")
        return None
    word, label = match.group(1), match.group(2)
    if first and word != "1":
        dialplan.problem(entry.line, f"the first priority of an extension must be 1, not "
                                     f"{word!r} (n would continue the previous one's numbering)")
        return None
    if word == "n":
        if last is None:
            dialplan.problem(entry.line, "priority n with no priority before it")
            return None
        return last + 1, label
    return int(word), label


def _add_step(dialplan: _Dialplan, context: str, exten: str, entry: Entry, prio: str,
              action: str, last: int | None) -> int | None:
    extens = dialplan.steps.setdefault(context, {})
    read = _read_priority(dialplan, entry, prio, exten not in extens, last)
    if read is None:
        return last
    number, label = read
    steps = extens.setdefault(exten, {})
    if number in steps:
        dialplan.problem(entry.line, f"priority {number} of {exten!r} is already defined at "
                                     f"line {steps[number].line}")
        return number
    if label and any(s.label == label for s in steps.values()):
        dialplan.problem(entry.line, f"label {label!r} is defined twice in {exten!r}")
    app, args = _split_app(action)
    if args is None:
        dialplan.problem(entry.line, f"{app}( has no closing parenthesis")
    steps[number] = _Step(context, exten, number, label, app, args, entry.line)
    return number


def _load_context(dialplan: _Dialplan, section: Section) -> None:
    dialplan.steps.setdefault(section.name, {})
    includes = dialplan.includes.setdefault(section.name, [])
    exten: str | None = None
    last: int | None = None
    for entry in section.entries:
        key = entry.key.lower()
        if key == "exten":
            parts = entry.value.split(",", 2)
            if len(parts) < 3:
                dialplan.problem(entry.line, "exten => needs extension,priority,application")
                continue
            if parts[1].strip() == "hint":
                continue
            exten = parts[0].strip().split("/", 1)[0]
            last = _add_step(dialplan, section.name, exten, entry, parts[1], parts[2], last)
        elif key == "same":
            parts = entry.value.split(",", 1)
            if exten is None or len(parts) < 2:
                dialplan.problem(entry.line, "same => needs an exten => line before it and "
                                             "priority,application")
                continue
            last = _add_step(dialplan, section.name, exten, entry, parts[0], parts[1], last)
        elif key == "include":
            includes.append((re.split(r"[,|]", entry.value, maxsplit=1)[0].strip(), entry.line))
        elif key not in ("ignorepat", "switch", "lswitch", "eswitch"):
            dialplan.problem(entry.line, f"unknown directive {entry.key!r} in [{section.name}]")


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    """An Asterisk ``_`` pattern (X Z N, [sets], . and !) as a regular expression."""
    out, i = [], 1
    classes = {"X": "[0-9]", "Z": "[1-9]", "N": "[2-9]", ".": ".+", "!": ".*"}
    while i < len(pattern):
        char = pattern[i]
        if char == "[":
            end = pattern.find("]", i)
            end = len(pattern) if end < 0 else end
            members = "".join(re.escape(c) if c != "-" else "-" for c in pattern[i + 1:end])
            out.append(f"[{members}]")
            i = end + 1
            continue
        if char.upper() in classes:
            out.append(classes[char.upper()])
        elif char != "-":
            out.append(re.escape(char))
        i += 1
    return re.compile("".join(out) + r"\Z")


def _find_exten(dialplan: _Dialplan, context: str, exten: str,
                seen: set[str] | None = None) -> dict[int, _Step] | None:
    """The steps ``exten`` runs in ``context``, by name, pattern or include; None if none."""
    seen = set() if seen is None else seen
    if context in seen or context not in dialplan.steps:
        return None
    seen.add(context)
    extens = dialplan.steps[context]
    if exten in extens:
        return extens[exten]
    for name, steps in extens.items():
        if name.startswith("_") and _pattern_regex(name).match(exten):
            return steps
    for included, _line in dialplan.includes.get(context, []):
        found = _find_exten(dialplan, included, exten, seen)
        if found is not None:
            return found
    return None


def _check_target(dialplan: _Dialplan, step: _Step, target: str, what: str) -> None:
    target = re.sub(r"\(.*\)$", "", target.strip())  # Gosub's (arguments)
    if not target:
        return
    parts = [p.strip() for p in split_args(target)]
    if len(parts) > 3:
        dialplan.problem(step.line, f"{what} target {target!r} is not [[context,]exten,]priority")
        return
    if len(parts) == 1:
        context, exten, priority = step.context, step.exten, parts[0]
    elif len(parts) == 2:
        context, exten, priority = step.context, parts[0], parts[1]
    else:
        context, exten, priority = parts
    if "$" in context:
        return
    if context not in dialplan.steps:
        dialplan.problem(step.line, f"{what} goes to context {context!r}, which is not defined")
        return
    if "$" in exten:
        return
    steps = _find_exten(dialplan, context, exten)
    if steps is None:
        dialplan.problem(step.line, f"{what} goes to extension {exten!r} of [{context}], "
                                    "which is not defined")
        return
    if "$" in priority:
        return
    if priority.isdigit():
        if int(priority) not in steps:
            dialplan.problem(step.line, f"{what} goes to priority {priority} of {exten!r} in "
                                        f"[{context}], which is not defined")
    elif not any(s.label == priority for s in steps.values()):
        dialplan.problem(step.line, f"{what} goes to label {priority!r}, which {exten!r} in "
                                    f"[{context}] does not define")


def _branches(args: str) -> list[str]:
    """The ``true[:false]`` halves after the ``?`` of a GotoIf, GosubIf or ExecIf."""
    halves = split_args(args, "?")
    if len(halves) < 2:
        return []
    return split_args("?".join(halves[1:]), ":")


def _resolve(dialplan: _Dialplan, text: str) -> str:
    """``${NAME}`` or ``${GLOBAL(NAME)}`` from [globals]; anything else unchanged."""
    match = _VARIABLE.match(text.strip())
    if match is None:
        return text.strip()
    return dialplan.globals.get(match.group(1) or match.group(2), text.strip())


def _check_service(dialplan: _Dialplan, step: _Step, text: str, what: str) -> None:
    service = _resolve(dialplan, text)
    match = _HOST_PORT.match(service)
    if match is None or not 1 <= int(match.group(1)) <= 65535:
        shown = text.strip() if service == text.strip() else f"{text.strip()} = {service}"
        dialplan.problem(step.line, f"{what}: {shown!r} is not host:port (a literal, or a "
                                    "[globals] name that holds one)")


def _uuid_source(dialplan: _Dialplan, step: _Step, name: str) -> tuple[str, bool] | None:
    """What the last ``Set(NAME=...)`` before ``step`` in its extension assigned, and whether
    it was an inherited ``_NAME``/``__NAME``; None if nothing set it."""
    found: tuple[str, bool] | None = None
    steps = dialplan.steps[step.context][step.exten]
    for priority in sorted(p for p in steps if p < step.priority):
        earlier = steps[priority]
        if earlier.app.strip().lower() != "set" or earlier.args is None:
            continue
        target, sep, value = earlier.args.partition("=")
        target = target.strip()
        if sep and target.lstrip("_") == name:
            found = (value.strip(), target.startswith("_"))
    return found


def _check_uuid(dialplan: _Dialplan, step: _Step, text: str, what: str) -> None:
    text = text.strip()
    if text == _FRESH_UUID or _UUID.match(text):
        return
    variable = _PLAIN_VARIABLE.match(text)
    if variable is None:
        dialplan.problem(step.line, f"{what}: the UUID must be ${{UUID()}}, a literal UUID, or "
                                    f"a variable Set from ${{UUID()}} earlier in this "
                                    f"extension, not {text!r}")
        return
    name = variable.group(1)
    source = _uuid_source(dialplan, step, name)
    if source is None or source[0] != _FRESH_UUID:
        dialplan.problem(step.line, f"{what}: {text} must be set from ${{UUID()}} earlier in "
                                    f"this extension (Set({name}=${{UUID()}}) before it)")
    elif source[1]:
        dialplan.problem(step.line, f"{what}: {text} is set inheritable (Set(_{name}=...)): "
                                    "every channel this one dials would carry it too, and the "
                                    f"engine could not tell the caller's channel by it; use "
                                    f"Set({name}=${{UUID()}})")


def _check_audiosocket(dialplan: _Dialplan, step: _Step, args: str, wrapped: bool) -> None:
    parts = split_args(args)
    if len(parts) != 2:
        dialplan.problem(step.line, f"AudioSocket() takes exactly 2 arguments (uuid,host:port), "
                                    f"got {len(parts)}")
    else:
        _check_uuid(dialplan, step, parts[0], "AudioSocket()")
        _check_service(dialplan, step, parts[1], "AudioSocket()")
    steps = dialplan.steps[step.context][step.exten]
    if not any(s.priority < step.priority and s.app.lower() == "answer" for s in steps.values()):
        dialplan.problem(step.line, "AudioSocket() with no Answer() before it in this "
                                    "extension: the application refuses a channel that is not up")
    if not wrapped:
        dialplan.problem(step.line, "AudioSocket() outside TryExec(): when the engine cannot "
                                    "be reached the call is hung up and no fallback runs")
        return
    after = steps.get(step.priority + 1)
    if after is None or "${TRYSTATUS}" not in f"{after.app}({after.args})":
        dialplan.problem(step.line, "TryExec(AudioSocket(...)) is not followed by a test of "
                                    "${TRYSTATUS}: a failed session goes on as if it had worked")


def _check_dial(dialplan: _Dialplan, step: _Step, args: str) -> None:
    parts = split_args(args)
    resources = [r.strip() for r in split_args(parts[0], "&")]
    ours = [r for r in resources if r.lower().startswith("audiosocket/")]
    for resource in ours:
        fields = resource.split("/")[1:]
        if len(fields) < 2 or not fields[1].strip():
            dialplan.problem(step.line, f"Dial({resource}): AudioSocket/host:port/uuid needs "
                                        "a UUID")
            continue
        _check_service(dialplan, step, fields[0], "Dial(AudioSocket/...)")
        _check_uuid(dialplan, step, fields[1], "Dial(AudioSocket/...)")
        options = "/".join(fields[2:]).strip()
        codec = re.fullmatch(r"c\(([^)]*)\)", options)
        if options and (codec is None or codec.group(1).strip() not in SLIN_FORMATS):
            dialplan.problem(step.line, f"Dial(AudioSocket/...): options {options!r} must be "
                                        f"c(FORMAT) with FORMAT one of {', '.join(SLIN_FORMATS)}")
    if ours:
        dial_options = re.sub(r"\([^)]*\)", "", parts[2] if len(parts) > 2 else "")
        if "g" not in dial_options:
            dialplan.problem(step.line, "Dial(AudioSocket/...) without the g option: the "
                                        "dialplan stops when the engine hangs up, no fallback runs")


def _check_app(dialplan: _Dialplan, step: _Step, app: str, args: str, wrapped: bool) -> None:
    name = app.strip().lower()
    if name == "audiosocket":
        _check_audiosocket(dialplan, step, args, wrapped)
    elif name == "tryexec":
        inner, inner_args = _split_app(args)
        if inner_args is not None:
            _check_app(dialplan, step, inner, inner_args, True)
    elif name == "dial":
        _check_dial(dialplan, step, args)
    elif name in ("goto", "gosub"):
        _check_target(dialplan, step, args, f"{app}()")
    elif name in ("gotoif", "gosubif", "gotoiftime"):
        for branch in _branches(args):
            _check_target(dialplan, step, branch, f"{app}()")
    elif name == "execif":
        for branch in _branches(args):
            inner, inner_args = _split_app(branch)
            if inner and inner_args is not None:
                _check_app(dialplan, step, inner, inner_args, wrapped)


def _check_numbering(dialplan: _Dialplan) -> None:
    for context, extens in dialplan.steps.items():
        for exten, steps in extens.items():
            numbers = sorted(steps)
            for before, after in zip(numbers, numbers[1:], strict=False):
                if after != before + 1:
                    dialplan.problem(steps[after].line,
                                     f"{exten!r} in [{context}] has no priority {before + 1}: "
                                     f"the dialplan stops after priority {before}")


def check_extensions(sections: Sequence[Section], path: str) -> list[Problem]:
    """Checks an extensions.conf's sections (see the module docstring for what)."""
    by_name = {s.name: s for s in sections}
    globals_ = {e.key: e.value for e in by_name["globals"].entries} if "globals" in by_name else {}
    dialplan = _Dialplan(path, globals_)
    for section in sections:
        for entry in section.entries:
            if _UNSET_UUID.search(entry.value):
                dialplan.problem(entry.line, "${UUID} is an unset variable (empty): call the "
                                             "function, ${UUID()}")
        if not section.template and section.name not in _RESERVED:
            _load_context(dialplan, section)
    for context, includes in dialplan.includes.items():
        for included, line in includes:
            if "$" not in included and included not in dialplan.steps:
                dialplan.problem(line, f"[{context}] includes context {included!r}, which is "
                                       "not defined")
    for extens in list(dialplan.steps.values()):
        for steps in list(extens.values()):
            for step in list(steps.values()):
                if step.args is not None:
                    _check_app(dialplan, step, step.app, step.args, False)
    _check_numbering(dialplan)
    return dialplan.problems


# --- modules.conf and manager.conf -------------------------------------------------------------


def check_modules(sections: Sequence[Section], path: str) -> list[Problem]:
    """Checks that modules.conf loads every module in :data:`REQUIRED_MODULES`."""
    section = next((s for s in sections if s.name == "modules"), None)
    if section is None:
        return [Problem(path, 1, "no [modules] section")]
    loaded: dict[str, int] = {}
    refused: dict[str, int] = {}
    for entry in section.entries:
        name = entry.value.strip()
        name = name if name.endswith(".so") else name + ".so"
        if entry.key.lower() in ("load", "require", "preload", "preload-require"):
            loaded[name] = entry.line
        elif entry.key.lower() == "noload":
            refused[name] = entry.line
    problems = []
    for module in REQUIRED_MODULES:
        if module in refused:
            problems.append(Problem(path, refused[module], f"noload => {module}: voice-engine "
                                                           "needs it"))
        elif module not in loaded:
            problems.append(Problem(path, section.line, f"[modules] does not load {module}"))
    return problems


def _classes(value: str) -> set[str]:
    return {c.strip().lower() for c in value.split(",") if c.strip()}


def _denies_everything(value: str) -> bool:
    try:
        return ipaddress.ip_network(value.strip(), strict=False).prefixlen == 0
    except ValueError:
        return False


def _check_user(section: Section, path: str) -> list[Problem]:
    problems = []
    keys: dict[str, list[Entry]] = {}
    for entry in section.entries:
        keys.setdefault(entry.key.lower(), []).append(entry)
    for needed in ("secret", "write"):
        if needed not in keys:
            problems.append(Problem(path, section.line, f"[{section.name}] has no {needed}"))
    if "permit" not in keys and "acl" not in keys:
        problems.append(Problem(path, section.line, f"[{section.name}] has no permit: any "
                                                    "address may log in"))
    elif "permit" in keys:
        first_permit = keys["permit"][0].line
        if not any(_denies_everything(e.value) and e.line < first_permit
                   for e in keys.get("deny", [])):
            problems.append(Problem(path, first_permit, f"[{section.name}]: permit without a "
                                    "deny of every address before it (e.g. deny = "
                                    "0.0.0.0/0.0.0.0) still lets every address in"))
    for entry in keys.get("write", []):
        classes = _classes(entry.value)
        if "call" not in classes:
            problems.append(Problem(path, entry.line, f"[{section.name}] write = {entry.value}: "
                                    "Redirect needs the call class"))
        extra = sorted(classes - {"call"})
        if extra:
            problems.append(Problem(path, entry.line, f"[{section.name}] write class "
                                    f"{', '.join(extra)} is more than Redirect needs (call)"))
    return problems


def check_manager(sections: Sequence[Section], path: str, user: str | None = None
                  ) -> list[Problem]:
    """Checks manager.conf: enabled, and each user (or just ``user``) fit for the engine."""
    problems = []
    general = next((s for s in sections if s.name == "general"), None)
    enabled = [e for e in general.entries if e.key.lower() == "enabled"] if general else []
    if not enabled or enabled[-1].value.strip().lower() not in _TRUE:
        problems.append(Problem(path, general.line if general else 1,
                                "[general] does not say enabled = yes: the manager is off"))
    users = [s for s in sections if s.name != "general" and not s.template]
    if user is not None:
        users = [s for s in users if s.name == user]
    if not users:
        wanted = f"[{user}]" if user else "user"
        problems.append(Problem(path, 1, f"no {wanted} section"))
    for section in users:
        problems.extend(_check_user(section, path))
    return problems


# --- Files ----------------------------------------------------------------------------


_KINDS: dict[str, Callable[..., list[Problem]]] = {
    "extensions": check_extensions,
    "modules": check_modules,
    "manager": check_manager,
}


def check_file(path: Path, ami_user: str | None = None) -> list[Problem]:
    """Checks one file, chosen by its name (extensions*, modules*, manager*)."""
    kind = next((k for k in _KINDS if path.name.startswith(k)), None)
    if kind is None:
        return [Problem(str(path), 1, "not an extensions, modules or manager .conf file")]
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        return [Problem(str(path), 1, f"cannot read: {exc.strerror}")]
    sections, problems = parse_conf(text, str(path))
    if kind == "manager":
        problems.extend(check_manager(sections, str(path), ami_user))
    else:
        problems.extend(_KINDS[kind](sections, str(path)))
    return problems


def check_paths(paths: Iterable[Path], ami_user: str | None = None) -> list[Problem]:
    """Checks files, and in a directory its extensions.conf, modules.conf and manager.conf."""
    problems = []
    for path in paths:
        if path.is_dir():
            for name in ("extensions.conf", "modules.conf", "manager.conf"):
                if not (path / name).is_file():
                    problems.append(Problem(str(path / name), 1, "missing"))
                else:
                    problems.extend(check_file(path / name, ami_user))
        else:
            problems.extend(check_file(path, ami_user))
    return sorted(problems, key=lambda p: (p.path, p.line))


def main(argv: Sequence[str] | None = None) -> int:
    """The command line; returns the exit status (1 if any problem)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("paths", nargs="*", type=Path,
                        help="files or directories (default: the repository's asterisk/)")
    parser.add_argument("--ami-user", help="check only this manager.conf user")
    options = parser.parse_args(argv)
    paths = options.paths or [Path(__file__).resolve().parent.parent / "asterisk"]
    problems = check_paths(paths, options.ami_user)
    for problem in problems:
        print(problem)
    if problems:
        print(f"check_asterisk: {len(problems)} problem(s)", file=sys.stderr)
        return 1
    print(f"check_asterisk: no problems in {', '.join(map(str, paths))}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
