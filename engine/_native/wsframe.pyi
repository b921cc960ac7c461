from collections.abc import Callable

Buffer = bytes | bytearray | memoryview

OP_TEXT: int
OP_BINARY: int
POOL_BYTES: int

class FrameBuilder:
    def __init__(self, random: Callable[[int], bytes] | None = ...) -> None: ...
    def frame(self, data: Buffer, opcode: int = ...) -> bytes: ...
