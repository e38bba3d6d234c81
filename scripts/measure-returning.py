#!/usr/bin/env python3
"""Measures what a dqlite server does with ``INSERT ... RETURNING``, with raw requests.

Usage: DQLITE_SERVER_ROOT=.deps/dqlite-1.18.7 .venv/bin/python scripts/measure-returning.py
(no DQLITE_SERVER_ROOT: the system libdqlite).

For each request type (EXEC_SQL, QUERY_SQL), on a fresh 3-node cluster: OPEN,
CREATE TABLE, the RETURNING statement, then an ordinary INSERT (the next write)
and a SELECT; prints each answer and which node processes are still alive, with
the last line of a dead node's log. The requests are bytes written from
protocol.md (tests/wirebytes.py, sent by tests/servercaps.py), nothing of the driver: a driver that refuses
RETURNING cannot measure it.
"""

from __future__ import annotations

import os
import struct
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from servercaps import RawConnection, failure  # noqa: E402
from wirebytes import (  # noqa: E402
    DB, EXEC_SQL, QUERY, QUERY_SQL, RESPONSE_NAMES, RESULT, ROWS, STMT, BodyReader, exec_sql_request,
    prepare_request, query_request, query_sql_request,
)

from dqlite.server import LocalCluster  # noqa: E402


def describe(answer: tuple[int, bytes]) -> str:
    rtype, body = answer
    refused = failure(answer)
    if refused is not None:
        return f"FAILURE {refused[0]} {refused[1]!r}"
    if rtype == RESULT:
        last_id, changes = struct.unpack("<QQ", body[:16])
        return f"RESULT last_insert_id={last_id} rows_affected={changes}"
    if rtype == ROWS:
        return f"ROWS {rows(body)}"
    return f"{RESPONSE_NAMES.get(rtype, rtype)} ({len(body)} bytes)"


def rows(body: bytes) -> list:
    """The rows of a ROWS answer of one INTEGER column (enough for these statements)."""
    n = struct.unpack("<Q", body[:8])[0]
    if n != 1:
        return [f"{n} columns"]
    pos = 8 + len(body[8:].split(b"\0", 1)[0]) + 1
    pos += -pos % 8
    out = []
    while pos + 8 <= len(body):
        word = body[pos:pos + 8]
        if word in (b"\xff" * 8, b"\xee" * 8):
            out.append("DONE" if word[0] == 0xFF else "PART")
            break
        out.append(struct.unpack("<q", body[pos + 8:pos + 16])[0])
        pos += 16
    return out


def request(raw: RawConnection, mtype: int, sql: str) -> str:
    try:
        build = exec_sql_request if mtype == EXEC_SQL else query_sql_request
        return describe(raw.call(build(sql)))
    except OSError as exc:  # ConnectionError included: the node closed or died
        return f"connection lost ({exc})"


def returning(raw: RawConnection, via: int, sql: str) -> str:
    if via != QUERY:
        return request(raw, via, sql)
    try:  # PREPARE, then QUERY of the statement (u32 db id, u32 stmt id, no parameters)
        rtype, body = raw.call(prepare_request(sql))
        if rtype != STMT:
            return "PREPARE: " + describe((rtype, body))
        reader = BodyReader(body)
        reader.u32()  # db id
        return describe(raw.call(query_request(reader.u32())))
    except OSError as exc:
        return f"connection lost ({exc})"


def measure(via: int) -> None:
    name = {EXEC_SQL: "EXEC_SQL", QUERY_SQL: "QUERY_SQL", QUERY: "PREPARE + QUERY"}[via]
    with LocalCluster(nodes=3) as cluster:
        leader = cluster.wait_for_leader()
        raw = RawConnection(leader, timeout=10.0)
        assert raw.open("returning")[0] == DB
        print(f"-- {name} of INSERT ... RETURNING (leader {leader})")
        print("   CREATE TABLE:        ", request(raw, EXEC_SQL, "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)"))
        print("   INSERT ... RETURNING:", returning(raw, via, "INSERT INTO t (v) VALUES ('a') RETURNING id"))
        print("   next write (INSERT): ", request(raw, EXEC_SQL, "INSERT INTO t (v) VALUES ('b')"))
        print("   SELECT count(*):     ", request(raw, QUERY_SQL, "SELECT count(*) FROM t"))
        raw.close()
        time.sleep(0.5)  # let a dying node finish dying
        if all(node.is_alive() for node in cluster.nodes):
            new = cluster.transfer_leadership()
            raw = RawConnection(new, timeout=10.0)
            assert raw.open("returning")[0] == DB
            print(f"   after a leadership transfer to {new}, SELECT id FROM t:",
                  request(raw, QUERY_SQL, "SELECT id FROM t ORDER BY id"))
            raw.close()
        for node in cluster.nodes:
            state = "alive" if node.is_alive() else f"DEAD (exit {node.process.returncode if node.process else '?'})"
            print(f"   node {node.id} {node.address}{' (leader)' if node.address == leader else ''}: {state}")
            if not node.is_alive():
                log = node.log_path.read_text(errors="replace").strip().splitlines()
                print("     log:", log[-1] if log else "(empty)")


def main() -> None:
    root = os.environ.get("DQLITE_SERVER_ROOT")
    if root:
        versions = (Path(root) / "VERSIONS").read_text().split("\n")
        print("server:", next((v for v in versions if v.startswith("libdqlite0 ")), root), "from", root)
    else:
        print("server: the system libdqlite")
    measure(EXEC_SQL)
    measure(QUERY_SQL)
    measure(QUERY)


if __name__ == "__main__":
    main()
