"""The benchmark of the dqlite client: ``python -m bench`` (see ``bench.cli``).

Modules, one idea each:

* ``bench.cli``: the command line; starts or reaches a cluster, seeds the data,
  runs every (workload, driver, round) in a fresh worker process and reports.
* ``bench.worker``: one measurement in one process, printed as one JSON line.
* ``bench.workloads``: the workloads W1-W7, W9 and M1 of shared/docs/bench.md.
* ``bench.floor``: W8, the wire floor: the W2 query read on a raw socket.
* ``bench.clients``: how a worker reaches a client under test (ours, another one,
  or the sqlite3 reference).
* ``bench.data``: the benchmark table and its seeding.
* ``bench.report``: the summary table, the targets, ``--json`` and ``--plot``.
* ``bench.progress``: the progress bar.
* ``bench/test_codec.py``: pytest-benchmark cases for the compiled codec alone.

Every module the worker imports uses only the standard library at import time,
so the worker also runs under another interpreter (``--compare``).
"""
