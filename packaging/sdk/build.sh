#!/bin/sh
# Build the SDK wheel (tidings_sdk-<version>-py3-none-any.whl) into <repo>/dist/.
#
#   sh packaging/sdk/build.sh                # with .venv/bin/python
#   PYTHON=python3 sh packaging/sdk/build.sh # with another interpreter
#
# The wheel holds only appliance/{__init__,errors}.py, appliance/protocol and
# appliance/sdk: the client and the wire codec, nothing of the server.
set -eu

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
PYTHON=${PYTHON:-$ROOT/.venv/bin/python}
STAGE=$(mktemp -d)
trap 'rm -rf "$STAGE"' EXIT

mkdir -p "$STAGE/appliance"
cp "$ROOT/appliance/__init__.py" "$ROOT/appliance/errors.py" "$ROOT/appliance/py.typed" \
    "$STAGE/appliance/"
for pkg in protocol sdk; do
    (cd "$ROOT/appliance" && find "$pkg" -name '*.py' -o -name '*.md' -o -name '*.typed') |
        while read -r f; do
            mkdir -p "$STAGE/appliance/$(dirname "$f")"
            cp "$ROOT/appliance/$f" "$STAGE/appliance/$f"
        done
done
cp "$ROOT/packaging/sdk/pyproject.toml" "$ROOT/packaging/sdk/README.md" "$STAGE/"

mkdir -p "$ROOT/dist"
"$PYTHON" -m pip wheel --quiet --no-deps --wheel-dir "$ROOT/dist" "$STAGE"
ls "$ROOT"/dist/tidings_sdk-*.whl
