"""A TLS-terminating TCP proxy on loopback (test helper).

Accepts TLS connections, opens a plain connection to the target for each,
and relays bytes both ways.  Threads, bounded by the sockets' lifetimes.
"""

from __future__ import annotations

import socket
import ssl
import subprocess
import threading
from pathlib import Path


def make_certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (key, cert), made with openssl."""
    key, cert = directory / "key.pem", directory / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True)
    return key, cert


class TLSProxy:
    """Listen with TLS on ``listen`` ("127.0.0.1:port"); forward in plain TCP to ``target``.

    ``client_ca``: require a client certificate that chains to it (mutual TLS).
    """

    def __init__(self, listen: str, target: str, key: Path, cert: Path, client_ca: Path | None = None) -> None:
        host, port = listen.rsplit(":", 1)
        self.target = target
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.context.load_cert_chain(cert, key)
        if client_ca is not None:
            self.context.verify_mode = ssl.CERT_REQUIRED
            self.context.load_verify_locations(cafile=str(client_ca))
        self.listener = socket.create_server((host, int(port)))
        self.listener.settimeout(0.2)
        self.accepted = 0
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._sockets: list[socket.socket] = []
        self._accept_thread = threading.Thread(target=self._accept, daemon=True)
        self._accept_thread.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                raw, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                raw.settimeout(5)
                client = self.context.wrap_socket(raw, server_side=True)
                client.settimeout(None)
                host, port = self.target.rsplit(":", 1)
                upstream = socket.create_connection((host, int(port)), timeout=5)
                upstream.settimeout(None)
            except OSError:
                raw.close()
                continue
            self.accepted += 1
            self._sockets += [client, upstream]
            for src, dst in ((client, upstream), (upstream, client)):
                t = threading.Thread(target=self._pump, args=(src, dst), daemon=True)
                t.start()
                self._threads.append(t)

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self._stop.set()
        self.listener.close()
        for s in self._sockets:
            try:
                s.close()
            except OSError:
                pass
        self._accept_thread.join(2)
        for t in self._threads:
            t.join(2)

    def __enter__(self) -> TLSProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
