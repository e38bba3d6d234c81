"""The cursor and connection API of PEP 249, on a real cluster."""

import gc

import pytest

import dqlite


@pytest.fixture
def table(connect):
    """An autocommit connection with table t(id, s) holding 1000 rows."""
    conn = connect(autocommit=True)
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, s TEXT)")
    conn.executemany("INSERT INTO t VALUES (?, ?)", [(i, f"row-{i:06d}") for i in range(1000)])
    return conn


def test_description_rowcount_and_lastrowid(conn):
    cur = conn.cursor()
    assert cur.description is None and cur.rowcount == -1 and cur.lastrowid is None
    cur.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, s TEXT)")
    assert cur.description is None and cur.rowcount == -1
    cur.execute("INSERT INTO t (s) VALUES (?)", ("a",))
    assert (cur.rowcount, cur.lastrowid) == (1, 1)
    cur.execute("INSERT INTO t (s) VALUES ('b'), ('c')")
    assert (cur.rowcount, cur.lastrowid) == (2, 3)
    cur.execute("UPDATE t SET s = s || '!' WHERE id > 1")
    assert cur.rowcount == 2 and cur.lastrowid == 3  # only INSERT/REPLACE move lastrowid
    cur.execute("SELECT id AS ident, s FROM t WHERE id = 1")
    assert [d[0] for d in cur.description] == ["ident", "s"]
    assert all(len(d) == 7 for d in cur.description)
    assert cur.rowcount == -1
    cur.execute("SELECT id FROM t WHERE id < 0")
    assert cur.description[0][0] == "id" and cur.fetchall() == []
    cur.execute("DELETE FROM t")
    assert cur.rowcount == 3


def test_fetch_methods(table):
    cur = table.execute("SELECT id FROM t ORDER BY id")
    assert cur.fetchone() == (0,)
    assert cur.fetchmany(3) == [(1,), (2,), (3,)]
    cur.arraysize = 2
    assert cur.fetchmany() == [(4,), (5,)]
    rest = cur.fetchall()
    assert rest == [(i,) for i in range(6, 1000)]
    assert cur.fetchone() is None and cur.fetchmany(5) == [] and cur.fetchall() == []


def test_iteration_and_execute_returns_the_cursor(table):
    assert [r[0] for r in table.execute("SELECT id FROM t ORDER BY id")] == list(range(1000))


def test_large_result_spans_many_batches_and_streams(table):
    """100,000 rows arrive in ~2,000 server batches; fetchmany decodes batch by batch."""
    table.execute("CREATE TABLE big (i INTEGER, s TEXT)")
    table.execute(
        "INSERT INTO big WITH RECURSIVE c(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM c WHERE i < 99999) "
        "SELECT i, printf('name-%08d', i) FROM c"
    )
    cur = table.execute("SELECT i, s FROM big ORDER BY i")
    first = cur.fetchmany(10)
    assert first == [(i, f"name-{i:08d}") for i in range(10)]
    # Only the batches needed so far were decoded: the cursor holds at most a batch.
    assert len(cur._result.rows) < 1000
    seen = 10
    while batch := cur.fetchmany(1000):
        assert batch[0] == (seen, f"name-{seen:08d}")
        seen += len(batch)
        assert len(cur._result.rows) < 2000
    assert seen == 100_000


def test_interleaved_cursors_see_all_their_rows(table):
    """A second statement while a result streams must not cut the first one short."""
    reader = table.execute("SELECT id FROM t ORDER BY id")
    writer = table.cursor()
    writer.execute("CREATE TABLE copy (id INTEGER)")
    seen = []
    for (i,) in reader:
        seen.append(i)
        if i % 100 == 0:
            writer.execute("INSERT INTO copy VALUES (?)", (i,))
    assert seen == list(range(1000))
    assert table.execute("SELECT count(*) FROM copy").fetchone() == (10,)


def test_closing_a_cursor_mid_result_keeps_the_connection_usable(table):
    cur = table.execute("SELECT a.id FROM t a, t b LIMIT 50000")
    cur.fetchone()
    cur.close()
    assert table.execute("SELECT count(*) FROM t").fetchone() == (1000,)
    with pytest.raises(dqlite.ProgrammingError, match="closed cursor"):
        cur.execute("SELECT 1")


def test_abandoned_cursor_is_drained_by_the_next_execute(table):
    cur = table.cursor()
    cur.execute("SELECT a.id FROM t a, t b LIMIT 20000")
    cur.fetchone()
    cur.execute("SELECT 42")
    assert cur.fetchall() == [(42,)]


def test_connection_shortcuts_and_cursor_context_manager(conn):
    conn.execute("CREATE TABLE t (x)")
    conn.executemany("INSERT INTO t VALUES (?)", [(1,), (2,)])
    with conn.cursor() as cur:
        assert cur.execute("SELECT sum(x) FROM t").fetchone() == (3,)
    assert cur.connection is conn
    with pytest.raises(dqlite.ProgrammingError):
        cur.fetchone()


def test_setinputsizes_and_setoutputsize_are_accepted(conn):
    cur = conn.cursor()
    cur.setinputsizes([10])
    cur.setoutputsize(10)
    cur.setoutputsize(10, 0)
    assert cur.execute("SELECT 1").fetchone() == (1,)


def test_fetch_before_execute_or_after_non_query(conn):
    cur = conn.cursor()
    with pytest.raises(dqlite.ProgrammingError):
        cur.fetchone()
    cur.execute("CREATE TABLE t (x)")
    with pytest.raises(dqlite.ProgrammingError):
        cur.fetchall()


def test_closed_connection_refuses_everything(connect):
    conn = connect()
    cur = conn.cursor()
    conn.close()
    conn.close()  # closing twice is fine
    for call in (conn.cursor, conn.commit, conn.rollback, lambda: cur.execute("SELECT 1"),
                 lambda: conn.execute("SELECT 1")):
        with pytest.raises(dqlite.ProgrammingError, match="closed"):
            call()


def test_wrong_parameter_count_is_refused_before_executing(table):
    with pytest.raises(dqlite.ProgrammingError, match="uses 2, and there are 1"):
        table.execute("INSERT INTO t VALUES (?, ?)", (5000,))
    with pytest.raises(dqlite.ProgrammingError, match="uses 0, and there are 1"):
        table.execute("DELETE FROM t", (1,))
    assert table.execute("SELECT count(*) FROM t").fetchone() == (1000,)


def test_parameters_must_be_a_sequence_or_a_mapping(table):
    for bad in ("ab", 5):
        with pytest.raises(dqlite.ProgrammingError, match="sequence"):
            table.execute("SELECT ?", bad)


def test_named_parameters_bind_by_name(table):
    cur = table.cursor()
    sql = "SELECT id, s, :tag, @tag || $other FROM t WHERE id = :id OR id = :id + 500 ORDER BY id"
    for _ in range(2):  # the second run takes the prepared statement's fast path
        cur.execute(sql, {"other": "!", "id": 7, "tag": "x"})
        assert cur.fetchall() == [(7, "row-000007", "x", "x!"), (507, "row-000507", "x", "x!")]
    table.executemany("UPDATE t SET s = :s WHERE id = :id", [{"id": 1, "s": "one"}, {"s": "two", "id": 2}])
    assert table.execute("SELECT s FROM t WHERE id IN (1, 2) ORDER BY id").fetchall() == [("one",), ("two",)]
    # A parameter named like a keyword is a parameter (not RETURNING, refused).
    assert table.execute("UPDATE t SET s = :returning WHERE id = 3", {"returning": "r"}).rowcount == 1
    # A sequence binds named parameters by position, as in sqlite3.
    assert table.execute("SELECT :a, :b", (1, 2)).fetchall() == [(1, 2)]


def test_named_parameters_missing_or_unnamed_are_refused(table):
    with pytest.raises(dqlite.ProgrammingError, match="no value for the named parameter 'id'"):
        table.execute("SELECT s FROM t WHERE id = :id", {"ID": 1})
    with pytest.raises(dqlite.ProgrammingError, match="parameter 1 has no name"):
        table.execute("SELECT ?", {"a": 1})
    with pytest.raises(dqlite.ProgrammingError, match="no value for the named parameter 'x'"):
        table.executemany("UPDATE t SET s = :x WHERE id = :id", [{"id": 1, "x": "a"}, {"id": 2}])
    assert table.execute("SELECT s FROM t WHERE id = 1").fetchone() == ("row-000001",)  # all or nothing


def test_several_statements_in_execute_are_refused(table):
    with pytest.raises(dqlite.ProgrammingError, match="one statement at a time"):
        table.execute("DELETE FROM t; DELETE FROM t")
    assert table.execute("SELECT count(*) FROM t").fetchone() == (1000,)


def test_executescript_runs_every_statement(connect):
    conn = connect()
    conn.executescript(
        """
        CREATE TABLE a (x);  -- a comment; with a semicolon
        INSERT INTO a VALUES (';');
        CREATE TRIGGER tr AFTER INSERT ON a BEGIN INSERT INTO b VALUES (new.x); END;
        CREATE TABLE b (y);
        INSERT INTO a VALUES ('z');
        """
    )
    assert conn.execute("SELECT y FROM b").fetchall() == [("z",)]


def test_empty_statement_does_nothing(conn):
    cur = conn.execute("  -- nothing here\n")
    assert cur.description is None and cur.rowcount == -1
    assert not conn.in_transaction


def test_many_statements_beyond_the_statement_cache(connect):
    """Evicted prepared statements are finalized and never used again."""
    conn = connect(autocommit=True, cached_statements=4)
    for i in range(50):
        assert conn.execute(f"SELECT {i}").fetchone() == (i,)
    for i in range(50):
        assert conn.execute(f"SELECT {i}").fetchone() == (i,)


def test_repr_is_informative(conn):
    assert "database=" in repr(conn) and "leader=127.0.0.1:" in repr(conn)
    assert "Cursor" in repr(conn.cursor())


def test_connection_exposes_exception_classes(conn):
    for name in ("Warning", "Error", "InterfaceError", "DatabaseError", "DataError", "OperationalError",
                 "IntegrityError", "InternalError", "ProgrammingError", "NotSupportedError"):
        assert getattr(conn, name) is getattr(dqlite, name)


def test_dropped_connection_does_not_leak_its_socket(dqlite_cluster, dqlite_database):
    conn = dqlite.connect(dqlite_cluster.addresses, dqlite_database)
    sock = conn._wire.sock
    del conn
    gc.collect()
    assert sock.fileno() == -1


def test_a_query_run_again_behaves_as_its_first_run(table):
    # A query's later runs reuse its prepared statement (on the sync API,
    # through a path with no session generator): same results, same errors.
    cur = table.cursor()
    for _ in range(3):
        cur.execute("UPDATE t SET s = s WHERE id < 3")
        assert cur.rowcount == 3
        cur.execute("SELECT id, s FROM t WHERE id >= ? ORDER BY id", (0,))
        assert cur.rowcount == -1 and [d[0] for d in cur.description] == ["id", "s"]
        rows = cur.fetchall()
        assert len(rows) == 1000 and rows[-1] == (999, "row-000999")
        with pytest.raises(dqlite.OperationalError) as raised:  # integer overflow, while stepping
            cur.execute("SELECT abs(?)", (-(2**63),))
        assert raised.value.code == 1 and cur.description is None
    assert cur.execute("SELECT count(*) FROM t").fetchall() == [(1000,)]


def test_row_factory_makes_every_fetched_row(connect):
    conn = connect(autocommit=True)
    conn.row_factory = dqlite.Row
    sql = "WITH RECURSIVE k(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM k WHERE x < ?) SELECT x, x * 2 AS Double FROM k"
    for _ in range(2):  # the second run takes the prepared statement's fast path
        cur = conn.execute(sql, (5000,))  # several batches: the rest arrive as they are fetched
        first = cur.fetchone()
        assert isinstance(first, dqlite.Row) and first["x"] == 1 and first["DOUBLE"] == first[1] == 2
        rest = cur.fetchmany(10) + cur.fetchall()
        assert len(rest) == 4999 and all(isinstance(row, dqlite.Row) for row in rest)
        assert rest[-1]["double"] == 10000 and rest[-1].keys() == ["x", "Double"]
    cur = conn.cursor()
    cur.row_factory = lambda cursor, row: dict(zip((d[0] for d in cursor.description), row))
    assert cur.execute("SELECT 1 AS a, 'b' AS b").fetchall() == [{"a": 1, "b": "b"}]
    assert conn.execute("SELECT 1 AS a").fetchone() == conn.execute("SELECT 1 AS a").fetchone()
    with pytest.raises(IndexError, match="no column named 'nope'"):
        conn.execute("SELECT 1 AS a").fetchone()["nope"]
    conn.row_factory = None
    assert conn.execute("SELECT 1 AS a").fetchone() == (1,)


@pytest.mark.parametrize("fetch", ["fetchone", "fetchmany", "fetchall"])
def test_a_row_factory_that_raises_leaves_the_connection_as_it_was(connect, fetch):
    # The factory is the caller's code: its exception reaches the caller of the
    # fetch, and neither the open transaction nor the rest of a result
    # streaming in batches is disturbed (they once were: the next query got
    # the rest of this one's rows).
    conn = connect()
    sql = "WITH RECURSIVE k(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM k WHERE x < ?) SELECT x FROM k"

    def refuse_7(cursor, row):
        if row[0] == 7:
            raise ValueError("no 7")
        return row

    for _ in range(2):  # the second run takes the prepared statement's fast path
        cur = conn.cursor()
        cur.row_factory = refuse_7
        cur.execute(sql, (5000,))
        with pytest.raises(ValueError, match="no 7"):
            while True:
                getattr(cur, fetch)(*((3,) if fetch == "fetchmany" else ()))
        assert conn.in_transaction
        assert conn.execute("SELECT 42").fetchall() == [(42,)]
    conn.rollback()
