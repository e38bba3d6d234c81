"""The socket calls that keep the GIL (dqlite._sockio) and the blocking wire's use of them."""

import socket
import struct
import threading

import pytest

from dqlite._protocol import Decoder
from dqlite._sockio import recv_nowait, send_nowait
from dqlite._wire import Wire
from dqlite.exceptions import ConnectionLostError

pytestmark = pytest.mark.server_independent


@pytest.fixture
def pair():
    a, b = socket.socketpair()
    yield a, b
    a.close()
    b.close()


def test_nothing_arrived_is_not_an_error_and_does_not_wait(pair):
    a, b = pair
    buf = bytearray(64)
    assert recv_nowait(b.fileno(), buf) == -1
    assert send_nowait(a.fileno(), b"hello", 1) == 4
    assert recv_nowait(b.fileno(), buf) == 4 and buf[:4] == b"ello"
    a.close()
    assert recv_nowait(b.fileno(), buf) == 0  # end of stream


def test_a_full_socket_buffer_takes_part_or_nothing(pair):
    a, _ = pair
    chunk = b"x" * 65536
    sent = [send_nowait(a.fileno(), chunk) for _ in range(200)]
    assert sent[-1] == 0 and sum(sent) < 200 * len(chunk)


def test_errors_carry_errno():
    with pytest.raises(OSError) as info:
        send_nowait(-1, b"x")
    assert info.value.errno is not None
    with pytest.raises(ValueError):
        send_nowait(0, b"x", 2)


def test_the_wire_sends_what_the_buffer_cannot_take_at_once():
    """A request larger than the socket buffer: the rest goes out blocking, in order."""
    server = socket.create_server(("127.0.0.1", 0))
    received = bytearray()

    def read_all():
        peer, _ = server.accept()
        with peer:
            while chunk := peer.recv(1 << 16):
                received.extend(chunk)

    reader = threading.Thread(target=read_all)
    reader.start()
    wire = Wire(f"127.0.0.1:{server.getsockname()[1]}", 5.0, Decoder())
    data = bytes(range(256)) * (1 << 15)  # 8 MiB
    wire.send(data)
    wire.close()
    reader.join(10)
    server.close()
    assert bytes(received) == data


def _serve_once(answer):
    """A server that reads a whole request of known size, then writes ``answer`` (None: closes)."""
    server = socket.create_server(("127.0.0.1", 0))
    received = bytearray()

    def serve(size):
        peer, _ = server.accept()
        with peer:
            while len(received) < size and (chunk := peer.recv(1 << 16)):
                received.extend(chunk)
            if answer is not None:
                peer.sendall(answer)
        server.close()

    return server.getsockname()[1], received, serve


@pytest.mark.parametrize("tls", [False, True], ids=["fd", "socket-module"])
def test_an_exchange_sends_the_whole_request_then_waits_for_the_answer(tls):
    # One message of type 7 with a one-word body.
    answer = struct.pack("<IBBH", 1, 7, 0, 0) + b"\x01" * 8
    port, received, serve = _serve_once(answer)
    data = bytes(range(256)) * (1 << 15)  # 8 MiB: more than the socket buffer takes at once
    server = threading.Thread(target=serve, args=(len(data),))
    server.start()
    wire = Wire(f"127.0.0.1:{port}", 5.0, Decoder())
    assert wire.recv_fd >= 0  # the compiled send-and-receive
    if tls:
        wire.recv_fd = -1  # as under TLS: the socket module's calls
    wire.exchange(data, 5.0)
    server.join(10)
    assert bytes(received) == data
    assert wire.decoder.next_message() == 7
    wire.close()


def test_an_exchange_with_a_peer_that_closes_loses_the_connection():
    port, _, serve = _serve_once(None)
    server = threading.Thread(target=serve, args=(8,))
    server.start()
    wire = Wire(f"127.0.0.1:{port}", 5.0, Decoder())
    with pytest.raises(ConnectionLostError, match="closed the connection"):
        wire.exchange(b"\0" * 8, 5.0)
    server.join(10)
    assert wire.closed
