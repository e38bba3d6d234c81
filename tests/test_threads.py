"""A connection shared between threads (threadsafety 1): refused, never mixed up."""

import threading
import time

import pytest

import dqlite

# Some 70 ms of work for the node: long enough to be caught running, well
# short of an election timeout (a node busy with a query sends no heartbeats).
SLOW = "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < ?) SELECT count(*) FROM c"
SLOW_N = 300_000


def run_in_thread(conn):
    """Start the slow query on ``conn`` in a thread; (thread, outcome dict)."""
    outcome = {}

    def slow():
        try:
            outcome["rows"] = conn.execute(SLOW, (SLOW_N,)).fetchall()
        except dqlite.Error as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=slow)
    thread.start()
    while not conn._lock.locked():  # the query is on its way
        time.sleep(0.001)
    return thread, outcome


def test_a_second_thread_is_refused_while_an_operation_runs(dqlite_cluster, dqlite_database):
    conn = dqlite.connect(dqlite_cluster.addresses, dqlite_database, autocommit=True)
    cur = conn.cursor()
    cur.execute("SELECT ?", (1,))  # prepared: its next run takes the cursor's hot path
    thread, outcome = run_in_thread(conn)
    for attempt in (lambda: cur.execute("SELECT ?", (2,)), lambda: conn.execute("SELECT 3"), conn.commit):
        with pytest.raises(dqlite.InterfaceError, match="two threads"):
            attempt()
    thread.join()
    assert outcome == {"rows": [(SLOW_N,)]}  # its own answer, untouched
    assert cur.execute("SELECT ?", (4,)).fetchall() == [(4,)]
    conn.close()


def test_close_from_another_thread_ends_the_running_operation(dqlite_cluster, dqlite_database):
    conn = dqlite.connect(dqlite_cluster.addresses, dqlite_database, autocommit=True)
    thread, outcome = run_in_thread(conn)
    conn.close()
    thread.join()
    assert isinstance(outcome.get("error"), dqlite.ConnectionLostError), outcome  # lost, not answered
    assert conn._wire is None  # closed by its own thread, not connected again
    with pytest.raises(dqlite.ProgrammingError, match="closed"):
        conn.execute("SELECT 1")
