#!/usr/bin/env bash
# scripts/rerun-after-node-crash.sh PYTHON -m pytest ARGS...
#
# Runs the pytest command. If it fails, and a dqlite node crashed under every
# test that failed (the plugin's --dqlite-crash-failures: a signal nobody sent,
# or an exit nobody asked for; the run's "dqlite node crashes" summary and
# build/node-crashes/ have the evidence), runs just those tests once more, on
# nodes started afresh, and exits with that run's status. Any other failure is
# final. The reason: a server that crashes now and then (libdqlite 1.18.1 does,
# see docs/protocol-notes.md) must not fail the client's tests by chance, and
# must not go unnoticed either.
set -uo pipefail

cache=$(mktemp -d "${TMPDIR:-/tmp}/pytest-crash-rerun.XXXXXX")
trap 'rm -rf "$cache"' EXIT
# Its own cache folder: --lf reads this run's failures, never another stage's.
"$@" -o cache_dir="$cache" --dqlite-crash-failures="$cache/failed-under-crashes"
status=$?
if [ "$status" -eq 0 ] || [ ! -s "$cache/failed-under-crashes" ]; then
    exit "$status"
fi
echo "rerun-after-node-crash: a dqlite node crashed under each of the $(wc -l < "$cache/failed-under-crashes") failed test(s):" >&2
sed 's/^/    /' "$cache/failed-under-crashes" >&2
echo "rerun-after-node-crash: running them once more on fresh nodes" >&2
"$@" -o cache_dir="$cache" --lf
