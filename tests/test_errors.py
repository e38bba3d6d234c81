"""Server errors become the PEP 249 class sqlite3 would raise, with code and message."""

import pytest

import dqlite


@pytest.fixture
def auto(connect):
    conn = connect(autocommit=True)
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, u TEXT UNIQUE, nn TEXT NOT NULL, "
                 "c INTEGER CHECK (c > 0), p INTEGER REFERENCES parent(id))")
    conn.execute("CREATE TABLE parent (id INTEGER PRIMARY KEY)")
    conn.execute("INSERT INTO t VALUES (1, 'a', 'x', 1, NULL)")
    return conn


@pytest.mark.parametrize(
    "sql, cls, code, name, message",
    [
        ("INSERT INTO t VALUES (1, 'b', 'x', 1, NULL)", dqlite.IntegrityError, 1555,
         "SQLITE_CONSTRAINT_PRIMARYKEY", "UNIQUE constraint failed: t.id"),
        ("INSERT INTO t VALUES (2, 'a', 'x', 1, NULL)", dqlite.IntegrityError, 2067,
         "SQLITE_CONSTRAINT_UNIQUE", "UNIQUE constraint failed: t.u"),
        ("INSERT INTO t VALUES (2, 'b', NULL, 1, NULL)", dqlite.IntegrityError, 1299,
         "SQLITE_CONSTRAINT_NOTNULL", "NOT NULL constraint failed: t.nn"),
        ("INSERT INTO t VALUES (2, 'b', 'x', 0, NULL)", dqlite.IntegrityError, 275,
         "SQLITE_CONSTRAINT_CHECK", "CHECK constraint failed"),
        ("INSERT INTO t VALUES (2, 'b', 'x', 1, 99)", dqlite.IntegrityError, 787,
         "SQLITE_CONSTRAINT_FOREIGNKEY", "FOREIGN KEY constraint failed"),
        ("SELEC 1", dqlite.OperationalError, 1, "SQLITE_ERROR", 'near "SELEC": syntax error'),
        ("SELECT * FROM nope", dqlite.OperationalError, 1, "SQLITE_ERROR", "no such table: nope"),
        ("INSERT INTO nope VALUES (1)", dqlite.OperationalError, 1, "SQLITE_ERROR", "no such table: nope"),
        ("CREATE TABLE t (x)", dqlite.OperationalError, 1, "SQLITE_ERROR", "table t already exists"),
    ],
    ids=lambda v: v if isinstance(v, str) and v.startswith("SQLITE") else None,
)
def test_server_error_classes(auto, sql, cls, code, name, message):
    with pytest.raises(cls) as info:
        auto.execute(sql)
    err = info.value
    assert err.code == err.sqlite_errorcode == code
    assert err.sqlite_errorname == name
    assert message in str(err) and message in err.server_message
    # The connection is still in step with the server afterwards.
    assert auto.execute("SELECT count(*) FROM t").fetchone() == (1,)


def test_database_locked_by_another_writer_is_operational(connect):
    a, b = connect(), connect(autocommit=True, busy_timeout=0)  # no waiting for the lock (test_busy)
    a.execute("CREATE TABLE w (x)")
    a.commit()
    a.execute("INSERT INTO w VALUES (1)")  # a holds the write lock until commit
    with pytest.raises(dqlite.OperationalError, match="database is locked") as info:
        b.execute("INSERT INTO w VALUES (2)")
    assert info.value.code & 0xFF == 5 and info.value.sqlite_errorname.startswith("SQLITE_BUSY")
    a.commit()
    b.execute("INSERT INTO w VALUES (2)")
    assert b.execute("SELECT count(*) FROM w").fetchone() == (2,)


def test_hierarchy_matches_pep_249():
    assert issubclass(dqlite.Warning, Exception)
    assert issubclass(dqlite.Error, Exception)
    assert issubclass(dqlite.InterfaceError, dqlite.Error)
    assert issubclass(dqlite.ProtocolError, dqlite.InterfaceError)
    assert issubclass(dqlite.DatabaseError, dqlite.Error)
    for cls in (dqlite.DataError, dqlite.OperationalError, dqlite.IntegrityError, dqlite.InternalError,
                dqlite.ProgrammingError, dqlite.NotSupportedError):
        assert issubclass(cls, dqlite.DatabaseError)
    for cls in (dqlite.ConnectionLostError, dqlite.TransactionLostError, dqlite.CommitOutcomeUnknownError):
        assert issubclass(cls, dqlite.OperationalError)


def test_more_than_255_parameters(auto, server_caps):
    """Above 255 parameters the driver needs the 32-bit count (libdqlite 1.12+).

    It finds out from the server's answer: bound on a server that has it
    (1.18.1), refused with a clear message on one that has not (1.11.1).
    """
    placeholders = ", ".join("?" * 300)
    if server_caps.params32:
        assert auto.execute(f"SELECT {placeholders}", tuple(range(300))).fetchone() == tuple(range(300))
    else:
        with pytest.raises(dqlite.NotSupportedError, match="at most 255"):
            auto.execute(f"SELECT {placeholders}", tuple(range(300)))
    assert auto.execute(f"SELECT {', '.join('?' * 255)}", tuple(range(255))).fetchone() == tuple(range(255))


def test_connect_errors_name_the_addresses_tried():
    with pytest.raises(dqlite.OperationalError, match=r"127\.0\.0\.1:1\b.*refused") as info:
        dqlite.connect(["127.0.0.1:1"], "db", timeout=0.3)
    assert "within 0.3s" in str(info.value)


@pytest.mark.parametrize("address", ["", "nohost:", "host:notaport", "host:70000"])
def test_bad_addresses_are_interface_errors(address):
    with pytest.raises(dqlite.InterfaceError):
        dqlite.connect(address, "db", timeout=0.2)
