"""The connection's logic, once, for both the sync and the asyncio API.

A ``Session`` decides what to send and how to read the answers: implicit
transactions, pipelining, the statement cache, the 1.11.1 hazard guards.  It
does no I/O itself: each operation is a generator that yields what it needs
from the I/O shell (``dqlite._io`` lists the requests), and both shells drive
the same generators.  Its parts, a module each:

* ``dqlite._discovery``: finding the leader and connecting to it;
* ``dqlite._statements``: classification, parameters, the prepared-statement cache;
* ``dqlite._transaction``: the transaction's state and how the write lock is waited for;
* ``dqlite._failures``: what a failure means (server messages, lost connections).
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterable, Iterator, Sequence
from ssl import SSLContext
from typing import Any

from dqlite import _sql
from dqlite._discovery import LeaderDiscovery
from dqlite._failures import (
    LOCKED_CODES,
    MAY_AUTO_ROLLBACK,
    SQLITE_BUSY,
    ServerSays,
    answer_or_refusal,
    is_connection_failure,
    lost_error,
    refused_before_running,
)
from dqlite._io import CLOSE, RECV, Op, Send, Sleep
from dqlite._protocol import MAX_PARAMS_SCHEMA0, Decoder, Encoder
from dqlite._statements import Prepared, StatementCache, as_params
from dqlite._transaction import AHEAD, FRESH, IDLE, LOST, READING, WRITING, LockWait, Transaction
from dqlite._wire import DEFAULT_BUSY_POLL, parse_address
from dqlite.exceptions import (
    CommitOutcomeUnknownError,
    ConnectionLostError,
    DatabaseError,
    Error,
    InterfaceError,
    NotSupportedError,
    ProgrammingError,
    ProtocolError,
    TransactionLostError,
)
from dqlite.nodestore import NodeStore

log = logging.getLogger("dqlite")

_FAILURE = 0
_RESULT = 6
_ROWS = 7

_EXECUTEMANY_SAVEPOINT = "dqlite_executemany"
# EXECs in flight per window of executemany: large enough to keep the server
# busy, small enough that the answers always fit in the socket buffers.
_PIPELINE_WINDOW = 512

_EXEC_SQL_KINDS = frozenset({_sql.OTHER, _sql.BEGIN, _sql.COMMIT, _sql.ROLLBACK, _sql.SAVEPOINT})
_TRANSACTION_CONTROL = frozenset({_sql.BEGIN, _sql.COMMIT, _sql.ROLLBACK})
_ENDS = frozenset({_sql.COMMIT, _sql.ROLLBACK})
# Times a statement refused by a node that no longer leads is run again, on
# the leader found anew each time.
_MAX_REFUSALS = 3
# Kinds of statement that write (or may): any but a query, transaction
# control and savepoints.
_READ_OR_CONTROL_KINDS = frozenset({_sql.QUERY, _sql.EMPTY, _sql.BEGIN, _sql.COMMIT, _sql.ROLLBACK, _sql.SAVEPOINT})
# Kinds that never start a transaction over (AUTO): all but writes and savepoints.
_NEVER_STARTED_OVER = _READ_OR_CONTROL_KINDS - {_sql.SAVEPOINT}
# Kinds that go out as QUERY (a PRAGMA may answer rows).
_QUERY_KINDS = frozenset({_sql.QUERY, _sql.PRAGMA})
_QUERY = _sql.QUERY
# Kinds execute() sends nothing for.
_NOTHING_TO_SEND = frozenset({_sql.EMPTY, _sql.DML_RETURNING})
# Parameter sets bound by position as they are (as_params does the rest).
_PARAMS_AS_THEY_ARE = frozenset({tuple, list})


class Result:
    """What a statement gave: the rows of a query, which may still be
    arriving (``done`` False: ``Session.read_batch`` reads the next batch),
    or the effect of a write.  A cursor holds the one of its last statement.
    """

    __slots__ = ("description", "rows", "pos", "done", "rowcount", "lastrowid")

    def __init__(self, description: tuple | None = None, rows: list | None = None, done: bool = True,
                 rowcount: int = -1, lastrowid: int | None = None) -> None:
        #: One 7-tuple per column for a query; None for any other statement.
        self.description = description
        self.rows: list = rows if rows is not None else []
        self.pos = 0  # the rows before it were fetched
        self.done = done
        self.rowcount = rowcount
        #: The rowid an INSERT or REPLACE made; None: the statement made none.
        self.lastrowid = lastrowid


def _description(columns: list[str], types: tuple[int, ...] | None) -> tuple:
    """The description of a result with these columns (see ``Session._describe``)."""
    codes = types or (None,) * len(columns)
    return tuple((name, code, None, None, None, None, None) for name, code in zip(columns, codes))


class Session(LeaderDiscovery):
    """The state and logic of one connection, minus the I/O (see the module doc)."""

    def __init__(
        self,
        address: str | Sequence[str],
        database: str,
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
        node_store: NodeStore | None = None,
    ) -> None:
        addresses = [address] if isinstance(address, str) else list(address)
        if not addresses:
            raise InterfaceError("address must be 'host:port' or a non-empty list of them")
        for a in addresses:
            parse_address(a)  # a malformed address is a usage error, not worth retrying
        if not isinstance(database, str) or not database:
            raise InterfaceError("database must be a non-empty string")
        if timeout is None or timeout <= 0:
            raise InterfaceError("timeout must be a positive number of seconds")
        if busy_timeout is None or busy_timeout < 0:
            raise InterfaceError("busy_timeout must be a number of seconds, 0 or more")
        if busy_poll is None or not 0 <= busy_poll <= 0.001:
            raise InterfaceError("busy_poll must be a number of seconds from 0 to 0.001")
        self.addresses = addresses
        self.node_store = node_store  # the cluster's members learned so far (dqlite.nodestore)
        self.database = database
        self.timeout = float(timeout)
        self.busy_poll = float(busy_poll)
        self.autocommit = bool(autocommit)
        self.tx = Transaction(transaction_mode)
        self.lock_wait = LockWait(float(busy_timeout))
        self.ssl = ssl
        self.statements = StatementCache(cached_statements)
        self.encoder = Encoder()
        self.decoder = Decoder(max_message_size=max_message_size, parse_datetimes=parse_datetimes)
        self.connected_to: str | None = None   # the leader the socket is open to
        self.last_leader: str | None = None
        self.streaming: Result | None = None   # the result whose rows are still arriving
        self.unread = 0                        # answers owed by the server and not read yet
        self.closed = False
        self.params32: bool | None = None
        self.barrier_run = False  # this connection's leader ran _barrier()
        self.described: tuple = (None, None, None)  # see _describe

    @property
    def transaction_mode(self) -> str:
        return self.tx.mode

    def set_transaction_mode(self, mode: str) -> None:
        self.tx.set_mode(mode)

    @property
    def in_transaction(self) -> bool:
        return self.tx.is_open

    def describe_state(self) -> str:
        if self.closed:
            state = "closed"
        elif self.connected_to is None:
            state = "disconnected"
        else:
            state = f"leader={self.connected_to}"
        tx = " in transaction" if self.in_transaction else ""
        return f"database={self.database!r} {state}{tx}"

    # -- checks ------------------------------------------------------------

    def check_open(self) -> None:
        if self.closed:
            raise ProgrammingError("Cannot operate on a closed connection.")

    def check_usable(self) -> None:
        self.check_open()
        if self.tx.state is LOST:
            raise TransactionLostError(
                f"the transaction was lost ({self.tx.lost_reason}); call rollback() before "
                f"using the connection again")

    def mark_closed(self) -> None:
        """The application closed the connection (the shell closes the socket)."""
        self.closed = True
        self.tx.reset()
        self.streaming = None
        self.connected_to = None
        self.decoder.reset()

    # -- reading answers ---------------------------------------------------

    def _describe(self, columns: list[str], types: tuple[int, ...] | None) -> tuple:
        """The description of a result with these columns; this connection's last one is reused.

        The decoder hands out the same ``columns`` list while the column
        names stay the same, so repeated executions of a statement build nothing.
        """
        last_columns, last_types, description = self.described
        if columns is last_columns and types == last_types:
            return description
        description = _description(columns, types)
        self.described = (columns, types, description)
        return description

    def _await_answer(self) -> Op:
        """Wait until the next answer is in whole, after the answers still owed; its message type."""
        if self.unread:
            yield from self._read_unread()
        decoder = self.decoder
        while (mtype := decoder.next_message()) < 0:
            yield RECV
        return mtype

    def _read(self, reader: Any) -> Op:
        """One answer, decoded by ``reader``."""
        yield from self._await_answer()
        return reader()

    def _read_rows(self, out: list) -> Op:
        """The next batch of a result into ``out``; True at its end.

        ``_await_answer`` written out: this runs once per batch of every
        streamed result, and a nested generator per batch costs.
        """
        if self.unread:
            yield from self._read_unread()
        decoder = self.decoder
        while decoder.next_message() < 0:
            yield RECV
        return decoder.read_rows(out)

    def _skip_result(self) -> Op:
        decoder = self.decoder
        while True:
            yield from self._await_answer()
            if decoder.skip_rows():
                decoder.end_result()
                return

    def _discard_response(self) -> Op:
        """Consume one response whatever it is (after an earlier pipelined failure)."""
        if (yield from self._await_answer()) == _ROWS:
            yield from self._skip_result()
        else:
            self.decoder.skip()

    def _read_unread(self) -> Op:
        """Consume the answers to requests sent without waiting: the ends of
        read-only transactions (see _end), RESULT or FAILURE."""
        while True:
            self._take_arrived()
            if not self.unread:
                return
            mtype = self.decoder.next_message()
            if mtype >= 0:  # in whole, and not such an answer
                raise ProtocolError(
                    f"expected the answer to the end of a transaction, got message type {mtype}")
            yield RECV

    def _ahead_failed(self) -> None:
        """The end of a read-only transaction failed, and the BEGIN sent with it did not run."""
        state = self.tx.state
        # (FRESH: a query joined that BEGIN before its answer came, see
        # execute, and so ran outside any transaction.)
        if state is AHEAD or state is FRESH:
            self.tx.drop_ahead()

    def _read_finalizes(self, n: int) -> Op:
        for _ in range(n):
            # A refusal: an id the server already dropped, nothing to free.
            yield from answer_or_refusal(self._read(self.decoder.read_empty))

    # -- implicit transactions ---------------------------------------------

    def _ahead_must_end(self, info: _sql.Statement | None) -> bool:
        """Before sending a statement: take in the answers that arrived, and
        say whether the transaction begun ahead must end (``_rollback_ahead``)
        because ``info`` must not run in it (None: nothing may).  Never
        waits: see _begin_if_needed for an answer that has not arrived yet.
        Not a generator, so ``execute`` nests none for it.
        """
        if self.unread:
            self._take_arrived()
        return self.tx.state is AHEAD and (info is None or self.autocommit or not self.tx.begins_ahead
                                           or info.kind in _TRANSACTION_CONTROL)

    def _take_arrived(self) -> None:
        """Consume the answers owed that have arrived (the shell took them in
        before the operation, see ``dqlite._io``): the next receive then finds
        the new request's answers rather than these."""
        decoder = self.decoder
        while self.unread:
            mtype = decoder.next_message()
            if mtype != _RESULT and mtype != _FAILURE:
                return  # not in whole (or not such an answer: _read_unread says so)
            if mtype == _FAILURE:
                self._ahead_failed()
            decoder.skip()
            self.unread -= 1

    def _rollback_ahead(self) -> Op:
        self.tx.drop_ahead()
        self.encoder.exec_sql("ROLLBACK")
        yield self.encoder.take()
        yield from answer_or_refusal(self._read(self.decoder.read_result))  # nothing had run in it

    def _needs_begin(self, info: _sql.Statement) -> bool:
        """PEP 249 semantics call for an implicit BEGIN before ``info``."""
        return not (self.autocommit or self.tx.is_open or info.kind in _TRANSACTION_CONTROL)

    def _begin_alone(self) -> Op:
        """A BEGIN that takes the lock (IMMEDIATE, EXCLUSIVE) goes out alone
        ahead of anything but a query: it fails when another connection holds
        the lock (SQLITE_BUSY; ``execute`` waits and runs it again), and a
        statement sent behind it would then run outside any transaction."""
        self.encoder.exec_sql(self.tx.begin_sql)
        yield self.encoder.take()
        yield from self._read(self.decoder.read_result)
        self.tx.begun(implicit=True)

    def _begin_if_needed(self, info: _sql.Statement) -> bool:
        """Encode the implicit BEGIN when PEP 249 semantics call for one."""
        if not self._needs_begin(info):
            return False
        tx = self.tx
        if tx.state is AHEAD:
            if not self.unread:
                # The BEGIN sent ahead took (its answer is in): the server's
                # transaction is open already.
                tx.join_ahead()
                return False
            # Its answer is not in yet: send BEGIN again rather than wait.
            # If the one sent ahead took, this one fails harmlessly
            # ("within a transaction", see _send_with_prologue).
            tx.drop_ahead()
        self.encoder.exec_sql(tx.begin_sql)
        return True

    def _send_with_prologue(self, nfin: int, begin: bool) -> Op:
        """Send what is encoded, then read the FINALIZE and BEGIN answers ahead of the statement's."""
        yield self.encoder.take()
        if nfin:
            yield from self._read_finalizes(nfin)
        if begin:
            refusal = yield from answer_or_refusal(self._read(self.decoder.read_result))
            if isinstance(refusal, Error) and not ServerSays.ALREADY_IN_TRANSACTION.matches(refusal):
                yield from self._discard_response()
                raise refusal
            # (Refused as "within a transaction": the server had one open already, we are in it.)
            self.tx.begun(implicit=True)

    def _track_transaction_control(self, info: _sql.Statement) -> None:
        kind = info.kind
        if kind == _sql.BEGIN:
            # A write lock taken up front must be released before commit()
            # returns: such a transaction counts as writing.
            self.tx.begun(implicit=False, locks=info.takes_write_lock)
        elif kind == _sql.COMMIT or kind == _sql.ROLLBACK:
            self.tx.ended()

    # -- failure handling --------------------------------------------------

    def lost(self, exc: Error, *, writing: bool) -> Error:
        """Forget the server session; the exception to raise for ``exc``.

        ``writing``: a request that commits something (COMMIT, or a write in
        autocommit mode) was sent.  The caller yields CLOSE.
        """
        self.connected_to = None
        self.streaming = None
        self.statements.forget()
        self.unread = 0
        self.decoder.reset()
        tx = self.tx
        had_statements = tx.connection_lost()
        error = lost_error(exc, writing=writing, in_transaction=had_statements)
        if isinstance(error, CommitOutcomeUnknownError):
            tx.ended()
        elif had_statements:
            tx.lose(str(exc))
        log.warning("dqlite connection lost: %s", exc)
        return error

    def _guarded(self, op: Op, *, writing: bool) -> Op:
        """Run ``op``; turn connection failures into the right exception."""
        try:
            return (yield from op)
        except Error as exc:
            yield from self._failed(exc, writing)
            raise

    def _failed(self, exc: Error, writing: bool) -> Op:
        """``exc`` ended an operation: raise what it means for the connection.

        A connection failure is turned into the right exception (and the
        socket closed); after a server error inside a transaction, the
        transaction is checked.  Returns normally when ``exc`` stands.
        """
        yield from self._raise_if_lost(exc, writing and not isinstance(exc, ProtocolError))
        if isinstance(exc, DatabaseError):
            yield from self._after_statement_error(exc)

    def _raise_if_lost(self, exc: Error, writing: bool) -> Op:
        """When ``exc`` ended the connection: forget it, close the socket and raise what it means."""
        if is_connection_failure(exc):
            error = self.lost(exc, writing=writing)
            yield CLOSE
            raise error from exc

    def _broken(self, exc: Exception, writing: bool) -> Op:
        """Something that is no dqlite ``Error`` (a MemoryError, a bug) stopped
        an operation at an unknown point: the socket may hold the rest of an
        answer, never to be taken for the next request's.  Drop it, as a lost
        connection; the caller raises ``exc``."""
        self.lost(ConnectionLostError(f"the operation failed midway: {exc!r}"), writing=writing)
        yield CLOSE

    def _rerun_on_leader(self, exc: Error, kind: str) -> Op:
        """Whether ``exc`` refused a statement of ``kind`` before it ran, with
        nothing lost: a node that no longer leads refused it (see
        ``refused_before_running``), in autocommit mode or as the
        transaction's first statement.  The connection is then dropped, and
        the caller runs the statement again, on the leader found anew.  A
        transaction with statements in it is lost instead (raised); COMMIT
        and ROLLBACK never run again.
        """
        if kind in _ENDS or not refused_before_running(exc, kind):
            return False
        error = self.lost(exc, writing=False)
        yield CLOSE
        if self.tx.state is not IDLE:
            raise error from exc
        log.info("the statement was refused before it ran (%s): running it again on the leader", exc)
        return True

    def _after_statement_error(self, exc: Error) -> Op:
        """After a server error inside a transaction, check the transaction survived."""
        if not self.tx.is_open or exc.code is None or (exc.code & 0xFF) not in MAY_AUTO_ROLLBACK:
            return
        # BEGIN fails inside a transaction and succeeds outside one: if it
        # succeeds, SQLite rolled ours back (and the server holds the probe's).
        self.encoder.exec_sql("BEGIN")
        yield self.encoder.take()
        if isinstance((yield from answer_or_refusal(self._read(self.decoder.read_result))), Error):
            return  # refused: ours is still open
        self.tx.lose(f"SQLite rolled the transaction back after: {exc}", server_open=True)

    def _busy_delay(self, exc: Error, attempt: int, stale_snapshot_too: bool = False) -> float | None:
        """How long to wait before running again a statement that failed with
        ``exc`` (after ``_failed`` handled it), or None to raise ``exc``.

        SQLITE_BUSY means another connection holds the write lock and the
        statement did nothing: like sqlite3's ``timeout``, wait for the lock
        up to ``busy_timeout`` seconds in all.  Not after SQLite rolled the
        transaction back (``_failed`` checked), nor on a stale read snapshot
        (SQLITE_BUSY_SNAPSHOT, a different code) unless ``stale_snapshot_too``:
        the caller then starts the transaction over.
        """
        if not (exc.code == SQLITE_BUSY or (stale_snapshot_too and exc.code in LOCKED_CODES)):
            return None
        if self.tx.state is LOST or self.connected_to is None:
            return None
        return self.lock_wait.next_delay(attempt)

    # -- statements --------------------------------------------------------

    def _ensure_connected(self) -> Op:
        if self.connected_to is None:
            yield from self.connect()

    def _prepare(self, sql: str, info: _sql.Statement) -> Op:
        """The cached prepared statement for ``sql``, preparing it if needed."""
        statements = self.statements
        prepared = statements.get(sql)
        if prepared is not None:
            return prepared
        yield from self._ensure_connected()
        nfin, _ = statements.encode_finalizes(self.encoder)
        self.encoder.prepare(sql)
        yield self.encoder.take()
        yield from self._read_finalizes(nfin)
        try:
            stmt_id, nparams = yield from self._read(self.decoder.read_stmt)
        except DatabaseError as exc:
            if not ServerSays.NO_SUCH_OBJECT.matches(exc) or self.barrier_run:
                raise
            # A 1.11 leader prepares without a raft barrier: just elected, it
            # may not have applied what was committed before (a table created
            # a moment ago is "no such table").  Make it catch up, once per
            # connection, and prepare again.
            log.debug("PREPARE failed (%s) on a new connection: running a barrier, then preparing again", exc)
            yield from self._barrier()
            self.encoder.prepare(sql)
            yield self.encoder.take()
            stmt_id, nparams = yield from self._read(self.decoder.read_stmt)
        prepared = Prepared(stmt_id, nparams, info)
        statements.add(sql, prepared)
        return prepared

    def _barrier(self) -> Op:
        """Have the leader apply every committed log entry (protocol.md: QUERY
        and EXEC requests run a raft barrier first; PREPARE does not in 1.11)."""
        self.barrier_run = True
        yield from self._query_sql("SELECT 1")

    def _query_sql(self, sql: str, params: Sequence[Any] = (), params32: bool = False) -> Op:
        """Run ``sql`` through one QUERY_SQL; its rows."""
        self.encoder.query_sql(sql, params, params32)
        yield self.encoder.take()
        rows: list = []
        while not (yield from self._read_rows(rows)):
            pass
        self.decoder.end_result()
        return rows

    def _check_params(self, prepared: Prepared, params: Sequence[Any]) -> Op:
        """Validate the parameter count; returns whether params32 is needed."""
        if len(params) != prepared.nparams:
            raise ProgrammingError(
                f"Incorrect number of bindings supplied. The current statement uses "
                f"{prepared.nparams}, and there are {len(params)} supplied.")
        if prepared.nparams <= MAX_PARAMS_SCHEMA0:
            return False
        if self.params32 is None:
            yield from self._probe_params32()
        if not self.params32:
            raise NotSupportedError(
                f"the statement has {prepared.nparams} parameters, but this dqlite server accepts "
                f"at most {MAX_PARAMS_SCHEMA0} (it has no 32-bit parameter count, added in "
                f"libdqlite 1.12)")
        return True

    def _probe_params32(self) -> Op:
        """Ask the server once whether it reads 32-bit parameter counts.

        A server without them ignores the schema byte and rejects the tuple
        with "bind parameters" (protocol.md §1.5): harmless to try.
        """
        answer = yield from answer_or_refusal(self._query_sql("SELECT ?", (1,), True))
        self.params32 = answer == [(1,)]

    def execute(self, sql: str, params: Any) -> Op:
        """Run one statement with one parameter set (see ``as_params``); returns its ``Result``."""
        tx = self.tx
        if self.closed or tx.state is LOST:
            self.check_usable()  # raises
        statements = self.statements
        info = statements.classified.get(sql) or statements.classify(sql)
        if type(params) not in _PARAMS_AS_THEY_ARE:
            params = as_params(params, info)
        kind = info.kind
        if info.has_tail or kind in _NOTHING_TO_SEND:
            if info.has_tail:
                raise ProgrammingError("You can only execute one statement at a time.")
            if kind == _sql.EMPTY:
                return Result()
            raise NotSupportedError(
                "INSERT/UPDATE/DELETE ... RETURNING is not supported: dqlite 1.11 servers abort "
                "when a write runs through a query request; run the write and a SELECT instead")
        if self.streaming is not None:
            yield from self.finish_stream()
        writes = kind not in _READ_OR_CONTROL_KINDS
        # The transaction's first write may start it over (AUTO); a savepoint
        # writes nothing, and is made again if it does.
        restartable = kind not in _NEVER_STARTED_OVER and tx.restartable(self.autocommit)
        # A write outside any transaction commits by itself: losing the
        # connection after sending it leaves its outcome unknown.
        writing = kind != _QUERY and (kind == _sql.COMMIT or (self.autocommit and not tx.is_open))
        # DDL and transaction control without parameters: one EXEC_SQL, nothing worth preparing.
        sql_only = not params and kind in _EXEC_SQL_KINDS
        joined_unanswered = False  # joined a BEGIN sent ahead whose answer had not come
        refusals = 0  # by a node that no longer leads (see refused_before_running)
        encoder = self.encoder
        decoder = self.decoder
        attempt = 0
        while True:
            # One attempt: send the statement (with what must go before it)
            # and read its answer.  A prepared statement's is written out
            # here, with no generator nested in this one: the common case.
            try:
                if self.connected_to is not None and self._ahead_must_end(info):
                    yield from self._rollback_ahead()
                if sql_only:
                    result = yield from self._exec_sql(sql, info)
                    break
                prepared = statements.prepared.get(sql)
                if prepared is None:
                    prepared = yield from self._prepare(sql, info)
                else:
                    statements.prepared.move_to_end(sql)  # the most recently used
                # Sent as a query (a PRAGMA may have turned out to return no rows).
                query = prepared.info.kind in _QUERY_KINDS
                if len(params) == prepared.schema0_nparams:
                    params32 = False
                else:
                    params32 = yield from self._check_params(prepared, params)
                if self.connected_to is None:
                    yield from self.connect()
                if not tx.begins_ahead and prepared.info.kind != _QUERY and self._needs_begin(info):
                    yield from self._begin_alone()
                nfin, finalized = 0, None
                try:
                    if statements.to_finalize:
                        nfin, finalized = statements.encode_finalizes(encoder)
                    state = tx.state
                    # Join the transaction begun ahead when its BEGIN took; or,
                    # for a query, when its answer is not in yet: the server
                    # runs it first.  (A write never joins a BEGIN that may
                    # have failed.)  Joined once the request is encoded.
                    join = state is AHEAD and (not self.unread or prepared.info.kind == _QUERY)
                    if join or state is READING or state is WRITING or self.autocommit:
                        begin = False
                    else:
                        begin = self._begin_if_needed(info)
                    if query:
                        encoder.query(prepared.stmt_id, params, params32)
                    else:
                        encoder.exec(prepared.stmt_id, params, params32)
                except BaseException:
                    statements.unencode(encoder, finalized)
                    raise
                if join:
                    joined_unanswered = self.unread > 0
                    tx.join_ahead()
                if nfin or begin:
                    yield from self._send_with_prologue(nfin, begin)
                else:
                    yield encoder.take()
                if self.unread:
                    yield from self._read_unread()
                if joined_unanswered and tx.state is not FRESH:
                    # The BEGIN it joined failed: the query ran outside any
                    # transaction.  Run it again, in one.
                    joined_unanswered = False
                    yield from self._discard_response()
                    continue
                while decoder.next_message() < 0:
                    yield RECV
                if not query:
                    last_id, changes = decoder.read_result()
                    if prepared.info.kind == _sql.DML:
                        result = Result(rowcount=changes, lastrowid=last_id if info.is_insert else None)
                    else:
                        self._track_transaction_control(info)
                        result = Result()
                    break
                rows: list = []
                try:
                    done = decoder.read_rows(rows)
                except Error as exc:
                    if prepared.info.kind != _sql.PRAGMA or not ServerSays.NO_ROWS_TO_QUERY.matches(exc):
                        raise
                    result = yield from self._exec_rowless_pragma(prepared, params, params32)
                    break
                if (rows or done) and decoder.columns:
                    result = Result(self._describe(decoder.columns, decoder.first_row_types), rows, done)
                    if done:
                        decoder.end_result()
                    else:
                        self.streaming = result
                else:
                    result = yield from self._read_first_rows(rows, done, prepared.info.kind)
                break
            except Error as exc:
                if restartable and writes and exc.code in LOCKED_CODES:
                    delay = self._busy_delay(exc, attempt, stale_snapshot_too=True)
                    if delay is not None:
                        # Roll back first: the wait holds no snapshot.
                        attempt += 1
                        yield from self._guarded(self._restart_transaction(), writing=False)
                        yield Sleep(delay)
                        continue
                if refusals < _MAX_REFUSALS and (yield from self._rerun_on_leader(exc, kind)):
                    refusals += 1
                    continue
                yield from self._failed(exc, writing)
                tx.statement_ran(writes)  # a write that failed may hold the lock
                delay = self._busy_delay(exc, attempt)
                if delay is None:
                    raise
                attempt += 1
                yield Sleep(delay)
                continue
            except Exception as exc:
                yield from self._broken(exc, writing)
                raise
        if writes or tx.state is FRESH:
            tx.statement_ran(writes)
        if restartable and not writes and tx.state is READING:
            tx.savepoints.append(sql)  # a savepoint, made again if the transaction starts over
        return result

    def _restart_transaction(self) -> Op:
        """AUTO: the transaction's first write found the database locked, or
        its read snapshot stale (``Transaction.restartable`` held).  Roll the
        transaction back and begin it again with the savepoints it had made:
        the write then runs again in a transaction that has no snapshot yet,
        so it takes the write lock or finds it taken, and never a stale
        snapshot.  What the transaction read before is not read again.
        """
        tx = self.tx
        enc = self.encoder
        answers = 0
        if tx.is_open:
            enc.exec_sql("ROLLBACK")
            answers += 1
        tx.ended()
        savepoints = tx.savepoints[:]
        if savepoints:
            enc.exec_sql(tx.begin_sql)
            for statement in savepoints:
                enc.exec_sql(statement)
            answers += 1 + len(savepoints)
        log.debug("database is locked at the transaction's first write: starting it over")
        if not answers:
            return
        yield enc.take()
        failure: Error | None = None
        for _ in range(answers):
            refusal = yield from answer_or_refusal(self._read(self.decoder.read_result))
            if isinstance(refusal, Error) and failure is None and not ServerSays.NO_TRANSACTION.matches(refusal):
                failure = refusal
        if failure is not None:
            tx.lose(f"it could not be begun again after the database was locked: {failure}")
            raise TransactionLostError(f"the transaction was lost ({tx.lost_reason})",
                                       code=failure.code, server_message=failure.server_message)
        if savepoints:
            tx.begun(implicit=True)
            tx.savepoints = savepoints

    def _exec_sql(self, sql: str, info: _sql.Statement) -> Op:
        """DDL and transaction control without parameters: one EXEC_SQL, nothing worth caching."""
        tx = self.tx
        yield from self._ensure_connected()
        if not tx.begins_ahead and self._needs_begin(info):
            yield from self._begin_alone()
        finalized: list[int] = []
        try:
            nfin, finalized = self.statements.encode_finalizes(self.encoder)
            begin = self._begin_if_needed(info)
            self.encoder.exec_sql(sql)
        except BaseException:
            self.statements.unencode(self.encoder, finalized)
            raise
        yield from self._send_with_prologue(nfin, begin)
        yield from self._read(self.decoder.read_result)
        self._track_transaction_control(info)
        return Result()

    def _exec_rowless_pragma(self, prepared: Prepared, params: Sequence[Any], params32: bool) -> Op:
        """A PRAGMA that yields no rows, which QUERY did not run (protocol.md §1.6): EXEC it."""
        prepared.info = _sql.Statement(_sql.OTHER, False)
        self.encoder.exec(prepared.stmt_id, params, params32)
        yield self.encoder.take()
        yield from self._read(self.decoder.read_result)
        return Result()

    def _read_first_rows(self, rows: list, done: bool, kind: str) -> Op:
        """A query's answer whose first batch showed no row or no column."""
        decoder = self.decoder
        # A first batch may be empty; read on until there is a row to
        # show (the decoder's guard against endless empty batches trips here).
        while not done and not rows:
            done = yield from self._read_rows(rows)
        if not decoder.columns:
            # No result columns: a newer server ran a row-less statement
            # (a writing PRAGMA) through QUERY.  It has no result set.
            # A SELECT always has columns: that answer would be garbage.
            if kind != _sql.PRAGMA:
                raise ProtocolError("server answered a query with a result of no columns")
            while not done:
                done = yield from self._read_rows(rows)
            decoder.end_result()
            return Result()
        result = Result(self._describe(decoder.columns, decoder.first_row_types), rows, done)
        if done:
            decoder.end_result()
        else:
            self.streaming = result
        return result

    def executemany(self, sql: str, seq_of_parameters: Iterable[Sequence[Any]]) -> Op:
        """Run one statement per parameter set, all or nothing; returns its ``Result``."""
        self.check_usable()
        info = self.statements.classify(sql)
        if info.has_tail:
            raise ProgrammingError("You can only execute one statement at a time.")
        if info.returns_rows or info.kind == _sql.DML_RETURNING:
            raise ProgrammingError("executemany() can only execute statements that return no rows")
        if info.kind in _TRANSACTION_CONTROL or info.kind == _sql.SAVEPOINT:
            raise ProgrammingError("executemany() cannot run transaction control statements")
        if info.kind == _sql.EMPTY:
            return Result()
        if self.streaming is not None:
            yield from self.finish_stream()
        tx = self.tx
        restartable = tx.restartable(self.autocommit)  # the batch is the transaction's first write (AUTO)
        rows: Iterator[Sequence[Any]] = iter(seq_of_parameters)
        attempt = 0
        refusals = 0  # by a node that no longer leads, before the batch began
        while True:
            # The parameter sets sent before the first answer, kept in case
            # that answer is SQLITE_BUSY: the batch then runs again from them.
            replay: list[Sequence[Any]] = []
            # Outside a transaction the batch's RELEASE is its commit.
            writing = self.autocommit and not tx.is_open
            try:
                try:
                    prepared = yield from self._begin_batch(sql, info)
                except Error as exc:
                    if refusals < _MAX_REFUSALS and (yield from self._rerun_on_leader(exc, info.kind)):
                        refusals += 1
                        continue
                    raise
                total = yield from self._run_batch(info, prepared, rows, replay)
                break
            except Error as exc:
                yield from self._failed(exc, writing)  # raises when the connection is gone
                # The batch was rolled back to its savepoint.  Its first row
                # found the database locked if ``replay`` still holds rows.
                delay = self._busy_delay(exc, attempt, stale_snapshot_too=restartable) if replay else None
                if delay is None:
                    tx.statement_ran(True)
                    raise
            attempt += 1
            rows = itertools.chain(replay, rows)
            if restartable:  # rolled back first: the wait holds no snapshot
                yield from self._guarded(self._restart_transaction(), writing=False)
            yield Sleep(delay)
        tx.statement_ran(True)
        return Result(rowcount=total if info.kind == _sql.DML else -1)

    def _begin_batch(self, sql: str, info: _sql.Statement) -> Op:
        """Prepare the batch's statement and open its SAVEPOINT (see _run_batch); returns the ``Prepared``."""
        if self.connected_to is not None and self._ahead_must_end(info):
            yield from self._rollback_ahead()
        prepared = yield from self._prepare(sql, info)
        yield from self._exec_sql(f"SAVEPOINT {_EXECUTEMANY_SAVEPOINT}", info)
        return prepared

    def _run_batch(self, info: _sql.Statement, prepared: Prepared, rows: Iterator[Sequence[Any]],
                   replay: list[Sequence[Any]]) -> Op:
        """Pipeline the EXECs of a batch inside its SAVEPOINT (_begin_batch); returns the rows changed.

        The savepoint makes the batch all-or-nothing: if any row fails, the
        batch is rolled back to it and the first error is raised.  Windows of
        EXECs overlap: window k+1 is sent before the answers to window k are
        read, so the server never waits for the client.  The parameter sets
        taken from ``rows`` go to ``replay`` too until the first answer is
        read; ``replay`` is emptied unless that answer is an error.
        """
        decoder = self.decoder
        enc = self.encoder
        total = 0
        error: Exception | None = None
        error_index = -1
        encoded = 0        # parameter sets encoded so far
        answered = 0       # RESULTs read so far
        exhausted = False
        previous_window = 0
        stmt_id = prepared.stmt_id
        while True:
            sent = 0
            while not exhausted and error is None and sent < _PIPELINE_WINDOW:
                try:
                    params = next(rows)
                except StopIteration:
                    exhausted = True
                    break
                except Exception as exc:  # the caller's iterable: the batch is undone, then this raised
                    error, error_index = exc, encoded
                    break
                if not answered:
                    replay.append(params)
                try:
                    params = as_params(params, info)
                    if len(params) == prepared.nparams and len(params) <= MAX_PARAMS_SCHEMA0:
                        enc.exec(stmt_id, params, False)
                    else:
                        enc.exec(stmt_id, params, (yield from self._check_params(prepared, params)))
                except Exception as exc:  # an Error, or the caller's parameter set's own
                    error, error_index = exc, encoded
                    break
                encoded += 1
                sent += 1
            if sent:
                yield Send(enc.take())  # the answers are read after the next window goes out
            for _ in range(previous_window):
                # (answer_or_refusal, written out: a generator per row costs)
                if self.unread:
                    yield from self._read_unread()
                while decoder.next_message() < 0:
                    yield RECV
                try:
                    total += decoder.read_result()[1]
                except ProtocolError:
                    raise
                except Error as exc:
                    if error is None or error_index > answered:
                        error, error_index = exc, answered
                answered += 1
                if answered == 1 and error is None:
                    replay.clear()  # the first row ran: no lock to wait for
            previous_window = sent
            if not sent:
                break
        if error is not None:
            enc.exec_sql(f"ROLLBACK TO {_EXECUTEMANY_SAVEPOINT}")
            enc.exec_sql(f"RELEASE {_EXECUTEMANY_SAVEPOINT}")
            yield enc.take()
            yield from self._read(decoder.read_result)
            yield from self._read(decoder.read_result)
            error.add_note(f"executemany: parameter set {error_index} failed; no row of the batch was applied")
            raise error
        enc.exec_sql(f"RELEASE {_EXECUTEMANY_SAVEPOINT}")
        yield enc.take()
        yield from self._read(decoder.read_result)
        return total

    def executescript(self, script: str) -> Op:
        """Commit, then run each statement of ``script`` in its own request."""
        self.check_usable()
        if self.tx.is_open:
            yield from self.commit()
        for statement in _sql.split_statements(script):
            info = self.statements.classify(statement)
            if info.kind == _sql.DML_RETURNING:
                raise NotSupportedError("INSERT/UPDATE/DELETE ... RETURNING is not supported")
            yield from self._guarded(self._script_statement(statement, info),
                                     writing=info.kind != _sql.QUERY)

    def _script_statement(self, statement: str, info: _sql.Statement) -> Op:
        yield from self._ensure_connected()
        if self._ahead_must_end(None):  # a script runs outside any transaction
            yield from self._rollback_ahead()
        if info.returns_rows:
            self.encoder.query_sql(statement)
            yield self.encoder.take()
            yield from self._skip_result()
        else:
            self.encoder.exec_sql(statement)
            yield self.encoder.take()
            yield from self._read(self.decoder.read_result)
        self._track_transaction_control(info)
        self.tx.statement_ran(info.kind not in _READ_OR_CONTROL_KINDS)  # inside the script's own BEGIN

    # -- liveness ----------------------------------------------------------

    def ping(self) -> Op:
        """Check that the node this connection uses still leads the cluster.

        Asks the node for the leader (no SQL: the transaction state is left
        as it is).  Never reconnects: a connection that is down or talks to
        a node that no longer leads is closed and reported lost.
        """
        self.check_open()
        try:
            if self.connected_to is None:
                raise ConnectionLostError("not connected")
            if self.streaming is not None:
                yield from self.finish_stream()
            self.encoder.leader()
            yield self.encoder.take()
            _, leader = yield from self._read(self.decoder.read_server)
            if leader != self.connected_to:
                now = f"the leader is {leader}" if leader else "it knows no leader"
                raise ConnectionLostError(f"{self.connected_to} no longer leads the cluster ({now})")
        except Error as exc:
            yield from self._failed(exc, writing=False)
            raise

    # -- ending transactions -----------------------------------------------

    def commit(self) -> Op:
        """Commit the open transaction (see ``dqlite.Connection.commit``)."""
        return self._end("COMMIT")

    def rollback(self) -> Op:
        """Roll back the open transaction (see ``dqlite.Connection.rollback``)."""
        return self._end("ROLLBACK")

    def _end(self, sql: str) -> Op:
        """``commit()`` (``sql`` "COMMIT") or ``rollback()`` ("ROLLBACK")."""
        if self.closed:
            self.check_open()  # raises
        tx = self.tx
        state = tx.state
        if state is READING:
            # A transaction that only read ends without waiting for the
            # answer.  Nothing is at stake, so COMMIT/ROLLBACK is sent now
            # (the server ends the read snapshot then) and its answer is read
            # ahead of the next request's: a pooled read waits for one round
            # trip, not two.
            if self.streaming is not None:
                yield from self.finish_stream()
            connected = self.connected_to is not None
            # PEP 249 mode: the next transaction will begin by itself, so its
            # BEGIN goes out now, in the same request (EXEC_SQL runs both, and
            # a deferred BEGIN takes no lock and no snapshot).  The next
            # statement then travels alone and gets one answer, not two.
            ahead = connected and tx.implicit and tx.begins_ahead and not self.autocommit
            tx.ended_read_only(ahead)
            if connected:
                self.encoder.exec_sql(f"{sql}; BEGIN" if ahead else sql)
                self.unread += 1
                try:
                    yield Send(self.encoder.take())
                except ConnectionLostError as exc:
                    # Not sent: the connection is lost, and the server drops the
                    # transaction with it (nothing to report); the next
                    # statement reconnects.
                    self.unread -= 1
                    self._ahead_failed()
                    self.lost(exc, writing=False)
                    yield CLOSE
            return
        if state is LOST:
            if sql == "COMMIT":
                why = tx.lost_reason
                tx.clear_lost()
                raise TransactionLostError(
                    f"cannot commit: the transaction was lost ({why}); nothing of it was committed")
            tx.ended()
            if self.connected_to is not None:
                # The server may hold a transaction of ours (the probe of
                # _after_statement_error): end it, whatever it says.
                try:
                    yield from self._end_transaction("ROLLBACK")
                except Error:
                    pass
            return
        if state is IDLE or state is AHEAD:
            return  # no transaction open
        if self.streaming is not None:
            yield from self.finish_stream()
        try:
            yield from self._end_transaction(sql)
        except ConnectionLostError:
            if sql == "COMMIT":
                raise
            # (The server discards the transaction of a connection it loses: rolled back.)

    def end_sends_only(self) -> bool:
        """``commit()`` and ``rollback()`` wait for no answer: no transaction
        is open, or the open one only read (its end is sent, and its answer
        read with the next request's).  Their generators then yield nothing
        but ``Send`` (and ``CLOSE`` once a send failed): a shell may drive
        them without its I/O loop."""
        state = self.tx.state
        return ((state is READING and self.streaming is None) or state is IDLE or state is AHEAD) and not self.closed

    def _end_transaction(self, sql: str) -> Op:
        tx = self.tx
        try:
            if self.connected_to is None:
                raise ConnectionLostError("not connected")
            self.encoder.exec_sql(sql)
            yield self.encoder.take()
            yield from self._read(self.decoder.read_result)
        except Error as exc:
            if is_connection_failure(exc):
                error = self.lost(exc, writing=sql == "COMMIT")
                # commit()/rollback() ends the transaction either way: the
                # loss is reported right here, not again on the next call.
                tx.ended()
                yield CLOSE
                raise error from exc
            if ServerSays.NO_TRANSACTION.matches(exc):
                tx.ended()
                if sql == "COMMIT":
                    raise TransactionLostError(
                        "the server had already rolled the transaction back; nothing of it was committed",
                        code=exc.code, server_message=exc.server_message) from exc
                return
            raise
        tx.ended()

    # -- streaming results -------------------------------------------------

    def read_batch(self, result: Result, out: list) -> Op:
        """Decode the next batch of ``result``'s rows into ``out``; True at the end."""
        try:
            if self.streaming is not result or self.connected_to is None:
                raise ConnectionLostError("connection lost while reading a result")
            done = yield from self._read_rows(out)
        except Error as exc:
            self.streaming = None
            yield from self._raise_if_lost(exc, False)
            raise
        except Exception as exc:
            yield from self._broken(exc, False)
            raise
        if done:
            self.decoder.end_result()
            self.streaming = None
        return done

    def finish_stream(self) -> Op:
        """Before a new request: receive the rest of a result still streaming.

        The server reads no request until the result is complete, so the rest
        is read now and kept for its cursor (which may still be iterated).
        """
        result = self.streaming
        if result is None:
            return
        rows = result.rows[result.pos:]
        result.rows = rows
        result.pos = 0
        while not result.done:
            result.done = yield from self.read_batch(result, rows)

    def abandon_stream(self, result: Result) -> Op:
        """Drain ``result``'s rows without decoding them (its cursor is done with it)."""
        if self.streaming is not result:
            return
        self.streaming = None
        try:
            yield from self._skip_result()
        except Error as exc:
            yield from self._raise_if_lost(exc, False)
            raise
