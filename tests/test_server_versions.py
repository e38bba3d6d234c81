"""Where libdqlite 1.11.1 and 1.18.1 differ (protocol.md §2.3), through both APIs.

The same tests run against each server version (``make test`` runs the suite
on the system's 1.11.1, then on trixie's 1.18.1 with ``DQLITE_SERVER=1.18``).
The driver never looks at a version number: what a server can do it learns
from the server's answers. The expectations come from ``server_caps``, a raw
probe of the server (tests/servercaps.py) that does not use the driver.
"""

from __future__ import annotations

import pytest

import dqlite
from dqlite.cluster import NodeClient

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def auto(connect):
    return connect(autocommit=True)


def assert_cluster_healthy(cluster):
    assert all(node.is_alive() for node in cluster.nodes)
    leader = cluster.wait_for_leader(timeout=10)
    for address in cluster.addresses:
        with NodeClient(address) as client:
            assert client.leader()[1] == leader


def test_connect_through_each_follower_alone(dqlite_cluster, api_connect, dqlite_database, server_caps):
    """OPEN is accepted on followers by 1.11.1 and 1.18.1 (leader-only from 1.18.2):
    the driver never relies on it, it opens the database on the leader LEADER names."""
    leader = dqlite_cluster.wait_for_leader()
    for follower in (a for a in dqlite_cluster.addresses if a != leader):
        conn = api_connect(follower, dqlite_database, autocommit=True)
        assert conn.leader == leader
        conn.execute("CREATE TABLE IF NOT EXISTS t (x)")
        conn.execute("INSERT INTO t VALUES (1)")
        conn.close()
    check = api_connect(dqlite_cluster.addresses, dqlite_database)
    assert check.execute("SELECT count(*) FROM t").fetchone() == (2,)


def test_params32_probe_inside_a_transaction_leaves_it_intact(connect, server_caps):
    """The lazy params32 probe may run mid-transaction; either answer keeps the transaction."""
    conn = connect()
    conn.execute("CREATE TABLE t (x)")
    conn.commit()
    conn.execute("INSERT INTO t VALUES (1)")
    wide = f"SELECT {', '.join('?' * 256)}"
    if server_caps.params32:
        assert conn.execute(wide, tuple(range(256))).fetchone() == tuple(range(256))
    else:
        with pytest.raises(dqlite.NotSupportedError):
            conn.execute(wide, tuple(range(256)))
    assert conn.in_transaction
    conn.execute("INSERT INTO t VALUES (2)")
    conn.rollback()
    assert conn.execute("SELECT count(*) FROM t").fetchone() == (0,)
    conn.execute("INSERT INTO t VALUES (3)")
    conn.commit()
    assert conn.execute("SELECT x FROM t").fetchall() == [(3,)]


def test_executemany_with_more_than_255_parameters(auto, server_caps):
    columns = ", ".join(f"c{i}" for i in range(300))
    auto.execute(f"CREATE TABLE wide ({columns})")
    rows = [tuple(range(k, k + 300)) for k in range(3)]
    sql = f"INSERT INTO wide VALUES ({', '.join('?' * 300)})"
    if server_caps.params32:
        auto.executemany(sql, rows)
        got = auto.execute("SELECT * FROM wide ORDER BY c0").fetchall()
        assert got == rows
    else:
        with pytest.raises(dqlite.NotSupportedError):
            auto.executemany(sql, rows)
        assert auto.execute("SELECT count(*) FROM wide").fetchone() == (0,)


def test_returning_is_refused_on_every_version(auto, dqlite_cluster):
    """RETURNING is never sent. Checked by hand on both versions with raw requests:
    an INSERT ... RETURNING through EXEC_SQL (both) or QUERY_SQL (1.11.1) leaves the
    leader's connection in a state where its next write aborts the node
    (vfs.c: vfsFileShmLock: Assertion `wal->n_tx == 0'), so refusing is the only safe choice."""
    auto.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, x)")
    for sql in ("INSERT INTO t (x) VALUES (1) RETURNING id",
                "UPDATE t SET x = 2 RETURNING *",
                "DELETE FROM t RETURNING id"):
        with pytest.raises(dqlite.NotSupportedError, match="RETURNING"):
            auto.execute(sql)
    auto.execute("INSERT INTO t (x) VALUES (3)")  # the next write: the leader is fine
    assert auto.execute("SELECT x FROM t").fetchall() == [(3,)]
    assert_cluster_healthy(dqlite_cluster)


def test_null_in_boolean_and_datetime_columns(auto):
    """Both versions send a NULL in a DATETIME column as ISO8601 "" and in a BOOLEAN
    column as false (§1.7): the driver gives None for the former; the latter is lost
    by the server and comes back False."""
    auto.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, d DATETIME, b BOOLEAN)")
    auto.execute("INSERT INTO t VALUES (1, NULL, NULL)")
    auto.execute("INSERT INTO t VALUES (2, '2024-01-02 03:04:05', 1)")
    rows = auto.execute("SELECT d, b FROM t ORDER BY id").fetchall()
    assert rows[0] == (None, False)
    assert rows[1][1] is True and rows[1][0].year == 2024
    # The SQL NULL is still there: an expression without the declared type shows it.
    assert auto.execute("SELECT b IS NULL, d IS NULL FROM t WHERE id = 1").fetchone() == (1, 1)


def test_statement_tails(auto, server_caps):
    """1.15+ fails QUERY_SQL/PREPARE on a second statement; 1.11.1 ignores it silently.
    The driver refuses a real second statement itself on both; trailing semicolons,
    blanks and comments are not a tail."""
    with pytest.raises(dqlite.ProgrammingError, match="one statement"):
        auto.execute("SELECT 1; SELECT 2")
    for sql in ("SELECT 1;", "SELECT 1; ", "SELECT 1;;", "SELECT 1; -- done", "SELECT 1 /* c */;"):
        assert auto.execute(sql).fetchall() == [(1,)], sql
    auto.executescript("CREATE TABLE s (x); INSERT INTO s VALUES (1); INSERT INTO s VALUES (2);")
    assert auto.execute("SELECT sum(x) FROM s").fetchone() == (3,)


def test_rowless_read_only_pragma(auto):
    """A read-only PRAGMA without result columns fails "not an error" on both versions
    through QUERY; the driver then runs it through EXEC."""
    cur = auto.execute("PRAGMA no_such_pragma_is_a_no_op")
    assert cur.description is None or cur.fetchall() == []
    assert auto.execute("SELECT 1").fetchone() == (1,)
