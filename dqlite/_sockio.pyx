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
query's send and the wait for its answer in one release.  Both poll the
socket for a short while before they sleep (``BusyPoll``).
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


cdef extern from "<time.h>" nogil:
    ctypedef long time_t
    cdef struct timespec:
        time_t tv_sec
        long tv_nsec
    int clock_gettime(int clk, timespec* ts)
    int CLOCK_MONOTONIC

cdef extern from "<sched.h>" nogil:
    int sched_yield()


cdef inline long long _now_ns() noexcept nogil:
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return <long long>ts.tv_sec * 1000000000 + ts.tv_nsec


# Consecutive polls that came to nothing before a connection stops polling,
# and how many waits it then makes without polling before it tries again.
cdef enum:
    MISSES_TO_STOP = 3
    WAITS_BEFORE_RETRY = 64

# What BusyPoll.try_receive returns instead of a byte count when the caller
# has to sleep in recv(): without having polled, or after polling in vain.
cdef enum:
    _SLEEP = -2
    _SLEEP_AFTER_POLL = -3


cdef class BusyPoll:
    """How long a connection's receives poll for an answer before sleeping on it.

    An answer from a node on the same machine or a fast network comes in
    tens of microseconds.  A receive that sleeps for it pays for going to
    sleep and being woken: on a virtual machine an idle CPU halts and
    waking it costs more than the wait itself (docs/performance.md has
    the figures).  So a receive first asks
    the socket without waiting, with the GIL released, for up to
    ``window`` seconds, and only then sleeps in the kernel.

    The window adapts, per connection: after three polls in a row that
    found nothing (a slow query, a distant node), the connection stops
    polling; every 64th wait then polls once, and polling resumes if that
    one finds its answer in time.  So a slow link costs no CPU beyond those
    tries.  ``window=0`` never polls.
    """

    cdef readonly long long window_ns  # the configured window
    cdef long long active_ns  # the window in force: window_ns, or 0 while stopped
    cdef unsigned int misses  # polls in a row that found nothing
    cdef unsigned int waits  # waits made without polling since polling stopped
    cdef readonly unsigned long long hits  # polls that found the answer
    cdef readonly unsigned long long sleeps  # receives that slept

    def __cinit__(self, double window=0.0):
        if not window >= 0.0 or window > 1.0:
            raise ValueError("the poll window must be between 0 and 1 second")
        self.window_ns = <long long>(window * 1e9)
        self.active_ns = self.window_ns
        self.misses = 0
        self.waits = 0
        self.hits = 0
        self.sleeps = 0

    @property
    def window(self):
        """The configured window, in seconds."""
        return self.window_ns / 1e9

    @property
    def polling(self):
        """False while the connection has stopped polling (its answers came too late)."""
        return self.active_ns > 0

    def __repr__(self):
        state = "off" if self.window_ns == 0 else "polling" if self.active_ns > 0 else "stopped"
        return (f"<dqlite._sockio.BusyPoll window={self.window_ns / 1000:g}us {state} "
                f"hits={self.hits} sleeps={self.sleeps}>")

    cdef inline long long _start(self) noexcept nogil:
        """A wait begins: how long to poll (0: sleep at once, counted here)."""
        if self.active_ns == 0:
            if self.window_ns > 0:
                self.waits += 1
                if self.waits >= WAITS_BEFORE_RETRY:
                    # This wait polls again: a hit resumes polling, a miss
                    # stops it for another WAITS_BEFORE_RETRY waits.
                    self.active_ns = self.window_ns
                    self.misses = MISSES_TO_STOP - 1
                    return self.active_ns
            self.sleeps += 1
        return self.active_ns

    cdef inline void _polled(self, bint hit) noexcept nogil:
        """A poll ended: the answer came within the window, or it did not (a sleep follows)."""
        if hit:
            self.misses = 0
            self.hits += 1
            return
        self.sleeps += 1
        self.misses += 1
        if self.misses >= MISSES_TO_STOP:
            self.active_ns = 0
            self.waits = 0

    cdef inline ssize_t try_receive(self, int fd, char* buf, size_t room) noexcept nogil:
        """recv() into ``buf`` without sleeping, for up to the window in force.

        The byte count (0: end of stream), or -1 with ``errno`` set on an
        error; ``_SLEEP`` when no poll was made and ``_SLEEP_AFTER_POLL``
        when the window passed without an answer: the caller sleeps in
        ``recv()`` then.
        """
        cdef long long window = self._start()
        cdef long long deadline
        cdef ssize_t n
        if window == 0:
            return _SLEEP
        deadline = _now_ns() + window
        while True:
            n = c_recv(fd, buf, room, MSG_DONTWAIT)
            if n >= 0 or not (errno == EAGAIN or errno == EWOULDBLOCK):
                self._polled(True)
                return n
            if _now_ns() >= deadline:
                break
            # A thread or process with work on this CPU (the node itself,
            # on a small machine) runs first.
            sched_yield()
        self._polled(False)
        return _SLEEP_AFTER_POLL


def recv_into_decoder(int fd, decoder, BusyPoll poll=None):
    """Receive what arrives next into ``decoder`` (a ``Decoder``), waiting for it.

    Returns the byte count, 0 at end of stream.

    ``sock.recv_into(decoder.get_buffer())`` then ``decoder.buffer_updated(n)``
    for a blocking socket, without the memoryview in between.  The wait
    releases the GIL, polls first as ``poll`` says (none without it), and is
    bounded by the socket's SO_RCVTIMEO (EAGAIN: ``BlockingIOError``).
    Interrupted by a signal, it runs the handlers and retries (as the socket
    module does).  ``fd`` must be in blocking mode: a socket with a
    Python-level timeout is non-blocking underneath.
    """
    return _send_then_recv(fd, NULL, 0, decoder, poll)


def send_and_recv_into_decoder(int fd, bytes data, decoder, BusyPoll poll=None):
    """Send all of ``data``, then receive what arrives next into ``decoder``;
    both with the GIL released.  Returns the byte count received, 0 at end of
    stream.

    For a request whose answer is waited for at once: the thread gives the GIL
    up for the wait anyway, and giving it up before the send instead means it
    is not held while the send wakes the server, which the scheduler often
    runs in the sender's place.  Polled, bounded, interrupted and failing as
    ``recv_into_decoder``, by SO_SNDTIMEO for the send.
    """
    return _send_then_recv(fd, PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data), decoder, poll)


cdef ssize_t _send_then_recv(int fd, const char* out, Py_ssize_t left, decoder, BusyPoll poll) except -1:
    """Send ``left`` bytes from ``out`` (blocking), then one receive into
    ``decoder`` (polled, then blocking), the GIL released throughout;
    signals and errors as ``recv_into_decoder`` says."""
    cdef Py_ssize_t room
    cdef char* buf = decoder_free_space(decoder, &room)
    cdef ssize_t n = 0
    cdef int err
    cdef bint may_poll = poll is not None
    while True:
        with nogil:
            while left > 0:
                n = c_send(fd, out, <size_t>left, MSG_NOSIGNAL)
                if n < 0:
                    break
                out += n
                left -= n
            if left == 0:
                n = poll.try_receive(fd, buf, <size_t>room) if may_poll else _SLEEP
                if n == _SLEEP:
                    n = c_recv(fd, buf, <size_t>room, 0)
        if n >= 0:
            break
        may_poll = False
        if n == _SLEEP_AFTER_POLL:
            # A signal that came while polling found no sleeping recv() to
            # interrupt: run its handler before sleeping (it may raise).
            PyErr_CheckSignals()
            continue
        err = errno
        if err != EINTR:
            raise OSError(err, strerror(err).decode(errors="replace"))
        PyErr_CheckSignals()
    decoder_received(decoder, n)
    return n
