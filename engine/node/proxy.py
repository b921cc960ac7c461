"""PROXY protocol version 2 (HAProxy ``send-proxy-v2``), sans-I/O.

A trusted proxy opens each connection with one binary header, then the AudioSocket stream
follows, often in the same read::

    signature (12) | ver_cmd (1) | fam (1) | length: u16 big-endian | addresses | TLVs

The parser takes bytes in any chunking and judges each field as soon as its bytes are in: a
byte that breaks the signature fails at once, so a client that is not a proxy is closed on its
first byte. A v1 text header (``PROXY TCP4 ...``) is recognised on its first six bytes and named
in the error. The rules, in order:

1. the signature, byte by byte: :class:`~engine.errors.BadProxySignature`;
2. the version nibble must be 2: :class:`~engine.errors.BadProxyVersion`;
3. the command nibble must be 0 (LOCAL) or 1 (PROXY): :class:`~engine.errors.BadProxyCommand`;
4. for PROXY, the family/transport byte must be one v2 defines:
   :class:`~engine.errors.BadProxyFamily` (LOCAL ignores it, as the spec says);
5. the length must be at most ``max_length``: :class:`~engine.errors.ProxyHeaderTooLarge`;
6. for PROXY over INET, INET6 or UNIX, the length must hold the addresses:
   :class:`~engine.errors.BadProxyAddressLength`.

TLVs after the addresses are skipped unread. LOCAL (a proxy's own health check), UNSPEC and
UNIX carry no usable address: the header's addresses are None and the caller keeps the
socket's own.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Literal

from engine.errors import (
    BadProxyAddressLength,
    BadProxyCommand,
    BadProxyFamily,
    BadProxySignature,
    BadProxyVersion,
    ConfigError,
    ProxyHeaderTooLarge,
    ProxyProtocolError,
)

__all__ = [
    "DEFAULT_MAX_LENGTH",
    "SIGNATURE",
    "ProxyHeader",
    "ProxyParser",
    "build_v2",
    "looks_like_proxy",
]

SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
# Addresses plus TLVs: INET6 takes 36, UNIX 216; HAProxy's usual TLVs fit easily.
DEFAULT_MAX_LENGTH = 512

_V1 = b"PROXY "
_FIXED = 16
_MAX_LENGTH = 0xFFFF
_MIN_SNIFF = 6
_PREFIX_SHOWN = 16
_VERSION = 2
_COMMANDS: dict[int, Literal["local", "proxy"]] = {0: "local", 1: "proxy"}
_FAMILY_UNSPEC = 0x0
_FAMILY_INET = 0x1
_FAMILY_INET6 = 0x2
_FAMILY_UNIX = 0x3
_TRANSPORT_STREAM = 0x1
# The only family/transport bytes v2 defines; receivers must reject the rest.
_KNOWN_FAMILIES = frozenset((0x00, 0x11, 0x12, 0x21, 0x22, 0x31, 0x32))
# family -> (name, address size, size of one IP address or None for UNIX).
_ADDRESS_SIZES: dict[int, tuple[str, int, int | None]] = {
    _FAMILY_INET: ("INET", 12, 4),
    _FAMILY_INET6: ("INET6", 36, 16),
    _FAMILY_UNIX: ("UNIX", 216, None),
}

Address = tuple[str, int]


@dataclass(frozen=True, slots=True)
class ProxyHeader:
    """One parsed header: the client's and the proxy's addresses as the proxy saw them.

    ``source`` and ``destination`` are ``(host, port)``, or None for LOCAL, UNSPEC and UNIX:
    then the socket's own peer address is the one to use.
    """

    command: Literal["local", "proxy"]
    source: Address | None
    destination: Address | None


class ProxyParser:
    """Reads one PROXY v2 header off the start of a connection.

    Feed it with ``receive_data()`` until ``done``; then ``header`` is the header and
    ``remainder`` the bytes that followed it (the start of the AudioSocket stream), to hand
    to the AudioSocket parser unchanged. A bad header raises from ``receive_data()``; the
    parser then stays failed and raises the same error again if fed more.
    """

    def __init__(self, max_length: int = DEFAULT_MAX_LENGTH) -> None:
        """Starts before the first byte; ``max_length`` caps addresses plus TLVs.

        Raises:
            ConfigError: ``max_length`` is below UNIX's 216 bytes or above 65535.
        """
        if not _ADDRESS_SIZES[_FAMILY_UNIX][1] <= max_length <= _MAX_LENGTH:
            raise ConfigError(
                f"max_length must be {_ADDRESS_SIZES[_FAMILY_UNIX][1]}..{_MAX_LENGTH}, "
                f"not {max_length}"
            )
        self._max_length = max_length
        self._buf = bytearray()
        self._header: ProxyHeader | None = None
        self._remainder = b""
        self._error: ProxyProtocolError | None = None

    @property
    def done(self) -> bool:
        """True once a whole, valid header has been read."""
        return self._header is not None

    @property
    def header(self) -> ProxyHeader | None:
        """The header once ``done``, else None."""
        return self._header

    @property
    def remainder(self) -> bytes:
        """The bytes after the header (empty until ``done``); later input is appended."""
        return self._remainder

    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        """Parses more bytes from the connection; after ``done`` they join ``remainder``.

        Raises:
            ProxyProtocolError: the header is not a valid PROXY v2 header; close the
                connection. The subclass says which rule it broke.
        """
        if self._error is not None:
            raise self._error
        if self._header is not None:
            self._remainder += bytes(data)
            return
        self._buf += data
        try:
            self._parse()
        except ProxyProtocolError as error:
            self._error = error
            self._buf.clear()
            raise

    def _parse(self) -> None:
        buf = self._buf
        n = len(buf)
        self._check_signature(buf)
        if n <= len(SIGNATURE):
            return
        version, command = buf[12] >> 4, buf[12] & 0xF
        if version != _VERSION:
            raise BadProxyVersion(version)
        if command not in _COMMANDS:
            raise BadProxyCommand(command)
        if n < 14:
            return
        family = buf[13]
        if _COMMANDS[command] == "proxy" and family not in _KNOWN_FAMILIES:
            raise BadProxyFamily(family)
        if n < _FIXED:
            return
        length = int.from_bytes(buf[14:16], "big")
        if length > self._max_length:
            raise ProxyHeaderTooLarge(length, self._max_length)
        if _COMMANDS[command] == "local":
            family = _FAMILY_UNSPEC
        sizes = _ADDRESS_SIZES.get(family >> 4)
        if sizes is not None and length < sizes[1]:
            raise BadProxyAddressLength(sizes[0], length, sizes[1])
        end = _FIXED + length
        if n < end:
            return
        block = bytes(buf[_FIXED:end])
        source, destination = _addresses(family >> 4, block)
        self._header = ProxyHeader(_COMMANDS[command], source, destination)
        self._remainder = bytes(buf[end:])
        buf.clear()

    @staticmethod
    def _check_signature(buf: bytearray) -> None:
        seen = min(len(buf), len(SIGNATURE))
        if buf[:seen] == SIGNATURE[:seen]:
            return
        # A v1 header is named, not just refused: wait for its six bytes while they match.
        seen_v1 = min(len(buf), len(_V1))
        if buf[:seen_v1] == _V1[:seen_v1] and seen_v1 < len(_V1):
            return
        raise BadProxySignature(bytes(buf[:_PREFIX_SHOWN]))


def _addresses(family: int, block: bytes) -> tuple[Address | None, Address | None]:
    sizes = _ADDRESS_SIZES.get(family)
    if sizes is None or sizes[2] is None:
        return None, None
    ip = sizes[2]
    src = _ip(block[:ip])
    dst = _ip(block[ip : 2 * ip])
    sport = int.from_bytes(block[2 * ip : 2 * ip + 2], "big")
    dport = int.from_bytes(block[2 * ip + 2 : 2 * ip + 4], "big")
    return (src, sport), (dst, dport)


def _ip(packed: bytes) -> str:
    if len(packed) == 4:
        return str(ipaddress.IPv4Address(packed))
    return str(ipaddress.IPv6Address(packed))


def looks_like_proxy(data: bytes | bytearray | memoryview) -> bool:
    """True if ``data`` starts like a PROXY header: 6+ bytes of the v2 signature, or v1's.

    Used on a peer that is not a trusted proxy, to log that it sent a PROXY header (a proxy
    missing from the trusted list) rather than a bare protocol error.
    """
    head = bytes(data[: len(SIGNATURE)])
    if len(head) < _MIN_SNIFF:
        return False
    return SIGNATURE.startswith(head) or head.startswith(_V1)


def build_v2(
    command: Literal["local", "proxy"],
    source: Address | None,
    destination: Address | None,
    *,
    tlvs: bytes = b"",
) -> bytes:
    """One PROXY v2 header over TCP, as HAProxy sends it; ``tlvs`` are appended raw.

    LOCAL takes no addresses and is sent with family UNSPEC; PROXY takes two of one family,
    INET or INET6, chosen by the addresses.

    Raises:
        ValueError: an unknown command, addresses with LOCAL or missing with PROXY, hosts
            that are not IP addresses or not of one family, a port outside 0..65535, or a
            header too long for its length field.
    """
    if command == "local":
        if source is not None or destination is not None:
            raise ValueError("a LOCAL header carries no addresses")
        fam, block = _FAMILY_UNSPEC, b""
    elif command == "proxy":
        if source is None or destination is None:
            raise ValueError("a PROXY header needs a source and a destination")
        fam, block = _address_block(source, destination)
    else:
        raise ValueError(f"command must be 'local' or 'proxy', not {command!r}")
    length = len(block) + len(tlvs)
    if length > _MAX_LENGTH:
        raise ValueError(f"{length} bytes of addresses and TLVs do not fit a u16 length")
    ver_cmd = _VERSION << 4 | (0 if command == "local" else 1)
    fam_byte = fam << 4 | (_TRANSPORT_STREAM if fam else 0)
    return SIGNATURE + bytes((ver_cmd, fam_byte)) + length.to_bytes(2, "big") + block + tlvs


def _address_block(source: Address, destination: Address) -> tuple[int, bytes]:
    src = ipaddress.ip_address(source[0])
    dst = ipaddress.ip_address(destination[0])
    if src.version != dst.version:
        raise ValueError(f"source {src} and destination {dst} are not of one family")
    for port in (source[1], destination[1]):
        if not 0 <= port <= 0xFFFF:
            raise ValueError(f"port {port} is outside 0..65535")
    fam = _FAMILY_INET if src.version == 4 else _FAMILY_INET6
    ports = source[1].to_bytes(2, "big") + destination[1].to_bytes(2, "big")
    return fam, src.packed + dst.packed + ports
