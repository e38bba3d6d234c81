"""Host real dqlite nodes and local clusters (for tests, benchmarks and development).

Each node runs in its own process (``python -m dqlite._node``), because an
``assert`` inside libdqlite aborts its host process and must not take the test
runner down with it. Nodes are joined into a cluster with ADD + ASSIGN through
this package's own client (:class:`dqlite.cluster.NodeClient`) and stopped by PID.

libdqlite is loaded only inside the node processes, so importing this module
needs no libdqlite. When it is missing, starting a node raises
:class:`NodeStartError` saying which package to install (Debian: ``libdqlite0``).

Run ``python -m dqlite.server --nodes 3`` for a cluster in the foreground.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import weakref
from pathlib import Path
from types import TracebackType
from typing import Callable, Sequence, overload

from dqlite._node import EXIT_NO_LIBRARY, INSTALL_HINT
from dqlite.cluster import SPARE, VOTER, NodeClient
from dqlite.exceptions import Error

__all__ = [
    "CRASH_DIR_ENV",
    "DEFAULT_LATENCY_MS",
    "SERVER_ROOT_ENV",
    "LocalCluster",
    "LocalNode",
    "NodeCrash",
    "NodeStartError",
    "default_python_command",
    "free_ports",
    "node_environment",
    "main",
    "private_python_command",
]

log = logging.getLogger("dqlite.server")

#: Raft latency for local nodes: heartbeat 30 ms, election timeout 300-600 ms,
#: so a test that kills the leader sees a new one within about a second.
DEFAULT_LATENCY_MS = 20

# How often to re-ask a node while waiting for it (LEADER answers take ~0.1 ms).
_POLL_INTERVAL = 0.01
# Per-request timeout while polling, so a wedged node cannot stall a wait.
_PROBE_TIMEOUT = 1.0

# Everything a node might fail with while it is still coming up or going away.
_TRANSIENT = (Error, OSError)


#: Environment variable naming a folder with a private glibc + libdqlite (see
#: :func:`private_python_command`); when set, node hosts run from it by default.
SERVER_ROOT_ENV = "DQLITE_SERVER_ROOT"


#: Environment variable naming the folder that keeps the evidence of crashed nodes
#: (see :class:`NodeCrash`); default ``build/node-crashes`` under the working directory.
CRASH_DIR_ENV = "DQLITE_CRASH_DIR"
_DEFAULT_CRASH_DIR = os.path.join("build", "node-crashes")

# Signals that pause or resume a node rather than end it.
_NON_FATAL = frozenset({signal.SIGSTOP, signal.SIGCONT})


class NodeStartError(RuntimeError):
    """A node process or a cluster could not be started (the message says why)."""


@dataclasses.dataclass(frozen=True)
class NodeCrash:
    """A node process that exited although nothing in this process asked it to.

    That is: killed by a signal this package did not send (SIGSEGV, SIGABRT, the
    OOM killer's SIGKILL, ...), or exited in any way after it was ready and before
    it was told to stop. A :class:`LocalCluster` removes its temporary directory
    when it stops, so the evidence is copied first into ``evidence``:
    ``$DQLITE_CRASH_DIR/<UTC timestamp>-node<id>/`` (default
    ``build/node-crashes/`` under the working directory), holding a copy of the
    node's log, ``data-dir.txt`` (a listing of its data directory, not the data)
    and ``exit.txt`` (how it ended, its command line, the kernel's last messages
    if readable).
    """

    node_id: int
    address: str
    pid: int
    returncode: int
    #: The folder holding the copies; None if it could not be written.
    evidence: Path | None
    #: The end of the node's log at the time of the crash.
    log_tail: str

    @property
    def how(self) -> str:
        """How the process ended, e.g. ``killed by SIGSEGV`` or ``exited with code 1``."""
        return _describe_exit(self.returncode)

    def describe(self) -> str:
        """One line naming the node, how it ended and where its evidence went."""
        where = f"evidence in {self.evidence}" if self.evidence else "evidence could not be kept"
        return f"node {self.node_id} at {self.address} (pid {self.pid}) {self.how}; {where}"


def _signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def _describe_exit(returncode: int) -> str:
    if returncode >= 0:
        return f"exited with code {returncode}"
    return f"killed by {_signal_name(-returncode)}"


def private_python_command(root: str | os.PathLike[str], python: str | None = None) -> list[str]:
    """The ``python_command`` that runs a node host on the libraries unpacked in ``root``.

    ``root`` holds Debian packages unpacked with ``dpkg -x`` (``libc6``,
    ``libdqlite0`` and what it needs, e.g. from ``scripts/fetch-dqlite.sh``).
    The command starts ``python`` (default: this interpreter) through that
    folder's own dynamic loader with its library folder first on the search
    path, so libdqlite and the glibc it was built for are loaded from there
    while the interpreter and its modules stay the same::

        ROOT/usr/lib/<multiarch>/ld-linux-*.so.* --library-path ROOT/usr/lib/<multiarch> PYTHON

    Raises NodeStartError if ``root`` holds no loader or no libdqlite.
    """
    base = Path(root).resolve()
    for libdir in sorted(base.glob("usr/lib/*-linux-gnu*")) + sorted(base.glob("lib/*-linux-gnu*")):
        loaders = sorted(libdir.glob("ld-linux*.so.*"))
        if loaders and (libdir / "libdqlite.so.0").exists():
            return [str(loaders[0]), "--library-path", str(libdir), python or sys.executable]
    raise NodeStartError(
        f"{base} holds no dynamic loader and libdqlite.so.0 under usr/lib/<multiarch>/ "
        "(unpack them there first, e.g. with scripts/fetch-dqlite.sh)"
    )


def default_python_command() -> list[str]:
    """How node hosts start when no ``python_command`` is given.

    ``[sys.executable]`` (the system libdqlite), or, when the environment
    variable ``DQLITE_SERVER_ROOT`` names a folder, the private-loader command
    of :func:`private_python_command` for it.
    """
    root = os.environ.get(SERVER_ROOT_ENV)
    if root:
        return private_python_command(root)
    return [sys.executable]


def node_environment(base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment a node host starts with: ``base`` (default ``os.environ``) made to
    import this very copy of the package.

    Its folder goes first on ``PYTHONPATH`` (it may be importable here only through a
    ``sys.path`` tweak: a pytest rootdir, a checkout), and ``PYTHONSAFEPATH`` keeps
    ``python -m`` from putting the working directory first, where a checkout's
    ``dqlite/`` would shadow an installed package.
    """
    env = dict(os.environ if base is None else base)
    pkg_parent = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (pkg_parent, env.get("PYTHONPATH")) if p)
    env["PYTHONSAFEPATH"] = "1"
    return env


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """Return ``count`` distinct TCP ports that are free on ``host`` right now.

    The sockets are held open together so the ports differ; another process may
    still take one before a node binds it (nodes retry with a new port then).
    """
    socks: list[socket.socket] = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((host, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _tail(path: Path | None, limit: int = 2000) -> str:
    """The end of a node's log file, for error messages."""
    if path is None:
        return ""
    try:
        data = path.read_bytes()[-limit:]
    except OSError:
        return ""
    return data.decode(errors="replace").strip()


def _unique_folder(root: Path, name: str) -> Path:
    """Create ``root/name`` (or ``name-2``, ``name-3``, ...) and return it."""
    root.mkdir(parents=True, exist_ok=True)
    for n in range(1, 1000):
        folder = root / (name if n == 1 else f"{name}-{n}")
        try:
            folder.mkdir()
        except FileExistsError:
            continue
        return folder
    raise FileExistsError(f"{root / name} and 998 more already exist")


def _listing(data_dir: Path) -> str:
    """Every file under ``data_dir`` with its size (what was there, not what it held)."""
    lines = []
    try:
        for path in sorted(data_dir.rglob("*")):
            try:
                size = "dir" if path.is_dir() else str(path.stat().st_size)
            except OSError as exc:
                size = f"? ({exc.strerror})"
            lines.append(f"{size:>12}  {path.relative_to(data_dir)}")
    except OSError as exc:
        lines.append(f"cannot list {data_dir}: {exc}")
    return "\n".join(lines) + "\n"


def _kernel_messages(limit: int = 50) -> str:
    """The kernel log's last lines, where a segfault or GPF of a node shows up.

    Often unreadable without privileges; the reason is returned then instead.
    """
    try:
        done = subprocess.run(["dmesg"], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"(dmesg not run: {exc})"
    if done.returncode != 0:
        return f"(dmesg failed: {done.stderr.strip()})"
    return "\n".join(done.stdout.splitlines()[-limit:])


class LocalNode:
    """One dqlite node hosted in a child process.

    The node listens on ``address`` and keeps its raft log and snapshots in
    ``data_dir``. Node id 1 bootstraps a new single-voter cluster on its first
    start; any other id waits to be added by a leader (see :class:`LocalCluster`).
    A stopped or killed node can be started again with the same id, address and
    data, and rejoins its cluster.

    The child's stdin is a pipe that only this object writes to: when this
    process dies, even by SIGKILL, the child sees EOF and stops, so nodes never
    outlive the process that started them.
    """

    def __init__(
        self,
        node_id: int,
        address: str,
        data_dir: str | os.PathLike[str],
        *,
        latency_ms: int | None = DEFAULT_LATENCY_MS,
        python_command: Sequence[str] | None = None,
        log_path: str | os.PathLike[str] | None = None,
        env: dict[str, str] | None = None,
        bind_address: str | None = None,
    ) -> None:
        """Describe a node; nothing starts until :meth:`start`.

        ``python_command`` is how to run Python for the node host (default
        :func:`default_python_command`: ``[sys.executable]`` unless
        ``DQLITE_SERVER_ROOT`` is set); ``-m dqlite._node ...`` is appended, so
        e.g. ``[LOADER, "--library-path", DIR, sys.executable]`` (see
        :func:`private_python_command`) runs the node under a private glibc and
        libdqlite. ``log_path`` receives the node's stderr
        (default: ``data_dir`` + ``.log``). ``env`` replaces the environment.
        ``bind_address`` makes the node listen there while it tells clients and
        peers to reach it at ``address`` (e.g. a proxy in front of it); by
        default it listens on ``address``.
        """
        self.id = node_id
        self.address = address
        self.data_dir = Path(data_dir)
        self.latency_ms = latency_ms
        self.python_command = list(python_command) if python_command else default_python_command()
        self.log_path = Path(log_path) if log_path else self.data_dir.with_name(self.data_dir.name + ".log")
        self.env = env
        self.bind_address = bind_address
        self.process: subprocess.Popen[bytes] | None = None
        # What this object did to the current process, so an exit it did not
        # cause can be told apart from one it did (see _exited_unasked).
        self._signals_sent: set[int] = set()
        self._started_ok = False
        self._exit_checked = False
        self._crashes: list[NodeCrash] = []

    # -- process control -------------------------------------------------------

    @property
    def pid(self) -> int | None:
        """PID of the current (or last) node process, None if never started."""
        return self.process.pid if self.process else None

    @property
    def crashes(self) -> list[NodeCrash]:
        """The crashes of this node's processes found so far (see :meth:`check_crash`)."""
        return list(self._crashes)

    def command(self) -> list[str]:
        """The argv that starts this node's host process."""
        cmd = self.python_command + [
            "-m", "dqlite._node",
            "--id", str(self.id),
            "--address", self.address,
            "--dir", str(self.data_dir),
        ]  # fmt: skip
        if self.bind_address is not None:
            cmd += ["--bind", self.bind_address]
        if self.latency_ms is not None:
            cmd += ["--latency-ms", str(self.latency_ms)]
        return cmd

    def launch(self) -> None:
        """Spawn the node process without waiting for it (see :meth:`wait_ready`)."""
        if self.is_alive():
            raise RuntimeError(f"{self!r} is already running")
        self._reap()
        # The process object is about to be replaced: judge the old one's end now.
        self.check_crash()
        self._signals_sent = set()
        self._started_ok = False
        self._exit_checked = False
        self.data_dir.mkdir(parents=True, exist_ok=True)
        env = node_environment(self.env)
        with open(self.log_path, "ab") as logf:
            self.process = subprocess.Popen(
                self.command(),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=logf,
                env=env,
                close_fds=True,
                # Own session: a Ctrl-C meant for the parent reaches the parent
                # only, which then stops the nodes in order.
                start_new_session=True,
            )
        log.debug("node %d at %s: launched pid %d", self.id, self.address, self.process.pid)

    def wait_ready(self, timeout: float = 10.0) -> None:
        """Wait until the launched node says it is listening; raise NodeStartError if not."""
        proc = self.process
        if proc is None or proc.stdout is None:
            raise RuntimeError(f"{self!r} was not launched")
        deadline = time.monotonic() + timeout
        line = b""
        fd = proc.stdout.fileno()
        while not line.endswith(b"\n"):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self._abort()
                raise NodeStartError(
                    f"node {self.id} at {self.address} was not ready within {timeout:g} s"
                    + self._log_excerpt()
                )
            readable, _, _ = select.select([fd], [], [], remaining)
            if not readable:
                continue
            chunk = os.read(fd, 64)
            if not chunk:  # EOF: the host exited before it was ready
                rc = proc.wait()
                self._close_pipes()
                self.check_crash()  # a signal at start-up is a crash; an error code is not
                if rc == EXIT_NO_LIBRARY:
                    said = _tail(self.log_path).splitlines()[-1:] or [INSTALL_HINT]
                    raise NodeStartError(f"cannot start dqlite node {self.id}: {said[0]}")
                raise NodeStartError(
                    f"node {self.id} at {self.address} exited with code {rc} before it was ready"
                    + self._log_excerpt()
                )
            line += chunk
        if line.strip() != b"ready":
            self._abort()
            raise NodeStartError(f"node {self.id}: unexpected output {line!r}" + self._log_excerpt())
        # The host writes nothing after "ready"; keep only stdin (the lifeline).
        proc.stdout.close()
        self._started_ok = True
        log.info("node %d at %s: running (pid %d)", self.id, self.address, proc.pid)

    def start(self, timeout: float = 10.0) -> None:
        """Start the node process and wait until it is listening."""
        self.launch()
        self.wait_ready(timeout)

    def is_alive(self) -> bool:
        """True while the node process exists (also when it is SIGSTOPped)."""
        return self.process is not None and self.process.poll() is None

    def terminate(self) -> None:
        """Ask the node to stop (SIGTERM) without waiting; see :meth:`stop`."""
        proc = self.process
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self._send(signal.SIGTERM)
                # A SIGSTOPped node would never act on SIGTERM.
                self._send(signal.SIGCONT)

    def stop(self, timeout: float = 5.0) -> int | None:
        """Stop the node: SIGTERM, wait up to ``timeout`` s, then SIGKILL.

        Returns the exit code (0 for a clean stop, negative for a signal), or
        None if it was never started. Safe to call more than once.
        """
        if self.process is None:
            return None
        self.terminate()
        return self._finish(time.monotonic() + timeout)

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` to the node process (fault injection).

        After SIGKILL this waits until the process is gone, so the port is free
        and :meth:`is_alive` is False at once.  After SIGSTOP it waits until
        every thread of the process is stopped, so a request sent afterwards
        surely gets no answer: the kernel stops a process asynchronously (one
        thread takes the signal and then stops the others), and on a busy
        machine the node's network thread can go on serving requests for a
        while after kill() returned.  For SIGCONT it returns immediately.
        """
        proc = self.process
        if proc is None or proc.poll() is not None:
            self.check_crash()  # it may be "not running" because it crashed: say so
            raise RuntimeError(f"{self!r} is not running")
        self._send(sig)
        log.info("node %d at %s: sent signal %d to pid %d", self.id, self.address, sig, proc.pid)
        if sig == signal.SIGKILL:
            proc.wait()
            self._close_pipes()
        elif sig == signal.SIGSTOP:
            self._wait_stopped(proc.pid)

    def _wait_stopped(self, pid: int, timeout: float = 10.0) -> None:
        """Wait until no thread of process ``pid`` can run (Linux /proc; elsewhere, return)."""
        tasks = Path(f"/proc/{pid}/task")
        if not tasks.is_dir():
            return
        deadline = time.monotonic() + timeout
        while True:
            running = []
            try:
                tids = os.listdir(tasks)
            except FileNotFoundError:  # the process is gone: nothing runs
                return
            for tid in tids:
                try:
                    stat = (tasks / tid / "stat").read_text()
                except OSError:  # the thread exited meanwhile
                    continue
                # The state follows the parenthesised command name: T stopped,
                # t traced, Z/X exiting; anything else can still run.
                if stat.rsplit(")", 1)[1].split()[0] not in ("T", "t", "Z", "X"):
                    running.append(tid)
            if not running:
                return
            if time.monotonic() >= deadline:
                raise TimeoutError(f"{self!r}: threads {running} of pid {pid} did not stop within {timeout:g}s")
            time.sleep(0.001)

    def client(self, timeout: float = 5.0) -> NodeClient:
        """A control connection (LEADER, CLUSTER, ADD, ...) to this node."""
        return NodeClient(self.address, timeout=timeout)

    def check_crash(self) -> NodeCrash | None:
        """If the current process has exited without being asked to, keep its evidence.

        Returns the :class:`NodeCrash` (also appended to :attr:`crashes`) the first
        time a crashed process is seen, and None otherwise: while it runs, when it
        exited because this object stopped or signalled it (:meth:`stop`,
        :meth:`terminate`, :meth:`kill`), or when it failed to start with an error
        code (:meth:`wait_ready` raises then). A crash is logged as a WARNING on the
        ``dqlite.server`` logger with the end of the node's log. :meth:`stop`,
        :meth:`start` and :class:`LocalCluster` call this themselves, before a
        cluster removes its temporary directory.
        """
        proc = self.process
        if proc is None or self._exit_checked or proc.poll() is None:
            return None
        self._exit_checked = True
        if not self._exited_unasked(proc.returncode):
            return None
        crash = self._keep_evidence(proc.pid, proc.returncode)
        self._crashes.append(crash)
        log.warning(
            "node %d at %s (pid %d) crashed: %s; %s; end of its log %s:\n%s",
            self.id,
            self.address,
            crash.pid,
            crash.how,
            f"evidence kept in {crash.evidence}" if crash.evidence else "its evidence could not be kept",
            self.log_path,
            crash.log_tail or "(empty)",
        )
        return crash

    # -- internals ---------------------------------------------------------------

    def _send(self, sig: int) -> None:
        """Signal the current process, remembering that this object did."""
        assert self.process is not None
        self._signals_sent.add(sig)
        self.process.send_signal(sig)

    def _exited_unasked(self, returncode: int) -> bool:
        """Whether an exit with ``returncode`` is one this object did not cause."""
        if returncode < 0:
            # A signal we sent is expected; any other (SIGSEGV during a clean
            # stop, the OOM killer's SIGKILL) is not, also before "ready".
            return -returncode not in self._signals_sent
        # An exit code before "ready" is a start failure, which wait_ready reports.
        return self._started_ok and not (self._signals_sent - _NON_FATAL)

    def _keep_evidence(self, pid: int, returncode: int) -> NodeCrash:
        """Copy what tells why process ``pid`` died to the crash folder (never raises)."""
        tail = "\n".join(_tail(self.log_path, limit=4000).splitlines()[-30:])
        evidence: Path | None = None
        try:
            root = Path(os.environ.get(CRASH_DIR_ENV) or _DEFAULT_CRASH_DIR).absolute()
            stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
            evidence = _unique_folder(root, f"{stamp}-node{self.id}")
            if self.log_path.exists():
                shutil.copy2(self.log_path, evidence / self.log_path.name)
            (evidence / "data-dir.txt").write_text(_listing(self.data_dir))
            (evidence / "exit.txt").write_text(
                f"node {self.id} at {self.address}, pid {pid}: {_describe_exit(returncode)}\n"
                f"ready before: {self._started_ok}; signals sent by LocalNode: "
                f"{', '.join(_signal_name(n) for n in sorted(self._signals_sent)) or 'none'}\n"
                f"data dir: {self.data_dir}\nlog: {self.log_path}\n"
                f"command: {' '.join(self.command())}\n\n"
                f"kernel messages (last lines):\n{_kernel_messages()}\n"
            )
        except OSError as exc:
            log.warning("node %d: could not keep crash evidence in %s: %s", self.id, evidence, exc)
            if evidence is None or not evidence.is_dir():
                evidence = None
        return NodeCrash(self.id, self.address, pid, returncode, evidence, tail)

    def _finish(self, deadline: float) -> int | None:
        """Wait for an already signalled node until ``deadline``, then SIGKILL it."""
        proc = self.process
        if proc is None:
            return None
        try:
            rc = proc.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            log.warning("node %d at %s: no exit after SIGTERM, killing pid %d", self.id, self.address, proc.pid)
            self._send(signal.SIGKILL)
            rc = proc.wait()
        self._close_pipes()
        log.info("node %d at %s: stopped (exit code %s)", self.id, self.address, rc)
        self.check_crash()
        return rc

    def _abort(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self._send(signal.SIGKILL)
            self.process.wait()
        self._close_pipes()

    def _reap(self) -> None:
        if self.process is not None:
            self.process.poll()
            self._close_pipes()

    def _close_pipes(self) -> None:
        proc = self.process
        if proc is None:
            return
        for pipe in (proc.stdin, proc.stdout):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()

    def _log_excerpt(self) -> str:
        text = _tail(self.log_path)
        return f"; node log {self.log_path}:\n{text}" if text else ""

    def __repr__(self) -> str:
        if self.process is None:
            state = "not started"
        elif self.process.poll() is None:
            state = f"running pid {self.process.pid}"
        else:
            state = f"exited {self.process.returncode}"
        return f"<LocalNode {self.id} {self.address} {state}>"


def _stop_nodes(nodes: list[LocalNode], timeout: float) -> None:
    """Stop nodes in parallel: signal them all, then wait (shared deadline)."""
    for node in nodes:
        node.terminate()
    deadline = time.monotonic() + timeout
    for node in nodes:
        node._finish(deadline)


def _cleanup(nodes: list[LocalNode], tmp_dir: Path | None, timeout: float) -> None:
    """Stop the nodes and remove the temporary data dir (also run by GC/atexit)."""
    try:
        _stop_nodes(nodes, timeout)
    finally:
        if tmp_dir is not None:
            shutil.rmtree(tmp_dir, ignore_errors=True)


class LocalCluster:
    """A dqlite cluster of ``nodes`` local node processes, running once constructed.

    Picks free ports on ``host``, starts all node processes at once, waits until
    node 1 (which bootstraps) is leader, joins nodes 2..N through it with ADD and
    ASSIGN(voter), and waits until every node names that leader::

        with LocalCluster(nodes=3) as cluster:
            conn = dqlite.connect(cluster.addresses, database="app")

    ``base_dir`` holds each node's data in ``node-<id>/`` and its log in
    ``node-<id>.log``; by default a temporary directory is created and removed by
    :meth:`stop`. A given ``base_dir`` is kept and must not already hold node
    data. ``latency_ms`` sets raft timing (election timeout is 15x). See
    :class:`LocalNode` for ``python_command``. :meth:`stop` (or leaving the
    ``with`` block, or garbage collection / interpreter exit) stops exactly the
    processes this object started. A node that crashed (see :class:`NodeCrash`)
    has its log copied out first and is logged as a WARNING; :meth:`crashes`
    lists them.
    """

    def __init__(
        self,
        nodes: int = 3,
        base_dir: str | os.PathLike[str] | None = None,
        host: str = "127.0.0.1",
        latency_ms: int | None = DEFAULT_LATENCY_MS,
        *,
        python_command: Sequence[str] | None = None,
        timeout: float = 15.0,
        stop_timeout: float = 5.0,
    ) -> None:
        if nodes < 1:
            raise ValueError("a cluster needs at least one node")
        self.host = host
        self.latency_ms = latency_ms
        self.python_command = list(python_command) if python_command else None
        self.timeout = timeout
        self.stop_timeout = stop_timeout
        if base_dir is None:
            self.base_dir = Path(tempfile.mkdtemp(prefix="dqlite-cluster-"))
            tmp_dir: Path | None = self.base_dir
        else:
            self.base_dir = Path(base_dir)
            self.base_dir.mkdir(parents=True, exist_ok=True)
            tmp_dir = None
        self._nodes: list[LocalNode] = []
        self._replaced_crashes: list[NodeCrash] = []  # of nodes renew() replaced
        # Stops the nodes even if stop() is never called (GC or interpreter exit).
        self._finalizer = weakref.finalize(self, _cleanup, self._nodes, tmp_dir, stop_timeout)
        started = time.monotonic()
        try:
            self._start(nodes)
        except BaseException:
            self.stop()
            raise
        log.info("cluster ready in %.2f s: %s", time.monotonic() - started, ",".join(self.addresses))

    # -- public API ------------------------------------------------------------------

    @property
    def nodes(self) -> list[LocalNode]:
        """The nodes, in id order (a copy of the list)."""
        return list(self._nodes)

    @property
    def addresses(self) -> list[str]:
        """Every node's ``host:port``, in id order."""
        return [n.address for n in self._nodes]

    def node(self, node_id: int) -> LocalNode:
        """The node with id ``node_id``."""
        for n in self._nodes:
            if n.id == node_id:
                return n
        raise KeyError(node_id)

    def node_at(self, address: str | None) -> LocalNode:
        """The node listening at ``address`` (e.g. a connection's ``leader``).

        Fault injection that must hit the node a given connection talks to
        stops ``node_at(conn.leader)``: :meth:`leader_node` asks the cluster
        afresh, and after an election it may name another node.
        """
        for n in self._nodes:
            if n.address == address:
                return n
        raise KeyError(address)

    def leader_address(self, timeout: float | None = None) -> str:
        """Address of the current leader, waiting up to ``timeout`` s for one.

        A node named as leader by any running node is accepted once it names
        itself, so a follower's stale answer after a failover is not trusted.
        """
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            for node in self._nodes:
                if not node.is_alive():
                    continue
                named = self._ask_leader(node.address)[1]
                if named and (named == node.address or self._ask_leader(named)[1] == named):
                    return named
            if time.monotonic() >= deadline:
                raise TimeoutError(f"no dqlite leader within the timeout in {self!r}")
            time.sleep(_POLL_INTERVAL)

    def leader_node(self, timeout: float | None = None) -> LocalNode:
        """The :class:`LocalNode` that is currently leader."""
        address = self.leader_address(timeout)
        for n in self._nodes:
            if n.address == address:
                return n
        raise RuntimeError(f"leader {address} is not a node of {self!r}")

    def wait_for_leader(self, timeout: float | None = None) -> str:
        """Wait until the running voters agree on a running leader; return its address.

        Agreement means: the leader names itself, and every node that is a voter
        in its configuration (CLUSTER) and answers LEADER names it too. Nodes
        that are dead or do not answer within a second (SIGSTOP) are left out,
        so this also serves after killing, pausing or restarting nodes, and
        after roles were changed by other means than this object.
        """
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        answers: dict[str, str] = {}
        while True:
            answers = {}
            for n in self._nodes:
                if n.is_alive():
                    named = self._ask_leader(n.address, default=None)
                    if named is not None:
                        answers[n.address] = named[1]
            leader = self._agreed_leader(answers)
            if leader is not None:
                return leader
            if time.monotonic() >= deadline:
                raise TimeoutError(f"running voters of {self!r} did not agree on a leader: {answers}")
            time.sleep(_POLL_INTERVAL)

    def transfer_leadership(self, node_id: int | None = None) -> str:
        """Move leadership to ``node_id`` (default: another running node); returns its address.

        Returns once every running voter names the new leader.
        """
        old = self.leader_node()
        if node_id is None:
            node_id = next(n.id for n in self._nodes if n is not old and n.is_alive())
        with NodeClient(old.address, timeout=self.timeout) as client:
            client.transfer(node_id)
        new = self.wait_for_leader()
        if new != self.node(node_id).address:
            raise RuntimeError(f"leadership went to {new}, not to node {node_id}")
        return new

    def crashes(self) -> list[NodeCrash]:
        """Every crash of this cluster's nodes so far, in node order.

        Checks each node first (:meth:`LocalNode.check_crash`), so the evidence of
        one that has just died is kept now, while its data directory still exists.
        """
        for node in self._nodes:
            node.check_crash()
        return self._replaced_crashes + [crash for node in self._nodes for crash in node.crashes]

    def renew(self) -> None:
        """Replace every node with a new one on fresh data: the same number, new addresses.

        For a long-lived cluster that lost a node to a crash (the pytest
        plugin's shared ``dqlite_cluster``): the nodes are stopped, their data
        and logs removed (a crashed node's evidence is kept first), and a new
        cluster is formed in this object. Everything stored is gone.
        :meth:`crashes` still lists the crashes of the replaced nodes.
        """
        log.info("renewing cluster %s", ",".join(self.addresses))
        count = len(self._nodes)
        _stop_nodes(self._nodes, self.stop_timeout)
        for node in self._nodes:
            self._replaced_crashes.extend(node.crashes)
            shutil.rmtree(node.data_dir, ignore_errors=True)
            node.log_path.unlink(missing_ok=True)
        self._nodes.clear()
        self._start(count)

    def add_node(self, role: int = VOTER) -> LocalNode:
        """Start one more node and join it with ``role`` (VOTER, STANDBY or SPARE)."""
        node_id = max((n.id for n in self._nodes), default=0) + 1
        node = self._new_node(node_id, free_ports(1, self.host)[0])
        self._nodes.append(node)
        self._start_nodes([node])
        self._join(node, self.leader_address(), role)
        return node

    def stop(self) -> None:
        """Stop every node this cluster started and remove its temporary data dir.

        Idempotent. Nodes are signalled together and given ``stop_timeout`` s to
        exit before they are killed.
        """
        if self._finalizer.alive:
            log.info("stopping cluster %s", ",".join(self.addresses))
            self._finalizer()

    def __enter__(self) -> LocalCluster:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        running = sum(n.is_alive() for n in self._nodes)
        state = "stopped" if not self._finalizer.alive else f"{running}/{len(self._nodes)} running"
        return f"<LocalCluster {','.join(self.addresses)} {state} dir={self.base_dir}>"

    # -- startup ---------------------------------------------------------------------

    def _new_node(self, node_id: int, port: int) -> LocalNode:
        data_dir = self.base_dir / f"node-{node_id}"
        if data_dir.exists() and any(data_dir.iterdir()):
            raise FileExistsError(f"{data_dir} already holds node data; use an empty base_dir")
        return LocalNode(
            node_id,
            f"{self.host}:{port}",
            data_dir,
            latency_ms=self.latency_ms,
            python_command=self.python_command,
        )

    def _start(self, count: int) -> None:
        ports = free_ports(count, self.host)
        self._nodes.extend(self._new_node(i + 1, port) for i, port in enumerate(ports))
        # Interpreter start-up dominates, so launch every host at once; only the
        # joins need to happen in order.
        self._start_nodes(self._nodes)
        first = self._nodes[0]
        self._wait_until(
            lambda: self._ask_leader(first.address) == (first.id, first.address),
            f"node {first.id} did not become leader",
        )
        for node in self._nodes[1:]:
            self._join(node, first.address, VOTER)
        self.wait_for_leader()

    def _start_nodes(self, nodes: list[LocalNode]) -> None:
        """Launch nodes in parallel; re-pick the port of a node that lost a bind race."""
        for node in nodes:
            node.launch()
        for node in nodes:
            for attempt in range(3):
                try:
                    node.wait_ready(self.timeout)
                    break
                except NodeStartError as exc:
                    # Another process took the port between free_ports() and the
                    # bind. Nothing has joined yet, so a fresh address is safe.
                    if "cannot bind" not in str(exc) or attempt == 2:
                        raise
                    shutil.rmtree(node.data_dir, ignore_errors=True)
                    node.address = f"{self.host}:{free_ports(1, self.host)[0]}"
                    log.info("node %d: port taken, retrying at %s", node.id, node.address)
                    node.launch()

    def _join(self, node: LocalNode, leader: str, role: int) -> None:
        """ADD ``node`` through ``leader``, then ASSIGN its role (ADD makes a spare)."""
        # The full timeout, not the probe one: promoting a voter waits for it to
        # catch up with the log, and a retried ASSIGN after a timeout would fail.
        def add() -> bool:
            with NodeClient(leader, timeout=self.timeout) as c:
                c.add(node.id, node.address)
            return True

        def assign() -> bool:
            with NodeClient(leader, timeout=self.timeout) as c:
                c.assign(node.id, role)
            return True

        self._wait_until(add, f"could not ADD node {node.id} ({node.address})", retry_errors=True)
        if role != SPARE:
            self._wait_until(assign, f"could not ASSIGN node {node.id} role {role}", retry_errors=True)
        log.debug("node %d at %s joined as role %d", node.id, node.address, role)

    def _agreed_leader(self, answers: dict[str, str]) -> str | None:
        """The leader named by ``answers`` (address -> LEADER), if its voters agree."""
        # Spares, standbys and nodes outside the configuration answer "".
        named = {a for a in answers.values() if a}
        if len(named) != 1:
            return None
        (leader,) = named
        if answers.get(leader) != leader:
            return None
        try:
            with NodeClient(leader, timeout=_PROBE_TIMEOUT) as c:
                voters = [i.address for i in c.cluster() if i.role == VOTER]
        except _TRANSIENT:
            return None
        if all(answers[a] == leader for a in voters if a in answers):
            return leader
        return None

    @overload
    def _ask_leader(self, address: str) -> tuple[int, str]: ...
    @overload
    def _ask_leader(self, address: str, default: None) -> tuple[int, str] | None: ...

    def _ask_leader(
        self, address: str, default: tuple[int, str] | None = (0, "")
    ) -> tuple[int, str] | None:
        """LEADER from one node; (0, "") when it knows none, ``default`` if it does not answer."""
        try:
            with NodeClient(address, timeout=_PROBE_TIMEOUT) as c:
                return c.leader()
        except _TRANSIENT:
            return default

    def _wait_until(self, check: Callable[[], bool], what: str, retry_errors: bool = False) -> None:
        deadline = time.monotonic() + self.timeout
        last_error: BaseException | None = None
        while True:
            try:
                if check():
                    return
            except _TRANSIENT as exc:
                if not retry_errors:
                    raise
                last_error = exc
            if time.monotonic() >= deadline:
                detail = f" (last error: {last_error})" if last_error else ""
                raise NodeStartError(f"{what} within {self.timeout:g} s{detail}")
            time.sleep(_POLL_INTERVAL)


def main(argv: list[str] | None = None) -> int:
    """``python -m dqlite.server``: run a local cluster until Ctrl-C or SIGTERM."""
    parser = argparse.ArgumentParser(
        prog="python -m dqlite.server", description="Run a local dqlite cluster in the foreground."
    )
    parser.add_argument("--nodes", type=int, default=3, help="number of nodes (default 3)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--base-dir", default=None, help="keep node data here (default: a temporary dir)")
    parser.add_argument("--latency-ms", type=int, default=DEFAULT_LATENCY_MS, help="raft network latency")
    parser.add_argument(
        "--server-root",
        default=None,
        help="run the nodes on the glibc + libdqlite unpacked in this folder "
        f"(e.g. .deps/dqlite-1.18; default: ${SERVER_ROOT_ENV} if set, else the system libdqlite)",
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="log warnings only")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO, format="%(asctime)s %(name)s: %(message)s"
    )

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    # SIGTERM takes the Ctrl-C path, so the cluster is stopped the same way
    # (also while it is still starting).
    signal.signal(signal.SIGTERM, interrupt)
    try:
        command = private_python_command(args.server_root) if args.server_root else None
        with LocalCluster(
            args.nodes, base_dir=args.base_dir, host=args.host, latency_ms=args.latency_ms, python_command=command
        ) as cluster:
            print(f"dqlite cluster ready: {','.join(cluster.addresses)}", flush=True)
            while True:
                # Not signal.pause(): a SIGTERM that lands between Python's
                # check for signals and the pause() call would leave it
                # waiting for another one.  A sleep is cut short by the
                # signal, or ends within the second.
                time.sleep(1)
    except KeyboardInterrupt:
        pass
    except (NodeStartError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
