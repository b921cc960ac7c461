"""The records writer: call records go to the store from a thread of their own.

A worker hands a finished call's record to :meth:`RecordWriter.submit`, which never blocks:
it puts the record on a bounded queue, and a full queue drops it (counted, and logged at most
once per ``log_interval``). The writer's thread takes records in batches, opens and migrates
the store when it first needs it, and writes. A store that fails (down, refused, full) keeps
the batch and is retried with backoff while the queue fills; once the queue is full, records
are dropped. So a database that is down costs records, never calls.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

from engine import logs
from engine.errors import RecordsError
from engine.metrics import METRICS
from engine.records.record import CallRecord
from engine.records.store import Store, open_store, redact

__all__ = ["RecordWriter"]

log = logging.getLogger("engine.records")

_STOP = object()


class RecordWriter:
    """Writes call records to the store at ``url`` off the caller's thread.

    Args:
        url: ``RECORDS_URL``.
        capacity: records the queue holds before new ones are dropped.
        batch: records written in one transaction, at most.
        log_interval: seconds between two log lines about the same trouble.
        opener: makes the store (``open_store`` by default; tests give their own).
    """

    def __init__(self, url: str, *, capacity: int = 2000, batch: int = 200,
                 log_interval: float = 60.0, retry_max: float = 30.0,
                 opener: Callable[[str], Store] = open_store) -> None:
        self.url = url
        self.target = redact(url)
        self.capacity = capacity
        self.batch = batch
        self.log_interval = log_interval
        self.retry_max = retry_max
        self._open = opener
        self._queue: queue.Queue[Any] = queue.Queue(capacity)
        self._store: Store | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._said: dict[str, float] = {}
        self.written = 0
        self.lost: dict[str, int] = {}

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="records-writer", daemon=True)
        self._thread.start()

    def submit(self, record: CallRecord) -> None:
        """Queues ``record`` for the store; drops and counts it when the queue is full."""
        if self._stopping.is_set():
            self._lose("shutdown", 1)
            return
        try:
            self._queue.put_nowait(record)
        except queue.Full:
            self._lose("queue_full", 1)
            self._say("records_queue_full", capacity=self.capacity,
                      lost=self.lost.get("queue_full", 0))

    def close(self, timeout: float = 5.0) -> None:
        """Writes what is queued, up to ``timeout`` seconds, then stops; what is left is
        counted as lost."""
        self._stopping.set()
        thread = self._thread
        if thread is not None:
            try:
                self._queue.put(_STOP, timeout=timeout)
            except queue.Full:
                pass
            thread.join(timeout)
            self._thread = None
        left = 0
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            left += item is not _STOP
        if left:
            self._lose("shutdown", left)
            logs.event(log, "records_lost_at_shutdown", logging.WARNING, count=left,
                       target=self.target)

    # -- the writer's thread ---------------------------------------------------------------

    def _run(self) -> None:
        try:
            while True:
                first = self._queue.get()
                if first is _STOP:
                    return
                pending: list[CallRecord] = [first]
                stop = False
                while len(pending) < self.batch:
                    try:
                        item = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if item is _STOP:
                        stop = True
                        break
                    pending.append(item)
                self._write(pending)
                if stop:
                    return
        finally:
            if self._store is not None:
                self._store.close()
                self._store = None

    def _write(self, pending: list[CallRecord]) -> None:
        """Writes ``pending``, retrying with backoff while the store fails; gives up (and
        counts them lost) only when stopping."""
        delay = 0.5
        while True:
            try:
                if self._store is None:
                    store = self._open(self.url)
                    try:
                        store.migrate()
                    except BaseException:
                        store.close()
                        raise
                    self._store = store
                    logs.event(log, "records_store_open", target=self.target)
                self._store.write(pending)
            except RecordsError as exc:
                if self._store is not None:
                    self._store.close()
                    self._store = None
                self._say("records_store_failed", error=str(exc),
                          error_class=type(exc).__name__, waiting=len(pending))
                if self._stopping.wait(delay):
                    self._lose("store_failed", len(pending))
                    return
                delay = min(delay * 2, self.retry_max)
                continue
            except Exception:
                log.exception("records_write_crashed", extra={"_fields": {
                    "target": self.target, "count": len(pending)}})
                self._lose("write_crashed", len(pending))
                return
            self.written += len(pending)
            METRICS.records_written.inc(len(pending))
            return

    def _lose(self, cause: str, count: int) -> None:
        self.lost[cause] = self.lost.get(cause, 0) + count
        METRICS.records_lost.labels(cause=cause).inc(count)

    def _say(self, event: str, **fields: Any) -> None:
        """A warning, at most once per ``log_interval`` for each kind of trouble."""
        now = time.monotonic()
        if now - self._said.get(event, -self.log_interval) >= self.log_interval:
            self._said[event] = now
            logs.event(log, event, logging.WARNING, target=self.target, **fields)
