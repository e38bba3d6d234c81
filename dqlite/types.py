"""PEP 249 type objects and constructors."""

from __future__ import annotations

import datetime
import time

__all__ = [
    "Date", "Time", "Timestamp", "DateFromTicks", "TimeFromTicks", "TimestampFromTicks",
    "Binary", "STRING", "BINARY", "NUMBER", "DATETIME", "ROWID",
]

Date = datetime.date
Time = datetime.time
Timestamp = datetime.datetime


def DateFromTicks(ticks: float) -> datetime.date:
    """The local date of a POSIX timestamp."""
    return Date(*time.localtime(ticks)[:3])


def TimeFromTicks(ticks: float) -> datetime.time:
    """The local time of day of a POSIX timestamp."""
    return Time(*time.localtime(ticks)[3:6])


def TimestampFromTicks(ticks: float) -> datetime.datetime:
    """The local date and time of a POSIX timestamp."""
    return Timestamp(*time.localtime(ticks)[:6])


Binary = bytes


class DBAPITypeObject:
    """Compares equal to each of the type codes it stands for (PEP 249)."""

    def __init__(self, name: str, *values: object) -> None:
        self.name = name
        self.values = frozenset(values)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, DBAPITypeObject):
            return self is other
        return other in self.values

    def __ne__(self, other: object) -> bool:
        return not self.__eq__(other)

    def __hash__(self) -> int:
        return hash(self.name)

    def __repr__(self) -> str:
        return f"dqlite.{self.name}"


# Type codes in cursor.description are the wire type codes of the first row
# (protocol.md §1.4): 1 INTEGER, 2 FLOAT, 3 TEXT, 4 BLOB, 5 NULL, 9 UNIXTIME,
# 10 ISO8601, 11 BOOLEAN.
STRING = DBAPITypeObject("STRING", 3)
BINARY = DBAPITypeObject("BINARY", 4)
NUMBER = DBAPITypeObject("NUMBER", 1, 2, 11)
DATETIME = DBAPITypeObject("DATETIME", 9, 10)
ROWID = DBAPITypeObject("ROWID", 1)
