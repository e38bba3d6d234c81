"""What only the asyncio API has: concurrency, cancellation, timeouts, terminate.

The behaviour both APIs share is tested once, through both (see conftest.py).
"""

from __future__ import annotations

import asyncio
import signal
import socket

import pytest

import dqlite
import dqlite.aio
import dqlite._session
from dqlite.cluster import ClusterAdmin

try:  # the wire bytes, written from protocol.md (tests/wirebytes.py)
    from wirebytes import RESULT, message
except ImportError:  # tests/ imported as a package
    from tests.wirebytes import RESULT, message  # type: ignore[no-redef]

LOOPS = ["asyncio", "uvloop"]


def run(coro, loop_kind: str = "asyncio"):
    if loop_kind == "uvloop":
        uvloop = pytest.importorskip("uvloop", reason="uvloop is a test dependency")
        return uvloop.run(coro)
    return asyncio.run(coro)


async def make_table(addresses, database, rows: int) -> None:
    conn = await dqlite.aio.connect(addresses, database, autocommit=True)
    await conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v INTEGER)")
    await conn.executemany("INSERT INTO t VALUES (?, ?)", ((i, i * 3) for i in range(rows)))
    await conn.close()


@pytest.mark.parametrize("loop_kind", LOOPS)
def test_many_tasks_on_many_connections(dqlite_cluster, dqlite_database, loop_kind):
    """50 tasks share 10 connections (a connection serves one task at a time)."""

    async def main():
        await make_table(dqlite_cluster.addresses, dqlite_database, 1000)
        conns = [await dqlite.aio.connect(dqlite_cluster.addresses, dqlite_database, autocommit=True)
                 for _ in range(10)]
        locks = [asyncio.Lock() for _ in conns]
        checked = 0

        async def task(n: int) -> None:
            nonlocal checked
            conn, lock = conns[n % 10], locks[n % 10]
            for i in range(100):
                key = (n * 100 + i) % 1000
                async with lock:
                    cur = await conn.execute("SELECT v FROM t WHERE id = ?", (key,))
                    assert await cur.fetchall() == [(key * 3,)]
                checked += 1

        await asyncio.gather(*(task(n) for n in range(50)))
        for conn in conns:
            await conn.close()
        return checked

    assert run(main(), loop_kind) == 5000


def test_a_second_operation_at_once_is_refused(dqlite_cluster, dqlite_database):
    async def main():
        conn = await dqlite.aio.connect(dqlite_cluster.addresses, dqlite_database, autocommit=True)
        slow = asyncio.create_task(conn.execute(
            "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 3000000) "
            "SELECT count(*) FROM c"))
        await asyncio.sleep(0.01)
        with pytest.raises(dqlite.InterfaceError, match="in progress"):
            await conn.execute("SELECT 1")
        cur = await slow
        assert await cur.fetchone() == (3000000,)
        await conn.close()

    run(main())


@pytest.mark.parametrize("loop_kind", LOOPS)
def test_cancel_in_the_middle_of_a_large_result(dqlite_cluster, dqlite_database, loop_kind):
    """The next query never reads the cancelled query's leftover batches."""

    async def main():
        await make_table(dqlite_cluster.addresses, dqlite_database, 100_000)
        conn = await dqlite.aio.connect(dqlite_cluster.addresses, dqlite_database, autocommit=True)
        started = asyncio.Event()

        async def reader():
            cur = await conn.execute("SELECT id, v FROM t ORDER BY id")
            n = 0
            async for _ in cur:
                n += 1
                if n == 1000:
                    started.set()
                await asyncio.sleep(0)
            return n

        task = asyncio.create_task(reader())
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        # Usable again (it reconnects): a fresh result, not the old batches.
        cur = await conn.execute("SELECT count(*), sum(v) FROM t")
        assert await cur.fetchall() == [(100_000, 3 * sum(range(100_000)))]
        await conn.close()

    run(main(), loop_kind)


@pytest.mark.parametrize("loop_kind", LOOPS)
def test_cancel_while_a_prepared_query_awaits_its_answer(dqlite_cluster, dqlite_database, loop_kind):
    """The cancelled query's answer, still to come, is never taken for the next one's.

    A query run again takes the cursor's hot path (no session generator):
    cancelled there, the connection must end up as after any cancelled
    operation (the socket dropped; it reconnects).
    """
    slow = "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < ?) SELECT count(*) FROM c"

    async def main():
        conn = await dqlite.aio.connect(dqlite_cluster.addresses, dqlite_database, autocommit=True)
        cur = conn.cursor()
        await cur.execute(slow, (10,))  # prepared now: its next runs take the hot path
        assert await cur.fetchall() == [(10,)]
        # Some 70 ms of work for the node: short of an election timeout.
        task = asyncio.create_task(cur.execute(slow, (300_000,)))
        while not conn._busy:  # the query is on its way
            await asyncio.sleep(0)
        await asyncio.sleep(0.005)
        assert not task.done()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert cur.description is None
        for n in (5, 7):
            await cur.execute(slow, (n,))
            assert await cur.fetchall() == [(n,)]
        await conn.close()

    run(main(), loop_kind)


def test_cancelled_commit_is_reported_as_of_unknown_outcome(dqlite_fresh_cluster):
    cluster = dqlite_fresh_cluster

    async def main():
        conn = await dqlite.aio.connect(cluster.addresses, "db", timeout=5)
        await conn.execute("CREATE TABLE t (x)")
        await conn.commit()
        await conn.execute("INSERT INTO t VALUES (1)")
        leader = cluster.node_at(conn.leader)
        leader.kill(signal.SIGSTOP)  # COMMIT goes out; no answer comes
        try:
            task = asyncio.create_task(conn.commit())
            await asyncio.sleep(0.2)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        finally:
            leader.kill(signal.SIGCONT)
        with pytest.raises(dqlite.CommitOutcomeUnknownError):
            await conn.execute("SELECT 1")
        # Reported once; then the connection works again on whoever leads.
        cur = await conn.execute("SELECT count(*) FROM t")
        assert (await cur.fetchone())[0] in (0, 1)
        await conn.close()

    run(main())


@pytest.mark.parametrize("loop_kind", LOOPS)
def test_operation_timeout_closes_and_reconnects(dqlite_fresh_cluster, loop_kind):
    cluster = dqlite_fresh_cluster

    async def main():
        conn = await dqlite.aio.connect(cluster.addresses, "db", timeout=2, autocommit=True)
        await conn.execute("CREATE TABLE t (x)")
        leader = cluster.node_at(conn.leader)
        leader.kill(signal.SIGSTOP)
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            with pytest.raises(dqlite.OperationalError, match="timed out"):
                await conn.execute("INSERT INTO t VALUES (1)")
        finally:
            leader.kill(signal.SIGCONT)
        assert loop.time() - started < 2 + 10  # the timeout, with slack no busy machine uses up
        # The next use reconnects within the same timeout, so first wait until
        # the nodes agree on a leader again: an election still running on a
        # loaded machine is not what this test is about.
        await asyncio.to_thread(cluster.wait_for_leader)
        # It reconnects on its next use (the INSERT's outcome is unknown).  The
        # node just resumed may still answer as the leader and then refuse the
        # statement once it has stepped down ("no database opened"): the
        # statement then runs again on the new leader.
        count = (await (await conn.execute("SELECT count(*) FROM t")).fetchall())[0][0]
        assert count in (0, 1)
        await conn.close()

    run(main(), loop_kind)


def test_connect_timeout_lists_the_addresses_tried():
    async def main():
        with pytest.raises(dqlite.OperationalError, match=r"127\.0\.0\.1:1\b"):
            await dqlite.aio.connect(["127.0.0.1:1"], "db", timeout=0.3)

    run(main())


def test_terminate_from_outside_the_loop(dqlite_cluster, dqlite_database):
    async def open_conn():
        return await dqlite.aio.connect(dqlite_cluster.addresses, dqlite_database)

    loop = asyncio.new_event_loop()
    conn = loop.run_until_complete(open_conn())
    loop.run_until_complete(conn.execute("SELECT 1"))
    loop.close()
    conn.terminate()  # its loop is gone: still closes the socket
    assert conn.closed
    with pytest.raises(dqlite.ProgrammingError, match="closed"):
        conn.cursor()


def test_leader_transfer_while_tasks_run(dqlite_fresh_cluster):
    """Tasks see a clean lost-connection error, and continue on the new leader."""
    cluster = dqlite_fresh_cluster

    async def main():
        await make_table(cluster.addresses, "db", 100)
        conns = [await dqlite.aio.connect(cluster.addresses, "db", autocommit=True) for _ in range(4)]
        moved = asyncio.Event()
        failures = []

        async def worker(conn):
            done = 0
            while done < 200:
                try:
                    cur = await conn.execute("SELECT v FROM t WHERE id = ?", (done % 100,))
                    assert await cur.fetchall() == [((done % 100) * 3,)]
                    done += 1
                except dqlite.ConnectionLostError as exc:
                    failures.append(exc)
                if done == 50:
                    await moved.wait()
            return done

        async def mover():
            await asyncio.sleep(0.05)
            old = cluster.leader_node()
            target = next(n for n in cluster.nodes if n is not old)
            await asyncio.to_thread(ClusterAdmin(cluster.addresses).transfer, target.id)
            moved.set()
            return target.address

        results = await asyncio.gather(mover(), *(worker(c) for c in conns))
        new_leader = results[0]
        assert results[1:] == [200] * 4
        assert all(c.leader == new_leader for c in conns)
        assert not any(isinstance(f, dqlite.CommitOutcomeUnknownError) for f in failures)
        for c in conns:
            await c.close()

    run(main())


def test_an_unexpected_exception_midway_through_a_query_drops_the_socket(dqlite_cluster, dqlite_database,
                                                                          monkeypatch):
    # White-box: the exception (no dqlite Error, no cancellation) comes after
    # the first batch of a many-batch result was read, with the rest still
    # arriving: the next query must never take that rest for its own answer.
    sql = "WITH RECURSIVE k(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM k WHERE x < ?) SELECT x FROM k"

    async def main():
        conn = await dqlite.aio.connect(dqlite_cluster.addresses, dqlite_database, autocommit=True)
        await (await conn.execute(sql, (3,))).fetchall()
        def broken(*args):
            raise MemoryError

        monkeypatch.setattr(dqlite._session, "Result", broken)  # called once the first batch is in
        with pytest.raises(MemoryError):
            await conn.execute(sql, (20000,))
        monkeypatch.undo()
        assert await (await conn.execute("SELECT 42")).fetchall() == [(42,)]
        await conn.close()

    run(main())


# -- the protocol: one future per answer, sends at once -------------------------


async def _protocol_on_a_socketpair():
    """A ``_StreamProtocol`` on one end of a socket pair, on the running loop;
    returns it and the other end."""
    from dqlite._protocol import Decoder
    from dqlite.aio import _StreamProtocol

    ours, theirs = socket.socketpair()
    protocol = _StreamProtocol(Decoder())
    await asyncio.get_running_loop().create_connection(lambda: protocol, sock=ours)
    return protocol, theirs


@pytest.mark.parametrize("loop_kind", LOOPS)
def test_an_answer_in_pieces_completes_its_future_once_it_is_whole(loop_kind):
    async def main():
        protocol, theirs = await _protocol_on_a_socketpair()
        answer = message(RESULT, bytes(32))  # a 4-word body
        try:
            protocol.write(b"request!")
            waiter = protocol.wait_for_message()
            async with asyncio.timeout(5):
                for start, end in ((0, 5), (5, 12), (12, 20)):  # part of the header, then of the body
                    theirs.send(answer[start:end])
                    while protocol.decoder.buffered < end:  # the loop took the piece in
                        await asyncio.sleep(0)
                    assert not waiter.done()
                theirs.send(answer[20:])
                await waiter
            return protocol.decoder.next_message(), protocol.decoder.buffered
        finally:
            protocol.transport.close()
            theirs.close()

    assert run(main(), loop_kind) == (RESULT, 40)


@pytest.mark.parametrize("loop_kind", LOOPS)
def test_a_request_goes_out_before_the_write_returns(loop_kind):
    """No send is held back, not even while the loop has other callbacks to run."""

    async def main():
        protocol, theirs = await _protocol_on_a_socketpair()
        theirs.setblocking(False)
        try:
            asyncio.get_running_loop().call_soon(lambda: None)
            protocol.write(b"request!")
            return theirs.recv(100)
        finally:
            protocol.transport.close()
            theirs.close()

    assert run(main(), loop_kind) == b"request!"


def test_busy_poll_is_accepted_and_ignored(dqlite_cluster, dqlite_database):
    """The sync driver's option, checked as it checks it (one set of options serves both)."""

    async def main():
        for value in (0, 0.001):
            conn = await dqlite.aio.connect(dqlite_cluster.addresses, dqlite_database, busy_poll=value)
            assert await (await conn.execute("SELECT ?", (value,))).fetchall() == [(value,)]
            await conn.close()
        with pytest.raises(dqlite.InterfaceError, match="busy_poll"):
            await dqlite.aio.connect(dqlite_cluster.addresses, dqlite_database, busy_poll=1)

    run(main())


def test_fetchall_nowait_takes_only_a_result_that_has_all_arrived(dqlite_cluster, dqlite_database):
    many = "WITH RECURSIVE k(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM k WHERE x < ?) SELECT x FROM k"

    async def main():
        conn = await dqlite.aio.connect(dqlite_cluster.addresses, dqlite_database)
        cur = conn.cursor()
        assert cur.fetchall_nowait() is None  # no result
        await cur.execute("SELECT 1, 'one'")
        assert cur.fetchall_nowait() == [(1, "one")]
        assert cur.fetchall_nowait() == []  # taken
        await cur.execute(many, (50000,))  # several batches: the rest is still to come
        assert cur.fetchall_nowait() is None
        assert len(await cur.fetchall()) == 50000
        await cur.execute("SELECT 2")
        await conn.close()
        assert cur.fetchall_nowait() is None  # closed: fetchall() says why

    run(main())


def test_rollback_nowait_ends_only_what_needs_no_await(dqlite_cluster, dqlite_database):
    async def count(conn) -> int:
        return (await (await conn.execute("SELECT count(*) FROM t")).fetchall())[0][0]

    async def main():
        conn = await dqlite.aio.connect(dqlite_cluster.addresses, dqlite_database)
        observer = await dqlite.aio.connect(dqlite_cluster.addresses, dqlite_database, autocommit=True)
        await observer.execute("CREATE TABLE t (x)")
        assert conn.rollback_nowait()  # no transaction: nothing to do
        assert await count(conn) == 0 and conn.in_transaction
        assert conn.rollback_nowait() and not conn.in_transaction  # one that only read ends at once...
        await observer.execute("INSERT INTO t VALUES (1)")
        assert await count(conn) == 1  # ... for real: the next read has a new snapshot
        await conn.execute("INSERT INTO t VALUES (2)")
        assert not conn.rollback_nowait() and conn.in_transaction  # one that wrote must be awaited
        await conn.rollback()
        assert await count(observer) == 1
        await conn.close()
        assert not conn.rollback_nowait()  # closed: rollback() says why
        await observer.close()

    run(main())
