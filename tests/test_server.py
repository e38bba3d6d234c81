"""Tests of dqlite.server / dqlite._node / the pytest fixtures against real libdqlite nodes."""

from __future__ import annotations

import json
import logging
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from dqlite.cluster import VOTER, NodeClient
from dqlite.exceptions import OperationalError
from dqlite.server import CRASH_DIR_ENV, LocalCluster, LocalNode, NodeStartError, free_ports


def _running(pid: int) -> bool:
    """True if ``pid`` is a live process (a zombie awaiting its reaper counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


def _wait_gone(pids: list[int], timeout: float = 5.0) -> list[int]:
    """Wait until none of ``pids`` runs; return those still running at the timeout."""
    deadline = time.monotonic() + timeout
    while True:
        alive = [p for p in pids if _running(p)]
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.02)


def _readline(proc: subprocess.Popen[str], timeout: float) -> str:
    """One stdout line from ``proc``, failing the test after ``timeout`` s."""
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    assert ready, f"no output within {timeout} s"
    return proc.stdout.readline()


def test_cluster_agrees_on_leader_and_lists_three_voters(dqlite_cluster: LocalCluster) -> None:
    leader = dqlite_cluster.leader_address()
    assert leader in dqlite_cluster.addresses
    for address in dqlite_cluster.addresses:
        with NodeClient(address, timeout=5.0) as client:
            assert client.leader()[1] == leader
    with NodeClient(leader, timeout=5.0) as client:
        infos = client.cluster()
    assert sorted((i.id, i.address) for i in infos) == [
        (n.id, n.address) for n in dqlite_cluster.nodes
    ]
    assert all(i.role == VOTER for i in infos)


def test_start_is_fast_and_stop_leaves_no_process() -> None:
    started = time.monotonic()
    cluster = LocalCluster(nodes=3)
    elapsed = time.monotonic() - started
    pids = [n.pid for n in cluster.nodes]
    base_dir = cluster.base_dir
    try:
        # Typically ~0.3 s; the bound is loose for loaded CI machines.
        assert elapsed < 10
        assert len(set(cluster.addresses)) == 3
        assert all(p is not None and _running(p) for p in pids)
        assert "3/3 running" in repr(cluster)
    finally:
        cluster.stop()
    assert _wait_gone([p for p in pids if p is not None], timeout=0.5) == []
    assert not base_dir.exists()
    assert all(n.process is not None and n.process.returncode == 0 for n in cluster.nodes)
    assert "stopped" in repr(cluster)
    cluster.stop()  # idempotent


def test_kill_leader_then_restart_it(dqlite_fresh_cluster: LocalCluster) -> None:
    cluster = dqlite_fresh_cluster
    old = cluster.leader_node()
    old.kill()
    assert not old.is_alive()
    new_leader = cluster.wait_for_leader(timeout=10)
    assert new_leader != old.address
    old.start()  # same id, address and data: it rejoins as a follower
    assert cluster.wait_for_leader(timeout=10) == new_leader
    with NodeClient(old.address, timeout=5.0) as client:
        assert client.leader()[1] == new_leader


def test_a_node_sent_sigstop_is_stopped_when_kill_returns(dqlite_fresh_cluster: LocalCluster) -> None:
    # The kernel stops a process's threads one after the other; kill() waits
    # for all of them, so a request sent next surely gets no answer.
    node = dqlite_fresh_cluster.node(2)
    node.kill(signal.SIGSTOP)
    try:
        states = []
        for tid in os.listdir(f"/proc/{node.pid}/task"):
            with open(f"/proc/{node.pid}/task/{tid}/stat") as f:
                states.append(f.read().rsplit(")", 1)[1].split()[0])
        assert len(states) > 1 and set(states) == {"T"}, states
        with pytest.raises(OperationalError), NodeClient(node.address, timeout=0.5) as client:
            client.leader()
    finally:
        node.kill(signal.SIGCONT)
    leader = dqlite_fresh_cluster.wait_for_leader()  # it answers again
    with NodeClient(node.address, timeout=5.0) as client:
        assert client.leader()[1] == leader


def test_nodes_die_with_a_sigkilled_parent() -> None:
    script = textwrap.dedent(
        """
        import json, sys, time
        from dqlite.server import LocalCluster
        cluster = LocalCluster(nodes=3)
        print(json.dumps([str(cluster.base_dir)] + [n.pid for n in cluster.nodes]), flush=True)
        time.sleep(60)
        """
    )
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    base_dir: str | None = None
    try:
        base_dir, *pids = json.loads(_readline(parent, timeout=15))
        assert len(pids) == 3 and all(_running(p) for p in pids)
        parent.kill()  # no chance to clean up: the nodes must notice on their own
        parent.wait()
        assert _wait_gone(pids) == []
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
        # Only the data dir is left behind by a SIGKILLed owner.
        if base_dir is not None:
            shutil.rmtree(base_dir, ignore_errors=True)


def test_command_line_cluster_stops_on_sigterm() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "dqlite.server", "--nodes", "3", "--quiet"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        line = _readline(proc, timeout=15)
        match = re.fullmatch(r"dqlite cluster ready: (\S+)\n", line)
        assert match, line
        addresses = match.group(1).split(",")
        assert len(addresses) == 3
        leaders = set()
        for address in addresses:
            with NodeClient(address, timeout=5.0) as client:
                leaders.add(client.leader()[1])
        assert len(leaders) == 1 and leaders.pop() in addresses
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
        for address in addresses:
            with pytest.raises(OperationalError):
                with NodeClient(address, timeout=2.0) as client:
                    client.leader()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_missing_libdqlite_is_reported_clearly(tmp_path: os.PathLike[str]) -> None:
    env = dict(os.environ, DQLITE_LIBRARY="/nonexistent/libdqlite.so.0")
    node = LocalNode(1, "127.0.0.1:1", os.path.join(tmp_path, "node-1"), env=env)
    with pytest.raises(NodeStartError, match="libdqlite0"):
        node.start()
    assert not node.is_alive()


def test_client_imports_do_not_load_libdqlite() -> None:
    code = (
        "import dqlite, dqlite.server, dqlite.pytest_plugin\n"
        "maps = open('/proc/self/maps').read()\n"
        "assert 'libdqlite' not in maps, 'libdqlite was loaded'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=30)


def test_dqlite_database_is_unique_and_plain(dqlite_database: str) -> None:
    assert re.fullmatch(r"[A-Za-z0-9_]{1,60}", dqlite_database)
    assert dqlite_database.startswith("test_dqlite_database_is_unique_and_plain_")


def _crash_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == "dqlite.server" and r.levelno == logging.WARNING and "crashed" in r.getMessage()]


@pytest.fixture
def crash_dir(tmp_path, monkeypatch, caplog):
    """Where this test's crash evidence goes; the crash warnings are captured."""
    crash_dir = tmp_path / "crashes"
    monkeypatch.setenv(CRASH_DIR_ENV, str(crash_dir))
    caplog.set_level(logging.WARNING, logger="dqlite.server")
    return crash_dir


def test_a_crashed_node_leaves_its_log_and_a_warning(crash_dir, caplog) -> None:
    cluster = LocalCluster(nodes=3)
    try:
        node = cluster.node(2)
        assert node.process is not None
        # Not through LocalNode.kill(): a signal the code did not ask for.
        os.kill(node.process.pid, signal.SIGSEGV)
        assert node.process.wait(timeout=10) == -signal.SIGSEGV
    finally:
        cluster.stop()
    assert not cluster.base_dir.exists()  # the evidence outlived the cluster's directory
    (folder,) = crash_dir.iterdir()
    assert re.fullmatch(r"\d{8}T\d{6}Z-node2", folder.name)
    # The host's faulthandler wrote the signal's name to the log before dying.
    log_text = (folder / "node-2.log").read_text()
    assert "Segmentation fault" in log_text
    assert "metadata1" in (folder / "data-dir.txt").read_text()  # a listing, not the data
    assert not (folder / "node-2").exists()
    assert "killed by SIGSEGV" in (folder / "exit.txt").read_text()
    (crash,) = cluster.crashes()
    assert (crash.node_id, crash.address, crash.returncode, crash.evidence) == (
        2, node.address, -signal.SIGSEGV, folder)
    (warning,) = _crash_warnings(caplog)
    assert f"node 2 at {node.address}" in warning
    assert "killed by SIGSEGV" in warning and str(folder) in warning
    assert log_text.strip().splitlines()[-1] in warning  # the end of its log


@pytest.mark.parametrize("how", ["kill", "kill SIGABRT", "stop"])
def test_a_node_stopped_on_purpose_leaves_no_evidence(crash_dir, caplog, how: str) -> None:
    cluster = LocalCluster(nodes=3)
    try:
        node = cluster.node(3)
        assert node.process is not None
        if how == "kill":
            node.kill()
        elif how == "kill SIGABRT":
            node.kill(signal.SIGABRT)  # fault injection with a crash's own signal
            assert node.process.wait(timeout=10) == -signal.SIGABRT
        else:
            assert node.stop() == 0
        assert cluster.crashes() == []
        node.start()  # a restart judges the old process too
    finally:
        cluster.stop()
    assert cluster.crashes() == []
    assert not crash_dir.exists()
    assert _crash_warnings(caplog) == []


def test_crash_evidence_goes_to_build_under_the_working_directory(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv(CRASH_DIR_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    node = LocalNode(1, f"127.0.0.1:{free_ports(1)[0]}", tmp_path / "data" / "node-1")
    node.start()
    assert node.process is not None
    os.kill(node.process.pid, signal.SIGABRT)
    node.process.wait(timeout=10)
    assert node.stop() == -signal.SIGABRT  # stopping a dead node reports it
    (folder,) = (tmp_path / "build" / "node-crashes").iterdir()
    assert folder.name.endswith("-node1")
    assert "Aborted" in (folder / "node-1.log").read_text()
    assert [c.evidence for c in node.crashes] == [folder]


def test_a_failing_test_names_the_crashed_node_of_its_cluster(tmp_path) -> None:
    (tmp_path / "test_inner.py").write_text(textwrap.dedent(
        """
        import os, signal

        def test_loses_a_node(dqlite_fresh_cluster):
            node = dqlite_fresh_cluster.node(3)
            os.kill(node.pid, signal.SIGABRT)
            node.process.wait(timeout=10)
            assert False, "confusing connection error"
        """
    ))
    env = dict(os.environ, DQLITE_CRASH_DIR=str(tmp_path / "crashes"))
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--rootdir", str(tmp_path), "test_inner.py"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    (folder,) = (tmp_path / "crashes").iterdir()
    # A section of the failure's report: which node, how, where the evidence is, its log's end.
    report = re.split(r"-+ dqlite node crashes -+\n", done.stdout)[1]
    assert re.match(rf"node 3 at \S+ \(pid \d+\) killed by SIGABRT; evidence in {re.escape(str(folder))}", report)
    log_text = (folder / "node-3.log").read_text()
    assert "Fatal Python error: Aborted" in log_text
    assert log_text.strip().splitlines()[-1] in report  # the end of its log
    # And a list at the end of the run.
    summary = re.split(r"=+ dqlite node crashes =+\n", done.stdout)[1]
    assert summary.startswith("node 3 at ") and str(folder) in summary.splitlines()[0]


def test_renew_replaces_a_cluster_that_lost_a_node(crash_dir) -> None:
    import dqlite

    cluster = LocalCluster(nodes=3)
    try:
        with dqlite.connect(cluster.addresses, "kept", autocommit=True) as conn:
            conn.execute("CREATE TABLE t (x)")
        old = cluster.addresses
        node = cluster.node(2)
        os.kill(node.pid, signal.SIGSEGV)
        node.process.wait(timeout=10)
        cluster.renew()
        assert len(cluster.nodes) == 3 and all(n.is_alive() for n in cluster.nodes)
        assert not set(cluster.addresses) & set(old)
        assert cluster.wait_for_leader() in cluster.addresses
        # The crash stays on record; what was stored is gone with the old nodes.
        assert [(c.node_id, c.address) for c in cluster.crashes()] == [(2, old[1])]
        with dqlite.connect(cluster.addresses, "kept", autocommit=True) as conn:
            assert conn.execute("SELECT name FROM sqlite_master").fetchall() == []
    finally:
        cluster.stop()


# A node of the shared cluster crashes under test_a (os.kill: a signal LocalNode
# did not send); test_b then finds the cluster whole again. RUN_ONCE_FLAG, when
# set, names a file: the crash happens only while it does not exist yet.
_CRASHING_TESTS = """
import os, signal
from pathlib import Path
import dqlite

def test_a(dqlite_cluster):
    flag = os.environ.get("RUN_ONCE_FLAG")
    if flag and Path(flag).exists():
        return
    if flag:
        Path(flag).touch()
    node = dqlite_cluster.node(2)
    os.kill(node.pid, signal.SIGSEGV)
    node.process.wait(timeout=10)
    assert False, "confusing connection error"

def test_b(dqlite_cluster):
    assert all(node.is_alive() for node in dqlite_cluster.nodes)
    with dqlite.connect(dqlite_cluster.addresses, "b", autocommit=True) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
"""
_PLAIN_FAILURE = """

def test_c():
    assert False, "a failure of the test's own"
"""


def _run_inner(tmp_path, source: str, command: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "test_inner.py").write_text(source)
    return subprocess.run(
        command + ["--rootdir", str(tmp_path), "test_inner.py"],
        cwd=tmp_path, env=dict(os.environ, DQLITE_CRASH_DIR=str(tmp_path / "crashes"), **env),
        capture_output=True, text=True, timeout=300,
    )


@pytest.mark.parametrize("plain_failure", [False, True])
def test_failures_under_node_crashes_are_listed_and_the_shared_cluster_renewed(tmp_path, plain_failure) -> None:
    listed = tmp_path / "failed-under-crashes"
    done = _run_inner(
        tmp_path, _CRASHING_TESTS + (_PLAIN_FAILURE if plain_failure else ""),
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", f"--dqlite-crash-failures={listed}"],
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert re.search(rf"\b{2 if plain_failure else 1} failed, 1 passed\b", done.stdout), done.stdout  # test_b passed
    summary = re.split(r"=+ dqlite node crashes =+\n", done.stdout)[1]
    assert "the shared cluster was renewed before test_inner.py::test_b: node 2 had died" in summary
    # Only a run whose every failure had a crash under it lists them.
    assert listed.read_text() == ("" if plain_failure else "test_inner.py::test_a\n")


@pytest.mark.parametrize("plain_failure", [False, True])
def test_the_rerun_script_runs_only_failures_under_crashes_again(tmp_path, plain_failure) -> None:
    script = Path(__file__).resolve().parent.parent / "scripts" / "rerun-after-node-crash.sh"
    done = _run_inner(
        tmp_path, _CRASHING_TESTS + (_PLAIN_FAILURE if plain_failure else ""),
        # Without pytest's cache plugin: the rerun takes its list from the first run, not from --lf.
        [str(script), sys.executable, "-m", "pytest", "-p", "no:cacheprovider"],
        RUN_ONCE_FLAG=str(tmp_path / "crashed-once"),
    )
    output = done.stdout + done.stderr
    if plain_failure:
        assert done.returncode == 1, output
        assert "running them once more" not in output
    else:
        assert done.returncode == 0, output
        assert "a dqlite node crashed under each of the 1 failed test(s):\n    test_inner.py::test_a\n" in output
        assert re.search(r"\b1 passed, 1 deselected\b", done.stdout), output  # test_a alone, again
