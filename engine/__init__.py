"""voice-engine: Asterisk AudioSocket calls bridged to a speech-to-speech Realtime model."""

from __future__ import annotations

__all__ = ["__version__"]

__version__ = "0.1.0"
