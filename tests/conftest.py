"""Shared fixtures: connections to the session's real 3-node cluster.

The cluster itself comes from the project's pytest plugin (dqlite.pytest_plugin):
``dqlite_cluster`` (shared), ``dqlite_fresh_cluster`` (per test), ``dqlite_database``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

import dqlite


@pytest.fixture
def connect(dqlite_cluster, dqlite_database) -> Iterator[Callable[..., dqlite.Connection]]:
    """A factory of connections to this test's database; all closed afterwards."""
    opened: list[dqlite.Connection] = []

    def factory(**kwargs) -> dqlite.Connection:
        kwargs.setdefault("timeout", 10.0)
        conn = dqlite.connect(dqlite_cluster.addresses, dqlite_database, **kwargs)
        opened.append(conn)
        return conn

    yield factory
    for conn in opened:
        conn.close()


@pytest.fixture
def conn(connect) -> dqlite.Connection:
    """A PEP 249 (non-autocommit) connection to this test's database."""
    return connect()
