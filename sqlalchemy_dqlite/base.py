"""The synchronous SQLAlchemy dialect: ``dqlite://host:port/database``.

dqlite runs SQLite on every node, so the dialect is SQLAlchemy's SQLite
dialect with what differs on the wire: how to reach the cluster (URL), who
owns the transaction (SQLAlchemy, through the driver), what the server can do
(read from it at first connect), and how values come back (the server types
some columns by their declared type, protocol.md §1.7).
"""

from __future__ import annotations

import datetime
import json
import re
import sys
import weakref
from typing import Any

from sqlalchemy import exc, pool, util
from sqlalchemy import types as sqltypes
from sqlalchemy.dialects.sqlite.base import (
    DATE,
    DATETIME,
    SQLiteCompiler,
    SQLiteDDLCompiler,
    SQLiteDialect,
    SQLiteExecutionContext,
    SQLiteTypeCompiler,
)
from sqlalchemy.engine import default
from sqlalchemy.engine.characteristics import ConnectionCharacteristic

__all__ = ["DqliteDialect", "DEFAULT_PORT", "BEGIN_MODES"]

#: Port used for a host given without one (the port dqlite's own tools use).
DEFAULT_PORT = 9001

#: Accepted values of the ``dqlite_begin`` execution option, ``begin_mode``
#: and the ``transaction_mode`` URL option: the driver's transaction modes.
BEGIN_MODES = ("AUTO", "DEFERRED", "IMMEDIATE", "EXCLUSIVE")

# Connect options that may be given as URL query parameters, with their types.
# Everything else in the query string is an error: a misspelt option must not
# be silently ignored.
_QUERY_OPTIONS: dict[str, type] = {
    "timeout": float,
    "busy_timeout": float,
    "busy_poll": float,
    "cached_statements": int,
    "max_message_size": int,
    "transaction_mode": str,
    # TLS: PEM files, made into one ssl.SSLContext per engine (see create_connect_args).
    "ssl_ca": str,
    "ssl_cert": str,
    "ssl_key": str,
    # A JSON file keeping the cluster's members across restarts (dqlite.nodestore).
    "node_store": str,
}
_TLS_OPTIONS = ("ssl_ca", "ssl_cert", "ssl_key")
# Options the dialect itself sets on the driver; the user must not.
_DIALECT_OWNED = {
    "autocommit": "use isolation_level='AUTOCOMMIT' (engine or execution option) instead",
    "parse_datetimes": "the dialect parses date/time values itself",
}

_UTC = datetime.timezone.utc


def _from_unixtime(value: int) -> datetime.datetime:
    """A UNIXTIME value (seconds since the epoch, stored as INTEGER) as naive UTC."""
    return datetime.datetime.fromtimestamp(value, _UTC).replace(tzinfo=None)


# -- types -------------------------------------------------------------------


class _DqliteDateTime(DATETIME):
    """DATETIME whose values arrive as the server's raw text (parsed once, here).

    A column declared DATETIME/DATE/TIMESTAMP comes back as ISO-8601 text, or
    as an integer (UNIXTIME) when another client stored seconds since the epoch.
    """

    def result_processor(self, dialect: Any, coltype: object) -> Any:
        parse = super().result_processor(dialect, coltype)

        def process(value: Any) -> Any:
            if value is None or value.__class__ is str:
                return parse(value)
            if isinstance(value, int):
                return _from_unixtime(value)
            if isinstance(value, datetime.datetime):
                return value
            return parse(value)

        return process


class _DqliteDate(DATE):
    """DATE, with the same raw-value handling as :class:`_DqliteDateTime`."""

    def result_processor(self, dialect: Any, coltype: object) -> Any:
        parse = super().result_processor(dialect, coltype)

        def process(value: Any) -> Any:
            if value is None or value.__class__ is str:
                if value and len(value) > 10 and self._reg is None:
                    # A full timestamp written by another client.
                    return datetime.datetime.fromisoformat(value).date()
                return parse(value)
            if isinstance(value, int):
                return _from_unixtime(value).date()
            if isinstance(value, datetime.datetime):
                return value.date()
            return parse(value)

        return process


class DqliteTypeCompiler(SQLiteTypeCompiler):
    def visit_BOOLEAN(self, type_: Any, **kw: Any) -> str:
        # Not "BOOLEAN": a dqlite server types a column declared exactly
        # BOOLEAN itself and sends NULL in it as false (1.11), and aborts on
        # a non-integer value in it.  "BOOL" has the same (NUMERIC) affinity
        # and reflects as BOOLEAN.
        return "BOOL"


class DqliteCompiler(SQLiteCompiler):
    # An explicit .returning() compiles as on SQLite; the driver refuses to
    # send it (NotSupportedError), and the dialect's returning flags are off
    # so SQLAlchemy never adds RETURNING by itself.
    pass


class DqliteDDLCompiler(SQLiteDDLCompiler):
    def post_create_table(self, table: Any) -> str:
        if table.dialect_options["sqlite"]["strict"]:
            version = self.dialect.server_version_info
            if version is not None and version < (3, 37):
                raise exc.CompileError(
                    f"STRICT tables need SQLite 3.37 or later; this dqlite server runs "
                    f"SQLite {'.'.join(map(str, version))}")
        return super().post_create_table(table)


class DqliteExecutionContext(SQLiteExecutionContext):
    pass


# -- transactions ------------------------------------------------------------


class _BeginModeCharacteristic(ConnectionCharacteristic):
    """The ``dqlite_begin`` execution option: the driver connection's
    ``transaction_mode`` (AUTO, DEFERRED, IMMEDIATE or EXCLUSIVE), put back
    to the engine's when the connection returns to the pool."""

    transactional = True

    def reset_characteristic(self, dialect: Any, dbapi_conn: Any) -> None:
        dbapi_conn.transaction_mode = dialect._engine_modes.get(dbapi_conn, dbapi_conn.transaction_mode)

    def set_characteristic(self, dialect: Any, dbapi_conn: Any, value: Any) -> None:
        mode = _begin_mode(value)
        dialect._engine_modes.setdefault(dbapi_conn, dbapi_conn.transaction_mode)
        dbapi_conn.transaction_mode = mode

    def get_characteristic(self, dialect: Any, dbapi_conn: Any) -> Any:
        return dbapi_conn.transaction_mode


def _begin_mode(value: Any) -> str:
    mode = str(value).strip().upper() if value is not None else ""
    if mode not in BEGIN_MODES:
        raise exc.ArgumentError(
            f"Invalid dqlite BEGIN mode {value!r}; expected one of {', '.join(BEGIN_MODES)}")
    return mode


# -- the dialect -------------------------------------------------------------


class DqliteDialect(SQLiteDialect):
    """SQLAlchemy dialect for dqlite through the ``dqlite`` DB-API driver."""

    name = "dqlite"
    driver = "dqlite"
    default_paramstyle = "qmark"
    supports_statement_cache = True
    returns_native_bytes = True
    description_encoding = None

    # The driver refuses INSERT/UPDATE/DELETE ... RETURNING: a dqlite 1.11
    # server aborts when a write runs through a query request (protocol.md
    # §4.2, §8.5).  initialize() keeps these off.
    insert_returning = False
    update_returning = False
    update_returning_multifrom = False
    delete_returning = False
    delete_returning_multifrom = False
    # executemany is pipelined by the driver: as fast as a multi-row INSERT,
    # without the 255-parameter limit of 1.11 servers.
    use_insertmanyvalues = False

    colspecs = util.update_copy(
        SQLiteDialect.colspecs,
        {sqltypes.DateTime: _DqliteDateTime, sqltypes.Date: _DqliteDate},
    )
    execution_ctx_cls = DqliteExecutionContext
    statement_compiler = DqliteCompiler
    type_compiler_cls = DqliteTypeCompiler
    ddl_compiler = DqliteDDLCompiler

    connection_characteristics = util.immutabledict(
        {**SQLiteDialect.connection_characteristics, "dqlite_begin": _BeginModeCharacteristic()}
    )

    _isolation_lookup = util.immutabledict({"SERIALIZABLE": 0, "AUTOCOMMIT": None})

    def __init__(
        self,
        begin_mode: str | None = None,
        json_serializer: Any = None,
        json_deserializer: Any = None,
        **kwargs: Any,
    ) -> None:
        # SQLiteDialect.__init__ reads the SQLite version from the DB-API
        # module (sqlite3's library version); here it is the server's, read
        # in initialize().  So the base is initialised directly.
        kwargs.pop("native_datetime", None)
        default.DefaultDialect.__init__(self, **kwargs)
        self._json_serializer = json_serializer
        self._json_deserializer = json_deserializer
        self.native_datetime = False
        #: The transaction mode of every connection (None: the URL's
        #: ``transaction_mode``, else the driver's default, AUTO).
        self.begin_mode = None if begin_mode is None else _begin_mode(begin_mode)
        #: Most parameters the server takes in one statement (None: no limit
        #: that matters); read from the server in initialize().
        self.max_parameters: int | None = _SCHEMA0_MAX_PARAMS
        # The mode a DB-API connection had before a dqlite_begin option changed it.
        self._engine_modes: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()
        if "alembic" in sys.modules:
            # Alembic older than 1.18 does not load plugins: register here.
            import sqlalchemy_dqlite.alembic_impl  # noqa: F401

    @classmethod
    def import_dbapi(cls) -> Any:
        import dqlite

        return dqlite

    @classmethod
    def get_pool_class(cls, url: Any) -> type[pool.Pool]:
        return pool.QueuePool

    # -- connecting ----------------------------------------------------------

    def create_connect_args(self, url: Any) -> tuple[list[Any], dict[str, Any]]:
        addresses, database, opts = parse_url(url)
        files = [opts.pop(name, None) for name in _TLS_OPTIONS]
        if any(f is not None for f in files):
            # One context for every connection of the engine, made now: a
            # wrong path fails create_engine(), not the first checkout.
            from dqlite.exceptions import InterfaceError
            from dqlite.tls import client_context

            try:
                opts["ssl"] = client_context(*files)
            except InterfaceError as error:
                raise exc.ArgumentError(f"dqlite URL: {error}") from None
        opts["autocommit"] = False
        opts["parse_datetimes"] = False
        if "transaction_mode" in opts:
            opts["transaction_mode"] = _begin_mode(opts["transaction_mode"])
        if self.begin_mode is not None:
            opts["transaction_mode"] = self.begin_mode
        return [addresses, database], opts

    def on_connect(self) -> Any:
        return None

    def _get_server_version_info(self, connection: Any) -> tuple[int, ...]:
        version = connection.exec_driver_sql("SELECT sqlite_version()").scalar()
        return tuple(int(part) for part in re.findall(r"\d+", version)[:3])

    def initialize(self, connection: Any) -> None:
        super().initialize(connection)
        version = self.server_version_info or (0,)
        # The same feature flags SQLiteDialect derives from the library
        # version, derived from the server's SQLite instead.
        self._broken_dotted_colnames = version < (3, 10, 0)
        self.supports_default_values = version >= (3, 3, 8)
        self.supports_cast = version >= (3, 2, 3)
        self.supports_multivalues_insert = version >= (3, 7, 11)
        self._broken_fk_pragma_quotes = version < (3, 6, 14)
        # RETURNING would need SQLite 3.35 *and* a server that runs it
        # through EXEC; the driver refuses it on every server for now.
        self.insert_returning = self.update_returning = self.delete_returning = False
        self.update_returning_multifrom = self.delete_returning_multifrom = False
        self.max_parameters = self._probe_max_parameters(connection)

    def _probe_max_parameters(self, connection: Any) -> int | None:
        """255 if the server takes no more parameters per statement (1.11), else None.

        A 1.11 server has only 8-bit parameter counts; the driver refuses a
        statement with more (NotSupportedError) before sending it.
        """
        n = _SCHEMA0_MAX_PARAMS + 1
        cursor = connection.connection.dbapi_connection.cursor()
        try:
            cursor.execute("SELECT " + ", ".join(["?"] * n), tuple(range(n)))
            cursor.fetchall()
        except self.loaded_dbapi.NotSupportedError:
            return _SCHEMA0_MAX_PARAMS
        finally:
            cursor.close()
        return None

    def do_execute(self, cursor: Any, statement: str, parameters: Any, context: Any = None) -> None:
        limit = self.max_parameters
        if limit is not None and parameters and len(parameters) > limit:
            # An IN list of more than 255 values (the ORM's selectinload
            # sends up to 500): bind the whole list as one JSON array that
            # the server unpacks with json_each.  Values stay bound, never
            # written into the SQL; what cannot be rewritten is sent as it
            # is and refused by the driver.
            rewritten = bind_in_lists_as_json(statement, parameters)
            if rewritten is not None:
                statement, parameters = rewritten
        cursor.execute(statement, parameters)

    def _get_default_schema_name(self, connection: Any) -> str:
        return "main"

    # -- transactions --------------------------------------------------------

    def get_isolation_level_values(self, dbapi_connection: Any) -> list[str]:
        return ["SERIALIZABLE", "AUTOCOMMIT"]

    def set_isolation_level(self, dbapi_connection: Any, level: str) -> None:
        # SERIALIZABLE: the driver's PEP 249 mode, whose implicit BEGIN travels
        # with the first statement of the transaction (no extra round trip).
        # AUTOCOMMIT: statements are sent as they are.
        dbapi_connection.autocommit = level == "AUTOCOMMIT"

    def get_isolation_level(self, dbapi_connection: Any) -> str:
        # SQLite transactions are serializable; READ UNCOMMITTED only has an
        # effect in shared-cache mode, which dqlite does not use.
        return "SERIALIZABLE"

    def get_default_isolation_level(self, dbapi_conn: Any) -> str:
        return "SERIALIZABLE"

    def detect_autocommit_setting(self, dbapi_conn: Any) -> bool:
        return bool(dbapi_conn.autocommit)

    def do_begin(self, dbapi_connection: Any) -> None:
        # The driver begins the transaction itself, in its transaction mode,
        # with the transaction's first statement (no round trip of its own).
        pass

    # -- errors and pooling --------------------------------------------------

    def do_ping(self, dbapi_connection: Any) -> bool:
        # The driver's ping asks the node whether it still leads: no SQL, so
        # no transaction is opened, and a connection to a deposed leader is
        # replaced too.
        dbapi_connection.ping()
        return True

    def is_disconnect(self, e: Any, connection: Any, cursor: Any) -> bool:
        dbapi = self.loaded_dbapi
        if isinstance(e, (dbapi.ConnectionLostError, dbapi.ProtocolError)):
            return True
        if isinstance(e, dbapi.ProgrammingError) and "closed connection" in str(e):
            return True
        return False


# Parameters per statement a server without 32-bit parameter counts takes.
_SCHEMA0_MAX_PARAMS = 255

_PLACEHOLDERS = re.compile(
    r"""'(?:[^']|'')*'|"(?:[^"]|"")*"|`(?:[^`]|``)*`|\[[^\]]*\]|--[^\n]*|/\*.*?\*/|(\?)""",
    re.DOTALL,
)
# An IN list of bare placeholders, as SQLAlchemy renders an expanding IN.
_IN_LIST = re.compile(r"\bIN\s*\(\s*\?(?:\s*,\s*\?)*\s*\)", re.IGNORECASE)
_INT64 = range(-(1 << 63), 1 << 63)


def _json_value(value: Any) -> Any:
    """``value`` as the driver would bind it, in JSON terms; TypeError if it has none."""
    cls = value.__class__
    if value is None or cls is str or cls is bool:
        return value
    if cls is int:
        if value not in _INT64:
            raise TypeError("integer out of range")
        return value
    if cls is float:
        if value != value or value in (float("inf"), float("-inf")):
            raise TypeError("no JSON for NaN or infinity")
        return value
    if isinstance(value, datetime.datetime):
        return value.isoformat(" ")
    if isinstance(value, (datetime.date, datetime.time)):
        return value.isoformat()
    raise TypeError(f"{cls.__name__} has no JSON form")  # bytes, Decimal, ...: left alone


def bind_in_lists_as_json(statement: str, parameters: Any) -> tuple[str, tuple] | None:
    """Rewrite ``IN (?, ?, ...)`` lists as ``IN (SELECT value FROM json_each(?))``.

    Each list's values become one JSON array bound to one placeholder, so a
    statement with hundreds of keys fits a server limited to 255 parameters.
    Returns (statement, parameters), or None when nothing could be rewritten.
    """
    # Where each placeholder outside quotes and comments sits.
    positions = [m.start(1) for m in _PLACEHOLDERS.finditer(statement) if m.group(1)]
    if len(positions) != len(parameters):
        return None
    index_of = {pos: i for i, pos in enumerate(positions)}
    out: list[str] = []
    params: list[Any] = []
    done = 0          # statement text copied so far
    taken = 0         # parameters consumed so far
    changed = False
    for match in _IN_LIST.finditer(statement):
        marks = [pos for pos in range(match.start(), match.end()) if pos in index_of]
        if not marks or marks[0] < done or len(marks) != match.group(0).count("?"):
            continue  # a '?' inside quotes, or overlapping: leave it
        first, last = index_of[marks[0]], index_of[marks[-1]]
        values = list(parameters[first:last + 1])
        try:
            array = json.dumps([_json_value(v) for v in values], ensure_ascii=False)
        except (TypeError, ValueError):
            continue
        out.append(statement[done:match.start()])
        out.append("IN (SELECT value FROM json_each(?))")
        params.extend(parameters[taken:first])
        params.append(array)
        done, taken = match.end(), last + 1
        changed = True
    if not changed:
        return None
    out.append(statement[done:])
    params.extend(parameters[taken:])
    return "".join(out), tuple(params)


def parse_url(url: Any) -> tuple[list[str], str, dict[str, Any]]:
    """Split a ``dqlite://`` URL into bootstrap addresses, database and connect options.

    Forms: ``dqlite://host:port/db``, ``dqlite:///db?host=h1:9001&host=h2:9001``
    (both may be combined; the netloc host comes first) and
    ``URL.create("dqlite", database="db", query={"host": [...]})``.
    """
    if url.username or url.password:
        raise exc.ArgumentError(
            "dqlite URLs take no user name or password: dqlite has no authentication "
            "(secure the cluster at the network level, e.g. with TLS)")
    addresses: list[str] = []
    if url.host:
        addresses.append(_address(url.host, url.port))
    elif url.port:
        raise exc.ArgumentError(f"dqlite URL {url!r} has a port but no host")
    query = dict(url.query)
    hosts = query.pop("host", ())
    if isinstance(hosts, str):
        hosts = (hosts,)
    for entry in hosts:
        for part in entry.split(","):
            part = part.strip()
            if part:
                addresses.append(_split_address(part))
    if not addresses:
        raise exc.ArgumentError(
            "dqlite URL names no node: use dqlite://host:port/database or "
            "dqlite:///database?host=host1:port&host=host2:port")
    if not url.database:
        raise exc.ArgumentError("dqlite URL names no database: dqlite://host:port/database")
    opts: dict[str, Any] = {}
    for key, value in query.items():
        if key in _DIALECT_OWNED:
            raise exc.ArgumentError(f"dqlite URL option {key!r} is not accepted: {_DIALECT_OWNED[key]}")
        type_ = _QUERY_OPTIONS.get(key)
        if type_ is None:
            raise exc.ArgumentError(
                f"Unknown dqlite URL option {key!r}; accepted: "
                f"{', '.join(['host', *_QUERY_OPTIONS])}")
        if isinstance(value, tuple):
            raise exc.ArgumentError(f"dqlite URL option {key!r} is given more than once")
        try:
            opts[key] = type_(value)
        except ValueError:
            raise exc.ArgumentError(f"dqlite URL option {key}={value!r} is not a valid {type_.__name__}") from None
    if opts.get("node_store") == "":
        raise exc.ArgumentError("dqlite URL option 'node_store' needs a file path")
    return list(dict.fromkeys(addresses)), url.database, opts


def _address(host: str, port: int | None) -> str:
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"  # an IPv6 literal
    return f"{host}:{port or DEFAULT_PORT}"


def _split_address(text: str) -> str:
    match = re.fullmatch(r"(\[[^\]]+\]|[^:\[\]]+)(?::(\d+))?", text)
    if match is None:
        raise exc.ArgumentError(f"Invalid dqlite node address {text!r}; expected host:port")
    host, port = match.groups()
    return f"{host}:{int(port) if port else DEFAULT_PORT}"


dialect = DqliteDialect
