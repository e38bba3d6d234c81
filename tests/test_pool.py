"""Connection pools without SQLAlchemy: dqlite.pool (threads) and dqlite.aio.create_pool (asyncio)."""

from __future__ import annotations

import asyncio
import os
import threading
import time

import pytest

import dqlite
import dqlite.aio
from dqlite.pool import ConnectionPool, PoolClosedError, PoolTimeoutError
from readme import localised, python_block, run, run_awaiting


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.fixture
def table(dqlite_cluster, dqlite_database):
    with dqlite.connect(dqlite_cluster.addresses, dqlite_database, autocommit=True) as conn:
        conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
    return dqlite_cluster.addresses, dqlite_database


# -- sync --------------------------------------------------------------------


def test_sync_pool_rolls_back_on_release_and_restores_settings(table):
    addresses, db = table
    with ConnectionPool(addresses, db, min_size=1, max_size=1) as pool:
        assert pool.size == 1 and pool.idle == 1
        with pool.acquire() as conn:
            conn.autocommit = True
            conn.row_factory = dqlite.Row
        with pool.acquire() as conn:
            assert not conn.autocommit
            conn.execute("INSERT INTO t VALUES (1, 'never committed')")
        with pool.acquire() as again:
            assert again is conn  # reused
            assert not again.autocommit and again.row_factory is None
            assert again.execute("SELECT count(*) FROM t").fetchone() == (0,)
        assert pool.execute("INSERT INTO t VALUES (?, ?)", (2, "x")) == 1
        assert pool.fetchall("SELECT id, v FROM t") == [(2, "x")]
        assert pool.fetchone("SELECT v FROM t WHERE id = ?", (2,)) == ("x",)
        assert pool.executemany("INSERT INTO t VALUES (?, ?)", [(3, "a"), (4, "b")]) == 2
    assert pool.closed and pool.idle == 0
    with pytest.raises(PoolClosedError):
        pool.getconn()


def test_sync_pool_waits_for_a_free_connection_then_times_out(table):
    addresses, db = table
    with ConnectionPool(addresses, db, min_size=0, max_size=1, acquire_timeout=0.2) as pool:
        conn = pool.getconn()
        with pytest.raises(PoolTimeoutError, match="max_size=1"):
            pool.getconn()
        got: list = []
        waiter = threading.Thread(target=lambda: got.append(pool.getconn(timeout=30)))
        waiter.start()
        pool.putconn(conn)
        waiter.join(30)
        assert got == [conn]
        pool.putconn(conn)
        with pytest.raises(dqlite.InterfaceError, match="does not belong"):
            pool.putconn(conn)


def test_sync_pool_replaces_old_and_idle_connections(table):
    addresses, db = table
    with ConnectionPool(addresses, db, min_size=0, max_size=2, max_lifetime=0.001) as pool:
        with pool.acquire() as first:
            time.sleep(0.01)
        assert first.closed and pool.size == 0
    with ConnectionPool(addresses, db, min_size=0, max_size=2, max_idle=0.001) as pool:
        with pool.acquire() as first:
            pass
        assert pool.idle == 1
        time.sleep(0.01)
        with pool.acquire() as second:
            assert second is not first
        assert first.closed
        # Given back, a connection closes the others idle too long.
        third = pool.getconn()
        assert third is second
        fourth = pool.getconn()
        pool.putconn(fourth)
        time.sleep(0.01)
        pool.putconn(third)
        assert fourth.closed  # (third may be too, by now: max_idle is 1 ms)


def test_sync_pool_drops_connections_after_a_lost_leader(dqlite_fresh_cluster, transfer_away):
    cluster = dqlite_fresh_cluster
    with dqlite.connect(cluster.addresses, "db", autocommit=True) as conn:
        conn.execute("CREATE TABLE t (x)")
    with ConnectionPool(cluster.addresses, "db", min_size=2, max_size=2) as pool:
        other = pool.getconn()
        with pytest.raises(dqlite.ConnectionLostError):
            with pool.acquire() as conn:
                conn.execute("INSERT INTO t VALUES (1)")
                transfer_away(cluster)
                conn.execute("INSERT INTO t VALUES (2)")
        assert conn.closed
        pool.putconn(other)  # opened before the loss: it goes too
        assert other.closed and pool.size == 0
        assert pool.execute("INSERT INTO t VALUES (3)") == 1
        assert pool.fetchall("SELECT x FROM t") == [(3,)]


# -- asyncio -----------------------------------------------------------------


def test_async_pool_rolls_back_limits_and_closes(table):
    addresses, db = table

    async def main():
        pool = await dqlite.aio.create_pool(addresses, db, min_size=1, max_size=1, acquire_timeout=0.2)
        assert pool.size == 1
        async with pool.acquire() as conn:
            await conn.execute("INSERT INTO t VALUES (1, 'never committed')")
            with pytest.raises(PoolTimeoutError):
                await pool.getconn()
        async with pool.acquire() as again:
            assert again is conn
            assert await (await again.execute("SELECT count(*) FROM t")).fetchall() == [(0,)]
        assert await pool.execute("INSERT INTO t VALUES (?, ?)", (2, "x")) == 1
        assert await pool.fetchall("SELECT id, v FROM t") == [(2, "x")]
        assert await pool.fetchone("SELECT v FROM t") == ("x",)
        plain = await pool.acquire()  # awaited, not entered: given back by release()
        assert plain is conn
        await pool.release(plain)
        with pytest.raises(ValueError, match="boom"):
            async with pool.acquire():
                raise ValueError("boom")  # not a lost leader: the connection stays
        assert pool.idle == 1 and not conn.closed
        # A waiter gets the connection given back, and close() wakes the others.
        held = await pool.getconn(timeout=5)
        waiter = asyncio.ensure_future(pool.getconn(timeout=30))
        await asyncio.sleep(0)
        await pool.putconn(held)
        assert await waiter is held
        second = asyncio.ensure_future(pool.getconn(timeout=30))
        await asyncio.sleep(0)
        await pool.close()
        with pytest.raises(PoolClosedError):
            await second
        await pool.putconn(held)
        assert held.closed and pool.size == 0
        # A task cancelled while it holds a connection: that connection goes
        # (its socket may hold half an answer), the idle ones stay.
        pool = await dqlite.aio.create_pool(addresses, db, min_size=2, max_size=2, acquire_timeout=5)
        entered = asyncio.Event()

        async def hold():
            async with pool.acquire():
                entered.set()
                await asyncio.sleep(3600)

        task = asyncio.ensure_future(hold())
        await entered.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert pool.size == 1 and pool.idle == 1
        await pool.close()

    asyncio.run(main())


def test_async_pool_drops_connections_after_a_lost_leader(dqlite_fresh_cluster, transfer_away):
    cluster = dqlite_fresh_cluster
    with dqlite.connect(cluster.addresses, "db", autocommit=True) as conn:
        conn.execute("CREATE TABLE t (x)")

    async def main():
        pool = await dqlite.aio.create_pool(cluster.addresses, "db", min_size=2, max_size=2)
        other = await pool.getconn()
        with pytest.raises(dqlite.ConnectionLostError):
            async with pool.acquire() as conn:
                await conn.execute("INSERT INTO t VALUES (1)")
                await asyncio.to_thread(transfer_away, cluster)
                await conn.execute("INSERT INTO t VALUES (2)")
        assert conn.closed
        await pool.putconn(other)
        assert other.closed and pool.size == 0
        assert await pool.execute("INSERT INTO t VALUES (3)") == 1
        assert await pool.fetchall("SELECT x FROM t") == [(3,)]
        await pool.close()

    asyncio.run(main())


# -- load ----------------------------------------------------------------------


def test_load_200_tasks_and_16_threads_no_leaked_sockets(table):
    addresses, db = table
    start = open_fds()

    async def task(pool, n: int) -> None:
        async with pool.acquire() as conn:
            await conn.execute("INSERT INTO t VALUES (?, ?)", (n, f"task {n}"))
            await conn.commit()
        assert await pool.fetchone("SELECT v FROM t WHERE id = ?", (n,)) == (f"task {n}",)

    async def tasks() -> None:
        async with await dqlite.aio.create_pool(addresses, db, min_size=2, max_size=8) as pool:
            await asyncio.gather(*(task(pool, n) for n in range(200)))
            assert pool.size <= 8

    asyncio.run(tasks())
    assert open_fds() == start

    errors: list[BaseException] = []
    with ConnectionPool(addresses, db, min_size=2, max_size=8) as pool:
        def worker(w: int) -> None:
            try:
                for i in range(25):
                    n = 1000 + w * 100 + i
                    with pool.acquire() as conn:
                        conn.execute("INSERT INTO t VALUES (?, ?)", (n, f"thread {w}"))
                        conn.commit()
                    assert pool.fetchone("SELECT v FROM t WHERE id = ?", (n,)) == (f"thread {w}",)
            except BaseException as exc:  # reported below
                errors.append(exc)

        threads = [threading.Thread(target=worker, args=(w,)) for w in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert pool.size <= 8
    assert errors == []
    assert open_fds() == start
    rows = dqlite.connect(addresses, db).execute("SELECT count(*), count(DISTINCT id) FROM t").fetchall()
    assert rows == [(600, 600)]


def test_readme_pool_examples_run(dqlite_cluster, dqlite_database):
    with dqlite.connect(dqlite_cluster.addresses, dqlite_database, autocommit=True) as conn:
        conn.execute("CREATE TABLE kv (k TEXT PRIMARY KEY, v BLOB)")

    def local(marker: str) -> str:
        return localised(python_block(marker), dqlite_cluster.addresses, dqlite_database)

    assert run(local("pool = ConnectionPool("))["rows"] == [("a", b"1")]
    with dqlite.connect(dqlite_cluster.addresses, dqlite_database, autocommit=True) as conn:
        conn.execute("DELETE FROM kv")
    assert run_awaiting(local("await dqlite.aio.create_pool("), "rows") == [("a", b"1")]
