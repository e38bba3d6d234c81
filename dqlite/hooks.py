"""Per-query hooks: what a connection tells about each statement it runs.

    import dqlite
    from dqlite.hooks import slow_query_logger

    conn = dqlite.connect(addresses, "app", on_query=slow_query_logger(0.1))
    conn.on_query = lambda event: print(event.sql, event.duration, event.rowcount, event.error)

A hook is called after each ``execute``/``executemany`` of the connection's
cursors (and of a pool's connections, given ``on_query`` to the pool), with a
``QueryEvent``.  It never sees the parameters (they may hold secrets).  A
connection without a hook runs the very same code as before: setting one
switches its cursors to a class that times them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, NamedTuple

__all__ = ["QueryEvent", "QueryHook", "event_rowcount", "slow_query_logger"]

log = logging.getLogger("dqlite")


class QueryEvent(NamedTuple):
    """One statement a connection ran."""

    #: The SQL text as given (never its parameters).
    sql: str
    #: Seconds from the call to its return: for a query, until the first batch of rows arrived.
    duration: float
    #: Rows changed (INSERT/UPDATE/DELETE); for a query, the rows of a result that arrived
    #: whole with its first batch (most do), else -1 (it is still streaming).
    rowcount: int
    #: The exception the statement raised, or None.
    error: BaseException | None
    #: The database the connection opened.
    database: str
    #: "execute" or "executemany".
    method: str


QueryHook = Callable[[QueryEvent], object]


def emit(hook: QueryHook, event: QueryEvent) -> None:
    """Call ``hook``; its own failure is logged, never raised into the query's caller."""
    try:
        hook(event)
    except Exception:
        log.warning("the on_query hook %r raised", hook, exc_info=True)


def event_rowcount(cursor: Any) -> int:
    """What ``QueryEvent.rowcount`` says for a cursor that just ran a statement."""
    result = cursor._result
    if result.description is None:
        return result.rowcount
    return len(result.rows) if result.done else -1


def slow_query_logger(threshold: float, logger: logging.Logger | None = None,
                      level: int = logging.WARNING) -> QueryHook:
    """A hook that logs statements slower than ``threshold`` seconds, and failed ones.

    To the ``dqlite.query`` logger by default: the SQL text, the duration and
    the row count or the error; never the parameters.
    """
    out = logger if logger is not None else logging.getLogger("dqlite.query")

    def hook(event: QueryEvent) -> None:
        if event.error is not None:
            out.log(level, "failed after %.3f s: %s (%s: %s)", event.duration, event.sql,
                    type(event.error).__name__, event.error)
        elif event.duration >= threshold:
            out.log(level, "slow query, %.3f s, %d rows: %s", event.duration, event.rowcount, event.sql)

    return hook
