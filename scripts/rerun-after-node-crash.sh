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

listed=$(mktemp "${TMPDIR:-/tmp}/failed-under-crashes.XXXXXX")
trap 'rm -f "$listed"' EXIT
"$@" --dqlite-crash-failures="$listed"
status=$?
if [ "$status" -eq 0 ] || [ ! -s "$listed" ]; then
    exit "$status"
fi
echo "rerun-after-node-crash: a dqlite node crashed under each of the $(wc -l < "$listed") failed test(s):" >&2
sed 's/^/    /' "$listed" >&2
echo "rerun-after-node-crash: running them once more on fresh nodes" >&2
"$@" --dqlite-run-only="$listed"
