"""Cluster membership and leader discovery: the admin side of the protocol.

``NodeClient`` is a control connection to one node (no database open) that
speaks LEADER, CLUSTER, ADD, ASSIGN, REMOVE, TRANSFER, DESCRIBE, WEIGHT and
DUMP.  ``find_leader`` asks bootstrap nodes who leads.  ``ClusterAdmin``
sends membership changes to whichever node currently leads.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from ssl import SSLContext
from typing import Any, NamedTuple

from dqlite._protocol import Decoder, Encoder
from dqlite._wire import Wire
from dqlite.exceptions import Error, OperationalError, ProtocolError

__all__ = [
    "VOTER", "STANDBY", "SPARE", "NodeInfo", "NodeClient", "ClusterAdmin", "find_leader", "find_node",
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


# -- what NodeClient and dqlite.aiocluster.AsyncNodeClient share --


def _node_infos(servers: Any) -> list[NodeInfo]:
    return [NodeInfo(i, a, r) for i, a, r in servers]


#: How to read the answer to a request: the decoder's reader, and what to
#: make of its value (None: as it is).
Request = tuple[str, Callable[[Any], Any] | None]

#: Each request, named as the encoder's method that writes it, and how to read its answer.
_ANSWERS: dict[str, Request] = {
    "leader": ("read_server", tuple),
    "cluster": ("read_servers", _node_infos),
    "add": ("read_empty", None),
    "assign": ("read_empty", None),
    "remove": ("read_empty", None),
    "transfer": ("read_empty", None),
    "describe": ("read_metadata", tuple),
    "weight": ("read_empty", None),
    "dump": ("read_files", None),
}

#: CLUSTER's answer format that carries the roles.
CLUSTER_WITH_ROLES = 1


def check_role(role: int) -> int:
    """``role``, if it is VOTER, STANDBY or SPARE; else ``OperationalError``."""
    if role not in ROLE_NAMES:
        raise OperationalError(f"unknown role {role!r}: use VOTER, STANDBY or SPARE")
    return role


class NodeClientBase:
    """What ``NodeClient`` and ``dqlite.aiocluster.AsyncNodeClient`` share,
    all but the I/O: the address and timeout, the encoding of each request
    and the decoding of its answer, the repr.  A shell adds ``closed``,
    ``close`` and the sending and waiting (``_call``).
    """

    #: The name ``repr`` shows.
    _kind = "dqlite.cluster.NodeClient"

    def __init__(self, address: str, timeout: float) -> None:
        self.address = address
        self.timeout = timeout
        self._encoder = Encoder()

    def __repr__(self) -> str:
        return f"<{self._kind} {self.address} {'closed' if self.closed else 'open'}>"

    @property
    def closed(self) -> bool:
        raise NotImplementedError

    def _encode(self, name: str, *args: Any) -> tuple[bytes, Request]:
        """The bytes of the request ``name`` with ``args``, and how to read its answer."""
        getattr(self._encoder, name)(*args)
        return self._encoder.take(), _ANSWERS[name]

    @staticmethod
    def _decode(request: Request, decoder: Decoder) -> Any:
        """The answer to ``request``, read off ``decoder`` (which holds it whole)."""
        reader_name, convert = request
        value = getattr(decoder, reader_name)()
        return value if convert is None else convert(value)


def find_node(members: Iterable[NodeInfo], node: int | str) -> NodeInfo:
    """The member ``node`` names: its id (an int or digits) or its address.

    Raises ``OperationalError`` naming the members when there is none.
    """
    members = list(members)
    text = str(node).strip()
    for member in members:
        if (text.isdigit() and member.id == int(text)) or member.address == text:
            return member
    known = ", ".join(f"{m.id} ({m.address})" for m in members) or "none"
    raise OperationalError(f"no node {text!r} in the cluster; members: {known}")


class NodeClient(NodeClientBase):
    """A control connection to one dqlite node.

    Requests other than LEADER, CLUSTER, DESCRIBE, WEIGHT and DUMP only work
    on the leader; sent elsewhere they raise ``ConnectionLostError`` with the
    server's "not leader" code.  ``ssl``: an ``SSLContext`` for TLS to the node.
    """

    def __init__(self, address: str, *, timeout: float = 5.0, ssl: SSLContext | None = None) -> None:
        super().__init__(address, timeout)
        self._wire = Wire(address, timeout, None, ssl)
        self._wire.handshake_and_send(b"")

    @property
    def closed(self) -> bool:
        return self._wire.closed

    def __enter__(self) -> NodeClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._wire.close()

    def _call(self, name: str, *args: Any) -> Any:
        data, request = self._encode(name, *args)
        wire = self._wire
        wire.send(data)
        try:
            return wire.read(lambda: self._decode(request, wire.decoder))
        except ProtocolError:
            # A server error leaves the connection in step; bad bytes do not.
            wire.close()
            raise

    def leader(self) -> tuple[int, str]:
        """(id, address) of the leader as this node knows it; (0, "") when unknown."""
        return self._call("leader")

    def cluster(self) -> list[NodeInfo]:
        """Every member of the cluster with its role."""
        return self._call("cluster", CLUSTER_WITH_ROLES)

    def add(self, node_id: int, address: str) -> None:
        """Add a node as a spare (leader only)."""
        self._call("add", node_id, address)

    def assign(self, node_id: int, role: int) -> None:
        """Change a node's role to VOTER, STANDBY or SPARE (leader only)."""
        self._call("assign", node_id, check_role(role))

    def remove(self, node_id: int) -> None:
        """Remove a node from the cluster (leader only)."""
        self._call("remove", node_id)

    def transfer(self, node_id: int = 0) -> None:
        """Hand leadership to ``node_id`` (0: a voter raft picks); returns once done."""
        self._call("transfer", node_id)

    def describe(self) -> tuple[int, int]:
        """(failure_domain, weight) of this node."""
        return self._call("describe")

    def set_weight(self, weight: int) -> None:
        """Set this node's weight (shown by ``describe``)."""
        self._call("weight", weight)

    def dump(self, database: str) -> dict[str, bytes]:
        """The database's files as the node holds them: {"name": ..., "name-wal": ...}."""
        return self._call("dump", database)


class LeaderSearch:
    """The bookkeeping of a search for the leader, without its I/O (shared
    by ``find_leader`` and ``dqlite.aiocluster.find_leader``): which nodes to
    ask, how long each may take, how long to wait between rounds, and the
    error that names every node and why it failed."""

    def __init__(self, addresses: str | Iterable[str], timeout: float) -> None:
        self.candidates = [addresses] if isinstance(addresses, str) else list(addresses)
        if not self.candidates:
            raise OperationalError("no dqlite node addresses given")
        self.timeout = timeout
        self.deadline = time.monotonic() + timeout
        self.delay = 0.01
        self.errors: dict[str, str] = {}

    def attempt_timeout(self) -> float:
        """How long the next node may take to answer."""
        return max(self.deadline - time.monotonic(), 0.05)

    def failed(self, address: str, why: str) -> None:
        self.errors[address] = why

    def answered(self, address: str, answer: tuple[int, str]) -> str:
        """The leader's address from ``address``'s answer to LEADER; "" when it knows none."""
        leader = answer[1]
        if not leader:
            self.failed(address, "knows no leader")
        return leader

    def pause(self) -> float:
        """Seconds to wait before the next round; raises once time is up."""
        delay = self.delay
        if time.monotonic() + delay >= self.deadline:
            tried = "; ".join(f"{a}: {why}" for a, why in self.errors.items())
            raise OperationalError(f"no dqlite leader found within {self.timeout:g}s ({tried})")
        self.delay = min(delay * 2, 0.5)
        self.errors = {}
        return delay


def find_leader(addresses: str | Iterable[str], *, timeout: float = 5.0, ssl: SSLContext | None = None) -> str:
    """The leader's address, asked of each bootstrap node in turn until one knows.

    Retries with a short backoff until ``timeout`` seconds have passed, then
    raises ``OperationalError`` naming every address tried and why it failed.
    """
    search = LeaderSearch(addresses, timeout)
    while True:
        for address in search.candidates:
            try:
                with NodeClient(address, timeout=search.attempt_timeout(), ssl=ssl) as node:
                    if leader := search.answered(address, node.leader()):
                        return leader
            except Error as exc:
                search.failed(address, str(exc))
        time.sleep(search.pause())


class ClusterAdminBase:
    """What ``ClusterAdmin`` and ``dqlite.aiocluster.AsyncClusterAdmin`` share:
    the bootstrap addresses, the timeout and TLS of each connection, the repr."""

    #: The name ``repr`` shows.
    _kind = "dqlite.cluster.ClusterAdmin"

    def __init__(self, addresses: str | Sequence[str], *, timeout: float = 5.0,
                 ssl: SSLContext | None = None) -> None:
        self.addresses = [addresses] if isinstance(addresses, str) else list(addresses)
        self.timeout = timeout
        self.ssl = ssl

    def __repr__(self) -> str:
        return f"<{self._kind} {','.join(self.addresses)}>"


class ClusterAdmin(ClusterAdminBase):
    """Cluster administration sent to the current leader, rediscovered as needed.

    ``ClusterAdmin(["127.0.0.1:9001", ...]).add(4, "127.0.0.1:9004")``.
    ``ssl``: an ``SSLContext`` for TLS to the nodes.  ``dqlite.aiocluster``
    has the same API for asyncio.
    """

    def _leader_client(self) -> NodeClient:
        return self._client(self.leader())

    def _client(self, address: str) -> NodeClient:
        return NodeClient(address, timeout=self.timeout, ssl=self.ssl)

    def leader(self) -> str:
        """The current leader's address."""
        return find_leader(self.addresses, timeout=self.timeout, ssl=self.ssl)

    def members(self) -> list[NodeInfo]:
        """Every member of the cluster with its role, as the leader knows them."""
        with self._leader_client() as c:
            return c.cluster()

    nodes = members

    def add(self, node_id: int, address: str, role: int = VOTER) -> None:
        """Add a node and give it ``role`` (a new node joins as spare first)."""
        with self._leader_client() as c:
            log.info("adding node %d at %s (role %s)", node_id, address, ROLE_NAMES.get(role, role))
            c.add(node_id, address)
            if role != SPARE:
                c.assign(node_id, role)

    def assign(self, node_id: int, role: int) -> None:
        """Change a member's role (VOTER, STANDBY or SPARE)."""
        with self._leader_client() as c:
            log.info("assigning node %d the role %s", node_id, ROLE_NAMES.get(role, role))
            c.assign(node_id, role)

    def remove(self, node_id: int) -> None:
        """Remove a member from the cluster."""
        with self._leader_client() as c:
            log.info("removing node %d", node_id)
            c.remove(node_id)

    def transfer(self, node_id: int = 0) -> None:
        """Move leadership to ``node_id`` (0: any voter)."""
        with self._leader_client() as c:
            log.info("transferring leadership to node %d", node_id)
            c.transfer(node_id)

    def describe(self, address: str) -> tuple[int, int]:
        """(failure_domain, weight) of the node at ``address``."""
        with self._client(address) as c:
            return c.describe()

    def weight(self, address: str, weight: int) -> None:
        """Set the weight of the node at ``address`` (shown by ``describe``)."""
        with self._client(address) as c:
            log.info("setting the weight of node %s to %d", address, weight)
            c.set_weight(weight)

    def dump(self, database: str) -> dict[str, bytes]:
        """The database's files as the leader holds them: {"name": ..., "name-wal": ...}."""
        with self._leader_client() as c:
            return c.dump(database)
