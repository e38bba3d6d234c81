"""Helpers of the fault tests: leader kills, a proxied node, outcome bookkeeping.

Every fault test is bounded: each loop has a count and a deadline, every
connection a timeout, and every address is on loopback.
"""

from __future__ import annotations

import contextlib
import signal
import time
from collections import Counter
from pathlib import Path

import pytest

import dqlite
from dqlite.cluster import NodeClient
from dqlite.server import LocalCluster, LocalNode, free_ports

try:
    from faultproxy import FaultProxy
except ImportError:  # tests/ imported as a package
    from tests.faultproxy import FaultProxy  # type: ignore[no-redef]

#: The next transaction must succeed on the new leader within this many seconds.
RECOVERY_LIMIT = 10.0

#: What happened in each fault test: (fault, what the client did and what was
#: lost) -> times; printed in the terminal summary of the run (conftest.py).
OUTCOMES: Counter[tuple[str, str]] = Counter()


def record(fault: str, outcome: str) -> None:
    OUTCOMES[(fault, outcome)] += 1


def kill_leader(cluster: LocalCluster, sig: int = signal.SIGKILL) -> LocalNode:
    """Send ``sig`` to the current leader's process; returns that node."""
    node = cluster.leader_node(timeout=10)
    node.kill(sig)
    return node


def committed_ids(addresses, database: str, table: str = "t", timeout: float = RECOVERY_LIMIT) -> set[int]:
    """The ids in ``table`` as the (new) leader has them, read by a fresh connection."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with contextlib.closing(dqlite.connect(addresses, database, timeout=5, autocommit=True)) as conn:
                return {row[0] for row in conn.execute(f"SELECT id FROM {table}")}
        except dqlite.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def until_success(action, *, limit: float = RECOVERY_LIMIT, what: str = "the next transaction"):
    """Retry ``action()`` on OperationalError until it succeeds; returns (result, seconds).

    Fails the test if it has not succeeded within ``limit`` seconds.
    """
    start = time.monotonic()
    attempts = 0
    last: Exception | None = None
    while time.monotonic() - start < limit:
        attempts += 1
        try:
            return action(), time.monotonic() - start
        except dqlite.OperationalError as exc:
            last = exc
            time.sleep(0.05)
    pytest.fail(f"{what} did not succeed within {limit:g} s ({attempts} attempts; last error: {last!r})")


def assert_survivors_healthy(cluster: LocalCluster, killed: LocalNode | None = None) -> str:
    """Every node but ``killed`` runs and names the same leader; returns it."""
    for node in cluster.nodes:
        if node is not killed:
            assert node.is_alive(), f"{node!r} died"
    leader = cluster.wait_for_leader(timeout=RECOVERY_LIMIT)
    assert killed is None or leader != killed.address
    return leader


# -- a single node behind our fault proxy ------------------------------------------


class ProxiedNode:
    """One dqlite node that tells clients to reach it through a FaultProxy.

    The node listens on a private port and advertises the proxy's address, so
    LEADER answers name the proxy and the driver never bypasses it.
    """

    def __init__(self, base_dir: Path) -> None:
        bind_port = free_ports(1)[0]
        self.bind_address = f"127.0.0.1:{bind_port}"
        self.proxy = FaultProxy(self.bind_address).start()
        self.node = LocalNode(1, self.proxy.address, base_dir / "node-1", bind_address=self.bind_address)
        try:
            self.node.start()
            self._wait_leader()
        except BaseException:
            self.close()
            raise

    @property
    def address(self) -> str:
        return self.proxy.address

    def _wait_leader(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                with NodeClient(self.bind_address, timeout=1) as client:
                    if client.leader()[1] == self.proxy.address:
                        return
            except dqlite.Error:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError("the proxied node did not become leader")
            time.sleep(0.02)

    def ensure_running(self) -> None:
        """Restart the node if a test killed or crashed it (its data is kept)."""
        if not self.node.is_alive():
            self.node.start()
            self._wait_leader()

    def direct(self, database: str, **kwargs) -> contextlib.closing[dqlite.Connection]:
        """A clean connection, closed when its ``with`` block ends, to check what the node holds.

        The node names the proxy as leader, so this goes through the proxy too,
        with every fault disarmed first.
        """
        self.proxy.disarm()
        kwargs.setdefault("timeout", 5)
        return contextlib.closing(dqlite.connect(self.proxy.address, database, **kwargs))

    def close(self) -> None:
        try:
            self.node.stop()
        finally:
            self.proxy.stop()


