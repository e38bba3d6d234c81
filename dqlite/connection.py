"""The synchronous DB-API connection and cursor.

A thin shell: it owns a blocking socket (``dqlite._wire``), decides which
requests to send, and keeps the transaction state.  Encoding and decoding are
the compiled core's (``dqlite._protocol``).
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from dqlite import _sql
from dqlite._protocol import MAX_PARAMS_SCHEMA0, Decoder, Encoder
from dqlite._wire import Wire, parse_address
from dqlite.exceptions import (
    CommitOutcomeUnknownError,
    ConnectionLostError,
    DatabaseError,
    DataError,
    Error,
    IntegrityError,
    InterfaceError,
    InternalError,
    LEADERSHIP_LOST_CODES,
    NOT_LEADER_CODES,
    NotSupportedError,
    OperationalError,
    ProgrammingError,
    ProtocolError,
    TransactionLostError,
    Warning,
)

__all__ = ["Connection", "Cursor", "connect"]

log = logging.getLogger("dqlite")

# Primary result codes after which SQLite may have rolled a transaction back
# by itself (https://www.sqlite.org/lang_transaction.html, "Response To Errors").
_MAY_AUTO_ROLLBACK = frozenset({4, 5, 7, 9, 10, 11, 13})

_EXECUTEMANY_SAVEPOINT = "dqlite_executemany"
# EXECs in flight per window of executemany: large enough to keep the server
# busy, small enough that the responses always fit in the socket buffers.
_PIPELINE_WINDOW = 512


class _Prepared:
    """A statement prepared on the current server connection."""

    __slots__ = ("stmt_id", "nparams", "info")

    def __init__(self, stmt_id: int, nparams: int, info: _sql.Statement) -> None:
        self.stmt_id = stmt_id
        self.nparams = nparams
        self.info = info


def connect(
    address: str | Sequence[str],
    database: str = "main",
    *,
    timeout: float = 10.0,
    autocommit: bool = False,
    parse_datetimes: bool = True,
    cached_statements: int = 128,
    max_message_size: int = 1 << 30,
) -> Connection:
    """Connect to the leader of a dqlite cluster and open ``database``.

    ``address`` is one ``"host:port"`` or a list of them: bootstrap nodes,
    any of which can name the leader.  The driver finds the leader, connects
    to it and opens the database, retrying until ``timeout`` seconds pass.

    ``timeout`` also bounds every later operation on the connection.  With
    ``autocommit=False`` (the PEP 249 default) a transaction begins implicitly
    before the first statement after connect, ``commit()`` or ``rollback()``.
    ``parse_datetimes=False`` returns DATETIME/DATE/TIMESTAMP values as the
    server's raw strings (``""`` still becomes ``None``) and UNIXTIME values
    as integers.
    """
    return Connection(
        address,
        database,
        timeout=timeout,
        autocommit=autocommit,
        parse_datetimes=parse_datetimes,
        cached_statements=cached_statements,
        max_message_size=max_message_size,
    )


class Connection:
    """A DB-API 2.0 connection to the leader of a dqlite cluster."""

    # PEP 249 optional extension: the exceptions as connection attributes.
    Warning = Warning
    Error = Error
    InterfaceError = InterfaceError
    DatabaseError = DatabaseError
    DataError = DataError
    OperationalError = OperationalError
    IntegrityError = IntegrityError
    InternalError = InternalError
    ProgrammingError = ProgrammingError
    NotSupportedError = NotSupportedError

    def __init__(
        self,
        address: str | Sequence[str],
        database: str = "main",
        *,
        timeout: float = 10.0,
        autocommit: bool = False,
        parse_datetimes: bool = True,
        cached_statements: int = 128,
        max_message_size: int = 1 << 30,
    ) -> None:
        addresses = [address] if isinstance(address, str) else list(address)
        if not addresses:
            raise InterfaceError("address must be 'host:port' or a non-empty list of them")
        for a in addresses:
            parse_address(a)  # a malformed address is a usage error, not worth retrying
        if not isinstance(database, str) or not database:
            raise InterfaceError("database must be a non-empty string")
        self._addresses = addresses
        self._database = database
        self._timeout = timeout
        self._autocommit = bool(autocommit)
        self._cached_statements = max(int(cached_statements), 1)
        self._encoder = Encoder()
        self._decoder = Decoder(max_message_size=max_message_size, parse_datetimes=parse_datetimes)
        self._wire: Wire | None = None
        self._leader: str | None = None
        self._statements: OrderedDict[str, _Prepared] = OrderedDict()
        self._classified: dict[str, _sql.Statement] = {}
        self._to_finalize: list[int] = []
        self._streaming: Cursor | None = None
        self._in_transaction = False
        self._transaction_lost: str | None = None
        self._closed = False
        self._params32: bool | None = None
        self._connect()

    # -- public API --------------------------------------------------------

    def __repr__(self) -> str:
        if self._closed:
            state = "closed"
        elif self._wire is None:
            state = "disconnected"
        else:
            state = f"leader={self._wire.address}"
        tx = " in transaction" if self._in_transaction else ""
        return f"<dqlite.Connection database={self._database!r} {state}{tx}>"

    @property
    def database(self) -> str:
        """The name of the open database."""
        return self._database

    @property
    def leader(self) -> str | None:
        """The address of the node this connection talks to (the leader when connected)."""
        return self._wire.address if self._wire is not None else None

    @property
    def in_transaction(self) -> bool:
        """True while a transaction is open (like ``sqlite3.Connection.in_transaction``)."""
        return self._in_transaction

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def autocommit(self) -> bool:
        """False (default): PEP 249 transactions.  True: each statement commits itself.

        Switching to True commits an open transaction first.
        """
        return self._autocommit

    @autocommit.setter
    def autocommit(self, value: bool) -> None:
        value = bool(value)
        if value and not self._autocommit and self._in_transaction:
            self.commit()
        self._autocommit = value

    def cursor(self) -> Cursor:
        """A new cursor on this connection."""
        self._check_open()
        return Cursor(self)

    def execute(self, sql: str, parameters: Sequence[Any] = ()) -> Cursor:
        """Shortcut: a new cursor's ``execute``."""
        return self.cursor().execute(sql, parameters)

    def executemany(self, sql: str, seq_of_parameters: Iterable[Sequence[Any]]) -> Cursor:
        """Shortcut: a new cursor's ``executemany``."""
        return self.cursor().executemany(sql, seq_of_parameters)

    def executescript(self, script: str) -> Cursor:
        """Run several statements, one request each, committing first like sqlite3.

        Statements run in autocommit mode unless the script has its own
        BEGIN ... COMMIT; a failing statement stops the script.
        """
        self._check_usable()
        if self._in_transaction:
            self.commit()
        cursor = self.cursor()
        for statement in _sql.split_statements(script):
            self._run_script_statement(statement)
        return cursor

    def commit(self) -> None:
        """Commit the open transaction; a no-op when none is open.

        Raises ``TransactionLostError`` if the transaction was lost with the
        leader (nothing of it was committed) and ``CommitOutcomeUnknownError``
        if the connection failed after COMMIT was sent.  Neither is retried.
        """
        self._check_open()
        if self._transaction_lost is not None:
            why = self._transaction_lost
            self._transaction_lost = None
            raise TransactionLostError(f"cannot commit: the transaction was lost ({why}); nothing of it was committed")
        if not self._in_transaction:
            return
        self._finish_stream()
        self._end_transaction("COMMIT")

    def rollback(self) -> None:
        """Roll back the open transaction; a no-op when none is open.

        Also clears the state a lost transaction leaves behind, so the
        connection can be used again.
        """
        self._check_open()
        if self._transaction_lost is not None:
            self._transaction_lost = None
            self._in_transaction = False
            return
        if not self._in_transaction:
            return
        self._finish_stream()
        try:
            self._end_transaction("ROLLBACK")
        except ConnectionLostError:
            # The server discards the transaction of a connection it loses:
            # the rollback happened.
            self._transaction_lost = None
            self._in_transaction = False

    def close(self) -> None:
        """Close the connection; an open transaction is rolled back by the server."""
        if self._closed:
            return
        self._closed = True
        self._in_transaction = False
        self._streaming = None
        if self._wire is not None:
            self._wire.close()
            self._wire = None

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: Any) -> None:
        """Commit if the block succeeded, roll back if it raised (like sqlite3)."""
        if self._closed:
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

    # -- connecting --------------------------------------------------------

    def _connect(self) -> None:
        """Find the leader, connect to it and open the database."""
        deadline = time.monotonic() + self._timeout
        candidates = list(self._addresses)
        if self._leader is not None:
            candidates.insert(0, self._leader)
            candidates = list(dict.fromkeys(candidates))
        delay = 0.01
        errors: dict[str, str] = {}
        while True:
            for address in candidates:
                try:
                    wire = self._open_on_leader(address, deadline)
                except Error as exc:
                    errors[address] = str(exc)
                    continue
                if wire is not None:
                    self._wire = wire
                    self._leader = wire.address
                    self._statements.clear()
                    self._to_finalize.clear()
                    log.debug("connected to leader %s, database %r", wire.address, self._database)
                    return
                errors[address] = "not the leader, and its leader could not be reached"
            if time.monotonic() + delay >= deadline:
                tried = "; ".join(f"{a}: {why}" for a, why in errors.items())
                raise OperationalError(f"could not connect to the dqlite leader within {self._timeout:g}s ({tried})")
            time.sleep(delay)
            delay = min(delay * 2, 0.5)

    def _open_on_leader(self, address: str, deadline: float, hops: int = 1) -> Wire | None:
        """Connect to ``address``; if it leads, open the database there and return the wire.

        The handshake, LEADER and OPEN travel in one write: on the leader the
        connection is ready after one round trip.
        """
        remaining = max(deadline - time.monotonic(), 0.05)
        wire = Wire(address, min(remaining, self._timeout), self._decoder)
        try:
            enc = self._encoder
            enc.clear()
            enc.leader()
            enc.open(self._database)
            wire.handshake_and_send(enc.take())
            _, leader = wire.read(self._decoder.read_server)
            if leader == address:
                wire.read(self._decoder.read_db)
                wire.timeout = self._timeout
                wire.sock.settimeout(self._timeout)  # type: ignore[union-attr]
                return wire
            wire.close()
        except BaseException:
            wire.close()
            raise
        if leader and hops > 0:
            return self._open_on_leader(leader, deadline, hops - 1)
        return None

    # -- state checks ------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise ProgrammingError("Cannot operate on a closed connection.")

    def _check_usable(self) -> None:
        self._check_open()
        if self._transaction_lost is not None:
            raise TransactionLostError(
                f"the transaction was lost ({self._transaction_lost}); call rollback() before "
                f"using the connection again")

    def _ensure_connected(self) -> Wire:
        if self._wire is None:
            self._connect()
        return self._wire  # type: ignore[return-value]

    # -- failure handling --------------------------------------------------

    def _lost(self, exc: Error, *, writing: bool) -> Error:
        """The exception to raise for a broken connection, after dropping it.

        ``writing``: a request that commits something (COMMIT, or a write in
        autocommit mode) was sent and no answer says whether it was applied.
        """
        if self._wire is not None:
            self._wire.close()
            self._wire = None
        self._streaming = None
        self._statements.clear()
        self._to_finalize.clear()
        code = exc.code
        message = str(exc)
        # A FAILURE answer means the request was refused before it ran, except
        # "leadership lost", which can come after the write was replicated.
        # No answer at all (socket error, timeout, bad bytes) tells nothing.
        outcome_unknown = code is None or code in LEADERSHIP_LOST_CODES
        if writing and outcome_unknown:
            self._in_transaction = False
            new: Error = CommitOutcomeUnknownError(
                f"the outcome of the commit is unknown ({message}); it was not retried", code=code,
                server_message=exc.server_message)
        elif self._in_transaction:
            self._in_transaction = False
            self._transaction_lost = message
            new = TransactionLostError(
                f"the transaction was lost ({message}); nothing of it was committed. "
                f"Call rollback() before using the connection again", code=code,
                server_message=exc.server_message)
        elif isinstance(exc, ProtocolError):
            return exc
        else:
            new = ConnectionLostError(message, code=code, server_message=exc.server_message)
        log.warning("dqlite connection lost: %s", message)
        return new

    def _is_connection_failure(self, exc: Error) -> bool:
        code = exc.code
        return (
            isinstance(exc, (ConnectionLostError, ProtocolError))
            or code in NOT_LEADER_CODES
            or code in LEADERSHIP_LOST_CODES
            # 12: "no database opened" / "no statement with the given id": the
            # server dropped this session's state when leadership moved.
            or code == 12
        )

    def _after_statement_error(self, exc: Error) -> None:
        """After a server error inside a transaction, check the transaction survived."""
        if not self._in_transaction or exc.code is None or (exc.code & 0xFF) not in _MAY_AUTO_ROLLBACK:
            return
        # BEGIN fails inside a transaction and succeeds outside one: if it
        # succeeds, SQLite rolled ours back.
        try:
            self._request_exec_sql("BEGIN")
        except DatabaseError:
            return
        self._in_transaction = True
        self._transaction_lost = f"SQLite rolled the transaction back after: {exc}"

    # -- request helpers ---------------------------------------------------

    def _classify(self, sql: str) -> _sql.Statement:
        info = self._classified.get(sql)
        if info is None:
            if not isinstance(sql, str):
                raise ProgrammingError(f"SQL must be a str, not {type(sql).__name__}")
            info = _sql.classify(sql)
            if len(self._classified) > 4096:
                self._classified.clear()
            self._classified[sql] = info
        return info

    def _queue_finalizes(self) -> int:
        """Encode FINALIZE for evicted statements; returns how many EMPTYs to read."""
        n = len(self._to_finalize)
        for stmt_id in self._to_finalize:
            self._encoder.finalize(stmt_id)
        self._to_finalize.clear()
        return n

    def _read_finalizes(self, wire: Wire, n: int) -> None:
        for _ in range(n):
            try:
                wire.read(self._decoder.read_empty)
            except (ConnectionLostError, ProtocolError):
                raise
            except Error:
                pass  # an id the server already dropped: nothing to free

    def _begin_if_needed(self, info: _sql.Statement) -> bool:
        """Encode the implicit BEGIN when PEP 249 semantics call for one."""
        if self._autocommit or self._in_transaction or info.kind in (_sql.BEGIN, _sql.COMMIT, _sql.ROLLBACK):
            return False
        self._encoder.exec_sql("BEGIN")
        return True

    def _discard_response(self, wire: Wire) -> None:
        """Consume one response whatever it is (after an earlier pipelined failure)."""
        decoder = self._decoder
        while decoder.next_message() < 0:
            wire.fill()
        if decoder.next_message() == 7:  # ROWS: drain the whole result
            while not wire.read(decoder.skip_rows):
                pass
            decoder.end_result()
        else:
            decoder.skip()

    def _request_exec_sql(self, sql: str) -> tuple[int, int]:
        wire = self._ensure_connected()
        self._encoder.exec_sql(sql)
        wire.send(self._encoder.take())
        return wire.read(self._decoder.read_result)

    def _prepare(self, sql: str, info: _sql.Statement) -> _Prepared:
        """The cached prepared statement for ``sql``, preparing it if needed."""
        prepared = self._statements.get(sql)
        if prepared is not None:
            self._statements.move_to_end(sql)
            return prepared
        wire = self._ensure_connected()
        nfin = self._queue_finalizes()
        self._encoder.prepare(sql)
        wire.send(self._encoder.take())
        self._read_finalizes(wire, nfin)
        stmt_id, nparams = wire.read(self._decoder.read_stmt)
        prepared = _Prepared(stmt_id, nparams, info)
        self._statements[sql] = prepared
        if len(self._statements) > self._cached_statements:
            _, evicted = self._statements.popitem(last=False)
            # Sent with the next request; the id is never used again (§8.1).
            self._to_finalize.append(evicted.stmt_id)
        return prepared

    def _send_and_read_prologue(self, wire: Wire, nfin: int, begin: bool) -> None:
        """Send what is encoded, then read the FINALIZE and BEGIN answers ahead of the statement's."""
        wire.send(self._encoder.take())
        self._read_finalizes(wire, nfin)
        if begin:
            try:
                wire.read(self._decoder.read_result)
            except (ConnectionLostError, ProtocolError):
                raise
            except Error as exc:
                if "within a transaction" not in str(exc):
                    self._discard_response(wire)
                    raise
                # The server had a transaction open already: we are in it.
            self._in_transaction = True

    def _check_params(self, prepared: _Prepared, params: Sequence[Any]) -> bool:
        """Validate the parameter count; returns whether params32 is needed."""
        if len(params) != prepared.nparams:
            raise ProgrammingError(
                f"Incorrect number of bindings supplied. The current statement uses "
                f"{prepared.nparams}, and there are {len(params)} supplied.")
        if prepared.nparams <= MAX_PARAMS_SCHEMA0:
            return False
        if not self._server_has_params32():
            raise NotSupportedError(
                f"the statement has {prepared.nparams} parameters, but this dqlite server accepts "
                f"at most {MAX_PARAMS_SCHEMA0} (it has no 32-bit parameter count, added in "
                f"libdqlite 1.12)")
        return True

    def _server_has_params32(self) -> bool:
        """Ask the server once whether it reads 32-bit parameter counts.

        A server without them ignores the schema byte and rejects the tuple
        with "bind parameters" (protocol.md §1.5): harmless to try.
        """
        if self._params32 is None:
            wire = self._ensure_connected()
            self._encoder.query_sql("SELECT ?", (1,), True)
            wire.send(self._encoder.take())
            try:
                rows: list = []
                while not wire.read(lambda: self._decoder.read_rows(rows)):
                    pass
                self._decoder.end_result()
                self._params32 = rows == [(1,)]
            except (ConnectionLostError, ProtocolError):
                raise
            except Error:
                self._params32 = False
        return self._params32

    # -- statements (called by Cursor) -------------------------------------

    def _execute(self, cursor: Cursor, sql: str, params: Sequence[Any]) -> None:
        self._check_usable()
        info = self._classify(sql)
        if info.has_tail:
            raise ProgrammingError("You can only execute one statement at a time.")
        if info.kind == _sql.EMPTY:
            cursor._set_result(None, -1)
            return
        if info.kind == _sql.DML_RETURNING:
            raise NotSupportedError(
                "INSERT/UPDATE/DELETE ... RETURNING is not supported: dqlite 1.11 servers abort "
                "when a write runs through a query request; run the write and a SELECT instead")
        self._finish_stream()
        writing = info.kind not in (_sql.QUERY,) and (self._autocommit or info.kind == _sql.COMMIT)
        try:
            self._execute_on_wire(cursor, sql, info, params)
        except Error as exc:
            if self._is_connection_failure(exc):
                raise self._lost(exc, writing=writing and not isinstance(exc, ProtocolError)) from exc
            if isinstance(exc, DatabaseError):
                self._after_statement_error(exc)
            raise

    def _execute_on_wire(self, cursor: Cursor, sql: str, info: _sql.Statement, params: Sequence[Any]) -> None:
        kind = info.kind
        if not params and kind in (_sql.OTHER, _sql.BEGIN, _sql.COMMIT, _sql.ROLLBACK, _sql.SAVEPOINT):
            # DDL and transaction control: one EXEC_SQL, nothing worth caching.
            wire = self._ensure_connected()
            nfin = self._queue_finalizes()
            begin = self._begin_if_needed(info)
            self._encoder.exec_sql(sql)
            self._send_and_read_prologue(wire, nfin, begin)
            wire.read(self._decoder.read_result)
            self._track_transaction_control(kind)
            cursor._set_result(cursor.lastrowid, -1)
            return

        prepared = self._prepare(sql, info)
        kind = prepared.info.kind  # a PRAGMA may have turned out to return no rows
        params32 = self._check_params(prepared, params)
        wire = self._ensure_connected()
        nfin = self._queue_finalizes()
        begin = self._begin_if_needed(info)
        decoder = self._decoder
        if kind == _sql.QUERY or kind == _sql.PRAGMA:
            self._encoder.query(prepared.stmt_id, params, params32)
            self._send_and_read_prologue(wire, nfin, begin)
            rows: list = []
            try:
                done = wire.read(lambda: decoder.read_rows(rows))
            except (ConnectionLostError, ProtocolError):
                raise
            except Error as exc:
                if kind == _sql.PRAGMA and exc.code == 1 and str(exc) == "not an error":
                    # A row-less PRAGMA: QUERY did not run it (§1.6); EXEC it.
                    prepared.info = _sql.Statement(_sql.OTHER, False)
                    self._encoder.exec(prepared.stmt_id, params, params32)
                    wire.send(self._encoder.take())
                    wire.read(decoder.read_result)
                    cursor._set_result(cursor.lastrowid, -1)
                    return
                raise
            # A first batch may be empty; read on until there is a row to
            # show (and the empty-batch guard of the decoder can trip here).
            while not done and not rows:
                done = wire.read(lambda: decoder.read_rows(rows))
            cursor._set_rows(rows, done)
            if done:
                decoder.end_result()
            else:
                self._streaming = cursor
            return
        self._encoder.exec(prepared.stmt_id, params, params32)
        self._send_and_read_prologue(wire, nfin, begin)
        last_id, changes = wire.read(decoder.read_result)
        if kind == _sql.DML:
            cursor._set_result(last_id if info.is_insert else cursor.lastrowid, changes)
        else:
            self._track_transaction_control(kind)
            cursor._set_result(cursor.lastrowid, -1)

    def _track_transaction_control(self, kind: str) -> None:
        if kind == _sql.BEGIN:
            self._in_transaction = True
        elif kind in (_sql.COMMIT, _sql.ROLLBACK):
            self._in_transaction = False

    def _executemany(self, cursor: Cursor, sql: str, seq_of_parameters: Iterable[Sequence[Any]]) -> None:
        self._check_usable()
        info = self._classify(sql)
        if info.has_tail:
            raise ProgrammingError("You can only execute one statement at a time.")
        if info.returns_rows or info.kind == _sql.DML_RETURNING:
            raise ProgrammingError("executemany() can only execute statements that return no rows")
        if info.kind in (_sql.BEGIN, _sql.COMMIT, _sql.ROLLBACK, _sql.SAVEPOINT):
            raise ProgrammingError("executemany() cannot run transaction control statements")
        if info.kind == _sql.EMPTY:
            cursor._set_result(None, -1)
            return
        self._finish_stream()
        try:
            total = self._executemany_on_wire(sql, info, iter(seq_of_parameters))
        except Error as exc:
            if self._is_connection_failure(exc):
                # Outside a transaction the batch's RELEASE is its commit.
                raise self._lost(exc, writing=self._autocommit and not isinstance(exc, ProtocolError)) from exc
            raise
        cursor._set_result(cursor.lastrowid, total if info.kind == _sql.DML else -1)

    def _executemany_on_wire(self, sql: str, info: _sql.Statement, rows: Iterator[Sequence[Any]]) -> int:
        """Prepare once, then pipeline the EXECs inside a SAVEPOINT.

        The savepoint makes the batch all-or-nothing: if any row fails, the
        batch is rolled back to it and the first error is raised.  Windows of
        EXECs overlap: window k+1 is sent before the answers to window k are
        read, so the server never waits for the client.
        """
        prepared = self._prepare(sql, info)
        wire = self._ensure_connected()
        decoder = self._decoder
        enc = self._encoder
        nfin = self._queue_finalizes()
        begin = self._begin_if_needed(info)
        enc.exec_sql(f"SAVEPOINT {_EXECUTEMANY_SAVEPOINT}")
        self._send_and_read_prologue(wire, nfin, begin)
        wire.read(decoder.read_result)

        total = 0
        error: Error | None = None
        error_index = -1
        encoded = 0        # parameter sets encoded so far
        answered = 0       # RESULTs read so far
        exhausted = False
        previous_window = 0
        while True:
            sent = 0
            while not exhausted and error is None and sent < _PIPELINE_WINDOW:
                try:
                    params = next(rows)
                except StopIteration:
                    exhausted = True
                    break
                try:
                    params = _as_params(params)
                    enc.exec(prepared.stmt_id, params, self._check_params(prepared, params))
                except Error as exc:
                    error, error_index = exc, encoded
                    break
                encoded += 1
                sent += 1
            if sent:
                wire.send(enc.take())
            for _ in range(previous_window):
                try:
                    total += wire.read(decoder.read_result)[1]
                except (ConnectionLostError, ProtocolError):
                    raise
                except Error as exc:
                    if error is None or error_index > answered:
                        error, error_index = exc, answered
                answered += 1
            previous_window = sent
            if not sent:
                break
        if error is not None:
            enc.exec_sql(f"ROLLBACK TO {_EXECUTEMANY_SAVEPOINT}")
            enc.exec_sql(f"RELEASE {_EXECUTEMANY_SAVEPOINT}")
            wire.send(enc.take())
            wire.read(decoder.read_result)
            wire.read(decoder.read_result)
            error.add_note(f"executemany: parameter set {error_index} failed; no row of the batch was applied")
            raise error
        enc.exec_sql(f"RELEASE {_EXECUTEMANY_SAVEPOINT}")
        wire.send(enc.take())
        wire.read(decoder.read_result)
        return total

    def _end_transaction(self, sql: str) -> None:
        try:
            wire = self._wire
            if wire is None:
                raise ConnectionLostError("not connected")
            self._encoder.exec_sql(sql)
            wire.send(self._encoder.take())
            wire.read(self._decoder.read_result)
        except Error as exc:
            if self._is_connection_failure(exc):
                error = self._lost(exc, writing=sql == "COMMIT")
                # commit()/rollback() ends the transaction either way: the
                # loss is reported right here, not again on the next call.
                self._transaction_lost = None
                raise error from exc
            if exc.code == 1 and "no transaction is active" in str(exc):
                self._in_transaction = False
                if sql == "COMMIT":
                    raise TransactionLostError(
                        "the server had already rolled the transaction back; nothing of it was committed",
                        code=exc.code, server_message=exc.server_message) from exc
                return
            raise
        self._in_transaction = False

    def _run_script_statement(self, statement: str) -> None:
        info = self._classify(statement)
        try:
            wire = self._ensure_connected()
            if info.returns_rows:
                self._encoder.query_sql(statement)
                wire.send(self._encoder.take())
                while not wire.read(self._decoder.skip_rows):
                    pass
                self._decoder.end_result()
            else:
                if info.kind == _sql.DML_RETURNING:
                    raise NotSupportedError("INSERT/UPDATE/DELETE ... RETURNING is not supported")
                self._encoder.exec_sql(statement)
                wire.send(self._encoder.take())
                wire.read(self._decoder.read_result)
        except Error as exc:
            if self._is_connection_failure(exc):
                raise self._lost(exc, writing=info.kind != _sql.QUERY) from exc
            raise
        self._track_transaction_control(info.kind)

    # -- streaming results -------------------------------------------------

    def _read_batch(self, cursor: Cursor, out: list) -> bool:
        """Decode the next batch of ``cursor``'s result into ``out``; True at the end."""
        wire = self._wire
        try:
            if wire is None:
                raise ConnectionLostError("connection lost while reading a result")
            done = wire.read(lambda: self._decoder.read_rows(out))
        except Error as exc:
            self._streaming = None
            if self._is_connection_failure(exc):
                raise self._lost(exc, writing=False) from exc
            raise
        if done:
            self._decoder.end_result()
            self._streaming = None
        return done

    def _finish_stream(self) -> None:
        """Before a new request: receive the rest of a result still streaming.

        The server reads no request until the result is complete, so the rest
        is read now; it is kept for its cursor (which may still be iterated)
        unless that cursor was closed.
        """
        cursor = self._streaming
        if cursor is None:
            return
        cursor._take_remainder()

    def _abandon_stream(self, cursor: Cursor) -> None:
        """Drain ``cursor``'s result without decoding it (the cursor was closed)."""
        if self._streaming is not cursor:
            return
        wire = self._wire
        try:
            if wire is not None:
                while not wire.read(self._decoder.skip_rows):
                    pass
                self._decoder.end_result()
        except Error as exc:
            if self._is_connection_failure(exc):
                raise self._lost(exc, writing=False) from exc
            raise
        finally:
            self._streaming = None


def _as_params(params: Any) -> Sequence[Any]:
    if type(params) is tuple or type(params) is list:
        return params
    if params is None:
        return ()
    if isinstance(params, (str, bytes, bytearray, dict)) or not isinstance(params, Sequence):
        raise ProgrammingError(
            f"parameters must be a sequence (tuple or list) for the qmark paramstyle, "
            f"not {type(params).__name__}")
    return tuple(params)


class Cursor:
    """A DB-API 2.0 cursor.  Results stream from the server batch by batch."""

    arraysize: int

    def __init__(self, connection: Connection) -> None:
        self._connection: Connection | None = connection  # None once closed
        self._owner = connection
        self.arraysize = 1
        self._description: tuple | None = None
        self._rowcount = -1
        self._lastrowid: int | None = None
        self._rows: list = []
        self._pos = 0
        self._done = True

    def __repr__(self) -> str:
        state = "closed" if self._connection is None else f"rowcount={self._rowcount}"
        return f"<dqlite.Cursor {state}>"

    @property
    def connection(self) -> Connection:
        """The connection this cursor belongs to (PEP 249 extension)."""
        return self._owner

    @property
    def description(self) -> tuple | None:
        """One 7-tuple per result column (name, type_code, None x5), or None.

        type_code is the wire type of the column in the first row (compare it
        with dqlite.STRING, NUMBER, ...), or None for an empty result.
        """
        return self._description

    @property
    def rowcount(self) -> int:
        """Rows changed by the last INSERT/UPDATE/DELETE/REPLACE (summed by executemany); else -1."""
        return self._rowcount

    @property
    def lastrowid(self) -> int | None:
        """The rowid of the last row inserted by ``execute`` of an INSERT or REPLACE."""
        return self._lastrowid

    def _check(self) -> Connection:
        connection = self._connection
        if connection is None:
            raise ProgrammingError("Cannot operate on a closed cursor.")
        connection._check_open()
        return connection

    def execute(self, sql: str, parameters: Sequence[Any] = ()) -> Cursor:
        """Run one statement with qmark (``?``) parameters; returns the cursor."""
        connection = self._check()
        self._reset()
        connection._execute(self, sql, _as_params(parameters))
        return self

    def executemany(self, sql: str, seq_of_parameters: Iterable[Sequence[Any]]) -> Cursor:
        """Run one statement for each parameter set, all or nothing.

        The statement is prepared once and the executions are pipelined inside
        a SAVEPOINT: if any fails, none of the batch stays applied.
        """
        connection = self._check()
        self._reset()
        connection._executemany(self, sql, seq_of_parameters)
        return self

    def _reset(self) -> None:
        connection = self._connection
        if connection is not None and connection._streaming is self:
            connection._abandon_stream(self)
        self._description = None
        self._rowcount = -1
        self._rows = []
        self._pos = 0
        self._done = True

    def _set_result(self, lastrowid: int | None, rowcount: int) -> None:
        self._lastrowid = lastrowid
        self._rowcount = rowcount

    def _set_rows(self, rows: list, done: bool) -> None:
        connection = self._connection
        assert connection is not None
        decoder = connection._decoder
        columns = decoder.columns
        types = decoder.first_row_types
        if types is None:
            types = (None,) * len(columns)
        self._description = tuple((name, code, None, None, None, None, None) for name, code in zip(columns, types))
        self._rows = rows
        self._pos = 0
        self._done = done

    def _take_remainder(self) -> None:
        """Receive the rest of this cursor's result now (another request is coming)."""
        connection = self._connection
        assert connection is not None
        rows = self._rows[self._pos:]
        self._pos = 0
        self._rows = rows
        while not self._done:
            self._done = connection._read_batch(self, rows)

    def _more(self) -> bool:
        """Replace the consumed batch with the next one; False at the end of the result."""
        if self._done:
            return False
        connection = self._check()
        rows: list = []
        self._rows = rows
        self._pos = 0
        while not rows and not self._done:
            self._done = connection._read_batch(self, rows)
        return bool(rows)

    def fetchone(self) -> tuple | None:
        """The next row, or None at the end."""
        if self._pos < len(self._rows):
            row = self._rows[self._pos]
            self._pos += 1
            return row
        if self._description is None or self._connection is None:
            self._check()
            raise ProgrammingError("no result to fetch from: execute a query first")
        if self._more():
            row = self._rows[0]
            self._pos = 1
            return row
        return None

    def fetchmany(self, size: int | None = None) -> list[tuple]:
        """Up to ``size`` (default ``arraysize``) more rows."""
        if size is None:
            size = self.arraysize
        if self._description is None or self._connection is None:
            self._check()
            raise ProgrammingError("no result to fetch from: execute a query first")
        out: list = []
        while len(out) < size:
            available = len(self._rows) - self._pos
            if available <= 0:
                if not self._more():
                    break
                continue
            take = min(available, size - len(out))
            out.extend(self._rows[self._pos:self._pos + take])
            self._pos += take
        return out

    def fetchall(self) -> list[tuple]:
        """Every remaining row."""
        if self._description is None or self._connection is None:
            self._check()
            raise ProgrammingError("no result to fetch from: execute a query first")
        out = self._rows[self._pos:] if self._pos else self._rows
        self._rows = []
        self._pos = 0
        if not self._done:
            connection = self._check()
            while not self._done:
                self._done = connection._read_batch(self, out)
        return out

    def __iter__(self) -> Iterator[tuple]:
        return self

    def __next__(self) -> tuple:
        row = self.fetchone()
        if row is None:
            raise StopIteration
        return row

    def setinputsizes(self, sizes: Any) -> None:
        """Does nothing (PEP 249 allows that)."""

    def setoutputsize(self, size: Any, column: Any = None) -> None:
        """Does nothing (PEP 249 allows that)."""

    def close(self) -> None:
        """Close the cursor; the rest of a streaming result is drained and dropped."""
        connection = self._connection
        if connection is None:
            return
        try:
            if connection._streaming is self and not connection._closed:
                connection._abandon_stream(self)
        finally:
            self._connection = None
            self._rows = []
            self._done = True

    def __enter__(self) -> Cursor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
