"""A thread-safe connection pool for the sync driver (no SQLAlchemy needed).

    from dqlite.pool import ConnectionPool

    pool = ConnectionPool(["10.0.0.1:9001", "10.0.0.2:9001"], "app", max_size=8)
    with pool.acquire() as conn:          # rolled back when it comes back
        conn.execute("INSERT INTO kv VALUES (?, ?)", ("a", b"1"))
        conn.commit()
    rows = pool.fetchall("SELECT k, v FROM kv")
    pool.close()

``dqlite.aio.create_pool`` is the asyncio pool with the same behaviour; the
bookkeeping both share (when a connection is too old or idle too long, when
a failure means it must go) is here.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import dqlite
from dqlite.connection import Connection
from dqlite.exceptions import ConnectionLostError, Error, InterfaceError, OperationalError, ProtocolError

__all__ = ["ConnectionPool", "PoolTimeoutError", "PoolClosedError"]

_monotonic = time.monotonic


class PoolTimeoutError(OperationalError):
    """No connection became free within the acquire timeout."""


class PoolClosedError(InterfaceError):
    """The pool was closed."""


def must_drop(exc: BaseException | None) -> bool:
    """Whether a connection that raised ``exc`` must leave the pool rather than be reused.

    A lost leader or socket (``ConnectionLostError``, and its transaction-lost
    and unknown-commit forms), bytes out of step (``ProtocolError``), or an
    interruption (anything not an ``Exception``: cancelled, Ctrl-C).
    """
    if exc is None:
        return False
    return isinstance(exc, (ConnectionLostError, ProtocolError)) or not isinstance(exc, Exception)


def leader_lost(exc: BaseException | None) -> bool:
    """Whether ``exc`` says the leader (or the way to it) was lost: then the idle
    connections opened before it go too, as they talk to the same node."""
    return isinstance(exc, ConnectionLostError)


class Slot:
    """A pooled connection and its bookkeeping (shared by both pools)."""

    __slots__ = ("conn", "created", "idle_since", "generation")

    def __init__(self, conn: Any, generation: int) -> None:
        self.conn = conn
        self.created = self.idle_since = _monotonic()
        self.generation = generation


class PoolLimits:
    """Sizes and age limits, checked once for both pools."""

    def __init__(self, min_size: int, max_size: int, max_lifetime: float | None, max_idle: float | None,
                 acquire_timeout: float | None) -> None:
        if not 0 <= min_size <= max_size or max_size < 1:
            raise InterfaceError(f"pool sizes must satisfy 0 <= min_size <= max_size, max_size >= 1 "
                                 f"(got min_size={min_size}, max_size={max_size})")
        for name, value in (("max_lifetime", max_lifetime), ("max_idle", max_idle),
                            ("acquire_timeout", acquire_timeout)):
            if value is not None and value <= 0:
                raise InterfaceError(f"{name} must be positive or None (got {value!r})")
        self.min_size = min_size
        self.max_size = max_size
        self.max_lifetime = max_lifetime
        self.max_idle = max_idle
        self.acquire_timeout = acquire_timeout

    def too_old(self, slot: Slot, now: float) -> bool:
        return self.max_lifetime is not None and now - slot.created >= self.max_lifetime

    def stale(self, slot: Slot, now: float, generation: int, keep: bool) -> bool:
        """An idle connection to close instead of handing out: too old, idle too
        long (unless ``keep``: it is within ``min_size``), from before a lost
        leader, or closed."""
        return (slot.generation != generation or slot.conn.closed or self.too_old(slot, now)
                or (not keep and self.max_idle is not None and now - slot.idle_since >= self.max_idle))


    def prune(self, idle: list[Slot], busy: int, generation: int) -> list[Slot]:
        """Take the stale connections out of ``idle`` (oldest first, most
        recently returned last) and return them, to be closed; ``busy``
        connections are in use or being opened, and with them ``min_size``
        are kept even if idle too long."""
        now = _monotonic()
        stale: list[Slot] = []
        kept: list[Slot] = []
        # The most recently used are kept first: they are the ones handed out next.
        for slot in reversed(idle):
            keep = busy + len(kept) < self.min_size
            (stale if self.stale(slot, now, generation, keep) else kept).append(slot)
        idle[:] = reversed(kept)
        return stale


class ConnectionPool:
    """A thread-safe pool of ``dqlite.connect`` connections to one database.

    ``min_size`` connections are opened at once and kept; at most
    ``max_size`` exist.  ``acquire()`` waits up to ``acquire_timeout``
    seconds for one to be free (then ``PoolTimeoutError``).  A connection is
    rolled back when it comes back (and its ``autocommit`` restored); one
    that lost its leader or its socket is closed instead, and so are the idle
    connections opened before that (they talk to the old leader too).  A
    connection older than ``max_lifetime`` seconds is replaced, and one idle
    for ``max_idle`` seconds closed (beyond ``min_size``), when a connection
    is taken or given back.  Other keywords
    (``timeout``, ``autocommit``, ``ssl_ca``, ``on_query``, ...) go to
    ``dqlite.connect``: ``on_query`` is the hook of every pooled connection
    (and restored when one comes back).
    """

    def __init__(
        self,
        addresses: str | Sequence[str],
        database: str = "main",
        *,
        min_size: int = 1,
        max_size: int = 10,
        max_lifetime: float | None = 3600.0,
        max_idle: float | None = 600.0,
        acquire_timeout: float | None = 30.0,
        **connect_kwargs: Any,
    ) -> None:
        self.limits = PoolLimits(min_size, max_size, max_lifetime, max_idle, acquire_timeout)
        self.addresses = addresses
        self.database = database
        self._connect_kwargs = connect_kwargs
        self._autocommit = bool(connect_kwargs.get("autocommit", False))
        self._on_query = connect_kwargs.get("on_query")
        self._cond = threading.Condition()
        self._idle: list[Slot] = []          # most recently returned last
        self._in_use: dict[int, Slot] = {}   # id(conn) -> slot
        self._opening = 0
        self._generation = 0
        self._closed = False
        try:
            for _ in range(min_size):
                self._idle.append(Slot(self._connect(), 0))
        except BaseException:
            self.close()
            raise

    def __repr__(self) -> str:
        return (f"<dqlite.pool.ConnectionPool {self.database} size={self.size} idle={len(self._idle)} "
                f"{'closed' if self._closed else 'open'}>")

    def _connect(self) -> Connection:
        return dqlite.connect(self.addresses, self.database, **self._connect_kwargs)

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

    def getconn(self, timeout: float | None = None) -> Connection:
        """Take a connection (give it back with ``putconn``); ``acquire()`` does both."""
        if timeout is None:
            timeout = self.limits.acquire_timeout
        deadline = None if timeout is None else _monotonic() + timeout
        to_close: list[Slot] = []
        try:
            with self._cond:
                while True:
                    if self._closed:
                        raise PoolClosedError("the connection pool is closed")
                    now = _monotonic()
                    while self._idle:
                        slot = self._idle.pop()
                        keep = len(self._idle) + len(self._in_use) + self._opening < self.limits.min_size
                        if self.limits.stale(slot, now, self._generation, keep):
                            to_close.append(slot)
                            continue
                        self._in_use[id(slot.conn)] = slot
                        return slot.conn
                    if self.size < self.limits.max_size:
                        self._opening += 1
                        break
                    left = None if deadline is None else deadline - now
                    if left is not None and left <= 0:
                        raise PoolTimeoutError(
                            f"no connection free within {timeout:g}s (max_size={self.limits.max_size})")
                    self._cond.wait(left)
        finally:
            for slot in to_close:
                slot.conn.close()
        return self._open()

    def _open(self) -> Connection:
        """Open a connection counted in ``_opening`` (outside the lock)."""
        try:
            conn = self._connect()
        except BaseException:
            with self._cond:
                self._opening -= 1
                self._cond.notify()
            raise
        with self._cond:
            self._opening -= 1
            if not self._closed:
                self._in_use[id(conn)] = Slot(conn, self._generation)
                return conn
        conn.close()
        raise PoolClosedError("the connection pool is closed")

    def putconn(self, conn: Connection, error: BaseException | None = None) -> None:
        """Give back a connection from ``getconn``.

        ``error``: what the code using it raised, if anything; a lost leader
        or socket closes it (and the idle connections opened before).
        """
        with self._cond:
            slot = self._in_use.pop(id(conn), None)
        if slot is None or slot.conn is not conn:
            raise InterfaceError("this connection does not belong to the pool (or was given back already)")
        drop = must_drop(error) or conn.closed
        if not drop:
            try:
                conn.rollback()
                if conn.autocommit != self._autocommit:
                    conn.autocommit = self._autocommit
                conn.row_factory = None
                if conn.on_query is not self._on_query:
                    conn.on_query = self._on_query
            except Error as exc:
                drop, error = True, exc
            except BaseException:
                conn.close()
                self._forget()
                raise
        lost = drop and leader_lost(error)
        old: list[Slot] = []
        with self._cond:
            if lost and slot.generation == self._generation:
                self._generation += 1
                old, self._idle = self._idle, []
            keep = not (drop or self._closed or slot.generation != self._generation
                        or self.limits.too_old(slot, _monotonic()))
            if keep:
                slot.idle_since = _monotonic()
                self._idle.append(slot)
            # Idle connections past their limits go now, not at the next acquire.
            old += self.limits.prune(self._idle, len(self._in_use) + self._opening, self._generation)
            self._cond.notify()
        if not keep:
            conn.close()
        for other in old:
            other.conn.close()

    def release(self, conn: Connection, error: BaseException | None = None) -> None:
        """The same as ``putconn``."""
        self.putconn(conn, error)

    def _forget(self) -> None:
        with self._cond:
            self._cond.notify()

    @contextmanager
    def acquire(self, timeout: float | None = None) -> Iterator[Connection]:
        """``with pool.acquire() as conn:`` a connection, rolled back and given back after."""
        conn = self.getconn(timeout)
        try:
            yield conn
        except BaseException as exc:
            self.putconn(conn, exc)
            raise
        self.putconn(conn)

    def _run(self, work: Callable[[Connection], Any]) -> Any:
        with self.acquire() as conn:
            result = work(conn)
            conn.commit()
            return result

    def execute(self, sql: str, parameters: Any = ()) -> int:
        """Run one statement on a pooled connection and commit; its ``rowcount``."""
        return self._run(lambda conn: conn.execute(sql, parameters).rowcount)

    def executemany(self, sql: str, seq_of_parameters: Any) -> int:
        """``executemany`` on a pooled connection, committed; its ``rowcount``."""
        return self._run(lambda conn: conn.executemany(sql, seq_of_parameters).rowcount)

    def fetchall(self, sql: str, parameters: Any = ()) -> list[Any]:
        """The rows of one query, run on a pooled connection."""
        return self._run(lambda conn: conn.execute(sql, parameters).fetchall())

    def fetchone(self, sql: str, parameters: Any = ()) -> Any:
        """The first row of one query (or None), run on a pooled connection."""
        return self._run(lambda conn: conn.execute(sql, parameters).fetchone())

    def close(self) -> None:
        """Close the idle connections now and the others when they come back.

        Threads waiting in ``acquire`` get ``PoolClosedError``.
        """
        with self._cond:
            self._closed = True
            idle, self._idle = self._idle, []
            self._cond.notify_all()
        for slot in idle:
            slot.conn.close()

    def __enter__(self) -> ConnectionPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
