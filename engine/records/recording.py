"""Two-track call recordings: the caller on the left, the model on the right, as played.

The worker takes each recording call's taps (see ``engine._native.uplink`` and ``clockpass``:
the caller's audio as it arrived, the model's as it was written, silence included, so both
run at one frame per 20 ms from the start of the call's media) a few times a second and hands
them to :class:`RecordingWriter`, whose thread writes 16-bit stereo WAV files at the call's
rate. The hand-over never blocks: a queue over its byte bound drops the chunk and the writer
puts as much silence in its place, so the two tracks stay aligned. A file is written as
``NAME.wav.part`` and renamed when the call ends; folders are ``0700`` and files ``0600``.

Retention: every ``sweep_interval`` the writer deletes finished recordings older than
``max_age_s``, then the oldest until the folder holds at most ``max_bytes``. A failing disk
(full, read-only) costs that call's recording, logged once per interval, never the call.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import queue
import threading
import time
import wave
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from engine import logs
from engine.metrics import METRICS

__all__ = ["RecordingWriter", "sweep"]

log = logging.getLogger("engine.records.recording")

_STOP = object()


@dataclass(slots=True)
class _Open:
    key: str
    path: Path
    rate: int


@dataclass(slots=True)
class _Audio:
    key: str
    left: Any  # bytes-like: the caller's int16 samples
    right: Any  # the model's
    gap_left: int = 0  # bytes dropped before these (the queue was full): silence
    gap_right: int = 0


@dataclass(slots=True)
class _Close:
    key: str


@dataclass(slots=True)
class _File:
    path: Path
    handle: BinaryIO
    wav: Any
    left: bytearray = field(default_factory=bytearray)
    right: bytearray = field(default_factory=bytearray)


def _interleave(left: bytes | bytearray, right: bytes | bytearray) -> bytes:
    out = np.empty(len(left), dtype="<i2")  # two channels of len(left) // 2 samples
    out[0::2] = np.frombuffer(left, dtype="<i2")
    out[1::2] = np.frombuffer(right, dtype="<i2")
    return out.tobytes()


class RecordingWriter:
    """Writes recordings under ``folder`` from a thread of its own.

    Args:
        folder: where the recordings go (one folder per UTC day under it).
        max_age_s: finished recordings older than this are deleted (0: kept).
        max_bytes: the most the finished recordings may take together (0: no bound).
        queue_bytes: audio waiting for the disk, at most; more is dropped (as silence).
    """

    def __init__(self, folder: Path, *, max_age_s: float = 0.0, max_bytes: int = 0,
                 queue_bytes: int = 32 << 20, sweep_interval: float = 60.0,
                 log_interval: float = 60.0) -> None:
        self.folder = folder
        self.max_age_s = max_age_s
        self.max_bytes = max_bytes
        self.queue_bytes = queue_bytes
        self.sweep_interval = sweep_interval
        self.log_interval = log_interval
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._queued = 0
        self._lock = threading.Lock()
        self._gaps: dict[str, tuple[int, int]] = {}
        self._files: dict[str, _File] = {}
        self._failed: set[str] = set()
        self._said: dict[str, float] = {}
        self._thread: threading.Thread | None = None
        self.dropped_bytes = 0
        self.finished = 0
        self.failed = 0

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="recording-writer", daemon=True)
        self._thread.start()

    def path_for(self, uuid: str, started: dt.datetime, serial: int) -> Path:
        """Where the recording of call ``uuid`` goes (``serial`` tells apart two calls of
        one node with the same UUID)."""
        day = started.strftime("%Y-%m-%d")
        stamp = started.strftime("%H%M%S")
        return self.folder / day / f"{stamp}-{uuid}-{os.getpid()}-{serial}.wav"

    def open(self, key: str, path: Path, rate: int) -> None:
        self._queue.put(_Open(key, path, rate))

    def audio(self, key: str, left: Any, right: Any) -> None:
        """Queues a chunk of both tracks; never blocks (over the bound it is dropped, and the
        writer puts silence of its length in its place)."""
        size = len(left) + len(right)
        with self._lock:
            if self._queued + size > self.queue_bytes:
                gl, gr = self._gaps.get(key, (0, 0))
                self._gaps[key] = (gl + len(left), gr + len(right))
                self.dropped_bytes += size
                METRICS.recording_dropped_bytes.inc(size)
                dropped = True
            else:
                self._queued += size
                gl, gr = self._gaps.pop(key, (0, 0))
                dropped = False
        if dropped:
            self._say("recording_queue_full", queue_bytes=self.queue_bytes)
            return
        self._queue.put(_Audio(key, left, right, gl, gr))

    def close(self, key: str) -> None:
        """The call ended: its file is finished (what is queued is written first)."""
        with self._lock:
            gl, gr = self._gaps.pop(key, (0, 0))
        if gl or gr:
            self._queue.put(_Audio(key, b"", b"", gl, gr))
        self._queue.put(_Close(key))

    def stop(self, timeout: float = 5.0) -> None:
        """Finishes every open file and stops the thread."""
        self._queue.put(_STOP)
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    # -- the writer's thread -------------------------------------------------------------

    def _run(self) -> None:
        next_sweep = time.monotonic()
        try:
            while True:
                now = time.monotonic()
                if now >= next_sweep:
                    self._sweep()
                    next_sweep = now + self.sweep_interval
                try:
                    item = self._queue.get(timeout=max(0.01, next_sweep - now))
                except queue.Empty:
                    continue
                if item is _STOP:
                    return
                self._handle(item)
        finally:
            for key in list(self._files):
                self._finish(key)

    def _handle(self, item: Any) -> None:
        if isinstance(item, _Audio):
            with self._lock:
                self._queued -= len(item.left) + len(item.right)
        key = item.key
        try:
            if isinstance(item, _Open):
                self._open(item)
            elif isinstance(item, _Audio):
                self._write(item)
            else:
                self._finish(key)
        except OSError as exc:
            self._fail(key, exc)
        except Exception as exc:  # a WAV past its 4 GiB limit, say: that recording alone
            self._fail(key, OSError(0, f"{type(exc).__name__}: {exc}"))

    def _open(self, item: _Open) -> None:
        item.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        part = item.path.with_name(item.path.name + ".part")
        fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        handle = os.fdopen(fd, "wb")
        wav = wave.open(handle, "wb")
        wav.setnchannels(2)
        wav.setsampwidth(2)
        wav.setframerate(item.rate)
        self._files[item.key] = _File(item.path, handle, wav)

    def _write(self, item: _Audio) -> None:
        f = self._files.get(item.key)
        if f is None:
            return  # its file failed (or never opened): the call goes on without it
        if item.gap_left:
            f.left += bytes(item.gap_left)
        f.left += item.left
        if item.gap_right:
            f.right += bytes(item.gap_right)
        f.right += item.right
        both = min(len(f.left), len(f.right)) & ~1
        if both:
            f.wav.writeframesraw(_interleave(f.left[:both], f.right[:both]))
            del f.left[:both]
            del f.right[:both]

    def _finish(self, key: str) -> None:
        f = self._files.pop(key, None)
        if f is None:
            return
        try:
            # The shorter track is padded with silence: both end where the call ended.
            longer = max(len(f.left), len(f.right)) & ~1
            if longer:
                left = bytes(f.left[:longer]) + bytes(longer - len(f.left[:longer]))
                right = bytes(f.right[:longer]) + bytes(longer - len(f.right[:longer]))
                f.wav.writeframesraw(_interleave(left, right))
            f.wav.close()
            f.handle.close()
            os.replace(f.path.with_name(f.path.name + ".part"), f.path)
        except OSError as exc:
            self._fail(key, exc, f)
            return
        self.finished += 1
        METRICS.recordings.labels(outcome="finished").inc()

    def _fail(self, key: str, exc: OSError, f: _File | None = None) -> None:
        """The disk refused: this recording is dropped (its partial file removed)."""
        f = f or self._files.pop(key, None)
        self.failed += 1
        METRICS.recordings.labels(outcome="failed").inc()
        self._say("recording_failed", error=exc.strerror or str(exc), errno=exc.errno)
        if f is not None:
            for closing in (f.wav.close, f.handle.close):
                try:
                    closing()
                except (OSError, ValueError):
                    pass
            try:
                os.unlink(f.path.with_name(f.path.name + ".part"))
            except OSError:
                pass

    def _sweep(self) -> None:
        try:
            removed = sweep(self.folder, self.max_age_s, self.max_bytes)
        except OSError as exc:
            self._say("recording_sweep_failed", error=exc.strerror or str(exc))
            return
        if removed:
            logs.event(log, "recordings_removed", count=removed, folder=str(self.folder))

    def _say(self, event: str, **fields: Any) -> None:
        now = time.monotonic()
        if now - self._said.get(event, -self.log_interval) >= self.log_interval:
            self._said[event] = now
            logs.event(log, event, logging.WARNING, folder=str(self.folder), **fields)


def sweep(folder: Path, max_age_s: float, max_bytes: int, now: float | None = None) -> int:
    """Deletes finished recordings (``*.wav``) under ``folder`` older than ``max_age_s``, then
    the oldest until they take at most ``max_bytes``; 0 turns either off. Empty day folders
    go too. Returns how many files were deleted (another worker deleting the same is fine)."""
    if not folder.is_dir():
        return 0
    now = time.time() if now is None else now
    found: list[tuple[float, int, Path]] = []
    for path in folder.glob("*/*.wav"):
        try:
            st = path.stat()
        except FileNotFoundError:
            continue
        found.append((st.st_mtime, st.st_size, path))
    found.sort()
    removed = 0
    total = sum(size for _, size, _ in found)
    for mtime, size, path in found:
        old = max_age_s > 0 and now - mtime > max_age_s
        big = max_bytes > 0 and total > max_bytes
        if not (old or big):
            break
        try:
            path.unlink()
            removed += 1
        except FileNotFoundError:
            pass
        total -= size
    for day in folder.iterdir():
        if day.is_dir():
            try:
                day.rmdir()  # only when empty
            except OSError:
                pass
    return removed
