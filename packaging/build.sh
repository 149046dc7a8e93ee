#!/bin/sh
# Build the single-file `tidings` executable into <repo>/dist/tidings.
#
#   sh packaging/build.sh                # with .venv/bin/python
#   PYTHON=python3 sh packaging/build.sh # with another interpreter
#
# Needs PyInstaller (pip install -e '.[freeze]') and, on Debian, binutils (objdump).
set -eu

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
PYTHON=${PYTHON:-.venv/bin/python}

if ! command -v objdump >/dev/null 2>&1; then
    echo "build.sh: objdump not found; install binutils (apt-get install -y binutils)" >&2
    exit 1
fi
if ! "$PYTHON" -c 'import PyInstaller' 2>/dev/null; then
    echo "build.sh: PyInstaller missing for $PYTHON; pip install -e '.[freeze]'" >&2
    exit 1
fi

"$PYTHON" -m PyInstaller --noconfirm --clean \
    --distpath "$ROOT/dist" --workpath "$ROOT/build" \
    packaging/tidings.spec

BIN="$ROOT/dist/tidings"
echo "built $BIN ($(du -h "$BIN" | cut -f1))"
"$BIN" --version
