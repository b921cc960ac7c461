"""Shared fixtures: both implementations of each media module, and the recorded sessions."""

from __future__ import annotations

import importlib
import random
import uuid
from collections.abc import Iterator
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
def figures(request: pytest.FixtureRequest) -> Iterator[list[str]]:
    """Figures a test measured (pacing, quality); printed in the summary, never asserted tightly.

    They travel on the test's report, so that with ``-n`` they reach the process that prints."""
    lines: list[str] = []
    yield lines
    request.node.user_properties.append(("figures", lines))


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.when == "teardown":
        for name, value in report.user_properties:
            if name == "figures":
                _FIGURES.extend(value)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _FIGURES:
        terminalreporter.section("measured figures")
        for line in _FIGURES:
            terminalreporter.write_line(line)


CALL_ID = uuid.UUID("12345678-1234-5678-1234-567812345678")
UUID_MSG = b"\x01\x00\x10" + CALL_ID.bytes
UPLINK_RATES = {0x10: 8000, 0x12: 16000, 0x13: 24000, 0x16: 48000, 0x11: 12000}


class Rig:
    """A parser with an uplink attached, in one implementation, as a call sets them up (the
    UUID already parsed)."""

    def __init__(self, impl: str, kind: int, fmt: str, append_ms: int, prebuffer_ms: int,
                 seed: int = 0) -> None:
        sock, up, rs, ws = (media_module(impl, n)
                            for n in ("audiosocket", "uplink", "resample", "wsframe"))
        rate = UPLINK_RATES[kind]
        target, per_ms = (8000, 8) if fmt == "pcmu" else (24000, 48)
        stages = []
        if rate != target:
            try:
                stages = [rs.Resampler(rate, target)]
            except Exception:
                stages = [rs.Resampler(rate, 24000), rs.Resampler(24000, target)]
        self.out: list[bytes] = []
        self.uplink = up.Uplink(kind, stages, fmt == "pcmu", append_ms * per_ms,
                                prebuffer_ms * per_ms, ws.FrameBuilder(seeded(seed)), self.out)
        self.parser = sock.Parser()
        self.parser.attach(self.uplink)
        self.parser.receive_data(UUID_MSG)
        self.parser.events_received()

    def feed(self, data: bytes) -> tuple[bool, list[str]]:
        ready = self.parser.receive_data(data)
        return ready, [type(e).__name__ for e in self.parser.events_received()]

    def counters(self) -> tuple[int, int, int, int]:
        u = self.uplink
        return u.frames, u.appends, u.pending_bytes, u.dropped_bytes
