"""Every supported type, both ways, through a real cluster."""

import datetime
from decimal import Decimal

import pytest

import dqlite

UTC = datetime.timezone.utc


@pytest.fixture
def auto(connect):
    return connect(autocommit=True)


@pytest.mark.parametrize(
    "value, expected",
    [
        (0, 0),
        (-(2**63), -(2**63)),
        (2**63 - 1, 2**63 - 1),
        (3.5, 3.5),
        (-0.25, -0.25),
        (1e308, 1e308),
        ("", ""),
        ("héllo ünïcode ✓ 🐍", "héllo ünïcode ✓ 🐍"),
        ("x" * 10000, "x" * 10000),
        (b"", b""),
        (b"\x00\xff\x10", b"\x00\xff\x10"),
        (bytearray(b"ab"), b"ab"),
        (memoryview(b"mv"), b"mv"),
        (None, None),
        (True, 1),
        (False, 0),
        (Decimal("12.3400"), "12.3400"),
        (datetime.date(2024, 1, 2), "2024-01-02"),
        (datetime.time(3, 4, 5, 6), "03:04:05.000006"),
        (datetime.datetime(2024, 1, 2, 3, 4, 5, 123456), "2024-01-02 03:04:05.123456"),
    ],
    ids=repr,
)
def test_parameter_round_trips_through_an_untyped_column(auto, value, expected):
    auto.execute("CREATE TABLE t (v)")
    auto.execute("INSERT INTO t VALUES (?)", (value,))
    (got,) = auto.execute("SELECT v FROM t").fetchone()
    assert got == expected and type(got) is type(expected)


def test_large_blob_round_trips(auto):
    blob = bytes(range(256)) * 16384  # 4 MiB: one message each way
    auto.execute("CREATE TABLE t (b BLOB)")
    auto.execute("INSERT INTO t VALUES (?)", (blob,))
    assert auto.execute("SELECT b FROM t").fetchone()[0] == blob


def test_declared_types_convert_results(auto):
    auto.execute("CREATE TABLE t (dt DATETIME, d DATE, ts TIMESTAMP, flag BOOLEAN)")
    auto.execute(
        "INSERT INTO t VALUES (?, ?, ?, ?)",
        (datetime.datetime(2024, 1, 2, 3, 4, 5, 123456), datetime.date(2024, 1, 2),
         "2024-01-02T03:04:05.123+02:00", True),
    )
    auto.execute("INSERT INTO t VALUES (1700000000, NULL, NULL, 0)")
    auto.execute("INSERT INTO t VALUES (NULL, NULL, 1700000000, NULL)")
    rows = auto.execute("SELECT dt, d, ts, flag FROM t ORDER BY rowid").fetchall()
    plus2 = datetime.timezone(datetime.timedelta(hours=2))
    assert rows[0] == (
        datetime.datetime(2024, 1, 2, 3, 4, 5, 123456),
        datetime.date(2024, 1, 2),
        datetime.datetime(2024, 1, 2, 3, 4, 5, 123000, tzinfo=plus2),
        True,
    )
    assert type(rows[0][3]) is bool
    # INTEGER in a DATETIME column comes as UNIXTIME: an aware UTC datetime.
    assert rows[1] == (datetime.datetime.fromtimestamp(1700000000, UTC), None, None, False)
    # NULL in a BOOLEAN column: a 1.11.1 server sends false (protocol.md §1.7).
    assert rows[2][:3] == (None, None, datetime.datetime.fromtimestamp(1700000000, UTC))


def test_raw_datetime_strings_when_asked(connect):
    raw = connect(autocommit=True, parse_datetimes=False)
    raw.execute("CREATE TABLE t (dt DATETIME, d DATE)")
    raw.execute("INSERT INTO t VALUES ('2024-01-02 03:04:05', NULL)")
    raw.execute("INSERT INTO t VALUES (1700000000, '2024-01-02')")
    assert raw.execute("SELECT dt, d FROM t ORDER BY rowid").fetchall() == [
        ("2024-01-02 03:04:05", None),
        (1700000000, "2024-01-02"),
    ]


def test_non_iso_text_in_a_datetime_column_comes_back_as_is(auto):
    auto.execute("CREATE TABLE t (dt DATETIME)")
    auto.execute("INSERT INTO t VALUES ('not a date')")
    assert auto.execute("SELECT dt FROM t").fetchone() == ("not a date",)


@pytest.mark.parametrize("value", [object(), {1: 2}, [1], 1j], ids=lambda v: type(v).__name__)
def test_unsupported_parameter_type_is_a_programming_error(auto, value):
    auto.execute("CREATE TABLE t (v)")
    with pytest.raises(dqlite.ProgrammingError, match=type(value).__name__):
        auto.execute("INSERT INTO t VALUES (?)", (value,))
    assert auto.execute("SELECT count(*) FROM t").fetchone() == (0,)


def test_integer_beyond_64_bits_is_a_data_error(auto):
    with pytest.raises(dqlite.DataError, match="64 bits"):
        auto.execute("SELECT ?", (2**63,))


def test_text_with_nul_is_a_data_error(auto):
    with pytest.raises(dqlite.DataError, match="NUL"):
        auto.execute("SELECT ?", ("a\x00b",))


def test_type_objects_compare_to_description_type_codes(auto):
    auto.execute("CREATE TABLE t (i INTEGER, r REAL, s TEXT, b BLOB, dt DATETIME, f BOOLEAN)")
    auto.execute("INSERT INTO t VALUES (1, 1.5, 's', x'00', '2024-01-01 00:00:00', 1)")
    codes = [d[1] for d in auto.execute("SELECT * FROM t").description]
    assert codes[0] == dqlite.NUMBER and codes[0] == dqlite.ROWID
    assert codes[1] == dqlite.NUMBER
    assert codes[2] == dqlite.STRING and codes[2] != dqlite.NUMBER
    assert codes[3] == dqlite.BINARY
    assert codes[4] == dqlite.DATETIME
    assert codes[5] == dqlite.NUMBER


def test_constructors():
    assert dqlite.Date(2024, 1, 2) == datetime.date(2024, 1, 2)
    assert dqlite.Time(1, 2, 3) == datetime.time(1, 2, 3)
    assert dqlite.Timestamp(2024, 1, 2, 3, 4, 5) == datetime.datetime(2024, 1, 2, 3, 4, 5)
    assert dqlite.Binary(b"x") == b"x"
    assert dqlite.DateFromTicks(0) == datetime.date.fromtimestamp(0)
    assert dqlite.TimestampFromTicks(0) == datetime.datetime.fromtimestamp(0)
    assert dqlite.TimeFromTicks(0) == datetime.datetime.fromtimestamp(0).time()
