"""TLS to a node behind a TLS-terminating proxy of our own, through both APIs."""

import ssl

import pytest

import dqlite
from dqlite.server import LocalNode, free_ports

from tlsproxy import TLSProxy, make_certificate


class ProxiedNode(LocalNode):
    """A node that listens on ``bind`` but advertises its proxy's address."""

    def __init__(self, *args, bind: str, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.bind = bind

    def command(self) -> list[str]:
        return super().command() + ["--bind", self.bind]


@pytest.fixture
def tls_node(tmp_path):
    """(address, ssl context): a single-node cluster reachable only through TLS."""
    public, private = (f"127.0.0.1:{p}" for p in free_ports(2))
    key, cert = make_certificate(tmp_path)
    node = ProxiedNode(1, public, tmp_path / "node-1", bind=private)
    node.start()
    try:
        with TLSProxy(public, private, key, cert) as proxy:
            context = ssl.create_default_context(cafile=str(cert))
            yield public, context, proxy
    finally:
        node.stop()


def test_queries_over_tls(tls_node, api_connect):
    address, context, proxy = tls_node
    conn = api_connect(address, "db", ssl=context, autocommit=True)
    conn.execute("CREATE TABLE t (x TEXT)")
    conn.executemany("INSERT INTO t VALUES (?)", [("secret",), ("data",)])
    assert conn.execute("SELECT x FROM t ORDER BY x").fetchall() == [("data",), ("secret",)]
    assert proxy.accepted >= 1


def test_untrusted_certificate_is_refused(tls_node, api_connect):
    address, _, _ = tls_node
    with pytest.raises(dqlite.OperationalError, match="CERTIFICATE_VERIFY_FAILED"):
        api_connect(address, "db", ssl=ssl.create_default_context(), timeout=1)


def test_plain_client_cannot_talk_to_the_tls_port(tls_node, api_connect):
    address, _, _ = tls_node
    with pytest.raises(dqlite.OperationalError):
        api_connect(address, "db", timeout=1)


def test_close_from_another_thread_ends_the_running_operation_over_tls(tls_node):
    from test_threads import run_in_thread

    address, context, _ = tls_node
    conn = dqlite.connect(address, "db", ssl=context, autocommit=True)
    thread, outcome = run_in_thread(conn)
    conn.close()
    thread.join(timeout=10)
    assert not thread.is_alive()
    assert isinstance(outcome.get("error"), dqlite.ConnectionLostError), outcome
    assert conn._wire is None  # closed by its own thread, not connected again
