"""Load, bounded and on loopback only: many threads and tasks, no leaks, bounded memory.

* 16 threads, each with its own sync connection (``threadsafety = 1``), and
  200 asyncio tasks sharing a pool of 8 async connections: 10,000 queries
  per run in total for each, a mix of INSERTs and SELECTs whose every
  result is checked, and the rows each one wrote read back at the end.
* No leaked sockets: the number of entries in ``/proc/self/fd`` (and of
  sockets among them) returns to its starting value once everything is
  closed.
* M1: iterating 1,000,000 rows with ``fetchmany(1000)`` grows the peak RSS
  (VmHWM) of a fresh process by less than 50 MB, through both APIs.  The
  rows are made server-side by a recursive CTE.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator

import pytest

import dqlite
import dqlite.aio

pytestmark = pytest.mark.timeout(240)

QUERIES = 10_000
THREADS = 16
TASKS = 200
POOL_SIZE = 8
WRITE_EVERY = 5  # one query in five is an INSERT
# dqlite runs one write transaction at a time per database: a concurrent
# autocommit INSERT gets SQLITE_BUSY ("database is locked") at once, with
# nothing applied (the server has no busy timeout).  The driver runs it again
# for up to busy_timeout (5 s); should that run out under this load, the
# workers retry too, a bounded number of times, and count it.
BUSY_RETRIES = 500

SCHEMA = "CREATE TABLE load (who INTEGER, i INTEGER, s TEXT, PRIMARY KEY (who, i))"


def open_fds() -> tuple[int, int]:
    """(entries in /proc/self/fd, how many of them are sockets)."""
    fds = os.listdir("/proc/self/fd")
    sockets = 0
    for fd in fds:
        with contextlib.suppress(OSError):
            sockets += os.readlink(f"/proc/self/fd/{fd}").startswith("socket:")
    return len(fds), sockets


def fd_baseline() -> tuple[int, int]:
    gc.collect()
    return open_fds()


def settled_fds(expected: tuple[int, int], timeout: float = 5.0) -> tuple[int, int]:
    """The fd counts, given a moment to reach ``expected`` (closing is synchronous, but be fair)."""
    deadline = time.monotonic() + timeout
    while True:
        gc.collect()
        now = open_fds()
        if now == expected or time.monotonic() > deadline:
            return now
        time.sleep(0.05)


def one_query(i: int, who: int) -> tuple[str, tuple, object]:
    """Query number ``i`` of worker ``who``: (sql, params, expected result)."""
    if i % WRITE_EVERY == 0:
        return "INSERT INTO load (who, i, s) VALUES (?, ?, ?)", (who, i, f"{who}:{i}"), 1
    return "SELECT ?, ? * 2, ? || ':' || ?", (who, i, who, i), (who, i * 2, f"{who}:{i}")


def is_busy(exc: BaseException) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    return isinstance(exc, dqlite.OperationalError) and code is not None and code & 0xFF in (5, 6)


def backoff(attempt: int, who: int) -> float:
    return min(0.0005 * (1 + (attempt * 7 + who) % 8) * (1 + attempt // 8), 0.02)


def written_by(who: int, per_worker: int) -> list[tuple]:
    return [(i, f"{who}:{i}") for i in range(per_worker) if i % WRITE_EVERY == 0]


def test_threads_each_with_a_connection(dqlite_cluster, dqlite_database):
    addresses = dqlite_cluster.addresses
    with contextlib.closing(dqlite.connect(addresses, dqlite_database, autocommit=True)) as conn:
        conn.execute(SCHEMA)
    per_thread = QUERIES // THREADS - 1  # and one read-back query each
    before = fd_baseline()
    errors: list[BaseException] = []
    counts = [0] * THREADS
    retries = [0] * THREADS
    start = threading.Barrier(THREADS)

    def worker(who: int) -> None:
        try:
            conn = dqlite.connect(addresses, dqlite_database, autocommit=True, timeout=30)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
            start.abort()
            return
        try:
            start.wait(30)
            for i in range(per_thread):
                sql, params, want = one_query(i, who)
                for attempt in range(BUSY_RETRIES):
                    try:
                        cur = conn.execute(sql, params)
                        break
                    except dqlite.OperationalError as exc:
                        if not is_busy(exc) or attempt == BUSY_RETRIES - 1:
                            raise
                        retries[who] += 1
                        time.sleep(backoff(attempt, who))
                got = cur.rowcount if want == 1 else cur.fetchone()
                assert got == want, f"thread {who}, query {i}: {got!r} != {want!r}"
                counts[who] += 1
            rows = conn.execute("SELECT i, s FROM load WHERE who = ? ORDER BY i", (who,)).fetchall()
            counts[who] += 1
            assert rows == written_by(who, per_thread), f"thread {who} reads back {len(rows)} rows"
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            conn.close()

    threads = [threading.Thread(target=worker, args=(who,), name=f"load-{who}") for who in range(THREADS)]
    began = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(180)
    elapsed = time.monotonic() - began
    assert not any(t.is_alive() for t in threads), "a worker thread hangs"
    assert not errors, f"{len(errors)} threads failed, first: {errors[0]!r}"
    assert sum(counts) == QUERIES
    print(f"{QUERIES} queries from {THREADS} threads in {elapsed:.2f}s ({QUERIES / elapsed:.0f}/s), "
          f"{sum(retries)} retries after SQLITE_BUSY")
    assert settled_fds(before) == before, f"file descriptors before {before}, after {open_fds()}"


class Pool:
    """The smallest pool that works: a queue of open connections."""

    def __init__(self, connections: list[dqlite.aio.AsyncConnection]) -> None:
        self.connections = connections
        self.idle: asyncio.Queue[dqlite.aio.AsyncConnection] = asyncio.Queue()
        for conn in connections:
            self.idle.put_nowait(conn)
        self.in_use = 0
        self.most_in_use = 0

    @classmethod
    async def open(cls, size: int, *args, **kwargs) -> Pool:
        connections = []
        try:
            for _ in range(size):
                connections.append(await dqlite.aio.connect(*args, **kwargs))
        except BaseException:
            for conn in connections:
                await conn.close()
            raise
        return cls(connections)

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[dqlite.aio.AsyncConnection]:
        conn = await self.idle.get()
        self.in_use += 1
        self.most_in_use = max(self.most_in_use, self.in_use)
        try:
            yield conn
        finally:
            self.in_use -= 1
            self.idle.put_nowait(conn)

    async def close(self) -> None:
        for conn in self.connections:
            await conn.close()


def test_asyncio_tasks_on_a_pool(dqlite_cluster, dqlite_database):
    addresses = dqlite_cluster.addresses
    per_task = QUERIES // TASKS - 1  # and one read-back query each
    counts = [0] * TASKS
    retries = [0] * TASKS

    async def task(pool: Pool, who: int) -> None:
        for i in range(per_task):
            sql, params, want = one_query(i, who)
            for attempt in range(BUSY_RETRIES):
                try:
                    async with pool.connection() as conn:
                        cur = await conn.execute(sql, params)
                        got = cur.rowcount if want == 1 else await cur.fetchone()
                    break
                except dqlite.OperationalError as exc:
                    if not is_busy(exc) or attempt == BUSY_RETRIES - 1:
                        raise
                    retries[who] += 1
                    await asyncio.sleep(backoff(attempt, who))
            assert got == want, f"task {who}, query {i}: {got!r} != {want!r}"
            counts[who] += 1
        async with pool.connection() as conn:
            cur = await conn.execute("SELECT i, s FROM load WHERE who = ? ORDER BY i", (who,))
            rows = await cur.fetchall()
        counts[who] += 1
        assert rows == written_by(who, per_task), f"task {who} reads back {len(rows)} rows"

    async def main() -> tuple[float, int]:
        pool = await Pool.open(POOL_SIZE, addresses, dqlite_database, autocommit=True, timeout=30)
        try:
            async with pool.connection() as conn:
                await conn.execute(SCHEMA)
            began = time.monotonic()
            await asyncio.wait_for(asyncio.gather(*(task(pool, who) for who in range(TASKS))), 180)
            return time.monotonic() - began, pool.most_in_use
        finally:
            await pool.close()

    before = fd_baseline()
    elapsed, most_in_use = asyncio.run(main())
    assert sum(counts) == QUERIES
    assert most_in_use == POOL_SIZE  # the tasks really contended for the pool
    print(f"{QUERIES} queries from {TASKS} tasks on {POOL_SIZE} connections in {elapsed:.2f}s "
          f"({QUERIES / elapsed:.0f}/s), {sum(retries)} retries after SQLITE_BUSY")
    assert settled_fds(before) == before, f"file descriptors before {before}, after {open_fds()}"


# ---------------------------------------------------------------------------
# M1: a million rows through fetchmany in bounded memory

ROWS = 1_000_000
CHUNK = 100_000
RSS_GROWTH_LIMIT_MB = 50

# Runs in a fresh interpreter: its VmHWM (peak RSS) is the iteration's, not
# this test process's history.
READER = r"""
import asyncio, json, sys

def status_kb(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])

def baseline_kb():
    # Reset the peak to the current RSS (Linux: 5 > clear_refs), so that a
    # peak from start-up cannot hide the iteration's; the baseline is then
    # the RSS at this point, whichever way.
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass
    return status_kb("VmRSS")

def hwm_kb():
    return status_kb("VmHWM")

import dqlite, dqlite.aio

api, database, addresses, expected = sys.argv[1], sys.argv[2], sys.argv[3].split(","), int(sys.argv[4])
SQL = "SELECT x, s FROM big ORDER BY x"

def check(rows, state):
    for x, s in rows:
        state[0] += 1
        if x != state[0] or s != "row-%08d" % x:
            raise SystemExit(f"row {state[0]}: got {(x, s)!r}")

def run_sync():
    conn = dqlite.connect(addresses, database, autocommit=True, timeout=60)
    check(conn.execute(SQL + " LIMIT 2000").fetchall(), [0])  # warm up: imports, buffers
    base = baseline_kb()
    cur = conn.execute(SQL)
    state = [0]
    while True:
        rows = cur.fetchmany(1000)
        if not rows:
            break
        assert len(rows) <= 1000
        check(rows, state)
    peak = hwm_kb()
    conn.close()
    return base, peak, state[0]

async def run_aio():
    conn = await dqlite.aio.connect(addresses, database, autocommit=True, timeout=60)
    cur = await conn.execute(SQL + " LIMIT 2000")
    check(await cur.fetchall(), [0])
    base = baseline_kb()
    cur = await conn.execute(SQL)
    state = [0]
    while True:
        rows = await cur.fetchmany(1000)
        if not rows:
            break
        assert len(rows) <= 1000
        check(rows, state)
    peak = hwm_kb()
    await conn.close()
    return base, peak, state[0]

base, peak, count = run_sync() if api == "sync" else asyncio.run(run_aio())
print(json.dumps({"base_kb": base, "peak_kb": peak, "rows": count}))
"""


@pytest.fixture(scope="module")
def million_rows(dqlite_cluster) -> tuple[list[str], str]:
    database = f"load_million_{os.getpid()}"
    with contextlib.closing(dqlite.connect(dqlite_cluster.addresses, database, autocommit=True,
                                           timeout=60)) as conn:
        conn.execute("CREATE TABLE big (x INTEGER PRIMARY KEY, s TEXT NOT NULL)")
        for first in range(1, ROWS + 1, CHUNK):
            last = first + CHUNK - 1
            for attempt in range(5):
                try:
                    conn.execute(
                        "INSERT INTO big (x, s) WITH RECURSIVE c(x) AS "
                        "(SELECT ? UNION ALL SELECT x + 1 FROM c WHERE x < ?) "
                        "SELECT x, printf('row-%08d', x) FROM c",
                        (first, last))
                    break
                except dqlite.OperationalError:
                    # On a busy machine a big raft entry can cost the leader its
                    # leadership: find out whether the chunk made it, redo it if not.
                    if attempt == 4:
                        raise
                    time.sleep(0.5)
                    if conn.execute("SELECT count(*) FROM big WHERE x BETWEEN ? AND ?",
                                    (first, last)).fetchone() == (CHUNK,):
                        break
        assert conn.execute("SELECT count(*), sum(x) FROM big").fetchone() == (ROWS, ROWS * (ROWS + 1) // 2)
    return dqlite_cluster.addresses, database


@pytest.mark.parametrize("api", ["sync", "aio"])
def test_a_million_rows_through_fetchmany_in_bounded_memory(million_rows, api):
    addresses, database = million_rows
    began = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-c", READER, api, database, ",".join(addresses), str(ROWS)],
        capture_output=True, text=True, timeout=200)
    elapsed = time.monotonic() - began
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["rows"] == ROWS
    growth_mb = (result["peak_kb"] - result["base_kb"]) / 1024
    print(f"{api}: {ROWS} rows in {elapsed:.1f}s, peak RSS {result['base_kb'] / 1024:.1f} -> "
          f"{result['peak_kb'] / 1024:.1f} MB (+{growth_mb:.1f} MB)")
    assert growth_mb < RSS_GROWTH_LIMIT_MB, result
