"""The SQLAlchemy dialect (sync and asyncio) against the session's real cluster:
URLs, transactions, types, server capabilities, pooling and disconnects."""

from __future__ import annotations

import asyncio
import datetime
import decimal

import pytest
import sqlalchemy as sa
from sqlalchemy import exc
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import create_async_engine

import dqlite
from sqlalchemy_dqlite.aio import DqliteDialect_aio
from sqlalchemy_dqlite.base import DqliteDialect


@pytest.fixture
def url(dqlite_cluster, dqlite_database) -> str:
    return f"dqlite://{dqlite_cluster.addresses[0]}/{dqlite_database}"


@pytest.fixture
def engine(url):
    engine = sa.create_engine(url)
    yield engine
    engine.dispose()


@pytest.fixture
def observer(dqlite_cluster, dqlite_database):
    """A plain driver connection in autocommit mode, to look at what was committed.

    It does not wait for a write lock (``write_lock_is_held``)."""
    conn = dqlite.connect(dqlite_cluster.addresses, dqlite_database, autocommit=True, busy_timeout=0)
    yield conn
    conn.close()


def count(conn, table="t") -> int:
    return conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]


# -- URLs ----------------------------------------------------------------------


def connect_args(url) -> tuple[list, dict]:
    return DqliteDialect().create_connect_args(make_url(url) if isinstance(url, str) else url)


def test_url_with_one_host():
    args, kwargs = connect_args("dqlite://10.0.0.1:9001/app")
    assert args == [["10.0.0.1:9001"], "app"]
    assert kwargs == {"autocommit": False, "parse_datetimes": False}


def test_url_with_several_hosts_in_the_query():
    args, _ = connect_args("dqlite:///app?host=h1:9001&host=h2:9002&host=h3")
    assert args == [["h1:9001", "h2:9002", "h3:9001"], "app"]


def test_url_netloc_host_comes_first_and_duplicates_go():
    args, _ = connect_args("dqlite://h1:9001/app?host=h2:9001&host=h1:9001")
    assert args[0] == ["h1:9001", "h2:9001"]


def test_url_create_with_a_host_list():
    url = URL.create("dqlite", database="app", query={"host": ["h1:1", "h2:2"], "timeout": "2.5"})
    args, kwargs = connect_args(url)
    assert args == [["h1:1", "h2:2"], "app"]
    assert kwargs["timeout"] == 2.5


def test_url_ipv6_hosts():
    args, _ = connect_args("dqlite://[::1]:9001/app?host=[fe80::1]:9002")
    assert args[0] == ["[::1]:9001", "[fe80::1]:9002"]


def test_url_connect_options_are_typed():
    _, kwargs = connect_args(
        "dqlite://h:1/app?timeout=3&busy_timeout=0.5&busy_poll=0&cached_statements=16&max_message_size=4096")
    assert kwargs == {"timeout": 3.0, "busy_timeout": 0.5, "busy_poll": 0.0, "cached_statements": 16,
                      "max_message_size": 4096, "autocommit": False, "parse_datetimes": False}


@pytest.mark.parametrize("url, message", [
    ("dqlite://h:1/app?bogus=1", "Unknown dqlite URL option 'bogus'"),
    ("dqlite://h:1/app?timeout=soon", "not a valid float"),
    ("dqlite://h:1/app?timeout=1&timeout=2", "more than once"),
    ("dqlite://h:1/app?autocommit=true", "isolation_level='AUTOCOMMIT'"),
    ("dqlite://h:1/app?parse_datetimes=1", "parses date/time values itself"),
    ("dqlite://user:secret@h:1/app", "no user name or password"),
    ("dqlite://user@h:1/app", "no user name or password"),
    ("dqlite:///app", "names no node"),
    ("dqlite://h:1", "names no database"),
    ("dqlite:///app?host=h:port", "Invalid dqlite node address"),
])
def test_bad_urls_are_rejected(url, message):
    with pytest.raises(exc.ArgumentError, match=message):
        connect_args(url)


def test_bad_url_fails_at_create_engine():
    with pytest.raises(exc.ArgumentError, match="tiemout"):
        sa.create_engine("dqlite://h:1/app?tiemout=3")


@pytest.mark.parametrize("scheme, cls", [
    ("dqlite", DqliteDialect),
    ("dqlite+dqlite", DqliteDialect),
    ("dqlite+aio", DqliteDialect_aio),
])
def test_entry_points(scheme, cls):
    assert make_url(f"{scheme}://h:1/app").get_dialect() is cls


def test_connects_through_every_url_form(dqlite_cluster, dqlite_database, observer):
    observer.execute("CREATE TABLE t (x)")
    a, b, c = dqlite_cluster.addresses
    urls = [
        f"dqlite://{a}/{dqlite_database}",
        f"dqlite+dqlite:///{dqlite_database}?host={b}&host={c}&timeout=5",
        URL.create("dqlite", database=dqlite_database, query={"host": [c, a]}),
    ]
    for url in urls:
        engine = sa.create_engine(url)
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT count(*) FROM t")).scalar() == 0
        engine.dispose()


# -- server capabilities -------------------------------------------------------


def test_capabilities_come_from_the_server(engine):
    with engine.connect() as conn:
        version = conn.exec_driver_sql("SELECT sqlite_version()").scalar()
    dialect = engine.dialect
    assert dialect.server_version_info == tuple(int(p) for p in version.split("."))
    assert dialect.supports_multivalues_insert
    # RETURNING through a query aborts a 1.11 server: never offered.
    assert not (dialect.insert_returning or dialect.update_returning or dialect.delete_returning)
    assert dialect.default_isolation_level == "SERIALIZABLE"


def test_orm_insert_does_not_use_returning(engine):
    metadata = sa.MetaData()
    t = sa.Table("t", metadata, sa.Column("id", sa.Integer, primary_key=True), sa.Column("x", sa.Integer))
    metadata.create_all(engine)
    with engine.begin() as conn:
        result = conn.execute(t.insert().values(x=1))
        assert result.inserted_primary_key == (1,)
        conn.execute(t.insert(), [{"x": i} for i in range(2, 300)])
        assert conn.execute(sa.select(sa.func.count()).select_from(t)).scalar() == 299


def test_strict_tables(engine):
    metadata = sa.MetaData()
    t = sa.Table("strict_t", metadata, sa.Column("id", sa.Integer, primary_key=True),
                 sa.Column("n", sa.Integer), sqlite_strict=True)
    metadata.create_all(engine)
    with engine.begin() as conn, pytest.raises(exc.IntegrityError):
        conn.execute(t.insert().values(id=1, n="not a number"))


# -- transactions ----------------------------------------------------------------


@pytest.fixture
def table(engine):
    metadata = sa.MetaData()
    t = sa.Table("t", metadata, sa.Column("x", sa.Integer, unique=True))
    metadata.create_all(engine)
    return t


def test_commit_and_rollback(engine, table, observer):
    with engine.begin() as conn:
        conn.execute(table.insert().values(x=1))
        assert count(observer) == 0  # not visible before COMMIT
    assert count(observer) == 1
    with engine.connect() as conn:
        conn.execute(table.insert().values(x=2))
        conn.rollback()
    assert count(observer) == 1
    with pytest.raises(exc.IntegrityError), engine.begin() as conn:
        conn.execute(table.insert().values(x=3))
        conn.execute(table.insert().values(x=1))
    assert count(observer) == 1


def test_autocommit_isolation_level(engine, url, table, observer):
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(table.insert().values(x=1))
        assert count(observer) == 1  # committed at once
        assert conn.connection.dbapi_connection.autocommit
    auto = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    with auto.connect() as conn:
        conn.execute(table.insert().values(x=2))
        assert count(observer) == 2
    auto.dispose()
    # A connection going back to the pool is reset to SERIALIZABLE.
    with engine.connect() as conn:
        assert not conn.connection.dbapi_connection.autocommit
        conn.execute(table.insert().values(x=3))
        assert count(observer) == 2
        conn.commit()
    assert count(observer) == 3


def test_invalid_isolation_level(url):
    engine = sa.create_engine(url, isolation_level="READ COMMITTED")
    with pytest.raises(exc.ArgumentError, match="SERIALIZABLE, AUTOCOMMIT"):
        engine.connect()


def test_savepoints_with_generated_names(engine, table, observer):
    with engine.begin() as conn:
        conn.execute(table.insert().values(x=1))
        with conn.begin_nested():
            conn.execute(table.insert().values(x=2))
        nested = conn.begin_nested()
        conn.execute(table.insert().values(x=3))
        inner = conn.begin_nested()
        conn.execute(table.insert().values(x=4))
        inner.rollback()
        nested.rollback()
        with pytest.raises(exc.IntegrityError), conn.begin_nested():
            conn.execute(table.insert().values(x=1))  # fails, only the savepoint is undone
        conn.execute(table.insert().values(x=5))
    assert [r[0] for r in observer.execute("SELECT x FROM t ORDER BY x")] == [1, 2, 5]


def test_begin_nested_in_autocommit_mode(engine, table, observer):
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        with conn.begin_nested():
            conn.execute(table.insert().values(x=1))
        savepoint = conn.begin_nested()
        conn.execute(table.insert().values(x=2))
        savepoint.rollback()
    assert count(observer) == 1


def write_lock_is_held(observer) -> bool:
    """True if another connection's write fails with "database is locked" now."""
    try:
        observer.execute("INSERT INTO t (x) VALUES (100)")
    except dqlite.OperationalError as error:
        assert "locked" in str(error)
        return True
    observer.execute("DELETE FROM t WHERE x = 100")
    return False


def test_begin_is_deferred_by_default(engine, table, observer):
    with engine.begin() as conn:
        conn.execute(sa.select(table)).all()
        assert not write_lock_is_held(observer)


@pytest.mark.parametrize("how", ["engine", "engine_option", "connection_option"])
def test_begin_immediate(url, table, observer, how):
    if how == "engine":
        engine = sa.create_engine(url, begin_mode="immediate")
    elif how == "engine_option":
        engine = sa.create_engine(url, execution_options={"dqlite_begin": "IMMEDIATE"})
    else:
        engine = sa.create_engine(url)
    with engine.connect() as conn:
        if how == "connection_option":
            conn.execution_options(dqlite_begin="IMMEDIATE")
        assert conn.get_execution_options().get("dqlite_begin", "IMMEDIATE") == "IMMEDIATE"
        with conn.begin():
            # BEGIN IMMEDIATE, sent with the first statement, takes the
            # write lock before any write.
            conn.execute(sa.select(table)).all()
            assert write_lock_is_held(observer)
    # The per-connection option does not outlive the checkout.
    if how == "connection_option":
        with engine.connect() as conn, conn.begin():
            conn.execute(sa.select(table)).all()
            assert not write_lock_is_held(observer)
    engine.dispose()


def test_pre_ping_opens_no_transaction(url, table, observer):
    engine = sa.create_engine(url, pool_pre_ping=True, begin_mode="IMMEDIATE")
    for _ in range(2):
        with engine.connect() as conn:
            assert not conn.connection.dbapi_connection.in_transaction  # pinged, nothing open
            with conn.begin():
                conn.execute(table.insert().values(x=_))
                assert write_lock_is_held(observer)
    assert count(observer) == 2
    engine.dispose()


def test_begin_mode_is_validated(url):
    with pytest.raises(exc.ArgumentError, match="BEGIN mode"):
        sa.create_engine(url, begin_mode="sometimes")
    engine = sa.create_engine(url)
    with engine.connect() as conn, pytest.raises(exc.ArgumentError, match="BEGIN mode"):
        conn.execution_options(dqlite_begin="LATER")
    engine.dispose()


def test_returning_is_refused_not_sent(engine, table, observer):
    with engine.begin() as conn:
        with pytest.raises(exc.NotSupportedError, match="RETURNING"):
            conn.execute(table.insert().values(x=1).returning(table.c.x))
        with pytest.raises(exc.StatementError, match="RETURNING when executemany"):
            conn.execute(table.insert().returning(table.c.x), [{"x": 2}, {"x": 3}])
    assert count(observer) == 0


# -- types ---------------------------------------------------------------------


@pytest.fixture
def types_table(engine):
    metadata = sa.MetaData()
    t = sa.Table(
        "types", metadata,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("flag", sa.Boolean),
        sa.Column("flag_ck", sa.Boolean(create_constraint=True)),
        sa.Column("ts", sa.DateTime),
        sa.Column("stamp", sa.TIMESTAMP),
        sa.Column("day", sa.Date),
        sa.Column("clock", sa.Time),
        sa.Column("price", sa.Numeric(12, 4)),
        sa.Column("ratio", sa.Float),
        sa.Column("blob", sa.LargeBinary),
        sa.Column("doc", sa.JSON),
        sa.Column("text", sa.Unicode(20)),
    )
    metadata.create_all(engine)
    return t


def test_boolean_ddl_avoids_the_boolean_decltype(engine, types_table):
    with engine.connect() as conn:
        ddl = conn.exec_driver_sql("SELECT sql FROM sqlite_master WHERE name = 'types'").scalar()
    assert "flag BOOL," in ddl and "BOOLEAN" not in ddl
    columns = {c["name"]: c["type"] for c in sa.inspect(engine).get_columns("types")}
    assert isinstance(columns["flag"], sa.BOOLEAN)
    assert isinstance(columns["ts"], sa.DATETIME) and isinstance(columns["day"], sa.DATE)


def test_nullable_boolean_keeps_null(engine, types_table):
    t = types_table
    with engine.begin() as conn:
        conn.execute(t.insert(), [{"id": 1, "flag": None, "flag_ck": None},
                                  {"id": 2, "flag": True, "flag_ck": True},
                                  {"id": 3, "flag": False, "flag_ck": False}])
    with engine.connect() as conn:
        rows = conn.execute(sa.select(t.c.flag, t.c.flag_ck).order_by(t.c.id)).all()
        assert rows == [(None, None), (True, True), (False, False)]
        assert all(type(v) is bool for row in rows[1:] for v in row)
        assert conn.execute(sa.select(sa.func.count()).where(t.c.flag.is_(None))).scalar() == 1
        # Booleans from expressions come back as bool too.
        assert conn.execute(sa.select(t.c.flag == sa.true()).where(t.c.id == 2)).scalar() is True
        assert conn.execute(sa.select(sa.not_(t.c.flag)).where(t.c.id == 2)).scalar() is False
        assert conn.execute(sa.select(sa.cast(sa.literal(1), sa.Boolean))).scalar() is True


def test_datetime_round_trip_with_microseconds(engine, types_table):
    t = types_table
    ts = datetime.datetime(2024, 2, 29, 23, 59, 58, 123456)
    old = datetime.datetime(1, 1, 1, 0, 0, 0, 1)
    with engine.begin() as conn:
        conn.execute(t.insert(), [
            {"id": 1, "ts": ts, "stamp": ts, "day": ts.date(), "clock": ts.time()},
            {"id": 2, "ts": old, "stamp": None, "day": datetime.date(1900, 1, 1),
             "clock": datetime.time(0, 0, 0, 1)},
            {"id": 3, "ts": None, "stamp": None, "day": None, "clock": None},
        ])
    with engine.connect() as conn:
        rows = conn.execute(sa.select(t.c.ts, t.c.stamp, t.c.day, t.c.clock).order_by(t.c.id)).all()
        assert rows == [
            (ts, ts, ts.date(), ts.time()),
            (old, None, datetime.date(1900, 1, 1), datetime.time(0, 0, 0, 1)),
            (None, None, None, None),
        ]
        assert conn.execute(sa.select(t.c.id).where(t.c.ts > old)).scalars().all() == [1]
        assert conn.execute(sa.select(sa.func.max(t.c.ts))).scalar() == ts


def test_datetime_written_by_other_clients(engine, types_table, observer):
    """ISO-8601 with 'T' and an offset (Go clients) and UNIXTIME integers are read too."""
    observer.execute("INSERT INTO types (id, ts, day) VALUES (1, '2024-01-02T03:04:05.5+00:00', "
                     "'2024-01-02 10:00:00')")
    observer.execute("INSERT INTO types (id, ts, day) VALUES (2, 1700000000, 1700000000)")
    t = types_table
    with engine.connect() as conn:
        rows = conn.execute(sa.select(t.c.ts, t.c.day).order_by(t.c.id)).all()
    assert rows[0] == (datetime.datetime(2024, 1, 2, 3, 4, 5, 500000, tzinfo=datetime.timezone.utc),
                       datetime.date(2024, 1, 2))
    assert rows[1] == (datetime.datetime(2023, 11, 14, 22, 13, 20), datetime.date(2023, 11, 14))


def test_numeric_float_binary_json_unicode(engine, types_table):
    t = types_table
    doc = {"a": [1, 2.5, None, True, False], "b": {"c": "ü"}}
    with engine.begin() as conn:
        conn.execute(t.insert().values(id=1, price=decimal.Decimal("1234.5678"), ratio=0.25,
                                       blob=bytes(range(256)), doc=doc, text="żółw 🐢"))
        conn.execute(t.insert().values(id=2, doc=None))
    with engine.connect() as conn:
        row = conn.execute(sa.select(t).where(t.c.id == 1)).one()
        assert row.price == decimal.Decimal("1234.5678") and isinstance(row.price, decimal.Decimal)
        assert row.ratio == 0.25
        assert row.blob == bytes(range(256))
        assert row.doc == doc
        assert row.text == "żółw 🐢"
        # JSON element access, typed: booleans come back as bool.
        assert conn.execute(sa.select(t.c.doc["a"][3].as_boolean()).where(t.c.id == 1)).scalar() is True
        assert conn.execute(sa.select(t.c.doc["a"][4].as_boolean()).where(t.c.id == 1)).scalar() is False
        assert conn.execute(sa.select(t.c.doc["b"]["c"].as_string()).where(t.c.id == 1)).scalar() == "ü"
        assert conn.execute(sa.select(t.c.doc).where(t.c.id == 2)).scalar() is None


# -- pooling and disconnects -----------------------------------------------------


def test_pool_class(engine):
    assert isinstance(engine.pool, sa.pool.QueuePool)


def test_is_disconnect(engine):
    dialect = engine.dialect
    assert dialect.is_disconnect(dqlite.ConnectionLostError("x"), None, None)
    assert dialect.is_disconnect(dqlite.TransactionLostError("x"), None, None)
    assert dialect.is_disconnect(dqlite.CommitOutcomeUnknownError("x"), None, None)
    assert dialect.is_disconnect(dqlite.ProtocolError("x"), None, None)
    assert dialect.is_disconnect(dqlite.ProgrammingError("Cannot operate on a closed connection."), None, None)
    assert not dialect.is_disconnect(dqlite.OperationalError("database is locked"), None, None)
    assert not dialect.is_disconnect(dqlite.IntegrityError("UNIQUE constraint failed"), None, None)


def test_a_dead_connection_is_replaced_by_the_pool(engine, table):
    with engine.connect() as conn:
        raw = conn.connection.dbapi_connection
        raw.close()  # as if the socket had died under it
        with pytest.raises(exc.DBAPIError) as info:
            conn.execute(sa.select(table)).all()
        assert info.value.connection_invalidated
    with engine.connect() as conn:
        assert conn.connection.dbapi_connection is not raw
        assert conn.execute(sa.select(sa.func.count()).select_from(table)).scalar() == 0


def test_pool_pre_ping_replaces_a_dead_connection(url, table):
    engine = sa.create_engine(url, pool_pre_ping=True, pool_size=1)
    with engine.connect() as conn:
        raw = conn.connection.dbapi_connection
    raw.close()
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(table)).scalar() == 0
        assert conn.connection.dbapi_connection is not raw
    engine.dispose()


# -- asyncio -------------------------------------------------------------------


def test_async_engine(dqlite_cluster, dqlite_database, observer):
    observer.execute("CREATE TABLE t (x INTEGER UNIQUE, flag BOOL, ts DATETIME)")
    metadata = sa.MetaData()
    t = sa.Table("t", metadata, sa.Column("x", sa.Integer), sa.Column("flag", sa.Boolean),
                 sa.Column("ts", sa.DateTime))
    hosts = "&".join(f"host={a}" for a in dqlite_cluster.addresses)
    ts = datetime.datetime(2024, 5, 6, 7, 8, 9, 10)

    async def main():
        engine = create_async_engine(f"dqlite+aio:///{dqlite_database}?{hosts}")
        assert isinstance(engine.sync_engine.pool, sa.pool.AsyncAdaptedQueuePool)
        async with engine.begin() as conn:
            await conn.execute(t.insert(), [{"x": 1, "flag": None, "ts": ts}, {"x": 2, "flag": True, "ts": None}])
            async with conn.begin_nested() as nested:
                await conn.execute(t.insert().values(x=3))
                await nested.rollback()
        with pytest.raises(exc.IntegrityError):
            async with engine.begin() as conn:
                await conn.execute(t.insert().values(x=4))
                await conn.execute(t.insert().values(x=1))
        async with engine.connect() as conn:
            rows = (await conn.execute(sa.select(t).order_by(t.c.x))).all()
            assert rows == [(1, None, ts), (2, True, None)]
            result = await conn.stream(sa.select(t.c.x).order_by(t.c.x))
            assert [x async for x in result.scalars()] == [1, 2]
        immediate = engine.execution_options(dqlite_begin="IMMEDIATE")
        async with immediate.begin() as conn:
            await conn.execute(sa.select(t))  # takes the lock with its BEGIN IMMEDIATE
            assert write_lock_is_held(observer)
        async with engine.begin() as conn:
            await conn.execute(sa.select(t))
            assert not write_lock_is_held(observer)
        auto = engine.execution_options(isolation_level="AUTOCOMMIT")
        async with auto.connect() as conn:
            await conn.execute(t.delete().where(t.c.x == 2))
            assert count(observer) == 1
        async with engine.connect() as conn:
            conn_ = await conn.get_raw_connection()
            conn_.dbapi_connection.terminate()  # the socket is gone
            with pytest.raises(exc.DBAPIError) as info:
                await conn.execute(sa.select(t))
            assert info.value.connection_invalidated
        async with engine.connect() as conn:
            assert (await conn.execute(sa.select(sa.func.count()).select_from(t))).scalar() == 1
        await engine.dispose()

    asyncio.run(main())


def test_async_pooled_read_awaits_the_driver_once(dqlite_cluster, dqlite_database, observer, monkeypatch):
    """A pooled point read through the asyncio engine (W7's loop) switches out
    of its greenlet once, for the statement; fetching its rows and the pool's
    reset of its read-only transaction await nothing, with or without a
    transaction (docs/performance.md counts what each query costs)."""
    import sqlalchemy_dqlite.aio as sa_aio

    observer.execute("CREATE TABLE t (x INTEGER PRIMARY KEY, s TEXT)")
    observer.execute("INSERT INTO t VALUES (1, 'one'), (2, 'two')")
    t = sa.Table("t", sa.MetaData(), sa.Column("x", sa.Integer, primary_key=True), sa.Column("s", sa.String))
    stmt = sa.select(t.c.x, t.c.s).where(t.c.x == sa.bindparam("x"))
    awaited: list[str] = []
    real_await = sa_aio.await_

    def counting_await(awaitable):
        awaited.append(getattr(awaitable, "__qualname__", type(awaitable).__name__))
        return real_await(awaitable)

    async def main():
        engine = create_async_engine(f"dqlite+aio://{dqlite_cluster.addresses[0]}/{dqlite_database}",
                                     pool_size=1, max_overflow=0)
        async with engine.connect() as conn:  # connects, and prepares the statement
            assert (await conn.execute(stmt, {"x": 1})).all() == [(1, "one")]
        monkeypatch.setattr(sa_aio, "await_", counting_await)
        for each in (engine, engine.execution_options(isolation_level="AUTOCOMMIT")):
            for x, s in ((1, "one"), (2, "two"), (3, None)):
                awaited.clear()
                async with each.connect() as conn:
                    rows = (await conn.execute(stmt, {"x": x})).all()
                    raw = (await conn.get_raw_connection()).dbapi_connection
                assert rows == ([(x, s)] if s else [])
                assert awaited == ["AsyncCursor.execute"]
                assert not raw.in_transaction  # the reset ended the read-only transaction
        monkeypatch.undo()
        await engine.dispose()

    asyncio.run(main())


# -- more parameters than a 1.11 server takes ----------------------------------


def test_large_in_lists_are_bound_as_one_json_array():
    from sqlalchemy_dqlite.base import bind_in_lists_as_json

    sql = """SELECT '?', "a?" , `b?`, [c?] -- ?\n, /* ? */ ? FROM t WHERE x IN (?, ?) AND y IN (?)"""
    assert bind_in_lists_as_json(sql, (0, 1, "it's", None)) == (
        """SELECT '?', "a?" , `b?`, [c?] -- ?\n, /* ? */ ? FROM t WHERE x IN (SELECT value FROM json_each(?))"""
        """ AND y IN (SELECT value FROM json_each(?))""",
        (0, '[1, "it\'s"]', "[null]"))
    assert bind_in_lists_as_json("SELECT ?", (1, 2)) is None  # count mismatch: sent as it is
    assert bind_in_lists_as_json("SELECT ? WHERE x IN (?)", (1, b"\x01")) is None  # no JSON for bytes
    assert bind_in_lists_as_json("SELECT x IN (?)", (float("nan"),)) is None


def test_large_in_lists_and_multi_row_values(engine):
    metadata = sa.MetaData()
    t = sa.Table("many", metadata, sa.Column("id", sa.Integer, primary_key=True),
                 sa.Column("s", sa.String(20)), sa.Column("b", sa.LargeBinary), sa.Column("f", sa.Float))
    metadata.create_all(engine)
    rows = [{"id": i, "s": f"it's {i}" if i % 7 else None, "b": bytes([i // 256, i % 256]), "f": i / 4}
            for i in range(400)]
    with engine.begin() as conn:
        conn.execute(t.insert(), rows)  # executemany: no parameter limit
    limited = engine.dialect.max_parameters == 255  # a 1.11 server
    with engine.connect() as conn:
        ids = conn.execute(sa.select(t.c.id).where(t.c.id.in_(range(0, 400, 1))).order_by(t.c.id))
        assert ids.scalars().all() == list(range(400))
        strings = [r["s"] for r in rows if r["s"] is not None][:300]
        assert conn.execute(sa.select(sa.func.count()).where(t.c.s.in_(strings))).scalar() == 300
        blobs = [r["b"] for r in rows[:300]]
        if limited:
            # Bytes have no JSON form: the statement goes as it is, and is refused.
            with pytest.raises(sa.exc.NotSupportedError, match="at most 255"):
                conn.execute(sa.select(sa.func.count()).where(t.c.b.in_(blobs)))
        else:
            assert conn.execute(sa.select(sa.func.count()).where(t.c.b.in_(blobs))).scalar() == 300
        assert conn.execute(sa.select(t).order_by(t.c.id)).all() == [
            (r["id"], r["s"], r["b"], r["f"]) for r in rows]
    assert engine.dialect.max_parameters in (255, None)


def test_every_closed_requirement_has_a_reason():
    import inspect
    import re

    from sqlalchemy_dqlite import requirements

    source = inspect.getsource(requirements)
    assert "exclusions.closed()" not in source
    reasons = re.findall(r"return closed\((.*)\)", source)
    assert len(reasons) > 20
    assert all(re.fullmatch(r'"[^"]{20,}"', reason) for reason in reasons), reasons
