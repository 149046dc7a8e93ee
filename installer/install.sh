#!/bin/sh
# Install tidings, the self-hosted messaging appliance, from a signed release.
#
#   curl -fsSL https://releases.tidings.dev/latest/install.sh | sh
#   curl -fsSL https://releases.tidings.dev/latest/install.sh | sh -s -- --dry-run
#
# Options:
#   --dry-run     download and verify, then print every step it would take; change nothing
#   --uninstall   stop and disable the units, remove them and the executable; keep
#                 /etc/tidings, /var/lib/tidings and the tidings user
#   --purge       --uninstall, and remove those too (every message, key and setting)
#
# Environment (the script never prompts):
#   TIDINGS_VERSION      the release to install: MAJOR.MINOR.PATCH or "latest"
#                        (default: the release this script came with)
#   TIDINGS_BASE_URL     where the releases are (default https://releases.tidings.dev);
#                        https only, except http://127.0.0.1 and http://localhost
#                        (tests, a mirror on this machine)
#   TIDINGS_INSTALL_DIR  the executable's directory (default /usr/local/bin); the
#                        units' ExecStart= is rewritten to match
#   TIDINGS_NO_START=1   never restart the service (an install never starts it:
#                        `tidings setup` does, once there is a configuration)
# Test only (stand-ins for what the host reports; never set them on a real host):
#   TIDINGS_TEST_UNAME_M, TIDINGS_TEST_OS_RELEASE, TIDINGS_TEST_GLIBC stand in for
#   `uname -m`, the os-release file and `getconf GNU_LIBC_VERSION`.
#
# Before anything is installed, SHA256SUMS must carry an Ed25519 signature by the
# key below (openssl pkeyutl, OpenSSL >= 3.0) and every file used must match its
# line in it.  Formats: appliance/release/__init__.py.
#
# Error codes (each message says which):
#   E01 usage               E07 a needed program is missing  E13 malformed release
#   E02 architecture        E08 TIDINGS_BASE_URL             E14 checksum mismatch
#   E03 operating system    E09 TIDINGS_VERSION              E15 unreleased installer
#   E04 glibc too old       E10 TIDINGS_INSTALL_DIR          E16 the executable does not run
#   E05 no systemd          E11 download failed              E17 installing failed
#   E06 not root            E12 bad signature                Next unused: E18
#
# Everything runs from `main "$@"` on the last line, so that a truncated download
# runs nothing.
set -eu

# The installed layout; appliance/system/layout.py holds the same values
# (tests/installer checks that they agree).
BIN_NAME=tidings
DEFAULT_INSTALL_DIR=/usr/local/bin
PREVIOUS_SUFFIX=.prev
CONFIG_DIR=/etc/tidings
CONFIG_FILE=/etc/tidings/tidings.toml
DATA_DIR=/var/lib/tidings
SERVICE_USER=tidings
UNIT_DIR=/etc/systemd/system
SERVICE_UNIT=tidings.service

DEFAULT_BASE_URL=https://releases.tidings.dev
MIN_GLIBC_MAJOR=2
MIN_GLIBC_MINOR=36
# Upper bounds on what is downloaded (curl --max-filesize).
MAX_SMALL_BYTES=65536
MAX_EXE_BYTES=536870912
MAX_SUM_LINES=64
SUPPORTED="Debian 12 or newer, Ubuntu 24.04 or newer; amd64 or arm64; systemd"

# Filled in by packaging/release.sh (appliance/release/publish.py).
RELEASE_VERSION='@TIDINGS_RELEASE_VERSION@'
PUBLIC_KEY='@TIDINGS_PUBLIC_KEY@'

info() {
    printf '[tidings] %s\n' "$*"
}

die() {
    code=$1
    shift
    printf '[tidings] error %s: %s\n' "$code" "$*" >&2
    exit 1
}

# run CMD...: a step that changes the system; printed, and only printed in a dry run.
run() {
    if [ "$DRY_RUN" = 1 ]; then
        info "[dry-run] would run: $(quoted "$@")"
        return 0
    fi
    info "+ $(quoted "$@")"
    $SUDO "$@" || die E17 "this step failed: $(quoted "$@")"
}

# try_run CMD...: like run, but a failure is only reported (the caller goes on).
try_run() {
    if [ "$DRY_RUN" = 1 ]; then
        info "[dry-run] would run: $(quoted "$@")"
        return 0
    fi
    info "+ $(quoted "$@")"
    $SUDO "$@"
}

# quoted ARG...: the words as a shell would need them typed.
quoted() {
    line=""
    for word in "$@"; do
        case $word in
            ""|*[!A-Za-z0-9_./:=@%+,-]*) word="'$word'" ;;
        esac
        line="$line $word"
    done
    printf '%s' "${line# }"
}

usage() {
    echo "usage: install.sh [--dry-run] [--uninstall | --purge]" >&2
    echo "  see the comment at the top of this script for TIDINGS_* settings" >&2
    exit "${1:-1}"
}

parse_args() {
    DRY_RUN=0
    MODE=install
    while [ $# -gt 0 ]; do
        case $1 in
            --dry-run) DRY_RUN=1 ;;
            --uninstall) MODE=uninstall ;;
            --purge) MODE=purge ;;
            -h|--help) usage 0 ;;
            *) printf '[tidings] error E01: unknown argument: %s\n' "$1" >&2; usage ;;
        esac
        shift
    done
}

# --- the host -------------------------------------------------------------------

detect_arch() {
    machine=${TIDINGS_TEST_UNAME_M:-$(uname -m)}
    case $machine in
        x86_64|amd64) ARCH=amd64 ;;
        aarch64|arm64) ARCH=arm64 ;;
        *) die E02 "unsupported architecture $machine: tidings runs on amd64 (x86_64)" \
            "and arm64 (aarch64)" ;;
    esac
}

# os_field NAME FILE: a field of an os-release file, unquoted (the file is parsed,
# never sourced).
os_field() {
    sed -n "s/^$1=//p" "$2" | head -n 1 | tr -d "\"'"
}

check_os() {
    os_release=${TIDINGS_TEST_OS_RELEASE:-/etc/os-release}
    [ -r "$os_release" ] || os_release=/usr/lib/os-release
    [ -r "$os_release" ] || die E03 "cannot read /etc/os-release; supported: $SUPPORTED"
    os_id=$(os_field ID "$os_release")
    os_version=$(os_field VERSION_ID "$os_release")
    os_name=$(os_field PRETTY_NAME "$os_release")
    supported=0
    case $os_id:$os_version in
        debian:[0-9]|debian:[0-9][0-9])
            [ "$os_version" -ge 12 ] && supported=1 ;;
        ubuntu:[0-9][0-9].[0-9][0-9])
            [ "$(echo "$os_version" | tr -d .)" -ge 2404 ] && supported=1 ;;
    esac
    [ "$supported" = 1 ] ||
        die E03 "unsupported operating system: ${os_name:-$os_id $os_version}; supported: $SUPPORTED"
}

check_glibc() {
    glibc=${TIDINGS_TEST_GLIBC:-$(getconf GNU_LIBC_VERSION 2>/dev/null || true)}
    glibc=${glibc#glibc }
    major=${glibc%%.*}
    minor=${glibc#*.}
    minor=${minor%%.*}
    case $major:$minor in
        [0-9]:[0-9]|[0-9]:[0-9][0-9]|[0-9]:[0-9][0-9][0-9]) ;;
        *) die E04 "cannot tell this system's glibc version; tidings needs glibc" \
            "$MIN_GLIBC_MAJOR.$MIN_GLIBC_MINOR or newer" ;;
    esac
    if [ "$major" -lt "$MIN_GLIBC_MAJOR" ] ||
        { [ "$major" -eq "$MIN_GLIBC_MAJOR" ] && [ "$minor" -lt "$MIN_GLIBC_MINOR" ]; }; then
        die E04 "glibc $glibc is too old: tidings needs $MIN_GLIBC_MAJOR.$MIN_GLIBC_MINOR" \
            "or newer (supported: $SUPPORTED)"
    fi
}

check_systemd() {
    if ! command -v systemctl >/dev/null 2>&1 || [ ! -d /run/systemd/system ]; then
        die E05 "systemd is not running here: tidings runs as a systemd service"
    fi
}

# SUDO: empty as root (or in a dry run), else sudo or doas.  The script cannot
# re-execute itself when it came through a pipe, so each step is prefixed.
become_root() {
    SUDO=""
    if [ "$(id -u)" = 0 ]; then
        return 0
    fi
    if [ "$DRY_RUN" = 1 ]; then
        info "not root: showing what root would do"
    elif command -v sudo >/dev/null 2>&1; then
        SUDO=sudo
    elif command -v doas >/dev/null 2>&1; then
        SUDO=doas
    else
        die E06 "run as root: curl -fsSL <url>/install.sh | sudo sh"
    fi
}

need() {
    for program in "$@"; do
        command -v "$program" >/dev/null 2>&1 ||
            die E07 "$program is missing: apt-get install -y $(package_of "$program")"
    done
}

package_of() {
    case $1 in
        sha256sum|stat|install|mktemp) echo coreutils ;;
        cmp) echo diffutils ;;
        useradd|groupadd) echo passwd ;;
        getent) echo libc-bin ;;
        *) echo "$1" ;;
    esac
}

# --- settings -------------------------------------------------------------------

read_settings() {
    BASE_URL=${TIDINGS_BASE_URL:-$DEFAULT_BASE_URL}
    BASE_URL=${BASE_URL%/}
    case $BASE_URL in
        https://*) CURL_PROTO="=https" ;;
        http://127.0.0.1|http://127.0.0.1[:/]*|http://localhost|http://localhost[:/]*)
            CURL_PROTO="=http" ;;
        *) die E08 "TIDINGS_BASE_URL must be an https:// URL (http:// only for" \
            "127.0.0.1 or localhost): $BASE_URL" ;;
    esac
    case $BASE_URL in
        *[!A-Za-z0-9:/._~%-]*) die E08 "TIDINGS_BASE_URL holds unexpected characters" ;;
    esac

    case $RELEASE_VERSION in
        @*) RELEASE_VERSION=latest ;;
    esac
    VERSION=${TIDINGS_VERSION:-$RELEASE_VERSION}
    if [ "$VERSION" != latest ] && ! is_version "$VERSION"; then
        die E09 "TIDINGS_VERSION must be MAJOR.MINOR.PATCH or latest: $VERSION"
    fi

    INSTALL_DIR=${TIDINGS_INSTALL_DIR:-$DEFAULT_INSTALL_DIR}
    [ "$INSTALL_DIR" = / ] || INSTALL_DIR=${INSTALL_DIR%/}
    case $INSTALL_DIR in
        /*[!A-Za-z0-9/._-]*|/) die E10 "TIDINGS_INSTALL_DIR: letters, digits and / . _ - only: $INSTALL_DIR" ;;
        /*) ;;
        *) die E10 "TIDINGS_INSTALL_DIR must be an absolute path: $INSTALL_DIR" ;;
    esac
    BIN=$INSTALL_DIR/$BIN_NAME
    NO_START=${TIDINGS_NO_START:-0}
}

is_version() {
    echo "$1" | grep -Eqx '(0|[1-9][0-9]{0,5})\.(0|[1-9][0-9]{0,5})\.(0|[1-9][0-9]{0,5})'
}

# --- download and verify ------------------------------------------------------------

# fetch NAME MAXBYTES: BASE_URL/VERSION/NAME into the download directory.
fetch() {
    if [ "$CURL_PROTO" = "=https" ]; then
        set -- "$1" "$2" --tlsv1.2
    fi
    name=$1
    max=$2
    shift 2
    curl -fsSL --proto "$CURL_PROTO" --proto-redir "$CURL_PROTO" "$@" --retry 2 \
        --max-filesize "$max" -o "$DL/$name" "$BASE_URL/$VERSION/$name" ||
        die E11 "cannot download $BASE_URL/$VERSION/$name"
    size=$(wc -c <"$DL/$name")
    [ "$size" -le "$max" ] || die E11 "$name is larger than $max bytes"
}

# sum_of NAME: its sha256 in the verified SHA256SUMS (empty if absent).
sum_of() {
    awk -v name="$1" '$2 == name { print $1 }' "$DL/SHA256SUMS"
}

download_and_verify() {
    DL=$(mktemp -d "${TMPDIR:-/tmp}/tidings-install.XXXXXX")
    info "downloading tidings $VERSION from $BASE_URL"
    fetch SHA256SUMS "$MAX_SMALL_BYTES"
    fetch SHA256SUMS.sig "$MAX_SMALL_BYTES"

    printf '%s\n' "$PUBLIC_KEY" >"$DL/release-key.pem"
    if ! openssl pkeyutl -verify -pubin -inkey "$DL/release-key.pem" -rawin \
        -in "$DL/SHA256SUMS" -sigfile "$DL/SHA256SUMS.sig" >/dev/null 2>&1; then
        die E12 "SHA256SUMS is not signed by the tidings release key: the download" \
            "was tampered with or is not a tidings release; nothing was installed"
    fi
    if grep -Evqx '[0-9a-f]{64}  [A-Za-z0-9_-][A-Za-z0-9._-]{0,127}' "$DL/SHA256SUMS" ||
        [ "$(wc -l <"$DL/SHA256SUMS")" -gt "$MAX_SUM_LINES" ]; then
        die E13 "SHA256SUMS is malformed; nothing was installed"
    fi
    info "signature of SHA256SUMS verified"

    EXE=tidings-linux-$ARCH
    [ -n "$(sum_of "$EXE")" ] || die E13 "release $VERSION has no executable for $ARCH"
    [ -n "$(sum_of manifest.json)" ] || die E13 "release $VERSION has no manifest.json"
    UNITS=$(awk '$2 ~ /^tidings[a-z0-9-]*\.(service|socket)$/ { print $2 }' "$DL/SHA256SUMS")
    [ -n "$UNITS" ] || die E13 "release $VERSION has no systemd units"

    wanted="manifest.json $UNITS"
    fetch manifest.json "$MAX_SMALL_BYTES"
    for unit in $UNITS; do
        fetch "$unit" "$MAX_SMALL_BYTES"
    done
    EXE_NEEDED=1
    if [ -f "$BIN" ] && [ "$(sha256sum <"$BIN" | cut -d ' ' -f 1)" = "$(sum_of "$EXE")" ]; then
        EXE_NEEDED=0
    else
        fetch "$EXE" "$MAX_EXE_BYTES"
        wanted="$wanted $EXE"
    fi
    : >"$DL/check.sums"
    for name in $wanted; do
        awk -v name="$name" '$2 == name' "$DL/SHA256SUMS" >>"$DL/check.sums"
    done
    if ! failed=$(cd "$DL" && sha256sum -c --strict --quiet check.sums 2>&1); then
        die E14 "checksum mismatch: $(echo "$failed" | grep FAILED | tr '\n' ' ')- the" \
            "download was tampered with or damaged; nothing was installed"
    fi
    info "checksums verified"

    RELEASED=$(sed -n 's/^ *"version": "\([0-9.]*\)",\{0,1\}$/\1/p' "$DL/manifest.json")
    is_version "$RELEASED" || die E13 "manifest.json names no version"
    if [ "$VERSION" != latest ] && [ "$RELEASED" != "$VERSION" ]; then
        die E13 "asked for $VERSION, the signed manifest says $RELEASED; nothing was installed"
    fi
    if [ "$EXE_NEEDED" = 1 ]; then
        chmod 0755 "$DL/$EXE"
        said=$("$DL/$EXE" --version 2>&1) ||
            die E16 "the downloaded executable does not run here ($said); if" \
                "${TMPDIR:-/tmp} is mounted noexec, run with TMPDIR set to another directory"
        [ "$said" = "tidings, version $RELEASED" ] ||
            die E16 "the downloaded executable reports '$said', not $RELEASED"
    fi
}

# --- install --------------------------------------------------------------------

ensure_user() {
    if ! getent group "$SERVICE_USER" >/dev/null; then
        run groupadd --system "$SERVICE_USER"
        CHANGED=1
    fi
    if ! getent passwd "$SERVICE_USER" >/dev/null; then
        nologin=/usr/sbin/nologin
        [ -x "$nologin" ] || nologin=/bin/false
        run useradd --system --gid "$SERVICE_USER" --home-dir "$DATA_DIR" --no-create-home \
            --shell "$nologin" --comment "Tidings messaging server" "$SERVICE_USER"
        CHANGED=1
    fi
}

# ensure_dir PATH MODE OWNER GROUP
ensure_dir() {
    [ ! -L "$1" ] || die E17 "$1 is a symlink; tidings wants a directory there"
    if [ -d "$1" ]; then
        [ "$(stat -c '%a %U %G' "$1")" = "$2 $3 $4" ] && return 0
        run chown "$3:$4" "$1"
        run chmod "$2" "$1"
    else
        run install -d -m "$2" -o "$3" -g "$4" "$1"
    fi
    CHANGED=1
}

install_executable() {
    [ "$EXE_NEEDED" = 1 ] || return 0
    [ -d "$INSTALL_DIR" ] || run install -d -m 755 "$INSTALL_DIR"
    # A temporary name in the same directory, then rename(2): never half a file.
    STAGED=$INSTALL_DIR/.$BIN_NAME.new
    run install -m 755 -o root -g root "$DL/$EXE" "$STAGED"
    run mv -f "$STAGED" "$BIN"
    STAGED=""
    EXE_CHANGED=1
    CHANGED=1
}

install_units() {
    for unit in $UNITS; do
        if [ "$INSTALL_DIR" != "$DEFAULT_INSTALL_DIR" ]; then
            sed "s#$DEFAULT_INSTALL_DIR/$BIN_NAME#$BIN#g" "$DL/$unit" >"$DL/$unit.edited"
            mv -f "$DL/$unit.edited" "$DL/$unit"
        fi
        if [ -f "$UNIT_DIR/$unit" ] && cmp -s "$DL/$unit" "$UNIT_DIR/$unit"; then
            continue
        fi
        run install -m 644 -o root -g root "$DL/$unit" "$UNIT_DIR/.$unit.new"
        run mv -f "$UNIT_DIR/.$unit.new" "$UNIT_DIR/$unit"
        UNITS_CHANGED=1
        CHANGED=1
    done
    if [ "$UNITS_CHANGED" = 1 ]; then
        run systemctl daemon-reload
    fi
}

install_release() {
    need curl openssl sha256sum awk sed grep cmp stat install mktemp getent
    case $PUBLIC_KEY in
        *"BEGIN PUBLIC KEY"*) ;;
        *) die E15 "this is the installer's template from the source tree, without the" \
            "release key: use the install.sh of a release" ;;
    esac
    WAS_ACTIVE=0
    if systemctl is-active --quiet "$SERVICE_UNIT" 2>/dev/null; then
        WAS_ACTIVE=1
    fi
    download_and_verify

    CHANGED=0
    EXE_CHANGED=0
    UNITS_CHANGED=0
    ensure_user
    ensure_dir "$CONFIG_DIR" 750 root "$SERVICE_USER"
    ensure_dir "$DATA_DIR" 750 "$SERVICE_USER" "$SERVICE_USER"
    install_executable
    install_units

    if [ "$CHANGED" = 0 ]; then
        info "tidings $RELEASED is already installed, nothing changed"
        return 0
    fi
    if [ "$WAS_ACTIVE" = 1 ] && [ $((EXE_CHANGED + UNITS_CHANGED)) -gt 0 ]; then
        if [ "$NO_START" = 1 ]; then
            info "TIDINGS_NO_START=1: not restarting $SERVICE_UNIT (it runs the old version)"
        else
            run systemctl restart "$SERVICE_UNIT"
        fi
    fi
    if [ "$DRY_RUN" = 1 ]; then
        info "dry run: nothing was changed"
        return 0
    fi
    info "tidings $RELEASED installed: $BIN"
    if $SUDO test -e "$CONFIG_FILE"; then
        info "configured already ($CONFIG_FILE); see: sudo systemctl status $SERVICE_UNIT"
    elif [ "$INSTALL_DIR" = "$DEFAULT_INSTALL_DIR" ]; then
        info "next step: sudo $BIN_NAME setup"
    else
        info "next step: sudo $BIN setup"
    fi
}

# --- uninstall ------------------------------------------------------------------

installed_units() {
    for path in "$UNIT_DIR"/tidings*.service "$UNIT_DIR"/tidings*.socket; do
        [ -f "$path" ] && echo "${path##*/}"
    done
    return 0
}

uninstall() {
    CHANGED=0
    units=$(installed_units)
    if [ -n "$units" ]; then
        # shellcheck disable=SC2086 # one word per unit name
        try_run systemctl disable --now $units ||
            info "warning: systemctl could not stop every unit; removing them anyway"
        for unit in $units; do
            run rm -f "$UNIT_DIR/$unit"
        done
        run systemctl daemon-reload
        CHANGED=1
    fi
    for path in "$BIN" "$BIN$PREVIOUS_SUFFIX" "$INSTALL_DIR/.$BIN_NAME.new"; do
        if [ -e "$path" ]; then
            run rm -f "$path"
            CHANGED=1
        fi
    done
}

purge() {
    for path in "$CONFIG_DIR" "$DATA_DIR" "$UNIT_DIR"/tidings*.d; do
        if [ -e "$path" ]; then
            run rm -rf "$path"
            CHANGED=1
        fi
    done
    if getent passwd "$SERVICE_USER" >/dev/null; then
        run userdel "$SERVICE_USER"
        CHANGED=1
    fi
    if getent group "$SERVICE_USER" >/dev/null; then
        run groupdel "$SERVICE_USER"
        CHANGED=1
    fi
}

# --- main -------------------------------------------------------------------------

cleanup() {
    exit_status=$1
    if [ -n "${STAGED:-}" ] && [ "$DRY_RUN" = 0 ]; then
        $SUDO rm -f "$STAGED" || true
    fi
    [ -z "${DL:-}" ] || rm -rf "$DL"
    exit "$exit_status"
}

main() {
    parse_args "$@"
    SUDO=""
    DL=""
    STAGED=""
    trap 'cleanup $?' EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    read_settings
    if [ "$MODE" = install ]; then
        detect_arch
        check_os
        check_glibc
    fi
    check_systemd
    become_root
    case $MODE in
        install)
            install_release
            ;;
        uninstall|purge)
            uninstall
            [ "$MODE" = uninstall ] || purge
            if [ "$CHANGED" = 0 ]; then
                info "tidings is not installed, nothing to remove"
            elif [ "$DRY_RUN" = 1 ]; then
                info "dry run: nothing was changed"
            elif [ "$MODE" = uninstall ]; then
                info "tidings removed; kept $CONFIG_DIR, $DATA_DIR and the $SERVICE_USER user" \
                    "(--purge removes them)"
            else
                info "tidings removed with its configuration, data and user"
            fi
            ;;
    esac
}

main "$@"
