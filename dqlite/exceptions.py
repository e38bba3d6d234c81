"""The PEP 249 exception hierarchy, and the mapping from server failures to it.

The classes follow CPython's ``sqlite3`` so code written for it catches the same
things here: the subclass is chosen from the primary SQLite result code (the low
byte of the extended code the server sends), exactly as ``sqlite3`` does.
"""

from __future__ import annotations

__all__ = [
    "Warning",
    "Error",
    "InterfaceError",
    "ProtocolError",
    "DatabaseError",
    "DataError",
    "OperationalError",
    "ConnectionLostError",
    "TransactionLostError",
    "CommitOutcomeUnknownError",
    "IntegrityError",
    "InternalError",
    "ProgrammingError",
    "NotSupportedError",
    "error_from_failure",
]


class Warning(Exception):  # noqa: A001 - the name is fixed by PEP 249
    """Important warnings, e.g. data truncation (PEP 249)."""


class Error(Exception):
    """Base class of every error this driver raises (PEP 249).

    Errors that come from the server carry its result code and message:
    ``code`` and ``sqlite_errorcode`` are the (extended) code as sent,
    ``sqlite_errorname`` its symbolic name, and ``server_message`` the text.
    """

    code: int | None
    sqlite_errorcode: int | None
    sqlite_errorname: str | None
    server_message: str | None

    def __init__(self, *args: object, code: int | None = None, server_message: str | None = None) -> None:
        super().__init__(*args)
        self.code = code
        self.sqlite_errorcode = code
        self.sqlite_errorname = error_name(code) if code is not None else None
        self.server_message = server_message


class InterfaceError(Error):
    """A problem of the driver or of what it was given, not of the database."""


class ProtocolError(InterfaceError):
    """The server sent bytes that do not follow the dqlite wire protocol.

    The connection it came from is closed: what follows on the socket cannot
    be trusted.
    """


class DatabaseError(Error):
    """An error related to the database."""


class DataError(DatabaseError):
    """A value that cannot be processed: out of range, not representable on the wire."""


class OperationalError(DatabaseError):
    """An error of the database's operation: lost leader, lost connection, lock, timeout."""


class ConnectionLostError(OperationalError):
    """The connection to the leader is gone (socket error, timeout, or leadership moved).

    Nothing in flight was committed: the statement that failed was not applied.
    The connection reconnects to the current leader on its next use.
    """


class TransactionLostError(ConnectionLostError):
    """The open transaction was lost with the leader; none of it was committed.

    The connection refuses further statements until ``rollback()`` is called,
    so a half-done transaction can never be continued by accident.
    """


class CommitOutcomeUnknownError(ConnectionLostError):
    """A COMMIT (or an autocommit write) was sent, but its outcome is unknown.

    The write may or may not have been applied; it is never retried by the
    driver.  Check the data on the new leader before deciding what to do.
    """


class IntegrityError(DatabaseError):
    """A constraint was violated (UNIQUE, NOT NULL, FOREIGN KEY, CHECK, ...)."""


class InternalError(DatabaseError):
    """The database hit an internal error (a statement handle that is gone, ...)."""


class ProgrammingError(DatabaseError):
    """A mistake in how the API was used: bad SQL, wrong parameters, closed objects."""


class NotSupportedError(DatabaseError):
    """Something this server or driver does not support (and will not pretend to)."""


# Primary SQLite result codes and their symbolic names.
_PRIMARY_NAMES = {
    0: "SQLITE_OK", 1: "SQLITE_ERROR", 2: "SQLITE_INTERNAL", 3: "SQLITE_PERM", 4: "SQLITE_ABORT",
    5: "SQLITE_BUSY", 6: "SQLITE_LOCKED", 7: "SQLITE_NOMEM", 8: "SQLITE_READONLY",
    9: "SQLITE_INTERRUPT", 10: "SQLITE_IOERR", 11: "SQLITE_CORRUPT", 12: "SQLITE_NOTFOUND",
    13: "SQLITE_FULL", 14: "SQLITE_CANTOPEN", 15: "SQLITE_PROTOCOL", 16: "SQLITE_EMPTY",
    17: "SQLITE_SCHEMA", 18: "SQLITE_TOOBIG", 19: "SQLITE_CONSTRAINT", 20: "SQLITE_MISMATCH",
    21: "SQLITE_MISUSE", 22: "SQLITE_NOLFS", 23: "SQLITE_AUTH", 24: "SQLITE_FORMAT",
    25: "SQLITE_RANGE", 26: "SQLITE_NOTADB", 27: "SQLITE_NOTICE", 28: "SQLITE_WARNING",
    100: "SQLITE_ROW", 101: "SQLITE_DONE",
}

# Extended codes a dqlite client meets (SQLite's own, and dqlite's raft-related IOERRs).
_EXTENDED_NAMES = {
    261: "SQLITE_BUSY_RECOVERY", 517: "SQLITE_BUSY_SNAPSHOT", 773: "SQLITE_BUSY_TIMEOUT",
    266: "SQLITE_IOERR_READ", 522: "SQLITE_IOERR_SHORT_READ", 778: "SQLITE_IOERR_WRITE",
    10250: "SQLITE_IOERR_NOT_LEADER", 10506: "SQLITE_IOERR_LEADERSHIP_LOST",
    8202: "SQLITE_IOERR_NOT_LEADER", 8458: "SQLITE_IOERR_LEADERSHIP_LOST",  # older numbering
    275: "SQLITE_CONSTRAINT_CHECK", 531: "SQLITE_CONSTRAINT_COMMITHOOK",
    787: "SQLITE_CONSTRAINT_FOREIGNKEY", 1043: "SQLITE_CONSTRAINT_FUNCTION",
    1299: "SQLITE_CONSTRAINT_NOTNULL", 1555: "SQLITE_CONSTRAINT_PRIMARYKEY",
    1811: "SQLITE_CONSTRAINT_TRIGGER", 2067: "SQLITE_CONSTRAINT_UNIQUE",
    2323: "SQLITE_CONSTRAINT_VTAB", 2579: "SQLITE_CONSTRAINT_ROWID",
    2835: "SQLITE_CONSTRAINT_PINNED", 3091: "SQLITE_CONSTRAINT_DATATYPE",
    264: "SQLITE_READONLY_RECOVERY", 520: "SQLITE_READONLY_CANTLOCK",
    516: "SQLITE_ABORT_ROLLBACK", 262: "SQLITE_LOCKED_SHAREDCACHE",
    1001: "DQLITE_PROTO", 1005: "DQLITE_PARSE", 1006: "DQLITE_OVERFLOW", 1007: "DQLITE_EOM",
    1008: "DQLITE_INTERNAL", 1009: "DQLITE_NOTFOUND",
}

# dqlite's own (non-SQLite) codes: problems with what the driver sent.
_DQLITE_CODES = range(1001, 1010)

NOT_LEADER_CODES = frozenset({10250, 8202})
LEADERSHIP_LOST_CODES = frozenset({10506, 8458})


def error_name(code: int) -> str:
    """The symbolic name of a result code, e.g. 2067 -> ``SQLITE_CONSTRAINT_UNIQUE``."""
    name = _EXTENDED_NAMES.get(code)
    if name is None:
        name = _PRIMARY_NAMES.get(code & 0xFF, f"SQLITE_UNKNOWN_{code}")
    return name


_BY_PRIMARY: dict[int, type[DatabaseError] | type[InterfaceError]] = {
    2: InternalError, 12: InternalError,
    1: OperationalError, 3: OperationalError, 4: OperationalError, 5: OperationalError,
    6: OperationalError, 7: OperationalError, 8: OperationalError, 9: OperationalError,
    10: OperationalError, 13: OperationalError, 14: OperationalError, 15: OperationalError,
    16: OperationalError, 17: OperationalError, 23: OperationalError,
    18: DataError, 19: IntegrityError, 20: IntegrityError,
    21: InterfaceError, 25: InterfaceError,
    11: DatabaseError, 26: DatabaseError,
}


def error_from_failure(code: int, message: str) -> Error:
    """The exception for a FAILURE response, chosen as CPython's sqlite3 chooses it."""
    if code in _DQLITE_CODES:
        cls: type[Error] = InterfaceError
    elif code in NOT_LEADER_CODES or code in LEADERSHIP_LOST_CODES:
        cls = ConnectionLostError
    else:
        cls = _BY_PRIMARY.get(code & 0xFF, DatabaseError)
    return cls(message, code=code, server_message=message)
