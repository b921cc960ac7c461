"""Long calls: what carries a conversation from one Realtime session to the next.

A Realtime session ends after 60 minutes on GA and 30 on beta, without warning. Before that,
the call hands over to a fresh session at a pause (see :meth:`engine.call.Call.try_handover`):
same configuration and tools, and the conversation so far carried over as text items, built
here from the call's transcripts. :class:`Conversation` keeps the turns (in memory only; the
logs and records see transcripts only when they are enabled). Long conversations are cut to
the most recent turns that fit a character budget, with a note saying how many earlier turns
were left out: the engine does not have a model write summaries.
"""

from __future__ import annotations

from collections import deque
from typing import Any

__all__ = ["CARRY_CHARS", "HANDOVER_GRACE_S", "Conversation", "handover_after",
           "carried_items"]

CARRY_CHARS = 12_000
"""The most transcript text carried to a new session (about 3,000 tokens)."""
HANDOVER_GRACE_S = 60.0
"""How long after the handover time the call waits for a pause before it hands over anyway."""
_MAX_TURNS = 1000
_DEFAULT_S = {"ga": 55 * 60.0, "azure": 55 * 60.0, "beta": 28 * 60.0}

CONTINUES = ("This call continues from an earlier session, which ended at its time limit. "
             "The conversation so far follows; carry on from where it stopped, without "
             "greeting the caller again or mentioning the change.")


def handover_after(dialect: str, configured: float = 0.0) -> float:
    """Seconds after a session opens at which its call starts looking for a pause to hand over
    (``configured`` when set, else 55 minutes on GA and Azure, 28 on beta)."""
    return configured if configured > 0 else _DEFAULT_S[dialect]


class Conversation:
    """The turns of one call, ``(role, text)`` with role ``user`` or ``assistant``."""

    def __init__(self) -> None:
        self.turns: deque[tuple[str, str]] = deque(maxlen=_MAX_TURNS)

    def add(self, role: str, text: str) -> None:
        text = text.strip()
        if text:
            self.turns.append((role, text))

    def recent(self, budget: int = CARRY_CHARS) -> tuple[list[tuple[str, str]], int]:
        """The latest turns whose text fits ``budget`` characters, oldest first, and how many
        earlier turns are left out (a turn longer than the budget is cut to its end)."""
        kept: list[tuple[str, str]] = []
        left = budget
        turns = list(self.turns)
        for role, text in reversed(turns):
            if left <= 0:
                break
            if len(text) > left:
                text = "…" + text[len(text) - left + 1:]
            kept.append((role, text))
            left -= len(text)
        kept.reverse()
        return kept, len(turns) - len(kept)


def carried_items(encoder: Any, conversation: Conversation,
                  budget: int = CARRY_CHARS) -> list[bytes]:
    """The ``conversation.item.create`` events that give a new session the call so far: a
    system note, then each turn as a text message of its role."""
    turns, omitted = conversation.recent(budget)
    note = CONTINUES
    if omitted:
        note += f" ({omitted} earlier turns of the call are left out.)"
    items = [encoder.item_create_text(note, role="system")]
    items += [encoder.item_create_text(text, role=role) for role, text in turns]
    return items
