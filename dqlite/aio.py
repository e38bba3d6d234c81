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
import socket
from collections.abc import AsyncIterator, Iterable, Sequence
from typing import TYPE_CHECKING, Any, Unpack

from dqlite._io import CLOSE, CONNECTED, Connect, FindLeader, Op, Send, Sleep
from dqlite._probe import probe_leaders_async
from dqlite._protocol import Decoder
from dqlite._session import Session
from dqlite._shell import _NOTHING, ConnectionBase, ConnectOptions, CursorBase, make_session
from dqlite._statements import Parameters
from dqlite._wire import QUICKACK, parse_address
from dqlite.exceptions import (
    CommitOutcomeUnknownError,
    ConnectionLostError,
    Error,
    InterfaceError,
    OperationalError,
    ProgrammingError,
    ProtocolError,
)

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


async def connect(address: str | Sequence[str], database: str = "main",
                  **options: Unpack[ConnectOptions]) -> AsyncConnection:
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
    session = make_session(address, database, dict(options))
    conn = AsyncConnection(session)
    on_query = options.get("on_query")
    if on_query is not None:
        conn.on_query = on_query
    await conn._run(session.connect())
    return conn


class AsyncConnection(ConnectionBase):
    """An asyncio connection to the leader of a dqlite cluster (see ``connect``)."""

    _cursor_cls: type[AsyncCursor]

    def __init__(self, session: Session) -> None:
        self._session = session
        self._protocol: _StreamProtocol | None = None
        self._busy = False
        # The operation timeout: one watchdog timer per connection, re-armed
        # lazily, rather than a timer per operation (see _on_watchdog).
        self._deadline = 0.0
        self._watchdog: asyncio.TimerHandle | None = None
        self._task: asyncio.Task[Any] | None = None
        self._timed_out = False
        self._attempt_timeout: float | None = None  # set while connecting

    # -- the I/O loop --------------------------------------------------------

    async def _run(self, op: Op) -> Any:
        """Drive one session operation on the event loop, within the timeout.

        The operation is busy, its task known and the watchdog armed for its
        first answer (each request moves ``_deadline`` on).
        """
        if self._busy:
            op.close()
            raise InterfaceError("another operation is in progress on this connection")
        self._raise_pending(op)
        # The connection's own loop when it has one: asyncio.get_running_loop()
        # costs a getpid() system call each time.
        protocol = self._protocol
        loop = protocol.loop if protocol is not None and protocol.loop is not None else asyncio.get_running_loop()
        self._busy = True
        self._deadline = loop.time() + self._session.timeout
        self._task = asyncio.current_task(loop)
        self._timed_out = False
        if self._watchdog is None:
            self._watchdog = loop.call_at(self._deadline, self._on_watchdog)
        try:
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
                    if request is None or type(request) is bytes:
                        protocol = self._protocol
                        if protocol is None or protocol.transport is None or protocol.transport.is_closing():
                            raise ConnectionLostError("not connected")
                        if request is not None:
                            protocol.write(request)
                            # Each answer gets the whole timeout from its request: a
                            # long pipelined operation keeps its time while it sends.
                            self._deadline = protocol.loop.time() + self._session.timeout  # type: ignore[union-attr]
                            if self._session.decoder.next_message() >= 0:
                                continue  # an answer owed from before is here whole: it is read first
                        if self._attempt_timeout is None:
                            await protocol.wait_for_message()
                        else:
                            # Setting up a connection: this node gets a share of the time.
                            try:
                                async with asyncio.timeout(self._attempt_timeout):
                                    await protocol.wait_for_message()
                            except TimeoutError:
                                raise ConnectionLostError("timed out") from None
                    elif type(request) is Send:
                        protocol = self._protocol
                        if protocol is None or protocol.transport is None or protocol.transport.is_closing():
                            raise ConnectionLostError("not connected")
                        protocol.write(request.data)
                        self._deadline = protocol.loop.time() + self._session.timeout  # type: ignore[union-attr]
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
                except (ConnectionLostError, ProtocolError) as exc:
                    error = exc  # the session classifies it
                except asyncio.CancelledError:
                    error = self._abort(op)
                    if isinstance(error, CommitOutcomeUnknownError):
                        log.warning("a COMMIT was cancelled; its outcome is unknown")
                    self._pending_error = error
                    raise
        except asyncio.CancelledError as exc:
            self._cancelled(exc)
            raise
        finally:
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
        await self._run(self._session.commit())

    async def rollback(self) -> None:
        """Roll back the open transaction (see ``dqlite.Connection.rollback``)."""
        await self._run(self._session.rollback())

    def rollback_nowait(self) -> bool:
        """``rollback()`` where it needs no awaiting; False, having done nothing, where it does.

        No await is needed when no transaction is open, or when the open one
        only read: its end goes out now, and its answer is read with the next
        request, as ``await rollback()`` would do.  For code that calls the
        driver from synchronous code through a bridge where each await costs
        a switch (SQLAlchemy's asyncio dialect, resetting a pooled connection).
        """
        protocol = self._protocol
        if (protocol is None or protocol.transport is None or protocol.transport.is_closing()
                or self._busy or not self._ends_with_sends_only()):
            return False  # (a closed socket: rollback() reconnects or says why)
        for request in self._session.rollback():  # nothing but Send: see Session.end_sends_only
            protocol.write(request.data)
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


class AsyncCursor(CursorBase):
    """An asyncio cursor; results stream from the server batch by batch."""

    _connection: AsyncConnection | None
    connection: AsyncConnection

    async def _release_result(self, connection: AsyncConnection) -> None:
        if connection._session.streaming is self._result:
            await connection._run(connection._session.abandon_stream(self._result))

    async def execute(self, sql: str, parameters: Parameters = ()) -> AsyncCursor:
        """Run one statement; returns the cursor.

        ``parameters``: a sequence for ``?`` placeholders (bound by position), or a
        mapping for named ones (``:name``, ``@name``, ``$name``), as in sqlite3.
        """
        connection = self._connection
        if connection is None:
            raise ProgrammingError("Cannot operate on a closed cursor.")
        session = connection._session
        if session.streaming is not None and session.streaming is self._result:
            await connection._run(session.abandon_stream(self._result))
        self._result = _NOTHING
        result = self._result = await connection._run(session.execute(sql, parameters))
        if result.lastrowid is not None:
            self._lastrowid = result.lastrowid
        return self

    async def executemany(self, sql: str, seq_of_parameters: Iterable[Parameters]) -> AsyncCursor:
        """Run one statement for each parameter set, all or nothing (pipelined)."""
        connection = self._check()
        await self._release_result(connection)
        self._result = _NOTHING
        self._set_result(await connection._run(connection._session.executemany(sql, seq_of_parameters)))
        return self

    async def _more(self, connection: AsyncConnection) -> bool:
        """Replace the consumed batch with the next one; False at the end of the result."""
        if self._result.done:
            return False
        result, rows = self._next_batch()
        read_batch = connection._session.read_batch
        while not rows and not result.done:
            result.done = await connection._run(read_batch(result, rows))
        return bool(rows)

    async def fetchone(self) -> Any:
        """The next row, or None at the end."""
        result = self._result
        pos = result.pos
        if pos < len(result.rows):
            result.pos = pos + 1
            row = result.rows[pos]
        else:
            if not await self._more(self._check_result()):
                return None
            result.pos = 1
            row = result.rows[0]
        factory = self.row_factory
        return row if factory is None else factory(self, row)

    async def fetchmany(self, size: int | None = None) -> list[Any]:
        """Up to ``size`` (default ``arraysize``) more rows."""
        if size is None:
            size = self.arraysize
        connection = self._check_result()
        out = self._take(size)
        while len(out) < size and await self._more(connection):
            out += self._take(size - len(out))
        return self._made(out)

    async def fetchall(self) -> list[Any]:
        """Every remaining row."""
        out = self.fetchall_nowait()
        if out is not None:
            return out
        connection = self._check_result()  # raises where there is no result to fetch
        result = self._result
        out = self._take_rest()
        read_batch = connection._session.read_batch
        while not result.done:
            result.done = await connection._run(read_batch(result, out))
        return self._made(out)

    def fetchall_nowait(self) -> list[Any] | None:
        """``fetchall()`` where it needs no awaiting; None, having done nothing, where it does.

        No await is needed when the rest of the result has arrived (a result
        smaller than one batch, the common case of a point query).  For code
        that calls the driver from synchronous code through a bridge where
        each await costs a switch (SQLAlchemy's asyncio dialect).
        """
        connection = self._connection
        result = self._result
        if not result.done or result.description is None or connection is None or connection._session.closed:
            return None
        return self._made(self._take_rest())

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
            if self._streaming(connection):
                await connection._run(connection._session.abandon_stream(self._result))
        finally:
            self._closed()

    async def __aenter__(self) -> AsyncCursor:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class _HookedAsyncCursor(AsyncCursor):
    """A cursor that reports each statement to its connection's ``on_query`` hook."""

    async def execute(self, sql: str, parameters: Parameters = ()) -> AsyncCursor:
        with self._reported("execute", sql):
            return await super().execute(sql, parameters)

    async def executemany(self, sql: str, seq_of_parameters: Iterable[Parameters]) -> AsyncCursor:
        with self._reported("executemany", sql):
            return await super().executemany(sql, seq_of_parameters)


AsyncConnection._cursor_classes = (AsyncCursor, _HookedAsyncCursor)
AsyncConnection._cursor_cls = AsyncCursor

async def create_pool(addresses: str | Sequence[str], database: str = "main", **kwargs: Any) -> AsyncConnectionPool:
    """An asyncio connection pool (``dqlite.aiopool.AsyncConnectionPool``).

    ``min_size``, ``max_size``, ``max_lifetime``, ``max_idle`` and
    ``acquire_timeout`` shape the pool (see ``dqlite.aiopool.create_pool``);
    other keywords go to ``connect``.
    """
    from dqlite.aiopool import create_pool as create

    return await create(addresses, database, **kwargs)
