"""The `tidings` command: thin click wrappers over `appliance.app` and services.

Every option is also an environment variable (``TIDINGS_<COMMAND>_<OPTION>``,
click's auto_envvar_prefix), which suits systemd units.  Errors of the
appliance become one line on stderr and a non-zero exit; tracebacks only
with ``--debug``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import click

from appliance import __version__
from appliance.cli.apps import app_group, operator_group
from appliance.cli.backup import backup, restore
from appliance.cli.certs import cert
from appliance.cli.client import client
from appliance.cli.context import CliContext
from appliance.cli.db import db
from appliance.cli.groups import group
from appliance.cli.ipfilter import ipfilter
from appliance.cli.logs import configure as configure_logging
from appliance.cli.serve import serve
from appliance.cli.setup import setup
from appliance.cli.upgrade import upgrade
from appliance.cli.users import user
from appliance.errors import ApplianceError, ConfigError, NotFoundError, UsageError

#: Files 0600, directories 0700.
PRIVATE_UMASK = 0o077
#: Exit codes: 1 generic failure, 2 usage (click's own), 3 configuration, 4 not found.
_EXIT = {ConfigError: 3, NotFoundError: 4, UsageError: 2}


class _Main(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ApplianceError as exc:
            if ctx.obj is not None and ctx.obj.debug:
                raise
            click.echo(f"tidings: error: {exc}", err=True)
            code = next((c for t, c in _EXIT.items() if isinstance(exc, t)), 1)
            sys.exit(code)


@click.group(cls=_Main, context_settings={"auto_envvar_prefix": "TIDINGS",
                                          "show_default": True})
@click.version_option(__version__, prog_name="tidings")
@click.option("--config", "config_path", type=click.Path(path_type=Path, dir_okay=False),
              envvar="TIDINGS_CONFIG", help="TOML configuration file.")
@click.option("--data-dir", type=click.Path(path_type=Path, file_okay=False),
              help="Data directory (default: /var/lib/tidings as root,"
                   " else ~/.local/share/tidings).")
@click.option("--database", envvar="TIDINGS_DATABASE",
              help="Database: sqlite, private, a MariaDB socket path or a mariadb:// URL"
                   " (default: what 'tidings db bootstrap' recorded, else sqlite).")
@click.option("--debug", is_flag=True, help="Show tracebacks and debug logs.")
@click.pass_context
def main(ctx: click.Context, config_path: Path | None, data_dir: Path | None,
         database: str | None, debug: bool) -> None:
    """Tidings: a self-hosted real-time messaging appliance."""
    # Everything this process creates (data directory, database, WAL, keys,
    # certificates) is the operator's alone, whatever umask it was started
    # under (issue 12: umask 022 left the database world-readable).
    os.umask(PRIVATE_UMASK)
    configure_logging(debug=debug)
    ctx.obj = CliContext(config_path, data_dir, database, debug)


main.add_command(serve)
main.add_command(app_group)
main.add_command(operator_group)
main.add_command(client)
main.add_command(user)
main.add_command(group)
main.add_command(db)
main.add_command(ipfilter)
main.add_command(cert)
main.add_command(backup)
main.add_command(restore)
main.add_command(upgrade)
main.add_command(setup)
