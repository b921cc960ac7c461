"""A call's tool calls: which are running, and when the model should be asked to go on.

Pure bookkeeping for :class:`engine.call.Call`. The rules it keeps:

- A tool call belongs to the response that made it. A response's calls run only if barge-in
  did not cancel it (the call checks that before it starts one).
- Each result goes back as soon as it is in (``function_call_output``); the model is asked to
  respond (``response.create``) once, when the response that made the calls is done *and*
  every call it made has its result — parallel calls get one answer, not one each.
- A tool that outlives its timeout gets a "still working" result through the same path, so
  the model can tell the caller. Its real result, when it comes, is *late*: it is delivered
  as a system message followed by ``response.create`` when no response is in progress, or
  held until the current one is done. A late result after the call ended is dropped.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["ToolCalls"]


@dataclass(slots=True)
class _Batch:
    pending: set[str] = field(default_factory=set)
    done: bool = False
    answered: int = 0


class ToolCalls:
    """The tool calls of one call, by response."""

    def __init__(self) -> None:
        self._batches: dict[str, _Batch] = {}
        self._owner: dict[str, str] = {}

    def __len__(self) -> int:
        return len(self._owner)

    def started(self, response_id: str, call_id: str) -> None:
        """The model asked for ``call_id`` in ``response_id``; its tool now runs."""
        self._batches.setdefault(response_id, _Batch()).pending.add(call_id)
        self._owner[call_id] = response_id

    def pending(self) -> set[str]:
        """The calls still waiting for their result."""
        return set(self._owner)

    def owner(self, call_id: str) -> str | None:
        """The response that asked for ``call_id`` (None once it is answered)."""
        return self._owner.get(call_id)

    def answered(self, call_id: str) -> bool:
        """``call_id`` has its result (or its "still working" one).

        Returns:
            True when the model should now be asked to respond.
        """
        response_id = self._owner.pop(call_id, None)
        if response_id is None:
            return False
        batch = self._batches[response_id]
        batch.pending.discard(call_id)
        batch.answered += 1
        return self._complete(response_id)

    def response_done(self, response_id: str) -> bool:
        """The response is done; True when its calls are all answered already."""
        batch = self._batches.get(response_id)
        if batch is None:
            return False
        batch.done = True
        return self._complete(response_id)

    def _complete(self, response_id: str) -> bool:
        batch = self._batches[response_id]
        if batch.done and not batch.pending:
            del self._batches[response_id]
            return batch.answered > 0
        return False
