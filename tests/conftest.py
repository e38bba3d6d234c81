"""Shared fixtures: connections to real clusters, through both APIs.

The clusters come from the project's pytest plugin (dqlite.pytest_plugin):
``dqlite_cluster`` (shared), ``dqlite_fresh_cluster`` (per test), ``dqlite_database``.

Every test that connects through the ``connect``/``conn``/``api_connect``
fixtures runs twice: through the sync API (``dqlite.connect``) and through the
asyncio API (``dqlite.aio.connect``), the latter behind a thin facade that runs
each coroutine to completion.  One set of behavioural tests, two drivers.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import dqlite
import dqlite.aio


def _forwarded(name: str, target: str) -> property:
    """A read/write attribute of the wrapped ``target`` object (the wrappers
    below forward reads by ``__getattr__``, but writes need this)."""
    return property(lambda self: getattr(getattr(self, target), name),
                    lambda self, value: setattr(getattr(self, target), name, value))


class AioCursor:
    """A sync-looking face on ``dqlite.aio.AsyncCursor`` (test helper)."""

    def __init__(self, run: Callable, connection: AioConnection, cursor: dqlite.aio.AsyncCursor) -> None:
        self._run = run
        self._connection = connection
        self._cursor = cursor

    def __getattr__(self, name: str) -> Any:
        return getattr(self._cursor, name)

    arraysize = _forwarded("arraysize", "_cursor")
    row_factory = _forwarded("row_factory", "_cursor")

    @property
    def connection(self) -> AioConnection:
        return self._connection

    def execute(self, sql, parameters=()):
        self._run(self._cursor.execute(sql, parameters))
        return self

    def executemany(self, sql, seq):
        self._run(self._cursor.executemany(sql, seq))
        return self

    def fetchone(self):
        return self._run(self._cursor.fetchone())

    def fetchmany(self, size=None):
        return self._run(self._cursor.fetchmany(size))

    def fetchall(self):
        return self._run(self._cursor.fetchall())

    def close(self):
        self._run(self._cursor.close())

    def __iter__(self):
        return self

    def __next__(self):
        row = self.fetchone()
        if row is None:
            raise StopIteration
        return row

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class AioConnection:
    """A sync-looking face on ``dqlite.aio.AsyncConnection`` (test helper)."""

    api = "aio"

    def __init__(self, run: Callable, connection: dqlite.aio.AsyncConnection) -> None:
        self._run = run
        self.aio = connection

    def __getattr__(self, name: str) -> Any:
        return getattr(self.aio, name)

    def __repr__(self) -> str:
        return repr(self.aio)

    row_factory = _forwarded("row_factory", "aio")
    autocommit = _forwarded("autocommit", "aio")
    transaction_mode = _forwarded("transaction_mode", "aio")
    on_query = _forwarded("on_query", "aio")

    def cursor(self) -> AioCursor:
        return AioCursor(self._run, self, self.aio.cursor())

    def execute(self, sql, parameters=()):
        return self.cursor().execute(sql, parameters)

    def executemany(self, sql, seq):
        return self.cursor().executemany(sql, seq)

    def executescript(self, script):
        self._run(self.aio.executescript(script))

    def ping(self):
        self._run(self.aio.ping())

    def commit(self):
        self._run(self.aio.commit())

    def rollback(self):
        self._run(self.aio.rollback())

    def close(self):
        self._run(self.aio.close())

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._run(self.aio.__aexit__(*exc))


@pytest.fixture(params=["sync", "aio"])
def api(request) -> str:
    """Which driver API the test runs through."""
    return request.param


@pytest.fixture
def api_connect(api) -> Iterator[Callable[..., Any]]:
    """``api_connect(addresses, database, **kw)``: a connection through the test's API.

    All connections it made are closed afterwards.
    """
    opened: list[Any] = []
    loop = asyncio.new_event_loop() if api == "aio" else None

    def factory(addresses, database, **kwargs):
        kwargs.setdefault("timeout", 10.0)
        if loop is None:
            conn = dqlite.connect(addresses, database, **kwargs)
        else:
            conn = AioConnection(loop.run_until_complete,
                                 loop.run_until_complete(dqlite.aio.connect(addresses, database, **kwargs)))
        opened.append(conn)
        return conn

    yield factory
    for conn in opened:
        conn.close()
    if loop is not None:
        loop.close()


@pytest.fixture
def connect(api_connect, dqlite_cluster, dqlite_database) -> Callable[..., Any]:
    """A factory of connections to this test's database on the shared cluster."""
    return lambda **kwargs: api_connect(dqlite_cluster.addresses, dqlite_database, **kwargs)


@pytest.fixture
def conn(connect) -> Any:
    """A PEP 249 (non-autocommit) connection to this test's database."""
    return connect()


@pytest.fixture(scope="session")
def server_caps(dqlite_cluster):
    """What the server under test does where dqlite versions differ (tests/servercaps.py).

    Probed with raw bytes, independently of the driver, to set the tests'
    expectations; the driver has to find out the same by itself.
    """
    try:
        from servercaps import probe
    except ImportError:  # tests/ imported as a package
        from tests.servercaps import probe  # type: ignore[no-redef]
    leader = dqlite_cluster.wait_for_leader()
    follower = next(a for a in dqlite_cluster.addresses if a != leader)
    return probe(leader, follower)


@pytest.fixture
def transfer_away() -> Callable[[Any], str]:
    """``transfer_away(cluster)``: move leadership off the leader; the new leader's address.

    Then commits a write in the new leader's term: a 1.11.1 leader prepares
    statements without a raft barrier, so until its own first commit it may
    not have applied what was committed before it (seen once under load as
    "no such table" for a table created before the transfer).
    """

    def move(cluster: Any) -> str:
        leader = cluster.transfer_leadership()
        with dqlite.connect(leader, "new_term", autocommit=True) as conn:
            conn.execute("CREATE TABLE IF NOT EXISTS terms (x)")
            conn.execute("INSERT INTO terms VALUES (1)")
        return leader

    return move
