"""SIGSTOP the leader for 10 s, then SIGCONT: nothing hangs, nothing acknowledged is lost.

A stopped leader keeps its sockets open and answers nothing, the worst case for
a client: only its timeout can tell. Every operation must end within its
timeout (with ``OperationalError`` or success); once the other nodes have
elected a new leader, the client goes on there.
"""

from __future__ import annotations

import signal
import time

import pytest

import dqlite

from faultkit import RECOVERY_LIMIT, committed_ids, record

pytestmark = pytest.mark.timeout(120)

TIMEOUT = 2.0
STOPPED_FOR = 10.0
#: Scheduling slack on a loaded 2-core machine.
SLACK = 1.0


def test_sigstop_leader_for_10_seconds(dqlite_fresh_cluster, api_connect):
    cluster = dqlite_fresh_cluster
    auto = api_connect(cluster.addresses, "db", autocommit=True, timeout=TIMEOUT)
    tx = api_connect(cluster.addresses, "db", timeout=TIMEOUT)
    auto.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
    tx.execute("INSERT INTO t (id, v) VALUES (-1, 'in a transaction at the stop')")  # opens one
    acked: set[int] = set()
    unknown: set[int] = set()
    refused: set[int] = set()
    durations: list[tuple[float, str]] = []
    leader = cluster.node_at(tx.leader)
    leader.kill(signal.SIGSTOP)
    stopped_at = time.monotonic()
    try:
        # The open transaction: lost, and said so within the timeout.
        started = time.monotonic()
        with pytest.raises(dqlite.TransactionLostError):
            tx.execute("INSERT INTO t (id, v) VALUES (-2, 'x')")
        durations.append((time.monotonic() - started, "TransactionLostError"))
        tx.rollback()
        i = 0
        while time.monotonic() - stopped_at < STOPPED_FOR and i < 100_000:
            i += 1
            started = time.monotonic()
            try:
                auto.execute("INSERT INTO t (id, v) VALUES (?, ?)", (i, "during the stop"))
                what = "ok"
                acked.add(i)
            except dqlite.CommitOutcomeUnknownError:
                what = "CommitOutcomeUnknownError"
                unknown.add(i)
            except dqlite.OperationalError as exc:
                what = type(exc).__name__
                refused.add(i)
            durations.append((time.monotonic() - started, what))
            if i % 10 == 0:
                # A read too, through the other connection.
                started = time.monotonic()
                try:
                    tx.execute("SELECT count(*) FROM t").fetchone()
                    tx.rollback()
                    what = "ok"
                except dqlite.OperationalError as exc:
                    what = type(exc).__name__
                    tx.rollback()
                durations.append((time.monotonic() - started, what))
    finally:
        leader.kill(signal.SIGCONT)
    resumed_at = time.monotonic()
    # After SIGCONT: the old leader finds out it was deposed; the cluster goes on.
    for j in range(i + 1, i + 1 + 200):
        if time.monotonic() - resumed_at > 3:
            break
        started = time.monotonic()
        try:
            auto.execute("INSERT INTO t (id, v) VALUES (?, ?)", (j, "after"))
            acked.add(j)
            what = "ok"
        except dqlite.CommitOutcomeUnknownError:
            unknown.add(j)
            what = "CommitOutcomeUnknownError"
        except dqlite.OperationalError as exc:
            refused.add(j)
            what = type(exc).__name__
        durations.append((time.monotonic() - started, what))
    tx.execute("INSERT INTO t (id, v) VALUES (-3, 'next transaction')")
    tx.commit()
    longest, longest_what = max(durations)
    failures = [w for _, w in durations if w != "ok"]
    assert failures, "nothing noticed the stopped leader"
    assert longest <= TIMEOUT + SLACK, f"an operation took {longest:.2f}s ({longest_what}); timeout {TIMEOUT}s"
    present = committed_ids(cluster.addresses, "db")
    ids = present - {-3}
    assert acked <= ids, f"acknowledged but lost: {sorted(acked - ids)}"
    assert ids <= acked | unknown, f"applied though refused: {sorted(ids - acked - unknown)}"
    assert -3 in present and -1 not in present and -2 not in present
    assert all(n.is_alive() for n in cluster.nodes)
    cluster.wait_for_leader(timeout=RECOVERY_LIMIT)
    kinds = {w: failures.count(w) for w in sorted(set(failures))}
    record("SIGSTOP leader 10 s, then SIGCONT",
           f"{kinds}; {len(durations) - len(failures)} ops ok; longest op {longest:.2f}s (timeout {TIMEOUT:g}s); "
           f"{len(acked)} acked all present, {len(unknown & present)}/{len(unknown)} unknown applied")


def test_failover_while_the_old_leader_is_still_frozen(dqlite_fresh_cluster, api_connect):
    """A frozen leader (SIGSTOP, or a partition) must not keep the client from the new one.

    The other nodes elect a new leader within about a second; the client's
    next operation after its first timeout should find it.
    """
    cluster = dqlite_fresh_cluster
    auto = api_connect(cluster.addresses, "db", autocommit=True, timeout=TIMEOUT)
    auto.execute("CREATE TABLE t (id INTEGER PRIMARY KEY)")
    leader = cluster.node_at(auto.leader)
    leader.kill(signal.SIGSTOP)
    stopped_at = time.monotonic()
    outcomes = []
    try:
        for i in range(1, 100):
            if time.monotonic() - stopped_at > 3 * TIMEOUT + SLACK:
                break
            try:
                auto.execute("INSERT INTO t (id) VALUES (?)", (i,))
            except dqlite.OperationalError as exc:
                outcomes.append(type(exc).__name__)
                continue
            outcomes.append("ok")
            break
    finally:
        leader.kill(signal.SIGCONT)
    assert outcomes[-1] == "ok", f"no operation reached the new leader while the old one was frozen: {outcomes}"
    assert auto.leader != leader.address
    record("SIGSTOP leader: reconnect to the new leader while the old one is frozen",
           f"{outcomes} within {time.monotonic() - stopped_at:.2f}s")
