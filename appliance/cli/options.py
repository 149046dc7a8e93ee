"""Global options before or after the command: `tidings --data-dir D serve` and
`tidings serve --data-dir D` mean the same (issue 14: the second was refused).

Each command and group also accepts the global options; their callback
sets the value on the shared `CliContext`.  Given twice on the command line
with different values (``tidings --data-dir A serve --data-dir B``) is a
usage error naming both, never a silent choice; a command-line value does
override an environment variable (``TIDINGS_DATA_DIR``) or the default
configuration file.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource

from appliance.cli.context import DEFAULT_CONFIG, CliContext
from appliance.cli.logs import configure as configure_logging


@dataclass(frozen=True, slots=True)
class GlobalOption:
    """One global option: its flag, the `CliContext` field it sets, click's settings, and
    the environment variable the top-level command reads it from."""

    flag: str
    name: str
    settings: dict[str, Any]
    envvar: str


GLOBAL_OPTIONS: tuple[GlobalOption, ...] = (
    GlobalOption("--config", "config_path", {
        "type": click.Path(path_type=Path, dir_okay=False),
        "help": f"TOML configuration file (default: {DEFAULT_CONFIG} when it exists and is"
                " readable; --config /dev/null for none)."}, "TIDINGS_CONFIG"),
    GlobalOption("--data-dir", "data_dir", {
        "type": click.Path(path_type=Path, file_okay=False),
        "help": "Data directory (default: /var/lib/tidings as root,"
                " else ~/.local/share/tidings)."}, "TIDINGS_DATA_DIR"),
    GlobalOption("--database", "database", {
        "help": "Database: sqlite, private, a MariaDB socket path or a mariadb:// URL"
                " (default: what 'tidings db bootstrap' recorded, else sqlite)."},
        "TIDINGS_DATABASE"),
    GlobalOption("--debug", "debug", {"is_flag": True,
                                      "help": "Show tracebacks and debug logs."},
                 "TIDINGS_DEBUG"),
)


def record_given(ctx: click.Context, obj: CliContext) -> None:
    """Note which global options the top-level command got on the command line."""
    for option in GLOBAL_OPTIONS:
        if ctx.get_parameter_source(option.name) is ParameterSource.COMMANDLINE:
            obj.given.add(option.name)


def _same(a: object, b: object) -> bool:
    if isinstance(a, Path) and isinstance(b, Path):
        return a.resolve() == b.resolve()
    return a == b


def _set(ctx: click.Context, param: click.Parameter, value: Any) -> None:
    """A global option given after a command: set it on the shared context."""
    if value is None or value is False or param.name is None:
        return
    obj = ctx.find_object(CliContext)
    if obj is None:  # resilient parsing (shell completion): nothing to set
        return
    name = param.name
    current = getattr(obj, name)
    if name in obj.given and not _same(current, value):
        flag = param.opts[0]
        raise click.UsageError(f"{flag} given twice with different values ({current} and"
                               f" {value}); give it once", ctx=ctx)
    setattr(obj, name, value)
    obj.given.add(name)
    if name == "debug":
        logging.getLogger().setLevel(logging.DEBUG)  # logging was set up before this option
        configure_logging(debug=True)


def _options() -> list[click.Option]:
    return [click.Option([option.flag, option.name], callback=_set, expose_value=False,
                         allow_from_autoenv=False, show_default=False, **option.settings)
            for option in GLOBAL_OPTIONS]


def accept_global_options(command: click.Command) -> click.Command:
    """Let `command` (and, for a group, every command under it) take the global options
    too; options it has already are left alone."""
    taken = {opt for param in command.params for opt in param.opts}
    command.params.extend(o for o in _options() if not taken & set(o.opts))
    if isinstance(command, click.Group):
        for sub in command.commands.values():
            accept_global_options(sub)
    return command
