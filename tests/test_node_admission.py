"""Source policy and node-wide call counts, concurrency across real processes included."""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Iterator
from multiprocessing.sharedctypes import Synchronized
from pathlib import Path
from typing import Any

import pytest

from engine.errors import (
    AdmissionError,
    BadSourceAddress,
    ConfigError,
    CountsFileError,
    NotAttached,
    OverRelease,
    SlotOutOfRange,
)
from engine.node.admission import (
    NODE_FULL,
    SOURCE_CAP,
    SOURCE_TABLE_FULL,
    NodeCounts,
    SourcePolicy,
)

A, B, C = "192.0.2.1", "192.0.2.2", "2001:db8::3"


# -- SourcePolicy ---------------------------------------------------------------------------


def test_allow_list_v4_v6_and_mapped() -> None:
    policy = SourcePolicy(("10.0.0.0/8", "192.0.2.7/32", "2001:db8::/32"), ())
    assert policy.allows("10.255.0.1")
    assert policy.allows("::ffff:10.1.2.3")
    assert policy.allows("192.0.2.7")
    assert policy.allows("::ffff:192.0.2.7")
    assert policy.allows("2001:db8:1::9")
    assert not policy.allows("11.0.0.1")
    assert not policy.allows("192.0.2.8")
    assert not policy.allows("::ffff:11.0.0.1")
    assert not policy.allows("2001:db9::1")
    # An IPv4-compatible-looking v6 address that is not mapped is not IPv4.
    assert not policy.allows("::10.1.2.3")


def test_empty_allow_list_allows_everything() -> None:
    policy = SourcePolicy((), ("127.0.0.1/32",))
    for addr in ("10.0.0.1", "::1", "2001:db8::1", "::ffff:8.8.8.8"):
        assert policy.allows(addr)


def test_trusted_proxies() -> None:
    policy = SourcePolicy(("10.0.0.0/8",), ("127.0.0.1/32", "fd00::/8"))
    assert policy.is_trusted_proxy("127.0.0.1")
    assert policy.is_trusted_proxy("::ffff:127.0.0.1")
    assert policy.is_trusted_proxy("fd12::5")
    assert not policy.is_trusted_proxy("127.0.0.2")
    assert not policy.is_trusted_proxy("10.0.0.1")
    assert not policy.is_trusted_proxy("::1")
    assert not SourcePolicy((), ()).is_trusted_proxy("127.0.0.1")


def test_network_in_mapped_form_matches_plain_ipv4() -> None:
    policy = SourcePolicy(("::ffff:10.0.0.0/104",), ("::ffff:127.0.0.1/128",))
    assert policy.allows("10.9.9.9")
    assert not policy.allows("11.0.0.1")
    assert policy.is_trusted_proxy("127.0.0.1")


def test_mixed_prefix_lengths_and_everything() -> None:
    policy = SourcePolicy(("10.1.0.0/16", "10.0.0.0/8", "0.0.0.0/0"), ("::/0",))
    assert policy.allows("8.8.8.8")
    assert not policy.allows("2001:db8::1")
    assert policy.is_trusted_proxy("2001:db8::1")
    assert not policy.is_trusted_proxy("8.8.8.8")


def test_scoped_ipv6_address() -> None:
    assert SourcePolicy(("fe80::/10",), ()).allows("fe80::1%eth0")


def test_policy_keeps_its_inputs() -> None:
    policy = SourcePolicy(("10.0.0.0/8",), ("127.0.0.1/32",))
    assert policy.allow == ("10.0.0.0/8",)
    assert policy.trusted_proxies == ("127.0.0.1/32",)


def test_policy_errors() -> None:
    with pytest.raises(ConfigError, match="not-a-cidr"):
        SourcePolicy(("not-a-cidr",), ())
    policy = SourcePolicy((), ())
    with pytest.raises(BadSourceAddress) as info:
        policy.allows("example.com")
    assert info.value.address == "example.com"
    with pytest.raises(BadSourceAddress):
        policy.is_trusted_proxy("")


# -- NodeCounts -----------------------------------------------------------------------------


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "counts"


@pytest.fixture
def supervisor(path: Path) -> Iterator[NodeCounts]:
    counts = NodeCounts.create(path, slots=3, entries=4)
    yield counts
    counts.close()


@pytest.fixture
def workers(supervisor: NodeCounts, path: Path) -> Iterator[list[NodeCounts]]:
    attached = [NodeCounts.attach(path, slot) for slot in range(3)]
    yield attached
    for counts in attached:
        counts.close()


def test_create_is_zeroed_and_private(supervisor: NodeCounts, path: Path) -> None:
    assert supervisor.total() == 0
    assert supervisor.per_slot() == [0, 0, 0]
    assert (supervisor.slots, supervisor.entries, supervisor.slot) == (3, 4, None)
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert [p.name for p in path.parent.iterdir()] == ["counts"]


def test_create_replaces_old_counts(supervisor: NodeCounts, path: Path) -> None:
    with NodeCounts.attach(path, 0) as worker:
        assert worker.admit(A, 10, 0) is None
    with NodeCounts.create(path, slots=2) as fresh, NodeCounts.attach(path, 1) as worker:
        assert fresh.per_slot() == [0, 0]
        assert worker.entries == 256


def test_node_limit_is_exact_across_slots(
    supervisor: NodeCounts, workers: list[NodeCounts]
) -> None:
    w0, w1, w2 = workers
    assert w0.admit(A, 3, 0) is None
    assert w1.admit(B, 3, 0) is None
    assert w2.admit(C, 3, 0) is None
    for worker in workers:
        assert worker.admit("198.51.100.1", 3, 0) == NODE_FULL
    assert supervisor.total() == 3
    assert supervisor.per_slot() == [1, 1, 1]
    w1.release(B)
    assert w0.admit(A, 3, 0) is None
    assert w0.admit(A, 3, 0) == NODE_FULL
    assert supervisor.per_slot() == [2, 0, 1]


def test_per_source_cap_is_node_wide(supervisor: NodeCounts, workers: list[NodeCounts]) -> None:
    w0, w1, _ = workers
    assert w0.admit(A, 100, 2) is None
    # The same source, written IPv4-mapped, on another worker.
    assert w1.admit("::ffff:" + A, 100, 2) is None
    assert w0.admit(A, 100, 2) == SOURCE_CAP
    assert w1.admit(A, 100, 2) == SOURCE_CAP
    assert w1.admit(B, 100, 2) is None
    w0.release(A)
    assert w1.admit(A, 100, 2) is None
    assert supervisor.per_slot() == [0, 3, 0]


def test_node_full_is_checked_before_source_cap(workers: list[NodeCounts]) -> None:
    w0 = workers[0]
    assert w0.admit(A, 1, 1) is None
    assert w0.admit(A, 1, 1) == NODE_FULL


def test_source_table_full(supervisor: NodeCounts, workers: list[NodeCounts]) -> None:
    w0, w1, _ = workers
    sources = [f"10.0.0.{i}" for i in range(4)]
    for source in sources:
        assert w0.admit(source, 100, 5) is None
    # The table has 4 entries: a fifth source is refused here, not silently uncounted...
    assert w0.admit("10.0.0.99", 100, 5) == SOURCE_TABLE_FULL
    # ...while a source already in the table still gets its second call,
    assert w0.admit(sources[0], 100, 5) is None
    # another worker's table is its own,
    assert w1.admit("10.0.0.99", 100, 5) is None
    # and with the cap off no table is used.
    assert w0.admit("10.0.0.99", 100, 0) is None
    assert supervisor.per_slot() == [6, 1, 0]
    # A released entry frees its row for a new source.
    w0.release(sources[1])
    assert w0.admit("10.0.0.99", 100, 5) is None
    assert w0.admit("10.0.0.100", 100, 5) == SOURCE_TABLE_FULL


def test_uncapped_calls_record_no_source(supervisor: NodeCounts, workers: list[NodeCounts]) -> None:
    w0 = workers[0]
    for _ in range(3):
        assert w0.admit(A, 100, 0) is None
    # None of them counts against a cap turned on later.
    assert w0.admit(A, 100, 1) is None
    assert w0.admit(A, 100, 1) == SOURCE_CAP
    for _ in range(4):
        w0.release(A)
    assert supervisor.total() == 0
    with pytest.raises(OverRelease):
        w0.release(A)


def test_release_more_than_admitted(workers: list[NodeCounts]) -> None:
    w0, w1, _ = workers
    with pytest.raises(OverRelease) as info:
        w0.release(A)
    assert (info.value.source, info.value.slot) == (A, 0)
    assert w0.admit(A, 10, 1) is None
    # Another source than the one admitted (with the cap on) is a bug too,
    with pytest.raises(OverRelease):
        w0.release(B)
    # and so is releasing on another worker than the one that admitted.
    with pytest.raises(OverRelease):
        w1.release(A)
    w0.release(A)
    with pytest.raises(OverRelease):
        w0.release(A)
    assert isinstance(info.value, AdmissionError)


def test_clear_slot(supervisor: NodeCounts, workers: list[NodeCounts]) -> None:
    w0, w1, _ = workers
    for _ in range(2):
        assert w0.admit(A, 10, 2) is None
    assert w1.admit(B, 10, 2) is None
    assert w0.admit(A, 10, 2) == SOURCE_CAP
    supervisor.clear_slot(0)
    assert supervisor.per_slot() == [0, 1, 0]
    # The dead worker's calls no longer count against the source either.
    assert w1.admit(A, 10, 2) is None
    assert w1.admit(A, 10, 2) is None
    assert w1.admit(A, 10, 2) == SOURCE_CAP
    with pytest.raises(SlotOutOfRange) as info:
        supervisor.clear_slot(3)
    assert (info.value.slot, info.value.slots) == (3, 3)
    with pytest.raises(SlotOutOfRange):
        supervisor.clear_slot(-1)


def test_supervisor_view_cannot_admit(supervisor: NodeCounts) -> None:
    with pytest.raises(NotAttached):
        supervisor.admit(A, 10, 0)
    with pytest.raises(NotAttached):
        supervisor.release(A)


def test_bad_source_address(workers: list[NodeCounts]) -> None:
    with pytest.raises(BadSourceAddress):
        workers[0].admit("nope", 10, 0)
    assert workers[0].total() == 0


def test_attach_errors(tmp_path: Path, supervisor: NodeCounts, path: Path) -> None:
    with pytest.raises(CountsFileError, match="missing; the supervisor creates it") as info:
        NodeCounts.attach(tmp_path / "absent", 0)
    assert info.value.path == str(tmp_path / "absent")
    for slot in (3, -1):
        with pytest.raises(SlotOutOfRange, match=r"slots 0\.\.2"):
            NodeCounts.attach(path, slot)
    junk = tmp_path / "junk"
    junk.write_bytes(b"not a counts file at all" * 10)
    with pytest.raises(CountsFileError, match="bad magic"):
        NodeCounts.attach(junk, 0)
    junk.write_bytes(b"")
    with pytest.raises(CountsFileError, match="too short"):
        NodeCounts.attach(junk, 0)
    truncated = tmp_path / "truncated"
    truncated.write_bytes(path.read_bytes()[:200])
    with pytest.raises(CountsFileError, match="does not fit"):
        NodeCounts.attach(truncated, 0)


def test_create_errors(tmp_path: Path) -> None:
    with pytest.raises(CountsFileError, match="cannot create"):
        NodeCounts.create(tmp_path / "no" / "such" / "dir", 2)
    with pytest.raises(ConfigError):
        NodeCounts.create(tmp_path / "c", 0)
    with pytest.raises(ConfigError):
        NodeCounts.create(tmp_path / "c", 1, entries=0)


def test_close_is_idempotent_and_final(path: Path) -> None:
    counts = NodeCounts.create(path, 1)
    counts.close()
    counts.close()
    with pytest.raises(ValueError, match="closed"):
        counts.total()


# -- Concurrency across real processes ------------------------------------------------------

SLOTS = 4
MAX_CALLS = 3
MAX_PER_SOURCE = 2
ROUNDS = 400
SHARED_SOURCE = "198.51.100.7"


def _hammer(
    path: Path,
    slot: int,
    start: Any,
    holders: Synchronized[int],
    source_holders: Synchronized[int],
    worst: Any,
    results: Any,
) -> None:
    """One worker: take up to two calls, check the shared counters, give them back."""
    counts = NodeCounts.attach(path, slot)
    admitted = refused = 0
    start.wait()
    for i in range(ROUNDS):
        held: list[str] = []
        # Every worker wants the shared source; odd rounds also a source of its own.
        for source in (SHARED_SOURCE, f"10.0.{slot}.{i % 2}"):
            if counts.admit(source, MAX_CALLS, MAX_PER_SOURCE) is None:
                admitted += 1
                held.append(source)
                with holders.get_lock():
                    holders.value += 1
                    worst[0] = max(worst[0], holders.value)
                if source == SHARED_SOURCE:
                    with source_holders.get_lock():
                        source_holders.value += 1
                        worst[1] = max(worst[1], source_holders.value)
            else:
                refused += 1
        for source in held:
            # Decremented before release: the counters never run ahead of the node's.
            if source == SHARED_SOURCE:
                with source_holders.get_lock():
                    source_holders.value -= 1
            with holders.get_lock():
                holders.value -= 1
            counts.release(source)
    counts.close()
    results.put((slot, admitted, refused))


def test_concurrent_workers_never_exceed_the_limits(tmp_path: Path) -> None:
    limits = NodeCounts.create(tmp_path / "hammer", SLOTS)
    ctx = multiprocessing.get_context("fork")
    start = ctx.Event()
    holders = ctx.Value("i", 0)
    source_holders = ctx.Value("i", 0)
    worst = ctx.Array("i", 2)
    results = ctx.Queue()
    procs = [
        ctx.Process(
            target=_hammer,
            args=(limits.path, slot, start, holders, source_holders, worst, results),
        )
        for slot in range(SLOTS)
    ]
    for proc in procs:
        proc.start()
    start.set()
    outcomes = [results.get(timeout=10) for _ in procs]
    for proc in procs:
        proc.join(timeout=10)
        assert proc.exitcode == 0
    admitted = sum(o[1] for o in outcomes)
    refused = sum(o[2] for o in outcomes)
    assert admitted + refused == SLOTS * ROUNDS * 2
    # Real contention happened: calls were refused, and the limits were reached.
    assert refused > 0
    assert worst[0] <= MAX_CALLS
    assert worst[1] <= MAX_PER_SOURCE
    assert limits.total() == 0
    assert limits.per_slot() == [0] * SLOTS
    limits.close()
