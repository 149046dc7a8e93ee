"""`tidings doctor`: check the host and the installation, with a fix for each problem."""

from __future__ import annotations

import json

import click

from appliance.cli.context import CliContext
from appliance.doctor.registry import examine, exit_code, lines, run_checks
from appliance.engine.clock import SystemClock


@click.command("doctor")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (for scripts).")
@click.pass_obj
def doctor(ctx: CliContext, as_json: bool) -> None:
    """Check the certificate, the store (reachable, migrated, durable), free disk, the
    file-descriptor limit, the clock, the ports, the data directory's permissions and the
    image workers.

    Each check says ok, warn or fail, and how to fix what is not ok.  Exit
    status 1 when any check fails.  Changes nothing.
    """
    subject = examine(ctx.config(), SystemClock().wall_ms(), ctx.config_file())
    findings = run_checks(subject)
    if as_json:
        click.echo(json.dumps({"checks": [f.to_dict() for f in findings],
                               "exit_code": exit_code(findings)}, indent=2))
    else:
        click.echo("\n".join(lines(findings)))
    raise SystemExit(exit_code(findings))
