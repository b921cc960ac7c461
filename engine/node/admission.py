"""Who may place a call on this node, and how many: the source policy and node-wide counts.

:class:`SourcePolicy` answers, once per connection, whether a peer is a trusted proxy (whose
PROXY v2 header names the real caller) and whether a caller's address may place calls.

:class:`NodeCounts` keeps the node's calls in one file that every worker maps. The supervisor
creates it; each worker attaches to its own slot. Invariants:

- a worker writes only its own slot: its call count and its table of (source, count) entries;
- every check-and-increment and every decrement runs under ``flock(LOCK_EX)`` on the file, so
  two workers never both take the last free call;
- a slot's call count is the sum of its table's counts while the per-source cap is on; with
  the cap off no source is recorded at all;
- a table entry with count 0 is free, whatever address it still holds.

Sources are stored as 16 bytes, IPv4 as IPv4-mapped IPv6, so ``10.1.2.3`` and
``::ffff:10.1.2.3`` are one source. flock locks belong to an open file, which a forked child
shares with its parent: a worker must ``attach()`` after fork, never use its parent's object.
"""

from __future__ import annotations

import fcntl
import ipaddress
import mmap
import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from engine.errors import (
    BadSourceAddress,
    ConfigError,
    CountsFileError,
    NotAttached,
    OverRelease,
    SlotOutOfRange,
)

__all__ = [
    "NODE_FULL",
    "SOURCE_CAP",
    "SOURCE_TABLE_FULL",
    "NodeCounts",
    "SourcePolicy",
]

NODE_FULL = "node_full"
SOURCE_CAP = "source_cap"
SOURCE_TABLE_FULL = "source_table_full"

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")
_MAPPED_PREFIX = _MAPPED.network_address.packed[:12]

_MAGIC = b"VENODE01"
_HEADER = np.dtype([("magic", "S8"), ("slots", "<u4"), ("entries", "<u4")])
_ALIGN = 64  # one cache line: a slot's count never shares a line with another slot's
_ENTRY = np.dtype([("addr", "S16"), ("count", "<i8")])


def _parse(address: str) -> IPAddress:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        raise BadSourceAddress(address) from None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def _key(address: str) -> bytes:
    ip = _parse(address)
    return _MAPPED_PREFIX + ip.packed if ip.version == 4 else ip.packed


class _Networks:
    """CIDRs grouped by prefix length: a lookup is one mask and one set probe per length."""

    __slots__ = ("_v4", "_v6")

    def __init__(self, cidrs: Iterable[str]) -> None:
        by_length: dict[int, dict[int, set[int]]] = {4: {}, 6: {}}
        for text in cidrs:
            try:
                net = ipaddress.ip_network(text, strict=False)
            except ValueError:
                raise ConfigError(f"{text!r} is not an IP address or CIDR network") from None
            if isinstance(net, ipaddress.IPv6Network) and net.subnet_of(_MAPPED):
                net = ipaddress.IPv4Network(
                    (int(net.network_address) & 0xFFFFFFFF, net.prefixlen - 96)
                )
            value = int(net.network_address)
            by_length[net.version].setdefault(net.prefixlen, set()).add(value)
        self._v4 = self._masks(by_length[4], 32)
        self._v6 = self._masks(by_length[6], 128)

    @staticmethod
    def _masks(table: dict[int, set[int]], bits: int) -> tuple[tuple[int, frozenset[int]], ...]:
        full = (1 << bits) - 1
        return tuple(
            (full ^ (full >> length), frozenset(nets)) for length, nets in sorted(table.items())
        )

    def __bool__(self) -> bool:
        return bool(self._v4 or self._v6)

    def __contains__(self, ip: IPAddress) -> bool:
        value = int(ip)
        table = self._v4 if ip.version == 4 else self._v6
        return any(value & mask in nets for mask, nets in table)


class SourcePolicy:
    """Which peers are trusted proxies and which callers may place calls.

    Args:
        allow: CIDRs that may place calls; empty allows every caller.
        trusted_proxies: CIDRs whose PROXY v2 header is believed.

    An IPv4-mapped IPv6 address (``::ffff:10.1.2.3``) matches IPv4 networks, and a network
    written in mapped form matches the plain IPv4 addresses.

    Raises:
        ConfigError: a CIDR does not parse.
    """

    __slots__ = ("_allow", "_allow_text", "_proxies", "_proxies_text")

    def __init__(self, allow: tuple[str, ...], trusted_proxies: tuple[str, ...]) -> None:
        self._allow_text = tuple(allow)
        self._proxies_text = tuple(trusted_proxies)
        self._allow = _Networks(self._allow_text)
        self._proxies = _Networks(self._proxies_text)

    @property
    def allow(self) -> tuple[str, ...]:
        """The allowed CIDRs as given."""
        return self._allow_text

    @property
    def trusted_proxies(self) -> tuple[str, ...]:
        """The trusted proxies' CIDRs as given."""
        return self._proxies_text

    def is_trusted_proxy(self, addr: str) -> bool:
        """True if ``addr`` (a socket's peer) must open with a PROXY v2 header we believe.

        Raises:
            BadSourceAddress: ``addr`` is not an IP address.
        """
        return _parse(addr) in self._proxies

    def allows(self, addr: str) -> bool:
        """True if the caller at ``addr`` may place calls (always, with an empty allow list).

        Raises:
            BadSourceAddress: ``addr`` is not an IP address.
        """
        ip = _parse(addr)
        return not self._allow or ip in self._allow


def _slot_dtype(entries: int) -> np.dtype[Any]:
    size = _ALIGN + entries * _ENTRY.itemsize
    return np.dtype(
        {
            "names": ["calls", "table"],
            "formats": ["<i8", (_ENTRY, (entries,))],
            "offsets": [0, _ALIGN],
            "itemsize": -(-size // _ALIGN) * _ALIGN,
        }
    )


def _file_size(slots: int, entries: int) -> int:
    return _ALIGN + slots * _slot_dtype(entries).itemsize


class NodeCounts:
    """The node's calls, per worker slot and per source, in a file every worker maps.

    The supervisor calls :meth:`create` before it starts workers, reads :meth:`total` and
    :meth:`per_slot` for health, and calls :meth:`clear_slot` when a worker dies. A worker
    calls :meth:`attach` for its slot, then :meth:`admit` on each new call and
    :meth:`release` when it ends. Call :meth:`close` when done.
    """

    def __init__(self, path: Path, fd: int, slots: int, entries: int, slot: int | None) -> None:
        """Wraps an open, checked counts file; use :meth:`create` or :meth:`attach`."""
        self._path = path
        self._fd = fd
        self._slots = slots
        self._entries = entries
        self._slot = slot
        self._mmap = mmap.mmap(fd, _file_size(slots, entries))
        view = np.frombuffer(self._mmap, _slot_dtype(entries), count=slots, offset=_ALIGN)
        self._calls: np.ndarray[Any, Any] = view["calls"]
        self._tables: np.ndarray[Any, Any] = view["table"]
        # Calls this process admitted without recording their source (cap off).
        self._unrecorded = 0
        self._closed = False

    @classmethod
    def create(cls, path: Path, slots: int, entries: int = 256) -> NodeCounts:
        """Creates (or replaces) the counts file, zeroed, for ``slots`` workers.

        The file appears whole at ``path`` (written aside, then renamed), so a worker never
        attaches to a half-made one. The supervisor's object belongs to no slot.

        Raises:
            ConfigError: ``slots`` or ``entries`` is below 1.
            CountsFileError: the file cannot be created.
        """
        if slots < 1 or entries < 1:
            raise ConfigError(
                f"node counts need slots >= 1 and entries >= 1, not {slots} and {entries}"
            )
        path = Path(path)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        except OSError as error:
            raise CountsFileError(str(path), f"cannot create it: {error.strerror}") from None
        try:
            os.ftruncate(fd, _file_size(slots, entries))
            header = np.array([(_MAGIC, slots, entries)], dtype=_HEADER)
            os.pwrite(fd, header.tobytes(), 0)
            os.replace(tmp, path)
        except OSError as error:
            os.close(fd)
            tmp.unlink(missing_ok=True)
            raise CountsFileError(str(path), f"cannot create it: {error.strerror}") from None
        try:
            return cls(path, fd, slots, entries, None)
        except BaseException:
            os.close(fd)
            raise

    @classmethod
    def attach(cls, path: Path, slot: int) -> NodeCounts:
        """Opens the supervisor's counts file as worker ``slot``; call it after fork.

        Raises:
            CountsFileError: the file is missing, unreadable or not a counts file.
            SlotOutOfRange: the file has no slot ``slot``.
        """
        path = Path(path)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError:
            raise CountsFileError(
                str(path), "missing; the supervisor creates it before it starts workers"
            ) from None
        except OSError as error:
            raise CountsFileError(str(path), f"cannot open it: {error.strerror}") from None
        try:
            slots, entries = cls._check(path, fd)
            if not 0 <= slot < slots:
                raise SlotOutOfRange(slot, slots)
            return cls(path, fd, slots, entries, slot)
        except BaseException:
            os.close(fd)
            raise

    @staticmethod
    def _check(path: Path, fd: int) -> tuple[int, int]:
        raw = os.pread(fd, _HEADER.itemsize, 0)
        if len(raw) < _HEADER.itemsize:
            raise CountsFileError(str(path), "too short to be a counts file")
        header = np.frombuffer(raw, _HEADER)[0]
        if bytes(header["magic"]) != _MAGIC:
            raise CountsFileError(str(path), "not a counts file (bad magic)")
        slots, entries = int(header["slots"]), int(header["entries"])
        size = os.fstat(fd).st_size
        if slots < 1 or entries < 1 or size != _file_size(slots, entries):
            raise CountsFileError(
                str(path), f"{size} bytes does not fit {slots} slots of {entries} entries"
            )
        return slots, entries

    @property
    def path(self) -> Path:
        """The counts file."""
        return self._path

    @property
    def slots(self) -> int:
        """How many worker slots the file has."""
        return self._slots

    @property
    def entries(self) -> int:
        """How many sources each slot's table can hold at once."""
        return self._entries

    @property
    def slot(self) -> int | None:
        """This worker's slot, or None for the supervisor's object."""
        return self._slot

    @contextmanager
    def _locked(self, operation: int = fcntl.LOCK_EX) -> Iterator[None]:
        if self._closed:
            raise ValueError("the node counts are closed")
        fcntl.flock(self._fd, operation)
        try:
            yield
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def _own_slot(self) -> int:
        if self._slot is None:
            raise NotAttached()
        return self._slot

    def _own_row(self, table: np.ndarray[Any, Any], key: bytes) -> int | None:
        live = table["count"] > 0
        hit = np.flatnonzero(live & (table["addr"] == key))
        if hit.size:
            return int(hit[0])
        free = np.flatnonzero(~live)
        return int(free[0]) if free.size else None

    def admit(self, source: str, max_calls: int, max_per_source: int) -> str | None:
        """Takes one call from ``source`` if the node and the source are under their caps.

        ``max_per_source`` 0 is no per-source cap; then no source is recorded.

        Returns:
            None when admitted (call :meth:`release` when the call ends), else the cause:
            ``"node_full"``, ``"source_cap"``, or ``"source_table_full"`` (this worker holds
            calls from ``entries`` other sources already).

        Raises:
            NotAttached: this is the supervisor's object.
            BadSourceAddress: ``source`` is not an IP address.
        """
        mine = self._own_slot()
        key = _key(source)
        with self._locked():
            if int(self._calls.sum()) >= max_calls:
                return NODE_FULL
            if max_per_source > 0:
                counts = self._tables["count"]
                if int(counts[self._tables["addr"] == key].sum()) >= max_per_source:
                    return SOURCE_CAP
                table = self._tables[mine]
                row = self._own_row(table, key)
                if row is None:
                    return SOURCE_TABLE_FULL
                table["addr"][row] = key
                table["count"][row] += 1
            else:
                self._unrecorded += 1
            self._calls[mine] += 1
        return None

    def release(self, source: str) -> None:
        """Gives back one call from ``source`` that :meth:`admit` took.

        Raises:
            NotAttached: this is the supervisor's object.
            BadSourceAddress: ``source`` is not an IP address.
            OverRelease: this slot holds no such call (a bug in the caller).
        """
        mine = self._own_slot()
        key = _key(source)
        with self._locked():
            if self._calls[mine] <= 0:
                raise OverRelease(source, mine)
            table = self._tables[mine]
            hit = np.flatnonzero((table["count"] > 0) & (table["addr"] == key))
            if hit.size:
                table["count"][hit[0]] -= 1
            elif self._unrecorded > 0:
                self._unrecorded -= 1
            else:
                raise OverRelease(source, mine)
            self._calls[mine] -= 1

    def total(self) -> int:
        """The node's calls now, over every slot."""
        with self._locked(fcntl.LOCK_SH):
            return int(self._calls.sum())

    def per_slot(self) -> list[int]:
        """Each slot's calls now, by slot."""
        with self._locked(fcntl.LOCK_SH):
            return [int(n) for n in self._calls]

    def clear_slot(self, slot: int) -> None:
        """Forgets every call of ``slot``: its worker died, and its calls with it.

        Raises:
            SlotOutOfRange: the file has no slot ``slot``.
        """
        if not 0 <= slot < self._slots:
            raise SlotOutOfRange(slot, self._slots)
        with self._locked():
            self._calls[slot] = 0
            self._tables[slot]["count"] = 0
            self._tables[slot]["addr"] = b""
            if slot == self._slot:
                self._unrecorded = 0

    def close(self) -> None:
        """Unmaps and closes the file; the object is unusable after. Idempotent."""
        if self._closed:
            return
        self._closed = True
        # The mmap cannot close while numpy views still export its buffer.
        empty = np.zeros(0, dtype=_ENTRY)
        self._calls = empty["count"]
        self._tables = empty
        self._mmap.close()
        os.close(self._fd)

    def __enter__(self) -> NodeCounts:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
