"""PEP 249 transactions, autocommit, savepoints and all-or-nothing executemany."""

import pytest

import dqlite
import dqlite._wire


def count(conn, table="t"):
    return conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]


@pytest.fixture
def setup(connect):
    """(writer, observer): a PEP 249 connection and an autocommit one, table t(x) empty."""
    observer = connect(autocommit=True)
    observer.execute("CREATE TABLE t (x INTEGER UNIQUE)")
    return connect(), observer


def test_implicit_transaction_until_commit(setup):
    conn, observer = setup
    assert not conn.in_transaction
    conn.execute("INSERT INTO t VALUES (1)")
    assert conn.in_transaction
    assert count(observer) == 0  # not visible before commit
    conn.commit()
    assert not conn.in_transaction
    assert count(observer) == 1


def test_rollback_discards(setup):
    conn, observer = setup
    conn.execute("INSERT INTO t VALUES (1)")
    conn.rollback()
    assert not conn.in_transaction and count(observer) == 0 and count(conn) == 0


def test_commit_and_rollback_without_a_transaction_are_no_ops(setup):
    conn, _ = setup
    conn.commit()
    conn.rollback()
    assert not conn.in_transaction


def test_queries_also_open_the_transaction(setup):
    conn, observer = setup
    assert count(conn) == 0
    assert conn.in_transaction
    observer.execute("INSERT INTO t VALUES (7)")
    assert count(conn) == 0  # repeatable read inside the transaction
    conn.commit()
    assert count(conn) == 1


def _run_op(conn, op):
    """Run a session operation on either API's connection (white box)."""
    if hasattr(conn, "aio"):
        return conn._run(conn.aio._run(op))
    return conn._run(op)


def test_a_query_after_a_read_only_transaction_reads_in_the_next_one(setup):
    # The end of a read-only transaction is sent without waiting, with the
    # next BEGIN; the next (prepared) query goes out behind it.
    conn, observer = setup
    for _ in range(2):
        assert count(conn) == 0
        conn.rollback()
    assert count(conn) == 0 and conn.in_transaction
    observer.execute("INSERT INTO t VALUES (7)")
    assert count(conn) == 0  # the query took the transaction's snapshot
    conn.commit()
    assert count(conn) == 1


def test_a_query_sent_behind_a_failed_begin_runs_again_in_a_transaction(setup):
    conn, observer = setup
    assert count(conn) == 0  # prepares the query; opens a transaction
    session = conn.aio._session if hasattr(conn, "aio") else conn._session

    def rollback_behind_the_drivers_back():
        session.encoder.exec_sql("ROLLBACK")
        yield session.encoder.take()
        yield from session._read(session.decoder.read_result)

    _run_op(conn, rollback_behind_the_drivers_back())
    # The ROLLBACK sent with the next BEGIN fails (no transaction), so that
    # BEGIN never runs, and the query behind them runs on its own: the
    # driver must run it again in a transaction of its own.
    conn.rollback()
    assert count(conn) == 0 and conn.in_transaction
    observer.execute("INSERT INTO t VALUES (7)")
    assert count(conn) == 0
    conn.commit()
    assert count(conn) == 1


def test_autocommit_commits_each_statement(connect, setup):
    _, observer = setup
    auto = connect(autocommit=True)
    auto.execute("INSERT INTO t VALUES (1)")
    assert not auto.in_transaction and count(observer) == 1


def test_switching_autocommit_on_commits_the_open_transaction(setup, api):
    conn, observer = setup
    conn.execute("INSERT INTO t VALUES (1)")
    if api == "aio":
        # A property cannot await the COMMIT: the asyncio API asks for it.
        with pytest.raises(dqlite.ProgrammingError, match="commit"):
            conn.autocommit = True
        conn.commit()
    conn.autocommit = True
    assert conn.autocommit and not conn.in_transaction and count(observer) == 1
    conn.autocommit = False
    conn.execute("INSERT INTO t VALUES (2)")
    assert conn.in_transaction and count(observer) == 1


def test_explicit_begin_in_autocommit_mode(connect, setup):
    _, observer = setup
    auto = connect(autocommit=True)
    auto.execute("BEGIN IMMEDIATE")
    assert auto.in_transaction
    auto.execute("INSERT INTO t VALUES (1)")
    assert count(observer) == 0
    auto.execute("COMMIT")
    assert not auto.in_transaction and count(observer) == 1


def test_context_manager_commits_or_rolls_back(setup):
    conn, observer = setup
    with conn:
        conn.execute("INSERT INTO t VALUES (1)")
    assert count(observer) == 1
    with pytest.raises(ZeroDivisionError):
        with conn:
            conn.execute("INSERT INTO t VALUES (2)")
            1 / 0
    assert count(observer) == 1 and not conn.in_transaction


def test_savepoints(setup):
    conn, observer = setup
    conn.execute("INSERT INTO t VALUES (1)")
    conn.execute("SAVEPOINT sp1")
    conn.execute("INSERT INTO t VALUES (2)")
    conn.execute('SAVEPOINT "odd name"')
    conn.execute("INSERT INTO t VALUES (3)")
    conn.execute('ROLLBACK TO "odd name"')
    conn.execute("RELEASE sp1")
    assert conn.in_transaction
    conn.commit()
    assert [r[0] for r in observer.execute("SELECT x FROM t ORDER BY x")] == [1, 2]


def test_executemany_is_all_or_nothing_in_a_transaction(setup):
    conn, observer = setup
    conn.execute("INSERT INTO t VALUES (0)")
    with pytest.raises(dqlite.IntegrityError, match="UNIQUE") as info:
        conn.executemany("INSERT INTO t VALUES (?)", [(i,) for i in range(1, 2000)] + [(5,)] + [(9999,)])
    assert "no row of the batch was applied" in "".join(info.value.__notes__)
    assert "parameter set 1999" in "".join(info.value.__notes__)
    # The transaction survives with what came before the batch.
    assert conn.in_transaction and count(conn) == 1
    conn.commit()
    assert count(observer) == 1


def test_executemany_is_all_or_nothing_in_autocommit(connect, setup):
    _, observer = setup
    auto = connect(autocommit=True)
    with pytest.raises(dqlite.IntegrityError):
        auto.executemany("INSERT INTO t VALUES (?)", [(1,), (2,), (1,), (3,)])
    assert count(observer) == 0 and not auto.in_transaction
    auto.executemany("INSERT INTO t VALUES (?)", ((i,) for i in range(5000)))
    assert count(observer) == 5000


def test_executemany_with_a_bad_parameter_set_applies_nothing(connect, setup):
    _, observer = setup
    auto = connect(autocommit=True)
    rows = [(i,) for i in range(700)] + [(1, 2)]
    with pytest.raises(dqlite.ProgrammingError, match="uses 1, and there are 2"):
        auto.executemany("INSERT INTO t VALUES (?)", rows)
    with pytest.raises(dqlite.ProgrammingError, match="not supported"):
        auto.executemany("INSERT INTO t VALUES (?)", [(1,), (object(),)])
    assert count(observer) == 0


@pytest.mark.parametrize("autocommit", [False, True], ids=["transaction", "autocommit"])
def test_executemany_whose_parameters_fail_midway_applies_nothing(connect, setup, autocommit):
    # The caller's iterable raises after thousands of rows went out in pipelined windows:
    # its exception is raised, no row of the batch stays, and the connection (with the
    # transaction it had) goes on.
    _, observer = setup
    conn = connect(autocommit=autocommit)
    if not autocommit:
        conn.execute("INSERT INTO t VALUES (-1)")

    def rows():
        yield from ((i,) for i in range(3000))
        raise ValueError("the source of the rows failed")

    with pytest.raises(ValueError, match="source of the rows failed"):
        conn.executemany("INSERT INTO t VALUES (?)", rows())
    assert conn.in_transaction == (not autocommit)
    assert count(conn) == (0 if autocommit else 1)
    conn.executemany("INSERT INTO t VALUES (?)", [(5000,), (5001,)])
    conn.commit()
    assert count(observer) == (2 if autocommit else 3)


def test_executemany_longer_than_the_timeout_completes(connect):
    """The timeout bounds the wait for each answer, not a long pipelined batch."""
    import time

    timeout = 0.5
    conn = connect(autocommit=True, timeout=timeout)
    conn.execute("CREATE TABLE big (x INTEGER)")
    # The premise, made to hold on any machine: batches twice as long each time,
    # until one outlasts the timeout (each completes, whatever it took).
    total, rows = 0, 50_000
    for _ in range(8):
        started = time.monotonic()
        conn.executemany("INSERT INTO big VALUES (?)", ((i,) for i in range(total, total + rows)))
        total += rows
        if time.monotonic() - started > timeout:
            break
        rows *= 2
    else:
        pytest.fail(f"no batch of up to {rows // 2} rows outlasted the {timeout}s timeout")
    assert conn.execute("SELECT count(*), sum(x) FROM big").fetchone() == (total, (total - 1) * total // 2)


def test_executemany_rowcount_and_refusals(setup):
    conn, _ = setup
    cur = conn.executemany("INSERT INTO t VALUES (?)", [(1,), (2,), (3,)])
    assert cur.rowcount == 3
    assert conn.executemany("UPDATE t SET x = x + 10 WHERE x = ?", [(1,), (2,), (42,)]).rowcount == 2
    with pytest.raises(dqlite.ProgrammingError, match="return no rows"):
        conn.executemany("SELECT ?", [(1,)])
    assert conn.executemany("INSERT INTO t VALUES (?)", []).rowcount == 0


def test_error_inside_a_transaction_keeps_it_open(setup):
    conn, observer = setup
    conn.execute("INSERT INTO t VALUES (1)")
    with pytest.raises(dqlite.IntegrityError):
        conn.execute("INSERT INTO t VALUES (1)")
    assert conn.in_transaction
    conn.commit()
    assert count(observer) == 1


def test_pragma_with_and_without_rows(connect):
    auto = connect(autocommit=True)
    assert auto.execute("PRAGMA foreign_keys").fetchone() == (1,)
    auto.execute("PRAGMA user_version = 7")
    assert auto.execute("PRAGMA user_version").fetchone() == (7,)
    auto.execute("PRAGMA user_version = 8")  # the cached fallback path
    assert auto.execute("PRAGMA user_version").fetchone() == (8,)


def test_read_only_transactions_end_cleanly(setup):
    """The end of a transaction that only read is not waited for, yet takes effect."""
    conn, observer = setup
    assert count(conn) == 0 and conn.in_transaction
    conn.commit()
    assert not conn.in_transaction
    observer.execute("INSERT INTO t VALUES (1)")
    assert count(conn) == 1  # a new snapshot: the old one ended
    conn.rollback()
    observer.execute("INSERT INTO t VALUES (2)")
    assert count(conn) == 2
    conn.execute("INSERT INTO t VALUES (3)")
    conn.commit()  # a writing transaction: its COMMIT is awaited
    assert count(observer) == 3


def test_the_transaction_after_a_read_only_one(setup):
    """A read-only transaction's end also begins the next one (one request less
    for the next statement); that transaction behaves like any other."""
    conn, observer = setup
    assert count(conn) == 0
    conn.rollback()
    observer.execute("INSERT INTO t VALUES (1)")
    assert not conn.in_transaction
    assert count(conn) == 1 and conn.in_transaction  # its snapshot starts at its first read
    observer.execute("INSERT INTO t VALUES (2)")
    assert count(conn) == 1  # and holds until it ends
    conn.commit()
    assert count(conn) == 2
    conn.commit()
    for _ in range(20):  # back to back: the early BEGIN's answer may not be in yet
        assert count(conn) == 2
        conn.rollback()
        assert count(conn) == 2 and conn.in_transaction
        observer.execute("INSERT INTO t VALUES (100)")
        assert count(conn) == 2  # still one snapshot
        conn.rollback()
        observer.execute("DELETE FROM t WHERE x = 100")
    # What must not run inside that transaction still does not.
    conn.autocommit = True
    conn.execute("INSERT INTO t VALUES (3)")
    assert not conn.in_transaction and count(observer) == 3
    conn.autocommit = False
    assert count(conn) == 3
    conn.commit()
    conn.execute("BEGIN IMMEDIATE")
    conn.execute("INSERT INTO t VALUES (4)")
    conn.rollback()
    assert count(observer) == 3
    assert count(conn) == 3
    conn.rollback()
    conn.executescript("INSERT INTO t VALUES (5);")
    assert count(observer) == 4 and not conn.in_transaction
    count(conn)
    conn.commit()
    with pytest.raises(dqlite.OperationalError, match="no transaction is active"):
        conn.execute("COMMIT")  # as without the early BEGIN: nothing to commit


def test_the_end_of_a_read_only_transaction_that_cannot_be_sent_is_no_error(dqlite_cluster, dqlite_database,
                                                                           monkeypatch):
    """White box: the blocking shell sends it without its I/O loop (``Connection._send_only``).
    A send that fails loses the connection and, with it, a transaction that only read:
    nothing to report; the next statement reconnects."""
    conn = dqlite.connect(dqlite_cluster.addresses, dqlite_database)
    assert conn.execute("SELECT 1").fetchall() == [(1,)] and conn.in_transaction
    send = dqlite._wire.Wire.send
    failures = []

    def send_fails_once(wire, data):
        if not failures:
            failures.append(data)
            wire.close()
            raise dqlite.ConnectionLostError("broken pipe")
        return send(wire, data)

    monkeypatch.setattr(dqlite._wire.Wire, "send", send_fails_once)
    conn.rollback()
    assert failures and not conn.in_transaction and conn.leader is None
    assert conn.execute("SELECT 2").fetchall() == [(2,)] and conn.leader is not None
    conn.close()
