"""``voice-engine bench`` end to end: a real engine process, the simulator, the load generator.

Small loads only: these tests check that the tool measures what it says (every figure present
and sane, the targets judged), never how fast the engine is; that is the bench's own job.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import uvloop

from engine.bench.command import parse_cpus
from engine.bench.loadgen import PERIOD, CallerTone, Talker, TalkPattern
from engine.bench.procstat import ProcessTree
from engine.bench.report import BenchResult, render
from engine.bench.run import BenchOptions, run
from engine.errors import BenchError, ConfigError

ROOT = Path(__file__).resolve().parent.parent

# Short turns so a few seconds hold several answers and barge-ins.
BRISK = TalkPattern(speak_s=(0.5, 0.6), pause_s=(0.3, 0.5), barge_in=0.5,
                    barge_after_s=(0.3, 0.4), barge_speak_s=(0.4, 0.5), first_pause_s=(0.0, 0.3))


def _bench(**changes: object) -> BenchResult:
    opts = BenchOptions(**{"calls": 6, "duration": 5.0, "ramp": 50.0, "response_ms": 1200,
                           "pattern": BRISK, **changes})  # type: ignore[arg-type]
    return uvloop.run(run(opts))


@pytest.mark.parametrize("upstream_format", ["pcm16", "pcmu"])
def test_a_small_bench_measures_every_figure(upstream_format: str, figures: list[str]) -> None:
    r = _bench(upstream_format=upstream_format)
    assert r.calls["connected"] == 6 and r.calls["failed"] == 0
    assert r.calls["dropped"] == 0 and r.calls["held_to_end"] == 6
    assert r.calls["engine_end_reasons"] == {"caller_hangup": 6}
    assert r.sim["sessions"] == 6 and r.sim["unidentified_sessions"] == 0
    assert r.sim["validating"] is True
    assert r.sim["invalid"] == 0 and r.sim["bad_truncates"] == 0
    assert r.responses >= 6 and 0.1 < r.model_share < 0.9
    assert r.underruns == 0
    assert r.pacing_in_response.intervals > 100
    assert r.first_frame.count >= 6 and 0 <= r.first_frame.p50_ms < 50
    assert r.append_newest.count > 50
    assert r.append_oldest.p50_ms >= r.append_newest.p50_ms
    assert r.barge_ins_attempted >= 1 and r.barge_in_stop.count >= 1
    assert r.barge_in_stop.max_ms < 200  # the engine cut the answer; natural ends are > 1 s
    assert r.engine_cpu_ms_per_call_s is not None and r.engine_cpu_ms_per_call_s > 0
    assert r.engine_kb_per_call is not None and r.call_seconds > 20
    assert r.bench_cpu_ms_per_call_s is not None and r.bench_cpu_ms_per_call_s > 0
    assert r.wakeup is not None and r.wakeup.count > 500
    assert 0 <= r.wakeup.p50_ms <= r.wakeup.p99_ms <= r.wakeup.max_ms
    floor_db = 80 if upstream_format == "pcm16" else 30
    assert r.snr_down_db and min(r.snr_down_db) > floor_db
    assert r.snr_up_db and min(r.snr_up_db) > floor_db
    verdicts = r.verdicts()
    assert verdicts["dropped"] is True and verdicts["underruns"] is True
    assert verdicts["snr_down_min_db"] is True
    doc = json.loads(json.dumps(r.as_dict()))
    assert doc["calls"]["connected"] == 6 and doc["targets"]["dropped"] is True
    text = render(r)
    assert "engine CPU" in text and "barge-in" in text and "tone SNR" in text
    assert "wake-ups     5 ms timer" in text and "per call-second)" in text
    assert doc["wakeup_latency"]["count"] == r.wakeup.count
    assert doc["bench_cpu_ms_per_call_s"] > 0
    figures.append(
        f"bench, 6 calls {upstream_format}: first frame p99 {r.first_frame.p99_ms:.2f} ms, "
        f"barge-in stop max {r.barge_in_stop.max_ms:.2f} ms, tone SNR "
        f"{min(r.snr_down_db):.1f}/{min(r.snr_up_db):.1f} dB"
    )


def test_the_floor_server_is_measured_the_same_way() -> None:
    r = _bench(calls=4, duration=2.0, floor=True)
    assert r.calls["connected"] == 4 and r.calls["dropped"] == 0
    assert r.engine_cpu_ms_per_call_s is not None and r.engine_cpu_ms_per_call_s >= 0
    assert r.pacing_all.intervals > 200 and r.responses == 0
    assert "floor CPU" in render(r)


def test_an_engine_that_cannot_start_is_a_clear_error() -> None:
    with pytest.raises(BenchError, match="exited with status 2.*APPEND_MS"):
        _bench(extra_env=(("APPEND_MS", "5"),))


def test_two_workers_share_the_load_and_the_report_says_so() -> None:
    r = _bench(workers=2, calls=12, duration=3.0)
    assert r.calls["connected"] == 12 and r.calls["dropped"] == 0
    per_worker = r.calls["per_worker"]
    assert len(per_worker) == 2 and sum(per_worker) == 12 and min(per_worker) >= 1
    assert "per worker (/health)" in render(r)


def test_nothing_listening_at_the_target_is_a_clear_error() -> None:
    with pytest.raises(BenchError, match="no call could be placed"):
        _bench(target=("127.0.0.1", 9), calls=2)


def test_the_command_prints_json(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, "-m", "engine", "bench", "--calls", "2", "--duration", "2",
         "--json", "--quiet", "--no-pin"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["native"]["calls"]["connected"] == 2
    assert doc["native"]["options"]["upstream_format"] == "pcm16"
    assert set(doc["native"]["targets"]) >= {"engine_cpu_ms_per_call_s", "pacing_p99_ms"}
    # A held run is no soak: no timeline, and the soak's targets are not judged.
    assert doc["native"]["soak"] is None and doc["native"]["options"]["churn_s"] is None
    assert not any(key.startswith("soak_") for key in doc["native"]["targets"])


# -- the talk pattern and the prebuilt frames ------------------------------------------------


def _run_talker(t: Talker, audio: list[bool]) -> list[bool]:
    return [t.tick(a) for a in audio]


def test_a_caller_speaks_listens_and_speaks_again_after_the_answer() -> None:
    pattern = TalkPattern(speak_s=(0.1, 0.1), pause_s=(0.2, 0.2), barge_in=0.0,
                          first_pause_s=(0.02, 0.02))
    t = Talker(pattern, seed=3)
    # One pause tick, five speech ticks, then 20 ticks of answer, then quiet.
    heard = [False] * 6 + [True] * 20 + [False] * 40
    said = _run_talker(t, heard)
    assert said[:6] == [False] + [True] * 5
    assert not any(said[6:26]), "a caller that does not barge in stays quiet while answered"
    quiet_end = 26 + 15  # the answer counts as over after 15 quiet ticks
    resumed = said.index(True, 26)
    assert resumed == quiet_end + round(0.2 / PERIOD)
    assert t.turns == 2 and t.barge_ins == 0 and t.no_answers == 0


def test_a_barging_caller_talks_over_the_answer() -> None:
    pattern = TalkPattern(speak_s=(0.1, 0.1), barge_in=1.0, barge_after_s=(0.1, 0.1),
                          barge_speak_s=(0.2, 0.2), first_pause_s=(0.02, 0.02))
    t = Talker(pattern, seed=1)
    said = _run_talker(t, [False] * 6 + [True] * 8)
    start = said.index(True, 6)
    assert start == 6 + round(0.1 / PERIOD) - 1  # five frames of answer heard, then talking
    assert t.barge_ins == 1


def test_an_unanswered_caller_tries_again() -> None:
    pattern = TalkPattern(speak_s=(0.1, 0.1), no_answer_s=0.5, first_pause_s=(0.02, 0.02))
    t = Talker(pattern, seed=1)
    said = _run_talker(t, [False] * 60)
    assert said.index(True, 6) == 6 + round(0.5 / PERIOD) - 1
    assert t.no_answers == 1


def test_talk_patterns_and_tones_refuse_nonsense() -> None:
    with pytest.raises(ConfigError):
        TalkPattern(speak_s=(2.0, 1.0))
    with pytest.raises(ConfigError):
        TalkPattern(barge_in=1.5)
    with pytest.raises(ConfigError):
        CallerTone(hz=410.0).frame_pcm(8000)  # 8.2 cycles: the frame would not repeat


def test_the_caller_tone_frame_repeats_seamlessly() -> None:
    import numpy as np

    for rate in (8000, 16000, 24000):
        frame = np.frombuffer(CallerTone().frame_pcm(rate), "<i2").astype(float)
        two = np.concatenate([frame, frame])
        t = np.arange(two.size) / rate
        expected = 32767 * 10 ** (-12 / 20) * np.sin(2 * math.pi * 400 * t)
        assert np.max(np.abs(two - expected)) <= 0.5 + 1e-9


def test_cpu_lists() -> None:
    assert parse_cpus("0") == {0}
    assert parse_cpus("0,2") == {0, 2}
    assert parse_cpus("1-3") == {1, 2, 3}
    for bad in ("", "a", "-1", "2-x"):
        with pytest.raises(ConfigError):
            parse_cpus(bad)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def test_an_engine_running_elsewhere_is_loaded_through_target(tmp_path: Path) -> None:
    sim_port, engine_port = _free_port(), _free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OPENAI_API_KEY": "sk-not-a-secret",
           "OPENAI_REALTIME_URL": f"ws://127.0.0.1:{sim_port}/v1/realtime",
           "LISTEN_PORT": str(engine_port)}
    log = (tmp_path / "engine.log").open("wb")
    engine = subprocess.Popen([sys.executable, "-m", "engine", "run"], cwd=tmp_path, env=env,
                              stdout=log, stderr=subprocess.STDOUT)
    try:
        for _ in range(200):
            if b'"listening"' in (tmp_path / "engine.log").read_bytes():
                break
            assert engine.poll() is None, (tmp_path / "engine.log").read_text()
            time.sleep(0.05)
        r = _bench(calls=3, duration=3.0, target=("127.0.0.1", engine_port), sim_port=sim_port)
    finally:
        engine.terminate()
        engine.wait(timeout=15)
        log.close()
    assert r.calls["connected"] == 3 and r.calls["dropped"] == 0
    assert r.sim["sessions"] == 3 and r.sim["unidentified_sessions"] == 0
    assert r.first_frame.count >= 1 and r.snr_down_db
    assert r.engine_cpu_ms_per_call_s is None and r.engine_kb_per_call is None
    assert r.verdicts()["engine_cpu_ms_per_call_s"] is None


def test_an_engine_that_dies_mid_run_is_reported() -> None:
    def engine_pid() -> int | None:
        for pid in ProcessTree(os.getpid()).pids()[1:]:
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            if b"engine\x00run" in cmdline:
                return pid
        return None

    async def kill_soon() -> BenchResult:
        held = asyncio.Event()

        def progress(line: dict[str, Any]) -> None:
            # Killed once every call is up and holding (a slow start must not kill it first).
            if line.get("phase") == "hold" and line.get("calls_up") == 3:
                held.set()

        task = asyncio.ensure_future(
            run(BenchOptions(calls=3, duration=4.0, pattern=BRISK), progress))
        waiter = asyncio.ensure_future(held.wait())
        await asyncio.wait({task, waiter}, timeout=30, return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        if task.done():
            task.result()  # failed before its calls were up: that error, not a timeout
        assert held.is_set(), "the calls were not up within 30 s"
        pid = engine_pid()
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        return await task

    r = uvloop.run(kill_soon())
    assert r.calls["dropped"] == 3
    assert "exited with status -9" in r.calls["engine_exit"]
    assert "ENGINE FAILED" in render(r)


# -- --engine-env ----------------------------------------------------------------------------


def _bench_command(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "engine", "bench", "--quiet", "--no-pin", *args],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )


def test_engine_env_reaches_the_engine_and_the_result_records_it(tmp_path: Path) -> None:
    # A short answer, so the goodbye after MAX_CALL_SECONDS is over well inside the hold.
    out = _bench_command(tmp_path, "--calls", "2", "--duration", "3", "--json",
                         "--response-ms", "400", "--engine-env", "MAX_CALL_SECONDS=1",
                         "--engine-env", "OPENAI_API_KEY=sk-must-not-show")
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)["native"]
    assert doc["options"]["engine_env"] == {"MAX_CALL_SECONDS": "1",
                                            "OPENAI_API_KEY": "(hidden)"}
    assert doc["calls"]["engine_end_reasons"] == {"max_duration": 2}
    assert "sk-must-not-show" not in out.stdout + out.stderr
    table = _bench_command(tmp_path, "--calls", "1", "--duration", "1",
                           "--engine-env", "VAD_SILENCE_MS=400")
    assert table.returncode == 0, table.stderr
    assert "engine env: VAD_SILENCE_MS=400" in table.stdout


@pytest.mark.parametrize(("item", "why"), [
    ("MAX_CALL_SECONDS", "expected NAME=VALUE"),
    ("=1", "expected NAME=VALUE"),
    ("NOT_A_SETTING=1", "not one of the engine's settings"),
    ("APPEND_MS=20", "use --append-ms"),
    ("LISTEN_PORT=1", "the bench sets LISTEN_PORT itself"),
])
def test_a_bad_engine_env_item_is_a_usage_error(item: str, why: str) -> None:
    from click.testing import CliRunner

    from engine.bench.command import command

    result = CliRunner().invoke(command, ["--engine-env", item])
    assert result.exit_code == 2
    assert why in result.output


# -- --check ---------------------------------------------------------------------------------


def test_check_fails_a_run_that_misses_a_target(tmp_path: Path) -> None:
    # Calls the engine ends before the hold is over are dropped: the "dropped" target is missed.
    out = _bench_command(tmp_path, "--calls", "2", "--duration", "3", "--check",
                         "--response-ms", "400", "--engine-env", "MAX_CALL_SECONDS=1")
    assert out.returncode == 1, out.stderr
    assert "targets missed:" in out.stderr and "dropped" in out.stderr
    row = next(line for line in out.stdout.splitlines() if line.startswith("dropped "))
    assert "MISSED" in row and "design: every call is held" in row
    assert "issue: pacing promise" in out.stdout


def test_check_passes_when_every_target_is_met_or_unmeasured(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from dataclasses import replace

    from click.testing import CliRunner

    import engine.bench.run as bench_run
    from engine.bench import measure
    from engine.bench.command import command
    from engine.stats import Pacing

    real = _bench(calls=2, duration=2.0)
    # A figure this shared machine cannot be made to meet is taken as not measured (as a
    # --target run leaves CPU and memory); the rest are the real run's own.
    nothing = {
        "engine_cpu_ms_per_call_s": ("engine_cpu_ms_per_call_s", None),
        "engine_kb_per_call": ("engine_kb_per_call", None),
        "pacing_p99_ms": ("pacing_in_response", Pacing(0, math.nan, math.nan, math.nan)),
        "first_frame_p99_ms": ("first_frame", measure.summary([])),
        "barge_in_stop_max_ms": ("barge_in_stop", measure.summary([])),
        "snr_down_min_db": ("snr_down_db", []),
    }
    missed = real.missed()
    assert set(missed) <= set(nothing), missed
    judged = replace(real, **dict(nothing[key] for key in missed))
    monkeypatch.setattr(bench_run, "main_loop", lambda opts, progress: judged)
    passed = CliRunner().invoke(command, ["--calls", "2", "--duration", "2", "--check",
                                          "--quiet", "--no-pin"])
    assert passed.exit_code == 0, passed.output
    rows = {line.split()[0]: line for line in passed.output.splitlines()[-9:]}
    for key in missed:
        assert " n/a " in rows[key]
    assert "floor ratio" in rows["engine_cpu_ms_per_call_s"]
    assert "MISSED" not in passed.output


# -- --tls -----------------------------------------------------------------------------------


def test_tls_runs_the_calls_over_wss_with_the_runs_own_ca(tmp_path: Path) -> None:
    out = _bench_command(tmp_path, "--calls", "2", "--duration", "2", "--json", "--tls",
                         "--response-ms", "600")
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)["native"]
    assert doc["options"]["tls"] is True
    assert doc["calls"]["connected"] == 2 and doc["calls"]["dropped"] == 0
    assert doc["simulator"]["sessions"] == 2 and doc["responses"] >= 2
    assert doc["calls"]["engine_end_reasons"] == {"caller_hangup": 2}


def test_tls_is_refused_where_the_bench_cannot_give_the_engine_its_ca() -> None:
    for changes in ({"floor": True}, {"target": ("127.0.0.1", 9)}):
        with pytest.raises(BenchError, match="--tls"):
            BenchOptions(tls=True, **changes)  # type: ignore[arg-type]


# -- --vs-floor ------------------------------------------------------------------------------


def test_vs_floor_alternates_the_engine_and_the_floor_and_judges_the_ratio(
    tmp_path: Path,
) -> None:
    out = _bench_command(tmp_path, "--calls", "3", "--duration", "2", "--vs-floor",
                         "--rounds", "1", "--json")
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    (only,) = doc["vs_floor"]["rounds"]
    assert only["engine"]["options"]["floor"] is False and only["floor"]["options"]["floor"]
    assert only["engine"]["calls"]["connected"] == 3 and only["floor"]["calls"]["connected"] == 3
    engine, floor = only["engine_cpu_ms_per_call_s"], only["floor_cpu_ms_per_call_s"]
    assert engine > 0 and floor > 0
    assert math.isclose(only["ratio"], engine / floor)
    assert doc["vs_floor"]["median"]["ratio"] == only["ratio"]
    ratio_met = only["ratio"] <= 1.75
    assert doc["vs_floor"]["targets"] == {"engine_to_floor_cpu_ratio": ratio_met}
    assert doc["native"] == only["engine"]
    # Each side's probe pacing and the machine's wake-ups stand beside the CPU figures.
    assert only["floor_pacing_all_p99_ms"] == only["floor"]["pacing_all"]["p99_ms"] is not None
    assert only["floor_pacing_in_response_p99_ms"] is None  # the floor plays no answer
    assert only["engine_pacing_in_response_p99_ms"] is not None
    for side in ("engine", "floor"):
        wakeup = [only[f"{side}_wakeup_{q}_ms"] for q in ("p50", "p99", "max")]
        assert 0 <= wakeup[0] <= wakeup[1] <= wakeup[2]
        assert only[side]["wakeup_latency"]["p99_ms"] == wakeup[1]


def test_vs_floor_table_gives_each_round_the_median_and_the_ratio_targets_source(
    tmp_path: Path,
) -> None:
    out = _bench_command(tmp_path, "--calls", "3", "--duration", "2", "--vs-floor",
                         "--rounds", "1", "--upstream-format", "pcmu", "--check")
    assert "-- round 1: engine" in out.stdout
    row = next(line for line in out.stdout.splitlines()
               if line.startswith("engine_to_floor_cpu_ratio"))
    assert "≤ 1.5" in row and "issue 12: 3× the calls per core of the Node.js bridge" in row
    assert any(line.startswith("median ") for line in out.stdout.splitlines())
    assert "wake (floor)" in out.stdout
    assert "probe calls: 3, kernel receive timestamps" in out.stdout
    # --check judges the ratio and the engine round's own targets.
    assert out.returncode == (1 if "MISSED" in out.stdout else 0), out.stderr
    if out.returncode:
        assert "targets missed:" in out.stderr


def test_vs_floor_takes_no_floor_target_or_python_comparison() -> None:
    from click.testing import CliRunner

    from engine.bench.command import command

    for extra in (["--floor"], ["--target", "127.0.0.1:9"], ["--compare-python"]):
        result = CliRunner().invoke(command, ["--vs-floor", *extra])
        assert result.exit_code == 2 and "--vs-floor" in result.output


def test_vs_floor_with_tls_runs_the_floor_without_it() -> None:
    from engine.bench.versus_floor import run_rounds

    seen: list[BenchOptions] = []

    def once(opts: BenchOptions) -> Any:
        seen.append(opts)
        return None

    run_rounds(once, BenchOptions(calls=3, tls=True), 2)
    assert [(o.floor, o.tls) for o in seen] == [(False, True), (True, False)] * 2


# -- probe calls -----------------------------------------------------------------------------


def test_times_come_from_the_probe_calls_and_counts_from_every_call() -> None:
    r = _bench(calls=6, probe_calls=2, duration=3.0)
    assert r.calls["connected"] == 6 and r.calls["dropped"] == 0
    assert r.options["probe_calls"] == 2
    assert r.timing_from == "probe calls: 2, kernel receive timestamps"
    assert r.as_dict()["timing_from"] == r.timing_from and r.timing_from in render(r)
    assert r.generator_clock["unstamped_reads"] == 0
    # Every frame of every call is counted; only the two probe calls' are timed.
    assert 100 < r.pacing_all.intervals < 3 * (3.0 + 2.0) / PERIOD
    assert r.responses >= 6 and len(r.snr_down_db) == 6
    assert 1 <= r.first_frame.count <= r.responses and r.append_newest.count > 20
    assert BenchOptions(calls=3).probes == 3
    with pytest.raises(BenchError, match="probe call"):
        BenchOptions(probe_calls=0)
