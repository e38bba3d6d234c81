"""The benchmark CLI runs end to end against a real cluster (tiny sizes; no timing asserted)."""

import importlib.util
import json
import os
import re
import socket
import subprocess
import sys
import threading

import pytest

from bench.cli import GO_WORKER

# Every workload but M1 (which always iterates a million rows).
WORKLOADS = "W1,W2,W3,W4,W5,W6,W7"


def test_every_workload_runs_and_is_reported(dqlite_cluster, tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--url", ",".join(dqlite_cluster.addresses), "--database", "bench_smoke",
         "--workloads", WORKLOADS, "--rounds", "1", "--rows", "500", "--json", str(out), "--no-progress"],
        capture_output=True, text=True, timeout=280)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    data = json.loads(out.read_text())
    ran = {(row["workload"], row["role"], row["driver"]) for row in data["summary"] if row["status"] == "ok"}
    expected = {(w, "ours", d) for w, d in [
        ("W1", "dbapi"), ("W1", "aio"), ("W2", "dbapi"), ("W2", "aio"), ("W3", "dbapi"), ("W3", "aio"),
        ("W4", "sa"), ("W5", "sa"), ("W6", "sa"), ("W6", "dbapi"), ("W7", "sa.aio"), ("W7", "aio")]}
    expected |= {("W1", "floor", "wire"), ("W1", "floor", "wire.poll"), ("W1", "floor", "wire.aio"),
                 ("W1", "floor", "wire.aio.poll"), ("W8", "floor", "wire")}
    expected |= {(w, "ref", d) for w, d in [("W1", "dbapi"), ("W2", "dbapi"), ("W3", "dbapi"), ("W4", "sa"),
                                             ("W5", "sa"), ("W6", "sa")]}
    if importlib.util.find_spec("aiosqlite") is not None:  # the bench extra; make test installs the test extra
        expected.add(("W7", "ref", "sa.aio"))
    else:
        [w7_ref] = [row for row in data["summary"] if (row["workload"], row["role"]) == ("W7", "ref")]
        assert w7_ref["status"] != "ok" and "aiosqlite" in w7_ref["reason"]
    go = GO_WORKER.exists()  # make test builds it (scripts/build-go-bench.sh)
    if go:
        expected |= {(w, "peer", "go") for w in ("W1", "W2", "W3", "W6")}
    assert expected <= ran, sorted(expected - ran)
    assert all(m["value"] > 0 and m["count"] > 0 for m in data["measurements"] if m["status"] == "ok")
    checked = {(t["workload"], t["driver"]) for t in data["targets"] if t["verdict"] in ("hold", "MISS")}
    assert {("W1", "dqlite DB-API"), ("W3", "dqlite DB-API"), ("W6", "SQLAlchemy dqlite"),
            ("W7", "SQLAlchemy async dqlite")} <= checked
    against_go = {(t["workload"], t["driver"]) for t in data["targets"]
                  if "go-dqlite" in t["target"] and t["verdict"] in ("hold", "MISS")}
    assert against_go == ({("W1", "dqlite DB-API"), ("W1", "dqlite asyncio"), ("W3", "dqlite DB-API"),
                           ("W3", "dqlite asyncio")} if go else set())
    assert "W1 point" in proc.stdout and "target" in proc.stdout


def test_compare_runs_another_client_through_an_adapter_module(dqlite_cluster, tmp_path):
    # The other client here is an adapter around this driver: what is checked
    # is the plumbing (a relative interpreter path, an adapter module found on
    # the caller's PYTHONPATH, rows of role "other" next to ours).
    (tmp_path / "adapted_client.py").write_text(
        "import dqlite\n"
        "__version__ = 'adapter 1'\n"
        "def connect(addresses, database):\n"
        "    return dqlite.connect(addresses, database)\n")
    out = tmp_path / "bench.json"
    python = os.path.relpath(sys.executable)
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--url", ",".join(dqlite_cluster.addresses), "--database", "bench_smoke",
         "--workloads", "W1", "--rounds", "1", "--rows", "500", "--json", str(out), "--no-progress", "--go", "none",
         "--compare", python, "--compare-client", "module:adapted_client"],
        capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(tmp_path)})
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    rows = {(row["role"], row["driver"]): row for row in json.loads(out.read_text())["summary"]}
    assert rows["other", "dbapi"]["status"] == "ok"
    assert rows["other", "aio"]["status"] == "skipped"  # the adapter has no aconnect
    assert "adapted_client DB-API" in proc.stdout and "ours vs" in proc.stdout
    # Side by side, each client's CPU per query is split between user space and the kernel.
    assert re.search(r"vs adapted_client DB-API: .*CPU/op user [\d.]+ vs [\d.]+ µs, kernel [\d.]+ vs [\d.]+ µs",
                     proc.stdout), proc.stdout


def test_a_failing_compared_client_is_reported_without_failing_the_run(dqlite_cluster, tmp_path):
    # Another client's bug is its own: the run still measures ours and says why the other has no number.
    (tmp_path / "broken_client.py").write_text(
        "def connect(addresses, database):\n"
        "    raise RuntimeError('this client cannot connect')\n")
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--url", ",".join(dqlite_cluster.addresses), "--database", "bench_smoke",
         "--workloads", "W1", "--rounds", "1", "--rows", "500", "--json", str(out), "--no-progress", "--go", "none",
         "--compare", sys.executable, "--compare-client", "module:broken_client"],
        capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(tmp_path)})
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    rows = {(row["role"], row["driver"]): row for row in json.loads(out.read_text())["summary"]}
    assert rows["ours", "dbapi"]["status"] == "ok"
    assert rows["other", "dbapi"]["status"] == "error"
    assert "this client cannot connect" in proc.stdout


def test_w9_counts_committed_and_failed_transactions_also_under_compare(dqlite_cluster, tmp_path):
    # A few transfers per thread and task, through this driver and through --compare (this same
    # interpreter as the other build): the counts add up and the balances keep their sum.  How
    # many fail depends on the driver's transactions, so it is reported, not asserted here.
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--url", ",".join(dqlite_cluster.addresses), "--database", "bench_smoke",
         "--workloads", "W9", "--rounds", "1", "--rows", "500", "--transactions", "3", "--json", str(out),
         "--no-progress", "--go", "none", "--compare", sys.executable, "--compare-client", "dqlite"],
        capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    data = json.loads(out.read_text())
    rows = {(row["role"], row["driver"]): row for row in data["summary"]}
    for role in ("ours", "other"):
        row = rows[role, "sa.mixed"]
        assert row["status"] == "ok", row["reason"]
        assert row["attempted"] == 2 * 8 * 3
        assert row["failed"] == sum(row["failures"].values())
    [ours, other] = [m for m in data["measurements"] if m["workload"] == "W9"]
    for m in (ours, other):
        extra = m["extra"]
        assert m["count"] == extra["committed"] == extra["threads_committed"] + extra["tasks_committed"] > 0
        assert extra["committed"] + extra["failed"] == extra["attempted"]
        assert extra["balance_sum_kept"] and extra["min_balance"] >= 0
    verdicts = {t["driver"]: t["verdict"] for t in data["targets"] if t["workload"] == "W9"}
    assert set(verdicts.values()) <= {"hold", "MISS"} and len(verdicts) == 2
    assert "W9 read-write" in proc.stdout and "failed" in proc.stdout


def test_busy_poll_on_and_off_run_behind_a_delaying_proxy(tmp_path):
    # --proxy-delay starts a cluster of its own behind bench/proxy.py; dbapi.nopoll runs only when
    # --drivers names it.  What is checked: the rows, and that the workers' answers went through the
    # proxy (it held at least one chunk per measured query); never a time.
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--proxy-delay", "0.0002", "--workloads", "W1,W6",
         "--drivers", "dbapi,dbapi.nopoll", "--rounds", "1", "--rows", "200", "--json", str(out),
         "--no-progress", "--go", "none"],
        capture_output=True, text=True, timeout=280)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    data = json.loads(out.read_text())
    rows = {(row["workload"], row["role"], row["driver"]): row for row in data["summary"]}
    assert set(rows) == {("W1", "ours", "dbapi"), ("W1", "ours", "dbapi.nopoll"), ("W1", "ref", "dbapi"),
                         ("W6", "ours", "dbapi"), ("W6", "ours", "dbapi.nopoll")}
    assert all(row["status"] == "ok" for row in rows.values()), [row["reason"] for row in rows.values()]
    ours = [m for m in data["measurements"] if m["role"] == "ours"]
    assert data["meta"]["proxy_delay"] == 0.0002
    assert data["meta"]["proxy"]["chunks"] >= sum(m["count"] for m in ours)
    for m in ours:
        extra = m["extra"]
        # Each measured query waited once for its answer: found by a poll, found late, or slept on.
        assert extra["poll_hits"] + extra["poll_late"] + extra["poll_sleeps"] == m["count"]
        if m["driver"] == "dbapi.nopoll":
            assert extra["poll_hits"] == extra["poll_late"] == 0
    assert "busy_poll default vs busy_poll=0" in proc.stdout and "proxy:" in proc.stdout


def test_the_proxy_options_are_checked():
    from bench.cli import parse_args, plan

    for argv in (["--proxy-delay", "0.0002", "--url", "127.0.0.1:9001"], ["--proxy-delay", "-1"],
                 ["--workloads", "W1", "--drivers", "sa"], ["--drivers", ","]):
        with pytest.raises(SystemExit):
            parse_args(argv)
    # The optional kinds run only when named; --drivers picks the reference and floors alike.
    everything = {(c.workload, c.driver) for c in plan(["W1", "W6"], None, "auto")}
    assert ("W1", "dbapi.nopoll") not in everything and ("W1", "wire.poll") in everything
    args = parse_args(["--workloads", "W1,W6", "--drivers", "dbapi,dbapi.nopoll"])
    picked = {(c.workload, c.role, c.driver) for c in plan(args.workload_list, None, "auto", drivers=args.drivers)}
    assert picked == {("W1", "ours", "dbapi"), ("W1", "ours", "dbapi.nopoll"), ("W1", "ref", "dbapi"),
                      ("W6", "ours", "dbapi"), ("W6", "ours", "dbapi.nopoll")}


@pytest.mark.server_independent
def test_the_proxy_delivers_every_byte_in_order_both_ways():
    """bench/proxy.py in front of an echo server: requests written back to back
    (answers pipelined through the delay), and a close from either side."""
    from bench.proxy import DelayProxy

    server = socket.create_server(("127.0.0.1", 0))

    def echo():
        peer, _ = server.accept()
        with peer:
            while chunk := peer.recv(1 << 16):
                peer.sendall(chunk)

    thread = threading.Thread(target=echo)
    thread.start()
    proxy = DelayProxy([f"127.0.0.1:{server.getsockname()[1]}"], 0.0002).start()
    try:
        host, port = proxy.addresses[0].rsplit(":", 1)
        with socket.create_connection((host, int(port)), timeout=10) as client:
            sent = b"".join(bytes([i % 256]) * (1 + i * 37 % 5000) for i in range(300))
            writer = threading.Thread(target=client.sendall, args=(sent,))
            writer.start()
            received = bytearray()
            while len(received) < len(sent) and (chunk := client.recv(1 << 16)):
                received += chunk
            writer.join(10)
            assert bytes(received) == sent
            client.shutdown(socket.SHUT_WR)
            assert client.recv(1) == b""  # the echo server saw the end, closed, and so did the proxy
        thread.join(10)
        assert proxy.held.summary()["chunks"] >= 1
    finally:
        proxy.stop()
        server.close()


@pytest.mark.parametrize("mode", ["query", "pooled-read", "sqlalchemy"])
def test_client_cost_runs_each_mode_against_the_stand_in_socket(mode):
    """bench/client_cost.py: the driver runs every iteration against the stand-in (a wrong
    answer would raise) and the cost per iteration is reported."""
    script = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench", "client_cost.py")
    proc = subprocess.run([sys.executable, script, mode, "200"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert re.fullmatch(rf"{mode}: \d+\.\d\d µs CPU per iteration \(200\)\n", proc.stdout), proc.stdout
