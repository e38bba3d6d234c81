"""The README's Python examples, for the tests that run them against the test cluster."""

from __future__ import annotations

import asyncio
import re
import textwrap
from collections.abc import Sequence
from typing import Any
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"

# The example cluster's nodes: node N at 10.0.0.N:9001 (node 1 also as 127.0.0.1:9001).
_NODE = re.compile(r"10\.0\.0\.(\d+):9001|127\.0\.0\.1:9001")
_URL_DATABASE = re.compile(r'(dqlite(?:\+aio)?://[^/"]*)/app\b')


def python_block(marker: str) -> str:
    """The README's one Python code block that contains ``marker``."""
    (block,) = [b for b in re.findall(r"```python\n(.*?)```", README.read_text(), re.S) if marker in b]
    return block


def localised(code: str, addresses: Sequence[str], database: str) -> str:
    """``code`` pointed at ``addresses`` (node N's is ``addresses[N - 1]``)
    and ``database`` instead of the example cluster and its database ``app``
    (in calls and in URLs)."""
    code = _NODE.sub(lambda m: addresses[int(m.group(1) or 1) - 1], code)
    code = _URL_DATABASE.sub(rf"\1/{database}", code)
    return code.replace('"app"', repr(database))


def run(code: str, scope: dict | None = None) -> dict:
    """Run ``code`` (a README block, localised) as a module; the names it left behind."""
    scope = {} if scope is None else scope
    exec(compile(code, "README.md", "exec"), scope)
    return scope


def run_awaiting(code: str, result: str) -> Any:
    """Run ``code``, a block that awaits at its top level, as the body of a
    coroutine on a new event loop; the value of its name ``result``."""
    scope = run("async def main():\n" + textwrap.indent(code, "    ") + f"    return {result}\n")
    return asyncio.run(scope["main"]())
