"""A small, deliberately malformed fake dqlite server (a test helper, not a test file).

It speaks just enough of the wire protocol (shared/docs/protocol.md §1-2) for
``dqlite.connect`` to accept it as the leader, and then answers the request
under test with raw bytes chosen by the test (built with tests/wirebytes.py)::

    with FakeServer([rows_message(["x"], [[(INTEGER, 1)]], marker=b"junk")]) as fake:
        conn = dqlite.connect(fake.address, "db", timeout=2, autocommit=True)
        ...

* The handshake (8 bytes) is read and ignored.
* LEADER (0) gets SERVER naming the fake's own ``"127.0.0.1:PORT"``, OPEN (3)
  gets DB, PREPARE (4) gets STMT (stmt id 0, ``stmt_params`` parameters, 0 by
  default), EXEC (5) and EXEC_SQL (8) get RESULT(0, 0), QUERY (6) and
  QUERY_SQL (9) get a valid one-row result ``[(1,)]``, FINALIZE (7) and
  INTERRUPT (10) get EMPTY, CLIENT (1) gets WELCOME; anything else gets a
  FAILURE.
* The first request whose type is in ``on`` (default: QUERY 6 and QUERY_SQL 9),
  on whatever connection it arrives, is answered with ``script``.  Later ones
  are answered with ``then`` (default: a valid one-row result, ``[(1,)]``), so
  a test can check that the driver recovers on a fresh connection.

A script is a sequence of steps: ``bytes`` are sent as they are; ``CLOSE``
closes the connection; ``SILENCE`` sends nothing more and waits until the
client goes away; ``Pause(s)`` sleeps; ``Repeat(frame)`` sends ``frame`` over
and over until the client disconnects (bounded by ``limit`` frames and
``seconds``, after which the connection is closed).  When a script ends
without CLOSE or SILENCE, the connection goes on serving requests.

Everything is bounded in time: the fake never blocks for long in recv or
send, and ``stop()`` (or leaving the ``with`` block) shuts every socket and
joins every thread.  It never allocates by a length a client announces: a
request above ``MAX_REQUEST`` bytes makes it close the connection.
"""

from __future__ import annotations

import select
import socket
import struct
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import NamedTuple, Union

try:  # the wire bytes, written from protocol.md (tests/wirebytes.py)
    from wirebytes import (
        CLIENT, EXEC, EXEC_SQL, FINALIZE, INTEGER, INTERRUPT, LEADER, OPEN, PREPARE, QUERY, QUERY_SQL,
        db_message, empty_message, failure_message, result_message, rows_message, server_message,
        stmt_message, welcome_message,
    )
except ImportError:  # tests/ imported as a package
    from tests.wirebytes import (  # type: ignore[no-redef]
        CLIENT, EXEC, EXEC_SQL, FINALIZE, INTEGER, INTERRUPT, LEADER, OPEN, PREPARE, QUERY, QUERY_SQL,
        db_message, empty_message, failure_message, result_message, rows_message, server_message,
        stmt_message, welcome_message,
    )

__all__ = ["FakeServer", "Request", "Repeat", "Pause", "CLOSE", "SILENCE", "GOOD_ROWS", "MAX_REQUEST"]

MAX_REQUEST = 1 << 20

#: The default answer to every query after the scripted one: one row, ``(1,)``.
GOOD_ROWS = rows_message(["x"], [[(INTEGER, 1)]])


# ---------------------------------------------------------------------------
# Script steps

class _Step:
    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


#: Close the connection (the client sees EOF).
CLOSE = _Step("CLOSE")
#: Send nothing more; keep the connection open until the client closes it.
SILENCE = _Step("SILENCE")


@dataclass(frozen=True)
class Pause:
    seconds: float


@dataclass(frozen=True)
class Repeat:
    """Send ``frame`` again and again until the client goes away (bounded)."""

    frame: bytes
    limit: int = 20_000
    seconds: float = 10.0


Step = Union[bytes, _Step, Pause, Repeat]


class Request(NamedTuple):
    connection: int   # 0 for the first connection accepted, 1 for the next, ...
    type: int
    schema: int
    body: bytes


class _Gone(Exception):
    """The client went away, or the server is stopping."""


# ---------------------------------------------------------------------------
# The server

class FakeServer:
    """A fake dqlite node on 127.0.0.1 (port chosen by the OS).

    ``address`` is its ``"127.0.0.1:PORT"``; ``requests`` the requests it has
    read (in order, across connections); ``connections`` how many it accepted;
    ``frames_sent`` how many frames ``Repeat`` steps have sent.
    """

    def __init__(self, script: Sequence[Step], *, on: Iterable[int] = (QUERY, QUERY_SQL),
                 then: Sequence[Step] = (GOOD_ROWS,), stmt_params: int = 0) -> None:
        self.script = list(script)
        self.stmt_params = stmt_params
        self.then = list(then)
        self.on = frozenset(on)
        self.requests: list[Request] = []
        self.connections = 0
        self.frames_sent = 0
        self.errors: list[BaseException] = []
        self._scripted = False
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._socks: list[socket.socket] = []
        self._closed: set[int] = set()
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(8)
        self._listener.settimeout(0.01)
        self.port = self._listener.getsockname()[1]
        self.address = f"127.0.0.1:{self.port}"
        self._acceptor = threading.Thread(target=self._accept_loop, name="fake-dqlite-accept", daemon=True)

    # -- lifecycle ----------------------------------------------------------

    def start(self) -> FakeServer:
        self._acceptor.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        with self._lock:
            socks = list(self._socks)
        for s in socks:
            try:
                s.shutdown(socket.SHUT_RDWR)  # wakes a thread blocked in send
            except OSError:
                pass
        if self._acceptor.is_alive():
            self._acceptor.join(5)
        for t in list(self._threads):
            t.join(5)
        for s in socks:
            s.close()
        self._listener.close()

    def __enter__(self) -> FakeServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- what tests look at -------------------------------------------------

    def request_types(self, connection: int | None = None) -> list[int]:
        with self._lock:
            return [r.type for r in self.requests if connection is None or r.connection == connection]

    def wait_closed(self, connection: int, timeout: float = 10.0) -> bool:
        """Wait until the client has closed connection number ``connection``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if connection in self._closed:
                    return True
            time.sleep(0.005)
        return False

    # -- internals ----------------------------------------------------------

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                sock, _ = self._listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            with self._lock:
                index = self.connections
                self.connections += 1
                self._socks.append(sock)
                t = threading.Thread(target=self._serve, args=(sock, index),
                                     name=f"fake-dqlite-conn-{index}", daemon=True)
                self._threads.append(t)
            t.start()

    def _serve(self, sock: socket.socket, index: int) -> None:
        sock.setblocking(True)
        sock.settimeout(5.0)  # bounds a send to a client that stopped reading
        try:
            self._recv_exact(sock, 8)  # handshake: the protocol version, ignored
            while True:
                head = self._recv_exact(sock, 8)
                words, mtype, schema, _ = struct.unpack("<IBBH", head)
                if words * 8 > MAX_REQUEST:
                    return
                body = self._recv_exact(sock, words * 8)
                with self._lock:
                    self.requests.append(Request(index, mtype, schema, body))
                    scripted = mtype in self.on and not self._scripted
                    if scripted:
                        self._scripted = True
                if mtype in self.on:
                    if not self._play(sock, self.script if scripted else self.then):
                        return
                else:
                    sock.sendall(self._answer(mtype))
        except (_Gone, OSError):
            pass
        except BaseException as exc:  # a bug of the fake itself: keep it for the test
            self.errors.append(exc)
        finally:
            with self._lock:
                self._closed.add(index)
            try:
                sock.close()
            except OSError:
                pass

    def _play(self, sock: socket.socket, steps: Sequence[Step]) -> bool:
        """Run script steps; False when the connection must end."""
        for step in steps:
            if self._stop.is_set():
                return False
            if isinstance(step, (bytes, bytearray)):
                sock.sendall(step)
            elif step is CLOSE:
                return False
            elif step is SILENCE:
                self._wait_for_eof(sock)
                return False
            elif isinstance(step, Pause):
                self._stop.wait(step.seconds)
            elif isinstance(step, Repeat):
                deadline = time.monotonic() + step.seconds
                for _ in range(step.limit):
                    if self._stop.is_set() or time.monotonic() > deadline:
                        break
                    sock.sendall(step.frame)  # raises once the client has closed
                    self.frames_sent += 1
                return False
            else:
                raise TypeError(f"unknown script step {step!r}")
        return True

    def _answer(self, mtype: int) -> bytes:
        if mtype == LEADER:
            return server_message(1, self.address)
        if mtype == OPEN:
            return db_message()
        if mtype == PREPARE:
            return stmt_message(0, self.stmt_params)
        if mtype in (EXEC, EXEC_SQL):
            return result_message(0, 0)
        if mtype in (QUERY, QUERY_SQL):
            return GOOD_ROWS
        if mtype in (FINALIZE, INTERRUPT):
            return empty_message()
        if mtype == CLIENT:
            return welcome_message(15000)
        return failure_message(1, f"fake server: request type {mtype} is not supported")

    def _recv_exact(self, sock: socket.socket, n: int) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            if self._stop.is_set():
                raise _Gone
            ready, _, _ = select.select([sock], [], [], 0.02)
            if not ready:
                continue
            chunk = sock.recv(n - len(buf))
            if not chunk:
                raise _Gone
            buf += chunk
        return bytes(buf)

    def _wait_for_eof(self, sock: socket.socket) -> None:
        while not self._stop.is_set():
            ready, _, _ = select.select([sock], [], [], 0.02)
            if ready and not sock.recv(65536):
                return
