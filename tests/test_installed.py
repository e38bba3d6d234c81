"""The package as a user installs it: one version, and (in make test's
installed-wheel stage) the wheel's modules, plugin and entry points.

The checks marked ``installed`` run only when ``DQLITE_EXPECT_INSTALLED=1``
(scripts/test-installed.sh sets it): the run must then import the driver from
an installed wheel or sdist, in a venv without Cython, not from this checkout.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import subprocess
import sysconfig
from pathlib import Path

import pytest

import dqlite

installed = pytest.mark.skipif(os.environ.get("DQLITE_EXPECT_INSTALLED") != "1",
                               reason="only in the installed-package runs (scripts/test-installed.sh)")


def _site_packages(path: str | None) -> bool:
    """Whether ``path`` is inside this interpreter's site-packages (not a checkout)."""
    where = Path(path or "").resolve()
    return any(Path(sysconfig.get_path(key)).resolve() in where.parents for key in ("purelib", "platlib"))

@pytest.mark.server_independent
def test_the_version_is_defined_once():
    # pyproject.toml reads it from dqlite.__version__ (setuptools' dynamic version).
    assert importlib.metadata.version("dqlite") == dqlite.__version__

@installed
@pytest.mark.server_independent
def test_the_driver_comes_from_the_installed_package():
    package = Path(dqlite.__file__).resolve().parent
    assert _site_packages(dqlite.__file__), f"dqlite imported from outside site-packages: {package}"
    from dqlite import _protocol, _sockio

    for module in (_protocol, _sockio):
        assert Path(module.__file__).resolve().parent == package
        assert Path(module.__file__).suffix == ".so"
    assert (package / "py.typed").exists()
    assert {p.name for p in package.glob("*.pyi")} == {"_protocol.pyi", "_sockio.pyi"}
    assert not list(package.glob("*.c")) and not list(package.glob("*.pyx"))
    assert importlib.util.find_spec("Cython") is None, "the installed-package venv must not have Cython"

@installed
@pytest.mark.server_independent
def test_the_pytest_plugin_is_registered_by_its_entry_point(pytestconfig):
    plugin = pytestconfig.pluginmanager.get_plugin("dqlite")
    assert plugin is not None
    assert _site_packages(plugin.__file__)

@installed
@pytest.mark.server_independent
def test_the_sqlalchemy_and_alembic_entry_points():
    pytest.importorskip("sqlalchemy")
    from sqlalchemy.dialects import registry

    names = {ep.name: ep.value for ep in importlib.metadata.entry_points(group="sqlalchemy.dialects")}
    assert {"dqlite", "dqlite.dqlite", "dqlite.aio"} <= set(names)
    for name in ("dqlite", "dqlite.dqlite", "dqlite.aio"):
        dialect = registry.load(name)
        assert dialect.name == "dqlite"
        assert _site_packages(importlib.import_module(dialect.__module__).__file__)
    alembic = {ep.name for ep in importlib.metadata.entry_points(group="alembic.plugins")}
    assert "dqlite.impl" in alembic


@installed
def test_node_hosts_import_the_installed_package_too():
    # Started from the checkout's folder, whose dqlite/ must not shadow the installed one.
    from dqlite._node import EXIT_NO_LIBRARY
    from dqlite.server import default_python_command, node_environment

    done = subprocess.run(default_python_command() + ["-m", "dqlite._node", "--version"],
                          capture_output=True, text=True, timeout=60, env=node_environment(),
                          cwd=Path(__file__).resolve().parent.parent)
    if done.returncode == EXIT_NO_LIBRARY:  # a wheel's own test run (cibuildwheel) has no libdqlite
        pytest.skip("no libdqlite on this machine")
    assert done.returncode == 0, done.stderr
    fields = dict(line.partition("=")[::2] for line in done.stdout.splitlines())
    assert _site_packages(fields["package"]), fields
