"""One call's record: who called, what was said and done, how it sounded, what it cost.

A plain dataclass, built by the worker when a call ends and written by the records writer.
Times are UTC; ``answered_at`` is when the call's media started (the engine answered),
None for a call refused before that. ``tools`` lists each tool call (name, the arguments as
the model sent them, outcome, milliseconds), ``transcript`` each line as ``[role, text]``
when transcripts are kept, else None.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

__all__ = ["JSON_FIELDS", "RECORD_FIELDS", "TIME_FIELDS", "CallRecord"]


@dataclass(slots=True)
class CallRecord:
    uuid: str
    started_at: dt.datetime
    ended_at: dt.datetime
    end_reason: str
    node: str = ""
    peer: str = ""
    listen_port: int = 0
    profile: str = ""
    variant: str | None = None
    caller_id: str | None = None
    caller_name: str | None = None
    dialled: str | None = None
    answered_at: dt.datetime | None = None
    duration_s: float = 0.0
    error_class: str | None = None
    error: str | None = None
    model: str = ""
    dialect: str = ""
    upstream_format: str = ""
    rate: int | None = None
    upstream_sessions: int = 0
    caller_frames: int = 0
    frames_out: int = 0
    underruns: int = 0
    rephases: int = 0
    clock_late_wakeups: int = 0
    bargeins: int = 0
    truncates: int = 0
    dtmf: str = ""
    responses: int = 0
    input_text_tokens: int = 0
    input_audio_tokens: int = 0
    cached_text_tokens: int = 0
    cached_audio_tokens: int = 0
    output_text_tokens: int = 0
    output_audio_tokens: int = 0
    cost_usd: float | None = None
    tools: list[dict[str, Any]] = field(default_factory=list)
    transcript: list[list[str]] | None = None
    recording: str | None = None

    def as_doc(self) -> dict[str, Any]:
        """Plain JSON values (times as ISO 8601 text)."""
        doc = asdict(self)
        for name in TIME_FIELDS:
            if doc[name] is not None:
                doc[name] = doc[name].isoformat()
        return doc

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> CallRecord:
        """A record from a stored row (columns named as the fields; extra ones ignored)."""
        return cls(**{name: row[name] for name in RECORD_FIELDS if name in row})


RECORD_FIELDS = tuple(f.name for f in fields(CallRecord))
TIME_FIELDS = ("started_at", "answered_at", "ended_at")
JSON_FIELDS = ("tools", "transcript")
