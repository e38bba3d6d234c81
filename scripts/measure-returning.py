#!/usr/bin/env python3
"""Measures what a dqlite server does with ``INSERT ... RETURNING``, with raw requests.

Usage: DQLITE_SERVER_ROOT=.deps/dqlite-1.18.7 .venv/bin/python scripts/measure-returning.py
(no DQLITE_SERVER_ROOT: the system libdqlite).

For each request type (EXEC_SQL, QUERY_SQL), on a fresh 3-node cluster: OPEN,
CREATE TABLE, the RETURNING statement, then an ordinary INSERT (the next write)
and a SELECT; prints each answer and which node processes are still alive, with
the last line of a dead node's log. The requests are bytes written from
protocol.md (tests/servercaps.py), nothing of the driver: a driver that refuses
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

from servercaps import _DB, _FAILURE, _PREPARE, _ROWS, _STMT, _Raw, _text  # noqa: E402

from dqlite.server import LocalCluster  # noqa: E402

_EXEC_SQL, _QUERY_SQL = 8, 9
_RESULT = 6
_QUERY = 6
NAMES = {0: "FAILURE", 4: "DB", 6: "RESULT", 7: "ROWS", 8: "EMPTY"}


def describe(answer: tuple[int, bytes]) -> str:
    rtype, body = answer
    if rtype == _FAILURE:
        code = struct.unpack("<Q", body[:8])[0]
        message = body[8:].split(b"\0", 1)[0].decode(errors="replace")
        return f"FAILURE {code} {message!r}"
    if rtype == _RESULT:
        last_id, changes = struct.unpack("<QQ", body[:16])
        return f"RESULT last_insert_id={last_id} rows_affected={changes}"
    if rtype == _ROWS:
        return f"ROWS {rows(body)}"
    return f"{NAMES.get(rtype, rtype)} ({len(body)} bytes)"


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


def request(raw: _Raw, mtype: int, sql: str) -> str:
    try:
        return describe(raw.call(mtype, struct.pack("<Q", 0) + _text(sql)))
    except OSError as exc:  # ConnectionError included: the node closed or died
        return f"connection lost ({exc})"


def returning(raw: _Raw, via: int, sql: str) -> str:
    if via != _QUERY:
        return request(raw, via, sql)
    try:  # PREPARE, then QUERY of the statement (u32 db id, u32 stmt id, no parameters)
        rtype, body = raw.call(_PREPARE, struct.pack("<Q", 0) + _text(sql))
        if rtype != _STMT:
            return "PREPARE: " + describe((rtype, body))
        stmt_id = struct.unpack("<I", body[4:8])[0]
        return describe(raw.call(_QUERY, struct.pack("<II", 0, stmt_id)))
    except OSError as exc:
        return f"connection lost ({exc})"


def measure(via: int) -> None:
    name = {_EXEC_SQL: "EXEC_SQL", _QUERY_SQL: "QUERY_SQL", _QUERY: "PREPARE + QUERY"}[via]
    with LocalCluster(nodes=3) as cluster:
        leader = cluster.wait_for_leader()
        raw = _Raw(leader, timeout=10.0)
        assert raw.open("returning")[0] == _DB
        print(f"-- {name} of INSERT ... RETURNING (leader {leader})")
        print("   CREATE TABLE:        ", request(raw, _EXEC_SQL, "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)"))
        print("   INSERT ... RETURNING:", returning(raw, via, "INSERT INTO t (v) VALUES ('a') RETURNING id"))
        print("   next write (INSERT): ", request(raw, _EXEC_SQL, "INSERT INTO t (v) VALUES ('b')"))
        print("   SELECT count(*):     ", request(raw, _QUERY_SQL, "SELECT count(*) FROM t"))
        raw.close()
        time.sleep(0.5)  # let a dying node finish dying
        if all(node.is_alive() for node in cluster.nodes):
            new = cluster.transfer_leadership()
            raw = _Raw(new, timeout=10.0)
            assert raw.open("returning")[0] == _DB
            print(f"   after a leadership transfer to {new}, SELECT id FROM t:",
                  request(raw, _QUERY_SQL, "SELECT id FROM t ORDER BY id"))
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
    measure(_EXEC_SQL)
    measure(_QUERY_SQL)
    measure(_QUERY)


if __name__ == "__main__":
    main()
