"""The concurrent leader search of both shells (``Session``'s ``FindLeader`` request).

Every candidate is asked at once (a connection, the handshake and LEADER in
one write, one answer), as go-dqlite's concurrent leader connections do, so a
dead or frozen node costs the search no more than its own bound: the search
ends as soon as a node says it leads, or when every node has answered or run
out of time.  Addresses named ``preferred`` (those the application gave)
come first: a leader found through another (a stored member) is only taken
once every preferred address has answered or failed, so a stored address
that has since come to serve another cluster cannot win a race against the
cluster the application named.  The sync shell asks from threads (one per candidate, on the
blocking ``Wire``, TLS included); the asyncio shell from tasks.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections.abc import Sequence
from ssl import SSLContext
from typing import NamedTuple

from dqlite._protocol import Decoder, Encoder, encode_handshake
from dqlite._wire import Wire, parse_address
from dqlite.exceptions import Error

__all__ = ["ProbeResult", "probe_leaders", "probe_leaders_async"]


class ProbeResult(NamedTuple):
    """What one candidate said: the leader it names ("" for none), or why it could not say."""

    address: str
    leader: str | None
    error: str | None = None


def _request() -> bytes:
    encoder = Encoder()
    encoder.leader()
    return encode_handshake() + encoder.take()


_REQUEST = _request()


def _settled(results: list[ProbeResult], preferred: frozenset[str]) -> bool:
    """Whether the search can end with ``results`` (see the module doc)."""
    leaders = [r.address for r in results if r.leader and r.leader == r.address]
    if not leaders:
        return False
    if not preferred.isdisjoint(leaders):
        return True
    return preferred <= {r.address for r in results}


def _ask(address: str, timeout: float, ssl: SSLContext | None) -> ProbeResult:
    wire = None
    try:
        wire = Wire(address, timeout, Decoder(), ssl)
        wire.send(_REQUEST)
        _, leader = wire.read(wire.decoder.read_server)
        return ProbeResult(address, leader)
    except Error as exc:
        return ProbeResult(address, None, str(exc))
    finally:
        if wire is not None:
            wire.close()


def probe_leaders(addresses: Sequence[str], timeout: float, ssl: SSLContext | None = None,
                  preferred: Sequence[str] = ()) -> list[ProbeResult]:
    """Ask every address for the leader at once, each within ``timeout`` seconds.

    Returns the answers in the order they came, as soon as one node names
    itself (one of ``preferred``, or any once those have all answered), or
    once every node has answered or failed.  Threads still waiting then end
    by themselves within their timeout.
    """
    wanted = frozenset(preferred).intersection(addresses)
    if len(addresses) == 1:
        return [_ask(addresses[0], timeout, ssl)]
    answers: queue.SimpleQueue[ProbeResult] = queue.SimpleQueue()
    for address in addresses:
        threading.Thread(target=lambda a=address: answers.put(_ask(a, timeout, ssl)),
                         name=f"dqlite-probe-{address}", daemon=True).start()
    results: list[ProbeResult] = []
    deadline = time.monotonic() + timeout + 1.0  # each thread bounds itself; a margin on top
    while len(results) < len(addresses):
        left = deadline - time.monotonic()
        if left <= 0:
            break
        try:
            result = answers.get(timeout=left)
        except queue.Empty:
            break
        results.append(result)
        if _settled(results, wanted):
            break
    return results


async def _ask_async(address: str, timeout: float, ssl: SSLContext | None) -> ProbeResult:
    writer = None
    try:
        host, port = parse_address(address)
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(
                host, port, ssl=ssl, server_hostname=host if ssl is not None else None)
            writer.write(_REQUEST)
            decoder = Decoder()
            while decoder.next_message() < 0:
                data = await reader.read(4096)
                if not data:
                    return ProbeResult(address, None, f"dqlite node {address} closed the connection")
                decoder.feed(data)
            _, leader = decoder.read_server()
            return ProbeResult(address, leader)
    except TimeoutError:
        return ProbeResult(address, None, f"timed out asking {address} for the leader")
    except (OSError, Error) as exc:
        return ProbeResult(address, None, f"cannot ask {address} for the leader: {exc}")
    finally:
        if writer is not None:
            writer.transport.abort()


async def probe_leaders_async(addresses: Sequence[str], timeout: float, ssl: SSLContext | None = None,
                              preferred: Sequence[str] = ()) -> list[ProbeResult]:
    """``probe_leaders`` on the running event loop, a task per address.

    The tasks still running when it returns are cancelled.
    """
    wanted = frozenset(preferred).intersection(addresses)
    pending = {asyncio.ensure_future(_ask_async(a, timeout, ssl)) for a in addresses}
    results: list[ProbeResult] = []
    try:
        while pending:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            found = False
            for task in done:
                results.append(task.result())
                found = found or _settled(results, wanted)
            if found:
                break
    finally:
        for task in pending:
            task.cancel()
    return results
