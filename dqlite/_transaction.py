"""The transaction a connection has on the leader: one state, checked
transitions, and how its write lock is taken and waited for."""

from __future__ import annotations

import enum
import logging
import random
import time
from typing import Any

from dqlite.exceptions import InterfaceError, InternalError

log = logging.getLogger("dqlite")

#: How a transaction the driver begins by itself (PEP 249) takes the write lock.
#: AUTO: reads share a snapshot and take no lock; the first write takes the
#: lock, and if it cannot (another connection holds it, or committed since the
#: snapshot), the transaction starts again from that write once the lock is
#: free (see Session.execute).  DEFERRED: SQLite's BEGIN; such a first write
#: fails with "database is locked".  IMMEDIATE / EXCLUSIVE: the lock is taken
#: by the BEGIN, before the first statement.
TRANSACTION_MODES = ("AUTO", "DEFERRED", "IMMEDIATE", "EXCLUSIVE")


def check_transaction_mode(mode: Any) -> str:
    """``mode`` as one of TRANSACTION_MODES (any case), or InterfaceError."""
    upper = mode.upper() if isinstance(mode, str) else None
    if upper not in TRANSACTION_MODES:
        raise InterfaceError(
            f"transaction_mode must be one of {', '.join(TRANSACTION_MODES)}, not {mode!r}")
    return upper


class TxState(enum.Enum):
    """Where the connection's transaction stands on the leader."""

    #: No transaction.
    IDLE = "idle"
    #: A deferred BEGIN went out with the end of the last transaction (see
    #: Session._end), for the next statement; nothing ran in it.
    AHEAD = "begun ahead"
    #: The statement running now is the first of the transaction begun
    #: ahead, and is not answered yet: losing the connection loses nothing.
    FRESH = "fresh"
    #: Open; it ran queries and savepoints only: it holds a read snapshot, no lock.
    READING = "reading"
    #: Open; it wrote (or tried to), or its BEGIN took the write lock.
    WRITING = "writing"
    #: Lost with the connection, or rolled back by SQLite after an error;
    #: only ``rollback()`` (or a failing ``commit()``) clears it.
    LOST = "lost"

    # By identity, in C: Enum's own __hash__ hashes the name in Python, and
    # every transition looks its states up in _NEXT.
    __hash__ = object.__hash__


IDLE, AHEAD, FRESH, READING, WRITING, LOST = TxState

_NEXT: dict[TxState, frozenset[TxState]] = {
    IDLE: frozenset({READING, WRITING, LOST}),
    AHEAD: frozenset({FRESH, IDLE}),
    FRESH: frozenset({READING, WRITING, IDLE, LOST}),
    READING: frozenset({WRITING, AHEAD, IDLE, LOST}),
    WRITING: frozenset({IDLE, LOST}),
    LOST: frozenset({IDLE, WRITING}),
}


class Transaction:
    """The connection's transaction: its state (``TxState``) and what goes with it.

    Every change of state goes through ``_move``, which refuses a transition
    the table above does not allow: a bug in the session shows as an
    ``InternalError`` rather than as a transaction silently out of step with
    the server.
    """

    __slots__ = ("state", "implicit", "mode", "begin_sql", "begins_ahead", "savepoints",
                 "lost_reason", "server_open")

    def __init__(self, mode: str) -> None:
        self.state = IDLE
        #: The open (or last) transaction was begun by the driver (PEP 249), not by a BEGIN statement.
        self.implicit = False
        #: AUTO: the savepoints made while the transaction only read, made
        #: again when it starts over (Session._restart_transaction).
        self.savepoints: list[str] = []
        #: Why the transaction was lost (LOST).
        self.lost_reason = ""
        #: LOST: the server still holds an (empty) transaction of this connection.
        self.server_open = False
        self.set_mode(mode)

    def set_mode(self, mode: str) -> None:
        mode = check_transaction_mode(mode)
        self.mode = mode
        #: The implicit BEGIN.
        self.begin_sql = "BEGIN" if mode in ("AUTO", "DEFERRED") else f"BEGIN {mode}"
        # A deferred BEGIN takes no lock and no snapshot: it may go out ahead,
        # with the end of the transaction before (Session._end).  A
        # BEGIN that takes the lock must wait for the statement it is for.
        self.begins_ahead = mode in ("AUTO", "DEFERRED")

    def __repr__(self) -> str:
        return f"<Transaction {self.state.value} mode={self.mode}>"

    def _move(self, to: TxState, *, only_from: TxState | None = None) -> None:
        if to not in _NEXT[self.state] or (only_from is not None and self.state is not only_from):
            raise InternalError(f"dqlite driver bug: transaction state {self.state.value} -> {to.value}")
        self.state = to

    # -- questions ---------------------------------------------------------

    @property
    def is_open(self) -> bool:
        """A transaction with statements in it is open (``in_transaction``)."""
        state = self.state  # (compared by identity: an enum member hashes in Python)
        return (state is READING or state is WRITING or state is FRESH
                or (state is LOST and self.server_open))

    def restartable(self, autocommit: bool) -> bool:
        """AUTO mode, and the transaction the next statement runs in is one
        the driver began and has run nothing but queries and savepoints so
        far, or has yet to begin: starting it over loses nothing."""
        if self.mode != "AUTO" or autocommit:
            return False
        state = self.state
        return state is IDLE or state is AHEAD or (state is READING and self.implicit)

    # -- transitions -------------------------------------------------------

    def begun(self, *, implicit: bool, locks: bool = False) -> None:
        """A BEGIN took: the driver's own (``implicit``), or a BEGIN statement.
        ``locks``: it took the write lock (IMMEDIATE, EXCLUSIVE), which
        ``commit()`` must see released."""
        self._move(WRITING if locks or (implicit and not self.begins_ahead) else READING)
        self.implicit = implicit
        self.savepoints.clear()

    def join_ahead(self) -> None:
        """The next statement runs in the transaction begun ahead."""
        self._move(FRESH)
        self.implicit = True
        self.savepoints.clear()

    def drop_ahead(self) -> None:
        """The transaction begun ahead is gone (its BEGIN failed, or it was rolled back)."""
        self._move(IDLE)

    def statement_ran(self, writes: bool) -> None:
        """A statement was answered (or refused) in the open transaction.

        A write that failed may still hold the write lock: it counts.
        Outside a transaction there is nothing to track.
        """
        state = self.state
        if state is FRESH:
            self._move(WRITING if writes else READING)
        elif state is READING and writes:
            self._move(WRITING)

    def ended(self) -> None:
        """COMMIT or ROLLBACK ended the transaction."""
        if self.state is not IDLE:
            self._move(IDLE)

    def ended_read_only(self, begin_ahead: bool) -> None:
        """The read-only transaction ended, and maybe a new one was begun ahead."""
        self._move(AHEAD if begin_ahead else IDLE, only_from=READING)

    def lose(self, reason: str, *, server_open: bool = False) -> None:
        """The transaction is lost; ``server_open``: the server holds an empty one of ours."""
        self._move(LOST)
        self.lost_reason = reason
        self.server_open = server_open

    def connection_lost(self) -> bool:
        """The server connection is gone, and its transaction with it.

        True when that loses a transaction with statements in it (the caller
        calls ``lose``); a transaction begun ahead, or whose first statement
        was not answered, had nothing in it.
        """
        state = self.state
        if state is AHEAD or state is FRESH:
            self._move(IDLE)
            return False
        self.server_open = False
        return state is READING or state is WRITING

    def clear_lost(self) -> None:
        """``commit()`` or ``rollback()`` reported the loss: the connection
        goes on, in the empty transaction the server may still hold."""
        if self.server_open:
            self._move(WRITING)  # its end gets a round trip, like any that may hold a lock
            self.server_open = False
        else:
            self._move(IDLE)

    def reset(self) -> None:
        """The connection was closed: nothing is left on any server."""
        self.state = IDLE
        self.server_open = False


# Waits between attempts of a statement that found the database locked, in
# seconds, then the last one repeated; each is drawn from 50% to 150% of its
# step, so that waiters do not retry in step.  A dqlite server answers
# SQLITE_BUSY at once, so the waiter polls: short steps let the lock pass on
# soon after a commit, and keep a waiter among many from being starved by
# the ones that retry more often.
_BUSY_DELAYS = (0.0005, 0.001, 0.002, 0.005, 0.01)


class LockWait:
    """The wait of a statement for the write lock another connection holds:
    like sqlite3's ``timeout``, up to ``busy_timeout`` seconds of real time."""

    __slots__ = ("timeout", "deadline")

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.deadline = 0.0

    def next_delay(self, attempt: int) -> float | None:
        """How long to sleep before attempt ``attempt + 1``; None once the time is up."""
        now = time.monotonic()
        if attempt == 0:
            self.deadline = now + self.timeout
        left = self.deadline - now
        if left <= 0:
            return None
        step = _BUSY_DELAYS[min(attempt, len(_BUSY_DELAYS) - 1)]
        delay = min(step * (0.5 + random.random()), left)
        log.debug("database is locked (attempt %d, %.3f s left): running it again in %.4f s",
                  attempt + 1, left, delay)
        return delay
