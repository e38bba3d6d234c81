"""pytest fixtures that run real dqlite clusters (registered as the ``dqlite`` plugin).

* ``dqlite_cluster``: one 3-node :class:`~dqlite.server.LocalCluster` shared by the
  whole test session, stopped at the end. Tests must leave its nodes running.
* ``dqlite_fresh_cluster``: a 3-node cluster of the test's own, for tests that
  kill, stop or restart nodes.
* ``dqlite_database``: a database name unique to the test.

Importing this module starts nothing and does not import the client: it is
loaded by every pytest run in an environment where this package is installed.
The fixtures need libdqlite (Debian: ``libdqlite0``) for the node processes;
without it they fail (not skip) with a message saying what to install.
"""

from __future__ import annotations

import itertools
import re
from typing import TYPE_CHECKING, Iterator

import pytest

if TYPE_CHECKING:
    from dqlite.server import LocalCluster

__all__ = ["dqlite_cluster", "dqlite_database", "dqlite_fresh_cluster"]

_db_counter = itertools.count(1)


def _start_cluster(nodes: int = 3) -> LocalCluster:
    from dqlite.server import LocalCluster, NodeStartError

    try:
        return LocalCluster(nodes=nodes)
    except NodeStartError as exc:
        message = str(exc)
    # A failure to start is an environment problem: show just the message
    # (failing outside the except block keeps the traceback chain out of it).
    pytest.fail(f"could not start a local dqlite cluster: {message}", pytrace=False)


@pytest.fixture(scope="session")
def dqlite_cluster() -> Iterator[LocalCluster]:
    """A 3-node dqlite cluster shared by the whole test session."""
    cluster = _start_cluster()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def dqlite_fresh_cluster() -> Iterator[LocalCluster]:
    """A 3-node dqlite cluster for this test only (kill or stop its nodes freely)."""
    cluster = _start_cluster()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def dqlite_database(request: pytest.FixtureRequest) -> str:
    """A database name unique within the session, derived from the test name.

    Only ASCII letters, digits and ``_``, at most 60 characters, so it is a
    valid file name on the nodes.
    """
    base = re.sub(r"[^A-Za-z0-9_]+", "_", request.node.name).strip("_")[:48] or "db"
    return f"{base}_{next(_db_counter)}"
