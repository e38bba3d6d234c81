#!/usr/bin/env bash
# scripts/test-installed.sh VENV PACKAGE [PYTEST ARGS...]
#
# Tests the driver as a user installs it: makes a fresh venv VENV with PYTHON
# (default python3), installs PACKAGE (a wheel or an sdist from dist/, with the
# `test` extra, or the requirements in DEPS), with no Cython in the venv and no
# checkout on its path, and runs pytest there on this checkout's tests
# (python -P: the working directory is not put on sys.path, so `import dqlite`
# finds the installed package; tests/test_installed.py checks that it did).
#
# An sdist is built by pip for that interpreter (in an isolated build
# environment, which is where Cython lives), as `pip install dqlite` would;
# PACKAGE_CPPFLAGS (e.g. "-Werror") are added to that build only, not to the
# dependencies'. With COMPLIANCE_ARGS set, SQLAlchemy's compliance suite
# (tests/compliance) runs afterwards in the same venv.
set -euo pipefail
cd "$(dirname "$0")/.."

[ $# -ge 2 ] || { echo "usage: $0 VENV PACKAGE [PYTEST ARGS...]" >&2; exit 2; }
VENV=$1
PACKAGE=$2
shift 2
PYTHON=${PYTHON:-python3}
# What the tests need besides the package: its `test` extra by default.
DEPS=${DEPS:-}
PIP=(.venv/bin/python -m pip --python "$VENV/bin/python" install -q --disable-pip-version-check)

[ -f "$PACKAGE" ] || { echo "test-installed: $PACKAGE not found (make dist builds it)" >&2; exit 1; }
rm -rf "$VENV"
"$PYTHON" -m venv --without-pip "$VENV"
echo "test-installed: $("$VENV/bin/python" --version) in $VENV, installing $(basename "$PACKAGE")"
quiet() { grep -v "^WARNING: Location" || true; }
# The package alone first, so that PACKAGE_CPPFLAGS apply to its build only.
CPPFLAGS="${CPPFLAGS:-} ${PACKAGE_CPPFLAGS:-}" "${PIP[@]}" --no-deps "$PACKAGE" 2>&1 | quiet
if [ -n "$DEPS" ]; then
    # shellcheck disable=SC2086  # DEPS holds separate specifiers
    "${PIP[@]}" "$PACKAGE" $DEPS 2>&1 | quiet
else
    "${PIP[@]}" "$PACKAGE[test]" 2>&1 | quiet
fi
"$VENV/bin/python" -P -c "import dqlite" || { echo "test-installed: the install failed" >&2; exit 1; }
if "$VENV/bin/python" -P -c "import Cython" 2>/dev/null; then
    echo "test-installed: Cython is in $VENV (a test dependency pulled it in)" >&2
    exit 1
fi
export DQLITE_EXPECT_INSTALLED=1
# The same for every Python the tests start (node hosts, `python -c` children): none
# may find the checkout's dqlite/ through its working directory.
export PYTHONSAFEPATH=1
status=0
scripts/rerun-after-node-crash.sh "$VENV/bin/python" -P -m pytest "$@" || status=$?
if [ -n "${COMPLIANCE_ARGS:-}" ]; then
    # shellcheck disable=SC2086  # separate arguments
    scripts/rerun-after-node-crash.sh "$VENV/bin/python" -P -m pytest tests/compliance $COMPLIANCE_ARGS || status=$?
fi
exit $status
