"""A short, bounded run of the codec fuzzers (fuzz/): no crash, no hang, bounded memory.

``make fuzz`` runs them for minutes; this runs both targets in parallel for
``DQLITE_FUZZ_SECONDS`` (default 20) seconds on the instrumented build when
the machine has one (``make fuzz-setup``, done by ``make test``), and on the
normal build otherwise, which it says with a warning.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SECONDS = int(os.environ.get("DQLITE_FUZZ_SECONDS", "20"))

pytestmark = [pytest.mark.server_independent, pytest.mark.timeout(SECONDS + 180)]


def test_fuzzers_run_clean():
    if importlib.util.find_spec("atheris") is None:
        pytest.skip("atheris is not installed: run `make fuzz-setup` (make test does)")
    proc = subprocess.run(
        [sys.executable, str(ROOT / "fuzz" / "run.py"), "--time", str(SECONDS), "--work", "tmp",
         "--rss-limit-mb", "2048", "--malloc-limit-mb", "512", "--timeout", "10"],
        cwd=ROOT, capture_output=True, text=True, timeout=SECONDS + 150)
    output = proc.stdout + proc.stderr
    print(output)
    if "UNINSTRUMENTED" in output:
        warnings.warn("the fuzzers ran on the UNINSTRUMENTED build (no native coverage): "
                      + output.splitlines()[0], stacklevel=1)
    assert proc.returncode == 0, f"the fuzzers found something or failed to run:\n{output}"
    summaries = [line for line in output.splitlines() if line.startswith("fuzz ") and ": ok," in line]
    assert len(summaries) == 2, output
