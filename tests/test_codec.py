"""The compiled codec (dqlite._protocol) on its own: no server, no socket.

Expected bytes are written out by hand from shared/docs/protocol.md (§1, §2,
§6, §9) with ``struct`` and tests/wirebytes.py, never produced by the encoder under test.
"""

from __future__ import annotations

import random
import struct
import time
from datetime import date, datetime, timedelta, timezone

import pytest

import dqlite
from dqlite._protocol import Decoder, Encoder, encode_handshake

pytestmark = [pytest.mark.timeout(30), pytest.mark.server_independent]

try:  # the wire bytes, written from protocol.md (tests/wirebytes.py)
    from wirebytes import (
        DONE, EXEC_SQL, OPEN, PART, ROWS, blob, f64, failure_message, files_message, header, i64, message, rows_message, server_message,
        servers_message, stmt_message, text, u64,
    )
except ImportError:  # tests/ imported as a package
    from tests.wirebytes import (  # type: ignore[no-redef]
        DONE, EXEC_SQL, OPEN, PART, ROWS, blob, f64, failure_message, files_message, header, i64, message, rows_message, server_message,
        servers_message, stmt_message, text, u64,
    )


def decode_all(data: bytes, **kwargs) -> list:
    """Decode a whole result (PART... DONE) fed at once."""
    d = Decoder(**kwargs)
    d.feed(data)
    out: list = []
    while True:
        assert d.next_message() == ROWS
        if d.read_rows(out):
            break
    assert d.buffered == 0
    return out


# ---------------------------------------------------------------------------
# Requests: exact bytes

def test_protocol_error_is_an_interface_error():
    assert issubclass(dqlite.ProtocolError, dqlite.InterfaceError)
    assert not issubclass(dqlite.ProtocolError, dqlite.DatabaseError)


def test_handshake_is_version_1_as_u64_le():
    assert encode_handshake() == b"\x01\0\0\0\0\0\0\0"


def test_leader_request_bytes():
    enc = Encoder()
    enc.leader()
    # words=1, type 0 (LEADER), schema 0, extra 0; body: u64 0.
    assert enc.take() == bytes.fromhex("01000000 00000000 0000000000000000".replace(" ", ""))


@pytest.mark.parametrize("name, name_bytes", [
    ("db", b"db\0\0\0\0\0\0"),
    ("abcdefg", b"abcdefg\0"),                       # 7 bytes + NUL: exactly one word
    ("abcdefgh", b"abcdefgh" + b"\0" * 8),            # 8 bytes + NUL: two words
    ("bäse", "bäse".encode() + b"\0\0\0"),            # UTF-8 length (5) counts, not characters
])
def test_open_request_bytes(name, name_bytes):
    enc = Encoder()
    enc.open(name)
    body = name_bytes + u64(0) + b"\0" * 8   # text name, u64 flags, text vfs ("")
    assert enc.take() == message(OPEN, body)


def test_exec_sql_with_a_mixed_parameter_tuple():
    sql = "INSERT INTO t VALUES (?, ?, ?, ?, ?, ?, ?)"
    params = (42, -1.5, "héllo", b"\x00\xff\x10", None, True, -(2**63))
    enc = Encoder()
    enc.exec_sql(sql, params)
    body = (
        u64(0)                                        # db id
        + sql.encode() + b"\0" * (-len(sql) % 8 or 8)  # text: NUL + padding (len 42 -> 48)
        + bytes([7, 1, 2, 3, 4, 5, 1, 1])             # count u8 + 7 codes: one word (§1.5)
        + struct.pack("<q", 42)
        + struct.pack("<d", -1.5)
        + b"h\xc3\xa9llo\0\0"                         # 6 UTF-8 bytes + NUL + pad
        + struct.pack("<Q", 3) + b"\x00\xff\x10\0\0\0\0\0"
        + b"\0" * 8                                   # NULL: one zero word
        + struct.pack("<q", 1)                        # bool binds as INTEGER 1
        + struct.pack("<q", -(2**63))
    )
    assert len(sql) == 42 and len(body) % 8 == 0
    assert enc.take() == message(EXEC_SQL, body)


def test_exec_sql_without_parameters_has_no_tuple():
    enc = Encoder()
    enc.exec_sql("BEGIN")
    assert enc.take() == message(8, u64(0) + b"BEGIN\0\0\0")


@pytest.mark.parametrize("n", range(1, 18))
def test_parameter_header_words(n):
    """§1.5: count byte + n code bytes, padded to whole words: 1-7 -> 1 word, 8-15 -> 2."""
    enc = Encoder()
    enc.exec_sql("X", tuple(range(n)))
    data = enc.take()
    head_words = 1 if n <= 7 else 2 if n <= 15 else 3
    head = bytes([n]) + bytes([1] * n)
    head += b"\0" * (head_words * 8 - len(head))
    body = u64(0) + b"X\0\0\0\0\0\0\0" + head + b"".join(i64(i) for i in range(n))
    assert data == message(8, body)


def test_query_and_exec_use_a_u32_pair_for_the_ids():
    enc = Encoder()
    enc.query(5, ("a",))
    enc.exec(0x01020304, ())
    assert enc.count == 2
    assert enc.take() == (
        message(6, struct.pack("<II", 0, 5) + bytes([1, 3]) + b"\0" * 6 + b"a\0\0\0\0\0\0\0")
        + message(5, struct.pack("<II", 0, 0x01020304))
    )
    assert len(Encoder()) == 0


@pytest.mark.parametrize("n, head_words", [(1, 1), (4, 1), (5, 2), (12, 2), (13, 3), (300, 38)])
def test_params32_layout(n, head_words):
    """Schema 1: u32 LE count, codes, padding to words; the header's schema byte is 1."""
    enc = Encoder()
    enc.query_sql("S", (None,) * n, True)
    head = struct.pack("<I", n) + bytes([5] * n)
    head += b"\0" * (head_words * 8 - len(head))
    assert len(head) == head_words * 8
    body = u64(0) + b"S\0\0\0\0\0\0\0" + head + b"\0" * (8 * n)
    assert enc.take() == message(9, body, schema=1)


def test_255_parameters_fit_schema_0():
    enc = Encoder()
    enc.exec(0, (1,) * 255)
    data = enc.take()
    assert data[5] == 0  # schema
    assert data[16] == 255 and data[17:17 + 255] == b"\x01" * 255


def test_256_parameters_without_params32_are_refused():
    enc = Encoder()
    with pytest.raises(dqlite.Error):
        enc.exec(0, (1,) * 256)
    assert len(enc) == 0


# ---------------------------------------------------------------------------
# Parameter errors, and the buffer after them

LEADER_BYTES = message(0, u64(0))
QUERY_7 = message(6, struct.pack("<II", 0, 1) + bytes([1, 1]) + b"\0" * 6 + i64(7))


def _assert_clean_after(enc: Encoder) -> None:
    """A request encoded after the failure comes out exactly, behind the earlier one."""
    enc.query(1, (7,))
    assert enc.count == 2
    assert enc.take() == LEADER_BYTES + QUERY_7


@pytest.mark.parametrize("method", ["exec_sql", "query_sql", "exec", "query"])
@pytest.mark.parametrize(
    "bad, error, match",
    [
        (object(), dqlite.ProgrammingError, r"parameter 3: type builtins\.object is not supported"),
        (1 + 2j, dqlite.ProgrammingError, r"parameter 3: type builtins\.complex is not supported"),
        ([1], dqlite.ProgrammingError, r"parameter 3: type builtins\.list is not supported"),
        ({"a": 1}, dqlite.ProgrammingError, r"parameter 3: type builtins\.dict is not supported"),
        (2**63, dqlite.DataError, r"parameter 3: integer 9223372036854775808 does not fit in 64 bits"),
        (-(2**63) - 1, dqlite.DataError, r"parameter 3: integer -9223372036854775809 does not fit in 64 bits"),
        (10**40, dqlite.DataError, r"parameter 3: integer 1{1}0{40} does not fit in 64 bits"),
        ("a\x00b", dqlite.DataError, r"parameter 3 contains a NUL character"),
        ("\ud800", dqlite.DataError, r"parameter 3 is not valid Unicode"),
    ],
    ids=["object", "complex", "list", "dict", "2**63", "-2**63-1", "10**40", "str with NUL", "lone surrogate"],
)
def test_bad_parameter_raises_and_leaves_no_half_message(method, bad, error, match):
    enc = Encoder()
    enc.leader()
    params = (1, "ok", bad, 4.0)
    with pytest.raises(error, match=match):
        if method in ("exec", "query"):
            getattr(enc, method)(1, params)
        else:
            getattr(enc, method)("SELECT ?, ?, ?, ?", params)
    assert len(enc) == len(LEADER_BYTES)
    _assert_clean_after(enc)


def test_bad_parameter_under_params32_leaves_no_half_message():
    enc = Encoder()
    enc.leader()
    with pytest.raises(dqlite.DataError):
        enc.exec(0, (0,) * 299 + (2**64,), True)
    _assert_clean_after(enc)


def test_64_bit_boundaries_are_accepted():
    enc = Encoder()
    enc.exec(0, (2**63 - 1, -(2**63)))
    assert enc.take()[-16:] == i64(2**63 - 1) + i64(-(2**63))


@pytest.mark.parametrize("method", ["prepare", "exec_sql", "query_sql", "open"])
def test_rejected_sql_text_leaves_no_half_message(method):
    enc = Encoder()
    enc.leader()
    with pytest.raises(dqlite.DataError, match=r"NUL"):
        getattr(enc, method)("SELECT 'a\x00b'")
    _assert_clean_after(enc)


# ---------------------------------------------------------------------------
# Rows: the §6 mixed-type example

NAMES6 = ["id", "i", "r", "s", "b", "n", "dt", "d", "ts", "flag"]


def section6_message() -> bytes:
    """The 3-row result of protocol.md §6, byte for byte, one ROWS message ending in DONE."""
    row1 = (
        bytes.fromhex("11 32 54 aa ba 00 00 00")           # codes 1,1,2,3,4,5,10,10,10,11 (§1.6)
        + i64(1) + i64(42) + f64(3.5) + text("hello") + blob(b"\x00\xff\x10") + u64(0)
        + text("2024-01-02 03:04:05") + text("2024-01-02") + text("2024-01-02T03:04:05.123+02:00")
        + u64(1)
    )
    row2 = (
        bytes.fromhex("11 32 54 a9 ba 00 00 00")           # 1,1,2,3,4,5,9,10,10,11
        + i64(2) + i64(-7) + f64(-0.25) + text("héllo ünïcode") + blob(b"") + u64(0)
        + i64(1700000000) + text("") + text("") + u64(0)
    )
    row3 = (
        bytes.fromhex("11 32 54 aa b9 00 00 00")           # 1,1,2,3,4,5,10,10,9,11
        + i64(3) + i64(2**63 - 1) + f64(1e308) + text("") + blob(b"\0" * 20) + u64(0)
        + text("") + text("") + i64(1700000000) + u64(0)
    )
    body = u64(10) + b"".join(text(n) for n in NAMES6) + row1 + row2 + row3 + DONE
    return message(ROWS, body)


def test_section6_message_has_the_documented_size():
    assert len(section6_message()) == 464  # "one ROWS message of 464 bytes"


def test_section6_row_decoding():
    d = Decoder()
    d.feed(section6_message())
    assert d.next_message() == ROWS
    out: list = []
    assert d.read_rows(out) is True
    utc_ts = datetime(2023, 11, 14, 22, 13, 20, tzinfo=timezone.utc)
    assert out == [
        (1, 42, 3.5, "hello", b"\x00\xff\x10", None, datetime(2024, 1, 2, 3, 4, 5), date(2024, 1, 2),
         datetime(2024, 1, 2, 3, 4, 5, 123000, tzinfo=timezone(timedelta(hours=2))), True),
        (2, -7, -0.25, "héllo ünïcode", b"", None, utc_ts, None, None, False),
        (3, 2**63 - 1, 1e308, "", b"\0" * 20, None, None, None, utc_ts, False),
    ]
    assert out[0][9] is True and out[1][9] is False                  # BOOLEAN -> bool, not int
    assert type(out[0][6]) is datetime and type(out[0][7]) is date
    assert out[1][6].tzinfo is timezone.utc                          # UNIXTIME -> aware UTC
    assert d.columns == NAMES6
    assert d.first_row_types == (1, 1, 2, 3, 4, 5, 10, 10, 10, 11)
    assert d.buffered == 0


def test_section6_raw_strings_without_parse_datetimes():
    d = Decoder(parse_datetimes=False)
    d.feed(section6_message())
    d.next_message()
    out: list = []
    d.read_rows(out)
    assert [row[6:9] for row in out] == [
        ("2024-01-02 03:04:05", "2024-01-02", "2024-01-02T03:04:05.123+02:00"),
        (1700000000, None, None),          # UNIXTIME stays an int; ISO8601 "" is still None
        (None, None, 1700000000),
    ]
    assert type(out[1][6]) is int


@pytest.mark.parametrize("code, payload, expected", [
    (9, i64(2**63 - 1), 2**63 - 1),                   # out of datetime's range: the raw int
    (9, i64(-(2**63)), -(2**63)),
    (10, text("not a date"), "not a date"),          # not ISO 8601: the raw string
    (10, text("2024-13-45"), "2024-13-45"),
])
def test_unparseable_datetimes_come_back_raw(code, payload, expected):
    d = Decoder()
    d.feed(rows_message(["v"], [[(code, payload)]], encoded=True))
    d.next_message()
    out: list = []
    d.read_rows(out)
    assert out == [(expected,)]


# ---------------------------------------------------------------------------
# Streams: PART/DONE, fed whole or byte by byte

def stream_messages() -> tuple[bytes, list]:
    """A 3-batch result (PART, PART, DONE with 0 rows) and the rows it holds."""
    names = ["k", "v", "blob"]
    batches = [
        [(1, "a" * 30, b"x"), (2, "", b"")],
        [(3, "é" * 9, bytes(range(256))), (4, "z", None)],
        [],
    ]
    data = b""
    expected = []
    for i, batch in enumerate(batches):
        rows = []
        for k, v, b in batch:
            rows.append([(1, i64(k)), (3, text(v)), (5, u64(0)) if b is None else (4, blob(b))])
            expected.append((k, v, b))
        data += rows_message(names, rows, DONE if i == len(batches) - 1 else PART, encoded=True)
    return data, expected


def test_multi_batch_result_fed_whole():
    data, expected = stream_messages()
    assert decode_all(data) == expected


def test_multi_batch_result_fed_byte_by_byte_decodes_identically():
    data, expected = stream_messages()
    d = Decoder(initial_size=64)
    out: list = []
    results = []
    for i in range(len(data)):
        d.feed(data[i:i + 1])
        while d.next_message() >= 0:
            results.append(d.read_rows(out))
    assert results == [False, False, True]
    assert out == expected == decode_all(data)
    assert d.columns == ["k", "v", "blob"] and d.buffered == 0


def test_multi_batch_result_fed_in_random_chunks():
    data, expected = stream_messages()
    rng = random.Random(7)
    for _ in range(50):
        d = Decoder(initial_size=64)
        out: list = []
        pos = 0
        while pos < len(data):
            n = rng.randint(1, 700)
            d.feed(data[pos:pos + n])
            pos += n
            while d.next_message() >= 0:
                d.read_rows(out)
        assert out == expected


def test_incomplete_message_is_not_framed():
    data = rows_message(["x"], [[(1, i64(1))]], encoded=True)
    d = Decoder()
    d.feed(data[:-1])
    assert d.next_message() == -1
    d.feed(data[-1:])
    assert d.next_message() == ROWS


def test_one_row_part_then_zero_row_done_is_a_normal_result():
    """§1.6: a big row arrives as 1 row + PART, then 0 rows + DONE."""
    big = b"\xab" * 100_000
    data = rows_message(["b"], [[(4, blob(big))]], PART, encoded=True) + rows_message(["b"], [], DONE, encoded=True)
    assert decode_all(data) == [(big,)]


# ---------------------------------------------------------------------------
# Malformed input at the decoder level

def test_malformed_message_is_consumed_whole():
    """After a bad message raises, the next message in the buffer frames and decodes."""
    bad = rows_message(["x"], [[(7, u64(0))]], encoded=True)
    good = rows_message(["x"], [[(1, i64(5))]], encoded=True)
    d = Decoder()
    d.feed(bad + good)
    assert d.next_message() == ROWS
    with pytest.raises(dqlite.ProtocolError, match="unknown type code 7"):
        d.read_rows([])
    assert d.next_message() == ROWS
    out: list = []
    assert d.read_rows(out) is True and out == [(5,)]


def test_announced_size_above_the_limit():
    d = Decoder(max_message_size=1 << 30)
    d.feed(header(0xFFFFFFFF, ROWS))
    with pytest.raises(dqlite.ProtocolError, match=r"34359738360-byte message, above the 1073741824-byte limit"):
        d.next_message()


def test_announced_size_does_not_size_the_buffer():
    """32 GiB announced, limit lifted: the buffer still grows only with what arrives."""
    d = Decoder(max_message_size=1 << 40, initial_size=64)
    d.feed(header(0xFFFFFFFF, ROWS) + b"\0" * 100)
    assert d.next_message() == -1
    assert len(d.get_buffer()) < 1 << 20
    d.feed(b"\0" * (3 << 20))  # 3 MiB more: still incomplete, buffer proportional to it
    assert d.next_message() == -1
    assert len(d.get_buffer()) < 8 << 20


def zero_part() -> bytes:
    return rows_message(["x"], [], PART, encoded=True)


def test_zero_row_part_stream_raises_after_a_bounded_number_of_batches():
    d = Decoder()
    out: list = []
    with pytest.raises(dqlite.ProtocolError, match=r"no rows"):
        for _ in range(100):
            d.feed(zero_part())
            assert d.next_message() == ROWS
            assert d.read_rows(out) is False
    assert out == []


def test_zero_row_part_stream_raises_when_skipped():
    d = Decoder()
    with pytest.raises(dqlite.ProtocolError, match=r"no rows"):
        for _ in range(100):
            d.feed(zero_part())
            assert d.next_message() == ROWS
            assert d.skip_rows() is False


# ---------------------------------------------------------------------------
# Random mutations of valid messages: success or InterfaceError, nothing else

def fuzz_rows_message() -> bytes:
    names = ["i", "r", "s", "b", "n", "dt", "u", "f", "ts"]
    rows = []
    for k in range(6):
        rows.append([
            (1, i64(k * 1000 - 3)),
            (2, f64(k / 3)),
            (3, text("v" * (k * 5) + "é")),
            (4, blob(bytes(range(k * 7)))),
            (5, u64(0)),
            (10, text("2024-01-02 03:04:05" if k % 2 else "")),
            (9, i64(1700000000 + k)),
            (11, u64(k % 2)),
            (10, text("2024-01-02")),
        ])
    return rows_message(names, rows, encoded=True)


INTERESTING = [0, 1, 7, 8, 0xFF, 0x7FFFFFFF, 2**63 - 1, 2**63, 2**64 - 1, 0xEEEEEEEEEEEEEEEE, 1 << 32]


def _mutate(rng: random.Random, data: bytes) -> tuple[bytes, bool]:
    """A mutated message and whether its header still frames the whole of it."""
    head, body = bytearray(data[:8]), bytearray(data[8:])
    op = rng.randrange(8)
    if op == 0:      # flip bits
        for _ in range(rng.randint(1, 4)):
            i = rng.randrange(len(body))
            body[i] ^= 1 << rng.randrange(8)
    elif op == 1:    # random bytes
        for _ in range(rng.randint(1, 3)):
            body[rng.randrange(len(body))] = rng.randrange(256)
    elif op == 2:    # an aligned word becomes an interesting value
        i = rng.randrange(len(body) // 8) * 8
        body[i:i + 8] = u64(rng.choice(INTERESTING))
    elif op == 3:    # truncate to k words
        del body[rng.randrange(len(body) // 8) * 8:]
    elif op == 4:    # delete a word
        i = rng.randrange(len(body) // 8) * 8
        del body[i:i + 8]
    elif op == 5:    # insert a word
        i = rng.randrange(len(body) // 8 + 1) * 8
        body[i:i] = u64(rng.choice(INTERESTING)) if rng.random() < 0.5 else rng.randbytes(8)
    elif op == 6:    # header announces fewer words than follow
        words = rng.randrange(len(body) // 8)
        return bytes(struct.pack("<I", words) + head[4:] + body), True
    else:            # raw truncation, header untouched: incomplete
        cut = rng.randrange(len(data))
        return data[:cut], False
    head[:4] = struct.pack("<I", len(body) // 8)
    return bytes(head + body), True


CASES = 20_000


def test_random_mutations_of_rows_decode_or_raise_interface_error():
    base = fuzz_rows_message()
    assert len(decode_all(base)) == 6
    rng = random.Random(20240601)
    outcomes = {"ok": 0, "error": 0, "incomplete": 0}
    started = time.monotonic()
    for case in range(CASES):
        data, framed = _mutate(rng, base)
        d = Decoder(max_message_size=1 << 20, parse_datetimes=bool(case % 2), initial_size=64)
        d.feed(data)
        try:
            mtype = d.next_message()
            if mtype < 0:
                assert not framed, f"case {case}: a complete message was not framed"
                outcomes["incomplete"] += 1
                continue
            assert mtype == ROWS
            out: list = []
            d.read_rows(out)
            assert all(type(row) is tuple and len(row) == len(d.columns) for row in out)
            outcomes["ok"] += 1
        except dqlite.InterfaceError:
            outcomes["error"] += 1
        except Exception as exc:  # noqa: BLE001 - the point of the test
            pytest.fail(f"case {case}: {type(exc).__name__}: {exc} (input {data.hex()})")
    assert time.monotonic() - started < 5
    # The mutations must have exercised every outcome, or the test proves nothing.
    assert (outcomes["ok"] > CASES // 20 and outcomes["error"] > CASES // 4
            and outcomes["incomplete"] > CASES // 50), outcomes


def test_random_mutations_through_one_long_lived_decoder():
    """The same, with one decoder carrying its result state from message to message."""
    base = fuzz_rows_message()
    rng = random.Random(99)
    d = Decoder(max_message_size=1 << 20, initial_size=64)
    for case in range(CASES // 4):
        data, _ = _mutate(rng, base)
        d.feed(data)
        try:
            if d.next_message() < 0:
                d.reset()  # what the connection does when it drops the socket
                continue
            if d.read_rows([]):
                d.end_result()
        except dqlite.InterfaceError:
            pass
        except Exception as exc:  # noqa: BLE001
            pytest.fail(f"case {case}: {type(exc).__name__}: {exc} (input {data.hex()})")
    # Whatever came before, a fresh result decodes once the stream is reset.
    d.reset()
    d.feed(base)
    assert d.next_message() == ROWS
    out: list = []
    assert d.read_rows(out) is True and len(out) == 6


@pytest.mark.parametrize("build, reader", [
    (lambda: servers_message([(i, f"10.0.0.{i}:9001", i % 3) for i in (1, 2, 3)]), "read_servers"),
    (lambda: files_message({"db": b"a" * 16, "db-wal": b"b" * 8}), "read_files"),
    (lambda: failure_message(1555, "UNIQUE constraint failed: t.id"), "read_failure"),
    (lambda: server_message(1, "127.0.0.1:9001"), "read_server"),
    (lambda: stmt_message(3, 2), "read_stmt"),
])
def test_random_mutations_of_other_responses(build, reader):
    base = build()
    d = Decoder()
    d.feed(base)
    d.next_message()
    getattr(d, reader)()  # the unmutated message is valid
    rng = random.Random(reader)
    errors = 0
    for case in range(1000):
        data, framed = _mutate(rng, base)
        d = Decoder(max_message_size=1 << 20, initial_size=64)
        d.feed(data)
        try:
            if d.next_message() < 0:
                assert not framed
                continue
            getattr(d, reader)()
        except dqlite.InterfaceError:
            errors += 1
        except Exception as exc:  # noqa: BLE001
            pytest.fail(f"{reader} case {case}: {type(exc).__name__}: {exc} (input {data.hex()})")
    assert errors > 100
