"""The executable: what is installed, the new one beside it, and the swap.

The new file is written in the installed one's own directory (a rename is
atomic only within one file system), checked against the signed sums, made
0755 and run once (``--version``) before it replaces anything.  The swap
keeps the installed executable as ``<bin>.prev`` by a hard link first, then
renames the new file over ``<bin>``: the path never stops existing, and a
process already running keeps its own inode.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Final

from appliance import __version__
from appliance.errors import LifecycleError, VerificationError
from appliance.system.host import executable, host_env
from appliance.system.layout import PREVIOUS_SUFFIX
from appliance.upgrade.fetch import Fetcher
from appliance.upgrade.release import Release

#: A frozen executable unpacks itself before it answers: minutes on a slow disk.
SMOKE_TIMEOUT_S: Final = 120.0
#: Seconds per MiB allowed for the download, on top of a fixed minute.
_SECONDS_PER_MIB: Final = 10.0
_VERSION: Final = re.compile(r"version (\S+)")


def tidings_env() -> dict[str, str]:
    """The environment for running another `tidings` executable from this one
    (`host_env` leaves out what would make it take itself for our child)."""
    return host_env()


def previous(bin_path: Path) -> Path:
    return bin_path.with_name(bin_path.name + PREVIOUS_SUFFIX)


def version_of(program: Path) -> str:
    """What ``<program> --version`` says its version is.

    Raises:
        LifecycleError: it does not run, or says no version.
    """
    try:
        done = subprocess.run([str(program), "--version"], capture_output=True, text=True,
                              env=tidings_env(), timeout=SMOKE_TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise LifecycleError(f"{program} does not run: {exc}", step="version") from None
    match = _VERSION.search(done.stdout)
    if done.returncode != 0 or match is None:
        raise LifecycleError(f"{program} --version exited {done.returncode}:"
                             f" {(done.stdout + done.stderr).strip()[-300:]!r}", step="version")
    return match[1]


def installed_version(bin_path: Path) -> str:
    """The version at `bin_path`: this process's own when it is that file."""
    if bin_path.exists() and bin_path.resolve() == Path(executable()):
        return __version__
    return version_of(bin_path)


@contextlib.contextmanager
def upgrade_lock(bin_path: Path) -> Iterator[None]:
    """One upgrade at a time on this executable."""
    import fcntl

    fd = os.open(bin_path.with_name(f".{bin_path.name}.upgrade.lock"),
                 os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise LifecycleError("another `tidings upgrade` is running", step="lock") from None
        yield
    finally:
        os.close(fd)


def download(fetcher: Fetcher, release: Release, bin_path: Path) -> Path:
    """The release's executable, verified and 0755, next to `bin_path`.

    Raises:
        ReleaseError: the download failed or was bounded.
        VerificationError: its size or sha256 differ from the signed sums.
    """
    entry = release.manifest.files[release.executable]
    partial = bin_path.with_name(f".{bin_path.name}.{release.version}.partial")
    with contextlib.suppress(FileNotFoundError):
        partial.unlink()
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                 0o600)
    digest = hashlib.sha256()
    try:
        with os.fdopen(fd, "wb") as out:
            def sink(block: bytes) -> None:
                digest.update(block)
                out.write(block)

            deadline = 60.0 + _SECONDS_PER_MIB * entry.size / (1 << 20)
            size = fetcher.stream(release.executable_url, entry.size, sink, deadline)
            out.flush()
            os.fsync(out.fileno())
        if size != entry.size:
            raise VerificationError(f"{release.executable}: {size} bytes, the signed manifest"
                                    f" says {entry.size}")
        if digest.hexdigest() != release.sums[release.executable]:
            raise VerificationError(f"{release.executable}: sha256 does not match the signed"
                                    f" {release.executable} line in SHA256SUMS")
        os.chmod(partial, 0o755)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return partial


def smoke(new: Path, expected: str) -> None:
    """Run ``<new> --version``; it must say `expected`.

    Raises:
        LifecycleError: it does not run or reports another version.
    """
    said = version_of(new)
    if said != expected:
        raise LifecycleError(f"the new executable reports {said}, the release is {expected}",
                             step="smoke test")


def swap(bin_path: Path, new: Path) -> None:
    """Keep `bin_path` as ``.prev`` and put `new` in its place (both atomic renames)."""
    prev = previous(bin_path)
    with contextlib.suppress(FileNotFoundError):
        prev.unlink()
    os.link(bin_path, prev)
    os.replace(new, bin_path)
    _fsync_dir(bin_path.parent)


def swap_back(bin_path: Path) -> None:
    """Put ``.prev`` back in place (the failed new executable goes)."""
    os.replace(previous(bin_path), bin_path)
    _fsync_dir(bin_path.parent)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
