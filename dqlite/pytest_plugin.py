"""pytest fixtures that run real dqlite clusters (registered as the ``dqlite`` plugin).

* ``dqlite_cluster``: one 3-node :class:`~dqlite.server.LocalCluster` shared by the
  whole test session, stopped at the end. Tests must leave its nodes running.
* ``dqlite_fresh_cluster``: a 3-node cluster of the test's own, for tests that
  kill, stop or restart nodes.
* ``dqlite_database``: a database name unique to the test.
* ``dqlite_server``: which server the nodes run (:class:`ServerInfo`: the
  libdqlite version number and file, SQLite's version), for test reports.

Which libdqlite the nodes load is chosen per pytest run with
``--dqlite-server=WHICH`` or the environment variable ``DQLITE_SERVER``:

* ``system`` (default): the system's ``libdqlite.so.0`` (Debian bookworm: 1.11.1);
* ``1.18``: Debian trixie's 1.18.1 unpacked in ``.deps/dqlite-1.18`` under the
  rootdir (``scripts/fetch-dqlite.sh 1.18`` puts it there; ``make test-1.18``
  runs it), started through that folder's own dynamic loader;
* ``1.18.7``: Debian sid's 1.18.7 in ``.deps/dqlite-1.18.7`` (``scripts/fetch-dqlite.sh
  1.18.7``; ``make test-1.18.7``), the same way;
* a path: a folder holding such an unpacked glibc + libdqlite.

The choice is exported as ``DQLITE_SERVER_ROOT`` (see :mod:`dqlite.server`), so
every ``LocalCluster`` of the run, also one a test builds itself or starts in a
subprocess, runs that server. Tests never need to know which one it is: the
driver learns what a server can do from its answers.

A node that crashes (see :class:`dqlite.server.NodeCrash`) has its log kept in
``build/node-crashes/`` (or ``$DQLITE_CRASH_DIR``). A test that fails while a
node of one of its fixtures' clusters crashes gets a "dqlite node crashes"
section in its report, and the run ends with a list of every crash of the
fixtures' clusters. A test that finds a node of the shared ``dqlite_cluster``
dead first gets that cluster renewed (:meth:`~dqlite.server.LocalCluster.renew`),
so one crash fails at most the tests it happened under, not every one after.

``--dqlite-crash-failures=FILE`` writes the ids of the failed tests to FILE
when every failure happened under a node crash, and ``--dqlite-run-only=FILE``
runs just those a second time (``scripts/rerun-after-node-crash.sh``); a server
bug that kills a node now and then must not be read as a failure of the client
under test.

Importing this module starts nothing and does not import the client: it is
loaded by every pytest run in an environment where this package is installed.
The fixtures need libdqlite (Debian: ``libdqlite0``) for the node processes;
without it they fail (not skip) with a message saying what to install.
"""

from __future__ import annotations

import itertools
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generator, Iterator, NamedTuple

import pytest

if TYPE_CHECKING:
    from dqlite.server import LocalCluster, NodeCrash

__all__ = ["ServerInfo", "dqlite_cluster", "dqlite_database", "dqlite_fresh_cluster", "dqlite_server"]

_db_counter = itertools.count(1)

#: Named private servers: folder under the rootdir, and how to get it.
_PRIVATE_SERVERS = {
    "1.18": (".deps/dqlite-1.18", "scripts/fetch-dqlite.sh 1.18"),
    "1.18.7": (".deps/dqlite-1.18.7", "scripts/fetch-dqlite.sh 1.18.7"),
}
_SYSTEM_NAMES = {"", "system", "1.11"}

# Crashes of the fixtures' clusters, for the summary at the end of the run.
_crashes_key = pytest.StashKey["list[NodeCrash]"]()
# Renewals of the shared cluster, for the same summary.
_renewals_key = pytest.StashKey["list[str]"]()
# The crashes found during one test (any of its phases).
_test_crashes_key = pytest.StashKey["list[NodeCrash]"]()
# Each failed test's id, and whether a node crashed under it.
_failures_key = pytest.StashKey["dict[str, bool]"]()


class ServerInfo(NamedTuple):
    """The server the run's nodes host."""

    name: str                   # "system", "1.18", "1.18.7" or a folder
    root: str | None            # the private folder, None for the system library
    version_number: int | None  # dqlite_version_number() (1.11.1 reports 11000)
    library: str                # the libdqlite file the node host loads
    sqlite: str                 # the SQLite version it runs on

    def describe(self) -> str:
        package = ""
        if self.root:
            # scripts/fetch-dqlite-*.sh records the unpacked package versions.
            try:
                for line in (Path(self.root) / "VERSIONS").read_text().splitlines():
                    if line.startswith("libdqlite0 "):
                        package = f" (package {line.split()[1]})"
            except OSError:
                pass
        where = f"private loader in {self.root}" if self.root else "system library"
        return (f"{self.library}{package}, dqlite_version_number() = {self.version_number}, "
                f"SQLite {self.sqlite}, {where}")


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("dqlite")
    group.addoption(
        "--dqlite-server",
        default=None,
        metavar="WHICH",
        help="libdqlite for the test clusters' nodes: 'system' (default), '1.18' or '1.18.7' "
        "(.deps/dqlite-VERSION, see scripts/fetch-dqlite.sh) or a folder with an unpacked "
        "glibc + libdqlite. Default: $DQLITE_SERVER.",
    )
    group.addoption(
        "--dqlite-crash-failures",
        default=None,
        metavar="FILE",
        help="if tests failed and a dqlite node of the test's clusters crashed under every one "
        "of them, write their ids to FILE (one per line; emptied otherwise). "
        "See scripts/rerun-after-node-crash.sh.",
    )
    group.addoption(
        "--dqlite-run-only",
        default=None,
        metavar="FILE",
        help="run only the collected tests whose ids FILE lists (one per line; the others are "
        "deselected): a --dqlite-crash-failures list, run once more.",
    )


def _resolve_root(config: pytest.Config) -> tuple[str, str | None]:
    """(name, private folder or None) of the server chosen for this run."""
    which = config.getoption("--dqlite-server", default=None)
    if which is None:
        which = os.environ.get("DQLITE_SERVER")
    if which is None:
        # Nothing chosen for pytest: honour a DQLITE_SERVER_ROOT set by hand.
        which = os.environ.get("DQLITE_SERVER_ROOT", "")
    which = which.strip()
    if which in _SYSTEM_NAMES:
        os.environ.pop("DQLITE_SERVER_ROOT", None)
        return "system", None
    if which in _PRIVATE_SERVERS:
        folder, how = _PRIVATE_SERVERS[which]
        # The checkout under test (rootdir), else the one this package lives in.
        candidates = [Path(config.rootpath) / folder, Path(__file__).resolve().parent.parent / folder]
        root = next((c for c in candidates if c.exists()), candidates[0])
        hint = f"run {how} (or make test-{which}) first"
    else:
        root = Path(which).expanduser()
        hint = "unpack libc6 and libdqlite0 there with dpkg -x"
    from dqlite.server import NodeStartError, private_python_command

    try:
        private_python_command(root)
    except NodeStartError as exc:
        raise pytest.UsageError(f"--dqlite-server={which}: {exc}; {hint}") from None
    return which, str(root.resolve())


def pytest_configure(config: pytest.Config) -> None:
    name, root = _resolve_root(config)
    config._dqlite_server = (name, root)  # type: ignore[attr-defined]
    config._dqlite_server_info = None  # type: ignore[attr-defined]
    if root is not None:
        # Every node host of this run (also in subprocesses) uses the private server.
        os.environ["DQLITE_SERVER_ROOT"] = root
    config.addinivalue_line(
        "markers",
        "server_independent: runs no dqlite node (codec, fake servers); "
        "one run is enough, whatever --dqlite-server says",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    path = config.getoption("--dqlite-run-only", default=None)
    if path is None:
        return
    wanted = set(Path(path).read_text().splitlines())
    config.hook.pytest_deselected(items=[item for item in items if item.nodeid not in wanted])
    items[:] = [item for item in items if item.nodeid in wanted]


def _server_info(config: pytest.Config) -> ServerInfo:
    info = getattr(config, "_dqlite_server_info", None)
    if info is not None:
        return info
    name, root = getattr(config, "_dqlite_server", ("system", None))
    from dqlite.server import default_python_command, node_environment

    command = default_python_command() + ["-m", "dqlite._node", "--version"]
    fields: dict[str, str] = {}
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=30, env=node_environment())
        for line in done.stdout.splitlines():
            key, _, value = line.partition("=")
            fields[key] = value
    except (OSError, subprocess.SubprocessError):
        pass
    number = fields.get("dqlite")
    info = ServerInfo(
        name=name,
        root=root,
        version_number=int(number) if number and number.isdigit() else None,
        library=fields.get("libdqlite_path", "not found"),
        sqlite=fields.get("sqlite", "unknown"),
    )
    config._dqlite_server_info = info  # type: ignore[attr-defined]
    return info


def pytest_report_header(config: pytest.Config) -> str | None:
    name, root = getattr(config, "_dqlite_server", ("system", None))
    if root is None:
        return None  # the default: say nothing (and spawn nothing) in unrelated runs
    return f"dqlite server: {_server_info(config).describe()}"


def _note_crashes(config: pytest.Config, crashes: list[NodeCrash]) -> list[NodeCrash]:
    """Remember ``crashes`` for the end-of-run summary (each once); the ones not seen before."""
    seen = config.stash.setdefault(_crashes_key, [])
    new = [c for c in crashes if c not in seen]
    seen.extend(new)
    return new


@pytest.hookimpl(hookwrapper=True)  # (the old style: this plugin loads in every project's pytest)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, None]:
    """Say in a failed test's report which nodes of its clusters crashed under it.

    A node crash shows in a test as a connection error that does not say why;
    this section does. The clusters are the test's fixture values (also those
    it got through other fixtures), so it covers the shared cluster, fresh ones
    and any a project's own fixture returns. A crash counts for the test in
    whose phases it is first seen.
    """
    outcome = yield
    report: pytest.TestReport = outcome.get_result()
    # No dqlite.server imported: no cluster can exist, and importing it here
    # would load the client into every pytest run.
    server = sys.modules.get("dqlite.server")
    if server is None:
        return
    values = getattr(item, "funcargs", None) or {}
    clusters = [v for v in values.values() if isinstance(v, server.LocalCluster)]
    crashes = item.stash.setdefault(_test_crashes_key, [])
    crashes += _note_crashes(item.config, [crash for cluster in clusters for crash in cluster.crashes()])
    if not report.failed:
        return
    failures = item.config.stash.setdefault(_failures_key, {})
    failures[item.nodeid] = failures.get(item.nodeid, True) and bool(crashes)
    if crashes:
        report.sections.append(
            ("dqlite node crashes", "\n\n".join(f"{c.describe()}; end of its log:\n{c.log_tail}" for c in crashes))
        )


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    path = session.config.getoption("--dqlite-crash-failures", default=None)
    if path is None:
        return
    failures = session.config.stash.get(_failures_key, {})
    under_crashes = exitstatus == pytest.ExitCode.TESTS_FAILED and failures and all(failures.values())
    Path(path).write_text("".join(f"{nodeid}\n" for nodeid in failures) if under_crashes else "")


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    crashes = config.stash.get(_crashes_key, [])
    renewals = config.stash.get(_renewals_key, [])
    if crashes or renewals:
        terminalreporter.section("dqlite node crashes", yellow=True)
        for crash in crashes:
            terminalreporter.line(crash.describe())
        for renewal in renewals:
            terminalreporter.line(renewal)


def _stop_cluster(cluster: LocalCluster, config: pytest.Config) -> None:
    """Stop a fixture's cluster, keeping its crashes for the end-of-run summary."""
    try:
        cluster.stop()  # keeps the evidence of crashed nodes first
    finally:
        _note_crashes(config, cluster.crashes())


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
def dqlite_server(pytestconfig: pytest.Config) -> ServerInfo:
    """Which libdqlite this run's nodes load (for reports; not for version guesses)."""
    return _server_info(pytestconfig)


@pytest.fixture(scope="session")
def dqlite_cluster(pytestconfig: pytest.Config) -> Iterator[LocalCluster]:
    """A 3-node dqlite cluster shared by the whole test session."""
    cluster = _start_cluster()
    try:
        yield cluster
    finally:
        _stop_cluster(cluster, pytestconfig)


@pytest.fixture(autouse=True)
def _dqlite_cluster_whole(request: pytest.FixtureRequest) -> None:
    """Renew the shared cluster for a test that uses it if one of its nodes has died."""
    if "dqlite_cluster" not in request.fixturenames:
        return
    cluster: LocalCluster = request.getfixturevalue("dqlite_cluster")
    dead = [node for node in cluster.nodes if not node.is_alive()]
    if not dead:
        return
    request.config.stash.setdefault(_renewals_key, []).append(
        f"the shared cluster was renewed before {request.node.nodeid}: "
        f"node {', '.join(str(node.id) for node in dead)} had died"
    )
    cluster.renew()
    # Noted now, also those of stopping the old nodes: none happened under this test.
    _note_crashes(request.config, cluster.crashes())


@pytest.fixture
def dqlite_fresh_cluster(pytestconfig: pytest.Config) -> Iterator[LocalCluster]:
    """A 3-node dqlite cluster for this test only (kill or stop its nodes freely)."""
    cluster = _start_cluster()
    try:
        yield cluster
    finally:
        _stop_cluster(cluster, pytestconfig)


@pytest.fixture
def dqlite_database(request: pytest.FixtureRequest) -> str:
    """A database name unique within the session, derived from the test name.

    Only ASCII letters, digits and ``_``, at most 60 characters, so it is a
    valid file name on the nodes.
    """
    base = re.sub(r"[^A-Za-z0-9_]+", "_", request.node.name).strip("_")[:48] or "db"
    return f"{base}_{next(_db_counter)}"
