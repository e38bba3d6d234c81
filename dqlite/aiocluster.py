"""Cluster administration for asyncio: the counterpart of ``dqlite.cluster``.

    import dqlite.aiocluster

    admin = dqlite.aiocluster.AsyncClusterAdmin(["10.0.0.1:9001", "10.0.0.2:9001"])
    print(await admin.leader())
    for node in await admin.members():
        print(node.id, node.address, node.role_name)
    await admin.transfer(2)

The requests are encoded and their answers decoded by the same code as the
sync API's (``dqlite.cluster.NodeClientBase`` on the compiled codec); only
the waiting differs: on the event loop, no threads.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from ssl import SSLContext
from typing import Any

from dqlite._protocol import Decoder, encode_handshake
from dqlite._wire import parse_address
from dqlite.aio import _StreamProtocol
from dqlite.cluster import CLUSTER_WITH_ROLES, ROLE_NAMES, SPARE, VOTER, ClusterAdminBase, LeaderSearch
from dqlite.cluster import NodeClientBase, NodeInfo, check_role
from dqlite.exceptions import ConnectionLostError, Error, InterfaceError, ProtocolError

__all__ = ["AsyncNodeClient", "AsyncClusterAdmin", "find_leader"]

log = logging.getLogger("dqlite.cluster")


class AsyncNodeClient(NodeClientBase):
    """An asyncio control connection to one dqlite node (see ``dqlite.cluster.NodeClient``).

    ``client = await AsyncNodeClient.connect(address)``, or
    ``async with await AsyncNodeClient.connect(address) as client``.  Every
    answer is waited for at most ``timeout`` seconds (then
    ``ConnectionLostError``, and the connection is closed).
    """

    _kind = "dqlite.aiocluster.AsyncNodeClient"

    def __init__(self, address: str, protocol: _StreamProtocol, timeout: float) -> None:
        """Use ``AsyncNodeClient.connect``."""
        super().__init__(address, timeout)
        self._protocol = protocol
        self._busy = False

    @classmethod
    async def connect(cls, address: str, *, timeout: float = 5.0, ssl: SSLContext | None = None) -> AsyncNodeClient:
        """Connect to the node at ``address`` ("host:port")."""
        host, port = parse_address(address)
        loop = asyncio.get_running_loop()
        protocol = _StreamProtocol(Decoder())
        try:
            async with asyncio.timeout(timeout):
                if ssl is None:
                    await loop.create_connection(lambda: protocol, host, port)
                else:
                    await loop.create_connection(lambda: protocol, host, port, ssl=ssl, server_hostname=host)
        except (OSError, TimeoutError) as exc:
            raise ConnectionLostError(f"cannot connect to dqlite node {address}: {exc or 'timed out'}") from exc
        protocol.write(encode_handshake())
        return cls(address, protocol, timeout)

    @property
    def closed(self) -> bool:
        transport = self._protocol.transport
        return transport is None or transport.is_closing()

    async def __aenter__(self) -> AsyncNodeClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the connection."""
        transport = self._protocol.transport
        if transport is not None:
            transport.abort()

    async def _call(self, name: str, *args: Any) -> Any:
        data, request = self._encode(name, *args)
        if self._busy:
            raise InterfaceError("another request is in progress on this node client")
        if self.closed:
            raise ConnectionLostError(f"connection to {self.address} is closed")
        protocol = self._protocol
        decoder = protocol.decoder
        self._busy = True
        try:
            protocol.write(data)
            async with asyncio.timeout(self.timeout):
                while decoder.next_message() < 0:
                    await protocol.wait_for_message()
            return self._decode(request, decoder)
        except TimeoutError:
            await self.close()
            raise ConnectionLostError(f"timed out waiting for {self.address}") from None
        except (ProtocolError, asyncio.CancelledError):
            # Bad bytes, or the answer abandoned midway: the stream is out of step.
            await self.close()
            raise
        finally:
            self._busy = False

    async def leader(self) -> tuple[int, str]:
        """(id, address) of the leader as this node knows it; (0, "") when unknown."""
        return await self._call("leader")

    async def cluster(self) -> list[NodeInfo]:
        """Every member of the cluster with its role."""
        return await self._call("cluster", CLUSTER_WITH_ROLES)

    async def add(self, node_id: int, address: str) -> None:
        """Add a node as a spare (leader only)."""
        await self._call("add", node_id, address)

    async def assign(self, node_id: int, role: int) -> None:
        """Change a node's role to VOTER, STANDBY or SPARE (leader only)."""
        await self._call("assign", node_id, check_role(role))

    async def remove(self, node_id: int) -> None:
        """Remove a node from the cluster (leader only)."""
        await self._call("remove", node_id)

    async def transfer(self, node_id: int = 0) -> None:
        """Hand leadership to ``node_id`` (0: a voter raft picks); returns once done."""
        await self._call("transfer", node_id)

    async def describe(self) -> tuple[int, int]:
        """(failure_domain, weight) of this node."""
        return await self._call("describe")

    async def set_weight(self, weight: int) -> None:
        """Set this node's weight (shown by ``describe``)."""
        await self._call("weight", weight)

    async def dump(self, database: str) -> dict[str, bytes]:
        """The database's files as the node holds them: {"name": ..., "name-wal": ...}."""
        return await self._call("dump", database)


async def find_leader(addresses: str | Iterable[str], *, timeout: float = 5.0, ssl: SSLContext | None = None) -> str:
    """The leader's address (see ``dqlite.cluster.find_leader``), on the event loop."""
    search = LeaderSearch(addresses, timeout)
    while True:
        for address in search.candidates:
            try:
                async with await AsyncNodeClient.connect(address, timeout=search.attempt_timeout(), ssl=ssl) as node:
                    if leader := search.answered(address, await node.leader()):
                        return leader
            except Error as exc:
                search.failed(address, str(exc))
        await asyncio.sleep(search.pause())


class AsyncClusterAdmin(ClusterAdminBase):
    """Cluster administration sent to the current leader, for asyncio.

    The API of ``dqlite.cluster.ClusterAdmin`` with ``await``:
    ``await AsyncClusterAdmin(["127.0.0.1:9001"]).add(4, "127.0.0.1:9004")``.
    """

    _kind = "dqlite.aiocluster.AsyncClusterAdmin"

    async def _client(self, address: str) -> AsyncNodeClient:
        return await AsyncNodeClient.connect(address, timeout=self.timeout, ssl=self.ssl)

    async def _leader_client(self) -> AsyncNodeClient:
        return await self._client(await self.leader())

    async def leader(self) -> str:
        """The current leader's address."""
        return await find_leader(self.addresses, timeout=self.timeout, ssl=self.ssl)

    async def members(self) -> list[NodeInfo]:
        """Every member of the cluster with its role, as the leader knows them."""
        async with await self._leader_client() as c:
            return await c.cluster()

    async def add(self, node_id: int, address: str, role: int = VOTER) -> None:
        """Add a node and give it ``role`` (a new node joins as spare first)."""
        async with await self._leader_client() as c:
            log.info("adding node %d at %s (role %s)", node_id, address, ROLE_NAMES.get(role, role))
            await c.add(node_id, address)
            if role != SPARE:
                await c.assign(node_id, role)

    async def assign(self, node_id: int, role: int) -> None:
        """Change a member's role (VOTER, STANDBY or SPARE)."""
        async with await self._leader_client() as c:
            log.info("assigning node %d the role %s", node_id, ROLE_NAMES.get(role, role))
            await c.assign(node_id, role)

    async def remove(self, node_id: int) -> None:
        """Remove a member from the cluster."""
        async with await self._leader_client() as c:
            log.info("removing node %d", node_id)
            await c.remove(node_id)

    async def transfer(self, node_id: int = 0) -> None:
        """Move leadership to ``node_id`` (0: any voter)."""
        async with await self._leader_client() as c:
            log.info("transferring leadership to node %d", node_id)
            await c.transfer(node_id)

    async def describe(self, address: str) -> tuple[int, int]:
        """(failure_domain, weight) of the node at ``address``."""
        async with await self._client(address) as c:
            return await c.describe()

    async def weight(self, address: str, weight: int) -> None:
        """Set the weight of the node at ``address`` (shown by ``describe``)."""
        async with await self._client(address) as c:
            log.info("setting the weight of node %s to %d", address, weight)
            await c.set_weight(weight)

    async def dump(self, database: str) -> dict[str, bytes]:
        """The database's files as the leader holds them: {"name": ..., "name-wal": ...}."""
        async with await self._leader_client() as c:
            return await c.dump(database)
