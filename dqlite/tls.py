"""TLS client contexts from certificate files (``ssl_ca``, ``ssl_cert``, ``ssl_key``).

The connect functions, the SQLAlchemy URLs (``?ssl_ca=...&ssl_cert=...&ssl_key=...``),
the cluster administration classes and the shell all build their
``ssl.SSLContext`` here, so the same three options mean the same everywhere:

    import dqlite
    from dqlite.tls import client_context

    ctx = client_context(ca="cluster-ca.pem", cert="client.pem", key="client.key")
    conn = dqlite.connect("10.0.0.1:9001", "app", ssl=ctx)
    # or, the same:
    conn = dqlite.connect("10.0.0.1:9001", "app", ssl_ca="cluster-ca.pem",
                          ssl_cert="client.pem", ssl_key="client.key")
"""

from __future__ import annotations

import os
import ssl

from dqlite.exceptions import InterfaceError

__all__ = ["client_context", "resolve_ssl"]

StrPath = str | os.PathLike[str]


def client_context(
    ca: StrPath | None = None, cert: StrPath | None = None, key: StrPath | None = None,
) -> ssl.SSLContext:
    """A client ``SSLContext`` that verifies the nodes and may present a certificate.

    ``ca``: a PEM file of the certificate authorities (or the self-signed
    certificate) the nodes' certificates must chain to; without it, the
    system's trusted authorities.  ``cert`` and ``key``: the client's own
    certificate and private key, for nodes that require mutual TLS (``key``
    may be left out when ``cert`` holds both).  The host name checked is the
    one in each node's address.  A file that cannot be read or parsed raises
    ``InterfaceError`` naming the option and the file.
    """
    if key is not None and cert is None:
        raise InterfaceError("ssl_key needs ssl_cert: the client certificate the key belongs to")
    try:
        context = ssl.create_default_context(cafile=os.fspath(ca) if ca is not None else None)
    except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
        raise InterfaceError(f"cannot load ssl_ca {os.fspath(ca)!r}: {_reason(exc)}") from None  # type: ignore[arg-type]
    if cert is not None:
        try:
            context.load_cert_chain(os.fspath(cert), os.fspath(key) if key is not None else None)
        except (OSError, ValueError) as exc:
            files = os.fspath(cert) if key is None else f"{os.fspath(cert)} / {os.fspath(key)}"
            raise InterfaceError(f"cannot load ssl_cert/ssl_key {files!r}: {_reason(exc)}") from None
    return context


def resolve_ssl(
    context: ssl.SSLContext | None,
    ca: StrPath | None = None,
    cert: StrPath | None = None,
    key: StrPath | None = None,
) -> ssl.SSLContext | None:
    """The context the connect functions use: ``context`` as given, or one made
    from the files (``client_context``); both at once is an ``InterfaceError``."""
    if ca is None and cert is None and key is None:
        return context
    if context is not None:
        raise InterfaceError("give either ssl (an SSLContext) or ssl_ca/ssl_cert/ssl_key, not both")
    return client_context(ca, cert, key)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__
