"""Long calls: what carries a conversation from one Realtime session to the next.

A Realtime session ends after 60 minutes on GA and 30 on beta, without warning. Before that,
the call hands over to a fresh session at a pause (see :meth:`engine.call.Call.try_handover`):
same configuration and tools, and the conversation so far carried over as text items, built
here from the call's transcripts. :class:`Conversation` keeps the turns (in memory only; the
logs and records see transcripts only when they are enabled).

A conversation longer than ``CARRY_CHARS`` is summarised first: the old session is asked, out
of band (nothing of it joins the conversation), to summarise the turns before the most recent
ones, and the new session gets that summary, then the recent turns verbatim. A later handover
summarises the previous summary and the turns since. Without a summary (it failed, or the
session's limit came first) the new session gets the most recent turns that fit, and a note
of how many were left out.
"""

from __future__ import annotations

from collections import deque
from typing import Any

__all__ = ["CARRY_CHARS", "HANDOVER_GRACE_S", "SUMMARY_INSTRUCTIONS", "Conversation",
           "carried_items", "handover_after"]

CARRY_CHARS = 12_000
"""The most transcript text carried to a new session verbatim (about 3,000 tokens)."""
RECENT_CHARS = 4_000
"""With a summary, how much of the latest conversation is carried verbatim beside it."""
SUMMARY_SOURCE_CHARS = 200_000
"""The most transcript text sent to be summarised (the latest part of it)."""
HANDOVER_GRACE_S = 60.0
"""How long after the handover time the call waits for a pause before it hands over anyway."""
_MAX_TURNS = 5000
_DEFAULT_S = {"ga": 55 * 60.0, "azure": 55 * 60.0, "beta": 28 * 60.0}

CONTINUES = ("This call continues from an earlier session, which ended at its time limit. "
             "The conversation so far follows; carry on from where it stopped, without "
             "greeting the caller again or mentioning the change.")
SUMMARY_INSTRUCTIONS = (
    "Summarise this phone call transcript for the assistant who takes the call over: who "
    "the caller is, what they want, what has been said, done and agreed (names, numbers, "
    "dates, tool results), and what is still open. Plain sentences, at most 300 words.")


def handover_after(dialect: str, configured: float = 0.0) -> float:
    """Seconds after a session opens at which its call starts looking for a pause to hand over
    (``configured`` when set, else 55 minutes on GA and Azure, 28 on beta)."""
    return configured if configured > 0 else _DEFAULT_S[dialect]


class Conversation:
    """The turns of one call, ``(role, text)`` with role ``user`` or ``assistant``, numbered
    from 0 in the order they were added; ``summary`` (when made) covers turns before
    ``summary_upto``."""

    def __init__(self) -> None:
        self.turns: deque[tuple[str, str]] = deque(maxlen=_MAX_TURNS)
        self.added = 0
        self.summary: str | None = None
        self.summary_upto = 0

    def add(self, role: str, text: str) -> None:
        text = text.strip()
        if text:
            self.turns.append((role, text))
            self.added += 1

    def since(self, start: int) -> list[tuple[str, str]]:
        """The turns numbered ``start`` and later that are still held."""
        first = self.added - len(self.turns)
        return list(self.turns)[max(0, start - first):]

    def chars_since(self, start: int) -> int:
        return sum(len(text) for _, text in self.since(start))

    def needs_summary(self, budget: int | None = None) -> bool:
        """What a new session would be given verbatim is over ``budget`` (``CARRY_CHARS``)."""
        return self.chars_since(self.summary_upto) > (CARRY_CHARS if budget is None else budget)

    def summary_source(self, keep: int | None = None) -> tuple[str, int]:
        """The text to summarise, and the number of the first turn it leaves out: the previous
        summary and the turns since, but for the latest ``keep`` characters of turns (those
        are carried as they are)."""
        keep = RECENT_CHARS if keep is None else keep
        turns = self.since(self.summary_upto)
        kept = 0
        cut = len(turns)
        while cut > 0 and kept + len(turns[cut - 1][1]) <= keep:
            cut -= 1
            kept += len(turns[cut][1])
        lines = []
        if self.summary:
            lines.append(f"(Summary of the call before this part: {self.summary})")
        lines += [f"{'Caller' if role == 'user' else 'Assistant'}: {text}"
                  for role, text in turns[:cut]]
        text = "\n".join(lines)
        if len(text) > SUMMARY_SOURCE_CHARS:
            text = "…" + text[len(text) - SUMMARY_SOURCE_CHARS:]
        return text, self.added - (len(turns) - cut)

    def summarised(self, summary: str, upto: int) -> None:
        self.summary, self.summary_upto = summary, upto

    def recent(self, budget: int | None = None, start: int = 0,
               ) -> tuple[list[tuple[str, str]], int]:
        """The latest turns numbered ``start`` or later whose text fits ``budget``
        characters, oldest first, and how many of those turns are left out (a turn longer
        than the budget is cut to its end)."""
        kept: list[tuple[str, str]] = []
        left = CARRY_CHARS if budget is None else budget
        turns = self.since(start)
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
                  budget: int | None = None) -> list[bytes]:
    """The ``conversation.item.create`` events that give a new session the call so far: a
    system note, the summary of its earlier part if there is one, then the latest turns, each
    as a text message of its role."""
    summary = conversation.summary
    start = conversation.summary_upto if summary else 0
    turns, omitted = conversation.recent(budget, start)
    note = CONTINUES
    if omitted:
        note += f" ({omitted} earlier turns of the call are left out.)"
    items = [encoder.item_create_text(note, role="system")]
    if summary:
        items.append(encoder.item_create_text(
            f"Summary of the call before the turns that follow: {summary}", role="system"))
    items += [encoder.item_create_text(text, role=role) for role, text in turns]
    return items
