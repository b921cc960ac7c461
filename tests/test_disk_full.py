"""A full disk under records and recordings: calls go on whole, the trouble is logged once
and counted, and the records held back are written once there is room again.

The disk is a real one: a small tmpfs mounted for the test and filled to its last byte.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine import caller, upstream
from engine.call import CallSettings
from engine.records.recording import RecordingWriter
from engine.records.store import open_store
from engine.records.writer import RecordWriter
from engine.sim import SimConfig, Simulator
from engine.worker import Worker, WorkerLimits
from tests.test_agent_tools import make_config, quiet, run, speech


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 4 MB tmpfs (a real file system with a real ENOSPC), unmounted afterwards."""
    where = tmp_path / "disk"
    where.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m,mode=0700", "tmpfs",
                              str(where)], capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def fill(disk: Path) -> Path:
    """Writes a file until the disk refuses another byte."""
    filler = disk / "filler"
    with filler.open("wb", buffering=0) as out:
        block = bytes(64 * 1024)
        with contextlib.suppress(OSError):
            while True:
                out.write(block)
        with contextlib.suppress(OSError):
            while True:
                out.write(b"\0")
    with pytest.raises(OSError) as full, (disk / "probe").open("wb", buffering=0) as probe:
        probe.write(bytes(4096))
    assert full.value.errno == errno.ENOSPC
    return filler


def test_a_full_disk_costs_records_and_recordings_never_calls(
    small_disk: Path, caplog: pytest.LogCaptureFixture
) -> None:
    url = f"sqlite:///{small_disk}/calls.db"
    reports: list[caller.CallReport] = []
    written: list[int] = []

    async def body() -> None:
        sim = Simulator(SimConfig(response_ms=400))
        await sim.start()
        config = make_config()
        settings = CallSettings.from_config(config)
        endpoint = upstream.Endpoint.for_dialect(settings.dialect, sim.url,
                                                 config.openai_model, None)
        records = RecordWriter(url, retry_max=0.3)
        records.start()
        recorder = RecordingWriter(small_disk / "recordings")
        recorder.start()
        worker = Worker(config, endpoint, settings, WorkerLimits(connect_deadline=2.0),
                        records=records, recorder=recorder)
        port = await worker.start("127.0.0.1", 0)
        try:
            first = await caller.call("127.0.0.1", port, kind=0x10, pcm=speech(0.3) + quiet(0.7))
            reports.append(first)
            for _ in range(50):  # the store is open and its schema written while there is room
                if records.written:
                    break
                await asyncio.sleep(0.05)
            filler = fill(small_disk)
            reports.extend(await asyncio.gather(*(
                caller.call("127.0.0.1", port, kind=0x10, pcm=speech(0.5) + quiet(1.5))
                for _ in range(3))))
            assert await worker.wait_idle(3.0)
            await asyncio.sleep(1.0)
            assert records.written == 1  # the three wait in the writer, not in the calls
            filler.unlink()
            for _ in range(60):
                if records.written == 4:
                    break
                await asyncio.sleep(0.1)
            written.append(records.written)
        finally:
            await worker.stop()
            await sim.stop()
            await asyncio.to_thread(records.close, 2)
            await asyncio.to_thread(recorder.stop, 2)

    with caplog.at_level(logging.WARNING, logger="engine"):
        run(body, 30)
    assert [r.hangup for r in reports] == [caller.CALLER_FINISHED] * 4
    for report in reports:
        assert abs(report.frames_received - report.frames_sent) <= 3
        assert report.burst_pacing.p99_ms < 20
    assert written == [4]
    store = open_store(url, readonly=True)
    try:
        assert len(store.recent(limit=10)) == 4
    finally:
        store.close()
    messages = [r.getMessage() for r in caplog.records]
    assert messages.count("records_store_failed") == 1
    assert messages.count("recording_failed") == 1
    (failed,) = [r for r in caplog.records if r.getMessage() == "recording_failed"]
    assert vars(failed)["_fields"]["errno"] == errno.ENOSPC
    finished = sorted(p.name for p in (small_disk / "recordings").rglob("*.wav"))
    assert len(finished) == 1  # the call from before the disk filled; no partial files left
    assert not list((small_disk / "recordings").rglob("*.part"))
