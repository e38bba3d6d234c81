"""From worker records to what a person reads: the table, the targets, JSON, a plot.

A *contestant* is one (workload, client, driver kind) run round after round;
its row in the table holds the median of its rounds with min and max, the
median client CPU (total and per query or row), and ``vs ref``: its cost
divided by the reference's cost in the same run (time, or 1/throughput, or MB
for M1), so 1.00 is "as fast as sqlite3 on a local file" and lower is better.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from bench.workloads import WORKLOADS, Workload

# -- rows ------------------------------------------------------------------------


@dataclass
class Contestant:
    """Who runs a workload: a client through one driver kind, in one interpreter."""

    workload: str
    client: str  # the worker's --client
    driver: str  # the worker's --driver
    role: str  # "ours", "other" (--compare), "peer" (go-dqlite), "ref" or "floor"
    python: str  # the interpreter running the worker
    label: str = ""

    @property
    def key(self) -> tuple[str, str, str, str]:
        return (self.workload, self.role, self.client, self.driver)


#: The floors' driver kinds, by name.
FLOOR_NAMES = {
    "wire": "raw socket",
    "wire.poll": "raw socket, polled",
    "wire.aio": "raw asyncio",
    "wire.aio.poll": "raw asyncio, polled",
}


def driver_label(client: str, driver: str) -> str:
    """A readable name for a client through a driver kind."""
    if driver in FLOOR_NAMES:
        return f"{FLOOR_NAMES[driver]} (floor)"
    if driver == "go":
        return f"{client} database/sql"
    if client == "sqlite":
        return {
            "dbapi": "sqlite3",
            "aio": "aiosqlite",
            "sa": "SQLAlchemy sqlite://",
            "sa.aio": "SQLAlchemy sqlite+aiosqlite://",
            "sa.mixed": "SQLAlchemy sqlite:// + sqlite+aiosqlite://",
        }[driver]
    return {
        "dbapi": f"{client} DB-API",
        "dbapi.nopoll": f"{client} DB-API busy_poll=0",
        "aio": f"{client} asyncio",
        "sa": f"SQLAlchemy {client}",
        "sa.aio": f"SQLAlchemy async {client}",
        "sa.mixed": f"SQLAlchemy {client} sync+async",
    }[driver]


@dataclass
class Row:
    """One contestant's rounds, summarized."""

    contestant: Contestant
    records: list[dict[str, Any]] = field(default_factory=list)
    ratio: float | None = None  # cost / reference cost (same run)

    @property
    def workload(self) -> Workload:
        return WORKLOADS[self.contestant.workload]

    @property
    def ok(self) -> list[dict[str, Any]]:
        return [r for r in self.records if r.get("status") == "ok"]

    @property
    def status(self) -> str:
        """ok, skipped, error (no round succeeded) or partial (some rounds failed)."""
        if not self.records:
            return "skipped"
        if self.ok:
            return "ok" if len(self.ok) == len(self.records) else "partial"
        return self.records[-1].get("status", "error")

    @property
    def reason(self) -> str:
        """The first failure's reason, on one line."""
        for r in self.records:
            if r.get("status") != "ok" and r.get("reason"):
                return " ".join(str(r["reason"]).split())
        return ""

    @property
    def version(self) -> str:
        for r in self.records:
            if r.get("version"):
                return str(r["version"])
        return ""

    def _values(self, key: str) -> list[float]:
        return [float(r[key]) for r in self.ok]

    @property
    def median(self) -> float | None:
        values = self._values("value")
        return statistics.median(values) if values else None

    @property
    def low(self) -> float | None:
        values = self._values("value")
        return min(values) if values else None

    @property
    def high(self) -> float | None:
        values = self._values("value")
        return max(values) if values else None

    @property
    def wall(self) -> float | None:
        values = self._values("wall")
        return statistics.median(values) if values else None

    @property
    def cpu(self) -> float | None:
        values = self._values("cpu")
        return statistics.median(values) if values else None

    @property
    def cpu_per_op(self) -> float | None:
        """Median client CPU seconds per query (W1, W6, W7) or per row (the others)."""
        return self.per_op("cpu")

    def per_op(self, key: str) -> float | None:
        """Median of ``key`` (CPU seconds: "cpu", "user" or "sys") per operation."""
        values = [float(r[key]) / r["count"] for r in self.ok if r.get("count") and key in r]
        return statistics.median(values) if values else None

    def _extra_sum(self, key: str) -> int | None:
        values = [int(r["extra"][key]) for r in self.ok if key in (r.get("extra") or {})]
        return sum(values) if values else None

    @property
    def failed(self) -> int | None:
        """W9: transactions that failed, over all the rounds (None: the workload counts none)."""
        return self._extra_sum("failed")

    @property
    def attempted(self) -> int | None:
        """W9: transactions attempted, over all the rounds."""
        return self._extra_sum("attempted")

    @property
    def locked(self) -> int | None:
        """W9: transactions that failed with "database is locked", over all the rounds."""
        return self._extra_sum("locked")

    @property
    def failures(self) -> dict[str, int]:
        """W9: ``{"Class: message": count}`` over all the rounds, most frequent first."""
        total: dict[str, int] = {}
        for r in self.ok:
            for key, n in (r.get("extra") or {}).get("failures", {}).items():
                total[key] = total.get(key, 0) + int(n)
        return dict(sorted(total.items(), key=lambda kv: -kv[1]))

    @property
    def cost(self) -> float | None:
        """Median cost: seconds, MB, or 1/throughput; lower is better."""
        m = self.median
        if m is None:
            return None
        if self.workload.higher_is_better:
            return 1.0 / m if m > 0 else float("inf")
        return m


def build_rows(contestants: list[Contestant], records: list[dict[str, Any]]) -> list[Row]:
    """A row per contestant (in plan order) holding its records, with ratios set."""
    rows = {c.key: Row(c) for c in contestants}
    for record in records:
        row = rows.get(tuple(record["key"]))
        if row is not None:
            row.records.append(record)
    result = list(rows.values())
    for row in result:
        ref = reference(result, row.contestant.workload)
        if row.contestant.role in ("ours", "other", "peer") and ref is not None:
            row.ratio = _ratio(row.cost, ref.cost, row.workload.unit)
    return result


def _ratio(cost: float | None, ref_cost: float | None, unit: str) -> float | None:
    if cost is None or ref_cost is None:
        return None
    if unit == "MB" and ref_cost < 1.0:
        return None  # the reference grew by less than a megabyte: no meaningful ratio
    if ref_cost <= 0:
        return None
    return cost / ref_cost


def reference(rows: list[Row], workload: str) -> Row | None:
    """The workload's reference row, if it has one that produced numbers."""
    for row in rows:
        if row.contestant.workload == workload and row.contestant.role == "ref" and row.median is not None:
            return row
    return None


def find(rows: list[Row], workload: str, role: str, driver: str) -> Row | None:
    for row in rows:
        c = row.contestant
        if c.workload == workload and c.role == role and c.driver == driver:
            return row
    return None


# -- formatting --------------------------------------------------------------------


def fmt_value(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit.endswith("/s"):
        return f"{value:,.0f}"
    if unit == "MB":
        return f"{value:.1f}"
    return f"{value:.3f}" if value < 10 else f"{value:.1f}"


def _cell(row: Row) -> str:
    unit = row.workload.unit
    if row.median is None:
        return f"{row.status}: {row.reason}" if row.reason else row.status
    spread = f"[{fmt_value(row.low, unit)}-{fmt_value(row.high, unit)}]"
    cell = f"{fmt_value(row.median, unit)} {unit} {spread}"
    if row.failed is not None:
        cell += f", {row.failed:,} of {row.attempted:,} failed"
    return cell


def format_table(rows: list[Row], rounds: int) -> str:
    """The main table: one line per contestant."""
    header = ("workload", "driver", f"median [min-max] of {rounds}", "client CPU", "CPU/op", "vs ref")
    lines: list[tuple[str, ...]] = []
    notes: list[str] = []
    for row in rows:
        c = row.contestant
        w = row.workload
        if row.median is None:
            notes.append(f"{c.workload} {c.label}: {row.status}: {row.reason or 'no result'}")
        elif row.failed:
            causes = "; ".join(f"{n:,}x {key}" for key, n in row.failures.items())
            notes.append(f"{c.workload} {c.label}: {row.failed:,} of {row.attempted:,} transactions failed "
                         f"over {len(row.ok)} round(s), not retried: {causes}")
        if c.role == "ref":
            vs = "ref"
        elif c.role == "floor":
            vs = "floor"
        else:
            vs = f"{row.ratio:.2f}x" if row.ratio is not None else "-"
        cpu = f"{row.cpu:.3f} s" if row.cpu is not None else "-"
        per_op = f"{row.cpu_per_op * 1e6:.2f} µs" if row.cpu_per_op is not None else "-"
        value = _cell(row) if row.median is not None else row.status
        lines.append((f"{w.id} {w.title}", c.label, value, cpu, per_op, vs))
    widths = [max(len(h), *(len(line[i]) for line in lines)) if lines else len(h) for i, h in enumerate(header)]
    right = {2, 3, 4, 5}

    def render(cells: tuple[str, ...]) -> str:
        return "  ".join(cell.rjust(widths[i]) if i in right else cell.ljust(widths[i]) for i, cell in enumerate(cells))

    out = [render(header), "  ".join("-" * w for w in widths)]
    previous = None
    for line in lines:
        if previous is not None and line[0] != previous:
            out.append("")
        out.append(render(line))
        previous = line[0]
    out.append("")
    out.append(
        "vs ref: cost / the reference's cost in this run (time, 1/throughput, or MB for M1); "
        "1.00x = as fast as the reference, lower is better."
    )
    out.append("CPU/op: client CPU (user+sys of the worker process) per query (W1, W6, W7), "
               "per committed transaction (W9) or per row.")
    if any(row.failed is not None for row in rows):
        out.append("W9: committed transactions per second; failed transactions (summed over the rounds) "
                   "are not retried and not counted in tx/s.")
    if notes:
        out.append("")
        out.extend(f"note: {n}" for n in notes)
    return "\n".join(out)


# -- targets -------------------------------------------------------------------------


@dataclass
class TargetResult:
    """One target checked for one contestant."""

    workload: str
    driver: str
    target: str
    measured: str
    verdict: str  # "hold", "miss" or "n/a"


@dataclass
class _Target:
    workload: str
    drivers: tuple[str, ...]
    text: str
    check: Callable[[Row, list[Row], str], tuple[str, bool | None]]


def _w1(row: Row, rows: list[Row], role: str) -> tuple[str, bool | None]:
    per = row.cpu_per_op
    if per is None:
        return "-", None
    text = f"{per * 1e6:.1f} µs/query"
    floor = _w1_floor(rows, row.contestant.driver)
    if floor is not None and floor.cpu_per_op is not None:
        # The kernel's share varies from machine to machine: show what a raw
        # socket costs in the same run next to the absolute target.
        text += f" ({FLOOR_NAMES[floor.contestant.driver]} {floor.cpu_per_op * 1e6:.1f})"
    return text, per <= 25e-6


def _w1_floor(rows: list[Row], driver: str) -> Row | None:
    """The W1 floor to hold ``driver``'s CPU against: the raw socket, polled
    for the answers as our drivers do.  The same for the asyncio driver,
    which polls the socket itself while its event loop has nothing else to
    run (W1's single task); the raw asyncio floors show what waiting through
    the loop would cost instead."""
    for kind in ("wire.poll", "wire"):
        floor = find(rows, "W1", "floor", kind)
        if floor is not None:
            return floor
    return None


def _w2_floor(row: Row, rows: list[Row], role: str) -> tuple[str, bool | None]:
    floor = find(rows, "W8", "floor", "wire")
    if row.wall is None or floor is None or floor.wall is None:
        return "- (needs W8 in the same run)", None
    ratio = row.wall / floor.wall
    return f"{ratio:.2f}x W8 ({row.wall:.3f} s vs {floor.wall:.3f} s)", ratio <= 1.25


def _w2_cpu(row: Row, rows: list[Row], role: str) -> tuple[str, bool | None]:
    per = row.cpu_per_op
    if per is None:
        return "-", None
    per_100k = per * 100_000
    return f"{per_100k:.3f} s per 100k rows", per_100k <= 0.15


def _w3(row: Row, rows: list[Row], role: str) -> tuple[str, bool | None]:
    m = row.median
    return (f"{m:,.0f} rows/s", m >= 50_000) if m is not None else ("-", None)


def _vs_ref(limit: float) -> Callable[[Row, list[Row], str], tuple[str, bool | None]]:
    def check(row: Row, rows: list[Row], role: str) -> tuple[str, bool | None]:
        if row.ratio is None:
            return "- (no reference)", None
        return f"{row.ratio:.2f}x ref", row.ratio <= limit

    return check


def _vs_go(factor: float) -> Callable[[Row, list[Row], str], tuple[str, bool | None]]:
    """Throughput at least ``factor`` times go-dqlite's in the same run (bench.md's
    W1 and W3 targets are stated against go-dqlite)."""

    def check(row: Row, rows: list[Row], role: str) -> tuple[str, bool | None]:
        go = find(rows, row.contestant.workload, "peer", "go")
        if row.median is None or go is None or go.median is None:
            return "- (no go-dqlite in this run)", None
        ratio = row.median / go.median
        unit = row.workload.unit
        return f"{ratio:.2f}x ({row.median:,.0f} vs {go.median:,.0f} {unit})", ratio >= factor

    return check


def _w6(row: Row, rows: list[Row], role: str) -> tuple[str, bool | None]:
    ref = reference(rows, "W6")
    if row.median is None or ref is None or ref.median is None:
        return "-", None
    return f"{row.median:,.0f} vs {ref.median:,.0f} q/s", row.median >= ref.median


def _w7(row: Row, rows: list[Row], role: str) -> tuple[str, bool | None]:
    w6 = find(rows, "W6", role, "sa")
    if row.median is None:
        return "-", None
    if w6 is None or w6.median is None:
        # Half the target can still be checked: below 8,000 q/s it misses either way.
        return f"{row.median:,.0f} q/s (no W6 to compare)", False if row.median < 8_000 else None
    return f"{row.median:,.0f} q/s, W6 {w6.median:,.0f}", row.median >= 8_000 and row.median >= w6.median


def _w9(row: Row, rows: list[Row], role: str) -> tuple[str, bool | None]:
    if row.failed is None or row.median is None:
        return "-", None
    text = f"{row.failed:,} of {row.attempted:,} failed"
    if row.failed:
        text += f" ({row.locked:,} database is locked)"
    return f"{text}; {row.median:,.0f} tx/s", row.failed == 0


def _m1(row: Row, rows: list[Row], role: str) -> tuple[str, bool | None]:
    m = row.median
    return (f"{m:.1f} MB", m <= 50) if m is not None else ("-", None)


TARGETS = [
    _Target("W1", ("dbapi", "aio"), "client CPU per query <= 25 µs", _w1),
    _Target("W1", ("dbapi", "aio"), ">= 0.9x go-dqlite's q/s (same run)", _vs_go(0.9)),
    _Target("W2", ("dbapi", "aio"), "wall <= 1.25x W8 (same run)", _w2_floor),
    _Target("W2", ("dbapi", "aio"), "client CPU <= 0.15 s per 100k rows", _w2_cpu),
    _Target("W3", ("dbapi", "aio"), ">= 50,000 rows/s", _w3),
    _Target("W3", ("dbapi", "aio"), ">= 3x go-dqlite's rows/s (same run)", _vs_go(3.0)),
    _Target("W4", ("sa",), "<= 1.3x SQLAlchemy Core on sqlite3", _vs_ref(1.3)),
    _Target("W5", ("sa",), "<= 1.3x SQLAlchemy ORM on sqlite3", _vs_ref(1.3)),
    _Target("W6", ("sa",), ">= sqlite3's W6 (SQLAlchemy pool)", _w6),
    _Target("W7", ("sa.aio", "aio"), ">= 8,000 q/s and >= W6", _w7),
    _Target("W9", ("sa.mixed",), "0 failed transactions (none 'database is locked')", _w9),
    _Target("M1", ("dbapi", "aio"), "peak RSS growth <= 50 MB", _m1),
]


def _shorten(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


def evaluate_targets(rows: list[Row]) -> list[TargetResult]:
    """Every target, for every client under test that ran its workload."""
    results = []
    for target in TARGETS:
        for row in rows:
            c = row.contestant
            if c.workload != target.workload or c.role not in ("ours", "other") or c.driver not in target.drivers:
                continue
            if row.median is None:
                measured, verdict = _shorten(f"{row.status}: {row.reason}", 48), None
            else:
                measured, verdict = target.check(row, rows, c.role)
            word = "n/a" if verdict is None else ("hold" if verdict else "MISS")
            results.append(TargetResult(c.workload, c.label, target.text, measured, word))
    return results


def format_targets(results: list[TargetResult]) -> str:
    header = ("target", "driver", "measured", "verdict")
    lines = [(f"{r.workload} {r.target}", r.driver, r.measured, r.verdict) for r in results]
    widths = [max(len(h), *(len(line[i]) for line in lines)) if lines else len(h) for i, h in enumerate(header)]
    out = ["  ".join(h.ljust(widths[i]) for i, h in enumerate(header)), "  ".join("-" * w for w in widths)]
    out += ["  ".join(cell.ljust(widths[i]) for i, cell in enumerate(line)) for line in lines]
    held = sum(r.verdict == "hold" for r in results)
    missed = sum(r.verdict == "MISS" for r in results)
    out.append(f"\n{held} held, {missed} missed, {len(results) - held - missed} not measured")
    return "\n".join(out)


# -- comparison (--compare) ------------------------------------------------------------


def _cost_ratio(row: Row, other: Row) -> str:
    if row.cost is None or other.cost is None:
        return "-"
    r = row.cost / other.cost
    percent = round(abs(1 / r - 1) * 100)
    if r <= 0.5:
        return f"{r:.2f}x  (ours {1 / r:.1f}x as fast)"
    if percent == 0:
        return f"{r:.2f}x  (the same)"
    return f"{r:.2f}x  (ours {percent}% {'faster' if r < 1 else 'slower'})"


def _cpu_split(row: Row, other: Row) -> str:
    """Client CPU per operation of both, in user space and in the kernel: a
    difference in the kernel's share is system calls (for a send, waking the
    node that receives it), not the client's own code."""
    values = [row.per_op("user"), other.per_op("user"), row.per_op("sys"), other.per_op("sys")]
    if any(v is None for v in values):
        return ""
    user, other_user, kernel, other_kernel = (v * 1e6 for v in values)  # type: ignore[operator]
    return f"; CPU/op user {user:.1f} vs {other_user:.1f} µs, kernel {kernel:.1f} vs {other_kernel:.1f} µs"


def format_comparison(rows: list[Row]) -> str:
    """ours / other per (workload, driver kind), and ours / go-dqlite per workload:
    cost ratios, lower means ours is faster; against another build of ours,
    where its client CPU went (``_cpu_split``)."""
    sections = []
    for role, title in (("other", "ours vs other"), ("peer", "ours vs go-dqlite")):
        out = []
        for row in rows:
            c = row.contestant
            if c.role != "ours":
                continue
            other = find(rows, c.workload, role, "go" if role == "peer" else c.driver)
            if other is not None:
                split = _cpu_split(row, other) if role == "other" else ""
                out.append(f"{c.workload} {row.workload.title:8} {c.label} vs {other.contestant.label}: "
                           f"{_cost_ratio(row, other)}{split}")
        if out:
            sections.append(f"{title} (cost ratio, lower = ours better):\n" + "\n".join("  " + line for line in out))
    return "\n\n".join(sections)


# -- busy-poll on and off (--drivers dbapi,dbapi.nopoll) -------------------------------


def _paired(row: Row, other: Row, key: Callable[[dict[str, Any]], float]) -> list[float]:
    """Per round, ``key`` of ``row``'s record over ``other``'s (rounds both measured)."""
    theirs = {r.get("round"): r for r in other.ok}
    return [key(r) / key(theirs[r.get("round")]) for r in row.ok
            if r.get("round") in theirs and key(theirs[r.get("round")]) > 0]


def _spread(ratios: list[float]) -> str:
    return f"{statistics.median(ratios):.3f}x [{min(ratios):.3f}-{max(ratios):.3f}]"


def format_busy_poll(rows: list[Row]) -> str:
    """Our DB-API with its default busy-poll against ``busy_poll=0``, round by round.

    For each workload that ran both: the per-round ratios (default / off) of
    the throughput and of the client CPU per query, and how the default's
    waits went (polls that found the answer, waits that slept).
    """
    out = []
    for row in rows:
        c = row.contestant
        if c.role != "ours" or c.driver != "dbapi":
            continue
        off = find(rows, c.workload, "ours", "dbapi.nopoll")
        if off is None:
            continue
        speed = _paired(row, off, lambda r: float(r["value"]))
        cpu = _paired(row, off, lambda r: float(r["cpu"]) / r["count"] if r.get("count") else 0.0)
        if not speed or not cpu:
            continue
        hits, late, sleeps = (sum(int((r.get("extra") or {}).get(f"poll_{key}", 0)) for r in row.ok)
                              for key in ("hits", "late", "sleeps"))
        waits = (f"; default's waits: {hits:,} found polling, {late:,} found late, {sleeps:,} slept"
                 if hits + late + sleeps else "")
        per_query = (f"{row.cpu_per_op * 1e6:.2f} vs {off.cpu_per_op * 1e6:.2f} µs"
                     if row.cpu_per_op is not None and off.cpu_per_op is not None else "-")
        out.append(f"{c.workload} {row.workload.title:8} {row.workload.unit} {_spread(speed)}, "
                   f"CPU/query {_spread(cpu)} ({per_query}) over {len(speed)} round(s){waits}")
    if not out:
        return ""
    return ("busy_poll default vs busy_poll=0 (per-round ratios default/off, median [min-max]):\n"
            + "\n".join("  " + line for line in out))


# -- files -----------------------------------------------------------------------------


def write_json(path: str, meta: dict[str, Any], records: list[dict[str, Any]], rows: list[Row],
               targets: list[TargetResult]) -> None:
    """Every measurement, the summary rows and the targets."""
    summary = [
        {
            **asdict(row.contestant),
            "unit": row.workload.unit,
            "status": row.status,
            "reason": row.reason,
            "version": row.version,
            "median": row.median,
            "min": row.low,
            "max": row.high,
            "wall_median": row.wall,
            "cpu_median": row.cpu,
            "cpu_per_op": row.cpu_per_op,
            "vs_ref": row.ratio,
            # W9 only (None elsewhere): transactions over all the rounds.
            "attempted": row.attempted,
            "failed": row.failed,
            "locked": row.locked,
            "failures": row.failures if row.failed is not None else None,
        }
        for row in rows
    ]
    document = {
        "meta": meta,
        "measurements": records,
        "summary": summary,
        "targets": [asdict(t) for t in targets],
    }
    with open(path, "w") as f:
        json.dump(document, f, indent=2)
        f.write("\n")


def plot(path: str, rows: list[Row], targets: list[TargetResult], title: str) -> None:
    """A horizontal bar chart of every ``vs ref`` ratio, W2 against the W8 floor and
    W1's CPU per query against its floor's (the raw socket, polled, for both drivers).

    A bar is green when every target it depicts holds, red when one misses,
    grey when none applies; a black tick marks a ratio target.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    def verdicts(workload: str, label: str, about: str | None = None) -> set[str]:
        """Verdicts of the row's targets; with ``about``, only those whose text names it."""
        return {
            t.verdict for t in targets
            if t.workload == workload and t.driver == label and (about is None or about in t.target)
        }

    bars: list[tuple[str, float, float | None, set[str]]] = []  # label, ratio, ratio target, verdicts
    ratio_targets = {("W4", "sa"): 1.3, ("W5", "sa"): 1.3, ("W6", "sa"): 1.0}
    for row in rows:
        c = row.contestant
        if row.ratio is not None:
            bars.append((f"{c.workload} {row.workload.title}: {c.label}", row.ratio,
                         ratio_targets.get((c.workload, c.driver)), verdicts(c.workload, c.label, about="sqlite3")))
    floor = find(rows, "W8", "floor", "wire")
    for row in rows:
        c = row.contestant
        if c.workload == "W2" and c.role in ("ours", "other") and floor and floor.wall and row.wall:
            bars.append((f"W2 vs W8 floor: {c.label}", row.wall / floor.wall, 1.25,
                         verdicts("W2", c.label, about="W8")))
    go_targets = {"W1": 0.9, "W3": 3.0}  # ours at least this many times go-dqlite's throughput
    for row in rows:
        c = row.contestant
        go = find(rows, c.workload, "peer", "go")
        if c.role in ("ours", "other") and go and go.cost and row.cost:
            factor = go_targets.get(c.workload)
            bars.append((f"{c.workload} vs go-dqlite: {c.label}", row.cost / go.cost,
                         1 / factor if factor else None, verdicts(c.workload, c.label, about="go-dqlite")))
    for row in rows:
        c = row.contestant
        w1_floor = _w1_floor(rows, c.driver)
        if (c.workload == "W1" and c.role in ("ours", "other") and w1_floor and w1_floor.cpu_per_op
                and row.cpu_per_op):
            # No ratio target: the W1 CPU target is absolute (its verdict colours the bar).
            bars.append((f"W1 CPU vs {FLOOR_NAMES[w1_floor.contestant.driver]}: {c.label}",
                         row.cpu_per_op / w1_floor.cpu_per_op, None, verdicts("W1", c.label, about="CPU")))
    if not bars:
        raise ValueError("nothing to plot: no ratios were measured")
    bars.reverse()
    fig, ax = plt.subplots(figsize=(10, 0.4 * len(bars) + 1.6))
    colors = ["#c54" if "MISS" in v else "#3a7" if "hold" in v else "#999" for *_, v in bars]
    ax.barh([b[0] for b in bars], [b[1] for b in bars], color=colors)
    for i, (_, value, limit, _v) in enumerate(bars):
        ax.text(value, i, f" {value:.2f}x", va="center", fontsize=8)
        if limit is not None:
            ax.plot([limit, limit], [i - 0.4, i + 0.4], color="black", linewidth=2)
    ax.axvline(1.0, color="grey", linestyle="--", linewidth=1)
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}x"))
    ax.xaxis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:g}x" if f"{v:.0e}"[0] in "25" else ""))
    ax.tick_params(axis="x", which="minor", labelsize=7)
    ax.set_xlabel("cost relative to the reference in the same run, log scale: sqlite3 on a local file;\n"
                  "for 'W2 vs W8' the W8 floor; for 'W1 CPU' a raw socket's CPU per query\n"
                  "(polled as our drivers poll);\n"
                  "for 'vs go-dqlite' go-dqlite's database/sql driver\ngreen: targets hold, red: a target misses, grey: no target; "
                  "black tick: a ratio target")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
