"""The asyncio connection pool: ``await dqlite.aio.create_pool(...)``.

    pool = await dqlite.aio.create_pool(["10.0.0.1:9001"], "app", max_size=8)
    async with pool.acquire() as conn:        # rolled back when it comes back
        await conn.execute("INSERT INTO kv VALUES (?, ?)", ("a", b"1"))
        await conn.commit()
    rows = await pool.fetchall("SELECT k, v FROM kv")
    await pool.close()

The behaviour and the bookkeeping are those of ``dqlite.pool.ConnectionPool``.
One pool serves one event loop.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Awaitable, Callable, Generator, Sequence
from typing import Any

import dqlite.aio
from dqlite.aio import AsyncConnection
from dqlite.exceptions import Error, InterfaceError
from dqlite.pool import PoolClosedError, PoolLimits, PoolTimeoutError, Slot, _monotonic, leader_lost, must_drop

__all__ = ["AsyncConnectionPool", "create_pool"]


async def create_pool(
    addresses: str | Sequence[str],
    database: str = "main",
    *,
    min_size: int = 1,
    max_size: int = 10,
    max_lifetime: float | None = 3600.0,
    max_idle: float | None = 600.0,
    acquire_timeout: float | None = 30.0,
    **connect_kwargs: Any,
) -> AsyncConnectionPool:
    """A pool of ``dqlite.aio.connect`` connections, its ``min_size`` connections open.

    The arguments are those of ``dqlite.pool.ConnectionPool``; other
    keywords go to ``dqlite.aio.connect``.
    """
    pool = AsyncConnectionPool(addresses, database, min_size=min_size, max_size=max_size,
                               max_lifetime=max_lifetime, max_idle=max_idle,
                               acquire_timeout=acquire_timeout, **connect_kwargs)
    try:
        for _ in range(min_size):
            pool._idle.append(Slot(await pool._connect(), 0))
    except BaseException:
        await pool.close()
        raise
    return pool


class AsyncConnectionPool:
    """An asyncio pool of connections to one database (make it with ``create_pool``)."""

    def __init__(self, addresses: str | Sequence[str], database: str = "main", *, min_size: int = 1,
                 max_size: int = 10, max_lifetime: float | None = 3600.0, max_idle: float | None = 600.0,
                 acquire_timeout: float | None = 30.0, **connect_kwargs: Any) -> None:
        self.limits = PoolLimits(min_size, max_size, max_lifetime, max_idle, acquire_timeout)
        self.addresses = addresses
        self.database = database
        self._connect_kwargs = connect_kwargs
        self._autocommit = bool(connect_kwargs.get("autocommit", False))
        self._on_query = connect_kwargs.get("on_query")
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._idle: list[Slot] = []
        self._in_use: dict[int, Slot] = {}
        self._opening = 0
        self._generation = 0
        self._closed = False

    def __repr__(self) -> str:
        return (f"<dqlite.aio pool {self.database} size={self.size} idle={len(self._idle)} "
                f"{'closed' if self._closed else 'open'}>")

    async def _connect(self) -> AsyncConnection:
        return await dqlite.aio.connect(self.addresses, self.database, **self._connect_kwargs)

    @property
    def size(self) -> int:
        """Connections open now (idle, in use, or being opened)."""
        return len(self._idle) + len(self._in_use) + self._opening

    @property
    def idle(self) -> int:
        """Connections waiting in the pool."""
        return len(self._idle)

    @property
    def closed(self) -> bool:
        return self._closed

    async def getconn(self, timeout: float | None = None) -> AsyncConnection:
        """Take a connection (give it back with ``putconn``); ``acquire()`` does both."""
        if timeout is None:
            timeout = self.limits.acquire_timeout
        try:
            async with asyncio.timeout(timeout):
                while True:
                    # No await from the checks to the taking: nothing else runs in between.
                    if self._closed:
                        raise PoolClosedError("the connection pool is closed")
                    now = _monotonic()
                    while self._idle:
                        slot = self._idle.pop()
                        keep = len(self._idle) + len(self._in_use) + self._opening < self.limits.min_size
                        if self.limits.stale(slot, now, self._generation, keep):
                            slot.conn.terminate()
                            continue
                        self._in_use[id(slot.conn)] = slot
                        return slot.conn
                    if self.size < self.limits.max_size:
                        self._opening += 1
                        break
                    waiter = asyncio.get_running_loop().create_future()
                    self._waiters.append(waiter)
                    try:
                        await waiter
                    except BaseException:
                        if waiter.done() and not waiter.cancelled():
                            self._wake_one()  # woken and cancelled at once: pass the turn on
                        raise
                    finally:
                        if waiter in self._waiters:
                            self._waiters.remove(waiter)
        except TimeoutError:
            raise PoolTimeoutError(
                f"no connection free within {timeout:g}s (max_size={self.limits.max_size})") from None
        try:
            conn = await self._connect()
        except BaseException:
            self._opening -= 1
            self._wake_one()
            raise
        self._opening -= 1
        if self._closed:
            conn.terminate()
            raise PoolClosedError("the connection pool is closed")
        self._in_use[id(conn)] = Slot(conn, self._generation)
        return conn

    def _wake_one(self) -> None:
        """A connection came back, or a place freed up: wake the longest waiter."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    async def putconn(self, conn: AsyncConnection, error: BaseException | None = None) -> None:
        """Give back a connection from ``getconn`` (see ``dqlite.pool.ConnectionPool.putconn``)."""
        slot = self._in_use.pop(id(conn), None)
        if slot is None or slot.conn is not conn:
            raise InterfaceError("this connection does not belong to the pool (or was given back already)")
        drop = must_drop(error) or conn.closed
        try:
            if not drop:
                try:
                    if not conn.rollback_nowait():
                        await conn.rollback()
                    if conn.autocommit != self._autocommit:
                        conn.autocommit = self._autocommit
                    conn.row_factory = None
                    if conn.on_query is not self._on_query:
                        conn.on_query = self._on_query
                except Error as exc:
                    drop, error = True, exc
                except BaseException:
                    drop = True  # cancelled while rolling back: the socket is out of step
                    raise
        finally:
            if drop and leader_lost(error) and slot.generation == self._generation:
                # A lost leader: the idle connections opened before talk to it too.
                self._generation += 1
                old, self._idle = self._idle, []
                for other in old:
                    other.conn.terminate()
            keep = not (drop or self._closed or slot.generation != self._generation
                        or self.limits.too_old(slot, _monotonic()))
            if keep:
                slot.idle_since = _monotonic()
                self._idle.append(slot)
            else:
                conn.terminate()
            # Idle connections past their limits go now, not at the next acquire.
            for stale in self.limits.prune(self._idle, len(self._in_use) + self._opening, self._generation):
                stale.conn.terminate()
            self._wake_one()

    def acquire(self, timeout: float | None = None) -> _Acquire:
        """A connection from the pool: ``async with pool.acquire() as conn:`` (rolled
        back and given back after), or ``conn = await pool.acquire()`` and later
        ``await pool.release(conn)``."""
        return _Acquire(self, timeout)

    async def release(self, conn: AsyncConnection, error: BaseException | None = None) -> None:
        """Give back a connection from ``await pool.acquire()`` (``putconn``)."""
        await self.putconn(conn, error)

    async def _run(self, work: Callable[[AsyncConnection], Awaitable[Any]]) -> Any:
        async with self.acquire() as conn:
            result = await work(conn)
            await conn.commit()
            return result

    async def execute(self, sql: str, parameters: Any = ()) -> int:
        """Run one statement on a pooled connection and commit; its ``rowcount``."""
        async def work(conn: AsyncConnection) -> int:
            return (await conn.execute(sql, parameters)).rowcount
        return await self._run(work)

    async def executemany(self, sql: str, seq_of_parameters: Any) -> int:
        """``executemany`` on a pooled connection, committed; its ``rowcount``."""
        async def work(conn: AsyncConnection) -> int:
            return (await conn.executemany(sql, seq_of_parameters)).rowcount
        return await self._run(work)

    async def fetchall(self, sql: str, parameters: Any = ()) -> list[Any]:
        """The rows of one query, run on a pooled connection."""
        async def work(conn: AsyncConnection) -> list[Any]:
            return await (await conn.execute(sql, parameters)).fetchall()
        return await self._run(work)

    async def fetchone(self, sql: str, parameters: Any = ()) -> Any:
        """The first row of one query (or None), run on a pooled connection."""
        async def work(conn: AsyncConnection) -> Any:
            return await (await conn.execute(sql, parameters)).fetchone()
        return await self._run(work)

    async def close(self) -> None:
        """Close the idle connections now and the others when they come back.

        Tasks waiting in ``acquire`` get ``PoolClosedError``.
        """
        self._closed = True
        idle, self._idle = self._idle, []
        for slot in idle:
            slot.conn.terminate()
        waiters, self._waiters = self._waiters, collections.deque()
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    async def __aenter__(self) -> AsyncConnectionPool:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class _Acquire:
    """What ``AsyncConnectionPool.acquire`` returns: awaitable, or an async context manager."""

    __slots__ = ("_pool", "_timeout", "_conn")

    def __init__(self, pool: AsyncConnectionPool, timeout: float | None) -> None:
        self._pool = pool
        self._timeout = timeout
        self._conn: AsyncConnection | None = None

    def __await__(self) -> Generator[Any, None, AsyncConnection]:
        return self._pool.getconn(self._timeout).__await__()

    async def __aenter__(self) -> AsyncConnection:
        self._conn = await self._pool.getconn(self._timeout)
        return self._conn

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: Any) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            await self._pool.putconn(conn, exc)
