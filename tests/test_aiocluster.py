"""Cluster administration for asyncio (dqlite.aiocluster) against a real cluster."""

from __future__ import annotations

import asyncio

import pytest

import dqlite
import dqlite.aio
import dqlite.cluster
from dqlite.aiocluster import AsyncClusterAdmin, AsyncNodeClient, find_leader
from dqlite.server import LocalNode, free_ports


def test_async_admin_does_what_the_sync_one_does(dqlite_fresh_cluster, tmp_path):
    cluster = dqlite_fresh_cluster
    extra = LocalNode(4, f"127.0.0.1:{free_ports(1)[0]}", tmp_path / "node-4")
    extra.start()

    async def main():
        admin = AsyncClusterAdmin(cluster.addresses)
        leader = await admin.leader()
        assert leader == await find_leader(cluster.addresses) == cluster.leader_address()
        members = await admin.members()
        assert sorted((n.id, n.address, n.role_name) for n in members) == sorted(
            (n.id, n.address, "voter") for n in cluster.nodes)
        # The same answers as the sync admin gives.
        assert sorted(members) == sorted(dqlite.cluster.ClusterAdmin(cluster.addresses).members())

        assert await admin.describe(leader) == (0, 0)
        await admin.weight(leader, 5)
        assert await admin.describe(leader) == (0, 5)

        conn = await dqlite.aio.connect(cluster.addresses, "dumped", autocommit=True)
        await conn.execute("CREATE TABLE t (x)")
        await conn.close()
        files = await admin.dump("dumped")
        assert set(files) == {"dumped", "dumped-wal"} and files["dumped"][:16] == b"SQLite format 3\x00"

        await admin.add(extra.id, extra.address, role=dqlite.cluster.SPARE)
        assert (extra.id, dqlite.cluster.SPARE) in [(n.id, n.role) for n in await admin.members()]
        await admin.assign(extra.id, dqlite.cluster.STANDBY)
        assert (extra.id, dqlite.cluster.STANDBY) in [(n.id, n.role) for n in await admin.members()]
        await admin.remove(extra.id)
        assert extra.id not in [n.id for n in await admin.members()]

        target = next(n for n in cluster.nodes if n.address != leader)
        await admin.transfer(target.id)
        assert await admin.leader() == target.address

    try:
        asyncio.run(main())
    finally:
        extra.stop()
    assert all(node.is_alive() for node in cluster.nodes)


def test_async_node_client_errors(dqlite_cluster):
    leader = dqlite_cluster.wait_for_leader()
    follower = next(a for a in dqlite_cluster.addresses if a != leader)

    async def main():
        async with await AsyncNodeClient.connect(follower) as client:
            with pytest.raises(dqlite.OperationalError, match="not leader"):
                await client.transfer(0)
            # A server error leaves the connection usable.
            assert (await client.leader())[1] == leader
            with pytest.raises(dqlite.OperationalError, match="unknown role"):
                await client.assign(1, 9)
        assert client.closed
        with pytest.raises(dqlite.ConnectionLostError, match="cannot connect"):
            await AsyncNodeClient.connect(f"127.0.0.1:{free_ports(1)[0]}", timeout=1)
        with pytest.raises(dqlite.OperationalError, match="no dqlite leader found"):
            await find_leader([f"127.0.0.1:{free_ports(1)[0]}"], timeout=0.3)

    asyncio.run(main())


def test_find_node_by_id_or_address(dqlite_cluster):
    members = dqlite.cluster.ClusterAdmin(dqlite_cluster.addresses).members()
    first = members[0]
    assert dqlite.cluster.find_node(members, str(first.id)) == first
    assert dqlite.cluster.find_node(members, first.address) == first
    with pytest.raises(dqlite.OperationalError, match="no node '99' in the cluster; members: "):
        dqlite.cluster.find_node(members, "99")


def test_async_admin_and_pool_on_uvloop(dqlite_cluster, dqlite_database):
    uvloop = pytest.importorskip("uvloop")

    async def main():
        admin = AsyncClusterAdmin(dqlite_cluster.addresses)
        leader = await admin.leader()
        assert leader in [m.address for m in await admin.members()]
        async with await dqlite.aio.create_pool(dqlite_cluster.addresses, dqlite_database, max_size=2) as pool:
            await pool.execute("CREATE TABLE t (x)")
            await asyncio.gather(*(pool.execute("INSERT INTO t VALUES (?)", (i,)) for i in range(20)))
            return await pool.fetchall("SELECT count(*) FROM t")

    assert uvloop.run(main()) == [(20,)]
