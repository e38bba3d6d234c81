#!/usr/bin/env bash
# Debian trixie's libdqlite 1.18.1 in .deps/dqlite-1.18 (or FOLDER): see scripts/fetch-dqlite.sh.
# Usage: scripts/fetch-dqlite-1.18.sh [FOLDER]
exec "$(dirname "$0")/fetch-dqlite.sh" 1.18 "$@"
