"""A one-node dqlite:// and dqlite+aio:// URL after that node is lost for good,
and the node_store URL option (dqlite.nodestore), on clusters of their own."""

from __future__ import annotations

import asyncio
import json

import pytest
import sqlalchemy as sa
from sqlalchemy import exc
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import create_async_engine

from sqlalchemy_dqlite.base import DqliteDialect

metadata = sa.MetaData()
t = sa.Table("t", metadata, sa.Column("id", sa.Integer, primary_key=True))


@pytest.fixture
def cluster(dqlite_fresh_cluster):
    return dqlite_fresh_cluster


def test_node_store_url_option():
    args, kwargs = DqliteDialect().create_connect_args(make_url("dqlite://h1:9001/app?node_store=/var/lib/app/n.json"))
    assert args == [["h1:9001"], "app"] and kwargs["node_store"] == "/var/lib/app/n.json"
    with pytest.raises(exc.ArgumentError, match="node_store"):
        DqliteDialect().create_connect_args(URL.create("dqlite", host="h1", database="app",
                                                       query={"node_store": ""}))


def ids_sync(engine) -> list[int]:
    with engine.connect() as conn:
        return conn.execute(sa.select(t.c.id).order_by(t.c.id)).scalars().all()


def test_one_node_url_survives_that_nodes_loss_sync(cluster, tmp_path):
    bootstrap = cluster.addresses[0]
    store_file = tmp_path / "nodes.json"
    url = f"dqlite://{bootstrap}/app?node_store={store_file}"
    engine = sa.create_engine(url, pool_pre_ping=True)
    try:
        metadata.create_all(engine)
        with engine.begin() as conn:
            conn.execute(t.insert(), [{"id": i} for i in range(1, 4)])
        cluster.node(1).kill()  # for good
        # The next transaction commits: the pooled connection fails its ping
        # and the new one finds the cluster through the stored members.
        with engine.begin() as conn:
            conn.execute(t.insert().values(id=4))
        # A new engine (a new process would read the file) also finds it.
        other = sa.create_engine(url)
        with other.begin() as conn:
            conn.execute(t.insert().values(id=5))
            assert conn.connection.dbapi_connection.leader != bootstrap
        other.dispose()
        assert ids_sync(engine) == [1, 2, 3, 4, 5]  # nothing acknowledged was lost
    finally:
        engine.dispose()
    assert set(json.loads(store_file.read_text())["clusters"][0]["members"]) == set(cluster.addresses)


def test_one_node_url_survives_that_nodes_loss_aio(cluster, tmp_path):
    bootstrap = cluster.addresses[0]
    url = f"dqlite+aio://{bootstrap}/app?node_store={tmp_path / 'nodes.json'}"

    async def main() -> list[int]:
        engine = create_async_engine(url, pool_pre_ping=True)
        try:
            async with engine.begin() as conn:
                await conn.run_sync(metadata.create_all)
                await conn.execute(t.insert(), [{"id": i} for i in range(1, 4)])
            cluster.node(1).kill()  # for good (blocks the loop briefly: nothing else runs)
            async with engine.begin() as conn:
                await conn.execute(t.insert().values(id=4))
            other = create_async_engine(url)
            async with other.begin() as conn:
                await conn.execute(t.insert().values(id=5))
            await other.dispose()
            async with engine.connect() as conn:
                return (await conn.execute(sa.select(t.c.id).order_by(t.c.id))).scalars().all()
        finally:
            await engine.dispose()

    assert asyncio.run(main()) == [1, 2, 3, 4, 5]


class Engine:
    """A sync face on either engine: ``begin(fn)`` runs ``fn(conn)`` (a sync
    Connection, also for dqlite+aio through ``run_sync``) in one transaction."""

    def __init__(self, driver: str, url: str) -> None:
        self.driver = driver
        if driver == "dqlite":
            self.engine = sa.create_engine(url, pool_pre_ping=True)
        else:
            self.runner = asyncio.Runner()
            self.engine = self.runner.run(self._create(url))

    @staticmethod
    async def _create(url: str):
        return create_async_engine(url, pool_pre_ping=True)

    def begin(self, fn):
        if self.driver == "dqlite":
            with self.engine.begin() as conn:
                return fn(conn)

        async def run():
            async with self.engine.begin() as conn:
                return await conn.run_sync(fn)

        return self.runner.run(run())

    def dispose(self) -> None:
        if self.driver == "dqlite":
            self.engine.dispose()
        else:
            self.runner.run(self.engine.dispose())
            self.runner.close()


@pytest.fixture(params=["dqlite", "aio"])
def engine_of(request):
    """``engine_of(url)``: an ``Engine`` for the test's driver (dqlite:// or dqlite+aio://)."""
    made: list[Engine] = []

    def make(url: str) -> Engine:
        made.append(Engine(request.param, url.replace("dqlite://", f"dqlite+{request.param}://", 1)))
        return made[-1]

    yield make
    for engine in made:
        engine.dispose()


def leader_of(conn) -> str:
    return conn.connection.dbapi_connection.leader


def test_engine_forgets_a_removed_member(cluster, engine_of, tmp_path):
    from dqlite.cluster import ClusterAdmin
    from dqlite.nodestore import node_store

    bootstrap = cluster.addresses[0]
    path = tmp_path / "nodes.json"
    extra = cluster.add_node()
    engine_of(f"dqlite://{bootstrap}/app?node_store={path}").begin(lambda conn: metadata.create_all(conn))
    assert extra.address in node_store(path).members(bootstrap)
    ClusterAdmin(cluster.addresses, timeout=30).remove(extra.id)
    engine_of(f"dqlite://{bootstrap}/app?node_store={path}").begin(lambda conn: conn.execute(t.insert().values(id=1)))
    survivors = {n.address for n in cluster.nodes if n is not extra}
    assert set(node_store(path).members(bootstrap)) == survivors
    assert set(json.loads(path.read_text())["clusters"][0]["members"]) == survivors


@pytest.mark.parametrize("content", [b"{not json", b'{"format": 1, "clusters": [{"members": 7}]}'])
def test_engine_ignores_a_corrupt_store_file(cluster, engine_of, tmp_path, caplog, content):
    import logging

    path = tmp_path / "nodes.json"
    path.write_bytes(content)
    with caplog.at_level(logging.WARNING, logger="dqlite.nodestore"):
        engine = engine_of(f"dqlite://{cluster.addresses[0]}/app?node_store={path}")
        engine.begin(lambda conn: metadata.create_all(conn))
    assert "is corrupt, ignoring it" in caplog.text or "is unreadable, ignoring it" in caplog.text
    engine.begin(lambda conn: conn.execute(t.insert().values(id=1)))
    assert set(json.loads(path.read_text())["clusters"][0]["members"]) == set(cluster.addresses)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["nodes.json"]  # written atomically: no leftovers
