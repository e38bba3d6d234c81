"""A TCP proxy that delays every answer: a distant node, on one machine.

``python -m bench --proxy-delay SECONDS`` runs it (in a process of its own,
so that its CPU is never charged to a measured worker) in front of each node
of the cluster it starts; the nodes advertise the proxy's addresses, so
clients (and the nodes' raft traffic) reach every node through it.  Run alone::

    python -m bench.proxy --delay 0.0002 127.0.0.1:9001 127.0.0.1:9002 ...

It listens on one loopback port per target, prints one JSON line
``{"addresses": ["127.0.0.1:PORT", ...]}`` (in the targets' order) and
forwards until its stdin closes or it gets SIGTERM/SIGINT; then it prints a
JSON line of statistics on stderr (chunks delayed, how long they were held).

Each accepted connection gets three threads.  Client to node: forwarded at
once.  Node to client: a reader stamps each chunk with the time it arrived
and queues it; a writer sends each chunk, in order, once ``delay`` seconds
have passed since its arrival.  So every answer is late by ``delay`` (plus
the sleep's wake-up latency, which the statistics report), and answers that
follow each other closely are not delayed by each other's wait.  The
process's timer slack is set to 1 µs (Linux) so that a 200 µs sleep is not
stretched by the default 50 µs.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import os
import signal
import socket
import statistics
import sys
import threading
import time
from typing import Any

_CHUNK = 1 << 16


def _set_timer_slack(nanoseconds: int) -> None:
    """Linux: how late a sleep may wake (per thread, inherited by new threads)."""
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(Exception):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(29, ctypes.c_ulong(nanoseconds), 0, 0, 0)  # PR_SET_TIMERSLACK


def _split(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


class _Held:
    """Statistics of the node-to-client direction: how long chunks were held."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.count = 0
        self.samples: collections.deque[float] = collections.deque(maxlen=100_000)

    def add(self, seconds: float) -> None:
        with self.lock:
            self.count += 1
            self.samples.append(seconds)

    def summary(self) -> dict[str, Any]:
        with self.lock:
            samples = sorted(self.samples)
        if not samples:
            return {"chunks": self.count}
        return {
            "chunks": self.count,
            "held_median_us": round(statistics.median(samples) * 1e6, 1),
            "held_p99_us": round(samples[int(0.99 * (len(samples) - 1))] * 1e6, 1),
            "held_max_us": round(samples[-1] * 1e6, 1),
        }


class DelayProxy:
    """Forwards a loopback port to each target, delaying what the targets send by ``delay`` seconds."""

    def __init__(self, targets: list[str], delay: float, host: str = "127.0.0.1") -> None:
        if not delay >= 0:
            raise ValueError("the delay must be a number of seconds >= 0")
        self.delay = delay
        self.held = _Held()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._threads: list[threading.Thread] = []
        self._listeners: list[tuple[socket.socket, tuple[str, int]]] = []
        for target in targets:
            listener = socket.create_server((host, 0), backlog=64)
            self._listeners.append((listener, _split(target)))
        self.addresses = [f"{host}:{listener.getsockname()[1]}" for listener, _ in self._listeners]

    def start(self) -> DelayProxy:
        for listener, target in self._listeners:
            self._spawn(self._accept, listener, target)
        return self

    def stop(self) -> None:
        self._stop.set()
        for listener, _ in self._listeners:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()
        with self._lock:
            socks = list(self._sockets)
        for sock in socks:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        for t in list(self._threads):
            t.join(5)
        for sock in socks:
            sock.close()

    def _spawn(self, target: Any, *args: Any) -> None:
        t = threading.Thread(target=target, args=args, daemon=True)
        with self._lock:
            self._threads = [x for x in self._threads if x.is_alive()]
            self._threads.append(t)
        t.start()

    def _accept(self, listener: socket.socket, target: tuple[str, int]) -> None:
        while not self._stop.is_set():
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(target, timeout=5)
            except OSError:
                client.close()  # the node is down: so is this connection
                continue
            for sock in (client, server):
                sock.settimeout(None)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                self._sockets.update((client, server))
            queue: collections.deque[tuple[float, bytes]] = collections.deque()
            ready = threading.Condition()
            self._spawn(self._forward, client, server)
            self._spawn(self._read_answers, server, queue, ready)
            self._spawn(self._write_answers, client, server, queue, ready)

    def _forward(self, src: socket.socket, dst: socket.socket) -> None:
        """Client to node, at once; the end of the stream is passed on."""
        try:
            while data := src.recv(_CHUNK):
                dst.sendall(data)
        except OSError:
            pass
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)

    def _read_answers(self, server: socket.socket, queue: collections.deque[tuple[float, bytes]],
                      ready: threading.Condition) -> None:
        """Node to client, first half: stamp each chunk with its arrival and queue it (b"": the end)."""
        data = b""
        try:
            while data := server.recv(_CHUNK):
                due = time.monotonic() + self.delay
                with ready:
                    queue.append((due, data))
                    ready.notify()
        except OSError:
            pass
        with ready:
            queue.append((time.monotonic() + self.delay, b""))
            ready.notify()

    def _write_answers(self, client: socket.socket, server: socket.socket,
                       queue: collections.deque[tuple[float, bytes]], ready: threading.Condition) -> None:
        """Node to client, second half: send each chunk, in order, once it is due."""
        try:
            while True:
                with ready:
                    while not queue:
                        ready.wait()
                    due, data = queue.popleft()
                wait = due - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
                if not data:
                    break
                client.sendall(data)
                self.held.add(time.monotonic() - due + self.delay)
        except OSError:
            pass
        # The node closed (or the client went away): close both sides.
        for sock in (client, server):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        with self._lock:
            self._sockets.difference_update((client, server))
        client.close()
        server.close()


class ProxyProcess:
    """``python -m bench.proxy`` in a child process: ``addresses`` in front of
    ``targets``; ``stop()`` ends it and returns its statistics."""

    def __init__(self, targets: list[str], delay: float, python: str = sys.executable) -> None:
        import subprocess

        self.stderr = ""
        repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (repo, os.environ.get("PYTHONPATH")) if p)}
        self.process = subprocess.Popen(
            [python, "-m", "bench.proxy", "--delay", repr(delay), *targets],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=repo)
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line.startswith("{"):
            self.stop()
            raise RuntimeError(f"the delaying proxy did not start: {self.stderr.strip()[-500:] or 'no output'}")
        self.addresses: list[str] = json.loads(line)["addresses"]

    def stop(self) -> dict[str, Any]:
        """End the proxy (closing its stdin, then SIGTERM if need be); its statistics."""
        import subprocess

        proc = self.process
        try:  # communicate() closes its stdin: the proxy stops
            _, self.stderr = proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            proc.terminate()  # this process's own child, by its handle
            _, self.stderr = proc.communicate(timeout=10)
        for line in reversed((self.stderr or "").splitlines()):
            if line.startswith("{"):
                with contextlib.suppress(ValueError):
                    return dict(json.loads(line))
        return {}


def proxied_cluster(delay: float, nodes: int = 3) -> tuple[Any, ProxyProcess]:
    """A local cluster whose nodes are reached only through a delaying proxy.

    Each node listens on a private port and advertises the proxy's port in
    front of it, so LEADER answers name the proxy and no client (nor raft
    peer) bypasses it.  Returns ``(cluster, proxy)``; stop the cluster first.
    """
    from dqlite.server import LocalCluster, LocalNode, free_ports

    binds = [f"127.0.0.1:{port}" for port in free_ports(nodes)]
    proxy = ProxyProcess(binds, delay)
    advertised = dict(zip(range(1, nodes + 1), zip(proxy.addresses, binds)))

    class ProxiedCluster(LocalCluster):
        def _new_node(self, node_id: int, port: int) -> LocalNode:
            node = super()._new_node(node_id, port)
            node.address, node.bind_address = advertised[node_id]
            return node

    try:
        cluster = ProxiedCluster(nodes=nodes)
    except BaseException:
        proxy.stop()
        raise
    return cluster, proxy


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.proxy", description=__doc__.split("\n\n")[0])
    parser.add_argument("--delay", type=float, required=True, help="seconds every answer is held")
    parser.add_argument("targets", nargs="+", metavar="HOST:PORT", help="the nodes, one listening port each")
    args = parser.parse_args(argv)
    _set_timer_slack(1000)
    proxy = DelayProxy(args.targets, args.delay).start()
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())

    def watch_stdin() -> None:  # the parent died or closed the pipe: stop
        with contextlib.suppress(OSError):
            while os.read(sys.stdin.fileno(), 4096):
                pass
        done.set()

    threading.Thread(target=watch_stdin, daemon=True).start()
    print(json.dumps({"addresses": proxy.addresses, "pid": os.getpid()}), flush=True)
    while not done.wait(0.5):
        pass
    proxy.stop()
    print(json.dumps({"delay_us": round(args.delay * 1e6, 1), **proxy.held.summary()}), file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
