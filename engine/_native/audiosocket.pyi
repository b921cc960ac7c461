import uuid as uuidlib
from typing import ClassVar

from engine.errors import PeerProtocolError

Buffer = bytes | bytearray | memoryview

KIND_HANGUP: int
KIND_UUID: int
KIND_DTMF: int
KIND_AUDIO_8K: int
KIND_AUDIO_12K: int
KIND_AUDIO_16K: int
KIND_AUDIO_24K: int
KIND_AUDIO_32K: int
KIND_AUDIO_44K1: int
KIND_AUDIO_48K: int
KIND_AUDIO_96K: int
KIND_AUDIO_192K: int
KIND_ERROR: int
AUDIO_RATES: dict[int, int]
DTMF_DIGITS: str
DEFAULT_MAX_PAYLOAD: int
HANGUP: bytes

def kind_for_rate(rate: int) -> int: ...

class UuidReceived:
    __match_args__: ClassVar[tuple[str, ...]]
    @property
    def uuid(self) -> uuidlib.UUID: ...
    def __init__(self, uuid: uuidlib.UUID) -> None: ...

class AudioReceived:
    __match_args__: ClassVar[tuple[str, ...]]
    @property
    def kind(self) -> int: ...
    @property
    def rate(self) -> int: ...
    @property
    def payload(self) -> bytes: ...
    def __init__(self, kind: int, rate: int, payload: bytes) -> None: ...

class DtmfReceived:
    __match_args__: ClassVar[tuple[str, ...]]
    @property
    def digit(self) -> str: ...
    def __init__(self, digit: str) -> None: ...

class HangupReceived:
    __match_args__: ClassVar[tuple[str, ...]]

class ErrorReceived:
    __match_args__: ClassVar[tuple[str, ...]]
    @property
    def payload(self) -> bytes: ...
    def __init__(self, payload: bytes) -> None: ...

class ProtocolViolation:
    __match_args__: ClassVar[tuple[str, ...]]
    @property
    def error(self) -> PeerProtocolError: ...
    def __init__(self, error: PeerProtocolError) -> None: ...

class PeerClosed:
    __match_args__: ClassVar[tuple[str, ...]]

Event = (
    UuidReceived | AudioReceived | DtmfReceived | HangupReceived | ErrorReceived
    | ProtocolViolation | PeerClosed
)

class AudioSink:
    kind: int
    def __init__(self, kind: int) -> None: ...
    def push(self, payload: bytes) -> bool: ...

class Parser:
    def __init__(self, max_payload: int = ..., *, client: bool = False) -> None: ...
    @property
    def max_payload(self) -> int: ...
    @property
    def client(self) -> bool: ...
    @property
    def uuid(self) -> uuidlib.UUID | None: ...
    @property
    def finished(self) -> bool: ...
    @property
    def has_events(self) -> bool: ...
    def attach(self, sink: AudioSink | None) -> None: ...
    def finish(self) -> None: ...
    def receive_data(self, data: Buffer) -> bool: ...
    def receive_eof(self) -> None: ...
    def events_received(self) -> list[Event]: ...

def encode_audio(kind: int, pcm: Buffer) -> bytes: ...
def silence(kind: int, ms: int = 20) -> bytes: ...
