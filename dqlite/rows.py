"""``dqlite.Row``: a result row readable by index and by column name.

For ``conn.row_factory = dqlite.Row`` (or a cursor's ``row_factory``), as
``sqlite3.Row`` is for sqlite3, which only accepts sqlite3's own cursors.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

__all__ = ["Row"]


class _Columns:
    """The column names of one ``cursor.description``, and where each name is."""

    __slots__ = ("names", "index")

    def __init__(self, description: tuple) -> None:
        self.names = tuple(column[0] for column in description)
        self.index: dict[str, int] = {}
        for i, name in enumerate(self.names):
            self.index.setdefault(name.lower(), i)  # the first of equal names, as sqlite3


# Rows of one result share the cursor's description object: its columns are
# worked out once per result, not once per row.
_last: tuple[Any, _Columns | None] = (None, None)


def _columns(description: tuple | None) -> _Columns:
    global _last
    last_description, columns = _last
    if description is not last_description or columns is None:
        columns = _Columns(description or ())
        _last = (description, columns)
    return columns


class Row:
    """A row that reads like a tuple and, by column name, like a mapping.

    ``row[0]``, ``row["name"]`` (names compare case-insensitively, as in
    sqlite3), ``row.keys()``, ``len(row)``, iteration, ``tuple(row)``.
    Rows are equal when their columns and values are.
    """

    __slots__ = ("_values", "_columns")

    def __init__(self, cursor: Any, values: tuple) -> None:
        self._values = values
        self._columns = _columns(cursor.description)

    def __getitem__(self, key: int | str | slice) -> Any:
        if isinstance(key, str):
            try:
                return self._values[self._columns.index[key.lower()]]
            except KeyError:
                raise IndexError(f"no column named {key!r}") from None
        return self._values[key]

    def keys(self) -> list[str]:
        """The column names, in order."""
        return list(self._columns.names)

    def __len__(self) -> int:
        return len(self._values)

    def __iter__(self) -> Iterator[Any]:
        return iter(self._values)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Row):
            return NotImplemented
        return self._columns.names == other._columns.names and self._values == other._values

    def __hash__(self) -> int:
        return hash((self._columns.names, self._values))

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={value!r}" for name, value in zip(self._columns.names, self._values))
        return f"<dqlite.Row {fields}>"
