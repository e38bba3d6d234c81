"""Per-query hooks (Connection.on_query) and the slow-query logger, through both APIs and the pools."""

from __future__ import annotations

import asyncio
import logging

import pytest

import dqlite
import dqlite.aio
from dqlite.hooks import QueryEvent, slow_query_logger
from dqlite.pool import ConnectionPool
from readme import localised, python_block, run

SECRET = "hunter2-secret"


def test_hook_sees_statement_duration_rowcount_and_error(connect, dqlite_database):
    events: list[QueryEvent] = []
    conn = connect(autocommit=True, on_query=events.append)
    conn.execute("CREATE TABLE t (x TEXT)")
    conn.execute("INSERT INTO t VALUES (?)", (SECRET,))
    conn.executemany("INSERT INTO t VALUES (?)", [("a",), ("b",)])
    assert conn.execute("SELECT x FROM t ORDER BY x").fetchall() == [("a",), ("b",), (SECRET,)]
    with pytest.raises(dqlite.OperationalError):
        conn.execute("SELEC 1")
    assert [(e.sql, e.rowcount, e.method) for e in events] == [
        ("CREATE TABLE t (x TEXT)", -1, "execute"),
        ("INSERT INTO t VALUES (?)", 1, "execute"),
        ("INSERT INTO t VALUES (?)", 2, "executemany"),
        ("SELECT x FROM t ORDER BY x", 3, "execute"),
        ("SELEC 1", -1, "execute"),
    ]
    assert all(e.duration >= 0 and e.database == dqlite_database for e in events)
    assert [type(e.error) for e in events] == [type(None)] * 4 + [dqlite.OperationalError]
    assert SECRET not in repr(events[1])  # never the parameters
    conn.on_query = None
    conn.execute("SELECT 1")
    assert len(events) == 5


def test_no_hook_means_the_plain_cursor_class(dqlite_cluster, dqlite_database):
    with dqlite.connect(dqlite_cluster.addresses, dqlite_database) as conn:
        assert type(conn.cursor()) is dqlite.Cursor
        conn.on_query = print
        assert type(conn.cursor()) is not dqlite.Cursor
        conn.on_query = None
        assert type(conn.cursor()) is dqlite.Cursor
        with pytest.raises(dqlite.InterfaceError, match="callable"):
            conn.on_query = "not a function"


def test_a_failing_hook_does_not_fail_the_query(connect, caplog):
    def broken(event):
        raise RuntimeError("hook bug")

    conn = connect(on_query=broken)
    with caplog.at_level(logging.WARNING, logger="dqlite"):
        assert conn.execute("SELECT 7").fetchall() == [(7,)]
    assert "on_query hook" in caplog.text and "hook bug" in caplog.text


def test_slow_query_logger(connect, caplog):
    conn = connect(on_query=slow_query_logger(0.0))
    with caplog.at_level(logging.WARNING, logger="dqlite.query"):
        conn.execute("SELECT ?", (SECRET,)).fetchall()
        with pytest.raises(dqlite.OperationalError):
            conn.execute("SELEC ?", (SECRET,))
    records = [r for r in caplog.records if r.name == "dqlite.query"]
    assert [r.levelno for r in records] == [logging.WARNING, logging.WARNING]
    assert "slow query" in records[0].getMessage() and "SELECT ?" in records[0].getMessage()
    assert "failed" in records[1].getMessage() and "syntax error" in records[1].getMessage()
    assert SECRET not in caplog.text
    # Above the threshold, nothing.
    caplog.clear()
    conn.on_query = slow_query_logger(3600)
    with caplog.at_level(logging.WARNING, logger="dqlite.query"):
        conn.execute("SELECT 1").fetchall()
    assert not [r for r in caplog.records if r.name == "dqlite.query"]


def test_pools_give_their_connections_the_hook(dqlite_cluster, dqlite_database):
    events: list[QueryEvent] = []
    with ConnectionPool(dqlite_cluster.addresses, dqlite_database, max_size=1, on_query=events.append) as pool:
        pool.execute("CREATE TABLE t (x)")
        with pool.acquire() as conn:
            conn.on_query = None  # restored when it comes back
        assert pool.fetchall("SELECT count(*) FROM t") == [(0,)]

    async def main():
        pool = await dqlite.aio.create_pool(dqlite_cluster.addresses, dqlite_database, on_query=events.append)
        await pool.execute("INSERT INTO t VALUES (1)")
        await pool.close()

    asyncio.run(main())
    assert [(e.sql, e.rowcount) for e in events] == [
        ("CREATE TABLE t (x)", -1), ("SELECT count(*) FROM t", 1), ("INSERT INTO t VALUES (1)", 1)]


def test_readme_slow_query_example_runs(dqlite_cluster, caplog):
    code = python_block("slow_query_logger(0.05)").replace("logging.basicConfig()\n", "")
    conn = run(localised(code, dqlite_cluster.addresses, "app"))["conn"]
    conn.on_query = slow_query_logger(0.0)  # every statement is "slow": the log shows it
    with caplog.at_level(logging.WARNING, logger="dqlite.query"):
        conn.execute("SELECT 1").fetchall()
    conn.close()
    assert "slow query" in caplog.text and "SELECT 1" in caplog.text


def test_readme_opentelemetry_example_runs(dqlite_cluster, dqlite_database):
    pytest.importorskip("opentelemetry.sdk")
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    code = localised(python_block("def trace_query"), dqlite_cluster.addresses, dqlite_database)
    code = code.replace('tracer = trace.get_tracer("dqlite")', 'tracer = provider.get_tracer("dqlite")')
    scope = run(code, {"provider": provider})
    pool = scope["pool"]
    pool.execute("CREATE TABLE t (x)")
    with pytest.raises(dqlite.OperationalError):
        pool.execute("SELEC 1")
    pool.close()
    spans = exporter.get_finished_spans()
    assert [s.attributes["db.statement"] for s in spans] == ["CREATE TABLE t (x)", "SELEC 1"]
    assert spans[0].attributes["db.name"] == dqlite_database and spans[0].end_time >= spans[0].start_time
    assert spans[1].status.status_code == trace.StatusCode.ERROR and spans[1].events[0].name == "exception"
