"""Shared fixtures: both implementations of each media module, and the recorded sessions."""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType

import pytest

IMPLS = ("native", "python")
FIXTURES = Path(__file__).parent / "fixtures"
_PACKAGES = {"native": "engine._native", "python": "engine._pure"}


def media_module(impl: str, name: str) -> ModuleType:
    """The media module ``name`` of implementation ``impl``; a missing native build fails."""
    return importlib.import_module(f"{_PACKAGES[impl]}.{name}")


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
