"""What the sync and the asyncio shells share: everything that does not await.

The connection's options and their documentation, the state a connection
and a cursor show, the handling of a fetched result, the query hook's report.
Each shell (``dqlite.connection``, ``dqlite.aio``) adds the I/O: it drives
the session's operations (``dqlite._session``) on its socket.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator, Sequence
from ssl import SSLContext
from typing import Any, Generator, TypedDict

import dqlite.exceptions
from dqlite._session import Result, Session
from dqlite.exceptions import (
    DatabaseError,
    DataError,
    Error,
    IntegrityError,
    InterfaceError,
    InternalError,
    NotSupportedError,
    OperationalError,
    ProgrammingError,
    Warning,
)
from dqlite.hooks import QueryEvent, QueryHook, emit, event_rowcount
from dqlite.nodestore import NodeStoreOption, resolve as resolve_node_store
from dqlite.tls import resolve_ssl


class ConnectOptions(TypedDict, total=False):
    """The keyword options of ``dqlite.connect`` and ``dqlite.aio.connect``
    (documented on ``dqlite.connect``)."""

    timeout: float
    autocommit: bool
    parse_datetimes: bool
    cached_statements: int
    max_message_size: int
    ssl: SSLContext | None
    busy_timeout: float
    busy_poll: float
    transaction_mode: str
    ssl_ca: str | os.PathLike[str] | None
    ssl_cert: str | os.PathLike[str] | None
    ssl_key: str | os.PathLike[str] | None
    on_query: QueryHook | None
    node_store: NodeStoreOption


def make_session(address: str | Sequence[str], database: str, options: dict[str, Any]) -> Session:
    """The session ``connect(address, database, **options)`` asks for (not connected yet)."""
    unknown = options.keys() - ConnectOptions.__annotations__.keys()
    if unknown:
        raise TypeError(f"connect() got an unexpected keyword argument {sorted(unknown)[0]!r}")
    options = dict(options)
    ssl = resolve_ssl(options.pop("ssl", None), options.pop("ssl_ca", None),
                      options.pop("ssl_cert", None), options.pop("ssl_key", None))
    options.pop("on_query", None)
    store = resolve_node_store(options.pop("node_store", None))
    return Session(address, database, ssl=ssl, node_store=store, **options)


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

    # The classes of its cursors, without a hook and with one (set by each
    # shell), and the one in use (see on_query).
    _cursor_classes: tuple[type, type]
    _cursor_cls: type
    _on_query: QueryHook | None = None
    # Owed to the next operation: a COMMIT whose outcome an interruption
    # (KeyboardInterrupt, a cancelled task) made unknown.
    _pending_error: dqlite.exceptions.Error | None = None  # (Error is the class attribute here)

    def _raise_pending(self, op: Generator) -> None:
        """Raise the error owed to the next operation, if any, instead of running ``op``."""
        error = self._pending_error
        if error is not None:
            op.close()
            self._pending_error = None
            raise error

    def _ends_with_sends_only(self) -> bool:
        """``commit()``/``rollback()`` would only send (``Session.end_sends_only``)
        and owe no error first: a shell may run them without its I/O loop."""
        return self._pending_error is None and self._session.end_sends_only()

    def __repr__(self) -> str:
        return f"<{type(self).__module__}.{type(self).__qualname__} {self._session.describe_state()}>"

    @property
    def on_query(self) -> QueryHook | None:
        """A hook called after each statement with a ``dqlite.hooks.QueryEvent``
        (SQL, duration, row count, error; never the parameters), or None.

        Applies to cursors made after it is set.  Without a hook, cursors run
        exactly the code they run without this feature.
        """
        return self._on_query

    @on_query.setter
    def on_query(self, hook: QueryHook | None) -> None:
        if hook is not None and not callable(hook):
            raise InterfaceError(f"on_query must be callable or None, not {type(hook).__name__}")
        self._on_query = hook
        self._cursor_cls = self._cursor_classes[hook is not None]

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


class CursorBase:
    """What the sync and the asyncio cursor share: the result of the last
    statement (a ``dqlite._session.Result``) and the handling of its rows."""

    _result: Result
    _lastrowid: int | None
    arraysize: int

    def __init__(self, connection: Any) -> None:
        self._connection = connection  # None once closed
        self._owner = connection
        #: See ``ConnectionBase.row_factory``.
        self.row_factory: Callable[[Any, tuple], Any] | None = connection.row_factory
        self.arraysize = 1
        self._result = _NOTHING
        self._lastrowid = None

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
        state = "closed" if self._connection is None else f"rowcount={self._result.rowcount}"
        return f"<{type(self).__module__}.{type(self).__qualname__} {state}>"

    @property
    def description(self) -> tuple | None:
        """One 7-tuple per result column (name, type_code, None x5), or None.

        type_code is the wire type of the column in the first row (compare it
        with dqlite.STRING, NUMBER, ...), or None for an empty result.
        """
        return self._result.description

    @property
    def rowcount(self) -> int:
        """Rows changed by the last INSERT/UPDATE/DELETE/REPLACE (summed by executemany); else -1."""
        return self._result.rowcount

    @property
    def lastrowid(self) -> int | None:
        """The rowid of the last row inserted by ``execute`` of an INSERT or REPLACE."""
        return self._lastrowid

    def setinputsizes(self, sizes: Any) -> None:
        """Does nothing (PEP 249 allows that)."""

    def setoutputsize(self, size: Any, column: Any = None) -> None:
        """Does nothing (PEP 249 allows that)."""

    # -- the result ----------------------------------------------------------

    def _set_result(self, result: Result) -> None:
        self._result = result
        if result.lastrowid is not None:
            self._lastrowid = result.lastrowid

    def _streaming(self, connection: Any) -> bool:
        """This cursor's result is still arriving on ``connection``."""
        session = connection._session
        return session.streaming is self._result and not session.closed

    def _check_result(self) -> Any:
        """The connection, when there is a result to fetch from."""
        connection = self._check()
        if self._result.description is None:
            raise ProgrammingError("no result to fetch from: execute a query first")
        return connection

    def _next_batch(self) -> tuple[Result, list]:
        """Make room for the next batch of rows: the result, and the list to read it into."""
        result = self._result
        rows: list = []
        result.rows = rows
        result.pos = 0
        return result, rows

    def _take(self, size: int) -> list:
        """Up to ``size`` rows from the current batch."""
        result = self._result
        pos = result.pos
        out = result.rows[pos:pos + size]
        result.pos = pos + len(out)
        return out

    def _take_rest(self) -> list:
        """The rest of the current batch (the batch itself when none was taken)."""
        result = self._result
        out = result.rows[result.pos:] if result.pos else result.rows
        result.rows = []
        result.pos = 0
        return out

    def _made(self, rows: list) -> list:
        """``rows`` as the row factory makes them."""
        factory = self.row_factory
        return rows if factory is None else [factory(self, row) for row in rows]

    def _closed(self) -> None:
        self._connection = None
        self._result = _NOTHING

    # -- the on_query hook ---------------------------------------------------

    @contextlib.contextmanager
    def _reported(self, method: str, sql: str) -> Iterator[None]:
        """Time the statement run in the block, and tell the connection's
        ``on_query`` hook how it went (what it raised, or its row count)."""
        start = time.perf_counter()
        try:
            yield
        except BaseException as exc:
            self._report(QueryEvent(sql, time.perf_counter() - start, -1, exc, self._owner.database, method))
            raise
        self._report(QueryEvent(sql, time.perf_counter() - start, event_rowcount(self), None,
                                self._owner.database, method))

    def _report(self, event: QueryEvent) -> None:
        hook = self._owner._on_query
        if hook is not None:
            emit(hook, event)


#: The result of a cursor that ran nothing yet (or was closed).
_NOTHING = Result()
