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
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE
from libc.errno cimport EAGAIN, EINTR, errno
from libc.string cimport strerror

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
