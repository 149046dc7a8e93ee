"""What the global options hand to every subcommand."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

from appliance.config import ApplianceConfig, load_config
from appliance.system import layout

#: Read when no --config (or TIDINGS_CONFIG) is given and it is readable, so that
#: `sudo tidings status` on an installed host sees the installed configuration.
DEFAULT_CONFIG = layout.CONFIG_FILE


@dataclass(slots=True)
class CliContext:
    """Global options of the `tidings` command.

    One object shared by the whole command line: the options may come before
    the command or after it (`appliance.cli.options`), and `given` records
    which were given on the command line (so a second, different value is
    refused rather than one silently winning).
    """

    config_path: Path | None
    data_dir: Path | None
    database: str | None
    debug: bool
    given: set[str] = field(default_factory=set)
    _noted: bool = False

    def config_file(self) -> Path | None:
        """The configuration file to read: --config, else `DEFAULT_CONFIG` when readable."""
        if self.config_path is not None:
            return self.config_path
        try:
            with DEFAULT_CONFIG.open("rb"):
                return DEFAULT_CONFIG
        except FileNotFoundError:
            return None
        except OSError:
            pass  # there, but not for this user
        if self.data_dir is None and not self._noted:
            self._noted = True
            click.echo(f"tidings: note: {DEFAULT_CONFIG} is not readable by this user; going"
                       " on without it (run with sudo, or pass --config)", err=True)
        return None

    def config(self, **overrides: Any) -> ApplianceConfig:
        """Load the configuration with these ``section.key`` overrides applied."""
        merged: dict[str, Any] = {"storage.data_dir": self.data_dir,
                                  "storage.database": self.database}
        merged.update({k.replace("__", "."): v for k, v in overrides.items()})
        return load_config(self.config_file(), merged)
