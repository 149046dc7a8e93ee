"""The image workers in the one-file executable (packaging/build.sh -> dist/tidings).

Two paths: the server-side pool, spawning ``sys.executable __tidings-image-worker__`` from
inside the frozen process (exercised by ``tidings doctor``'s images check, which starts a
pool exactly as the server does); and a worker started by hand, which decodes and encodes
every format the codec allows, so a build that lost a Pillow extension (libwebp, littlecms)
fails here.  The executable is ``$TIDINGS_FROZEN_BIN`` or ``<repo>/dist/tidings``; when it
is missing it is built (packaging/build.sh) if PyInstaller is installed, else the tests
skip, or fail under ``CI=true`` (tests.support.components).
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from appliance.media.images.protocol import (
    TEST_HOOKS_ENV,
    WORKER_ARG,
    body_length,
    decode,
    encode,
)
from tests.media.images import corpus
from tests.support.components import REPO, frozen_binary, missing

pytestmark = pytest.mark.slow
LIMITS = [64_000_000, 16384, 1000]


@pytest.fixture(scope="module")
def binary() -> Path:
    default = REPO / "dist" / "tidings"
    if os.environ.get("TIDINGS_FROZEN_BIN") or default.is_file():
        return frozen_binary()
    try:
        import PyInstaller  # noqa: F401
    except ImportError:
        missing("dist/tidings is missing and PyInstaller is not installed to build it")
    subprocess.run(["sh", str(REPO / "packaging" / "build.sh")], cwd=REPO, check=True,
                   capture_output=True, timeout=900)
    return frozen_binary()


def our_workers(binary: Path) -> list[int]:
    """Processes running `binary` as an image worker."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if len(argv) > 1 and argv[1] == WORKER_ARG.encode() and argv[0] == bytes(binary):
            found.append(int(entry.name))
    return found


def test_the_frozen_server_side_pool_starts_workers_and_thumbnails(binary: Path,
                                                                     tmp_path: Path) -> None:
    proc = subprocess.run([str(binary), "--data-dir", str(tmp_path / "data"), "doctor",
                           "--json"], capture_output=True, text=True, timeout=120, check=False)
    checks = {c["check"]: c for c in json.loads(proc.stdout)["checks"]}
    images = checks["images"]
    # The pool accepts a worker only if the pid that greets it is the pid it spawned: a
    # bootloader that unpacked the bundle again would have forked a second process.
    # So "ok" also means the workers ran from the server's unpacked files (~0.1 s to
    # start, against ~0.6 s for a fresh one-file start).
    assert images["verdict"] == "ok", images
    assert images["figures"]["startup_s"] < 2.0, images
    assert our_workers(binary) == []  # the pool closed: nothing left behind


class FrozenWorker:
    def __init__(self, binary: Path) -> None:
        env = {k: v for k, v in os.environ.items() if k != TEST_HOOKS_ENV}
        self.proc = subprocess.Popen([str(binary), WORKER_ARG], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, env=env)

    def receive(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        return decode(self.proc.stdout.read(body_length(self.proc.stdout.read(4))))

    def ask(self, message: dict[str, Any]) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(encode({**message, "limits": LIMITS}))
        self.proc.stdin.flush()
        return self.receive()


def test_a_frozen_worker_handles_every_allowed_format(binary: Path, tmp_path: Path) -> None:
    sources = {
        "rotated.jpg": corpus.rotated_photo(tmp_path / "rotated.jpg"),
        "icc.jpg": corpus.jpeg_with_profile(tmp_path / "icc.jpg", "sRGB"),  # littlecms
        "cmyk.jpg": corpus.cmyk_jpeg(tmp_path / "cmyk.jpg"),
        "meta.png": corpus.png_with_metadata(tmp_path / "meta.png"),
        "anim.gif": corpus.animated_gif(tmp_path / "anim.gif"),
        "anim.webp": corpus.webp_frame_bomb(tmp_path / "anim.webp", 3, tmp_path),  # libwebp
    }
    worker = FrozenWorker(binary)
    try:
        assert worker.receive()["ready"] is True
        for name, src in sources.items():
            clean = worker.ask({"op": "sanitize", "src": str(src),
                                "dst": str(tmp_path / f"{name}.clean")})
            assert "info" in clean, (name, clean)
            thumb = worker.ask({"op": "thumbnail", "src": str(src),
                                "dst": str(tmp_path / f"{name}.webp"), "size": 48,
                                "fmt": "webp", "square": True})
            assert thumb["info"]["width"] == thumb["info"]["height"] <= 48, (name, thumb)
            with Image.open(tmp_path / f"{name}.webp") as out:
                assert out.format == "WEBP"
                assert not out.getexif()
        bomb = worker.ask({"op": "probe", "src": str(corpus.png_bomb(tmp_path / "b.png"))})
        assert "pixels" in bomb["refused"]
        rotated = worker.ask({"op": "probe", "src": str(sources["rotated.jpg"])})["info"]
        assert (rotated["width"], rotated["height"]) == (400, 600)
    finally:
        assert worker.proc.stdin is not None
        worker.proc.stdin.close()
        assert worker.proc.wait(timeout=30) == 0
        assert worker.proc.stdout is not None
        worker.proc.stdout.close()
