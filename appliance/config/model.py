"""The configuration tree.  Units are in the field names."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from appliance.edge.config import EdgeConfig
from appliance.engine.ports import EngineLimits

#: The port `tidings serve` listens on when none is configured.
DEFAULT_PORT = 7447


def default_data_dir() -> Path:
    """Where the embedded store lives unless configured (README documents it).

    Root (the systemd service): /var/lib/tidings.  Anyone else:
    $XDG_DATA_HOME/tidings, i.e. ~/.local/share/tidings by default.
    """
    if os.geteuid() == 0:
        return Path("/var/lib/tidings")
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "tidings"


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """``[server]``: where to listen.  127.0.0.1 unless told otherwise."""

    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    shutdown_timeout_s: float = 10.0
    #: A second, plain-HTTP port that redirects to HTTPS on `port` (usually 80;
    #: -1 = none, 0 = any free port).
    redirect_port: int = -1


@dataclass(frozen=True, slots=True)
class StorageConfig:
    """``[storage]``: the data directory and the database (`appliance.config.database`)."""

    data_dir: Path = field(default_factory=default_data_dir)
    #: "" = what the data directory records, else SQLite; see `parse_database`.
    database: str = ""
    #: Bound on every call to a MariaDB server (connect, read, write).
    timeout_s: float = 10.0


@dataclass(frozen=True, slots=True)
class TlsConfig:
    """``[tls]``: certificate and key files (PEM) for TLS on the server's port.

    Both empty: a self-signed certificate is generated once in
    ``<data_dir>/tls/``.
    """

    cert: str = ""
    key: str = ""


@dataclass(frozen=True, slots=True)
class ApplianceConfig:
    """The whole configuration."""

    server: ServerConfig = field(default_factory=ServerConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    limits: EngineLimits = field(default_factory=EngineLimits)
    tls: TlsConfig = field(default_factory=TlsConfig)
    edge: EdgeConfig = field(default_factory=EdgeConfig)
