"""Shared fixtures: both implementations of each media module, and the recorded sessions."""

from __future__ import annotations

import importlib
import random
from pathlib import Path
from types import ModuleType

import pytest
from websockets.frames import Frame
from websockets.streams import StreamReader

IMPLS = ("native", "python")
FIXTURES = Path(__file__).parent / "fixtures"
_PACKAGES = {"native": "engine._native", "python": "engine._pure"}


def media_module(impl: str, name: str) -> ModuleType:
    """The media module ``name`` of implementation ``impl``; a missing native build fails."""
    return importlib.import_module(f"{_PACKAGES[impl]}.{name}")


def seeded(seed: int):  # type: ignore[no-untyped-def]
    """A deterministic ``random(n)`` for frame builders, so two builders mask alike."""
    rng = random.Random(seed)
    return lambda n: rng.randbytes(n)


def parse_client_frame(frame: bytes) -> Frame:
    """One masked client frame as a server reads it (websockets' own parser, which unmasks)."""
    reader = StreamReader()
    reader.feed_data(frame)
    parser = Frame.parse(reader.read_exact, mask=True)
    try:
        next(parser)
    except StopIteration as done:
        assert not reader.buffer, "bytes left after the frame"
        return done.value  # type: ignore[no-any-return]
    raise AssertionError("incomplete frame")


def both(name: str) -> tuple[ModuleType, ModuleType]:
    """(native, python) modules of ``name``, for equivalence tests."""
    return media_module("native", name), media_module("python", name)


_FIGURES: list[str] = []


@pytest.fixture
def figures() -> list[str]:
    """Figures a test measured (pacing, quality); printed in the summary, never asserted tightly."""
    return _FIGURES


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _FIGURES:
        terminalreporter.section("measured figures")
        for line in _FIGURES:
            terminalreporter.write_line(line)
