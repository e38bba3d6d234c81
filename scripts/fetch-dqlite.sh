#!/usr/bin/env bash
# Unpacks Debian trixie's libdqlite 1.18.1 and the runtime it needs (glibc 2.41,
# libuv, liblz4, SQLite 3.46) into a private folder, to host test nodes with:
#
#   FOLDER/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2 \
#       --library-path FOLDER/usr/lib/x86_64-linux-gnu  PYTHON -m dqlite._node ...
#
# (see docs "Hosting real nodes"; dqlite.pytest_plugin does this for DQLITE_SERVER=1.18).
#
# The packages come from the machine's own configured Debian source with the
# suite set to trixie, through a throw-away apt configuration: the system's apt
# state, sources and installed packages are left untouched.
#
# Usage: scripts/fetch-dqlite-1.18.sh [FOLDER]   (default .deps/dqlite-1.18)
# Idempotent: does nothing when FOLDER already holds a working libdqlite.
set -euo pipefail
cd "$(dirname "$0")/.."

SUITE=trixie
PACKAGES=(libc6 libdqlite0 libuv1t64 liblz4-1 libsqlite3-0)
DEST=${1:-.deps/dqlite-1.18}
ARCH=$(dpkg --print-architecture)
MULTIARCH=$(dpkg-architecture -qDEB_HOST_MULTIARCH 2>/dev/null || echo x86_64-linux-gnu)
LIBDIR="$DEST/usr/lib/$MULTIARCH"
STAMP="$DEST/.complete"

if [ -f "$STAMP" ] && [ -e "$LIBDIR/libdqlite.so.0" ] && [ -e "$LIBDIR/ld-linux-x86-64.so.2" ]; then
    exit 0
fi

# -- the machine's Debian source (a URI serving the suite this system runs) -----
codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
find_debian_uri() {
    local f
    # deb822 files: stanzas of "Key: value" lines separated by blank lines.
    for f in /etc/apt/sources.list.d/*.sources; do
        [ -r "$f" ] || continue
        awk -v want="$codename" '
            function flush() {
                if (types ~ /(^| )deb( |$)/ && uris != "" && enabled != "no") {
                    n = split(suites, s, " ")
                    for (i = 1; i <= n; i++) if (s[i] == want) { split(uris, u, " "); print u[1]; found = 1; exit }
                }
                types = uris = suites = enabled = ""
            }
            /^[ \t]*#/ { next }
            /^[ \t]*$/ { flush(); next }
            { key = tolower($1); sub(/:$/, "", key); $1 = ""; sub(/^ +/, ""); val = $0 }
            key == "types"   { types = val }
            key == "uris"    { uris = val }
            key == "suites"  { suites = val }
            key == "enabled" { enabled = tolower(val) }
            END { if (!found) flush() }
        ' "$f"
    done
    # One-line format: deb [options] URI SUITE COMPONENTS...
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [ -r "$f" ] || continue
        awk -v want="$codename" '
            $1 == "deb" {
                i = 2
                if ($i ~ /^\[/) { while (i <= NF && $i !~ /\]$/) i++; i++ }
                if ($(i + 1) == want) print $i
            }
        ' "$f"
    done
}
[ -n "$codename" ] || { echo "fetch-dqlite-1.18: no VERSION_CODENAME in /etc/os-release" >&2; exit 1; }
URI=$(find_debian_uri | head -n 1)
if [ -z "$URI" ]; then
    echo "fetch-dqlite-1.18: no Debian source for '$codename' in /etc/apt/sources.list(.d)" >&2
    exit 1
fi

# -- a temporary apt configuration pointing at that source, suite trixie --------
WORK=$(mktemp -d "${TMPDIR:-/tmp}/dqlite-1.18-fetch.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$WORK/lists/partial" "$WORK/cache/archives/partial" "$WORK/parts" "$WORK/prefs" "$WORK/debs"
: > "$WORK/status"
keyring=/usr/share/keyrings/debian-archive-keyring.gpg
cat > "$WORK/sources.list" <<SRC
deb [arch=$ARCH signed-by=$keyring] $URI $SUITE main
SRC
cat > "$WORK/apt.conf" <<CONF
Dir::Etc::SourceList "$WORK/sources.list";
Dir::Etc::SourceParts "$WORK/parts";
Dir::Etc::Preferences "$WORK/prefs/none";
Dir::Etc::PreferencesParts "$WORK/prefs";
Dir::State::Lists "$WORK/lists";
Dir::State::status "$WORK/status";
Dir::Cache "$WORK/cache";
APT::Architecture "$ARCH";
APT::Architectures { "$ARCH"; };
APT::Sandbox::User "root";
Acquire::Languages "none";
Acquire::IndexTargets::deb::Contents-deb::DefaultEnabled "false";
CONF
export APT_CONFIG="$WORK/apt.conf"

echo "fetch-dqlite-1.18: downloading ${PACKAGES[*]} ($SUITE) from $URI"
apt-get -q update >"$WORK/update.log" 2>&1 || { cat "$WORK/update.log" >&2; exit 1; }
(cd "$WORK/debs" && apt-get -q download "${PACKAGES[@]}" >"$WORK/download.log" 2>&1) \
    || { cat "$WORK/download.log" >&2; exit 1; }

# -- unpack into the private folder ------------------------------------------------
rm -rf "$DEST.tmp"
mkdir -p "$DEST.tmp"
for deb in "$WORK"/debs/*.deb; do
    dpkg -x "$deb" "$DEST.tmp"
    dpkg-deb -W --showformat="\${Package} \${Version}\n" "$deb" >> "$DEST.tmp/VERSIONS"
done
rm -rf "$DEST"
mv "$DEST.tmp" "$DEST"
touch "$STAMP"
echo "fetch-dqlite-1.18: unpacked into $DEST:"
sed 's/^/    /' "$DEST/VERSIONS"
