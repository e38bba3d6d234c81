"""The socket calls that keep the GIL (dqlite._sockio) and the blocking wire's use of them."""

import signal
import socket
import struct
import threading
import time

import pytest

from dqlite._protocol import Decoder
from dqlite._sockio import BusyPoll, recv_into_decoder, recv_nowait, send_nowait
from dqlite._wire import Wire
from dqlite.exceptions import ConnectionLostError

try:  # the wire bytes, written from protocol.md (tests/wirebytes.py)
    from wirebytes import ROWS, message
except ImportError:  # tests/ imported as a package
    from tests.wirebytes import ROWS, message  # type: ignore[no-redef]

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
    answer = message(ROWS, b"\x01" * 8)
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


# -- busy polling: the receives that wait poll first (BusyPoll) -----------------


#: ``_receive_answered_after``'s ``when``: once the receive's window has passed.
AFTER_THE_WINDOW = "after the window"


def _receive_answered_after(pair, poll, when):
    """One ``recv_into_decoder`` on the pair's second end (into a new
    decoder), the first end writing a word: before the receive (None), after
    ``when`` seconds, or AFTER_THE_WINDOW: once the receive has polled in
    vain and goes to sleep (``poll.sleeps`` counts it first; the GIL is
    released meanwhile).  A late answer so made is late by construction: a
    delay longer than the window is not, on a machine busy enough to leave
    the polling thread off the CPU for longer than the delay."""
    a, b = pair
    if when is None:
        a.sendall(b"x" * 8)
        return recv_into_decoder(b.fileno(), Decoder(), poll)
    if when is AFTER_THE_WINDOW:
        slept = poll.sleeps

        def answer_after_the_window():
            deadline = time.monotonic() + 10  # then answer anyway: the counts tell
            while poll.sleeps == slept and time.monotonic() < deadline:
                time.sleep(0.001)
            a.sendall(b"x" * 8)

        writer = threading.Thread(target=answer_after_the_window)
    else:
        writer = threading.Timer(when, a.sendall, args=(b"x" * 8,))
    writer.start()
    try:
        return recv_into_decoder(b.fileno(), Decoder(), poll)
    finally:
        writer.join()


def test_an_answer_within_the_window_is_polled_for_not_slept_on(pair):
    poll = BusyPoll(1.0)  # the longest window: ample for the other thread to answer
    assert _receive_answered_after(pair, poll, 0.001) == 8
    assert (poll.hits, poll.sleeps, poll.polling) == (1, 0, True)


def test_answers_later_than_the_window_stop_polling_until_a_retry(pair):
    poll = BusyPoll(20e-6)
    for _ in range(3):  # three misses in a row
        assert _receive_answered_after(pair, poll, AFTER_THE_WINDOW) == 8
    assert (poll.hits, poll.sleeps, poll.polling) == (0, 3, False)
    for retry_finds_its_answer in (False, True):
        # Stopped: even an answer that is already there is received without polling...
        for _ in range(63):
            assert _receive_answered_after(pair, poll, None) == 8
        assert (poll.hits, poll.polling) == (0, False)
        # ... until the 64th wait, which polls: a miss keeps polling stopped,
        # a hit resumes it.
        assert _receive_answered_after(pair, poll, None if retry_finds_its_answer else AFTER_THE_WINDOW) == 8
        assert (poll.hits, poll.polling) == (int(retry_finds_its_answer), retry_finds_its_answer)
    assert poll.sleeps == 3 + 63 + 1 + 63


def test_a_zero_window_never_polls(pair):
    poll = BusyPoll(0)
    for _ in range(70):
        assert _receive_answered_after(pair, poll, None) == 8
    assert (poll.hits, poll.sleeps, poll.polling) == (0, 70, False)
    with pytest.raises(ValueError):
        BusyPoll(-1e-6)


def test_a_signal_handler_that_raises_while_polling_is_run_before_sleeping(pair):
    """A signal that came while polling interrupts no sleeping recv(): its
    handler runs when the window ends, not when (if ever) the answer comes."""
    _, b = pair
    b.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("@ll", 30, 0))  # bounds a failure

    class Interrupted(Exception):
        pass

    def handler(signum, frame):
        raise Interrupted

    previous = signal.signal(signal.SIGALRM, handler)
    try:
        poll = BusyPoll(0.3)
        signal.setitimer(signal.ITIMER_REAL, 0.05)  # while polling; no answer ever comes
        started = time.monotonic()
        with pytest.raises(Interrupted):
            recv_into_decoder(b.fileno(), Decoder(), poll)
        # At the window's end (0.3 s), not when the sleeping recv() timed out (30 s):
        # a bound no busy machine comes near.
        assert time.monotonic() - started < 15
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def test_the_wire_polls_for_an_answer_not_for_the_rest_of_it():
    """The first wait after a request polls; the waits for the rest of a
    streaming answer sleep (the node sends it as fast as it can)."""
    server = socket.create_server(("127.0.0.1", 0))
    answer = message(ROWS, b"\x01" * 16)

    def serve():
        peer, _ = server.accept()
        with peer:
            peer.recv(8)
            peer.sendall(answer[:12])  # the header and part of the body...
            time.sleep(0.05)
            peer.sendall(answer[12:])  # ... and the rest, later

    thread = threading.Thread(target=serve)
    thread.start()
    wire = Wire(f"127.0.0.1:{server.getsockname()[1]}", 5.0, Decoder(), busy_poll=1.0)  # ample
    wire.exchange(b"\0" * 8, 5.0)
    thread.join(10)
    server.close()
    assert wire.decoder.next_message() == 7
    assert (wire.busy_poll.hits, wire.busy_poll.sleeps) == (1, 0)
    wire.close()
