"""Leader changes under a SQLAlchemy engine, on clusters of their own."""

from __future__ import annotations

import asyncio

import pytest
import sqlalchemy as sa
from sqlalchemy import exc
from sqlalchemy.ext.asyncio import create_async_engine

metadata = sa.MetaData()
t = sa.Table("t", metadata, sa.Column("id", sa.Integer, primary_key=True), sa.Column("v", sa.String(20)))


def url_of(cluster, driver: str = "dqlite") -> str:
    hosts = "&".join(f"host={a}" for a in cluster.addresses)
    return f"dqlite+{driver}:///app?{hosts}&timeout=10"


def leader_of(conn) -> str:
    return conn.connection.dbapi_connection.leader


@pytest.fixture
def cluster(dqlite_fresh_cluster):
    return dqlite_fresh_cluster


def test_pre_ping_moves_to_the_new_leader(cluster, transfer_away):
    engine = sa.create_engine(url_of(cluster), pool_pre_ping=True, pool_size=3)
    metadata.create_all(engine)
    conns = [engine.connect() for _ in range(3)]
    for conn in conns:
        assert leader_of(conn) == cluster.leader_address()
        conn.close()
    new_leader = transfer_away(cluster)
    for i in range(5):
        with engine.begin() as conn:  # no error: the ping replaced the stale connections
            conn.execute(t.insert().values(id=i, v="after"))
            assert leader_of(conn) == new_leader
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(t)).scalar() == 5
    engine.dispose()


def test_without_pre_ping_a_deposed_leaders_refusal_is_run_again_on_the_new_leader(cluster, transfer_away):
    """The old leader refuses the first statement of each stale pooled
    connection before running it: that connection moves to the new leader and
    runs it there, without an error."""
    engine = sa.create_engine(url_of(cluster), pool_size=3)
    metadata.create_all(engine)
    conns = [engine.connect() for _ in range(3)]
    for conn in conns:
        conn.close()
    new_leader = transfer_away(cluster)
    conns = [engine.connect() for _ in range(3)]
    for i, conn in enumerate(conns):
        conn.execute(t.insert().values(id=i, v="moved"))
        conn.commit()
        assert leader_of(conn) == new_leader
    for conn in conns:
        conn.close()
    with engine.connect() as conn:
        assert conn.execute(sa.select(t.c.id)).scalars().all() == [0, 1, 2]
    engine.dispose()


def test_without_pre_ping_a_dead_leader_costs_one_error_then_every_connection_is_fresh(cluster):
    engine = sa.create_engine(url_of(cluster), pool_size=3)
    metadata.create_all(engine)
    conns = [engine.connect() for _ in range(3)]
    stale = [c.connection.dbapi_connection for c in conns]
    for conn in conns:
        conn.close()
    cluster.leader_node().kill()
    new_leader = cluster.wait_for_leader()
    with pytest.raises(exc.DBAPIError) as info, engine.begin() as conn:
        conn.execute(t.insert().values(id=1, v="lost"))
    assert info.value.connection_invalidated  # is_disconnect recognised the lost leader
    # The whole pool was invalidated: no stale connection is handed out again.
    conns = [engine.connect() for _ in range(3)]
    for conn in conns:
        assert conn.connection.dbapi_connection not in stale
        assert leader_of(conn) == new_leader
        conn.close()
    with engine.begin() as conn:
        conn.execute(t.insert().values(id=2, v="ok"))
    with engine.connect() as conn:
        assert conn.execute(sa.select(t.c.id)).scalars().all() == [2]
    engine.dispose()


def test_transaction_lost_with_the_leader_is_rolled_back(cluster, transfer_away):
    engine = sa.create_engine(url_of(cluster))
    metadata.create_all(engine)
    with pytest.raises(exc.DBAPIError) as info, engine.begin() as conn:
        conn.execute(t.insert().values(id=1, v="lost"))
        transfer_away(cluster)
        conn.execute(t.insert().values(id=2, v="lost"))
    assert info.value.connection_invalidated
    with engine.begin() as conn:
        conn.execute(t.insert().values(id=3, v="next"))
    with engine.connect() as conn:
        assert conn.execute(sa.select(t.c.id)).scalars().all() == [3]
    engine.dispose()


def test_async_engine_follows_the_leader(cluster, transfer_away):
    async def main():
        engine = create_async_engine(url_of(cluster, "aio"), pool_pre_ping=True)
        async with engine.begin() as conn:
            await conn.run_sync(metadata.create_all)
            await conn.execute(t.insert().values(id=1, v="before"))
        new_leader = transfer_away(cluster)
        async with engine.begin() as conn:
            await conn.execute(t.insert().values(id=2, v="after"))
            raw = await conn.get_raw_connection()
            assert raw.driver_connection.leader == new_leader
        async with engine.connect() as conn:
            assert (await conn.execute(sa.select(t.c.id))).scalars().all() == [1, 2]
        await engine.dispose()

    asyncio.run(main())
