"""One measurement in one fresh process: ``python -m bench.worker ...``.

The worker protocol, the only contract between the CLI and a worker (and so
between this checkout and another interpreter under ``--compare``)::

    python -m bench.worker --workload W1 --driver dbapi --client dqlite \\
        --addresses LEADER,NODE2,NODE3 --database bench --rows 100000 \\
        [--sqlite FILE] [--round N] [--loop asyncio|uvloop] [--profile FILE.pstats] \\
        [--transactions N]

prints exactly one JSON object on the last line of stdout::

    {"protocol": 1, "workload": "W1", "driver": "dbapi", "client": "dqlite",
     "version": "dqlite 0.1.0", "python": "3.11.7", "round": 1, "loop": "asyncio",
     "status": "ok" | "skipped" | "error", "reason": null | "why",
     "wall": s, "cpu": s, "user": s, "sys": s, "count": n,
     "value": main figure in "unit", "unit": "q/s" | "rows/s" | "tx/s" | "s" | "MB",
     "extra": {...}}

``--transactions`` (per thread and per task) is passed for W9 only.  W9's ``extra`` holds ``attempted``,
``committed``, ``failed``, ``locked`` (failed with "database is locked") and
``failures`` ({"Class: message": count}).

``wall``/``cpu`` cover the measured part only (CPU: this process's own user+sys
from ``getrusage(RUSAGE_SELF)``, all its threads).  ``count`` is what was done
in it (queries, rows inserted, rows fetched, transactions committed).  A driver the client does not
have (no asyncio API, no SQLAlchemy dialect) is ``skipped`` with the reason;
any other failure is ``error`` and the exit status is 1.

Under ``--compare`` the other interpreter runs this same module: it needs
Python >= 3.9 with its own dqlite client installed (see ``bench.clients`` for
what ``--client auto`` finds), and SQLAlchemy for W4-W7 and W9.  The CLI puts only
this ``bench`` package on its ``PYTHONPATH``, so the other interpreter's own
``dqlite`` is what gets measured.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import platform
import sys
import traceback
from typing import Any

from bench import clients, workloads

PROTOCOL = 1


def _sqlalchemy_missing(driver: str, client: clients.Client) -> str | None:
    """Why a SQLAlchemy driver kind cannot run for ``client`` (None if it can)."""
    if driver not in ("sa", "sa.aio", "sa.mixed"):
        return None
    try:
        from sqlalchemy.engine import make_url
    except ImportError as exc:
        return f"SQLAlchemy is not installed ({exc})"
    # sa.mixed (W9) drives a sync and an async engine at once: it needs both dialects.
    for aio in {"sa": [False], "sa.aio": [True], "sa.mixed": [False, True]}[driver]:
        url = make_url(client.sqlalchemy_url(aio=aio))
        try:
            url.get_dialect()
        except Exception as exc:  # NoSuchModuleError, ImportError from the dialect
            return f"SQLAlchemy dialect {url.drivername}:// is not importable ({type(exc).__name__}: {exc})"
    return None


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Run the requested measurement; the JSON-ready record."""
    workload = workloads.WORKLOADS[args.workload]
    record: dict[str, Any] = {
        "protocol": PROTOCOL,
        "workload": args.workload,
        "driver": args.driver,
        "client": args.client,
        "version": None,
        "python": platform.python_version(),
        "round": args.round,
        "status": "ok",
        "reason": None,
        "unit": workload.unit,
        "loop": args.loop,
    }
    addresses = [a for a in args.addresses.split(",") if a]
    client = clients.resolve(args.client, addresses, args.database, args.sqlite)
    record["client"] = client.name
    try:
        record["version"] = client.version()
    except ImportError as exc:
        return {**record, "status": "skipped", "reason": f"client not importable: {exc}"}
    missing = _sqlalchemy_missing(args.driver, client)
    if missing:
        return {**record, "status": "skipped", "reason": missing}
    if args.profile:
        workloads.PROFILER = cProfile.Profile()
    try:
        params = workloads.Params(rows=args.rows, transactions=args.transactions)
        m = workloads.run(args.workload, args.driver, client, params, loop=args.loop)
    except (ImportError, NotImplementedError) as exc:
        return {**record, "status": "skipped", "reason": f"{type(exc).__name__}: {exc}"}
    if workloads.PROFILER is not None:
        workloads.PROFILER.dump_stats(args.profile)
    record.update(
        wall=m.wall,
        cpu=m.cpu,
        user=m.user,
        sys=m.sys,
        count=m.count,
        value=workloads.value_of(workload, m),
        extra=m.extra,
    )
    return record


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.worker", description="One benchmark measurement.")
    parser.add_argument("--workload", required=True, choices=sorted(workloads.WORKLOADS))
    parser.add_argument("--driver", required=True, choices=sorted({api for _, api in workloads.IMPLEMENTATIONS}))
    parser.add_argument("--client", default="dqlite", help="dqlite, dqlitedbapi, sqlite, module:NAME or auto")
    parser.add_argument("--addresses", default="", help="cluster nodes, leader first, comma-separated")
    parser.add_argument("--database", default="bench")
    parser.add_argument("--sqlite", help="the sqlite3 reference file")
    parser.add_argument("--rows", type=int, default=100_000, help="rows in the bench table")
    parser.add_argument("--transactions", type=int, default=workloads.W9_TRANSACTIONS,
                        help="W9: transactions per thread and per task")
    parser.add_argument("--round", type=int, default=1)
    parser.add_argument("--loop", choices=("asyncio", "uvloop"), default="asyncio", help="event loop (async workloads)")
    parser.add_argument("--profile", metavar="FILE", help="cProfile the measured part into FILE (pstats)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        record = measure(args)
    except BaseException as exc:
        traceback.print_exc(file=sys.stderr)
        record = {
            "protocol": PROTOCOL,
            "workload": args.workload,
            "driver": args.driver,
            "client": args.client,
            "python": platform.python_version(),
            "round": args.round,
            "status": "error",
            "reason": f"{type(exc).__name__}: {exc}",
        }
    sys.stdout.flush()
    print(json.dumps(record), flush=True)
    return 1 if record["status"] == "error" else 0


if __name__ == "__main__":
    raise SystemExit(main())
