"""A loopback TCP proxy that injects faults into the byte stream (a test helper).

It sits between a client and one dqlite node and forwards bytes both ways,
until a test arms a fault for one direction (``C2S`` client to server, ``S2C``
server to client)::

    with FaultProxy(node_bind_address) as proxy:
        ...                                  # clean traffic
        proxy.arm(S2C, Corrupt(offset=12))   # flip byte 12 of what comes next
        ...

Offsets count the bytes of that direction from the moment the fault is armed,
on whichever connection carries them first (or on the one given to ``arm``);
the fault then stays with that connection. One-shot faults (everything but ``Delay``, ``Trickle`` and
``Tap``) disarm themselves once they have acted, so the client's next
connection is clean again and the test can check that it recovers.

Faults: ``Corrupt`` (xor bytes at an offset), ``Truncate`` (forward N bytes,
then close the connection), ``Reset`` (the same with a TCP RST), ``Blackhole``
(forward N bytes, then swallow that direction for good while the connection
stays open), ``Delay`` (hold every chunk), ``Trickle`` (a few bytes at a time)
and ``Tap`` (record what passes).

Only loopback addresses are accepted, every wait is bounded, and ``stop()``
closes every socket and joins every thread.
"""

from __future__ import annotations

import select
import socket
import struct
import threading
import time
from dataclasses import dataclass, field

__all__ = [
    "C2S", "S2C", "FaultProxy", "Fault", "Corrupt", "Truncate", "Reset", "Blackhole", "Delay", "Trickle", "Tap",
]

C2S = "c2s"
S2C = "s2c"

_POLL = 0.02


def _loopback(host: str) -> bool:
    return host == "localhost" or host.startswith("127.") or host == "::1"


class _Conn:
    """One proxied connection: the two sockets and what the faults did to it."""

    def __init__(self, number: int, client: socket.socket, server: socket.socket) -> None:
        self.number = number
        self.client = client
        self.server = server
        self.blackholed = {C2S: False, S2C: False}
        self.ended = {C2S: False, S2C: False}
        self.forwarded = {C2S: 0, S2C: 0}
        self.closed = threading.Event()
        self.lock = threading.Lock()

    def close(self, reset: bool = False) -> None:
        with self.lock:
            if self.closed.is_set():
                return
            self.closed.set()
            for sock in (self.client, self.server):
                try:
                    if reset:
                        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    else:
                        sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                sock.close()


class Fault:
    """Base class: decides what happens to the bytes of one direction.

    ``process`` gets each chunk and returns the bytes to forward now and an
    action for afterwards: None, "close", "reset" or "blackhole".
    """

    persistent = False

    def __init__(self) -> None:
        self.conn: _Conn | None = None
        self.seen = 0          # bytes of its direction seen since armed
        self.fired = threading.Event()

    def process(self, data: bytes) -> tuple[bytes, str | None]:
        raise NotImplementedError

    def _split(self, data: bytes, at: int) -> tuple[bytes, bytes]:
        """``data`` cut where the fault's offset ``at`` falls (relative to arming)."""
        cut = max(0, min(len(data), at - self.seen))
        return data[:cut], data[cut:]


class Corrupt(Fault):
    """XOR ``count`` bytes from ``offset`` with ``xor`` (default: flip every bit)."""

    def __init__(self, offset: int, xor: int = 0xFF, count: int = 1) -> None:
        super().__init__()
        self.offset = offset
        self.xor = xor
        self.count = count

    def process(self, data: bytes) -> tuple[bytes, str | None]:
        buf = bytearray(data)
        end = self.offset + self.count
        for i in range(len(buf)):
            pos = self.seen + i
            if self.offset <= pos < end:
                buf[i] ^= self.xor
        self.seen += len(data)
        if self.seen >= end:
            self.fired.set()
        return bytes(buf), None


class Truncate(Fault):
    """Forward ``offset`` bytes, then close the connection (FIN both ways)."""

    action = "close"

    def __init__(self, offset: int = 0) -> None:
        super().__init__()
        self.offset = offset

    def process(self, data: bytes) -> tuple[bytes, str | None]:
        head, _ = self._split(data, self.offset)
        self.seen += len(data)
        if self.seen >= self.offset:
            self.fired.set()
            return head, self.action
        return head, None


class Reset(Truncate):
    """Forward ``offset`` bytes, then abort the connection (TCP RST)."""

    action = "reset"


class Blackhole(Truncate):
    """Forward ``offset`` bytes, then swallow this direction; the connection stays open."""

    action = "blackhole"


class Delay(Fault):
    """Hold every chunk ``seconds`` before forwarding it (until disarmed)."""

    persistent = True

    def __init__(self, seconds: float) -> None:
        super().__init__()
        self.seconds = seconds

    def process(self, data: bytes) -> tuple[bytes, str | None]:
        time.sleep(self.seconds)
        self.seen += len(data)
        self.fired.set()
        return data, None


class Trickle(Fault):
    """Forward at most ``chunk`` bytes every ``interval`` seconds (until disarmed)."""

    persistent = True

    def __init__(self, chunk: int, interval: float) -> None:
        super().__init__()
        self.chunk = chunk
        self.interval = interval
        self.send = None  # set by the proxy: forwards one piece right away

    def process(self, data: bytes) -> tuple[bytes, str | None]:
        self.fired.set()
        for i in range(0, len(data), self.chunk):
            if i:
                time.sleep(self.interval)
            self.send(data[i:i + self.chunk])
        self.seen += len(data)
        return b"", None


class Tap(Fault):
    """Record the bytes that pass (``data``), changing nothing (until disarmed)."""

    persistent = True

    def __init__(self) -> None:
        super().__init__()
        self.data = bytearray()

    def process(self, data: bytes) -> tuple[bytes, str | None]:
        self.data += data
        self.seen += len(data)
        self.fired.set()
        return data, None


@dataclass
class _Direction:
    faults: list[Fault] = field(default_factory=list)


class FaultProxy:
    """Forwards 127.0.0.1:PORT (``address``) to ``target``, with armable faults."""

    def __init__(self, target: str, *, connect_timeout: float = 2.0) -> None:
        host, _, port = target.rpartition(":")
        if not _loopback(host):
            raise ValueError(f"FaultProxy only forwards to loopback addresses, not {target!r}")
        self.target = (host, int(port))
        self.connect_timeout = connect_timeout
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(16)
        self.port = self._listener.getsockname()[1]
        self.address = f"127.0.0.1:{self.port}"
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._dirs = {C2S: _Direction(), S2C: _Direction()}
        self.connections: list[_Conn] = []
        self._threads: list[threading.Thread] = []
        self.errors: list[BaseException] = []
        self._acceptor = threading.Thread(target=self._accept_loop, name="faultproxy-accept", daemon=True)

    # -- lifecycle -----------------------------------------------------------------

    def start(self) -> FaultProxy:
        self._acceptor.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._acceptor.join(5)
        with self._lock:
            conns = list(self.connections)
        for conn in conns:
            conn.close()
        for t in list(self._threads):
            t.join(5)
        self._listener.close()

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- faults ----------------------------------------------------------------------

    def arm(self, direction: str, fault: Fault, conn: _Conn | None = None) -> Fault:
        """Apply ``fault`` to the next bytes of ``direction`` (C2S or S2C); returns it.

        With ``conn`` (e.g. :attr:`newest`), to that connection's bytes only:
        otherwise a connection the client gave up on (a connect attempt that
        timed out) can carry late bytes first and take the fault.
        """
        fault.conn = conn
        with self._lock:
            self._dirs[direction].faults.append(fault)
        return fault

    @property
    def newest(self) -> _Conn:
        """The connection accepted last: a client's, right after it connected."""
        with self._lock:
            return self.connections[-1]

    def disarm(self, direction: str | None = None) -> None:
        """Remove the faults of ``direction`` (default: both)."""
        with self._lock:
            for d in ([direction] if direction else [C2S, S2C]):
                self._dirs[d].faults.clear()

    def drop_connections(self) -> None:
        """Close every proxied connection (FIN), as a dying node would."""
        with self._lock:
            conns = list(self.connections)
        for conn in conns:
            conn.close()

    @property
    def open_connections(self) -> int:
        with self._lock:
            return sum(not c.closed.is_set() for c in self.connections)

    # -- internals -------------------------------------------------------------------

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            ready, _, _ = select.select([self._listener], [], [], _POLL)
            if not ready:
                continue
            try:
                client, _ = self._listener.accept()
            except OSError:
                continue
            try:
                server = socket.create_connection(self.target, timeout=self.connect_timeout)
            except OSError:
                client.close()  # the node is down: so is the proxy's connection
                continue
            for sock in (client, server):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                sock.settimeout(None)
            with self._lock:
                conn = _Conn(len(self.connections), client, server)
                self.connections.append(conn)
                for direction, src, dst in ((C2S, client, server), (S2C, server, client)):
                    t = threading.Thread(target=self._pump, args=(conn, direction, src, dst),
                                         name=f"faultproxy-{conn.number}-{direction}", daemon=True)
                    self._threads.append(t)
                    t.start()

    def _current_fault(self, conn: _Conn, direction: str) -> Fault | None:
        with self._lock:
            for fault in self._dirs[direction].faults:
                if fault.conn is None:
                    fault.conn = conn
                if fault.conn is conn:
                    return fault
        return None

    def _retire(self, direction: str, fault: Fault) -> None:
        with self._lock:
            faults = self._dirs[direction].faults
            if fault in faults:
                faults.remove(fault)

    def _pump(self, conn: _Conn, direction: str, src: socket.socket, dst: socket.socket) -> None:
        def send(data: bytes) -> None:
            if data and not conn.blackholed[direction]:
                dst.sendall(data)
                conn.forwarded[direction] += len(data)

        try:
            while not self._stop.is_set() and not conn.closed.is_set():
                try:
                    ready, _, _ = select.select([src], [], [], _POLL)
                except (OSError, ValueError):
                    break
                if not ready:
                    continue
                try:
                    data = src.recv(65536)
                except OSError:
                    data = b""
                if not data:
                    # Pass the half-close on; the last pump to end closes both.
                    try:
                        dst.shutdown(socket.SHUT_WR)
                    except OSError:
                        pass
                    with conn.lock:
                        conn.ended[direction] = True
                        both = all(conn.ended.values())
                    if both:
                        conn.close()
                    break
                fault = self._current_fault(conn, direction)
                action = None
                if fault is not None:
                    if isinstance(fault, Trickle):
                        fault.send = send
                    data, action = fault.process(data)
                    if fault.fired.is_set() and not fault.persistent:
                        self._retire(direction, fault)
                send(data)
                if action == "blackhole":
                    conn.blackholed[direction] = True
                elif action in ("close", "reset"):
                    conn.close(reset=action == "reset")
                    break
        except OSError:
            conn.close()
        except BaseException as exc:  # pragma: no cover - a bug in the proxy
            self.errors.append(exc)
            conn.close()
