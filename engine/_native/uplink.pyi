from collections.abc import Iterable
from typing import Any

from engine._native.audiosocket import AudioSink
from engine._native.wsframe import FrameBuilder

APPEND_ID_PREFIX: str

def b64encode(data: bytes | bytearray | memoryview) -> bytes: ...

class Uplink(AudioSink):
    frames: int
    appends: int
    append_bytes: int
    prebuffer_bytes: int
    dropped_bytes: int
    sending: bool
    tap: bytearray | None
    out: list[bytes]
    def __init__(
        self, kind: int, stages: Iterable[Any], ulaw: bool, append_bytes: int,
        prebuffer_bytes: int, framer: FrameBuilder, out: list[bytes],
    ) -> None: ...
    @property
    def pending_bytes(self) -> int: ...
    def flush(self) -> bool: ...
    def clear(self) -> None: ...
