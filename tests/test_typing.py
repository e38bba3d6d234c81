"""The driver's type hints (py.typed, the .pyi stubs of the compiled modules) hold together."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.server_independent
def test_the_driver_type_checks():
    proc = subprocess.run([sys.executable, "-m", "mypy", "--no-error-summary", "dqlite"], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
