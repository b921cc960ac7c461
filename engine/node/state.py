"""What the node knows about itself, and the pure rules that turn it into answers.

The supervisor keeps one :class:`NodeState`; ``/health``, ``/ready``, ``/metrics`` and the
HAProxy agent-check read it. :func:`readiness` and :func:`agent_reply` are pure, so the rules
(never a sticky ``drain`` for a passing condition, spare capacity as the weight) are tested
without a socket.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

__all__ = ["NodePhase", "NodeState", "WorkerView", "agent_reply", "readiness"]


class NodePhase(enum.Enum):
    STARTING = "starting"
    SERVING = "serving"
    DRAINING = "draining"
    STOPPING = "stopping"


@dataclass(slots=True)
class WorkerView:
    """One worker slot as the supervisor last heard of it."""

    slot: int
    pid: int | None = None
    ready: bool = False
    calls: int = 0
    lag_ms: float = 0.0
    draining: bool = False
    restarts: int = 0
    started: float = 0.0
    last_beat: float = 0.0


@dataclass(slots=True)
class NodeState:
    """The node's phase, capacity and workers; ``calls`` is the exact node-wide count."""

    max_calls: int
    phase: NodePhase = NodePhase.STARTING
    calls: int = 0
    workers: list[WorkerView] = field(default_factory=list)

    @property
    def live_workers(self) -> int:
        """Workers that are up and taking calls."""
        return sum(1 for w in self.workers if w.ready and w.pid is not None and not w.draining)


def readiness(state: NodeState) -> tuple[bool, str]:
    """(ready, reason): whether HAProxy's ``/ready`` check should send this node new calls."""
    if state.phase is NodePhase.STARTING:
        return False, "starting"
    if state.phase in (NodePhase.DRAINING, NodePhase.STOPPING):
        return False, "draining"
    if state.live_workers == 0:
        return False, "no_live_worker"
    if state.calls >= state.max_calls:
        return False, "over_capacity"
    return True, "accepting"


def agent_reply(state: NodeState) -> str:
    """The agent-check line: ``ready up N% maxconn:M`` with N the spare capacity, ``drain``
    while draining.

    HAProxy keeps ``drain`` until it hears ``ready``, so ``drain`` is only for a node that is
    leaving; a passing condition (no live worker while one restarts, a full node) answers
    ``ready`` with ``down`` or a zero weight, which the next answer undoes.
    """
    if state.phase in (NodePhase.DRAINING, NodePhase.STOPPING):
        return "drain\n"
    if state.phase is NodePhase.STARTING or state.live_workers == 0:
        return "ready down\n"
    spare = max(0, state.max_calls - state.calls)
    percent = spare * 100 // state.max_calls
    return f"ready up {percent}% maxconn:{state.max_calls}\n"
