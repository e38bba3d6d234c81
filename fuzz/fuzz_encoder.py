#!/usr/bin/env python3
"""atheris harness: arbitrary parameter values (and SQL text) into the compiled ``Encoder``.

The input is read through ``atheris.FuzzedDataProvider``: which request
(EXEC, QUERY, EXEC_SQL, QUERY_SQL, or one of the text-only ones), schema 0 or
1 (params32), how many parameters (sometimes over 255), and for each a value
of any kind the driver may be handed: ints of any size, floats (NaN, inf),
str with NULs, lone surrogates and any code point, bytes/bytearray/memoryview,
bool, None, datetime/date/time (with and without tzinfo), Decimal, subclasses
and enums of those, and unsupported objects.

The oracle is an independent model (tests/wirebytes.py parses the bytes):

* an accepted request must parse back to exactly the values given (after the
  documented conversions: bool -> INTEGER, dates -> ISO text, Decimal -> text);
* a refused one must raise the documented error (``DataError`` for a value
  the wire cannot carry, ``ProgrammingError`` for an unsupported type or more
  than 255 parameters without params32) and leave nothing half-encoded: the
  one ``Encoder`` is shared by all inputs and every ``take()`` must return
  exactly the requests that were accepted since the previous one.
"""

from __future__ import annotations

import datetime
import decimal
import enum
import os
import struct
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(1, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import _loader  # noqa: E402

_loader.install()

import atheris  # noqa: E402

with atheris.instrument_imports(include=["dqlite"]):
    import dqlite  # noqa: E402
    from dqlite import _protocol  # noqa: E402

from tests.wirebytes import (  # noqa: E402  (the repository's root is on sys.path)
    ADD, BLOB, DUMP, EXEC, EXEC_SQL, FLOAT, INTEGER, NULL, OPEN, PREPARE, QUERY, QUERY_SQL, TEXT, BodyReader,
    parse_params, split_messages,
)


class Finding(AssertionError):
    pass


class MyInt(int):
    pass


class MyFloat(float):
    pass


class MyStr(str):
    pass


class MyBytes(bytes):
    pass


class Color(enum.IntEnum):
    RED = 1
    BIG = 2**62


class Unsupported:
    pass


def make_text(fdp: atheris.FuzzedDataProvider) -> str:
    n = fdp.ConsumeIntInRange(0, 64) if fdp.ConsumeIntInRange(0, 15) else fdp.ConsumeIntInRange(0, 5000)
    how = fdp.ConsumeIntInRange(0, 3)
    if how == 0:
        return fdp.ConsumeUnicode(n)  # may hold lone surrogates and NULs
    if how == 1:
        return fdp.ConsumeUnicodeNoSurrogates(n)
    if how == 2:
        # Edge cases: combining marks, bidi controls, BOM, non-characters, astral planes.
        pool = "\u0301\u200f\u202e\u2066\ufeff\uffff\U0001f600\U0010ffff'\"\\;%_\n\r\t\x7f"
        return "".join(pool[fdp.ConsumeIntInRange(0, len(pool) - 1)] for _ in range(min(n, 32)))
    return "x" * n


def make_value(fdp: atheris.FuzzedDataProvider, depth: int = 0) -> object:
    kind = fdp.ConsumeIntInRange(0, 22)
    if kind == 0:
        return None
    if kind == 1:
        return fdp.ConsumeInt(fdp.ConsumeIntInRange(1, 10))  # up to 80 bits: overflows too
    if kind == 2:
        return [0, -1, 2**63 - 1, -(2**63), 2**63, -(2**63) - 1, 2**64, 10**30][fdp.ConsumeIntInRange(0, 7)]
    if kind == 3:
        return fdp.ConsumeFloat()
    if kind == 4:
        return make_text(fdp)
    if kind == 5:
        return fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 300))
    if kind == 6:
        return bytearray(fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 64)))
    if kind == 7:
        raw = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 64))
        view = memoryview(raw)
        return view[::2] if fdp.ConsumeBool() else view
    if kind == 8:
        return fdp.ConsumeBool()
    if kind in (9, 10, 11):
        try:
            tz = None
            if fdp.ConsumeBool():
                tz = datetime.timezone(datetime.timedelta(minutes=fdp.ConsumeIntInRange(-1439, 1439)))
            d = datetime.datetime(fdp.ConsumeIntInRange(1, 9999), fdp.ConsumeIntInRange(1, 12),
                                  fdp.ConsumeIntInRange(1, 28), fdp.ConsumeIntInRange(0, 23),
                                  fdp.ConsumeIntInRange(0, 59), fdp.ConsumeIntInRange(0, 59),
                                  fdp.ConsumeIntInRange(0, 999999), tz)
        except ValueError:
            return None
        return d if kind == 9 else d.date() if kind == 10 else d.timetz()
    if kind == 12:
        try:
            return decimal.Decimal(fdp.ConsumeUnicodeNoSurrogates(fdp.ConsumeIntInRange(0, 40)))
        except decimal.InvalidOperation:
            return decimal.Decimal(fdp.ConsumeInt(8)).scaleb(fdp.ConsumeIntInRange(-400, 400))
    if kind == 13:
        return MyInt(fdp.ConsumeInt(9))
    if kind == 14:
        return MyFloat(fdp.ConsumeFloat())
    if kind == 15:
        return MyStr(make_text(fdp))
    if kind == 16:
        return MyBytes(fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 32)))
    if kind == 17:
        return Color.RED if fdp.ConsumeBool() else Color.BIG
    if kind == 18:
        return [Unsupported(), object(), [1], {"a": 1}, 1j, (1,), {1}][fdp.ConsumeIntInRange(0, 6)]
    if kind == 19:
        return True if fdp.ConsumeBool() else False
    if kind == 20:
        return fdp.ConsumeIntInRange(-(2**63), 2**63 - 1)
    if kind == 21:
        return float(["nan", "inf", "-inf", "-0.0", "1e308", "5e-324"][fdp.ConsumeIntInRange(0, 5)])
    return "" if fdp.ConsumeBool() else "\x00"


def model_text(s: str, error: str) -> tuple[int, object]:
    try:
        raw = s.encode("utf-8")
    except UnicodeEncodeError:
        raise Expected(dqlite.DataError, error) from None
    if b"\0" in raw:
        raise Expected(dqlite.DataError, error)
    return TEXT, str(s)


class Expected(Exception):
    """What the model says the encoder must raise."""

    def __init__(self, cls: type, why: str) -> None:
        super().__init__(cls, why)
        self.cls = cls
        self.why = why


def model_value(v: object, i: int) -> tuple[int, object]:
    """(type code, value as it must read back), or raises Expected."""
    if v is None:
        return NULL, None
    if isinstance(v, bool):
        return INTEGER, int(v)
    if isinstance(v, (bytes, bytearray, memoryview)):
        return BLOB, bytes(v)
    if isinstance(v, datetime.datetime):
        return model_text(v.isoformat(" "), f"parameter {i + 1}")
    if isinstance(v, (datetime.date, datetime.time)):
        return model_text(v.isoformat(), f"parameter {i + 1}")
    if isinstance(v, decimal.Decimal):
        return model_text(str(v), f"parameter {i + 1}")
    if isinstance(v, int):
        if not -(2**63) <= v < 2**63:
            raise Expected(dqlite.DataError, f"parameter {i + 1}")
        return INTEGER, int(v)
    if isinstance(v, float):
        return FLOAT, struct.pack("<d", v)
    if isinstance(v, str):
        return model_text(str(v), f"parameter {i + 1}")
    raise Expected(dqlite.ProgrammingError, f"parameter {i + 1}")


def check(cond: bool, what: str) -> None:
    if not cond:
        raise Finding(what)


_encoder = _protocol.Encoder()
_pending: list[tuple[int, int, list]] = []  # accepted, not yet taken: (type, schema, expected body)


def encode(fdp: atheris.FuzzedDataProvider) -> tuple[int, int, list] | None:
    """Encode one request chosen by the input; return what the model expects of it."""
    request = fdp.ConsumeIntInRange(0, 7)
    params32 = fdp.ConsumeBool()
    if request < 4:
        big = fdp.ConsumeIntInRange(0, 20) == 0
        n = fdp.ConsumeIntInRange(250, 300) if big else fdp.ConsumeIntInRange(0, 8)
        params = [make_value(fdp) for _ in range(n)]
        if fdp.ConsumeBool() and n:
            params = tuple(params)
        # The model, in the encoder's order: the SQL, the count, then each value.
        sql = make_text(fdp) if request >= 2 else None
        expected: list = []
        error = None
        try:
            if sql is not None:
                expected.append(model_text(sql, "SQL text")[1])
            if n > 255 and not params32:
                raise Expected(dqlite.ProgrammingError, "params32")
            expected.append([model_value(v, i) for i, v in enumerate(params)])
        except Expected as exc:
            error = exc
        stmt_id = fdp.ConsumeIntInRange(0, 2**32 - 1)
        mtype = (EXEC, QUERY, EXEC_SQL, QUERY_SQL)[request]
        call = {
            EXEC: lambda: _encoder.exec(stmt_id, params, params32),
            QUERY: lambda: _encoder.query(stmt_id, params, params32),
            EXEC_SQL: lambda: _encoder.exec_sql(sql, params, params32),
            QUERY_SQL: lambda: _encoder.query_sql(sql, params, params32),
        }[mtype]
        if request < 2:
            expected.insert(0, stmt_id)
        schema = 1 if params32 else 0
    else:
        mtype = (OPEN, PREPARE, ADD, DUMP)[request - 4]
        name = make_text(fdp)
        node = fdp.ConsumeIntInRange(0, 2**64 - 1)
        error = None
        expected = []
        try:
            expected = [model_text(name, "text")[1]]
        except Expected as exc:
            error = exc
        call = {
            OPEN: lambda: _encoder.open(name),
            PREPARE: lambda: _encoder.prepare(name),
            ADD: lambda: _encoder.add(node, name),
            DUMP: lambda: _encoder.dump(name),
        }[mtype]
        if mtype == ADD:
            expected.insert(0, node)
        schema = 0
    before, count = len(_encoder), _encoder.count
    try:
        call()
    except dqlite.Error as exc:
        check(error is not None, f"{type(exc).__name__}: {exc} for a request the model accepts")
        check(type(exc) is error.cls, f"{type(exc).__name__}: {exc}, expected {error.cls.__name__} ({error.why})")
        check(len(_encoder) == before and _encoder.count == count,
              f"a refused request left {len(_encoder) - before} bytes behind")
        return None
    check(error is None, f"accepted a request the model refuses ({error and error.why})")
    check(_encoder.count == count + 1, "count not incremented")
    return mtype, schema, expected


def verify(data: bytes, pending: list) -> None:
    messages = split_messages(data)
    check(len(messages) == len(pending), f"{len(messages)} messages taken, {len(pending)} accepted")
    for (mtype, schema, body), (want_type, want_schema, want) in zip(messages, pending):
        check(mtype == want_type and schema == want_schema, f"header {mtype}/{schema}")
        cur = BodyReader(body)
        if mtype in (EXEC, QUERY):
            db, stmt_id = struct.unpack("<II", cur.take(8))
            check(db == 0 and stmt_id == want[0], "statement id")
            check(parse_params(cur, schema, float_bits=True) == want[1], "parameters do not read back")
        elif mtype in (EXEC_SQL, QUERY_SQL):
            check(cur.u64() == 0, "db id")
            check(cur.text() == want[0], "SQL text does not read back")
            check(parse_params(cur, schema, float_bits=True) == want[1], "parameters do not read back")
        elif mtype == OPEN:
            check(cur.text() == want[0] and cur.u64() == 0 and cur.text() == "", "OPEN body")
        elif mtype == PREPARE:
            check(cur.u64() == 0 and cur.text() == want[0], "PREPARE body")
        elif mtype == ADD:
            check(cur.u64() == want[0] and cur.text() == want[1], "ADD body")
        elif mtype == DUMP:
            check(cur.text() == want[0], "DUMP body")
        cur.done()


def test_one_input(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    for _ in range(fdp.ConsumeIntInRange(1, 4)):
        accepted = encode(fdp)
        if accepted is not None:
            _pending.append(accepted)
    if fdp.ConsumeBool() or len(_encoder) > 1 << 20:
        taken = _encoder.take()
        check(len(_encoder) == 0 and _encoder.count == 0, "take() did not empty the encoder")
        try:
            verify(taken, _pending)
        except ValueError as exc:
            raise Finding(f"encoded bytes do not parse: {exc}") from None
        finally:
            _pending.clear()


def main() -> None:
    print(_loader.describe(), file=sys.stderr, flush=True)
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
