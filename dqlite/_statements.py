"""Statements: their classification, parameters, and the cache of the ones
prepared on the current server connection."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any, Union

from dqlite import _sql
from dqlite._protocol import MAX_PARAMS_SCHEMA0, Encoder
from dqlite.exceptions import ProgrammingError


class Prepared:
    """A statement prepared on the current server connection."""

    __slots__ = ("stmt_id", "nparams", "schema0_nparams", "info")

    def __init__(self, stmt_id: int, nparams: int, info: _sql.Statement) -> None:
        self.stmt_id = stmt_id
        self.nparams = nparams
        #: ``nparams`` if a parameter tuple of schema 0 holds them (protocol.md §1.5), else -1.
        self.schema0_nparams = nparams if nparams <= MAX_PARAMS_SCHEMA0 else -1
        self.info = info


#: One parameter set: by position, or by name (see ``as_params``).
Parameters = Union[Sequence[Any], Mapping[str, Any]]


def as_params(params: Any, info: _sql.Statement) -> Sequence[Any]:
    """Check and normalise one parameter set for the statement ``info``.

    A sequence binds by position (the qmark paramstyle); a mapping binds
    named parameters (``:name``, ``@name``, ``$name``) by name, as sqlite3
    does.
    """
    if type(params) is tuple or type(params) is list:
        return params
    if params is None:
        return ()
    if isinstance(params, Mapping):
        return _bind_names(params, info.names)
    if isinstance(params, (str, bytes, bytearray)) or not isinstance(params, Sequence):
        raise ProgrammingError(
            f"parameters must be a sequence (tuple or list), or a mapping for named parameters, "
            f"not {type(params).__name__}")
    return tuple(params)


def _bind_names(params: Mapping[str, Any], names: tuple[str | None, ...]) -> tuple:
    values = []
    for index, name in enumerate(names, 1):
        if name is None:
            raise ProgrammingError(
                f"parameter {index} has no name (? or ?NNN), but the parameters are a mapping")
        try:
            values.append(params[name])
        except KeyError:
            raise ProgrammingError(f"no value for the named parameter {name!r}") from None
    return tuple(values)


class StatementCache:
    """The statements prepared on the current server connection, least
    recently used first, and the ids of the evicted ones, finalized with the
    next request (an id is never used again, protocol.md §8.1)."""

    def __init__(self, size: int) -> None:
        self.size = max(int(size), 1)
        self.prepared: OrderedDict[str, Prepared] = OrderedDict()
        self.to_finalize: list[int] = []
        #: Each SQL text's ``classify``, remembered (parsing costs more than a lookup).
        self.classified: dict[str, _sql.Statement] = {}

    def classify(self, sql: str) -> _sql.Statement:
        """What kind of statement ``sql`` is (remembered: parsing costs more than a lookup)."""
        info = self.classified.get(sql)
        if info is None:
            if not isinstance(sql, str):
                raise ProgrammingError(f"SQL must be a str, not {type(sql).__name__}")
            info = _sql.classify(sql)
            if len(self.classified) > 4096:
                self.classified.clear()
            self.classified[sql] = info
        return info

    def get(self, sql: str) -> Prepared | None:
        """The prepared statement for ``sql``, now the most recently used; or None."""
        prepared = self.prepared.get(sql)
        if prepared is not None:
            self.prepared.move_to_end(sql)
        return prepared

    def add(self, sql: str, prepared: Prepared) -> None:
        """Keep ``prepared``; the least recently used one beyond the size is evicted."""
        self.prepared[sql] = prepared
        if len(self.prepared) > self.size:
            _, evicted = self.prepared.popitem(last=False)
            self.to_finalize.append(evicted.stmt_id)

    def forget(self) -> None:
        """The server connection is gone, and its statements with it."""
        self.prepared.clear()
        self.to_finalize.clear()

    def encode_finalizes(self, encoder: Encoder) -> tuple[int, list[int]]:
        """Encode FINALIZE for the evicted statements: how many answers to
        read, and what to hand back to ``unencode`` if the request is dropped."""
        ids = self.to_finalize
        if not ids:
            return 0, ids
        for stmt_id in ids:
            encoder.finalize(stmt_id)
        self.to_finalize = []
        return len(ids), ids

    def unencode(self, encoder: Encoder, ids: list[int] | None) -> None:
        """Undo a half-encoded request and what was queued ahead of it.

        A parameter the encoder refuses must not leave the BEGIN or the
        FINALIZEs queued before it in the buffer, to be sent with the next
        request and answered out of step.
        """
        encoder.clear()
        if ids:
            self.to_finalize = ids
