"""Runs SQLAlchemy's compliance suite against a local dqlite cluster.

SQLAlchemy's own pytest plugin drives the suite; this conftest loads it and,
unless a URL is given with ``--dburi``/``--db``, starts a 3-node cluster for
the whole run and points the suite at it, once for each dialect: the sync
``dqlite://`` and the asyncio ``dqlite+aio://`` (each in a database of its own).
``DQLITE_COMPLIANCE_DRIVERS=aio`` (or ``dqlite``) runs one of them only.
"""

from __future__ import annotations

import os

import pytest
from sqlalchemy.dialects import registry

registry.register("dqlite", "sqlalchemy_dqlite.base", "DqliteDialect")
registry.register("dqlite.dqlite", "sqlalchemy_dqlite.base", "DqliteDialect")
registry.register("dqlite.aio", "sqlalchemy_dqlite.aio", "DqliteDialect_aio")

pytest.register_assert_rewrite("sqlalchemy.testing.assertions")

from sqlalchemy.testing.plugin import pytestplugin as _sqla_plugin  # noqa: E402
from sqlalchemy.testing.plugin.pytestplugin import *  # noqa: E402,F401,F403

_cluster = None


@pytest.hookimpl(trylast=True)  # after the dqlite plugin chose the server (--dqlite-server)
def pytest_configure(config: pytest.Config) -> None:
    global _cluster
    if not config.option.dburi and not config.option.db and not hasattr(config, "workerinput"):
        from dqlite.server import LocalCluster

        _cluster = LocalCluster(nodes=3)
        hosts = "&".join(f"host={address}" for address in _cluster.addresses)
        drivers = os.environ.get("DQLITE_COMPLIANCE_DRIVERS", "dqlite,aio").split(",")
        config.option.dburi = [
            f"dqlite+{driver}:///compliance_{driver}?{hosts}&timeout=30" for driver in drivers if driver
        ]
    _sqla_plugin.pytest_configure(config)


@pytest.fixture(autouse=True)
def _dqlite_compliance_cluster():
    """The run's cluster, among every test's fixture values: the dqlite plugin
    then reports a node crash under a test (and --dqlite-crash-failures lists it)."""
    return _cluster


def pytest_unconfigure(config: pytest.Config) -> None:
    try:
        _sqla_plugin.pytest_unconfigure(config)
    finally:
        if _cluster is not None:
            _cluster.stop()
