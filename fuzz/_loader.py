"""Load an instrumented build of ``dqlite._protocol`` ahead of the normal one.

``install(path)`` puts a finder first on ``sys.meta_path`` that answers the
import of ``dqlite._protocol`` (and only that) with the extension at
``path``; the rest of the package (exceptions, ...) is the source tree's.
It must run before anything imports ``dqlite``.

Which build is used comes from ``DQLITE_FUZZ_EXT``: a path to a .so, or empty
for the normal in-place build.  ``describe()`` tells which one was loaded.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys

MODULE = "dqlite._protocol"


class _Finder(importlib.abc.MetaPathFinder):
    def __init__(self, path: str) -> None:
        self.path = path

    def find_spec(self, fullname, path=None, target=None):
        if fullname != MODULE:
            return None
        loader = importlib.machinery.ExtensionFileLoader(fullname, self.path)
        return importlib.util.spec_from_file_location(fullname, self.path, loader=loader)


def install(path: str | None = None) -> str | None:
    """Make ``import dqlite._protocol`` load ``path`` (default: $DQLITE_FUZZ_EXT)."""
    if path is None:
        path = os.environ.get("DQLITE_FUZZ_EXT") or None
    if path is None:
        return None
    if MODULE in sys.modules:
        raise RuntimeError(f"{MODULE} was imported before the instrumented build could be installed")
    if not os.path.exists(path):
        raise FileNotFoundError(f"instrumented build {path} does not exist (run fuzz/build_instrumented.py)")
    sys.meta_path.insert(0, _Finder(os.path.abspath(path)))
    return path


def describe() -> str:
    module = sys.modules.get(MODULE)
    where = getattr(module, "__file__", "?") if module else "not loaded"
    expected = os.environ.get("DQLITE_FUZZ_EXT")
    if expected and os.path.abspath(expected) != os.path.abspath(where):
        raise RuntimeError(f"{MODULE} came from {where}, not from the instrumented {expected}")
    kind = "instrumented" if expected else "UNINSTRUMENTED (no native coverage)"
    return f"{MODULE}: {kind} build {where}"
