"""Alembic support: the migration implementation for dialect name ``dqlite``.

Alembic picks an implementation by dialect name; dqlite's is SQLite's
(including batch mode, "move and copy", for the ALTERs SQLite cannot do),
except that DDL is transactional: the dialect owns BEGIN/COMMIT, and SQLite
rolls DDL back like any other statement, so a failed migration leaves
nothing half-applied.

Registered when Alembic loads its plugins (entry point ``alembic.plugins``,
Alembic 1.18+), and by the dialect itself when Alembic was imported first.
"""

from __future__ import annotations

from typing import Any

from alembic.ddl.sqlite import SQLiteImpl

__all__ = ["DqliteImpl", "setup"]


class DqliteImpl(SQLiteImpl):
    __dialect__ = "dqlite"
    transactional_ddl = True


def setup(plugin: Any) -> None:
    """Alembic plugin hook: importing this module registered the implementation."""
