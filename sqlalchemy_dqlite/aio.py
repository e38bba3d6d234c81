"""The asyncio SQLAlchemy dialect: ``dqlite+aio://host:port/database``.

Runs on ``dqlite.aio`` (no threads: the driver works on the event loop
itself).  SQLAlchemy's asyncio layer calls a dialect's DB-API through
greenlets, so the async driver is wrapped here in small objects with the
synchronous DB-API shape whose methods await the driver's coroutines.

    from sqlalchemy.ext.asyncio import create_async_engine

    engine = create_async_engine("dqlite+aio://127.0.0.1:9001/app")
"""

from __future__ import annotations

from collections.abc import Sequence
from types import ModuleType
from typing import Any

from sqlalchemy import pool

try:  # SQLAlchemy 2.1
    from sqlalchemy.util.concurrency import await_
except ImportError:  # SQLAlchemy 2.0
    from sqlalchemy.util.concurrency import await_only as await_  # type: ignore[no-redef]

from sqlalchemy_dqlite.base import DqliteDialect, DqliteExecutionContext

__all__ = ["DqliteDialect_aio"]


class AsyncAdapt_dqlite_cursor:
    """A DB-API cursor over ``dqlite.aio.AsyncCursor``.

    A result is received whole when the statement runs (as SQLAlchemy's other
    asyncio dialects do for their default cursors): fetching then never
    awaits, and the connection is free for the next statement at once.
    """

    __slots__ = (
        "_adapt_connection", "_cursor", "description", "rowcount", "lastrowid",
        "arraysize", "_rows", "_pos",
    )

    server_side = False

    def __init__(self, adapt_connection: AsyncAdapt_dqlite_connection) -> None:
        self._adapt_connection = adapt_connection
        self._cursor = self._driver_cursor(adapt_connection)
        self.description: tuple | None = None
        self.rowcount = -1
        self.lastrowid: int | None = None
        self.arraysize = 1
        self._rows: list = []
        self._pos = 0

    def _driver_cursor(self, adapt_connection: AsyncAdapt_dqlite_connection) -> Any:
        return adapt_connection.driver_cursor()

    def _took_result(self) -> None:
        """The statement ran: take its whole result (awaiting the rest of it only if it has not all arrived)."""
        cursor = self._cursor
        description = cursor.description
        if description is None:
            rows: list = []
        else:
            rows = cursor.fetchall_nowait()  # type: ignore[assignment]
            if rows is None:
                rows = await_(cursor.fetchall())
        self._rows = rows
        self._pos = 0
        self.description = description
        self.rowcount = cursor.rowcount
        self.lastrowid = cursor.lastrowid

    async def _executemany(self, operation: str, seq_of_parameters: Any) -> None:
        cursor = self._cursor
        await cursor.executemany(operation, seq_of_parameters)
        self._rows = []
        self._pos = 0
        self.description = None
        self.rowcount = cursor.rowcount
        self.lastrowid = cursor.lastrowid

    def execute(self, operation: str, parameters: Sequence[Any] | None = None) -> None:
        await_(self._cursor.execute(operation, () if parameters is None else parameters))
        self._took_result()

    def executemany(self, operation: str, seq_of_parameters: Any) -> None:
        await_(self._executemany(operation, seq_of_parameters))

    def setinputsizes(self, *inputsizes: Any) -> None:
        pass

    def setoutputsize(self, size: Any, column: Any = None) -> None:
        pass

    def close(self) -> None:
        self._rows = []
        self._pos = 0

    async def _async_soft_close(self) -> None:
        """Called by SQLAlchemy's asyncio results (2.0.44+): nothing is pending here."""

    def fetchone(self) -> tuple | None:
        pos = self._pos
        rows = self._rows
        if pos < len(rows):
            self._pos = pos + 1
            return rows[pos]
        return None

    def fetchmany(self, size: int | None = None) -> list[tuple]:
        if size is None:
            size = self.arraysize
        pos = self._pos
        out = self._rows[pos:pos + size]
        self._pos = pos + len(out)
        return out

    def fetchall(self) -> list[tuple]:
        pos = self._pos
        out = self._rows[pos:] if pos else self._rows
        self._rows = []
        self._pos = 0
        return out

    def __iter__(self):
        while True:
            row = self.fetchone()
            if row is None:
                return
            yield row


class AsyncAdapt_dqlite_ss_cursor(AsyncAdapt_dqlite_cursor):
    """A streaming cursor (``stream_results``, ``AsyncConnection.stream``).

    Rows are received batch by batch as they are fetched; the connection runs
    nothing else until the result is read or the cursor closed.
    """

    __slots__ = ()

    server_side = True

    def _driver_cursor(self, adapt_connection: AsyncAdapt_dqlite_connection) -> Any:
        return adapt_connection._connection.cursor()  # its own: it streams

    def _took_result(self) -> None:
        cursor = self._cursor
        self.description = cursor.description
        self.rowcount = cursor.rowcount
        self.lastrowid = cursor.lastrowid

    def close(self) -> None:
        await_(self._cursor.close())

    def fetchone(self) -> tuple | None:
        return await_(self._cursor.fetchone())

    def fetchmany(self, size: int | None = None) -> list[tuple]:
        return await_(self._cursor.fetchmany(self.arraysize if size is None else size))

    def fetchall(self) -> list[tuple]:
        return await_(self._cursor.fetchall())


class AsyncAdapt_dqlite_connection:
    """A DB-API connection over ``dqlite.aio.AsyncConnection``."""

    __slots__ = ("dbapi", "_connection", "_cursor", "__weakref__")

    await_ = staticmethod(await_)

    def __init__(self, dbapi: AsyncAdapt_dqlite_dbapi, connection: Any) -> None:
        self.dbapi = dbapi
        self._connection = connection
        self._cursor: Any = None

    def driver_cursor(self) -> Any:
        """The driver cursor the buffered cursors share: each takes its whole
        result as its statement runs, so none needs the driver's after that."""
        cursor = self._cursor
        if cursor is None:
            cursor = self._cursor = self._connection.cursor()
        return cursor

    @property
    def driver_connection(self) -> Any:
        return self._connection

    @property
    def autocommit(self) -> bool:
        return self._connection.autocommit

    @autocommit.setter
    def autocommit(self, value: bool) -> None:
        # The sync driver commits an open transaction when autocommit is
        # switched on; the async one asks for it to be done first.
        if value and self._connection.in_transaction:
            await_(self._connection.commit())
        self._connection.autocommit = value

    @property
    def in_transaction(self) -> bool:
        return self._connection.in_transaction

    @property
    def transaction_mode(self) -> str:
        return self._connection.transaction_mode

    @transaction_mode.setter
    def transaction_mode(self, mode: str) -> None:
        self._connection.transaction_mode = mode

    def cursor(self, server_side: bool = False) -> AsyncAdapt_dqlite_cursor:
        if server_side:
            return AsyncAdapt_dqlite_ss_cursor(self)
        return AsyncAdapt_dqlite_cursor(self)

    def ping(self) -> None:
        await_(self._connection.ping())

    def commit(self) -> None:
        await_(self._connection.commit())

    def rollback(self) -> None:
        # The pool's reset after a read-only transaction: no switch to the loop.
        if not self._connection.rollback_nowait():
            await_(self._connection.rollback())

    def close(self) -> None:
        await_(self._connection.close())

    def terminate(self) -> None:
        self._connection.terminate()


class AsyncAdapt_dqlite_dbapi:
    """The DB-API module the dialect sees: ``dqlite``'s names, ``dqlite.aio``'s connect."""

    def __init__(self, aio: ModuleType, dqlite: ModuleType) -> None:
        self.aio = aio
        self.dqlite = dqlite
        self.paramstyle = dqlite.paramstyle
        self.apilevel = dqlite.apilevel
        self.threadsafety = dqlite.threadsafety
        self.__version__ = dqlite.__version__
        for name in dqlite.__all__:
            if name[0].isupper() and name not in ("Connection", "Cursor"):
                setattr(self, name, getattr(dqlite, name))

    def connect(self, *args: Any, **kwargs: Any) -> AsyncAdapt_dqlite_connection:
        creator = kwargs.pop("async_creator_fn", None)
        if creator is not None:
            connection = await_(creator(*args, **kwargs))
        else:
            connection = await_(self.aio.connect(*args, **kwargs))
        return AsyncAdapt_dqlite_connection(self, connection)


class DqliteExecutionContext_aio(DqliteExecutionContext):
    def create_server_side_cursor(self) -> Any:
        return self._dbapi_connection.cursor(server_side=True)


class DqliteDialect_aio(DqliteDialect):
    """SQLAlchemy dialect for dqlite through the asyncio driver ``dqlite.aio``."""

    driver = "aio"
    is_async = True
    has_terminate = True
    supports_statement_cache = True
    supports_server_side_cursors = True
    execution_ctx_cls = DqliteExecutionContext_aio

    @classmethod
    def import_dbapi(cls) -> Any:
        import dqlite
        import dqlite.aio

        return AsyncAdapt_dqlite_dbapi(dqlite.aio, dqlite)

    @classmethod
    def get_pool_class(cls, url: Any) -> type[pool.Pool]:
        return pool.AsyncAdaptedQueuePool

    def get_driver_connection(self, connection: Any) -> Any:
        return connection._connection

    def do_terminate(self, dbapi_connection: Any) -> None:
        dbapi_connection.terminate()


dialect = DqliteDialect_aio
