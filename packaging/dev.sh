#!/bin/sh
# Set up a development checkout on Debian 12 (as root) and run it.
#   sh packaging/dev.sh serve [tidings serve options]   set up, then run the server
#   sh packaging/dev.sh test  [pytest options]          set up, lint, type-check, build, test
set -eu
cd "$(dirname "$0")/.."

apt_install() {
    missing=""
    for pkg in "$@"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" \
            || missing="$missing $pkg"
    done
    if [ -n "$missing" ]; then
        echo "dev.sh: installing Debian packages:$missing"
        apt-get update -qq
        # shellcheck disable=SC2086 # one word per package, on purpose
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing
    fi
}

# Run pip with its output in a log, shown only when it fails: even with -q, pip
# prints the mariadb connector's C build warnings, which would come before the
# server's "listening on" line (issue 14).
quiet_pip() {
    log=$(mktemp "${TMPDIR:-/tmp}/tidings-dev-pip.XXXXXX")
    if ! .venv/bin/python -m pip "$@" >"$log" 2>&1; then
        cat "$log" >&2
        rm -f "$log"
        echo "dev.sh: pip $* failed (its output is above)" >&2
        exit 1
    fi
    rm -f "$log"
}

venv() {
    if [ ! -x .venv/bin/python ]; then
        python3 -m venv .venv
        quiet_pip install -q --upgrade pip
    fi
    quiet_pip install -q -e ".$1"
}

cmd="${1:-}"
[ $# -gt 0 ] && shift
case "$cmd" in
    serve)
        # gcc, python3-dev, libmariadb-dev: the mariadb connector builds from source.
        apt_install python3 python3-venv python3-dev gcc libmariadb-dev
        venv ""
        exec .venv/bin/tidings serve "$@"
        ;;
    test)
        # binutils: PyInstaller needs objdump to build the frozen executable.
        # curl, openssl, nghttp: real clients the transport tests drive (HTTP, TLS, h2).
        # mariadb-server: the real MariaDB the storage tests start (never skipped).
        # systemd: systemd-analyze verifies the units in systemd/.
        # pebble: the real ACME CA (with pebble-challtestsrv) the certificate tests run against.
        # debootstrap, systemd-container: the booted Debian 12 container the install,
        # setup, systemd and upgrade tests run in (tests/support/container.py).
        # shellcheck, dash: the installer and release scripts are checked as POSIX sh.
        apt_install python3 python3-venv python3-dev gcc binutils procps curl openssl \
            nghttp2-client libmariadb-dev mariadb-server systemd pebble \
            debootstrap systemd-container shellcheck dash
        venv "[test,lint,freeze]"
        # The machine's MariaDB server: `tidings db bootstrap` is tested on it.
        # (The other MariaDB tests start private servers of their own.)
        if ! mariadb-admin --socket=/run/mysqld/mysqld.sock ping >/dev/null 2>&1; then
            service mariadb start
        fi
        .venv/bin/python -m ruff check appliance tests
        .venv/bin/python -m mypy
        PYTHON=.venv/bin/python sh packaging/build.sh
        exec .venv/bin/python -m pytest "$@"
        ;;
    *)
        echo "usage: sh packaging/dev.sh serve|test [args...]" >&2
        exit 2
        ;;
esac
