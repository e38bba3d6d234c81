"""How the transactions the driver begins take the write lock (``transaction_mode``).

The default, AUTO: reads share a snapshot and take no lock; a transaction's
first write takes the lock, and when it cannot (another connection holds it,
or committed since the snapshot) the transaction starts over from that write
once the lock is free.  So concurrent read-then-write transactions wait for
each other instead of failing with "database is locked", and readers never
hold the lock.  IMMEDIATE takes the lock with the transaction's first
statement; DEFERRED is SQLite's plain BEGIN.
"""

from __future__ import annotations

import asyncio
import collections
import threading

import pytest
import sqlalchemy as sa
from sqlalchemy import orm
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine

import dqlite
import dqlite.aio

ACCOUNTS = 8
START = 1000


@pytest.fixture
def accounts(dqlite_cluster, dqlite_database):
    """The database's ``acct`` table: ACCOUNTS accounts of START each."""
    with dqlite.connect(dqlite_cluster.addresses, dqlite_database) as conn:
        conn.execute("CREATE TABLE acct (id INTEGER PRIMARY KEY, balance INTEGER NOT NULL)")
        conn.executemany("INSERT INTO acct VALUES (?, ?)", [(i, START) for i in range(ACCOUNTS)])
    return dqlite_cluster.addresses, dqlite_database


def balances(address, database) -> list[int]:
    with dqlite.connect(address, database) as conn:
        return [b for (b,) in conn.execute("SELECT balance FROM acct ORDER BY id").fetchall()]


def write_lock_is_held(address, database) -> bool:
    """True if another connection's write finds the database locked for a whole second.

    Not just now: a write found the database locked once right after the holder
    rolled back (on 1.18.7, after hundreds of tests; the cause was not
    established), while a lock a connection holds stays.
    """
    with dqlite.connect(address, database, busy_timeout=1.0, autocommit=True) as conn:
        try:
            conn.execute("UPDATE acct SET balance = balance WHERE id = 0")
        except dqlite.OperationalError as error:
            assert error.code == 5, error
            return True
    return False


# -- the DB-API, both APIs ---------------------------------------------------------


def test_the_default_mode_is_auto(accounts, api_connect):
    conn = api_connect(*accounts)
    assert conn.transaction_mode == "AUTO"
    conn.transaction_mode = "immediate"
    assert conn.transaction_mode == "IMMEDIATE"
    with pytest.raises(dqlite.InterfaceError, match="transaction_mode"):
        conn.transaction_mode = "sometimes"
    with pytest.raises(dqlite.InterfaceError, match="transaction_mode"):
        api_connect(*accounts, transaction_mode="LAZY")


def test_a_read_then_write_transaction_waits_for_the_lock_holder(accounts, api_connect):
    reader = api_connect(*accounts)
    # The reader's snapshot is taken, then another connection takes the lock
    # (a sync connection: it commits from a timer's thread).
    assert reader.execute("SELECT balance FROM acct WHERE id = 1").fetchall() == [(START,)]
    holder = dqlite.connect(*accounts)
    holder.execute("UPDATE acct SET balance = balance + 5 WHERE id = 1")
    releaser = threading.Timer(0.2, holder.commit)
    releaser.start()
    # The write waits for the commit, then runs again in a new transaction
    # (the old snapshot is stale by then): it neither fails nor loses the +5.
    reader.execute("UPDATE acct SET balance = balance - 1 WHERE id = 1")
    reader.commit()
    releaser.join()
    holder.close()
    assert balances(*accounts)[1] == START + 4


def test_a_stale_snapshot_starts_the_transaction_over_with_its_savepoints(accounts, api_connect):
    reader = api_connect(*accounts)
    writer = api_connect(*accounts)
    assert reader.execute("SELECT count(*) FROM acct").fetchall() == [(ACCOUNTS,)]
    reader.execute("SAVEPOINT outer_sp")
    writer.execute("UPDATE acct SET balance = 0 WHERE id = 2")
    writer.commit()  # the reader's snapshot is stale now: SQLITE_BUSY_SNAPSHOT
    reader.execute("UPDATE acct SET balance = balance + 1 WHERE id = 2")
    # The savepoint made while reading was made again in the new transaction.
    reader.execute("RELEASE outer_sp")
    reader.commit()
    assert balances(*accounts)[2] == 1


def test_an_explicit_begin_is_not_started_over(accounts, api_connect):
    reader = api_connect(*accounts, autocommit=True)
    writer = api_connect(*accounts)
    reader.execute("BEGIN")
    reader.execute("SELECT count(*) FROM acct").fetchall()
    writer.execute("UPDATE acct SET balance = 0 WHERE id = 3")
    writer.commit()
    with pytest.raises(dqlite.OperationalError) as raised:
        reader.execute("UPDATE acct SET balance = 7 WHERE id = 3")
    assert raised.value.code == 517  # the application asked for this snapshot
    reader.execute("ROLLBACK")
    assert balances(*accounts)[3] == 0


def test_a_transaction_that_wrote_is_not_started_over(accounts, api_connect):
    reader = api_connect(*accounts)
    writer = api_connect(*accounts, busy_timeout=0)
    reader.execute("UPDATE acct SET balance = balance + 1 WHERE id = 4")  # holds the lock
    with pytest.raises(dqlite.OperationalError) as raised:
        writer.execute("SELECT balance FROM acct WHERE id = 4").fetchall()
        writer.execute("UPDATE acct SET balance = 0 WHERE id = 4")
    assert raised.value.code == 5  # busy_timeout=0: no wait
    writer.rollback()
    reader.commit()
    assert balances(*accounts)[4] == START + 1


@pytest.mark.parametrize("mode", ["AUTO", "DEFERRED"])
def test_reads_take_no_lock_and_an_idle_connection_holds_none(accounts, api_connect, mode):
    conn = api_connect(*accounts, transaction_mode=mode)
    assert conn.execute("SELECT balance FROM acct WHERE id = 0").fetchall() == [(START,)]
    assert conn.in_transaction
    assert not write_lock_is_held(*accounts)
    conn.rollback()  # (the next transaction's deferred BEGIN may go out with it)
    assert not write_lock_is_held(*accounts)
    assert conn.execute("SELECT balance FROM acct WHERE id = 0").fetchall() == [(START,)]
    conn.commit()


def test_immediate_takes_the_lock_with_the_first_statement_and_never_ahead(accounts, api_connect):
    conn = api_connect(*accounts, transaction_mode="IMMEDIATE")
    conn.commit()
    assert not write_lock_is_held(*accounts)  # nothing ran: no BEGIN was sent
    assert conn.execute("SELECT balance FROM acct WHERE id = 0").fetchall() == [(START,)]
    assert write_lock_is_held(*accounts)
    conn.rollback()
    assert not write_lock_is_held(*accounts)  # the next BEGIN waits for its statement
    conn.execute("UPDATE acct SET balance = 1 WHERE id = 0")
    assert write_lock_is_held(*accounts)
    conn.commit()
    assert not write_lock_is_held(*accounts)
    assert balances(*accounts)[0] == 1


@pytest.mark.parametrize("mode", ["AUTO", "IMMEDIATE"])
def test_immediate_waits_for_the_lock_instead_of_failing(accounts, mode):
    holder = dqlite.connect(*accounts)
    waiter = dqlite.connect(*accounts, transaction_mode=mode)
    holder.execute("UPDATE acct SET balance = balance + 1 WHERE id = 5")
    releaser = threading.Timer(0.2, holder.commit)
    releaser.start()
    assert waiter.execute("SELECT balance FROM acct WHERE id = 5").fetchall()[0][0] in (START, START + 1)
    waiter.executemany("UPDATE acct SET balance = balance + ? WHERE id = ?", [(10, 5), (100, 6)])
    waiter.commit()
    releaser.join()
    assert balances(*accounts)[5:7] == [START + 11, START + 100]
    holder.close()
    waiter.close()


# -- concurrency: threads and tasks at once ------------------------------------------


def transfer_plan(worker: int, count: int) -> list[tuple[int, int]]:
    return [((worker + i) % ACCOUNTS, (worker + i + 3) % ACCOUNTS) for i in range(count)]


def test_concurrent_read_then_write_transactions_all_commit(accounts):
    """4 threads (sync API) and 4 tasks (asyncio API), each transaction reading a
    balance and then moving 1 between two accounts: none fails."""
    failures: collections.Counter = collections.Counter()
    committed = []

    def thread(worker: int) -> None:
        with dqlite.connect(*accounts) as conn:
            for src, dst in transfer_plan(worker, 40):
                try:
                    conn.execute("SELECT balance FROM acct WHERE id = ?", (src,)).fetchall()
                    conn.execute("UPDATE acct SET balance = balance - 1 WHERE id = ?", (src,))
                    conn.execute("UPDATE acct SET balance = balance + 1 WHERE id = ?", (dst,))
                    conn.commit()
                    committed.append(worker)
                except dqlite.Error as error:
                    failures[str(error)] += 1
                    conn.rollback()

    async def task(worker: int) -> None:
        conn = await dqlite.aio.connect(*accounts)
        for src, dst in transfer_plan(worker, 40):
            try:
                await (await conn.execute("SELECT balance FROM acct WHERE id = ?", (src,))).fetchall()
                await conn.execute("UPDATE acct SET balance = balance - 1 WHERE id = ?", (src,))
                await conn.execute("UPDATE acct SET balance = balance + 1 WHERE id = ?", (dst,))
                await conn.commit()
                committed.append(worker)
            except dqlite.Error as error:
                failures[str(error)] += 1
                await conn.rollback()
        await conn.close()

    async def tasks() -> None:
        await asyncio.gather(*(task(w) for w in range(4, 8)))

    threads = [threading.Thread(target=thread, args=(w,)) for w in range(4)]
    threads.append(threading.Thread(target=asyncio.run, args=(tasks(),)))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures
    assert len(committed) == 8 * 40
    assert sum(balances(*accounts)) == ACCOUNTS * START


# -- SQLAlchemy: the sync and the async engine with default settings -----------------


class Base(orm.DeclarativeBase):
    pass


class Account(Base):
    __tablename__ = "acct"
    id: orm.Mapped[int] = orm.mapped_column(primary_key=True)
    balance: orm.Mapped[int]


class Entry(Base):
    __tablename__ = "entry"
    id: orm.Mapped[int] = orm.mapped_column(primary_key=True)
    account: orm.Mapped[int]
    amount: orm.Mapped[int]


def test_engines_read_then_write_concurrently_without_failures(accounts):
    """8 threads on the sync engine (Core) and 8 tasks on the async engine (ORM,
    ``async_sessionmaker.begin()``: two SELECTs, ``session.add``, commit)."""
    address, database = accounts
    hosts = "&".join(f"host={a}" for a in address)
    sync_engine = sa.create_engine(f"dqlite:///{database}?{hosts}", pool_size=8)
    async_engine = create_async_engine(f"dqlite+aio:///{database}?{hosts}", pool_size=8)
    Base.metadata.create_all(sync_engine, tables=[Entry.__table__])
    acct = Account.__table__
    failures: collections.Counter = collections.Counter()

    def thread(worker: int) -> None:
        for src, dst in transfer_plan(worker, 15):
            try:
                with sync_engine.begin() as conn:
                    conn.execute(sa.select(acct.c.balance).where(acct.c.id == src)).scalar_one()
                    conn.execute(acct.update().where(acct.c.id == src).values(balance=acct.c.balance - 1))
                    conn.execute(acct.update().where(acct.c.id == dst).values(balance=acct.c.balance + 1))
            except sa.exc.DBAPIError as error:
                failures[str(error.orig)] += 1

    async def task(worker: int, sessions: async_sessionmaker) -> None:
        for src, _ in transfer_plan(worker, 15):
            try:
                async with sessions.begin() as session:
                    await session.get(Account, src)
                    await session.scalar(sa.select(sa.func.count()).select_from(Entry))
                    session.add(Entry(account=src, amount=1))
            except sa.exc.DBAPIError as error:
                failures[str(error.orig)] += 1

    async def tasks() -> None:
        sessions = async_sessionmaker(async_engine, expire_on_commit=False)
        await asyncio.gather(*(task(w, sessions) for w in range(8)))
        await async_engine.dispose()

    threads = [threading.Thread(target=thread, args=(w,)) for w in range(8)]
    threads.append(threading.Thread(target=asyncio.run, args=(tasks(),)))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with sync_engine.connect() as conn:
        entries = conn.execute(sa.select(sa.func.count()).select_from(Entry)).scalar_one()
    sync_engine.dispose()
    assert not failures
    assert entries == 8 * 15
    assert sum(balances(*accounts)) == ACCOUNTS * START


def test_engine_modes_per_engine_connection_and_url(accounts):
    address, database = accounts
    hosts = "&".join(f"host={a}" for a in address)
    url = f"dqlite:///{database}?{hosts}"
    for engine, expected in (
        (sa.create_engine(url), "AUTO"),
        (sa.create_engine(url + "&transaction_mode=immediate"), "IMMEDIATE"),
        (sa.create_engine(url, begin_mode="DEFERRED"), "DEFERRED"),
    ):
        with engine.connect() as conn:
            assert conn.connection.dbapi_connection.transaction_mode == expected
            with conn.execution_options(dqlite_begin="IMMEDIATE").begin():
                assert conn.connection.dbapi_connection.transaction_mode == "IMMEDIATE"
        with engine.connect() as conn:  # the option ended with the checkout
            assert conn.connection.dbapi_connection.transaction_mode == expected
        engine.dispose()
    with pytest.raises(sa.exc.ArgumentError, match="BEGIN mode"):
        sa.create_engine(url + "&transaction_mode=sometimes").connect()


@pytest.mark.parametrize("aio", [False, True], ids=["sync", "aio"])
def test_a_pooled_point_read_takes_no_lock_and_the_idle_pool_holds_none(accounts, aio):
    address, database = accounts
    url = f"dqlite{'+aio' if aio else ''}:///{database}?" + "&".join(f"host={a}" for a in address)
    acct = Account.__table__
    point = sa.select(acct.c.balance).where(acct.c.id == 0)

    if not aio:
        engine = sa.create_engine(url, pool_size=2)
        with engine.connect() as conn:
            assert conn.execute(point).scalar_one() == START
            assert conn.in_transaction() and not write_lock_is_held(*accounts)
        assert not write_lock_is_held(*accounts)  # returned to the pool
        with engine.connect() as conn:
            assert conn.execute(point).scalar_one() == START  # in the transaction begun ahead
        engine.dispose()
        return

    async def main() -> None:
        engine = create_async_engine(url, pool_size=2)
        async with engine.connect() as conn:
            assert (await conn.execute(point)).scalar_one() == START
            assert conn.in_transaction() and not write_lock_is_held(*accounts)
        assert not write_lock_is_held(*accounts)
        async with engine.connect() as conn:
            assert (await conn.execute(point)).scalar_one() == START
        await engine.dispose()

    asyncio.run(main())
