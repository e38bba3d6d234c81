"""The README's Python examples, for the tests that run them against the test cluster."""

from __future__ import annotations

import re
from collections.abc import Sequence
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
