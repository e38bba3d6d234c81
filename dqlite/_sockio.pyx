# cython: language_level=3
"""Socket calls that never wait, made while holding the GIL.

Python's socket methods release the GIL around every call.  When other
threads want it (a pool of threads sharing the process), each release hands
the GIL over and the caller queues to get it back: a context switch or two
per call, for calls that take microseconds.  A request is sent in one call
that never blocks (the socket buffer takes it), and an answer that already
arrived is read without waiting: neither needs the GIL released.  The blocking
shell (``dqlite._wire``) uses these first and falls back to the ordinary
blocking calls, which do release the GIL, only when it really has to wait.

The calls here that wait release the GIL: ``recv_into_decoder``, a blocking
receive made straight into the decoder's buffer (the socket module would need
a memoryview of it for every receive), and ``send_and_recv_into_decoder``, a
query's send and the wait for its answer in one release.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE
from cpython.exc cimport PyErr_CheckSignals
from libc.errno cimport EAGAIN, EINTR, errno
from libc.string cimport strerror

from dqlite._protocol cimport decoder_free_space, decoder_received

cdef extern from "<sys/socket.h>" nogil:
    ssize_t c_send "send" (int fd, const void* buf, size_t n, int flags)
    ssize_t c_recv "recv" (int fd, void* buf, size_t n, int flags)
    int MSG_DONTWAIT

cdef extern from "<errno.h>":
    int EWOULDBLOCK

cdef extern from *:
    """
    #ifndef MSG_NOSIGNAL
    #define MSG_NOSIGNAL 0
    #endif
    """
    int MSG_NOSIGNAL


cdef inline bint _would_block(int err) noexcept:
    return err == EAGAIN or err == EWOULDBLOCK or err == EINTR


def send_nowait(int fd, bytes data, Py_ssize_t offset=0):
    """Send ``data[offset:]`` as far as the socket takes it now; the bytes sent (0: none)."""
    cdef Py_ssize_t size = PyBytes_GET_SIZE(data)
    cdef ssize_t sent
    if offset < 0 or offset > size:
        raise ValueError("offset out of range")
    sent = c_send(fd, PyBytes_AS_STRING(data) + offset, size - offset, MSG_DONTWAIT | MSG_NOSIGNAL)
    if sent < 0:
        if _would_block(errno):
            return 0
        raise OSError(errno, strerror(errno).decode(errors="replace"))
    return sent


def recv_nowait(int fd, unsigned char[::1] buffer):
    """Receive into ``buffer`` what has arrived; the byte count, 0 at end of stream, -1 if nothing came."""
    cdef ssize_t got
    if buffer.shape[0] == 0:
        raise ValueError("empty buffer")
    got = c_recv(fd, &buffer[0], buffer.shape[0], MSG_DONTWAIT)
    if got < 0:
        if _would_block(errno):
            return -1
        raise OSError(errno, strerror(errno).decode(errors="replace"))
    return got


def recv_into_decoder(int fd, decoder):
    """Receive what arrives next into ``decoder`` (a ``Decoder``), waiting for it.

    Returns the byte count, 0 at end of stream.

    ``sock.recv_into(decoder.get_buffer())`` then ``decoder.buffer_updated(n)``
    for a blocking socket, without the memoryview in between.  The wait
    releases the GIL, and is bounded by the socket's SO_RCVTIMEO (EAGAIN:
    ``BlockingIOError``).  Interrupted by a signal, it runs the handlers and
    retries (as the socket module does).  ``fd`` must be in blocking mode: a
    socket with a Python-level timeout is non-blocking underneath.
    """
    return _send_then_recv(fd, NULL, 0, decoder)


def send_and_recv_into_decoder(int fd, bytes data, decoder):
    """Send all of ``data``, then receive what arrives next into ``decoder``;
    both with the GIL released.  Returns the byte count received, 0 at end of
    stream.

    For a request whose answer is waited for at once: the thread gives the GIL
    up for the wait anyway, and giving it up before the send instead means it
    is not held while the send wakes the server, which the scheduler often
    runs in the sender's place.  Bounded, interrupted and failing as
    ``recv_into_decoder``, by SO_SNDTIMEO for the send.
    """
    return _send_then_recv(fd, PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data), decoder)


cdef ssize_t _send_then_recv(int fd, const char* out, Py_ssize_t left, decoder) except -1:
    """Send ``left`` bytes from ``out`` (blocking), then one blocking receive
    into ``decoder``, the GIL released throughout; signals and errors as
    ``recv_into_decoder`` says."""
    cdef Py_ssize_t room
    cdef char* buf = decoder_free_space(decoder, &room)
    cdef ssize_t n = 0
    cdef int err
    while True:
        with nogil:
            while left > 0:
                n = c_send(fd, out, <size_t>left, MSG_NOSIGNAL)
                if n < 0:
                    break
                out += n
                left -= n
            if left == 0:
                n = c_recv(fd, buf, <size_t>room, 0)
        if n >= 0:
            break
        err = errno
        if err != EINTR:
            raise OSError(err, strerror(err).decode(errors="replace"))
        PyErr_CheckSignals()
    decoder_received(decoder, n)
    return n
