"""The workloads of shared/docs/bench.md, one function per (workload, driver kind).

Driver kinds (``api``):

* ``dbapi``: a PEP 249 connection (``Client.connect``);
* ``aio``: an asyncio connection (``Client.aconnect``);
* ``dbapi.nopoll``: the same with ``busy_poll=0`` (W1 and W6, on request:
  what the sync driver's busy-poll costs and buys, ``--drivers``);
* ``sa``: a SQLAlchemy engine (``create_engine``), Core or ORM;
* ``sa.aio``: a SQLAlchemy ``create_async_engine``;
* ``sa.mixed``: both at once in one process, a ``create_engine`` driven by
  threads and a ``create_async_engine`` driven by tasks (W9);
* ``wire``: the raw socket of ``bench.floor`` (W1 and W8: the floors);
* ``wire.aio``: that socket driven by an asyncio event loop (W1's asyncio floor);
* ``wire.poll``, ``wire.aio.poll``: the same, polling for each answer before
  sleeping on it, as the drivers do by default (``wire.poll`` is W1's floor
  for both drivers: the asyncio one polls the socket itself when its loop is idle).

Each function connects and warms up outside the measured part, then measures
exactly the work the workload names inside ``measure()`` (wall time and the
process's own user+sys CPU) and returns the ``Measurement``.  It also checks
the result (row counts), so a broken client fails instead of looking fast.
"""

from __future__ import annotations

import asyncio
import cProfile
import math
import os
import random
import resource
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from bench import data
from bench.clients import Client

# -- sizes (bench.md); --rows changes only the table size ----------------------

W1_QUERIES = 5_000
W3_ROWS = 10_000
W5_LIMIT = 20_000
CONCURRENCY = 8  # W6 threads, W7 tasks
PER_WORKER = 500  # queries per thread / task
M1_ROWS = 1_000_000
M1_BATCH = 1_000
W9_ACCOUNTS = 100
W9_BALANCE = 1_000  # every account's starting balance
W9_MAX_AMOUNT = 10
W9_TRANSACTIONS = 100  # per thread and per task (--transactions)

POINT_SQL = "SELECT id, name, v FROM bench WHERE id = ?"
FETCH_SQL = "SELECT id, name, v, b, n FROM bench"
# M1: the table, repeated until it makes a million rows.
M1_SQL = (
    "WITH RECURSIVE k(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM k WHERE x < ?) "
    "SELECT bench.id, bench.name, bench.v, bench.b, bench.n FROM k, bench"
)


@dataclass(frozen=True)
class Workload:
    """A workload and how its main figure is reported."""

    id: str
    title: str
    unit: str  # "q/s", "rows/s", "s" or "MB"
    apis: tuple[str, ...]  # driver kinds run for the clients under test
    ref_api: str | None  # driver kind of the sqlite reference (None: no reference)
    optional_apis: tuple[str, ...] = ()  # driver kinds run only when --drivers names them

    @property
    def higher_is_better(self) -> bool:
        return self.unit.endswith("/s")


WORKLOADS: dict[str, Workload] = {
    w.id: w
    for w in (
        Workload("W1", "point", "q/s", ("dbapi", "aio", "wire", "wire.poll", "wire.aio", "wire.aio.poll"), "dbapi",
                 ("dbapi.nopoll",)),
        Workload("W2", "fetch", "s", ("dbapi", "aio"), "dbapi"),
        Workload("W3", "insert", "rows/s", ("dbapi", "aio"), "dbapi"),
        Workload("W4", "core", "s", ("sa",), "sa"),
        Workload("W5", "orm", "s", ("sa",), "sa"),
        Workload("W6", "threads", "q/s", ("sa", "dbapi"), "sa", ("dbapi.nopoll",)),
        Workload("W7", "async", "q/s", ("sa.aio", "aio"), "sa.aio"),
        Workload("W8", "floor", "s", ("wire",), None),
        Workload("M1", "memory", "MB", ("dbapi", "aio"), "dbapi"),
        Workload("W9", "read-write", "tx/s", ("sa.mixed",), None),
    )
}


@dataclass
class Params:
    """What a workload needs to know about the data."""

    rows: int  # rows in the bench table
    transactions: int = W9_TRANSACTIONS  # W9: per thread and per task

    def ids(self, count: int, seed: int) -> list[int]:
        rng = random.Random(seed)
        return [rng.randint(1, self.rows) for _ in range(count)]

    @property
    def m1_repeat(self) -> int:
        return math.ceil(M1_ROWS / self.rows)


# -- measuring -------------------------------------------------------------------


@dataclass
class Measurement:
    """One measured part: wall and CPU seconds, how many operations, extras."""

    wall: float = 0.0
    user: float = 0.0
    sys: float = 0.0
    count: int = 0  # queries, rows inserted, rows fetched or transactions committed
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def cpu(self) -> float:
        return self.user + self.sys


#: Set by the worker's ``--profile``: enabled around every measured part.
PROFILER: cProfile.Profile | None = None


@contextmanager
def measure() -> Iterator[Measurement]:
    """Time the block: wall clock and this process's user+sys CPU (all threads)."""
    m = Measurement()
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    if PROFILER is not None:
        PROFILER.enable()
    t0 = time.perf_counter()
    try:
        yield m
    finally:
        m.wall = time.perf_counter() - t0
        if PROFILER is not None:
            PROFILER.disable()
        r1 = resource.getrusage(resource.RUSAGE_SELF)
        m.user = r1.ru_utime - r0.ru_utime
        m.sys = r1.ru_stime - r0.ru_stime


def _status_kb(key: str) -> int | None:
    """A ``/proc/self/status`` field in kB (Linux), None where there is none."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


@contextmanager
def measure_memory() -> Iterator[Measurement]:
    """``measure()`` plus the growth of peak RSS during the block, in MB.

    On Linux the peak (VmHWM) is reset to the current RSS first (``clear_refs``),
    so the growth is exactly the block's; elsewhere ``ru_maxrss`` is compared.
    """
    rss0 = _status_kb("VmRSS")
    reset = False
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        reset = True
    except OSError:
        pass
    maxrss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with measure() as m:
        yield m
    if reset and rss0 is not None:
        peak = _status_kb("VmHWM") or 0
        m.extra.update(rss_growth_mb=max(0, peak - rss0) / 1024, rss_method="VmHWM-VmRSS")
    else:
        maxrss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        base = max(maxrss0, rss0 or 0)
        m.extra.update(rss_growth_mb=max(0, maxrss1 - base) / 1024, rss_method="ru_maxrss")


def _check(what: str, got: int, expected: int) -> None:
    if got != expected:
        raise RuntimeError(f"{what}: got {got:,} rows, expected {expected:,}")


# -- DB-API (sync) -----------------------------------------------------------------


def w1_dbapi(client: Client, p: Params, **options: Any) -> Measurement:
    """5,000 sequential point queries on one connection and one cursor."""
    conn = client.connect(**options)
    cur = conn.cursor()
    for i in p.ids(200, seed=1):
        cur.execute(POINT_SQL, (i,))
        cur.fetchall()
    ids = p.ids(W1_QUERIES, seed=2)
    got = 0
    polls = _PollCounts([conn])
    with measure() as m:
        for i in ids:
            cur.execute(POINT_SQL, (i,))
            got += len(cur.fetchall())
    polls.note(m)
    _check("W1", got, len(ids))
    m.count = len(ids)
    conn.close()
    return m


def w1_dbapi_nopoll(client: Client, p: Params) -> Measurement:
    """``w1_dbapi`` with ``busy_poll=0``: every wait for an answer sleeps at once."""
    return w1_dbapi(client, p, busy_poll=0)


class _PollCounts:
    """The busy-poll counts of this driver's connections (none for another client),
    taken before the measured part; ``note`` adds what it did to ``extra``:
    ``poll_hits`` (waits whose poll found the answer within the window),
    ``poll_late`` (found it once the window had passed; builds without that
    count report 0) and ``poll_sleeps`` (waits that slept, after a poll or
    without one)."""

    KEYS = ("hits", "late", "sleeps")

    def __init__(self, conns: list[Any]) -> None:
        self.polls = [poll for poll in (_busy_poll(c) for c in conns) if poll is not None]
        self.start = self._counts()

    def _counts(self) -> list[int]:
        return [sum(getattr(p, key, 0) for p in self.polls) for key in self.KEYS]

    def note(self, m: Measurement) -> None:
        if self.polls:
            for key, before, after in zip(self.KEYS, self.start, self._counts()):
                m.extra[f"poll_{key}"] = after - before


def _busy_poll(conn: Any) -> Any:
    """A connection's ``dqlite._sockio.BusyPoll``, if it has one where this driver keeps it."""
    poll = getattr(getattr(conn, "_wire", None), "busy_poll", None)
    return poll if hasattr(poll, "hits") and hasattr(poll, "sleeps") else None


def w2_dbapi(client: Client, p: Params) -> Measurement:
    """fetchall() of the whole table (5 columns); one unmeasured run first."""
    conn = client.connect()
    cur = conn.cursor()
    cur.execute(FETCH_SQL)
    _check("W2 warm-up", len(cur.fetchall()), p.rows)
    conn.commit()
    with measure() as m:
        cur.execute(FETCH_SQL)
        rows = cur.fetchall()
    _check("W2", len(rows), p.rows)
    m.count = len(rows)
    conn.close()
    return m


def _w3_rows() -> list[tuple[Any, ...]]:
    return data.make_rows(1, W3_ROWS, salt=b"w3")


def w3_dbapi(client: Client, p: Params) -> Measurement:
    """executemany of 10,000 rows into a fresh table, then commit."""
    table = f"w3_{os.getpid()}"
    rows = _w3_rows()
    conn = client.connect()
    cur = conn.cursor()
    cur.execute(f"DROP TABLE IF EXISTS {table}")
    cur.execute(data.create_table_sql(table))
    conn.commit()
    with measure() as m:
        cur.executemany(data.insert_sql(table), rows)
        conn.commit()
    cur.execute(f"SELECT count(*) FROM {table}")
    _check("W3", cur.fetchall()[0][0], len(rows))
    cur.execute(f"DROP TABLE {table}")
    conn.commit()
    conn.close()
    m.count = len(rows)
    return m


def w6_dbapi(client: Client, p: Params, **options: Any) -> Measurement:
    """8 threads x 500 point queries, each thread on its own connection (no pool)."""
    conns: list[Any] = []

    def runner(k: int) -> Callable[[list[int]], int]:
        conn = client.connect(**options)
        conns.append(conn)
        return _dbapi_points(conn)

    return _threads(p, runner, lambda: _PollCounts(conns))


def w6_dbapi_nopoll(client: Client, p: Params) -> Measurement:
    """``w6_dbapi`` with ``busy_poll=0``."""
    return w6_dbapi(client, p, busy_poll=0)


def _dbapi_points(conn: Any) -> Callable[[list[int]], int]:
    """A runner of point queries on ``conn`` (which its thread opened)."""
    cur = conn.cursor()

    def run(ids: list[int]) -> int:
        got = 0
        for i in ids:
            cur.execute(POINT_SQL, (i,))
            got += len(cur.fetchall())
        return got

    return run


def _threads(p: Params, make_runner: Callable[[int], Callable[[list[int]], int]],
             counts: Callable[[], _PollCounts] | None = None) -> Measurement:
    """8 threads: each makes its runner (in the thread: connections may be
    bound to it), runs 10 warm-up queries, and after a barrier the measured 500.
    ``counts`` (called once all are warm) notes the busy-poll counts.
    """
    ids = [p.ids(PER_WORKER, seed=100 + k) for k in range(CONCURRENCY)]
    polls: list[_PollCounts] = []
    # Once every thread is warm, before any measured query: the counts at the start.
    barrier = threading.Barrier(CONCURRENCY + 1, action=None if counts is None else lambda: polls.append(counts()))
    got = [0] * CONCURRENCY
    errors: list[BaseException] = []

    def thread(k: int) -> None:
        try:
            run = make_runner(k)
            run(ids[k][:10])
        except BaseException as exc:  # reported below, after the barrier
            errors.append(exc)
        barrier.wait()
        if errors:
            return
        try:
            got[k] = run(ids[k])
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=thread, args=(k,)) for k in range(CONCURRENCY)]
    for t in threads:
        t.start()
    barrier.wait()
    with measure() as m:
        for t in threads:
            t.join()
    for counted in polls:
        counted.note(m)
    if errors:
        raise errors[0]
    _check("W6", sum(got), CONCURRENCY * PER_WORKER)
    m.count = CONCURRENCY * PER_WORKER
    return m


def m1_dbapi(client: Client, p: Params) -> Measurement:
    """Iterate a million rows with fetchmany(1000); peak RSS growth."""
    conn = client.connect()
    cur = conn.cursor()
    total = 0
    with measure_memory() as m:
        cur.execute(M1_SQL, (p.m1_repeat,))
        while True:
            batch = cur.fetchmany(M1_BATCH)
            if not batch:
                break
            total += len(batch)
        del batch
    _check("M1", total, p.m1_repeat * p.rows)
    m.count = total
    conn.close()
    return m


# -- asyncio driver ----------------------------------------------------------------


async def _fetchall(conn: Any, sql: str, params: tuple[Any, ...] = ()) -> list[Any]:
    cur = await conn.execute(sql, params)
    return await cur.fetchall()


async def w1_aio(client: Client, p: Params) -> Measurement:
    conn = await client.aconnect()
    for i in p.ids(200, seed=1):
        await _fetchall(conn, POINT_SQL, (i,))
    ids = p.ids(W1_QUERIES, seed=2)
    got = 0
    with measure() as m:
        for i in ids:
            cur = await conn.execute(POINT_SQL, (i,))
            got += len(await cur.fetchall())
    _check("W1", got, len(ids))
    m.count = len(ids)
    await conn.close()
    return m


async def w2_aio(client: Client, p: Params) -> Measurement:
    conn = await client.aconnect()
    _check("W2 warm-up", len(await _fetchall(conn, FETCH_SQL)), p.rows)
    await conn.commit()
    with measure() as m:
        cur = await conn.execute(FETCH_SQL)
        rows = await cur.fetchall()
    _check("W2", len(rows), p.rows)
    m.count = len(rows)
    await conn.close()
    return m


async def w3_aio(client: Client, p: Params) -> Measurement:
    table = f"w3_{os.getpid()}"
    rows = _w3_rows()
    conn = await client.aconnect()
    await conn.execute(f"DROP TABLE IF EXISTS {table}")
    await conn.execute(data.create_table_sql(table))
    await conn.commit()
    with measure() as m:
        await conn.executemany(data.insert_sql(table), rows)
        await conn.commit()
    _check("W3", (await _fetchall(conn, f"SELECT count(*) FROM {table}"))[0][0], len(rows))
    await conn.execute(f"DROP TABLE {table}")
    await conn.commit()
    await conn.close()
    m.count = len(rows)
    return m


async def w7_aio(client: Client, p: Params) -> Measurement:
    """8 tasks x 500 point queries, each task on its own connection (no pool)."""
    conns = [await client.aconnect() for _ in range(CONCURRENCY)]

    def runner(conn: Any) -> Callable[[list[int]], Any]:
        async def run(ids: list[int]) -> int:
            got = 0
            for i in ids:
                cur = await conn.execute(POINT_SQL, (i,))
                got += len(await cur.fetchall())
            return got

        return run

    return await _tasks(p, [runner(c) for c in conns], after=[c.close for c in conns])


async def _tasks(p: Params, runners: list[Callable[[list[int]], Any]], after: list[Callable[[], Any]]) -> Measurement:
    """Run the 8 task bodies concurrently: 10 warm-up queries each, then 500 measured."""
    ids = [p.ids(PER_WORKER, seed=100 + k) for k in range(CONCURRENCY)]
    await asyncio.gather(*(run(ids[k][:10]) for k, run in enumerate(runners)))
    with measure() as m:
        got = await asyncio.gather(*(run(ids[k]) for k, run in enumerate(runners)))
    _check("W7", sum(got), CONCURRENCY * PER_WORKER)
    m.count = CONCURRENCY * PER_WORKER
    for close in after:
        await close()
    return m


async def m1_aio(client: Client, p: Params) -> Measurement:
    conn = await client.aconnect()
    total = 0
    with measure_memory() as m:
        cur = await conn.execute(M1_SQL, (p.m1_repeat,))
        while True:
            batch = await cur.fetchmany(M1_BATCH)
            if not batch:
                break
            total += len(batch)
        del batch
    _check("M1", total, p.m1_repeat * p.rows)
    m.count = total
    await conn.close()
    return m


# -- SQLAlchemy ----------------------------------------------------------------------


def _sa_schema() -> tuple[Any, Any]:
    """The bench table with all 7 columns typed, and an ORM class mapped to it."""
    from sqlalchemy import Boolean, Column, DateTime, Float, Integer, LargeBinary, MetaData, String, Table
    from sqlalchemy.orm import registry

    table = Table(
        "bench",
        MetaData(),
        Column("id", Integer, primary_key=True),
        Column("name", String),
        Column("v", Float),
        Column("b", LargeBinary),
        Column("n", Integer, nullable=True),
        Column("flag", Boolean),
        Column("ts", DateTime),
    )

    class Bench:
        """One row of the bench table (ORM)."""

    registry().map_imperatively(Bench, table)
    return table, Bench


def _point_stmt(table: Any) -> Any:
    from sqlalchemy import bindparam, select

    return select(table.c.id, table.c.name, table.c.v).where(table.c.id == bindparam("id"))


def w4_sa(client: Client, p: Params) -> Measurement:
    """Core: ``conn.execute(select(bench)).fetchall()``, 7 typed columns."""
    from sqlalchemy import create_engine, select

    table, _ = _sa_schema()
    engine = create_engine(client.sqlalchemy_url())
    with engine.connect() as conn:
        _check("W4 warm-up", len(conn.execute(select(table)).fetchall()), p.rows)
        conn.rollback()
        with measure() as m:
            rows = conn.execute(select(table)).fetchall()
    _check("W4", len(rows), p.rows)
    if not isinstance(rows[-1].ts, datetime):
        raise RuntimeError(f"W4: ts came back as {type(rows[-1].ts).__name__}, not datetime")
    m.count = len(rows)
    engine.dispose()
    return m


def w5_sa(client: Client, p: Params) -> Measurement:
    """ORM: ``session.scalars(select(Bench).limit(20000)).all()`` in a fresh session."""
    from sqlalchemy import create_engine, select
    from sqlalchemy.orm import Session

    _, Bench = _sa_schema()
    limit = min(W5_LIMIT, p.rows)
    engine = create_engine(client.sqlalchemy_url())
    with Session(engine) as session:
        _check("W5 warm-up", len(session.scalars(select(Bench).limit(limit)).all()), limit)
    with Session(engine) as session:
        with measure() as m:
            objs = session.scalars(select(Bench).limit(limit)).all()
        _check("W5", len(objs), limit)
    m.count = len(objs)
    engine.dispose()
    return m


def w6_sa(client: Client, p: Params) -> Measurement:
    """8 threads x 500 point queries through the engine's pool (one checkout per query)."""
    from sqlalchemy import create_engine

    table, _ = _sa_schema()
    stmt = _point_stmt(table)
    engine = create_engine(client.sqlalchemy_url(), pool_size=CONCURRENCY, max_overflow=0)
    _fill_pool(engine)

    def runner(k: int) -> Callable[[list[int]], int]:
        def run(ids: list[int]) -> int:
            got = 0
            for i in ids:
                with engine.connect() as conn:
                    got += len(conn.execute(stmt, {"id": i}).all())
            return got

        return run

    m = _threads(p, runner)
    engine.dispose()
    return m


def _fill_pool(engine: Any) -> None:
    """Open all the pool's connections before measuring (no transaction held open)."""
    conns = [engine.connect() for _ in range(CONCURRENCY)]
    for conn in conns:
        conn.close()


async def w7_sa_aio(client: Client, p: Params) -> Measurement:
    """``create_async_engine``: 8 tasks x 500 point queries (one checkout per query)."""
    from sqlalchemy.ext.asyncio import create_async_engine

    table, _ = _sa_schema()
    stmt = _point_stmt(table)
    engine = create_async_engine(client.sqlalchemy_url(aio=True), pool_size=CONCURRENCY, max_overflow=0)
    # Open all the pool's connections first (no transaction held open).
    conns = [await engine.connect() for _ in range(CONCURRENCY)]
    for conn in conns:
        await conn.close()

    async def run(ids: list[int]) -> int:
        got = 0
        for i in ids:
            async with engine.connect() as conn:
                got += len((await conn.execute(stmt, {"id": i})).all())
        return got

    return await _tasks(p, [run] * CONCURRENCY, after=[engine.dispose])


# -- W9 ----------------------------------------------------------------------------


@dataclass
class _Tally:
    """One thread's or task's transactions: how many committed, and why the others failed."""

    committed: int = 0
    failures: dict[str, int] = field(default_factory=dict)

    def fail(self, exc: BaseException) -> None:
        key = _failure_key(exc)
        self.failures[key] = self.failures.get(key, 0) + 1


def _failure_key(exc: BaseException) -> str:
    """``Class: message`` of the driver's own exception (SQLAlchemy's wrapper
    and the statement it appends left out), so equal failures count together."""
    orig = getattr(exc, "orig", None) or exc
    message = (str(orig).strip().splitlines() or [""])[0]
    return f"{type(orig).__name__}: {message}"[:160]


def _w9_plan(seed: int, count: int) -> list[tuple[int, int, int]]:
    """``count`` transfers (source, destination, amount) from a seeded RNG."""
    rng = random.Random(seed)
    plan = []
    for _ in range(count):
        src, dst = rng.sample(range(1, W9_ACCOUNTS + 1), 2)
        plan.append((src, dst, rng.randint(1, W9_MAX_AMOUNT)))
    return plan


def _w9_statements(table: str) -> tuple[Any, Any, Any]:
    from sqlalchemy import text

    return (
        text(f"SELECT balance FROM {table} WHERE id = :id"),
        text(f"UPDATE {table} SET balance = balance - :amt WHERE id = :id"),
        text(f"UPDATE {table} SET balance = balance + :amt WHERE id = :id"),
    )


def _w9_sync_transfers(engine: Any, table: str, plan: list[tuple[int, int, int]]) -> _Tally:
    """One thread's transfers: each its own ``engine.begin()`` transaction, a failed one not retried."""
    from sqlalchemy.exc import SQLAlchemyError

    read, debit, credit = _w9_statements(table)
    tally = _Tally()
    for src, dst, amt in plan:
        try:
            with engine.begin() as conn:
                # What moves depends on what was read: a read-then-write transaction.
                moved = min(amt, conn.execute(read, {"id": src}).scalar_one())
                conn.execute(debit, {"id": src, "amt": moved})
                conn.execute(credit, {"id": dst, "amt": moved})
        except SQLAlchemyError as exc:
            tally.fail(exc)
        else:
            tally.committed += 1
    return tally


async def _w9_async_transfers(engine: Any, table: str, plan: list[tuple[int, int, int]]) -> _Tally:
    """One task's transfers, as ``_w9_sync_transfers`` with ``async with engine.begin()``."""
    from sqlalchemy.exc import SQLAlchemyError

    read, debit, credit = _w9_statements(table)
    tally = _Tally()
    for src, dst, amt in plan:
        try:
            async with engine.begin() as conn:
                moved = min(amt, (await conn.execute(read, {"id": src})).scalar_one())
                await conn.execute(debit, {"id": src, "amt": moved})
                await conn.execute(credit, {"id": dst, "amt": moved})
        except SQLAlchemyError as exc:
            tally.fail(exc)
        else:
            tally.committed += 1
    return tally


def w9_sa_mixed(client: Client, p: Params, loop: str = "asyncio") -> Measurement:
    """8 threads on ``create_engine`` and 8 tasks on ``create_async_engine`` at
    once, each doing ``p.transactions`` transfers between accounts of a fresh
    table; default engine settings.  Counts committed and failed transactions
    (by exception and message) and checks afterwards that the transfers kept
    the sum of the balances and left none negative.
    """
    from sqlalchemy import create_engine, text
    from sqlalchemy.ext.asyncio import create_async_engine

    table = f"w9_accounts_{os.getpid()}"
    engine = create_engine(client.sqlalchemy_url())
    with engine.begin() as conn:
        conn.execute(text(f"DROP TABLE IF EXISTS {table}"))
        conn.execute(text(f"CREATE TABLE {table} (id INTEGER PRIMARY KEY, balance INTEGER)"))
        conn.execute(text(f"INSERT INTO {table} (id, balance) VALUES (:id, :balance)"),
                     [{"id": i, "balance": W9_BALANCE} for i in range(1, W9_ACCOUNTS + 1)])
    plans = [_w9_plan(900 + k, p.transactions) for k in range(2 * CONCURRENCY)]
    # The threads, the event loop's thread and this one start the measured part together.
    barrier = threading.Barrier(CONCURRENCY + 2)
    tallies: list[_Tally] = [_Tally() for _ in range(2 * CONCURRENCY)]
    errors: list[BaseException] = []
    tasks_done = threading.Event()
    passed_barrier = threading.Event()
    warm_read = text(f"SELECT balance FROM {table} WHERE id = 1")

    def thread(k: int) -> None:
        try:
            with engine.connect() as conn:  # warm-up: a connection of the pool opened
                conn.execute(warm_read).all()
        except BaseException as exc:  # reported below, after the barrier
            errors.append(exc)
        barrier.wait()
        if errors:
            return
        try:
            tallies[k] = _w9_sync_transfers(engine, table, plans[k])
        except BaseException as exc:
            errors.append(exc)

    async def tasks() -> None:
        aengine = create_async_engine(client.sqlalchemy_url(aio=True))
        try:
            async def warm() -> None:
                async with aengine.connect() as conn:
                    (await conn.execute(warm_read)).all()

            await asyncio.gather(*(warm() for _ in range(CONCURRENCY)))
        except BaseException as exc:
            errors.append(exc)
        barrier.wait()  # blocks the loop, which has nothing else to run yet
        passed_barrier.set()
        try:
            if not errors:
                results = await asyncio.gather(*(
                    _w9_async_transfers(aengine, table, plans[CONCURRENCY + k]) for k in range(CONCURRENCY)))
                tallies[CONCURRENCY:] = results
        except BaseException as exc:
            errors.append(exc)
        finally:
            tasks_done.set()
            await aengine.dispose()

    def loop_thread() -> None:
        try:
            _run_coroutine(tasks(), loop)
        except BaseException as exc:  # no loop (uvloop missing), or disposing failed
            errors.append(exc)
            if not passed_barrier.is_set():
                barrier.wait()  # the others are waiting: let them see the error
            tasks_done.set()

    threads = [threading.Thread(target=thread, args=(k,)) for k in range(CONCURRENCY)]
    threads.append(threading.Thread(target=loop_thread))
    for t in threads:
        t.start()
    barrier.wait()
    with measure() as m:
        for t in threads[:CONCURRENCY]:
            t.join()
        tasks_done.wait()
    threads[-1].join()
    if errors:
        engine.dispose()
        raise errors[0]
    with engine.connect() as conn:
        total, lowest, accounts = conn.execute(text(f"SELECT sum(balance), min(balance), count(*) FROM {table}")).one()
        conn.execute(text(f"DROP TABLE {table}"))
        conn.commit()
    engine.dispose()
    failures: dict[str, int] = {}
    for tally in tallies:
        for key, n in tally.failures.items():
            failures[key] = failures.get(key, 0) + n
    committed = sum(t.committed for t in tallies)
    attempted = 2 * CONCURRENCY * p.transactions
    if accounts != W9_ACCOUNTS or total != W9_ACCOUNTS * W9_BALANCE:
        raise RuntimeError(f"W9: the transfers did not keep the sum of the balances: {accounts} accounts "
                           f"holding {total:,}, expected {W9_ACCOUNTS} holding {W9_ACCOUNTS * W9_BALANCE:,}")
    if lowest < 0:
        raise RuntimeError(f"W9: a balance went negative ({lowest:,}): a transfer moved more than it read")
    if committed == 0:
        raise RuntimeError(f"W9: none of the {attempted:,} transactions committed: {failures}")
    m.count = committed
    m.extra.update(
        attempted=attempted,
        committed=committed,
        failed=attempted - committed,
        locked=sum(n for key, n in failures.items() if "database is locked" in key.lower()),
        failures=dict(sorted(failures.items(), key=lambda kv: -kv[1])),
        threads_committed=sum(t.committed for t in tallies[:CONCURRENCY]),
        tasks_committed=sum(t.committed for t in tallies[CONCURRENCY:]),
        balance_sum=total,
        balance_sum_kept=True,
        min_balance=lowest,
    )
    return m


# -- W8 ----------------------------------------------------------------------------


def w1_wire(client: Client, p: Params, poll: float = 0.0) -> Measurement:
    """W1's queries on a raw socket: the request bytes and the answer's framing only.

    The per-query CPU of the kernel and the interpreter under any client of
    this machine: what W1's client CPU is held against.  ``poll``: seconds
    each answer is polled for before the receive sleeps.
    """
    from bench import floor

    conn = floor.connect_leader(client.addresses, client.database)
    stmt_id = conn.prepare(POINT_SQL)
    for i in p.ids(200, seed=1):
        conn.point_query(stmt_id, i, poll)
    ids = p.ids(W1_QUERIES, seed=2)
    with measure() as m:
        for i in ids:
            conn.point_query(stmt_id, i, poll)
    conn.close()
    m.count = len(ids)
    return m


def w1_wire_poll(client: Client, p: Params) -> Measurement:
    """``w1_wire``, polling for each answer as the drivers do by default."""
    from dqlite._wire import DEFAULT_BUSY_POLL

    return w1_wire(client, p, DEFAULT_BUSY_POLL)


async def w1_wire_aio(client: Client, p: Params, poll: float = 0.0) -> Measurement:
    """``w1_wire`` through an asyncio event loop: what W1's asyncio CPU is held against."""
    from bench import floor

    raw = floor.connect_leader(client.addresses, client.database)
    conn = await floor.AsyncPointQueries.open(raw, raw.prepare(POINT_SQL), poll)
    for i in p.ids(200, seed=1):
        await conn.point_query(i)
    ids = p.ids(W1_QUERIES, seed=2)
    with measure() as m:
        for i in ids:
            await conn.point_query(i)
    conn.close()
    m.count = len(ids)
    return m


async def w1_wire_aio_poll(client: Client, p: Params) -> Measurement:
    """``w1_wire_aio``, the loop polling for each answer, as the asyncio driver's does while it has other work."""
    from dqlite._wire import DEFAULT_BUSY_POLL

    return await w1_wire_aio(client, p, DEFAULT_BUSY_POLL)


def w8_wire(client: Client, p: Params) -> Measurement:
    """The W2 query on a raw socket, every byte read, framing only (``bench.floor``)."""
    from bench import floor

    conn = floor.connect_leader(client.addresses, client.database)
    conn.query_raw(FETCH_SQL)
    with measure() as m:
        nbytes, messages = conn.query_raw(FETCH_SQL)
    conn.close()
    m.count = p.rows
    m.extra.update(bytes=nbytes, messages=messages)
    return m


#: (workload, driver kind) -> the function measuring it (sync or async).
IMPLEMENTATIONS: dict[tuple[str, str], Callable[[Client, Params], Any]] = {
    ("W1", "dbapi"): w1_dbapi,
    ("W1", "dbapi.nopoll"): w1_dbapi_nopoll,
    ("W1", "aio"): w1_aio,
    ("W1", "wire"): w1_wire,
    ("W1", "wire.poll"): w1_wire_poll,
    ("W1", "wire.aio"): w1_wire_aio,
    ("W1", "wire.aio.poll"): w1_wire_aio_poll,
    ("W2", "dbapi"): w2_dbapi,
    ("W2", "aio"): w2_aio,
    ("W3", "dbapi"): w3_dbapi,
    ("W3", "aio"): w3_aio,
    ("W4", "sa"): w4_sa,
    ("W5", "sa"): w5_sa,
    ("W6", "sa"): w6_sa,
    ("W6", "dbapi"): w6_dbapi,
    ("W6", "dbapi.nopoll"): w6_dbapi_nopoll,
    ("W7", "sa.aio"): w7_sa_aio,
    ("W7", "aio"): w7_aio,
    ("W8", "wire"): w8_wire,
    ("M1", "dbapi"): m1_dbapi,
    ("M1", "aio"): m1_aio,
    ("W9", "sa.mixed"): w9_sa_mixed,
}
#: Sync implementations that run an event loop of their own (they take ``loop``).
RUNS_A_LOOP = {w9_sa_mixed}


def run(workload: str, api: str, client: Client, p: Params, loop: str = "asyncio") -> Measurement:
    """Measure one (workload, driver kind) for ``client``.

    Async workloads run on ``loop``: ``asyncio`` (the stdlib's default loop) or
    ``uvloop``.
    """
    try:
        impl = IMPLEMENTATIONS[workload, api]
    except KeyError:
        raise ValueError(f"no driver kind {api!r} for workload {workload}") from None
    if impl in RUNS_A_LOOP:
        return impl(client, p, loop=loop)
    if not asyncio.iscoroutinefunction(impl):
        return impl(client, p)
    return _run_coroutine(impl(client, p), loop)


def _run_coroutine(coro: Any, loop: str) -> Any:
    """Run ``coro`` to completion on a new ``asyncio`` or ``uvloop`` event loop."""
    if loop == "uvloop":
        import uvloop

        return uvloop.run(coro)
    return asyncio.run(coro)


def value_of(workload: Workload, m: Measurement) -> float:
    """The workload's main figure from a measurement (in ``workload.unit``)."""
    if workload.unit == "MB":
        return float(m.extra["rss_growth_mb"])
    if workload.unit == "s":
        return m.wall
    return m.count / m.wall if m.wall > 0 else float("inf")
