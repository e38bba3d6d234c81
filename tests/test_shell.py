"""The dqlite shell (python -m dqlite), run as a subprocess against real clusters."""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import time

import pytest

import dqlite
from dqlite.shell import format_rows, read_store, split_statements


def shell(addresses, database, *args, stdin: str | None = None, timeout: float = 60):
    """Run the shell; (exit status, stdout, stderr)."""
    servers = [a for address in addresses for a in ("-s", address)]
    done = subprocess.run([sys.executable, "-m", "dqlite", *servers, database, *args],
                          input=stdin if stdin is not None else "", capture_output=True, text=True,
                          timeout=timeout)
    return done.returncode, done.stdout, done.stderr


@pytest.fixture
def db(dqlite_cluster, dqlite_database):
    with dqlite.connect(dqlite_cluster.addresses, dqlite_database, autocommit=True) as conn:
        conn.execute("CREATE TABLE kv (k TEXT PRIMARY KEY, v BLOB, n REAL)")
        conn.execute("INSERT INTO kv VALUES ('a', x'0102', 1.5), ('bb', NULL, 20)")
    return dqlite_cluster.addresses, dqlite_database


def test_command_runs_once_with_each_format(db):
    addresses, name = db
    rc, out, err = shell(addresses, name, "-c", "SELECT k, v, n FROM kv ORDER BY k")
    assert (rc, err) == (0, "")
    assert out.splitlines() == ["k  | v       |    n", "---+---------+-----", "a  | x'0102' |  1.5",
                                "bb | NULL    | 20.0", "(2 rows)"]
    rc, out, _ = shell(addresses, name, "--format", "json", "-c", "SELECT k, v, n FROM kv ORDER BY k")
    assert rc == 0 and json.loads(out) == [{"k": "a", "v": "0102", "n": 1.5}, {"k": "bb", "v": None, "n": 20.0}]
    rc, out, _ = shell(addresses, name, "-f", "csv", "-c", "SELECT k, n FROM kv ORDER BY k")
    assert rc == 0 and out == "k,n\na,1.5\nbb,20.0\n"
    rc, out, _ = shell(addresses, name, "-c", "INSERT INTO kv (k) VALUES ('c'); SELECT count(*) FROM kv")
    assert rc == 0 and "3" in out.splitlines()[2]


def test_command_failures_exit_non_zero_with_one_line(db, dqlite_cluster):
    addresses, name = db
    for command, message in [("SELEC nope", 'near "SELEC": syntax error'),
                             ("INSERT INTO kv (k) VALUES ('a')", "UNIQUE constraint failed"),
                             (".describe 99", "no node '99' in the cluster"),
                             (".weight 1 heavy", "not a whole number"),
                             (".bogus", "unknown command .bogus"),
                             (".schema nosuch", "no table 'nosuch'")]:
        rc, out, err = shell(addresses, name, "-c", command)
        assert rc == 1, command
        assert err.count("\n") == 1 and err.startswith("Error: ") and message in err, (command, err)
        assert "Traceback" not in out + err
    rc, _, err = shell(["127.0.0.1:1"], name, "--timeout", "0.5", "-c", "SELECT 1")
    assert rc == 1 and err.startswith("Error: could not connect") and err.count("\n") == 1


def test_piped_session_keeps_going_after_errors(db, tmp_path):
    addresses, name = db
    script = "\n".join([
        ".tables",
        ".schema kv",
        "SELECT 'multi',",
        "  'line';",
        "SELEC broken;",
        ".describe nosuch",
        ".timer on",
        "SELECT 42;",
        ".timer off",
        ".cluster",
        ".leader",
        f".dump {tmp_path / 'dump'}",
        ".quit",
        "SELECT 'never run';",
    ])
    rc, out, err = shell(addresses, name, stdin=script)
    assert rc == 1  # something failed
    assert err.splitlines() == ['Error: near "SELEC": syntax error',
                                "Error: no node 'nosuch' in the cluster; members: "
                                + ", ".join(f"{i + 1} ({a})" for i, a in enumerate(addresses))]
    assert "kv\nCREATE TABLE kv (k TEXT PRIMARY KEY, v BLOB, n REAL);\n" in out
    assert "multi   | line" in out
    assert "Run Time: " in out and "42" in out
    assert dqlite.cluster.find_leader(addresses) in out
    assert "never run" not in out
    for address in addresses:
        assert f"| {address} | voter" in out
    files = sorted(os.listdir(tmp_path / "dump"))
    assert files == [name, f"{name}-wal"]
    assert (tmp_path / "dump" / name).read_bytes()[:16] == b"SQLite format 3\x00"


def test_cluster_commands_and_a_lost_leader(dqlite_fresh_cluster):
    cluster = dqlite_fresh_cluster
    addresses = cluster.addresses
    rc, out, err = shell(addresses, "db", "-c", "CREATE TABLE t (x); INSERT INTO t VALUES (1)")
    assert (rc, err) == (0, "")
    leader = cluster.leader_address()
    target = next(n for n in cluster.nodes if n.address != leader)
    rc, out, err = shell(addresses, "db", "-c", f".transfer {target.id}")
    assert (rc, err) == (0, "") and f"node {target.id}" in out
    assert cluster.wait_for_leader() == target.address
    rc, out, err = shell(addresses, "db", "-c", f".weight {target.address} 3")
    assert rc == 0 and shell(addresses, "db", "-f", "json", "-c", f".describe {target.id}")[1].strip() == json.dumps(
        [{"id": target.id, "address": target.address, "role": "voter", "failure_domain": 0, "weight": 3}])

    # A session whose leader changes under it: one error line, then it goes on.
    servers = [a for address in addresses for a in ("-s", address)]
    proc = subprocess.Popen([sys.executable, "-m", "dqlite", *servers, "db"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        proc.stdin.write("BEGIN; INSERT INTO t VALUES (2);\nSELECT 'marker';\n")
        proc.stdin.flush()
        assert "marker" in _read_until(proc.stdout, "marker")
        cluster.transfer_leadership(next(n.id for n in cluster.nodes if n.address != target.address))
        out, err = proc.communicate("INSERT INTO t VALUES (3);\nSELECT count(*) FROM t;\n", timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 1
    assert len(err.splitlines()) == 1 and err.startswith("Error: ") and "reconnects" in err, err
    assert "Traceback" not in err
    assert out.splitlines()[-1] == "(1 row)" and out.splitlines()[-2].strip() == "1"

    follower = next(n for n in cluster.nodes if n.address != cluster.leader_address())
    rc, out, err = shell(addresses, "db", "-c", f".remove {follower.id}")
    assert (rc, err) == (0, "") and f"removed node {follower.id}" in out
    rc, out, _ = shell([cluster.leader_address()], "db", "-c", ".cluster")
    assert follower.address not in out


def _read_until(stream, text: str, timeout: float = 30) -> str:
    seen = ""
    deadline = time.monotonic() + timeout
    while text not in seen and time.monotonic() < deadline:
        line = stream.readline()
        if not line:
            break
        seen += line
    return seen


def test_interactive_terminal(db, tmp_path):
    """In a pseudo-terminal: prompts, a continuation prompt, Ctrl-D to leave, history saved."""
    addresses, name = db
    leader_fd, follower_fd = os.openpty()
    servers = [a for address in addresses for a in ("-s", address)]
    history = tmp_path / "history"
    proc = subprocess.Popen([sys.executable, "-m", "dqlite", *servers, name, "--history", str(history)],
                            stdin=follower_fd, stdout=follower_fd, stderr=follower_fd, close_fds=True)
    os.close(follower_fd)
    seen = b""
    pos = 0

    def expect(text: bytes) -> None:
        """Wait for ``text`` after what the last expect matched (type nothing before a prompt shows)."""
        nonlocal seen, pos
        deadline = time.monotonic() + 30
        while text not in seen[pos:]:
            left = deadline - time.monotonic()
            assert left > 0, seen
            ready, _, _ = select.select([leader_fd], [], [], left)
            if ready:
                try:
                    chunk = os.read(leader_fd, 4096)
                except OSError:
                    chunk = b""
                assert chunk, seen
                seen += chunk
        pos = seen.index(text, pos) + len(text)

    try:
        expect(b"dqlite> ")
        os.write(leader_fd, b"SELECT count(*)\n")
        expect(b"...> ")
        os.write(leader_fd, b"FROM kv;\n")
        expect(b"(1 row)")
        expect(b"dqlite> ")
        os.write(leader_fd, b"SELEC 1;\n")
        expect(b'Error: near "SELEC"')
        expect(b"dqlite> ")
        os.write(leader_fd, b"\x04")  # Ctrl-D
        assert proc.wait(30) == 0
    finally:
        proc.kill()
        os.close(leader_fd)
    assert b"Traceback" not in seen
    assert "FROM kv;" in history.read_text()


def test_helpers():
    assert split_statements("SELECT 1; SELECT ';'; SELECT") == (["SELECT 1;", "SELECT ';';"], " SELECT")
    trigger = "CREATE TRIGGER tr AFTER INSERT ON t BEGIN SELECT 1; END;"
    assert split_statements(trigger) == ([trigger], "")
    assert format_rows(["a"], [], "table").splitlines() == ["a", "-", "(0 rows)"]


def test_node_store_files(tmp_path):
    yaml = tmp_path / "cluster.yaml"
    yaml.write_text("- Address: 10.0.0.1:9001\n  ID: 1\n  Role: 0\n- Address: 10.0.0.2:9001\n  ID: 2\n  Role: 0\n")
    assert read_store(yaml) == ["10.0.0.1:9001", "10.0.0.2:9001"]
    plain = tmp_path / "nodes"
    plain.write_text("# nodes\n10.0.0.3:9001\n\n10.0.0.4\n")
    assert read_store(plain) == ["10.0.0.3:9001", "10.0.0.4"]
    rc = subprocess.run([sys.executable, "-m", "dqlite", "--store", str(tmp_path / "missing"), "-c", "SELECT 1"],
                        capture_output=True, text=True)
    assert rc.returncode == 2 and rc.stderr.startswith("Error: cannot read node store")


def test_console_script(db):
    """The installed ``dqlite-shell`` script is the same shell."""
    from importlib.metadata import entry_points

    (entry,) = entry_points(group="console_scripts", name="dqlite-shell")
    assert entry.value == "dqlite.shell:main"
    script = os.path.join(os.path.dirname(sys.executable), "dqlite-shell")
    addresses, name = db
    done = subprocess.run([script, "-s", addresses[0], name, "-f", "csv", "-c", "SELECT count(*) AS n FROM kv"],
                          capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stdout, done.stderr) == (0, "n\n2\n", "")


def test_output_to_a_closed_pipe_ends_quietly(db):
    addresses, name = db
    proc = subprocess.Popen([sys.executable, "-m", "dqlite", "-s", addresses[0], name, "-c",
                             "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 200000) "
                             "SELECT x FROM c"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout.readline()  # the header; then the reader goes away
    proc.stdout.close()
    err = proc.stderr.read()
    assert proc.wait(60) == 0 and err == b""


def test_go_dqlite_style_arguments(db, tmp_path):
    """-s a,b and -s file://STORE, the SQL after the database, -f tabular."""
    addresses, name = db
    store = tmp_path / "cluster.yaml"
    store.write_text("".join(f"- Address: {a}\n  ID: {i + 1}\n  Role: 0\n" for i, a in enumerate(addresses)))
    for servers in (",".join(addresses), f"file://{store}"):
        done = subprocess.run([sys.executable, "-m", "dqlite", "-s", servers, name, "SELECT count(*) AS n FROM kv",
                               "-f", "tabular"], capture_output=True, text=True, timeout=60)
        assert (done.returncode, done.stderr) == (0, ""), servers
        assert done.stdout.splitlines()[:3] == ["n", "-", "2"]
