"""The driver against a server that sends bad bytes (tests/fakeserver.py).

Every malformed frame must raise ``dqlite.ProtocolError`` (an
``InterfaceError``) with a message naming the problem: no crash, no hang, no
allocation sized by an unchecked length.  A ProtocolError drops the
connection it came from (the rest of the socket cannot be trusted), and the
next statement reconnects: the fake answers every query after the scripted
one with a valid ``[(1,)]``, so a driver that kept reading the old stream
would fail the recovery check.
"""

from __future__ import annotations

import time
import tracemalloc
from contextlib import contextmanager
from dataclasses import dataclass

import pytest

import dqlite

try:
    from fakeserver import CLOSE, SILENCE, FakeServer, Repeat
    from wirebytes import (
        BLOB, DB, DONE, EXEC_SQL, FAILURE, INTEGER, ISO8601, LEADER, OPEN, PART, PREPARE, QUERY, QUERY_SQL,
        RESULT, ROWS, SERVER, STMT, TEXT, column_names, empty_message, failure_message, header, i64,
        message, result_message, row_header, rows_message, text, u64,
    )
except ImportError:  # tests/ imported as a package
    from tests.fakeserver import CLOSE, SILENCE, FakeServer, Repeat  # type: ignore[no-redef]
    from tests.wirebytes import (  # type: ignore[no-redef]
        BLOB, DB, DONE, EXEC_SQL, FAILURE, INTEGER, ISO8601, LEADER, OPEN, PART, PREPARE, QUERY, QUERY_SQL,
        RESULT, ROWS, SERVER, STMT, TEXT, column_names, empty_message, failure_message, header, i64,
        message, result_message, row_header, rows_message, text, u64,
    )

pytestmark = [pytest.mark.timeout(20), pytest.mark.server_independent]

SQL = "SELECT x FROM t"


@contextmanager
def serve(script, *, timeout=2.0, on=(QUERY, QUERY_SQL), then=None, **connect_kwargs):
    """A fake server playing ``script`` and an autocommit connection to it."""
    fake_kwargs = {"on": on} if then is None else {"on": on, "then": then}
    with FakeServer(script, **fake_kwargs) as fake:
        # No node store: the fake is no cluster, and its port may be one a
        # node of an earlier test's cluster had (the store would ask that
        # cluster's other members too).
        conn = dqlite.connect(fake.address, "db", timeout=timeout, autocommit=True, node_store=False,
                              **connect_kwargs)
        try:
            yield fake, conn
        finally:
            conn.close()
    assert not fake.errors, f"the fake server itself failed: {fake.errors!r}"


def assert_recovers(fake: FakeServer, conn: dqlite.Connection) -> None:
    """After a protocol failure: the bad connection is dropped and the next query reconnects."""
    assert fake.wait_closed(0), "the driver kept reading the connection that sent garbage"
    assert conn.execute(SQL).fetchall() == [(1,)]
    assert fake.connections == 2


def rows_raw(body: bytes) -> bytes:
    return message(ROWS, body)


def good_part(names) -> bytes:
    """A valid first batch (one row of integers) ending in PART."""
    return rows_message(names, [[(INTEGER, i + 7) for i in range(len(names))]], PART)


# ---------------------------------------------------------------------------
# Malformed ROWS batches, as the first batch of a result or a later one

@dataclass(frozen=True)
class Case:
    id: str
    names: tuple
    bad: bytes
    match: str
    first: bool = True   # can be the first batch
    later: bool = True   # can follow a valid PART batch (same column names)


X = ("x",)
XY = ("x", "y")
C20 = tuple(f"c{i}" for i in range(20))

ROWS_CASES = [
    Case("column count larger than the body", X, rows_raw(u64(1000) + text("x") + DONE), r"announces 1000 columns"),
    Case("column count u64 max", X, rows_raw(u64(2**64 - 1) + text("x") + DONE),
         r"announces 18446744073709551615 columns"),
    Case("zero columns for a SELECT", X, rows_raw(u64(0) + DONE), r"no columns"),
    Case("body shorter than the column count", X, rows_raw(b""), r"too short"),
    Case("column name not terminated", X, rows_raw(u64(1) + b"xxxxxxxx" + b"yyyyyyyy"),
         r"column name is not NUL-terminated"),
    Case("column name not valid UTF-8", (b"\xff",), rows_raw(column_names([b"\xff"]) + DONE), r"not valid UTF-8",
         later=False),
    Case("column names change between batches", X, rows_message(["y"], [[(INTEGER, 1)]]),
         r"column names changed", first=False),
    Case("row header truncated", C20, rows_raw(column_names(C20) + row_header([INTEGER] * 20)[:8]),
         r"row header truncated"),
    Case("row values missing at the end of the message", XY,
         rows_raw(column_names(XY) + row_header([INTEGER, INTEGER]) + i64(5)), r"value truncated"),
    Case("row values missing before the end marker", XY,
         rows_raw(column_names(XY) + row_header([INTEGER, INTEGER]) + i64(5) + DONE),
         r"without a DONE or PART marker"),
    *[
        Case(f"unknown type code {code}", X, rows_raw(column_names(X) + row_header([code]) + u64(0) + DONE),
             rf"unknown type code {code} in column 0")
        for code in (0, 6, 7, 8, 12, 15)
    ],
    *[
        Case(f"blob length {length} past the end", X,
             rows_raw(column_names(X) + row_header([BLOB]) + u64(length) + b"abcdefgh" + DONE),
             rf"blob of {length} bytes runs past the end")
        for length in (17, 1000, 2**63, 2**64 - 1)
    ],
    Case("text with no NUL terminator", X, rows_raw(column_names(X) + row_header([TEXT]) + b"abcdefgh" + DONE),
         r"text value is not NUL-terminated"),
    Case("ISO8601 text with no NUL terminator", X,
         rows_raw(column_names(X) + row_header([ISO8601]) + b"2024-01-" + DONE), r"text value is not NUL-terminated"),
    *[
        Case(f"text {label}", X, rows_raw(column_names(X) + row_header([code]) + text(raw) + DONE),
             r"not valid UTF-8")
        for label, code, raw in [
            ("not valid UTF-8", TEXT, b"caf\xe9"),
            ("with an overlong NUL", TEXT, b"a\xc0\x80b"),
            ("with a UTF-16 surrogate", TEXT, b"\xed\xa0\x80"),
            ("truncated in a multi-byte character", TEXT, b"\xe2\x82"),
            ("ISO8601 not valid UTF-8", ISO8601, b"2024-01-02 \xff"),
        ]
    ],
    Case("names only, no end marker", X, rows_raw(column_names(X)), r"without a DONE or PART marker"),
    Case("complete row, no end marker", X, rows_raw(column_names(X) + row_header([INTEGER]) + i64(1)),
         r"without a DONE or PART marker"),
    Case("bytes after the DONE marker", X, rows_raw(column_names(X) + row_header([INTEGER]) + i64(1) + DONE + u64(0)),
         r"bytes after the end marker"),
    Case("bytes after the PART marker", X, rows_raw(column_names(X) + PART + DONE), r"bytes after the end marker"),
]


def _rows_params():
    for case in ROWS_CASES:
        if case.first:
            yield pytest.param(case, "first", id=f"{case.id}, first batch")
        if case.later:
            yield pytest.param(case, "later", id=f"{case.id}, later batch")


@pytest.mark.parametrize("case, position", list(_rows_params()))
def test_malformed_rows_batch(case: Case, position: str):
    script = [case.bad] if position == "first" else [good_part(case.names), case.bad]
    with serve(script) as (fake, conn):
        cursor = conn.cursor()
        if position == "first":
            with pytest.raises(dqlite.ProtocolError, match=case.match):
                cursor.execute(SQL)
        else:
            cursor.execute(SQL)  # the valid first batch
            assert cursor.fetchone() == tuple(range(7, 7 + len(case.names)))
            with pytest.raises(dqlite.ProtocolError, match=case.match):
                cursor.fetchall()
        assert_recovers(fake, conn)


# ---------------------------------------------------------------------------
# A response of the wrong type

WRONG_TYPES = [
    ("EMPTY", empty_message()),
    ("RESULT", result_message(1, 1)),
    ("STMT", message(STMT, u64(0) + u64(0))),
    ("DB", message(DB, u64(0))),
    ("SERVER", message(SERVER, u64(1) + text("127.0.0.1:1"))),
    ("unknown type 42", message(42, u64(0))),
    ("unknown type 255", message(255, b"")),
]


@pytest.mark.parametrize("position", ["first", "later"])
@pytest.mark.parametrize("name, frame", WRONG_TYPES, ids=[n for n, _ in WRONG_TYPES])
def test_wrong_response_type_to_a_query(name, frame, position):
    script = [frame] if position == "first" else [good_part(X), frame]
    with serve(script) as (fake, conn):
        cursor = conn.cursor()
        with pytest.raises(dqlite.ProtocolError, match=rf"expected a ROWS response, got {name}$"):
            cursor.execute(SQL)
            cursor.fetchall()
        assert_recovers(fake, conn)


@pytest.mark.parametrize(
    "frame, match",
    [
        (result_message(0, 0), r"expected a ROWS response, got RESULT"),
        (rows_raw(column_names(X) + row_header([INTEGER]) + i64(1)), r"does not end with a DONE or PART marker"),
    ],
    ids=["RESULT to QUERY_SQL", "ROWS without a marker"],
)
def test_malformed_answer_to_a_script_query(frame, match):
    """executescript sends row-returning statements as QUERY_SQL and drains them."""
    with serve([frame]) as (fake, conn):
        with pytest.raises(dqlite.ProtocolError, match=match):
            conn.executescript(SQL)
        assert fake.request_types(0)[-1] == QUERY_SQL
        assert_recovers(fake, conn)


STMT_OK = message(STMT, u64(0) + u64(0))


@pytest.mark.parametrize(
    "on, then, frame, sql, match",
    [
        (PREPARE, STMT_OK, message(STMT, u64(0)), SQL, r"message body truncated"),
        (PREPARE, STMT_OK, message(STMT, u64(0) + u64(0) + u64(0) + u64(0)), SQL,
         r"STMT response has \d+ unexpected trailing bytes"),
        (PREPARE, STMT_OK, result_message(), SQL, r"expected a STMT response, got RESULT"),
        (EXEC_SQL, result_message(), message(RESULT, u64(0)), "CREATE TABLE t (x)", r"message body truncated"),
        (EXEC_SQL, result_message(), rows_message(["x"], []), "CREATE TABLE t (x)",
         r"expected a RESULT response, got ROWS"),
    ],
    ids=["STMT truncated", "STMT with trailing bytes", "RESULT to PREPARE", "RESULT truncated", "ROWS to EXEC_SQL"],
)
def test_malformed_answer_to_other_requests(on, then, frame, sql, match):
    with serve([frame], on=(on,), then=[then]) as (fake, conn):
        with pytest.raises(dqlite.ProtocolError, match=match):
            conn.execute(sql)
        assert fake.wait_closed(0)
        conn.execute(sql)  # reconnects; the fake answers correctly now
        assert fake.connections == 2


def test_rows_answering_the_end_of_a_transaction_fail_the_query_sent_behind_it():
    # rollback() of a read-only transaction does not wait for its answer; the
    # next (prepared) query goes out behind it and reads that answer first.
    with serve([result_message()], on=(EXEC_SQL,), then=[rows_message(["x"], [[(INTEGER, 5)]])]) as (fake, conn):
        assert conn.execute(SQL).fetchall() == [(1,)]  # prepared
        conn.execute("BEGIN")  # the scripted, valid answer
        assert conn.execute(SQL).fetchall() == [(1,)]
        conn.rollback()  # answered with ROWS
        with pytest.raises(dqlite.ProtocolError, match="expected the answer to the end of a transaction"):
            conn.execute(SQL)
        assert_recovers(fake, conn)


def test_malformed_leader_reply_fails_connect_with_the_reason():
    """A malformed SERVER reply during connect: retried until the timeout, then reported."""
    bad_server = message(SERVER, u64(1) + b"127.0.0.")  # address not NUL-terminated
    with FakeServer([bad_server], on=(LEADER,), then=[bad_server]) as fake:
        started = time.monotonic()
        with pytest.raises(dqlite.OperationalError, match=r"text field is not NUL-terminated"):
            dqlite.connect(fake.address, "db", timeout=0.3, autocommit=True, node_store=False)
        assert time.monotonic() - started < 0.3 + 10  # the timeout, with slack no busy machine uses up
    assert QUERY not in fake.request_types()


# ---------------------------------------------------------------------------
# Message sizes

def test_message_above_max_message_size():
    frame = header(513, ROWS) + b"\0" * 64  # announces 4104 bytes
    with serve([frame], max_message_size=4096) as (fake, conn):
        with pytest.raises(dqlite.ProtocolError, match=r"4104-byte message, above the 4096-byte limit"):
            conn.execute(SQL)
        assert_recovers(fake, conn)


def test_message_exactly_at_max_message_size_is_accepted():
    value = "a" * 4063  # 8 (count) + 8 (name) + 8 (row header) + 4064 (text) + 8 (marker) = 4096
    frame = rows_message(["x"], [[(TEXT, value)]])
    assert len(frame) == 8 + 4096
    with serve([frame], max_message_size=4096) as (fake, conn):
        assert conn.execute(SQL).fetchall() == [(value,)]
        assert fake.connections == 1


def test_u32_max_words_is_refused_before_reading_the_body():
    frame = header(0xFFFFFFFF, ROWS) + b"\0" * 16
    with serve([frame, SILENCE], timeout=30) as (fake, conn):
        started = time.monotonic()
        with pytest.raises(dqlite.ProtocolError, match=r"34359738360-byte message, above the \d+-byte limit"):
            conn.execute(SQL)
        assert time.monotonic() - started < 15  # refused from the header, not after the 30 s timeout
        assert_recovers(fake, conn)


def test_huge_announced_length_then_close_allocates_nothing_by_it():
    """u32-max words under a limit that allows it: a few bytes come, then EOF.

    The driver must wait for the bytes rather than allocate 32 GiB up front.
    """
    frame = header(0xFFFFFFFF, ROWS) + b"\0" * 24
    with serve([frame, CLOSE], max_message_size=1 << 40) as (fake, conn):
        tracemalloc.start()
        try:
            with pytest.raises(dqlite.ConnectionLostError, match=r"closed the connection"):
                conn.execute(SQL)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert peak < 16 << 20, f"{peak} bytes allocated for a message that never came"
        assert_recovers(fake, conn)


# ---------------------------------------------------------------------------
# The connection ends or stalls in the middle of a message

FULL_ROWS = rows_message(["x"], [[(INTEGER, 1)], [(INTEGER, 2)]])


@pytest.mark.parametrize("cut", [0, 3, 8, 20, len(FULL_ROWS) - 1], ids=lambda c: f"after {c} bytes")
def test_server_closes_mid_message(cut):
    with serve([FULL_ROWS[:cut], CLOSE]) as (fake, conn):
        with pytest.raises(dqlite.ConnectionLostError, match=r"closed the connection"):
            conn.execute(SQL)
        assert_recovers(fake, conn)


def test_server_closes_mid_stream():
    with serve([good_part(X), FULL_ROWS[:20], CLOSE]) as (fake, conn):
        cursor = conn.execute(SQL)
        assert cursor.fetchone() == (7,)
        with pytest.raises(dqlite.ConnectionLostError, match=r"closed the connection"):
            cursor.fetchall()
        assert_recovers(fake, conn)


def test_server_stalls_mid_message_times_out():
    with serve([FULL_ROWS[:20], SILENCE], timeout=0.5) as (fake, conn):
        started = time.monotonic()
        with pytest.raises(dqlite.ConnectionLostError, match=r"timed out"):
            conn.execute(SQL)
        assert time.monotonic() - started < 0.5 + 10  # the timeout, with slack no busy machine uses up
        assert_recovers(fake, conn)


# ---------------------------------------------------------------------------
# FAILURE responses

BAD_FAILURES = [
    ("message not valid UTF-8", message(FAILURE, u64(1) + text(b"no such table: \xff\xfe")), r"not valid UTF-8"),
    ("message not NUL-terminated", message(FAILURE, u64(1) + b"abcdefgh"), r"not NUL-terminated"),
    ("code only", message(FAILURE, u64(1)), r"not NUL-terminated"),
    ("empty body", message(FAILURE, b""), r"message body truncated"),
]


@pytest.mark.parametrize("position", ["first", "later"])
@pytest.mark.parametrize("name, frame, match", BAD_FAILURES, ids=[c[0] for c in BAD_FAILURES])
def test_malformed_failure_response(name, frame, match, position):
    script = [frame] if position == "first" else [good_part(X), frame]
    with serve(script) as (fake, conn):
        cursor = conn.cursor()
        with pytest.raises(dqlite.ProtocolError, match=match):
            cursor.execute(SQL)
            cursor.fetchall()
        assert_recovers(fake, conn)


def test_wellformed_failure_is_a_server_error_and_keeps_the_connection():
    """The contrast: a valid FAILURE is the server's error, not a protocol error."""
    with serve([failure_message(1, "no such table: t")]) as (fake, conn):
        with pytest.raises(dqlite.OperationalError, match=r"^no such table: t$") as info:
            conn.execute(SQL)
        assert not isinstance(info.value, dqlite.InterfaceError)
        assert info.value.code == 1
        assert conn.execute(SQL).fetchall() == [(1,)]
        assert fake.connections == 1


# ---------------------------------------------------------------------------
# Endless zero-row PART batches (protocol.md §4.3, §8.7)

ZERO_PART = rows_raw(column_names(X) + PART)
# The server bug's real shape: 600 short names, a 4824-byte message with no row.
C600 = tuple(f"c{i}" for i in range(600))
ZERO_PART_600 = rows_raw(column_names(C600) + PART)


@pytest.mark.parametrize(
    "script",
    [
        [Repeat(ZERO_PART)],
        [good_part(X), Repeat(ZERO_PART)],
        [Repeat(ZERO_PART_600)],
    ],
    ids=["from the start", "after a batch with a row", "600 columns, 4824-byte batches"],
)
def test_endless_zero_row_part_stream_is_detected(script):
    assert len(ZERO_PART_600) == 4824
    with serve(script, timeout=30) as (fake, conn):
        started = time.monotonic()
        with pytest.raises(dqlite.ProtocolError, match=r"no rows"):
            conn.execute(SQL).fetchall()  # the driver may give up in either call
        assert time.monotonic() - started < 15  # detected, not ended by the 30 s timeout
        assert_recovers(fake, conn)


@pytest.mark.parametrize("fetch", ["fetchone", "fetchmany", "iterate"])
def test_endless_zero_row_part_stream_is_detected_by_every_fetch(fetch):
    with serve([good_part(X), Repeat(ZERO_PART)]) as (fake, conn):
        cursor = conn.execute(SQL)
        assert cursor.fetchone() == (7,)
        with pytest.raises(dqlite.ProtocolError, match=r"no rows"):
            if fetch == "iterate":
                list(cursor)
            else:
                getattr(cursor, fetch)()
        assert_recovers(fake, conn)


def test_endless_zero_row_part_stream_is_detected_before_the_next_statement():
    """Another statement on the connection first reads the streaming result to its end."""
    with serve([good_part(X), Repeat(ZERO_PART)]) as (fake, conn):
        cursor = conn.execute(SQL)
        assert cursor.fetchone() == (7,)
        with pytest.raises(dqlite.ProtocolError, match=r"no rows"):
            conn.execute(SQL)
        assert_recovers(fake, conn)


@pytest.mark.parametrize("how", ["cursor.close", "cursor re-execute", "executescript"])
def test_endless_zero_row_part_stream_is_detected_when_draining(how):
    # The fake gives up after 300 frames and closes: a driver that detects
    # the stream raises ProtocolError; one that does not drains until EOF and
    # raises ConnectionLostError (against a real server it would loop forever).
    with serve([good_part(X), Repeat(ZERO_PART, limit=300)]) as (fake, conn):
        with pytest.raises(dqlite.ProtocolError, match=r"no rows"):
            if how == "executescript":
                conn.executescript(SQL)
            else:
                cursor = conn.execute(SQL)
                assert cursor.fetchone() == (7,)
                if how == "cursor.close":
                    cursor.close()
                else:
                    cursor.execute(SQL)


# ---------------------------------------------------------------------------
# Inside a transaction, and the encoder side of a failed statement

def test_protocol_error_inside_a_transaction_loses_the_transaction():
    """With a transaction open, the dropped connection took the transaction with it."""
    bad = rows_raw(column_names(X) + row_header([7]) + u64(0) + DONE)
    with FakeServer([bad]) as fake:
        conn = dqlite.connect(fake.address, "db", timeout=2, node_store=False)  # PEP 249 mode: implicit BEGIN
        try:
            with pytest.raises(dqlite.TransactionLostError, match=r"unknown type code 7") as info:
                conn.execute(SQL)
            assert isinstance(info.value.__cause__, dqlite.ProtocolError)
            assert fake.wait_closed(0)
            with pytest.raises(dqlite.TransactionLostError):
                conn.execute(SQL)  # refused until the loss is acknowledged
            conn.rollback()
            assert conn.execute(SQL).fetchall() == [(1,)]
            assert fake.connections == 2
        finally:
            conn.close()
    assert not fake.errors


def test_rejected_sql_text_leaves_nothing_on_the_wire():
    with serve([FULL_ROWS]) as (fake, conn):
        with pytest.raises(dqlite.DataError, match=r"NUL"):
            conn.execute("SELECT 'a\x00b' FROM t")
        assert conn.execute(SQL).fetchall() == [(1,), (2,)]
        assert fake.request_types(0) == [LEADER, OPEN, PREPARE, QUERY]


def test_rejected_parameter_leaves_nothing_on_the_wire():
    """The contrast to the above: a bad parameter is rejected before anything is sent."""
    with FakeServer([FULL_ROWS], stmt_params=1) as fake:
        conn = dqlite.connect(fake.address, "db", timeout=2, autocommit=True, node_store=False)
        try:
            for bad in (2**64, "a\x00b", object()):
                with pytest.raises(dqlite.DatabaseError, match=r"parameter 1"):
                    conn.execute("SELECT x FROM t WHERE x > ?", (bad,))
            assert conn.execute("SELECT x FROM t WHERE x > ?", (0,)).fetchall() == [(1,), (2,)]
            assert fake.request_types(0) == [LEADER, OPEN, PREPARE, QUERY]
            assert fake.requests[-1].body == u64(0) + bytes([1, INTEGER]) + b"\0" * 6 + i64(0)
        finally:
            conn.close()
    assert not fake.errors
