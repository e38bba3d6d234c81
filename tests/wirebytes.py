"""dqlite wire bytes, built and parsed in plain Python (a test helper, not a test file).

Written from shared/docs/protocol.md, independent of the driver: the one place
the tests, the fake server (tests/fakeserver.py), the server probe
(tests/servercaps.py), the scripted session tests (tests/scripted.py), the
fuzzers (fuzz/) and the codec micro-benchmarks (bench/test_codec.py) get
their bytes from.  Section numbers (§) refer to protocol.md.

* Fields (§1.3): ``u32``, ``u64``, ``i64``, ``f64``, ``text``, ``blob``, ``pad8``.
* Framing (§1.2): ``header`` and ``message`` (header + body).
* Server responses (§2.2): ``failure_message``, ``server_message``,
  ``welcome_message``, ``servers_message``, ``db_message``, ``stmt_message``,
  ``result_message``, ``rows_message`` (§1.6; ``rows_body``, ``row_header``,
  ``value``), ``rows_stream`` (a result batched as a server batches it),
  ``empty_message``, ``files_message``, ``metadata_message``;
  ``response_examples`` has one valid example of each.
* Client requests (§2.1): ``handshake`` and one ``*_request`` builder per
  request a Python-side tool sends; ``params_tuple`` (§1.5).
* Parsing: ``split_messages`` (framing, either direction); for requests,
  ``BodyReader`` and ``parse_params`` (bodies), ``describe_request`` (a readable summary).

Values in rows and parameter tuples are ``(type code, value)`` pairs, the
type codes being ``INTEGER``, ``FLOAT``, ``TEXT``, ... (§1.4).  Everything is
little-endian and aligned to 8-byte words.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple

# ---------------------------------------------------------------------------
# Codes

# Request types (§2.1)
LEADER, CLIENT, HEARTBEAT, OPEN, PREPARE, EXEC, QUERY, FINALIZE, EXEC_SQL, QUERY_SQL, INTERRUPT = range(11)
CONNECT, ADD, ASSIGN, REMOVE, DUMP, CLUSTER, TRANSFER, DESCRIBE, WEIGHT = range(11, 20)
REQUEST_NAMES: dict[int, str] = {
    LEADER: "LEADER", CLIENT: "CLIENT", HEARTBEAT: "HEARTBEAT", OPEN: "OPEN", PREPARE: "PREPARE",
    EXEC: "EXEC", QUERY: "QUERY", FINALIZE: "FINALIZE", EXEC_SQL: "EXEC_SQL", QUERY_SQL: "QUERY_SQL",
    INTERRUPT: "INTERRUPT", CONNECT: "CONNECT", ADD: "ADD", ASSIGN: "ASSIGN", REMOVE: "REMOVE",
    DUMP: "DUMP", CLUSTER: "CLUSTER", TRANSFER: "TRANSFER", DESCRIBE: "DESCRIBE", WEIGHT: "WEIGHT",
}

# Response types (§2.2)
FAILURE, SERVER, WELCOME, SERVERS, DB, STMT, RESULT, ROWS, EMPTY, FILES, METADATA = range(11)
RESPONSE_NAMES: dict[int, str] = {
    FAILURE: "FAILURE", SERVER: "SERVER", WELCOME: "WELCOME", SERVERS: "SERVERS", DB: "DB",
    STMT: "STMT", RESULT: "RESULT", ROWS: "ROWS", EMPTY: "EMPTY", FILES: "FILES", METADATA: "METADATA",
}

# Value type codes (§1.4)
INTEGER, FLOAT, TEXT, BLOB, NULL, UNIXTIME, ISO8601, BOOLEAN = 1, 2, 3, 4, 5, 9, 10, 11

# ROWS end markers (§1.6)
DONE = b"\xff" * 8
PART = b"\xee" * 8

#: The protocol version a client sends first (§1.1).
PROTOCOL_VERSION = 1
#: A server closes a ROWS batch once header + body reach this many bytes (§0.4).
BATCH_LIMIT = 4096

#: A value as the tests write it: (type code, value).
Typed = tuple[int, Any]


# ---------------------------------------------------------------------------
# Fields (§1.3)

def pad8(data: bytes) -> bytes:
    """``data`` followed by zero bytes up to the next multiple of 8."""
    return data + b"\0" * (-len(data) % 8)


def u32(v: int) -> bytes:
    return struct.pack("<I", v)


def u64(v: int) -> bytes:
    return struct.pack("<Q", v)


def i64(v: int) -> bytes:
    return struct.pack("<q", v)


def f64(v: float) -> bytes:
    return struct.pack("<d", v)


def text(s: str | bytes) -> bytes:
    """A text field: the UTF-8 bytes, a NUL, zero padding to 8."""
    raw = s.encode() if isinstance(s, str) else s
    return pad8(raw + b"\0")


def blob(b: bytes) -> bytes:
    """A blob field: u64 length, the bytes, zero padding to 8."""
    return u64(len(b)) + pad8(b)


def value(code: int, v: Any) -> bytes:
    """One value (§1.4) in its encoding for type ``code``."""
    if code == INTEGER or code == UNIXTIME:
        return i64(v)
    if code == FLOAT:
        return f64(v)
    if code == TEXT or code == ISO8601:
        return text(v)
    if code == BLOB:
        return blob(v)
    if code == NULL:
        return u64(0)
    if code == BOOLEAN:
        return u64(1 if v else 0)
    raise ValueError(f"no encoding for type code {code}")


# ---------------------------------------------------------------------------
# Framing (§1.2)

def header(words: int, mtype: int, schema: int = 0) -> bytes:
    """An 8-byte message header; ``words`` is written as given, right or not."""
    return struct.pack("<IBBH", words, mtype, schema, 0)


def message(mtype: int, body: bytes, *, words: int | None = None, schema: int = 0) -> bytes:
    """Header plus body; ``words`` overrides the (correct) body length in words."""
    if words is None:
        if len(body) % 8:
            raise ValueError("a message body must be a whole number of words (pass words= to lie)")
        words = len(body) // 8
    return header(words, mtype, schema) + body


# ---------------------------------------------------------------------------
# Server responses (§2.2)

def failure_message(code: int, msg: str | bytes) -> bytes:
    """FAILURE: u64 code (an SQLite or dqlite result code), text message."""
    return message(FAILURE, u64(code) + text(msg))


def server_message(node_id: int, address: str) -> bytes:
    """SERVER, the answer to LEADER: u64 id, text address ("" and 0: no leader known)."""
    return message(SERVER, u64(node_id) + text(address))


def welcome_message(heartbeat_timeout: int = 15000) -> bytes:
    """WELCOME, the answer to CLIENT: u64 heartbeat timeout in ms."""
    return message(WELCOME, u64(heartbeat_timeout))


def servers_message(nodes: Sequence[tuple[int, str] | tuple[int, str, int]]) -> bytes:
    """SERVERS, the answer to CLUSTER: u64 n, then (id, address[, role]) per node.

    Give (id, address, role) triples for format 1, (id, address) pairs for format 0.
    """
    body = [u64(len(nodes))]
    for node in nodes:
        body += [u64(node[0]), text(node[1])]
        if len(node) > 2:
            body.append(u64(node[2]))  # type: ignore[misc]
    return message(SERVERS, b"".join(body))


def db_message(db_id: int = 0) -> bytes:
    """DB, the answer to OPEN: u32 db id (always 0), u32 padding."""
    return message(DB, u32(db_id) + u32(0))


def stmt_message(stmt_id: int, params: int = 0, *, db_id: int = 0, tail_offset: int | None = None) -> bytes:
    """STMT, the answer to PREPARE: u32 db id, u32 stmt id, u64 parameter count.

    With ``tail_offset``: STMT_WITH_OFFSET (schema 1, v1.15+), which adds it as a u64.
    """
    body = u32(db_id) + u32(stmt_id) + u64(params)
    if tail_offset is None:
        return message(STMT, body)
    return message(STMT, body + u64(tail_offset), schema=1)


def result_message(last_insert_id: int = 0, rows_affected: int = 0) -> bytes:
    """RESULT, the answer to EXEC / EXEC_SQL: u64 last insert id, u64 rows affected."""
    return message(RESULT, i64(last_insert_id) + u64(rows_affected))


def empty_message() -> bytes:
    """EMPTY (FINALIZE, INTERRUPT, ADD, ...): one zero word."""
    return message(EMPTY, u64(0))


def files_message(files: Mapping[str, bytes]) -> bytes:
    """FILES, the answer to DUMP: u64 n, then (text name, u64 size, the raw bytes) per file.

    A server's sizes are multiples of 8; other contents are written as they are, padded.
    """
    body = [u64(len(files))]
    for name, content in files.items():
        body += [text(name), u64(len(content)), pad8(content)]
    return message(FILES, b"".join(body))


def metadata_message(failure_domain: int = 0, weight: int = 0) -> bytes:
    """METADATA, the answer to DESCRIBE: u64 failure domain, u64 weight."""
    return message(METADATA, u64(failure_domain) + u64(weight))


def row_header(codes: Sequence[int]) -> bytes:
    """A row header (§1.6): 4-bit type codes, column 0 in the low nibble of byte 0, padded to 8."""
    out = bytearray((len(codes) + 1) // 2)
    for i, code in enumerate(codes):
        out[i // 2] |= (code & 0x0F) << (4 * (i % 2))
    return pad8(bytes(out))


def column_names(names: Sequence[str | bytes], *, ncols: int | None = None) -> bytes:
    """The start of every ROWS body: u64 column count (``ncols``: lie about it), the names."""
    return u64(len(names) if ncols is None else ncols) + b"".join(text(n) for n in names)


def rows_body(names: Sequence[str | bytes], rows: Iterable[Sequence[Typed]],
              marker: bytes = DONE, *, ncols: int | None = None, encoded: bool = False) -> bytes:
    """A ROWS body (§1.6): column count, names, each row as (code, value) pairs, marker.

    ``encoded``: the rows' values are already wire bytes (``(code, bytes)``
    pairs, written out by hand), not Python values to encode.
    """
    out = [column_names(names, ncols=ncols)]
    for row in rows:
        out.append(row_header([code for code, _ in row]))
        out += [v if encoded else value(code, v) for code, v in row]
    out.append(marker)
    return b"".join(out)


def rows_message(names: Sequence[str | bytes], rows: Iterable[Sequence[Typed]],
                 marker: bytes = DONE, **kwargs: Any) -> bytes:
    """A ROWS message (one batch): see ``rows_body`` for the arguments."""
    return message(ROWS, rows_body(names, rows, marker, **kwargs))


def rows_stream(columns: Sequence[tuple[str, int]], rows: Iterable[Sequence[Any]],
                batch_limit: int = BATCH_LIMIT) -> bytes:
    """A whole result as a server sends it: ROWS batches ending in PART, the last in DONE.

    ``columns`` are (name, type code) pairs, the same for every row.  A batch
    is closed once its header and body reach ``batch_limit`` bytes (§0.4),
    so the last batch may hold no row (§1.6).
    """
    codes = [code for _, code in columns]
    head = row_header(codes)
    names = column_names([name for name, _ in columns])
    out = bytearray()
    body = bytearray(names)
    for row in rows:
        body += head + b"".join(value(code, v) for code, v in zip(codes, row))
        if 8 + len(body) >= batch_limit:
            out += message(ROWS, bytes(body + PART))
            body = bytearray(names)
    out += message(ROWS, bytes(body + DONE))
    return bytes(out)


def response_examples() -> dict[str, bytes]:
    """One valid example of every response, and a few realistic sequences (the fuzz seeds)."""
    one = [(INTEGER, 1)]
    every = [(INTEGER, -5), (FLOAT, 2.5), (TEXT, "héllo"), (BLOB, b"\x00\x01\x02"), (NULL, None),
             (UNIXTIME, 1700000000), (ISO8601, "2024-01-02 03:04:05"), (BOOLEAN, 1)]
    out = {
        "failure": failure_message(2067, "UNIQUE constraint failed: t.x"),
        "server": server_message(1, "127.0.0.1:9001"),
        "welcome": welcome_message(15000),
        "servers1": servers_message([(1, "127.0.0.1:9001", 0), (2, "127.0.0.1:9002", 1)]),
        "db": db_message(),
        "stmt": stmt_message(7, 2),
        "stmt_offset": stmt_message(7, 2, tail_offset=0),
        "result": result_message(42, 1),
        "empty": empty_message(),
        "files": files_message({"db": b"SQLit", "db-wal": b""}),
        "metadata": metadata_message(0, 1),
        "rows_one": rows_message(["x"], [one]),
        "rows_every": rows_message([f"c{i}" for i in range(len(every))], [every, every]),
        "rows_dates": rows_message(["d", "t"], [[(ISO8601, "2024-01-02"), (ISO8601, "")],
                                                [(ISO8601, "2024-01-02T03:04:05+02:00"), (ISO8601, "not a date")]]),
        "rows_empty": rows_message(["a", "b"], []),
        "rows_no_columns": rows_message([], []),  # a column-less statement run as a query
    }
    out["rows_part_done"] = rows_message(["x"], [one, one], PART) + rows_message(["x"], [one])
    out["connect"] = out["server"] + out["db"]
    out["prepare_query"] = out["stmt"] + out["rows_every"] + out["empty"]
    out["exec_then_failure"] = out["result"] + out["failure"]
    return out


# ---------------------------------------------------------------------------
# Client requests (§2.1)

def handshake(version: int = PROTOCOL_VERSION) -> bytes:
    """The first 8 bytes a client sends (§1.1)."""
    return u64(version)


def params_tuple(params: Sequence[Typed], schema: int = 0) -> bytes:
    """A parameter tuple (§1.5): the count (u8, or u32 with schema 1), the type codes,
    padding to a word, then the values.  No parameters: no tuple at all (b"")."""
    if not params:
        return b""
    count = u32(len(params)) if schema == 1 else bytes([len(params)])
    head = pad8(count + bytes(code for code, _ in params))
    return head + b"".join(value(code, v) for code, v in params)


def leader_request() -> bytes:
    return message(LEADER, u64(0))


def client_request(client_id: int) -> bytes:
    return message(CLIENT, u64(client_id))


def open_request(name: str, flags: int = 0, vfs: str = "") -> bytes:
    return message(OPEN, text(name) + u64(flags) + text(vfs))


def prepare_request(sql: str, db_id: int = 0) -> bytes:
    return message(PREPARE, u64(db_id) + text(sql))


def exec_request(stmt_id: int, params: Sequence[Typed] = (), *, schema: int = 0, db_id: int = 0) -> bytes:
    return message(EXEC, u32(db_id) + u32(stmt_id) + params_tuple(params, schema), schema=schema)


def query_request(stmt_id: int, params: Sequence[Typed] = (), *, schema: int = 0, db_id: int = 0) -> bytes:
    return message(QUERY, u32(db_id) + u32(stmt_id) + params_tuple(params, schema), schema=schema)


def finalize_request(stmt_id: int, db_id: int = 0) -> bytes:
    return message(FINALIZE, u32(db_id) + u32(stmt_id))


def exec_sql_request(sql: str, params: Sequence[Typed] = (), *, schema: int = 0, db_id: int = 0) -> bytes:
    return message(EXEC_SQL, u64(db_id) + text(sql) + params_tuple(params, schema), schema=schema)


def query_sql_request(sql: str, params: Sequence[Typed] = (), *, schema: int = 0, db_id: int = 0) -> bytes:
    return message(QUERY_SQL, u64(db_id) + text(sql) + params_tuple(params, schema), schema=schema)


def interrupt_request(db_id: int = 0) -> bytes:
    return message(INTERRUPT, u64(db_id))


def cluster_request(fmt: int = 1) -> bytes:
    return message(CLUSTER, u64(fmt))


# ---------------------------------------------------------------------------
# Parsing messages and client requests

class Message(NamedTuple):
    """One framed message (a request or a response): its type, schema byte and body."""

    type: int
    schema: int
    body: bytes

    @property
    def request_name(self) -> str:
        return REQUEST_NAMES.get(self.type, f"type {self.type}")

    @property
    def response_name(self) -> str:
        return RESPONSE_NAMES.get(self.type, f"type {self.type}")


def split_messages(data: bytes) -> list[Message]:
    """Split framed messages (requests, or responses) into ``Message``s;
    ValueError when malformed (a truncated header or body, non-zero header padding)."""
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
        out.append(Message(mtype, schema, data[pos + 8:end]))
        pos = end
    return out


class BodyReader:
    """Reads a message body field by field; ValueError past its end."""

    def __init__(self, body: bytes) -> None:
        self.body = body
        self.pos = 0

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.body):
            raise ValueError("read past the body")
        chunk = self.body[self.pos:self.pos + n]
        self.pos += n
        return chunk

    def u32(self) -> int:
        return struct.unpack("<I", self.take(4))[0]

    def u64(self) -> int:
        return struct.unpack("<Q", self.take(8))[0]

    def i64(self) -> int:
        return struct.unpack("<q", self.take(8))[0]

    def text(self) -> str:
        end = self.body.index(b"\0", self.pos)
        raw = self.body[self.pos:end]
        self.take(len(pad8(raw + b"\0")))
        return raw.decode("utf-8")

    def at_end(self) -> bool:
        return self.pos == len(self.body)

    def done(self) -> None:
        """ValueError unless the whole body was read."""
        if self.pos != len(self.body):
            raise ValueError(f"{len(self.body) - self.pos} trailing bytes")


def parse_params(reader: BodyReader, schema: int, *, float_bits: bool = False) -> list[Typed]:
    """The parameter tuple (§1.5) at the reader: [(type code, value)], [] if the body ended.

    ``float_bits``: FLOAT values as their 8 raw bytes (NaN payloads survive).
    ValueError on a malformed tuple or an unknown type code.
    """
    if reader.at_end():
        return []
    start = reader.pos
    n = reader.u32() if schema == 1 else reader.take(1)[0]
    codes = reader.take(n)
    reader.take(-(reader.pos - start) % 8)
    if any(reader.body[start + (4 if schema == 1 else 1) + n:reader.pos]):
        raise ValueError("non-zero padding after the type codes")
    out: list[Typed] = []
    for code in codes:
        if code in (INTEGER, UNIXTIME):
            out.append((code, reader.i64()))
        elif code == FLOAT:
            raw = reader.take(8)
            out.append((code, raw if float_bits else struct.unpack("<d", raw)[0]))
        elif code in (TEXT, ISO8601):
            out.append((code, reader.text()))
        elif code == BLOB:
            n_bytes = reader.u64()
            raw = reader.take(n_bytes)
            if any(reader.take(-n_bytes % 8)):
                raise ValueError("non-zero blob padding")
            out.append((code, raw))
        elif code == NULL:
            if reader.u64() != 0:
                raise ValueError("NULL value is not zero")
            out.append((code, None))
        elif code == BOOLEAN:
            out.append((code, reader.u64()))
        else:
            raise ValueError(f"unknown parameter type {code}")
    return out


def describe_request(request: Message) -> tuple[Any, ...]:
    """A readable summary of a request: its name and its fields, e.g.
    ``("PREPARE", "SELECT 1")``, ``("QUERY", 3, [(1, 7)])``, ``("EXEC_SQL", "BEGIN")``.

    Parameter tuples are shown as [(type code, value)], and left out of
    EXEC_SQL / QUERY_SQL when empty.  Ids that are always 0 (the db id) are
    checked and left out.  ValueError when the body does not parse.
    """
    reader = BodyReader(request.body)
    mtype = request.type
    out: tuple[Any, ...]
    if mtype in (EXEC, QUERY, FINALIZE):
        if reader.u32() != 0:
            raise ValueError("db id is not 0")
        out = (reader.u32(),)
        if mtype != FINALIZE:
            out += (parse_params(reader, request.schema),)
    elif mtype in (EXEC_SQL, QUERY_SQL, PREPARE):
        if reader.u64() != 0:
            raise ValueError("db id is not 0")
        out = (reader.text(),)
        if mtype != PREPARE:
            params = parse_params(reader, request.schema)
            out += (params,) if params else ()
    elif mtype == OPEN:
        out = (reader.text(),)
        reader.u64()
        reader.text()
    elif mtype in (LEADER, INTERRUPT):
        reader.u64()
        out = ()
    elif mtype in (CLIENT, CLUSTER, REMOVE, TRANSFER, DESCRIBE, WEIGHT):
        out = (reader.u64(),)
    elif mtype in (ADD, CONNECT):
        out = (reader.u64(), reader.text())
    elif mtype == ASSIGN:
        out = (reader.u64(),) + (() if reader.at_end() else (reader.u64(),))
    elif mtype == DUMP:
        out = (reader.text(),)
    else:
        out = (request.body,)
        reader.pos = len(request.body)
    reader.done()
    return (request.request_name, *out)
