"""The asyncio DB-API: ``await dqlite.aio.connect(...)``.

It runs on the event loop itself, with no threads: an ``asyncio``
``BufferedProtocol`` receives straight into the compiled decoder's buffer, and
the connection drives the very same ``Session`` operations as the sync API
(``dqlite._session``), so discovery, pipelining, failure classification and
the hazard guards behave identically.  Works under uvloop too.

    import dqlite.aio

    conn = await dqlite.aio.connect(["127.0.0.1:9001"], "app")
    cur = conn.cursor()
    await cur.execute("SELECT id, name FROM users WHERE id = ?", (1,))
    print(await cur.fetchone())
    await conn.commit()
    await conn.close()

One operation at a time per connection: starting a second one while the
first is still running raises ``InterfaceError`` (use one connection per
task, or a pool).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from ssl import SSLContext
from typing import TYPE_CHECKING, Any, NoReturn

from dqlite._protocol import Decoder
from dqlite._session import (
    CLOSE, CONNECTED, HOT_PARAMS, POLL, Connect, ConnectionBase, FindLeader, Op, ResultState, Parameters, SendSoon,
    Session, Sleep,
)
from dqlite._probe import probe_leaders_async
from dqlite.nodestore import NodeStoreOption, resolve as resolve_node_store
from dqlite._wire import DEFAULT_BUSY_POLL, QUICKACK, parse_address
from dqlite.exceptions import (
    CommitOutcomeUnknownError,
    ConnectionLostError,
    Error,
    InterfaceError,
    OperationalError,
    ProgrammingError,
)
from dqlite.hooks import QueryEvent, QueryHook, emit, event_rowcount
from dqlite.tls import resolve_ssl

if TYPE_CHECKING:
    from dqlite.aiopool import AsyncConnectionPool

__all__ = ["AsyncConnection", "AsyncCursor", "connect", "create_pool"]

log = logging.getLogger("dqlite")

# Stop reading from the socket while this much is buffered and not consumed:
# a result the application reads slowly must not pile up in memory.
_HIGH_WATER = 1 << 20


class _StreamProtocol(asyncio.BufferedProtocol):
    """Receives into the decoder's buffer; completes one future per awaited answer.

    The shape of asyncpg's protocol: the reader asks for the next message
    with ``wait_for_message()`` and gets a future, which the protocol
    completes once that message is wholly buffered (the decoder tells, see
    ``Decoder.buffer_updated``), so an answer that arrives in pieces wakes
    the reader once.  Sends go to the transport at once; the event loop does
    every receive.  Only public asyncio APIs: it works on any loop (uvloop)
    and over any transport (TLS).
    """

    def __init__(self, decoder: Decoder) -> None:
        self.decoder = decoder
        self.transport: asyncio.Transport | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.waiter: asyncio.Future[None] | None = None
        self.lost: Exception | None = None
        self.paused = False
        self.sock: Any = None  # for QUICKACK (Linux), else None
        self.received_since_write = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.loop = asyncio.get_running_loop()
        self.sock = transport.get_extra_info("socket") if QUICKACK else None

    def write(self, data: bytes) -> None:
        """Send ``data`` now (the transport buffers what the socket does not take)."""
        self.received_since_write = False
        self.transport.write(data)  # type: ignore[union-attr]

    def _quickack(self) -> None:
        # See dqlite._wire.Wire.fill: what a node writes after a response we
        # received waits for our ACK (Nagle), which the kernel may delay by
        # up to 40 ms; setting QUICKACK sends it now.
        try:
            self.sock.setsockopt(socket.IPPROTO_TCP, QUICKACK, 1)
        except (OSError, AttributeError):
            self.sock = None

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.decoder.get_buffer(sizehint)

    def buffer_updated(self, nbytes: int) -> None:
        whole = self.decoder.buffer_updated(nbytes)
        self.received_since_write = True
        waiter = self.waiter
        if waiter is not None:
            if whole:
                self.waiter = None
                if not waiter.done():
                    waiter.set_result(None)
            elif self.sock is not None:
                self._quickack()  # part of the answer: the rest may wait for our ACK
        elif self.decoder.buffered > _HIGH_WATER and not self.paused and self.transport is not None:
            self.transport.pause_reading()
            self.paused = True

    def eof_received(self) -> bool | None:
        return None  # close the transport; connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = exc if exc is not None else EOFError("the server closed the connection")
        waiter = self.waiter
        if waiter is not None:
            self.waiter = None
            if not waiter.done():
                waiter.set_exception(ConnectionLostError(f"lost connection: {self.lost}"))

    def wait_for_message(self) -> asyncio.Future[None]:
        """A future done when a whole message is buffered (call it only when none is).

        Awaited as it is: no coroutine per wait.
        """
        if self.lost is not None:
            raise ConnectionLostError(f"lost connection: {self.lost}")
        if self.paused:
            self.paused = False
            self.transport.resume_reading()  # type: ignore[union-attr]
        if self.received_since_write and self.sock is not None:
            self._quickack()
        waiter = self.loop.create_future()  # type: ignore[union-attr]
        self.waiter = waiter
        return waiter


async def connect(
    address: str | Sequence[str],
    database: str = "main",
    *,
    timeout: float = 10.0,
    autocommit: bool = False,
    parse_datetimes: bool = True,
    cached_statements: int = 128,
    max_message_size: int = 1 << 30,
    ssl: SSLContext | None = None,
    busy_timeout: float = 5.0,
    busy_poll: float = DEFAULT_BUSY_POLL,
    transaction_mode: str = "AUTO",
    ssl_ca: str | os.PathLike[str] | None = None,
    ssl_cert: str | os.PathLike[str] | None = None,
    ssl_key: str | os.PathLike[str] | None = None,
    on_query: QueryHook | None = None,
    node_store: NodeStoreOption = None,
) -> AsyncConnection:
    """Connect to the leader of a dqlite cluster and open ``database``.

    The arguments, their meaning and the errors are those of
    ``dqlite.connect``; ``timeout`` bounds the leader search and then the
    wait for each answer, counted from its request (a timed-out operation
    raises an ``OperationalError`` and closes the connection, which
    reconnects on its next use).  ``busy_poll`` is accepted (and checked)
    as ``dqlite.connect`` takes it, so that one set of options serves both
    drivers (SQLAlchemy's URL passes it to either), and ignored: the
    asyncio driver never polls its socket; the event loop waits for every
    answer.  ``on_query``: see ``dqlite.Connection.on_query``.  ``node_store``: see
    ``dqlite.connect`` (the same stores serve both APIs).
    """
    session = Session(
        address, database, timeout=timeout, autocommit=autocommit,
        parse_datetimes=parse_datetimes, cached_statements=cached_statements,
        max_message_size=max_message_size, ssl=resolve_ssl(ssl, ssl_ca, ssl_cert, ssl_key),
        busy_timeout=busy_timeout,
        busy_poll=busy_poll, transaction_mode=transaction_mode,
        node_store=resolve_node_store(node_store))
    conn = AsyncConnection(session)
    if on_query is not None:
        conn.on_query = on_query
    await conn._run(session.connect())
    return conn


class AsyncConnection(ConnectionBase):
    """An asyncio connection to the leader of a dqlite cluster (see ``connect``)."""

    # The class of its cursors: AsyncCursor, or _HookedAsyncCursor while a hook is set.
    _cursor_cls: type[AsyncCursor]
    _on_query: QueryHook | None = None

    def __init__(self, session: Session) -> None:
        self._session = session
        self._protocol: _StreamProtocol | None = None
        self._busy = False
        # A COMMIT cut off by cancellation: reported by the next operation.
        self._pending_error: Error | None = None
        # The operation timeout: one watchdog timer per connection, re-armed
        # lazily, rather than a timer per operation (see _on_watchdog).
        self._deadline = 0.0
        self._watchdog: asyncio.TimerHandle | None = None
        self._task: asyncio.Task[Any] | None = None
        self._timed_out = False
        self._attempt_timeout: float | None = None  # set while connecting

    # -- the I/O loop --------------------------------------------------------

    async def _run(self, op: Op) -> Any:
        """Drive one session operation on the event loop, within the timeout."""
        if self._busy:
            op.close()
            raise InterfaceError("another operation is in progress on this connection")
        if self._pending_error is not None:
            op.close()
            error, self._pending_error = self._pending_error, None
            raise error
        # The connection's own loop when it has one: asyncio.get_running_loop()
        # costs a getpid() system call each time.
        protocol = self._protocol
        loop = protocol.loop if protocol is not None and protocol.loop is not None else asyncio.get_running_loop()
        self._start_operation(loop)
        try:
            return await self._drive(op)
        except asyncio.CancelledError as exc:
            self._cancelled(exc)
            raise
        finally:
            self._end_operation()

    def _start_operation(self, loop: asyncio.AbstractEventLoop) -> None:
        """An operation is under way: busy, its task known, the watchdog armed
        for its first answer (each request moves ``_deadline`` on)."""
        self._busy = True
        self._deadline = loop.time() + self._session.timeout
        self._task = asyncio.current_task(loop)
        self._timed_out = False
        if self._watchdog is None:
            self._watchdog = loop.call_at(self._deadline, self._on_watchdog)

    def _end_operation(self) -> None:
        self._deadline = 0.0
        self._task = None
        self._busy = False

    def _cancelled(self, exc: asyncio.CancelledError) -> None:
        """An operation ended cancelled: raise the timeout's error if the watchdog did it.

        Cancelled from outside, return (the caller re-raises ``exc``): only a
        cancelled COMMIT is worth reporting later; whatever else was lost is
        in the session's state.
        """
        if self._timed_out and self._task is not None and self._task.uncancel() == 0:
            error, self._pending_error = self._pending_error, None
            message = f"timed out after {self._session.timeout:g}s"
            if error is None:
                raise OperationalError(message) from exc
            raise type(error)(f"{message}: {error}", code=error.code) from exc
        if not isinstance(self._pending_error, CommitOutcomeUnknownError):
            self._pending_error = None

    async def _cached_query_failed(self, exc: BaseException) -> NoReturn:
        """``AsyncCursor.execute``'s hot path ended with ``exc``: raise what ``_run`` would.

        That is, what ``_run(session.execute(...))`` does when the query's
        answer fails, or when the task is cancelled (or times out) while it
        waits for it.  The cursor's result is cleared; the connection is
        still busy.  An ``Error`` goes through ``Session._failed`` (a lost
        connection is classified, a server error inside a transaction
        checked).  A cancellation drops the socket, which may hold part of
        the answer (never to be taken for the next query's), and the session
        hears of it as a lost connection, as in ``_drive``; so does any other
        exception that is no ``Error``.
        """
        try:
            if isinstance(exc, Error):
                await self._drive(_query_failed(self._session, exc))  # raises
            else:  # cancelled, timed out, or anything else midway
                op = _query_failed(self._session, None)
                op.send(None)  # now where the answer is awaited
                error = self._abort(op)
                if isinstance(exc, asyncio.CancelledError):
                    self._pending_error = error  # for _cancelled: a timeout reports it
            raise exc
        except asyncio.CancelledError as cancelled:
            self._cancelled(cancelled)
            raise

    def _on_watchdog(self) -> None:
        """The timer fired: time out the running operation if it is past its deadline.

        Operations that finish in time only move ``_deadline``; the timer is
        re-armed for the running operation's deadline, or left off when idle.
        """
        self._watchdog = None
        deadline = self._deadline
        if not deadline or self._task is None:
            return
        loop = self._task.get_loop()
        if loop.time() < deadline:
            self._watchdog = loop.call_at(deadline, self._on_watchdog)
            return
        self._timed_out = True
        self._task.cancel()

    async def _drive(self, op: Op) -> Any:
        send = op.send
        throw = op.throw
        error: Error | None = None
        reply: Any = None  # what the next resume sends in (FindLeader's answers)
        while True:
            try:
                request = send(reply) if error is None else throw(error)
            except StopIteration as stop:
                return stop.value
            error = reply = None
            try:
                if request is None:
                    protocol = self._protocol
                    if protocol is None:
                        raise ConnectionLostError("not connected")
                    if self._attempt_timeout is None:
                        await protocol.wait_for_message()
                    else:
                        # Setting up a connection: this node gets a share of the time.
                        try:
                            async with asyncio.timeout(self._attempt_timeout):
                                await protocol.wait_for_message()
                        except TimeoutError:
                            raise ConnectionLostError("timed out") from None
                elif type(request) is bytes or type(request) is SendSoon:
                    protocol = self._protocol
                    if protocol is None or protocol.transport is None or protocol.transport.is_closing():
                        raise ConnectionLostError("not connected")
                    if isinstance(request, SendSoon):
                        protocol.write(request.data)  # sent now: no answer is awaited for it yet
                    else:
                        protocol.write(request)
                        # Each answer gets the whole timeout from its request: a
                        # long pipelined operation keeps its time while it sends.
                        self._deadline = protocol.loop.time() + self._session.timeout  # type: ignore[union-attr]
                elif request is POLL:
                    pass  # the event loop has taken in whatever arrived
                elif request is CLOSE:
                    self._close_transport()
                elif type(request) is Connect:
                    self._close_transport()
                    self._attempt_timeout = request.timeout
                    await self._open(request)
                elif request is CONNECTED:
                    self._attempt_timeout = None
                elif type(request) is Sleep:
                    await asyncio.sleep(request.seconds)
                elif type(request) is FindLeader:
                    reply = await probe_leaders_async(request.addresses, request.timeout,
                                                      self._session.ssl, request.preferred)
                else:  # pragma: no cover - a bug in the session
                    raise AssertionError(f"unknown I/O request {request!r}")
            except ConnectionLostError as exc:
                error = exc
            except asyncio.CancelledError:
                error = self._abort(op)
                if isinstance(error, CommitOutcomeUnknownError):
                    log.warning("a COMMIT was cancelled; its outcome is unknown")
                self._pending_error = error
                raise

    def _abort(self, op: Op) -> Error | None:
        """Cancelled (or timed out) mid-operation: drop the socket.

        The socket may hold half a response, so it cannot be reused.  The
        operation is finished with a connection failure so the session
        classifies it like any other (transaction lost, commit outcome
        unknown); returns the exception it ended with.
        """
        self._close_transport()
        failure = ConnectionLostError("the operation was cancelled or timed out")
        try:
            request = op.throw(failure)
            while True:
                if request is CLOSE:
                    self._close_transport()
                    request = op.send(None)
                else:
                    request = op.throw(failure)
        except StopIteration:
            return None
        except Error as exc:
            return exc

    async def _open(self, request: Connect) -> None:
        host, port = parse_address(request.address)
        loop = asyncio.get_running_loop()
        protocol = _StreamProtocol(self._session.decoder)
        try:
            async with asyncio.timeout(request.timeout):
                if self._session.ssl is None:
                    await loop.create_connection(lambda: protocol, host, port)
                else:
                    await loop.create_connection(lambda: protocol, host, port, ssl=self._session.ssl,
                                                 server_hostname=host)
        except (OSError, TimeoutError) as exc:
            raise ConnectionLostError(f"cannot connect to dqlite node {request.address}: {exc or 'timed out'}") from exc
        self._protocol = protocol

    def _close_transport(self) -> None:
        self._attempt_timeout = None
        protocol, self._protocol = self._protocol, None
        if protocol is not None and protocol.transport is not None:
            protocol.transport.abort()
        self._session.decoder.reset()

    # -- public API --------------------------------------------------------

    @property
    def autocommit(self) -> bool:
        """False (default): PEP 249 transactions.  True: each statement commits itself.

        Unlike the sync API, switching to True with a transaction open raises:
        call ``await commit()`` first (a property cannot await).
        """
        return self._session.autocommit

    @autocommit.setter
    def autocommit(self, value: bool) -> None:
        value = bool(value)
        if value and not self._session.autocommit and self._session.in_transaction:
            raise ProgrammingError("commit or roll back the open transaction before enabling autocommit")
        self._session.autocommit = value

    def cursor(self) -> AsyncCursor:
        """A new cursor on this connection."""
        self._session.check_open()
        return self._cursor_cls(self)

    @property
    def on_query(self) -> QueryHook | None:
        """A hook called after each statement (see ``dqlite.Connection.on_query``)."""
        return self._on_query

    @on_query.setter
    def on_query(self, hook: QueryHook | None) -> None:
        if hook is not None and not callable(hook):
            raise InterfaceError(f"on_query must be callable or None, not {type(hook).__name__}")
        self._on_query = hook
        self._cursor_cls = AsyncCursor if hook is None else _HookedAsyncCursor

    async def execute(self, sql: str, parameters: Parameters = ()) -> AsyncCursor:
        """Shortcut: a new cursor's ``execute``."""
        return await self.cursor().execute(sql, parameters)

    async def executemany(self, sql: str, seq_of_parameters: Iterable[Parameters]) -> AsyncCursor:
        """Shortcut: a new cursor's ``executemany``."""
        return await self.cursor().executemany(sql, seq_of_parameters)

    async def executescript(self, script: str) -> AsyncCursor:
        """Commit, then run each statement of ``script`` in turn."""
        cursor = self.cursor()
        await self._run(self._session.executescript(script))
        return cursor

    async def ping(self) -> None:
        """Check that the connection still reaches the leader (see ``dqlite.Connection.ping``)."""
        await self._run(self._session.ping())

    async def commit(self) -> None:
        """Commit the open transaction (see ``dqlite.Connection.commit``)."""
        if not self._end_read_only_now("COMMIT"):
            await self._run(self._session.commit())

    async def rollback(self) -> None:
        """Roll back the open transaction (see ``dqlite.Connection.rollback``)."""
        if not self._end_read_only_now("ROLLBACK"):
            await self._run(self._session.rollback())

    def rollback_nowait(self) -> bool:
        """``rollback()`` where it needs no awaiting; False, having done nothing, where it does.

        No await is needed when no transaction is open, or when the open one
        only read: its end goes out now, and its answer is read with the next
        request, as ``await rollback()`` would do.  For code that calls the
        driver from synchronous code through a bridge where each await costs
        a switch (SQLAlchemy's asyncio dialect, resetting a pooled connection).
        """
        if self._end_read_only_now("ROLLBACK"):
            return True
        session = self._session
        return (not session.in_transaction and session.transaction_lost is None and not session.closed
                and not self._busy and self._pending_error is None)

    def _end_read_only_now(self, sql: str) -> bool:
        """commit()/rollback() of a transaction that only read, without a
        session generator (Session.end_read_only_now); False: not the case
        (or another operation runs, or an error waits: ``_run`` tells)."""
        protocol = self._protocol
        if (protocol is None or self._busy or self._pending_error is not None
                or protocol.transport is None or protocol.transport.is_closing()):
            return False
        data = self._session.end_read_only_now(sql)
        if data is None:
            return False
        protocol.write(data)
        return True

    async def close(self) -> None:
        """Close the connection; an open transaction is rolled back by the server."""
        self.terminate()

    def terminate(self) -> None:
        """Close at once, without awaiting: for pool teardown, from any loop or none."""
        if self._session.closed:
            return
        self._session.mark_closed()
        protocol, self._protocol = self._protocol, None
        if protocol is None or protocol.transport is None:
            return
        transport = protocol.transport
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if protocol.loop is running:
            transport.abort()
            return
        # Another loop (or none) runs here: the transport's loop must not be
        # touched from this thread.  Shutting the socket down ends the TCP
        # connection at once; the transport closes itself on its own loop.
        sock = transport.get_extra_info("socket")
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        loop = protocol.loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(transport.abort)

    async def __aenter__(self) -> AsyncConnection:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: Any) -> None:
        """Commit if the block succeeded, roll back if it raised (like the sync API)."""
        if self._session.closed:
            return
        if exc_type is None:
            await self.commit()
        else:
            try:
                await self.rollback()
            except Error:
                log.debug("rollback after an exception failed", exc_info=True)


def _query_failed(session: Session, exc: Error | None) -> Op:
    """What ``Session.execute`` does when a query's answer fails with ``exc``.

    ``exc`` None: a generator to send None to first; it then stands where
    ``execute`` awaits the answer, for ``_abort`` to throw the failure in.
    """
    if exc is None:
        try:
            yield None
        except Error as thrown:
            exc = thrown
        else:  # pragma: no cover - _abort always throws
            raise AssertionError("_query_failed resumed without a failure")
    yield from session.query_failed(exc)
    raise exc


class AsyncCursor(ResultState):
    """An asyncio cursor; results stream from the server batch by batch."""

    _connection: AsyncConnection | None
    connection: AsyncConnection

    def _check_result(self) -> AsyncConnection:
        connection = self._check()
        if self._description is None:
            raise ProgrammingError("no result to fetch from: execute a query first")
        return connection

    async def _release_result(self, connection: AsyncConnection) -> None:
        if connection._session.streaming is self:
            await connection._run(connection._session.abandon_stream(self))
        self._clear_result()

    async def execute(self, sql: str, parameters: Parameters = ()) -> AsyncCursor:
        """Run one statement; returns the cursor.

        ``parameters``: a sequence for ``?`` placeholders (bound by position), or a
        mapping for named ones (``:name``, ``@name``, ``$name``), as in sqlite3.
        """
        connection = self._connection
        if connection is not None and type(parameters) in HOT_PARAMS:
            # The hot path: a prepared query with nothing to send before it
            # (Session.encode_cached_query) on an open socket, nothing else
            # running (else _run refuses, or reports a cancelled COMMIT).  What
            # ``_run(session.execute(...))`` does for it, without a session
            # generator and ``_drive`` to create and resume: the same busy
            # flag, watchdog and answer deadline, the same waits, the same
            # failure handling (see AsyncConnection._cached_query_failed).
            # The session is connected, so no connection attempt (with its
            # ``_attempt_timeout``) is under way.
            protocol = connection._protocol
            if (protocol is not None and not connection._busy and connection._pending_error is None
                    and protocol.transport is not None and not protocol.transport.is_closing()):
                session = connection._session
                try:
                    encoded = session.encode_cached_query(sql, parameters)
                except Error as exc:
                    self._clear_result()
                    await connection._run(_query_failed(session, exc))  # raises
                    raise  # pragma: no cover
                except BaseException:
                    self._clear_result()
                    raise
                if encoded:
                    connection._start_operation(protocol.loop)  # type: ignore[arg-type]
                    try:
                        protocol.write(session.encoder.take())
                        decoder = session.decoder
                        # Answers owed by the end of the last transaction come
                        # first (and if its BEGIN failed, the query runs again below).
                        owed = session.take_owed() if session.unread else True
                        while owed is None:
                            await protocol.wait_for_message()
                            owed = session.take_owed()
                        if owed:
                            rows: list = []
                            done = False
                            while not done and not rows:  # up to a first row, or the end
                                while decoder.next_message() < 0:
                                    await protocol.wait_for_message()
                                done = decoder.read_rows(rows)
                            session.take_query_rows(self, rows, done)
                    except BaseException as exc:
                        self._clear_result()
                        await connection._cached_query_failed(exc)  # raises
                        raise  # pragma: no cover
                    finally:
                        connection._end_operation()
                    if owed:
                        return self
        connection = self._check()
        await self._release_result(connection)
        await connection._run(connection._session.execute(self, sql, parameters))
        return self

    async def executemany(self, sql: str, seq_of_parameters: Iterable[Parameters]) -> AsyncCursor:
        """Run one statement for each parameter set, all or nothing (pipelined)."""
        connection = self._check()
        await self._release_result(connection)
        await connection._run(connection._session.executemany(self, sql, seq_of_parameters))
        return self

    async def _more(self, connection: AsyncConnection) -> bool:
        if self._done:
            return False
        rows: list = []
        self._rows = rows
        self._pos = 0
        session = connection._session
        while not rows and not self._done:
            self._done = await connection._run(session.read_batch(self, rows))
        return bool(rows)

    async def fetchone(self) -> Any:
        """The next row, or None at the end."""
        pos = self._pos
        if pos < len(self._rows):
            self._pos = pos + 1
            row = self._rows[pos]
            factory = self.row_factory
            return row if factory is None else factory(self, row)
        connection = self._check_result()
        if await self._more(connection):
            self._pos = 1
            row = self._rows[0]
            factory = self.row_factory
            return row if factory is None else factory(self, row)
        return None

    async def fetchmany(self, size: int | None = None) -> list[Any]:
        """Up to ``size`` (default ``arraysize``) more rows."""
        if size is None:
            size = self.arraysize
        connection = self._check_result()
        out = self._take(size)
        while len(out) < size and await self._more(connection):
            out += self._take(size - len(out))
        factory = self.row_factory
        return out if factory is None else [factory(self, row) for row in out]

    async def fetchall(self) -> list[Any]:
        """Every remaining row."""
        out = self.fetchall_nowait()
        if out is not None:
            return out
        connection = self._check_result()  # raises where there is no result to fetch
        out = self._take_rest()
        session = connection._session
        while not self._done:
            self._done = await connection._run(session.read_batch(self, out))
        factory = self.row_factory
        return out if factory is None else [factory(self, row) for row in out]

    def fetchall_nowait(self) -> list[Any] | None:
        """``fetchall()`` where it needs no awaiting; None, having done nothing, where it does.

        No await is needed when the rest of the result has arrived (a result
        smaller than one batch, the common case of a point query).  For code
        that calls the driver from synchronous code through a bridge where
        each await costs a switch (SQLAlchemy's asyncio dialect).
        """
        connection = self._connection
        if not self._done or self._description is None or connection is None or connection._session.closed:
            return None
        out = self._take_rest()
        factory = self.row_factory
        return out if factory is None else [factory(self, row) for row in out]

    def __aiter__(self) -> AsyncIterator[Any]:
        return self

    async def __anext__(self) -> Any:
        row = await self.fetchone()
        if row is None:
            raise StopAsyncIteration
        return row

    async def close(self) -> None:
        """Close the cursor; the rest of a streaming result is drained and dropped."""
        connection = self._connection
        if connection is None:
            return
        try:
            if connection._session.streaming is self and not connection._session.closed:
                await connection._run(connection._session.abandon_stream(self))
        finally:
            self._connection = None
            self._rows = []
            self._done = True

    async def __aenter__(self) -> AsyncCursor:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()



class _HookedAsyncCursor(AsyncCursor):
    """A cursor that reports each statement to its connection's ``on_query`` hook."""

    async def execute(self, sql: str, parameters: Parameters = ()) -> AsyncCursor:
        return await self._timed("execute", super().execute, sql, parameters)

    async def executemany(self, sql: str, seq_of_parameters: Iterable[Parameters]) -> AsyncCursor:
        return await self._timed("executemany", super().executemany, sql, seq_of_parameters)

    async def _timed(self, method: str, call: Any, sql: str, arg: Any) -> AsyncCursor:
        connection = self._owner
        hook = connection._on_query
        start = time.perf_counter()
        try:
            await call(sql, arg)
        except BaseException as exc:
            if hook is not None:
                emit(hook, QueryEvent(sql, time.perf_counter() - start, -1, exc, connection.database, method))
            raise
        if hook is not None:
            emit(hook, QueryEvent(sql, time.perf_counter() - start, event_rowcount(self), None,
                                  connection.database, method))
        return self


AsyncConnection._cursor_cls = AsyncCursor

async def create_pool(addresses: str | Sequence[str], database: str = "main", **kwargs: Any) -> AsyncConnectionPool:
    """An asyncio connection pool (``dqlite.aiopool.AsyncConnectionPool``).

    ``min_size``, ``max_size``, ``max_lifetime``, ``max_idle`` and
    ``acquire_timeout`` shape the pool (see ``dqlite.aiopool.create_pool``);
    other keywords go to ``connect``.
    """
    from dqlite.aiopool import create_pool as create

    return await create(addresses, database, **kwargs)
