"""The node store: the members of each dqlite cluster this process has reached.

A connection given one bootstrap address (``dqlite.connect("node1:9001", ...)``)
must not depend on that node for ever.  Each time a connection opens a
database on a leader it also asks that leader for the cluster's members
(CLUSTER, in the same write as the handshake, LEADER and OPEN: no extra round
trip), and records them here.  The next connection to the same cluster tries
the addresses it was given first, then the stored members: once the
bootstrap node is gone, the others still lead it to the cluster.

**Keyed by the cluster.** A cluster has no identity on the wire, so an entry
is identified by addresses: the members the leader last reported, plus the
addresses connections were given when they reached it (their "seeds").  A
connection's addresses select the entry that holds any of them, as a seed or
as a member.  Learning a new member list replaces the entry's members, so a
member removed from the cluster is forgotten at the next connect (or leader
change); seeds are only kept to find the entry again.  Entries that turn out
to describe the same cluster (a learned member list overlaps both) are merged.

One store is shared process-wide by every connection and pool that uses it
(``node_store(path)``): the in-memory one by default, or one per file.  It is
safe for threads and asyncio alike: every method is synchronous and holds a
lock for its duration (a few microseconds; a file-backed store writes its
file, a few hundred bytes, only when what it knows changes).

**Persistence.** ``node_store="/path/file.json"`` (a connect keyword and a
``node_store`` URL option of the SQLAlchemy dialect) keeps the store in that
file as well, so a restarted process finds the cluster even if its bootstrap
nodes are gone.  The file is JSON::

    {"format": 1, "clusters": [{"members": ["10.0.0.2:9001", ...], "seeds": ["10.0.0.1:9001"]}]}

It is read once, when the process first uses it, and rewritten atomically
(written to a temporary file in the same folder, flushed to disk, then
``os.replace``d) each time an entry changes.  A missing file is an empty
store; an unreadable or corrupt one is ignored with a ``logging`` warning (and
replaced by the next write), never an error.  Each write holds what this
process knows: processes that share a file should reach the same clusters
(one file per application, say), or the last writer's view wins.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import threading
from collections.abc import Iterable, Sequence
from typing import Any, Union

from dqlite._wire import parse_address
from dqlite.exceptions import InterfaceError

__all__ = ["NodeStore", "node_store", "NodeStoreOption"]

log = logging.getLogger("dqlite.nodestore")

_FORMAT = 1
#: Node roles as CLUSTER reports them; voters are tried first.
_ROLE_ORDER = {0: 0, 1: 1, 2: 2}

#: What the ``node_store`` connect keyword takes: None (the process-wide
#: in-memory store), a file path (the process-wide store kept in that file),
#: a ``NodeStore``, or False (no store: only the given addresses are tried).
NodeStoreOption = Union[None, bool, str, "os.PathLike[str]", "NodeStore"]


class _Entry:
    __slots__ = ("seeds", "members", "leader")

    def __init__(self, seeds: set[str], members: list[str], leader: str | None = None) -> None:
        self.seeds = seeds
        self.members = members
        self.leader = leader

    def holds(self, addresses: Iterable[str]) -> bool:
        return any(a in self.seeds or a in self.members for a in addresses)


class NodeStore:
    """The members of the dqlite clusters reached so far (see the module doc).

    Use ``node_store()`` for the process-wide stores; a ``NodeStore()`` of
    your own is private to the connections you pass it to.
    """

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        """An empty store; with ``path``, loaded from that file and kept in it."""
        self.path: str | None = None if path is None else os.path.abspath(os.fspath(path))
        self._lock = threading.Lock()
        self._entries: list[_Entry] = []
        if self.path is not None:
            self._entries = self._load(self.path)

    def __repr__(self) -> str:
        where = f" {self.path}" if self.path else ""
        return f"<dqlite.nodestore.NodeStore{where} clusters={self.clusters()}>"

    # -- reading -----------------------------------------------------------

    def members(self, addresses: str | Iterable[str]) -> list[str]:
        """The stored members of the cluster ``addresses`` belong to (voters
        first); an empty list if none is known."""
        addresses = _as_list(addresses)
        with self._lock:
            entry = self._find(addresses)
            return list(entry.members) if entry is not None else []

    def leader(self, addresses: str | Iterable[str]) -> str | None:
        """The leader a connection to that cluster last found (this process only), or None."""
        addresses = _as_list(addresses)
        with self._lock:
            entry = self._find(addresses)
            return entry.leader if entry is not None else None

    def clusters(self) -> list[list[str]]:
        """Every stored cluster's members."""
        with self._lock:
            return [list(e.members) for e in self._entries]

    def _find(self, addresses: Sequence[str]) -> _Entry | None:
        for entry in self._entries:
            if entry.holds(addresses):
                return entry
        return None

    # -- learning ----------------------------------------------------------

    def learn(self, addresses: str | Iterable[str], members: Iterable[tuple[int, str, int | None]],
              leader: str) -> None:
        """Record what a connection given ``addresses`` found: the cluster's
        ``members`` as CLUSTER reports them ((id, address, role) each) and its
        ``leader``.  The members replace those stored for that cluster."""
        seeds = set(_as_list(addresses))
        ranked = sorted(((_ROLE_ORDER.get(role if role is not None else 0, 3), address)
                         for _, address, role in members if address), key=lambda m: m[0])
        new_members = list(dict.fromkeys(address for _, address in ranked))
        if not new_members:
            return
        with self._lock:
            related = [e for e in self._entries if e.holds(seeds) or e.holds(new_members)]
            changed = True
            if len(related) == 1:
                entry = related[0]
                changed = entry.members != new_members or not seeds <= entry.seeds
                entry.seeds |= seeds
                entry.members = new_members
                entry.leader = leader
            else:
                for entry in related:
                    seeds |= entry.seeds
                    self._entries.remove(entry)
                self._entries.append(_Entry(seeds, new_members, leader))
            if changed and self.path is not None:
                self._save(self.path)

    def forget(self, addresses: str | Iterable[str]) -> None:
        """Drop the stored entry of the cluster ``addresses`` belong to."""
        addresses = _as_list(addresses)
        with self._lock:
            entry = self._find(addresses)
            if entry is not None:
                self._entries.remove(entry)
                if self.path is not None:
                    self._save(self.path)

    # -- the file ----------------------------------------------------------

    @staticmethod
    def _load(path: str) -> list[_Entry]:
        try:
            with open(path, encoding="utf-8") as f:
                document = json.load(f)
        except FileNotFoundError:
            return []
        except (OSError, ValueError) as exc:  # unreadable, not UTF-8, not JSON
            log.warning("dqlite node store %s is unreadable, ignoring it: %s", path, exc)
            return []
        try:
            return _parse(document)
        except (TypeError, ValueError, InterfaceError) as exc:
            log.warning("dqlite node store %s is corrupt, ignoring it: %s", path, exc)
            return []

    def _save(self, path: str) -> None:
        """Write the store to ``path`` atomically (the lock is held)."""
        document = {"format": _FORMAT, "clusters": [
            {"members": e.members, "seeds": sorted(e.seeds)} for e in self._entries]}
        folder, name = os.path.split(path)
        tmp = None
        try:
            fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=folder)
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(document, f, indent=1)
                f.write("\n")
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
            tmp = None
        except OSError as exc:
            log.warning("could not write the dqlite node store %s: %s", path, exc)
        finally:
            if tmp is not None:
                try:
                    os.unlink(tmp)
                except OSError:
                    pass


def _parse(document: Any) -> list[_Entry]:
    if not isinstance(document, dict) or document.get("format") != _FORMAT:
        raise ValueError(f"not a format-{_FORMAT} node store document")
    clusters = document.get("clusters")
    if not isinstance(clusters, list):
        raise ValueError("'clusters' is not a list")
    entries = []
    for cluster in clusters:
        if not isinstance(cluster, dict):
            raise ValueError("a cluster is not an object")
        members = cluster.get("members")
        seeds = cluster.get("seeds", [])
        if not isinstance(members, list) or not isinstance(seeds, list):
            raise ValueError("'members' and 'seeds' must be lists")
        for address in (*members, *seeds):
            parse_address(address)  # InterfaceError if not "host:port"
        entries.append(_Entry(set(seeds), list(dict.fromkeys(members))))
    return entries


def _as_list(addresses: str | Iterable[str]) -> list[str]:
    return [addresses] if isinstance(addresses, str) else list(addresses)


_stores: dict[str | None, NodeStore] = {}
_stores_lock = threading.Lock()


def node_store(path: str | os.PathLike[str] | None = None) -> NodeStore:
    """The process-wide store: the in-memory one, or the one kept in ``path``.

    Every call with the same path (as an absolute path) returns the same
    store, so every connection and pool given that path shares it.
    """
    key = None if path is None else os.path.abspath(os.fspath(path))
    with _stores_lock:
        store = _stores.get(key)
        if store is None:
            store = _stores[key] = NodeStore(key)
        return store


def resolve(option: NodeStoreOption) -> NodeStore | None:
    """The store a connection's ``node_store`` keyword names (see ``NodeStoreOption``)."""
    if option is None or option is True:
        return node_store()
    if option is False:
        return None
    if isinstance(option, NodeStore):
        return option
    if isinstance(option, (str, os.PathLike)):
        if not os.fspath(option):
            raise InterfaceError("node_store must be a file path, not an empty string")
        return node_store(option)
    raise InterfaceError(
        f"node_store must be None, False, a file path or a dqlite.nodestore.NodeStore, "
        f"not {type(option).__name__}")
