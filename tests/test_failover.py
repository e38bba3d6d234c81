"""Leader discovery, leader loss and the 1.11.1 server hazards, on clusters of their own."""

import logging

import pytest

import dqlite
from dqlite.cluster import ClusterAdmin, NodeClient, find_leader


def assert_all_alive(cluster):
    assert all(node.is_alive() for node in cluster.nodes)
    for node in cluster.nodes:
        with NodeClient(node.address) as client:
            assert client.leader()[1] == cluster.leader_address()


def table_with_one_row(cluster, api_connect):
    """A PEP 249 connection in a transaction that created t and inserted 1 into it."""
    conn = api_connect(cluster.addresses, "db")
    conn.execute("CREATE TABLE t (x)")
    conn.execute("INSERT INTO t VALUES (1)")
    return conn


@pytest.fixture
def cluster(dqlite_fresh_cluster):
    return dqlite_fresh_cluster


def test_connect_through_a_follower_reaches_the_leader(cluster, api_connect):
    leader = cluster.leader_address()
    follower = next(a for a in cluster.addresses if a != leader)
    conn = api_connect(follower, "db", autocommit=True)
    assert conn.leader == leader
    conn.execute("CREATE TABLE t (x)")
    conn.close()


def test_dead_bootstrap_address_first_is_skipped(cluster, api_connect):
    from dqlite.server import free_ports

    dead = f"127.0.0.1:{free_ports(1)[0]}"
    conn = api_connect([dead, *cluster.addresses], "db", timeout=5)
    assert conn.execute("SELECT 1").fetchone() == (1,)
    conn.close()


def test_find_leader_and_admin_api(cluster):
    leader = find_leader(cluster.addresses)
    admin = ClusterAdmin(cluster.addresses)
    assert admin.leader() == leader == cluster.leader_address()
    nodes = admin.nodes()
    assert sorted((n.id, n.address, n.role_name) for n in nodes) == sorted(
        (n.id, n.address, "voter") for n in cluster.nodes)
    domain, weight = admin.describe(leader)
    assert (domain, weight) == (0, 0)
    with NodeClient(leader) as client:
        client.set_weight(7)
        assert client.describe() == (0, 7)
    with dqlite.connect(cluster.addresses, "dumped", autocommit=True) as conn:
        conn.execute("CREATE TABLE t (x)")
    files = admin.dump("dumped")
    assert set(files) == {"dumped", "dumped-wal"} and files["dumped"][:16] == b"SQLite format 3\x00"
    extra = cluster.add_node(role=dqlite.cluster.SPARE)
    assert (extra.id, dqlite.cluster.SPARE) in [(n.id, n.role) for n in admin.nodes()]
    admin.assign(extra.id, dqlite.cluster.STANDBY)
    assert (extra.id, dqlite.cluster.STANDBY) in [(n.id, n.role) for n in admin.nodes()]
    admin.remove(extra.id)
    assert extra.id not in [n.id for n in admin.nodes()]
    assert all(node.is_alive() for node in cluster.nodes)


def test_admin_requests_on_a_follower_say_not_leader(cluster):
    follower = next(a for a in cluster.addresses if a != cluster.leader_address())
    with NodeClient(follower) as client, pytest.raises(dqlite.OperationalError, match="not leader") as info:
        client.transfer(0)
    assert info.value.code == 10250


@pytest.mark.parametrize("method", ["execute", "executemany"])
def test_a_statement_after_a_leader_transfer_runs_on_the_new_leader(cluster, api_connect, transfer_away, method):
    """The old leader refuses it ("not leader") before running it: it runs again on the new one."""
    conn = api_connect(cluster.addresses, "db", autocommit=True)
    conn.execute("CREATE TABLE t (x)")
    conn.execute("INSERT INTO t VALUES (1)")
    new_leader = transfer_away(cluster)
    if method == "execute":
        conn.execute("INSERT INTO t VALUES (?)", (2,))
    else:
        conn.executemany("INSERT INTO t VALUES (?)", [(2,), (3,)])
    assert conn.leader == new_leader
    assert [r[0] for r in conn.execute("SELECT x FROM t ORDER BY x")] == ([1, 2] if method == "execute" else [1, 2, 3])
    conn.close()


def test_transaction_lost_with_the_leader(cluster, api_connect, transfer_away):
    conn = table_with_one_row(cluster, api_connect)
    conn.commit()
    conn.execute("INSERT INTO t VALUES (2)")  # opens a transaction
    transfer_away(cluster)
    with pytest.raises(dqlite.TransactionLostError):
        conn.execute("INSERT INTO t VALUES (3)")
    # Refused until the application acknowledges the loss with rollback().
    with pytest.raises(dqlite.TransactionLostError, match="rollback"):
        conn.execute("INSERT INTO t VALUES (4)")
    conn.rollback()
    assert [r[0] for r in conn.execute("SELECT x FROM t")] == [1]
    conn.execute("INSERT INTO t VALUES (5)")
    conn.commit()
    check = api_connect(cluster.addresses, "db")
    assert [r[0] for r in check.execute("SELECT x FROM t ORDER BY x")] == [1, 5]
    check.close()
    conn.close()


def test_leader_moving_between_transactions_loses_nothing(cluster, api_connect, transfer_away):
    """A read-only transaction's end begins the next one on the server; if the
    leader moves before that one runs anything, nothing is lost: the next
    statement runs on the new leader, in a new transaction."""
    conn = table_with_one_row(cluster, api_connect)
    conn.commit()
    assert conn.execute("SELECT count(*) FROM t").fetchone() == (1,)
    conn.rollback()
    new_leader = transfer_away(cluster)
    assert conn.execute("SELECT count(*) FROM t").fetchone() == (1,)
    assert conn.leader == new_leader and conn.in_transaction
    conn.execute("INSERT INTO t VALUES (2)")
    conn.commit()
    assert conn.execute("SELECT x FROM t ORDER BY x").fetchall() == [(1,), (2,)]
    conn.close()


def test_ping_checks_the_node_still_leads(cluster, api_connect, transfer_away):
    conn = table_with_one_row(cluster, api_connect)
    conn.ping()
    assert conn.in_transaction  # no SQL sent: the transaction is as it was
    conn.commit()
    conn.ping()
    assert not conn.in_transaction
    new_leader = transfer_away(cluster)
    with pytest.raises(dqlite.ConnectionLostError, match="no longer leads"):
        conn.ping()
    conn.execute("INSERT INTO t VALUES (2)")  # reconnects to the new leader
    assert conn.leader == new_leader
    conn.commit()
    conn.ping()
    conn.close()
    with pytest.raises(dqlite.ProgrammingError, match="closed"):
        conn.ping()


def test_commit_after_the_leader_moved_reports_the_transaction_lost(cluster, api_connect, transfer_away):
    conn = api_connect(cluster.addresses, "db")
    conn.execute("CREATE TABLE t (x)")
    conn.commit()
    conn.execute("INSERT INTO t VALUES (1)")
    transfer_away(cluster)
    with pytest.raises(dqlite.TransactionLostError):
        conn.commit()
    assert not conn.in_transaction
    assert conn.execute("SELECT count(*) FROM t").fetchone() == (0,)
    conn.close()


def test_commit_of_unknown_outcome_is_reported_and_not_retried(cluster, api_connect):
    """The leader dies after COMMIT is sent: the client cannot know, and says so."""
    conn = api_connect(cluster.addresses, "db", timeout=2)
    conn.execute("CREATE TABLE t (x)")
    conn.commit()
    conn.execute("INSERT INTO t VALUES (1)")
    leader = cluster.node_at(conn.leader)
    # Stop the leader's process (SIGSTOP): COMMIT is sent and no answer comes.
    import signal

    leader.kill(signal.SIGSTOP)
    try:
        with pytest.raises(dqlite.CommitOutcomeUnknownError, match="unknown"):
            conn.commit()
    finally:
        leader.kill(signal.SIGCONT)
    assert not conn.in_transaction


def test_hazards_are_refused_and_every_node_survives(cluster, api_connect):
    conn = api_connect(cluster.addresses, "db", autocommit=True, timeout=5)
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, x)")
    # INSERT ... RETURNING through a query aborts a 1.11.1 node (protocol.md §8.5).
    with pytest.raises(dqlite.NotSupportedError, match="RETURNING"):
        conn.execute("INSERT INTO t (x) VALUES (1) RETURNING id")
    with pytest.raises(dqlite.NotSupportedError):
        conn.execute("WITH v AS (SELECT 1) UPDATE t SET x = 2 RETURNING *")
    # A column-name header of >= 4096 bytes makes the server stream empty
    # batches forever (§8.7): detected and given up on.
    wide = ", ".join(f"1 AS c{i:04d}" for i in range(600))
    with pytest.raises(dqlite.ProtocolError, match="no rows"):
        conn.execute(f"SELECT {wide}")
    assert conn.execute("SELECT count(*) FROM t").fetchone() == (0,)
    # Statement ids: many statements through a tiny cache (FINALIZE of evicted
    # ids, never reused; §8.1), then DESCRIBE (format 0 only; §8.4).
    small = api_connect(cluster.addresses, "db", autocommit=True, cached_statements=2)
    for round_ in range(3):
        for i in range(10):
            assert small.execute(f"SELECT {i} + ?", (round_,)).fetchone() == (i + round_,)
    small.close()
    ClusterAdmin(cluster.addresses).describe(cluster.leader_address())
    conn.close()
    assert_all_alive(cluster)


def test_losing_an_explicit_transaction_in_autocommit_mode(cluster, api_connect, transfer_away):
    """BEGIN ... in autocommit mode: a lost leader loses the transaction, no unknown outcome."""
    conn = api_connect(cluster.addresses, "db", autocommit=True)
    conn.execute("CREATE TABLE t (x)")
    conn.execute("BEGIN")
    conn.execute("INSERT INTO t VALUES (1)")
    transfer_away(cluster)
    with pytest.raises(dqlite.TransactionLostError):
        conn.execute("INSERT INTO t VALUES (2)")
    conn.rollback()
    assert conn.execute("SELECT count(*) FROM t").fetchone() == (0,)


def test_a_missing_table_is_reported_after_one_barrier(connect, caplog):
    # A PREPARE that finds no such table may be a new 1.11 leader that has not
    # applied the last commits yet: the driver runs a raft barrier and prepares
    # again, once per connection.  A table that really is missing stays missing.
    conn = connect()
    with caplog.at_level(logging.DEBUG, logger="dqlite"):
        for _ in range(2):
            with pytest.raises(dqlite.OperationalError, match="no such table: nowhere"):
                conn.execute("SELECT * FROM nowhere")
    assert caplog.text.count("running a barrier") == 1
    assert conn.execute("SELECT 1").fetchall() == [(1,)]
