"""Reading CPU time and memory of a process tree from /proc."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from engine.bench.procstat import ProcessTree, parse_stat
from engine.errors import ProcStatError

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")

TAIL = " 0 0 0 0 0 0 0 0 20 0 1 0 3846240 3133440 383"

# Burns ~0.3 s of CPU, says so, then sleeps until killed.
BUSY_CHILD = """
import sys, time
start = time.process_time()
while time.process_time() - start < 0.3:
    pass
sys.stdout.write("ready\\n")
sys.stdout.flush()
time.sleep(60)
"""


def test_parse_stat_splits_at_the_last_parenthesis() -> None:
    line = "4242 ((a b) c)) S 17 4242 4242 0 -1 4194304 101 0 0 0 123 45" + TAIL
    assert parse_stat(line) == (17, 123, 45)


def test_parse_stat_of_a_real_line() -> None:
    with open(f"/proc/{os.getpid()}/stat") as file:
        ppid, utime, stime = parse_stat(file.read())
    assert ppid == os.getppid()
    assert utime >= 0 and stime >= 0


@pytest.mark.parametrize("line", [
    "",
    "4242 a b S 17",
    "4242 (python) S 17 4242",
    "4242 (python) S 17 4242 4242 0 -1 4194304 101 0 0 0 x 45" + TAIL,
    "4242 ) S 17 4242 4242 0 -1 4194304 101 0 0 0 123 45" + TAIL,
])
def test_malformed_stat_lines_are_refused(line: str) -> None:
    with pytest.raises(ProcStatError) as caught:
        parse_stat(line)
    assert caught.value.text == line


def test_a_busy_child_shows_up_in_the_tree_and_its_cpu() -> None:
    tree = ProcessTree(os.getpid())
    before = tree.cpu_seconds()
    with subprocess.Popen([sys.executable, "-c", BUSY_CHILD], stdout=subprocess.PIPE,
                          text=True) as child:
        try:
            assert child.stdout is not None
            assert child.stdout.readline() == "ready\n"
            pids = tree.pids()
            assert pids[0] == os.getpid()
            assert child.pid in pids
            assert tree.cpu_seconds() - before > 0.2
            alone = ProcessTree(child.pid)
            assert alone.threads() == 1
            assert alone.fds() == len(os.listdir(f"/proc/{child.pid}/fd")) >= 3
            assert tree.threads() > alone.threads() and tree.fds() > alone.fds()
        finally:
            child.kill()
    assert child.pid not in tree.pids()


def test_a_vanished_root_is_an_empty_tree() -> None:
    with subprocess.Popen([sys.executable, "-c", "pass"]) as child:
        pass
    gone = ProcessTree(child.pid)
    assert gone.pids() == []
    assert gone.cpu_seconds() == 0.0
    assert gone.rss_bytes() == 0
    assert gone.fds() == 0 and gone.threads() == 0


def test_an_opened_file_is_one_more_fd() -> None:
    tree = ProcessTree(os.getpid())
    before = tree.fds()
    with open(__file__, "rb"):
        assert tree.fds() == before + 1
    assert tree.fds() == before


def test_own_rss() -> None:
    assert ProcessTree(os.getpid()).rss_bytes() > 1 << 20
