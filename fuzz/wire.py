"""Wire bytes for the fuzzers, written from the protocol description (not from the driver).

Builders of server responses (for the decoder's seed corpus) and a parser of
client requests (the encoder fuzzer's oracle).  Little-endian, 8-byte words.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Any

# Response types
FAILURE, SERVER, WELCOME, SERVERS, DB, STMT, RESULT, ROWS, EMPTY, FILES, METADATA = range(11)
# Value types
INTEGER, FLOAT, TEXT, BLOB, NULL, UNIXTIME, ISO8601, BOOLEAN = 1, 2, 3, 4, 5, 9, 10, 11
DONE = b"\xff" * 8
PART = b"\xee" * 8


def pad(data: bytes) -> bytes:
    return data + b"\0" * (-len(data) % 8)


def u64(v: int) -> bytes:
    return struct.pack("<Q", v & 0xFFFFFFFFFFFFFFFF)


def text(s: str | bytes) -> bytes:
    raw = s.encode() if isinstance(s, str) else s
    return pad(raw + b"\0")


def message(mtype: int, body: bytes, schema: int = 0) -> bytes:
    body = pad(body)
    return struct.pack("<IBBH", len(body) // 8, mtype, schema, 0) + body


def value(code: int, v: Any) -> bytes:
    if code in (INTEGER, UNIXTIME, BOOLEAN):
        return u64(v)
    if code == FLOAT:
        return struct.pack("<d", v)
    if code in (TEXT, ISO8601):
        return text(v)
    if code == BLOB:
        return u64(len(v)) + pad(v)
    if code == NULL:
        return u64(0)
    raise ValueError(code)


def rows(names: Sequence[str], data: Sequence[Sequence[tuple[int, Any]]], marker: bytes = DONE) -> bytes:
    body = u64(len(names)) + b"".join(text(n) for n in names)
    for row in data:
        codes = [c for c, _ in row] + [0]
        header = bytes(codes[i] | (codes[i + 1] << 4) for i in range(0, len(row), 2))
        body += pad(header) + b"".join(value(c, v) for c, v in row)
    return message(ROWS, body + marker)


def seeds() -> dict[str, bytes]:
    """One valid example of every response, and a few realistic sequences."""
    one = [(INTEGER, 1)]
    every = [(INTEGER, -5), (FLOAT, 2.5), (TEXT, "héllo"), (BLOB, b"\x00\x01\x02"), (NULL, None),
             (UNIXTIME, 1700000000), (ISO8601, "2024-01-02 03:04:05"), (BOOLEAN, 1)]
    out = {
        "failure": message(FAILURE, u64(2067) + text("UNIQUE constraint failed: t.x")),
        "server": message(SERVER, u64(1) + text("127.0.0.1:9001")),
        "welcome": message(WELCOME, u64(15000)),
        "servers1": message(SERVERS, u64(2) + u64(1) + text("127.0.0.1:9001") + u64(0)
                            + u64(2) + text("127.0.0.1:9002") + u64(1)),
        "db": message(DB, u64(0)),
        "stmt": message(STMT, struct.pack("<II", 0, 7) + u64(2)),
        "stmt_offset": message(STMT, struct.pack("<II", 0, 7) + u64(2) + u64(0), schema=1),
        "result": message(RESULT, u64(42) + u64(1)),
        "empty": message(EMPTY, u64(0)),
        "files": message(FILES, u64(2) + text("db") + u64(5) + pad(b"SQLit") + text("db-wal") + u64(0)),
        "metadata": message(METADATA, u64(0) + u64(1)),
        "rows_one": rows(["x"], [one]),
        "rows_every": rows([f"c{i}" for i in range(len(every))], [every, every]),
        "rows_dates": rows(["d", "t"], [[(ISO8601, "2024-01-02"), (ISO8601, "")],
                                        [(ISO8601, "2024-01-02T03:04:05+02:00"), (ISO8601, "not a date")]]),
        "rows_empty": rows(["a", "b"], []),
        "rows_no_columns": message(ROWS, u64(0) + DONE),  # a column-less statement run as a query
    }
    out["rows_part_done"] = rows(["x"], [one, one], marker=PART) + rows(["x"], [one])
    out["connect"] = out["server"] + out["db"]
    out["prepare_query"] = out["stmt"] + out["rows_every"] + out["empty"]
    out["exec_then_failure"] = out["result"] + out["failure"]
    return out


def parse_request(data: bytes) -> list[tuple[int, int, bytes]]:
    """Split encoded requests into (type, schema, body); raises ValueError when malformed."""
    out = []
    pos = 0
    while pos < len(data):
        if len(data) - pos < 8:
            raise ValueError("truncated header")
        words, mtype, schema, zero = struct.unpack_from("<IBBH", data, pos)
        if zero != 0:
            raise ValueError("header padding is not zero")
        end = pos + 8 + words * 8
        if end > len(data):
            raise ValueError("body shorter than the word count")
        out.append((mtype, schema, data[pos + 8:end]))
        pos = end
    return out


class Cursor:
    def __init__(self, body: bytes) -> None:
        self.body = body
        self.pos = 0

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.body):
            raise ValueError("read past the body")
        chunk = self.body[self.pos:self.pos + n]
        self.pos += n
        return chunk

    def u64(self) -> int:
        return struct.unpack("<Q", self.take(8))[0]

    def text(self) -> str:
        end = self.body.index(b"\0", self.pos)
        raw = self.body[self.pos:end]
        self.take(len(pad(raw + b"\0")))
        return raw.decode("utf-8")

    def done(self) -> None:
        if self.pos != len(self.body):
            raise ValueError(f"{len(self.body) - self.pos} trailing bytes")


def parse_params(cur: Cursor, schema: int) -> list[tuple[int, Any]]:
    """The parameter tuple at the cursor: [(type code, value)]."""
    if cur.pos == len(cur.body):
        return []
    start = cur.pos
    if schema == 1:
        n = struct.unpack("<I", cur.take(4))[0]
    else:
        n = cur.take(1)[0]
    codes = cur.take(n)
    cur.take(-(cur.pos - start) % 8)
    if any(cur.body[start + (4 if schema == 1 else 1) + n:cur.pos]):
        raise ValueError("non-zero padding after the type codes")
    out: list[tuple[int, Any]] = []
    for code in codes:
        if code == INTEGER:
            out.append((code, struct.unpack("<q", cur.take(8))[0]))
        elif code == FLOAT:
            out.append((code, cur.take(8)))  # raw bits: NaN payloads must survive
        elif code == TEXT:
            out.append((code, cur.text()))
        elif code == BLOB:
            n_bytes = cur.u64()
            raw = cur.take(n_bytes)
            padding = cur.take(-n_bytes % 8)
            if any(padding):
                raise ValueError("non-zero blob padding")
            out.append((code, raw))
        elif code == NULL:
            if cur.u64() != 0:
                raise ValueError("NULL value is not zero")
            out.append((code, None))
        else:
            raise ValueError(f"unknown parameter type {code}")
    return out
