"""The deployment samples: Asterisk, systemd and HAProxy files, checked by real tools.

- ``tools/check_asterisk.py`` passes the shipped Asterisk files and catches every mistake it
  claims to, each fed in as a broken copy of the samples.
- ``systemd-analyze verify`` accepts the unit with no warning about it, and the unit's numbers
  agree with the engine's defaults; the environment sample lists every setting with its real
  default; the engine runs under the kernel's write-xor-execute rule that
  ``MemoryDenyWriteExecute=yes`` imposes.
- ``haproxy -c`` accepts the HAProxy config with the defaults and with a test's own ports.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest

from engine.config import FIELDS, Config, load, read_env_file

ROOT = Path(__file__).resolve().parent.parent
ASTERISK = ROOT / "asterisk"
UNIT = ROOT / "systemd" / "voice-engine.service"
ENV_SAMPLE = ROOT / "systemd" / "voice-engine.env"
HAPROXY_CFG = ROOT / "haproxy" / "haproxy.cfg"


def _load_checker() -> ModuleType:
    spec = importlib.util.spec_from_file_location("check_asterisk", ROOT / "tools" /
                                                  "check_asterisk.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


check = _load_checker()


# --- tools/check_asterisk.py on the Asterisk samples --------------------------------------


def test_shipped_asterisk_samples_have_no_problems(capsys: pytest.CaptureFixture[str]) -> None:
    assert check.check_paths([ASTERISK]) == []
    assert check.main([str(ASTERISK)]) == 0
    assert capsys.readouterr().out == ""


def _broken_copy(tmp_path: Path, name: str, edit: Callable[[str], str]) -> Path:
    copy = tmp_path / "asterisk"
    shutil.copytree(ASTERISK, copy)
    original = (copy / name).read_text()
    edited = edit(original)
    assert edited != original, "the edit did not apply: the sample changed under the test"
    (copy / name).write_text(edited)
    return copy


def _replace(old: str, new: str, count: int = 1) -> Callable[[str], str]:
    def edit(text: str) -> str:
        assert old in text, f"{old!r} is not in the sample"
        return text.replace(old, new, count)

    return edit


def _line_of(path: Path, needle: str) -> int:
    """The first line outside comments that contains ``needle``."""
    lines = enumerate(path.read_text().splitlines(), 1)
    return next(n for n, line in lines if needle in line and not line.lstrip().startswith(";"))


# (file, edit, where the problem is reported (text on that line), what the message says)
DEFECTS = {
    "unset ${UUID}": (
        "extensions.conf", _replace("AudioSocket(${VE_UUID},", "AudioSocket(${UUID},"),
        "AudioSocket(${UUID},", "${UUID} is an unset variable"),
    "${UUID} in Dial": (
        "extensions.conf", _replace("${VE_UUID}/c(slin16)", "${UUID}/c(slin16)"),
        "${UUID}/c(slin16)", "${UUID} is an unset variable"),
    "VE_UUID set from the unset ${UUID}": (
        "extensions.conf", _replace("Set(VE_UUID=${UUID()})", "Set(VE_UUID=${UUID})"),
        "Set(VE_UUID=${UUID})", "${UUID} is an unset variable"),
    "AudioSocket with VE_UUID from ${UUID}": (
        "extensions.conf", _replace("Set(VE_UUID=${UUID()})", "Set(VE_UUID=${UUID})"),
        "TryExec(AudioSocket(${VE_UUID}", "${VE_UUID} must be set from ${UUID()}"),
    "AudioSocket with VE_UUID never set": (
        "extensions.conf", _replace(" same => n,Set(VE_UUID=${UUID()})\n", ""),
        "TryExec(AudioSocket(${VE_UUID}", "${VE_UUID} must be set from ${UUID()} earlier"),
    "AudioSocket with VE_UUID set from something else": (
        "extensions.conf", _replace("Set(VE_UUID=${UUID()})", "Set(VE_UUID=${CALLERID(num)})"),
        "TryExec(AudioSocket(${VE_UUID}", "(Set(VE_UUID=${UUID()}) before it)"),
    "Dial with VE_UUID set after it": (
        "extensions.conf", _replace(
            "exten => s,1,Set(VE_UUID=${UUID()})\n"
            " same => n,Dial(AudioSocket/${VOICE_ENGINE}/${VE_UUID}/c(slin16),,g)\n",
            "exten => s,1,Dial(AudioSocket/${VOICE_ENGINE}/${VE_UUID}/c(slin16),,g)\n"
            " same => n,Set(VE_UUID=${UUID()})\n"),
        "/${VE_UUID}/c(slin16)", "${VE_UUID} must be set from ${UUID()} earlier"),
    "Dial with VE_UUID set in another extension": (
        "extensions.conf", _replace(
            "exten => s,1,Set(VE_UUID=${UUID()})\n"
            " same => n,Dial(AudioSocket/${VOICE_ENGINE}/${VE_UUID}/c(slin24),,g)\n",
            "exten => s,1,Goto(t,1)\n"
            "exten => t,1,Dial(AudioSocket/${VOICE_ENGINE}/${VE_UUID}/c(slin24),,g)\n"),
        "/${VE_UUID}/c(slin24)", "${VE_UUID} must be set from ${UUID()} earlier"),
    "Dial with an inherited VE_UUID": (
        "extensions.conf", _replace(
            "exten => s,1,Set(VE_UUID=${UUID()})\n"
            " same => n,Dial(AudioSocket/${VOICE_ENGINE}/${VE_UUID}/c(slin16)",
            "exten => s,1,Set(_VE_UUID=${UUID()})\n"
            " same => n,Dial(AudioSocket/${VOICE_ENGINE}/${VE_UUID}/c(slin16)"),
        "/${VE_UUID}/c(slin16)", "is set inheritable (Set(_VE_UUID=...))"),
    "Dial without g": (
        "extensions.conf", _replace("c(slin16),,g)", "c(slin16))"),
        "c(slin16))", "without the g option"),
    "Dial with other options but not g": (
        "extensions.conf", _replace("c(slin24),,g)", "c(slin24),,L(60000))"),
        "c(slin24),,L", "without the g option"),
    "AudioSocket with one argument": (
        "extensions.conf", _replace("AudioSocket(${VE_UUID},${VOICE_ENGINE})",
                                    "AudioSocket(${VOICE_ENGINE})"),
        "AudioSocket(${VOICE_ENGINE})", "takes exactly 2 arguments"),
    "AudioSocket with three arguments": (
        "extensions.conf", _replace("${VE_UUID},${VOICE_ENGINE})",
                                    "${VE_UUID},${VOICE_ENGINE},x)"),
        "${VOICE_ENGINE},x)", "got 3"),
    "AudioSocket with a made-up UUID": (
        "extensions.conf", _replace("AudioSocket(${VE_UUID},", "AudioSocket(${CALLID},"),
        "AudioSocket(${CALLID},", "${CALLID} must be set from ${UUID()} earlier"),
    "AudioSocket with an expression for a UUID": (
        "extensions.conf", _replace("AudioSocket(${VE_UUID},", "AudioSocket(${CALLERID(num)},"),
        "AudioSocket(${CALLERID(num)},", "must be ${UUID()}, a literal UUID, or a variable"),
    "service without a port": (
        "extensions.conf", _replace("VOICE_ENGINE=127.0.0.1:9093", "VOICE_ENGINE=127.0.0.1"),
        "TryExec(AudioSocket", "is not host:port"),
    "service with an unknown variable": (
        "extensions.conf", _replace("AudioSocket(${VE_UUID},${VOICE_ENGINE})",
                                    "AudioSocket(${VE_UUID},${ENGINE})"),
        "${ENGINE}", "is not host:port"),
    "port out of range": (
        "extensions.conf", _replace("VOICE_ENGINE=127.0.0.1:9093", "VOICE_ENGINE=127.0.0.1:99999"),
        "TryExec(AudioSocket", "is not host:port"),
    "AudioSocket outside TryExec": (
        "extensions.conf", _replace("TryExec(AudioSocket(${VE_UUID},${VOICE_ENGINE}))",
                                    "AudioSocket(${VE_UUID},${VOICE_ENGINE})"),
        "n,AudioSocket(", "outside TryExec()"),
    "no test of TRYSTATUS": (
        "extensions.conf", _replace('GotoIf($["${TRYSTATUS}" = "SUCCESS"]?ended)', "NoOp()"),
        "TryExec(AudioSocket", "not followed by a test of ${TRYSTATUS}"),
    "AudioSocket before Answer": (
        "extensions.conf", _replace("exten => s,1,Answer()\n same => n,Set(VE_UUID",
                                    "exten => s,1,Set(VE_UUID"),
        "TryExec(AudioSocket", "no Answer() before it"),
    "unknown slin format": (
        "extensions.conf", _replace("c(slin24)", "c(slin22)"), "c(slin22)", "must be c(FORMAT)"),
    "not a slin format": (
        "extensions.conf", _replace("/c(slin16),,g)", "/c(ulaw),,g)"), "c(ulaw)",
        "must be c(FORMAT)"),
    "Dial to AudioSocket without a UUID": (
        "extensions.conf", _replace("${VOICE_ENGINE}/${VE_UUID}/c(slin16)", "${VOICE_ENGINE}"),
        "Dial(AudioSocket/${VOICE_ENGINE},,g)", "needs a UUID"),
    "fallback context missing": (
        "extensions.conf", _replace("[human-agents]", "[human-agent]"),
        "Goto(human-agents,s,1)", "context 'human-agents', which is not defined"),
    "Goto to a missing extension": (
        "extensions.conf", _replace("_X.,1,Goto(voice-engine,s,1)", "_X.,1,Goto(voice-engine,t,1)"),
        "Goto(voice-engine,t,1)", "extension 't' of [voice-engine]"),
    "Goto to a missing priority": (
        "extensions.conf", _replace("Goto(voice-engine-16k,s,1)", "Goto(voice-engine-16k,s,9)"),
        "Goto(voice-engine-16k,s,9)", "priority 9"),
    "GotoIf to a missing label": (
        "extensions.conf", _replace("SUCCESS\"]?ended)", "SUCCESS\"]?finished)"),
        "?finished)", "label 'finished'"),
    "include of a missing context": (
        "extensions.conf", _replace("[from-internal]\n", "[from-internal]\ninclude => nowhere\n"),
        "include => nowhere", "includes context 'nowhere'"),
    "first priority is n": (
        "extensions.conf", _replace("exten => 8016,1,", "exten => 8016,n,"),
        "exten => 8016,n,", "first priority of an extension must be 1"),
    "first priority is 2": (
        "extensions.conf", _replace("exten => 8016,1,", "exten => 8016,2,"),
        "exten => 8016,2,", "first priority of an extension must be 1"),
    "priority that is neither a number nor n": (
        "extensions.conf", _replace(" same => n,Queue(support)", " same => next,Queue(support)"),
        "next,Queue", "must be a number or n"),
    "gap in the priorities": (
        "extensions.conf", _replace("exten => _X.,1,Goto(voice-engine,s,1)\n",
                                    "exten => _X.,1,Goto(voice-engine,s,1)\n"
                                    "exten => _X.,3,Hangup()\n"),
        "exten => _X.,3,Hangup()", "has no priority 2"),
    "priority defined twice": (
        "extensions.conf", _replace("exten => 8024,1,Goto(voice-engine-24k,s,1)\n",
                                    "exten => 8024,1,Goto(voice-engine-24k,s,1)\n"
                                    "exten => 8024,1,Hangup()\n"),
        "exten => 8024,1,Hangup()", "already defined"),
    "module not loaded": (
        "modules.conf", _replace("load => func_uuid.so\n", ""), "[modules]",
        "does not load func_uuid.so"),
    "module refused": (
        "modules.conf", _replace("load => chan_audiosocket.so", "noload => chan_audiosocket.so"),
        "noload => chan_audiosocket.so", "noload => chan_audiosocket.so"),
    "manager disabled": (
        "manager.conf", _replace("enabled = yes", "enabled = no"), "[general]",
        "enabled = yes"),
    "AMI user without a secret": (
        "manager.conf", _replace("secret = CHANGE-ME-to-a-long-random-secret\n", ""),
        "[voice-engine]", "has no secret"),
    "AMI user without a permit": (
        "manager.conf", _replace("permit = 127.0.0.1/255.255.255.255\n", ""),
        "[voice-engine]", "has no permit"),
    "permit without a deny before it": (
        "manager.conf", _replace("deny = 0.0.0.0/0.0.0.0\n", ""),
        "permit = 127.0.0.1", "permit without a deny"),
    "AMI user without write": (
        "manager.conf", _replace("write = call\n", ""), "[voice-engine]", "has no write"),
    "write without call": (
        "manager.conf", _replace("write = call", "write = agent"), "write = agent",
        "Redirect needs the call class"),
    "write broader than Redirect": (
        "manager.conf", _replace("write = call", "write = call,originate,system"),
        "write = call,originate", "originate, system is more than Redirect needs"),
    "write all": (
        "manager.conf", _replace("write = call", "write = all"), "write = all",
        "all is more than Redirect needs"),
}


@pytest.mark.parametrize("defect", list(DEFECTS))
def test_checker_catches(defect: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    name, edit, where, message = DEFECTS[defect]
    broken = _broken_copy(tmp_path, name, edit)
    problems = check.check_paths([broken])
    line = _line_of(broken / name, where)
    assert any(p.line == line and message in p.message and p.path.endswith(name)
               for p in problems), problems

    assert check.main([str(broken)]) == 1
    out = capsys.readouterr().out
    assert f"{broken / name}:{line}: " in out
    assert len(out.splitlines()) == len(problems)


def test_checker_accepts_a_literal_uuid_and_a_literal_address(tmp_path: Path) -> None:
    broken = _broken_copy(tmp_path, "extensions.conf", _replace(
        "AudioSocket(${VE_UUID},${VOICE_ENGINE})",
        "AudioSocket(4f0c2a9e-1d3b-4c5a-9e8f-7a6b5c4d3e2f,[::1]:9093)"))
    assert check.check_paths([broken]) == []


def test_checker_accepts_a_fresh_uuid_in_place_or_through_any_variable(tmp_path: Path) -> None:
    # ${UUID()} in place still works (the engine cannot find such a channel over AMI, but
    # the call itself is right); so does another name, set from ${UUID()} before its use.
    inline = _broken_copy(tmp_path / "inline", "extensions.conf", _replace(
        "/${VE_UUID}/c(slin24)", "/${UUID()}/c(slin24)"))
    assert check.check_paths([inline]) == []
    renamed = _broken_copy(tmp_path / "renamed", "extensions.conf", lambda text: text.replace(
        "VE_UUID", "CALL_UUID"))
    assert check.check_paths([renamed]) == []


def test_samples_mark_the_callers_channel_with_ve_uuid() -> None:
    """Every AudioSocket use takes its UUID from VE_UUID, set just before on the same channel.

    The engine finds the caller's channel over AMI by VE_UUID (engine.agent.manager's
    find_channel), so a sample that used ${UUID()} in place would leave transfers no channel.
    """
    sections, problems = check.parse_conf((ASTERISK / "extensions.conf").read_text(), "x")
    assert problems == []
    uses = [e for s in sections for e in s.entries
            if "AudioSocket(" in e.value or "AudioSocket/" in e.value]
    assert len(uses) == 3
    assert all("${VE_UUID}" in e.value and "${UUID()}" not in e.value for e in uses)
    sets = [e for s in sections for e in s.entries if "Set(VE_UUID=${UUID()})" in e.value]
    assert len(sets) == 3


def test_checker_reports_a_missing_file(tmp_path: Path) -> None:
    broken = tmp_path / "asterisk"
    shutil.copytree(ASTERISK, broken)
    (broken / "modules.conf").unlink()
    missing = broken / "modules.conf"
    assert [str(p) for p in check.check_paths([broken])] == [f"{missing}:1: missing"]


def test_parser_comments_escapes_and_templates() -> None:
    text = (
        "[general]\nenabled = yes ; trailing comment\n"
        ";-- a block comment\n[ignored]\n--;\n"
        "[engine-user](!)\nsecret = s\\;t\ndeny = 0.0.0.0/0\npermit = 10.0.0.5/32\nwrite = call\n"
        "[voice-engine](engine-user)\nread = call\n"
    )
    sections, problems = check.parse_conf(text, "manager.conf")
    assert problems == []
    assert [s.name for s in sections] == ["general", "engine-user", "voice-engine"]
    user = sections[-1]
    assert [(e.key, e.value) for e in user.entries][:1] == [("secret", "s;t")]
    assert check.check_manager(sections, "manager.conf") == []
    assert check.check_manager(sections, "manager.conf", "someone-else")[0].message == \
        "no [someone-else] section"


def test_parser_reports_lines_it_cannot_read() -> None:
    sections, problems = check.parse_conf("stray = 1\n[ctx]\nwhat is this\n", "x.conf")
    assert [str(p) for p in problems] == [
        "x.conf:1: a setting before any [section]",
        "x.conf:3: not a [section] or key = value: 'what is this'",
    ]


def test_split_args_respects_nesting_and_quotes() -> None:
    assert check.split_args('${UUID()},${IF($[${X}>1]?a:b)},"c,d",e\\,f') == [
        "${UUID()}", "${IF($[${X}>1]?a:b)}", '"c,d"', "e\\,f"]


# --- systemd ------------------------------------------------------------------------------


def _unit_settings() -> dict[str, str]:
    settings: dict[str, str] = {}
    for line in UNIT.read_text().splitlines():
        if line and not line.startswith(("#", ";", "[")):
            key, _, value = line.partition("=")
            assert key not in settings, f"{key} is set twice"
            settings[key] = value
    return settings


def test_unit_agrees_with_the_engine() -> None:
    unit = _unit_settings()
    defaults = Config()
    assert unit["ExecStart"] == "/opt/voice-engine/bin/voice-engine run"
    assert unit["EnvironmentFile"] == "/etc/voice-engine/voice-engine.env"
    assert (unit["User"], unit["Group"]) == ("voice-engine", "voice-engine")
    assert (unit["KillSignal"], unit["KillMode"]) == ("SIGTERM", "mixed")
    assert int(unit["TimeoutStopSec"]) > defaults.drain_seconds
    assert int(unit["LimitNOFILE"]) >= 2 * defaults.max_concurrent_calls + 1024
    assert unit["Restart"] == "on-failure" and unit["RestartSec"]
    assert (unit["StateDirectory"], unit["RuntimeDirectory"]) == ("voice-engine",) * 2
    assert unit["CapabilityBoundingSet"] == ""
    assert unit["MemoryDenyWriteExecute"] == "yes"
    assert set(unit["RestrictAddressFamilies"].split()) == {"AF_INET", "AF_INET6", "AF_UNIX"}


def _verify(unit_text: str, tmp_path: Path) -> tuple[int, list[str]]:
    """``systemd-analyze verify`` on a copy; its return code and the lines about our unit."""
    copy = tmp_path / "voice-engine.service"
    copy.write_text(unit_text)
    result = subprocess.run(["systemd-analyze", "verify", "--man=no", str(copy)],
                            capture_output=True, text=True, timeout=120)
    lines = (result.stdout + result.stderr).splitlines()
    return result.returncode, [line for line in lines if "voice-engine" in line]


@pytest.fixture
def runnable_unit() -> str:
    """The shipped unit, its ExecStart pointed at this venv's console script.

    verify fails on an ExecStart that does not exist, so that path is swapped. Everything
    else is as shipped: verify resolves neither User= (a user that does not exist gives no
    warning; systemd looks it up when it starts the service) nor EnvironmentFile=.
    """
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed (Debian package systemd; .ci/run "
                    "installs it)")
    script = Path(sys.executable).parent / "voice-engine"
    assert script.is_file(), f"{script}: the console script is not installed"
    text = UNIT.read_text()
    assert "ExecStart=/opt/voice-engine/bin/voice-engine run\n" in text
    return text.replace("ExecStart=/opt/voice-engine/bin/voice-engine run",
                        f"ExecStart={script} run")


def test_systemd_analyze_verify_accepts_the_unit(runnable_unit: str, tmp_path: Path) -> None:
    assert _verify(runnable_unit, tmp_path) == (0, [])


@pytest.mark.parametrize("typo", ["KillMode=mixed\n", "ProtectSystem=strict\n"])
def test_systemd_analyze_verify_would_catch_a_bad_directive(
        runnable_unit: str, tmp_path: Path, typo: str) -> None:
    # verify only warns (exit 0) about a value it cannot parse: the lines are what to check.
    bad = runnable_unit.replace(typo, typo.replace("=", "=bogus"))
    code, lines = _verify(bad, tmp_path)
    assert lines, (code, lines)


def _sample_lines() -> dict[str, str]:
    shown: dict[str, str] = {}
    for line in ENV_SAMPLE.read_text().splitlines():
        match = re.match(r"^#([A-Z][A-Z0-9_]*)=(.*)$", line)
        if match:
            assert match.group(1) not in shown, f"{match.group(1)} is shown twice"
            shown[match.group(1)] = match.group(2)
    return shown


def test_env_sample_shows_every_setting_with_its_default(tmp_path: Path) -> None:
    shown = _sample_lines()
    assert set(shown) == {s.env for s in FIELDS}
    assert read_env_file(ENV_SAMPLE) == {}, "the sample must set nothing until edited"
    assert "mode 0600" in ENV_SAMPLE.read_text()
    for setting in FIELDS:
        if setting.secret and setting.show is None:
            assert shown[setting.env] in ("", "sk-REPLACE-WITH-YOUR-KEY"), setting.env
    # Uncommented, the sample must load and give exactly the defaults. AGENT_FILE is left
    # out: setting it at all is an error until agent files arrive.
    defaults = "\n".join(f"{name}={value}" for name, value in shown.items()
                         if name != "AGENT_FILE" and not _is_secret(name))
    uncommented = tmp_path / "voice-engine.env"
    uncommented.write_text(defaults + "\n")
    loaded = load(environ={}, env_file=uncommented, require_key=False)
    assert loaded == Config()


def _is_secret(name: str) -> bool:
    """A secret the sample leaves empty (one with a safe form to show, a records URL, shows
    its default)."""
    return next(s.secret and s.show is None for s in FIELDS if s.env == name)


_MDWE = r"""
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
# PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN: inherited by children and kept across execve.
if libc.prctl(65, 1, 0, 0, 0) != 0:
    sys.exit(77)
os.execv(sys.argv[1], sys.argv[1:])
"""

_ENGINE_PARTS = r"""
import asyncio, importlib.util, mmap, sys
try:
    mmap.mmap(-1, mmap.PAGESIZE, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
except PermissionError:
    pass
else:
    sys.exit("a writable and executable mapping was allowed: the rule is not in force")
import numpy, orjson, prometheus_client, uvloop, websockets
if importlib.util.find_spec("aiohttp"):
    import aiohttp.web
from engine import _impl
assert _impl.IMPL == "native", _impl.IMPL
pcm = (numpy.sin(numpy.arange(1600) / 8) * 8000).astype("<i2").tobytes()
assert len(_impl.g711.ulaw_decode(_impl.g711.ulaw_encode(pcm))) == len(pcm)
assert len(_impl.resample.Resampler(8000, 24000).process(pcm, last=True)) > 2 * len(pcm)

async def exchange():
    async def echo(reader, writer):
        writer.write(await reader.readexactly(323))
        await writer.drain()
        writer.close()
    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    reader, writer = await asyncio.open_connection(*server.sockets[0].getsockname()[:2])
    frame = b"\x10\x01\x40" + pcm[:320]
    writer.write(frame)
    assert await reader.readexactly(323) == frame
    writer.close()
    server.close()
    await server.wait_closed()

uvloop.run(exchange())
print("engine parts ran")
"""


def test_engine_runs_without_writable_executable_memory() -> None:
    """What MemoryDenyWriteExecute=yes forbids, enforced by the kernel (Linux 6.3+).

    systemd 252 enforces it with a seccomp filter; PR_SET_MDWE refuses the same mappings
    (writable and executable, or made executable later). The child first proves the rule is
    in force, then loads the native media core, numpy and the event loop and runs them.
    """
    env = dict(os.environ, VOICE_ENGINE_IMPL="native")
    result = subprocess.run([sys.executable, "-c", _MDWE, sys.executable, "-c", _ENGINE_PARTS],
                            capture_output=True, text=True, timeout=120, cwd=ROOT, env=env)
    if result.returncode == 77:
        pytest.skip("this kernel has no PR_SET_MDWE (Linux 6.3+)")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "engine parts ran"


# --- HAProxy ------------------------------------------------------------------------------


def _haproxy() -> str:
    found = shutil.which("haproxy") or ("/usr/sbin/haproxy" if Path("/usr/sbin/haproxy").is_file()
                                        else None)
    if found is None:
        pytest.skip("haproxy is not installed (Debian package haproxy; .ci/run installs it)")
    return found


def _haproxy_check(overrides: dict[str, str]) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VE_")}
    env.update(overrides)
    return subprocess.run([_haproxy(), "-c", "-f", str(HAPROXY_CFG)], capture_output=True,
                          text=True, timeout=60, env=env)


TEST_PORTS = {
    "VE_FRONTEND_BIND": "127.0.0.1:19093",
    "VE_ASTERISK_SOURCES": "127.0.0.1 ::1",
    "VE_NODE1_ADDR": "127.0.0.1", "VE_NODE1_PORT": "29093",
    "VE_NODE1_HEALTH_PORT": "29094", "VE_NODE1_AGENT_PORT": "29095",
    "VE_NODE2_ADDR": "127.0.0.1", "VE_NODE2_PORT": "39093",
    "VE_NODE2_HEALTH_PORT": "39094", "VE_NODE2_AGENT_PORT": "39095",
    "VE_HAPROXY_STATS_SOCKET": "/tmp/voice-engine-haproxy-test.sock",
    "VE_HAPROXY_MAXCONN": "2000",
    "VE_HAPROXY_LOG": "stderr",
}


@pytest.mark.parametrize("overrides", [
    {},
    TEST_PORTS,
    {**TEST_PORTS, "VE_SEND_PROXY_V2": "1"},
    {**TEST_PORTS, "VE_HAPROXY_NO_SETUID": "1"},
], ids=["defaults", "test-ports", "send-proxy-v2", "no-setuid"])
def test_haproxy_accepts_the_config(overrides: dict[str, str]) -> None:
    result = _haproxy_check(overrides)
    assert result.returncode == 0, result.stderr
    assert "Configuration file is valid" in result.stdout + result.stderr
    assert "WARNING" not in result.stderr, result.stderr


@pytest.mark.parametrize("name, value, complaint", [
    ("VE_NODE1_PORT", "99999", "invalid port"),
    ("VE_FRONTEND_BIND", "nowhere", "missing port"),
    ("VE_ASTERISK_SOURCES", "not-an-address", "not a valid IPv4 or IPv6 address"),
    ("VE_SEND_PROXY_V2", "yes", "unparsable conditional expression"),
])
def test_haproxy_reads_the_variables(name: str, value: str, complaint: str) -> None:
    # A config that ignored its variables would pass these too: make each one fail.
    result = _haproxy_check({**TEST_PORTS, name: value})
    assert result.returncode != 0
    assert complaint in result.stderr


def test_haproxy_header_lists_every_variable_it_reads() -> None:
    lines = HAPROXY_CFG.read_text().splitlines()
    used = {v for line in lines if not line.lstrip().startswith("#")
            for v in re.findall(r"\b(VE_[A-Z0-9_]+)", line)}
    listed = {v.replace("NODEn", f"NODE{n}") for line in lines if line.startswith("#   VE_")
              for v in [line.split()[1]] for n in (1, 2)}
    assert used == listed
