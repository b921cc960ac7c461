import uuid as uuidlib

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
    uuid: uuidlib.UUID
    def __init__(self, uuid: uuidlib.UUID) -> None: ...

class AudioReceived:
    kind: int
    rate: int
    payload: bytes
    def __init__(self, kind: int, rate: int, payload: bytes) -> None: ...

class DtmfReceived:
    digit: str
    def __init__(self, digit: str) -> None: ...

class HangupReceived: ...

class ErrorReceived:
    payload: bytes
    def __init__(self, payload: bytes) -> None: ...

class ProtocolViolation:
    error: PeerProtocolError
    def __init__(self, error: PeerProtocolError) -> None: ...

class PeerClosed: ...

Event = (
    UuidReceived | AudioReceived | DtmfReceived | HangupReceived | ErrorReceived
    | ProtocolViolation | PeerClosed
)

class Parser:
    max_payload: int
    uuid: uuidlib.UUID | None
    finished: bool
    def __init__(self, max_payload: int = ...) -> None: ...
    def receive_data(self, data: Buffer) -> None: ...
    def receive_eof(self) -> None: ...
    def events_received(self) -> list[Event]: ...

def encode_audio(kind: int, pcm: Buffer) -> bytes: ...
def silence(kind: int, ms: int = 20) -> bytes: ...
