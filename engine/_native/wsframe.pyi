from collections.abc import Callable

Buffer = bytes | bytearray | memoryview

OP_TEXT: int
OP_BINARY: int
POOL_BYTES: int

class FrameBuilder:
    def __init__(self, random: Callable[[int], bytes] | None = ...) -> None: ...
    def frame(self, data: Buffer, opcode: int = ...) -> bytes: ...

CLOSE_PROTOCOL_ERROR: int
CLOSE_MESSAGE_TOO_BIG: int

class FrameReader:
    max_size: int
    masked: bool
    passthrough: bool
    violation: tuple[int, str] | None
    def __init__(self, max_size: int, masked: bool) -> None: ...
    def feed(self, data: Buffer) -> list[tuple[int, bool, bytes] | bytes]: ...
