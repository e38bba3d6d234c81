"""Just enough of SQLite's lexer to route a statement correctly.

The protocol gives no way to ask whether a statement returns rows or writes,
and sending a statement through the wrong request is costly or dangerous
(protocol.md §1.6, §4.2, §8.5): a row-less statement through QUERY is not run,
a row-returning one through EXEC fails, and on 1.11.1 a write through QUERY
aborts the node.  So each SQL text is classified once (the connection caches
the result with the prepared statement).
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass

__all__ = ["Statement", "classify", "split_statements"]

# Kinds of statements.
QUERY = "query"            # returns rows: SELECT, VALUES, EXPLAIN, WITH ... SELECT
PRAGMA = "pragma"          # may or may not return rows: try QUERY, fall back to EXEC
DML = "dml"                # INSERT / UPDATE / DELETE / REPLACE: rowcount applies
DML_RETURNING = "dml_returning"
BEGIN = "begin"
COMMIT = "commit"          # COMMIT, END
ROLLBACK = "rollback"      # ROLLBACK (not ROLLBACK TO)
SAVEPOINT = "savepoint"    # SAVEPOINT, RELEASE, ROLLBACK TO
OTHER = "other"            # DDL and everything else: EXEC, no rows
EMPTY = "empty"            # only whitespace and comments

_TOKEN = re.compile(
    r"""
      (?P<ws>\s+)
    | (?P<comment>--[^\n]*|/\*.*?(?:\*/|\Z))
    | (?P<string>'(?:[^']|'')*(?:'|\Z))
    | (?P<quoted>"(?:[^"]|"")*(?:"|\Z)|`(?:[^`]|``)*(?:`|\Z)|\[[^\]]*(?:\]|\Z))
    | (?P<word>[A-Za-z_][A-Za-z_0-9$]*)
    | (?P<param>\?[0-9]*|[:@$](?:[A-Za-z0-9_$]|[^\x00-\x7f])+)
    | (?P<semi>;)
    | (?P<open>\()
    | (?P<close>\))
    | (?P<other>.)
    """,
    re.VERBOSE | re.DOTALL,
)

_WRITE_WORDS = frozenset({"INSERT", "UPDATE", "DELETE", "REPLACE"})


@dataclass(frozen=True, slots=True)
class Statement:
    """What the connection needs to know about one SQL text."""

    kind: str
    #: Non-blank text follows the first statement (several statements).
    has_tail: bool
    #: The statement is INSERT or REPLACE (lastrowid applies).
    is_insert: bool = False
    #: BEGIN IMMEDIATE / EXCLUSIVE: takes the write lock before any write.
    takes_write_lock: bool = False
    #: The parameters by index (SQLite numbers them from 1): the name of a
    #: named one (``:id``, ``@id`` and ``$id`` are all ``"id"``), None for
    #: ``?`` and ``?NNN``.
    names: tuple[str | None, ...] = ()

    @property
    def returns_rows(self) -> bool:
        return self.kind in (QUERY, PRAGMA)


def _words(sql: str):
    """(kind, upper-cased text, depth, start, end) of each significant token."""
    depth = 0
    for m in _TOKEN.finditer(sql):
        kind = m.lastgroup
        if kind in ("ws", "comment"):
            continue
        if kind == "open":
            depth += 1
        elif kind == "close":
            depth = max(depth - 1, 0)
        text = m.group()
        yield kind, text.upper() if kind == "word" else text, depth, m.start(), m.end()


def _first_statement_end(tokens: list) -> int:
    """Index of the ';' that ends the first statement (len(tokens) if none).

    A CREATE TRIGGER body (BEGIN ... END) holds semicolons of its own.
    """
    words = [t[1] for t in tokens[:4] if t[0] == "word"]
    in_trigger = len(words) >= 2 and words[0] == "CREATE" and (
        words[1] == "TRIGGER" or (words[1] in ("TEMP", "TEMPORARY") and words[2:3] == ["TRIGGER"]))
    body = False
    case_depth = 0
    for i, (kind, text, depth, _, _) in enumerate(tokens):
        if in_trigger and kind == "word":
            if text == "BEGIN" and not body:
                body = True
            elif body and text == "CASE":
                case_depth += 1
            elif body and text == "END":
                if case_depth:
                    case_depth -= 1
                else:
                    body = False
        elif kind == "semi" and not body:
            return i
    return len(tokens)


def classify(sql: str) -> Statement:
    """Classify the first statement of ``sql`` and note whether more follow."""
    tokens = list(_words(sql))
    end = _first_statement_end(tokens)
    has_tail = any(t[0] != "semi" for t in tokens[end + 1:])
    first = tokens[:end]
    names = _parameter_names(first)
    if names:
        return dataclasses.replace(_classify(first, has_tail), names=names)
    return _classify(first, has_tail)


def _parameter_names(tokens: list) -> tuple[str | None, ...]:
    """The parameters of a statement by index, numbered as SQLite numbers them.

    ``?`` takes the next index, ``?NNN`` index NNN; a named parameter the
    next index at its first use, the same index when used again.
    """
    slots: dict[int, str | None] = {}
    seen: dict[str, int] = {}
    last = 0
    for kind, text, _, _, _ in tokens:
        if kind != "param":
            continue
        if text[0] == "?":
            index = int(text[1:]) if len(text) > 1 else last + 1
            slots.setdefault(index, None)
        elif text in seen:
            continue
        else:
            index = seen[text] = last + 1
            slots[index] = text[1:]
        last = max(last, index)
    return tuple(slots.get(i) for i in range(1, last + 1))


def _classify(first: list, has_tail: bool) -> Statement:
    if not first:
        return Statement(EMPTY, has_tail)
    head = first[0][1] if first[0][0] == "word" else ""
    top_words = [t[1] for t in first if t[0] == "word" and t[2] == 0]
    if head in ("SELECT", "VALUES", "EXPLAIN"):
        return Statement(QUERY, has_tail)
    if head == "PRAGMA":
        return Statement(PRAGMA, has_tail)
    if head == "WITH":
        # The main statement is the first top-level SELECT/INSERT/... after
        # the common table expressions, whose bodies sit inside parentheses.
        main = next((w for w in top_words[1:] if w in _WRITE_WORDS or w in ("SELECT", "VALUES")), "SELECT")
        head = main
        if head in ("SELECT", "VALUES"):
            return Statement(QUERY, has_tail)
    if head in _WRITE_WORDS:
        if "RETURNING" in top_words:
            return Statement(DML_RETURNING, has_tail, head in ("INSERT", "REPLACE"))
        return Statement(DML, has_tail, head in ("INSERT", "REPLACE"))
    if head == "BEGIN":
        return Statement(BEGIN, has_tail, takes_write_lock=bool({"IMMEDIATE", "EXCLUSIVE"} & set(top_words)))
    if head in ("COMMIT", "END"):
        return Statement(COMMIT, has_tail)
    if head == "ROLLBACK":
        return Statement(SAVEPOINT if "TO" in top_words else ROLLBACK, has_tail)
    if head in ("SAVEPOINT", "RELEASE"):
        return Statement(SAVEPOINT, has_tail)
    return Statement(OTHER, has_tail)


def split_statements(sql: str) -> list[str]:
    """Split a script into its statements (text of each, without the ';')."""
    out: list[str] = []
    rest = sql
    while True:
        tokens = list(_words(rest))
        if not tokens:
            return out
        end = _first_statement_end(tokens)
        if end == len(tokens):
            out.append(rest[tokens[0][3]:].strip())
            return out
        stmt = rest[:tokens[end][3]].strip()
        if any(t[0] != "semi" for t in tokens[:end]):
            out.append(stmt)
        rest = rest[tokens[end][4]:]
