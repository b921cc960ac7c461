"""The agent file: its format, every mistake reported at its place, A/B assignment, the default
agent, tool declarations and the checking of the model's arguments."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import random
import subprocess
import sys
from pathlib import Path
from uuid import UUID

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine import realtime
from engine.agent import agentfile as af
from engine.config import Config
from engine.errors import ConfigError
from engine.sim.validate import shared_validator

ROOT = Path(__file__).resolve().parent.parent
SECRET = "sk-backend-SECRET-1234"
ENV = {"BACKEND_API_URL": "http://127.0.0.1:8080/", "BACKEND_API_KEY": SECRET}
HANGUP = '[[tool]]\nname = "end_call"\ndescription = "End."\naction = { type = "hangup" }\n'
LOOKUP = '''
[[tool]]
name = "lookup"
description = "Look the caller up."
parameters = { type = "object", required = ["phone"], properties.phone.type = "string" }
action.type = "http"
action.url = "{BACKEND_API_URL}/customers/{phone}"
action.headers = { Authorization = "Bearer ${BACKEND_API_KEY}" }
'''
TRANSFER = '''
[[tool]]
name = "transfer"
description = "Transfer the caller."
action.type = "transfer"
action.destinations.sales = { context = "from-internal", exten = "2001" }
action.destinations.operator = { context = "from-internal", exten = "2000", priority = 2 }
'''


def load(tmp_path: Path, text: str, env: dict[str, str] | None = None,
         config: Config | None = None) -> af.AgentFile:
    path = tmp_path / "agent.toml"
    path.write_text(text)
    return af.load(path, ENV if env is None else env, config or Config())


def problems(tmp_path: Path, text: str, **kw: object) -> list[str]:
    """The problems of the file, each with ``agent.toml`` for its path."""
    with pytest.raises(af.AgentFileError) as info:
        load(tmp_path, text, **kw)  # type: ignore[arg-type]
    assert str(info.value).startswith("invalid agent file:\n  ")
    return [p.replace(f"{tmp_path}/", "") for p in info.value.problems]


def agent_of(agent_file: af.AgentFile) -> af.Agent:
    return agent_file.default.agents[0]


# -- the format ---------------------------------------------------------------------------


def test_every_agent_key(tmp_path: Path) -> None:
    agent = agent_of(load(tmp_path, '''
[agent]
instructions = "You answer for Example. Caller {caller_id} ({caller_name}) dialled {dialled}."
voice = "verse"
turn_detection.type = "semantic_vad"
turn_detection.threshold = 0.7
turn_detection.silence_ms = 800
turn_detection.prefix_padding_ms = 200
turn_detection.eagerness = "low"
transcription_model = ""
max_output_tokens = 512
upstream_format = "pcmu"
max_call_seconds = 120
''' + HANGUP))
    assert agent.instructions.fields == ("caller_id", "caller_name", "dialled")
    assert (agent.voice, agent.transcription_model, agent.max_output_tokens) == ("verse", "", 512)
    assert (agent.upstream_format, agent.max_call_seconds) == ("pcmu", 120)
    assert agent.turn_detection == af.TurnDetection("semantic_vad", 0.7, 800, 200, "low")
    assert (agent.profile, agent.variant) == ("default", None)


def test_what_the_file_leaves_out_comes_from_the_configuration(tmp_path: Path) -> None:
    config = Config(system_prompt="Answer in {json} if asked.", openai_voice="sage",
                    vad_silence_ms=900, upstream_format="pcmu", max_call_seconds=60)
    agent = agent_of(load(tmp_path, "[agent]\nturn_detection = { threshold = 0.9 }\n" + HANGUP,
                          config=config))
    assert agent.instructions_for({"caller_id": "1"}) == "Answer in {json} if asked."
    assert agent.voice == "sage" and agent.upstream_format == "pcmu"
    assert agent.turn_detection == af.TurnDetection("server_vad", 0.9, 900, 300, "auto")
    assert agent.max_call_seconds == 60


def test_instructions_fill_per_call_and_missing_values_are_empty(tmp_path: Path) -> None:
    agent = agent_of(load(tmp_path, '[agent]\ninstructions = "{caller_id}|{caller_name}|'
                          '{dialled}|{call_id}|{variant}|{{braces}}"\n' + HANGUP))
    assert agent.instructions_for({"caller_id": "+44 20", "call_id": "c-1"}) == (
        "+44 20|||c-1||{braces}")
    assert agent.instructions_for({}) == "|||||{braces}"


def test_tools_actions_and_declarations(tmp_path: Path) -> None:
    agent = agent_of(load(tmp_path, HANGUP + LOOKUP + TRANSFER + '''
[[tool]]
name = "wait"
description = "Wait a little."
timeout_s = 2.5
action = { type = "python", callable = "asyncio:sleep" }
'''))
    assert [t.name for t in agent.tools] == ["end_call", "lookup", "transfer", "wait"]
    end_call, lookup, transfer, wait = agent.tools
    assert isinstance(end_call.action, af.HangupAction) and end_call.timeout_s == 8.0
    assert end_call.parameters == {"type": "object", "properties": {}}
    assert isinstance(lookup.action, af.HttpAction)
    assert (lookup.action.method, lookup.action.body) == ("GET", None)
    assert lookup.action.max_response_bytes == 16384
    assert lookup.action.url_for({"phone": "+44 20/7946"}) == (
        "http://127.0.0.1:8080/customers/%2B44%2020%2F7946")
    # A model's ".." must not climb to another endpoint.
    assert lookup.action.url_for({"phone": ".."}) == "http://127.0.0.1:8080/customers/%2E%2E"
    assert lookup.action.header_values() == {"Authorization": f"Bearer {SECRET}"}
    assert transfer.action == af.TransferAction(
        {"sales": af.Destination("from-internal", "2001", 1),
         "operator": af.Destination("from-internal", "2000", 2)}, "destination")
    # No parameters given: one is made, whose enum is the allow-list.
    assert transfer.parameters["properties"]["destination"]["enum"] == ["sales", "operator"]
    assert transfer.parameters["required"] == ["destination"]
    assert isinstance(wait.action, af.PythonAction) and wait.action.function is asyncio.sleep
    assert wait.timeout_s == 2.5
    declarations = agent.function_declarations()
    assert declarations[1] == {"type": "function", "name": "lookup",
                               "description": "Look the caller up.",
                               "parameters": lookup.parameters}
    assert agent.tool("lookup") is lookup and agent.tool("invented") is None


def test_http_body_method_and_json_string_parameters(tmp_path: Path) -> None:
    schema = json.dumps({"type": "object", "required": ["to"],
                         "properties": {"to": {"type": "string"}, "n": {"type": "integer"}}})
    agent = agent_of(load(tmp_path, HANGUP + f'''
[[tool]]
name = "sms"
description = "Send an SMS."
parameters = {json.dumps(schema)}
[tool.action]
type = "http"
method = "post"
url = "https://backend.example/sms?to={{to}}"
max_response_bytes = 100
'''))
    sms = agent.tool("sms")
    assert sms is not None and isinstance(sms.action, af.HttpAction)
    assert (sms.action.method, sms.action.body, sms.action.headers) == ("POST", "json", ())
    assert sms.action.url_for({"to": "a&b", "n": 1}) == "https://backend.example/sms?to=a%26b"
    assert sms.action.max_response_bytes == 100


def test_dtmf_policy(tmp_path: Path) -> None:
    agent = agent_of(load(tmp_path, HANGUP + TRANSFER + '''
[dtmf]
mode = "ignore"
map = { "0" = "transfer:operator", "#" = "end_call", "*" = "transfer:sales" }
'''))
    assert agent.dtmf.mode == "ignore"
    assert agent.dtmf.map == {
        "0": af.DtmfBinding("transfer", {"destination": "operator"}),
        "#": af.DtmfBinding("end_call"),
        "*": af.DtmfBinding("transfer", {"destination": "sales"}),
    }
    assert agent_of(load(tmp_path, HANGUP)).dtmf == af.DtmfPolicy("forward", {})


def test_profiles_per_port(tmp_path: Path) -> None:
    agent_file = load(tmp_path, '[agent]\ninstructions = "English."\n' + HANGUP + TRANSFER + '''
[dtmf]
map = { "0" = "transfer:operator" }

[profiles.spanish]
listen_port = 9096
instructions = "Español."
voice = "verse"
turn_detection = { silence_ms = 700 }
tools = ["end_call"]
dtmf = { mode = "ignore" }

[profiles.sales]
listen_port = 9097
dtmf = { mode = "forward" }

[[profiles.sales.tool]]
name = "bye"
description = "Hang up."
action = { type = "hangup" }
''')
    assert agent_file.listen_ports == (9096, 9097)
    assert agent_file.profile_for_port(9093) is agent_file.default
    assert agent_file.profile_for_port(12345) is agent_file.default  # e.g. LISTEN_PORT=0
    spanish = agent_file.profile_for_port(9096)
    agent, variant = spanish.agent_for_call(UUID(int=1))
    assert (spanish.name, variant, agent.profile) == ("spanish", None, "spanish")
    assert agent.instructions_for({}) == "Español." and agent.voice == "verse"
    assert agent.turn_detection.silence_ms == 700 and agent.turn_detection.threshold == 0.5
    assert [t.name for t in agent.tools] == ["end_call"]
    assert agent.dtmf == af.DtmfPolicy("ignore", {})
    sales = agent_file.profile_for_port(9097).agents[0]
    assert [t.name for t in sales.tools] == ["bye"]
    assert sales.instructions_for({}) == "English."
    assert agent_of(agent_file).dtmf.map["0"].tool == "transfer"
    assert agent_file.warnings == ()
    lines = agent_file.describe()
    assert any("profile spanish on port 9096: tools end_call; dtmf ignore" in x for x in lines)


def test_variants_override_and_are_named(tmp_path: Path) -> None:
    agent_file = load(tmp_path, '[agent]\ninstructions = "Long. {variant}"\n' + HANGUP + '''
[[variant]]
name = "control"
weight = 3

[[variant]]
name = "brief"
instructions = "Be brief. {variant}"
turn_detection = { silence_ms = 350 }
''')
    control, brief = agent_file.default.agents
    assert agent_file.default.weights == (3, 1)
    assert (control.variant, control.instructions_for({})) == ("control", "Long. control")
    assert (brief.variant, brief.instructions_for({})) == ("brief", "Be brief. brief")
    assert brief.turn_detection.silence_ms == 350
    assert any("variants: control 75%, brief 25%" in line for line in agent_file.describe())


def test_a_profile_has_only_its_own_variants(tmp_path: Path) -> None:
    """The top level's variants override [agent] keys that a profile may set differently
    (another language's instructions, say), so a profile never takes them."""
    agent_file = load(tmp_path, HANGUP + '''
[[variant]]
name = "a"
[[variant]]
name = "b"

[profiles.one]
listen_port = 9100

[profiles.two]
listen_port = 9101
[[profiles.two.variant]]
name = "x"
weight = 2
''')
    assert [a.variant for a in agent_file.default.agents] == ["a", "b"]
    assert [a.variant for a in agent_file.profile_for_port(9100).agents] == [None]
    assert [a.variant for a in agent_file.profile_for_port(9101).agents] == ["x"]


def test_the_documented_example_loads(tmp_path: Path) -> None:
    doc = af.__doc__ or ""
    block = doc[doc.index("A small one::") + len("A small one::"):doc.index("TOML wants")]
    text = "\n".join(line[4:] for line in block.splitlines())
    agent_file = load(tmp_path, text)
    assert [t.name for t in agent_of(agent_file).tools] == [
        "end_call", "transfer_to_department", "lookup_customer"]
    assert [a.variant for a in agent_file.default.agents] == ["short", "control"]
    assert agent_file.profile_for_port(9096).agents[0].variant is None
    assert agent_file.warnings == ()


# -- A/B assignment -----------------------------------------------------------------------

AB = HANGUP + '[[variant]]\nname = "a"\nweight = 1\n[[variant]]\nname = "b"\nweight = 3\n'


def test_the_slot_is_sha256_of_the_uuid_bytes() -> None:
    uuid = UUID("0b6b2cc2-6f4b-4d47-9f53-0f2b8e2c5e10")
    digest = hashlib.sha256(uuid.bytes).digest()
    assert af.variant_slot(uuid, 1000) == int.from_bytes(digest[:8], "big") % 1000


@given(st.uuids())
def test_assignment_is_deterministic(tmp_path_factory: pytest.TempPathFactory, uuid: UUID
                                     ) -> None:
    path = tmp_path_factory.getbasetemp() / "ab.toml"
    if not path.exists():
        path.write_text(AB)
    first = af.load(path, ENV, Config()).default.agent_for_call(uuid)
    again = af.load(path, ENV, Config()).default.agent_for_call(uuid)
    assert first[1] == again[1] == first[0].variant
    slot = af.variant_slot(uuid, 4)
    assert first[1] == ("a" if slot < 1 else "b")


def test_assignment_is_the_same_in_another_process(tmp_path: Path) -> None:
    uuids = [UUID(int=random.Random(7).getrandbits(128) + i) for i in range(50)]
    here = [af.variant_slot(u, 97) for u in uuids]
    code = ("import sys, uuid\nfrom engine.agent.agentfile import variant_slot\n"
            "print([variant_slot(uuid.UUID(u), 97) for u in sys.argv[1:]])")
    env = {**os.environ, "PYTHONHASHSEED": "12345", "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", code, *map(str, uuids)], capture_output=True,
                         text=True, env=env, timeout=60, check=True)
    assert out.stdout.strip() == str(here)


def test_assignment_follows_the_weights(tmp_path: Path) -> None:
    profile = load(tmp_path, AB).default
    rng = random.Random(20261202)
    counts = {"a": 0, "b": 0}
    for _ in range(10_000):
        _, name = profile.agent_for_call(UUID(int=rng.getrandbits(128), version=4))
        assert name is not None
        counts[name] += 1
    assert abs(counts["a"] - 2500) < 200 and abs(counts["b"] - 7500) < 200


# -- mistakes, each at its place ------------------------------------------------------------


def test_toml_syntax_error_names_the_line(tmp_path: Path) -> None:
    found = problems(tmp_path, '[agent]\nvoice = "alloy"\ninstructions = \n')
    assert found == ["agent.toml: line 3, column 16: invalid TOML: Invalid value"]


def test_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(af.AgentFileError) as info:
        af.load(tmp_path / "missing.toml", ENV, Config())
    assert info.value.problems == [f"{tmp_path}/missing.toml: cannot read it: No such file or "
                                   "directory"]
    assert isinstance(info.value, ConfigError)


def test_unknown_keys_at_every_level(tmp_path: Path) -> None:
    found = problems(tmp_path, '''
tools = []
[agent]
voise = "alloy"
turn_detection = { silence = 5 }
[[tool]]
name = "end_call"
description = "End."
timeout = 3
action = { type = "hangup", after = "goodbye" }
[dtmf]
maps = {}
[profiles.es]
listen_port = 9096
language = "es"
''')
    assert found == [
        "agent.toml: (top level) tools: unknown key; did you mean tool?",
        "agent.toml: [agent] voise: unknown key; did you mean voice?",
        "agent.toml: [agent] turn_detection.silence: unknown key; did you mean silence_ms?",
        'agent.toml: [[tool]] #1 "end_call" timeout: unknown key; did you mean timeout_s?',
        'agent.toml: [[tool]] #1 "end_call" action.after: unknown key; known: type',
        "agent.toml: [dtmf] maps: unknown key; did you mean map?",
        "agent.toml: [profiles.es] language: unknown key; known: listen_port, tools, tool, "
        "dtmf, variant, instructions, voice, turn_detection, transcription_model, "
        "max_output_tokens, upstream_format, max_call_seconds, transcripts",
    ]


def test_wrong_types_and_values(tmp_path: Path) -> None:
    found = problems(tmp_path, '''
[agent]
voice = 3
max_output_tokens = 9000
upstream_format = "opus"
turn_detection = { threshold = "high", type = "push_to_talk" }
[[tool]]
name = "end call"
description = true
timeout_s = 0
action = { type = "hangup" }
''')
    assert found == [
        "agent.toml: [agent] voice: expected a string, got an integer",
        "agent.toml: [agent] max_output_tokens: 9000 is not between 1 and 4096",
        "agent.toml: [agent] upstream_format: 'opus' is not one of pcm16, pcmu",
        "agent.toml: [agent] turn_detection.type: 'push_to_talk' is not one of server_vad, "
        "semantic_vad",
        "agent.toml: [agent] turn_detection.threshold: expected a number, got a string",
        "agent.toml: [[tool]] #1 \"end call\" name: 'end call' must be 1 to 64 letters, "
        "digits, _ or -",
        'agent.toml: [[tool]] #1 "end call" description: expected a string, got a boolean',
        'agent.toml: [[tool]] #1 "end call" timeout_s: 0 is not between 0.1 and 300',
    ]


def test_missing_keys(tmp_path: Path) -> None:
    found = problems(tmp_path, '[[tool]]\ndescription = "x"\n[[tool]]\nname = "t"\n'
                               'description = "x"\naction = { type = "teleport" }\n')
    assert found == [
        "agent.toml: [[tool]] #1 name: missing: the name the model calls",
        "agent.toml: [[tool]] #1 action: missing: an action table, e.g. action = "
        '{ type = "hangup" }',
        "agent.toml: [[tool]] #2 \"t\" action.type: 'teleport' is not one of hangup, "
        "transfer, http, python",
    ]


def test_duplicate_tool(tmp_path: Path) -> None:
    found = problems(tmp_path, HANGUP + HANGUP)
    assert found == ['agent.toml: [[tool]] #2 "end_call" name: "end_call" is already the name '
                     "of [[tool]] #1: each tool needs its own"]


@pytest.mark.parametrize(("schema", "expected"), [
    ('{ type = "object", properties = { a = { type = "strng" } } }',
     "parameters.properties.a.type: 'strng' is not a JSON schema type (string, number, "
     "integer, boolean, object, array, null)"),
    ('{ type = "object", required = ["phne"], properties = { phone = { type = "string" } } }',
     "parameters.required: names phne, which properties does not declare"),
    ('{ type = "string" }', 'parameters.type: must be "object": a tool takes named arguments'),
    ('{ type = "object", properties = 3 }', "parameters.properties: expected a table of schemas"),
    ('{ type = "object", properties = { a = { enum = [] } } }',
     "parameters.properties.a.enum: expected a non-empty array"),
    ('{ type = "object", properties = { a = { type = "string", minLength = "x" } } }',
     "parameters: not a schema fastjsonschema can compile: minLength must be a number"),
    ('{ type = "object", properties = { a = { "$ref" = "https://evil.example/s.json" } } }',
     "parameters: not a schema fastjsonschema can compile: $ref https://evil.example/s.json is "
     "outside the schema: only local references (#/...) are followed"),
    ("'{\"type\": \"object\",'", "parameters: not valid JSON: unexpected end of data: line 1 "
     "column 19 (char 18)"),
    ("[1]", "parameters: expected a table (or a string of JSON), got an array"),
])
def test_bad_schema(tmp_path: Path, schema: str, expected: str) -> None:
    found = problems(tmp_path, f'[[tool]]\nname = "t"\ndescription = "d"\nparameters = {schema}\n'
                               'action = { type = "hangup" }\n')
    assert found == [f'agent.toml: [[tool]] #1 "t" {expected}']


def test_transfer_enum_must_be_the_destinations(tmp_path: Path) -> None:
    head = ('[[tool]]\nname = "xfer"\ndescription = "d"\naction = { type = "transfer", '
            'destinations = { sales = { context = "c", exten = "1" }, support = { context = '
            '"c", exten = "2" } } }\n')
    found = problems(tmp_path, head + 'parameters = { type = "object", required = ["dept"], '
                     'properties = { dept = { type = "string", enum = ["sales", "billing"] } } }')
    assert found == ['agent.toml: [[tool]] #1 "xfer" parameters: no property\'s enum is the '
                     "destinations ['sales', 'support']; dept has enum ['sales', 'billing']"]
    found = problems(tmp_path, head + 'parameters = { type = "object", properties = { dept = '
                     '{ type = "string", enum = ["support", "sales"] } } }')
    assert found == ['agent.toml: [[tool]] #1 "xfer" parameters.required: must list dept: a '
                     "transfer needs its destination"]
    found = problems(tmp_path, head + 'parameters = { type = "object", properties = { why = '
                     '{ type = "string" } } }')
    assert found == ['agent.toml: [[tool]] #1 "xfer" parameters: no property\'s enum is the '
                     "destinations ['sales', 'support']: add one (type string, required), or "
                     "leave parameters out to have it made"]
    ok = agent_of(load(tmp_path, head + 'parameters = { type = "object", required = ["dept"], '
                       'properties = { dept = { type = "string", enum = ["support", "sales"] } '
                       '} }'))
    assert ok.tools[0].action.argument == "dept"  # type: ignore[union-attr]


def test_transfer_destinations(tmp_path: Path) -> None:
    found = problems(tmp_path, '[[tool]]\nname = "x"\ndescription = "d"\n[tool.action]\n'
                     'type = "transfer"\ndestinations.sales = { context = "c", exten = 2001 }\n'
                     'destinations.ops = { context = "a\\r\\nAction: Hangup", exten = "1" }\n'
                     'destinations.bad = "2001"\n')
    assert found == [
        'agent.toml: [[tool]] #1 "x" action.destinations.sales.exten: expected a string: '
        'quote it (exten = "2001")',
        'agent.toml: [[tool]] #1 "x" action.destinations.ops.context: must be non-empty, '
        "without spaces or control characters",
        'agent.toml: [[tool]] #1 "x" action.destinations.bad: expected a table with context, '
        "exten and priority, got a string",
    ]


def test_unknown_template_fields(tmp_path: Path) -> None:
    found = problems(tmp_path, '[agent]\ninstructions = "Hello {caller}, {caller_id.x}"\n'
                     + LOOKUP.replace("{phone}", "{phone2}") + '''
[[tool]]
name = "avail"
description = "d"
parameters = { type = "object", properties = { date = { type = "string" } } }
action = { type = "http", url = "{BACKEND_API_URL}/availability?date={date}" }

[[tool]]
name = "anywhere"
description = "d"
parameters = { type = "object", required = ["host"], properties = { host = { type = "string" } } }
action = { type = "http", url = "https://{host}/x" }
''')
    assert found == [
        "agent.toml: [agent] instructions: unknown field {caller}; the fields are caller_id, "
        "caller_name, dialled, call_id, variant",
        'agent.toml: [[tool]] #1 "lookup" action.url: unknown field {phone2}; the tool\'s '
        "parameters have phone",
        'agent.toml: [[tool]] #2 "avail" action.url: {date} is not in the parameters\' required '
        "list: the URL needs it on every call",
        'agent.toml: [[tool]] #3 "anywhere" action.url: must start with http:// or https:// '
        "and a host that no field changes",
    ]
    found = problems(tmp_path, '[agent]\ninstructions = "{caller_id.x} {caller_id!r}"\n' + HANGUP)
    assert found == ["agent.toml: [agent] instructions: {caller_id.x} is not a field name"]
    found = problems(tmp_path, '[agent]\ninstructions = "a } b"\n' + HANGUP)
    assert found == ["agent.toml: [agent] instructions: Single '}' encountered in format string"]


def test_missing_environment_variables_are_named(tmp_path: Path) -> None:
    found = problems(tmp_path, LOOKUP.replace("BACKEND_API_KEY", "CRM_TOKEN"), env={})
    assert found == [
        'agent.toml: [[tool]] #1 "lookup" action.url: {BACKEND_API_URL} needs the environment '
        "variable BACKEND_API_URL, which is not set",
        'agent.toml: [[tool]] #1 "lookup" action.headers.Authorization: environment variable '
        "CRM_TOKEN is not set",
    ]
    found = problems(tmp_path, LOOKUP, env={**ENV, "BACKEND_API_KEY": ""})
    assert found == ['agent.toml: [[tool]] #1 "lookup" action.headers.Authorization: '
                     "environment variable BACKEND_API_KEY is empty"]
    found = problems(tmp_path, LOOKUP, env={**ENV, "BACKEND_API_URL": "https://u:pw@crm"})
    assert found == ['agent.toml: [[tool]] #1 "lookup" action.url: BACKEND_API_URL holds '
                     "credentials: put them in a header"]


def test_http_method_and_body(tmp_path: Path) -> None:
    found = problems(tmp_path, '[[tool]]\nname = "h"\ndescription = "d"\naction = { type = '
                     '"http", method = "FETCH", url = "ftp://x/y" }\n[[tool]]\nname = "g"\n'
                     'description = "d"\naction = { type = "http", url = "http://x/", body = '
                     '"json" }\n')
    assert found == [
        "agent.toml: [[tool]] #1 \"h\" action.method: 'FETCH' is not one of GET, POST, PUT, "
        "PATCH, DELETE",
        'agent.toml: [[tool]] #1 "h" action.url: must start with http:// or https:// and a '
        "host that no field changes",
        'agent.toml: [[tool]] #2 "g" action.body: GET sends no body: put the arguments in the '
        "URL",
    ]


@pytest.mark.parametrize(("target", "expected"), [
    ("no_such_module_here:run", "cannot import no_such_module_here: ModuleNotFoundError: No "
     "module named 'no_such_module_here'"),
    ("json:nothing", "json has no nothing"),
    ("json:dumps", "json:dumps is not an async function (async def)"),
    ("json.dumps", "'json.dumps' is not \"package.module:function\""),
])
def test_python_callable_must_import_and_be_async(tmp_path: Path, target: str,
                                                  expected: str) -> None:
    found = problems(tmp_path, f'[[tool]]\nname = "p"\ndescription = "d"\naction = {{ type = '
                               f'"python", callable = "{target}" }}\n')
    assert found == [f'agent.toml: [[tool]] #1 "p" action.callable: {expected}']


def test_dtmf_map_mistakes(tmp_path: Path) -> None:
    found = problems(tmp_path, HANGUP + TRANSFER + LOOKUP + '''
[dtmf]
mode = "speak"
[dtmf.map]
0 = "operator"
"#" = "end_call:now"
1 = "transfer"
2 = "transfer:hr"
3 = "lookup"
x = "end_call"
4 = 4
''')
    assert found == [
        "agent.toml: [dtmf] mode: 'speak' is not one of forward, ignore",
        'agent.toml: [dtmf] map."x": not a DTMF digit (0 1 2 3 4 5 6 7 8 9 * # A B C D)',
        'agent.toml: [dtmf] map."4": expected "tool" or "tool:destination", got an integer',
        'agent.toml: [dtmf] map."0": no tool of profile default is called operator; its tools '
        "are: end_call, transfer, lookup",
        'agent.toml: [dtmf] map."#": end_call hangs up: it takes no destination',
        'agent.toml: [dtmf] map."1": transfer needs one of its destinations: transfer:sales, '
        "transfer:operator",
        'agent.toml: [dtmf] map."2": transfer needs one of its destinations: transfer:sales, '
        "transfer:operator",
        'agent.toml: [dtmf] map."3": lookup is not a hangup or transfer tool: a digit runs only '
        "those",
    ]
    # The top-level map also has to fit each profile that takes it.
    found = problems(tmp_path, HANGUP + TRANSFER + '[dtmf]\nmap = { "0" = "transfer:sales" }\n'
                     '[profiles.es]\nlisten_port = 9096\ntools = ["end_call"]\n')
    assert found == ['agent.toml: [dtmf] map."0": no tool of profile es is called transfer; its '
                     "tools are: end_call; or give [profiles.es] its own dtmf"]


def test_profile_mistakes(tmp_path: Path) -> None:
    found = problems(tmp_path, HANGUP + '''
[profiles.main]
listen_port = 9093
[profiles.es]
listen_port = 9096
tools = ["end_call", "end_call", "nope"]
[profiles.es2]
listen_port = 9096
[profiles.health]
listen_port = 9094
[profiles.noport]
[profiles.default]
listen_port = 9200
''')
    assert found == [
        "agent.toml: [profiles.main] listen_port: 9093 is taken by LISTEN_PORT",
        "agent.toml: [profiles.es] tools: end_call is listed twice",
        "agent.toml: [profiles.es] tools: no [[tool]] is called nope; there are: end_call",
        "agent.toml: [profiles.es2] listen_port: 9096 is taken by profile es",
        "agent.toml: [profiles.health] listen_port: 9094 is taken by HEALTH_PORT",
        "agent.toml: [profiles.noport] listen_port: missing: the port this profile answers on",
        "agent.toml: [profiles.default]: a profile's name is letters, digits, _ and - (at most "
        "64), and not default (the top level's)",
    ]


def test_variant_weights_and_names(tmp_path: Path) -> None:
    found = problems(tmp_path, HANGUP + '''
[[variant]]
name = "a"
weight = 0
[[variant]]
name = "b"
weight = 1.5
[[variant]]
name = "c"
weight = true
[[variant]]
name = "d"
[[variant]]
name = "d"
[[variant]]
weight = 2
''')
    assert found == [
        'agent.toml: [[variant]] #1 "a" weight: must be a whole number of at least 1 (its share '
        "of the calls), not 0",
        'agent.toml: [[variant]] #2 "b" weight: must be a whole number of at least 1 (its share '
        "of the calls), not 1.5",
        'agent.toml: [[variant]] #3 "c" weight: must be a whole number of at least 1 (its share '
        "of the calls), not True",
        'agent.toml: [[variant]] #5 "d" name: "d" is already the name of a variant',
        "agent.toml: [[variant]] #6 name: missing: the name logged with each call of this "
        "variant",
    ]


def test_every_problem_is_listed_at_once(tmp_path: Path) -> None:
    found = problems(tmp_path, '[agent]\nvoice = ""\n' + LOOKUP.replace("{phone}", "{x}")
                     + '[dtmf]\nmap = { "0" = "lookup" }\n', env={})
    assert len(found) == 4
    assert found[0] == "agent.toml: [agent] voice: must not be empty"
    # lookup is broken already: the map naming it adds no follow-on problem.
    assert not any("map" in p for p in found)


def test_a_profile_without_a_hangup_tool_is_a_warning(tmp_path: Path) -> None:
    agent_file = load(tmp_path, TRANSFER)
    assert agent_file.warnings == (
        f"{tmp_path}/agent.toml: profile default: no tool hangs up, so the model cannot end a "
        "call (the caller or MAX_CALL_SECONDS will)",)


# -- the default agent, declarations, arguments ----------------------------------------------


def test_default_agent(tmp_path: Path) -> None:
    config = Config(system_prompt="Be kind {always}.", openai_voice="ash", max_call_seconds=90)
    agent_file = af.default_agent(config)
    assert agent_file.path is None and agent_file.profiles == ()
    agent, variant = agent_file.profile_for_port(9093).agent_for_call(UUID(int=5))
    assert variant is None
    assert agent.instructions_for({"caller_id": "1"}) == "Be kind {always}."
    assert (agent.voice, agent.max_call_seconds) == ("ash", 90)
    (end_call,) = agent.tools
    assert end_call.name == "end_call" and isinstance(end_call.action, af.HangupAction)
    props = end_call.parameters["properties"]
    assert set(props) == {"summary", "disposition"}
    assert props["disposition"]["enum"] == list(af.DISPOSITIONS)
    assert {"resolved", "caller_request", "other"} <= set(af.DISPOSITIONS)
    assert end_call.validate('{"summary": "Asked the hours.", "disposition": "resolved"}') == {
        "summary": "Asked the hours.", "disposition": "resolved"}
    assert agent.dtmf == af.DtmfPolicy()


@pytest.mark.parametrize("dialect", [realtime.Dialect.GA, realtime.Dialect.BETA])
def test_receptionist_declarations_pass_the_sdk(dialect: realtime.Dialect) -> None:
    agent_file = af.load(ROOT / "examples" / "receptionist.toml", ENV, Config())
    for profile in (agent_file.default, *agent_file.profiles):
        agent = profile.agents[0]
        event = realtime.Encoder(dialect).session_update(
            agent.session_settings({"caller_id": "+15550100"}))
        sdk = "beta" if dialect is realtime.Dialect.BETA else "ga"
        doc = orjson.loads(event)
        assert shared_validator(sdk, "client").problem(doc) is None
        assert [t["name"] for t in doc["session"]["tools"]] == [
            "transfer_to_department", "end_call", "lookup_customer", "check_availability",
            "book_appointment", "send_sms"]
        assert "+15550100" in doc["session"]["instructions"]


def test_receptionist_example() -> None:
    agent_file = af.load(ROOT / "examples" / "receptionist.toml", ENV, Config())
    agent = agent_of(agent_file)
    transfer = agent.tool("transfer_to_department")
    assert transfer is not None and isinstance(transfer.action, af.TransferAction)
    assert set(transfer.action.destinations) == {"sales", "support", "billing", "operator"}
    assert agent.dtmf.map["0"] == af.DtmfBinding("transfer_to_department",
                                                 {"department": "operator"})
    availability = agent.tool("check_availability")
    assert availability is not None and isinstance(availability.action, af.HttpAction)
    assert availability.action.url_for({"date": "2026-12-24"}) == (
        "http://127.0.0.1:8080/availability?date=2026-12-24")
    assert availability.action.url_for({"date": "a&b=c#d"}) == (
        "http://127.0.0.1:8080/availability?date=a%26b%3Dc%23d")
    booking = agent.tool("book_appointment")
    assert booking is not None and isinstance(booking.action, af.HttpAction)
    assert (booking.action.method, booking.action.body) == ("POST", "json")
    spanish = agent_file.profile_for_port(9096).agents[0]
    assert spanish.instructions_for({}).lstrip().startswith("Eres la recepcionista")
    assert agent_file.warnings == ()


@pytest.fixture
def booking() -> af.ToolSpec:
    agent = af.load(ROOT / "examples" / "receptionist.toml", ENV, Config()).default.agents[0]
    spec = agent.tool("book_appointment")
    assert spec is not None
    return spec


def test_valid_arguments(booking: af.ToolSpec) -> None:
    args = {"name": "Ana", "phone": "+15550100", "date": "2026-12-24", "time": "09:30"}
    assert booking.validate(json.dumps(args)) == args
    spec = af.ToolSpec("t", "d", {"type": "object", "properties": {
        "n": {"type": "integer", "default": 3}}}, af.HangupAction())
    assert spec.validate("{}") == {"n": 3}
    assert spec.validate("  ") == {"n": 3}  # a tool without arguments may get none at all


@pytest.mark.parametrize(("arguments", "reason"), [
    ('{"name": "Ana",', "arguments are not valid JSON: unexpected end of data: line 1 column "
     "16 (char 15)"),
    ("[1, 2]", "arguments must be a JSON object"),
    ('{"name": "Ana"}', "arguments must contain ['date', 'phone', 'time'] properties"),
    ('{"name": "Ana", "phone": "1", "date": "tomorrow", "time": "09:30"}',
     "arguments.date must be date"),
    ('{"name": "Ana", "phone": "1", "date": "2026-12-24", "time": "9:30"}',
     "arguments.time must match pattern ^[0-2][0-9]:[0-5][0-9]$"),
    ('{"name": "Ana", "phone": "1", "date": "2026-12-24", "time": "09:30", "vip": true}',
     "arguments must not contain {'vip'} properties"),
])
def test_invalid_arguments(booking: af.ToolSpec, arguments: str, reason: str) -> None:
    with pytest.raises(af.ToolArgumentsInvalid) as info:
        booking.validate(arguments)
    assert (info.value.tool, info.value.reason) == ("book_appointment", reason)
    assert str(info.value) == f"invalid arguments for tool book_appointment: {reason}"


# -- secrets ------------------------------------------------------------------------------


def test_the_backend_key_never_shows(tmp_path: Path) -> None:
    agent_file = load(tmp_path, LOOKUP + HANGUP)
    lookup = agent_of(agent_file).tool("lookup")
    assert lookup is not None and isinstance(lookup.action, af.HttpAction)
    assert lookup.action.header_values()["Authorization"] == f"Bearer {SECRET}"
    for shown in (repr(agent_file), str(agent_file), repr(lookup), str(lookup.action),
                  "\n".join(agent_file.describe()), repr(agent_of(agent_file))):
        assert SECRET not in shown
    assert "Bearer ${BACKEND_API_KEY}" in repr(lookup.action)
    # Broken files: neither a bad expansion nor other problems in that tool show the key.
    broken = LOOKUP.replace('url = "{BACKEND_API_URL}/customers/{phone}"', 'url = "{x}"')
    env = {**ENV, "BACKEND_API_KEY": SECRET + "\r\nX-Injected: 1"}
    with pytest.raises(af.AgentFileError) as info:
        load(tmp_path, broken + '[agent]\nvoice = ""\n', env=env)
    assert SECRET not in str(info.value) and SECRET not in repr(info.value)
    assert any("action.headers.Authorization: has a line break or control character once "
               "expanded" in p for p in info.value.problems)


def test_the_readme_s_minimal_agent_file_loads(tmp_path: Path) -> None:
    import re

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    section = readme[readme.index("## The agent"):]
    block = re.search(r"```toml\n(.*?)```", section, re.S)
    assert block is not None
    path = tmp_path / "agent.toml"
    path.write_text(block.group(1))
    agents = af.load(path, {}, Config())
    agent = agents.default.agents[0]
    assert [t.name for t in agent.tools] == ["end_call", "transfer"]
    assert agent.dtmf.map["0"].tool == "transfer"
