"""Rolling a failed upgrade back: the previous executable, the store if needed, a restart.

The store is restored from the pre-upgrade backup only when its schema is no
longer the backup's (a migration ran, wholly or in part): the previous
version may not run on a schema it does not know.  When no migration ran,
the store stays as it is, with everything written since the backup, and the
previous version runs on it.

When the store is restored, what the new version wrote between the backup
and the failure is not in the restored store: the service is stopped first,
then the store as the failure left it is saved to
``<data dir>/backups/failed-upgrade-<version>-<time>.tar.gz`` (reported), so
nothing acknowledged is destroyed, and an operator can recover it.  Messages
accepted in that window are then not delivered by the rolled-back server.
"""

from __future__ import annotations

import time

from appliance.backup.backup import create_backup, default_output
from appliance.backup.restore import restore
from appliance.backup.store import current_schema
from appliance.config.database import resolve_database
from appliance.errors import ApplianceError, LifecycleError
from appliance.system.layout import SERVICE_UNIT
from appliance.system.systemd import systemctl
from appliance.upgrade import executable as exe
from appliance.upgrade.run import Upgrade, restart_and_check, service_live


def roll_back(run: Upgrade) -> None:
    """Undo `run` after its failure (in `run.report.failure`); fills in the report.

    Raises:
        LifecycleError: the rollback itself failed; its message says what is left.
    """
    report, steps = run.report, run.steps
    steps.say(f"upgrade failed: {report.failure}")
    steps.say("rolling back")
    began = time.monotonic()
    report.rolled_back = True
    try:
        if run.swapped:
            with steps.step(f"put the previous executable back ({report.from_version})"):
                exe.swap_back(run.opts.bin_path)
        stopped = False
        if _store_changed(run):
            stopped = _restore_store(run)
        if report.restarted or stopped:
            restart_and_check(run, "previous", start=stopped, force=True)
    except ApplianceError as exc:
        raise LifecycleError(f"{exc}; the upgrade failed first: {report.failure}",
                             step="rollback", fix=f"restore {report.backup} with `tidings"
                             " restore --force` and start the service") from None
    report.rollback_s = time.monotonic() - began


def _store_changed(run: Upgrade) -> bool:
    """Whether the store's schema moved since the backup (unknown counts as moved)."""
    assert run.backup is not None
    storage = run.config.storage
    location = resolve_database(storage.database, storage.data_dir)
    try:
        now = current_schema(location, storage.data_dir, run.owner, storage.timeout_s)
    except ApplianceError as exc:
        run.steps.say(f"  cannot read the store's schema ({exc}): restoring it to be safe")
        return True
    before = run.backup.manifest.schema_version
    if now == before:
        run.steps.say(f"  the store's schema is still {before}: it stays as it is")
        return False
    run.steps.say(f"  the store's schema moved from {before} to {now}: restoring it")
    return True


def _restore_store(run: Upgrade) -> bool:
    """Stop the service, save the store as it is, restore the backup's; True if stopped."""
    assert run.backup is not None
    report, steps = run.report, run.steps
    stopped = service_live()
    if stopped:
        with steps.step(f"stopped {SERVICE_UNIT}"):
            systemctl("stop", SERVICE_UNIT)
    storage = run.config.storage
    try:
        with steps.step("saved the store as the failure left it"):
            saved = create_backup(run.config, run.opts.config_path, default_output(
                storage.data_dir, run.now_ms(), f"failed-upgrade-{report.to_version}"),
                run.now_ms(), media=False)
        report.saved_failed_store = saved.path
    except ApplianceError as exc:
        steps.say(f"  could not save it ({exc}); restoring the backup all the same")
    with steps.step(f"restored the store from {run.backup.path.name}"):
        restore(run.backup.path, run.opts.config_path, run.load, force=True,
                now_ms=run.now_ms(), store_only=True)
    report.restored_store = True
    return stopped
