"""An operation ended midway by an exception that is no dqlite Error (KeyboardInterrupt from
Ctrl-C, or whatever a signal handler raises) never leaves its answer for the next operation.

The sync driver's waits run signal handlers; the asyncio driver's equivalent, a cancelled
task, is tested in test_aio.py.
"""

import contextlib
import signal

import pytest

import dqlite


@pytest.fixture
def cluster(dqlite_fresh_cluster):
    return dqlite_fresh_cluster


@pytest.fixture
def writing(cluster):
    """A connection in a transaction that inserted a row into t (empty before)."""
    conn = dqlite.connect(cluster.addresses, "db")
    conn.execute("CREATE TABLE t (x)")
    conn.commit()
    conn.execute("INSERT INTO t VALUES (1)")
    yield conn
    conn.close()


@contextlib.contextmanager
def interrupted_while_its_node_is_stopped(cluster, conn, after=0.2):
    """Stop the process of the node ``conn`` talks to, so that its next request
    gets no answer, and raise KeyboardInterrupt from a SIGALRM handler ``after``
    seconds into the wait (as Ctrl-C would).  The node resumes afterwards and
    answers into whatever socket is still open.

    The node is the connection's own (``conn.leader``), not whichever node
    the cluster names leader when asked: after an election those differ, and
    the request would be answered by a running node before the interrupt."""
    def interrupt(signum, frame):
        raise KeyboardInterrupt

    node = cluster.node_at(conn.leader)
    previous = signal.signal(signal.SIGALRM, interrupt)
    node.kill(signal.SIGSTOP)
    try:
        signal.setitimer(signal.ITIMER_REAL, after)
        with pytest.raises(KeyboardInterrupt):
            yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        node.kill(signal.SIGCONT)


@pytest.mark.parametrize("prepared", [False, True], ids=["first-run", "prepared"])
def test_an_interrupted_query_leaves_no_answer_for_the_next(cluster, prepared):
    # "prepared": the statement runs on the cursor's fast path; "first-run": through the session.
    conn = dqlite.connect(cluster.addresses, "db", autocommit=True)
    sql = "SELECT ? * 10"
    if prepared:
        assert conn.execute(sql, (0,)).fetchall() == [(0,)]
    with interrupted_while_its_node_is_stopped(cluster, conn):
        conn.execute(sql, (1,))
    # The answer to the interrupted query (10) comes after the interrupt: it
    # must not be taken for this one's.
    assert conn.execute(sql, (2,)).fetchall() == [(20,)]
    assert conn.execute("SELECT 'next'").fetchall() == [("next",)]
    conn.close()


def test_a_query_interrupted_inside_a_transaction_loses_the_transaction(cluster, writing):
    conn = writing
    with interrupted_while_its_node_is_stopped(cluster, conn):
        conn.execute("SELECT count(*) FROM t")
    with pytest.raises(dqlite.TransactionLostError, match="interrupted"):
        conn.execute("SELECT count(*) FROM t")
    conn.rollback()
    assert conn.execute("SELECT count(*) FROM t").fetchall() == [(0,)]


def test_an_interrupted_commit_is_reported_as_of_unknown_outcome_once(cluster, writing):
    conn = writing
    with interrupted_while_its_node_is_stopped(cluster, conn):
        conn.commit()
    assert not conn.in_transaction
    with pytest.raises(dqlite.CommitOutcomeUnknownError, match="interrupted"):
        conn.execute("SELECT count(*) FROM t")
    # Reported once, never retried: the connection works again, the row is
    # there or not (the node may have committed it after resuming).
    assert conn.execute("SELECT count(*) FROM t").fetchall() in ([(0,)], [(1,)])


def test_an_interrupt_raised_inside_the_session_drops_the_connection(writing, monkeypatch):
    # White-box: the exception comes from the session's own code while it
    # reads COMMIT's answer, so its generator is finished and cannot be told
    # of the loss; what it was doing is unknown, and a transaction that wrote
    # may have been committed.
    conn = writing

    def interrupted_read(reader):
        raise KeyboardInterrupt
        yield  # a generator, as Session._read

    monkeypatch.setattr(conn._session, "_read", interrupted_read)
    with pytest.raises(KeyboardInterrupt):
        conn.commit()
    monkeypatch.undo()
    with pytest.raises(dqlite.CommitOutcomeUnknownError):
        conn.execute("SELECT count(*) FROM t")
    assert conn.execute("SELECT count(*) FROM t").fetchall() in ([(0,)], [(1,)])
