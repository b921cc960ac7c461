"""Freed heap memory goes back to the kernel when the worker trims."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

CODE = """
from engine import heap
def rss():
    return int(open("/proc/self/statm").read().split()[1]) * 4096
keep, big = [], []
for _ in range(2000):  # 40 KB blocks between small ones that stay: freed, they cannot shrink
    big.append(bytearray(40_000))
    keep.append(bytearray(600))
big.clear()
before = rss()
took = heap.trim()
print(took is not None, (before - rss()) // 1024)
"""


def test_a_trim_gives_freed_memory_back() -> None:
    # In a child: the test process's own heap is not the subject.
    out = subprocess.run([sys.executable, "-c", CODE], cwd=ROOT, capture_output=True,
                         text=True, check=True, timeout=30).stdout.split()
    assert out[0] == "True"
    assert int(out[1]) > 40_000  # of the 80 MB freed, most is returned
