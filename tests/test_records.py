"""Call records: usage and cost, the two stores (SQLite and a real PostgreSQL server), the
writer that keeps them off the worker's loop, records of real calls through the simulator,
and ``voice-engine calls``.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import os
import stat
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import CliRunner

from engine import caller, upstream
from engine.agent.agentfile import AgentFile
from engine.call import CallSettings
from engine.cli import main as cli
from engine.config import Config
from engine.errors import ConfigError, RecordsSchemaTooNew, RecordsUnavailable
from engine.records.command import parse_since
from engine.records.record import CallRecord
from engine.records.store import PostgresStore, SqliteStore, Store, open_store, parse_url, redact
from engine.records.usage import DEFAULT_PRICES, Prices, Usage, prices_for
from engine.records.writer import RecordWriter
from engine.sim import SimConfig, Simulator
from engine.worker import Worker, WorkerLimits
from tests.pgserver import PgServer, pg_bin
from tests.test_agent_tools import (
    agent_file,
    asterisk,
    make_config,
    quiet,
    run,
    script,
    speech,
)

UTC = dt.UTC
T0 = dt.datetime(2026, 12, 3, 9, 30, tzinfo=UTC)


# -- usage and prices ------------------------------------------------------------------------


def ga_usage(text_in: int, audio_in: int, cached_text: int, cached_audio: int, text_out: int,
             audio_out: int) -> dict[str, Any]:
    return {
        "total_tokens": text_in + audio_in + text_out + audio_out,
        "input_tokens": text_in + audio_in, "output_tokens": text_out + audio_out,
        "input_token_details": {
            "text_tokens": text_in, "audio_tokens": audio_in, "image_tokens": 0,
            "cached_tokens": cached_text + cached_audio,
            "cached_tokens_details": {"text_tokens": cached_text, "audio_tokens": cached_audio,
                                      "image_tokens": 0}},
        "output_token_details": {"text_tokens": text_out, "audio_tokens": audio_out},
    }


def test_usage_adds_every_kind_and_costs_each_at_its_price() -> None:
    usage = Usage()
    usage.add(ga_usage(1000, 2000, 0, 0, 100, 3000))
    usage.add(ga_usage(1200, 2500, 1000, 500, 50, 1000))
    assert usage.as_dict() == {"responses": 2, "input_text": 2200, "input_audio": 4500,
                               "cached_text": 1000, "cached_audio": 500, "output_text": 150,
                               "output_audio": 4000}
    prices = Prices(text_input=4, text_cached_input=0.4, text_output=16, audio_input=32,
                    audio_cached_input=0.4, audio_output=64)
    expected = (1200 * 4 + 1000 * 0.4 + 150 * 16 + 4000 * 32 + 500 * 0.4 + 4000 * 64) / 1e6
    assert usage.cost(prices) == pytest.approx(expected, rel=1e-12)
    assert usage.cost(None) is None


def test_beta_cached_tokens_without_a_breakdown_count_as_text_first() -> None:
    usage = Usage()
    usage.add({"input_tokens": 300, "output_tokens": 40,
               "input_token_details": {"text_tokens": 100, "audio_tokens": 200,
                                       "cached_tokens": 150},
               "output_token_details": {"text_tokens": 10, "audio_tokens": 30}})
    assert (usage.cached_text, usage.cached_audio) == (100, 50)


@pytest.mark.parametrize("block", [None, "usage", {"input_tokens": "many"}, {
    "input_token_details": {"text_tokens": -5, "audio_tokens": True}}, {
    "input_token_details": {"text_tokens": 10, "cached_tokens_details": {"text_tokens": 99}}}])
def test_malformed_usage_counts_a_response_and_never_a_negative_or_invented_token(
        block: Any) -> None:
    usage = Usage()
    usage.add(block)
    assert usage.responses == 1
    assert all(v >= 0 for v in usage.as_dict().values())
    assert usage.cached_text <= usage.input_text and usage.cached_audio <= usage.input_audio


def test_a_dated_snapshot_takes_its_models_prices_and_an_unknown_model_none() -> None:
    assert prices_for("gpt-realtime-2025-08-28") is DEFAULT_PRICES["gpt-realtime"]
    assert prices_for("gpt-realtime-mini-2025-10-06") is DEFAULT_PRICES["gpt-realtime-mini"]
    assert prices_for("gpt-realtimeish") is None
    assert prices_for("my-azure-deployment") is None


def test_the_agent_file_overrides_prices_and_prices_a_new_model(tmp_path: Path) -> None:
    agents = agent_file(tmp_path, """
[prices."gpt-realtime"]
audio_input = 30.0
[prices."contoso-voice"]
text_input = 1
text_cached_input = 0.1
text_output = 2
audio_input = 3
audio_cached_input = 0.3
audio_output = 6
""")
    base = DEFAULT_PRICES["gpt-realtime"]
    assert agents.prices["gpt-realtime"] == Prices(**{**base.as_dict(), "audio_input": 30.0})
    assert agents.prices["contoso-voice"].audio_output == 6.0
    assert agents.prices["gpt-realtime-mini"] == DEFAULT_PRICES["gpt-realtime-mini"]


def test_a_new_model_needs_every_price_and_a_price_is_a_number(tmp_path: Path) -> None:
    from engine.agent.agentfile import AgentFileError

    with pytest.raises(AgentFileError) as caught:
        agent_file(tmp_path, '[prices."contoso-voice"]\ntext_input = 1\n'
                   '[prices."gpt-realtime"]\naudio_input = "cheap"\nvideo = 1\n')
    problems = "\n".join(caught.value.problems)
    assert 'contoso-voice"] audio_output: missing' in problems
    assert 'gpt-realtime"] audio_input: expected a number' in problems
    assert 'gpt-realtime"] video' in problems


# -- URLs ------------------------------------------------------------------------------------


def test_records_urls_are_checked_and_their_passwords_never_shown() -> None:
    assert parse_url("sqlite:///calls.db").location == "calls.db"
    assert redact("sqlite:///./calls.db") == "sqlite:///./calls.db"
    assert parse_url("sqlite:////var/lib/ve/calls.db").location == "/var/lib/ve/calls.db"
    assert parse_url("postgresql://u:p@db/calls").dialect == "postgresql"
    assert parse_url("postgres://u@db/calls?sslmode=require").dialect == "postgresql"
    for bad in ("sqlite://calls.db", "sqlite:///", "mysql://db/x", "postgresql://db", "calls"):
        with pytest.raises(ConfigError):
            parse_url(bad)
    assert redact("postgresql://voice:s3cret@db:5432/calls") == "postgresql://voice:***@db:5432/calls"
    assert "s3cret" not in redact("postgresql://db/calls?user=v&password=s3cret")


def test_config_takes_records_url_and_refuses_a_bad_one_without_echoing_it() -> None:
    from engine import config

    loaded = config.load({"RECORDS_URL": "sqlite:////tmp/x.db"}, require_key=False)
    assert loaded.records_url == "sqlite:////tmp/x.db"
    assert config.load({"RECORDS_URL": ""}, require_key=False).records_url is None
    assert config.load({}, require_key=False).records_url == "sqlite:///./calls.db"
    with pytest.raises(ConfigError) as caught:
        config.load({"RECORDS_URL": "mysql://root:hunter2@db/x"}, require_key=False)
    assert "RECORDS_URL" in str(caught.value) and "hunter2" not in str(caught.value)


# -- the stores ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def postgres() -> Iterator[PgServer]:
    if pg_bin() is None:
        pytest.skip("PostgreSQL is not installed (Debian package postgresql; .ci/run "
                    "installs it)")
    server = PgServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _reset(server: PgServer) -> None:
    import psycopg

    with psycopg.connect(server.url, autocommit=True) as db:
        db.execute("DROP TABLE IF EXISTS calls")
        db.execute("DROP TABLE IF EXISTS records_schema")


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/calls.db"
    server: PgServer = request.getfixturevalue("postgres")
    _reset(server)
    return server.url


def a_record(n: int = 0, **changes: Any) -> CallRecord:
    started = T0 + dt.timedelta(minutes=n)
    values: dict[str, Any] = dict(
        uuid=str(uuid.UUID(int=n + 1)), started_at=started,
        answered_at=started + dt.timedelta(milliseconds=180),
        ended_at=started + dt.timedelta(seconds=42.5), end_reason="caller_hangup",
        node="pbx-a", peer="10.0.0.5:40000", listen_port=9093, profile="default",
        variant="short", caller_id="+15551234", caller_name="Ana Núñez", dialled="8000",
        duration_s=42.5, model="gpt-realtime", dialect="ga", upstream_format="pcm16",
        rate=8000, upstream_sessions=1, caller_frames=2125, frames_out=2116, underruns=2,
        rephases=3, clock_late_wakeups=1, bargeins=1, truncates=1, dtmf="1#", responses=3,
        input_text_tokens=900, input_audio_tokens=420, cached_text_tokens=600,
        cached_audio_tokens=0, output_text_tokens=40, output_audio_tokens=800,
        cost_usd=0.067, tools=[{"name": "end_call", "arguments": '{"summary": "ok"}',
                                "outcome": "ok", "ms": 3}],
        transcript=[["user", "Hola, ¿abren mañana?"], ["assistant", "Sí, a las nueve."]],
    )
    values.update(changes)
    return CallRecord(**values)


def opened(url: str) -> Store:
    store = open_store(url)
    store.migrate()
    return store


def test_a_record_reads_back_as_it_was_written(store_url: str) -> None:
    store = opened(store_url)
    try:
        written = [a_record(0), a_record(1, answered_at=None, transcript=None, tools=[],
                                        cost_usd=None, variant=None, error_class="UpstreamClosed",
                                        error="closed (1011)", end_reason="upstream_failed")]
        store.write(written)
        assert store.get(written[0].uuid) == [written[0]]
        assert store.get(written[1].uuid) == [written[1]]
        assert store.get(str(uuid.uuid4())) == []
    finally:
        store.close()


def test_listing_filters_by_time_and_reason_newest_first(store_url: str) -> None:
    store = opened(store_url)
    try:
        store.write([a_record(n, end_reason="upstream_failed" if n % 3 == 0 else
                              "caller_hangup") for n in range(10)])
        recent = store.recent(limit=4)
        assert [r.started_at for r in recent] == [T0 + dt.timedelta(minutes=n)
                                                  for n in (9, 8, 7, 6)]
        since = store.recent(since=T0 + dt.timedelta(minutes=5), limit=100)
        assert len(since) == 5
        failed = store.recent(reason="upstream_failed", limit=100)
        assert [r.started_at.minute - 30 for r in failed] == [9, 6, 3, 0]
        assert store.recent(since=T0 + dt.timedelta(hours=1), limit=100) == []
    finally:
        store.close()


def test_a_uuid_asterisk_uses_twice_keeps_both_records_latest_first(store_url: str) -> None:
    store = opened(store_url)
    try:
        first, second = a_record(0), a_record(5, uuid=str(uuid.UUID(int=1)))
        store.write([first])
        store.write([second])
        assert store.get(first.uuid) == [second, first]
    finally:
        store.close()


def test_migration_is_idempotent_and_safe_when_workers_start_together(store_url: str) -> None:
    errors: list[BaseException] = []
    start = threading.Barrier(6)

    def worker() -> None:
        try:
            start.wait()
            store = open_store(store_url)
            try:
                store.migrate()
                store.write([a_record(0)])
            finally:
                store.close()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == []
    store = opened(store_url)
    try:
        assert len(store.get(a_record(0).uuid)) == 6
    finally:
        store.close()


def test_a_database_migrated_by_a_newer_engine_is_refused(store_url: str) -> None:
    store = opened(store_url)
    try:
        if isinstance(store, SqliteStore):
            store._db.execute("INSERT INTO records_schema (version) VALUES (99)")
        else:
            assert isinstance(store, PostgresStore)
            with store._db.transaction():
                store._db.execute("INSERT INTO records_schema (version) VALUES (99)")
        with pytest.raises(RecordsSchemaTooNew) as caught:
            store.migrate()
        assert "99" in str(caught.value)
    finally:
        store.close()


def test_text_postgresql_cannot_hold_is_cleaned_not_a_lost_record(postgres: PgServer) -> None:
    _reset(postgres)
    store = opened(postgres.url)
    try:
        record = a_record(0, caller_name="Ana\x00", transcript=[["user", "a\x00b"]],
                          tools=[{"name": "x", "arguments": '{"q": "\\u0000"}', "ms": 1}])
        store.write([record])
        (back,) = store.get(record.uuid)
        assert back.caller_name == "Ana" and back.transcript == [["user", "ab"]]
    finally:
        store.close()


def test_the_sqlite_file_is_its_owners_alone_and_in_wal_mode(tmp_path: Path) -> None:
    store = opened(f"sqlite:///{tmp_path}/sub/calls.db")
    try:
        store.write([a_record(0)])
        mode = stat.S_IMODE(os.stat(tmp_path / "sub" / "calls.db").st_mode)
        assert mode == 0o600
        assert isinstance(store, SqliteStore)
        assert store._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        store.close()


def test_a_store_that_cannot_be_reached_says_where_without_the_password(
        postgres: PgServer) -> None:
    url = postgres.url.replace(f":{postgres.port}/", ":1/")
    with pytest.raises(RecordsUnavailable) as caught:
        open_store(url)
    assert postgres.password not in str(caught.value)
    assert "voice:***@127.0.0.1:1" in str(caught.value)
    wrong = postgres.url.replace(postgres.password, "wrong-password-0815")
    with pytest.raises(RecordsUnavailable) as caught:
        open_store(wrong)
    assert "wrong-password-0815" not in str(caught.value)
    assert "password authentication failed" in str(caught.value)


# -- the writer ------------------------------------------------------------------------------


class GatedStore:
    """A SQLite store whose writes wait for ``gate``: the database is slow."""

    def __init__(self, url: str, gate: threading.Event) -> None:
        self.inner = opened(url)
        self.target = self.inner.target
        self.gate = gate
        self.entered = threading.Event()

    def migrate(self) -> None:
        pass

    def write(self, records: Any) -> None:
        self.entered.set()
        assert self.gate.wait(20)
        self.inner.write(records)

    def recent(self, **kwargs: Any) -> list[CallRecord]:
        return self.inner.recent(**kwargs)

    def get(self, uuid: str) -> list[CallRecord]:
        return self.inner.get(uuid)

    def close(self) -> None:
        self.inner.close()


def test_a_full_queue_drops_and_counts_and_submit_never_waits(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    url = f"sqlite:///{tmp_path}/calls.db"
    gate = threading.Event()
    stores: list[GatedStore] = []

    def opener(u: str) -> GatedStore:
        stores.append(GatedStore(u, gate))
        return stores[-1]

    writer = RecordWriter(url, capacity=10, batch=1, opener=opener)
    writer.start()
    with caplog.at_level(logging.WARNING, logger="engine.records"):
        writer.submit(a_record(0))
        deadline = time.monotonic() + 10
        while not (stores and stores[0].entered.is_set()) and time.monotonic() < deadline:
            time.sleep(0.01)
        started = time.monotonic()
        for n in range(1, 40):
            writer.submit(a_record(n))
        assert time.monotonic() - started < 0.5
        gate.set()
        writer.close(10)
    # One taken by the writer and held at the gate, ten queued, the rest dropped.
    assert writer.written == 11
    assert writer.lost == {"queue_full": 29}
    full = [r for r in caplog.records if r.getMessage() == "records_queue_full"]
    assert len(full) == 1  # once per interval, not once per record
    store = opened(url)
    try:
        assert len(store.recent(limit=100)) == 11
    finally:
        store.close()


def test_records_wait_out_a_database_restart_and_are_all_written(
        postgres: PgServer, caplog: pytest.LogCaptureFixture) -> None:
    _reset(postgres)
    writer = RecordWriter(postgres.url, retry_max=0.3)
    writer.start()
    with caplog.at_level(logging.WARNING, logger="engine.records"):
        writer.submit(a_record(0))
        deadline = time.monotonic() + 10
        while writer.written < 1 and time.monotonic() < deadline:
            time.sleep(0.02)
        postgres.pause()
        try:
            for n in range(1, 6):
                writer.submit(a_record(n))
            time.sleep(1.5)
            assert writer.written == 1
        finally:
            postgres.resume()
        deadline = time.monotonic() + 15
        while writer.written < 6 and time.monotonic() < deadline:
            time.sleep(0.05)
        writer.close(5)
    assert writer.written == 6 and writer.lost == {}
    failed = [r for r in caplog.records if r.getMessage() == "records_store_failed"]
    assert len(failed) == 1
    assert postgres.password not in caplog.text


def test_records_for_a_database_that_stays_down_are_counted_lost_at_shutdown(
        tmp_path: Path) -> None:
    writer = RecordWriter("postgresql://voice:pw@127.0.0.1:1/calls", retry_max=0.1)
    writer.start()
    for n in range(3):
        writer.submit(a_record(n))
    time.sleep(0.5)
    started = time.monotonic()
    writer.close(2)
    assert time.monotonic() - started < 2.5
    assert writer.written == 0
    assert sum(writer.lost.values()) == 3


# -- records of real calls -------------------------------------------------------------------


@contextlib.asynccontextmanager
async def recording_node(url: str, *scripts: Any, config: Config | None = None,
                         agents: AgentFile | None = None, manager: Any = None,
                         sim_config: SimConfig | None = None) -> AsyncIterator[Any]:
    config = config or make_config()
    sim = Simulator(sim_config or SimConfig(response_ms=600, tool_scripts=scripts))
    await sim.start()
    settings = CallSettings.from_config(config)
    endpoint = upstream.Endpoint.for_dialect(settings.dialect, sim.url, config.openai_model,
                                             "sk-test-never-logged")
    writer = RecordWriter(url)
    writer.start()
    worker = Worker(config, endpoint, settings, WorkerLimits(connect_deadline=2.0),
                    agents=agents, manager=manager, records=writer)
    port = await worker.start("127.0.0.1", 0)
    try:
        yield port, sim, worker
        assert await worker.wait_idle(3.0)
    finally:
        await worker.stop()
        await sim.stop()
        await asyncio.to_thread(writer.close, 5)
    assert writer.lost == {}


def the_record(url: str, call_id: uuid.UUID) -> CallRecord:
    """The one record of ``call_id``."""
    store = opened(url)
    try:
        (record,) = store.get(str(call_id))
    finally:
        store.close()
    return record


def expected_cost(usages: list[dict[str, Any]], model: str) -> float:
    usage = Usage()
    for block in usages:
        usage.add(block)
    cost = usage.cost(prices_for(model))
    assert cost is not None
    return cost


def test_a_calls_record_has_its_caller_tool_usage_and_cost(store_url: str) -> None:
    call_id = uuid.uuid4()
    arguments = {"summary": "Asked for the opening hours.", "disposition": "resolved"}
    config = make_config(log_transcripts=True, transcription_model="whisper-1")
    seen: dict[str, Any] = {}

    async def body() -> None:
        async with asterisk(call_id) as (_, manager), recording_node(
                store_url, script("end_call", arguments, at=2), config=config,
                manager=manager) as (port, sim, _):
            report = await caller.call("127.0.0.1", port, kind=0x10, uuid=call_id,
                                       pcm=speech(0.6) + quiet(1.5) + speech(0.6)
                                       + quiet(4.0))
            assert report.hangup == caller.ENGINE_HANGUP
            (live,) = sim.sessions
            seen["usage"] = list(live.report.usage)

    run(body, 15)
    record = the_record(store_url, call_id)
    assert record.end_reason == "agent_hangup"
    assert (record.caller_id, record.caller_name, record.dialled) == (
        "+15551234", "Ana Núñez", "8000")
    assert record.profile == "default" and record.variant is None
    assert record.model == "gpt-realtime" and record.dialect == "ga" and record.rate == 8000
    assert record.answered_at is not None
    assert record.started_at <= record.answered_at <= record.ended_at
    assert record.duration_s == pytest.approx(
        (record.ended_at - record.started_at).total_seconds(), abs=0.01)
    assert record.upstream_sessions == 1
    (tool,) = record.tools
    assert tool["name"] == "end_call" and tool["outcome"] == "ok"
    assert orjson.loads(tool["arguments"]) == arguments and tool["ms"] >= 0
    # The usage the simulator reported, every response's, is the record's, and so its cost.
    usages = seen["usage"]
    assert len(usages) == record.responses >= 3  # an answer, the tool call, the goodbye
    assert record.input_text_tokens == sum(
        u["input_token_details"]["text_tokens"] for u in usages)
    assert record.output_audio_tokens == sum(
        u["output_token_details"]["audio_tokens"] for u in usages)
    assert record.cached_text_tokens > 0
    assert record.cost_usd == pytest.approx(expected_cost(usages, "gpt-realtime"), rel=1e-9)
    assert record.frames_out > 0 and record.caller_frames > 0
    assert record.transcript is not None
    assert {role for role, _ in record.transcript} == {"user", "assistant"}


def test_a_record_keeps_no_transcript_unless_asked(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/calls.db"
    call_id = uuid.uuid4()

    async def body() -> None:
        config = make_config(transcription_model="whisper-1")
        async with recording_node(url, config=config) as (port, _, _):
            await caller.call("127.0.0.1", port, kind=0x10, uuid=call_id,
                              pcm=speech(0.6) + quiet(1.8))

    run(body)
    record = the_record(url, call_id)
    assert record.transcript is None and record.end_reason == "caller_hangup"
    assert record.cost_usd is not None and record.cost_usd > 0


def test_the_agent_file_keeps_transcripts_and_its_prices_price_the_call(
        tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/calls.db"
    call_id = uuid.uuid4()
    agents = agent_file(tmp_path, """
[agent]
transcripts = true
transcription_model = "whisper-1"
[prices."contoso-voice"]
text_input = 1
text_cached_input = 0.5
text_output = 2
audio_input = 3
audio_cached_input = 1.5
audio_output = 6
""")
    seen: dict[str, Any] = {}

    async def body() -> None:
        config = make_config(openai_model="contoso-voice")
        async with recording_node(url, config=config, agents=agents) as (port, sim, _):
            await caller.call("127.0.0.1", port, kind=0x10, uuid=call_id,
                              pcm=speech(0.6) + quiet(1.8))
            seen["usage"] = list(sim.sessions[0].report.usage)

    run(body)
    record = the_record(url, call_id)
    assert record.transcript
    usage = Usage()
    for block in seen["usage"]:
        usage.add(block)
    assert record.cost_usd == pytest.approx(usage.cost(agents.prices["contoso-voice"]))


def test_a_database_that_is_down_costs_records_never_calls(
        caplog: pytest.LogCaptureFixture) -> None:
    url = "postgresql://voice:pw@127.0.0.1:1/calls"
    reports: list[caller.CallReport] = []

    async def body() -> None:
        sim = Simulator(SimConfig(response_ms=400))
        await sim.start()
        config = make_config()
        settings = CallSettings.from_config(config)
        endpoint = upstream.Endpoint.for_dialect(settings.dialect, sim.url,
                                                 config.openai_model, None)
        writer = RecordWriter(url, retry_max=0.2)
        writer.start()
        worker = Worker(config, endpoint, settings, WorkerLimits(connect_deadline=2.0),
                        records=writer)
        port = await worker.start("127.0.0.1", 0)
        try:
            reports.extend(await asyncio.gather(*(
                caller.call("127.0.0.1", port, kind=0x10, pcm=speech(0.5) + quiet(1.5))
                for _ in range(3))))
            assert await worker.wait_idle(3.0)
        finally:
            await worker.stop()
            await sim.stop()
            await asyncio.to_thread(writer.close, 1)
        assert writer.written == 0 and sum(writer.lost.values()) == 3

    with caplog.at_level(logging.WARNING, logger="engine.records"):
        run(body, 15)
    assert [r.hangup for r in reports] == [caller.CALLER_FINISHED] * 3
    assert all(r.frames_received > 0 for r in reports)
    assert [r.getMessage() for r in caplog.records].count("records_store_failed") == 1


# -- voice-engine calls ----------------------------------------------------------------------


def test_calls_list_and_show_answer_what_happened_without_sql(store_url: str) -> None:
    store = opened(store_url)
    try:
        store.write([a_record(n, end_reason="upstream_failed" if n == 2 else "caller_hangup")
                     for n in range(4)])
    finally:
        store.close()
    runner = CliRunner()
    listed = runner.invoke(cli, ["calls", "list", "--records-url", store_url, "--json",
                                 "--since", "2026-12-03T09:00"])
    assert listed.exit_code == 0, listed.output
    docs = orjson.loads(listed.output)
    assert [d["uuid"] for d in docs] == [str(uuid.UUID(int=n + 1)) for n in (3, 2, 1, 0)]
    assert docs[0]["started_at"] == "2026-12-03T09:33:00+00:00"
    failed = runner.invoke(cli, ["calls", "list", "--records-url", store_url, "--reason",
                                 "upstream_failed"])
    assert failed.exit_code == 0 and str(uuid.UUID(int=3)) in failed.output
    assert str(uuid.UUID(int=1)) not in failed.output
    assert "0.0670" in failed.output
    shown = runner.invoke(cli, ["calls", "show", str(uuid.UUID(int=1)), "--records-url",
                                store_url])
    assert shown.exit_code == 0, shown.output
    for line in ("+15551234 (Ana Núñez), dialled 8000", "end_call: ok in 3 ms",
                 "user: Hola, ¿abren mañana?", "$0.0670", "caller_hangup"):
        assert line in shown.output
    as_json = runner.invoke(cli, ["calls", "show", str(uuid.UUID(int=1)).upper(),
                                  "--records-url", store_url, "--json"])
    assert orjson.loads(as_json.output)["tools"][0]["name"] == "end_call"
    missing = runner.invoke(cli, ["calls", "show", str(uuid.uuid4()), "--records-url",
                                  store_url])
    assert missing.exit_code == 1 and "no call record" in missing.output
    bad = runner.invoke(cli, ["calls", "list", "--records-url", store_url, "--since", "soon"])
    assert bad.exit_code == 2 and "--since" in bad.output


def test_calls_says_when_the_store_cannot_be_read(tmp_path: Path) -> None:
    runner = CliRunner()
    missing = tmp_path / "none" / "calls.db"
    absent = runner.invoke(cli, ["calls", "list", "--records-url", f"sqlite:///{missing}"])
    assert absent.exit_code == 1 and "no call has been recorded there yet" in absent.output
    assert not missing.parent.exists()  # a reader creates nothing
    down = runner.invoke(cli, ["calls", "list", "--records-url",
                               "postgresql://voice:hunter2@127.0.0.1:1/calls"])
    assert down.exit_code == 1 and "hunter2" not in down.output
    assert "voice:***@127.0.0.1:1" in down.output
    bad = runner.invoke(cli, ["calls", "list", "--records-url", "mysql://x/y"])
    assert bad.exit_code == 2


def test_since_takes_spans_and_dates() -> None:
    now = dt.datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
    assert parse_since("90s", now) == now - dt.timedelta(seconds=90)
    assert parse_since("1h", now) == now - dt.timedelta(hours=1)
    assert parse_since("2d", now) == now - dt.timedelta(days=2)
    assert parse_since("2026-12-01", now) == dt.datetime(2026, 12, 1, tzinfo=UTC)
    assert parse_since("2026-12-01T10:00+01:00", now).utcoffset() == dt.timedelta(hours=1)
    with pytest.raises(ValueError):
        parse_since("yesterday", now)


def test_a_nodes_workers_all_write_to_one_postgresql_and_flush_when_stopped(
        postgres: PgServer, tmp_path: Path) -> None:
    import signal as signals

    from tests.nodeproc import NodeProcess

    _reset(postgres)
    ids = [uuid.uuid4() for _ in range(6)]

    async def body() -> None:
        node = NodeProcess(tmp_path, workers=2, RECORDS_URL=postgres.url)
        try:
            await node.ready()
            reports = await asyncio.gather(*(
                caller.call("127.0.0.1", node.port, kind=0x10, uuid=i,
                            pcm=speech(0.4) + quiet(1.2)) for i in ids))
            assert all(r.hangup == caller.CALLER_FINISHED for r in reports)
            node.signal(signals.SIGTERM)
            assert await node.exited() == 0
            assert postgres.password not in node.text()
        finally:
            node.close()

    run(body, 45)
    store = opened(postgres.url)
    try:
        records = store.recent(limit=100)
    finally:
        store.close()
    assert sorted(r.uuid for r in records) == sorted(str(i) for i in ids)
    assert {r.end_reason for r in records} == {"caller_hangup"}
