"""kill -9 of the leader during writes, transactions, a large SELECT and a COMMIT.

After each kill: every INSERT the client saw acknowledged is on the new leader,
nothing of a lost transaction is, the client raised the exception that says
what it knows (``TransactionLostError``: nothing of the transaction was
committed; ``CommitOutcomeUnknownError``: it may or may not have been), and
the next transaction succeeds on the new leader within 10 s. Each test runs
through both APIs, on a cluster of its own.
"""

from __future__ import annotations

import random
import signal
import threading
import time

import pytest

import dqlite

from faultkit import (
    RECOVERY_LIMIT, assert_survivors_healthy, committed_ids, kill_leader, record, until_success,
)

pytestmark = pytest.mark.timeout(120)

TIMEOUT = 5.0


@pytest.fixture
def cluster(dqlite_fresh_cluster):
    return dqlite_fresh_cluster


def classify(exc: BaseException) -> str:
    """The name of the most specific driver exception class of ``exc``."""
    for cls in (dqlite.CommitOutcomeUnknownError, dqlite.TransactionLostError, dqlite.ConnectionLostError,
                dqlite.OperationalError, dqlite.InterfaceError, dqlite.Error):
        if isinstance(exc, cls):
            return cls.__name__
    return type(exc).__name__


def start_killer(cluster, condition, *, limit: float = 20.0):
    """A thread that kills the leader once ``condition()`` is true; returns (thread, box).

    ``box`` gets "node" (the killed node) and "at" (time.monotonic() of the kill).
    """
    box: dict = {}

    def run():
        deadline = time.monotonic() + limit
        while not condition():
            if time.monotonic() > deadline:
                box["error"] = "the kill condition never became true"
                return
            time.sleep(0.002)
        box["node"] = kill_leader(cluster)
        box["at"] = time.monotonic()

    thread = threading.Thread(target=run, name="leader-killer", daemon=True)
    thread.start()
    return thread, box


def test_kill_leader_during_autocommit_inserts(cluster, api_connect):
    conn = api_connect(cluster.addresses, "db", autocommit=True, timeout=TIMEOUT)
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT NOT NULL)")
    acked: set[int] = set()
    unknown: set[int] = set()      # CommitOutcomeUnknownError: may or may not be applied
    refused: set[int] = set()      # any other error: must not be applied
    errors: list[str] = []
    thread, box = start_killer(cluster, lambda: len(acked) >= 100)
    acked_after_kill = 0
    recovered_in = None
    deadline = time.monotonic() + 40
    for i in range(1, 100_000):
        if acked_after_kill >= 50 or time.monotonic() > deadline:
            break
        try:
            conn.execute("INSERT INTO t (id, v) VALUES (?, ?)", (i, f"value {i}"))
        except dqlite.CommitOutcomeUnknownError as exc:
            unknown.add(i)
            errors.append(classify(exc))
            continue
        except dqlite.OperationalError as exc:
            refused.add(i)
            errors.append(classify(exc))
            continue
        acked.add(i)
        if "at" in box:
            acked_after_kill += 1
            if recovered_in is None:
                recovered_in = time.monotonic() - box["at"]
    thread.join(5)
    assert "error" not in box, box["error"]
    assert errors, "the kill did not interrupt the stream"
    # The write in flight when the socket died: its outcome is unknown.
    assert errors[0] == "CommitOutcomeUnknownError", errors
    assert all(e in ("CommitOutcomeUnknownError", "OperationalError") for e in errors), errors
    assert recovered_in is not None and recovered_in < RECOVERY_LIMIT, recovered_in
    present = committed_ids(cluster.addresses, "db")
    assert acked <= present, f"acknowledged but lost: {sorted(acked - present)}"
    assert present <= acked | unknown, f"applied though refused: {sorted(present - acked - unknown)}"
    assert not present & refused
    assert_survivors_healthy(cluster, box["node"])
    applied_unknown = len(unknown & present)
    record("kill -9 leader during autocommit INSERT stream",
           f"{', '.join(sorted(set(errors)))}; {len(acked)} acked all present; "
           f"{len(unknown)} unknown ({applied_unknown} applied); recovered in {recovered_in:.2f}s")


def _insert_with_retry_tx(conn, ids):
    """One transaction inserting ``ids``; rolls back on failure so it can be retried."""
    try:
        for i in ids:
            conn.execute("INSERT INTO t (id, v) VALUES (?, ?)", (i, "after"))
        conn.commit()
    except dqlite.Error:
        try:
            conn.rollback()
        except dqlite.Error:
            pass
        raise


def test_kill_leader_with_a_transaction_open(cluster, api_connect):
    conn = api_connect(cluster.addresses, "db", timeout=TIMEOUT)
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
    conn.executemany("INSERT INTO t (id, v) VALUES (?, ?)", [(i, "base") for i in range(1, 4)])
    conn.commit()
    for i in range(100, 110):
        conn.execute("INSERT INTO t (id, v) VALUES (?, ?)", (i, "in the lost transaction"))
    assert conn.in_transaction
    killed = kill_leader(cluster)
    killed_at = time.monotonic()
    with pytest.raises(dqlite.TransactionLostError) as info:
        conn.execute("INSERT INTO t (id, v) VALUES (110, 'x')")
    assert isinstance(info.value, dqlite.ConnectionLostError)
    assert not isinstance(info.value, dqlite.CommitOutcomeUnknownError)
    # The connection refuses to go on with half a transaction until rollback().
    with pytest.raises(dqlite.TransactionLostError, match="rollback"):
        conn.execute("INSERT INTO t (id, v) VALUES (111, 'x')")
    conn.rollback()
    _, seconds = until_success(lambda: _insert_with_retry_tx(conn, (200, 201)))
    recovered_in = time.monotonic() - killed_at
    assert recovered_in < RECOVERY_LIMIT
    assert committed_ids(cluster.addresses, "db") == {1, 2, 3, 200, 201}
    assert_survivors_healthy(cluster, killed)
    record("kill -9 leader with a transaction open (between statements)",
           f"TransactionLostError; 10 rows of the transaction absent; next tx ok in {recovered_in:.2f}s")


def test_kill_leader_while_a_statement_of_a_transaction_is_in_flight(cluster, api_connect):
    conn = api_connect(cluster.addresses, "db", timeout=TIMEOUT)
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
    conn.execute("INSERT INTO t (id, v) VALUES (1, 'base')")
    conn.commit()
    done = []
    thread, box = start_killer(cluster, lambda: len(done) >= 200)
    error = None
    for i in range(1000, 200_000):
        try:
            conn.execute("INSERT INTO t (id, v) VALUES (?, ?)", (i, "lost"))
        except dqlite.Error as exc:
            error = exc
            break
        done.append(i)
    thread.join(5)
    assert "error" not in box, box["error"]
    assert isinstance(error, dqlite.TransactionLostError), repr(error)
    conn.rollback()
    until_success(lambda: _insert_with_retry_tx(conn, (2,)))
    recovered_in = time.monotonic() - box["at"]
    assert recovered_in < RECOVERY_LIMIT
    assert committed_ids(cluster.addresses, "db") == {1, 2}
    assert_survivors_healthy(cluster, box["node"])
    record("kill -9 leader mid-statement inside a transaction",
           f"TransactionLostError; {len(done)} rows of the transaction absent; next tx ok in {recovered_in:.2f}s")


#: ~29 MB of rows, far more than the loopback socket buffers hold, computed by
#: the server as the client reads (no table to fill first).
BIG_ROWS = 400_000
BIG_SELECT = (
    f"WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < {BIG_ROWS}) "
    "SELECT x, printf('%050d', x) FROM c"
)


@pytest.mark.parametrize("autocommit", [True, False], ids=["autocommit", "in-transaction"])
def test_kill_leader_during_a_large_select(cluster, api_connect, autocommit):
    conn = api_connect(cluster.addresses, "db", autocommit=autocommit, timeout=TIMEOUT)
    cur = conn.execute(BIG_SELECT)
    got = cur.fetchmany(1000)
    killed = kill_leader(cluster)
    killed_at = time.monotonic()
    with pytest.raises(dqlite.ConnectionLostError) as info:
        for _ in range(BIG_ROWS):  # bounded: one more batch per round at least
            batch = cur.fetchmany(1000)
            if not batch:
                break
            got.extend(batch)
    expected = dqlite.ConnectionLostError if autocommit else dqlite.TransactionLostError
    assert type(info.value) is expected, repr(info.value)
    # Whatever arrived before the connection died is exactly the start of the result.
    assert 1000 <= len(got) < BIG_ROWS
    assert got == [(x, f"{x:050d}") for x in range(1, len(got) + 1)]
    if not autocommit:
        conn.rollback()
    _, _ = until_success(lambda: conn.execute("SELECT count(*) FROM (SELECT 1 UNION ALL SELECT 2)").fetchone())
    recovered_in = time.monotonic() - killed_at
    assert recovered_in < RECOVERY_LIMIT
    assert_survivors_healthy(cluster, killed)
    record(f"kill -9 leader during a 400k-row SELECT ({'autocommit' if autocommit else 'in a transaction'})",
           f"{expected.__name__} after {len(got)} correct rows; next query ok in {recovered_in:.2f}s")


def test_kill_leader_during_commit(cluster, api_connect):
    """The leader dies with COMMIT sent and unanswered: the client cannot know the outcome.

    SIGSTOP first, so COMMIT surely reaches a leader that can no longer answer,
    then SIGKILL while the client waits.
    """
    conn = api_connect(cluster.addresses, "db", timeout=TIMEOUT)
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
    conn.commit()
    for i in range(1, 11):
        conn.execute("INSERT INTO t (id, v) VALUES (?, ?)", (i, "committing"))
    leader = cluster.node_at(conn.leader)
    leader.kill(signal.SIGSTOP)
    killer = threading.Timer(0.5, leader.kill, args=(signal.SIGKILL,))
    killer.start()
    try:
        started = time.monotonic()
        with pytest.raises(dqlite.CommitOutcomeUnknownError) as info:
            conn.commit()
        waited = time.monotonic() - started
    finally:
        killer.join(5)
    assert isinstance(info.value, dqlite.ConnectionLostError)
    assert waited < TIMEOUT + 1
    assert not conn.in_transaction
    killed_at = time.monotonic()
    _, _ = until_success(lambda: _insert_with_retry_tx(conn, (100,)))
    recovered_in = time.monotonic() - killed_at
    present = committed_ids(cluster.addresses, "db")
    # All or nothing: never a part of the transaction.
    assert present - {100} in (set(), set(range(1, 11))), sorted(present)
    assert 100 in present
    assert_survivors_healthy(cluster, leader)
    applied = "applied" if 1 in present else "not applied"
    record("kill -9 leader while COMMIT is unanswered",
           f"CommitOutcomeUnknownError after {waited:.2f}s; transaction {applied} (all-or-nothing); "
           f"next tx ok in {recovered_in:.2f}s")


def test_kill_leader_at_random_points_of_small_transactions(cluster, api_connect):
    """Kills that land wherever they land: BEGIN, INSERT, COMMIT or between them.

    Three rounds (the killed node is restarted after each). Every transaction
    inserts two rows: both are there when it was acknowledged, neither when it
    was reported lost, both or neither when the outcome was unknown.
    """
    rng = random.Random(1234)
    conn = api_connect(cluster.addresses, "db", timeout=TIMEOUT)
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
    conn.commit()
    outcome: dict[int, str] = {}
    next_id = 1
    for round_ in range(3):
        stop_at = time.monotonic() + rng.uniform(0.05, 0.4)
        thread, box = start_killer(cluster, lambda: time.monotonic() >= stop_at)
        saw_error_at = None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            a, b = next_id, next_id + 1
            next_id += 2
            try:
                conn.execute("INSERT INTO t (id, v) VALUES (?, ?)", (a, f"r{round_}"))
                conn.execute("INSERT INTO t (id, v) VALUES (?, ?)", (b, f"r{round_}"))
                conn.commit()
                outcome[a] = "acked"
                if saw_error_at is not None:
                    break  # recovered: this round is done
            except dqlite.Error as exc:
                outcome[a] = classify(exc)
                if isinstance(exc, dqlite.TransactionLostError) or conn.in_transaction:
                    conn.rollback()
                if saw_error_at is None:
                    saw_error_at = time.monotonic()
        thread.join(5)
        assert "error" not in box, box["error"]
        assert saw_error_at is not None, "the kill did not interrupt the transactions"
        assert time.monotonic() - box["at"] < RECOVERY_LIMIT + 2
        killed = box["node"]
        assert_survivors_healthy(cluster, killed)
        killed.start()  # rejoins with its data; the next round kills whoever leads
        cluster.wait_for_leader(timeout=RECOVERY_LIMIT)
    present = committed_ids(cluster.addresses, "db")
    for a, what in outcome.items():
        pair = {a, a + 1} & present
        if what == "acked":
            assert pair == {a, a + 1}, (a, what, pair)
        elif what == "CommitOutcomeUnknownError":
            assert pair in (set(), {a, a + 1}), (a, what, pair)
        else:
            assert pair == set(), (a, what, pair)
    errors = sorted(w for w in outcome.values() if w != "acked")
    kinds = {e: errors.count(e) for e in sorted(set(errors))}
    unknown_applied = sum(1 for a, w in outcome.items() if w == "CommitOutcomeUnknownError" and a in present)
    record("kill -9 leader at random points of 2-row transactions (3 kills)",
           f"{kinds} ({unknown_applied} of the unknown ones applied); "
           f"{sum(w == 'acked' for w in outcome.values())} acked all present; no partial transaction")
