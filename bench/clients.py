"""How a worker reaches the client it measures.

A *client* is one database access library seen through four doors, one per
driver kind of the workloads:

* ``connect()``: a PEP 249 connection (``cursor()``, ``commit()``, ``close()``,
  cursors with ``execute``/``executemany``/``fetchall``/``fetchmany``);
* ``aconnect()``: an asyncio connection, ``await conn.execute(sql, params)``
  returning a cursor with awaitable ``fetchall``/``fetchmany``, and awaitable
  ``executemany``, ``commit`` and ``close``;
* ``sqlalchemy_url(aio)``: the URL for ``create_engine`` / ``create_async_engine``.

Clients known by name (``--client``):

``dqlite``
    this project's driver (``dqlite``, ``dqlite.aio``, ``dqlite://``,
    ``dqlite+aio://``).
``dqlitedbapi``
    the pure-Python dqlite stack (PyPI ``dqlite-dbapi``, ``sqlalchemy-dqlite``).
``sqlite``
    the local reference: stdlib ``sqlite3``, ``aiosqlite``, ``sqlite://`` and
    ``sqlite+aiosqlite://`` on the seeded file.
``module:NAME``
    any other client, through an adapter module ``NAME`` that defines
    ``connect(addresses, database)``, optionally ``async aconnect(addresses,
    database)`` and the format strings ``SQLALCHEMY_URL`` /
    ``SQLALCHEMY_ASYNC_URL`` (fields ``{address}``, the leader, and
    ``{database}``; default ``dqlite://{address}/{database}`` and
    ``dqlite+aio://...``).
``auto``
    ``module:bench_client`` if a module ``bench_client`` is importable, else
    ``dqlitedbapi``, else ``dqlite``: what ``--compare`` uses by default.

Only the standard library is imported here; each client imports its library
when first used, so a missing one fails only the measurements that need it.
"""

from __future__ import annotations

import importlib
import importlib.util
from importlib import metadata
from typing import Any


class Client:
    """A client under test, bound to a cluster (or, for ``sqlite``, a file)."""

    #: Short label used in reports.
    name = "client"

    def __init__(self, addresses: list[str], database: str, sqlite_path: str | None = None) -> None:
        self.addresses = addresses
        self.database = database
        self.sqlite_path = sqlite_path

    @property
    def leader(self) -> str:
        """The first address: the CLI puts the leader first."""
        return self.addresses[0]

    def version(self) -> str:
        """``name version`` of the library measured."""
        return self.name

    def connect(self, **options: Any) -> Any:
        """A PEP 249 connection; ``options`` are this client's connect options
        (only ``dqlite`` takes any: ``busy_poll``)."""
        raise NotImplementedError(f"{self.name} has no DB-API connect")

    async def aconnect(self) -> Any:
        """An asyncio connection (see the module docstring for the methods used)."""
        raise NotImplementedError(f"{self.name} has no asyncio connect")

    def sqlalchemy_url(self, aio: bool = False) -> str:
        """The SQLAlchemy URL of the benchmark database."""
        scheme = "dqlite+aio" if aio else "dqlite"
        return f"{scheme}://{self.leader}/{self.database}"


def _dist_version(*dists: str) -> str:
    for dist in dists:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return "?"


class DqliteClient(Client):
    """This project's driver."""

    name = "dqlite"

    def version(self) -> str:
        import dqlite

        return f"dqlite {getattr(dqlite, '__version__', '?')}"

    def connect(self, **options: Any) -> Any:
        import dqlite

        return dqlite.connect(self.addresses, self.database, **options)

    async def aconnect(self) -> Any:
        import dqlite.aio

        return await dqlite.aio.connect(self.addresses, self.database)


class DqliteDbapiClient(Client):
    """The pure-Python dqlite stack (``dqlite-dbapi`` and ``sqlalchemy-dqlite`` on PyPI)."""

    name = "dqlitedbapi"
    # No row-count or batch-count caps (M1 streams a million rows), and a
    # per-operation deadline long enough for the slowest workload.
    _options = {"max_total_rows": None, "max_continuation_frames": None, "timeout": 120.0}

    def version(self) -> str:
        return f"dqlite-dbapi {_dist_version('dqlite-dbapi')}"

    def connect(self, **options: Any) -> Any:
        _no_options(self, options)
        import dqlitedbapi

        return dqlitedbapi.connect(self.leader, database=self.database, **self._options)

    async def aconnect(self) -> Any:
        import dqlitedbapi.aio

        return await dqlitedbapi.aio.aconnect(self.leader, database=self.database, **self._options)

    def sqlalchemy_url(self, aio: bool = False) -> str:
        # Its connections refuse other threads by default, as sqlite3's do; a pool hands each
        # to one thread at a time, so W6 turns the check off (as SQLAlchemy does for sqlite3).
        url = super().sqlalchemy_url(aio)
        return url if aio else url + "?check_same_thread=false"


class ModuleClient(Client):
    """Any client, through an adapter module (see the module docstring)."""

    def __init__(self, module: str, addresses: list[str], database: str, sqlite_path: str | None = None) -> None:
        super().__init__(addresses, database, sqlite_path)
        self.module = importlib.import_module(module)
        self.name = getattr(self.module, "NAME", module)

    def version(self) -> str:
        return str(getattr(self.module, "VERSION", self.name))

    def connect(self, **options: Any) -> Any:
        _no_options(self, options)
        return self.module.connect(self.addresses, self.database)

    async def aconnect(self) -> Any:
        aconnect = getattr(self.module, "aconnect", None)
        if aconnect is None:
            raise NotImplementedError(f"adapter {self.module.__name__} defines no aconnect()")
        return await aconnect(self.addresses, self.database)

    def sqlalchemy_url(self, aio: bool = False) -> str:
        default = super().sqlalchemy_url(aio)
        template = getattr(self.module, "SQLALCHEMY_ASYNC_URL" if aio else "SQLALCHEMY_URL", None)
        if template is None:
            return default
        return template.format(address=self.leader, database=self.database)


class SqliteClient(Client):
    """The local reference: sqlite3 (and aiosqlite, SQLAlchemy's sqlite) on a file."""

    name = "sqlite"

    def _path(self) -> str:
        if not self.sqlite_path:
            raise ValueError("the sqlite reference needs --sqlite PATH")
        return self.sqlite_path

    def version(self) -> str:
        import sqlite3

        return f"sqlite3 {sqlite3.sqlite_version}"

    def connect(self, **options: Any) -> Any:
        _no_options(self, options)
        import sqlite3

        return sqlite3.connect(self._path())

    async def aconnect(self) -> Any:
        import aiosqlite

        return await aiosqlite.connect(self._path())

    def sqlalchemy_url(self, aio: bool = False) -> str:
        scheme = "sqlite+aiosqlite" if aio else "sqlite"
        return f"{scheme}:///{self._path()}"


def _no_options(client: Client, options: dict[str, Any]) -> None:
    if options:
        raise NotImplementedError(f"{client.name} takes no connect option ({', '.join(options)})")


def resolve(name: str, addresses: list[str], database: str, sqlite_path: str | None = None) -> Client:
    """The client called ``name`` (see the module docstring)."""
    if name == "auto":
        if importlib.util.find_spec("bench_client") is not None:
            name = "module:bench_client"
        elif importlib.util.find_spec("dqlitedbapi") is not None:
            name = "dqlitedbapi"
        else:
            name = "dqlite"
    if name.startswith("module:"):
        return ModuleClient(name.split(":", 1)[1], addresses, database, sqlite_path)
    classes: dict[str, type[Client]] = {
        "dqlite": DqliteClient,
        "dqlitedbapi": DqliteDbapiClient,
        "sqlite": SqliteClient,
    }
    if name not in classes:
        raise ValueError(f"unknown client {name!r}; known: auto, {', '.join(classes)}, module:NAME")
    return classes[name](addresses, database, sqlite_path)
