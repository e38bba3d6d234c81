#!/usr/bin/env bash
# scripts/fetch-debs.sh [--closure] SUITE FOLDER PACKAGE...
#
# Downloads Debian packages of another suite (e.g. trixie, sid) and unpacks
# them with dpkg -x into a private FOLDER; the system's apt state, sources and
# installed packages are left untouched.
#
# The packages come from the machine's own configured Debian source (the URI
# that serves the suite this system runs) with the suite changed, through a
# throw-away apt configuration. With --closure, the packages named and
# everything they depend on (as apt resolves it on an empty system) are
# fetched; without it, exactly the packages named.
#
# FOLDER/VERSIONS lists "package version" of what was unpacked. Idempotent:
# does nothing when FOLDER/.complete records the same request.
set -euo pipefail

closure=0
if [ "${1:-}" = "--closure" ]; then closure=1; shift; fi
[ $# -ge 3 ] || { echo "usage: $0 [--closure] SUITE FOLDER PACKAGE..." >&2; exit 2; }
SUITE=$1
DEST=$2
shift 2
PACKAGES=("$@")
ARCH=$(dpkg --print-architecture)
STAMP="$DEST/.complete"
REQUEST="$SUITE closure=$closure ${PACKAGES[*]}"
who="fetch-debs($SUITE)"

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$REQUEST" ]; then
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
[ -n "$codename" ] || { echo "$who: no VERSION_CODENAME in /etc/os-release" >&2; exit 1; }
URI=$(find_debian_uri | head -n 1)
if [ -z "$URI" ]; then
    echo "$who: no Debian source for '$codename' in /etc/apt/sources.list(.d)" >&2
    exit 1
fi

# -- a temporary apt configuration pointing at that source, with SUITE ---------
WORK=$(mktemp -d "${TMPDIR:-/tmp}/fetch-debs.XXXXXX")
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
APT::Install-Recommends "false";
Acquire::Languages "none";
Acquire::IndexTargets::deb::Contents-deb::DefaultEnabled "false";
CONF
export APT_CONFIG="$WORK/apt.conf"

apt-get -q update >"$WORK/update.log" 2>&1 || { cat "$WORK/update.log" >&2; exit 1; }
wanted=("${PACKAGES[@]}")
if [ "$closure" = 1 ]; then
    # What an install on an empty system would unpack: the packages and their dependencies.
    apt-get -s -q install "${PACKAGES[@]}" >"$WORK/simulate.log" 2>&1 \
        || { cat "$WORK/simulate.log" >&2; exit 1; }
    mapfile -t wanted < <(awk '$1 == "Inst" { print $2 }' "$WORK/simulate.log" | sort -u)
fi
echo "$who: downloading ${#wanted[@]} packages (${PACKAGES[*]}) from $URI"
(cd "$WORK/debs" && apt-get -q download "${wanted[@]}" >"$WORK/download.log" 2>&1) \
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
echo "$REQUEST" > "$STAMP"
echo "$who: unpacked ${#wanted[@]} packages into $DEST"
