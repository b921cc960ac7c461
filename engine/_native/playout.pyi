Buffer = bytes | bytearray | memoryview

MAX_ITEMS: int

def fade_gain(k: int, n: int) -> int: ...

class PlayoutBuffer:
    rate: int
    kind: int | None
    frame_samples: int
    capacity_samples: int
    allocated_samples: int
    underruns: int
    dropped_samples: int
    complete: bool
    current_item: str | None
    buffered_samples: int
    buffered_ms: int
    playing: bool
    def __init__(
        self, rate: int, *, frame_ms: int = 20, start_frames: int = 2, capacity_ms: int = 60000,
        fade_ms: int = 5, kind: int | None = None,
    ) -> None: ...
    def push(self, pcm: Buffer, item_id: str | None = None) -> int: ...
    def mark_complete(self) -> None: ...
    def pop_frame(self) -> bytes: ...
    def pop_message(self) -> bytes: ...
    def clear(self) -> tuple[str | None, int] | None: ...
    def reset(self) -> None: ...
    def played_ms(self, item_id: str | None) -> int: ...
