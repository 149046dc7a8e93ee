"""The `tidings` command: thin click wrappers over `appliance.app` and services.

Every option is also an environment variable (``TIDINGS_<COMMAND>_<OPTION>``,
click's auto_envvar_prefix), which suits systemd units.  Errors of the
appliance become one line on stderr and a non-zero exit; tracebacks only
with ``--debug``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from appliance import __version__
from appliance.cli.apps import app_group, operator_group
from appliance.cli.backup import backup, restore
from appliance.cli.certs import cert
from appliance.cli.client import client
from appliance.cli.completion import COMPLETE_VAR, completion
from appliance.cli.context import CliContext
from appliance.cli.db import db
from appliance.cli.doctor import doctor
from appliance.cli.groups import group
from appliance.cli.ipfilter import ipfilter
from appliance.cli.logs import FORMATS as LOG_FORMATS, configure as configure_logging
from appliance.cli.options import GLOBAL_OPTIONS, accept_global_options, record_given
from appliance.cli.serve import serve
from appliance.cli.setup import setup
from appliance.cli.status import status
from appliance.cli.upgrade import upgrade
from appliance.cli.users import user
from appliance.errors import ApplianceError, ConfigError, NotFoundError, UsageError

#: Files 0600, directories 0700.
PRIVATE_UMASK = 0o077
#: Exit codes: 1 generic failure, 2 usage (click's own), 3 configuration, 4 not found.
_EXIT = {ConfigError: 3, NotFoundError: 4, UsageError: 2}


class _Main(click.Group):
    def main(self, *args: Any, **kwargs: Any) -> Any:
        # One name however it was started (`tidings`, `python -m appliance`, the
        # frozen executable): usage lines and shell completion (_TIDINGS_COMPLETE).
        kwargs.setdefault("prog_name", "tidings")
        kwargs.setdefault("complete_var", COMPLETE_VAR)
        return super().main(*args, **kwargs)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ApplianceError as exc:
            if ctx.obj is not None and ctx.obj.debug:
                raise
            click.echo(f"tidings: error: {exc}", err=True)
            code = next((c for t, c in _EXIT.items() if isinstance(exc, t)), 1)
            sys.exit(code)


def _global_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    for option in reversed(GLOBAL_OPTIONS):
        fn = click.option(option.flag, option.name, envvar=option.envvar,
                          **option.settings)(fn)
    return fn


@click.group(cls=_Main, context_settings={"auto_envvar_prefix": "TIDINGS",
                                          "show_default": True})
@click.version_option(__version__, prog_name="tidings")
@_global_options
# Logging is set up before any command runs, so this one goes before the command only.
@click.option("--log-format", type=click.Choice(LOG_FORMATS), default="text",
              envvar="TIDINGS_LOG_FORMAT",
              help="Log lines on stderr: text, or JSON objects (ts, level, logger, msg, exc).")
@click.pass_context
def main(ctx: click.Context, config_path: Path | None, data_dir: Path | None,
         database: str | None, debug: bool, log_format: str) -> None:
    """Tidings: a self-hosted real-time messaging appliance.

    The options above may also follow the command (tidings serve --data-dir D).
    Each is also an environment variable (TIDINGS_CONFIG, TIDINGS_DATA_DIR,
    TIDINGS_DATABASE); without --config, /etc/tidings/tidings.toml is read when
    it exists and is readable.
    """
    # Everything this process creates (data directory, database, WAL, keys,
    # certificates) is the operator's alone, whatever umask it was started
    # under (issue 12: umask 022 left the database world-readable).
    os.umask(PRIVATE_UMASK)
    configure_logging(debug=debug, log_format=log_format)
    ctx.obj = CliContext(config_path, data_dir, database, debug)
    record_given(ctx, ctx.obj)


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
main.add_command(completion)
main.add_command(status)
main.add_command(doctor)

# Last, once every command is registered: each takes the global options too.
for _command in main.commands.values():
    accept_global_options(_command)
