"""The session's parts on their own, no socket: the transaction's state
machine, the table of server messages, the statement cache."""

from __future__ import annotations

import pytest

from dqlite._failures import ServerSays, is_connection_failure, lost_error
from dqlite._protocol import Encoder
from dqlite._statements import Prepared, StatementCache
from dqlite._transaction import AHEAD, FRESH, IDLE, LOST, READING, WRITING, Transaction, TxState
from dqlite.exceptions import (
    CommitOutcomeUnknownError,
    ConnectionLostError,
    InterfaceError,
    InternalError,
    OperationalError,
    ProtocolError,
    TransactionLostError,
    error_from_failure,
)

pytestmark = [pytest.mark.timeout(30), pytest.mark.server_independent]


# -- the transaction ------------------------------------------------------------

def test_a_pep249_transaction_reads_then_writes_then_ends():
    tx = Transaction("AUTO")
    assert tx.state is IDLE and not tx.is_open
    tx.begun(implicit=True)
    assert tx.state is READING and tx.is_open and tx.implicit
    tx.statement_ran(writes=False)
    assert tx.state is READING
    tx.statement_ran(writes=True)
    assert tx.state is WRITING
    tx.ended()
    assert tx.state is IDLE


@pytest.mark.parametrize("mode, state", [("AUTO", READING), ("DEFERRED", READING),
                                         ("IMMEDIATE", WRITING), ("EXCLUSIVE", WRITING)])
def test_the_implicit_begin_of_a_locking_mode_counts_as_writing(mode, state):
    tx = Transaction(mode)
    tx.begun(implicit=True)
    assert tx.state is state
    assert tx.begin_sql == ("BEGIN" if state is READING else f"BEGIN {mode}")


def test_an_explicit_begin_immediate_counts_as_writing_and_is_never_started_over():
    tx = Transaction("AUTO")
    tx.begun(implicit=False, locks=True)
    assert tx.state is WRITING and not tx.implicit
    assert not tx.restartable(autocommit=False)


def test_only_a_driver_begun_transaction_that_only_read_may_start_over():
    tx = Transaction("AUTO")
    assert tx.restartable(autocommit=False)  # not begun yet
    assert not tx.restartable(autocommit=True)
    tx.begun(implicit=True)
    assert tx.restartable(autocommit=False)
    tx.statement_ran(writes=True)
    assert not tx.restartable(autocommit=False)
    explicit = Transaction("AUTO")
    explicit.begun(implicit=False)
    assert not explicit.restartable(autocommit=False)
    assert not Transaction("DEFERRED").restartable(autocommit=False)


def test_a_transaction_begun_ahead_is_joined_by_the_next_statement():
    tx = Transaction("AUTO")
    tx.begun(implicit=True)
    tx.ended_read_only(begin_ahead=True)
    assert tx.state is AHEAD and not tx.is_open
    tx.join_ahead()
    assert tx.state is FRESH and tx.is_open
    tx.statement_ran(writes=False)
    assert tx.state is READING


def test_losing_the_connection_loses_only_a_transaction_with_statements_in_it():
    for setup, lost in [(lambda tx: None, False),
                        (lambda tx: (tx.begun(implicit=True), tx.ended_read_only(begin_ahead=True)), False),
                        (lambda tx: (tx.begun(implicit=True), tx.ended_read_only(True), tx.join_ahead()), False),
                        (lambda tx: tx.begun(implicit=True), True)]:
        tx = Transaction("AUTO")
        setup(tx)
        assert tx.connection_lost() is lost
        if not lost:
            assert tx.state is IDLE


def test_a_lost_transaction_stays_lost_until_cleared():
    tx = Transaction("AUTO")
    tx.begun(implicit=True)
    tx.lose("the leader died")
    assert tx.state is LOST and not tx.is_open and tx.lost_reason == "the leader died"
    tx.clear_lost()
    assert tx.state is IDLE
    # Rolled back by SQLite, with the probe's empty transaction open on the server:
    tx.begun(implicit=True)
    tx.lose("rolled back", server_open=True)
    assert tx.is_open
    tx.clear_lost()
    assert tx.state is WRITING  # its end gets a round trip


@pytest.mark.parametrize("move", [
    lambda tx: tx.join_ahead(),                          # IDLE -> FRESH: nothing was begun ahead
    lambda tx: tx.drop_ahead(),                          # IDLE -> IDLE through drop_ahead
    lambda tx: tx.ended_read_only(begin_ahead=True),     # IDLE -> AHEAD: nothing ended
    lambda tx: (tx.begun(implicit=True), tx.begun(implicit=True)),  # BEGIN inside a transaction
    lambda tx: (tx.begun(implicit=True), tx.statement_ran(True), tx.ended_read_only(False)),  # it wrote
], ids=["join-nothing", "drop-nothing", "end-nothing", "begin-twice", "end-a-write-as-read-only"])
def test_a_transition_the_table_forbids_is_a_driver_bug(move):
    with pytest.raises(InternalError, match="dqlite driver bug: transaction state"):
        move(Transaction("AUTO"))


def test_every_state_has_its_transitions():
    from dqlite._transaction import _NEXT

    assert set(_NEXT) == set(TxState)


def test_a_bad_transaction_mode_is_refused():
    with pytest.raises(InterfaceError, match="transaction_mode must be one of"):
        Transaction("LAZY")
    assert Transaction("immediate").mode == "IMMEDIATE"


# -- failures --------------------------------------------------------------------

@pytest.mark.parametrize("says, code, message, expected", [
    (ServerSays.ALREADY_IN_TRANSACTION, 1, "cannot start a transaction within a transaction", True),
    (ServerSays.NO_TRANSACTION, 1, "cannot commit - no transaction is active", True),
    (ServerSays.NO_TRANSACTION, 5, "cannot commit - no transaction is active", False),
    (ServerSays.NO_ROWS_TO_QUERY, 1, "not an error", True),
    (ServerSays.NO_ROWS_TO_QUERY, 1, "not an error at all", False),
    (ServerSays.NO_SUCH_OBJECT, 1, "no such table: t", True),
    (ServerSays.NO_SUCH_OBJECT, 1, "table t: no such column", False),
])
def test_server_messages_are_matched_by_code_and_text(says, code, message, expected):
    assert says.matches(error_from_failure(code, message)) is expected


def test_what_ends_the_connection():
    assert is_connection_failure(ConnectionLostError("reset"))
    assert is_connection_failure(ProtocolError("bad bytes"))
    assert is_connection_failure(error_from_failure(10250, "not leader"))
    assert is_connection_failure(error_from_failure(10506, "leadership lost"))
    assert not is_connection_failure(error_from_failure(19, "UNIQUE constraint failed"))
    assert not is_connection_failure(error_from_failure(5, "database is locked"))


def test_the_error_for_a_lost_connection():
    silent = ConnectionLostError("timed out")
    refused = error_from_failure(10250, "not leader")
    assert type(lost_error(silent, writing=True, in_transaction=True)) is CommitOutcomeUnknownError
    # A refusal means the request did not run: the commit did not happen.
    assert type(lost_error(refused, writing=True, in_transaction=True)) is TransactionLostError
    assert type(lost_error(refused, writing=True, in_transaction=False)) is ConnectionLostError
    assert type(lost_error(error_from_failure(10506, "leadership lost"), writing=True,
                           in_transaction=False)) is CommitOutcomeUnknownError
    assert type(lost_error(silent, writing=False, in_transaction=True)) is TransactionLostError
    assert isinstance(lost_error(ProtocolError("bad"), writing=False, in_transaction=False), ProtocolError)
    assert isinstance(lost_error(silent, writing=False, in_transaction=False), OperationalError)


# -- the statement cache ------------------------------------------------------

def test_the_cache_evicts_the_least_recently_used_and_finalizes_it_with_the_next_request():
    cache = StatementCache(2)
    info = cache.classify("SELECT 1")
    for stmt_id, sql in enumerate(["a", "b"]):
        cache.add(sql, Prepared(stmt_id, 0, info))
    assert cache.get("a") is not None  # "b" is now the least recently used
    cache.add("c", Prepared(2, 0, info))
    assert cache.get("b") is None and cache.to_finalize == [1]
    encoder = Encoder()
    encoder.exec_sql("SELECT 1")
    encoder.clear()
    count, ids = cache.encode_finalizes(encoder)
    assert (count, ids, cache.to_finalize) == (1, [1], [])
    cache.unencode(encoder, ids)  # the request was dropped: finalized with the next one
    assert cache.to_finalize == [1] and encoder.take() == b""
