"""Cluster membership and leader discovery: the admin side of the protocol.

``NodeClient`` is a control connection to one node (no database open) that
speaks LEADER, CLUSTER, ADD, ASSIGN, REMOVE, TRANSFER, DESCRIBE, WEIGHT and
DUMP.  ``find_leader`` asks bootstrap nodes who leads.  ``ClusterAdmin``
sends membership changes to whichever node currently leads.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from typing import NamedTuple

from dqlite._protocol import Encoder
from dqlite._wire import Wire
from dqlite.exceptions import Error, OperationalError, ProtocolError

__all__ = [
    "VOTER", "STANDBY", "SPARE", "NodeInfo", "NodeClient", "ClusterAdmin", "find_leader",
]

log = logging.getLogger("dqlite.cluster")

#: Node roles (ASSIGN, CLUSTER format 1).
VOTER, STANDBY, SPARE = 0, 1, 2
ROLE_NAMES = {VOTER: "voter", STANDBY: "standby", SPARE: "spare"}


class NodeInfo(NamedTuple):
    """A cluster member as CLUSTER reports it."""

    id: int
    address: str
    role: int

    @property
    def role_name(self) -> str:
        return ROLE_NAMES.get(self.role, str(self.role))


class NodeClient:
    """A control connection to one dqlite node.

    Requests other than LEADER, CLUSTER, DESCRIBE, WEIGHT and DUMP only work
    on the leader; sent elsewhere they raise ``ConnectionLostError`` with the
    server's "not leader" code.
    """

    def __init__(self, address: str, *, timeout: float = 5.0) -> None:
        self.address = address
        self._encoder = Encoder()
        self._wire = Wire(address, timeout)
        self._wire.handshake_and_send(b"")

    def __repr__(self) -> str:
        state = "closed" if self._wire.closed else "open"
        return f"<dqlite.cluster.NodeClient {self.address} {state}>"

    def __enter__(self) -> NodeClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._wire.close()

    def _call(self, reader_name: str):
        wire = self._wire
        wire.send(self._encoder.take())
        try:
            return wire.read(getattr(wire.decoder, reader_name))
        except ProtocolError:
            # A server error leaves the connection in step; bad bytes do not.
            wire.close()
            raise

    def leader(self) -> tuple[int, str]:
        """(id, address) of the leader as this node knows it; (0, "") when unknown."""
        self._encoder.leader()
        return self._call("read_server")

    def cluster(self) -> list[NodeInfo]:
        """Every member of the cluster with its role."""
        self._encoder.cluster(1)
        return [NodeInfo(i, a, r) for i, a, r in self._call("read_servers")]

    def add(self, node_id: int, address: str) -> None:
        """Add a node as a spare (leader only)."""
        self._encoder.add(node_id, address)
        self._call("read_empty")

    def assign(self, node_id: int, role: int) -> None:
        """Change a node's role to VOTER, STANDBY or SPARE (leader only)."""
        if role not in ROLE_NAMES:
            raise OperationalError(f"unknown role {role!r}: use VOTER, STANDBY or SPARE")
        self._encoder.assign(node_id, role)
        self._call("read_empty")

    def remove(self, node_id: int) -> None:
        """Remove a node from the cluster (leader only)."""
        self._encoder.remove(node_id)
        self._call("read_empty")

    def transfer(self, node_id: int = 0) -> None:
        """Hand leadership to ``node_id`` (0: a voter raft picks); returns once done."""
        self._encoder.transfer(node_id)
        self._call("read_empty")

    def describe(self) -> tuple[int, int]:
        """(failure_domain, weight) of this node."""
        self._encoder.describe()
        return self._call("read_metadata")

    def set_weight(self, weight: int) -> None:
        """Set this node's weight (shown by ``describe``)."""
        self._encoder.weight(weight)
        self._call("read_empty")

    def dump(self, database: str) -> dict[str, bytes]:
        """The database's files as the node holds them: {"name": ..., "name-wal": ...}."""
        self._encoder.dump(database)
        return self._call("read_files")


def find_leader(addresses: str | Iterable[str], *, timeout: float = 5.0) -> str:
    """The leader's address, asked of each bootstrap node in turn until one knows.

    Retries with a short backoff until ``timeout`` seconds have passed, then
    raises ``OperationalError`` naming every address tried and why it failed.
    """
    candidates = [addresses] if isinstance(addresses, str) else list(addresses)
    if not candidates:
        raise OperationalError("no dqlite node addresses given")
    deadline = time.monotonic() + timeout
    delay = 0.01
    while True:
        errors: dict[str, str] = {}
        for address in candidates:
            remaining = deadline - time.monotonic()
            try:
                with NodeClient(address, timeout=max(remaining, 0.05)) as node:
                    _, leader = node.leader()
            except Error as exc:
                errors[address] = str(exc)
                continue
            if leader:
                return leader
            errors[address] = "knows no leader"
        if time.monotonic() + delay >= deadline:
            tried = "; ".join(f"{a}: {why}" for a, why in errors.items())
            raise OperationalError(f"no dqlite leader found within {timeout:g}s ({tried})")
        time.sleep(delay)
        delay = min(delay * 2, 0.5)


class ClusterAdmin:
    """Membership changes sent to the current leader, rediscovered as needed.

    ``ClusterAdmin(["127.0.0.1:9001", ...]).add(4, "127.0.0.1:9004")``.
    """

    def __init__(self, addresses: str | Sequence[str], *, timeout: float = 5.0) -> None:
        self.addresses = [addresses] if isinstance(addresses, str) else list(addresses)
        self.timeout = timeout

    def __repr__(self) -> str:
        return f"<dqlite.cluster.ClusterAdmin {','.join(self.addresses)}>"

    def _leader_client(self) -> NodeClient:
        return NodeClient(find_leader(self.addresses, timeout=self.timeout), timeout=self.timeout)

    def leader(self) -> str:
        """The current leader's address."""
        return find_leader(self.addresses, timeout=self.timeout)

    def nodes(self) -> list[NodeInfo]:
        with self._leader_client() as c:
            return c.cluster()

    def add(self, node_id: int, address: str, role: int = VOTER) -> None:
        """Add a node and give it ``role`` (a new node joins as spare first)."""
        with self._leader_client() as c:
            c.add(node_id, address)
            if role != SPARE:
                c.assign(node_id, role)

    def assign(self, node_id: int, role: int) -> None:
        with self._leader_client() as c:
            c.assign(node_id, role)

    def remove(self, node_id: int) -> None:
        with self._leader_client() as c:
            c.remove(node_id)

    def transfer(self, node_id: int = 0) -> None:
        """Move leadership to ``node_id`` (0: any voter)."""
        with self._leader_client() as c:
            c.transfer(node_id)

    def describe(self, address: str) -> tuple[int, int]:
        with NodeClient(address, timeout=self.timeout) as c:
            return c.describe()

    def dump(self, database: str) -> dict[str, bytes]:
        with self._leader_client() as c:
            return c.dump(database)
