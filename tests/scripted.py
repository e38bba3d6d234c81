"""Drive a ``dqlite._session.Session`` with scripted bytes and no socket (a test helper).

A ``Session`` does no I/O: each operation is a generator that yields what it
needs from an I/O shell (see ``dqlite._session``'s module doc).  ``Scripted``
is such a shell with no socket: it runs one operation to its end, records
what the session asks for, and answers from a script::

    server = Scripted(session, [server_message(1, A) + db_message()])
    server.run(session.connect())
    assert server.log == [("CONNECT", A), ("HANDSHAKE",), ("LEADER",), ("OPEN", "db"), "CONNECTED"]

* ``bytes`` (send): each request is parsed (tests/wirebytes.py) and logged as
  ``describe_request`` shows it, e.g. ``("PREPARE", "SELECT 1")`` or
  ``("EXEC_SQL", "BEGIN")``; after a ``Connect`` the first 8 bytes must be
  the handshake, logged as ``("HANDSHAKE",)``.  ``writes`` keeps them
  grouped by write, to check what travels together.
* ``RECV`` (None): the next step of the script: ``bytes`` (or ``Arrived``)
  are put into ``session.decoder`` (``get_buffer`` / ``buffer_updated``, as
  the shells do); ``Lost(why)`` throws ``ConnectionLostError(why)`` into the
  operation, as a shell does on an I/O failure.  A RECV with the script used
  up fails the test (the session waits for an answer the test did not expect).
* ``Send(data)``: logged like a send (``soon=True`` in ``writes``): its
  answers are read later.
* ``Connect(address, timeout)``: logged as ``("CONNECT", address)``;
  ``CLOSE`` as ``"CLOSE"``; ``CONNECTED`` as ``"CONNECTED"``;
  ``Sleep(s)`` as ``"SLEEP"`` (the seconds, jittered, go to ``sleeps``).
  A send or RECV while no connection is open gets ``ConnectionLostError``,
  as from the shells.
* Before an operation starts, when the session owes answers (``unread``),
  the next step is taken if it is ``Arrived(bytes)`` (an answer already
  there, logged as ``"POLLED"``), as a shell takes in what has arrived
  (``dqlite._io``); otherwise nothing has arrived.
* ``FindLeader(addresses, ...)``: logged as ``("FIND_LEADER", addresses)``;
  answered from ``leaders`` (address -> the leader it names, or an
  exception-like string starting with "error: ") as ``ProbeResult``s.

Only the session's operations, the ``Result`` they return and a few public
attributes are used, so a reorganisation of the session's internals does not
break these tests (see ``new_cursor`` and ``fetch_all``).
"""

from __future__ import annotations

from collections.abc import Generator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from dqlite._probe import ProbeResult
from dqlite._io import CLOSE, CONNECTED, Connect, FindLeader, Send, Sleep
from dqlite._session import Result, Session
from dqlite.exceptions import ConnectionLostError

try:  # the wire bytes, written from protocol.md (tests/wirebytes.py)
    from wirebytes import describe_request, handshake, split_messages
except ImportError:  # tests/ imported as a package
    from tests.wirebytes import describe_request, handshake, split_messages  # type: ignore[no-redef]

__all__ = ["Arrived", "Lost", "Scripted", "Write", "fetch_all", "make_session", "new_cursor"]

#: What the session's generators yield to receive (dqlite._io.RECV).
RECV = None


@dataclass(frozen=True)
class Lost:
    """A script step: the connection fails at this receive."""

    why: str = "connection reset by peer"


@dataclass(frozen=True)
class Arrived:
    """A script step: bytes already received when the next operation starts."""

    data: bytes


@dataclass
class Write:
    """One send of the session: the requests it held, as ``describe_request`` shows them."""

    requests: list[tuple[Any, ...]]
    soon: bool = False  # a Send: its answers are read later


Step = bytes | Arrived | Lost


@dataclass
class Scripted:
    """An I/O shell without a socket for ``session``: see the module doc."""

    session: Session
    script: list[Step] = field(default_factory=list)
    leaders: Mapping[str, str] = field(default_factory=dict)
    log: list[Any] = field(default_factory=list)
    writes: list[Write] = field(default_factory=list)
    sleeps: list[float] = field(default_factory=list)
    connected: bool = False
    _handshake_due: bool = False

    def answer(self, *steps: Step) -> None:
        """Add steps to the script."""
        self.script.extend(steps)

    @property
    def requests(self) -> list[tuple[Any, ...]]:
        """The requests sent so far, in order (the handshake included)."""
        return [r for w in self.writes for r in w.requests]

    def run(self, op: Generator[Any, Any, Any]) -> Any:
        """Drive ``op`` to its end; its return value, or what it raised."""
        reply: Any = None
        error: BaseException | None = None
        if self.session.unread and self.connected and self.script and isinstance(self.script[0], Arrived):
            self.log.append("POLLED")
            self._feed(self.script.pop(0).data)
        while True:
            try:
                request = op.send(reply) if error is None else op.throw(error)
            except StopIteration as stop:
                return stop.value
            reply = error = None
            try:
                reply = self._serve(request)
            except ConnectionLostError as exc:
                error = exc

    # -- the requests ---------------------------------------------------------

    def _serve(self, request: Any) -> Any:
        if request is RECV:
            self._recv()
        elif isinstance(request, (bytes, bytearray)):
            self._send(bytes(request), soon=False)
        elif type(request) is Send:
            self._send(request.data, soon=True)
        elif request is CLOSE:
            self.log.append("CLOSE")
            self.connected = False
        elif request is CONNECTED:
            self.log.append("CONNECTED")
        elif type(request) is Connect:
            self.log.append(("CONNECT", request.address))
            self.connected = True
            self._handshake_due = True
        elif type(request) is Sleep:
            self.log.append("SLEEP")
            self.sleeps.append(request.seconds)
        elif type(request) is FindLeader:
            self.log.append(("FIND_LEADER", tuple(request.addresses)))
            return [self._probe(address) for address in request.addresses]
        else:
            raise AssertionError(f"the session asked for something unknown: {request!r}")
        return None

    def _probe(self, address: str) -> ProbeResult:
        said = self.leaders.get(address)
        if said is None:
            raise AssertionError(f"FindLeader asked {address}, which the test's leaders do not list")
        if said.startswith("error: "):
            return ProbeResult(address, None, said[len("error: "):])
        return ProbeResult(address, said)

    def _send(self, data: bytes, *, soon: bool) -> None:
        if not self.connected:
            raise ConnectionLostError("not connected")
        requests: list[tuple[Any, ...]] = []
        if self._handshake_due:
            assert data[:8] == handshake(), f"the first bytes on a connection are not the handshake: {data[:8]!r}"
            requests.append(("HANDSHAKE",))
            data = data[8:]
            self._handshake_due = False
        requests += [describe_request(m) for m in split_messages(data)]
        self.writes.append(Write(requests, soon))
        self.log.extend(requests)

    def _recv(self) -> None:
        if not self.connected:
            raise ConnectionLostError("not connected")
        if not self.script:
            raise AssertionError(f"the session waits for an answer the script does not have; log: {self.log!r}")
        step = self.script.pop(0)
        if isinstance(step, Lost):
            self.log.append("LOST")
            self.connected = False
            raise ConnectionLostError(step.why)
        self._feed(step.data if isinstance(step, Arrived) else step)

    def _feed(self, data: bytes) -> None:
        """Put ``data`` into the session's decoder as a shell's receive does."""
        decoder = self.session.decoder
        view = memoryview(data)
        while view:
            buffer = decoder.get_buffer(len(view))
            n = min(len(buffer), len(view))
            buffer[:n] = view[:n]
            decoder.buffer_updated(n)
            view = view[n:]


# -- sessions and cursors ------------------------------------------------------

def make_session(address: str | Sequence[str] = "10.0.0.1:9001", database: str = "db", **options: Any) -> Session:
    """A Session as ``dqlite.connect`` makes one, without a node store unless given one."""
    settings: dict[str, Any] = dict(timeout=5.0, autocommit=False, parse_datetimes=False, cached_statements=100,
                                    max_message_size=1 << 20, node_store=None)
    settings.update(options)
    return Session(address, database, **settings)


class ScriptedCursor:
    """What a cursor keeps of its statements: the last ``Result`` and rowid."""

    def __init__(self) -> None:
        self.result = Result()
        self.lastrowid: int | None = None

    def run(self, server: Scripted, op: Generator[Any, Any, Any]) -> None:
        """Run ``execute``/``executemany``'s ``op`` against ``server``; keep its result."""
        result = server.run(op)
        self.result = result
        if result.lastrowid is not None:
            self.lastrowid = result.lastrowid

    @property
    def rowcount(self) -> int:
        return self.result.rowcount

    @property
    def description(self) -> tuple | None:
        return self.result.description


def new_cursor(session: Session) -> ScriptedCursor:
    """A cursor for ``session``'s statements (``ScriptedCursor.run``)."""
    return ScriptedCursor()


def fetch_all(server: Scripted, cursor: ScriptedCursor) -> list[Any]:
    """The rest of ``cursor``'s result, reading the batches still to come as
    ``Cursor.fetchall`` does (``read_batch`` until the end)."""
    result = cursor.result
    out = result.rows[result.pos:]
    while not result.done:
        result.done = server.run(server.session.read_batch(result, out))
    return out
