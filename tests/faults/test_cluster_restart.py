"""The whole cluster restarts under a SQLAlchemy pool that is in use."""

from __future__ import annotations

import time

import pytest
import sqlalchemy as sa
from sqlalchemy import exc

metadata = sa.MetaData()
t = sa.Table("t", metadata, sa.Column("id", sa.Integer, primary_key=True))


def restart_all(cluster) -> None:
    """Stop every node, then start them all again on their data."""
    for node in cluster.nodes:
        node.stop()
    for node in cluster.nodes:
        node.launch()
    for node in cluster.nodes:
        node.wait_ready()
    cluster.wait_for_leader(timeout=20)


@pytest.mark.parametrize("pre_ping", [True, False], ids=["pre_ping", "no_pre_ping"])
def test_pool_recovers_after_a_full_cluster_restart(dqlite_fresh_cluster, pre_ping):
    cluster = dqlite_fresh_cluster
    hosts = "&".join(f"host={a}" for a in cluster.addresses)
    engine = sa.create_engine(f"dqlite:///app?{hosts}&timeout=5", pool_size=4, pool_pre_ping=pre_ping)
    metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(t.insert(), [{"id": i} for i in range(10)])
    # Fill the pool: these connections all die with the cluster.
    held = [engine.connect() for _ in range(4)]
    for conn in held:
        conn.execute(sa.select(1))
        conn.close()

    restart_all(cluster)

    # The application keeps going: at most one failed call per dead pooled
    # connection without pre-ping (each invalidates the pool), none with it.
    errors = 0
    inserted = 0
    deadline = time.monotonic() + 30
    while inserted < 10 and time.monotonic() < deadline:
        try:
            with engine.begin() as conn:
                conn.execute(t.insert().values(id=100 + inserted))
            inserted += 1
        except exc.DBAPIError as error:
            assert error.connection_invalidated, error
            errors += 1
    assert inserted == 10
    assert errors == 0 if pre_ping else errors <= 1
    with engine.connect() as conn:
        ids = conn.execute(sa.select(t.c.id).order_by(t.c.id)).scalars().all()
    assert ids == list(range(10)) + list(range(100, 110))  # nothing committed was lost
    engine.dispose()
