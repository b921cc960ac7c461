"""CPU time, memory, open files and threads of an engine's process tree (supervisor and
workers), read from /proc.

Linux only. The tree is walked afresh on every reading, so workers forked or replaced during a
load test are counted from then on. CPU time of processes that already exited is not counted:
the kernel only adds it to the parent's cumulative fields once the parent reaps them, and those
fields are not read here, so a worker that dies mid-test takes its CPU time with it.
"""

from __future__ import annotations

import os
from collections import deque

from engine.errors import ProcStatError

__all__ = ["ProcessTree", "parse_stat"]

# Fields after the closing parenthesis of comm: state is 0, so field N of proc(5) is N - 3.
_PPID = 1
_UTIME = 11
_STIME = 12


def parse_stat(text: str) -> tuple[int, int, int]:
    """(ppid, utime, stime) from a ``/proc/PID/stat`` line; times in clock ticks.

    The command name sits in parentheses and may itself hold spaces and ``)``, so the fields
    are split after the last ``)``.

    Raises:
        ProcStatError: the line is not a stat line.
    """
    head, paren, rest = text.rpartition(")")
    if not paren or "(" not in head:
        raise ProcStatError(text, "no command name in parentheses")
    fields = rest.split()
    if len(fields) <= _STIME:
        raise ProcStatError(text, f"{len(fields)} fields after the command name, need {_STIME + 1}")
    try:
        return int(fields[_PPID]), int(fields[_UTIME]), int(fields[_STIME])
    except ValueError:
        raise ProcStatError(text, "ppid, utime or stime is not an integer") from None


def _read(path: str) -> str | None:
    """The text of a /proc file, or None if its process has gone."""
    try:
        with open(path, encoding="ascii", errors="replace") as file:
            return file.read()
    except (FileNotFoundError, ProcessLookupError):
        return None


def _entries(path: str) -> int:
    """How many entries a /proc folder has, or 0 if its process has gone."""
    try:
        return len(os.listdir(path))
    except (FileNotFoundError, ProcessLookupError):
        return 0


class ProcessTree:
    """A process and all its descendants, read live from /proc on every call.

    Args:
        pid: the root of the tree, typically the engine's supervisor.
    """

    def __init__(self, pid: int) -> None:
        self.pid = pid

    def pids(self) -> list[int]:
        """The root and every live descendant, parents before children.

        A process that vanishes while the tree is read is left out (with the children it had).
        """
        found: list[int] = []
        seen: set[int] = set()
        pending = deque([self.pid])
        while pending:
            pid = pending.popleft()
            if pid in seen:
                continue
            children = self._children(pid)
            if children is None:
                continue
            seen.add(pid)
            found.append(pid)
            pending.extend(children)
        return found

    def cpu_seconds(self) -> float:
        """User plus system CPU time of the live tree, in seconds."""
        user, system = self.cpu_times()
        return user + system

    def cpu_times(self) -> tuple[float, float]:
        """(user, system) CPU time of the live tree, in seconds."""
        user = system = 0
        for pid in self.pids():
            text = _read(f"/proc/{pid}/stat")
            if text is not None:
                _, utime, stime = parse_stat(text)
                user += utime
                system += stime
        hz = os.sysconf("SC_CLK_TCK")
        return user / hz, system / hz

    def rss_bytes(self) -> int:
        """Resident memory of the live tree (sum of each process's VmRSS), in bytes."""
        total = 0
        for pid in self.pids():
            text = _read(f"/proc/{pid}/status")
            if text is None:
                continue
            for line in text.splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
                    break
        return total

    def fds(self) -> int:
        """Open file descriptors of the live tree (the entries of each ``/proc/PID/fd``)."""
        return sum(_entries(f"/proc/{pid}/fd") for pid in self.pids())

    def threads(self) -> int:
        """Threads of the live tree (the entries of each ``/proc/PID/task``)."""
        return sum(_entries(f"/proc/{pid}/task") for pid in self.pids())

    @staticmethod
    def _children(pid: int) -> list[int] | None:
        """Children of every thread of ``pid``, or None if the process has gone."""
        task_dir = f"/proc/{pid}/task"
        try:
            tids = os.listdir(task_dir)
        except (FileNotFoundError, ProcessLookupError):
            return None
        children: list[int] = []
        for tid in tids:
            text = _read(f"{task_dir}/{tid}/children")
            if text is not None:
                children.extend(int(child) for child in text.split())
        return children
