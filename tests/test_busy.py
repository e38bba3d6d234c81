"""A write that finds the database locked waits for the lock, as with sqlite3's timeout.

dqlite answers SQLITE_BUSY at once while another connection holds the write
lock; the driver runs the statement again for up to ``busy_timeout`` seconds.
"""

import asyncio
import contextlib
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


class _OnRetry(logging.Handler):
    """Calls ``action`` once a waiter logs that it found the database locked."""

    def __init__(self, action):
        super().__init__(logging.DEBUG)
        self.action = action

    def emit(self, record):
        if RETRY_LOG in record.getMessage():
            self.action()


@contextlib.contextmanager
def on_retry(action):
    logger = logging.getLogger("dqlite")
    handler = _OnRetry(action)
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)


def released_once_waited_for(holder):
    """A thread that commits ``holder`` once a waiter has found the database
    locked and is waiting (not after a delay: on a busy machine the waiter
    could come after it, and then nothing waited).  Logging at DEBUG on
    "dqlite" must be on.  Join it after the waiter's statement."""
    waited = threading.Event()

    def release():
        waited.wait(30)  # then release anyway: the waiter's failure tells
        holder.commit()

    thread = threading.Thread(target=release)
    thread.start()
    return thread, on_retry(waited.set)


def rows(address, database):
    with dqlite.connect(address, database) as conn:
        return sorted(x for (x,) in conn.execute("SELECT x FROM t").fetchall())


def test_a_write_waits_for_the_lock_holder_to_commit(table, caplog):
    holder = dqlite.connect(*table)
    waiter = dqlite.connect(*table)
    holder.execute("INSERT INTO t VALUES (1)")  # holds the write lock
    with caplog.at_level(logging.DEBUG, logger="dqlite"):
        release, watching = released_once_waited_for(holder)
        with watching:
            waiter.execute("INSERT INTO t VALUES (2)")
        release.join()
        waiter.commit()
        assert RETRY_LOG in caplog.text
        caplog.clear()
        holder.execute("INSERT INTO t VALUES (3)")
        release, watching = released_once_waited_for(holder)
        with watching:
            waiter.executemany("INSERT INTO t VALUES (?)", iter([(4,), (5,), (6,)]))  # a generator, run again
        release.join()
        waiter.commit()
        assert RETRY_LOG in caplog.text
    assert rows(*table) == [1, 2, 3, 4, 5, 6]
    holder.close()
    waiter.close()


def test_asyncio_waits_for_the_lock_holder_too(table, caplog):
    async def main():
        holder = await dqlite.aio.connect(*table)
        waiter = await dqlite.aio.connect(*table, autocommit=True)
        await holder.execute("INSERT INTO t VALUES (1)")
        waited = asyncio.Event()

        async def release():
            await waited.wait()  # the waiter found the database locked: it waits
            await holder.commit()

        releasing = asyncio.create_task(release())
        with on_retry(waited.set):
            await waiter.execute("INSERT INTO t VALUES (2)")  # autocommit: commits by itself
        await releasing
        await holder.close()
        await waiter.close()

    with caplog.at_level(logging.DEBUG, logger="dqlite"):
        asyncio.run(main())
    assert RETRY_LOG in caplog.text
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
