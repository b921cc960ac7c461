"""The node's HTTP face on ``HEALTH_PORT``, and its HAProxy agent-check port.

``/health`` is liveness (JSON: the node's calls, uptime, version, each worker's pid and
calls), ``/ready`` answers 200 while the node accepts calls and 503 with a reason otherwise,
``/metrics`` is every worker's Prometheus metrics aggregated by prometheus-client's
multiprocess collector, plus the supervisor's own node gauges. The agent-check responder
writes one line per connection (:func:`engine.node.state.agent_reply`) and closes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from engine import __version__
from engine.node.state import NodePhase, NodeState, agent_reply, readiness

__all__ = ["AgentCheck", "health_app"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class _NodeCollector(Collector):
    """The supervisor's own figures: phase, workers alive, restarts."""

    def __init__(self, state: NodeState) -> None:
        self.state = state

    def collect(self) -> Iterator[Any]:
        state = self.state
        ready, _ = readiness(state)
        yield GaugeMetricFamily("voice_engine_node_ready", "1 while the node accepts calls",
                                value=1 if ready else 0)
        yield GaugeMetricFamily("voice_engine_node_draining", "1 while the node drains",
                                value=int(state.phase in (NodePhase.DRAINING, NodePhase.STOPPING)))
        yield GaugeMetricFamily("voice_engine_node_calls", "Calls admitted on this node",
                                value=state.calls)
        yield GaugeMetricFamily("voice_engine_node_max_calls", "MAX_CONCURRENT_CALLS",
                                value=state.max_calls)
        yield GaugeMetricFamily("voice_engine_workers_live", "Worker processes serving",
                                value=state.live_workers)
        lag = GaugeMetricFamily("voice_engine_worker_loop_lag_max_seconds",
                                "The largest event-loop lag any worker reported last")
        lag.add_metric([], max((w.lag_ms for w in state.workers), default=0.0) / 1000)
        yield lag
        restarts = CounterMetricFamily("voice_engine_worker_restarts",
                                       "Worker processes replaced after they died")
        restarts.add_metric([], sum(w.restarts for w in state.workers))
        yield restarts


def _json(status: int, doc: dict[str, Any]) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(doc), content_type="application/json")


def health_app(state: NodeState, metrics_dir: Path, started: float,
               refresh: Callable[[], None]) -> web.Application:
    """The aiohttp application; ``refresh`` brings ``state.calls`` up to date first."""
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(metrics_dir))
    registry.register(_NodeCollector(state))

    async def health(_: web.Request) -> web.Response:
        refresh()
        now = time.monotonic()
        return _json(200, {
            "status": state.phase.value, "version": __version__,
            "uptime_s": round(now - started, 3), "calls": state.calls,
            "max_calls": state.max_calls,
            "workers": [{
                "slot": w.slot, "pid": w.pid, "ready": w.ready, "calls": w.calls,
                "draining": w.draining, "lag_ms": w.lag_ms, "restarts": w.restarts,
                "uptime_s": round(now - w.started, 3) if w.pid else None,
            } for w in state.workers],
        })

    async def ready(_: web.Request) -> web.Response:
        refresh()
        ok, reason = readiness(state)
        return _json(200 if ok else 503, {"ready": ok, "reason": reason})

    async def metrics(_: web.Request) -> web.Response:
        refresh()
        return web.Response(body=generate_latest(registry), headers={"Content-Type": CONTENT_TYPE})

    app = web.Application()
    app.router.add_get("/health", health)
    app.router.add_get("/ready", ready)
    app.router.add_get("/metrics", metrics)
    return app


class AgentCheck(asyncio.Protocol):
    """HAProxy's agent-check: one line of state per connection, then close."""

    def __init__(self, state: NodeState, refresh: Callable[[], None]) -> None:
        self.state = state
        self.refresh = refresh

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.refresh()
        transport.write(agent_reply(self.state).encode())  # type: ignore[attr-defined]
        transport.close()

    def data_received(self, data: bytes) -> None:
        """HAProxy may send ``agent-send`` text; the answer does not depend on it."""
