"""What the top-level options hand to every subcommand."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from appliance.config import ApplianceConfig, load_config


@dataclass(frozen=True, slots=True)
class CliContext:
    """Global options of the `tidings` command."""

    config_path: Path | None
    data_dir: Path | None
    database: str | None
    debug: bool

    def config(self, **overrides: Any) -> ApplianceConfig:
        """Load the configuration with these ``section.key`` overrides applied."""
        merged: dict[str, Any] = {"storage.data_dir": self.data_dir,
                                  "storage.database": self.database}
        merged.update({k.replace("__", "."): v for k, v in overrides.items()})
        return load_config(self.config_path, merged)
