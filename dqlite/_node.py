"""Host one real dqlite node (libdqlite) in this process.

Run as ``python -m dqlite._node --id N --address HOST:PORT --dir DATA_DIR``.
:mod:`dqlite.server` starts one such process per node; users rarely run it by hand.
``python -m dqlite._node --version`` prints the versions of the libdqlite,
SQLite and glibc this host would load, and the path of the libdqlite file.

The process protocol is deliberately tiny:

* once ``dqlite_node_start`` returns (the node is listening), one line ``ready``
  is written to stdout;
* the node runs until SIGTERM or SIGINT, *or until stdin reaches EOF*. The parent
  keeps the write end of a pipe on our stdin, so when it dies for any reason (even
  SIGKILL) the kernel closes that pipe and the node stops instead of lingering;
* then ``dqlite_node_stop`` + ``dqlite_node_destroy`` run and the exit code is 0.
  Failures print one ``dqlite node host: ...`` line on stderr and exit non-zero.
* a fatal signal (SIGSEGV, SIGABRT from an ``assert``, ...) first writes every
  thread's Python stack to stderr (:mod:`faulthandler`), then kills the process
  as before, so the node's log says what it was doing.

libdqlite is loaded through :mod:`ctypes` when the node starts, never when this
module is imported, so the client package works on machines without libdqlite.
Set ``DQLITE_LIBRARY`` to a path to load a specific build instead of
``libdqlite.so.0``.
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import faulthandler
import os
import select
import signal
import sys

__all__ = ["LibdqliteNotFound", "NodeHostError", "library_versions", "load_libdqlite", "main"]

# Exit codes, so a parent can tell "no libdqlite" from "the node failed".
EXIT_NO_LIBRARY = 3
EXIT_NODE_ERROR = 4

INSTALL_HINT = (
    "install Debian's libdqlite0 package (apt-get install libdqlite0), "
    "or set DQLITE_LIBRARY to the path of a libdqlite.so"
)


class NodeHostError(Exception):
    """A libdqlite call failed; the message holds the function, code and errmsg."""


class LibdqliteNotFound(NodeHostError):
    """libdqlite could not be loaded."""


def load_libdqlite() -> ctypes.CDLL:
    """Load libdqlite and declare the node functions the host uses.

    Tries ``$DQLITE_LIBRARY``, then the Debian soname ``libdqlite.so.0`` (the
    dynamic loader's own search, so ``ld.so --library-path`` works), then
    :func:`ctypes.util.find_library`.
    """
    override = os.environ.get("DQLITE_LIBRARY")
    candidates = [override] if override else ["libdqlite.so.0"]
    errors: list[str] = []
    lib: ctypes.CDLL | None = None
    for name in candidates:
        try:
            lib = ctypes.CDLL(name)
            break
        except OSError as exc:
            errors.append(str(exc))
    if lib is None and not override:
        found = ctypes.util.find_library("dqlite")
        if found:
            try:
                lib = ctypes.CDLL(found)
            except OSError as exc:
                errors.append(str(exc))
    if lib is None:
        raise LibdqliteNotFound(
            f"cannot load libdqlite ({'; '.join(errors)}): {INSTALL_HINT}"
        )

    node_p = ctypes.c_void_p
    signatures: dict[str, tuple[type | None, list[type]]] = {
        "dqlite_node_create": (
            ctypes.c_int,
            [ctypes.c_ulonglong, ctypes.c_char_p, ctypes.c_char_p, ctypes.POINTER(node_p)],
        ),
        "dqlite_node_set_bind_address": (ctypes.c_int, [node_p, ctypes.c_char_p]),
        "dqlite_node_set_network_latency_ms": (ctypes.c_int, [node_p, ctypes.c_uint]),
        "dqlite_node_start": (ctypes.c_int, [node_p]),
        "dqlite_node_stop": (ctypes.c_int, [node_p]),
        "dqlite_node_destroy": (None, [node_p]),
        "dqlite_node_errmsg": (ctypes.c_char_p, [node_p]),
    }
    for fname, (restype, argtypes) in signatures.items():
        func = getattr(lib, fname)
        func.restype = restype
        func.argtypes = argtypes
    return lib


def library_versions(lib: ctypes.CDLL) -> dict[str, str]:
    """What a loaded libdqlite runs on: its version number and file, SQLite's and glibc's versions.

    ``dqlite`` is ``dqlite_version_number()`` (major*10000 + minor*100 + patch;
    note that Debian's 1.11.1 reports 11000, a missed upstream bump).
    """
    out: dict[str, str] = {}
    version = getattr(lib, "dqlite_version_number", None)
    if version is not None:
        version.restype = ctypes.c_int
        version.argtypes = []
        out["dqlite"] = str(version())
    with open("/proc/self/maps") as maps:
        for line in maps:
            path = line.split(None, 5)[-1].strip()
            if "libdqlite" in path:
                out["libdqlite_path"] = path
                break
    try:
        sqlite = ctypes.CDLL("libsqlite3.so.0")
        sqlite.sqlite3_libversion.restype = ctypes.c_char_p
        out["sqlite"] = sqlite.sqlite3_libversion().decode()
    except (OSError, AttributeError):
        pass
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.gnu_get_libc_version.restype = ctypes.c_char_p
        out["glibc"] = libc.gnu_get_libc_version().decode()
    except (OSError, AttributeError):
        pass
    return out


class _Node:
    """A started-or-not libdqlite node, wrapped just enough to check return codes."""

    def __init__(self, lib: ctypes.CDLL, node_id: int, address: str, data_dir: str) -> None:
        self._lib = lib
        self._node = ctypes.c_void_p()
        self._started = False
        rv = lib.dqlite_node_create(
            node_id, address.encode(), data_dir.encode(), ctypes.byref(self._node)
        )
        self._check("dqlite_node_create", rv)

    def _check(self, what: str, rv: int) -> None:
        if rv == 0:
            return
        msg = ""
        if self._node.value:
            raw = self._lib.dqlite_node_errmsg(self._node)
            msg = raw.decode(errors="replace") if raw else ""
        raise NodeHostError(f"{what} failed with code {rv}: {msg or '(no message)'}")

    def set_bind_address(self, address: str) -> None:
        # libdqlite binds the socket right here (not in start) and sets no
        # errmsg on failure, so name the likely cause ourselves.
        rv = self._lib.dqlite_node_set_bind_address(self._node, address.encode())
        if rv != 0:
            raise NodeHostError(
                f"dqlite_node_set_bind_address({address!r}) failed with code {rv}: "
                "cannot bind (address in use or not local?)"
            )

    def set_network_latency_ms(self, ms: int) -> None:
        self._check(
            "dqlite_node_set_network_latency_ms",
            self._lib.dqlite_node_set_network_latency_ms(self._node, ms),
        )

    def start(self) -> None:
        self._check("dqlite_node_start", self._lib.dqlite_node_start(self._node))
        self._started = True

    def close(self) -> None:
        """Stop and free a node that started; call only on the success path.

        After a failed create or start libdqlite leaves the node half set up
        (create keeps the struct so errmsg works; a failed start may leave the
        loop thread's handles open), and destroying it then is not safe. The
        process is about to exit anyway, so failures just leak.
        """
        if not self._started:
            return
        self._started = False
        rv = self._lib.dqlite_node_stop(self._node)
        if rv != 0:
            print(f"dqlite node host: dqlite_node_stop returned {rv}", file=sys.stderr, flush=True)
        self._lib.dqlite_node_destroy(self._node)
        self._node = ctypes.c_void_p()


def _catch_stop_signals() -> int:
    """Route SIGTERM/SIGINT to a self-pipe; return its read end.

    Installed before the node starts, so a stop request that arrives while
    libdqlite is starting is not lost (nor fatal) but acted on right after.
    With set_wakeup_fd, a plain select() over stdin and this pipe covers both
    ways to be told to stop, without racing a Python handler against a call.
    """
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, frame: None)
    return wake_r


def _wait_for_shutdown(wake_r: int) -> str:
    """Block until a stop signal arrives or stdin reaches EOF; return which."""
    try:
        stdin_fd = sys.stdin.fileno()
    except (AttributeError, ValueError, OSError):
        stdin_fd = -1  # no stdin at all: only signals can stop us
    watched = [wake_r] + ([stdin_fd] if stdin_fd >= 0 else [])
    while True:
        try:
            readable, _, _ = select.select(watched, [], [])
        except InterruptedError:  # pragma: no cover - PEP 475 retries select
            continue
        if wake_r in readable:
            return "signal"
        if stdin_fd in readable:
            try:
                data = os.read(stdin_fd, 4096)
            except OSError:
                data = b""
            if not data:
                return "stdin closed"
            # Anything written to stdin is ignored; only EOF matters.


def main(argv: list[str] | None = None) -> int:
    """Run one node until told to stop; return the process exit code."""
    if argv is None:
        argv = sys.argv[1:]
    if argv == ["--version"]:
        try:
            lib = load_libdqlite()
        except LibdqliteNotFound as exc:
            print(f"dqlite node host: {exc}", file=sys.stderr, flush=True)
            return EXIT_NO_LIBRARY
        for key, value in library_versions(lib).items():
            print(f"{key}={value}")
        # Which copy of this package the node host imported (an installed one, a checkout).
        print(f"package={os.path.dirname(os.path.abspath(__file__))}")
        return 0
    parser = argparse.ArgumentParser(
        prog="python -m dqlite._node", description="Host one dqlite node (libdqlite)."
    )
    parser.add_argument("--id", type=int, required=True, help="node id; 1 bootstraps a new cluster")
    parser.add_argument("--address", required=True, help="HOST:PORT other nodes and clients use")
    parser.add_argument("--bind", default=None, help="address to listen on (default: --address)")
    parser.add_argument("--dir", required=True, help="data directory (created if missing)")
    parser.add_argument(
        "--latency-ms",
        type=int,
        default=None,
        help="raft network latency: heartbeat 1.5x, election timeout 15x (libdqlite default: 200)",
    )
    args = parser.parse_args(argv)
    # stderr is the node's log, which LocalNode keeps when a node crashes: a
    # crash inside libdqlite/libsqlite3 then leaves at least the signal's name
    # and the Python frames of every thread there.
    faulthandler.enable(all_threads=True)

    try:
        lib = load_libdqlite()
    except LibdqliteNotFound as exc:
        print(f"dqlite node host: {exc}", file=sys.stderr, flush=True)
        return EXIT_NO_LIBRARY

    os.makedirs(args.dir, exist_ok=True)
    wake_r = _catch_stop_signals()
    try:
        node = _Node(lib, args.id, args.address, args.dir)
        node.set_bind_address(args.bind or args.address)
        if args.latency_ms is not None:
            node.set_network_latency_ms(args.latency_ms)
        node.start()  # returns once the node is listening
    except NodeHostError as exc:
        print(f"dqlite node host: node {args.id} at {args.address}: {exc}", file=sys.stderr, flush=True)
        return EXIT_NODE_ERROR
    try:
        sys.stdout.write("ready\n")
        sys.stdout.flush()
        _wait_for_shutdown(wake_r)
    except BrokenPipeError:
        # The parent is gone before reading "ready": just stop. Point fd 1 at
        # /dev/null so the interpreter's final flush does not complain.
        os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
    finally:
        node.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
