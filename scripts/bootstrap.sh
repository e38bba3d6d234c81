#!/usr/bin/env bash
# Makes a fresh Debian machine ready for `make test` / `make bench`:
# the libdqlite packages the node host loads, a .venv, and the compiled build.
# Idempotent and quick when everything is already in place.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
EXTRAS=${EXTRAS:-test}
# Another virtualenv (e.g. .venv-sqlalchemy20) with extra requirement
# specifiers on top of the extras (e.g. "SQLAlchemy[asyncio]<2.1").
VENV=${VENV:-.venv}
PIP_EXTRA=${PIP_EXTRA:-}

# 1. System packages (only the test/bench node host needs them; the client does not).
scripts/apt-install.sh bootstrap libdqlite0 libdqlite-dev

# 2. The virtualenv and the package (editable, so the build is in-tree).
if [ ! -x "$VENV/bin/python" ]; then
    echo "bootstrap: creating $VENV with $($PYTHON --version)"
    "$PYTHON" -m venv "$VENV"
fi
stamp=$VENV/.installed-$EXTRAS
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ setup.py -nt "$stamp" ]; then
    echo "bootstrap: installing .[$EXTRAS] $PIP_EXTRA into $VENV"
    "$VENV/bin/python" -m pip install -q --upgrade pip setuptools "Cython>=3.0,<4" wheel
    # shellcheck disable=SC2086  # PIP_EXTRA holds separate specifiers
    "$VENV/bin/python" -m pip install -q --no-build-isolation -e ".[$EXTRAS]" $PIP_EXTRA
    touch "$stamp"
fi

# 3. Recompile the extensions when a .pyx/.pxd changed (cythonize skips what is up to date).
"$VENV/bin/python" setup.py -q build_ext --inplace >/dev/null
