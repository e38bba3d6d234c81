"""Blocking socket transport for the sync API: one TCP connection to one node.

It owns the socket and nothing else; every byte it sends comes from the
compiled ``Encoder`` and every byte it receives goes to the ``Decoder``.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import struct
import time
from collections.abc import Callable
from typing import TypeVar

from dqlite._protocol import Decoder, encode_handshake
from dqlite._sockio import BusyPoll, recv_into_decoder, recv_nowait, send_and_recv_into_decoder, send_nowait
from dqlite.exceptions import ConnectionLostError, InterfaceError

T = TypeVar("T")

DEFAULT_PORT = 9001
QUICKACK: int = getattr(socket, "TCP_QUICKACK", 0)  # Linux only
_HANDSHAKE = encode_handshake()
_monotonic = time.monotonic
#: How long a wait for an answer polls before it sleeps (see dqlite.connect).
DEFAULT_BUSY_POLL = 50e-6


def parse_address(address: str) -> tuple[str, int]:
    """``"host:port"`` (or ``"[v6]:port"``, or a bare host meaning port 9001) -> (host, port)."""
    if not isinstance(address, str) or not address:
        raise InterfaceError(f"invalid node address {address!r}: expected 'host:port'")
    if "@" in address:
        # Never echo it: what precedes the '@' is likely a password.
        raise InterfaceError("a node address cannot carry credentials (user:password@): dqlite has none; "
                             "give 'host:port'")
    host, sep, port = address.rpartition(":")
    if not sep or (host.startswith("[") != host.endswith("]")) or (":" in host and not host.startswith("[")):
        host, port = address, str(DEFAULT_PORT)
    host = host.strip("[]")
    try:
        number = int(port)
    except ValueError:
        raise InterfaceError(f"invalid node address {address!r}: port {port!r} is not a number") from None
    if not host or not 0 < number < 65536:
        raise InterfaceError(f"invalid node address {address!r}: expected 'host:port'")
    return host, number


class Wire:
    """A connected, handshaken socket to one dqlite node, with its decoder."""

    __slots__ = ("address", "sock", "fd", "recv_fd", "decoder", "timeout", "received_since_send", "shortened",
                 "busy_poll")

    def __init__(
        self,
        address: str,
        timeout: float | None,
        decoder: Decoder | None = None,
        ssl_context: ssl.SSLContext | None = None,
        busy_poll: float = 0.0,
    ) -> None:
        self.address = address
        self.timeout = timeout
        self.received_since_send = False
        self.shortened = False  # the kernel bound is below ``timeout`` (see fill)
        self.decoder = decoder if decoder is not None else Decoder()
        # How the waits for answers poll first (recv_fd only: not under TLS).
        self.busy_poll = BusyPoll(busy_poll)
        host, port = parse_address(address)
        try:
            sock = socket.create_connection((host, port), timeout=timeout)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if ssl_context is not None:
                sock = ssl_context.wrap_socket(sock, server_hostname=host)
        except OSError as exc:  # ssl.SSLError is an OSError
            raise ConnectionLostError(f"cannot connect to dqlite node {address}: {exc}") from exc
        self.sock: socket.socket | None = sock
        # The descriptor for the calls that keep the GIL; -1 under TLS, whose
        # bytes only the ssl module may read and write.
        self.fd = -1 if isinstance(sock, ssl.SSLSocket) else sock.fileno()
        # The descriptor for the receives that wait (see _bound_waits): -1
        # unless the socket is blocking, its waits bounded by the kernel.
        self.recv_fd = -1
        self.set_timeout(timeout)

    def set_timeout(self, timeout: float | None) -> None:
        """Bound every later send and receive by ``timeout`` seconds.

        The kernel enforces it (SO_RCVTIMEO/SO_SNDTIMEO) on a blocking
        socket: a Python-level socket timeout would cost a poll() before
        every send and every receive.
        """
        self.timeout = timeout
        self.shortened = False
        self._bound_waits(timeout)

    def _bound_waits(self, timeout: float | None) -> None:
        sock = self.sock
        assert sock is not None
        if timeout is None or isinstance(sock, ssl.SSLSocket):
            # TLS reads must not see a bare EAGAIN: Python's own timeout there.
            sock.settimeout(timeout)
            self.recv_fd = self.fd if timeout is None else -1
            return
        seconds = int(timeout)
        timeval = struct.pack("@ll", seconds, int((timeout - seconds) * 1e6))
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, timeval)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, timeval)
        except OSError:
            sock.settimeout(timeout)  # a platform without them: poll-based
            self.recv_fd = -1
        else:
            sock.settimeout(None)
            # Blocking, the kernel bounding each wait: a plain recv() (with
            # the GIL released) waits exactly like sock.recv_into would.
            self.recv_fd = self.fd

    def handshake_and_send(self, data: bytes) -> None:
        """Send the protocol version and the first requests in one write."""
        self.send(_HANDSHAKE + data)

    def send(self, data: bytes) -> None:
        sock = self.sock
        if sock is None:
            raise ConnectionLostError(f"connection to {self.address} is closed")
        self.received_since_send = False
        try:
            sent = send_nowait(self.fd, data) if self.fd >= 0 else 0
            if sent < len(data):
                # The socket buffer is full (or TLS): wait, releasing the GIL.
                sock.sendall(memoryview(data)[sent:])
        except OSError as exc:
            self.close()
            raise ConnectionLostError(f"lost connection to {self.address} while sending: {_describe(exc)}") from exc

    def exchange(self, data: bytes, timeout: float) -> float:
        """Send a request, then receive until the decoder holds a whole message.

        How the blocking shell sends a request whose answer the session
        awaits next: one system call sends and receives.  Returns the answer's deadline,
        ``timeout`` seconds after the send, for the ``fill`` calls of the
        rest of the answer.
        """
        deadline = _monotonic() + timeout
        decoder = self.decoder
        if decoder.next_message() >= 0:
            # An answer owed from before is here whole: it is read first.
            self.send(data)
            return deadline
        if self.shortened:
            self.send(data)
        else:
            # The first wait after the send: the whole timeout is left
            # (nothing to shorten) and the send carries our ACKs (no
            # QUICKACK), so ``fill``'s checks have nothing to do.
            self._receive(data)
        while decoder.next_message() < 0:
            self.fill(deadline)
        return deadline

    def read(self, reader: Callable[[], T]) -> T:
        """Receive until a whole message is buffered, then decode it with ``reader``."""
        decoder = self.decoder
        while decoder.next_message() < 0:
            self.fill()
        return reader()

    def poll(self) -> None:
        """Take in what has already arrived, without waiting (and keeping the GIL).

        Errors and end of stream are left for the next blocking call to report.
        """
        if self.fd < 0:
            return
        try:
            n = recv_nowait(self.fd, self.decoder.get_buffer())
        except OSError:
            return
        if n > 0:
            self.decoder.buffer_updated(n)

    def fill(self, deadline: float = 0.0) -> None:
        """Receive what arrives next (waiting for it) into the decoder.

        ``deadline`` (``time.monotonic()``; 0 for none) bounds the whole
        operation: each wait is bounded by ``timeout``, and once less than
        that is left, by what is left, so that a peer trickling bytes cannot
        stretch an operation.  The kernel keeps the bound (no poll() per
        receive); ``restore_timeout()`` undoes the shortening afterwards.
        """
        sock = self.sock
        if sock is None:
            raise ConnectionLostError(f"connection to {self.address} is closed")
        if deadline and self.timeout is not None:
            left = deadline - _monotonic()
            if self.shortened or left < 0.9 * self.timeout:
                if left <= 0:
                    self.close()
                    raise ConnectionLostError(f"timed out waiting for {self.address}")
                self._bound_waits(left)
                self.shortened = True
        if self.received_since_send and QUICKACK:
            # dqlite nodes write with Nagle on: what they write after a
            # response we received waits for our ACK, which the kernel may
            # delay by up to 40 ms.  Setting QUICKACK sends a pending ACK
            # now.  Not needed on the first receive after a send: the send
            # carried the ACK of everything received before it, and any
            # later arrival wakes this receive.
            with contextlib.suppress(OSError):  # a broken socket: the receive reports it
                sock.setsockopt(socket.IPPROTO_TCP, QUICKACK, 1)
        self._receive()

    def _receive(self, request: bytes | None = None) -> None:
        """One receive into the decoder, waiting for it, after sending
        ``request`` if one is given; a failure or the end of the stream
        closes the socket.

        Where the compiled calls serve (``recv_fd``), the send and the wait
        are one call that gives the GIL up for both: the send wakes the
        server, which the scheduler often runs in the sender's place, and
        no other thread could run meanwhile if the sender held the GIL.

        The first wait after a request polls before it sleeps (``busy_poll``);
        the waits for the rest of a streaming answer do not: the node sends
        it as fast as it can, and polling for each batch would spend nearly
        twice the client CPU for a tenth less time.
        """
        if request is not None and self.recv_fd < 0:
            self.send(request)
            request = None
        sock = self.sock
        if sock is None:
            raise ConnectionLostError(f"connection to {self.address} is closed")
        try:
            if request is not None:
                self.received_since_send = False
                n = send_and_recv_into_decoder(self.recv_fd, request, self.decoder, self.busy_poll)
            elif self.recv_fd >= 0:
                n = recv_into_decoder(self.recv_fd, self.decoder,
                                      None if self.received_since_send else self.busy_poll)
            else:
                n = sock.recv_into(self.decoder.get_buffer())
                self.decoder.buffer_updated(n)
        except OSError as exc:
            self.close()
            raise ConnectionLostError(f"lost connection to {self.address}: {_describe(exc)}") from exc
        self.received_since_send = True
        if n == 0:
            self.close()
            raise ConnectionLostError(f"dqlite node {self.address} closed the connection")

    def restore_timeout(self) -> None:
        """Bound each wait by ``timeout`` again after ``fill`` shortened it."""
        if self.shortened and self.sock is not None:
            self.set_timeout(self.timeout)

    def shutdown(self) -> None:
        """Wake a receive blocked in another thread (it sees the end of the
        stream); that thread then closes.  Closing from here could free the
        buffer it receives into."""
        sock = self.sock
        if sock is not None:
            try:
                socket.socket.shutdown(sock, socket.SHUT_RDWR)  # under TLS too: the bare socket
            except OSError:
                pass

    def close(self) -> None:
        self.fd = self.recv_fd = -1
        sock, self.sock = self.sock, None
        if sock is not None:
            try:
                sock.close()
            except OSError:
                pass
        self.decoder.reset()

    @property
    def closed(self) -> bool:
        return self.sock is None


def _describe(exc: OSError) -> str:
    # A kernel timeout (SO_RCVTIMEO) surfaces as EAGAIN on a blocking socket.
    if isinstance(exc, (socket.timeout, TimeoutError, BlockingIOError)):
        return "timed out"
    return str(exc) or type(exc).__name__
