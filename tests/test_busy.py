"""A write that finds the database locked waits for the lock, as with sqlite3's timeout.

dqlite answers SQLITE_BUSY at once while another connection holds the write
lock; the driver runs the statement again for up to ``busy_timeout`` seconds.
"""

import asyncio
import logging
import threading

import pytest

import dqlite
import dqlite.aio

RETRY_LOG = "database is locked"


@pytest.fixture
def table(dqlite_cluster, dqlite_database):
    with dqlite.connect(dqlite_cluster.addresses, dqlite_database, autocommit=True) as conn:
        conn.execute("CREATE TABLE t (x INTEGER)")
    return dqlite_cluster.addresses, dqlite_database


def rows(address, database):
    with dqlite.connect(address, database) as conn:
        return sorted(x for (x,) in conn.execute("SELECT x FROM t").fetchall())


def test_a_write_waits_for_the_lock_holder_to_commit(table, caplog):
    holder = dqlite.connect(*table)
    waiter = dqlite.connect(*table)
    holder.execute("INSERT INTO t VALUES (1)")  # holds the write lock
    release = threading.Timer(0.3, holder.commit)
    release.start()
    with caplog.at_level(logging.DEBUG, logger="dqlite"):
        waiter.execute("INSERT INTO t VALUES (2)")
        waiter.commit()
        release.join()
        holder.execute("INSERT INTO t VALUES (3)")
        release = threading.Timer(0.3, holder.commit)
        release.start()
        waiter.executemany("INSERT INTO t VALUES (?)", iter([(4,), (5,), (6,)]))  # a generator, run again
        waiter.commit()
    release.join()
    assert RETRY_LOG in caplog.text
    assert rows(*table) == [1, 2, 3, 4, 5, 6]
    holder.close()
    waiter.close()


def test_asyncio_waits_for_the_lock_holder_too(table):
    async def main():
        holder = await dqlite.aio.connect(*table)
        waiter = await dqlite.aio.connect(*table, autocommit=True)
        await holder.execute("INSERT INTO t VALUES (1)")

        async def release():
            await asyncio.sleep(0.3)
            await holder.commit()

        releasing = asyncio.create_task(release())
        await waiter.execute("INSERT INTO t VALUES (2)")  # autocommit: commits by itself
        await releasing
        await holder.close()
        await waiter.close()

    asyncio.run(main())
    assert rows(*table) == [1, 2]


def test_the_wait_is_bounded_and_zero_means_none(table, caplog):
    holder = dqlite.connect(*table)
    holder.execute("INSERT INTO t VALUES (1)")
    for busy_timeout, retried in ((0, False), (0.2, True)):
        waiter = dqlite.connect(*table, busy_timeout=busy_timeout)
        caplog.clear()
        with caplog.at_level(logging.DEBUG, logger="dqlite"), pytest.raises(dqlite.OperationalError) as raised:
            waiter.execute("INSERT INTO t VALUES (2)")
        assert raised.value.code == 5 and "locked" in str(raised.value)
        assert (RETRY_LOG in caplog.text) == retried
        with pytest.raises(dqlite.OperationalError):
            waiter.executemany("INSERT INTO t VALUES (?)", [(3,), (4,)])
        waiter.rollback()
        waiter.close()
    holder.commit()
    assert rows(*table) == [1]  # nothing of the refused statements
    holder.close()
    with pytest.raises(dqlite.InterfaceError, match="busy_timeout"):
        dqlite.connect(*table, busy_timeout=-1)


def test_a_stale_snapshot_is_not_waited_for_in_deferred_mode(table, caplog):
    # (The default mode, AUTO, starts such a transaction over: test_transaction_modes.py.)
    reader = dqlite.connect(*table, transaction_mode="DEFERRED")
    assert reader.execute("SELECT count(*) FROM t").fetchall() == [(0,)]  # its snapshot
    with dqlite.connect(*table) as writer:
        writer.execute("INSERT INTO t VALUES (1)")  # committed by the with block
    with caplog.at_level(logging.DEBUG, logger="dqlite"), pytest.raises(dqlite.OperationalError) as raised:
        reader.execute("INSERT INTO t VALUES (2)")
    assert raised.value.code == 517  # SQLITE_BUSY_SNAPSHOT: only a new transaction helps
    assert RETRY_LOG not in caplog.text
    reader.rollback()
    reader.execute("INSERT INTO t VALUES (2)")
    reader.commit()
    assert rows(*table) == [1, 2]
    reader.close()
