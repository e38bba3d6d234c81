"""The node store (dqlite.nodestore): a one-node address survives that node's
loss, removed members are forgotten, the store file, and the concurrent
leader search; on clusters of their own, through both APIs."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

import dqlite
from dqlite.cluster import ClusterAdmin
from dqlite.nodestore import NodeStore, node_store

# Generous bounds for a loaded machine; the behaviour is what is asserted.
TIMEOUT = 30.0


@pytest.fixture
def cluster(dqlite_fresh_cluster):
    return dqlite_fresh_cluster


def rows(conn) -> list[int]:
    return [r[0] for r in conn.execute("SELECT x FROM t ORDER BY x")]


def execute_after_loss(conn, sql: str) -> None:
    """``sql`` on a connection whose node may just have died: the first use
    reports the loss (and nothing ran), the next reconnects."""
    try:
        conn.execute(sql)
    except dqlite.ConnectionLostError:
        conn.rollback()  # acknowledges a lost transaction; nothing to do otherwise
        conn.execute(sql)


def pause(node) -> None:
    """SIGSTOP ``node`` and wait until the kernel has stopped it (the signal is
    delivered asynchronously: a request sent at once could still be served)."""
    node.kill(signal.SIGSTOP)
    deadline = time.monotonic() + 30
    while True:
        with open(f"/proc/{node.pid}/stat") as f:
            if f.read().rsplit(")", 1)[1].split()[0] in ("T", "t"):
                return
        assert time.monotonic() < deadline, f"{node!r} did not stop"
        time.sleep(0.001)


# -- unit behaviour, no cluster ---------------------------------------------------


@pytest.mark.server_independent
def test_store_is_keyed_by_the_addresses_it_learned():
    store = NodeStore()
    assert store.members("10.0.0.1:9001") == [] and store.leader("10.0.0.1:9001") is None
    store.learn(["10.0.0.1:9001"], [(1, "10.0.0.1:9001", 0), (2, "10.0.0.2:9001", 2),
                                    (3, "10.0.0.3:9001", 1)], "10.0.0.1:9001")
    # Found from any member, voters first, then standbys, then spares.
    for address in ("10.0.0.1:9001", "10.0.0.3:9001"):
        assert store.members(address) == ["10.0.0.1:9001", "10.0.0.3:9001", "10.0.0.2:9001"]
    assert store.leader(["10.0.0.9:9001", "10.0.0.2:9001"]) == "10.0.0.1:9001"
    assert store.members("10.0.0.9:9001") == []  # another cluster
    # Node 1 removed: forgotten as a member, still the seed that finds the cluster.
    store.learn(["10.0.0.1:9001"], [(2, "10.0.0.2:9001", 0), (3, "10.0.0.3:9001", 0)], "10.0.0.2:9001")
    assert store.members("10.0.0.1:9001") == ["10.0.0.2:9001", "10.0.0.3:9001"]
    assert store.clusters() == [["10.0.0.2:9001", "10.0.0.3:9001"]]
    # Two entries found to be one cluster are merged.
    store.learn(["10.0.0.7:9001"], [(7, "10.0.0.7:9001", 0)], "10.0.0.7:9001")
    assert len(store.clusters()) == 2
    store.learn(["10.0.0.7:9001"], [(7, "10.0.0.7:9001", 0), (2, "10.0.0.2:9001", 0)], "10.0.0.2:9001")
    assert store.clusters() == [["10.0.0.7:9001", "10.0.0.2:9001"]]
    assert store.members("10.0.0.1:9001") == store.members("10.0.0.7:9001")
    store.forget("10.0.0.1:9001")
    assert store.clusters() == []


@pytest.mark.server_independent
def test_node_store_option_is_checked():
    assert node_store() is node_store()
    with pytest.raises(dqlite.InterfaceError, match="node_store must be"):
        dqlite.connect("127.0.0.1:1", "db", node_store=42)
    with pytest.raises(dqlite.InterfaceError, match="file path"):
        dqlite.connect("127.0.0.1:1", "db", node_store="")


# -- a one-node address after that node is lost for good ------------------------


def test_one_node_address_survives_its_loss(cluster, api_connect):
    bootstrap = cluster.addresses[0]
    conn = api_connect(bootstrap, "db", timeout=TIMEOUT)
    conn.execute("CREATE TABLE t (x)")
    conn.executemany("INSERT INTO t VALUES (?)", [(1,), (2,), (3,)])
    conn.commit()
    assert set(node_store().members(bootstrap)) == set(cluster.addresses)
    cluster.node(1).kill()  # for good: never restarted
    # A new connection given only the dead node finds the cluster ...
    fresh = api_connect(bootstrap, "db", timeout=TIMEOUT)
    assert fresh.leader != bootstrap
    fresh.execute("INSERT INTO t VALUES (4)")
    fresh.commit()
    # ... and so does the existing one, once it has reported the loss.
    execute_after_loss(conn, "INSERT INTO t VALUES (5)")
    conn.commit()
    assert rows(fresh) == [1, 2, 3, 4, 5]  # nothing acknowledged was lost


def test_one_node_address_survives_its_loss_and_removal(cluster, api_connect):
    """The operator removes the dead node: it is forgotten as a member, and
    its address still finds the cluster."""
    bootstrap = cluster.addresses[0]
    store = NodeStore()
    conn = api_connect(bootstrap, "db", autocommit=True, timeout=TIMEOUT, node_store=store)
    conn.execute("CREATE TABLE t (x)")
    conn.execute("INSERT INTO t VALUES (1)")
    cluster.node(1).kill()
    survivors = cluster.addresses[1:]
    cluster.wait_for_leader(timeout=TIMEOUT)
    ClusterAdmin(survivors, timeout=TIMEOUT).remove(1)
    fresh = api_connect(bootstrap, "db", autocommit=True, timeout=TIMEOUT, node_store=store)
    fresh.execute("INSERT INTO t VALUES (2)")
    assert set(store.members(bootstrap)) == set(survivors)
    assert rows(fresh) == [1, 2]


@pytest.mark.parametrize("restarted", [False, True], ids=["same-process", "restarted"])
@pytest.mark.parametrize("role", ["leader", "follower"])
def test_leader_search_skips_a_frozen_bootstrap_node(cluster, api_connect, tmp_path, role, restarted):
    """The given node is paused (SIGSTOP), as the leader (the others elect a
    new one) or as a follower; the process knows it as the last leader, or
    (restarted) only has the store file.  The search finds the leader
    through the stored members within the timeout: the frozen node costs
    one share of it."""
    bootstrap = cluster.addresses[0]
    path = tmp_path / "nodes.json"
    store = NodeStore(path)
    api_connect(bootstrap, "db", autocommit=True, timeout=TIMEOUT, node_store=store).close()
    assert store.leader(bootstrap) == cluster.leader_address()
    if role == "follower":
        cluster.transfer_leadership(2)
    if restarted:
        store = NodeStore(path)
        assert store.leader(bootstrap) is None
    node = cluster.node(1)
    pause(node)
    try:
        # A share of a 9 s timeout is 3 s: the search is done well before the end.
        conn = api_connect(bootstrap, "db", autocommit=True, timeout=9, node_store=store)
        assert conn.leader != bootstrap
        conn.execute("CREATE TABLE t (x)")
        assert store.leader(bootstrap) == conn.leader
    finally:
        node.kill(signal.SIGCONT)


# -- removed members are forgotten ------------------------------------------------


def test_members_are_learned_at_connect_and_removed_ones_forgotten(cluster, api_connect):
    store = NodeStore()
    bootstrap = cluster.addresses[0]
    extra = cluster.add_node()
    conn = api_connect(bootstrap, "db", autocommit=True, timeout=TIMEOUT, node_store=store)
    assert set(store.members(bootstrap)) == {*cluster.addresses}
    ClusterAdmin(cluster.addresses, timeout=TIMEOUT).remove(extra.id)
    api_connect(bootstrap, "db", autocommit=True, timeout=TIMEOUT, node_store=store)
    assert extra.address not in store.members(bootstrap)
    assert set(store.members(bootstrap)) == {n.address for n in cluster.nodes if n is not extra}
    conn.execute("CREATE TABLE t (x)")


def test_members_are_learned_when_the_leader_changes(cluster, api_connect, transfer_away):
    store = NodeStore()
    bootstrap = cluster.addresses[0]
    conn = api_connect(bootstrap, "db", autocommit=True, timeout=TIMEOUT, node_store=store)
    conn.execute("CREATE TABLE t (x)")
    extra = cluster.add_node()
    assert extra.address not in store.members(bootstrap)
    new_leader = transfer_away(cluster)
    execute_after_loss(conn, "INSERT INTO t VALUES (1)")  # reconnects to the new leader
    assert conn.leader == new_leader
    assert extra.address in store.members(bootstrap)
    assert store.leader(bootstrap) == new_leader


# -- the store file -------------------------------------------------------------


def read_store(path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return json.load(f)["clusters"]


def test_store_file_is_written_atomically(cluster, api_connect, tmp_path, monkeypatch):
    path = tmp_path / "nodes.json"
    store = NodeStore(path)
    replaced: list[tuple[str, str, list]] = []
    real_replace = os.replace

    def watching_replace(src, dst):
        # At the moment of the switch the target still holds its old content,
        # and the new one is complete in a file of the same folder.
        before = read_store(dst) if os.path.exists(dst) else None
        replaced.append((os.fspath(src), os.fspath(dst), before))
        assert os.path.dirname(os.fspath(src)) == os.fspath(tmp_path)
        assert read_store(src)  # whole, valid JSON
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", watching_replace)
    api_connect(cluster.addresses[0], "db", timeout=TIMEOUT, node_store=store).close()
    assert len(replaced) == 1 and replaced[0][1] == str(path) and replaced[0][2] is None
    (entry,) = read_store(path)
    assert set(entry["members"]) == set(cluster.addresses) and entry["seeds"] == [cluster.addresses[0]]
    # Nothing changed: nothing written again.
    api_connect(cluster.addresses[0], "db", timeout=TIMEOUT, node_store=store).close()
    assert len(replaced) == 1
    assert sorted(os.listdir(tmp_path)) == ["nodes.json"]  # no temporary file left


def test_store_file_write_that_fails_leaves_the_old_file(cluster, api_connect, tmp_path, monkeypatch, caplog):
    path = tmp_path / "nodes.json"
    old = {"format": 1, "clusters": [{"members": ["10.9.9.9:9001"], "seeds": ["10.9.9.9:9001"]}]}
    path.write_text(json.dumps(old))
    store = NodeStore(path)

    def failing_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", failing_replace)
    with caplog.at_level(logging.WARNING, logger="dqlite.nodestore"):
        conn = api_connect(cluster.addresses[0], "db", autocommit=True, timeout=TIMEOUT, node_store=store)
    conn.execute("CREATE TABLE t (x)")  # the connection works regardless
    assert "could not write the dqlite node store" in caplog.text
    assert json.loads(path.read_text()) == old
    assert sorted(os.listdir(tmp_path)) == ["nodes.json"]


@pytest.mark.parametrize("content", [b"{not json", b"\xff\xfe\x00garbage", b'{"format": 1, "clusters": 3}',
                                     b'{"format": 1, "clusters": [{"members": [42]}]}', b"[]"])
def test_corrupt_store_file_is_ignored_with_a_warning(cluster, api_connect, tmp_path, caplog, content):
    path = tmp_path / "nodes.json"
    path.write_bytes(content)
    with caplog.at_level(logging.WARNING, logger="dqlite.nodestore"):
        conn = api_connect(cluster.addresses[0], "db", autocommit=True, timeout=TIMEOUT,
                           node_store=NodeStore(path))
    assert "ignoring it" in caplog.text
    conn.execute("CREATE TABLE t (x)")
    # Replaced by a valid store at the first thing learned.
    (entry,) = read_store(path)
    assert set(entry["members"]) == set(cluster.addresses)


def test_unreadable_store_file_is_ignored_with_a_warning(cluster, api_connect, tmp_path, caplog):
    path = tmp_path / "nodes.json"
    path.mkdir()  # a folder where the file should be: unreadable, and unwritable
    with caplog.at_level(logging.WARNING, logger="dqlite.nodestore"):
        conn = api_connect(cluster.addresses[0], "db", autocommit=True, timeout=TIMEOUT,
                           node_store=str(path))
    conn.execute("CREATE TABLE t (x)")
    assert "unreadable" in caplog.text and "could not write" in caplog.text


def test_a_restarted_process_finds_the_cluster_through_the_store_file(cluster, api, tmp_path):
    """One process learns the cluster into a file; the bootstrap node dies; a
    new process given only that node's address reaches the cluster."""
    path = tmp_path / "nodes.json"
    bootstrap = cluster.addresses[0]
    script = textwrap.dedent("""
        import asyncio, sys
        import dqlite, dqlite.aio
        api, address, path, value = sys.argv[1:]
        async def main():
            conn = await dqlite.aio.connect(address, "db", autocommit=True, timeout=30, node_store=path)
            await conn.execute("CREATE TABLE IF NOT EXISTS t (x)")
            await conn.execute("INSERT INTO t VALUES (?)", (int(value),))
            print(conn.leader)
            await conn.close()
        if api == "aio":
            asyncio.run(main())
        else:
            conn = dqlite.connect(address, "db", autocommit=True, timeout=30, node_store=path)
            conn.execute("CREATE TABLE IF NOT EXISTS t (x)")
            conn.execute("INSERT INTO t VALUES (?)", (int(value),))
            print(conn.leader)
            conn.close()
    """)

    def run(value: int) -> str:
        done = subprocess.run([sys.executable, "-c", script, api, bootstrap, str(path), str(value)],
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    run(1)
    assert set(read_store(path)[0]["members"]) == set(cluster.addresses)
    cluster.node(1).kill()
    assert run(2) != bootstrap
    conn = dqlite.connect(cluster.addresses[1:], "db", timeout=TIMEOUT)
    assert rows(conn) == [1, 2]
    conn.close()


# -- concurrency ----------------------------------------------------------------


def test_leader_search_asks_at_once_and_stops_at_the_leader(cluster):
    """A frozen node's probe (bounded by a minute here) is not waited for once
    the leader has named itself; a dead address is just one failed answer."""
    import asyncio

    from dqlite._probe import probe_leaders, probe_leaders_async
    from dqlite.server import free_ports

    leader = cluster.transfer_leadership(2)
    frozen = cluster.node(3)
    dead = f"127.0.0.1:{free_ports(1)[0]}"
    pause(frozen)
    try:
        candidates = [frozen.address, dead, cluster.addresses[0], leader]
        for results in (probe_leaders(candidates, 60.0),
                        asyncio.run(probe_leaders_async(candidates, 60.0))):
            assert (leader, leader, None) in results
            assert frozen.address not in [r.address for r in results]
        # The given addresses come first: a leader found through another is
        # only taken once they have all answered (here: the frozen one's
        # bound has passed).
        for results in (probe_leaders([frozen.address, leader], 2.0, preferred=[frozen.address]),
                        asyncio.run(probe_leaders_async([frozen.address, leader], 2.0,
                                                        preferred=[frozen.address]))):
            assert [r.address for r in results] == [leader, frozen.address]
            assert results[1].error is not None
    finally:
        frozen.kill(signal.SIGCONT)


def test_one_store_shared_by_threads_and_tasks(cluster):
    """Connections from threads and from asyncio tasks, each given one
    address, learn into one store entry at once."""
    import asyncio
    import threading

    import dqlite.aio

    store = NodeStore()
    errors: list[BaseException] = []

    def in_thread(address: str) -> None:
        try:
            dqlite.connect(address, "db", timeout=TIMEOUT, node_store=store).close()
        except BaseException as exc:  # reported below
            errors.append(exc)

    async def in_tasks() -> None:
        async def one(address: str) -> None:
            conn = await dqlite.aio.connect(address, "db", timeout=TIMEOUT, node_store=store)
            await conn.close()
        await asyncio.gather(*(one(a) for a in cluster.addresses * 3))

    threads = [threading.Thread(target=in_thread, args=(a,)) for a in cluster.addresses * 3]
    for thread in threads:
        thread.start()
    asyncio.run(in_tasks())
    for thread in threads:
        thread.join()
    assert not errors
    assert len(store.clusters()) == 1
    for address in cluster.addresses:
        assert set(store.members(address)) == set(cluster.addresses)
    assert store.leader(cluster.addresses) == cluster.leader_address()
