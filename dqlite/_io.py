"""What a session operation asks of its I/O shell.

Each operation of ``dqlite._session.Session`` is a generator (the idea of
psycopg 3's generators): it yields what it needs from the shell, and the
shell (``dqlite.connection``, blocking; ``dqlite.aio``, asyncio) performs it
and resumes the generator.  An I/O failure is thrown into the generator as
``ConnectionLostError``, where it is classified like any other.

Before it starts an operation, a shell takes in the answers that have
already arrived, without waiting, when the session owes some
(``Session.unread``): the blocking shell polls its socket, the asyncio shell's
event loop has taken them in.  The operation consumes them before it sends
anything, and the next receive finds its own answers.

* ``bytes``: send these requests; an answer is awaited next.  The shell may
  wait for the first whole answer in the same step (the blocking shell does:
  one system call sends and receives, and gives the GIL up once).
* ``RECV`` (None): receive more bytes into the decoder.
* ``Send(data)``: send requests and do not wait: their answers are read
  later (the pipelined windows of ``executemany``; the end of a read-only
  transaction, read ahead of the next request's answer).
* ``CLOSE``: close the socket.
* ``Connect(address, timeout)``: open a socket to a node (not handshaken),
  and bound each wait by ``timeout`` until ``CONNECTED``.
* ``CONNECTED``: the connection is set up; waits go back to the operation's timeout.
* ``Sleep(seconds)``: wait (between leader discovery rounds, for a lock).
* ``FindLeader(addresses, timeout, preferred)``: ask every address for the
  leader at once, each within ``timeout``; the shell sends back the answers
  (``dqlite._probe.ProbeResult``s, in the order they came) as soon as a node
  names itself (see ``dqlite._probe`` for ``preferred``), or when all have
  answered.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any, NamedTuple

RECV = None


class _Sentinel:
    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


CLOSE = _Sentinel("CLOSE")
CONNECTED = _Sentinel("CONNECTED")


class Send(NamedTuple):
    data: bytes


class Connect(NamedTuple):
    address: str
    timeout: float


class Sleep(NamedTuple):
    seconds: float


class FindLeader(NamedTuple):
    addresses: tuple[str, ...]
    timeout: float
    preferred: tuple[str, ...] = ()  # the given addresses: their answers win (dqlite._probe)


#: What an operation generator yields and returns.
Op = Generator[Any, Any, Any]
