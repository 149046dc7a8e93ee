"""Configuration: frozen dataclasses, loaded from defaults, TOML, env and flags."""

from __future__ import annotations

from appliance.config.load import load_config
from appliance.config.model import (
    ApplianceConfig,
    ServerConfig,
    TransportConfig,
    default_data_dir,
)

__all__ = ["ApplianceConfig", "ServerConfig", "TransportConfig", "default_data_dir",
           "load_config"]
