#!/bin/sh
# Build and sign a release of tidings into OUTDIR/VERSION/, and point OUTDIR/latest
# (a relative symlink) at the newest version in OUTDIR.  The format is in
# appliance/release/__init__.py: tidings-linux-<arch>, install.sh (the public key
# embedded), the units of systemd/, manifest.json, SHA256SUMS, SHA256SUMS.sig.
#
#   TIDINGS_SIGNING_KEY=/path/key.pem sh packaging/release.sh [options] VERSION OUTDIR
#
#   --exe PATH           package an already built executable instead of building one
#                        (re-signing; a deliberately broken test release).  It must
#                        have been built for this release: `PATH --version` must say
#                        VERSION (checked), and it must embed this key's public key
#                        (TIDINGS_RELEASE_PUBKEY at build time; not checkable here).
#   --upgrades-from V    the oldest version the release upgrades from
#                        (also TIDINGS_UPGRADES_FROM; default MAJOR.0.0 of VERSION)
#   --replace            re-sign an existing OUTDIR/VERSION
#
# TIDINGS_SIGNING_KEY names an unencrypted Ed25519 private key (PKCS8 PEM), for
# example from `openssl genpkey -algorithm ed25519 -out key.pem`; it is never
# printed nor copied.  PYTHON (default .venv/bin/python) needs PyInstaller.
# The build happens in a temporary directory: the checkout's dist/ is untouched.
set -eu

ROOT=$(cd "$(dirname "$0")/.." && pwd)
PYTHON=${PYTHON:-$ROOT/.venv/bin/python}

die() {
    echo "release.sh: $*" >&2
    exit 1
}

usage() {
    echo "usage: TIDINGS_SIGNING_KEY=key.pem sh packaging/release.sh" \
        "[--exe PATH] [--upgrades-from V] [--replace] VERSION OUTDIR" >&2
    exit 2
}

main() {
    exe=""
    upgrades_from=${TIDINGS_UPGRADES_FROM:-}
    replace=""
    while [ $# -gt 0 ]; do
        case $1 in
            --exe) [ $# -ge 2 ] || usage; exe=$2; shift 2 ;;
            --upgrades-from) [ $# -ge 2 ] || usage; upgrades_from=$2; shift 2 ;;
            --replace) replace="--replace"; shift ;;
            -h|--help) usage ;;
            -*) echo "release.sh: unknown option $1" >&2; usage ;;
            *) break ;;
        esac
    done
    [ $# -eq 2 ] || usage
    version=$1
    outdir=$2
    [ -n "${TIDINGS_SIGNING_KEY:-}" ] ||
        die "TIDINGS_SIGNING_KEY is not set: name the Ed25519 signing key's PEM file"
    [ -x "$PYTHON" ] || die "no Python at $PYTHON (set PYTHON)"

    work=$(mktemp -d "${TMPDIR:-/tmp}/tidings-release.XXXXXX")
    trap 'rm -rf "$work"' EXIT
    trap 'exit 130' INT TERM

    # Checks the key and the versions before a minute of building.
    set -- --version "$version"
    [ -z "$upgrades_from" ] || set -- "$@" --upgrades-from "$upgrades_from"
    "$PYTHON" "$ROOT/packaging/release.py" pubkey "$@" >"$work/trusted.pem"

    if [ -z "$exe" ]; then
        build "$version" "$work"
        exe=$work/dist/tidings
    fi
    [ -f "$exe" ] || die "$exe: no such executable"
    reported=$("$exe" --version) || die "$exe --version failed"
    [ "$reported" = "tidings, version $version" ] ||
        die "$exe reports '$reported', not version $version: build it for this release"

    set -- --version "$version" --exe "$exe" --out "$outdir"
    [ -z "$upgrades_from" ] || set -- "$@" --upgrades-from "$upgrades_from"
    [ -z "$replace" ] || set -- "$@" "$replace"
    "$PYTHON" "$ROOT/packaging/release.py" write "$@"
}

# build VERSION WORKDIR: the one-file executable, with the version and the public
# key in $WORKDIR/trusted.pem embedded (packaging/tidings.spec), into WORKDIR/dist.
build() {
    command -v objdump >/dev/null 2>&1 ||
        die "objdump not found; install binutils (apt-get install -y binutils)"
    "$PYTHON" -c 'import PyInstaller' 2>/dev/null ||
        die "PyInstaller missing for $PYTHON; pip install -e '.[freeze]'"
    echo "release.sh: building tidings $1"
    # No --clean: it empties PyInstaller's cache for every build of this user;
    # the work directory is fresh anyway.  PYTHONHASHSEED: reproducible bytes
    # (packaging.md section 5.5).
    (cd "$ROOT" &&
        TIDINGS_RELEASE_VERSION=$1 TIDINGS_RELEASE_PUBKEY=$2/trusted.pem PYTHONHASHSEED=1 \
            "$PYTHON" -m PyInstaller --noconfirm --log-level WARN \
            --distpath "$2/dist" --workpath "$2/build" packaging/tidings.spec) ||
        die "the build failed"
}

main "$@"
