from typing import Any

LATENESS_BIN_MS: float
READ_EVENTS: int
READ_EOF: int
READ_FAILED: int

class Outlet:
    owner: Any
    playout: Any
    transport: Any
    fd: int
    watch: bool
    frames: int
    direct: int
    error: Exception | None
    upstream_send: Any
    tap: bytearray | None
    status: int
    read_errno: int
    reads: int
    def __init__(self, owner: Any, playout: Any, transport: Any, fd: int = -1) -> None: ...
    @property
    def played_out(self) -> bool: ...
    @property
    def reading(self) -> bool: ...
    def read_with(self, parser: Any, upstream_frames: list[bytes] | None) -> None: ...
    def take_status(self) -> int: ...

class ClockPass:
    t0: float
    tick: float
    interval: float
    subticks: int
    max_catchup: int
    read_every: int
    ticks: int
    late_wakeups: int
    max_lateness: float
    catchup_frames: int
    resyncs: int
    rephases: int
    lateness_bins: list[int]
    def __init__(
        self, t0: float, tick: float = 0.020, subticks: int = 5, max_catchup: int = 3,
        read_every: int = 2,
    ) -> None: ...
    def __len__(self) -> int: ...
    def __contains__(self, outlet: Outlet) -> bool: ...
    def next_deadline(self) -> float: ...
    def add(self, outlet: Outlet, now: float) -> None: ...
    def remove(self, outlet: Outlet) -> None: ...
    def rephase(self, outlet: Outlet, now: float) -> bool: ...
    def run(self, now: float) -> list[Outlet]: ...
