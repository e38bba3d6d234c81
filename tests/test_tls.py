"""TLS to a node behind a TLS-terminating proxy of our own, through both APIs."""

import ssl

import pytest

import dqlite
from dqlite.server import LocalNode, free_ports

from readme import localised, python_block, run
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



@pytest.mark.parametrize("loop_kind", ["asyncio", "uvloop"])
def test_asyncio_streams_a_large_result_over_tls(tls_node, loop_kind):
    """Answers arrive through the TLS transport in pieces, on either loop."""
    import asyncio

    import dqlite.aio

    address, context, _ = tls_node
    many = "WITH RECURSIVE k(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM k WHERE x < ?) SELECT x, 'row' FROM k"

    async def main():
        conn = await dqlite.aio.connect(address, "db", ssl=context, autocommit=True)
        cur = conn.cursor()
        counts = []
        for n in (3, 30000, 5):  # the point query's prepared statement runs again
            await cur.execute(many, (n,))
            counts.append(len(await cur.fetchall()))
        await conn.close()
        return counts

    if loop_kind == "uvloop":
        uvloop = pytest.importorskip("uvloop", reason="uvloop is a test dependency")
        assert uvloop.run(main()) == [3, 30000, 5]
    else:
        assert asyncio.run(main()) == [3, 30000, 5]


# -- mutual TLS, with the context made from files (connect keywords, URLs) ---


@pytest.fixture
def mtls_node(tmp_path):
    """A single-node cluster behind a proxy that requires a client certificate.

    Yields (address, files): ``files`` maps ssl_ca/ssl_cert/ssl_key to the
    PEM files a client needs (the server's certificate is its own CA).
    """
    public, private = (f"127.0.0.1:{p}" for p in free_ports(2))
    key, cert = make_certificate(tmp_path)
    (tmp_path / "client").mkdir()
    client_key, client_cert = make_certificate(tmp_path / "client")
    node = ProxiedNode(1, public, tmp_path / "node-1", bind=private)
    node.start()
    try:
        with TLSProxy(public, private, key, cert, client_ca=client_cert) as proxy:
            yield public, {"ssl_ca": str(cert), "ssl_cert": str(client_cert), "ssl_key": str(client_key)}, proxy
    finally:
        node.stop()


def test_mutual_tls_from_connect_keywords(mtls_node, api_connect):
    address, files, proxy = mtls_node
    conn = api_connect(address, "db", autocommit=True, **files)
    conn.execute("CREATE TABLE t (x)")
    conn.execute("INSERT INTO t VALUES (42)")
    assert conn.execute("SELECT x FROM t").fetchall() == [(42,)]
    assert proxy.accepted >= 1


def test_readme_tls_example_connects_both_ways(mtls_node):
    address, files, proxy = mtls_node
    code = localised(python_block("client_context("), [address], "db")
    for name, key in (("cluster.crt", "ssl_ca"), ("client.crt", "ssl_cert"), ("client.key", "ssl_key")):
        code = code.replace(f'"{name}"', repr(files[key]))
    conn = run(code)["conn"]  # the second; the first connected too (connect() does) and is dropped
    assert conn.execute("SELECT 1").fetchall() == [(1,)]
    conn.close()
    assert proxy.accepted >= 2


def test_mutual_tls_without_a_client_certificate_is_refused(mtls_node, api_connect):
    address, files, _ = mtls_node
    with pytest.raises(dqlite.OperationalError):
        api_connect(address, "db", ssl_ca=files["ssl_ca"], timeout=1)


def test_tls_options_are_checked(tmp_path):
    from dqlite.tls import client_context

    with pytest.raises(dqlite.InterfaceError, match="ssl_ca .*missing.pem"):
        dqlite.connect("127.0.0.1:1", "db", ssl_ca=tmp_path / "missing.pem")
    with pytest.raises(dqlite.InterfaceError, match="not both"):
        dqlite.connect("127.0.0.1:1", "db", ssl=ssl.create_default_context(), ssl_ca="x.pem")
    with pytest.raises(dqlite.InterfaceError, match="ssl_key needs ssl_cert"):
        client_context(key="k.pem")


def _tls_url(scheme: str, address: str, files: dict[str, str]) -> str:
    from urllib.parse import urlencode

    return f"{scheme}://{address}/db?{urlencode(files)}"


def test_mutual_tls_from_a_sync_url(mtls_node):
    sa = pytest.importorskip("sqlalchemy")
    address, files, proxy = mtls_node
    engine = sa.create_engine(_tls_url("dqlite", address, files))
    try:
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT 1")).scalar() == 1
    finally:
        engine.dispose()
    assert proxy.accepted >= 1


def test_mutual_tls_from_an_async_url(mtls_node):
    import asyncio

    sa = pytest.importorskip("sqlalchemy")
    from sqlalchemy.ext.asyncio import create_async_engine

    address, files, proxy = mtls_node

    async def main():
        engine = create_async_engine(_tls_url("dqlite+aio", address, files))
        try:
            async with engine.connect() as conn:
                return (await conn.execute(sa.text("SELECT 2"))).scalar()
        finally:
            await engine.dispose()

    assert asyncio.run(main()) == 2
    assert proxy.accepted >= 1


def test_mutual_tls_from_connect_args(mtls_node):
    from dqlite.tls import client_context

    sa = pytest.importorskip("sqlalchemy")
    address, files, _ = mtls_node
    context = client_context(files["ssl_ca"], files["ssl_cert"], files["ssl_key"])
    engine = sa.create_engine(f"dqlite://{address}/db", connect_args={"ssl": context})
    try:
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT 3")).scalar() == 3
    finally:
        engine.dispose()


def test_a_bad_tls_file_in_a_url_fails_at_create_engine(tmp_path):
    sa = pytest.importorskip("sqlalchemy")
    with pytest.raises(sa.exc.ArgumentError, match="ssl_ca"):
        sa.create_engine(f"dqlite://127.0.0.1:1/db?ssl_ca={tmp_path}/missing.pem")


def test_cluster_admin_over_mutual_tls(mtls_node):
    import asyncio

    from dqlite.aiocluster import AsyncClusterAdmin
    from dqlite.cluster import ClusterAdmin
    from dqlite.tls import client_context

    address, files, _ = mtls_node
    context = client_context(files["ssl_ca"], files["ssl_cert"], files["ssl_key"])
    admin = ClusterAdmin([address], ssl=context)
    assert admin.leader() == address
    assert [(n.id, n.address) for n in admin.members()] == [(1, address)]

    async def main():
        aadmin = AsyncClusterAdmin([address], ssl=context)
        return await aadmin.leader(), await aadmin.describe(address)

    assert asyncio.run(main()) == (address, (0, 0))


def test_shell_over_mutual_tls(mtls_node):
    import subprocess
    import sys

    address, files, _ = mtls_node
    base = [sys.executable, "-m", "dqlite", "-s", address, "db", "--ssl-ca", files["ssl_ca"]]
    tls = base + ["--ssl-cert", files["ssl_cert"], "--ssl-key", files["ssl_key"]]
    done = subprocess.run(tls + ["-c", "SELECT 'over tls'"], capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stderr) == (0, "") and "over tls" in done.stdout
    done = subprocess.run(tls + ["-c", ".leader"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == address
    # Without the client certificate: one line, exit status 1.
    done = subprocess.run(base + ["--timeout", "1", "-c", "SELECT 1"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and done.stderr.startswith("Error: ") and done.stderr.count("\n") == 1


def test_shell_with_a_cluster_certificate_like_go_dqlite(tls_node, tmp_path):
    """--cert/--key without --ssl-ca: the certificate is also the one the nodes must present."""
    import subprocess
    import sys

    address, _, proxy = tls_node
    done = subprocess.run([sys.executable, "-m", "dqlite", "-s", address, "db", "SELECT 'pinned'",
                           "--cert", str(tmp_path / "cert.pem"), "-k", str(tmp_path / "key.pem")],
                          capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stderr) == (0, "") and "pinned" in done.stdout
    assert proxy.accepted >= 1
