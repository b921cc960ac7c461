"""Every error the engine raises or reports, as one tree.

::

    EngineError
    ├── PeerProtocolError          the caller's side broke the AudioSocket protocol
    │   ├── UnknownKind(kind)
    │   ├── BadAudioLength(kind, length)          0 or odd
    │   ├── FrameTooLarge(kind, size, limit)
    │   ├── FirstMessageNotUuid(kind)
    │   ├── DuplicateUuid()
    │   ├── MalformedUuid(length)
    │   ├── MalformedDtmf(payload)
    │   ├── MalformedHangup(length)
    │   ├── TruncatedMessage(kind, expected, received)   EOF inside a message
    │   ├── KindChanged(first, kind)              audio of another rate mid-call
    │   └── ProxyProtocolError     a trusted proxy's PROXY v2 header is not one we accept
    │       ├── BadProxySignature(prefix)         not the v2 signature (a v1 text header named)
    │       ├── BadProxyVersion(version)          the version nibble is not 2
    │       ├── BadProxyCommand(command)          neither LOCAL (0) nor PROXY (1)
    │       ├── BadProxyFamily(family)            a family/transport byte v2 does not define
    │       ├── ProxyHeaderTooLarge(length, limit)
    │       ├── BadProxyAddressLength(family, length, needed)   too short for its addresses
    │       └── UntrustedProxyHeader(peer)        a PROXY header from a peer not trusted
    ├── LocalProtocolError         we were about to send something Asterisk rejects
    │   └── BadOutgoingAudio(kind, length, reason)
    ├── MediaError                 audio the media core cannot take
    │   ├── UnsupportedRate(rate, reason)
    │   ├── BadSampleData(length)                 not whole int16 samples
    │   ├── StreamFinished()                      input after the last chunk, without reset()
    │   ├── ClockFailed(cause)                    the clock's write or read for a call raised
    │   └── BadWav(path, reason)                  a WAV file the test caller cannot use
    ├── UpstreamError              the Realtime side failed
    │   ├── UpstreamRefused(reason)               no connection: refused, timeout
    │   ├── UpstreamUnresolved(host, reason)      DNS: retried only when temporary
    │   ├── UpstreamAuthFailed(status)            401 or 403: retrying will not help
    │   ├── UpstreamTlsFailed(reason)             certificate refused or TLS failed: not retried
    │   ├── UpstreamRateLimited(retry_after)      429
    │   ├── UpstreamRejected(status)              any other handshake answer
    │   ├── UpstreamClosed(code, reason)          the connection closed under a live call
    │   ├── UpstreamStalled(what, amount)         send queue over its bound, or no pong
    │   └── UpstreamBadEvent(reason)              a message we cannot decode
    ├── AdmissionError             the node-wide call counts are unusable or misused
    │   ├── CountsFileError(path, reason)         missing, or not a counts file we made
    │   ├── SlotOutOfRange(slot, slots)
    │   ├── NotAttached()                         admit/release on the supervisor's view
    │   ├── OverRelease(source, slot)             more calls released than admitted
    │   ├── BadSourceAddress(address)             not an IPv4 or IPv6 address
    │   └── SourceNotAllowed(address)             a caller outside ALLOW_SOURCES
    ├── ManagerError               the Asterisk manager (AMI) connection or an action failed
    │   ├── ManagerUnavailable(host, port, reason)   no connection (refused, timeout, closed)
    │   │   └── ManagerConnectionLost(host, port, action, reason)   dropped before the answer
    │   ├── ManagerAuthFailed(user, reason)       Login answered Response: Error
    │   ├── ManagerActionFailed(action, message)  an action answered Response: Error
    │   ├── ManagerTimeout(action, seconds)       no answer in time (the connection stays)
    │   ├── ManagerBadAction(action, key, reason) we were about to send what AMI cannot carry
    │   └── ManagerProtocolError(reason)          Asterisk's side broke the AMI wire format
    │       ├── ManagerLineTooLong(limit)            a line longer than the bound
    │       └── ManagerMessageTooLarge(limit)        a message longer than the bound
    ├── ConfigError                configuration is invalid
    ├── NodeError                  the node cannot start or keep running
    │   ├── AddressInUse(what, host, port, by_node)   another node or program holds it
    │   ├── WorkerBootFailed(slot, status)           a worker exited before it listened
    │   └── ControlChannelError(reason)              a broken supervisor/worker line
    ├── RecordsError               call records or recordings cannot be kept
    │   ├── RecordsUnavailable(target, reason)    the database cannot be reached or written
    │   └── RecordsSchemaTooNew(found, known)     a newer engine has migrated the database
    ├── NativeExtensionMissing     the compiled media core is not built
    ├── ProcStatError(text, reason)  a /proc/PID/stat line the load generator cannot parse
    └── BenchError                 a bench run cannot start or place any call

Exceptions carry their fields and build their own message; none ever holds a secret.
"""

from __future__ import annotations

__all__ = [
    "AdmissionError",
    "BadAudioLength",
    "BadOutgoingAudio",
    "BadProxyAddressLength",
    "BadProxyCommand",
    "BadProxyFamily",
    "BadProxySignature",
    "BadProxyVersion",
    "BadSampleData",
    "AddressInUse",
    "BadSourceAddress",
    "BadWav",
    "ClockFailed",
    "BenchError",
    "ConfigError",
    "ControlChannelError",
    "CountsFileError",
    "DuplicateUuid",
    "EngineError",
    "FirstMessageNotUuid",
    "FrameTooLarge",
    "KindChanged",
    "LocalProtocolError",
    "MalformedDtmf",
    "MalformedHangup",
    "MalformedUuid",
    "ManagerActionFailed",
    "ManagerAuthFailed",
    "ManagerBadAction",
    "ManagerConnectionLost",
    "ManagerError",
    "ManagerLineTooLong",
    "ManagerMessageTooLarge",
    "ManagerProtocolError",
    "ManagerTimeout",
    "ManagerUnavailable",
    "MediaError",
    "NativeExtensionMissing",
    "NodeError",
    "NotAttached",
    "OverRelease",
    "PeerProtocolError",
    "ProcStatError",
    "ProxyHeaderTooLarge",
    "ProxyProtocolError",
    "RecordsError",
    "RecordsSchemaTooNew",
    "RecordsUnavailable",
    "SlotOutOfRange",
    "SourceNotAllowed",
    "StreamFinished",
    "TruncatedMessage",
    "UnknownKind",
    "UnsupportedRate",
    "UntrustedProxyHeader",
    "UpstreamAuthFailed",
    "UpstreamBadEvent",
    "UpstreamClosed",
    "UpstreamError",
    "UpstreamRateLimited",
    "UpstreamRefused",
    "UpstreamRejected",
    "UpstreamStalled",
    "UpstreamTlsFailed",
    "UpstreamUnresolved",
    "WorkerBootFailed",
]


class EngineError(Exception):
    """Root of every error the engine defines."""


class PeerProtocolError(EngineError):
    """The peer (Asterisk or whoever connected) broke the AudioSocket protocol."""


class UnknownKind(PeerProtocolError):
    def __init__(self, kind: int) -> None:
        self.kind = kind
        super().__init__(f"unknown AudioSocket message kind 0x{kind:02x}{_first_byte_hint(kind)}")


class BadAudioLength(PeerProtocolError):
    def __init__(self, kind: int, length: int) -> None:
        self.kind = kind
        self.length = length
        why = "empty" if length == 0 else "odd (not whole 16-bit samples)"
        super().__init__(f"audio message kind 0x{kind:02x} has length {length}: {why}")


class FrameTooLarge(PeerProtocolError):
    def __init__(self, kind: int, size: int, limit: int) -> None:
        self.kind = kind
        self.size = size
        self.limit = limit
        super().__init__(
            f"AudioSocket message kind 0x{kind:02x} of {size} bytes exceeds the limit of {limit}"
        )


class FirstMessageNotUuid(PeerProtocolError):
    """The first byte says what connected, often enough to name it in the log."""

    def __init__(self, kind: int) -> None:
        self.kind = kind
        super().__init__(f"first AudioSocket message must be a UUID (0x01), got kind "
                         f"0x{kind:02x}{_first_byte_hint(kind)}")


def _first_byte_hint(kind: int) -> str:
    if kind == 0x16:
        return (" (a TLS handshake: AudioSocket is plain TCP; is a TLS client or a TLS health "
                "check pointed at this port?)")
    if chr(kind) in "CDGHOPT":  # the first letters of the HTTP methods
        return (f" ({chr(kind)!r}: text, likely an HTTP request; is a web client or an HTTP "
                "health check pointed at the AudioSocket port instead of HEALTH_PORT?)")
    return ""


class DuplicateUuid(PeerProtocolError):
    def __init__(self) -> None:
        super().__init__("a second UUID message arrived on the same connection")


class MalformedUuid(PeerProtocolError):
    def __init__(self, length: int) -> None:
        self.length = length
        super().__init__(f"UUID message has {length} bytes, expected 16")


class MalformedDtmf(PeerProtocolError):
    def __init__(self, payload: bytes) -> None:
        self.payload = payload
        super().__init__(
            f"DTMF message payload {payload[:8]!r} is not one of the digits 0-9 * # A-D"
        )


class MalformedHangup(PeerProtocolError):
    def __init__(self, length: int) -> None:
        self.length = length
        super().__init__(f"hangup message carries {length} payload bytes, expected none")


class TruncatedMessage(PeerProtocolError):
    def __init__(self, kind: int | None, expected: int, received: int) -> None:
        self.kind = kind
        self.expected = expected
        self.received = received
        what = "header" if kind is None else f"kind 0x{kind:02x} message"
        super().__init__(
            f"connection closed inside an AudioSocket {what}: {received} of {expected} bytes"
        )


class KindChanged(PeerProtocolError):
    def __init__(self, first: int, kind: int) -> None:
        self.first = first
        self.kind = kind
        super().__init__(
            f"audio kind changed mid-call from 0x{first:02x} to 0x{kind:02x}; "
            "a call keeps the rate of its first audio"
        )


class ProxyProtocolError(PeerProtocolError):
    """A trusted proxy's PROXY v2 header is malformed or not one we accept."""


_PROXY_V1 = b"PROXY "


class BadProxySignature(ProxyProtocolError):
    def __init__(self, prefix: bytes) -> None:
        self.prefix = prefix
        if prefix.startswith(_PROXY_V1):
            message = (
                "got a PROXY v1 text header from a trusted proxy; v1 is not supported: "
                "use send-proxy-v2 on the HAProxy server line"
            )
        else:
            message = (
                "expected a PROXY v2 header from a trusted proxy, got bytes "
                f"0x{prefix.hex()}"
            )
        super().__init__(message)

    @property
    def v1(self) -> bool:
        """True when the peer sent a PROXY v1 text header instead."""
        return self.prefix.startswith(_PROXY_V1)


class BadProxyVersion(ProxyProtocolError):
    def __init__(self, version: int) -> None:
        self.version = version
        super().__init__(f"PROXY header has version {version}, only version 2 is supported")


class BadProxyCommand(ProxyProtocolError):
    def __init__(self, command: int) -> None:
        self.command = command
        super().__init__(
            f"PROXY v2 header has command {command}, expected 0 (LOCAL) or 1 (PROXY)"
        )


class BadProxyFamily(ProxyProtocolError):
    """``family`` is the whole byte: address family (high nibble) and transport (low)."""

    def __init__(self, family: int) -> None:
        self.family = family
        super().__init__(
            f"PROXY v2 header has family/transport byte 0x{family:02x} (family "
            f"{family >> 4}, transport {family & 0xF}), which version 2 does not define"
        )


class ProxyHeaderTooLarge(ProxyProtocolError):
    def __init__(self, length: int, limit: int) -> None:
        self.length = length
        self.limit = limit
        super().__init__(
            f"PROXY v2 header announces {length} bytes of addresses and TLVs, "
            f"over the limit of {limit}"
        )


class BadProxyAddressLength(ProxyProtocolError):
    def __init__(self, family: str, length: int, needed: int) -> None:
        self.family = family
        self.length = length
        self.needed = needed
        super().__init__(
            f"PROXY v2 header for {family} carries {length} bytes of addresses and TLVs; "
            f"{family} addresses alone need {needed}"
        )


class LocalProtocolError(EngineError):
    """The engine was about to send something the peer would reject."""


class BadOutgoingAudio(LocalProtocolError):
    def __init__(self, kind: int, length: int, reason: str) -> None:
        self.kind = kind
        self.length = length
        self.reason = reason
        super().__init__(f"cannot send audio kind 0x{kind:02x} of {length} bytes: {reason}")


class MediaError(EngineError):
    """Audio the media core cannot process."""


class UnsupportedRate(MediaError):
    def __init__(self, rate: int, reason: str) -> None:
        self.rate = rate
        self.reason = reason
        super().__init__(f"sample rate {rate} Hz is not supported: {reason}")


class BadSampleData(MediaError):
    def __init__(self, length: int) -> None:
        self.length = length
        super().__init__(f"{length} bytes is not a whole number of 16-bit samples")


class StreamFinished(MediaError):
    def __init__(self) -> None:
        super().__init__("the stream was already finished with last=True; call reset() first")


class ClockFailed(MediaError):
    """The worker clock could not serve a call (a write or read of its raised)."""

    def __init__(self, cause: BaseException) -> None:
        self.cause = cause
        super().__init__(f"the clock could not serve the call: {type(cause).__name__}: {cause}")


class BadWav(MediaError):
    """A WAV file the caller cannot use: not 16-bit PCM, or not a WAV at all."""

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"{path}: {reason}")


class UpstreamError(EngineError):
    """The Realtime upstream refused, failed or stalled."""


class UpstreamRefused(UpstreamError):
    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(f"could not connect to the Realtime upstream: {reason}")


class UpstreamUnresolved(UpstreamError):
    """The upstream's host name did not resolve; ``temporary`` when the resolver said to try
    again (EAI_AGAIN), not that the name does not exist."""

    def __init__(self, host: str, reason: str, *, temporary: bool) -> None:
        self.host = host
        self.reason = reason
        self.temporary = temporary
        super().__init__(f"could not resolve the Realtime upstream's host {host!r}: {reason}; "
                         "check UPSTREAM_URL and this machine's DNS")


class UpstreamAuthFailed(UpstreamError):
    def __init__(self, status: int) -> None:
        self.status = status
        super().__init__(
            f"the Realtime upstream refused our credentials (HTTP {status}); check the API key"
        )


class UpstreamTlsFailed(UpstreamError):
    """TLS with the upstream failed (its certificate was not trusted, say): retrying the same
    handshake would fail the same way."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(f"TLS with the Realtime upstream failed: {reason}; check "
                         "UPSTREAM_CA_FILE and the upstream's certificate")


class UpstreamRateLimited(UpstreamError):
    def __init__(self, retry_after: float | None) -> None:
        self.retry_after = retry_after
        after = "" if retry_after is None else f", retry after {retry_after:g} s"
        super().__init__(f"the Realtime upstream is rate limiting us (HTTP 429{after})")


class UpstreamRejected(UpstreamError):
    def __init__(self, status: int) -> None:
        self.status = status
        super().__init__(f"the Realtime upstream answered the handshake with HTTP {status}")


class UpstreamClosed(UpstreamError):
    def __init__(self, code: int | None, reason: str) -> None:
        self.code = code
        self.reason = reason
        what = "without a close frame" if code is None else f"with code {code}"
        why = f": {reason}" if reason else ""
        super().__init__(f"the Realtime upstream closed the connection {what}{why}")


class UpstreamStalled(UpstreamError):
    def __init__(self, what: str, amount: float) -> None:
        self.what = what
        self.amount = amount
        super().__init__(f"the Realtime upstream stalled: {what} ({amount:g})")


class UpstreamBadEvent(UpstreamError):
    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(f"the Realtime upstream sent an event we cannot decode: {reason}")


class AdmissionError(EngineError):
    """The node-wide call counts cannot be used, or were used wrongly."""


class CountsFileError(AdmissionError):
    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"node call-counts file {path}: {reason}")


class SlotOutOfRange(AdmissionError):
    def __init__(self, slot: int, slots: int) -> None:
        self.slot = slot
        self.slots = slots
        super().__init__(
            f"worker slot {slot} is out of range: the counts file has slots 0..{slots - 1}"
        )


class NotAttached(AdmissionError):
    def __init__(self) -> None:
        super().__init__(
            "these node counts belong to no worker slot (the supervisor's view); "
            "a worker admits and releases through NodeCounts.attach(path, slot)"
        )


class OverRelease(AdmissionError):
    def __init__(self, source: str, slot: int) -> None:
        self.source = source
        self.slot = slot
        super().__init__(
            f"worker slot {slot} released a call from {source} that it had not admitted"
        )


class BadSourceAddress(AdmissionError):
    def __init__(self, address: str) -> None:
        self.address = address
        super().__init__(f"{address!r} is not an IPv4 or IPv6 address")


class ConfigError(EngineError):
    """The configuration is invalid; the message lists what and why."""


class NodeError(EngineError):
    """The node cannot start, or cannot keep its workers running."""


class AddressInUse(NodeError):
    def __init__(self, what: str, host: str, port: int, by_node: bool) -> None:
        self.what = what
        self.host = host
        self.port = port
        self.by_node = by_node
        holder = "another voice-engine node" if by_node else "another program"
        flag = {"AudioSocket": "--listen-port", "health": "--health-port",
                "agent-check": "--agent-port"}.get(what, "--listen-port")
        super().__init__(
            f"the {what} address {host}:{port} is already in use by {holder}; stop it, or give "
            f"this node another port ({flag} or {flag[2:].upper().replace('-', '_')})"
        )


class WorkerBootFailed(NodeError):
    def __init__(self, slot: int, status: int | None) -> None:
        self.slot = slot
        self.status = status
        how = "did not report in time" if status is None else f"exited with status {status}"
        super().__init__(
            f"worker {slot} {how} before it was listening; its log lines above say why"
        )


class ControlChannelError(NodeError):
    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(f"supervisor/worker channel: {reason}")


class RecordsError(EngineError):
    """Call records or recordings cannot be kept (calls go on without them)."""


class RecordsUnavailable(RecordsError):
    def __init__(self, target: str, reason: str) -> None:
        self.target = target
        self.reason = reason
        super().__init__(f"call records at {target}: {reason}")


class RecordsSchemaTooNew(RecordsError):
    def __init__(self, found: int, known: int) -> None:
        self.found = found
        self.known = known
        super().__init__(f"the records database is at schema version {found}, this engine "
                         f"knows up to {known}: upgrade the engine, or point RECORDS_URL "
                         "elsewhere")


class NativeExtensionMissing(EngineError):
    def __init__(self, module: str, cause: str) -> None:
        self.module = module
        self.cause = cause
        super().__init__(
            f"the native media core module engine._native.{module} is not built ({cause}). "
            "Build it with `pip install .` (or `pip install -e .` in a checkout; both need gcc "
            "and the Python headers), or set VOICE_ENGINE_IMPL=python to run the slow "
            "plain-Python twins on purpose."
        )


class ProcStatError(EngineError):
    def __init__(self, text: str, reason: str) -> None:
        self.text = text
        self.reason = reason
        super().__init__(f"malformed /proc/PID/stat line {text[:80]!r}: {reason}")


class BenchError(EngineError):
    """A bench run cannot go on: its engine did not start, or no call could be placed."""


class UntrustedProxyHeader(ProxyProtocolError):
    def __init__(self, peer: str) -> None:
        self.peer = peer
        super().__init__(
            f"{peer} sent a PROXY protocol header but is not in TRUSTED_PROXIES: its claimed "
            "source cannot be believed (add the proxy's address to TRUSTED_PROXIES)"
        )


class SourceNotAllowed(AdmissionError):
    def __init__(self, address: str) -> None:
        self.address = address
        super().__init__(f"calls from {address or '(unknown)'} are not allowed by ALLOW_SOURCES")


class ManagerError(EngineError):
    """The Asterisk manager (AMI) could not be reached, or an action did not succeed."""


class ManagerUnavailable(ManagerError):
    def __init__(self, host: str, port: int, reason: str) -> None:
        self.host = host
        self.port = port
        self.reason = reason
        super().__init__(
            f"the Asterisk manager at {_host_port(host, port)} is unavailable: {reason}"
        )


class ManagerConnectionLost(ManagerUnavailable):
    """The connection dropped after ``action`` was sent: Asterisk may or may not have run it."""

    def __init__(self, host: str, port: int, action: str, reason: str) -> None:
        self.action = action
        super().__init__(host, port, f"the connection was lost before {action} was answered "
                                     f"(it may or may not have run): {reason}")


class ManagerAuthFailed(ManagerError):
    def __init__(self, user: str, reason: str) -> None:
        self.user = user
        self.reason = reason
        super().__init__(f"the Asterisk manager refused the login of user {user!r} ({reason}); "
                         "check the user, its secret, and its deny/permit in manager.conf")


class ManagerActionFailed(ManagerError):
    def __init__(self, action: str, message: str) -> None:
        self.action = action
        self.message = message
        super().__init__(f"the Asterisk manager answered {action} with an error: "
                         f"{message or '(no message)'}")


class ManagerTimeout(ManagerError):
    def __init__(self, action: str, seconds: float) -> None:
        self.action = action
        self.seconds = seconds
        super().__init__(f"the Asterisk manager did not answer {action} within {seconds:g} s")


class ManagerBadAction(ManagerError):
    """An action we were about to send that AMI cannot carry; the value is never shown."""

    def __init__(self, action: str, key: str, reason: str) -> None:
        self.action = action
        self.key = key
        self.reason = reason
        where = f"{action} {key}" if key else action
        super().__init__(f"cannot send the manager action {where}: {reason}")


class ManagerProtocolError(ManagerError):
    """What Asterisk's side sent is not the AMI wire format (or breaks our bounds)."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(f"the Asterisk manager broke the AMI protocol: {reason}")


class ManagerLineTooLong(ManagerProtocolError):
    def __init__(self, limit: int) -> None:
        self.limit = limit
        super().__init__(f"a line longer than {limit} bytes")


class ManagerMessageTooLarge(ManagerProtocolError):
    def __init__(self, limit: int) -> None:
        self.limit = limit
        super().__init__(f"a message longer than {limit} bytes (line ends not counted)")


def _host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
