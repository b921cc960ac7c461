"""The descriptor budget: the soft limit raised to the hard one, and the connections it
leaves room for (checked in child processes started under prlimit)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def under(nofile: str, code: str) -> str:
    return subprocess.run(
        ["prlimit", f"--nofile={nofile}", "--", sys.executable, "-c", code],
        cwd=ROOT, capture_output=True, text=True, check=True, timeout=30,
    ).stdout.strip()


def test_the_soft_limit_is_raised_to_the_hard_one() -> None:
    out = under("100:400", "from engine import fdlimit; print(*fdlimit.raise_soft_limit())")
    assert out == "400 400"


def test_the_budget_keeps_the_reserve_and_counts_what_is_open() -> None:
    code = (
        "import os; from engine import fdlimit\n"
        "before = fdlimit.connection_budget(3, 64)\n"
        "held = [os.open(os.devnull, os.O_RDONLY) for _ in range(30)]\n"
        "print(before, fdlimit.connection_budget(3, 64), fdlimit.connection_budget(3, 10**6))"
    )
    before, after, starved = map(int, under("400:400", code).split())
    assert before == (400 - 64 - int(under("400:400",
                      "from engine import fdlimit; print(fdlimit.open_count())"))) // 3
    assert after == before - 10 and starved == 1
