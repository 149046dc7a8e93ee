"""`tidings upgrade` (`appliance.upgrade`)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from appliance.cli.backup import config_at, config_file
from appliance.cli.context import CliContext
from appliance.engine.clock import SystemClock
from appliance.release.manifest import parse_version
from appliance.system.layout import BIN
from appliance.upgrade.fetch import DEFAULT_BASE_URL, DEFAULT_TIMEOUT_S
from appliance.upgrade.release import Decision
from appliance.upgrade.run import Options, Report, check, upgrade as run_upgrade

#: `--check`: a newer release exists (as `dnf check-update` says so).
EXIT_AVAILABLE = 100


@click.command("upgrade")
@click.option("--check", "check_only", is_flag=True,
              help="Only say whether a newer release exists (exit 0: up to date,"
                   f" {EXIT_AVAILABLE}: one is available); change nothing.")
@click.option("--version", "version", metavar="X.Y.Z", help="Install this release"
              " (default: the latest).")
@click.option("--allow-downgrade", is_flag=True,
              help="Install an older release, or the installed one again.")
@click.option("--base-url", default=DEFAULT_BASE_URL, envvar="TIDINGS_BASE_URL",
              help="Where releases are published (https; http only to this machine).")
@click.option("--yes", is_flag=True, help="Do not ask before upgrading.")
@click.option("--bin", "bin_path", type=click.Path(path_type=Path, dir_okay=False),
              default=BIN, help="The installed executable.")
@click.option("--timeout", "timeout_s", type=click.FloatRange(0.1, 600),
              default=DEFAULT_TIMEOUT_S, help="Seconds one network read may take.")
@click.pass_obj
def upgrade(ctx: CliContext, check_only: bool, version: str | None, allow_downgrade: bool,
            base_url: str, yes: bool, bin_path: Path, timeout_s: float) -> None:
    """Upgrade to a newer signed release: verify, back up, swap, migrate,
    restart, health-check, and roll back on any failure."""
    path = config_file(ctx)
    opts = Options(bin_path.absolute(), path, base_url, version, allow_downgrade, timeout_s)
    if check_only:
        current, release, decision = check(opts)
        newer = parse_version(release.version) > parse_version(current)
        click.echo(f"installed: {current}; the release server offers {release.version}")
        click.echo(decision.message if newer else f"up to date: nothing newer than {current}")
        sys.exit(EXIT_AVAILABLE if newer else 0)

    def confirm(decision: Decision) -> bool:
        if yes:
            return True
        if not sys.stdin.isatty():
            click.echo("not a terminal: pass --yes to upgrade without asking", err=True)
            return False
        return click.confirm(f"Upgrade {decision.message}?", default=False)

    clock = SystemClock()
    report = run_upgrade(opts, config_at(ctx, path), lambda p: config_at(ctx, p), confirm,
                         click.echo, clock.wall_ms)
    _summary(report)
    if report.rolled_back:
        sys.exit(1)


def _summary(report: Report) -> None:
    for note in report.notes:
        click.echo(f"note: {note}")
    if report.rolled_back:
        click.echo(f"ROLLED BACK to {report.from_version} in {report.rollback_s:.2f} s:"
                   f" {report.failure}", err=True)
        if report.restored_store:
            click.echo(f"the store was restored from {report.backup}", err=True)
        if report.saved_failed_store:
            click.echo(f"what {report.to_version} wrote is saved in"
                       f" {report.saved_failed_store}", err=True)
        return
    if report.backup is None:
        return  # already up to date: said so
    downtime = "" if report.downtime_s is None else \
        f"; downtime {report.downtime_s:.2f} s (SIGTERM of {report.from_version} to READY=1" \
        f" of {report.to_version}, by systemd)"
    click.echo(f"upgraded {report.from_version} -> {report.to_version}{downtime}")
