"""The session's logic on scripted bytes: no node, no socket (tests/scripted.py).

Each test runs session operations against a script of server answers
(tests/wirebytes.py) and checks what went out, in what order and grouped
in which writes, and what the operation returned or raised.
"""

from __future__ import annotations

import pytest

import dqlite
from dqlite.nodestore import NodeStore

try:
    from scripted import Arrived, Lost, Scripted, fetch_all, make_session, new_cursor
    from wirebytes import (
        INTEGER, TEXT, db_message, empty_message, failure_message, result_message, rows_message, server_message,
        servers_message, stmt_message,
    )
except ImportError:  # tests/ imported as a package
    from tests.scripted import (  # type: ignore[no-redef]
        Arrived, Lost, Scripted, fetch_all, make_session, new_cursor,
    )
    from tests.wirebytes import (  # type: ignore[no-redef]
        INTEGER, TEXT, db_message, empty_message, failure_message, result_message, rows_message, server_message,
        servers_message, stmt_message,
    )

pytestmark = [pytest.mark.timeout(10), pytest.mark.server_independent]

A, B, C = "10.0.0.1:9001", "10.0.0.2:9001", "10.0.0.3:9001"
CONNECT_A = [("CONNECT", A), ("HANDSHAKE",), ("LEADER",), ("OPEN", "db"), "CONNECTED"]
INSERT = "INSERT INTO t (x) VALUES (?)"


def connected(**options):
    """A session connected to A (the leader), and its scripted shell with the connect's log cleared."""
    session = make_session(A, **options)
    server = Scripted(session, [server_message(1, A) + db_message()])
    server.run(session.connect())
    assert server.log == CONNECT_A
    server.log.clear()
    server.writes.clear()
    return session, server


# -- connecting ----------------------------------------------------------------

def test_connect_sends_handshake_leader_open_and_cluster_in_one_write():
    store = NodeStore()
    session = make_session(A, node_store=store)
    members = [(1, A, 0), (2, B, 0), (3, C, 1)]
    server = Scripted(session, [server_message(1, A) + db_message() + servers_message(members)])

    server.run(session.connect())

    assert [w.requests for w in server.writes] == [[("HANDSHAKE",), ("LEADER",), ("OPEN", "db"), ("CLUSTER", 1)]]
    assert server.log == [("CONNECT", A), ("HANDSHAKE",), ("LEADER",), ("OPEN", "db"), ("CLUSTER", 1), "CONNECTED"]
    assert session.connected_to == A
    assert sorted(store.members([A])) == [A, B, C]


def test_connect_without_a_node_store_asks_no_cluster_members():
    session = make_session(A)
    server = Scripted(session, [server_message(1, A) + db_message()])
    server.run(session.connect())
    assert [w.requests for w in server.writes] == [[("HANDSHAKE",), ("LEADER",), ("OPEN", "db")]]
    assert session.connected_to == A


def test_connect_follows_a_redirect_to_the_leader():
    session = make_session(A)
    server = Scripted(session, [
        server_message(2, B) + db_message(),   # A names B; A's OPEN answer is never read
        server_message(2, B) + db_message(),   # B names itself
    ])

    server.run(session.connect())

    assert server.log == [
        ("CONNECT", A), ("HANDSHAKE",), ("LEADER",), ("OPEN", "db"), "CLOSE",
        ("CONNECT", B), ("HANDSHAKE",), ("LEADER",), ("OPEN", "db"), "CONNECTED",
    ]
    assert session.connected_to == B


def test_connect_with_several_addresses_asks_them_all_then_opens_on_the_leader():
    session = make_session([A, B])
    server = Scripted(session, [server_message(3, C) + db_message()], leaders={A: C, B: "error: refused"})

    server.run(session.connect())

    assert server.log == [("FIND_LEADER", (A, B)),
                          ("CONNECT", C), ("HANDSHAKE",), ("LEADER",), ("OPEN", "db"), "CONNECTED"]
    assert session.connected_to == C


# -- statements ----------------------------------------------------------------

def test_a_cached_query_is_prepared_once_then_only_queried():
    session, server = connected(autocommit=True)
    cursor = new_cursor(session)
    sql = "SELECT x FROM t WHERE id = ?"
    server.answer(stmt_message(4, 1), rows_message(["x"], [[(TEXT, "a")]]), rows_message(["x"], [[(TEXT, "b")]]))

    cursor.run(server, session.execute(sql, (7,)))
    first = fetch_all(server, cursor)
    cursor.run(server, session.execute(sql, (8,)))
    second = fetch_all(server, cursor)

    assert [w.requests for w in server.writes] == [
        [("PREPARE", sql)],
        [("QUERY", 4, [(INTEGER, 7)])],
        [("QUERY", 4, [(INTEGER, 8)])],
    ]
    assert (first, second) == ([("a",)], [("b",)])
    assert cursor.rowcount == -1 and cursor.description[0][0] == "x"
    assert not server.script


def test_the_first_statement_begins_a_transaction_and_commit_ends_it():
    """PEP 249 (autocommit=False): BEGIN travels with the first statement."""
    session, server = connected()
    cursor = new_cursor(session)
    server.answer(stmt_message(1, 1), result_message() + result_message(10, 1), result_message())

    cursor.run(server, session.execute(INSERT, (5,)))
    assert session.in_transaction
    assert (cursor.rowcount, cursor.lastrowid) == (1, 10)
    server.run(session.commit())

    assert [w.requests for w in server.writes] == [
        [("PREPARE", INSERT)],
        [("EXEC_SQL", "BEGIN"), ("EXEC", 1, [(INTEGER, 5)])],
        [("EXEC_SQL", "COMMIT")],
    ]
    assert not session.in_transaction
    assert not server.script


def test_autocommit_sends_no_begin_and_commit_sends_nothing():
    session, server = connected(autocommit=True)
    cursor = new_cursor(session)
    server.answer(stmt_message(1, 1), result_message(3, 1))

    cursor.run(server, session.execute(INSERT, (5,)))
    server.run(session.commit())

    assert server.requests == [("PREPARE", INSERT), ("EXEC", 1, [(INTEGER, 5)])]
    assert not session.in_transaction


@pytest.mark.parametrize("code, message, error", [
    (2067, "UNIQUE constraint failed: t.x", dqlite.IntegrityError),
    (19, "constraint failed", dqlite.IntegrityError),
    (1, "table t has no column named y", dqlite.OperationalError),
    (18, "string or blob too big", dqlite.DataError),
])
def test_a_failure_answer_raises_the_pep249_error_with_the_server_code(code, message, error):
    session, server = connected(autocommit=True)
    cursor = new_cursor(session)
    server.answer(stmt_message(1, 1), failure_message(code, message))

    with pytest.raises(error) as info:
        cursor.run(server, session.execute(INSERT, (5,)))

    assert type(info.value) is error
    assert (info.value.code, info.value.server_message) == (code, message)
    assert server.requests == [("PREPARE", INSERT), ("EXEC", 1, [(INTEGER, 5)])]
    assert "CLOSE" not in server.log and session.connected_to == A  # the connection stays


def test_no_such_table_at_prepare_runs_a_barrier_and_prepares_once_more():
    """A new 1.11 leader prepares before applying the log: the driver makes it catch up, once."""
    session, server = connected(autocommit=True)
    cursor = new_cursor(session)
    sql = "SELECT x FROM t"
    server.answer(failure_message(1, "no such table: t"), rows_message(["1"], [[(INTEGER, 1)]]),
                  failure_message(1, "no such table: t"))

    with pytest.raises(dqlite.OperationalError, match="no such table: t"):
        cursor.run(server, session.execute(sql, ()))

    assert server.requests == [("PREPARE", sql), ("QUERY_SQL", "SELECT 1"), ("PREPARE", sql)]


# -- failures that end the connection -----------------------------------------

def test_not_leader_on_a_write_in_autocommit_runs_it_again_on_the_leader():
    """Refused before it ran: nothing is lost, so the statement runs on the leader found anew."""
    session, server = connected(autocommit=True)
    cursor = new_cursor(session)
    server.answer(stmt_message(1, 1), failure_message(10250, "not leader"),
                  server_message(2, B) + db_message(),  # A names B
                  server_message(2, B) + db_message(), stmt_message(4, 1), result_message(3, 1))

    cursor.run(server, session.execute(INSERT, (5,)))

    assert server.log == [("PREPARE", INSERT), ("EXEC", 1, [(INTEGER, 5)]), "CLOSE",
                          ("CONNECT", A), ("HANDSHAKE",), ("LEADER",), ("OPEN", "db"), "CLOSE",
                          ("CONNECT", B), ("HANDSHAKE",), ("LEADER",), ("OPEN", "db"), "CONNECTED",
                          ("PREPARE", INSERT), ("EXEC", 4, [(INTEGER, 5)])]
    assert session.connected_to == B and cursor.lastrowid == 3 and not server.script


def test_not_leader_again_and_again_raises_connection_lost():
    session, server = connected(autocommit=True)
    cursor = new_cursor(session)
    server.answer(stmt_message(1, 1), failure_message(10250, "not leader"))
    for _ in range(3):
        server.answer(server_message(1, A) + db_message(), stmt_message(1, 1), failure_message(10250, "not leader"))

    with pytest.raises(dqlite.ConnectionLostError) as info:
        cursor.run(server, session.execute(INSERT, (5,)))

    # The outcome is known (not CommitOutcomeUnknownError).
    assert type(info.value) is dqlite.ConnectionLostError and info.value.code == 10250
    assert server.log.count(("EXEC", 1, [(INTEGER, 5)])) == 4
    assert server.log[-1] == "CLOSE" and session.connected_to is None and not server.script


def test_not_leader_inside_a_transaction_that_wrote_loses_it_and_is_not_retried():
    session, server = connected()
    cursor = new_cursor(session)
    server.answer(stmt_message(1, 1), result_message() + result_message(1, 1), failure_message(10250, "not leader"))
    cursor.run(server, session.execute(INSERT, (5,)))

    with pytest.raises(dqlite.TransactionLostError):
        cursor.run(server, session.execute(INSERT, (6,)))

    assert server.log[-2:] == [("EXEC", 1, [(INTEGER, 6)]), "CLOSE"] and not server.script


def test_a_commit_whose_connection_dies_is_of_unknown_outcome_and_never_retried():
    session, server = connected()
    cursor = new_cursor(session)
    server.answer(stmt_message(1, 1), result_message() + result_message(1, 1), Lost("connection reset by peer"))
    cursor.run(server, session.execute(INSERT, (5,)))

    with pytest.raises(dqlite.CommitOutcomeUnknownError, match="not retried"):
        server.run(session.commit())

    assert server.log[-3:] == [("EXEC_SQL", "COMMIT"), "LOST", "CLOSE"]
    assert server.requests.count(("EXEC_SQL", "COMMIT")) == 1
    assert not session.in_transaction and session.connected_to is None


def test_leadership_lost_at_commit_is_of_unknown_outcome_too():
    session, server = connected()
    cursor = new_cursor(session)
    server.answer(stmt_message(1, 1), result_message() + result_message(1, 1),
                  failure_message(10506, "leadership lost"))
    cursor.run(server, session.execute(INSERT, (5,)))

    with pytest.raises(dqlite.CommitOutcomeUnknownError) as info:
        server.run(session.commit())

    assert info.value.code == 10506
    assert server.log[-2:] == [("EXEC_SQL", "COMMIT"), "CLOSE"]
    assert server.requests.count(("EXEC_SQL", "COMMIT")) == 1


# -- waiting for the lock ------------------------------------------------------

def test_busy_on_a_write_in_autocommit_sleeps_then_sends_the_same_exec_again():
    session, server = connected(autocommit=True)
    cursor = new_cursor(session)
    server.answer(stmt_message(1, 1), failure_message(5, "database is locked"), result_message(9, 1))

    cursor.run(server, session.execute(INSERT, (5,)))

    exec_5 = ("EXEC", 1, [(INTEGER, 5)])
    assert server.log == [("PREPARE", INSERT), exec_5, "SLEEP", exec_5]
    assert 0 < server.sleeps[0] < 1
    assert (cursor.rowcount, cursor.lastrowid) == (1, 9)


def test_busy_snapshot_is_not_waited_for_in_autocommit():
    """517 (SQLITE_BUSY_SNAPSHOT): waiting cannot cure it."""
    session, server = connected(autocommit=True)
    cursor = new_cursor(session)
    server.answer(stmt_message(1, 1), failure_message(517, "database is locked"))

    with pytest.raises(dqlite.OperationalError) as info:
        cursor.run(server, session.execute(INSERT, (5,)))

    assert info.value.code == 517
    assert "SLEEP" not in server.log


# -- executemany ---------------------------------------------------------------

def test_executemany_with_a_failing_row_rolls_the_batch_back_to_its_savepoint():
    session, server = connected(autocommit=True)
    cursor = new_cursor(session)
    server.answer(
        stmt_message(2, 1),
        result_message(),                                                      # SAVEPOINT
        result_message(1, 1) + failure_message(2067, "UNIQUE constraint failed: t.x") + result_message(3, 1),
        result_message() + result_message(),                                   # ROLLBACK TO, RELEASE
    )

    with pytest.raises(dqlite.IntegrityError, match="UNIQUE") as info:
        cursor.run(server, session.executemany(INSERT, [(1,), (1,), (3,)]))

    assert [w.requests for w in server.writes] == [
        [("PREPARE", INSERT)],
        [("EXEC_SQL", "SAVEPOINT dqlite_executemany")],
        [("EXEC", 2, [(INTEGER, 1)]), ("EXEC", 2, [(INTEGER, 1)]), ("EXEC", 2, [(INTEGER, 3)])],
        [("EXEC_SQL", "ROLLBACK TO dqlite_executemany"), ("EXEC_SQL", "RELEASE dqlite_executemany")],
    ]
    assert any("parameter set 1" in note for note in info.value.__notes__)
    assert not server.script and session.connected_to == A


def test_executemany_releases_its_savepoint_and_sums_the_rowcount():
    session, server = connected(autocommit=True)
    cursor = new_cursor(session)
    server.answer(stmt_message(2, 1), result_message(), result_message(1, 1) + result_message(2, 1),
                  result_message())

    cursor.run(server, session.executemany(INSERT, [(1,), (2,)]))

    assert server.requests[-1] == ("EXEC_SQL", "RELEASE dqlite_executemany")
    assert cursor.rowcount == 2


def test_executemany_whose_first_row_finds_the_lock_taken_waits_and_runs_the_whole_batch_again():
    session, server = connected(autocommit=True)
    cursor = new_cursor(session)
    locked = failure_message(5, "database is locked")
    server.answer(stmt_message(2, 1), result_message(), locked + locked, result_message() + result_message(),
                  result_message(), result_message(1, 1) + result_message(2, 1), result_message())

    cursor.run(server, session.executemany(INSERT, iter([(1,), (2,)])))  # an iterator: replayed, not re-read

    rows = [("EXEC", 2, [(INTEGER, 1)]), ("EXEC", 2, [(INTEGER, 2)])]
    savepoint = [("EXEC_SQL", "SAVEPOINT dqlite_executemany")]
    assert [w.requests for w in server.writes] == [
        [("PREPARE", INSERT)], savepoint, rows,
        [("EXEC_SQL", "ROLLBACK TO dqlite_executemany"), ("EXEC_SQL", "RELEASE dqlite_executemany")],
        savepoint, rows, [("EXEC_SQL", "RELEASE dqlite_executemany")],
    ]
    assert server.log.count("SLEEP") == 1 and cursor.rowcount == 2
    assert not server.script



def test_executemany_refused_before_its_batch_began_runs_on_the_leader():
    """A node that no longer leads refuses the SAVEPOINT: no row ran, so the
    batch runs on the leader found anew (an iterator's rows taken once)."""
    session, server = connected(autocommit=True)
    cursor = new_cursor(session)
    server.answer(stmt_message(2, 1), failure_message(10250, "not leader"),
                  server_message(2, B) + db_message(),  # A names B
                  server_message(2, B) + db_message(), stmt_message(4, 1), result_message(),
                  result_message(1, 1) + result_message(2, 1), result_message())

    cursor.run(server, session.executemany(INSERT, iter([(1,), (2,)])))

    savepoint = ("EXEC_SQL", "SAVEPOINT dqlite_executemany")
    assert server.log[:3] == [("PREPARE", INSERT), savepoint, "CLOSE"]
    assert server.log[-5:] == [("PREPARE", INSERT), savepoint, ("EXEC", 4, [(INTEGER, 1)]),
                               ("EXEC", 4, [(INTEGER, 2)]), ("EXEC_SQL", "RELEASE dqlite_executemany")]
    assert session.connected_to == B and cursor.rowcount == 2 and not server.script


# -- results in batches --------------------------------------------------------

def test_a_result_in_two_batches_is_read_through_read_batch():
    session, server = connected(autocommit=True)
    cursor = new_cursor(session)
    sql = "SELECT id, name FROM t"
    server.answer(
        stmt_message(3, 0),
        rows_message(["id", "name"], [[(INTEGER, 1), (TEXT, "a")], [(INTEGER, 2), (TEXT, "b")]], b"\xee" * 8),
        rows_message(["id", "name"], [[(INTEGER, 3), (TEXT, "c")]]),
    )

    cursor.run(server, session.execute(sql, ()))
    sent_before_reading = list(server.requests)
    rows = fetch_all(server, cursor)

    assert rows == [(1, "a"), (2, "b"), (3, "c")]
    # The server pushes the next batch by itself: nothing is sent for it.
    assert server.requests == sent_before_reading == [("PREPARE", sql), ("QUERY", 3, [])]
    assert [d[0] for d in cursor.description] == ["id", "name"]
    assert not server.script


def test_a_connection_lost_mid_result_raises_connection_lost_and_closes():
    session, server = connected(autocommit=True)
    cursor = new_cursor(session)
    server.answer(stmt_message(3, 0), rows_message(["x"], [[(INTEGER, 1)]], b"\xee" * 8), Lost())
    cursor.run(server, session.execute("SELECT x FROM t", ()))

    with pytest.raises(dqlite.ConnectionLostError):
        fetch_all(server, cursor)

    assert server.log[-2:] == ["LOST", "CLOSE"]
    assert session.connected_to is None


# -- more of the statement cache and the transactions --------------------------

def test_an_evicted_statement_is_finalized_with_the_next_request_and_its_id_never_reused():
    """protocol.md §8.1: a finalized id must never be used again."""
    session, server = connected(autocommit=True, cached_statements=1)
    cursor = new_cursor(session)
    one, two = "SELECT 1 FROM t", "SELECT 2 FROM t"
    server.answer(stmt_message(0, 0), rows_message(["1"], [[(INTEGER, 1)]]),
                  stmt_message(1, 0), empty_message() + rows_message(["2"], [[(INTEGER, 2)]]),
                  stmt_message(2, 0), empty_message() + rows_message(["1"], [[(INTEGER, 1)]]))

    for sql in (one, two):
        cursor.run(server, session.execute(sql, ()))
    cursor.run(server, session.execute(one, ()))  # evicted by two: prepared again
    # Preparing a statement evicts the oldest; its FINALIZE goes out with the next request.
    assert [w.requests for w in server.writes] == [
        [("PREPARE", one)], [("QUERY", 0, [])],
        [("PREPARE", two)], [("FINALIZE", 0), ("QUERY", 1, [])],
        [("PREPARE", one)], [("FINALIZE", 1), ("QUERY", 2, [])],
    ]
    assert fetch_all(server, cursor) == [(1,)]
    assert not server.script


def test_a_read_only_transaction_ends_without_waiting_and_the_next_begin_goes_ahead_with_it():
    """commit() of a transaction that only read sends COMMIT and the next BEGIN
    at once (Send), and the next statement travels alone."""
    session, server = connected()
    cursor = new_cursor(session)
    sql = "SELECT x FROM t"
    server.answer(stmt_message(0, 0), result_message() + rows_message(["x"], [[(INTEGER, 1)]]))
    cursor.run(server, session.execute(sql, ()))
    assert session.in_transaction

    server.run(session.commit())
    assert not session.in_transaction
    assert server.writes[-1].requests == [("EXEC_SQL", "COMMIT; BEGIN")] and server.writes[-1].soon
    assert not server.script  # nothing was waited for

    server.answer(Arrived(result_message()), rows_message(["x"], [[(INTEGER, 2)]]))
    cursor.run(server, session.execute(sql, ()))

    assert fetch_all(server, cursor) == [(2,)]
    assert server.writes[-1].requests == [("QUERY", 0, [])]  # no BEGIN: it went ahead
    assert session.in_transaction


def read_only_transaction_committed():
    """A session whose read-only transaction (one prepared query, ``sql``) was
    just committed: COMMIT; BEGIN went out, its answer not read yet."""
    session, server = connected()
    cursor = new_cursor(session)
    sql = "SELECT x FROM t"
    server.answer(stmt_message(0, 0), result_message() + rows_message(["x"], [[(INTEGER, 1)]]))
    cursor.run(server, session.execute(sql, ()))
    server.run(session.commit())
    return session, server, cursor, sql


def test_a_query_joins_the_begin_sent_ahead_before_its_answer_comes():
    """The answer to COMMIT; BEGIN has not come when the next query goes out:
    the query still travels alone (the server runs the BEGIN first), and the
    owed answer is read ahead of the query's."""
    session, server, cursor, sql = read_only_transaction_committed()
    server.answer(result_message() + rows_message(["x"], [[(INTEGER, 2)]]))  # not arrived before

    cursor.run(server, session.execute(sql, ()))

    assert server.writes[-1].requests == [("QUERY", 0, [])]
    assert fetch_all(server, cursor) == [(2,)] and session.in_transaction
    assert not server.script


def test_a_query_that_joined_a_failed_begin_runs_again_in_a_transaction():
    """If COMMIT; BEGIN failed, the query sent behind it ran outside any
    transaction: its answer is dropped and it runs again behind a BEGIN."""
    session, server, cursor, sql = read_only_transaction_committed()
    server.answer(failure_message(1, "cannot commit - no transaction is active")
                  + rows_message(["x"], [[(INTEGER, 2)]]),
                  result_message() + rows_message(["x"], [[(INTEGER, 3)]]))

    cursor.run(server, session.execute(sql, ()))

    assert [w.requests for w in server.writes][-2:] == [
        [("QUERY", 0, [])], [("EXEC_SQL", "BEGIN"), ("QUERY", 0, [])]]
    assert fetch_all(server, cursor) == [(3,)] and session.in_transaction
    assert not server.script


def test_a_parameter_the_encoder_refuses_leaves_the_begin_sent_ahead_unjoined():
    session, server = connected()
    cursor = new_cursor(session)
    sql = "SELECT x FROM t WHERE x = ?"
    server.answer(stmt_message(0, 1), result_message() + rows_message(["x"], [[(INTEGER, 1)]]))
    cursor.run(server, session.execute(sql, (1,)))
    server.run(session.commit())

    with pytest.raises(dqlite.Error):
        cursor.run(server, session.execute(sql, (object(),)))

    assert not session.in_transaction
    server.answer(result_message() + rows_message(["x"], [[(INTEGER, 2)]]))
    cursor.run(server, session.execute(sql, (2,)))
    assert server.writes[-1].requests == [("QUERY", 0, [(INTEGER, 2)])]
    assert fetch_all(server, cursor) == [(2,)] and session.in_transaction and not server.script


def test_a_write_does_not_join_a_begin_whose_answer_has_not_come():
    """A write sent behind a BEGIN that may have failed could commit by
    itself: it goes out behind a BEGIN of its own (refused harmlessly when
    the one sent ahead took)."""
    session, server = connected()
    cursor = new_cursor(session)
    sql = "SELECT x FROM t"
    server.answer(stmt_message(1, 1), result_message() + result_message(6, 1), result_message(),
                  stmt_message(0, 0), result_message() + rows_message(["x"], [[(INTEGER, 1)]]))
    cursor.run(server, session.execute(INSERT, (4,)))  # (prepared: nothing is read before the EXEC below)
    server.run(session.commit())
    cursor.run(server, session.execute(sql, ()))
    server.run(session.commit())
    server.answer(result_message() + failure_message(1, "cannot start a transaction within a transaction")
                  + result_message(7, 1))

    cursor.run(server, session.execute(INSERT, (5,)))

    assert server.writes[-1].requests == [("EXEC_SQL", "BEGIN"), ("EXEC", 1, [(INTEGER, 5)])]
    assert cursor.lastrowid == 7 and session.in_transaction and not server.script


def test_auto_mode_starts_a_read_transaction_over_when_its_first_write_finds_the_lock_taken():
    """README, transaction modes: AUTO rolls back, waits, and runs the write in a new transaction."""
    session, server = connected(transaction_mode="AUTO")
    cursor = new_cursor(session)
    select = "SELECT x FROM t"
    server.answer(stmt_message(0, 0), result_message() + rows_message(["x"], [[(INTEGER, 1)]]),
                  stmt_message(1, 1), failure_message(5, "database is locked"),
                  result_message(),                               # ROLLBACK
                  result_message() + result_message(7, 1))        # BEGIN, the write
    cursor.run(server, session.execute(select, ()))

    cursor.run(server, session.execute(INSERT, (5,)))

    exec_5 = ("EXEC", 1, [(INTEGER, 5)])
    assert [w.requests for w in server.writes] == [
        [("PREPARE", select)], [("EXEC_SQL", "BEGIN"), ("QUERY", 0, [])],
        [("PREPARE", INSERT)], [exec_5],
        [("EXEC_SQL", "ROLLBACK")],
        [("EXEC_SQL", "BEGIN"), exec_5],
    ]
    assert server.log.index("SLEEP") > server.log.index(exec_5)
    assert session.in_transaction and (cursor.rowcount, cursor.lastrowid) == (1, 7)
    assert not server.script


def test_a_savepoint_made_first_in_a_transaction_begun_ahead_is_made_again_when_it_starts_over():
    """The savepoint is the first statement of the transaction whose BEGIN went
    out with the last COMMIT; when the first write finds the lock taken, the
    transaction starts over with it."""
    session, server = connected(transaction_mode="AUTO")
    cursor = new_cursor(session)
    select = "SELECT x FROM t"
    server.answer(stmt_message(0, 0), result_message() + rows_message(["x"], [[(INTEGER, 1)]]))
    cursor.run(server, session.execute(select, ()))
    server.run(session.commit())  # COMMIT; BEGIN, sent ahead
    server.answer(Arrived(result_message()), result_message())
    cursor.run(server, session.execute("SAVEPOINT sp", ()))
    server.answer(stmt_message(1, 1), failure_message(5, "database is locked"),
                  result_message() + result_message() + result_message(),  # ROLLBACK, BEGIN, SAVEPOINT
                  result_message(7, 1))

    cursor.run(server, session.execute(INSERT, (5,)))

    exec_5 = ("EXEC", 1, [(INTEGER, 5)])
    assert [w.requests for w in server.writes][-5:] == [
        [("EXEC_SQL", "SAVEPOINT sp")],
        [("PREPARE", INSERT)], [exec_5],
        [("EXEC_SQL", "ROLLBACK"), ("EXEC_SQL", "BEGIN"), ("EXEC_SQL", "SAVEPOINT sp")],
        [exec_5],
    ]
    assert session.in_transaction and cursor.lastrowid == 7 and not server.script


def test_deferred_mode_raises_a_stale_snapshot_at_the_first_write_instead_of_starting_over():
    """The contrast with AUTO: DEFERRED leaves SQLITE_BUSY_SNAPSHOT to the application."""
    session, server = connected(transaction_mode="DEFERRED")
    cursor = new_cursor(session)
    select = "SELECT x FROM t"
    server.answer(stmt_message(0, 0), result_message() + rows_message(["x"], [[(INTEGER, 1)]]),
                  stmt_message(1, 1), failure_message(517, "database is locked"),
                  failure_message(1, "cannot start a transaction within a transaction"))
    cursor.run(server, session.execute(select, ()))

    with pytest.raises(dqlite.OperationalError, match="locked") as info:
        cursor.run(server, session.execute(INSERT, (5,)))

    assert info.value.code == 517
    # After a failure that may have rolled the transaction back, a BEGIN asks
    # whether it still exists (it fails inside one): it does, nothing else is sent.
    assert [w.requests for w in server.writes][2:] == [
        [("PREPARE", INSERT)], [("EXEC", 1, [(INTEGER, 5)])], [("EXEC_SQL", "BEGIN")],
    ]
    assert "SLEEP" not in server.log and session.in_transaction
    assert not server.script


def test_immediate_mode_sends_its_begin_alone_before_a_write():
    session, server = connected(transaction_mode="IMMEDIATE")
    cursor = new_cursor(session)
    server.answer(stmt_message(1, 1), result_message(), result_message(2, 1), result_message())

    cursor.run(server, session.execute(INSERT, (5,)))
    server.run(session.commit())

    assert [w.requests for w in server.writes] == [
        [("PREPARE", INSERT)],
        [("EXEC_SQL", "BEGIN IMMEDIATE")],
        [("EXEC", 1, [(INTEGER, 5)])],
        [("EXEC_SQL", "COMMIT")],
    ]


def test_a_connection_lost_inside_a_transaction_loses_it_until_rollback():
    session, server = connected()
    cursor = new_cursor(session)
    server.answer(stmt_message(1, 1), result_message() + result_message(1, 1), stmt_message(1, 1), Lost())
    cursor.run(server, session.execute(INSERT, (5,)))

    with pytest.raises(dqlite.TransactionLostError):
        cursor.run(server, session.execute("UPDATE t SET x = ?", (6,)))
    assert server.log[-2:] == ["LOST", "CLOSE"]
    with pytest.raises(dqlite.TransactionLostError, match="call rollback"):
        cursor.run(server, session.execute(INSERT, (7,)))  # refused before anything is sent
    assert server.log[-1] == "CLOSE"

    server.run(session.rollback())  # not connected: nothing to send
    assert server.log[-1] == "CLOSE" and not session.in_transaction


def test_the_next_statement_after_a_lost_connection_reconnects_and_prepares_again():
    """Statement ids die with the connection (protocol.md §8 (a))."""
    session, server = connected(autocommit=True)
    cursor = new_cursor(session)
    server.answer(stmt_message(1, 1), Lost("connection reset by peer"))
    with pytest.raises(dqlite.ConnectionLostError):
        cursor.run(server, session.execute(INSERT, (5,)))
    server.log.clear()
    server.answer(server_message(1, A) + db_message(), stmt_message(1, 1), result_message(3, 1))

    cursor.run(server, session.execute(INSERT, (6,)))

    assert server.log == CONNECT_A + [("PREPARE", INSERT), ("EXEC", 1, [(INTEGER, 6)])]
    assert session.connected_to == A and cursor.lastrowid == 3


@pytest.mark.parametrize("sql, error", [
    ("INSERT INTO t (x) VALUES (1) RETURNING id", dqlite.NotSupportedError),
    ("SELECT 1; SELECT 2", dqlite.ProgrammingError),
])
def test_statements_refused_before_anything_is_sent(sql, error):
    session, server = connected(autocommit=True)
    with pytest.raises(error):
        server.run(session.execute(sql, ()))
    assert server.log == []
