"""The SDK installs on its own: a fresh venv, the wheel, no other package (issue #3).

Its one dependency, h11, is for files (issue 15): without it messages still flow.

The wheel is built by packaging/sdk/build.sh (into <repo>/dist), then
installed with ``--no-index --no-deps`` into a venv that has nothing else; a
script run by that venv's Python exchanges a message through a real server.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest

from tests.support.provision import provision
from tests.support.server import ServerProcess

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]

EXCHANGE = textwrap.dedent('''
    import asyncio, importlib.util, sys
    from appliance.sdk import Client, ClientError, Status

    for absent in ("appliance.engine", "appliance.storage", "appliance.transport", "click",
                   "uvloop"):
        assert importlib.util.find_spec(absent) is None, absent

    async def main(host, port, alice_token, bob_token):
        async with Client(host, int(port), alice_token, store="alice.db") as alice, \\
                Client(host, int(port), bob_token, store="bob.db") as bob:
            inbox = bob.messages()
            message = alice.send("bob", "hello from a bare venv")
            await message.reached(Status.DELIVERED)
            got = await anext(inbox)
            print(got.sender, got.text, Status(message.status).name)
            # Files need h11, which --no-deps left out: a clear error, not an ImportError.
            try:
                await alice.upload_file("any.bin")
            except ClientError as exc:
                assert "h11" in str(exc), exc
            else:
                raise AssertionError("uploaded without h11")

    asyncio.run(asyncio.wait_for(main(*sys.argv[1:]), 60))
''')


def test_the_wheel_alone_exchanges_a_message(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHON": sys.executable}
    subprocess.run(["sh", str(REPO / "packaging" / "sdk" / "build.sh")], env=env, check=True,
                   capture_output=True, timeout=300)
    wheels = sorted((REPO / "dist").glob("tidings_sdk-*.whl"))
    assert wheels, "build.sh produced no wheel"
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--no-index", "--no-deps",
                    str(wheels[-1])], check=True, timeout=120)
    with zipfile.ZipFile(wheels[-1]) as wheel:
        metadata = next(wheel.read(n) for n in wheel.namelist() if n.endswith("/METADATA"))
    # Its one dependency, for files only (pure Python too).
    assert [line for line in metadata.decode().splitlines()
            if line.startswith("Requires-Dist:") and "extra ==" not in line] == [
        "Requires-Dist: h11>=0.14"]
    installed = subprocess.run([str(python), "-m", "pip", "list", "--format=freeze"],
                               capture_output=True, text=True, check=True).stdout
    assert {line.split("==")[0] for line in installed.split()} <= {"pip", "setuptools",
                                                                   "tidings-sdk"}

    data = tmp_path / "data"
    data.mkdir()
    tokens, _ = provision(data, ["alice", "bob"])
    server = ServerProcess(data)
    server.start()
    try:
        result = subprocess.run(
            [str(python), "-c", EXCHANGE, server.host, str(server.port), tokens["alice"],
             tokens["bob"]], cwd=tmp_path, capture_output=True, text=True, timeout=120,
            env={"PATH": os.environ["PATH"]})  # no PYTHONPATH: only the venv's packages
    finally:
        server.stop()
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "alice hello from a bare venv DELIVERED"
