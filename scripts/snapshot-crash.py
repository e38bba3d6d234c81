#!/usr/bin/env python3
"""Reproduce libdqlite 1.18.1's crash at a raft snapshot (docs/protocol-notes.md).

    DQLITE_SERVER_ROOT=.deps/dqlite-1.18 .venv/bin/python scripts/snapshot-crash.py [SECONDS] [THREADS] [DATABASES]

Starts a local 3-node cluster and has THREADS threads (default 6) insert rows
into DATABASES databases (default 60), each thread into a database picked at
random for each row, for SECONDS seconds (default 60) or until a node dies.
A raft snapshot is taken every 1,024 log entries.  Prints the rows written,
the snapshots node 1 took, and every node crash (with its evidence folder).
Exits 1 when a node crashed.
"""

from __future__ import annotations

import os
import random
import sys
import threading
import time

import dqlite
from dqlite.server import LocalCluster


def write_rows(cluster: LocalCluster, seed: int, databases: int, stop: threading.Event, written: list[int]) -> None:
    rng = random.Random(seed)
    connections: dict[str, dqlite.Connection] = {}
    while not stop.is_set():
        name = f"db{rng.randrange(databases)}"
        try:
            conn = connections.get(name)
            if conn is None:
                conn = connections[name] = dqlite.connect(cluster.addresses, name, autocommit=True, timeout=5)
                conn.execute("CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, s TEXT, b BLOB)")
            conn.execute("INSERT INTO t (s, b) VALUES (?, ?)",
                         ("x" * rng.randrange(2000), os.urandom(rng.randrange(100))))
            written[seed] += 1
        except dqlite.Error:
            connections.pop(name, None)
            if not all(node.is_alive() for node in cluster.nodes):
                return


def main(seconds: float, threads: int, databases: int) -> int:
    with LocalCluster(nodes=3) as cluster:
        stop = threading.Event()
        written = [0] * threads
        workers = [threading.Thread(target=write_rows, args=(cluster, k, databases, stop, written))
                   for k in range(threads)]
        for worker in workers:
            worker.start()
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and all(node.is_alive() for node in cluster.nodes):
            time.sleep(0.2)
        stop.set()
        for worker in workers:
            worker.join()
        snapshots = sorted(path.name for path in (cluster.base_dir / "node-1").glob("snapshot-*[0-9]"))
        crashes = cluster.crashes()
        print(f"{sum(written)} rows written; node 1's snapshots: {', '.join(snapshots) or 'none'}")
        for crash in crashes:
            print(crash.describe())
        return 1 if crashes else 0


if __name__ == "__main__":
    args = sys.argv[1:]
    sys.exit(main(float(args[0]) if args else 60.0, int(args[1]) if len(args) > 1 else 6,
                  int(args[2]) if len(args) > 2 else 60))
