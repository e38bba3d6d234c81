"""A loopback TCP proxy of our own between the client and a node: delay, drop,
truncate, reset and corrupt bytes (tests/faultproxy.py).

Each case must end in a clear exception or in success with the right result.
The dqlite protocol carries no checksum, so a flipped bit inside a value (an
integer's bytes, a string's characters) cannot be noticed by any client; the
corruption sweeps check that wrong results come only from such bytes, and
that every flip of a structural byte (headers, lengths, counts, type codes,
terminators, end markers) ends in an exception or a correct result.

The node advertises the proxy's address, so the driver reaches it only
through the proxy. Each test runs through both APIs.
"""

from __future__ import annotations

import struct
import time

import pytest

import dqlite

from faultkit import record
from faultproxy import C2S, S2C, Blackhole, Corrupt, Delay, Reset, Tap, Trickle, Truncate

pytestmark = pytest.mark.timeout(180)

T = 0.5          # operation timeout of the sweeps' connections
SLACK = 1.0      # scheduling slack on a loaded machine

ROWS = [(1, 1.5, "alpha"), (2, -2.25, "béta ünï"), (3, None, "")]
SQL = "SELECT id, r, s FROM t ORDER BY id"
NAMES = ("id", "r", "s")


@pytest.fixture
def db(proxy_env, dqlite_database):
    """This test's database on the proxied node, with table t holding ROWS."""
    with proxy_env.direct(dqlite_database, autocommit=True) as conn:
        conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, r REAL, s TEXT)")
        conn.executemany("INSERT INTO t VALUES (?, ?, ?)", ROWS)
    return dqlite_database


def classify(exc: BaseException) -> str:
    return type(exc).__name__


def run_query(conn, sql=SQL):
    """(outcome, detail): "correct", "wrong" or the exception class name."""
    try:
        cur = conn.execute(sql)
        rows = cur.fetchall()
        names = tuple(d[0] for d in cur.description or ())
    except dqlite.Error as exc:
        return classify(exc), exc
    if rows == ROWS and names == NAMES:
        return "correct", rows
    return "wrong", (names, rows)


# -- where the values sit in a response (protocol.md §1.6, §2.2) ------------------------


def _pad8(n: int) -> int:
    return (n + 7) & ~7


def payload_offsets(stream: bytes) -> tuple[set[int], set[int]]:
    """(value bytes, ambiguous bytes) of a STMT/ROWS response stream.

    A flipped value or name byte changes a value without breaking the framing.
    Ambiguous are the bytes where a single-bit flip can still give a valid
    stream: a text's NUL terminator (0x00 -> 0x01 is a valid character, and
    the padding still ends the text) and the row headers' type codes (TEXT 3
    and FLOAT 2 differ by one bit and both fill 8 bytes for a short string).
    Every other byte is structure, which the decoder can check.
    """
    out: set[int] = set()
    ambiguous: set[int] = set()
    pos = 0
    while pos < len(stream):
        words, mtype = struct.unpack_from("<IB", stream, pos)
        body = pos + 8
        end = body + words * 8
        if mtype == 7:  # ROWS
            ncols = struct.unpack_from("<Q", stream, body)[0]
            p = body + 8
            for _ in range(ncols):
                n = stream.index(b"\0", p) - p
                out.update(range(p, p + n))
                ambiguous.add(p + n)
                p += _pad8(n + 1)
            while p < end:
                marker = stream[p:p + 8]
                if marker in (b"\xff" * 8, b"\xee" * 8):
                    break
                codes = []
                for i in range(ncols):
                    byte = stream[p + i // 2]
                    codes.append(byte & 0x0F if i % 2 == 0 else byte >> 4)
                ambiguous.update(range(p, p + (ncols + 1) // 2))
                p += _pad8((ncols + 1) // 2)
                for code in codes:
                    if code in (1, 2, 9, 11):       # int64, double, unixtime, boolean
                        out.update(range(p, p + 8))
                        p += 8
                    elif code in (3, 10):           # text
                        n = stream.index(b"\0", p) - p
                        out.update(range(p, p + n))
                        ambiguous.add(p + n)
                        p += _pad8(n + 1)
                    elif code == 4:                 # blob
                        n = struct.unpack_from("<Q", stream, p)[0]
                        out.update(range(p + 8, p + 8 + n))
                        p += 8 + _pad8(n)
                    else:                           # NULL: one zero word
                        p += 8
        pos = end
    return out, ambiguous


def connect_t(api_connect, proxy_env, db, **kwargs):
    """A connection through the proxy whose operations time out after ``T``.

    Setting it up (handshake, LEADER, OPEN through the proxy) is not what
    these tests test, and on a busy machine it can take longer than ``T``:
    a connect that timed out is tried again, for up to 30 s.
    """
    deadline = time.monotonic() + 30
    while True:
        try:
            return api_connect(proxy_env.address, db, timeout=T, **kwargs)
        except dqlite.OperationalError:
            if time.monotonic() > deadline:
                raise


def assert_recovers(conn) -> None:
    """After a fault: the connection's next query that gets through returns the
    right rows.  It reconnects first, and the reconnect and the answer each
    have the ``T`` timeout, which a busy machine can miss: a query that timed
    out is tried again, for up to 30 s; any other outcome fails the test."""
    deadline = time.monotonic() + 30
    while True:
        outcome, detail = run_query(conn)
        if outcome == "correct":
            return
        timed_out = "timed out" in str(detail) or "could not connect" in str(detail)
        assert outcome in ("OperationalError", "ConnectionLostError") and timed_out, (outcome, detail)
        assert time.monotonic() < deadline, f"no query got through within 30 s: {detail}"


def clean_response(proxy, conn, sql=SQL) -> bytes:
    """The server's bytes for preparing and running ``sql`` on ``conn``, the connection opened last."""
    tap = proxy.arm(S2C, Tap(), proxy.newest)
    try:
        assert run_query(conn, sql)[0] == "correct"
    finally:
        proxy.disarm()
    return bytes(tap.data)


def sweep(proxy_env, api_connect, db, direction, make_fault, offsets, *, sql=SQL):
    """One fresh connection per offset: arm the fault, run the query, classify."""
    results: dict[int, tuple[str, object]] = {}
    longest = 0.0
    for k in offsets:
        conn = connect_t(api_connect, proxy_env, db, autocommit=True)
        proxy_env.proxy.arm(direction, make_fault(k), proxy_env.proxy.newest)
        started = time.monotonic()
        results[k] = run_query(conn, sql)
        longest = max(longest, time.monotonic() - started)
        proxy_env.proxy.disarm()
        conn.close()
        assert proxy_env.node.is_alive(), f"the node died at offset {k}: {results[k]}"
    assert longest <= T + SLACK, f"an operation took {longest:.2f}s with timeout {T}s"
    # And the client still works afterwards, on a clean connection.
    conn = connect_t(api_connect, proxy_env, db, autocommit=True)
    assert run_query(conn)[0] == "correct"
    return results, longest


def summary(results) -> dict[str, int]:
    kinds: dict[str, int] = {}
    for outcome, _ in results.values():
        kinds[outcome] = kinds.get(outcome, 0) + 1
    return dict(sorted(kinds.items()))


# -- corruption --------------------------------------------------------------------------


@pytest.mark.parametrize("xor", [0xFF, 0x01], ids=["all-bits", "low-bit"])
def test_corrupt_each_byte_of_a_response(proxy_env, api_connect, db, xor):
    conn = connect_t(api_connect, proxy_env, db, autocommit=True)
    stream = clean_response(proxy_env.proxy, conn)
    payload, ambiguous = payload_offsets(stream)
    results, longest = sweep(proxy_env, api_connect, db, S2C, lambda k: Corrupt(k, xor=xor), range(len(stream)))
    structural_wrong = {k: detail for k, (outcome, detail) in results.items()
                        if outcome == "wrong" and k not in payload}
    for outcome, detail in results.values():
        assert outcome == "correct" or outcome == "wrong" or isinstance(detail, dqlite.Error), detail
    if xor == 0xFF:
        # Flipping all bits of a structural byte always gives an invalid header,
        # length, type code, terminator or marker: it must be noticed.
        assert not structural_wrong, structural_wrong
    else:
        assert set(structural_wrong) <= ambiguous, sorted(set(structural_wrong) - ambiguous)
    value_wrong = sum(1 for k, (outcome, _) in results.items() if outcome == "wrong" and k in payload)
    record(f"corrupt each byte (xor {xor:#04x}) of a {len(stream)}-byte STMT+ROWS response",
           f"{summary(results)}; wrong results: {value_wrong} from value bytes, "
           f"{len(structural_wrong)} from terminators/type codes; longest {longest:.2f}s")


def test_corrupt_the_connect_answers(proxy_env, api_connect, db):
    """Flips in the LEADER and OPEN answers: the connection attempt fails and the
    driver retries (the fault is one-shot), or it gives up with OperationalError."""
    outcomes: dict[str, int] = {}
    for k in range(8 + 24 + 8 + 8):  # SERVER (id + address) and DB answers
        proxy_env.proxy.arm(S2C, Corrupt(k))
        started = time.monotonic()
        try:
            conn = api_connect(proxy_env.address, db, autocommit=True, timeout=2)
            outcome = run_query(conn)[0]
            conn.close()
        except dqlite.OperationalError as exc:
            outcome = classify(exc)
        assert time.monotonic() - started < 2 + SLACK
        proxy_env.proxy.disarm()
        assert outcome in ("correct", "OperationalError"), (k, outcome)
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
    record("corrupt each byte of the LEADER/OPEN answers at connect", f"{outcomes}")


def test_corrupt_each_byte_of_a_read_request(proxy_env, api_connect, db):
    """Flipped bytes in what the client sends (PREPARE + QUERY of a SELECT): the
    server refuses, stays silent (the client times out) or closes; never a crash."""
    conn = connect_t(api_connect, proxy_env, db, autocommit=True)
    tap = proxy_env.proxy.arm(C2S, Tap(), proxy_env.proxy.newest)
    assert run_query(conn)[0] == "correct"
    proxy_env.proxy.disarm()
    stream = bytes(tap.data)
    # The top byte of a request's word count: a body of ~32 GiB announced.
    # libdqlite 1.11.1 dies of SIGSEGV on it (1.18.1 closes the connection);
    # a server bug that only a corrupting network can trigger, left out here.
    huge = set()
    pos = 0
    while pos < len(stream):
        huge.add(pos + 3)
        pos += 8 + 8 * struct.unpack_from("<I", stream, pos)[0]
    offsets = [k for k in range(len(stream)) if k not in huge]
    results, longest = sweep(proxy_env, api_connect, db, C2S, lambda k: Corrupt(k), offsets)
    assert all(outcome != "wrong" for outcome, _ in results.values()), results
    record(f"corrupt each byte of a {len(stream)}-byte PREPARE+QUERY request (SELECT; "
           f"{len(huge)} word-count top bytes left out)",
           f"{summary(results)}; node alive; longest {longest:.2f}s")


# -- truncation and reset ----------------------------------------------------------------


@pytest.mark.parametrize("fault", [Truncate, Reset], ids=["fin", "rst"])
def test_cut_the_response_at_each_byte(proxy_env, api_connect, db, fault):
    conn = connect_t(api_connect, proxy_env, db, autocommit=True)
    stream = clean_response(proxy_env.proxy, conn)
    results, longest = sweep(proxy_env, api_connect, db, S2C, fault, range(len(stream)))
    for k, (outcome, detail) in results.items():
        assert outcome == "ConnectionLostError", (k, outcome, detail)
    record(f"{'truncate (FIN)' if fault is Truncate else 'reset (RST)'} the response at each of "
           f"{len(stream)} bytes", f"{summary(results)}; longest {longest:.2f}s")


def test_cut_the_request_at_each_byte(proxy_env, api_connect, db):
    conn = connect_t(api_connect, proxy_env, db, autocommit=True)
    tap = proxy_env.proxy.arm(C2S, Tap(), proxy_env.proxy.newest)
    assert run_query(conn)[0] == "correct"
    proxy_env.proxy.disarm()
    results, longest = sweep(proxy_env, api_connect, db, C2S, Truncate, range(len(tap.data)))
    for k, (outcome, detail) in results.items():
        assert outcome == "ConnectionLostError", (k, outcome, detail)
    record(f"truncate the {len(tap.data)}-byte request at each byte", f"{summary(results)}; node alive")


BIG = 20_000
BIG_SQL = (f"WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < {BIG}) "
           "SELECT x, printf('%020d', x) FROM c")


def expected_big(n):
    return [(x, f"{x:020d}") for x in range(1, n + 1)]


@pytest.mark.parametrize("fault", [Truncate, Reset], ids=["fin", "rst"])
def test_cut_a_multi_batch_result(proxy_env, api_connect, db, fault):
    """A result of ~200 batches cut anywhere: fetchall raises, it never returns part of it,
    and the rows fetchmany handed out before the cut are exactly the start of the result."""
    conn = api_connect(proxy_env.address, db, autocommit=True, timeout=5)
    tap = proxy_env.proxy.arm(S2C, Tap(), proxy_env.proxy.newest)
    assert conn.execute(BIG_SQL).fetchall() == expected_big(BIG)
    proxy_env.proxy.disarm()
    size = len(tap.data)
    outcomes = []
    for cut in (100, 4_000, size // 5, size // 2, size - 5_000, size - 9):
        conn = api_connect(proxy_env.address, db, autocommit=True, timeout=2)
        proxy_env.proxy.arm(S2C, fault(cut), proxy_env.proxy.newest)
        got = []
        with pytest.raises(dqlite.ConnectionLostError):
            cur = conn.execute(BIG_SQL)
            for _ in range(BIG):
                batch = cur.fetchmany(500)
                if not batch:
                    break
                got.extend(batch)
        proxy_env.proxy.disarm()
        assert got == expected_big(len(got))
        outcomes.append(len(got))
        conn.close()
    conn = api_connect(proxy_env.address, db, autocommit=True, timeout=5)
    assert conn.execute(BIG_SQL).fetchall() == expected_big(BIG)
    record(f"{'truncate' if fault is Truncate else 'reset'} a 20k-row ({size}-byte) result at 6 points",
           f"ConnectionLostError x6; correct prefixes of {outcomes} rows; never a short fetchall")


# -- dropped bytes (blackhole) -----------------------------------------------------------


def test_dropped_response_to_a_select(proxy_env, api_connect, db):
    conn = connect_t(api_connect, proxy_env, db, autocommit=True)
    assert run_query(conn)[0] == "correct"
    proxy_env.proxy.arm(S2C, Blackhole(0))
    started = time.monotonic()
    with pytest.raises(dqlite.OperationalError) as info:
        conn.execute(SQL).fetchall()
    took = time.monotonic() - started
    assert type(info.value) is dqlite.ConnectionLostError or "timed out" in str(info.value)
    assert took <= T + SLACK
    proxy_env.proxy.disarm()
    assert_recovers(conn)
    record("drop the response to a SELECT", f"{classify(info.value)} after {took:.2f}s; next query ok")


@pytest.mark.parametrize("direction", [S2C, C2S], ids=["response-dropped", "request-dropped"])
def test_dropped_autocommit_insert(proxy_env, api_connect, db, direction):
    conn = connect_t(api_connect, proxy_env, db, autocommit=True)
    conn.execute("CREATE TABLE w (id INTEGER PRIMARY KEY)")
    conn.execute("INSERT INTO w VALUES (?)", (1,))  # prepared and cached: the next one is one EXEC
    proxy_env.proxy.arm(direction, Blackhole(0))
    started = time.monotonic()
    with pytest.raises(dqlite.CommitOutcomeUnknownError):
        conn.execute("INSERT INTO w VALUES (?)", (2,))
    took = time.monotonic() - started
    assert took <= T + SLACK
    proxy_env.proxy.disarm()
    with proxy_env.direct(db, autocommit=True) as check:
        present = {r[0] for r in check.execute("SELECT id FROM w")}
    # The driver cannot know, and says so; what really happened depends on
    # which way the bytes were lost.
    assert present == ({1, 2} if direction == S2C else {1})
    record(f"drop the {'response to' if direction == S2C else 'request of'} an autocommit INSERT",
           f"CommitOutcomeUnknownError after {took:.2f}s; row {'applied' if 2 in present else 'not applied'}")


@pytest.mark.parametrize("direction", [S2C, C2S], ids=["response-dropped", "request-dropped"])
def test_dropped_commit(proxy_env, api_connect, db, direction):
    conn = connect_t(api_connect, proxy_env, db)
    conn.execute("CREATE TABLE w (id INTEGER PRIMARY KEY)")
    conn.commit()
    conn.executemany("INSERT INTO w VALUES (?)", [(i,) for i in range(1, 6)])
    proxy_env.proxy.arm(direction, Blackhole(0))
    started = time.monotonic()
    with pytest.raises(dqlite.CommitOutcomeUnknownError):
        conn.commit()
    took = time.monotonic() - started
    assert took <= T + SLACK
    assert not conn.in_transaction
    proxy_env.proxy.disarm()
    present = None
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            with proxy_env.direct(db, autocommit=True) as check:
                present = {r[0] for r in check.execute("SELECT id FROM w")}
                check.execute("INSERT INTO w VALUES (100)")  # the write lock is free again
            break
        except dqlite.OperationalError:
            time.sleep(0.05)  # the server has not yet seen the old connection go
    assert present == (set(range(1, 6)) if direction == S2C else set())
    conn.execute("INSERT INTO w VALUES (200)")
    conn.commit()
    record(f"drop the {'response to' if direction == S2C else 'request of'} COMMIT",
           f"CommitOutcomeUnknownError after {took:.2f}s; transaction "
           f"{'applied' if present else 'not applied'} (all-or-nothing); next transaction ok")


# -- delays -------------------------------------------------------------------------------


def test_delayed_bytes_within_the_timeout(proxy_env, api_connect, db):
    conn = api_connect(proxy_env.address, db, autocommit=True, timeout=2)
    proxy_env.proxy.arm(S2C, Delay(0.05))
    proxy_env.proxy.arm(C2S, Delay(0.05))
    started = time.monotonic()
    assert run_query(conn)[0] == "correct"
    assert conn.execute(BIG_SQL).fetchall() == expected_big(BIG)
    conn.execute("CREATE TABLE d (x)")
    conn.execute("INSERT INTO d VALUES (1)")
    took = time.monotonic() - started
    proxy_env.proxy.disarm()
    record("delay every chunk by 50 ms both ways", f"correct results ({took:.2f}s for 4 operations)")


def test_delay_longer_than_the_timeout(proxy_env, api_connect, db):
    conn = connect_t(api_connect, proxy_env, db, autocommit=True)
    assert run_query(conn)[0] == "correct"
    proxy_env.proxy.arm(S2C, Delay(3 * T))
    started = time.monotonic()
    outcome, detail = run_query(conn)
    took = time.monotonic() - started
    proxy_env.proxy.disarm()
    assert outcome in ("ConnectionLostError", "OperationalError"), detail
    assert took <= T + SLACK
    assert_recovers(conn)
    record(f"delay the response by {3 * T:g}s (timeout {T:g}s)", f"{outcome} after {took:.2f}s; next query ok")


def test_trickled_response(proxy_env, api_connect, db):
    """The response arrives a few bytes at a time: correct, however it is split."""
    conn = api_connect(proxy_env.address, db, autocommit=True, timeout=5)
    proxy_env.proxy.arm(S2C, Trickle(3, 0.0005))
    started = time.monotonic()
    assert run_query(conn)[0] == "correct"
    assert conn.execute(BIG_SQL.replace(str(BIG), "100")).fetchall() == expected_big(100)
    proxy_env.proxy.disarm()
    record("trickle the response 3 bytes at a time", f"correct ({time.monotonic() - started:.2f}s)")


def test_slow_drip_longer_than_the_timeout(proxy_env, api_connect, db, api):
    """Every chunk arrives within the timeout, but the whole response takes ~6x as long.

    Both APIs bound the wait for an answer by ``timeout`` from its request,
    however the bytes trickle in: an error within the timeout, never a late
    or wrong result.
    """
    conn = connect_t(api_connect, proxy_env, db, autocommit=True)
    assert run_query(conn)[0] == "correct"
    proxy_env.proxy.arm(S2C, Trickle(16, T / 2))
    started = time.monotonic()
    outcome, detail = run_query(conn)
    took = time.monotonic() - started
    proxy_env.proxy.disarm()
    assert isinstance(detail, dqlite.OperationalError) and took <= T + SLACK, (outcome, took)
    assert_recovers(conn)
    record(f"drip the response 16 bytes per {T / 2:g}s (timeout {T:g}s), {api}",
           f"{outcome} after {took:.2f}s")


def test_corrupt_handshake_at_connect(proxy_env, api_connect, db):
    """The server closes a connection whose protocol version is wrong; connect tries again."""
    proxy_env.proxy.arm(C2S, Corrupt(0))
    conn = api_connect(proxy_env.address, db, autocommit=True, timeout=2)
    assert run_query(conn)[0] == "correct"
    assert len(proxy_env.proxy.connections) >= 2
    record("corrupt the protocol version sent at connect", "server closed it; connect retried; correct")
