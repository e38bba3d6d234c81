"""The driver uses public asyncio APIs only (issue 17).

No private attribute of an event loop, a transport, a task or a future, and
no asyncio module that is not part of its public API: such names change
between Python versions, do not exist on other loops (uvloop), and reading
them means relying on how one loop works inside.  A scan of the source under
``dqlite/``, so that a new use fails here rather than on another loop.
"""

from __future__ import annotations

import pathlib
import re

import pytest

pytestmark = pytest.mark.server_independent

SOURCE = pathlib.Path(__file__).resolve().parent.parent / "dqlite"

# Private names of asyncio's loops, transports, tasks and futures, whatever
# the receiver is called (attribute access, or a getattr/hasattr string).
_ASYNCIO_PRIVATE_NAMES = (
    "_ready", "_scheduled", "_selector", "_sock", "_sock_fd", "_run_once", "_process_events",
    "_add_reader", "_remove_reader", "_add_writer", "_remove_writer", "_thread_id", "_stopping",
    "_clock_resolution", "_timer_cancelled_count", "_write_to_self", "_csock", "_ssock",
    "_current_handle", "_conn_lost", "_read_ready", "_write_ready", "_ssl_protocol", "_app_protocol",
    "_fut_waiter", "_must_cancel", "_coro", "_asyncio_future_blocking", "_num_cancels_requested",
    "_callbacks", "_source_traceback", "_log_traceback",
)
PRIVATE = re.compile(
    r"(?:\.|[\"'])(?:" + "|".join(_ASYNCIO_PRIVATE_NAMES) + r")\b"
    # any private attribute of a receiver named like a loop, transport, task or future
    r"|\b(?:loop|transport|task|future|fut|waiter|handle|timer)\._\w"
    # asyncio's modules that are not its public API (and its C accelerator)
    r"|\basyncio\.(?:base_events|selector_events|proactor_events|unix_events|windows_events|sslproto"
    r"|trsock|base_futures|base_tasks|base_subprocess|format_helpers|coroutines)\b"
    r"|\bimport\s+_asyncio\b|\bfrom\s+_asyncio\b"
)


def _sources() -> list[pathlib.Path]:
    return sorted(p for pattern in ("*.py", "*.pyx", "*.pxd", "*.pyi") for p in SOURCE.rglob(pattern))


def test_the_scan_catches_what_it_is_for():
    for line in (
        'ready = getattr(loop, "_ready", None)',
        "scheduled = loop._scheduled",
        "fd = transport._sock.fileno()",
        "isinstance(loop, asyncio.selector_events.BaseSelectorEventLoop)",
        "task._fut_waiter",
        "self.loop._selector.select(0)",
    ):
        assert PRIVATE.search(line), line
    for line in ("self._protocol = None", "await protocol.wait_for_message()", "loop.call_at(t, f)",
                 "task.uncancel()", "node.wait_ready()"):
        assert not PRIVATE.search(line), line


def test_no_private_asyncio_name_under_dqlite():
    sources = _sources()
    assert any(p.name == "aio.py" for p in sources)
    found = [
        f"{path.relative_to(SOURCE.parent)}:{number}: {line.strip()}"
        for path in sources
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if PRIVATE.search(line)
    ]
    assert not found, "private asyncio names:\n" + "\n".join(found)
