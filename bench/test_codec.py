"""Micro-benchmarks of the compiled codec alone (``dqlite._protocol``): no cluster.

Run with ``make bench-micro`` (or ``python -m pytest bench``); ``make test``
never collects them (its testpaths is ``tests``).  They need pytest-benchmark
(the ``bench`` extra).

The ROWS streams are what a 1.11 server sends for the W2 query (5 columns) and
W4's 7 columns over the 100,000 bench rows: built by tests/wirebytes.py
(written from shared/docs/protocol.md §1.6) the way the server batches (a
message is closed once header + column names + rows reach 4,096 bytes).
They match a capture from a real cluster byte for byte (``python -m
bench.floor --capture FILE``); set ``BENCH_ROWS_STREAM`` (W2 columns) to
decode a captured file instead.
"""

from __future__ import annotations

import os
from datetime import datetime
from typing import Any

import pytest

from bench import data
from tests.wirebytes import BLOB, BOOLEAN, FLOAT, INTEGER, ISO8601, NULL, TEXT, rows_stream, split_messages

_protocol = pytest.importorskip("dqlite._protocol")
pytest.importorskip("pytest_benchmark")

ROWS = 100_000
REQUESTS = 10_000
W2_COLUMNS = [("id", INTEGER), ("name", TEXT), ("v", FLOAT), ("b", BLOB), ("n", NULL)]
W4_COLUMNS = W2_COLUMNS + [("flag", BOOLEAN), ("ts", ISO8601)]


@pytest.fixture(scope="module")
def bench_rows() -> list[tuple[Any, ...]]:
    return data.make_rows(1, ROWS)


@pytest.fixture(scope="module")
def w2_stream(bench_rows: list[tuple[Any, ...]]) -> bytes:
    captured = os.environ.get("BENCH_ROWS_STREAM")
    if captured:
        with open(captured, "rb") as f:
            return f.read()
    return rows_stream(W2_COLUMNS, bench_rows)


@pytest.fixture(scope="module")
def w4_stream(bench_rows: list[tuple[Any, ...]]) -> bytes:
    return rows_stream(W4_COLUMNS, bench_rows)


def _fed(stream: bytes, **options: Any) -> Any:
    decoder = _protocol.Decoder(**options)
    decoder.feed(stream)
    return decoder


def _decode(decoder: Any) -> list[tuple[Any, ...]]:
    out: list[tuple[Any, ...]] = []
    while decoder.next_message() >= 0:
        if decoder.read_rows(out):
            break
    decoder.end_result()
    return out


def _skip(decoder: Any) -> int:
    batches = 1
    while decoder.next_message() >= 0 and not decoder.skip_rows():
        batches += 1
    return batches


def _bench_decode(benchmark: Any, stream: bytes, **options: Any) -> list[tuple[Any, ...]]:
    """Decode only: each round decodes a decoder fed (untimed) with the whole stream."""
    return benchmark.pedantic(_decode, setup=lambda: ((_fed(stream, **options),), {}), rounds=15, warmup_rounds=1)


def test_decode_w2_100k_rows(benchmark: Any, w2_stream: bytes, bench_rows: list[tuple[Any, ...]]) -> None:
    """W2's 5 columns (INTEGER, TEXT, FLOAT, BLOB, NULL) x 100,000 rows into tuples."""
    rows = _bench_decode(benchmark, w2_stream)
    assert len(rows) == ROWS
    assert rows[-1] == bench_rows[-1][:5]


def test_decode_w4_100k_rows_datetimes(benchmark: Any, w4_stream: bytes, bench_rows: list[tuple[Any, ...]]) -> None:
    """W4's 7 columns, BOOLEAN -> bool and ISO8601 -> datetime (parse_datetimes=True)."""
    rows = _bench_decode(benchmark, w4_stream)
    assert len(rows) == ROWS
    assert rows[-1][5] is False and isinstance(rows[-1][6], datetime)


def test_decode_w4_100k_rows_raw_text(benchmark: Any, w4_stream: bytes, bench_rows: list[tuple[Any, ...]]) -> None:
    """W4's 7 columns with datetimes left as text (what the SQLAlchemy dialect asks for)."""
    rows = _bench_decode(benchmark, w4_stream, parse_datetimes=False)
    assert len(rows) == ROWS
    assert rows[-1][6] == bench_rows[-1][6]


def test_skip_w2_100k_rows(benchmark: Any, w2_stream: bytes) -> None:
    """Framing only (``skip_rows``): the codec's share of the W8 floor."""
    batches = benchmark.pedantic(_skip, setup=lambda: ((_fed(w2_stream),), {}), rounds=15, warmup_rounds=1)
    assert batches == len(split_messages(w2_stream))


def test_feed_w2_stream(benchmark: Any, w2_stream: bytes) -> None:
    """Copying 7 MB of received bytes into the decoder's buffer (the shells' recv_into path)."""
    decoder = benchmark(_fed, w2_stream)
    assert decoder.buffered == len(w2_stream)


def test_encode_10k_exec_requests(benchmark: Any, bench_rows: list[tuple[Any, ...]]) -> None:
    """10,000 EXEC requests with W3's 7 parameters each (the executemany pipeline)."""
    params = bench_rows[:REQUESTS]
    encoder = _protocol.Encoder()

    def encode() -> bytes:
        for row in params:
            encoder.exec(1, row)
        return encoder.take()

    out = benchmark(encode)
    assert len(out) > REQUESTS * 64


def test_encode_10k_query_requests(benchmark: Any) -> None:
    """10,000 QUERY requests with one integer parameter (W1's point query)."""
    ids = [(i,) for i in range(1, REQUESTS + 1)]
    encoder = _protocol.Encoder()

    def encode() -> bytes:
        for params in ids:
            encoder.query(1, params)
        return encoder.take()

    out = benchmark(encode)
    assert len(out) == REQUESTS * 32
