"""Finding the leader and opening the database on it (the session's connect).

The first round tries the leader last found; otherwise every candidate (the
addresses given, then the members the node store knows) is asked at once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from dqlite._failures import answer_or_refusal
from dqlite._io import CLOSE, CONNECTED, Connect, FindLeader, Op, Sleep
from dqlite._protocol import Decoder, Encoder, encode_handshake
from dqlite._statements import StatementCache
from dqlite.exceptions import Error, OperationalError
from dqlite.nodestore import NodeStore

log = logging.getLogger("dqlite")

_HANDSHAKE = encode_handshake()


class LeaderDiscovery:
    """The part of ``Session`` that finds the leader and connects to it."""

    addresses: list[str]
    database: str
    timeout: float
    node_store: NodeStore | None
    last_leader: str | None
    connected_to: str | None
    barrier_run: bool
    unread: int
    encoder: Encoder
    decoder: Decoder
    statements: StatementCache
    _read: Callable[[Any], Op]  # Session._read: one answer, decoded by the reader given

    def connect(self) -> Op:
        """Find the leader, connect to it and open the database.

        The first round tries the leader last found (by this connection, or
        by any other to the same cluster: the node store).  Otherwise, and in
        later rounds, every candidate (the addresses given, then the members
        the node store knows) is asked at once, and the database is opened
        on the leader they name, unless it could not be reached itself.
        """
        deadline = time.monotonic() + self.timeout
        store = self.node_store
        delay = 0.01
        errors: dict[str, str] = {}
        # Addresses that failed in an earlier round (as the hint, or not
        # answering the search): asked only with the others from then on.
        failed: set[str] = set()
        while True:
            given = self.addresses
            candidates = list(dict.fromkeys([*given, *(store.members(given) if store is not None else ())]))
            # The leader last found by any connection to this cluster, or by this one.
            hint = (store.leader(given) if store is not None else None) or self.last_leader
            if hint in failed:
                hint = None
            # Each node gets a share of the time: a frozen or partitioned node
            # (often the last known leader) must not use up the whole budget.
            attempt = max(self.timeout / len(candidates), min(self.timeout, 0.5))
            tried: set[str] = set()
            if hint is not None:
                tried.add(hint)
                if (yield from self._try_leader(hint, deadline, attempt, errors, hops=1)):
                    return
                failed.add(hint)
            to_ask = tuple(a for a in candidates if a not in tried)
            if hint is None and len(to_ask) == 1:
                # One node to ask: asking it to open the database asks it who leads.
                tried.add(to_ask[0])
                if (yield from self._try_leader(to_ask[0], deadline, attempt, errors, hops=1)):
                    return
            elif to_ask:
                remaining = max(deadline - time.monotonic(), 0.05)
                # The shell sends the answers in (Op's send type is None elsewhere).
                # The given addresses' answers win (dqlite._probe), unless they
                # failed before: a frozen node costs its share of the time once.
                preferred = tuple(a for a in given if a not in failed)
                answers: Any = yield FindLeader(to_ask, min(remaining, attempt), preferred)
                # A deposed leader that died is still named by the others until
                # they elect a new one: not worth its share of the time again.
                unreachable = {a.address for a in answers if a.error is not None}
                failed |= unreachable
                for leader in self._named_leaders(answers, errors):
                    if leader in tried or leader in unreachable:
                        continue
                    tried.add(leader)
                    if (yield from self._try_leader(leader, deadline, attempt, errors, hops=0)):
                        return
            if time.monotonic() + delay >= deadline:
                tried_text = "; ".join(f"{a}: {why}" for a, why in errors.items())
                raise OperationalError(
                    f"could not connect to the dqlite leader within {self.timeout:g}s ({tried_text})")
            yield Sleep(delay)
            delay = min(delay * 2, 0.5)

    def _named_leaders(self, answers: Sequence[Any], errors: dict[str, str]) -> list[str]:
        """The leaders ``FindLeader``'s answers name, the likeliest first: a
        node naming itself, then the nodes named by the given addresses, then
        by stored members (which might, in time, have become another
        cluster's)."""
        given = set(self.addresses)
        ranked: list[tuple[int, str]] = []
        for answer in answers:
            address, leader, error = answer
            if error is not None:
                errors[address] = error
            elif not leader:
                errors[address] = "knows no leader"
            else:
                ranked.append(((leader != address) * 2 + (address not in given), leader))
        ranked.sort(key=lambda r: r[0])
        return list(dict.fromkeys(leader for _, leader in ranked))

    def _try_leader(self, address: str, deadline: float, attempt: float, errors: dict[str, str],
                    hops: int) -> Op:
        """Open the database on ``address`` if it leads (or on the leader it
        names, ``hops`` times); True once connected."""
        try:
            leader = yield from self._open_on_leader(address, deadline, attempt, hops)
        except Error as exc:
            yield CLOSE
            errors[address] = str(exc)
            return False
        if leader is None:
            errors[address] = "not the leader, and its leader could not be reached"
            return False
        self.connected_to = self.last_leader = leader
        self.barrier_run = False
        self.statements.forget()
        log.debug("connected to leader %s, database %r", leader, self.database)
        return True

    def _open_on_leader(self, address: str, deadline: float, attempt: float, hops: int = 1) -> Op:
        """Connect to ``address``; if it leads, open the database there.

        The handshake, LEADER, OPEN and CLUSTER travel in one write: on the
        leader the connection is ready after one round trip, and the
        cluster's members are learned for the node store on the way.
        Returns the leader's address, or None (with the socket closed) if it
        could not be reached.  Until CONNECTED, the shell bounds each wait
        by ``attempt`` seconds.
        """
        remaining = max(deadline - time.monotonic(), 0.05)
        self.decoder.reset()
        self.unread = 0
        yield Connect(address, min(remaining, attempt))
        enc = self.encoder
        enc.clear()
        enc.leader()
        enc.open(self.database)
        store = self.node_store
        if store is not None:
            enc.cluster(1)
        yield _HANDSHAKE + enc.take()
        _, leader = yield from self._read(self.decoder.read_server)
        if leader == address:
            yield from self._read(self.decoder.read_db)
            if store is not None:
                yield from self._learn_members(store, address)
            yield CONNECTED
            return address
        yield CLOSE
        if leader and hops > 0:
            return (yield from self._open_on_leader(leader, deadline, attempt, hops - 1))
        return None

    def _learn_members(self, store: NodeStore, leader: str) -> Op:
        """Read the leader's CLUSTER answer into the node store."""
        members = yield from answer_or_refusal(self._read(self.decoder.read_servers))
        if isinstance(members, Error):  # refused: the store keeps what it knew
            log.debug("CLUSTER failed on %s: %s", leader, members)
            return
        store.learn(self.addresses, members, leader)
