"""`tidings setup`: the guided wizard (`appliance.setup`)."""

from __future__ import annotations

from pathlib import Path

import click

from appliance.cli.context import CliContext
from appliance.setup import answers as q
from appliance.setup.answers import from_flags
from appliance.setup.wizard import Options, run
from appliance.system import layout


@click.command("setup")
@click.option(q.HOSTNAME.flag, help=q.HOSTNAME.prompt + ".")
@click.option(q.HOSTNAME_NOT_LOCAL_OK.flag, is_flag=True, default=None,
              help=q.HOSTNAME_NOT_LOCAL_OK.prompt + ".")
@click.option(q.TLS.flag, help=q.TLS.prompt + ".")
@click.option(q.ACME_EMAIL.flag, help=q.ACME_EMAIL.prompt + ".")
@click.option(q.CERT.flag, help=q.CERT.prompt + ".")
@click.option(q.KEY.flag, help=q.KEY.prompt + ".")
@click.option(q.LISTEN_ADDRESS.flag, help=q.LISTEN_ADDRESS.prompt + ".")
@click.option(q.PORT.flag, help=q.PORT.prompt + " (default 443).")
@click.option(q.HTTP_PORT.flag, help=q.HTTP_PORT.prompt + " (default 80).")
@click.option(q.DATABASE.flag, help=q.DATABASE.prompt + " (default sqlite).")
@click.option(q.APP.flag, help=q.APP.prompt + ".")
@click.option("--answers", "answers_file", type=click.Path(path_type=Path, dir_okay=False),
              help="A TOML answers file (keys as --print-answers writes them).")
@click.option("--yes", "--non-interactive", "-y", "unattended", is_flag=True,
              help="Ask nothing: every answer from flags, the answers file, the existing"
                   " configuration or the defaults.")
@click.option("--print-answers", is_flag=True,
              help="Print the answers file equivalent of the current configuration (and"
                   " the flags given), change nothing.")
@click.option("--no-start", is_flag=True,
              help="Do not enable or start the service (hosts without systemd).")
@click.pass_obj
def setup(ctx: CliContext, /, answers_file: Path | None, unattended: bool, print_answers: bool,
          no_start: bool, **flags: str | bool | None) -> None:
    """Set up this machine's tidings: hostname, TLS, ports, database, first app.

    Flags answer the questions (flag > answers file > existing configuration > default);
    the rest are asked on the terminal, even when stdin is a pipe.  Everything is
    checked before the configuration is written.
    """
    if flags.get("database") is None and ctx.database is not None:
        flags["database"] = ctx.database  # `tidings --database X setup` says the same
    options = Options(config_path=ctx.config_path or layout.CONFIG_FILE,
                      data_dir=ctx.data_dir, flags=from_flags(flags),
                      answers_file=answers_file, unattended=unattended,
                      print_answers=print_answers, start=not no_start)
    run(options, click.echo)
