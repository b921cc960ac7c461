"""The engine's Prometheus metrics: one set per process, no per-call labels.

Labels are bounded sets (end reasons, outcome names). Counters are updated when a call ends
or once per clock tick, never per frame.
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge

__all__ = ["METRICS", "Metrics"]


@dataclass(frozen=True, slots=True)
class Metrics:
    registry: CollectorRegistry
    calls_ended: Counter
    active_calls: Gauge
    upstream_connects: Counter
    dtmf_digits: Counter
    bargeins: Counter
    underruns: Counter
    clock_late_wakeups: Counter
    clock_resyncs: Counter

    @classmethod
    def create(cls, registry: CollectorRegistry | None = None) -> Metrics:
        registry = registry or CollectorRegistry()
        return cls(
            registry=registry,
            calls_ended=Counter("voice_engine_calls_ended", "Calls ended, by reason",
                                ["reason"], registry=registry),
            active_calls=Gauge("voice_engine_active_calls", "Calls in progress",
                               registry=registry),
            upstream_connects=Counter("voice_engine_upstream_connects",
                                      "Realtime connection attempts, by outcome",
                                      ["outcome"], registry=registry),
            dtmf_digits=Counter("voice_engine_dtmf_digits", "DTMF digits received",
                                registry=registry),
            bargeins=Counter("voice_engine_bargeins", "Barge-ins (caller spoke over the model)",
                             registry=registry),
            underruns=Counter("voice_engine_underruns",
                              "Silence frames sent inside a response for want of audio",
                              registry=registry),
            clock_late_wakeups=Counter("voice_engine_clock_late_wakeups",
                                       "Clock wake-ups later than a sub-tick", registry=registry),
            clock_resyncs=Counter("voice_engine_clock_resyncs",
                                  "Clock backlogs dropped after a long stall", registry=registry),
        )


METRICS = Metrics.create()
