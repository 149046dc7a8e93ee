"""A real systemd for the tests: a Debian 12 container booted with systemd-nspawn.

The recipe is ../shared/guides/systemd-in-ci.md (verified on the build machine):
a debootstrapped bookworm tree, cached between runs, booted with
``--volatile=overlay`` (every boot starts from the pristine tree; writes go to
a tmpfs) in a cgroup of its own, driven with ``nsenter`` (no machined here).
The container shares the host's network namespace: servers on the host's
127.0.0.1 are reachable from inside and the other way round.

    with booted("install", payload_dir) as box:
        box.run("useradd --system tidings")
        box.run(["systemctl", "start", "tidings"])

A machine that cannot build or boot the tree fails the test under CI=true
(`missing`), never skips it.
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from tests.support.components import missing

#: Where the tree is kept between runs (CI keeps /var/cache).
ROOTFS = Path(os.environ.get("TIDINGS_CI_ROOTFS", "/var/cache/tidings-ci/bookworm"))
#: What the tree holds besides the default debootstrap variant (procps: `kill`
#: for ExecReload, guide pitfall 2; curl and openssl: what `curl | sh` and the
#: installer's signature check use).
PACKAGES = ("systemd", "dbus", "systemd-sysv", "procps", "curl", "ca-certificates", "openssl")
_STAMP = "etc/tidings-ci-rootfs"
_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
#: Boot takes ~0.3 s and halt ~0.2 s; these only bound a hung one.
BOOT_TIMEOUT_S = 60.0
HALT_TIMEOUT_S = 30.0
_names = itertools.count()


def ensure_rootfs() -> Path:
    """The cached tree, built with debootstrap when absent or built with other packages."""
    stamp = ",".join(PACKAGES)
    if (ROOTFS / _STAMP).is_file() and (ROOTFS / _STAMP).read_text().strip() == stamp:
        return ROOTFS
    for tool in ("debootstrap", "systemd-nspawn", "nsenter"):
        if shutil.which(tool) is None:
            missing(f"{tool} not found (apt-get install debootstrap systemd-container)")
    ROOTFS.parent.mkdir(parents=True, exist_ok=True)
    with open(ROOTFS.parent / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one builder; the others wait and reuse it
        if (ROOTFS / _STAMP).is_file() and (ROOTFS / _STAMP).read_text().strip() == stamp:
            return ROOTFS
        building = ROOTFS.with_name(ROOTFS.name + ".building")
        shutil.rmtree(building, ignore_errors=True)
        shutil.rmtree(ROOTFS, ignore_errors=True)
        done = subprocess.run(
            ["debootstrap", f"--include={stamp}", "bookworm", str(building), _mirror()],
            capture_output=True, text=True, check=False, timeout=900)
        if done.returncode != 0:
            missing(f"debootstrap failed: {done.stdout[-2000:]}{done.stderr[-2000:]}")
        subprocess.run(["chroot", str(building), "apt-get", "clean"], check=True,
                       capture_output=True, timeout=120)
        (building / _STAMP).write_text(stamp + "\n")
        building.rename(ROOTFS)
    return ROOTFS


def _mirror() -> str:
    """The Debian mirror of this machine's apt sources (the only network we have)."""
    sources = Path("/etc/apt/sources.list.d/debian.sources")
    if sources.is_file():
        for line in sources.read_text().splitlines():
            if line.startswith("URIs:"):
                return line.split()[1]
    return "http://deb.debian.org/debian"


class Container:
    """A booted container; `run` executes as root inside it with a clean environment."""

    def __init__(self, name: str, leader: int, log: Path) -> None:
        self.name = name
        self.leader = leader
        self.log = log

    def run(self, command: str | Sequence[str], *, check: bool = True, timeout: float = 120.0,
            stdin: str | None = None, env: dict[str, str] | None = None,
            ) -> subprocess.CompletedProcess[str]:
        """Run `command` (a list, or a str for ``sh -c``) in the container."""
        argv = ["sh", "-c", command] if isinstance(command, str) else list(command)
        extra = [f"{k}={v}" for k, v in (env or {}).items()]
        done = subprocess.run(["nsenter", "-t", str(self.leader), "-a", "env", "-i", _PATH,
                               "LANG=C.UTF-8", *extra, *argv],
                              capture_output=True, text=True, input=stdin, timeout=timeout,
                              check=False)
        if check and done.returncode != 0:
            raise AssertionError(f"in container {self.name}: {argv} exited {done.returncode}\n"
                                 f"stdout: {done.stdout[-3000:]}\nstderr: {done.stderr[-3000:]}")
        return done

    def path(self, inside: str) -> Path:
        """A path inside the container, as the host sees it (through the leader's root)."""
        return Path(f"/proc/{self.leader}/root") / inside.lstrip("/")

    def journal(self, unit: str, lines: int = 200) -> str:
        return self.run(["journalctl", "-u", unit, "-n", str(lines), "--no-pager"],
                        check=False).stdout


def _cgroups(name: str) -> list[Path]:
    return [Path("/sys/fs/cgroup") / h / f"nspawn-{name}" for h in ("systemd", "unified")
            if (Path("/sys/fs/cgroup") / h).is_dir()]


@contextmanager
def booted(hint: str, payload: Path | None = None, log_dir: Path | None = None,
           ) -> Iterator[Container]:
    """Boot a throwaway container from the cached tree; halt it afterwards.

    `payload` is visible read-only at /opt/payload inside.
    """
    root = ensure_rootfs()
    name = f"t{os.getpid() % 100000}{hint[:6]}{next(_names)}"
    groups = _cgroups(name)
    for group in groups:
        group.mkdir(exist_ok=True)
    log = (log_dir or Path("/tmp")) / f"nspawn-{name}.log"
    argv = ["systemd-nspawn", "-D", str(root), "--boot", f"--machine={name}",
            "--register=no", "--keep-unit", "--volatile=overlay", "--console=passive"]
    if payload is not None:
        argv.append(f"--bind-ro={payload}:/opt/payload")

    def own_cgroup() -> None:
        # One cgroup per container, so two can run at once (guide pitfall 4).
        for group in groups:
            (group / "cgroup.procs").write_text(str(os.getpid()))

    with open(log, "w") as out:
        nspawn = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out,
                                  stderr=subprocess.STDOUT, preexec_fn=own_cgroup)
    leader = None
    try:
        leader = _leader(nspawn, log)
        box = Container(name, leader, log)
        _wait_booted(box)
        yield box
    finally:
        _halt(nspawn, leader)
        _remove_cgroups(groups)


def _wait_booted(box: Container) -> None:
    """Until the container's systemd has finished booting.

    ``is-system-running --wait`` blocks until boot ends, but only once its
    bus answers; until then it says "offline" at once.  The host has no event
    for that moment (no machined), so the first phase polls (~0.2 s).
    """
    deadline = time.monotonic() + BOOT_TIMEOUT_S
    state = "offline"
    while state in ("offline", "") and time.monotonic() < deadline:
        state = box.run(["systemctl", "is-system-running"], check=False).stdout.strip()
        if state in ("offline", ""):
            time.sleep(0.05)
    if state in ("initializing", "starting"):
        state = box.run(["systemctl", "is-system-running", "--wait"], check=False,
                        timeout=BOOT_TIMEOUT_S).stdout.strip()
    if state not in ("running", "degraded"):
        raise AssertionError(f"container {box.name} did not boot: {state}\n"
                             f"{box.log.read_text()[-3000:]}")


def _leader(nspawn: subprocess.Popen[bytes], log: Path) -> int:
    """The container's PID 1 as the host sees it: nspawn's child."""
    children = Path(f"/proc/{nspawn.pid}/task/{nspawn.pid}/children")
    deadline = time.monotonic() + BOOT_TIMEOUT_S
    while time.monotonic() < deadline:
        if nspawn.poll() is not None:
            missing(f"systemd-nspawn exited {nspawn.returncode}: {log.read_text()[-3000:]}")
        try:
            found = children.read_text().split()
        except FileNotFoundError:
            found = []
        # nspawn's first child (the "outer child") lives a moment and exits; the
        # container's PID 1 is the child in another PID namespace.
        for pid in found:
            with contextlib.suppress(OSError):
                if os.readlink(f"/proc/{pid}/ns/pid") != os.readlink("/proc/self/ns/pid"):
                    return int(pid)
        # The leader appears milliseconds after nspawn forks; there is nothing to wait on.
        time.sleep(0.01)
    raise AssertionError(f"systemd-nspawn started no container: {log.read_text()[-3000:]}")


def _halt(nspawn: subprocess.Popen[bytes], leader: int | None) -> None:
    """SIGTERM asks nspawn for an orderly halt (~0.2 s); if it hangs, SIGKILL of the
    container's PID 1 ends its whole PID namespace, then nspawn exits."""
    if nspawn.poll() is None:
        nspawn.send_signal(signal.SIGTERM)
        try:
            nspawn.wait(timeout=HALT_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            if leader is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(leader, signal.SIGKILL)
            nspawn.kill()
            nspawn.wait()


def _remove_cgroups(groups: list[Path]) -> None:
    """Remove the container's cgroups, leaves first (the kernel frees them as its
    last processes are reaped, so an emptied one may stay busy a moment)."""
    for group in groups:
        if not group.exists():
            continue
        subs = sorted((p for p in group.rglob("*") if p.is_dir()),
                      key=lambda p: len(p.parts), reverse=True)
        for sub in [*subs, group]:
            for _ in range(100):
                try:
                    sub.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.02)
