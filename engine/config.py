"""The engine's configuration: environment, a ``.env`` file and command-line flags.

Precedence, highest first: a CLI flag, the process environment, the ``.env`` file, the default.
The names are the ones the widely used tutorial bridge reads, so an operator's existing ``.env``
keeps working. :func:`load` checks every value and raises one :class:`ConfigError` that lists
every problem, not just the first. Secrets are kept out of ``repr`` and never logged.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from engine.errors import ConfigError

__all__ = ["FIELDS", "Config", "Setting", "dialect_of", "environment", "load", "read_env_file"]

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _bool(text: str) -> bool:
    low = text.strip().lower()
    if low in _TRUE:
        return True
    if low in _FALSE:
        return False
    raise ValueError("expected true/false, 1/0, yes/no or on/off")


def _choice(*options: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        low = text.strip().lower()
        if low not in options:
            raise ValueError(f"expected one of {', '.join(options)}")
        return low

    return parse


def _ranged(kind: Callable[[str], Any], low: float, high: float) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        value = kind(text.strip())
        if not low <= value <= high:
            raise ValueError(f"must be between {low:g} and {high:g}")
        return value

    return parse


def _text(text: str) -> str:
    return text


def _optional(text: str) -> str | None:
    return text or None


def _networks(text: str) -> tuple[str, ...]:
    """A comma- or space-separated list of CIDRs (a bare address is a /32 or /128)."""
    out = []
    for item in text.replace(",", " ").split():
        try:
            out.append(str(ipaddress.ip_network(item, strict=False)))
        except ValueError:
            raise ValueError(f"{item!r} is not an IP address or CIDR network") from None
    return tuple(out)


def _ca_file(text: str) -> str | None:
    """A readable PEM bundle of CA certificates (empty: the system store)."""
    if not text:
        return None
    try:
        with open(text, "rb") as f:
            f.read(1)
    except OSError as exc:
        raise ValueError(f"cannot read it: {exc.strerror}") from None
    try:
        ssl.create_default_context(cafile=text)
    except (ssl.SSLError, ValueError):
        raise ValueError("not a PEM bundle of CA certificates") from None
    return text


def _records_url(text: str) -> str | None:
    """A records URL (empty: no records)."""
    if not text.strip():
        return None
    from engine.records.store import parse_url

    try:
        parse_url(text.strip())
    except ConfigError as exc:
        raise ValueError(str(exc)) from None
    return text.strip()


def _show_url(value: Any) -> str:
    from engine.records.store import redact

    return "(none)" if value is None else redact(str(value))


@dataclass(frozen=True, slots=True)
class Setting:
    """One configuration name: its parser, help, and whether it is a secret.

    Its default is the default of the :class:`Config` field of the same name; ``aliases``
    are more flags for it.
    """

    env: str
    parse: Callable[[str], Any]
    help: str
    secret: bool = False
    aliases: tuple[str, ...] = ()
    show: Callable[[Any], str] | None = None  # how ``check`` shows a secret's value

    @property
    def attr(self) -> str:
        return self.env.lower()

    @property
    def flag(self) -> str:
        return "--" + self.env.lower().replace("_", "-")


_LISTEN = _ranged(int, 0, 65535)  # 0 picks a free port; the node_ready log line names it

FIELDS: tuple[Setting, ...] = (
    Setting("OPENAI_API_KEY", _optional, "upstream key (required unless --simulator)", True),
    Setting("OPENAI_REALTIME_URL", _text, "upstream URL"),
    Setting("UPSTREAM_CA_FILE", _ca_file, "PEM bundle of CAs trusted for a wss:// upstream "
            "instead of the system store"),
    Setting("OPENAI_MODEL", _text, "Realtime model"),
    Setting("OPENAI_VOICE", _text, "voice"),
    Setting("LISTEN_HOST", _text, "AudioSocket listener address"),
    Setting("LISTEN_PORT", _LISTEN, "AudioSocket listener port"),
    Setting("HEALTH_PORT", _LISTEN, "health, readiness and metrics port"),
    Setting("AGENT_PORT", _LISTEN, "HAProxy agent-check port"),
    Setting("WORKERS", _ranged(int, 0, 1024), "worker processes; 0 is one per usable CPU"),
    Setting("DRAIN_SECONDS", _ranged(int, 0, 86_400), "how long calls may run on after SIGTERM"),
    Setting("ALLOW_SOURCES", _networks, "CIDRs that may place calls; empty allows any"),
    Setting("TRUSTED_PROXIES", _networks, "CIDRs whose PROXY v2 header is believed"),
    Setting("MAX_LOOP_LAG_MS", _ranged(int, 0, 60_000), "a worker whose event loop runs "
            "this late refuses new calls for a while; 0 never does"),
    Setting("MAX_CALLS_PER_SOURCE", _ranged(int, 0, 1_000_000), "calls per source; 0 is no cap"),
    Setting("SYSTEM_PROMPT", _text, "instructions"),
    Setting("VAD_THRESHOLD", _ranged(float, 0.0, 1.0), "server VAD threshold"),
    Setting("VAD_SILENCE_MS", _ranged(int, 0, 10_000), "server VAD silence duration"),
    Setting("VAD_PREFIX_PADDING_MS", _ranged(int, 0, 10_000), "server VAD prefix padding"),
    Setting("TEMPERATURE", _ranged(float, 0.6, 1.2), "sampling temperature (beta only)"),
    Setting("LOG_LEVEL", _choice("debug", "info", "warning", "error"), "log level"),
    Setting("LOG_FORMAT", _choice("auto", "text", "json"), "log lines: text on a terminal"),
    Setting("LOG_TRANSCRIPTS", _bool, "transcripts in logs"),
    Setting("MAX_CONCURRENT_CALLS", _ranged(int, 1, 1_000_000), "calls per node"),
    Setting("REALTIME_DIALECT", _choice("ga", "beta", "azure"), "Realtime API dialect"),
    Setting("UPSTREAM_FORMAT", _choice("pcm16", "pcmu"), "upstream audio format"),
    Setting("APPEND_MS", _ranged(int, 20, 100), "caller-audio batching in ms"),
    Setting("CLOCK_READ_TICKS", _ranged(int, 0, 5), "the clock reads callers every N ticks; "
            "0 reads each caller when its bytes arrive"),
    Setting("VAD_TYPE", _choice("server_vad", "semantic_vad"), "turn detection"),
    Setting("VAD_EAGERNESS", _choice("low", "medium", "high", "auto"), "semantic VAD"),
    Setting("TRANSCRIPTION_MODEL", _text, "input transcription; empty is off"),
    Setting("MAX_OUTPUT_TOKENS", _ranged(int, 1, 4096), "output tokens per response"),
    Setting("MAX_CALL_SECONDS", _ranged(int, 1, 86_400), "call length before wrap-up"),
    Setting("SESSION_HANDOVER_SECONDS", _ranged(int, 0, 86_400), "a long call moves to a "
            "fresh Realtime session after this long, at a pause; 0 is 3300 on GA, 1680 on beta"),
    Setting("HANDSHAKE_TIMEOUT_MS", _ranged(int, 100, 60_000), "UUID deadline in ms"),
    Setting("CALLER_SILENCE_SECONDS", _ranged(int, 0, 86_400), "a call whose caller sends "
            "nothing for this long is ended (Asterisk sends every 20 ms); 0 never"),
    Setting("AGENT_FILE", _optional, "agent file (TOML): instructions, tools, per-port profiles, "
            "A/B variants", aliases=("--agent",)),
    Setting("AMI_HOST", _text, "Asterisk manager host, for transfers and caller details"),
    Setting("AMI_PORT", _ranged(int, 1, 65535), "Asterisk manager port"),
    Setting("AMI_USER", _optional, "Asterisk manager user; unset, the engine does not use it"),
    Setting("AMI_PASS", _optional, "Asterisk manager secret", True),
    Setting("RECORDINGS_DIR", _optional, "two-track WAV recordings of every call go here; "
            "empty records none"),
    Setting("RECORDINGS_MAX_DAYS", _ranged(float, 0, 36_500), "recordings older are deleted; "
            "0 keeps them"),
    Setting("RECORDINGS_MAX_MB", _ranged(int, 0, 1 << 30), "the oldest recordings are deleted "
            "beyond this total; 0 is no bound"),
    Setting("RECORDS_URL", _records_url, "call records: sqlite:///PATH or postgresql://...; "
            "empty keeps none", True, show=_show_url),
)

_BY_ENV = {s.env: s for s in FIELDS}


@dataclass(frozen=True, slots=True)
class Config:
    """Every setting, parsed and checked. Build it with :func:`load`."""

    openai_api_key: str | None = field(default=None, repr=False)
    openai_realtime_url: str = "wss://api.openai.com/v1/realtime"
    upstream_ca_file: str | None = None
    openai_model: str = "gpt-realtime"
    openai_voice: str = "alloy"
    listen_host: str = "127.0.0.1"
    listen_port: int = 9093
    health_port: int = 9094
    agent_port: int = 9095
    workers: int = 0
    drain_seconds: int = 300
    allow_sources: tuple[str, ...] = ()
    trusted_proxies: tuple[str, ...] = ()
    max_calls_per_source: int = 0
    max_loop_lag_ms: int = 250
    system_prompt: str = "You are a helpful assistant."
    vad_threshold: float = 0.5
    vad_silence_ms: int = 500
    vad_prefix_padding_ms: int = 300
    temperature: float = 0.7
    log_level: str = "info"
    log_format: str = "auto"
    log_transcripts: bool = False
    max_concurrent_calls: int = 1000
    realtime_dialect: str = "ga"
    upstream_format: str = "pcm16"
    append_ms: int = 40
    clock_read_ticks: int = 2
    vad_type: str = "server_vad"
    vad_eagerness: str = "auto"
    transcription_model: str = "whisper-1"
    max_output_tokens: int = 4096
    max_call_seconds: int = 600
    handshake_timeout_ms: int = 2000
    caller_silence_seconds: int = 60
    session_handover_seconds: int = 0
    agent_file: str | None = None
    ami_host: str = "127.0.0.1"
    ami_port: int = 5038
    ami_user: str | None = None
    ami_pass: str | None = field(default=None, repr=False)
    records_url: str | None = field(default="sqlite:///./calls.db", repr=False)
    recordings_dir: str | None = None
    recordings_max_days: float = 30.0
    recordings_max_mb: int = 0

    def replace(self, **changes: Any) -> Config:
        """A copy with ``changes`` applied (no re-validation: for tests and the simulator)."""
        return dataclasses.replace(self, **changes)


# Spaces, perhaps a comment, then the end of the line: a whole line of it is skipped, and it
# is all that may follow a closing quote.
_END = re.compile(r"[ \t]*(?:#[^\n]*)?(?:\n|\Z)")
_BINDING = re.compile(r"[ \t]*(?:export[ \t]+)?([A-Za-z_][A-Za-z0-9_]*)[ \t]*=")
_UNQUOTED_COMMENT = re.compile(r"\s+#.*")
_ESCAPE = re.compile(r"\\(.)", re.S)
_DOUBLE_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "a": "\a", "b": "\b", "f": "\f", "v": "\v",
                   '"': '"', "'": "'", "\\": "\\"}
# Per quote: the quoted value (an escaped quote does not close it) and the escapes it decodes.
_QUOTED = {
    "'": (re.compile(r"'((?:\\'|[^'])*)'"), {"'": "'", "\\": "\\"}),
    '"': (re.compile(r'"((?:\\"|[^"])*)"'), _DOUBLE_ESCAPES),
}


def read_env_file(path: Path) -> dict[str, str]:
    r"""Reads a ``.env`` file by the usual dotenv rules (python-dotenv's, without ``${VAR}``).

    ``NAME=value`` lines, ``export NAME=value`` too; blank and ``#`` lines are skipped. A value
    in single quotes is literal but for ``\'`` and ``\\``. One in double quotes may hold ``#``
    and the escapes ``\n``, ``\t``, ``\"``, ``\\`` (and ``\r \a \b \f \v \'``). A quoted value
    may span lines, and only spaces and a ``# comment`` may follow its closing quote. An
    unquoted value ends at a ``#`` after whitespace and is stripped; nothing after ``=`` is
    the empty string.

    Raises:
        ConfigError: the file cannot be read, or a line (named ``file:line``) is not an
            assignment or has a quote that is not closed where it should be.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read env file {path}: {exc.strerror}") from None
    values: dict[str, str] = {}
    pos = 0
    while pos < len(text):
        skip = _END.match(text, pos)
        if skip is not None:
            pos = skip.end()
            continue
        binding = _BINDING.match(text, pos)
        if binding is None:
            raise ConfigError(f"{path}:{_line(text, pos)}: not a NAME=value line")
        name = binding[1]
        values[name], pos = _env_value(text, binding.end(), path, name)
    return values


def _line(text: str, pos: int) -> int:
    return text.count("\n", 0, pos) + 1


def _env_value(text: str, pos: int, path: Path, name: str) -> tuple[str, int]:
    """The value that starts at ``pos`` (just after ``=``), and where the next line starts."""
    lead = pos
    while text[lead:lead + 1] in (" ", "\t"):
        lead += 1
    quote = text[lead:lead + 1]
    if quote not in _QUOTED:
        end = text.find("\n", pos)
        end = len(text) if end < 0 else end
        return _UNQUOTED_COMMENT.sub("", text[pos:end]).strip(), end + 1
    opened = _line(text, lead)
    pattern, escapes = _QUOTED[quote]
    closed = pattern.match(text, lead)
    if closed is None:
        raise ConfigError(f"{path}:{opened}: the {quote} quote that opens {name}'s value is "
                          "never closed")
    rest = _END.match(text, closed.end())
    if rest is None:
        at = _line(text, closed.end())
        where = "" if at == opened else f", which opens at line {opened}: is a quote left open?"
        raise ConfigError(f"{path}:{at}: only a # comment may follow the closing quote of "
                          f"{name}'s value{where}")
    return _ESCAPE.sub(lambda m: escapes.get(m[1], m[0]), closed[1]), rest.end()


def load(
    environ: Mapping[str, str] | None = None,
    env_file: Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    *,
    require_key: bool = True,
) -> Config:
    """Builds the configuration from its sources and checks it.

    Args:
        environ: the process environment (``os.environ`` when None).
        env_file: a ``.env`` file; when None, ``./.env`` is read if it exists.
        overrides: values from CLI flags, keyed by environment name; None means "not given".
        require_key: an API key is needed (False when the built-in simulator is the upstream).

    Raises:
        ConfigError: listing every invalid or missing value.
    """
    sources: dict[str, Any] = {k: v for k, v in environment(environ, env_file).items()
                               if k in _BY_ENV}
    values: dict[str, Any] = {}
    problems: list[str] = []
    for setting in FIELDS:
        given = (overrides or {}).get(setting.env)
        raw = given if given is not None else sources.get(setting.env)
        if raw is None:
            continue
        try:
            values[setting.attr] = raw if not isinstance(raw, str) else setting.parse(raw)
        except ValueError as exc:
            shown = "(hidden)" if setting.secret else repr(raw)
            problems.append(f"{setting.env}={shown}: {exc}")
    config = Config(**values)
    problems.extend(_cross_checks(config, require_key))
    if problems:
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(problems))
    return config


def environment(environ: Mapping[str, str] | None = None,
                env_file: Path | None = None) -> dict[str, str]:
    """Every variable of the ``.env`` file, overridden by the environment: what the agent
    file's ``${NAME}`` (e.g. ``BACKEND_API_KEY``) is read from.

    Args:
        environ: the process environment (``os.environ`` when None).
        env_file: a ``.env`` file; when None, ``./.env`` is read if it exists.

    Raises:
        ConfigError: the ``.env`` file cannot be read or parsed.
    """
    environ = os.environ if environ is None else environ
    if env_file is None and Path(".env").is_file():
        env_file = Path(".env")
    values = read_env_file(env_file) if env_file is not None else {}
    values.update(environ)
    return values


def _cross_checks(config: Config, require_key: bool) -> list[str]:
    problems = []
    if require_key and not config.openai_api_key:
        problems.append(
            "OPENAI_API_KEY is not set: give a key, or run with --simulator to use the built-in "
            "Realtime simulator"
        )
    url = urlsplit(config.openai_realtime_url)
    if url.scheme not in ("ws", "wss") or not url.hostname:
        problems.append(
            f"OPENAI_REALTIME_URL={config.openai_realtime_url!r}: must be a ws:// or wss:// URL"
        )
    elif "key" in {k.lower() for k in parse_qs(url.query)}:
        problems.append("OPENAI_REALTIME_URL must not carry a key in its query; use the header")
    if config.ami_user and not config.ami_pass:
        problems.append("AMI_USER is set but AMI_PASS is not: the manager login needs both")
    return problems


def dialect_of(config: Config) -> str:
    """The dialect to speak: ``azure`` for ``*.openai.azure.com`` unless beta was asked for."""
    host = urlsplit(config.openai_realtime_url).hostname or ""
    if config.realtime_dialect == "ga" and host.endswith(".openai.azure.com"):
        return "azure"
    return config.realtime_dialect
