"""The shortest path through the driver: connect, write, commit, read back."""

import pytest

import dqlite
from dqlite._wire import DEFAULT_BUSY_POLL


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


def test_busy_poll_is_a_connect_option(dqlite_cluster, dqlite_database):
    """Waits for answers poll first by default; ``busy_poll=0`` never polls."""
    default = dqlite.connect(dqlite_cluster.addresses, dqlite_database)
    never = dqlite.connect(dqlite_cluster.addresses, dqlite_database, busy_poll=0)
    for conn in (default, never):
        assert [conn.execute("SELECT ?", (i,)).fetchall() for i in range(20)] == [[(i,)] for i in range(20)]
    assert default._wire.busy_poll.window == DEFAULT_BUSY_POLL
    assert never._wire.busy_poll.hits == 0 and never._wire.busy_poll.sleeps >= 20
    default.close()
    never.close()
    for bad in (-1, 0.5, None):
        with pytest.raises(dqlite.InterfaceError, match="busy_poll"):
            dqlite.connect(dqlite_cluster.addresses, dqlite_database, busy_poll=bad)
