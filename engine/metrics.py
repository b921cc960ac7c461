"""The engine's Prometheus metrics: one set per process, no per-call labels.

Labels are bounded sets (end reasons, outcome and error class names). Counters are updated
when a call ends or once per clock tick, never per frame. Under the node the workers run in
prometheus-client's multiprocess mode (``PROMETHEUS_MULTIPROC_DIR`` is set in their
environment before anything imports the client), so every gauge names how the supervisor
aggregates it across workers.
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["CALL_SECONDS_BUCKETS", "METRICS", "Metrics"]

CALL_SECONDS_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, float("inf"))


@dataclass(frozen=True, slots=True)
class Metrics:
    registry: CollectorRegistry
    calls_ended: Counter
    active_calls: Gauge
    call_seconds: Histogram
    upstream_connects: Counter
    upstream_errors: Counter
    upstream_bad_events: Counter
    dtmf_digits: Counter
    bargeins: Counter
    underruns: Counter
    tokens: Counter
    clock_late_wakeups: Counter
    clock_resyncs: Counter
    loop_lag: Gauge
    loop_tasks: Gauge
    cost: Counter
    records_written: Counter
    records_lost: Counter
    recordings: Counter
    recording_dropped_bytes: Counter

    @classmethod
    def create(cls, registry: CollectorRegistry | None = None) -> Metrics:
        registry = registry or CollectorRegistry()
        return cls(
            registry=registry,
            calls_ended=Counter("voice_engine_calls_ended", "Calls ended (refusals included), "
                                "by reason", ["reason"], registry=registry),
            active_calls=Gauge("voice_engine_active_calls", "Connections in progress",
                               registry=registry, multiprocess_mode="livesum"),
            call_seconds=Histogram("voice_engine_call_seconds", "Length of calls that started",
                                   buckets=CALL_SECONDS_BUCKETS, registry=registry),
            upstream_connects=Counter("voice_engine_upstream_connects",
                                      "Realtime connection attempts, by outcome",
                                      ["outcome"], registry=registry),
            upstream_errors=Counter("voice_engine_upstream_errors",
                                    "Calls ended by an upstream failure, by error class",
                                    ["error"], registry=registry),
            upstream_bad_events=Counter(
                "voice_engine_upstream_bad_events", "Realtime events dropped or only logged, "
                "by cause (undecodable, bad_audio, error_event); the call went on",
                ["cause"], registry=registry),
            dtmf_digits=Counter("voice_engine_dtmf_digits", "DTMF digits received",
                                registry=registry),
            bargeins=Counter("voice_engine_bargeins", "Barge-ins (caller spoke over the model)",
                             registry=registry),
            underruns=Counter("voice_engine_underruns",
                              "Silence frames sent inside a response for want of audio",
                              registry=registry),
            tokens=Counter("voice_engine_tokens", "Realtime usage tokens, by direction",
                           ["direction"], registry=registry),
            clock_late_wakeups=Counter("voice_engine_clock_late_wakeups",
                                       "Clock wake-ups later than a sub-tick", registry=registry),
            clock_resyncs=Counter("voice_engine_clock_resyncs",
                                  "Clock backlogs dropped after a long stall", registry=registry),
            loop_lag=Gauge("voice_engine_loop_lag_seconds", "How late the worker's event loop "
                           "ran a 100 ms timer, the latest probe (the node shows the worst "
                           "worker)", registry=registry, multiprocess_mode="max"),
            loop_tasks=Gauge("voice_engine_event_loop_tasks", "Unfinished asyncio tasks on the "
                             "worker's event loop, sampled every second (the node shows the "
                             "sum over its workers)", registry=registry,
                             multiprocess_mode="livesum"),
            cost=Counter("voice_engine_cost_usd", "Estimated Realtime cost of ended calls, in "
                         "US dollars (calls of a model without prices count nothing)",
                         registry=registry),
            records_written=Counter("voice_engine_records_written",
                                    "Call records written to the store", registry=registry),
            records_lost=Counter("voice_engine_records_lost", "Call records not written, by "
                                 "cause (queue_full, store_failed, shutdown, write_crashed)",
                                 ["cause"], registry=registry),
            recordings=Counter("voice_engine_recordings", "Call recordings ended, by outcome "
                               "(finished, failed)", ["outcome"], registry=registry),
            recording_dropped_bytes=Counter("voice_engine_recording_dropped_bytes",
                                            "Recorded audio the disk could not keep up with, "
                                            "written as silence", registry=registry),
        )


METRICS = Metrics.create()
