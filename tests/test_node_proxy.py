"""PROXY v2 parser: whole, byte by byte and random chunkings, every error, the builder."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.errors import (
    BadProxyAddressLength,
    BadProxyCommand,
    BadProxyFamily,
    BadProxySignature,
    BadProxyVersion,
    ConfigError,
    PeerProtocolError,
    ProxyHeaderTooLarge,
    ProxyProtocolError,
)
from engine.node.proxy import (
    DEFAULT_MAX_LENGTH,
    SIGNATURE,
    ProxyHeader,
    ProxyParser,
    build_v2,
    looks_like_proxy,
)

# What Asterisk sends first: a UUID message, then 20 ms of 8 kHz audio.
AUDIOSOCKET = b"\x01\x00\x10" + bytes(range(16)) + b"\x10\x01\x40" + b"\x00" * 320
V4 = build_v2("proxy", ("192.0.2.10", 40000), ("198.51.100.1", 9092))
V6 = build_v2("proxy", ("2001:db8::7", 5060), ("2001:db8::1", 9092))
LOCAL = build_v2("local", None, None)
# PP2_TYPE_ALPN "h2", PP2_TYPE_UNIQUE_ID 4 bytes, and a NOOP of 3 bytes.
TLVS = b"\x01\x00\x02h2" + b"\x05\x00\x04abcd" + b"\x04\x00\x03\x00\x00\x00"
V4_TLVS = build_v2("proxy", ("10.9.8.7", 1), ("10.0.0.1", 2), tlvs=TLVS)


def raw(ver_cmd: int, fam: int, block: bytes, length: int | None = None) -> bytes:
    n = len(block) if length is None else length
    return SIGNATURE + bytes((ver_cmd, fam)) + n.to_bytes(2, "big") + block


def feed(chunks: list[bytes]) -> ProxyParser:
    parser = ProxyParser()
    for chunk in chunks:
        parser.receive_data(chunk)
    return parser


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    bounds = [0, *points, len(data)]
    return [data[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]


def test_v4_whole_with_trailing_audiosocket() -> None:
    parser = feed([V4 + AUDIOSOCKET])
    assert parser.done
    assert parser.header == ProxyHeader("proxy", ("192.0.2.10", 40000), ("198.51.100.1", 9092))
    assert parser.remainder == AUDIOSOCKET


def test_v4_bytes_on_the_wire() -> None:
    assert V4 == (
        SIGNATURE
        + b"\x21\x11\x00\x0c"
        + bytes((192, 0, 2, 10, 198, 51, 100, 1))
        + (40000).to_bytes(2, "big")
        + (9092).to_bytes(2, "big")
    )


def test_v6() -> None:
    parser = feed([V6])
    assert parser.header == ProxyHeader("proxy", ("2001:db8::7", 5060), ("2001:db8::1", 9092))
    assert parser.remainder == b""
    assert V6[13] == 0x21 and len(V6) == 16 + 36


def test_local_has_no_addresses() -> None:
    parser = feed([LOCAL + AUDIOSOCKET])
    assert parser.header == ProxyHeader("local", None, None)
    assert parser.remainder == AUDIOSOCKET


def test_local_skips_its_block_and_ignores_its_family() -> None:
    # LOCAL with an INET block (as some proxies send) and with a family v2 does not define.
    for fam in (0x11, 0xF7):
        parser = feed([raw(0x20, fam, bytes(12) + TLVS) + AUDIOSOCKET])
        assert parser.header == ProxyHeader("local", None, None)
        assert parser.remainder == AUDIOSOCKET


@pytest.mark.parametrize("fam, block", [(0x00, b""), (0x00, b"junk"), (0x31, bytes(216))])
def test_unspec_and_unix_have_no_addresses(fam: int, block: bytes) -> None:
    parser = feed([raw(0x21, fam, block) + AUDIOSOCKET])
    assert parser.header == ProxyHeader("proxy", None, None)
    assert parser.remainder == AUDIOSOCKET


def test_dgram_is_accepted() -> None:
    parser = feed([raw(0x21, 0x12, bytes((10, 0, 0, 1, 10, 0, 0, 2, 0, 1, 0, 2)))])
    assert parser.header == ProxyHeader("proxy", ("10.0.0.1", 1), ("10.0.0.2", 2))


@pytest.mark.parametrize("header", [V4, V6])
def test_tlvs_are_skipped(header: bytes) -> None:
    with_tlvs = build_v2("proxy", *_addresses(header), tlvs=TLVS)
    assert len(with_tlvs) == len(header) + len(TLVS)
    parser = feed([with_tlvs + AUDIOSOCKET])
    assert parser.header == feed([header]).header
    assert parser.remainder == AUDIOSOCKET


def _addresses(header: bytes) -> tuple[tuple[str, int], tuple[str, int]]:
    parsed = feed([header]).header
    assert parsed is not None and parsed.source is not None and parsed.destination is not None
    return parsed.source, parsed.destination


@pytest.mark.parametrize("header", [V4, V6, LOCAL])
def test_byte_by_byte(header: bytes) -> None:
    parser = ProxyParser()
    for i in range(len(header)):
        assert not parser.done
        assert parser.header is None and parser.remainder == b""
        parser.receive_data(header[i : i + 1])
    assert parser.done
    assert parser.header == feed([header]).header
    assert parser.remainder == b""
    parser.receive_data(AUDIOSOCKET[:5])
    parser.receive_data(memoryview(AUDIOSOCKET[5:]))
    assert parser.remainder == AUDIOSOCKET


@given(
    st.sampled_from([V4, V6, LOCAL, V4_TLVS]),
    st.binary(max_size=64),
    st.lists(st.integers(min_value=0), max_size=12),
)
def test_any_chunking_equals_one_shot(header: bytes, trailing: bytes, cuts: list[int]) -> None:
    data = header + AUDIOSOCKET + trailing
    whole = feed([data])
    chunked = feed(split(data, cuts))
    assert chunked.done
    assert chunked.header == whole.header
    assert chunked.remainder == whole.remainder == AUDIOSOCKET + trailing


@given(
    st.one_of(
        st.tuples(st.ip_addresses(v=4), st.ip_addresses(v=4)),
        st.tuples(st.ip_addresses(v=6), st.ip_addresses(v=6)),
    ),
    st.integers(0, 65535),
    st.integers(0, 65535),
    st.binary(max_size=40),
    st.lists(st.integers(min_value=0), max_size=6),
)
def test_round_trip(
    ips: tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, ...],
    sport: int,
    dport: int,
    tlvs: bytes,
    cuts: list[int],
) -> None:
    source, destination = (str(ips[0]), sport), (str(ips[1]), dport)
    data = build_v2("proxy", source, destination, tlvs=tlvs)
    parser = feed(split(data + AUDIOSOCKET, cuts))
    assert parser.header == ProxyHeader("proxy", source, destination)
    assert parser.remainder == AUDIOSOCKET


def test_errors_are_peer_protocol_errors() -> None:
    for cls in (
        BadProxySignature,
        BadProxyVersion,
        BadProxyCommand,
        BadProxyFamily,
        ProxyHeaderTooLarge,
        BadProxyAddressLength,
    ):
        assert issubclass(cls, ProxyProtocolError)
    assert issubclass(ProxyProtocolError, PeerProtocolError)


def test_audiosocket_client_is_rejected_on_its_first_byte() -> None:
    parser = ProxyParser()
    with pytest.raises(BadProxySignature) as info:
        parser.receive_data(AUDIOSOCKET[:1])
    assert info.value.prefix == b"\x01"
    assert not info.value.v1
    assert "expected a PROXY v2 header from a trusted proxy, got bytes 0x01" in str(info.value)


def test_signature_broken_late_is_rejected_at_that_byte() -> None:
    parser = ProxyParser()
    parser.receive_data(SIGNATURE[:7])
    with pytest.raises(BadProxySignature) as info:
        parser.receive_data(b"X")
    assert info.value.prefix == SIGNATURE[:7] + b"X"


def test_signature_error_shows_at_most_16_bytes() -> None:
    with pytest.raises(BadProxySignature) as info:
        feed([AUDIOSOCKET])
    assert info.value.prefix == AUDIOSOCKET[:16]
    assert f"0x{AUDIOSOCKET[:16].hex()}" in str(info.value)


def test_v1_header_is_named() -> None:
    parser = ProxyParser()
    for byte in b"PROXY"[:5]:
        parser.receive_data(bytes((byte,)))
    with pytest.raises(BadProxySignature) as info:
        parser.receive_data(b" ")
    assert info.value.v1
    assert "v1 is not supported" in str(info.value)
    assert "send-proxy-v2" in str(info.value)
    with pytest.raises(BadProxySignature) as whole:
        feed([b"PROXY TCP4 192.0.2.1 192.0.2.2 5000 9092\r\n" + AUDIOSOCKET])
    assert whole.value.v1


def test_text_that_is_not_v1_is_a_plain_signature_error() -> None:
    with pytest.raises(BadProxySignature) as info:
        feed([b"PROXZ"])
    assert not info.value.v1
    assert info.value.prefix == b"PROXZ"


@pytest.mark.parametrize("version", [0, 1, 3, 15])
def test_bad_version_on_byte_13(version: int) -> None:
    parser = feed([SIGNATURE])
    with pytest.raises(BadProxyVersion) as info:
        parser.receive_data(bytes((version << 4 | 1,)))
    assert info.value.version == version
    assert str(version) in str(info.value)


@pytest.mark.parametrize("command", [2, 7, 15])
def test_bad_command_on_byte_13(command: int) -> None:
    parser = feed([SIGNATURE])
    with pytest.raises(BadProxyCommand) as info:
        parser.receive_data(bytes((0x20 | command,)))
    assert info.value.command == command


@pytest.mark.parametrize("fam", [0x01, 0x10, 0x13, 0x20, 0x41, 0xFF])
def test_bad_family_on_byte_14(fam: int) -> None:
    parser = feed([SIGNATURE + b"\x21"])
    with pytest.raises(BadProxyFamily) as info:
        parser.receive_data(bytes((fam,)))
    assert info.value.family == fam
    assert f"0x{fam:02x}" in str(info.value)


def test_too_large_on_byte_16() -> None:
    parser = feed([SIGNATURE + b"\x21\x11\x02"])
    with pytest.raises(ProxyHeaderTooLarge) as info:
        parser.receive_data(b"\x01")
    assert (info.value.length, info.value.limit) == (0x201, DEFAULT_MAX_LENGTH)
    feed([raw(0x21, 0x11, bytes(12), length=DEFAULT_MAX_LENGTH)])


def test_max_length_is_configurable() -> None:
    parser = ProxyParser(max_length=216)
    with pytest.raises(ProxyHeaderTooLarge) as info:
        parser.receive_data(V4[:14] + (217).to_bytes(2, "big"))
    assert info.value.limit == 216
    for bad in (215, 65536):
        with pytest.raises(ConfigError):
            ProxyParser(max_length=bad)


@pytest.mark.parametrize(
    "fam, length, family, needed",
    [
        (0x11, 11, "INET", 12),
        (0x21, 35, "INET6", 36),
        (0x31, 215, "UNIX", 216),
        (0x11, 0, "INET", 12),
    ],
)
def test_address_too_short(fam: int, length: int, family: str, needed: int) -> None:
    # Judged on the length field: the block itself never has to arrive.
    with pytest.raises(BadProxyAddressLength) as info:
        feed([raw(0x21, fam, b"", length=length)])
    assert (info.value.family, info.value.length, info.value.needed) == (family, length, needed)


def test_failed_parser_stays_failed() -> None:
    parser = ProxyParser()
    with pytest.raises(BadProxySignature) as first:
        parser.receive_data(b"\x01")
    with pytest.raises(BadProxySignature) as again:
        parser.receive_data(V4)
    assert again.value is first.value
    assert not parser.done and parser.header is None


def test_incomplete_header_is_not_done() -> None:
    parser = feed([V6[:-1]])
    assert not parser.done and parser.header is None and parser.remainder == b""


def test_looks_like_proxy() -> None:
    assert looks_like_proxy(V4)
    assert looks_like_proxy(V4 + AUDIOSOCKET)
    assert looks_like_proxy(SIGNATURE[:6])
    assert looks_like_proxy(bytearray(SIGNATURE[:9]))
    assert looks_like_proxy(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n")
    assert not looks_like_proxy(SIGNATURE[:5])
    assert not looks_like_proxy(b"PROXY")
    assert not looks_like_proxy(b"")
    assert not looks_like_proxy(AUDIOSOCKET)
    assert not looks_like_proxy(SIGNATURE[:8] + b"quit\n")
    assert not looks_like_proxy(b"GET / HTTP/1.1\r\n")


def test_build_v2_refuses_what_it_cannot_send() -> None:
    v4, v6 = ("10.0.0.1", 1), ("::1", 2)
    with pytest.raises(ValueError, match="one family"):
        build_v2("proxy", v4, v6)
    with pytest.raises(ValueError, match="no addresses"):
        build_v2("local", v4, v4)
    with pytest.raises(ValueError, match="needs a source"):
        build_v2("proxy", v4, None)
    with pytest.raises(ValueError, match="port"):
        build_v2("proxy", ("10.0.0.1", 65536), v4)
    with pytest.raises(ValueError, match="command"):
        build_v2("PROXY", v4, v4)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        build_v2("proxy", ("example.com", 1), v4)
    with pytest.raises(ValueError, match="u16"):
        build_v2("proxy", v4, v4, tlvs=bytes(65535))
