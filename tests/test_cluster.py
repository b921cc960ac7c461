"""A cluster as operators run one: the real HAProxy, with the shipped ``haproxy/haproxy.cfg``,
in front of two real nodes on loopback, and callers that act like Asterisk."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine import caller
from tests.nodeproc import ROOT, NodeProcess, free_port
from tests.test_node import place, run

HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"
pytestmark = pytest.mark.skipif(not os.path.exists(HAPROXY), reason="haproxy is not installed")

ASTERISK = "127.0.0.5"
STRANGER = "127.0.0.6"


class Cluster:
    def __init__(self, tmp: Path, *, proxy_v2: bool = False, **node_env: str) -> None:
        self.tmp = tmp
        self.nodes = [NodeProcess(tmp, workers=1, name=f"node{i}", **node_env) for i in (1, 2)]
        self.port = free_port()
        self.socket = tmp / "haproxy.sock"
        env = dict(os.environ, VE_FRONTEND_BIND=f"127.0.0.1:{self.port}",
                   VE_ASTERISK_SOURCES=f"{ASTERISK} {STRANGER} 127.0.0.1",
                   VE_HAPROXY_STATS_SOCKET=str(self.socket), VE_HAPROXY_LOG="stderr",
                   VE_HAPROXY_NO_SETUID="1", VE_HAPROXY_MAXCONN="1000",
                   VE_SEND_PROXY_V2="1" if proxy_v2 else "0")
        self._env = env
        self.log = (tmp / "haproxy.log").open("wb")
        self.proc: subprocess.Popen[bytes] | None = None

    async def start(self) -> Cluster:
        for node in self.nodes:
            await node.ready()
        env = dict(self._env)
        for i, node in enumerate(self.nodes, 1):
            env.update({f"VE_NODE{i}_ADDR": "127.0.0.1", f"VE_NODE{i}_PORT": str(node.port),
                        f"VE_NODE{i}_HEALTH_PORT": str(node.health_port),
                        f"VE_NODE{i}_AGENT_PORT": str(node.agent_port)})
        self.proc = subprocess.Popen(
            [HAPROXY, "-db", "-f", str(ROOT / "haproxy" / "haproxy.cfg")], env=env,
            stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT)
        await self.wait_status({"node1": "UP", "node2": "UP"})
        return self

    async def stats(self) -> dict[str, dict[str, str]]:
        reader, writer = await asyncio.open_unix_connection(str(self.socket))
        writer.write(b"show stat\n")
        raw = (await reader.read()).decode()
        writer.close()
        lines = [line for line in raw.splitlines() if line]
        header = lines[0].lstrip("# ").split(",")
        rows = [dict(zip(header, line.split(","), strict=False)) for line in lines[1:]]
        return {r["svname"]: r for r in rows if r["pxname"] == "voice_engine"}

    async def wait_status(self, want: dict[str, str], timeout: float = 15.0) -> None:
        end = time.monotonic() + timeout
        seen: dict[str, str] = {}
        while time.monotonic() < end:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"haproxy exited: {(self.tmp / 'haproxy.log').read_text()}")
            if self.socket.exists():
                stats = await self.stats()
                seen = {name: stats[name]["status"] for name in want}
                if all(seen[n].startswith(s) for n, s in want.items()):
                    return
            await asyncio.sleep(0.1)
        raise AssertionError(f"servers {seen}, wanted {want}")

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.log.close()
        for node in self.nodes:
            node.close()


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(tmp_path)
    yield c
    c.close()


async def _health_calls(cluster: Cluster) -> list[int]:
    return [(await node.get("/health"))[1]["calls"] for node in cluster.nodes]


def test_calls_spread_by_leastconn(cluster: Cluster) -> None:
    async def main() -> None:
        await cluster.start()
        calls = []
        for _ in range(10):
            calls.append(asyncio.ensure_future(place(cluster.port, 3.0)))
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.8)
        assert sorted(await _health_calls(cluster)) == [5, 5]
        reports = await asyncio.gather(*calls)
        assert all(r.hangup == caller.CALLER_FINISHED for r in reports)
        assert all(abs(r.frames_received - r.frames_sent) <= 3 for r in reports)

    run(main())


def test_a_draining_node_gets_no_new_calls_and_keeps_its_own(cluster: Cluster) -> None:
    async def main() -> None:
        await cluster.start()
        first = [asyncio.ensure_future(place(cluster.port, 8.0)) for _ in range(4)]
        await asyncio.sleep(1.0)
        before = await _health_calls(cluster)
        assert before == [2, 2]
        leaving, staying = cluster.nodes
        leaving.signal(signal.SIGTERM)
        await cluster.wait_status({"node1": "DRAIN", "node2": "UP"}, timeout=8.0)
        later = [asyncio.ensure_future(place(cluster.port, 2.0)) for _ in range(4)]
        await asyncio.sleep(0.8)
        assert await staying.get("/health") and (await _health_calls_one(staying)) == 6
        for report in await asyncio.gather(*later):
            assert report.hangup == caller.CALLER_FINISHED
        for report in await asyncio.gather(*first):
            assert report.hangup == caller.CALLER_FINISHED
            assert abs(report.frames_received - report.frames_sent) <= 3
            assert report.burst_pacing.p99_ms < 15
        assert await leaving.exited(20.0) == 0
        assert [e["reason"] for e in leaving.events("call_ended")] == ["caller_hangup"] * 2

    run(main())


async def _health_calls_one(node: NodeProcess) -> int:
    calls: int = (await node.get("/health"))[1]["calls"]
    return calls


def test_a_killed_node_leaves_the_other_serving(cluster: Cluster) -> None:
    async def main() -> None:
        await cluster.start()
        dead, alive = cluster.nodes
        dead.proc.kill()
        await dead.exited()
        await asyncio.sleep(0.5)
        reports = [await place(cluster.port, 1.0) for _ in range(4)]
        assert all(r.hangup == caller.CALLER_FINISHED for r in reports)
        ends = await alive.wait_event("call_ended", count=4)
        assert [e["reason"] for e in ends] == ["caller_hangup"] * 4

    run(main())


def test_proxy_v2_carries_the_real_source_to_the_allowlist(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path, proxy_v2=True, TRUSTED_PROXIES="127.0.0.1",
                      ALLOW_SOURCES=ASTERISK)

    async def main() -> None:
        await cluster.start()
        pcm = bytes(2 * 8000)
        ok = await caller.call("127.0.0.1", cluster.port, pcm=pcm, kind=0x10,
                               local_addr=(ASTERISK, 0))
        barred = await caller.call("127.0.0.1", cluster.port, pcm=pcm, kind=0x10,
                                   local_addr=(STRANGER, 0))
        assert ok.hangup == caller.CALLER_FINISHED and ok.frames_received > 30
        assert barred.hangup != caller.CALLER_FINISHED and barred.frames_received == 0
        end = time.monotonic() + 5
        while time.monotonic() < end:
            ends = [e for node in cluster.nodes for e in node.events("call_ended")]
            if len(ends) >= 2:
                break
            await asyncio.sleep(0.05)
        peers = {e["reason"]: e["peer"].rsplit(":", 1)[0] for e in ends}
        assert peers == {"caller_hangup": ASTERISK, "not_allowed": STRANGER}

    try:
        run(main())
    finally:
        cluster.close()
