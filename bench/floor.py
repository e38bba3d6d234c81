"""W8, the wire floor: the W2 query on a raw socket, framing only.

Plain sockets and ``struct`` (shared/docs/protocol.md §1-§2), nothing from the
driver: this is what the server and the network cost, the floor W2 is held
against.  The reader receives every byte of the response and walks the message
headers to find the end of each message and its DONE/PART marker; it never
decodes a row.

Also used by the CLI to find the leader (``find_leader``) and, as
``python -m bench.floor --capture FILE ADDRESS...``, to save the raw ROWS stream
of a query for the codec micro-benchmarks.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import struct
import sys
import time

PROTOCOL_VERSION = 1
REQ_LEADER, REQ_OPEN, REQ_PREPARE, REQ_QUERY, REQ_QUERY_SQL = 0, 3, 4, 6, 9
RESP_FAILURE, RESP_SERVER, RESP_DB, RESP_STMT, RESP_ROWS = 0, 1, 4, 5, 7
DONE = b"\xff" * 8
PART = b"\xee" * 8

_HEADER = struct.Struct("<IBBH")  # words, type, schema, extra
_U64 = struct.Struct("<Q")
_STMT = struct.Struct("<IIQ")  # db_id, stmt_id, param_count
# QUERY of statement (db 0, stmt N) with one INTEGER parameter: the ids, a
# one-word tuple header (count 1, type 1) and the value (protocol.md §1.5).
_QUERY_ONE_INT = struct.Struct("<IBBHIIBB6xq")


def _text(value: str) -> bytes:
    """A protocol text: UTF-8, NUL, zero padding to a multiple of 8."""
    raw = value.encode() + b"\0"
    return raw + b"\0" * (-len(raw) % 8)


def _message(mtype: int, body: bytes) -> bytes:
    return _HEADER.pack(len(body) // 8, mtype, 0, 0) + body


def _split_address(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


class WireError(RuntimeError):
    """The server answered with a FAILURE or something unexpected."""


#: Linux's TCP_QUICKACK (12), where the socket module does not name it.
QUICKACK = getattr(socket, "TCP_QUICKACK", 12 if sys.platform.startswith("linux") else None)


class RawConnection:
    """A handshaken socket to one node, reading whole messages into one buffer.

    The socket is blocking (no Python-level timeout, which would poll() before
    every receive) and asks for an immediate ACK before every receive after
    the first of a request: a node writes its ~4 KiB batches with Nagle on, so
    a delayed ACK (up to 40 ms) would hold back its next write.  (The send
    already carried the ACK of all before it, as in the driver.)  Reading as
    fast as the server can send is the point of the floor.
    """

    def __init__(self, address: str, timeout: float = 10.0) -> None:
        self.sock = socket.create_connection(_split_address(address), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.settimeout(None)
        self.buf = bytearray(1 << 20)
        self.start = 0  # first unread byte
        self.end = 0  # one past the last received byte
        self.received_since_send = False
        self.sock.sendall(_U64.pack(PROTOCOL_VERSION))

    def close(self) -> None:
        self.sock.close()

    def send(self, data: bytes) -> None:
        self.received_since_send = False
        self.sock.sendall(data)

    def _receive(self, need: int) -> None:
        """Receive until ``need`` bytes from ``start`` are buffered."""
        buf = self.buf
        if self.start + need > len(buf):
            # Move the unread bytes to the front, growing only for a huge message.
            live = self.end - self.start
            if need > len(buf):
                new = bytearray(max(need, 2 * len(buf)))
                new[:live] = buf[self.start : self.end]
                self.buf = buf = new
            else:
                buf[:live] = buf[self.start : self.end]
            self.start, self.end = 0, live
        view = memoryview(buf)
        while self.end - self.start < need:
            if QUICKACK is not None and self.received_since_send:
                self.sock.setsockopt(socket.IPPROTO_TCP, QUICKACK, 1)
            n = self.sock.recv_into(view[self.end :])
            if n == 0:
                raise WireError("the server closed the connection")
            self.received_since_send = True
            self.end += n

    def read_message(self) -> tuple[int, int, int]:
        """The next message: (type, body offset in ``buf``, body length); then released."""
        self._receive(8)
        words, mtype, _, _ = _HEADER.unpack_from(self.buf, self.start)
        size = 8 + words * 8
        self._receive(size)
        body = self.start + 8
        self.start += size
        if self.start == self.end:
            self.start = self.end = 0
        if mtype == RESP_FAILURE:
            code = _U64.unpack_from(self.buf, body)[0]
            message = bytes(self.buf[body + 8 : body + size - 8]).split(b"\0", 1)[0].decode(errors="replace")
            raise WireError(f"server failure {code}: {message}")
        return mtype, body, size - 8

    def leader(self) -> str:
        """The leader's address as this node sees it ('' if it knows none)."""
        self.send(_message(REQ_LEADER, _U64.pack(0)))
        mtype, body, length = self.read_message()
        if mtype != RESP_SERVER:
            raise WireError(f"LEADER answered with message type {mtype}")
        return bytes(self.buf[body + 8 : body + length]).split(b"\0", 1)[0].decode()

    def open(self, database: str) -> None:
        self.send(_message(REQ_OPEN, _text(database) + _U64.pack(0) + _text("")))
        mtype, _, _ = self.read_message()
        if mtype != RESP_DB:
            raise WireError(f"OPEN answered with message type {mtype}")

    def query_raw(self, sql: str) -> tuple[int, int]:
        """Run ``sql`` (QUERY_SQL, no parameters); read the whole result, framing only.

        Returns (response bytes, messages).
        """
        self.send(_message(REQ_QUERY_SQL, _U64.pack(0) + _text(sql)))
        total = messages = 0
        while True:
            mtype, body, length = self.read_message()
            if mtype != RESP_ROWS:
                raise WireError(f"QUERY_SQL answered with message type {mtype}")
            total += 8 + length
            messages += 1
            marker = self.buf[body + length - 8 : body + length]
            if marker == DONE:
                return total, messages
            if marker != PART:
                raise WireError("ROWS message ends with neither DONE nor PART")

    def prepare(self, sql: str) -> int:
        """PREPARE ``sql`` on database 0; the statement id."""
        self.send(_message(REQ_PREPARE, _U64.pack(0) + _text(sql)))
        mtype, body, _ = self.read_message()
        if mtype != RESP_STMT:
            raise WireError(f"PREPARE answered with message type {mtype}")
        return _STMT.unpack_from(self.buf, body)[1]

    def point_query(self, stmt_id: int, value: int, poll: float = 0.0) -> None:
        """QUERY a prepared statement with one integer; read the answer, framing only.

        What W1 costs below any driver: one request, one ROWS message, one
        receive.  ``poll``: seconds to poll for the answer before sleeping
        on it (``poll_answer``).
        """
        self.send(_QUERY_ONE_INT.pack(3, REQ_QUERY, 0, 0, 0, stmt_id, 1, 1, value))
        if poll:
            self.poll_answer(poll)
        mtype, _, _ = self.read_message()
        if mtype != RESP_ROWS:
            raise WireError(f"QUERY answered with message type {mtype}")

    def poll_answer(self, window: float) -> None:
        """Take in what arrives within ``window`` seconds without sleeping:
        non-blocking receives in a loop (the GIL held: a floor runs alone)."""
        if self.start == self.end:
            self.start = self.end = 0
        view = memoryview(self.buf)[self.end :]
        deadline = time.perf_counter() + window
        while True:
            try:
                n = self.sock.recv_into(view, 0, socket.MSG_DONTWAIT)
            except BlockingIOError:
                if time.perf_counter() >= deadline:
                    return
                continue
            if n == 0:
                raise WireError("the server closed the connection")
            self.received_since_send = True
            self.end += n
            return

    def capture(self, sql: str) -> bytes:
        """The raw bytes of ``sql``'s whole ROWS response (for the micro-benchmarks)."""
        out = bytearray()
        self.send(_message(REQ_QUERY_SQL, _U64.pack(0) + _text(sql)))
        while True:
            mtype, body, length = self.read_message()
            out += _HEADER.pack(length // 8, mtype, 0, 0) + self.buf[body : body + length]
            if mtype != RESP_ROWS:
                raise WireError(f"QUERY_SQL answered with message type {mtype}")
            if self.buf[body + length - 8 : body + length] == DONE:
                return bytes(out)


class AsyncPointQueries(asyncio.BufferedProtocol):
    """W1's point queries on a raw socket driven by an asyncio event loop.

    The asyncio floor of W1: the request bytes written through the loop's
    transport and the answer awaited as a future, framing only.  What any
    asyncio client pays on top of ``RawConnection.point_query``: the event
    loop's wake-ups and its callbacks.
    """

    def __init__(self, stmt_id: int, poll: float = 0.0) -> None:
        self.stmt_id = stmt_id
        self.poll = poll  # seconds the loop polls for an answer (see point_query)
        self.polling_until = 0.0
        self.buf = bytearray(1 << 16)
        self.end = 0
        self.waiter: asyncio.Future[None] | None = None
        self.transport: asyncio.Transport | None = None

    @classmethod
    async def open(cls, raw: RawConnection, stmt_id: int, poll: float = 0.0) -> AsyncPointQueries:
        """Take over ``raw``'s socket (handshaken, database open, statement prepared)."""
        raw.sock.setblocking(False)
        loop = asyncio.get_running_loop()
        _, protocol = await loop.create_connection(lambda: cls(stmt_id, poll), sock=raw.sock)
        return protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def get_buffer(self, sizehint: int) -> memoryview:
        return memoryview(self.buf)[self.end:]

    def buffer_updated(self, nbytes: int) -> None:
        self.end += nbytes
        if self.end < 8:
            return
        words, mtype, _, _ = _HEADER.unpack_from(self.buf, 0)
        if self.end < 8 + words * 8:
            return
        if self.end > 8 + words * 8 or 8 + words * 8 > len(self.buf):
            raise WireError("unexpected bytes after a point query's answer")
        self.end = 0
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            if mtype == RESP_ROWS:
                waiter.set_result(None)
            else:
                waiter.set_exception(WireError(f"QUERY answered with message type {mtype}"))

    def connection_lost(self, exc: Exception | None) -> None:
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(WireError(f"the connection was lost: {exc}"))

    async def point_query(self, value: int) -> None:
        """What ``RawConnection.point_query`` does, awaited.

        With ``poll``, a callback that schedules itself again keeps the loop
        selecting without a timeout (polling) for up to that many seconds.
        """
        loop = asyncio.get_running_loop()
        self.waiter = waiter = loop.create_future()
        self.transport.write(_QUERY_ONE_INT.pack(3, REQ_QUERY, 0, 0, 0, self.stmt_id, 1, 1, value))  # type: ignore[union-attr]
        if self.poll:
            self.polling_until = loop.time() + self.poll
            loop.call_soon(self._keep_polling, loop)
        await waiter

    def _keep_polling(self, loop: asyncio.AbstractEventLoop) -> None:
        if self.waiter is not None and loop.time() < self.polling_until:
            loop.call_soon(self._keep_polling, loop)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


def find_leader(addresses: list[str], timeout: float = 5.0) -> str:
    """The leader's address, asked of each node in turn until one names it."""
    errors = []
    for address in addresses:
        try:
            conn = RawConnection(address, timeout)
            try:
                leader = conn.leader()
            finally:
                conn.close()
        except (OSError, WireError) as exc:
            errors.append(f"{address}: {exc}")
            continue
        if leader:
            return leader
    raise WireError(f"no node named a leader ({'; '.join(errors) or 'none knew one'})")


def connect_leader(addresses: list[str], database: str) -> RawConnection:
    """A raw connection to the leader with ``database`` open."""
    conn = RawConnection(find_leader(addresses))
    conn.open(database)
    return conn


def main(argv: list[str] | None = None) -> int:
    """``python -m bench.floor --capture FILE --database DB ADDRESS...``."""
    parser = argparse.ArgumentParser(prog="python -m bench.floor", description=__doc__.split("\n\n")[0])
    parser.add_argument("addresses", nargs="+", help="cluster nodes, host:port")
    parser.add_argument("--database", default="bench")
    parser.add_argument("--sql", default="SELECT id, name, v, b, n FROM bench", help="the query (default: W2's)")
    parser.add_argument("--capture", metavar="FILE", help="save the raw ROWS stream to FILE")
    args = parser.parse_args(argv)
    conn = connect_leader(args.addresses, args.database)
    try:
        if args.capture:
            data = conn.capture(args.sql)
            with open(args.capture, "wb") as f:
                f.write(data)
            print(f"saved {len(data):,} bytes to {args.capture}")
        else:
            nbytes, messages = conn.query_raw(args.sql)
            print(f"{nbytes:,} bytes in {messages:,} ROWS messages")
    finally:
        conn.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
