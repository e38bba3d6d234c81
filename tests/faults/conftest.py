"""Fixtures and hooks of the fault tests (helpers: faultkit.py)."""

from __future__ import annotations

import os

import pytest

from faultkit import OUTCOMES, ProxiedNode


@pytest.fixture(scope="module")
def proxied_node(tmp_path_factory):
    """A one-node cluster behind a FaultProxy, shared by a module's tests."""
    node = ProxiedNode(tmp_path_factory.mktemp("proxied"))
    try:
        yield node
    finally:
        node.close()


@pytest.fixture
def proxy_env(proxied_node):
    """The proxied node, with faults cleared before and the node checked after each test."""
    proxied_node.ensure_running()
    proxied_node.proxy.disarm()
    yield proxied_node
    proxied_node.proxy.disarm()
    crashed = not proxied_node.node.is_alive()
    proxied_node.ensure_running()
    assert not crashed, f"the dqlite node died during the test: {proxied_node.node.log_path}"
    assert not proxied_node.proxy.errors, proxied_node.proxy.errors


def pytest_collection_modifyitems(config, items):  # noqa: ARG001
    here = os.path.dirname(__file__)
    for item in items:
        if str(item.fspath).startswith(here):
            item.add_marker(pytest.mark.faults)


def pytest_configure(config):
    config.addinivalue_line("markers", "faults: fault-injection tests (tests/faults)")


def pytest_terminal_summary(terminalreporter, exitstatus, config):  # noqa: ARG001
    if not OUTCOMES:
        return
    terminalreporter.section("fault outcomes (fault: what the client did; what was lost)")
    for (fault, outcome), n in sorted(OUTCOMES.items()):
        terminalreporter.write_line(f"{fault}: {outcome} (x{n})")
