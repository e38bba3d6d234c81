#!/bin/sh
# Run test files several times in a row beside CPU-burning processes, to find
# outcomes that depend on timing (issue 15, part 3).  Prints one line per file.
#
#   scripts/timing-sweep.sh [FILE...]              (default: every tests/test_*.py and tests/faults/test_*.py)
#   RUNS=5 HOGS=2 DQLITE_SERVER=1.18 scripts/timing-sweep.sh tests/test_interrupts.py
#
# Each file runs RUNS times (pytest -x -q, stopping at its first failure); the
# output of a failing run is kept in $LOGDIR (default: .timing-sweep/).
# Exit status: 0 if every file passed every run.
set -u
cd "$(dirname "$0")/.."

RUNS=${RUNS:-5}
HOGS=${HOGS:-2}
PYTHON=${PYTHON:-.venv/bin/python}
LOGDIR=${LOGDIR:-.timing-sweep}
SERVER=${DQLITE_SERVER:-system}
mkdir -p "$LOGDIR"

hog_pids=""
stop_hogs() {
    for pid in $hog_pids; do kill "$pid" 2>/dev/null; done
    hog_pids=""
}
trap stop_hogs EXIT
trap 'stop_hogs; exit 130' INT TERM
i=0
while [ "$i" -lt "$HOGS" ]; do
    sh -c 'while :; do :; done' &
    hog_pids="$hog_pids $!"
    i=$((i + 1))
done

if [ "$#" -eq 0 ]; then
    set -- tests/test_*.py tests/faults/test_*.py
fi

echo "timing sweep: $RUNS runs per file, $HOGS CPU hogs (pids$hog_pids), server $SERVER"
status=0
for file in "$@"; do
    passed=0
    started=$(date +%s)
    log="$LOGDIR/$(echo "$file" | tr '/' '_')-$SERVER.log"
    run=1
    while [ "$run" -le "$RUNS" ]; do
        if "$PYTHON" -m pytest -x -q -p no:cacheprovider "$file" > "$log.run" 2>&1; then
            passed=$((passed + 1))
        else
            mv "$log.run" "$log"
            break
        fi
        run=$((run + 1))
    done
    rm -f "$log.run"
    took=$(( $(date +%s) - started ))
    if [ "$passed" -eq "$RUNS" ]; then
        echo "PASS $passed/$RUNS  ${took}s  $file"
    else
        echo "FAIL $passed/$RUNS  ${took}s  $file  (run $run failed; output in $log)"
        status=1
    fi
done
exit $status
