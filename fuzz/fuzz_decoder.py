#!/usr/bin/env python3
"""atheris harness: arbitrary server bytes into the compiled ``Decoder``.

The input's first two bytes steer the run, the rest are wire bytes:

* byte 0, bit 0: a *persistent* decoder shared by every input of the run
  (incomplete messages and ROWS state carry over from one input to the
  next, as on a long-lived connection) instead of fresh ones;
  bit 1: ``parse_datetimes``; bit 2: ROWS are drained with ``skip_rows``
  instead of ``read_rows``; bit 3: the reader called is chosen by byte 1,
  not by the framed type (a response of the wrong type); bits 4-5: how bytes
  arrive (one ``feed``, ``get_buffer``/``buffer_updated``, chunks of byte 1's
  size, or 1..8-byte chunks); bit 6: SERVERS format 0; bit 7: ``end_result``
  after each DONE and ``reset`` after each protocol error.
* byte 1: chunk size, reader choice, ``max_message_size`` of fresh decoders.

After each chunk arrives every complete message is framed (``next_message``)
and read, as a connection does.  Fresh decoders run twice, with the unused
part of their buffer filled with 0x00 and then 0xFF: the two transcripts must
be identical, or the decoder read bytes it had not received.

Allowed outcomes: results of the right shapes, ``dqlite.InterfaceError``
(``ProtocolError`` included), and, for a FAILURE message, the server's error
it encodes.  Anything else (another exception, a wrong shape, differing
transcripts) is a finding: the harness raises and atheris saves the input.
A crash, a hang (``-timeout``) or memory growth (``-rss_limit_mb`` /
``-malloc_limit_mb``) is one too.

Run through fuzz/run.sh (which picks the instrumented build) or directly:
``DQLITE_FUZZ_EXT=build/fuzz/cov/dqlite/_protocol...so python fuzz/fuzz_decoder.py CORPUS``.
"""

from __future__ import annotations

import collections
import datetime
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(1, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import _loader  # noqa: E402

_loader.install()

import atheris  # noqa: E402

with atheris.instrument_imports(include=["dqlite"]):
    import dqlite  # noqa: E402
    from dqlite import _protocol  # noqa: E402

FAILURE, SERVER, WELCOME, SERVERS, DB, STMT, RESULT, ROWS, EMPTY, FILES, METADATA = range(11)
MAX_SIZES = (1 << 30, 64, 4096, 1 << 16)
VALUE_TYPES = (int, float, str, bytes, type(None), bool, datetime.datetime, datetime.date)
FINDINGS_DIR = os.environ.get("DQLITE_FUZZ_FINDINGS", "build/fuzz/findings")


class Finding(AssertionError):
    """The decoder did something it must not."""


def check(cond: bool, what: str) -> None:
    if not cond:
        raise Finding(what)


def read(decoder: _protocol.Decoder, mtype: int, flags: int, knob: int) -> object:
    """Read the framed message with the reader a connection would use (or a wrong one)."""
    if flags & 0x08:
        mtype = knob % 12  # 11: skip()
    if mtype == FAILURE:
        code, msg = decoder.read_failure()
        check(isinstance(code, int) and 0 <= code < 1 << 64 and isinstance(msg, str), "FAILURE shape")
        return code, msg
    if mtype == SERVER:
        node, address = decoder.read_server()
        check(isinstance(node, int) and isinstance(address, str), "SERVER shape")
        return node, address
    if mtype == WELCOME:
        value = decoder.read_welcome()
        check(isinstance(value, int), "WELCOME shape")
        return value
    if mtype == SERVERS:
        fmt = 0 if flags & 0x40 else 1
        servers = decoder.read_servers(fmt)
        for node, address, role in servers:
            check(isinstance(node, int) and isinstance(address, str), "SERVERS shape")
            check(role is None if fmt == 0 else isinstance(role, int), "SERVERS role")
        return servers
    if mtype == DB:
        return decoder.read_db()
    if mtype == STMT:
        stmt_id, nparams = decoder.read_stmt()
        check(0 <= stmt_id < 1 << 32 and 0 <= nparams < 1 << 64, "STMT shape")
        return stmt_id, nparams
    if mtype == RESULT:
        last_id, changes = decoder.read_result()
        check(-(1 << 63) <= last_id < 1 << 63 and 0 <= changes < 1 << 64, "RESULT shape")
        return last_id, changes
    if mtype == ROWS:
        if flags & 0x04:
            done = decoder.skip_rows()
            check(done is True or done is False, "skip_rows result")
            out = None
        else:
            out = []
            done = decoder.read_rows(out)
            check(done is True or done is False, "read_rows result")
            columns = decoder.columns
            check(isinstance(columns, list) and all(type(c) is str for c in columns), f"columns {columns!r}")
            # No columns (a statement without result columns run as a query): no rows either.
            check(columns or not out, f"rows {out!r} without columns")
            for row in out:
                check(type(row) is tuple and len(row) == len(columns), f"row {row!r} for columns {columns!r}")
                for v in row:
                    check(type(v) in VALUE_TYPES, f"value of type {type(v)}")
            types = decoder.first_row_types
            check(types is None or (type(types) is tuple and len(types) == len(columns)), "first_row_types")
        if done and flags & 0x80:
            decoder.end_result()
        return done, out
    if mtype == EMPTY:
        return decoder.read_empty()
    if mtype == FILES:
        files = decoder.read_files()
        check(all(type(k) is str and type(v) is bytes for k, v in files.items()), "FILES shape")
        return files
    if mtype == METADATA:
        return decoder.read_metadata()
    decoder.skip()
    return "skipped"


def drain(decoder: _protocol.Decoder, flags: int, knob: int, log: list) -> bool:
    """Read every complete message; False when the stream is beyond use (framing error)."""
    for _ in range(1 << 16):
        try:
            mtype = decoder.next_message()
        except dqlite.InterfaceError as exc:
            log.append(("frame-error", type(exc).__name__, str(exc)))
            return False
        check(mtype >= -1, f"next_message returned {mtype}")
        if mtype < 0:
            return True
        check(0 <= mtype <= 255, f"message type {mtype}")
        check(decoder.next_message() == mtype, "next_message is not idempotent")
        try:
            log.append(("ok", mtype, repr(read(decoder, mtype, flags, knob))))
        except dqlite.InterfaceError as exc:
            log.append(("error", type(exc).__name__, str(exc)))
            if flags & 0x80:
                decoder.reset()
        except dqlite.Error as exc:
            # Only a FAILURE message may turn into the server's (database) error.
            check(mtype == FAILURE and exc.code is not None,
                  f"{type(exc).__name__} from a message of type {mtype}: {exc}")
            log.append(("server-error", type(exc).__name__, exc.code, str(exc)))
        knob = (knob * 31 + 7) & 0xFF
        # The message was released, whatever happened: no reader sees it again.
        try:
            decoder.read_empty()
        except dqlite.ProtocolError as exc:
            check("no complete message" in str(exc), f"message not released: {exc}")
        else:
            raise Finding("a read_* left its message framed")
    raise Finding("more messages than the input can hold")


def chunks(data: bytes, flags: int, knob: int):
    how = (flags >> 4) & 3
    if how in (0, 1):
        yield data
        return
    size = max(1, knob) if how == 2 else (knob & 7) + 1
    for i in range(0, len(data), size):
        yield data[i:i + size]


def put(decoder: _protocol.Decoder, chunk: bytes, flags: int, poison: int | None) -> None:
    if (flags >> 4) & 3 == 1 or poison is not None and (flags >> 4) & 3 != 0:
        # The BufferedProtocol way: write into get_buffer() and report the count.
        off = 0
        while off < len(chunk):
            view = decoder.get_buffer(len(chunk) - off)
            check(len(view) > 0, "get_buffer() returned no room")
            n = min(len(view), len(chunk) - off)
            view[:n] = chunk[off:off + n]
            decoder.buffer_updated(n)
            off += n
    else:
        decoder.feed(chunk)
    if poison is not None:
        # Garbage in the space not (yet) received: must never be read.
        view = decoder.get_buffer()
        view[:] = bytes([poison]) * len(view)


def run(decoder: _protocol.Decoder, data: bytes, flags: int, knob: int, poison: int | None) -> list:
    log: list = []
    for chunk in chunks(data, flags, knob):
        try:
            put(decoder, chunk, flags, poison)
        except dqlite.InterfaceError as exc:
            log.append(("put-error", type(exc).__name__, str(exc)))
            decoder.reset()
        if not drain(decoder, flags, knob, log):
            decoder.reset()
    return log


_persistent = _protocol.Decoder(max_message_size=1 << 20, initial_size=64)
_history: collections.deque = collections.deque(maxlen=32)


def save_history() -> None:
    """The inputs the persistent decoder saw before a finding (they carry state)."""
    os.makedirs(FINDINGS_DIR, exist_ok=True)
    path = os.path.join(FINDINGS_DIR, f"persistent-history-{os.getpid()}.bin")
    with open(path, "wb") as f:
        for item in _history:
            f.write(len(item).to_bytes(4, "little") + item)
    print(f"fuzz_decoder: the persistent decoder's last {len(_history)} inputs are in {path}", file=sys.stderr)


def test_one_input(data: bytes) -> None:
    if len(data) < 2:
        return
    flags, knob, wire = data[0], data[1], data[2:]
    if flags & 0x01:
        _history.append(data)
        try:
            run(_persistent, wire, flags, knob, None)
        except BaseException:
            save_history()
            raise
        if _persistent.buffered > 4 << 20:
            _persistent.reset()
        return
    transcripts = []
    for poison in (0x00, 0xFF):
        decoder = _protocol.Decoder(max_message_size=MAX_SIZES[knob & 3],
                                    parse_datetimes=bool(flags & 0x02), initial_size=64)
        transcripts.append(run(decoder, wire, flags, knob, poison))
    check(transcripts[0] == transcripts[1],
          "the decoder's results depend on bytes it never received:\n"
          f"{transcripts[0]!r}\n!=\n{transcripts[1]!r}")


def main() -> None:
    print(_loader.describe(), file=sys.stderr, flush=True)
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
