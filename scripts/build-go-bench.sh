#!/usr/bin/env bash
# Builds build/bench-go-dqlite, the go-dqlite peer of the benchmark (bench/go/main.go),
# from Debian's Go toolchain and go-dqlite sources, installing them when missing.
# GOPATH mode against /usr/share/gocode: nothing is downloaded but Debian's packages.
# `make test` needs it (the bench smoke test runs the peer); `make bench` goes on
# without the go-dqlite rows if it fails, and says so.
set -euo pipefail
cd "$(dirname "$0")/.."

out=build/bench-go-dqlite

scripts/apt-install.sh build-go-bench golang-go golang-github-canonical-go-dqlite-dev

version=$(dpkg-query -W -f='${Version}' golang-github-canonical-go-dqlite-dev)
if [ -x "$out" ] && [ "$out" -nt bench/go/main.go ] && [ "$(cat "$out.version" 2>/dev/null)" = "$version" ]; then
    exit 0
fi
mkdir -p build
GO111MODULE=off GOPATH=/usr/share/gocode GOCACHE="$PWD/build/go-cache" \
    go build -o "$out" -ldflags "-X main.goDqliteVersion=$version" bench/go/main.go
echo "$version" > "$out.version"
echo "build-go-bench: built $out (go-dqlite $version)"
