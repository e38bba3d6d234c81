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
from dqlite.pool import _CLOSED, PoolBase, PoolClosedError, Slot

__all__ = ["AsyncConnectionPool", "create_pool"]


async def create_pool(addresses: str | Sequence[str], database: str = "main", **kwargs: Any) -> AsyncConnectionPool:
    """A pool of ``dqlite.aio.connect`` connections, its ``min_size`` connections open.

    The arguments are those of ``dqlite.pool.ConnectionPool`` (``min_size``,
    ``max_size``, ``max_lifetime``, ``max_idle``, ``acquire_timeout``); other
    keywords go to ``dqlite.aio.connect``.
    """
    pool = AsyncConnectionPool(addresses, database, **kwargs)
    try:
        for _ in range(pool.limits.min_size):
            pool._idle.append(Slot(await pool._connect(), 0))
    except BaseException:
        await pool.close()
        raise
    return pool


class AsyncConnectionPool(PoolBase):
    """An asyncio pool of connections to one database (make it with ``create_pool``).

    Its arguments and behaviour are those of ``dqlite.pool.ConnectionPool``.
    """

    _kind = "dqlite.aio pool"

    def _start(self) -> None:
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()

    async def _connect(self) -> AsyncConnection:
        return await dqlite.aio.connect(self.addresses, self.database, **self._connect_kwargs)

    async def getconn(self, timeout: float | None = None) -> AsyncConnection:
        """Take a connection (give it back with ``putconn``); ``acquire()`` does both."""
        if timeout is None:
            timeout = self.limits.acquire_timeout
        stale: list[Slot] = []
        try:
            async with asyncio.timeout(timeout):
                while True:
                    # No await from the checks to the taking: nothing else runs in between.
                    conn = self._take(stale)
                    for slot in stale:
                        slot.conn.terminate()
                    stale.clear()
                    if conn is not None:
                        return conn
                    if self._reserve():
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
            raise self._timed_out(timeout) from None
        try:
            conn = await self._connect()
        except BaseException:
            self._opened(None)
            self._wake_one()
            raise
        if self._opened(conn):
            return conn
        conn.terminate()
        raise PoolClosedError(_CLOSED)

    def _wake_one(self) -> None:
        """A connection came back, or a place freed up: wake the longest waiter."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    async def putconn(self, conn: AsyncConnection, error: BaseException | None = None) -> None:
        """Give back a connection from ``getconn`` (see ``dqlite.pool.ConnectionPool.putconn``)."""
        returned = self._check_in(conn, error)
        try:
            with returned:
                if not returned.drop:
                    if not conn.rollback_nowait():
                        await conn.rollback()
                    self._reset(conn)
        finally:
            for old in self._given_back(returned):
                old.conn.terminate()
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
        for slot in self._close():
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
