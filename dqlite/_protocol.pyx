# cython: language_level=3
"""The dqlite wire protocol, I/O-free (see shared/docs/protocol.md).

Two halves, no sockets:

* ``Encoder`` appends request messages to a reusable buffer; ``take()`` hands
  out the bytes to send.  Several requests can be appended before a send, which
  is how the connection pipelines (BEGIN + statement, batches of EXECs).
* ``Decoder`` owns the read buffer.  The I/O shell fills it (``get_buffer`` /
  ``buffer_updated``, usable directly as an asyncio ``BufferedProtocol``),
  ``next_message()`` frames one response, and a ``read_*`` method decodes it in
  place and releases it.  Every read from wire bytes is bounds-checked; a
  malformed frame raises ``ProtocolError`` and never reads past the message.

All integers on the wire are little-endian and everything is 8-byte aligned.
"""

import sys
from datetime import date, datetime, timezone
from datetime import time as _time_type
from decimal import Decimal as _decimal_type

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from cpython.bytearray cimport PyByteArray_AS_STRING
from cpython.float cimport PyFloat_FromDouble
from cpython.long cimport PyLong_FromLongLong
from cpython.ref cimport Py_INCREF
from cpython.tuple cimport PyTuple_New, PyTuple_SET_ITEM
from cpython.unicode cimport PyUnicode_DecodeUTF8
from libc.stdint cimport int64_t, uint8_t, uint32_t, uint64_t
from libc.stdlib cimport free, realloc
from libc.string cimport memchr, memcmp, memcpy, memmove, memset

from dqlite.exceptions import (
    DataError,
    ProgrammingError,
    ProtocolError,
    error_from_failure,
)

if sys.byteorder != "little":  # the loads below are plain memcpy of LE words
    raise ImportError("dqlite's compiled core supports little-endian hosts only")

cdef extern from "Python.h":
    const char* PyUnicode_AsUTF8AndSize(object s, Py_ssize_t* size) except NULL
    object PyMemoryView_FromMemory(char* mem, Py_ssize_t size, int flags)
    int PyBUF_WRITE

# ---------------------------------------------------------------------------
# Protocol constants (protocol.md §1-2)

PROTOCOL_VERSION = 1

# Requests
REQUEST_LEADER = 0
REQUEST_CLIENT = 1
REQUEST_OPEN = 3
REQUEST_PREPARE = 4
REQUEST_EXEC = 5
REQUEST_QUERY = 6
REQUEST_FINALIZE = 7
REQUEST_EXEC_SQL = 8
REQUEST_QUERY_SQL = 9
REQUEST_INTERRUPT = 10
REQUEST_ADD = 12
REQUEST_ASSIGN = 13
REQUEST_REMOVE = 14
REQUEST_DUMP = 15
REQUEST_CLUSTER = 16
REQUEST_TRANSFER = 17
REQUEST_DESCRIBE = 18
REQUEST_WEIGHT = 19
# Never sent (protocol.md §8): HEARTBEAT (2) gets no answer and kills the
# connection, CONNECT (11) hands the socket to raft.  No encoder exists for them.

# Responses
cdef enum: RESPONSE_FAILURE = 0
cdef enum: RESPONSE_SERVER = 1
cdef enum: RESPONSE_WELCOME = 2
cdef enum: RESPONSE_SERVERS = 3
cdef enum: RESPONSE_DB = 4
cdef enum: RESPONSE_STMT = 5
cdef enum: RESPONSE_RESULT = 6
cdef enum: RESPONSE_ROWS = 7
cdef enum: RESPONSE_EMPTY = 8
cdef enum: RESPONSE_FILES = 9
cdef enum: RESPONSE_METADATA = 10

RESPONSE_NAMES = {
    0: "FAILURE", 1: "SERVER", 2: "WELCOME", 3: "SERVERS", 4: "DB", 5: "STMT",
    6: "RESULT", 7: "ROWS", 8: "EMPTY", 9: "FILES", 10: "METADATA",
}

# Value type codes (§1.4)
cdef enum: T_INTEGER = 1
cdef enum: T_FLOAT = 2
cdef enum: T_TEXT = 3
cdef enum: T_BLOB = 4
cdef enum: T_NULL = 5
cdef enum: T_UNIXTIME = 9
cdef enum: T_ISO8601 = 10
cdef enum: T_BOOLEAN = 11

cdef uint64_t MARKER_DONE = 0xFFFFFFFFFFFFFFFFULL
cdef uint64_t MARKER_PART = 0xEEEEEEEEEEEEEEEEULL

# Servers without params32 take at most this many parameters (§1.5).
MAX_PARAMS_SCHEMA0 = 255

# A stream of consecutive zero-row PART batches longer than this is the
# server's endless-stream bug (§4.3, §8.7): it will never make progress.
cdef enum: MAX_EMPTY_PARTS = 8

cdef object _utc = timezone.utc
cdef object _datetime_fromisoformat = datetime.fromisoformat
cdef object _date_fromisoformat = date.fromisoformat
cdef object _datetime_fromtimestamp = datetime.fromtimestamp


cdef inline uint64_t load_u64(const char* p) noexcept nogil:
    cdef uint64_t v
    memcpy(&v, p, 8)
    return v


cdef inline uint32_t load_u32(const char* p) noexcept nogil:
    cdef uint32_t v
    memcpy(&v, p, 4)
    return v


cdef inline Py_ssize_t pad8(Py_ssize_t n) noexcept nogil:
    return (n + 7) & ~7


# ---------------------------------------------------------------------------
# Encoding

cdef const char* _checked_utf8(str s, Py_ssize_t* n, str what) except NULL:
    """The UTF-8 of ``s`` (cached in the str), refusing what the wire cannot carry."""
    cdef const char* data
    try:
        data = PyUnicode_AsUTF8AndSize(s, n)
    except UnicodeEncodeError as exc:
        raise DataError(f"{what} is not valid Unicode: {exc}") from None
    if memchr(data, 0, n[0]) != NULL:
        raise DataError(f"{what} contains a NUL character, which the dqlite protocol cannot carry")
    return data


cdef class Encoder:
    """Appends request messages to a growable buffer; ``take()`` returns them.

    One ``Encoder`` per connection is reused for every request, so encoding
    allocates nothing but the bytes object handed to the socket.
    """

    cdef char* buf
    cdef Py_ssize_t length
    cdef Py_ssize_t capacity
    cdef Py_ssize_t msg_start
    cdef readonly int count

    def __cinit__(self):
        self.buf = NULL
        self.length = 0
        self.capacity = 0
        self.count = 0
        self._reserve(256)

    def __dealloc__(self):
        free(self.buf)

    cdef int _reserve(self, Py_ssize_t extra) except -1:
        cdef Py_ssize_t need = self.length + extra
        cdef Py_ssize_t cap
        cdef char* nbuf
        if need <= self.capacity:
            return 0
        cap = self.capacity * 2 if self.capacity else 256
        while cap < need:
            cap *= 2
        nbuf = <char*>realloc(self.buf, cap)
        if nbuf == NULL:
            raise MemoryError()
        self.buf = nbuf
        self.capacity = cap
        return 0

    def __len__(self):
        return self.length

    def take(self):
        """The encoded requests as bytes; the buffer starts empty again."""
        data = PyBytes_FromStringAndSize(self.buf, self.length)
        self.length = 0
        self.count = 0
        return data

    def clear(self):
        """Drop whatever was encoded and not taken."""
        self.length = 0
        self.count = 0

    # -- primitives ---------------------------------------------------------

    cdef inline int _begin(self, uint8_t mtype, uint8_t schema) except -1:
        self._reserve(8)
        self.msg_start = self.length
        memset(self.buf + self.length, 0, 8)
        self.buf[self.length + 4] = <char>mtype
        self.buf[self.length + 5] = <char>schema
        self.length += 8
        return 0

    cdef inline int _end(self) except -1:
        cdef Py_ssize_t body = self.length - self.msg_start - 8
        cdef uint64_t words = body >> 3
        cdef uint32_t w32
        if words > 0xFFFFFFFF:
            self.length = self.msg_start
            raise DataError("request too large for the dqlite protocol (more than 32 GiB)")
        w32 = <uint32_t>words
        memcpy(self.buf + self.msg_start, &w32, 4)
        self.count += 1
        return 0

    cdef inline int _u64(self, uint64_t v) except -1:
        self._reserve(8)
        memcpy(self.buf + self.length, &v, 8)
        self.length += 8
        return 0

    cdef inline int _u32_pair(self, uint32_t a, uint32_t b) except -1:
        self._reserve(8)
        memcpy(self.buf + self.length, &a, 4)
        memcpy(self.buf + self.length + 4, &b, 4)
        self.length += 8
        return 0

    cdef inline int _text_bytes(self, const char* data, Py_ssize_t n) except -1:
        cdef Py_ssize_t size = pad8(n + 1)
        self._reserve(size)
        memcpy(self.buf + self.length, data, n)
        memset(self.buf + self.length + n, 0, size - n)
        self.length += size
        return 0

    cdef int _text(self, str s, str what) except -1:
        cdef Py_ssize_t n
        cdef const char* data = _checked_utf8(s, &n, what)
        return self._text_bytes(data, n)

    cdef int _blob(self, const char* data, Py_ssize_t n) except -1:
        cdef Py_ssize_t size = pad8(n)
        self._u64(<uint64_t>n)
        self._reserve(size)
        if n:
            memcpy(self.buf + self.length, data, n)
        memset(self.buf + self.length + n, 0, size - n)
        self.length += size
        return 0

    cdef int _params(self, params, bint params32) except -1:
        """The parameter tuple (§1.5): count, type codes, padding, values."""
        cdef Py_ssize_t n = len(params)
        cdef Py_ssize_t head = (4 if params32 else 1) + n
        cdef Py_ssize_t codes_at, i
        cdef uint32_t n32 = <uint32_t>n
        cdef char code
        if n == 0:
            return 0  # no tuple at all: the server binds nothing
        if not params32 and n > 255:
            raise ProgrammingError(f"{n} parameters need the 32-bit parameter count (params32)")
        head = pad8(head)
        self._reserve(head)
        memset(self.buf + self.length, 0, head)
        if params32:
            memcpy(self.buf + self.length, &n32, 4)
            codes_at = self.length + 4
        else:
            self.buf[self.length] = <char>n
            codes_at = self.length + 1
        self.length += head
        for i in range(n):
            code = self._value(params[i], i)
            self.buf[codes_at + i] = code  # buf may have moved: index, not pointer
        return 0

    cdef char _value(self, v, Py_ssize_t index) except 0:
        cdef double d
        cdef int64_t i64
        cdef const char* data
        cdef Py_ssize_t n
        t = type(v)
        if v is None:
            self._u64(0)
            return T_NULL
        if t is int:
            try:
                i64 = v
            except OverflowError:
                raise DataError(
                    f"parameter {index + 1}: integer {v} does not fit in 64 bits") from None
            self._u64(<uint64_t>i64)
            return T_INTEGER
        if t is str:
            self._text(v, f"parameter {index + 1}")
            return T_TEXT
        if t is float:
            d = v
            self._reserve(8)
            memcpy(self.buf + self.length, &d, 8)
            self.length += 8
            return T_FLOAT
        if t is bytes:
            self._blob(PyBytes_AS_STRING(v), len(v))
            return T_BLOB
        if t is bool:
            self._u64(1 if v else 0)
            return T_INTEGER
        return self._value_slow(v, index)

    cdef char _value_slow(self, v, Py_ssize_t index) except 0:
        if isinstance(v, (bytearray, memoryview)):
            data = bytes(v)
            self._blob(PyBytes_AS_STRING(data), len(data))
            return T_BLOB
        if isinstance(v, datetime):
            self._text(v.isoformat(" "), f"parameter {index + 1}")
            return T_TEXT
        if isinstance(v, date):
            self._text(v.isoformat(), f"parameter {index + 1}")
            return T_TEXT
        if isinstance(v, _time_type):
            self._text(v.isoformat(), f"parameter {index + 1}")
            return T_TEXT
        if isinstance(v, _decimal_type):
            self._text(str(v), f"parameter {index + 1}")
            return T_TEXT
        if isinstance(v, bool):
            self._u64(1 if v else 0)
            return T_INTEGER
        if isinstance(v, int):
            return self._value(int(v), index)
        if isinstance(v, float):
            return self._value(float(v), index)
        if isinstance(v, str):
            return self._value(str(v), index)
        if isinstance(v, bytes):
            return self._value(bytes(v), index)
        raise ProgrammingError(
            f"parameter {index + 1}: type {type(v).__module__}.{type(v).__qualname__} "
            f"is not supported (use int, float, str, bytes, None, bool, datetime, date, "
            f"time or Decimal)")

    # -- requests (§2.1) -----------------------------------------------------

    def leader(self):
        self._begin(REQUEST_LEADER, 0); self._u64(0); self._end()

    def client(self, uint64_t client_id):
        self._begin(REQUEST_CLIENT, 0); self._u64(client_id); self._end()

    def open(self, str name):
        cdef Py_ssize_t n
        _checked_utf8(name, &n, "database name")  # before a byte is written
        self._begin(REQUEST_OPEN, 0)
        self._text(name, "database name")
        self._u64(0)                      # flags (ignored by the server)
        self._text_bytes("", 0)           # vfs (ignored by the server)
        self._end()

    def prepare(self, str sql):
        cdef Py_ssize_t n
        _checked_utf8(sql, &n, "SQL text")
        self._begin(REQUEST_PREPARE, 0)
        self._u64(0)                      # db id: always 0
        self._text(sql, "SQL text")
        self._end()

    def exec(self, uint32_t stmt_id, params=(), bint params32=False):
        self._begin(REQUEST_EXEC, 1 if params32 else 0)
        self._u32_pair(0, stmt_id)
        self._params_or_rollback(params, params32)
        self._end()

    def query(self, uint32_t stmt_id, params=(), bint params32=False):
        self._begin(REQUEST_QUERY, 1 if params32 else 0)
        self._u32_pair(0, stmt_id)
        self._params_or_rollback(params, params32)
        self._end()

    def finalize(self, uint32_t stmt_id):
        self._begin(REQUEST_FINALIZE, 0); self._u32_pair(0, stmt_id); self._end()

    def exec_sql(self, str sql, params=(), bint params32=False):
        cdef Py_ssize_t n
        _checked_utf8(sql, &n, "SQL text")
        self._begin(REQUEST_EXEC_SQL, 1 if params32 else 0)
        self._u64(0)
        self._text(sql, "SQL text")
        self._params_or_rollback(params, params32)
        self._end()

    def query_sql(self, str sql, params=(), bint params32=False):
        cdef Py_ssize_t n
        _checked_utf8(sql, &n, "SQL text")
        self._begin(REQUEST_QUERY_SQL, 1 if params32 else 0)
        self._u64(0)
        self._text(sql, "SQL text")
        self._params_or_rollback(params, params32)
        self._end()

    def interrupt(self):
        self._begin(REQUEST_INTERRUPT, 0); self._u64(0); self._end()

    def add(self, uint64_t node_id, str address):
        cdef Py_ssize_t n
        _checked_utf8(address, &n, "address")
        self._begin(REQUEST_ADD, 0); self._u64(node_id); self._text(address, "address"); self._end()

    def assign(self, uint64_t node_id, uint64_t role):
        self._begin(REQUEST_ASSIGN, 0); self._u64(node_id); self._u64(role); self._end()

    def remove(self, uint64_t node_id):
        self._begin(REQUEST_REMOVE, 0); self._u64(node_id); self._end()

    def dump(self, str name):
        cdef Py_ssize_t n
        _checked_utf8(name, &n, "database name")
        self._begin(REQUEST_DUMP, 0); self._text(name, "database name"); self._end()

    def cluster(self, uint64_t fmt=1):
        if fmt > 1:
            raise ProgrammingError("CLUSTER format must be 0 or 1")
        self._begin(REQUEST_CLUSTER, 0); self._u64(fmt); self._end()

    def transfer(self, uint64_t node_id=0):
        self._begin(REQUEST_TRANSFER, 0); self._u64(node_id); self._end()

    def describe(self):
        # Format 0 only: any other format aborts a 1.11.1 node (§8.4).
        self._begin(REQUEST_DESCRIBE, 0); self._u64(0); self._end()

    def weight(self, uint64_t weight):
        self._begin(REQUEST_WEIGHT, 0); self._u64(weight); self._end()

    cdef int _params_or_rollback(self, params, bint params32) except -1:
        # A bad parameter must not leave half a message in the buffer, or the
        # next request would be framed after garbage.
        try:
            self._params(params, params32)
        except BaseException:
            self.length = self.msg_start
            raise
        return 0


def encode_handshake():
    """The 8 bytes a client sends first: the protocol version (u64 LE 1)."""
    return (1).to_bytes(8, "little")


# ---------------------------------------------------------------------------
# Decoding

cdef class Decoder:
    """The read side: a buffer the I/O shell fills, framed and decoded in place.

    Usage by a shell::

        while decoder.next_message() < 0:
            n = sock.recv_into(decoder.get_buffer())
            decoder.buffer_updated(n)
        result = decoder.read_result()

    ``next_message`` returns the type of the complete message at the head of
    the buffer (or -1 while it is incomplete); each ``read_*`` method decodes
    that message, releases it, and raises the server's error for a FAILURE or
    ``ProtocolError`` for a message that is malformed or of the wrong type.
    """

    cdef object storage          # bytearray holding the bytes
    cdef char* buf
    cdef Py_ssize_t capacity
    cdef Py_ssize_t start        # first unread byte
    cdef Py_ssize_t end          # one past the last received byte
    cdef Py_ssize_t needed       # bytes the message at `start` needs in total
    cdef readonly Py_ssize_t max_message_size

    cdef int mtype               # current message: type, schema, body span
    cdef int mschema
    cdef Py_ssize_t body
    cdef Py_ssize_t body_len

    # ROWS state across the batches of one result
    cdef bytes names_header      # raw column-name bytes of the last batch
    cdef readonly list columns   # decoded column names of the current result
    cdef readonly tuple first_row_types  # wire type codes of the result's first row
    cdef tuple last_row_types    # the last first_row_types built (reused while equal)
    cdef int batches             # batches decoded of the current result
    cdef int empty_parts
    cdef public bint parse_datetimes

    def __cinit__(self, Py_ssize_t max_message_size=1 << 30, bint parse_datetimes=True,
                  Py_ssize_t initial_size=65536):
        if initial_size < 64:
            initial_size = 64
        self.storage = bytearray(initial_size)
        self.buf = PyByteArray_AS_STRING(self.storage)
        self.capacity = initial_size
        self.start = 0
        self.end = 0
        self.needed = 8
        self.max_message_size = max_message_size
        self.mtype = -1
        self.names_header = None
        self.columns = None
        self.first_row_types = None
        self.last_row_types = None
        self.batches = 0
        self.empty_parts = 0
        self.parse_datetimes = parse_datetimes

    # -- filling ------------------------------------------------------------

    def get_buffer(self, Py_ssize_t sizehint=-1):
        """A writable memoryview of the free space (asyncio BufferedProtocol API).

        The buffer grows geometrically with what was actually received, never
        straight to a length announced by the server.
        """
        self._make_room()
        return PyMemoryView_FromMemory(self.buf + self.end, self.capacity - self.end, PyBUF_WRITE)

    cdef int _make_room(self) except -1:
        """Compact or grow the buffer for the next receive (see ``get_buffer``)."""
        cdef Py_ssize_t live = self.end - self.start
        cdef Py_ssize_t want = self.needed if self.needed > live else live + 8
        cdef Py_ssize_t cap
        if self.mtype >= 0:
            raise ProtocolError("get_buffer() while a message is being decoded")
        if self.capacity - self.end < 4096 or self.end + 8 > self.capacity:
            if self.start > 0:
                # Compact: move the unread bytes to the front.  A new bytearray
                # is not needed: the old memoryview is not written any more.
                memmove(self.buf, self.buf + self.start, live)
                self.start = 0
                self.end = live
        if self.capacity - self.end < 4096 and want > self.end:
            cap = self.capacity
            while cap - self.end < 4096 and cap < want:
                cap *= 2
            if cap > self.capacity:
                # A fresh bytearray (rather than a resize) so that a memoryview
                # still held by the caller never blocks the growth.
                new = bytearray(cap)
                memcpy(PyByteArray_AS_STRING(new), self.buf + self.start, live)
                self.storage = new
                self.buf = PyByteArray_AS_STRING(new)
                self.capacity = cap
                self.start = 0
                self.end = live
        if self.capacity == self.end:
            cap = self.capacity * 2
            new = bytearray(cap)
            memcpy(PyByteArray_AS_STRING(new), self.buf + self.start, live)
            self.storage = new
            self.buf = PyByteArray_AS_STRING(new)
            self.capacity = cap
            self.start = 0
            self.end = live
        return 0

    def buffer_updated(self, Py_ssize_t nbytes):
        """Record that ``nbytes`` were written into the last ``get_buffer()`` view.

        Returns whether a whole message is now buffered at the head, which
        ``next_message()`` would frame (True too for a header it would
        refuse), without framing it: the asyncio shell wakes its reader only then.
        """
        cdef Py_ssize_t live
        cdef uint64_t size
        decoder_received(self, nbytes)
        live = self.end - self.start
        if live < 8:
            return False
        size = (<uint64_t>load_u32(self.buf + self.start)) * 8
        return size > <uint64_t>self.max_message_size or <uint64_t>(live - 8) >= size

    def feed(self, data):
        """Append bytes (for tests and for shells that receive bytes objects)."""
        cdef const unsigned char[::1] view = data
        cdef Py_ssize_t n = view.shape[0]
        cdef Py_ssize_t off = 0, room
        while off < n:
            mv = self.get_buffer()
            room = len(mv)
            if room > n - off:
                room = n - off
            mv[:room] = view[off:off + room]
            self.buffer_updated(room)
            off += room

    @property
    def buffered(self):
        """Bytes received and not yet consumed."""
        return self.end - self.start

    def reset(self):
        """Forget everything buffered (after the connection was closed)."""
        self.start = self.end = 0
        self.needed = 8
        self.mtype = -1
        self.names_header = None
        self.columns = None
        self.first_row_types = None
        self.batches = 0
        self.empty_parts = 0

    # -- framing ------------------------------------------------------------

    cpdef int next_message(self) except -2:
        """The type of the complete message at the head, or -1 if more bytes are needed."""
        cdef Py_ssize_t live = self.end - self.start
        cdef const char* p
        cdef uint64_t size
        if self.mtype >= 0:
            return self.mtype
        if live < 8:
            self.needed = 8
            return -1
        p = self.buf + self.start
        size = (<uint64_t>load_u32(p)) * 8
        if size > <uint64_t>self.max_message_size:
            raise ProtocolError(
                f"server announced a {size}-byte message, above the "
                f"{self.max_message_size}-byte limit")
        if <uint64_t>(live - 8) < size:
            self.needed = 8 + <Py_ssize_t>size
            return -1
        self.mtype = <uint8_t>p[4]
        self.mschema = <uint8_t>p[5]
        self.body = self.start + 8
        self.body_len = <Py_ssize_t>size
        self.needed = 8
        return self.mtype

    cdef inline void _release(self) noexcept:
        self.start = self.body + self.body_len
        self.mtype = -1
        if self.start == self.end:
            self.start = self.end = 0

    cdef int _expect(self, int expected) except -1:
        cdef int got = self.mtype
        if got < 0:
            raise ProtocolError("no complete message to decode")
        if got == expected:
            return 0
        if got == RESPONSE_FAILURE:
            code, message = self._failure()
            raise error_from_failure(code, message)
        self._release()
        raise ProtocolError(
            f"expected a {RESPONSE_NAMES.get(expected, expected)} response, got "
            f"{RESPONSE_NAMES.get(got, f'unknown type {got}')}")

    cdef tuple _failure(self):
        cdef BodyReader r = BodyReader.__new__(BodyReader)
        r.init(self.buf + self.body, self.body_len)
        try:
            code = r.u64()
            message = r.text()
        finally:
            self._release()
        return code, message

    cdef BodyReader _reader(self):
        cdef BodyReader r = BodyReader.__new__(BodyReader)
        r.init(self.buf + self.body, self.body_len)
        return r

    def skip(self):
        """Release the current message without decoding it."""
        if self.mtype >= 0:
            self._release()

    # -- responses (§2.2) ---------------------------------------------------

    def read_failure(self):
        """(code, message) of a FAILURE response."""
        self._expect(RESPONSE_FAILURE)
        return self._failure()

    def read_server(self):
        """(node_id, address) from SERVER: the leader as a node sees it."""
        self._expect(RESPONSE_SERVER)
        cdef BodyReader r = self._reader()
        try:
            node_id = r.u64()
            address = r.text()
            r.finish("SERVER")
        finally:
            self._release()
        return node_id, address

    def read_welcome(self):
        """heartbeat_timeout (ms) from WELCOME."""
        self._expect(RESPONSE_WELCOME)
        cdef BodyReader r = self._reader()
        try:
            value = r.u64()
            r.finish("WELCOME")
        finally:
            self._release()
        return value

    def read_servers(self, int fmt=1):
        """[(node_id, address, role)] from SERVERS (role is None for format 0)."""
        self._expect(RESPONSE_SERVERS)
        cdef BodyReader r = self._reader()
        cdef uint64_t n, i
        out = []
        try:
            n = r.u64()
            if n > <uint64_t>(r.remaining() // 16):
                raise ProtocolError(f"SERVERS announces {n} nodes, more than its body can hold")
            for i in range(n):
                node_id = r.u64()
                address = r.text()
                role = r.u64() if fmt == 1 else None
                out.append((node_id, address, role))
            r.finish("SERVERS")
        finally:
            self._release()
        return out

    def read_db(self):
        """The database id from DB (always 0)."""
        self._expect(RESPONSE_DB)
        cdef BodyReader r = self._reader()
        try:
            db_id = r.u32_pair()[0]
            r.finish("DB")
        finally:
            self._release()
        return db_id

    def read_stmt(self):
        """(stmt_id, param_count) from STMT."""
        self._expect(RESPONSE_STMT)
        cdef BodyReader r = self._reader()
        try:
            db_id, stmt_id = r.u32_pair()
            nparams = r.u64()
            if self.mschema == 1 and r.remaining() >= 8:
                r.u64()  # STMT_WITH_OFFSET: tail offset, unused (we never send tails)
            r.finish("STMT")
        finally:
            self._release()
        return stmt_id, nparams

    def read_result(self):
        """(last_insert_id, rows_affected) from RESULT."""
        self._expect(RESPONSE_RESULT)
        cdef BodyReader r = self._reader()
        try:
            last_id = <int64_t>r.u64()
            changes = r.u64()
            r.finish("RESULT")
        finally:
            self._release()
        return last_id, changes

    def read_empty(self):
        """An EMPTY response (acknowledges FINALIZE, ADD, ASSIGN, ...)."""
        self._expect(RESPONSE_EMPTY)
        self._release()

    def read_metadata(self):
        """(failure_domain, weight) from METADATA."""
        self._expect(RESPONSE_METADATA)
        cdef BodyReader r = self._reader()
        try:
            domain = r.u64()
            weight = r.u64()
            r.finish("METADATA")
        finally:
            self._release()
        return domain, weight

    def read_files(self):
        """{name: bytes} from FILES (the response to DUMP)."""
        self._expect(RESPONSE_FILES)
        cdef BodyReader r = self._reader()
        cdef uint64_t n, i, size
        out = {}
        try:
            n = r.u64()
            if n > <uint64_t>(r.remaining() // 16):
                raise ProtocolError(f"FILES announces {n} files, more than its body can hold")
            for i in range(n):
                name = r.text()
                size = r.u64()
                out[name] = r.raw(size)
            r.finish("FILES")
        finally:
            self._release()
        return out

    def read_rows(self, list out):
        """Decode one ROWS batch: append its rows (tuples) to ``out``.

        Returns True when the result is complete (DONE) and False when another
        batch follows (PART).  ``columns`` holds the column names.
        """
        self._expect(RESPONSE_ROWS)
        try:
            return self._rows(out)
        except UnicodeDecodeError as exc:
            raise ProtocolError(f"ROWS holds text that is not valid UTF-8: {exc}") from None
        finally:
            self._release()

    def skip_rows(self):
        """Consume one ROWS batch without decoding its values; True at DONE.

        Used to drain a result nobody will read.  Only the column header is
        walked (bounds-checked), to tell an empty batch from a full one: the
        endless stream of empty batches (§8.7) must be caught here too.
        """
        cdef const char* p
        cdef const char* end
        cdef const char* nul
        cdef uint64_t ncols, marker, i
        self._expect(RESPONSE_ROWS)
        try:
            p = self.buf + self.body
            end = p + self.body_len
            if self.body_len < 16:
                raise ProtocolError("ROWS message too short")
            ncols = load_u64(p)
            p += 8
            if ncols > <uint64_t>((end - p) // 8):
                raise ProtocolError(f"ROWS announces {ncols} columns, which its body cannot hold")
            for i in range(ncols):
                nul = <const char*>memchr(p, 0, end - p)
                if nul == NULL or pad8(nul - p + 1) > end - p:
                    raise ProtocolError("ROWS column name is not NUL-terminated within the message")
                p += pad8(nul - p + 1)
            if end - p < 8:
                raise ProtocolError("ROWS message ends without a DONE or PART marker")
            marker = load_u64(end - 8)
            if marker == MARKER_DONE:
                self.empty_parts = 0
                return True
            if marker != MARKER_PART:
                raise ProtocolError("ROWS message does not end with a DONE or PART marker")
            self._count_part(end - p == 8)
            return False
        finally:
            self._release()

    cdef int _count_part(self, bint empty) except -1:
        """A PART batch ended; too many empty ones in a row is the endless stream (§8.7)."""
        if not empty:
            self.empty_parts = 0
            return 0
        self.empty_parts += 1
        if self.empty_parts > MAX_EMPTY_PARTS:
            raise ProtocolError(
                "server keeps sending ROWS batches with no rows (its column-name "
                "header is too large to fit a row in a batch); result abandoned")
        return 0

    def end_result(self):
        """Mark the end of a result: the next ROWS starts a new one."""
        self.batches = 0
        self.empty_parts = 0
        self.first_row_types = None

    cdef bint _rows(self, list out) except -1:
        cdef const char* p = self.buf + self.body
        cdef const char* end = p + self.body_len
        cdef const char* names_start
        cdef const char* nul
        cdef const char* hdr
        cdef uint64_t ncols, word, blen
        cdef Py_ssize_t n, i, hsize, len_, nrows = 0
        cdef int code
        cdef int64_t iv
        cdef double dv
        cdef object row, value

        if end - p < 8:
            raise ProtocolError("ROWS message too short for its column count")
        ncols = load_u64(p)
        p += 8
        # Each name takes at least one word: bound the count before using it.
        if ncols > <uint64_t>((end - p) // 8):
            raise ProtocolError(f"ROWS announces {ncols} columns, which its body cannot hold")
        n = <Py_ssize_t>ncols
        if n == 0:
            # A statement without result columns run through QUERY: newer
            # servers run it and answer like this (1.11 refuses it instead).
            if self.batches > 0:
                raise ProtocolError("ROWS batch with no columns in the middle of a result")
            if end - p != 8 or (load_u64(p) != MARKER_DONE and load_u64(p) != MARKER_PART):
                raise ProtocolError("ROWS with no columns must hold only its end marker")
            self.columns = []
            self.names_header = None
            self.batches += 1
            return load_u64(p) == MARKER_DONE

        names_start = p
        for i in range(n):
            nul = <const char*>memchr(p, 0, end - p)
            if nul == NULL:
                raise ProtocolError("ROWS column name is not NUL-terminated")
            len_ = pad8(nul - p + 1)
            if len_ > end - p:
                raise ProtocolError("ROWS column name runs past the end of the message")
            p += len_
        # Names repeat in every batch (and usually across executions of the
        # same statement): decode them only when the raw bytes change.
        if (self.names_header is None or len(self.names_header) != p - names_start
                or memcmp(PyBytes_AS_STRING(self.names_header), names_start, p - names_start) != 0):
            if self.batches > 0:
                raise ProtocolError("column names changed between batches of one result")
            cols = []
            q = names_start
            for i in range(n):
                nul = <const char*>memchr(q, 0, end - q)
                cols.append(PyUnicode_DecodeUTF8(q, nul - q, NULL))
                q += pad8(nul - q + 1)
            self.columns = cols
            self.names_header = PyBytes_FromStringAndSize(names_start, p - names_start)
        self.batches += 1

        hsize = pad8((n + 1) >> 1)
        while True:
            if end - p < 8:
                raise ProtocolError("ROWS message ends without a DONE or PART marker")
            word = load_u64(p)
            if word == MARKER_DONE or word == MARKER_PART:
                p += 8
                if p != end:
                    raise ProtocolError("bytes after the end marker of a ROWS message")
                if word == MARKER_DONE:
                    self.empty_parts = 0
                    return True
                self._count_part(nrows == 0)
                return False
            if end - p < hsize:
                raise ProtocolError("ROWS row header truncated")
            hdr = p
            p += hsize
            if self.first_row_types is None:
                self.first_row_types = self._row_types(hdr, n)
            row = PyTuple_New(n)
            for i in range(n):
                code = ((<uint8_t>hdr[i >> 1]) >> ((i & 1) << 2)) & 0x0F
                if code == T_TEXT or code == T_ISO8601:
                    nul = <const char*>memchr(p, 0, end - p)
                    if nul == NULL:
                        raise ProtocolError("ROWS text value is not NUL-terminated")
                    len_ = nul - p
                    if pad8(len_ + 1) > end - p:
                        raise ProtocolError("ROWS text value runs past the end of the message")
                    if code == T_TEXT:
                        value = PyUnicode_DecodeUTF8(p, len_, NULL)
                    else:
                        value = self._iso8601(p, len_)
                    p += pad8(len_ + 1)
                elif end - p < 8:
                    raise ProtocolError("ROWS value truncated")
                elif code == T_INTEGER:
                    value = PyLong_FromLongLong(<int64_t>load_u64(p))
                    p += 8
                elif code == T_FLOAT:
                    memcpy(&dv, p, 8)
                    value = PyFloat_FromDouble(dv)
                    p += 8
                elif code == T_NULL:
                    value = None
                    p += 8
                elif code == T_BLOB:
                    blen = load_u64(p)
                    p += 8
                    if blen > <uint64_t>(end - p) or pad8(<Py_ssize_t>blen) > end - p:
                        raise ProtocolError(f"ROWS blob of {blen} bytes runs past the end of the message")
                    value = PyBytes_FromStringAndSize(p, <Py_ssize_t>blen)
                    p += pad8(<Py_ssize_t>blen)
                elif code == T_BOOLEAN:
                    value = load_u64(p) != 0
                    p += 8
                elif code == T_UNIXTIME:
                    value = self._unixtime(<int64_t>load_u64(p))
                    p += 8
                else:
                    raise ProtocolError(f"ROWS value has unknown type code {code} in column {i}")
                Py_INCREF(value)
                PyTuple_SET_ITEM(row, i, value)
            out.append(row)
            nrows += 1

    cdef tuple _row_types(self, const char* hdr, Py_ssize_t n):
        """The type codes of a row header, as a tuple: the last one again if
        they did not change (a statement run again builds nothing)."""
        cdef tuple last = self.last_row_types
        cdef Py_ssize_t i
        if last is not None and len(last) == n:
            for i in range(n):
                if <long>last[i] != (((<uint8_t>hdr[i >> 1]) >> ((i & 1) << 2)) & 0x0F):
                    break
            else:
                return last
        last = tuple([((<uint8_t>hdr[i >> 1]) >> ((i & 1) << 2)) & 0x0F for i in range(n)])
        self.last_row_types = last
        return last

    cdef object _iso8601(self, const char* p, Py_ssize_t n):
        # The server sends NULL in a DATETIME/DATE/TIMESTAMP column as "" (§1.7).
        if n == 0:
            return None
        text = PyUnicode_DecodeUTF8(p, n, NULL)
        if not self.parse_datetimes:
            return text
        try:
            if n == 10:
                return _date_fromisoformat(text)
            return _datetime_fromisoformat(text)
        except ValueError:
            return text  # not ISO 8601 after all: hand it over untouched

    cdef object _unixtime(self, int64_t seconds):
        if not self.parse_datetimes:
            return seconds
        try:
            return _datetime_fromtimestamp(seconds, _utc)
        except (OverflowError, OSError, ValueError):
            return seconds


# The receive side for dqlite._sockio, at C level (declared in _protocol.pxd):
# what get_buffer() and buffer_updated() do, without a memoryview in between.

cdef char* decoder_free_space(object decoder, Py_ssize_t* room) except NULL:
    """The free space ``get_buffer()`` would hand out: its start, its size in ``room``."""
    cdef Decoder d = <Decoder?>decoder
    d._make_room()
    room[0] = d.capacity - d.end
    return d.buf + d.end


cdef int decoder_received(object decoder, Py_ssize_t nbytes) except -1:
    """``buffer_updated(nbytes)``: ``nbytes`` were written into that free space."""
    cdef Decoder d = <Decoder?>decoder
    if nbytes < 0 or nbytes > d.capacity - d.end:
        raise ValueError("buffer_updated: byte count out of range")
    d.end += nbytes
    return 0


cdef class BodyReader:
    """Bounds-checked reads over one message body (the non-ROWS responses)."""

    cdef const char* p
    cdef const char* end

    cdef void init(self, const char* p, Py_ssize_t n) noexcept:
        self.p = p
        self.end = p + n

    cdef inline Py_ssize_t remaining(self) noexcept:
        return self.end - self.p

    cdef uint64_t u64(self) except? 0xFFFFFFFFFFFFFFFE:
        cdef uint64_t v
        if self.end - self.p < 8:
            raise ProtocolError("message body truncated")
        v = load_u64(self.p)
        self.p += 8
        return v

    cdef tuple u32_pair(self):
        if self.end - self.p < 8:
            raise ProtocolError("message body truncated")
        a = load_u32(self.p)
        b = load_u32(self.p + 4)
        self.p += 8
        return a, b

    cdef str text(self):
        cdef const char* nul = <const char*>memchr(self.p, 0, self.end - self.p)
        cdef Py_ssize_t n
        if nul == NULL:
            raise ProtocolError("text field is not NUL-terminated")
        n = nul - self.p
        if pad8(n + 1) > self.end - self.p:
            raise ProtocolError("text field runs past the end of the message")
        try:
            s = PyUnicode_DecodeUTF8(self.p, n, NULL)
        except UnicodeDecodeError as exc:
            raise ProtocolError(f"text field is not valid UTF-8: {exc}") from None
        self.p += pad8(n + 1)
        return s

    cdef bytes raw(self, uint64_t n):
        if n > <uint64_t>(self.end - self.p):
            raise ProtocolError(f"field of {n} bytes runs past the end of the message")
        data = PyBytes_FromStringAndSize(self.p, <Py_ssize_t>n)
        self.p += <Py_ssize_t>n
        if pad8(<Py_ssize_t>n) - <Py_ssize_t>n <= self.end - self.p:
            self.p += pad8(<Py_ssize_t>n) - <Py_ssize_t>n
        return data

    cdef int finish(self, str what) except -1:
        # Trailing bytes mean we misread the message: say so rather than guess.
        if self.p != self.end:
            raise ProtocolError(f"{what} response has {self.end - self.p} unexpected trailing bytes")
        return 0


