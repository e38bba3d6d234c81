"""The benchmark table (shared/docs/bench.md, "Data") and its seeding.

``bench(id INTEGER PRIMARY KEY, name TEXT, v REAL, b BLOB, n INTEGER NULL,
flag BOOLEAN, ts DATETIME)``; row ``i`` (1-based) holds ``name-%08d``, ``i*0.5``,
16 pseudo-random bytes, NULL, ``i % 2`` and a timestamp stored as text
``YYYY-MM-DD HH:MM:SS.ffffff``.  The bytes are a keyed hash of ``i``, so the cluster, the
sqlite3 reference file and the micro-benchmarks hold the same data.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from hashlib import blake2b
from typing import Any

TABLE = "bench"
COLUMNS = "id INTEGER PRIMARY KEY, name TEXT, v REAL, b BLOB, n INTEGER NULL, flag BOOLEAN, ts DATETIME"
INSERT = "INSERT INTO {table} (id, name, v, b, n, flag, ts) VALUES (?, ?, ?, ?, ?, ?, ?)"
_EPOCH = datetime(2024, 1, 1)
CHUNK = 10_000  # rows per seeding transaction


def create_table_sql(table: str = TABLE) -> str:
    return f"CREATE TABLE {table} ({COLUMNS})"


def insert_sql(table: str = TABLE) -> str:
    return INSERT.format(table=table)


def make_rows(first: int, count: int, salt: bytes = b"bench") -> list[tuple[Any, ...]]:
    """Rows ``first`` .. ``first + count - 1`` of the benchmark data.

    Row ``i`` is always the same (its 16 bytes are a keyed hash of ``i``), however
    the rows are batched.
    """
    rows = []
    for i in range(first, first + count):
        ts = _EPOCH + timedelta(seconds=i, microseconds=(i * 7919) % 1_000_000)
        b = blake2b(i.to_bytes(8, "little"), digest_size=16, key=salt).digest()
        rows.append((i, f"name-{i:08d}", i * 0.5, b, None, i % 2, ts.isoformat(" ", "microseconds")))
    return rows


def chunks(rows: int, size: int = CHUNK) -> Iterator[tuple[int, int]]:
    """(first id, count) of each seeding batch."""
    for first in range(1, rows + 1, size):
        yield first, min(size, rows + 1 - first)


def count_rows(conn: Any) -> int | None:
    """Rows in the benchmark table over a DB-API connection, None if there is no table."""
    cur = conn.cursor()
    try:
        cur.execute("SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = ?", (TABLE,))
        if cur.fetchall()[0][0] == 0:
            return None
        cur.execute(f"SELECT count(*) FROM {TABLE}")
        return int(cur.fetchall()[0][0])
    finally:
        cur.close()
        conn.commit()


def seed(conn: Any, rows: int, progress: Callable[[int], None] | None = None) -> bool:
    """Make ``conn``'s benchmark table hold exactly the ``rows`` benchmark rows.

    Keeps a table that already holds that many rows (an existing cluster, run
    again); otherwise drops and refills it.  Returns True if it wrote rows.
    """
    if count_rows(conn) == rows:
        return False
    cur = conn.cursor()
    cur.execute(f"DROP TABLE IF EXISTS {TABLE}")
    cur.execute(create_table_sql())
    conn.commit()
    for first, count in chunks(rows):
        cur.executemany(insert_sql(), make_rows(first, count))
        conn.commit()
        if progress is not None:
            progress(count)
    cur.close()
    return True


def seed_sqlite(path: str, rows: int) -> None:
    """The sqlite3 reference file (default journal mode and synchronous settings)."""
    conn = sqlite3.connect(path)
    try:
        seed(conn, rows)
    finally:
        conn.close()


def seed_dqlite(addresses: list[str], database: str, rows: int, progress: Callable[[int], None] | None = None) -> bool:
    """The cluster's benchmark table, written through this project's driver."""
    import dqlite

    conn = dqlite.connect(addresses, database)
    try:
        return seed(conn, rows, progress)
    finally:
        conn.close()
