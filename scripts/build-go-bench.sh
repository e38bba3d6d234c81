#!/usr/bin/env bash
# Builds build/bench-go-dqlite, the go-dqlite peer of the benchmark (bench/go/main.go),
# from Debian's Go toolchain and go-dqlite sources, installing them when missing.
# GOPATH mode against /usr/share/gocode: nothing is downloaded but Debian's packages.
# `make test` needs it (the bench smoke test runs the peer); `make bench` goes on
# without the go-dqlite rows if it fails, and says so.
set -euo pipefail
cd "$(dirname "$0")/.."

out=build/bench-go-dqlite
packages=(golang-go golang-github-canonical-go-dqlite-dev)

missing=()
for pkg in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "build-go-bench: installing ${missing[*]}"
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    export DEBIAN_FRONTEND=noninteractive
    if ! { $sudo apt-get install -y -q "${missing[@]}" >/dev/null 2>&1 ||
           { $sudo apt-get update -q >/dev/null && $sudo apt-get install -y -q "${missing[@]}" >/dev/null; }; }; then
        echo "build-go-bench: could not install ${missing[*]}" >&2
        exit 1
    fi
fi

version=$(dpkg-query -W -f='${Version}' golang-github-canonical-go-dqlite-dev)
if [ -x "$out" ] && [ "$out" -nt bench/go/main.go ] && [ "$(cat "$out.version" 2>/dev/null)" = "$version" ]; then
    exit 0
fi
mkdir -p build
GO111MODULE=off GOPATH=/usr/share/gocode GOCACHE="$PWD/build/go-cache" \
    go build -o "$out" -ldflags "-X main.goDqliteVersion=$version" bench/go/main.go
echo "$version" > "$out.version"
echo "build-go-bench: built $out (go-dqlite $version)"
