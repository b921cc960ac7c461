"""Configuration: sources and their precedence, parsing, and the listed problems."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine import config as cfg
from engine.errors import ConfigError


def test_defaults_match_the_design_table(tmp_path: Path) -> None:
    c = cfg.load({}, _empty(tmp_path), require_key=False)
    assert c.openai_realtime_url == "wss://api.openai.com/v1/realtime"
    assert (c.openai_model, c.openai_voice) == ("gpt-realtime", "alloy")
    assert (c.listen_host, c.listen_port, c.health_port) == ("127.0.0.1", 9093, 9094)
    assert (c.vad_threshold, c.vad_silence_ms, c.vad_prefix_padding_ms) == (0.5, 500, 300)
    assert (c.append_ms, c.upstream_format, c.realtime_dialect) == (40, "pcm16", "ga")
    assert (c.max_call_seconds, c.handshake_timeout_ms, c.max_concurrent_calls) == (600, 2000, 1000)
    assert c.log_transcripts is False
    assert c.transcription_model == "whisper-1"


def _empty(tmp_path: Path) -> Path:
    path = tmp_path / ".env"
    path.write_text("")
    return path


def test_every_setting_has_a_config_field() -> None:
    fields = set(cfg.Config.__dataclass_fields__)
    assert {s.attr for s in cfg.FIELDS} == fields


def test_flag_beats_environment_beats_env_file(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text(
        "# comment\nexport LISTEN_PORT=7000\nOPENAI_VOICE='verse'\nAPPEND_MS=60 # batching\n"
        "LOG_TRANSCRIPTS=Yes\nOPENAI_API_KEY=\"sk-file\"\n"
    )
    c = cfg.load({"LISTEN_PORT": "7100", "UNRELATED": "x"}, env_file, {"LISTEN_PORT": 7200})
    assert c.listen_port == 7200
    assert c.openai_voice == "verse"
    assert c.append_ms == 60
    assert c.log_transcripts is True
    assert c.openai_api_key == "sk-file"
    c = cfg.load({"LISTEN_PORT": "7100"}, env_file, {"LISTEN_PORT": None})
    assert c.listen_port == 7100


def test_every_problem_is_listed_and_secrets_are_hidden(tmp_path: Path) -> None:
    env = {
        "APPEND_MS": "10",
        "UPSTREAM_FORMAT": "opus",
        "LOG_TRANSCRIPTS": "maybe",
        "OPENAI_REALTIME_URL": "https://example.com",
        "LISTEN_PORT": "http",
    }
    with pytest.raises(ConfigError) as info:
        cfg.load(env, _empty(tmp_path))
    text = str(info.value)
    for name in ("APPEND_MS", "UPSTREAM_FORMAT", "LOG_TRANSCRIPTS", "OPENAI_REALTIME_URL",
                 "LISTEN_PORT", "OPENAI_API_KEY is not set", "--simulator"):
        assert name in text
    c = cfg.load({"OPENAI_API_KEY": "sk-secret-value"}, _empty(tmp_path))
    assert "sk-secret-value" not in repr(c)


def test_bad_env_file_line_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.env"
    path.write_text("LISTEN_PORT=1\nthis is not an assignment\n")
    with pytest.raises(ConfigError, match=r"bad.env:2"):
        cfg.load({}, path, require_key=False)
    with pytest.raises(ConfigError, match="cannot read"):
        cfg.load({}, tmp_path / "missing.env", require_key=False)


def _env(tmp_path: Path, text: str) -> dict[str, str]:
    path = tmp_path / ".env"
    path.write_text(text)
    return cfg.read_env_file(path)


@pytest.mark.parametrize(("line", "value"), [
    ('SYSTEM_PROMPT="Be brief" # note', "Be brief"),
    ("export SYSTEM_PROMPT=brief", "brief"),
    ("export  SYSTEM_PROMPT = brief  ", "brief"),
    (r"SYSTEM_PROMPT='literal \n \" # not a comment'", r'literal \n \" # not a comment'),
    ("SYSTEM_PROMPT='x'   ", "x"),
    (r"SYSTEM_PROMPT='it\'s a\\b'", "it's a\\b"),
    (r'SYSTEM_PROMPT="a # b\nc \"q\" d\\e \$f"', 'a # b\nc "q" d\\e \\$f'),
    ('SYSTEM_PROMPT="x"#note', "x"),
    ("SYSTEM_PROMPT=  Be brief   # note", "Be brief"),
    ("SYSTEM_PROMPT=Be#brief", "Be#brief"),
    ("SYSTEM_PROMPT=a\t# tab before the hash", "a"),
    ("SYSTEM_PROMPT=it's \"fine\"", "it's \"fine\""),
    ("SYSTEM_PROMPT=", ""),
    ("SYSTEM_PROMPT=   # nothing but a comment", ""),
    ('SYSTEM_PROMPT=""', ""),
    ("SYSTEM_PROMPT=''", ""),
])
def test_env_file_follows_the_dotenv_rules(tmp_path: Path, line: str, value: str) -> None:
    assert _env(tmp_path, f"# header\n\n   \n{line}\nOPENAI_VOICE=verse\n") == {
        "SYSTEM_PROMPT": value, "OPENAI_VOICE": "verse",
    }


def test_env_file_quoted_values_may_span_lines(tmp_path: Path) -> None:
    text = "A=\"one\n# kept\ntwo\" # note\nB='x\ny'\nC=last"
    assert _env(tmp_path, text) == {"A": "one\n# kept\ntwo", "B": "x\ny", "C": "last"}
    assert _env(tmp_path, "A=1\r\nB=\"2\"\r\n") == {"A": "1", "B": "2"}


@pytest.mark.parametrize(("text", "message"), [
    ('A=1\nSYSTEM_PROMPT="Be brief\n', r"\.env:2: the \" quote that opens SYSTEM_PROMPT's value"),
    ("A=1\n\nB='x\n", r"\.env:3: the ' quote that opens B's value is never closed"),
    ('A="x" y\n', r"\.env:1: only a # comment may follow the closing quote of A's value$"),
    ('A="x\nB="y"\n', r"\.env:2: only a # comment .* A's value, which opens at line 1"),
    ("A=1\n  just words\n", r"\.env:2: not a NAME=value line"),
    ("1A=x\n", r"\.env:1: not a NAME=value line"),
])
def test_env_file_malformed_lines_name_file_and_line(
    tmp_path: Path, text: str, message: str,
) -> None:
    with pytest.raises(ConfigError, match=message):
        _env(tmp_path, text)


def test_env_file_value_reaches_the_config(tmp_path: Path) -> None:
    path = tmp_path / ".env"
    path.write_text('SYSTEM_PROMPT="Be brief" # note\n')
    assert cfg.load({}, path, require_key=False).system_prompt == "Be brief"


def test_azure_host_selects_the_azure_dialect(tmp_path: Path) -> None:
    url = "wss://contoso.openai.azure.com/openai/v1/realtime"
    c = cfg.load({"OPENAI_REALTIME_URL": url}, _empty(tmp_path), require_key=False)
    assert cfg.dialect_of(c) == "azure"
    c = cfg.load({"OPENAI_REALTIME_URL": url, "REALTIME_DIALECT": "beta"}, _empty(tmp_path),
                 require_key=False)
    assert cfg.dialect_of(c) == "beta"


def test_agent_file_is_a_path_from_any_source(tmp_path: Path) -> None:
    assert cfg.load({}, _empty(tmp_path), require_key=False).agent_file is None
    c = cfg.load({"AGENT_FILE": "agent.toml"}, _empty(tmp_path), require_key=False)
    assert c.agent_file == "agent.toml"
    c = cfg.load({}, _empty(tmp_path), {"AGENT_FILE": "/etc/ve/agent.toml"}, require_key=False)
    assert c.agent_file == "/etc/ve/agent.toml"
    setting = next(s for s in cfg.FIELDS if s.env == "AGENT_FILE")
    assert (setting.flag, setting.aliases) == ("--agent-file", ("--agent",))
    assert not any("not supported" in s.help or "issue" in s.help for s in cfg.FIELDS)


def test_environment_is_the_env_file_under_the_process_environment(tmp_path: Path) -> None:
    """The agent file's ${NAME} sees every variable, not only the engine's settings."""
    env_file = tmp_path / ".env"
    env_file.write_text("BACKEND_API_KEY=from-file\nBACKEND_API_URL=http://file\n")
    env = cfg.environment({"BACKEND_API_URL": "http://process"}, env_file)
    assert env["BACKEND_API_KEY"] == "from-file"
    assert env["BACKEND_API_URL"] == "http://process"


def test_only_settings_that_work_are_declared() -> None:
    names = {s.env for s in cfg.FIELDS}
    # The http tools read BACKEND_API_URL/KEY from the environment by name, in the agent file.
    assert names.isdisjoint({"BACKEND_API_URL", "BACKEND_API_KEY"})
    assert {"AMI_HOST", "AMI_PORT", "AMI_USER", "AMI_PASS"} <= names


def test_upstream_ca_file_must_be_a_readable_pem_bundle(tmp_path: Path) -> None:
    from engine.sim.tls import ThrowawayTls

    tls = ThrowawayTls.create(tmp_path)
    c = cfg.load({"UPSTREAM_CA_FILE": str(tls.ca_file)}, _empty(tmp_path), require_key=False)
    assert c.upstream_ca_file == str(tls.ca_file)
    assert cfg.load({}, _empty(tmp_path), require_key=False).upstream_ca_file is None
    not_pem = tmp_path / "not.pem"
    not_pem.write_text("hello\n")
    for path, why in ((tmp_path / "missing.pem", "cannot read it"),
                      (tmp_path, "cannot read it"), (not_pem, "not a PEM bundle")):
        with pytest.raises(ConfigError, match=f"UPSTREAM_CA_FILE=.*{why}"):
            cfg.load({"UPSTREAM_CA_FILE": str(path)}, _empty(tmp_path), require_key=False)
