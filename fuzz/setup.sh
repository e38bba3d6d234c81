#!/usr/bin/env bash
# Makes the machine ready to fuzz the compiled codec (make fuzz / the bounded run in make test):
# clang (Debian's package), atheris in .venv, the instrumented builds and the seed corpus.
# Idempotent and quick when everything is in place.  Needs .venv (make build) first.
#
# ATHERIS_FROM_SOURCE=1 builds atheris against the local clang's libFuzzer
# (a few minutes) instead of installing the prebuilt wheel; it is also done
# when the wheel brings no asan_with_fuzzer.so.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python

if ! command -v clang >/dev/null 2>&1; then
    scripts/apt-install.sh fuzz/setup clang ||
        echo "fuzz/setup: could not install clang: the fuzzers will run on the uninstrumented build"
fi

has_preload() {
    $PY -c 'import atheris, os, sys; sys.exit(not os.path.exists(os.path.join(atheris.path(), "asan_with_fuzzer.so")))' 2>/dev/null
}
if ! $PY -c 'import atheris' 2>/dev/null || { [ "${ATHERIS_FROM_SOURCE:-0}" = 1 ] && ! has_preload; }; then
    if [ "${ATHERIS_FROM_SOURCE:-0}" = 1 ]; then
        echo "fuzz/setup: building atheris from source against $(clang --version | head -1)"
        CLANG_BIN="$(command -v clang)" $PY -m pip install -q --no-binary atheris atheris
    else
        echo "fuzz/setup: installing atheris"
        $PY -m pip install -q "atheris>=2.3"
    fi
fi
if command -v clang >/dev/null 2>&1 && ! has_preload; then
    echo "fuzz/setup: atheris has no asan_with_fuzzer.so: rebuilding it from source with clang"
    CLANG_BIN="$(command -v clang)" $PY -m pip install -q --force-reinstall --no-deps --no-binary atheris atheris
fi

$PY fuzz/build_instrumented.py | sed 's/^/fuzz\/setup: instrumented build /' \
    || echo "fuzz/setup: no instrumented build: the fuzzers will run on the uninstrumented one"
$PY fuzz/make_corpus.py build/fuzz/corpus | sed 's/^/fuzz\/setup: /'
