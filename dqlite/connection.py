"""The synchronous DB-API connection and cursor.

A thin shell: it owns a blocking socket and runs the operations of
``dqlite._session.Session`` (which decides what to send and how to read the
answers) against it.  Encoding and decoding are the compiled core's.
"""

from __future__ import annotations

import inspect
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, Unpack

from dqlite._io import CLOSE, CONNECTED, Connect, FindLeader, Op, Send, Sleep
from dqlite._probe import probe_leaders
from dqlite._session import Session
from dqlite._transaction import WRITING
from dqlite._shell import _NOTHING, ConnectionBase, ConnectOptions, CursorBase, make_session
from dqlite._statements import Parameters
from dqlite._wire import Wire
from dqlite.exceptions import (
    CommitOutcomeUnknownError,
    ConnectionLostError,
    Error,
    InterfaceError,
    ProgrammingError,
    ProtocolError,
)

__all__ = ["Connection", "Cursor", "connect"]

log = logging.getLogger("dqlite")
_IN_USE = ("another operation is in progress on this connection: a connection must not be "
           "used by two threads at once (dqlite.threadsafety is 1)")
_monotonic = time.monotonic

def connect(address: str | Sequence[str], database: str = "main", **options: Unpack[ConnectOptions]) -> Connection:
    """Connect to the leader of a dqlite cluster and open ``database``.

    ``address`` is one ``"host:port"`` or a list of them: bootstrap nodes,
    any of which can name the leader.  The driver finds the leader, connects
    to it and opens the database, retrying until ``timeout`` seconds pass.

    ``timeout`` also bounds the wait for each answer: a server that does not
    answer a request within ``timeout`` seconds (or trickles the answer in
    slower than that) fails the operation with ``ConnectionLostError``.  With
    ``autocommit=False`` (the PEP 249 default) a transaction begins implicitly
    before the first statement after connect, ``commit()`` or ``rollback()``.
    ``parse_datetimes=False`` returns DATETIME/DATE/TIMESTAMP values as the
    server's raw strings (``""`` still becomes ``None``) and UNIXTIME values
    as integers.  ``cached_statements`` bounds the prepared statements kept
    per connection; ``max_message_size`` the size of one server message.
    ``ssl``: an ``ssl.SSLContext`` to speak TLS to the nodes (the host name
    checked is the one in each node's address).  Or ``ssl_ca``, ``ssl_cert``
    and ``ssl_key``: PEM files to make one from (``dqlite.tls.client_context``:
    the authorities the nodes' certificates chain to, and the client's own
    certificate and key for mutual TLS).

    ``busy_timeout`` (like sqlite3's ``timeout``): a statement that finds the
    database locked by another connection's write transaction (SQLITE_BUSY)
    is run again, after short waits, for up to that many seconds; 0 raises
    ``OperationalError`` at once.  A batch of ``executemany`` waits the same
    way.  A stale read snapshot (SQLITE_BUSY_SNAPSHOT) is never waited for:
    only a new transaction can see the new data.

    ``transaction_mode``: how the transactions the driver begins by itself
    (``autocommit=False``) take the write lock.  ``"AUTO"`` (the default):
    a transaction's reads share one snapshot and take no lock, so readers
    never wait for each other or for a writer; its first write takes the
    write lock.  When it cannot (another connection holds the lock, or
    committed since this transaction's first read), the driver rolls the
    transaction back (it ran nothing but reads), waits for the lock for up
    to ``busy_timeout`` seconds and runs the write again in a new
    transaction, with the savepoints it had made: a transaction that reads
    and then writes waits instead of failing with "database is locked".
    The reads it made before that wait are not made again; where the write
    depends on what was read, use ``"IMMEDIATE"``: its BEGIN takes the
    write lock before the first statement, so nothing can change between
    the reads and the writes (readers of such transactions wait for each
    other).  ``"DEFERRED"``: SQLite's plain BEGIN; the first write of a
    transaction that has read fails when the lock is taken.
    ``"EXCLUSIVE"``: as IMMEDIATE (the database is in WAL mode).  An
    explicit ``BEGIN ...`` statement is sent as it is.  The
    ``transaction_mode`` attribute changes it for the next transactions.

    ``busy_poll``: how long, in seconds (at most 0.001), a wait for an
    answer first polls the socket (with the GIL released) before sleeping;
    0 never polls.  An
    answer from a nearby node comes sooner than a sleeping thread, or an
    idle virtual CPU, can be woken for it (docs/performance.md has the
    figures).  The window adapts per connection: where answers come later than
    it (a distant node, slow queries), polling stops by itself and is only
    tried again now and then.

    ``node_store``: where the driver keeps the cluster's members, learned
    from the leader at each connect, and tries them after ``address`` (so
    the cluster is found when the bootstrap nodes are gone; see
    ``dqlite.nodestore``).  None (default): the process-wide in-memory store;
    a file path: the process-wide store kept in that JSON file too (read at
    first use, rewritten atomically on change); a ``NodeStore``; False: no
    store, only ``address`` is tried.

    ``on_query``: a hook called with a ``dqlite.hooks.QueryEvent`` after
    each statement (see ``Connection.on_query``).
    """
    conn = Connection(make_session(address, database, dict(options)))
    on_query = options.get("on_query")
    if on_query is not None:
        conn.on_query = on_query
    return conn


class Connection(ConnectionBase):
    """A DB-API 2.0 connection to the leader of a dqlite cluster."""

    _cursor_cls: type[Cursor]

    def __init__(self, session: Session) -> None:
        """Connect through ``session`` (use ``dqlite.connect``)."""
        self._session = session
        self._wire: Wire | None = None
        # Held while an operation runs: two threads interleaving requests and
        # answers on one socket would read each other's rows (or receive into
        # a buffer the other frees), so the second gets an InterfaceError.
        self._lock = threading.Lock()
        self._close_requested = False  # by close() from another thread, mid-operation
        self._run(session.connect())

    # -- the I/O loop --------------------------------------------------------

    def _run(self, op: Op) -> Any:
        """Drive one session operation with blocking socket I/O; refused
        while another thread runs one.

        Each answer is waited for at most ``timeout`` seconds from the
        request that asked for it (or from the start of an operation that
        only receives, such as reading the next batch of a result), however
        the bytes trickle in (see ``Wire.fill``); a long pipelined operation
        keeps sending, so it keeps its time.
        """
        # The lock is held while an operation runs: two threads interleaving
        # requests and answers on one socket would read each other's rows.
        if not self._lock.acquire(False):
            op.close()
            raise InterfaceError(_IN_USE)
        send = op.send
        error: Error | None = None
        reply: Any = None  # what the next resume sends in (FindLeader's answers)
        deadline = 0.0  # set by each send, or by a first receive with no send before it
        try:
            self._raise_pending(op)
            if self._session.unread and self._wire is not None:
                # Answers owed (see dqlite._io): take in those that arrived,
                # without waiting and keeping the GIL.
                self._wire.poll()
            while True:
                try:
                    request = send(reply) if error is None else op.throw(error)
                except StopIteration as stop:
                    return stop.value
                except Exception:
                    raise  # the session's own failure (or its caller's iterable's): handled there
                except BaseException:
                    # KeyboardInterrupt or the like, raised while the
                    # session's code ran: it stopped at an unknown point.
                    self._interrupted(op)
                    raise
                error = reply = None
                wire = self._wire
                try:
                    if type(request) is bytes:
                        if wire is None:
                            raise ConnectionLostError("not connected")
                        # Sent, and the answer received in the same step.
                        deadline = wire.exchange(request, self._session.timeout)
                    elif request is None:
                        if wire is None:
                            raise ConnectionLostError("not connected")
                        if not deadline:
                            deadline = _monotonic() + self._session.timeout
                        wire.fill(deadline)
                    elif type(request) is Send:
                        if wire is None:
                            raise ConnectionLostError("not connected")
                        wire.send(request.data)
                        deadline = _monotonic() + self._session.timeout
                    elif request is CLOSE:
                        self._close_wire()
                    elif type(request) is Connect:
                        self._close_wire()
                        self._wire = Wire(request.address, request.timeout, self._session.decoder,
                                          self._session.ssl, self._session.busy_poll)
                    elif request is CONNECTED:
                        if wire is not None:
                            wire.set_timeout(self._session.timeout)
                    elif type(request) is Sleep:
                        time.sleep(request.seconds)
                    elif type(request) is FindLeader:
                        reply = probe_leaders(request.addresses, request.timeout, self._session.ssl,
                                              request.preferred)
                    else:  # pragma: no cover - a bug in the session
                        raise AssertionError(f"unknown I/O request {request!r}")
                except (ConnectionLostError, ProtocolError) as exc:
                    error = exc  # the session classifies it
                except BaseException:
                    # Interrupted while waiting (KeyboardInterrupt, or what a
                    # signal handler raised): the request may be answered yet.
                    self._interrupted(op)
                    raise
        finally:
            wire = self._wire
            if wire is not None and wire.shortened:
                wire.restore_timeout()
            self._lock.release()
            if self._close_requested:  # by close() from another thread meanwhile
                self.close()

    def _interrupted(self, op: Op) -> None:
        """KeyboardInterrupt, or what a signal handler raised, ended ``op``
        midway: drop the socket.

        The socket may hold a request's answer, or part of one, that the next
        operation must never take for its own; the session hears of it as a
        lost connection (the transaction is lost, a COMMIT's outcome unknown)
        and the connection reconnects on its next use.  A COMMIT of unknown
        outcome is what that next operation raises.
        """
        self._close_wire()
        session = self._session
        failure = ConnectionLostError("the operation was interrupted")
        error: Error | None = None
        state = inspect.getgeneratorstate(op)
        try:
            if state == inspect.GEN_CLOSED:
                # The exception came from inside the session's generator, which
                # is finished: what it was doing is unknown, so a transaction
                # that wrote may have been committed.
                error = session.lost(failure, writing=session.tx.state is WRITING)
            else:
                # Finish it as if the connection had been lost where it stands
                request = op.send(None) if state == inspect.GEN_CREATED else op.throw(failure)
                while True:
                    request = op.send(None) if request is CLOSE else op.throw(failure)
        except StopIteration:
            pass
        except Error as exc:
            error = exc
        if isinstance(error, CommitOutcomeUnknownError):
            log.warning("a COMMIT was interrupted; its outcome is unknown")
            self._pending_error = error

    def _close_wire(self) -> None:
        wire, self._wire = self._wire, None
        if wire is not None:
            wire.close()

    # -- public API --------------------------------------------------------

    @property
    def autocommit(self) -> bool:
        """False (default): PEP 249 transactions.  True: each statement commits itself.

        Switching to True commits an open transaction first.
        """
        return self._session.autocommit

    @autocommit.setter
    def autocommit(self, value: bool) -> None:
        value = bool(value)
        if value and not self._session.autocommit and self._session.in_transaction:
            self.commit()
        self._session.autocommit = value

    def cursor(self) -> Cursor:
        """A new cursor on this connection."""
        self._session.check_open()
        return self._cursor_cls(self)

    def execute(self, sql: str, parameters: Parameters = ()) -> Cursor:
        """Shortcut: a new cursor's ``execute``."""
        return self.cursor().execute(sql, parameters)

    def executemany(self, sql: str, seq_of_parameters: Iterable[Parameters]) -> Cursor:
        """Shortcut: a new cursor's ``executemany``."""
        return self.cursor().executemany(sql, seq_of_parameters)

    def executescript(self, script: str) -> Cursor:
        """Commit, then run each statement of ``script`` in turn (like sqlite3).

        Statements run in autocommit mode unless the script has its own
        BEGIN ... COMMIT; a failing statement stops the script.
        """
        cursor = self.cursor()
        self._run(self._session.executescript(script))
        return cursor

    def ping(self) -> None:
        """Check that the connection still reaches the cluster's leader.

        One round trip without SQL: an open transaction is left as it is.
        Raises ``ConnectionLostError`` (``TransactionLostError`` inside a
        transaction) if the connection is down or its node no longer leads;
        the next statement then reconnects.
        """
        self._run(self._session.ping())

    def commit(self) -> None:
        """Commit the open transaction; a no-op when none is open.

        Raises ``TransactionLostError`` if the transaction was lost with the
        leader (nothing of it was committed) and ``CommitOutcomeUnknownError``
        if the connection failed after COMMIT was sent.  Neither is retried.
        """
        if not self._send_only(self._session.commit):
            self._run(self._session.commit())

    def rollback(self) -> None:
        """Roll back the open transaction; a no-op when none is open.

        Also clears the state a lost transaction leaves behind, so the
        connection can be used again.
        """
        if not self._send_only(self._session.rollback):
            self._run(self._session.rollback())

    def _send_only(self, operation: Callable[[], Op]) -> bool:
        """Run ``operation`` (commit or rollback) without the I/O loop where
        it only sends (``Session.end_sends_only``): the end of a transaction
        that only read, as a pool's reset of a connection is.  False, having
        done nothing, where it is not so."""
        wire = self._wire
        if wire is None or not self._ends_with_sends_only() or not self._lock.acquire(False):
            return False  # (a second thread: _run refuses it)
        op = operation()
        try:
            for request in op:  # nothing but Send
                try:
                    wire.send(request.data)
                except ConnectionLostError as exc:
                    op.throw(exc)  # the session forgets the connection: CLOSE, then it returns
                    self._close_wire()
        except StopIteration:
            pass
        except Exception:
            raise
        except BaseException:
            # Interrupted midway through a send: part of it may be out.
            self._interrupted(op)
            raise
        finally:
            self._lock.release()
            if self._close_requested:
                self.close()
        return True

    def close(self) -> None:
        """Close the connection; an open transaction is rolled back by the server.

        Called from another thread while an operation runs, it shuts the
        socket down: that operation fails with ``ConnectionLostError`` at
        once (and its thread closes the socket).
        """
        if self._session.closed:
            return
        if not self._lock.acquire(False):
            # That thread owns the session and the socket's buffer: wake it,
            # and it closes when its operation ends (see _release).  Asked
            # first, tried again after: one of the two threads closes.
            self._close_requested = True
            wire = self._wire
            if wire is not None:
                wire.shutdown()
            if not self._lock.acquire(False):
                return
        try:
            self._session.mark_closed()
            self._close_wire()
        finally:
            self._lock.release()

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: Any) -> None:
        """Commit if the block succeeded, roll back if it raised (like sqlite3)."""
        if self._session.closed:
            return
        if exc_type is None:
            self.commit()
        else:
            try:
                self.rollback()
            except Error:
                log.debug("rollback after an exception failed", exc_info=True)

    def __del__(self) -> None:
        wire = getattr(self, "_wire", None)
        if wire is not None:
            wire.close()


class Cursor(CursorBase):
    """A DB-API 2.0 cursor.  Results stream from the server batch by batch."""

    _connection: Connection | None
    connection: Connection

    def _release_result(self, connection: Connection) -> None:
        if connection._session.streaming is self._result:
            connection._run(connection._session.abandon_stream(self._result))

    def execute(self, sql: str, parameters: Parameters = ()) -> Cursor:
        """Run one statement; returns the cursor.

        ``parameters``: a sequence for ``?`` placeholders (bound by position), or a
        mapping for named ones (``:name``, ``@name``, ``$name``), as in sqlite3.
        """
        connection = self._connection
        if connection is None:
            raise ProgrammingError("Cannot operate on a closed cursor.")
        session = connection._session
        if session.streaming is not None and session.streaming is self._result:
            connection._run(session.abandon_stream(self._result))
        self._result = _NOTHING
        result = self._result = connection._run(session.execute(sql, parameters))
        if result.lastrowid is not None:
            self._lastrowid = result.lastrowid
        return self

    def executemany(self, sql: str, seq_of_parameters: Iterable[Parameters]) -> Cursor:
        """Run one statement for each parameter set, all or nothing.

        The statement is prepared once and the executions are pipelined inside
        a SAVEPOINT: if any fails, none of the batch stays applied.
        """
        connection = self._check()
        self._release_result(connection)
        self._result = _NOTHING
        self._set_result(connection._run(connection._session.executemany(sql, seq_of_parameters)))
        return self

    def _more(self) -> bool:
        """Replace the consumed batch with the next one; False at the end of the result."""
        if self._result.done:
            return False
        connection = self._check()
        result, rows = self._next_batch()
        read_batch = connection._session.read_batch
        while not rows and not result.done:
            result.done = connection._run(read_batch(result, rows))
        return bool(rows)

    def fetchone(self) -> Any:
        """The next row, or None at the end."""
        result = self._result
        pos = result.pos
        if pos < len(result.rows):
            result.pos = pos + 1
            row = result.rows[pos]
        else:
            self._check_result()
            if not self._more():
                return None
            result.pos = 1
            row = result.rows[0]
        factory = self.row_factory
        return row if factory is None else factory(self, row)

    def fetchmany(self, size: int | None = None) -> list[Any]:
        """Up to ``size`` (default ``arraysize``) more rows."""
        if size is None:
            size = self.arraysize
        self._check_result()
        out = self._take(size)
        while len(out) < size and self._more():
            out += self._take(size - len(out))
        return self._made(out)

    def fetchall(self) -> list[Any]:
        """Every remaining row."""
        result = self._result
        if result.description is None or self._connection is None:
            self._check_result()  # raises
        if result.pos:
            out = result.rows[result.pos:]
            result.pos = 0
        else:
            out = result.rows
        result.rows = []
        if not result.done:
            connection = self._check()
            read_batch = connection._session.read_batch
            while not result.done:
                result.done = connection._run(read_batch(result, out))
        return out if self.row_factory is None else self._made(out)

    def __iter__(self) -> Iterator[Any]:
        return self

    def __next__(self) -> Any:
        row = self.fetchone()
        if row is None:
            raise StopIteration
        return row

    def close(self) -> None:
        """Close the cursor; the rest of a streaming result is drained and dropped."""
        connection = self._connection
        if connection is None:
            return
        try:
            if self._streaming(connection):
                connection._run(connection._session.abandon_stream(self._result))
        finally:
            self._closed()

    def __enter__(self) -> Cursor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _HookedCursor(Cursor):
    """A cursor that reports each statement to its connection's ``on_query`` hook."""

    def execute(self, sql: str, parameters: Parameters = ()) -> Cursor:
        with self._reported("execute", sql):
            return super().execute(sql, parameters)

    def executemany(self, sql: str, seq_of_parameters: Iterable[Parameters]) -> Cursor:
        with self._reported("executemany", sql):
            return super().executemany(sql, seq_of_parameters)


Connection._cursor_classes = (Cursor, _HookedCursor)
Connection._cursor_cls = Cursor
