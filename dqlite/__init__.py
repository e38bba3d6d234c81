"""dqlite: a compiled DB-API 2.0 (PEP 249) driver for dqlite clusters.

    import dqlite

    conn = dqlite.connect(["127.0.0.1:9001", "127.0.0.1:9002"], "app")
    with conn:
        conn.execute("CREATE TABLE IF NOT EXISTS kv (k TEXT PRIMARY KEY, v BLOB)")
        conn.execute("INSERT INTO kv VALUES (?, ?)", ("a", b"1"))
    print(conn.execute("SELECT k, v FROM kv").fetchall())

The driver finds the cluster's leader through any of the given nodes and
follows it.  Hot paths (framing, row decoding, parameter encoding) are
compiled (``dqlite._protocol``); the API is plain Python.
"""

from dqlite.connection import Connection, Cursor, connect
from dqlite.exceptions import (
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
from dqlite.rows import Row
from dqlite.types import (
    BINARY,
    DATETIME,
    NUMBER,
    ROWID,
    STRING,
    Binary,
    Date,
    DateFromTicks,
    Time,
    TimeFromTicks,
    Timestamp,
    TimestampFromTicks,
)

__version__ = "0.1.0"

#: PEP 249 module globals.
apilevel = "2.0"
threadsafety = 1  # threads may share the module, not connections
paramstyle = "qmark"

__all__ = [
    "apilevel", "threadsafety", "paramstyle", "connect", "Connection", "Cursor",
    "Warning", "Error", "InterfaceError", "ProtocolError", "DatabaseError", "DataError",
    "OperationalError", "ConnectionLostError", "TransactionLostError", "CommitOutcomeUnknownError",
    "IntegrityError", "InternalError", "ProgrammingError", "NotSupportedError",
    "Date", "Time", "Timestamp", "DateFromTicks", "TimeFromTicks", "TimestampFromTicks",
    "Binary", "STRING", "BINARY", "NUMBER", "DATETIME", "ROWID", "Row",
]
