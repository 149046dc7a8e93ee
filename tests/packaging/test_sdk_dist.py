"""The SDK installs on its own, as `tidings`, and beside the server (issues #3 and 16).

Its one dependency, h11, is for files (issue 15): without it messages still flow.

The wheel is built by packaging/sdk/build.sh (into <repo>/dist), then installed
with ``--no-index --no-deps`` into fresh venvs: one with nothing else, where a
script exchanges a message through a real server; one that also holds the server
(this checkout, on the venv's path) and runs it, where both packages import side
by side and an SDK `tidings.Client` and the server tree's `appliance.sdk.Client`
send each other a file.
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import textwrap
import zipfile
from pathlib import Path

import pytest

import appliance
from tests.support.provision import provision
from tests.support.server import ServerProcess

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]

EXCHANGE = textwrap.dedent('''
    import asyncio, importlib.util, sys
    import tidings
    from tidings import Client, ClientError, Status

    try:
        import appliance
    except ModuleNotFoundError:
        pass
    else:
        raise AssertionError(f"the SDK installed appliance: {appliance.__file__}")
    for absent in ("click", "uvloop", "h2", "h11"):
        assert importlib.util.find_spec(absent) is None, absent
    assert tidings.__version__ == sys.argv[5], tidings.__version__

    async def main(host, port, alice_token, bob_token, version):
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

SIDE_BY_SIDE = textwrap.dedent('''
    import asyncio, os, sys
    from pathlib import Path

    import appliance, appliance.engine, appliance.errors
    from appliance.sdk import Client as ServerTreeClient
    import tidings
    from tidings import Client, Status

    repo, venv = Path(sys.argv[5]), Path(sys.argv[6])
    # Neither shadows the other: the server from its checkout, the SDK from the venv.
    assert Path(appliance.__file__) == repo / "appliance" / "__init__.py", appliance.__file__
    assert Path(tidings.__file__).is_relative_to(venv), tidings.__file__
    assert tidings.__version__ == appliance.__version__
    # Two copies of the codec, two error hierarchies: an SDK error is not the server's.
    assert tidings.Status is not appliance.sdk.Status
    assert not issubclass(tidings.ClientError, appliance.errors.ApplianceError)

    async def main(host, port, alice_token, bob_token):
        async with Client(host, int(port), alice_token, store="alice.db") as alice, \\
                ServerTreeClient(host, int(port), bob_token, store="bob.db") as bob:
            inbox = bob.messages()
            source = Path("report.bin")
            source.write_bytes(os.urandom(300_000))
            message = await alice.send_file("bob", source, caption="side by side")
            await message.reached(Status.DELIVERED)
            got = await anext(inbox)
            copy = await bob.download_file(got.files[0], Path("copy.bin"))
            assert copy.read_bytes() == source.read_bytes()
            print(got.sender, got.caption, Status(message.status).name,
                  type(alice).__module__, type(bob).__module__)

    asyncio.run(asyncio.wait_for(main(*sys.argv[1:5]), 60))
''')


@pytest.fixture(scope="module")
def wheel() -> Path:
    env = {**os.environ, "PYTHON": sys.executable}
    subprocess.run(["sh", str(REPO / "packaging" / "sdk" / "build.sh")], env=env, check=True,
                   capture_output=True, timeout=300)
    path = REPO / "dist" / f"tidings_sdk-{appliance.__version__}-py3-none-any.whl"
    assert path.is_file(), "build.sh produced no wheel"
    return path


def _venv(where: Path, wheel: Path) -> Path:
    """A fresh venv with only the SDK wheel installed; returns its python."""
    subprocess.run([sys.executable, "-m", "venv", str(where)], check=True, timeout=120)
    python = where / "bin" / "python"
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--no-index", "--no-deps",
                    str(wheel)], check=True, timeout=120)
    return python


def test_the_wheel_holds_tidings_and_nothing_else(wheel: Path) -> None:
    dist_info = f"tidings_sdk-{appliance.__version__}.dist-info/"
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        metadata = archive.read(dist_info + "METADATA").decode()
        top_level = archive.read(dist_info + "top_level.txt").decode()
    # The attack: a wheel writing site-packages/appliance/ replaces the server's files.
    assert [n for n in names if not n.startswith(("tidings/", dist_info))] == []
    assert top_level.split() == ["tidings"]
    assert {"tidings/__init__.py", "tidings/client.py", "tidings/py.typed",
            "tidings/_shared/protocol/wire/frames.py",
            "tidings/_shared/protocol/wire/PROTOCOL.md"} <= set(names)
    assert not any(n.startswith(("tidings/_shared/storage", "tidings/_shared/engine"))
                   for n in names)
    # Its one dependency, for files only (pure Python too).
    assert [line for line in metadata.splitlines()
            if line.startswith("Requires-Dist:") and "extra ==" not in line] == [
        "Requires-Dist: h11>=0.14"]


def test_the_wheel_alone_exchanges_a_message(wheel: Path, tmp_path: Path) -> None:
    python = _venv(tmp_path / "venv", wheel)
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
             tokens["bob"], appliance.__version__], cwd=tmp_path, capture_output=True,
            text=True, timeout=120,
            env={"PATH": os.environ["PATH"]})  # no PYTHONPATH: only the venv's packages
    finally:
        server.stop()
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "alice hello from a bare venv DELIVERED"


def test_the_sdk_and_the_server_share_a_venv(wheel: Path, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    python = _venv(venv, wheel)
    # The server: this checkout and its dependencies, after the venv's own packages
    # (a .pth appends them), so a wheel that installed `appliance` would shadow it.
    purelib = subprocess.run([str(python), "-c", "import sysconfig; "
                              "print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    deps = dict.fromkeys([str(REPO), sysconfig.get_paths()["purelib"],
                          sysconfig.get_paths()["platlib"]])
    Path(purelib, "tidings-server.pth").write_text("".join(f"{p}\n" for p in deps))

    data = tmp_path / "data"
    data.mkdir()
    tokens, _ = provision(data, ["alice", "bob"])
    server = ServerProcess(data, command=[str(python), "-m", "appliance"])  # the same venv
    server.start()
    try:
        result = subprocess.run(
            [str(python), "-c", SIDE_BY_SIDE, server.host, str(server.port), tokens["alice"],
             tokens["bob"], str(REPO), str(venv)], cwd=tmp_path, capture_output=True,
            text=True, timeout=120, env={"PATH": os.environ["PATH"]})
    finally:
        server.stop()
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "alice side by side DELIVERED tidings.client " \
                                    "appliance.sdk.client"
