"""Token usage of a call, added up from every ``response.done``, and what it costs.

The Realtime API reports each response's tokens by direction and kind (text, audio) and, for
input, how many were cached. Cached tokens are a part of the input tokens, billed at the cached
price. Prices are US dollars per million tokens, by model; :data:`DEFAULT_PRICES` holds the
published list prices (check them against your contract), and the agent file's ``[prices]``
overrides them or adds a model (an Azure deployment's name, say). A model with no price has no
cost (None), never a guessed one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

__all__ = ["DEFAULT_PRICES", "PRICE_KEYS", "Prices", "Usage", "prices_for"]


@dataclass(frozen=True, slots=True)
class Prices:
    """US dollars per million tokens of each kind."""

    text_input: float
    text_cached_input: float
    text_output: float
    audio_input: float
    audio_cached_input: float
    audio_output: float

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


PRICE_KEYS = tuple(f.name for f in fields(Prices))

DEFAULT_PRICES: Mapping[str, Prices] = {
    # OpenAI's list prices for the Realtime models, as published in October 2025.
    "gpt-realtime": Prices(4.00, 0.40, 16.00, 32.00, 0.40, 64.00),
    "gpt-realtime-mini": Prices(0.60, 0.06, 2.40, 10.00, 0.30, 20.00),
    "gpt-4o-realtime-preview": Prices(5.00, 2.50, 20.00, 40.00, 2.50, 80.00),
    # The first preview snapshot kept its launch prices.
    "gpt-4o-realtime-preview-2024-10-01": Prices(5.00, 2.50, 20.00, 100.00, 20.00, 200.00),
    "gpt-4o-mini-realtime-preview": Prices(0.60, 0.30, 2.40, 10.00, 0.30, 20.00),
}


def prices_for(model: str, table: Mapping[str, Prices] = DEFAULT_PRICES) -> Prices | None:
    """The prices of ``model``: its own entry, else the longest entry it starts with followed
    by ``-`` (a dated snapshot such as ``gpt-realtime-2025-08-28``), else None."""
    found = table.get(model)
    if found is not None:
        return found
    best = ""
    for name in table:
        if model.startswith(name + "-") and len(name) > len(best):
            best = name
    return table[best] if best else None


def _int(doc: Mapping[str, Any] | None, key: str) -> int:
    if not isinstance(doc, Mapping):
        return 0
    value = doc.get(key)
    return value if type(value) is int and value > 0 else 0


@dataclass(slots=True)
class Usage:
    """Tokens of one call, by kind; input counts include the cached ones."""

    responses: int = 0
    input_text: int = 0
    input_audio: int = 0
    cached_text: int = 0
    cached_audio: int = 0
    output_text: int = 0
    output_audio: int = 0

    @property
    def input_tokens(self) -> int:
        return self.input_text + self.input_audio

    @property
    def output_tokens(self) -> int:
        return self.output_text + self.output_audio

    def add(self, usage: Mapping[str, Any] | None) -> None:
        """One response's ``usage`` block (None or a malformed part counts as no tokens).

        Without a kind breakdown the totals count as text; cached tokens without their own
        breakdown (beta) count as text up to the text input, the rest as audio.
        """
        self.responses += 1
        if not isinstance(usage, Mapping):
            return
        details_in = usage.get("input_token_details")
        details_out = usage.get("output_token_details")
        if isinstance(details_in, Mapping):
            text_in, audio_in = _int(details_in, "text_tokens"), _int(details_in, "audio_tokens")
            cached = _int(details_in, "cached_tokens")
            split = details_in.get("cached_tokens_details")
            if isinstance(split, Mapping):
                cached_text, cached_audio = _int(split, "text_tokens"), _int(split, "audio_tokens")
            else:
                cached_text = min(cached, text_in)
                cached_audio = min(cached - cached_text, audio_in)
        else:
            text_in, audio_in, cached_text, cached_audio = _int(usage, "input_tokens"), 0, 0, 0
        if isinstance(details_out, Mapping):
            text_out = _int(details_out, "text_tokens")
            audio_out = _int(details_out, "audio_tokens")
        else:
            text_out, audio_out = _int(usage, "output_tokens"), 0
        self.input_text += text_in
        self.input_audio += audio_in
        self.cached_text += min(cached_text, text_in)
        self.cached_audio += min(cached_audio, audio_in)
        self.output_text += text_out
        self.output_audio += audio_out

    def cost(self, prices: Prices | None) -> float | None:
        """What these tokens cost in US dollars at ``prices`` (None without prices)."""
        if prices is None:
            return None
        micro = ((self.input_text - self.cached_text) * prices.text_input
                 + self.cached_text * prices.text_cached_input
                 + self.output_text * prices.text_output
                 + (self.input_audio - self.cached_audio) * prices.audio_input
                 + self.cached_audio * prices.audio_cached_input
                 + self.output_audio * prices.audio_output)
        return micro / 1_000_000

    def as_dict(self) -> dict[str, int]:
        return {"responses": self.responses, "input_text": self.input_text,
                "input_audio": self.input_audio, "cached_text": self.cached_text,
                "cached_audio": self.cached_audio, "output_text": self.output_text,
                "output_audio": self.output_audio}
