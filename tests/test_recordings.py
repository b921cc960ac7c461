"""Two-track call recordings: the caller left, the model right, as played and time-aligned,
written off the worker's loop, with restrictive permissions and a retention limit."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import stat
import time
import uuid
import wave
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from engine import caller, upstream
from engine.call import CallSettings
from engine.records.recording import RecordingWriter, sweep
from engine.records.writer import RecordWriter
from engine.sim import SimConfig, Simulator
from engine.worker import Worker, WorkerLimits
from tests.test_agent_tools import make_config, quiet, run, speech

RATE = 8000
FRAME = RATE // 50


def read_stereo(path: Path) -> tuple[int, np.ndarray, np.ndarray]:
    with wave.open(str(path), "rb") as wav:
        assert (wav.getnchannels(), wav.getsampwidth()) == (2, 2)
        rate = wav.getframerate()
        data = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2")
    return rate, data[0::2], data[1::2]


def onset(track: np.ndarray, level: int = 1000) -> int:
    """The first sample louder than ``level``."""
    loud = np.flatnonzero(np.abs(track.astype(np.int32)) > level)
    assert loud.size, "the track is silent"
    return int(loud[0])


@contextlib.asynccontextmanager
async def recording_node(folder: Path, records_url: str | None = None,
                         **sim: Any) -> AsyncIterator[tuple[int, Worker]]:
    config = make_config()
    simulator = Simulator(SimConfig(**{"response_ms": 800, "tone_hz": 1000.0, **sim}))
    await simulator.start()
    settings = CallSettings.from_config(config)
    endpoint = upstream.Endpoint.for_dialect(settings.dialect, simulator.url,
                                             config.openai_model, None)
    recorder = RecordingWriter(folder)
    recorder.start()
    records = RecordWriter(records_url) if records_url else None
    if records is not None:
        records.start()
    worker = Worker(config, endpoint, settings, WorkerLimits(connect_deadline=2.0),
                    records=records, recorder=recorder)
    port = await worker.start("127.0.0.1", 0)
    try:
        yield port, worker
        assert await worker.wait_idle(3.0)
    finally:
        await worker.stop()
        await simulator.stop()
        await asyncio.to_thread(recorder.stop, 5)
        if records is not None:
            await asyncio.to_thread(records.close, 5)


def test_a_recording_holds_the_caller_left_and_what_was_played_right_aligned(
        tmp_path: Path) -> None:
    folder = tmp_path / "recordings"
    call_id = uuid.uuid4()
    sent = quiet(1.0) + speech(0.5) + quiet(3.0)
    got: dict[str, caller.CallReport] = {}

    async def body() -> None:
        async with recording_node(folder, f"sqlite:///{tmp_path}/calls.db") as (port, _):
            got["report"] = await caller.call("127.0.0.1", port, kind=0x10, uuid=call_id,
                                              pcm=sent)

    run(body, 15)
    report = got["report"]
    (path,) = folder.glob("*/*.wav")
    assert str(call_id) in path.name and not list(folder.glob("*/*.part"))
    rate, left, right = read_stereo(path)
    assert rate == RATE
    # Left: the caller's audio as it arrived, so the tone sits exactly where it was sent.
    assert onset(left) == onset(np.frombuffer(sent, dtype="<i2")) == RATE * 1 + 1
    m = min(left.nbytes, len(sent))
    assert left.tobytes()[:m] == sent[:m] and not left[m // 2:].any()
    assert m >= len(sent) - 3 * 2 * FRAME  # the caller's audio to its end, or nearly
    # Right: exactly what the caller received, frame for frame from its first frame, so the
    # model's reply sits where the caller heard it.
    heard = np.frombuffer(report.received_pcm, dtype="<i2")
    assert onset(right) == onset(heard)
    n = min(len(right), len(heard))
    assert right[:n].tobytes() == heard[:n].tobytes()
    assert abs(len(right) - len(heard)) <= 3 * FRAME
    # Both tracks start with the call's media: the reply comes after the tone ended plus the
    # simulator's turn detection (300 ms of silence), not before, and well within a second.
    gap = (onset(right) - (RATE * 1.5)) / RATE
    assert 0.3 <= gap < 1.2, gap
    # The peak is the simulator's 1 kHz tone, not the caller's 440 Hz.
    seg = right[onset(right): onset(right) + RATE // 2].astype(float)
    peak = np.argmax(np.abs(np.fft.rfft(seg))) * RATE / len(seg)
    assert abs(peak - 1000) < 10
    mode = stat.S_IMODE(os.stat(path).st_mode)
    assert mode == 0o600 and stat.S_IMODE(os.stat(path.parent).st_mode) == 0o700
    from engine.records.store import open_store

    store = open_store(f"sqlite:///{tmp_path}/calls.db")
    try:
        (record,) = store.get(str(call_id))
    finally:
        store.close()
    assert record.recording == str(path)


def test_a_disk_that_refuses_costs_the_recording_never_the_call(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    got: list[caller.CallReport] = []

    async def body() -> None:
        async with recording_node(blocker / "recordings") as (port, worker):
            got.extend(await asyncio.gather(*(
                caller.call("127.0.0.1", port, kind=0x10, pcm=speech(0.4) + quiet(1.5))
                for _ in range(3))))
            await asyncio.sleep(0.2)
            assert worker.recorder is not None and worker.recorder.failed == 3

    with caplog.at_level(logging.WARNING, logger="engine.records"):
        run(body, 15)
    assert all(r.hangup == caller.CALLER_FINISHED and r.frames_received > 0 for r in got)
    failed = [r for r in caplog.records if r.getMessage() == "recording_failed"]
    assert len(failed) == 1  # once per interval


def test_chunks_the_disk_cannot_take_become_silence_and_the_tracks_stay_aligned(
        tmp_path: Path) -> None:
    writer = RecordingWriter(tmp_path, queue_bytes=3 * 2 * 2 * FRAME)
    path = tmp_path / "day" / "x.wav"
    writer.open("k", path, RATE)
    chunks = []
    for n in range(12):
        left = np.full(FRAME, n + 1, dtype="<i2").tobytes()
        right = np.full(FRAME, -(n + 1), dtype="<i2").tobytes()
        chunks.append((left, right))
        writer.audio("k", left, right)  # the thread is not started: the queue fills
    assert writer.dropped_bytes == 9 * 2 * 2 * FRAME
    writer.close("k")
    writer.start()
    writer.stop(5)
    _, left, right = read_stereo(path)
    assert len(left) == len(right) == 12 * FRAME
    expected = np.repeat(np.array([1, 2, 3] + [0] * 9), FRAME)
    assert (left == expected).all() and (right == -expected).all()


def test_a_shorter_track_is_padded_and_chunks_of_any_size_interleave(tmp_path: Path) -> None:
    writer = RecordingWriter(tmp_path)
    writer.start()
    path = tmp_path / "d" / "y.wav"
    writer.open("k", path, 16000)
    rng = np.random.default_rng(7)
    lefts, rights = [], []
    for _ in range(20):
        a = rng.integers(-30000, 30000, int(rng.integers(0, 900)), dtype=np.int16)
        b = rng.integers(-30000, 30000, int(rng.integers(0, 900)), dtype=np.int16)
        lefts.append(a)
        rights.append(b)
        writer.audio("k", a.tobytes(), b.tobytes())
    writer.close("k")
    writer.stop(5)
    rate, left, right = read_stereo(path)
    want_l, want_r = np.concatenate(lefts), np.concatenate(rights)
    n = max(len(want_l), len(want_r))
    assert rate == 16000 and len(left) == n
    assert (left[:len(want_l)] == want_l).all() and not left[len(want_l):].any()
    assert (right[:len(want_r)] == want_r).all() and not right[len(want_r):].any()


def test_retention_deletes_by_age_then_the_oldest_beyond_the_size(tmp_path: Path) -> None:
    now = time.time()
    made = {}
    for name, age_days, size in [("a", 40, 100), ("b", 20, 300), ("c", 10, 300),
                                 ("d", 1, 300), ("e", 0, 300)]:
        day = tmp_path / f"day-{name}"
        day.mkdir()
        path = day / f"{name}.wav"
        path.write_bytes(bytes(size))
        os.utime(path, (now - age_days * 86400, now - age_days * 86400))
        made[name] = path
    live = tmp_path / "day-e" / "live.wav.part"
    live.write_bytes(bytes(5000))
    assert sweep(tmp_path, 30 * 86400, 0, now) == 1
    assert not made["a"].exists() and not (tmp_path / "day-a").exists()
    assert sweep(tmp_path, 30 * 86400, 700, now) == 2  # 1200 bytes left: b and c go
    assert [n for n, p in made.items() if p.exists()] == ["d", "e"]
    assert live.exists()  # a call still being recorded is never swept
    assert sweep(tmp_path, 0, 0, now) == 0
