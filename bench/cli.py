"""``python -m bench``: the benchmark of shared/docs/bench.md, end to end.

With no arguments: start a local 3-node cluster (``dqlite.server``), seed the
data on it and in a local sqlite3 file, then run every workload for this
project's driver (DB-API, asyncio, SQLAlchemy Core, ORM, sync and async
engines), for the sqlite3 reference and for the wire floor (W8), and print a
table and the targets.

Every (workload, driver, round) runs in a fresh worker process
(``bench.worker``); within a round the drivers of a workload run one after
the other (A B C, A B C, ...), so drift of a shared machine hits all of them.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from bench import data, floor, report, worker, workloads
from bench.clients import DqliteClient
from bench.progress import Progress
from bench.report import Contestant
from bench.workloads import WORKLOADS

DEFAULT_ROUNDS = 5
DEFAULT_ROWS = 100_000
DEFAULT_DATABASE = "bench"
#: Workloads run in this order; W8 runs in the rounds of W2 (it is W2's floor).
ORDER = ["W1", "W2", "W8", "W3", "W4", "W5", "W6", "W7", "W9", "M1"]
GROUPED = {"W8": "W2"}
REPO = Path(__file__).resolve().parent.parent
#: The go-dqlite peer (bench/go/main.go, built by scripts/build-go-bench.sh) and what it runs.
GO_WORKER = REPO / "build" / "bench-go-dqlite"
GO_WORKLOADS = ("W1", "W2", "W3", "W6")


@dataclass
class Setup:
    """Where the workers find the data."""

    addresses: list[str]  # leader first
    database: str
    sqlite_path: str
    rows: int
    timeout: float
    profile_dir: str | None
    loop: str  # event loop of the async workloads
    shim_dir: str  # PYTHONPATH for --compare: holds only a link to this bench package
    transactions: int = workloads.W9_TRANSACTIONS  # W9: per thread and per task


# -- arguments ------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Benchmark the dqlite client against a real cluster (shared/docs/bench.md).",
        epilog="Workloads: " + ", ".join(f"{w.id} {w.title}" for w in WORKLOADS.values())
        + ". See README.md, section Benchmark.",
    )
    parser.add_argument(
        "--url",
        help="use an existing cluster instead of starting one: host:port[,host:port...] or "
        "dqlite://host:port[,...][/database] (the table is seeded if it does not hold --rows rows)",
    )
    parser.add_argument("--database", help=f"database name on the cluster (default {DEFAULT_DATABASE})")
    parser.add_argument(
        "--workloads", default=",".join(ORDER),
        help="comma-separated subset (default: all); W2 brings W8, its floor, along",
    )
    parser.add_argument("--rounds", type=int, default=DEFAULT_ROUNDS,
                        help=f"fresh-process runs of each driver per workload (default {DEFAULT_ROUNDS})")
    parser.add_argument("--rows", type=int, default=DEFAULT_ROWS,
                        help=f"rows in the bench table (default {DEFAULT_ROWS:,}); M1 always iterates 1,000,000")
    parser.add_argument(
        "--transactions", type=int, default=workloads.W9_TRANSACTIONS,
        help=f"W9: transactions per thread and per task (default {workloads.W9_TRANSACTIONS})",
    )
    parser.add_argument("--json", metavar="FILE", help="write every measurement, the summary and the targets")
    parser.add_argument("--plot", metavar="FILE.png", help="bar chart of the ratios to the reference (matplotlib)")
    parser.add_argument(
        "--compare", metavar="PYTHON",
        help="also run the client workloads through this interpreter, which has another dqlite client "
        "installed, alternating with ours round by round (see bench/worker.py for what it needs)",
    )
    parser.add_argument(
        "--compare-client", default="auto", metavar="NAME",
        help="the client of the --compare interpreter: auto (default), dqlite, dqlitedbapi or module:NAME",
    )
    parser.add_argument(
        "--go", metavar="BINARY", default="auto",
        help="the go-dqlite peer measured next to ours in W1, W2, W3 and W6: auto (default: "
        f"{GO_WORKER.relative_to(REPO)} if built, see scripts/build-go-bench.sh), a worker binary, or none",
    )
    parser.add_argument(
        "--drivers", metavar="KINDS",
        help="comma-separated driver kinds to run (ours, the reference, floors and peer alike), e.g. "
        "dbapi,dbapi.nopoll; also the only way to run the optional kinds (dbapi.nopoll: W1 and W6 with "
        "busy_poll=0). Default: every kind of each workload but the optional ones",
    )
    parser.add_argument(
        "--proxy-delay", type=float, metavar="SECONDS",
        help="start the local cluster behind a TCP proxy (bench/proxy.py, a process of its own) that "
        "holds every answer of every node SECONDS (e.g. 0.0002): a distant cluster on one machine. "
        "Not with --url",
    )
    parser.add_argument("--loop", choices=("asyncio", "uvloop"), default="asyncio",
                        help="event loop of the async workloads (default: asyncio's own)")
    parser.add_argument("--profile", metavar="DIR", help="cProfile each measured part into DIR/*.pstats")
    parser.add_argument("--timeout", type=float, default=600, help="seconds one worker may take (default 600)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    if args.rows < 1:
        parser.error("--rows must be at least 1")
    if args.transactions < 1:
        parser.error("--transactions must be at least 1")
    wanted = [w.strip().upper() for w in args.workloads.split(",") if w.strip()]
    unknown = [w for w in wanted if w not in WORKLOADS]
    if unknown:
        parser.error(f"unknown workload(s) {', '.join(unknown)}; known: {', '.join(ORDER)}")
    if "W2" in wanted and "W8" not in wanted:
        wanted.append("W8")
    args.workload_list = [w for w in ORDER if w in wanted]
    if args.drivers is not None:
        args.drivers = {d.strip() for d in args.drivers.split(",") if d.strip()}
        known = {"go"} | {d for w in args.workload_list for d in
                          (*WORKLOADS[w].apis, *WORKLOADS[w].optional_apis, WORKLOADS[w].ref_api) if d}
        if not args.drivers or args.drivers - known:
            parser.error(f"--drivers: unknown kind(s) {', '.join(sorted(args.drivers - known)) or '(none given)'} "
                         f"for these workloads; known: {', '.join(sorted(known))}")
    if args.proxy_delay is not None:
        if args.url:
            parser.error("--proxy-delay starts its own cluster (its nodes must advertise the proxy): not with --url")
        if not 0 <= args.proxy_delay <= 1:
            parser.error("--proxy-delay must be between 0 and 1 second")
    if args.go == "auto":
        args.go = str(GO_WORKER) if os.access(GO_WORKER, os.X_OK) else None
    elif args.go == "none":
        args.go = None
    elif not os.access(args.go, os.X_OK):
        parser.error(f"--go {args.go}: not an executable")
    else:
        args.go = os.path.abspath(args.go)
    if args.compare:
        # Workers run in other directories: a path relative to here, or a
        # name found on PATH, becomes absolute.
        found = shutil.which(args.compare)
        if found is None:
            parser.error(f"--compare {args.compare}: not an executable")
        args.compare = os.path.abspath(found)
    return args


def parse_cluster_url(text: str) -> tuple[list[str], str | None]:
    """Addresses and database from ``--url``: ``h:p,h:p`` or ``dqlite://h:p[,h:p][/db][?host=h:p]``."""
    if "://" not in text:
        text = "dqlite://" + text
    parts = urlsplit(text)
    addresses = [a for a in parts.netloc.split(",") if a]
    for value in parse_qs(parts.query).get("host", []):
        addresses += [a for a in value.split(",") if a]
    database = parts.path.strip("/") or None
    if not addresses:
        raise ValueError(f"--url {text!r} names no node")
    return addresses, database


# -- the plan --------------------------------------------------------------------------


def plan(
    workload_ids: list[str], compare: str | None, compare_client: str, other_name: str = "other",
    go: str | None = None, drivers: set[str] | None = None,
) -> list[Contestant]:
    """Every contestant, in the order they run within a round.

    ``other_name`` labels the --compare client's rows; ``go`` is the go-dqlite
    peer's worker binary (None: no peer); ``drivers``, the driver kinds to run
    (None: each workload's own, without the optional ones).
    """
    contestants = []
    for wid in workload_ids:
        w = WORKLOADS[wid]
        kinds = w.apis if drivers is None else [d for d in (*w.apis, *w.optional_apis) if d in drivers]
        for driver in kinds:
            if driver.startswith("wire"):
                contestants.append(Contestant(wid, "dqlite", driver, "floor", sys.executable))
                continue
            contestants.append(Contestant(wid, "dqlite", driver, "ours", sys.executable))
            if compare:
                contestants.append(Contestant(wid, compare_client, driver, "other", compare))
        if go and wid in GO_WORKLOADS and (drivers is None or "go" in drivers):
            contestants.append(Contestant(wid, "go-dqlite", "go", "peer", go))
        if w.ref_api and (drivers is None or w.ref_api in drivers):
            contestants.append(Contestant(wid, "sqlite", w.ref_api, "ref", sys.executable))
    for c in contestants:
        c.label = report.driver_label(other_name if c.role == "other" else c.client, c.driver)
    return contestants


def schedule(contestants: list[Contestant], rounds: int) -> list[tuple[Contestant, int]]:
    """(contestant, round) in run order: round by round within each workload group."""
    groups: dict[str, list[Contestant]] = {}
    for c in contestants:
        groups.setdefault(GROUPED.get(c.workload, c.workload), []).append(c)
    return [(c, r) for group in groups.values() for r in range(1, rounds + 1) for c in group]


# -- running workers ---------------------------------------------------------------------


def worker_command(c: Contestant, round_: int, setup: Setup) -> list[str]:
    # The go-dqlite peer is a binary that takes the same flags as bench.worker.
    cmd = [c.python] if c.role == "peer" else [c.python, "-m", "bench.worker"]
    cmd += [
        "--workload", c.workload, "--driver", c.driver, "--client", c.client,
        "--addresses", ",".join(setup.addresses), "--database", setup.database,
        "--rows", str(setup.rows), "--round", str(round_), "--sqlite", setup.sqlite_path,
        "--loop", setup.loop,
    ]  # fmt: skip
    if c.workload == "W9":
        cmd += ["--transactions", str(setup.transactions)]
    if setup.profile_dir and c.role != "peer":
        name = f"{c.workload}-{c.role}-{c.client}-{c.driver}-r{round_}.pstats".replace(":", "_")
        cmd += ["--profile", os.path.join(setup.profile_dir, name)]
    return cmd


def run_worker(c: Contestant, round_: int, setup: Setup) -> dict[str, Any]:
    """One worker process; its JSON record, tagged with the contestant."""
    env = dict(os.environ)
    if c.role == "other":
        env["PYTHONPATH"], cwd = _other_pythonpath(setup), setup.shim_dir
    else:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
        cwd = str(REPO)
    tag = {"key": list(c.key), "label": c.label, "role": c.role, "interpreter": c.python}
    try:
        proc = subprocess.run(worker_command(c, round_, setup), cwd=cwd, env=env, capture_output=True,
                              text=True, timeout=setup.timeout)
    except subprocess.TimeoutExpired:
        return {**tag, "workload": c.workload, "round": round_, "status": "error",
                "reason": f"worker timed out after {setup.timeout:g} s"}
    except OSError as exc:
        return {**tag, "workload": c.workload, "round": round_, "status": "error", "reason": str(exc)}
    record = None
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("{"):
            try:
                record = json.loads(line)
                break
            except ValueError:
                continue
    if record is None:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        record = {"workload": c.workload, "round": round_, "status": "error",
                  "reason": f"worker exited {proc.returncode} without a result: {tail}"}
    elif record.get("status") == "error" and proc.stderr.strip():
        record["stderr"] = proc.stderr.strip()[-2000:]
    return {**record, **tag}


def _other_pythonpath(setup: Setup) -> str:
    """The --compare interpreter's PYTHONPATH: the bench package alone (not
    this repository, so it measures its own client), then the caller's
    PYTHONPATH (where an adapter module for ``module:NAME`` may live)."""
    return os.pathsep.join(p for p in (setup.shim_dir, os.environ.get("PYTHONPATH")) if p)


def probe_other(python: str, client: str, setup: Setup) -> tuple[str, str]:
    """(name, version) of the client the --compare interpreter will measure."""
    code = (
        "import sys; from bench.clients import resolve; "
        "c = resolve(sys.argv[1], sys.argv[2].split(','), sys.argv[3]); print(c.name); print(c.version())"
    )
    env = {**os.environ, "PYTHONPATH": _other_pythonpath(setup)}
    proc = subprocess.run([python, "-c", code, client, ",".join(setup.addresses), setup.database],
                          cwd=setup.shim_dir, env=env, capture_output=True, text=True, timeout=60)
    lines = proc.stdout.split("\n")
    if proc.returncode != 0 or len(lines) < 2:
        raise RuntimeError(f"--compare {python}: cannot load client {client!r}: "
                           f"{(proc.stderr.strip().splitlines() or ['no output'])[-1]}")
    return lines[0].strip(), lines[1].strip()


def precheck(contestants: list[Contestant], setup: Setup) -> dict[tuple[str, str, str, str], str]:
    """Contestants of ours that cannot run here, with the reason (checked once, in-process)."""
    skipped = {}
    client = DqliteClient(setup.addresses, setup.database)
    for c in contestants:
        if c.role == "ours" and c.driver in ("sa", "sa.aio", "sa.mixed"):
            reason = worker._sqlalchemy_missing(c.driver, client)
            if reason:
                skipped[c.key] = reason
    return skipped


def run_all(contestants: list[Contestant], rounds: int, setup: Setup, show_progress: bool) -> list[dict[str, Any]]:
    """Run the schedule; every record (skips included)."""
    records: list[dict[str, Any]] = []
    skipped = precheck(contestants, setup)
    for c in contestants:
        if c.key in skipped:
            records.append({"key": list(c.key), "label": c.label, "role": c.role, "workload": c.workload,
                            "round": None, "status": "skipped", "reason": skipped[c.key]})
    tasks = [(c, r) for c, r in schedule(contestants, rounds) if c.key not in skipped]
    bar = Progress(len(tasks), enabled=show_progress)
    for key, reason in skipped.items():
        bar.note(f"skipping {key[0]} {report.driver_label(key[2], key[3])}: {reason}")
    for c, r in tasks:
        w = WORKLOADS[c.workload]
        bar.step(f"{c.workload} {w.title}: {c.label}, round {r}/{rounds}")
        if c.key in skipped:
            continue
        record = run_worker(c, r, setup)
        records.append(record)
        if record["status"] == "skipped":
            skipped[c.key] = record.get("reason", "")
            bar.note(f"skipping {c.workload} {c.label}: {record.get('reason')}")
        elif record["status"] == "error":
            bar.note(f"error in {c.workload} {c.label}, round {r}: {record.get('reason')}")
    bar.done()
    return records


# -- main ----------------------------------------------------------------------------------


def _shim_dir(tmp: str) -> str:
    """A directory holding only ``bench`` (a link to this package), for --compare's PYTHONPATH."""
    shim = os.path.join(tmp, "shim")
    os.makedirs(shim)
    os.symlink(REPO / "bench", os.path.join(shim, "bench"))
    return shim


def _seed(addresses: list[str], database: str, sqlite_path: str, rows: int, show_progress: bool) -> None:
    """The bench table on the cluster (unless it already holds ``rows`` rows) and in the file."""
    import dqlite

    conn = dqlite.connect(addresses, database)
    try:
        needed = data.count_rows(conn) != rows
        batches = len(list(data.chunks(rows))) if needed else 0
        bar = Progress(batches + (2 if needed else 1), enabled=show_progress)
        written = 0

        def step(count: int) -> None:
            nonlocal written
            written += count
            bar.step(f"seeding the cluster: {written:,} of {rows:,} rows written")

        if needed:
            step(0)
            data.seed(conn, rows, step)
        else:
            print(f"the cluster's database {database!r} already holds the {rows:,} bench rows: kept", file=sys.stderr)
    finally:
        conn.close()
    bar.step(f"seeding the sqlite3 reference file ({rows:,} rows)")
    data.seed_sqlite(sqlite_path, rows)
    bar.done()


def _meta(args: argparse.Namespace, setup: Setup, cluster: str, started: datetime.datetime) -> dict[str, Any]:
    import sqlite3

    import dqlite

    return {
        "started": started.isoformat(timespec="seconds"),
        "host": platform.node(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "dqlite": getattr(dqlite, "__version__", "?"),
        "sqlite3": sqlite3.sqlite_version,
        "cluster": cluster,
        "addresses": setup.addresses,
        "database": setup.database,
        "rows": setup.rows,
        "rounds": args.rounds,
        "transactions": args.transactions,
        "workloads": args.workload_list,
        "compare": args.compare,
        "go": args.go,
        "loop": args.loop,
        "drivers": sorted(args.drivers) if args.drivers else None,
        "proxy_delay": args.proxy_delay,
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = datetime.datetime.now()
    show_progress = not args.no_progress
    proxy_stats: dict[str, Any] = {}  # the delaying proxy's, once it stopped
    with ExitStack() as stack:
        tmp = tempfile.mkdtemp(prefix="dqlite-bench-")
        stack.callback(shutil.rmtree, tmp, True)
        if args.url:
            addresses, database = parse_cluster_url(args.url)
            database = args.database or database or DEFAULT_DATABASE
            cluster = f"existing cluster {','.join(addresses)}"
        elif args.proxy_delay is not None:
            from bench.proxy import proxied_cluster

            delay = f"{args.proxy_delay * 1e6:g} µs"
            print(f"starting a local 3-node dqlite cluster behind a proxy holding answers {delay} ...",
                  file=sys.stderr)
            local, proxy = proxied_cluster(args.proxy_delay)
            stack.callback(lambda: proxy_stats.update(proxy.stop()))  # after the cluster stops
            stack.enter_context(local)
            addresses, database = local.addresses, args.database or DEFAULT_DATABASE
            cluster = f"local 3-node cluster (dqlite.server) behind a proxy holding every answer {delay}"
        else:
            from dqlite.server import LocalCluster

            print("starting a local 3-node dqlite cluster ...", file=sys.stderr)
            local = stack.enter_context(LocalCluster(nodes=3))
            addresses, database = local.addresses, args.database or DEFAULT_DATABASE
            cluster = "local 3-node cluster (dqlite.server)"
        leader = floor.find_leader(addresses)
        addresses = [leader] + [a for a in addresses if a != leader]
        setup = Setup(
            addresses=addresses,
            database=database,
            sqlite_path=os.path.join(tmp, "reference.sqlite3"),
            rows=args.rows,
            timeout=args.timeout,
            profile_dir=args.profile,
            loop=args.loop,
            shim_dir=_shim_dir(tmp),
            transactions=args.transactions,
        )
        if args.profile:
            os.makedirs(args.profile, exist_ok=True)
        print(f"cluster: {cluster}, leader {leader}, database {database!r}", file=sys.stderr)
        _seed(addresses, database, setup.sqlite_path, args.rows, show_progress)
        other_name = "other"
        if args.compare:
            name, version = probe_other(args.compare, args.compare_client, setup)
            other_name = f"{name} (other)" if name == "dqlite" else name
            print(f"compare: {args.compare} measures {version}", file=sys.stderr)
        if args.go:
            print(f"go-dqlite peer: {args.go}", file=sys.stderr)
        else:
            print("go-dqlite peer: not built (scripts/build-go-bench.sh builds it; make bench does): "
                  "no go-dqlite rows", file=sys.stderr)
        contestants = plan(args.workload_list, args.compare, args.compare_client, other_name, args.go,
                           args.drivers)
        records = run_all(contestants, args.rounds, setup, show_progress)
        meta = _meta(args, setup, cluster, started)

    if args.proxy_delay is not None:
        meta["proxy"] = proxy_stats
    rows = report.build_rows(contestants, records)
    targets = report.evaluate_targets(rows)
    versions = sorted({r["version"] for r in records if r.get("version") and r.get("role") in ("ours", "other", "peer")})
    print()
    print(f"dqlite benchmark, {meta['started']}: {cluster}, {args.rows:,} rows, {args.rounds} round(s), "
          f"Python {meta['python']}, {meta['cpus']} CPUs; clients: {', '.join(versions) or '-'}; "
          f"reference: sqlite3 {meta['sqlite3']} on a local file")
    print()
    print(report.format_table(rows, args.rounds))
    comparison = report.format_comparison(rows)
    if comparison:
        print()
        print(comparison)
    busy_poll = report.format_busy_poll(rows)
    if busy_poll:
        print()
        print(busy_poll)
    if proxy_stats.get("held_median_us") is not None:
        print()
        print(f"proxy: {proxy_stats['chunks']:,} answers (chunks) held {proxy_stats['held_median_us']:g} µs "
              f"(median; p99 {proxy_stats['held_p99_us']:g} µs) for a delay of {proxy_stats['delay_us']:g} µs")
    print()
    print(report.format_targets(targets))
    if args.json:
        report.write_json(args.json, meta, records, rows, targets)
        print(f"\nwrote {args.json}")
    if args.plot:
        title = f"dqlite benchmark {meta['started']} ({args.rows:,} rows, {args.rounds} rounds)"
        report.plot(args.plot, rows, targets, title)
        print(f"wrote {args.plot}")
    # Failing only when our driver, the reference or a floor never produced a number (one bad
    # round is in the table).  A compared client or peer that fails is its own affair: the
    # notes above say why, and the run still measured what it is for.
    return 1 if any(row.status == "error" and row.contestant.role not in ("other", "peer") for row in rows) else 0
