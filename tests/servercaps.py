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

try:  # the wire bytes, written from protocol.md (tests/wirebytes.py)
    from wirebytes import (
        DB, FAILURE, INTEGER, ROWS, STMT, BodyReader, handshake, i64, open_request, prepare_request,
        query_sql_request,
    )
except ImportError:  # tests/ imported as a package
    from tests.wirebytes import (  # type: ignore[no-redef]
        DB, FAILURE, INTEGER, ROWS, STMT, BodyReader, handshake, i64, open_request, prepare_request,
        query_sql_request,
    )

__all__ = ["RawConnection", "ServerCaps", "failure", "probe"]


class RawConnection:
    """One handshaken socket to a node; requests answered one message at a time."""

    def __init__(self, address: str, timeout: float) -> None:
        host, port = address.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=timeout)
        self.sock.sendall(handshake())

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

    def call(self, request: bytes) -> tuple[int, bytes]:
        """Send one request (wirebytes' ``*_request``); the answer's type and body."""
        self.sock.sendall(request)
        words, rtype, _, _ = struct.unpack("<IBBH", self._exact(8))
        if words > 1 << 20:
            raise ConnectionError(f"implausible answer of {words} words")
        return rtype, self._exact(words * 8)

    def open(self, name: str) -> tuple[int, bytes]:
        return self.call(open_request(name, vfs="volatile"))

    def query_sql(self, sql: str, params32: tuple[int, ...] | None = None) -> tuple[int, bytes]:
        """QUERY_SQL of ``sql``; with ``params32``, INTEGER parameters counted by a u32 (schema 1)."""
        if params32 is None:
            return self.call(query_sql_request(sql))
        return self.call(query_sql_request(sql, [(INTEGER, v) for v in params32], schema=1))


def failure(answer: tuple[int, bytes]) -> tuple[int, str] | None:
    """(code, message) of a FAILURE answer, None for any other."""
    rtype, body = answer
    if rtype != FAILURE:
        return None
    reader = BodyReader(body)
    code = reader.u64()
    return code, body[8:].split(b"\0", 1)[0].decode(errors="replace")


@dataclass(frozen=True)
class ServerCaps:
    params32: bool
    rowless_query_runs: bool
    tail_rejected: bool
    prepare_on_follower: bool
    open_on_follower: bool


def probe(leader: str, follower: str, database: str = "servercaps_probe", timeout: float = 5.0) -> ServerCaps:
    """Ask a cluster's ``leader`` and one ``follower`` the questions in the module doc."""
    raw = RawConnection(leader, timeout)
    try:
        assert raw.open(database)[0] == DB
        # SELECT ? with one u32-counted INTEGER parameter, 7.
        answer = raw.query_sql("SELECT ?", (7,))
        params32 = answer[0] == ROWS and i64(7) in answer[1]
        # A write with no result columns (1.18.1 runs statements that are not
        # read-only through its EXEC path; read-only ones still fail "not an error").
        rtype, body = raw.query_sql("CREATE TABLE IF NOT EXISTS servercaps_probe (a)")
        rowless_query_runs = rtype == ROWS and body[:8] == bytes(8)
        refused = failure(raw.query_sql("SELECT 1; SELECT 2"))
        tail_rejected = refused is not None and "tail" in refused[1]
    finally:
        raw.close()
    raw = RawConnection(follower, timeout)
    try:
        open_on_follower = raw.open(database)[0] == DB
        prepare_on_follower = False
        if open_on_follower:
            rtype, _ = raw.call(prepare_request("SELECT 1"))
            prepare_on_follower = rtype == STMT
    finally:
        raw.close()
    return ServerCaps(params32, rowless_query_runs, tail_rejected, prepare_on_follower, open_on_follower)
