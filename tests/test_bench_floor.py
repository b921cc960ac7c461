"""The floor server: frames of the bench's rate, from the command line the bench uses."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine.bench.floor import silence_frame

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(("rate", "kind"), [(8000, 0x10), (16000, 0x12), (24000, 0x13)])
def test_a_silence_frame_is_20_ms_at_the_rate(rate: int, kind: int) -> None:
    frame = silence_frame(rate)
    size = 2 * rate // 50
    assert frame[0] == kind and int.from_bytes(frame[1:3], "big") == size
    assert frame[3:] == bytes(size)


def _frames(data: bytes) -> list[tuple[int, int]]:
    out, pos = [], 0
    while len(data) - pos >= 3:
        length = int.from_bytes(data[pos + 1:pos + 3], "big")
        if len(data) - pos < 3 + length:
            break
        out.append((data[pos], length))
        pos += 3 + length
    return out


@pytest.mark.parametrize("rate", [8000, 24000])
def test_the_floor_process_writes_frames_of_the_rate_it_is_given(
    tmp_path: Path, rate: int,
) -> None:
    log = tmp_path / "floor.log"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "engine.bench.floor", "0", str(rate)],
                                env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        port = None
        for _ in range(200):
            for line in log.read_text().splitlines():
                doc = json.loads(line) if line.startswith("{") else {}
                if doc.get("event") == "listening":
                    port = int(doc["port"])
            if port is not None:
                break
            assert proc.poll() is None, log.read_text()
            time.sleep(0.05)
        assert port is not None, log.read_text()
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            data = b""
            end = time.monotonic() + 5
            while len(_frames(data)) < 3 and time.monotonic() < end:
                data += sock.recv(65536)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    frames = _frames(data)
    assert len(frames) >= 3
    assert set(frames) == {(0x10 if rate == 8000 else 0x13, 2 * rate // 50)}
