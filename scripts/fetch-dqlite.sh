#!/usr/bin/env bash
# scripts/fetch-dqlite.sh VERSION [FOLDER]: a newer libdqlite than the system's,
# with the runtime it needs (its own glibc, libuv, liblz4, SQLite), unpacked into
# a private folder to host test nodes with:
#
#   FOLDER/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2 \
#       --library-path FOLDER/usr/lib/x86_64-linux-gnu  PYTHON -m dqlite._node ...
#
# (see docs "Hosting real nodes"; dqlite.pytest_plugin does this for DQLITE_SERVER=VERSION).
#
#   1.18    Debian trixie's libdqlite0 1.18.1 (glibc 2.41), in .deps/dqlite-1.18
#   1.18.7  Debian sid's (forky's) libdqlite0 1.18.7 (glibc 2.43), in .deps/dqlite-1.18.7
#
# The packages come from the machine's own configured Debian source with the
# suite changed, through a throw-away apt configuration (scripts/fetch-debs.sh):
# the system's apt state, sources and installed packages are left untouched.
# Idempotent: does nothing when FOLDER already holds a working libdqlite.
set -euo pipefail
cd "$(dirname "$0")/.."

VERSION=${1:?usage: $0 1.18|1.18.7 [FOLDER]}
case "$VERSION" in
    1.18)   SUITE=trixie; FETCH=(libc6 libdqlite0 libuv1t64 liblz4-1 libsqlite3-0) ;;
    # sid: libdqlite0 and what apt resolves it to need there (glibc 2.43, libuv, lz4, SQLite).
    1.18.7) SUITE=sid; FETCH=(--closure libdqlite0) ;;
    *) echo "fetch-dqlite: unknown version '$VERSION' (1.18 or 1.18.7)" >&2; exit 2 ;;
esac
DEST=${2:-.deps/dqlite-$VERSION}
MULTIARCH=$(dpkg-architecture -qDEB_HOST_MULTIARCH 2>/dev/null || echo x86_64-linux-gnu)
LIBDIR="$DEST/usr/lib/$MULTIARCH"

if [ -f "$DEST/.complete" ] && [ -e "$LIBDIR/libdqlite.so.0" ] && [ -e "$LIBDIR/ld-linux-x86-64.so.2" ]; then
    exit 0
fi
if [ "${FETCH[0]}" = --closure ]; then
    scripts/fetch-debs.sh --closure "$SUITE" "$DEST" "${FETCH[@]:1}"
else
    scripts/fetch-debs.sh "$SUITE" "$DEST" "${FETCH[@]}"
fi
got=$(awk '$1 == "libdqlite0" { print $2 }' "$DEST/VERSIONS")
echo "fetch-dqlite: libdqlite0 $got ($SUITE) in $DEST"
case "$got" in
    "$VERSION"*) ;;
    # sid moves on: the run tests whatever sid carries, and says so.
    *) echo "fetch-dqlite: note: $SUITE now carries libdqlite0 $got, not $VERSION" >&2 ;;
esac
