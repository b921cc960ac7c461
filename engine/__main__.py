"""``python -m engine`` is the ``voice-engine`` command."""

from __future__ import annotations

from engine.cli import main

main(prog_name="voice-engine")
