"""What the server under test does where dqlite versions differ (a test helper).

The driver must learn these from the server's answers, never from a version
number; the tests need the ground truth to know what to expect. So this module
asks a running cluster directly, with raw bytes written from protocol.md
(socket + struct only, nothing of the driver), the questions that differ
between libdqlite 1.11.1 and 1.18.1 (protocol.md §2.3):

* ``params32``: QUERY_SQL with schema 1 (u32 parameter count) is understood
  (1.12+); 1.11.1 ignores the schema byte and fails "bind parameters".
* ``rowless_query_runs``: a writing statement with no result columns sent
  through QUERY_SQL is run (and replicated) and answered with an empty ROWS of
  0 columns (1.18.1), not refused with ``1 "not an error"`` (1.11.1, §1.6).
* ``tail_rejected``: QUERY_SQL with a second statement fails
  ``"nonempty statement tail"`` (1.15+) instead of running the first only.
* ``prepare_on_follower`` / ``open_on_follower``: PREPARE / OPEN succeed on a
  follower (PREPARE is leader-only from 1.12, OPEN from 1.18.2).
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass

__all__ = ["ServerCaps", "probe"]

_HANDSHAKE = struct.pack("<Q", 1)
_OPEN, _PREPARE, _QUERY_SQL = 3, 4, 9
_FAILURE, _DB, _STMT, _ROWS = 0, 4, 5, 7


def _text(s: str) -> bytes:
    raw = s.encode() + b"\0"
    return raw + b"\0" * (-len(raw) % 8)


def _message(mtype: int, body: bytes, schema: int = 0) -> bytes:
    return struct.pack("<IBBH", len(body) // 8, mtype, schema, 0) + body


class _Raw:
    """One handshaken socket; requests answered one message at a time."""

    def __init__(self, address: str, timeout: float) -> None:
        host, port = address.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=timeout)
        self.sock.sendall(_HANDSHAKE)

    def close(self) -> None:
        self.sock.close()

    def _exact(self, n: int) -> bytes:
        out = b""
        while len(out) < n:
            chunk = self.sock.recv(n - len(out))
            if not chunk:
                raise ConnectionError("the node closed the connection")
            out += chunk
        return out

    def call(self, mtype: int, body: bytes, schema: int = 0) -> tuple[int, bytes]:
        self.sock.sendall(_message(mtype, body, schema))
        words, rtype, _, _ = struct.unpack("<IBBH", self._exact(8))
        if words > 1 << 20:
            raise ConnectionError(f"implausible answer of {words} words")
        return rtype, self._exact(words * 8)

    def open(self, name: str) -> tuple[int, bytes]:
        return self.call(_OPEN, _text(name) + struct.pack("<Q", 0) + _text("volatile"))

    def query_sql(self, sql: str, params32: tuple[int, ...] | None = None) -> tuple[int, bytes]:
        body = struct.pack("<Q", 0) + _text(sql)
        schema = 0
        if params32 is not None:
            schema = 1
            head = struct.pack("<I", len(params32)) + bytes([1] * len(params32))
            head += b"\0" * (-len(head) % 8)
            body += head + b"".join(struct.pack("<q", v) for v in params32)
        return self.call(_QUERY_SQL, body, schema)


def _failure(answer: tuple[int, bytes]) -> tuple[int, str] | None:
    rtype, body = answer
    if rtype != _FAILURE:
        return None
    return struct.unpack("<Q", body[:8])[0], body[8:].split(b"\0", 1)[0].decode(errors="replace")


@dataclass(frozen=True)
class ServerCaps:
    params32: bool
    rowless_query_runs: bool
    tail_rejected: bool
    prepare_on_follower: bool
    open_on_follower: bool


def probe(leader: str, follower: str, database: str = "servercaps_probe", timeout: float = 5.0) -> ServerCaps:
    """Ask a cluster's ``leader`` and one ``follower`` the questions in the module doc."""
    raw = _Raw(leader, timeout)
    try:
        assert raw.open(database)[0] == _DB
        # SELECT ? with one u32-counted INTEGER parameter, 7.
        answer = raw.query_sql("SELECT ?", (7,))
        params32 = answer[0] == _ROWS and struct.pack("<q", 7) in answer[1]
        # A write with no result columns (1.18.1 runs statements that are not
        # read-only through its EXEC path; read-only ones still fail "not an error").
        rtype, body = raw.query_sql("CREATE TABLE IF NOT EXISTS servercaps_probe (a)")
        rowless_query_runs = rtype == _ROWS and body[:8] == struct.pack("<Q", 0)
        failure = _failure(raw.query_sql("SELECT 1; SELECT 2"))
        tail_rejected = failure is not None and "tail" in failure[1]
    finally:
        raw.close()
    raw = _Raw(follower, timeout)
    try:
        open_on_follower = raw.open(database)[0] == _DB
        prepare_on_follower = False
        if open_on_follower:
            rtype, _ = raw.call(_PREPARE, struct.pack("<Q", 0) + _text("SELECT 1"))
            prepare_on_follower = rtype == _STMT
    finally:
        raw.close()
    return ServerCaps(params32, rowless_query_runs, tail_rejected, prepare_on_follower, open_on_follower)
