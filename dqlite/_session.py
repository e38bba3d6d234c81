"""The connection's logic, once, for both the sync and the asyncio API.

A ``Session`` decides what to send and how to read the answers: leader
discovery, the statement cache, implicit transactions, pipelining, the
classification of failures, the 1.11.1 hazard guards.  It does no I/O itself.
Each operation is a generator that yields what it needs from the I/O shell
(the idea of psycopg 3's generators):

* ``bytes``: send them;
* ``RECV`` (None): receive more bytes into the decoder;
* ``POLL``: take in what has already arrived, without waiting (may do nothing);
* ``CLOSE``: close the socket;
* ``Connect(address, timeout)``: open a socket to a node (not handshaken),
  and bound each wait by ``timeout`` until ``CONNECTED``;
* ``CONNECTED``: the connection is set up; waits go back to the operation's timeout;
* ``Sleep(seconds)``: wait (between leader discovery rounds);
* ``FindLeader(addresses, timeout, preferred)``: ask every address for the
  leader at once, each within ``timeout``; the shell sends back the answers
  (``dqlite._probe.ProbeResult``s, in the order they came) as soon as a node
  names itself (see ``dqlite._probe`` for ``preferred``), or when all have
  answered;
* ``SendSoon(data)``: send bytes whose answer nobody waits for now (it is
  read ahead of the next request's).

The shell (``dqlite.connection`` blocking, ``dqlite.aio`` asyncio) performs
the request and resumes the generator; an I/O failure is thrown into the
generator as ``ConnectionLostError``, where it is classified like any other.
"""

from __future__ import annotations

import itertools
import logging
import random
import time
from collections import OrderedDict
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping, Sequence
from ssl import SSLContext
from typing import Any, NamedTuple, Union

from dqlite import _sql
from dqlite._protocol import MAX_PARAMS_SCHEMA0, Decoder, Encoder, encode_handshake
from dqlite._wire import DEFAULT_BUSY_POLL, parse_address
from dqlite.nodestore import NodeStore
from dqlite.exceptions import (
    LEADERSHIP_LOST_CODES,
    NOT_LEADER_CODES,
    CommitOutcomeUnknownError,
    ConnectionLostError,
    DatabaseError,
    DataError,
    Error,
    IntegrityError,
    InterfaceError,
    InternalError,
    NotSupportedError,
    OperationalError,
    ProgrammingError,
    ProtocolError,
    TransactionLostError,
    Warning,
)

log = logging.getLogger("dqlite")

RECV = None


class _Sentinel:
    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


CLOSE = _Sentinel("CLOSE")
POLL = _Sentinel("POLL")
CONNECTED = _Sentinel("CONNECTED")


class Connect(NamedTuple):
    address: str
    timeout: float


class Sleep(NamedTuple):
    seconds: float


class FindLeader(NamedTuple):
    addresses: tuple[str, ...]
    timeout: float
    preferred: tuple[str, ...] = ()  # the given addresses: their answers win (dqlite._probe)


class SendSoon(NamedTuple):
    data: bytes


#: What an operation generator yields and returns.
Op = Generator[Any, None, Any]

_HANDSHAKE = encode_handshake()
_FAILURE = 0
_RESULT = 6
_ROWS = 7

# Primary result codes after which SQLite may have rolled a transaction back
# by itself (https://www.sqlite.org/lang_transaction.html, "Response To Errors").
_MAY_AUTO_ROLLBACK = frozenset({4, 5, 7, 9, 10, 11, 13})

SQLITE_BUSY = 5  # exactly: not SQLITE_BUSY_SNAPSHOT (517), which waiting cannot cure
# Waits between attempts of a statement that found the database locked, in
# seconds, then the last one repeated; each is drawn from 50% to 150% of its
# step, so that waiters do not retry in step.  A dqlite server answers
# SQLITE_BUSY at once, so the waiter polls: short steps let the lock pass on
# soon after a commit, and keep a waiter among many from being starved by
# the ones that retry more often.
_BUSY_DELAYS = (0.0005, 0.001, 0.002, 0.005, 0.01)

_EXECUTEMANY_SAVEPOINT = "dqlite_executemany"
# EXECs in flight per window of executemany: large enough to keep the server
# busy, small enough that the answers always fit in the socket buffers.
_PIPELINE_WINDOW = 512

_EXEC_SQL_KINDS = frozenset({_sql.OTHER, _sql.BEGIN, _sql.COMMIT, _sql.ROLLBACK, _sql.SAVEPOINT})

#: How a transaction the driver begins by itself (PEP 249) takes the write lock.
#: AUTO: reads share a snapshot and take no lock; the first write takes the
#: lock, and if it cannot (another connection holds it, or committed since the
#: snapshot), the transaction starts again from that write once the lock is
#: free (see Session.execute).  DEFERRED: SQLite's BEGIN; such a first write
#: fails with "database is locked".  IMMEDIATE / EXCLUSIVE: the lock is taken
#: by the BEGIN, before the first statement.
TRANSACTION_MODES = ("AUTO", "DEFERRED", "IMMEDIATE", "EXCLUSIVE")
# Codes of a write that found the lock taken (SQLITE_BUSY) or its snapshot
# stale (SQLITE_BUSY_SNAPSHOT): nothing of the statement ran.
_LOCKED_CODES = frozenset({5, 517})
# Kinds of statement that write (or may): any but a query, transaction
# control and savepoints.
_READ_OR_CONTROL_KINDS = frozenset({_sql.QUERY, _sql.EMPTY, _sql.BEGIN, _sql.COMMIT, _sql.ROLLBACK, _sql.SAVEPOINT})


def check_transaction_mode(mode: Any) -> str:
    """``mode`` as one of TRANSACTION_MODES (any case), or InterfaceError."""
    upper = mode.upper() if isinstance(mode, str) else None
    if upper not in TRANSACTION_MODES:
        raise InterfaceError(
            f"transaction_mode must be one of {', '.join(TRANSACTION_MODES)}, not {mode!r}")
    return upper


class Prepared:
    """A statement prepared on the current server connection."""

    __slots__ = ("stmt_id", "nparams", "info")

    def __init__(self, stmt_id: int, nparams: int, info: _sql.Statement) -> None:
        self.stmt_id = stmt_id
        self.nparams = nparams
        self.info = info


#: One parameter set: by position, or by name (see ``as_params``).
Parameters = Union[Sequence[Any], Mapping[str, Any]]

#: Parameter types ``Session.encode_cached_query`` (the query hot path) takes.
HOT_PARAMS = frozenset({tuple, list, dict})


def as_params(params: Any, info: _sql.Statement) -> Sequence[Any]:
    """Check and normalise one parameter set for the statement ``info``.

    A sequence binds by position (the qmark paramstyle); a mapping binds
    named parameters (``:name``, ``@name``, ``$name``) by name, as sqlite3
    does.
    """
    if type(params) is tuple or type(params) is list:
        return params
    if params is None:
        return ()
    if isinstance(params, Mapping):
        return _bind_names(params, info.names)
    if isinstance(params, (str, bytes, bytearray)) or not isinstance(params, Sequence):
        raise ProgrammingError(
            f"parameters must be a sequence (tuple or list), or a mapping for named parameters, "
            f"not {type(params).__name__}")
    return tuple(params)


def _bind_names(params: Mapping[str, Any], names: tuple[str | None, ...]) -> tuple:
    values = []
    for index, name in enumerate(names, 1):
        if name is None:
            raise ProgrammingError(
                f"parameter {index} has no name (? or ?NNN), but the parameters are a mapping")
        try:
            values.append(params[name])
        except KeyError:
            raise ProgrammingError(f"no value for the named parameter {name!r}") from None
    return tuple(values)


_last_description: tuple = (None, None, None)


def _description(columns: list[str], types: tuple[int, ...] | None) -> tuple:
    """cursor.description for these columns; the last one is reused.

    The decoder hands out the same ``columns`` list while the column names
    stay the same, so repeated executions of a statement build nothing.
    """
    global _last_description
    last_columns, last_types, description = _last_description
    if columns is last_columns and types == last_types:
        return description
    codes = types or (None,) * len(columns)
    description = tuple((name, code, None, None, None, None, None) for name, code in zip(columns, codes))
    _last_description = (columns, types, description)
    return description


class ConnectionBase:
    """What the sync and the asyncio connection share: the session's state."""

    _session: Session

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

    #: Called as ``row_factory(cursor, row)`` for each row fetched (``row``
    #: a tuple), as in sqlite3: ``dqlite.Row`` reads columns by name.  None
    #: (the default): rows are tuples.  A cursor takes the value its
    #: connection has when the cursor is made, and has its own attribute.
    #: The fetch methods call it, never the protocol code: whatever it
    #: raises reaches the caller of the fetch and leaves the connection as
    #: it was.
    row_factory: Callable[[Any, tuple], Any] | None = None

    def __repr__(self) -> str:
        return f"<{type(self).__module__}.{type(self).__qualname__} {self._session.describe_state()}>"

    @property
    def database(self) -> str:
        """The name of the open database."""
        return self._session.database

    @property
    def leader(self) -> str | None:
        """The address of the leader this connection talks to (None while disconnected)."""
        return self._session.connected_to

    @property
    def in_transaction(self) -> bool:
        """True while a transaction is open (like ``sqlite3.Connection.in_transaction``)."""
        return self._session.in_transaction

    @property
    def closed(self) -> bool:
        """True once ``close()`` was called."""
        return self._session.closed

    @property
    def transaction_mode(self) -> str:
        """How the transactions the driver begins take the write lock:
        ``"AUTO"`` (the default), ``"DEFERRED"``, ``"IMMEDIATE"`` or
        ``"EXCLUSIVE"`` (see ``connect``).  A new value applies from the next
        transaction on."""
        return self._session.transaction_mode

    @transaction_mode.setter
    def transaction_mode(self, mode: str) -> None:
        self._session.set_transaction_mode(mode)


class ResultState:
    """The part of a cursor that holds a result; shared by both cursor classes."""

    def __init__(self, connection: Any) -> None:
        self._connection = connection  # None once closed
        self._owner = connection
        #: See ``ConnectionBase.row_factory``.
        self.row_factory: Callable[[Any, tuple], Any] | None = connection.row_factory
        self._init_result()

    @property
    def connection(self) -> Any:
        """The connection this cursor belongs to (PEP 249 extension)."""
        return self._owner

    def _check(self) -> Any:
        connection = self._connection
        if connection is None:
            raise ProgrammingError("Cannot operate on a closed cursor.")
        connection._session.check_open()
        return connection

    def __repr__(self) -> str:
        state = "closed" if self._connection is None else f"rowcount={self._rowcount}"
        return f"<{type(self).__module__}.{type(self).__qualname__} {state}>"

    _rows: list
    _pos: int
    _done: bool
    _description: tuple | None
    _rowcount: int
    _lastrowid: int | None
    arraysize: int

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

    def setinputsizes(self, sizes: Any) -> None:
        """Does nothing (PEP 249 allows that)."""

    def setoutputsize(self, size: Any, column: Any = None) -> None:
        """Does nothing (PEP 249 allows that)."""

    def _init_result(self) -> None:
        self.arraysize = 1
        self._description = None
        self._rowcount = -1
        self._lastrowid = None
        self._rows = []
        self._pos = 0
        self._done = True

    def _clear_result(self) -> None:
        self._description = None
        self._rowcount = -1
        self._rows = []
        self._pos = 0
        self._done = True

    def _set_result(self, lastrowid: int | None, rowcount: int) -> None:
        self._lastrowid = lastrowid
        self._rowcount = rowcount

    def _set_rows(self, decoder: Decoder, rows: list, done: bool) -> None:
        self._description = _description(decoder.columns or [], decoder.first_row_types)
        self._rows = rows
        self._pos = 0
        self._done = done

    def _take(self, size: int) -> list:
        """Up to ``size`` rows from the current batch."""
        pos = self._pos
        out = self._rows[pos:pos + size]
        self._pos = pos + len(out)
        return out

    def _take_rest(self) -> list:
        """The rest of the current batch (the batch itself when none was taken)."""
        out = self._rows[self._pos:] if self._pos else self._rows
        self._rows = []
        self._pos = 0
        return out


class Session:
    """The state and logic of one connection, minus the I/O (see the module doc)."""

    def __init__(
        self,
        address: str | Sequence[str],
        database: str,
        *,
        timeout: float,
        autocommit: bool,
        parse_datetimes: bool,
        cached_statements: int,
        max_message_size: int,
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
        self.busy_timeout = float(busy_timeout)
        self.busy_poll = float(busy_poll)
        self.autocommit = bool(autocommit)
        self.set_transaction_mode(transaction_mode)
        # AUTO: the savepoints made in the open transaction while it had only
        # read, made again when it starts over (_restart_transaction).
        self.savepoints_while_reading: list[str] = []
        self.busy_deadline = 0.0  # when the wait of a statement that found the database locked ends
        self.ssl = ssl
        self.cached_statements = max(int(cached_statements), 1)
        self.encoder = Encoder()
        self.decoder = Decoder(max_message_size=max_message_size, parse_datetimes=parse_datetimes)
        self.connected_to: str | None = None   # the leader the socket is open to
        self.last_leader: str | None = None
        self.statements: OrderedDict[str, Prepared] = OrderedDict()
        self.classified: dict[str, _sql.Statement] = {}
        self.to_finalize: list[int] = []
        self.streaming: ResultState | None = None
        self.in_transaction = False
        self.transaction_wrote = False   # the open transaction ran more than queries
        self.implicit_transaction = False  # the open (or last) transaction began by itself (PEP 249)
        # A BEGIN went out with the end of the last read-only transaction
        # (_end_read_only): the server holds an empty deferred transaction
        # for the next statement.  Not ``in_transaction``: nothing ran in it.
        self.begun_ahead = False
        # The transaction was begun ahead and its first statement has not
        # been answered: losing the connection now loses nothing of it.
        self.transaction_fresh = False
        self.unread = 0                  # answers owed by the server and not read yet
        # The hot path's query went out before the answer to the BEGIN sent
        # ahead (see take_owed).
        self.query_behind_begin = False
        self.transaction_lost: str | None = None
        self.closed = False
        self.params32: bool | None = None
        self.barrier_run = False  # this connection's leader ran _barrier()

    def set_transaction_mode(self, mode: str) -> None:
        mode = check_transaction_mode(mode)
        self.transaction_mode = mode
        #: The implicit BEGIN.
        self.begin_sql = "BEGIN" if mode in ("AUTO", "DEFERRED") else f"BEGIN {mode}"
        # A deferred BEGIN takes no lock and no snapshot: it may go out ahead,
        # with the end of the transaction before (_encode_end_read_only).  A
        # BEGIN that takes the lock must wait for the statement it is for.
        self.begins_ahead = mode in ("AUTO", "DEFERRED")

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
        if self.transaction_lost is not None:
            raise TransactionLostError(
                f"the transaction was lost ({self.transaction_lost}); call rollback() before "
                f"using the connection again")

    def classify(self, sql: str) -> _sql.Statement:
        info = self.classified.get(sql)
        if info is None:
            if not isinstance(sql, str):
                raise ProgrammingError(f"SQL must be a str, not {type(sql).__name__}")
            info = _sql.classify(sql)
            if len(self.classified) > 4096:
                self.classified.clear()
            self.classified[sql] = info
        return info

    def mark_closed(self) -> None:
        """The application closed the connection (the shell closes the socket)."""
        self.closed = True
        self.in_transaction = False
        self.begun_ahead = False
        self.streaming = None
        self.connected_to = None
        self.decoder.reset()

    # -- low-level steps ---------------------------------------------------

    def _read(self, reader) -> Op:
        if self.unread:
            yield from self._read_unread()
        decoder = self.decoder
        while decoder.next_message() < 0:
            yield RECV
        return reader()

    def _read_rows(self, out: list) -> Op:
        if self.unread:
            yield from self._read_unread()
        decoder = self.decoder
        while decoder.next_message() < 0:
            yield RECV
        return decoder.read_rows(out)

    def _skip_result(self) -> Op:
        if self.unread:
            yield from self._read_unread()
        decoder = self.decoder
        while True:
            while decoder.next_message() < 0:
                yield RECV
            if decoder.skip_rows():
                decoder.end_result()
                return

    def _discard_response(self) -> Op:
        """Consume one response whatever it is (after an earlier pipelined failure)."""
        if self.unread:
            yield from self._read_unread()
        decoder = self.decoder
        while decoder.next_message() < 0:
            yield RECV
        if decoder.next_message() == _ROWS:
            yield from self._skip_result()
        else:
            decoder.skip()

    def _take_arrived_unread(self) -> Op:
        """Consume the answers owed from earlier requests that have already arrived.

        Done before sending the next request: the blocking shell then reads
        them without waiting (and without giving up the GIL), and the next
        receive finds the new request's answers rather than these.
        """
        yield POLL
        self.take_arrived()

    def take_arrived(self) -> bool:
        """The decoding half of ``_take_arrived_unread``, for a shell that
        received (or polled) itself: skip the owed answers that arrived.

        True when none is owed any more; False when the next message is
        incomplete, or not such an answer (the usual path reads it).  A
        failed one means the BEGIN sent with it did not run.
        """
        decoder = self.decoder
        while self.unread:
            mtype = decoder.next_message()
            if mtype != _RESULT and mtype != _FAILURE:
                return False
            if mtype == _FAILURE:
                self.begun_ahead = False
                if self.query_behind_begin:
                    # The hot path's query went out behind that BEGIN, and
                    # already joined its transaction: it ran alone.
                    self.in_transaction = False
                    self.transaction_fresh = False
            decoder.skip()
            self.unread -= 1
        return True

    def _settle_ahead(self, info: _sql.Statement | None) -> Op:
        """Before sending a statement: take in the answers that arrived, and
        end a transaction begun ahead if ``info`` must not run in it (None:
        nothing may).  Never waits: see _begin_if_needed for an answer that
        has not arrived yet.
        """
        if self.unread:
            yield from self._take_arrived_unread()
        if self.begun_ahead and (info is None or self.autocommit or self.in_transaction
                                 or not self.begins_ahead
                                 or info.kind in (_sql.BEGIN, _sql.COMMIT, _sql.ROLLBACK)):
            self.begun_ahead = False
            self.encoder.exec_sql("ROLLBACK")
            yield self.encoder.take()
            try:
                yield from self._read(self.decoder.read_result)
            except (ConnectionLostError, ProtocolError):
                raise
            except Error:
                pass  # nothing had run in it

    def _read_unread(self) -> Op:
        """Consume the answers to requests sent without waiting (see _end_read_only)."""
        n, self.unread = self.unread, 0
        for _ in range(n):
            try:
                yield from self._discard_response()
            except (ConnectionLostError, ProtocolError):
                raise
            except Error:
                # The end of a read-only transaction: nothing was at stake.
                # A BEGIN sent with it did not run.
                self.begun_ahead = False

    def _ensure_connected(self) -> Op:
        if self.connected_to is None:
            yield from self.connect()

    def _unencode(self, to_finalize: list[int] | None) -> None:
        """Undo a half-encoded request and what was queued ahead of it.

        A parameter the encoder refuses must not leave the BEGIN or the
        FINALIZEs queued before it in the buffer, to be sent with the next
        request and answered out of step.
        """
        self.encoder.clear()
        if to_finalize:
            self.to_finalize = to_finalize

    def _queue_finalizes(self) -> int:
        """Encode FINALIZE for evicted statements; returns how many EMPTYs to read."""
        n = len(self.to_finalize)
        for stmt_id in self.to_finalize:
            self.encoder.finalize(stmt_id)
        self.to_finalize.clear()
        return n

    def _read_finalizes(self, n: int) -> Op:
        for _ in range(n):
            try:
                yield from self._read(self.decoder.read_empty)
            except (ConnectionLostError, ProtocolError):
                raise
            except Error:
                pass  # an id the server already dropped: nothing to free

    def _needs_begin(self, info: _sql.Statement) -> bool:
        """PEP 249 semantics call for an implicit BEGIN before ``info``."""
        return not (self.autocommit or self.in_transaction
                    or info.kind in (_sql.BEGIN, _sql.COMMIT, _sql.ROLLBACK))

    def _begin_alone_if_needed(self, info: _sql.Statement) -> Op:
        """A BEGIN that takes the lock (IMMEDIATE, EXCLUSIVE) goes out alone
        ahead of anything but a query: it fails when another connection holds
        the lock (SQLITE_BUSY; ``execute`` waits and runs it again), and a
        statement sent behind it would then run outside any transaction."""
        if self.begins_ahead or info.kind == _sql.QUERY or not self._needs_begin(info):
            return
        self.encoder.exec_sql(self.begin_sql)
        yield self.encoder.take()
        yield from self._read(self.decoder.read_result)
        self._began()

    def _began(self) -> None:
        """The implicit BEGIN took: the transaction is open."""
        self.in_transaction = True
        self.implicit_transaction = True
        self.savepoints_while_reading.clear()
        if not self.begins_ahead:
            # It holds the write lock, which commit() must see released.
            self.transaction_wrote = True

    def _begin_if_needed(self, info: _sql.Statement) -> bool:
        """Encode the implicit BEGIN when PEP 249 semantics call for one."""
        if not self._needs_begin(info):
            return False
        if self.begun_ahead and not self.unread:
            # The BEGIN sent ahead took (its answer is in): the server's
            # transaction is open already.
            self._join_begun_ahead()
            return False
        # If a BEGIN sent ahead has no answer yet, send BEGIN again rather
        # than wait: if the one sent ahead took, this one fails harmlessly
        # ("within a transaction", see _send_with_prologue).
        self.implicit_transaction = True
        self.begun_ahead = False
        self.encoder.exec_sql(self.begin_sql)
        return True

    def _join_begun_ahead(self) -> None:
        """The next statement runs in the transaction begun ahead (_end_read_only)."""
        self._began()
        self.begun_ahead = False
        self.transaction_fresh = True

    def _send_with_prologue(self, nfin: int, begin: bool) -> Op:
        """Send what is encoded, then read the FINALIZE and BEGIN answers ahead of the statement's."""
        yield self.encoder.take()
        if nfin:
            yield from self._read_finalizes(nfin)
        if begin:
            try:
                yield from self._read(self.decoder.read_result)
            except (ConnectionLostError, ProtocolError):
                raise
            except Error as exc:
                if "within a transaction" not in str(exc):
                    yield from self._discard_response()
                    raise
                # The server had a transaction open already: we are in it.
            self._began()

    def _track_transaction_control(self, info: _sql.Statement) -> None:
        kind = info.kind
        if kind == _sql.BEGIN:
            self.in_transaction = True
            self.implicit_transaction = False
            # A write lock taken up front must be released before commit()
            # returns: such a transaction counts as writing.
            self.transaction_wrote = info.takes_write_lock
        elif kind in (_sql.COMMIT, _sql.ROLLBACK):
            self.in_transaction = False
            self.transaction_wrote = False

    # -- failure handling --------------------------------------------------

    @staticmethod
    def is_connection_failure(exc: Error) -> bool:
        code = exc.code
        return (
            isinstance(exc, (ConnectionLostError, ProtocolError))
            or code in NOT_LEADER_CODES
            or code in LEADERSHIP_LOST_CODES
            # 12: "no database opened" / "no statement with the given id": the
            # server dropped this session's state when leadership moved.
            or code == 12
        )

    def lost(self, exc: Error, *, writing: bool) -> Error:
        """Forget the server session; the exception to raise for ``exc``.

        ``writing``: a request that commits something (COMMIT, or a write in
        autocommit mode) was sent.  The caller yields CLOSE.
        """
        self.connected_to = None
        self.streaming = None
        self.statements.clear()
        self.to_finalize.clear()
        self.unread = 0
        self.transaction_wrote = False
        self.begun_ahead = False
        self.query_behind_begin = False
        if self.transaction_fresh:
            # Nothing of the transaction begun ahead had run: no transaction lost.
            self.in_transaction = False
            self.transaction_fresh = False
        self.decoder.reset()
        code = exc.code
        message = str(exc)
        # A FAILURE answer means the request was refused before it ran, except
        # "leadership lost", which can come after the write was replicated.
        # No answer at all (socket error, timeout, bad bytes) tells nothing.
        outcome_unknown = code is None or code in LEADERSHIP_LOST_CODES
        if writing and outcome_unknown:
            self.in_transaction = False
            new: Error = CommitOutcomeUnknownError(
                f"the outcome of the commit is unknown ({message}); it was not retried",
                code=code, server_message=exc.server_message)
        elif self.in_transaction:
            self.in_transaction = False
            self.transaction_lost = message
            new = TransactionLostError(
                f"the transaction was lost ({message}); nothing of it was committed. "
                f"Call rollback() before using the connection again",
                code=code, server_message=exc.server_message)
        elif isinstance(exc, ProtocolError):
            new = exc
        else:
            new = ConnectionLostError(message, code=code, server_message=exc.server_message)
        log.warning("dqlite connection lost: %s", message)
        return new

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
        if self.is_connection_failure(exc):
            error = self.lost(exc, writing=writing and not isinstance(exc, ProtocolError))
            yield CLOSE
            raise error from exc
        if isinstance(exc, DatabaseError):
            yield from self._after_statement_error(exc)

    def _after_statement_error(self, exc: Error) -> Op:
        """After a server error inside a transaction, check the transaction survived."""
        if not self.in_transaction or exc.code is None or (exc.code & 0xFF) not in _MAY_AUTO_ROLLBACK:
            return
        # BEGIN fails inside a transaction and succeeds outside one: if it
        # succeeds, SQLite rolled ours back.
        self.encoder.exec_sql("BEGIN")
        yield self.encoder.take()
        try:
            yield from self._read(self.decoder.read_result)
        except DatabaseError:
            return
        self.transaction_lost = f"SQLite rolled the transaction back after: {exc}"

    # -- connecting --------------------------------------------------------

    def connect(self) -> Op:
        """Find the leader, connect to it and open the database.

        The first round tries the leader last found (by this connection, or
        by any other to the same cluster: the node store).  Otherwise, and in
        later rounds, every candidate (the addresses given, then the members
        the node store knows) is asked at once, and the database is opened
        on the leader they name, unless it could not be reached itself.
        """
        deadline = time.monotonic() + self.timeout
        store = self.node_store
        delay = 0.01
        errors: dict[str, str] = {}
        # Addresses that failed in an earlier round (as the hint, or not
        # answering the search): asked only with the others from then on.
        failed: set[str] = set()
        while True:
            given = self.addresses
            candidates = list(dict.fromkeys([*given, *(store.members(given) if store is not None else ())]))
            # The leader last found by any connection to this cluster, or by this one.
            hint = (store.leader(given) if store is not None else None) or self.last_leader
            if hint in failed:
                hint = None
            # Each node gets a share of the time: a frozen or partitioned node
            # (often the last known leader) must not use up the whole budget.
            attempt = max(self.timeout / len(candidates), min(self.timeout, 0.5))
            tried: set[str] = set()
            if hint is not None:
                tried.add(hint)
                if (yield from self._try_leader(hint, deadline, attempt, errors, hops=1)):
                    return
                failed.add(hint)
            to_ask = tuple(a for a in candidates if a not in tried)
            if hint is None and len(to_ask) == 1:
                # One node to ask: asking it to open the database asks it who leads.
                tried.add(to_ask[0])
                if (yield from self._try_leader(to_ask[0], deadline, attempt, errors, hops=1)):
                    return
            elif to_ask:
                remaining = max(deadline - time.monotonic(), 0.05)
                # The shell sends the answers in (Op's send type is None elsewhere).
                # The given addresses' answers win (dqlite._probe), unless they
                # failed before: a frozen node costs its share of the time once.
                preferred = tuple(a for a in given if a not in failed)
                answers: Any = yield FindLeader(to_ask, min(remaining, attempt), preferred)
                # A deposed leader that died is still named by the others until
                # they elect a new one: not worth its share of the time again.
                unreachable = {a.address for a in answers if a.error is not None}
                failed |= unreachable
                for leader in self._named_leaders(answers, errors):
                    if leader in tried or leader in unreachable:
                        continue
                    tried.add(leader)
                    if (yield from self._try_leader(leader, deadline, attempt, errors, hops=0)):
                        return
            if time.monotonic() + delay >= deadline:
                tried_text = "; ".join(f"{a}: {why}" for a, why in errors.items())
                raise OperationalError(
                    f"could not connect to the dqlite leader within {self.timeout:g}s ({tried_text})")
            yield Sleep(delay)
            delay = min(delay * 2, 0.5)

    def _named_leaders(self, answers: Sequence[Any], errors: dict[str, str]) -> list[str]:
        """The leaders ``FindLeader``'s answers name, the likeliest first: a
        node naming itself, then the nodes named by the given addresses, then
        by stored members (which might, in time, have become another
        cluster's)."""
        given = set(self.addresses)
        ranked: list[tuple[int, str]] = []
        for answer in answers:
            address, leader, error = answer
            if error is not None:
                errors[address] = error
            elif not leader:
                errors[address] = "knows no leader"
            else:
                ranked.append(((leader != address) * 2 + (address not in given), leader))
        ranked.sort(key=lambda r: r[0])
        return list(dict.fromkeys(leader for _, leader in ranked))

    def _try_leader(self, address: str, deadline: float, attempt: float, errors: dict[str, str],
                    hops: int) -> Op:
        """Open the database on ``address`` if it leads (or on the leader it
        names, ``hops`` times); True once connected."""
        try:
            leader = yield from self._open_on_leader(address, deadline, attempt, hops)
        except Error as exc:
            yield CLOSE
            errors[address] = str(exc)
            return False
        if leader is None:
            errors[address] = "not the leader, and its leader could not be reached"
            return False
        self.connected_to = self.last_leader = leader
        self.barrier_run = False
        self.statements.clear()
        self.to_finalize.clear()
        log.debug("connected to leader %s, database %r", leader, self.database)
        return True

    def _open_on_leader(self, address: str, deadline: float, attempt: float, hops: int = 1) -> Op:
        """Connect to ``address``; if it leads, open the database there.

        The handshake, LEADER, OPEN and CLUSTER travel in one write: on the
        leader the connection is ready after one round trip, and the
        cluster's members are learned for the node store on the way.
        Returns the leader's address, or None (with the socket closed) if it
        could not be reached.  Until CONNECTED, the shell bounds each wait
        by ``attempt`` seconds.
        """
        remaining = max(deadline - time.monotonic(), 0.05)
        self.decoder.reset()
        self.unread = 0
        yield Connect(address, min(remaining, attempt))
        enc = self.encoder
        enc.clear()
        enc.leader()
        enc.open(self.database)
        store = self.node_store
        if store is not None:
            enc.cluster(1)
        yield _HANDSHAKE + enc.take()
        _, leader = yield from self._read(self.decoder.read_server)
        if leader == address:
            yield from self._read(self.decoder.read_db)
            if store is not None:
                yield from self._learn_members(store, address)
            yield CONNECTED
            return address
        yield CLOSE
        if leader and hops > 0:
            return (yield from self._open_on_leader(leader, deadline, attempt, hops - 1))
        return None

    def _learn_members(self, store: NodeStore, leader: str) -> Op:
        """Read the leader's CLUSTER answer into the node store."""
        try:
            members = yield from self._read(self.decoder.read_servers)
        except (ConnectionLostError, ProtocolError):
            raise
        except Error as exc:  # refused: the store keeps what it knew
            log.debug("CLUSTER failed on %s: %s", leader, exc)
            return
        store.learn(self.addresses, members, leader)

    # -- statements --------------------------------------------------------

    def _prepare(self, sql: str, info: _sql.Statement) -> Op:
        """The cached prepared statement for ``sql``, preparing it if needed."""
        prepared = self.statements.get(sql)
        if prepared is not None:
            self.statements.move_to_end(sql)
            return prepared
        yield from self._ensure_connected()
        nfin = self._queue_finalizes()
        self.encoder.prepare(sql)
        yield self.encoder.take()
        yield from self._read_finalizes(nfin)
        try:
            stmt_id, nparams = yield from self._read(self.decoder.read_stmt)
        except DatabaseError as exc:
            if exc.code != 1 or not str(exc).startswith("no such") or self.barrier_run:
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
        self.statements[sql] = prepared
        if len(self.statements) > self.cached_statements:
            _, evicted = self.statements.popitem(last=False)
            # Finalized with the next request; the id is never used again (§8.1).
            self.to_finalize.append(evicted.stmt_id)
        return prepared

    def _barrier(self) -> Op:
        """Have the leader apply every committed log entry (protocol.md: QUERY
        and EXEC requests run a raft barrier first; PREPARE does not in 1.11)."""
        self.barrier_run = True
        self.encoder.query_sql("SELECT 1")
        yield self.encoder.take()
        rows: list = []
        while not (yield from self._read_rows(rows)):
            pass
        self.decoder.end_result()

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
        self.encoder.query_sql("SELECT ?", (1,), True)
        yield self.encoder.take()
        rows: list = []
        try:
            while not (yield from self._read_rows(rows)):
                pass
            self.decoder.end_result()
            self.params32 = rows == [(1,)]
        except (ConnectionLostError, ProtocolError):
            raise
        except Error:
            self.params32 = False

    def encode_cached_query(self, sql: str, params: Any) -> bool:
        """The hot path of ``execute``, for a shell that does the I/O itself.

        When ``sql`` is a query whose statement is prepared on the current
        connection and nothing has to go before it (no BEGIN to send, no
        result streaming, no statement to finalize, no parameter count to
        check), encode its QUERY and return True: the shell sends it; if
        answers are owed (``unread``), it takes them with ``take_owed``
        first; it decodes the ROWS answer up to a first row (or the end)
        and hands the rows to ``take_query_rows``, or an ``Error`` to
        ``query_failed`` before raising it: what ``execute`` does on this
        path.  Otherwise encode nothing and return False: the shell runs
        ``execute``.  ``params`` is a tuple, a list or a dict (``as_params``).
        """
        # A statement is only prepared after execute checked its SQL (a
        # single statement, no RETURNING); its info says QUERY only if it
        # was classified so.  ``closed`` implies ``connected_to is None``.
        # Answers still owed come from the end of the last transaction
        # (_end_read_only): the query goes out behind it (see take_owed).
        if (self.connected_to is None or self.streaming is not None
                or self.to_finalize or self.transaction_lost is not None):
            return False
        begun_ahead = self.begun_ahead
        if begun_ahead:
            if self.autocommit or self.in_transaction or not self.begins_ahead:
                return False  # _settle_ahead ends that transaction first
        elif not (self.in_transaction or self.autocommit):
            return False  # a BEGIN goes first
        prepared = self.statements.get(sql)
        if prepared is None:
            return False
        if type(params) is dict:
            params = _bind_names(params, prepared.info.names)
        if (prepared.info.kind != _sql.QUERY or len(params) != prepared.nparams
                or prepared.nparams > MAX_PARAMS_SCHEMA0):
            return False
        self.statements.move_to_end(sql)
        try:
            self.encoder.query(prepared.stmt_id, params, False)
        except BaseException:
            self.encoder.clear()
            raise
        # The query is the first statement of the transaction begun ahead,
        # whose BEGIN may not be answered yet: take_owed checks that it ran.
        self.query_behind_begin = begun_ahead and self.unread > 0
        if begun_ahead:
            self._join_begun_ahead()
        return True

    def take_owed(self) -> bool | None:
        """After ``encode_cached_query``'s query went out while answers were
        owed (``unread``): take those that arrived, ahead of the query's own.

        None: some have not arrived (receive, and call again).  True: the
        query's answer is next.  False: the BEGIN sent ahead did not run (the
        end of the last transaction failed), so the query ran outside any
        transaction; its answer is owed now, to be discarded, and the shell
        runs ``execute``, which runs the query again in a transaction.
        """
        if not self.take_arrived():
            mtype = self.decoder.next_message()
            if mtype < 0:
                return None
            raise ProtocolError(f"expected the answer to the end of a transaction, got message type {mtype}")
        ran_alone = self.query_behind_begin and not self.in_transaction
        self.query_behind_begin = False
        if ran_alone:
            self.unread = 1
            return False
        return True

    def take_query_rows(self, cursor: ResultState, rows: list, done: bool) -> None:
        """The end of ``encode_cached_query``'s path: the answer's first rows.

        ``rows`` holds the first batch with a row (or the whole result);
        ``done``: it was the last.
        """
        decoder = self.decoder
        if not decoder.columns:
            raise ProtocolError("server answered a query with a result of no columns")
        self.transaction_fresh = False
        cursor._set_rows(decoder, rows, done)
        cursor._rowcount = -1
        if done:
            decoder.end_result()
        else:
            self.streaming = cursor

    def query_failed(self, exc: Error) -> Op:
        """The end of ``encode_cached_query``'s path when the answer is ``exc``."""
        try:
            yield from self._failed(exc, False)
        finally:
            self.transaction_fresh = False

    def execute(self, cursor: ResultState, sql: str, params: Any) -> Op:
        """Run one statement with one parameter set (see ``as_params``); its result lands in ``cursor``."""
        self.check_usable()
        info = self.classify(sql)
        params = as_params(params, info)
        if info.has_tail:
            raise ProgrammingError("You can only execute one statement at a time.")
        if info.kind == _sql.EMPTY:
            cursor._set_result(cursor._lastrowid, -1)
            return
        if info.kind == _sql.DML_RETURNING:
            raise NotSupportedError(
                "INSERT/UPDATE/DELETE ... RETURNING is not supported: dqlite 1.11 servers abort "
                "when a write runs through a query request; run the write and a SELECT instead")
        if self.streaming is not None:
            yield from self.finish_stream()
        kind = info.kind
        only_read = self._only_read()
        # The transaction's first write may start it over (AUTO).
        restartable = only_read and kind not in _READ_OR_CONTROL_KINDS
        # A savepoint writes nothing: it is made again if the transaction starts over.
        keeps_savepoint = only_read and kind == _sql.SAVEPOINT
        if kind != _sql.QUERY and not keeps_savepoint:
            self.transaction_wrote = True
        # A write outside any transaction commits by itself: losing the
        # connection after sending it leaves its outcome unknown.
        writing = kind == _sql.COMMIT or (
            kind != _sql.QUERY and self.autocommit and not self.in_transaction)
        attempt = 0
        while True:
            try:
                yield from self._execute(cursor, sql, info, params)
                if keeps_savepoint and self.in_transaction:
                    self.savepoints_while_reading.append(sql)
                return
            except Error as exc:
                if restartable and exc.code in _LOCKED_CODES:
                    delay = self._busy_delay(exc, attempt, stale_snapshot_too=True)
                    if delay is not None:
                        attempt += 1
                        yield Sleep(delay)
                        yield from self._guarded(self._restart_transaction(), writing=False)
                        self.transaction_wrote = True
                        continue
                yield from self._failed(exc, writing)
                delay = self._busy_delay(exc, attempt)
                if delay is None:
                    raise
            finally:
                self.transaction_fresh = False
            attempt += 1
            yield Sleep(delay)

    def _only_read(self) -> bool:
        """AUTO mode, and the transaction the next statement runs in is one
        the driver began and has run nothing but queries and savepoints so
        far, or has yet to begin: starting it over loses nothing."""
        if self.transaction_mode != "AUTO" or self.autocommit:
            return False
        if self.in_transaction:
            return self.implicit_transaction and not self.transaction_wrote
        return True

    def _restart_transaction(self) -> Op:
        """AUTO: the transaction's first write found the database locked, or
        its read snapshot stale (``_only_read`` held).  Roll the transaction
        back and begin it again with the savepoints it had made: the write
        then runs again in a transaction that has no snapshot yet, so it
        takes the write lock or finds it taken, and never a stale snapshot.
        What the transaction read before is not read again.
        """
        enc = self.encoder
        answers = 0
        if self.in_transaction:
            enc.exec_sql("ROLLBACK")
            answers += 1
        self.in_transaction = False
        self.transaction_wrote = False
        savepoints = self.savepoints_while_reading[:]
        if savepoints:
            enc.exec_sql(self.begin_sql)
            for statement in savepoints:
                enc.exec_sql(statement)
            answers += 1 + len(savepoints)
        log.debug("database is locked at the transaction's first write: starting it over")
        if not answers:
            return
        yield enc.take()
        failure: Error | None = None
        for _ in range(answers):
            try:
                yield from self._read(self.decoder.read_result)
            except (ConnectionLostError, ProtocolError):
                raise
            except Error as exc:
                if failure is None and "no transaction is active" not in str(exc):
                    failure = exc
        if failure is not None:
            self.transaction_lost = f"it could not be begun again after the database was locked: {failure}"
            raise TransactionLostError(f"the transaction was lost ({self.transaction_lost})",
                                       code=failure.code, server_message=failure.server_message)
        if savepoints:
            self._began()
            self.savepoints_while_reading = savepoints

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
        if not (exc.code == SQLITE_BUSY or (stale_snapshot_too and exc.code in _LOCKED_CODES)):
            return None
        if self.transaction_lost is not None or self.connected_to is None:
            return None
        now = time.monotonic()
        if attempt == 0:
            self.busy_deadline = now + self.busy_timeout
        left = self.busy_deadline - now
        if left <= 0:
            return None
        step = _BUSY_DELAYS[min(attempt, len(_BUSY_DELAYS) - 1)]
        delay = min(step * (0.5 + random.random()), left)
        log.debug("database is locked (attempt %d, %.3f s left): running it again in %.4f s",
                  attempt + 1, left, delay)
        return delay

    def _execute(self, cursor: ResultState, sql: str, info: _sql.Statement, params: Sequence[Any]) -> Op:
        kind = info.kind
        if (self.unread or self.begun_ahead) and self.connected_to is not None:
            yield from self._settle_ahead(info)
        if not params and kind in _EXEC_SQL_KINDS:
            # DDL and transaction control: one EXEC_SQL, nothing worth caching.
            yield from self._ensure_connected()
            yield from self._begin_alone_if_needed(info)
            saved: list[int] | None = self.to_finalize[:]
            try:
                nfin = self._queue_finalizes()
                begin = self._begin_if_needed(info)
                self.encoder.exec_sql(sql)
            except BaseException:
                self._unencode(saved)
                raise
            yield from self._send_with_prologue(nfin, begin)
            yield from self._read(self.decoder.read_result)
            self._track_transaction_control(info)
            cursor._set_result(cursor._lastrowid, -1)
            return

        # The hot path (a cached statement, few parameters, connected) is
        # written out inline: no nested generators to create.
        prepared = self.statements.get(sql)
        if prepared is None:
            prepared = yield from self._prepare(sql, info)
        else:
            self.statements.move_to_end(sql)
        kind = prepared.info.kind  # a PRAGMA may have turned out to return no rows
        if len(params) == prepared.nparams and prepared.nparams <= MAX_PARAMS_SCHEMA0:
            params32 = False
        else:
            params32 = yield from self._check_params(prepared, params)
        if self.connected_to is None:
            yield from self.connect()
        yield from self._begin_alone_if_needed(prepared.info)
        saved = self.to_finalize[:] if self.to_finalize else None
        try:
            nfin = self._queue_finalizes() if saved else 0
            begin = self._begin_if_needed(info)
            if kind == _sql.QUERY or kind == _sql.PRAGMA:
                self.encoder.query(prepared.stmt_id, params, params32)
            else:
                self.encoder.exec(prepared.stmt_id, params, params32)
        except BaseException:
            self._unencode(saved)
            raise
        decoder = self.decoder
        if nfin or begin:
            yield from self._send_with_prologue(nfin, begin)
        else:
            yield self.encoder.take()
        if kind == _sql.QUERY or kind == _sql.PRAGMA:
            rows: list = []
            try:
                if self.unread:
                    yield from self._read_unread()
                while decoder.next_message() < 0:
                    yield RECV
                done = decoder.read_rows(rows)
            except (ConnectionLostError, ProtocolError):
                raise
            except Error as exc:
                if kind == _sql.PRAGMA and exc.code == 1 and str(exc) == "not an error":
                    # A row-less PRAGMA: QUERY did not run it (§1.6); EXEC it.
                    prepared.info = _sql.Statement(_sql.OTHER, False)
                    self.encoder.exec(prepared.stmt_id, params, params32)
                    yield self.encoder.take()
                    yield from self._read(decoder.read_result)
                    cursor._set_result(cursor._lastrowid, -1)
                    return
                raise
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
                cursor._set_result(cursor._lastrowid, -1)
                return
            cursor._set_rows(decoder, rows, done)
            if done:
                decoder.end_result()
            else:
                self.streaming = cursor
            return
        last_id, changes = yield from self._read(decoder.read_result)
        if kind == _sql.DML:
            cursor._set_result(last_id if info.is_insert else cursor._lastrowid, changes)
        else:
            self._track_transaction_control(info)
            cursor._set_result(cursor._lastrowid, -1)

    def executemany(self, cursor: ResultState, sql: str, seq_of_parameters: Iterable[Sequence[Any]]) -> Op:
        """Run one statement per parameter set, all or nothing."""
        self.check_usable()
        info = self.classify(sql)
        if info.has_tail:
            raise ProgrammingError("You can only execute one statement at a time.")
        if info.returns_rows or info.kind == _sql.DML_RETURNING:
            raise ProgrammingError("executemany() can only execute statements that return no rows")
        if info.kind in (_sql.BEGIN, _sql.COMMIT, _sql.ROLLBACK, _sql.SAVEPOINT):
            raise ProgrammingError("executemany() cannot run transaction control statements")
        if info.kind == _sql.EMPTY:
            cursor._set_result(cursor._lastrowid, -1)
            return
        if self.streaming is not None:
            yield from self.finish_stream()
        restartable = self._only_read()  # the batch is the transaction's first write (AUTO)
        self.transaction_wrote = True
        rows: Iterator[Sequence[Any]] = iter(seq_of_parameters)
        attempt = 0
        while True:
            # The parameter sets sent before the first answer, kept in case
            # that answer is SQLITE_BUSY: the batch then runs again from them.
            replay: list[Sequence[Any]] = []
            try:
                # Outside a transaction the batch's RELEASE is its commit.
                total = yield from self._guarded(
                    self._executemany(sql, info, rows, replay),
                    writing=self.autocommit and not self.in_transaction)
                break
            except Error as exc:
                # The batch was rolled back to its savepoint.  Its first row
                # found the database locked if ``replay`` still holds rows.
                delay = self._busy_delay(exc, attempt, stale_snapshot_too=restartable) if replay else None
                if delay is None:
                    raise
            finally:
                self.transaction_fresh = False
            attempt += 1
            rows = itertools.chain(replay, rows)
            yield Sleep(delay)
            if restartable:
                yield from self._guarded(self._restart_transaction(), writing=False)
                self.transaction_wrote = True
        cursor._set_result(cursor._lastrowid, total if info.kind == _sql.DML else -1)

    def _executemany(self, sql: str, info: _sql.Statement, rows: Iterator[Sequence[Any]],
                     replay: list[Sequence[Any]]) -> Op:
        """Prepare once, then pipeline the EXECs inside a SAVEPOINT.

        The savepoint makes the batch all-or-nothing: if any row fails, the
        batch is rolled back to it and the first error is raised.  Windows of
        EXECs overlap: window k+1 is sent before the answers to window k are
        read, so the server never waits for the client.  The parameter sets
        taken from ``rows`` go to ``replay`` too until the first answer is
        read; ``replay`` is emptied unless that answer is an error.
        """
        if (self.unread or self.begun_ahead) and self.connected_to is not None:
            yield from self._settle_ahead(info)
        prepared = yield from self._prepare(sql, info)
        yield from self._ensure_connected()
        yield from self._begin_alone_if_needed(info)
        decoder = self.decoder
        enc = self.encoder
        nfin = self._queue_finalizes()
        begin = self._begin_if_needed(info)
        enc.exec_sql(f"SAVEPOINT {_EXECUTEMANY_SAVEPOINT}")
        yield from self._send_with_prologue(nfin, begin)
        yield from self._read(decoder.read_result)

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
                yield enc.take()
            for _ in range(previous_window):
                try:
                    total += (yield from self._read(decoder.read_result))[1]
                except (ConnectionLostError, ProtocolError):
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
        if self.in_transaction:
            yield from self.commit()
        self.transaction_wrote = True  # a script's own BEGIN ... COMMIT may write
        for statement in _sql.split_statements(script):
            info = self.classify(statement)
            if info.kind == _sql.DML_RETURNING:
                raise NotSupportedError("INSERT/UPDATE/DELETE ... RETURNING is not supported")
            yield from self._guarded(self._script_statement(statement, info),
                                     writing=info.kind != _sql.QUERY)

    def _script_statement(self, statement: str, info: _sql.Statement) -> Op:
        yield from self._ensure_connected()
        if self.unread or self.begun_ahead:
            yield from self._settle_ahead(None)  # a script runs outside any transaction
        if info.returns_rows:
            self.encoder.query_sql(statement)
            yield self.encoder.take()
            yield from self._skip_result()
        else:
            self.encoder.exec_sql(statement)
            yield self.encoder.take()
            yield from self._read(self.decoder.read_result)
        self._track_transaction_control(info)

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

    # -- transactions ------------------------------------------------------

    def commit(self) -> Op:
        self.check_open()
        if self.transaction_lost is not None:
            why = self.transaction_lost
            self.transaction_lost = None
            raise TransactionLostError(
                f"cannot commit: the transaction was lost ({why}); nothing of it was committed")
        if not self.in_transaction:
            return
        if self.streaming is not None:
            yield from self.finish_stream()
        if not self.transaction_wrote:
            yield from self._end_read_only("COMMIT")
            return
        yield from self._end_transaction("COMMIT")

    def rollback(self) -> Op:
        self.check_open()
        if self.transaction_lost is not None:
            self.transaction_lost = None
            self.in_transaction = False
            if self.connected_to is not None:
                # The server may hold a transaction of ours (the probe of
                # _after_statement_error): end it, whatever it says.
                try:
                    yield from self._end_transaction("ROLLBACK")
                except Error:
                    pass
            return
        if not self.in_transaction:
            return
        if self.streaming is not None:
            yield from self.finish_stream()
        if not self.transaction_wrote:
            yield from self._end_read_only("ROLLBACK")
            return
        try:
            yield from self._end_transaction("ROLLBACK")
        except ConnectionLostError:
            # The server discards the transaction of a connection it loses:
            # the rollback happened.
            self.transaction_lost = None
            self.in_transaction = False

    def _end_read_only(self, sql: str) -> Op:
        """End a transaction that only read, without waiting for the answer.

        Nothing is at stake, so COMMIT/ROLLBACK is sent now (the server
        ends the read snapshot then) and its answer is read ahead of the
        next request's: a pooled read waits for one round trip, not two.
        """
        data = self._encode_end_read_only(sql)
        if data is not None:
            try:
                yield SendSoon(data)
            except ConnectionLostError:
                self.end_not_sent()

    def end_read_only_now(self, sql: str) -> bytes | None:
        """``commit()``/``rollback()`` (``sql``) for a shell, without a generator.

        When the open transaction only read (nothing streams, nothing was
        lost), end it as ``_end_read_only`` does and return the request: the
        shell sends it without waiting for its answer, and calls
        ``end_not_sent`` if the send fails.  Otherwise change nothing and
        return None: the shell runs ``commit()``/``rollback()``.
        """
        if (not self.in_transaction or self.transaction_wrote or self.streaming is not None
                or self.transaction_lost is not None or self.connected_to is None):
            return None
        return self._encode_end_read_only(sql)

    def _encode_end_read_only(self, sql: str) -> bytes | None:
        self.in_transaction = False
        self.transaction_wrote = False
        if self.connected_to is None:
            return None
        # PEP 249 mode: the next transaction will begin by itself, so its
        # BEGIN goes out now, in the same request (EXEC_SQL runs both, and
        # a deferred BEGIN takes no lock and no snapshot).  The next
        # statement then travels alone and gets one answer, not two.
        ahead = not self.autocommit and self.implicit_transaction and self.begins_ahead
        self.encoder.exec_sql(f"{sql}; BEGIN" if ahead else sql)
        self.unread += 1
        self.begun_ahead = ahead
        return self.encoder.take()

    def end_not_sent(self) -> None:
        """The end of a read-only transaction could not be sent: the connection
        is lost, and the server drops the transaction with it."""
        self.unread -= 1
        self.begun_ahead = False

    def _end_transaction(self, sql: str) -> Op:
        try:
            if self.connected_to is None:
                raise ConnectionLostError("not connected")
            self.encoder.exec_sql(sql)
            yield self.encoder.take()
            yield from self._read(self.decoder.read_result)
        except Error as exc:
            if self.is_connection_failure(exc):
                error = self.lost(exc, writing=sql == "COMMIT")
                # commit()/rollback() ends the transaction either way: the
                # loss is reported right here, not again on the next call.
                self.transaction_lost = None
                yield CLOSE
                raise error from exc
            if exc.code == 1 and "no transaction is active" in str(exc):
                self.in_transaction = False
                if sql == "COMMIT":
                    raise TransactionLostError(
                        "the server had already rolled the transaction back; nothing of it was committed",
                        code=exc.code, server_message=exc.server_message) from exc
                return
            raise
        self.in_transaction = False
        self.transaction_wrote = False

    # -- streaming results -------------------------------------------------

    def read_batch(self, cursor: ResultState, out: list) -> Op:
        """Decode the next batch of ``cursor``'s result into ``out``; True at the end."""
        try:
            if self.streaming is not cursor or self.connected_to is None:
                raise ConnectionLostError("connection lost while reading a result")
            done = yield from self._read_rows(out)
        except Error as exc:
            self.streaming = None
            if self.is_connection_failure(exc):
                error = self.lost(exc, writing=False)
                yield CLOSE
                raise error from exc
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
        cursor = self.streaming
        if cursor is None:
            return
        rows = cursor._rows[cursor._pos:]
        cursor._rows = rows
        cursor._pos = 0
        while not cursor._done:
            cursor._done = yield from self.read_batch(cursor, rows)

    def abandon_stream(self, cursor: ResultState) -> Op:
        """Drain ``cursor``'s result without decoding it (the cursor is done with it)."""
        if self.streaming is not cursor:
            return
        self.streaming = None
        try:
            yield from self._skip_result()
        except Error as exc:
            if self.is_connection_failure(exc):
                error = self.lost(exc, writing=False)
                yield CLOSE
                raise error from exc
            raise
