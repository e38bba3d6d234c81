"""The client's own cost per iteration, with no server in the way.

    .venv/bin/python bench/client_cost.py pooled-read 20000
    valgrind --tool=callgrind .venv/bin/python bench/client_cost.py pooled-read 20000

A connection is made to a one-node cluster this script starts, then its socket
is swapped for a stand-in that answers every request at once (QUERY with one
row, anything else with RESULT), so what is measured is the driver's Python
and codec work alone: the numbers ``docs/architecture.md`` compares.  Run it
under callgrind twice, with N and with 0 iterations, and divide the difference
in instructions by N for a count that does not depend on the machine's load.

Run as a file (not ``-m``): the ``dqlite`` measured is the one the
interpreter has installed, so another checkout's venv measures that checkout.
The stand-in has the methods of ``dqlite._wire.Wire`` that the blocking shell
calls; it is a measuring device, not an API.

Modes:
* ``query``: ``execute`` and ``fetchall`` of a point query in an open transaction;
* ``pooled-read``: the same, then ``rollback()``, as a pool's reset does;
* ``sqlalchemy``: a pooled ``engine.connect()``, a Core point query, ``.all()``.
"""

from __future__ import annotations

import importlib.util
import sys
import time
from pathlib import Path
from typing import Any

import dqlite
from dqlite.server import LocalCluster

_spec = importlib.util.spec_from_file_location("wirebytes", Path(__file__).parent.parent / "tests" / "wirebytes.py")
wb = importlib.util.module_from_spec(_spec)  # type: ignore[arg-type]
_spec.loader.exec_module(wb)  # type: ignore[union-attr]

SQL = "SELECT id, v FROM kv WHERE id = ?"
ROWS = wb.rows_message(["id", "v"], [[(wb.INTEGER, 5), (wb.TEXT, "x")]])
RESULT = wb.result_message(0, 0)


class StandInWire:
    """Answers each request at once: the answers of a request go into the decoder
    when the shell next receives (or polls)."""

    shortened = False

    def __init__(self, decoder: Any, owed: int) -> None:
        self.decoder = decoder
        self.pending = [RESULT] * owed  # the answers the real socket still owed

    def send(self, data: bytes) -> None:
        self.pending += [ROWS if m.type == wb.QUERY else RESULT for m in wb.split_messages(data)]

    def _arrive(self) -> None:
        for answer in self.pending:
            self.decoder.feed(answer)
        self.pending.clear()

    def exchange(self, data: bytes, timeout: float) -> float:
        self.send(data)
        self._arrive()
        return time.monotonic() + timeout

    def poll(self) -> None:
        self._arrive()

    def fill(self, deadline: float) -> None:
        self._arrive()

    def restore_timeout(self) -> None:
        pass

    def set_timeout(self, timeout: float) -> None:
        pass

    def close(self) -> None:
        pass


def stand_in(conn: Any) -> None:
    """Swap ``conn``'s socket for the stand-in, once every answer it owes has arrived."""
    conn.cursor().execute(SQL, (5,)).fetchall()
    conn.rollback()
    time.sleep(0.2)  # the answer to the rollback, left in the real socket
    conn._wire = StandInWire(conn._session.decoder, conn._session.unread)


def main() -> None:
    mode, iterations = sys.argv[1], int(sys.argv[2])
    with LocalCluster(nodes=1) as cluster:
        setup = dqlite.connect(cluster.addresses, "cost", autocommit=True)
        setup.execute("CREATE TABLE kv (id INTEGER PRIMARY KEY, v TEXT)")
        setup.execute("INSERT INTO kv VALUES (5, 'x')")
        if mode == "sqlalchemy":
            from sqlalchemy import Column, Integer, MetaData, String, Table, create_engine, select

            table = Table("kv", MetaData(), Column("id", Integer, primary_key=True), Column("v", String))
            stmt = select(table).where(table.c.id == 5)
            engine = create_engine(f"dqlite://{cluster.addresses[0]}/cost", pool_size=1, max_overflow=0)
            with engine.connect() as c:
                c.execute(stmt).all()  # prepared before the swap
                stand_in(c.connection.dbapi_connection)

            def loop(n: int) -> None:
                for _ in range(n):
                    with engine.connect() as c:
                        c.execute(stmt).all()
        else:
            conn = dqlite.connect(cluster.addresses, "cost", busy_poll=0)
            stand_in(conn)
            end = conn.rollback if mode == "pooled-read" else (lambda: None)

            def loop(n: int) -> None:
                for _ in range(n):
                    cursor = conn.cursor()
                    cursor.execute(SQL, (5,))
                    cursor.fetchall()
                    cursor.close()
                    end()
        loop(300)
        started = time.process_time()
        loop(iterations)
        spent = time.process_time() - started
        print(f"{mode}: {spent / max(iterations, 1) * 1e6:.2f} µs CPU per iteration ({iterations})")


if __name__ == "__main__":
    main()
