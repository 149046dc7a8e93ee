"""The configuration tree.  Units are in the field names."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from appliance.certs.config import AcmeConfig
from appliance.config.limits import EngineLimits
from appliance.edge.config import EdgeConfig
from appliance.media.config import MediaConfig
from appliance.metrics.config import MetricsConfig

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
    #: The public DNS name clients reach this server by ("" = not said).  Written
    #: by `tidings setup`; shown in the commands it prints.
    hostname: str = ""
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
class TransportConfig:
    """``[transport]``: what one peer may cost the server (issue 12), and its deadlines.

    A peer that does not read its answers is not read from once its output
    passes `output_high_water_bytes`, and is closed (SLOW_CONSUMER, or HTTP's
    GOAWAY/close) when its output passes `max_output_bytes` or stays above the
    high-water mark for `send_timeout_s`.
    """

    #: Native, TLS and WebSocket connections must complete HELLO (or the TLS
    #: handshake) within this many seconds (slowloris bound).
    handshake_timeout_s: float = 10.0
    #: HTTP: a whole request (headers and body) must arrive within this many
    #: seconds of its first byte; the first request, of the connection's start.
    request_timeout_s: float = 10.0
    #: HTTP: a connection with no request in progress is closed after this many
    #: seconds (PINGs do not count); no deadline while the server answers.
    keepalive_timeout_s: float = 30.0
    #: Output buffered for one peer above which it is no longer read from.
    output_high_water_bytes: int = 256 * 1024
    #: Output buffered for one peer above which it is closed as a slow consumer.
    #: Reliable messages are stored and redelivered on reconnect; keep this above
    #: what a burst of `limits.window` messages to a device may take.
    max_output_bytes: int = 8 * 1024 * 1024
    #: A peer whose output stays above the high-water mark this long is closed.
    send_timeout_s: float = 30.0
    #: HTTP/2 request bodies: bytes one connection may have in flight (flow-control
    #: credit is granted only within this), and the whole server.
    h2_body_bytes_per_connection: int = 2 * 1024 * 1024
    h2_body_bytes_total: int = 16 * 1024 * 1024
    #: HTTP/2 control frames (PING, SETTINGS, WINDOW_UPDATE, PRIORITY, RST_STREAM,
    #: empty DATA/HEADERS) a connection may send per second, and the burst it may
    #: save up; past them the connection ends with GOAWAY ENHANCE_YOUR_CALM.
    h2_control_frames_per_s: float = 200.0
    h2_control_frame_burst: int = 1000


@dataclass(frozen=True, slots=True)
class ApplianceConfig:
    """The whole configuration."""

    server: ServerConfig = field(default_factory=ServerConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    limits: EngineLimits = field(default_factory=EngineLimits)
    tls: TlsConfig = field(default_factory=TlsConfig)
    edge: EdgeConfig = field(default_factory=EdgeConfig)
    transport: TransportConfig = field(default_factory=TransportConfig)
    acme: AcmeConfig = field(default_factory=AcmeConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    media: MediaConfig = field(default_factory=MediaConfig)
