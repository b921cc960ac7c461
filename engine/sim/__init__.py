"""The built-in OpenAI Realtime simulator: a local websockets server for tests and the bench.

It speaks both dialects (GA and beta), runs an energy VAD on the caller's audio, answers with a
configurable tone or voice-like signal faster than real time, scripts function calls, checks
every client event against the OpenAI SDK's models, and injects faults on demand::

    sim = Simulator(SimConfig(response_ms=1000))
    port = await sim.start()
    ...  # connect a client to sim.url
    await sim.stop()
"""

from __future__ import annotations

from engine.sim.config import (
    Dialect,
    Fault,
    FaultKind,
    Signal,
    SimConfig,
    ToolScript,
    ValidationMode,
    parse_fault,
)
from engine.sim.server import LiveSession, Simulator
from engine.sim.session import SessionReport, Truncate

__all__ = [
    "Dialect",
    "Fault",
    "FaultKind",
    "LiveSession",
    "SessionReport",
    "SimConfig",
    "Signal",
    "Simulator",
    "ToolScript",
    "Truncate",
    "ValidationMode",
    "parse_fault",
]
