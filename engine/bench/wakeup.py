"""The machine's timer wake-up latency beside the engine, so a slow engine can be told from a
noisy machine.

``python -m engine.bench.wakeup START END [PERIOD_MS]`` (``CLOCK_MONOTONIC`` seconds, which
every process shares) sleeps to absolute deadlines ``PERIOD_MS`` apart (5 by default) from
START until END on a periodic timerfd, records how late each wake-up was, and prints one JSON
line: the count and p50/p99/max in ms. The bench pins it to the engine's CPUs, so what it
records is the lateness the machine (other tenants, interrupts, the engine's own load) adds to
any timer there, the engine's clock included. Two hundred wake-ups a second of a few
microseconds each: its own load is negligible.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from array import array
from collections.abc import Iterable

import orjson

from engine.bench.measure import Spread, summary
from engine.errors import BenchError

__all__ = ["PERIOD_MS", "WakeupProbe", "lateness", "main", "spread_from"]

PERIOD_MS = 5.0
_EXIT_GRACE = 5.0  # after END, for the process to print and exit


def lateness(start: float, end: float, period: float) -> array[float]:
    """Sleeps to deadlines ``start + k * period`` until ``end``; seconds late per wake-up.

    A wake-up that finds several deadlines passed is as late as the oldest of them. Deadlines
    already past when it starts (a slow start of this process) are skipped, not counted late.
    """
    from engine._impl import timerfd

    late: array[float] = array("d")
    timer = timerfd.TimerFd()
    try:
        fd = timer.fileno()
        os.set_blocking(fd, True)
        first = start + period
        behind = time.monotonic() - first
        if behind >= 0:
            first += (int(behind / period) + 1) * period
        timer.arm(first, period)
        served = 0
        while True:
            expired = int.from_bytes(os.read(fd, 8), "little")
            now = time.monotonic()
            late.append(now - (first + served * period))
            served += expired
            if now >= end:
                return late
    finally:
        timer.close()


def spread_from(doc: dict[str, float | int | None]) -> Spread:
    """A :class:`Spread` from its JSON form (None is NaN)."""

    def ms(key: str) -> float:
        value = doc.get(key)
        return float("nan") if value is None else float(value)

    return Spread(int(doc.get("count") or 0), ms("p50_ms"), ms("p99_ms"), ms("max_ms"))


class WakeupProbe:
    """The measuring process, started for one window and read once it is over."""

    def __init__(self, start: float, end: float, cpus: Iterable[int] | None) -> None:
        self.end = end
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "engine.bench.wakeup", repr(start), repr(end),
             repr(PERIOD_MS)],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )
        if cpus:
            os.sched_setaffinity(self.proc.pid, set(cpus))

    async def result(self) -> Spread:
        """The window's wake-up lateness, once the process has printed it.

        Raises:
            BenchError: the process failed or did not finish in time.
        """
        deadline = self.end + _EXIT_GRACE
        while self.proc.poll() is None and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        if self.proc.poll() is None:
            self.close()
            raise BenchError("the wake-up latency probe did not finish in time")
        out, err = self.proc.communicate()
        if self.proc.returncode != 0:
            raise BenchError(f"the wake-up latency probe exited with status "
                             f"{self.proc.returncode}: {err.decode(errors='replace')[-300:]}")
        return spread_from(orjson.loads(out))

    def close(self) -> None:
        """Ends the process if it still runs (a run cut short)."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.communicate()


def main(argv: list[str]) -> int:
    """``python -m engine.bench.wakeup START END [PERIOD_MS]``."""
    start, end = float(argv[1]), float(argv[2])
    period = (float(argv[3]) if len(argv) > 3 else PERIOD_MS) / 1000
    late = lateness(start, end, period)
    sys.stdout.write(orjson.dumps(summary(late).as_dict()).decode() + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
