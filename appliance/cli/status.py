"""`tidings status`: is the server running, and how is it doing."""

from __future__ import annotations

import json

import click

from appliance.cli.context import CliContext
from appliance.engine.clock import SystemClock
from appliance.errors import ConfigError
from appliance.status.text import lines
from appliance.status.view import EXIT_CODES, Verdict, gather


@click.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (for scripts).")
@click.pass_obj
def status(ctx: CliContext, as_json: bool) -> None:
    """Version, uptime, listeners, connections, queue, store and certificate of the
    running server, from its status file, checked with a live GET /v1/health.

    \b
    Exit status (as init scripts' "status"):
      0  running and answering
      1  running but unwell: starting, stopping, not responding, unhealthy
      3  not running
      4  unknown (the status file cannot be read: try sudo)
    """
    now_ms = SystemClock().wall_ms()
    try:
        data_dir = ctx.config().storage.data_dir
    except ConfigError as exc:
        # Not the usual exit 3 of a bad configuration: 3 means "not running" here.
        click.echo(f"tidings: error: {exc}", err=True)
        raise SystemExit(EXIT_CODES[Verdict.UNKNOWN]) from None
    view = gather(data_dir, now_ms)
    if as_json:
        click.echo(json.dumps(view.to_dict(), indent=2))
    else:
        click.echo("\n".join(lines(view, now_ms)))
    raise SystemExit(view.exit_code)
