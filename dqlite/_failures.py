"""How the session tells failures apart: what ends the connection, what a
server's refusal means, and the exception the application gets."""

from __future__ import annotations

import enum
from typing import Any

from dqlite._io import Op
from dqlite._sql import QUERY as _QUERY
from dqlite.exceptions import (
    LEADERSHIP_LOST_CODES,
    NOT_LEADER_CODES,
    CommitOutcomeUnknownError,
    ConnectionLostError,
    Error,
    ProtocolError,
    TransactionLostError,
)

SQLITE_ERROR = 1
SQLITE_BUSY = 5  # exactly: not SQLITE_BUSY_SNAPSHOT (517), which waiting cannot cure
# Codes of a write that found the lock taken (SQLITE_BUSY) or its snapshot
# stale (SQLITE_BUSY_SNAPSHOT): nothing of the statement ran.
LOCKED_CODES = frozenset({5, 517})
# Primary result codes after which SQLite may have rolled a transaction back
# by itself (https://www.sqlite.org/lang_transaction.html, "Response To Errors").
MAY_AUTO_ROLLBACK = frozenset({4, 5, 7, 9, 10, 11, 13})


class ServerSays(enum.Enum):
    """The server messages the driver acts on, each with its code and text.

    ``(code, text, how)``: ``how`` is ``"is"`` (the whole message),
    ``"starts"`` or ``"has"`` (a part); code None matches any code.
    """

    #: BEGIN inside a transaction (SQLite: "cannot start a transaction within a transaction").
    ALREADY_IN_TRANSACTION = (None, "within a transaction", "has")
    #: COMMIT or ROLLBACK with none open ("cannot commit - no transaction is active").
    NO_TRANSACTION = (SQLITE_ERROR, "no transaction is active", "has")
    #: QUERY of a statement that yields no rows (a writing PRAGMA, protocol.md §1.6).
    NO_ROWS_TO_QUERY = (SQLITE_ERROR, "not an error", "is")
    #: PREPARE naming an object the server does not know (yet: see Session._prepare).
    NO_SUCH_OBJECT = (SQLITE_ERROR, "no such", "starts")

    def matches(self, exc: Error) -> bool:
        code, text, how = self.value
        if code is not None and exc.code != code:
            return False
        message = str(exc)
        if how == "is":
            return message == text
        if how == "starts":
            return message.startswith(text)
        return text in message


def is_connection_failure(exc: Error) -> bool:
    """``exc`` ends the connection: the socket is closed and the server's state forgotten."""
    code = exc.code
    return (
        isinstance(exc, (ConnectionLostError, ProtocolError))
        or code in NOT_LEADER_CODES
        or code in LEADERSHIP_LOST_CODES
        # 12: "no database opened" / "no statement with the given id": the
        # server dropped this session's state when leadership moved.
        or code == 12
    )


def refused_before_running(exc: Error, kind: str) -> bool:
    """``exc`` is the answer of a node that does not lead (any more), and the
    statement (of ``_sql`` kind ``kind``) did not run: "not leader", or code
    12, the session's state dropped when leadership moved.  "Leadership lost"
    can come after a write was replicated: only a query is known not to
    have changed anything then."""
    code = exc.code
    return (code in NOT_LEADER_CODES or code == 12
            or (code in LEADERSHIP_LOST_CODES and kind == _QUERY))


def lost_error(exc: Error, *, writing: bool, in_transaction: bool) -> Error:
    """What the application gets when ``exc`` ended the connection.

    ``writing``: a request that commits something (COMMIT, or a write in
    autocommit mode) was sent.  ``in_transaction``: a transaction with
    statements in it was open (it is lost).
    """
    code = exc.code
    message = str(exc)
    # A FAILURE answer means the request was refused before it ran, except
    # "leadership lost", which can come after the write was replicated.
    # No answer at all (socket error, timeout, bad bytes) tells nothing.
    outcome_unknown = code is None or code in LEADERSHIP_LOST_CODES
    if writing and outcome_unknown:
        return CommitOutcomeUnknownError(
            f"the outcome of the commit is unknown ({message}); it was not retried",
            code=code, server_message=exc.server_message)
    if in_transaction:
        return TransactionLostError(
            f"the transaction was lost ({message}); nothing of it was committed. "
            f"Call rollback() before using the connection again",
            code=code, server_message=exc.server_message)
    if isinstance(exc, ProtocolError):
        return exc
    return ConnectionLostError(message, code=code, server_message=exc.server_message)


def answer_or_refusal(read: Op) -> Op:
    """Run ``read`` (the reading of one answer): its value, or the server's
    refusal (an ``Error``) returned rather than raised.

    For answers whose refusal changes nothing (the end of a read-only
    transaction, a FINALIZE of a statement the server dropped) or is looked
    at (``ServerSays``).  A lost connection or bad bytes still raise.
    """
    try:
        value: Any = yield from read
    except (ConnectionLostError, ProtocolError):
        raise
    except Error as exc:
        return exc
    return value
