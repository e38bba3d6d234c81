#!/usr/bin/env python3
"""Look for a removed node that the next leader still lists (docs/protocol-notes.md).

    .venv/bin/python scripts/remove-then-transfer.py [RUNS]

Each run starts a local 3-node cluster and a fourth node, then, through
``ClusterAdmin``, adds node 4 as a standby, makes it a voter, removes it and
at once hands leadership to node 2, as the README's administration example
does.  Half a second later it asks every node for the members (CLUSTER) and
prints the runs in which a node still lists node 4.  Exits 1 when there was
such a run.  Run it beside load (two busy loops on two CPUs) to see it sooner.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from dqlite.cluster import STANDBY, VOTER, ClusterAdmin, NodeClient
from dqlite.server import LocalCluster, LocalNode, free_ports


def one_run() -> dict[int, list[int]]:
    """Every node's members, by node id, just after the removal and the transfer."""
    with LocalCluster(nodes=3) as cluster, tempfile.TemporaryDirectory() as tmp:
        node4 = LocalNode(4, f"127.0.0.1:{free_ports(1)[0]}", Path(tmp) / "node-4")
        node4.start()
        try:
            admin = ClusterAdmin(cluster.addresses)
            admin.add(4, node4.address, role=STANDBY)
            admin.assign(4, VOTER)
            admin.remove(4)
            admin.transfer(2)
            time.sleep(0.5)
            views = {}
            for node in cluster.nodes:
                with NodeClient(node.address) as client:
                    views[node.id] = sorted(member.id for member in client.cluster())
            return views
        finally:
            node4.stop()


def main() -> int:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 40
    stale = 0
    for run in range(runs):
        views = one_run()
        if any(4 in members for members in views.values()):
            stale += 1
            print(f"run {run}: members as each node lists them after the transfer: {views}", flush=True)
    print(f"{stale} of {runs} runs had a node listing the removed node 4")
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
