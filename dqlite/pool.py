"""A thread-safe connection pool for the sync driver (no SQLAlchemy needed).

    from dqlite.pool import ConnectionPool

    pool = ConnectionPool(["10.0.0.1:9001", "10.0.0.2:9001"], "app", max_size=8)
    with pool.acquire() as conn:          # rolled back when it comes back
        conn.execute("INSERT INTO kv VALUES (?, ?)", ("a", b"1"))
        conn.commit()
    rows = pool.fetchall("SELECT k, v FROM kv")
    pool.close()

``dqlite.aio.create_pool`` is the asyncio pool with the same behaviour.
What both share, everything but the waiting and the I/O (when a connection
is too old or idle too long, when a failure means it must go, what is idle
and what is in use), is here: ``PoolBase``.
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
_CLOSED = "the connection pool is closed"


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


class Returned:
    """A connection being given back, and whether it must go (shared by both
    pools' ``putconn``).

    ``with returned:`` around its rollback: an ``Error`` there drops it and
    is swallowed; anything else (an interruption: the socket is out of step)
    drops it and goes on.
    """

    __slots__ = ("slot", "drop", "error")

    def __init__(self, slot: Slot, error: BaseException | None) -> None:
        self.slot = slot
        self.error = error
        self.drop = must_drop(error) or slot.conn.closed

    def __enter__(self) -> Returned:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: Any) -> bool:
        if exc is None:
            return False
        self.drop, self.error = True, exc
        return isinstance(exc, Error)


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


class PoolBase:
    """What both pools share, without their I/O: the arguments, the
    bookkeeping of idle and busy connections, and the rules for taking one,
    opening one and giving one back.

    ``ConnectionPool`` (threads, under a lock) and
    ``dqlite.aiopool.AsyncConnectionPool`` (one event loop) add only the
    waiting, the opening, the rolling back and the closing.
    """

    #: The name ``repr`` shows.
    _kind = "dqlite.pool.ConnectionPool"

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
        self._idle: list[Slot] = []          # most recently returned last
        self._in_use: dict[int, Slot] = {}   # id(conn) -> slot
        self._opening = 0
        self._generation = 0
        self._closed = False
        self._start()

    def _start(self) -> None:
        """The end of ``__init__``: where a shell sets up its own state (the sync
        pool its lock and its ``min_size`` connections)."""

    def __repr__(self) -> str:
        return (f"<{self._kind} {self.database} size={self.size} idle={len(self._idle)} "
                f"{'closed' if self._closed else 'open'}>")

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

    def _take(self, stale: list[Slot]) -> Any | None:
        """An idle connection to hand out (now counted in use), or None: then
        ``_reserve`` may allow opening one.  The idle connections found stale
        on the way go into ``stale``, for the caller to close.  Raises
        ``PoolClosedError`` once the pool is closed."""
        if self._closed:
            raise PoolClosedError(_CLOSED)
        now = _monotonic()
        while self._idle:
            slot = self._idle.pop()
            keep = len(self._idle) + len(self._in_use) + self._opening < self.limits.min_size
            if self.limits.stale(slot, now, self._generation, keep):
                stale.append(slot)
                continue
            self._in_use[id(slot.conn)] = slot
            return slot.conn
        return None

    def _reserve(self) -> bool:
        """Whether ``max_size`` allows one more connection; if so it is counted
        as being opened until ``_opened``."""
        if self.size >= self.limits.max_size:
            return False
        self._opening += 1
        return True

    def _opened(self, conn: Any | None) -> bool:
        """A connection counted by ``_reserve`` was opened (None: opening failed).
        Whether it is the caller's, now in use; False when the pool was
        closed meanwhile (the caller closes it and raises ``PoolClosedError``)."""
        self._opening -= 1
        if conn is None or self._closed:
            return False
        self._in_use[id(conn)] = Slot(conn, self._generation)
        return True

    def _timed_out(self, timeout: float | None) -> PoolTimeoutError:
        return PoolTimeoutError(f"no connection free within {timeout:g}s (max_size={self.limits.max_size})")

    def _check_in(self, conn: Any, error: BaseException | None) -> Returned:
        """A connection given back, no longer in use; ``error``: what its user raised."""
        slot = self._in_use.pop(id(conn), None)
        if slot is None or slot.conn is not conn:
            raise InterfaceError("this connection does not belong to the pool (or was given back already)")
        return Returned(slot, error)

    def _reset(self, conn: Any) -> None:
        """Restore the pool's settings on a connection given back (once rolled back)."""
        if conn.autocommit != self._autocommit:
            conn.autocommit = self._autocommit
        conn.row_factory = None
        if conn.on_query is not self._on_query:
            conn.on_query = self._on_query

    def _given_back(self, returned: Returned) -> list[Slot]:
        """Put a connection given back (and rolled back, unless it must go)
        among the idle ones, or not; the slots to close, its own among them
        if it goes.

        A lost leader takes the idle connections opened before it too (they
        talk to the same node).  Idle connections past their limits go now,
        not at the next acquire.
        """
        slot, drop = returned.slot, returned.drop
        to_close: list[Slot] = []
        if drop and leader_lost(returned.error) and slot.generation == self._generation:
            self._generation += 1
            to_close, self._idle = self._idle, []
        now = _monotonic()
        if drop or self._closed or slot.generation != self._generation or self.limits.too_old(slot, now):
            to_close.append(slot)
        else:
            slot.idle_since = now
            self._idle.append(slot)
        to_close += self.limits.prune(self._idle, len(self._in_use) + self._opening, self._generation)
        return to_close

    def _close(self) -> list[Slot]:
        """Mark the pool closed; the idle connections, to close now."""
        self._closed = True
        idle, self._idle = self._idle, []
        return idle


class ConnectionPool(PoolBase):
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

    def _start(self) -> None:
        self._cond = threading.Condition()
        try:
            for _ in range(self.limits.min_size):
                self._idle.append(Slot(self._connect(), 0))
        except BaseException:
            self.close()
            raise

    def _connect(self) -> Connection:
        return dqlite.connect(self.addresses, self.database, **self._connect_kwargs)

    def getconn(self, timeout: float | None = None) -> Connection:
        """Take a connection (give it back with ``putconn``); ``acquire()`` does both."""
        if timeout is None:
            timeout = self.limits.acquire_timeout
        deadline = None if timeout is None else _monotonic() + timeout
        stale: list[Slot] = []
        try:
            with self._cond:
                while True:
                    conn = self._take(stale)
                    if conn is not None:
                        return conn
                    if self._reserve():
                        break
                    left = None if deadline is None else deadline - _monotonic()
                    if left is not None and left <= 0:
                        raise self._timed_out(timeout)
                    self._cond.wait(left)
        finally:
            for slot in stale:
                slot.conn.close()
        try:
            conn = self._connect()
        except BaseException:
            with self._cond:
                self._opened(None)
                self._cond.notify()
            raise
        with self._cond:
            if self._opened(conn):
                return conn
        conn.close()
        raise PoolClosedError(_CLOSED)

    def putconn(self, conn: Connection, error: BaseException | None = None) -> None:
        """Give back a connection from ``getconn``.

        ``error``: what the code using it raised, if anything; a lost leader
        or socket closes it (and the idle connections opened before).
        """
        with self._cond:
            returned = self._check_in(conn, error)
        try:
            with returned:
                if not returned.drop:
                    conn.rollback()
                    self._reset(conn)
        finally:
            with self._cond:
                to_close = self._given_back(returned)
                self._cond.notify()
            for old in to_close:
                old.conn.close()

    def release(self, conn: Connection, error: BaseException | None = None) -> None:
        """The same as ``putconn``."""
        self.putconn(conn, error)

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
            idle = self._close()
            self._cond.notify_all()
        for slot in idle:
            slot.conn.close()

    def __enter__(self) -> ConnectionPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
