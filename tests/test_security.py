"""Security: parameters are bound, never interpolated; nothing logged leaks them.

Through both APIs (the ``connect``/``api_connect`` fixtures of conftest.py).

* Hostile strings (quotes, statement terminators and comments, placeholder
  look-alikes, control characters, very long strings, Unicode edge cases)
  go in as parameters and come back as the same data, byte for byte; the
  table and the schema survive.
* Text the wire cannot carry (NUL, lone surrogates) is refused before it is
  sent, never truncated or mangled.
* Every record the ``dqlite`` loggers emit at DEBUG during connect, execute,
  executemany, errors, a rollback and a leader failover is free of the
  parameter values, and of a password written into an address.
"""

from __future__ import annotations

import logging
import traceback

import pytest

import dqlite

HOSTILE = [
    "'",
    "''",
    '"',
    "\\",
    "\\'",
    "'; DROP TABLE t; --",
    "'); DROP TABLE t; --",
    '"); DROP TABLE t; --',
    "' OR '1'='1",
    "1 OR 1=1",
    "1; DELETE FROM t",
    "*/ DROP TABLE t; /*",
    "-- comment",
    "/* unterminated",
    "BEGIN; COMMIT; VACUUM;",
    "x'00ff'",
    "char(39)",
    "?",
    "?1",
    "?999",
    ":name",
    "@p",
    "$p",
    "%s",
    "%(x)s",
    "{0}",
    "${jndi:ldap://127.0.0.1/a}",
    "\x01\x02\x03\x07\x08\x0b\x0c\x0e\x1f",
    "\x1b[31mred\x1b[0m",
    "\t\r\n \x7f",
    "\u0301",                 # a lone combining mark
    "\u0301\u0302\u0303" * 50,  # a pile of them
    "A\u030a",               # decomposed Å, must not be normalised...
    "\u00c5",                # ...into this one
    "\u200f\u202e'; DROP TABLE t; --\u202c",  # RTL mark and override around SQL
    "\u2066\u2067\u2068\u2069",  # bidi isolates
    "\u200b\u200c\u200d\u2060",  # zero-width characters
    "\ufeff",                # BOM
    "\ufffe\uffff",          # non-characters
    "\U0001f600\U0001f469\u200d\U0001f4bb",  # astral, ZWJ sequence
    "\U0010ffff",
    "\u0130\u0131\u00df",    # case-mapping oddities
    "\u2028\u2029",          # line/paragraph separators
    "\uff07\uff1b",          # fullwidth quote and semicolon
    "x" * 100_000 + "'; DROP TABLE t; --",
    "'" * 70_000,
    "\U0001f600" * 20_000,
]

TABLE_SQL = "CREATE TABLE t (id INTEGER PRIMARY KEY, s TEXT, b BLOB)"


def assert_table_survives(conn, rows: int) -> None:
    names = [r[0] for r in conn.execute("SELECT name FROM sqlite_master ORDER BY name").fetchall()]
    assert names == ["t"]
    assert conn.execute("SELECT count(*) FROM t").fetchone() == (rows,)


def test_hostile_strings_round_trip_as_data(connect):
    conn = connect(autocommit=True)
    conn.execute(TABLE_SQL)
    for i, s in enumerate(HOSTILE):
        cur = conn.execute("INSERT INTO t (id, s, b) VALUES (?, ?, ?)", (i, s, s.encode("utf-8")))
        assert cur.rowcount == 1
    assert_table_survives(conn, len(HOSTILE))
    for i, s in enumerate(HOSTILE):
        assert conn.execute("SELECT s, b, length(s) FROM t WHERE id = ?", (i,)).fetchone() == (
            s, s.encode("utf-8"), len(s))
        # Used in a WHERE clause it matches itself exactly (and nothing else).
        found = conn.execute("SELECT id FROM t WHERE s = ? AND b = ?", (s, s.encode("utf-8"))).fetchall()
        assert found == [(i,)]
    # Echoed straight back without a table.
    for s in HOSTILE:
        assert conn.execute("SELECT ?, typeof(?)", (s, s)).fetchone() == (s, "text")
    assert_table_survives(conn, len(HOSTILE))


def test_hostile_strings_through_executemany_and_a_transaction(connect):
    conn = connect()
    conn.execute(TABLE_SQL)
    conn.commit()
    conn.executemany("INSERT INTO t (id, s, b) VALUES (?, ?, ?)",
                     [(i, s, s.encode("utf-8")) for i, s in enumerate(HOSTILE)])
    conn.commit()
    rows = conn.execute("SELECT id, s, b FROM t ORDER BY id").fetchall()
    assert rows == [(i, s, s.encode("utf-8")) for i, s in enumerate(HOSTILE)]
    # Hostile values in UPDATE and DELETE parameters touch only the rows they name.
    conn.execute("UPDATE t SET s = ? WHERE s = ?", ("'; DROP TABLE t; --", "'"))
    conn.execute("DELETE FROM t WHERE s = ?", ("1 OR 1=1",))
    conn.commit()
    assert_table_survives(conn, len(HOSTILE) - 1)
    assert conn.execute("SELECT count(*) FROM t WHERE s = ?", ("'; DROP TABLE t; --",)).fetchone() == (2,)


def test_hostile_strings_in_column_names_and_values_of_results(connect):
    """Hostile text coming back from the server is data too (aliases are SQL, quoted)."""
    conn = connect(autocommit=True)
    alias = "a\"'; DROP TABLE t; --\u202e"
    cur = conn.execute(f'SELECT ? AS "{alias.replace(chr(34), chr(34) * 2)}"', ("\u0301",))
    assert cur.description[0][0] == alias
    assert cur.fetchall() == [("\u0301",)]


@pytest.mark.parametrize("bad", ["a\x00b", "\x00", "'\x00; DROP TABLE t; --", "\ud800", "x\udfffy"])
def test_text_the_wire_cannot_carry_is_refused_not_mangled(connect, bad):
    conn = connect(autocommit=True)
    conn.execute(TABLE_SQL)
    with pytest.raises(dqlite.DataError):
        conn.execute("INSERT INTO t (id, s) VALUES (?, ?)", (1, bad))
    with pytest.raises(dqlite.DataError):
        conn.executemany("INSERT INTO t (id, s) VALUES (?, ?)", [(2, "fine"), (3, bad)])
    # Nothing half-sent: the connection is usable and nothing was inserted.
    assert_table_survives(conn, 0)
    # As a BLOB the same bytes are fine.
    conn.execute("INSERT INTO t (id, b) VALUES (?, ?)", (4, bad.encode("utf-8", "surrogatepass")))
    assert conn.execute("SELECT b FROM t WHERE id = 4").fetchone() == (bad.encode("utf-8", "surrogatepass"),)


@pytest.mark.parametrize("prologue", ["implicit BEGIN", "queued FINALIZE"])
def test_a_refused_parameter_leaves_the_connection_in_step(connect, prologue):
    if prologue == "implicit BEGIN":
        conn = connect()  # PEP 249 mode: BEGIN is pipelined before the first statement
        conn.execute(TABLE_SQL)
        conn.commit()
    else:
        conn = connect(autocommit=True, cached_statements=1)
        conn.execute(TABLE_SQL)
        conn.execute("SELECT 1 WHERE ? = ?", (1, 1)).fetchall()
        conn.execute("SELECT 2 WHERE ? = ?", (1, 1)).fetchall()  # evicts the first: FINALIZE queued
    with pytest.raises(dqlite.DataError):
        conn.execute("INSERT INTO t (id, s) VALUES (?, ?)", (1, "a\x00b"))
    assert conn.execute("INSERT INTO t (id, s) VALUES (?, ?)", (2, "fine")).rowcount == 1
    assert conn.execute("SELECT id, s FROM t").fetchall() == [(2, "fine")]
    assert conn.execute("UPDATE t SET s = ? WHERE id = ?", ("x", 99)).rowcount == 0


# ---------------------------------------------------------------------------
# Logging

SECRET = "s3cr3t-Pa55w0rd-7f1c9e"


class Capture(logging.Handler):
    """Every record of the ``dqlite`` logger tree, at every level."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def texts(self) -> list[str]:
        out = []
        for record in self.records:
            parts = [record.getMessage(), repr(record.args), repr(record.__dict__)]
            if record.exc_info:
                parts.append("".join(traceback.format_exception(*record.exc_info)))
            if record.stack_info:
                parts.append(record.stack_info)
            out.append("\n".join(parts))
        return out

    def assert_clean(self, *secrets: str) -> None:
        for text in self.texts():
            for secret in secrets:
                assert secret not in text, f"a log record holds a secret:\n{text}"


@pytest.fixture
def captured():
    logger = logging.getLogger("dqlite")
    handler = Capture()
    old_level = logger.level
    logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)


def exercise(conn, secret: str) -> None:
    """Every statement path, with the secret as a parameter, including failing ones."""
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, s TEXT UNIQUE, n INTEGER CHECK (n < 10))")
    conn.execute("INSERT INTO t (id, s, n) VALUES (?, ?, ?)", (1, secret, 1))
    conn.executemany("INSERT INTO t (id, s, n) VALUES (?, ?, ?)",
                     [(i, f"{secret}-{i}", i) for i in range(2, 6)])
    assert conn.execute("SELECT id FROM t WHERE s = ?", (secret,)).fetchall() == [(1,)]
    conn.commit()
    with pytest.raises(dqlite.IntegrityError):  # UNIQUE
        conn.execute("INSERT INTO t (id, s, n) VALUES (?, ?, ?)", (9, secret, 1))
    conn.rollback()
    with pytest.raises(dqlite.IntegrityError):  # CHECK, in the middle of a batch
        conn.executemany("INSERT INTO t (id, s, n) VALUES (?, ?, ?)",
                         [(20, secret + "a", 1), (21, secret + "b", 99)])
    conn.rollback()
    with pytest.raises(dqlite.OperationalError):
        conn.execute("SELECT * FROM no_such_table WHERE s = ?", (secret,))
    conn.rollback()
    with pytest.raises(ZeroDivisionError), conn:  # rollback on an exception
        conn.execute("INSERT INTO t (id, s, n) VALUES (?, ?, ?)", (40, secret + "c", 1))
        1 / 0
    assert conn.execute("SELECT count(*) FROM t WHERE s LIKE ?", (secret + "%",)).fetchone() == (5,)
    conn.commit()
    # Last: after a refused parameter the connection is out of step (see
    # test_a_refused_parameter_leaves_the_connection_in_step).
    with pytest.raises(dqlite.DataError):
        conn.execute("INSERT INTO t (id, s) VALUES (?, ?)", (30, secret + "\x00"))


def test_nothing_logged_holds_parameters(connect, captured):
    conn = connect()
    exercise(conn, SECRET)
    conn.close()
    other = connect(autocommit=True)
    with pytest.raises(dqlite.DataError):
        other.execute("SELECT ?, ?", (SECRET, 2**64))
    other.close()
    assert any("connected to leader" in r.getMessage() for r in captured.records), \
        "the capture saw nothing: is the logger still called 'dqlite'?"
    captured.assert_clean(SECRET)


def test_nothing_logged_holds_parameters_across_a_failover(api_connect, dqlite_fresh_cluster, captured):
    cluster = dqlite_fresh_cluster
    conn = api_connect(cluster.addresses, "db", timeout=10)
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, s TEXT)")
    conn.commit()
    conn.execute("INSERT INTO t VALUES (?, ?)", (1, SECRET))  # an open transaction
    cluster.node_at(conn.leader).kill()  # SIGKILL the node conn talks to
    with pytest.raises(dqlite.OperationalError):
        conn.execute("INSERT INTO t VALUES (?, ?)", (2, SECRET + "-2"))
    conn.rollback()
    cluster.wait_for_leader()
    conn.execute("INSERT INTO t VALUES (?, ?)", (3, SECRET + "-3"))
    conn.executemany("INSERT INTO t VALUES (?, ?)", [(4, SECRET + "-4"), (5, SECRET + "-5")])
    conn.commit()
    assert [r[0] for r in conn.execute("SELECT id FROM t WHERE s LIKE ? ORDER BY id", (SECRET + "%",))] == [3, 4, 5]
    conn.close()
    assert any("lost" in r.getMessage() for r in captured.records), \
        f"the failover logged nothing: {[r.getMessage() for r in captured.records]}"
    captured.assert_clean(SECRET)


def test_a_password_in_an_address_is_not_logged(api_connect, dqlite_cluster, captured):
    """dqlite has no authentication: a user:password@ address is a mistake, and must not leak."""
    port = dqlite_cluster.addresses[0].rpartition(":")[2]
    with pytest.raises(dqlite.Error):
        api_connect([f"admin:{SECRET}@127.0.0.1:{port}"], "db", timeout=0.5)
    captured.assert_clean(SECRET)


def test_a_password_in_an_address_is_refused_without_echo(api_connect, dqlite_cluster):
    port = dqlite_cluster.addresses[0].rpartition(":")[2]
    with pytest.raises(dqlite.InterfaceError) as info:
        api_connect([f"admin:{SECRET}@127.0.0.1:{port}"], "db", timeout=0.5)
    assert SECRET not in str(info.value)
