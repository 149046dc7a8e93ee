#!/bin/sh
# Build the SDK wheel (tidings_sdk-<version>-py3-none-any.whl) into <repo>/dist/.
#
#   sh packaging/sdk/build.sh                # with .venv/bin/python
#   PYTHON=python3 sh packaging/sdk/build.sh # with another interpreter
#
# The wheel holds one import package, `tidings`: appliance/sdk, with the wire
# codec and the error root it imports (appliance/protocol, appliance/errors.py)
# as tidings._shared, renamed by stage.py; nothing of the server, and never
# `appliance`, so the SDK installs beside the server without touching it.
set -eu

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
PYTHON=${PYTHON:-$ROOT/.venv/bin/python}
STAGE=$(mktemp -d)
trap 'rm -rf "$STAGE"' EXIT

"$PYTHON" "$ROOT/packaging/sdk/stage.py" "$STAGE"
cp "$ROOT/packaging/sdk/pyproject.toml" "$ROOT/packaging/sdk/README.md" "$STAGE/"

mkdir -p "$ROOT/dist"
"$PYTHON" -m pip wheel --quiet --no-deps --wheel-dir "$ROOT/dist" "$STAGE"
ls "$ROOT"/dist/tidings_sdk-*.whl
