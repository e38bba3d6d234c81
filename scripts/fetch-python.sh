#!/usr/bin/env bash
# scripts/fetch-python.sh VERSION [FOLDER]: a CPython this Debian does not carry
# (3.14, 3.15: Debian sid's python3.X, -minimal, -stdlib, -dev, -venv and the
# libraries they need, glibc included), unpacked into a private folder
# (default .deps/python3.X) and made to run from there:
#
#   FOLDER/usr/bin/python3.X
#
# The interpreter's ELF interpreter and rpath are pointed at the folder's own
# loader and libraries (patchelf), so it runs on sid's glibc while the system
# keeps its own. It makes venvs (`-m venv --without-pip`; pip from outside with
# `pip --python VENV/bin/python`). Building C extensions for it needs
# CFLAGS="-idirafter FOLDER/usr/include" (Debian's pyconfig.h lives under the
# multiarch include folder); `make test` sets it.
#
# Packages come from the machine's own Debian source with the suite set to sid,
# through a throw-away apt configuration (scripts/fetch-debs.sh). Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."

VERSION=${1:?usage: $0 3.14|3.15 [FOLDER]}
case "$VERSION" in
    3.1[4-9]) ;;
    *) echo "fetch-python: $VERSION: only 3.14 and newer come from sid" >&2; exit 2 ;;
esac
DEST=${2:-.deps/python$VERSION}
MULTIARCH=$(dpkg-architecture -qDEB_HOST_MULTIARCH 2>/dev/null || echo x86_64-linux-gnu)
PY="$DEST/usr/bin/python$VERSION"
STAMP="$DEST/.patched"

if [ -f "$STAMP" ] && [ -x "$PY" ] && "$PY" -c "import ssl, ctypes, sqlite3, venv" 2>/dev/null; then
    exit 0
fi
scripts/apt-install.sh fetch-python patchelf
scripts/fetch-debs.sh --closure sid "$DEST" "python$VERSION" "python$VERSION-dev" "python$VERSION-venv"
abs=$(cd "$DEST" && pwd)
libdir="$abs/usr/lib/$MULTIARCH"
loader=$(ls "$libdir"/ld-linux*.so.* | head -n 1)
patchelf --set-interpreter "$loader" --force-rpath --set-rpath "$libdir" "$abs/usr/bin/python$VERSION"
"$PY" -c "import ssl, ctypes, sqlite3, venv" \
    || { echo "fetch-python: $PY does not run from $DEST" >&2; exit 1; }
touch "$STAMP"
echo "fetch-python: $("$PY" --version) in $DEST ($PY)"
