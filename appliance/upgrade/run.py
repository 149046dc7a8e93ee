"""`tidings upgrade`: the steps, in the order that keeps a failure recoverable.

Before the swap nothing on the machine changes: fetch and verify the
release, compare versions, download and check the executable beside the
installed one, run it once.  Then: back up the store (`appliance.backup`,
the server still running), swap the executable, migrate the store with the
*new* executable, restart the service through systemd, health-check it
(`appliance.upgrade.health`).  Any failure after the swap rolls back
(`appliance.upgrade.rollback`).

The pre-upgrade backup leaves the media blobs out: an upgrade never
rewrites them (a rollback restores the store alone), and copying gigabytes
of uploads would only make the upgrade slower.
"""

from __future__ import annotations

import contextlib
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from appliance.backup.backup import BackupResult, create_backup, default_output
from appliance.backup.owner import Owner, switching
from appliance.backup.restore import ConfigLoader
from appliance.config import ApplianceConfig
from appliance.errors import ApplianceError, LifecycleError
from appliance.system.layout import SERVICE_UNIT
from appliance.system.systemd import systemctl, systemd_running, unit_property
from appliance.upgrade import executable as exe
from appliance.upgrade.fetch import Fetcher
from appliance.upgrade.health import probe_host, wait_healthy
from appliance.upgrade.release import Decision, Release, decide, fetch_release

#: A migration of a large store may take long (packaging.md §7.2).
MIGRATE_TIMEOUT_S: Final = 3600.0
HEALTH_DEADLINE_S: Final = 60.0
_LIVE_STATES: Final = frozenset({"active", "activating", "reloading"})


@dataclass(frozen=True, slots=True)
class Options:
    bin_path: Path
    config_path: Path | None
    base_url: str
    version: str | None
    allow_downgrade: bool
    timeout_s: float
    health_deadline_s: float = HEALTH_DEADLINE_S


@dataclass
class Report:
    """What happened, for the operator (and the tests)."""

    from_version: str
    to_version: str
    backup: Path | None = None
    restarted: bool = False
    #: systemd's: the old server's SIGTERM to the new one's READY=1.
    downtime_s: float | None = None
    rolled_back: bool = False
    rollback_s: float | None = None
    restored_store: bool = False
    saved_failed_store: Path | None = None
    failure: str = ""
    notes: list[str] = field(default_factory=list)


class Steps:
    """Says each step as it ends, with its duration and the time since the start."""

    def __init__(self, say: Callable[[str], None]) -> None:
        self.say = say
        self.started = time.monotonic()

    @contextlib.contextmanager
    def step(self, name: str) -> Iterator[None]:
        begun = time.monotonic()
        try:
            yield
        except BaseException:
            self.say(f"[{time.monotonic() - self.started:7.2f} s] FAILED {name}")
            raise
        self.say(f"[{time.monotonic() - self.started:7.2f} s] {name}"
                 f" ({time.monotonic() - begun:.2f} s)")


def check(opts: Options) -> tuple[str, Release, Decision]:
    """The installed version, the release offered and whether to install it (no change).

    Raises:
        ReleaseError / VerificationError: the release cannot be trusted.
        LifecycleError: the installed executable does not say its version.
    """
    current = exe.installed_version(opts.bin_path)
    release = fetch_release(Fetcher(opts.base_url, opts.timeout_s), opts.version)
    return current, release, decide(current, release.manifest,
                                    allow_downgrade=opts.allow_downgrade)


@dataclass
class Upgrade:
    """One run of the algorithm; `rollback` (its own module) reads the same state."""

    opts: Options
    config: ApplianceConfig
    load: ConfigLoader
    steps: Steps
    report: Report
    #: Wall-clock milliseconds (names and times of the backups).
    now_ms: Callable[[], int]
    release: Release | None = None
    backup: BackupResult | None = None
    swapped: bool = False

    @property
    def owner(self) -> Owner:
        return Owner.of(self.config.storage.data_dir)


def upgrade(opts: Options, config: ApplianceConfig, load: ConfigLoader,
            confirm: Callable[[Decision], bool], say: Callable[[str], None],
            now_ms: Callable[[], int]) -> Report:
    """Upgrade (or roll back); the report says which.

    Raises:
        LifecycleError: refused or failed before anything changed, or the
            rollback itself failed (the message says what state is left).
        ReleaseError / VerificationError: the release cannot be trusted.
    """
    steps = Steps(say)
    with exe.upgrade_lock(opts.bin_path):
        with steps.step("fetched and verified the release (signature, sums, manifest)"):
            current, release, decision = check(opts)
        run = Upgrade(opts, config, load, steps, Report(current, release.version), now_ms, release)
        say(decision.message)
        if not decision.proceed:
            if decision.verdict.value == "current":
                return run.report
            raise LifecycleError(decision.message, step="version check")
        if not confirm(decision):
            raise LifecycleError("cancelled by the operator", step="confirm")
        new = _prepare(run, release)
        # Imported now, before the swap: the one-file executable reads its modules
        # from its own file, by path, at each first import; once the new release
        # is at that path, importing the rollback would read the wrong archive
        # (zlib.error, seen on a real systemd).  Here, not at the top: a cycle.
        from appliance.upgrade.rollback import roll_back

        try:
            _switch(run, new)
        except ApplianceError as exc:
            run.report.failure = str(exc)
            roll_back(run)
        return run.report


def _prepare(run: Upgrade, release: Release) -> Path:
    """Download, check and smoke-test the new executable: nothing else changes."""
    bin_path = run.opts.bin_path
    with run.steps.step(f"downloaded {release.executable}"
                        f" ({release.manifest.files[release.executable].size / 1e6:.1f} MB),"
                        " size and sha256 match the signed sums"):
        new = exe.download(Fetcher(run.opts.base_url, run.opts.timeout_s), release, bin_path)
    try:
        with run.steps.step(f"the new executable runs and says {release.version}"):
            exe.smoke(new, release.version)
    except BaseException:
        new.unlink(missing_ok=True)
        raise
    return new


def _switch(run: Upgrade, new: Path) -> None:
    """Back up, swap, migrate, restart, health-check; raises on the first failure."""
    storage = run.config.storage
    label = f"pre-upgrade-{run.report.from_version}-to-{run.report.to_version}"
    try:
        with run.steps.step("backed up the store, configuration and keys (not the media"
                            " files: an upgrade never rewrites them)"):
            run.backup = create_backup(run.config, run.opts.config_path,
                                       default_output(storage.data_dir, run.now_ms(), label),
                                       run.now_ms(), media=False)
    except BaseException:
        new.unlink(missing_ok=True)
        raise
    run.report.backup = run.backup.path
    run.steps.say(f"  backup: {run.backup.path}")
    with run.steps.step(f"swapped the executable (the previous one kept as"
                        f" {exe.previous(run.opts.bin_path)})"):
        exe.swap(run.opts.bin_path, new)
        run.swapped = True
    with run.steps.step("migrated the store with the new executable"):
        migrate(run.opts.bin_path, run.opts.config_path, run.config, run.owner)
    restart_and_check(run, "new")


def migrate(bin_path: Path, config_path: Path | None, config: ApplianceConfig,
            owner: Owner) -> None:
    """``<bin> [--config C] --data-dir D db migrate``, as the store's owner.

    Raises:
        LifecycleError: it failed (its own words).
    """
    cmd = [str(bin_path), *(["--config", str(config_path)] if config_path else []),
           "--data-dir", str(config.storage.data_dir), "db", "migrate"]
    as_user = {"user": owner.uid, "group": owner.gid, "extra_groups": []} \
        if switching(owner) else {}
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, env=exe.tidings_env(),
                              timeout=MIGRATE_TIMEOUT_S, check=False, **as_user)  # type: ignore[call-overload]
    except subprocess.TimeoutExpired:
        raise LifecycleError(f"no result within {MIGRATE_TIMEOUT_S:.0f} s", step="migrate"
                             ) from None
    if done.returncode != 0:
        raise LifecycleError((done.stderr or done.stdout).strip()[-1500:]
                             or f"exit {done.returncode}", step="migrate")


def service_live() -> bool:
    """Whether systemd runs tidings.service now (else nothing is restarted)."""
    return systemd_running() and unit_property(SERVICE_UNIT, "ActiveState") in _LIVE_STATES


def restart_and_check(run: Upgrade, which: str, *, start: bool = False,
                      force: bool = False) -> None:
    """Restart (or start) the service and wait until it is healthy; note the downtime.

    Unless `force`d (a rollback after a restart), a service systemd does not
    run here is left alone.
    """
    if not (start or force or service_live()):
        run.report.notes.append(f"{SERVICE_UNIT} is not running under systemd here: not"
                                " restarted; restart the server to run the new version")
        return
    # Set before asking: a failed restart has stopped the old server all the same,
    # and the rollback must start it again.
    run.report.restarted = True
    with run.steps.step(f"{'started' if start else 'restarted'} {SERVICE_UNIT} ({which}"
                        " version; systemctl waits for READY=1)"):
        systemctl("start" if start else "restart", SERVICE_UNIT)
    if not start and which == "new":
        run.report.downtime_s = downtime()
    server = run.config.server
    with run.steps.step(f"healthy: HTTPS /v1/health and a native HELLO on port {server.port}"):
        wait_healthy(probe_host(server.host), server.port, run.opts.health_deadline_s)


def downtime() -> float | None:
    """systemd's own clock: the old main process left `active` (SIGTERM) to the new
    one's READY=1, in seconds; None when systemd does not say."""
    left = unit_property(SERVICE_UNIT, "ActiveExitTimestampMonotonic")
    back = unit_property(SERVICE_UNIT, "ActiveEnterTimestampMonotonic")
    if not (left.isdigit() and back.isdigit()) or int(back) <= int(left) or not int(left):
        return None
    return (int(back) - int(left)) / 1e6
