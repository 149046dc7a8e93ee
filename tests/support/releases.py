"""Signed releases of this checkout, served over HTTP on 127.0.0.1, for tests (issue 14).

    with release_set(tmp_path_factory) as releases:   # the session fixture `releases`
        releases.base_url            # http://127.0.0.1:PORT, serving releases.serve_dir
        releases.versions            # Versions(n="1.0.0", n1="1.1.0", broken="1.1.1")
        releases.key_pub_path        # the signer's public key (PEM): TIDINGS_TRUSTED_KEYS
        releases.key_path            # its private key, to sign more (packaging/release.sh)
        releases.executable("1.1.0") # the signed executable of a release
        releases.point_latest("1.1.1")
        releases.tampered("executable-byte")  # base URL of a tampered copy of a release
        releases.install_command("--dry-run", env={"TIDINGS_VERSION": "1.0.0"})
                                     # `curl ... | sh` as an operator types it
        releases.requests            # the paths the server was asked for, in order

Every release is written by packaging/release.sh from this checkout: N and
N+1 are real builds reporting their versions; the broken one reports its
version and runs every command but `serve`, which exits at once (built with
tests/support/broken_serve_hook.py), so an upgrade to it fails its health
check.  Each release says it upgrades from 0.1.0, the checkout's version, so
that an unfrozen checkout may upgrade too.  `latest` points at N+1.

A build takes a minute; executables are cached under
/var/cache/tidings-ci/releases (TIDINGS_RELEASE_CACHE) keyed by the sha256 of
every source file, the spec, the release tooling, the interpreter and the
installed distributions, the version, the public key and the hook, so a cached
executable is only ever one this checkout would build; a cached file whose
sha256 no longer matches its record is rebuilt.  On a miss the release comes
from release.sh's full build, on a hit from ``release.sh --exe``.  The test
signing key lives in the cache too (a cache keyed by a fresh key per session
would never hit); it is a throwaway that nothing but these builds trusts.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import os
import shlex
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Final

import pytest

from appliance.release.manifest import SIGNATURE, SUMS, executable_name
from appliance.release.publish import point_latest
from appliance.release.signature import new_private_pem, public_pem, sign
from tests.support.components import REPO

ARCH: Final = "amd64"
EXE: Final = executable_name(ARCH)
CACHE_ENV: Final = "TIDINGS_RELEASE_CACHE"
DEFAULT_CACHE: Final = Path("/var/cache/tidings-ci/releases")
BROKEN_HOOK: Final = REPO / "tests" / "support" / "broken_serve_hook.py"
#: The oldest version every test release upgrades from: the checkout's.
UPGRADES_FROM: Final = "0.1.0"
#: Cached executables kept (three a source state: N, N+1, broken).
CACHE_KEEP: Final = 9
BUILD_TIMEOUT: Final = 900.0
#: What `tampered()` does to a copy of a release; each must be refused before install.
TAMPERINGS: Final = (
    "executable-byte",    # one byte of the executable changed (its sum no longer matches)
    "foreign-signature",  # SHA256SUMS signed by another key
    "sums-line",          # one line of SHA256SUMS changed (the signature no longer matches)
)


@dataclass(frozen=True, slots=True)
class Versions:
    n: str = "1.0.0"
    n1: str = "1.1.0"
    broken: str = "1.1.1"


@dataclass
class Releases:
    serve_dir: Path
    base_url: str
    key_path: Path
    key_pub_path: Path
    versions: Versions
    requests: list[str] = field(default_factory=list)

    def executable(self, version: str) -> Path:
        return self.serve_dir / version / EXE

    def point_latest(self, version: str) -> None:
        point_latest(self.serve_dir, version)

    def install_command(self, *args: str, base_url: str | None = None,
                        env: dict[str, str] | None = None) -> str:
        """`curl <base>/latest/install.sh | TIDINGS_BASE_URL=<base> ENV sh -s -- ARGS`."""
        base = base_url or self.base_url
        settings = " ".join(f"{name}={shlex.quote(value)}"
                            for name, value in {"TIDINGS_BASE_URL": base, **(env or {})}.items())
        command = f"curl -fsSL {base}/latest/install.sh | {settings} sh"
        return f"{command} -s -- {shlex.join(args)}" if args else command

    def tampered(self, kind: str, version: str | None = None) -> str:
        """The base URL of a copy of release `version` (default N) altered as `kind` says."""
        if kind not in TAMPERINGS:
            raise ValueError(f"unknown tampering {kind!r}; one of {TAMPERINGS}")
        version = version or self.versions.n
        root = self.serve_dir / f"tampered-{kind}"
        release = root / version
        if not release.exists():
            shutil.copytree(self.serve_dir / version, release)
            _tamper(kind, release)
            point_latest(root, version)
        return f"{self.base_url}/tampered-{kind}"


def _tamper(kind: str, release: Path) -> None:
    if kind == "executable-byte":
        with (release / EXE).open("r+b") as handle:
            handle.seek((release / EXE).stat().st_size // 2)
            byte = handle.read(1)
            handle.seek(-1, os.SEEK_CUR)
            handle.write(bytes([byte[0] ^ 0x01]))
    elif kind == "foreign-signature":
        (release / SIGNATURE).write_bytes(sign((release / SUMS).read_bytes(), new_private_pem()))
    else:  # sums-line: the unit's digest, one hex digit changed
        lines = (release / SUMS).read_text().splitlines(keepends=True)
        [index] = [i for i, line in enumerate(lines) if line.endswith("  tidings.service\n")]
        digit = "1" if lines[index][0] == "0" else "0"
        lines[index] = digit + lines[index][1:]
        (release / SUMS).write_text("".join(lines))


# --- the cache -------------------------------------------------------------------------

def _cache_root() -> Path | None:
    root = Path(os.environ.get(CACHE_ENV) or DEFAULT_CACHE)
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    return root if os.access(root, os.W_OK) else None


def _signing_key(cache: Path | None, tmp: Path) -> Path:
    """The test signing key: kept in the cache (created once, 0600), else in `tmp`."""
    path = (cache or tmp) / "test-signing-key.pem"
    if not path.exists():
        partial_path = path.with_name(f".{path.name}.{os.getpid()}")
        fd = os.open(partial_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(new_private_pem())
        # link(2) never replaces: two sessions starting at once end up with one key.
        with contextlib.suppress(FileExistsError):
            os.link(partial_path, path)
        partial_path.unlink()
    return path


def source_digest() -> str:
    """sha256 of everything a build of this checkout is made of (but the version and key)."""
    digest = hashlib.sha256(b"tidings-release-cache-1\0")
    files = [path for path in sorted((REPO / "appliance").rglob("*"))
             if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc"]
    files += [REPO / "packaging" / name
              for name in ("tidings.spec", "entry.py", "release.sh", "release.py")]
    for path in files:
        digest.update(str(path.relative_to(REPO)).encode() + b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    digest.update(sys.version.encode() + b"\0")
    installed = sorted(f"{dist.metadata['Name']}=={dist.version}"
                       for dist in importlib.metadata.distributions())
    digest.update("\n".join(installed).encode())
    return digest.hexdigest()


def _cache_key(sources: str, version: str, key_pub: bytes, hook: Path | None) -> str:
    digest = hashlib.sha256(f"{sources}\0{version}\0".encode() + key_pub)
    digest.update(b"\0" + (hook.read_bytes() if hook else b""))
    return digest.hexdigest()[:32]


def _cached(cache: Path | None, key: str) -> Path | None:
    """The cached executable for `key`, if there and intact."""
    if cache is None:
        return None
    exe, record = cache / key / "tidings", cache / key / "tidings.sha256"
    try:
        expected = record.read_text().strip()
    except OSError:
        return None
    if not exe.is_file() or _sha256(exe) != expected:
        shutil.rmtree(cache / key, ignore_errors=True)
        return None
    os.utime(cache / key)
    return exe


def _store(cache: Path | None, key: str, exe: Path) -> None:
    """Put a fresh build in the cache (rename: a reader never sees half of it)."""
    if cache is None:
        return
    stage = cache / f".{key}.{os.getpid()}"
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir()
    shutil.copy2(exe, stage / "tidings")
    (stage / "tidings.sha256").write_text(_sha256(stage / "tidings") + "\n")
    try:
        stage.rename(cache / key)
    except OSError:  # another session stored it first
        shutil.rmtree(stage, ignore_errors=True)
    entries = sorted((p for p in cache.iterdir() if p.is_dir() and not p.name.startswith(".")),
                     key=lambda p: p.stat().st_mtime, reverse=True)
    for old in entries[CACHE_KEEP:]:
        shutil.rmtree(old, ignore_errors=True)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# --- building ---------------------------------------------------------------------

def release_sh(version: str, out: Path, key: Path, *args: str,
               env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run packaging/release.sh (fails the test with its output if it fails)."""
    done = subprocess.run(
        ["sh", str(REPO / "packaging" / "release.sh"), *args, version, str(out)],
        env={**os.environ, "TIDINGS_SIGNING_KEY": str(key), "PYTHON": sys.executable,
             **(env or {})},
        cwd=REPO, capture_output=True, text=True, timeout=BUILD_TIMEOUT, check=False)
    if done.returncode != 0:
        pytest.fail(f"release.sh {version} failed ({done.returncode}):\n"
                    f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return done


def _release(version: str, out: Path, key: Path, cache: Path | None, sources: str,
             hook: Path | None) -> None:
    """Write out/<version>/: from the cached executable, else from a fresh build."""
    cache_key = _cache_key(sources, version, public_pem(key.read_bytes()), hook)
    exe = _cached(cache, cache_key)
    args = ("--upgrades-from", UPGRADES_FROM)
    if exe is not None:
        release_sh(version, out, key, "--exe", str(exe), *args)
        return
    env = {"TIDINGS_TEST_RUNTIME_HOOK": str(hook)} if hook else {}
    release_sh(version, out, key, *args, env=env)
    _store(cache, cache_key, out / version / EXE)


# --- serving ----------------------------------------------------------------------

class _Handler(SimpleHTTPRequestHandler):
    """Serves the release directory; records each path, logs nothing."""

    requests: list[str]

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base's name
        return

    def do_GET(self) -> None:
        self.requests.append(self.path)
        super().do_GET()


@contextmanager
def serving(directory: Path, requests: list[str]) -> Iterator[str]:
    """An HTTP server for `directory` on 127.0.0.1, port 0; yields its base URL."""
    handler = type("Handler", (_Handler,), {"requests": requests})
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(handler, directory=str(directory)))
    thread = threading.Thread(target=server.serve_forever, name="release-server", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@contextmanager
def release_set(tmp_path_factory: pytest.TempPathFactory,
                versions: Versions | None = None) -> Iterator[Releases]:
    """Releases N, N+1 and broken N+1' of this checkout, signed and served (see above)."""
    versions = versions or Versions()
    tmp = tmp_path_factory.mktemp("release-key")
    cache = _cache_root()
    key = _signing_key(cache, tmp)
    key_pub = tmp / "test-signing-key.pub.pem"
    key_pub.write_bytes(public_pem(key.read_bytes()))
    serve_dir = tmp_path_factory.mktemp("releases")
    sources = source_digest()
    started = time.monotonic()
    for version, hook in ((versions.n, None), (versions.n1, None),
                          (versions.broken, BROKEN_HOOK)):
        _release(version, serve_dir, key, cache, sources, hook)
    point_latest(serve_dir, versions.n1)
    sys.stderr.write(f"releases: {versions} ready in {time.monotonic() - started:.1f} s\n")
    requests: list[str] = []
    with serving(serve_dir, requests) as base_url:
        yield Releases(serve_dir, base_url, key, key_pub, versions, requests)
