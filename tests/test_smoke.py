"""The shortest path through the driver: connect, write, commit, read back."""


def test_connect_execute_commit_and_read_back(conn, connect):
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, s TEXT)")
    conn.execute("INSERT INTO t (s) VALUES (?)", ("hello",))
    conn.commit()
    other = connect()
    assert other.execute("SELECT id, s FROM t").fetchall() == [(1, "hello")]


def test_compiled_core_is_an_extension_module():
    import dqlite._protocol

    assert dqlite._protocol.__file__.endswith(".so")
    assert dqlite.apilevel == "2.0" and dqlite.paramstyle == "qmark" and dqlite.threadsafety == 1
