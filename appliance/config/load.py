"""Load configuration: defaults, then a TOML file, then overrides; validate.

Unknown keys and wrong types are errors that name the key
(``ConfigError(..., key_path="limits.max_devices")``), never ignored.
"""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path
from typing import Any

from appliance.certs.config import check as check_acme, is_dns_name
from appliance.config.database import parse_database
from appliance.config.model import ApplianceConfig
from appliance.edge.config import check as check_edge
from appliance.errors import ConfigError
from appliance.media.config import check as check_media
from appliance.metrics.config import check as check_metrics
from appliance.protocol.wire.constants import U32_MAX

_POSITIVE = {"port": 0, "max_devices": 1, "max_payload_bytes": 1, "window": 1,
             "max_expiry_s": 1, "keepalive_s": 1,
             "max_frame_bytes": 64, "sweep_interval_s": 0.01, "shutdown_timeout_s": 0,
             "max_unconfirmed": 2, "max_pending_relays": 2, "timeout_s": 0.1,
             # a whole REST batch (`api.messages.MAX_BATCH`) must fit
             "max_submitted": 1000, "max_app_submitted": 1000, "commit_max_submitted": 1,
             "credentials_poll_s": 0.05,
             # quotas (appliance.engine.quotas)
             "send_rate_per_s": 0.01, "send_burst": 1, "max_queued_messages": 1,
             "max_queued_bytes": 1, "max_app_queued_bytes": 1, "device_stale_s": 60,
             "device_registrations_per_hour": 0.01, "device_registration_burst": 1,
             "max_rate_users": 100, "fanout_rate_per_s": 0.01, "fanout_burst": 1,
             "commit_max_fanout": 1,
             # presence and blocking (appliance.engine.presence)
             "max_presence_subscriptions": 1, "typing_timeout_s": 1,
             "presence_rate_per_s": 0.01, "presence_burst": 1, "max_cached_blocks": 100,
             # [transport] (appliance.transport.bounds)
             "handshake_timeout_s": 0.1, "request_timeout_s": 0.1, "keepalive_timeout_s": 0.1,
             "send_timeout_s": 0.1, "output_high_water_bytes": 4096, "max_output_bytes": 65536,
             "h2_body_bytes_per_connection": 65536, "h2_body_bytes_total": 65536,
             "h2_control_frames_per_s": 1, "h2_control_frame_burst": 10,
             # [media] (appliance.media.config)
             "max_file_bytes": 1, "max_app_bytes": 1, "upload_expiry_s": 60,
             "file_retention_s": 0, "link_ttl_s": 1, "image_workers": 0, "image_queue": 1,
             "image_timeout_s": 0.1, "max_image_pixels": 1, "max_image_side": 1,
             "max_image_frames": 1, "max_html_bytes": 1024, "max_image_bytes": 1024,
             "max_redirects": 0, "cache_ttl_s": 0, "failure_ttl_s": 0,
             "per_user_per_minute": 1, "uploads_per_minute": 1,
             # [acme] (appliance.certs.config)
             "retry_min_s": 0.01, "retry_max_s": 0.01, "check_interval_s": 0.05,
             "attempt_timeout_s": 1}
#: Lists of integers whose default is empty (the type cannot be read from it).
_INTEGER_LISTS = {"ports"}
#: Upper bounds where a larger value would quietly break a promise: live
#: sessions learn of revoked credentials within this (PROTOCOL.md §5.1).
_MAXIMUM: dict[str, float] = {
    "credentials_poll_s": 60.0,
    # WELCOME carries these as u32 (PROTOCOL.md §3.2): a larger one could not be
    # encoded, and every client that asked for the extension fields was refused.
    **dict.fromkeys(("max_payload_bytes", "max_expiry_s", "window", "max_devices",
                     "keepalive_s", "max_frame_bytes"), U32_MAX),
    # A typing state of more than an hour is no typing state, and a device watching a
    # million users is a crawler.
    "typing_timeout_s": 3600, "max_presence_subscriptions": 100_000}


def load_config(path: Path | None = None,
                overrides: dict[str, Any] | None = None) -> ApplianceConfig:
    """Build the configuration.

    Args:
        path: a TOML file, or None for defaults only.
        overrides: ``"section.key" -> value`` from the command line or the
            environment; None values are ignored.

    Raises:
        ConfigError: unreadable file, unknown key, wrong type or value.
    """
    tree: dict[str, dict[str, Any]] = {}
    if path is not None:
        try:
            tree = tomllib.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"cannot read {path}: {exc.strerror}", key_path=str(path)) from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"not valid TOML: {exc}", key_path=str(path)) from None
    for key, value in (overrides or {}).items():
        if value is not None:
            section, _, name = key.partition(".")
            tree.setdefault(section, {})[name] = value
    return _build(tree)


def _build(tree: dict[str, Any]) -> ApplianceConfig:
    base = ApplianceConfig()
    sections: dict[str, Any] = {}
    for section, values in tree.items():
        if section not in {f.name for f in dataclasses.fields(base)}:
            raise ConfigError("unknown section", key_path=section)
        if not isinstance(values, dict):
            raise ConfigError("must be a table", key_path=section)
        sections[section] = _section(getattr(base, section), section, values)
    config = dataclasses.replace(base, **sections)
    transport = config.transport
    if transport.max_output_bytes <= transport.output_high_water_bytes:
        raise ConfigError(f"must be above transport.output_high_water_bytes"
                          f" ({transport.output_high_water_bytes})",
                          key_path="transport.max_output_bytes")
    if config.storage.database:
        # Checked now, so that a wrong value stops start-up naming the key.
        parse_database(config.storage.database, config.storage.data_dir)
    if config.server.hostname and not is_dns_name(config.server.hostname):
        raise ConfigError(f"{config.server.hostname!r} is not a lower-case DNS name",
                          key_path="server.hostname")
    check_edge(config.edge)
    check_acme(config.acme)
    check_metrics(config.metrics)
    check_media(config.media)
    if config.acme.hostnames and config.tls.cert:
        raise ConfigError("set either [tls] cert/key (your own certificate) or [acme] hostnames"
                          " (certificates obtained and renewed by the appliance), not both",
                          key_path="acme.hostnames")
    return config


def _section(default: Any, section: str, values: dict[str, Any]) -> Any:
    fields = {f.name: f for f in dataclasses.fields(default)}
    changes = {}
    for name, value in values.items():
        key = f"{section}.{name}"
        if name not in fields:
            raise ConfigError("unknown key", key_path=key)
        current = getattr(default, name)
        if dataclasses.is_dataclass(current):  # a nested table: [media.previews]
            if not isinstance(value, dict):
                raise ConfigError("must be a table", key_path=key)
            changes[name] = _section(current, key, value)
            continue
        changes[name] = _coerce(current, value, key)
    return dataclasses.replace(default, **changes)


def _coerce(current: Any, value: Any, key: str) -> Any:
    name = key.rpartition(".")[2]
    if isinstance(current, Path):
        if not isinstance(value, str | Path) or not str(value):
            raise ConfigError("must be a path", key_path=key)
        return Path(value).expanduser()
    if isinstance(current, tuple):  # a list of strings (CIDRs) or of integers (sizes, ports)
        integers = (bool(current) and isinstance(current[0], int)) or name in _INTEGER_LISTS
        kind_name = "integers" if integers else "strings"
        if not isinstance(value, list | tuple) or not all(
                (isinstance(v, int) and not isinstance(v, bool)) if integers else isinstance(v, str)
                for v in value):
            raise ConfigError(f"must be a list of {kind_name}", key_path=key)
        return tuple(value)
    if isinstance(current, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"must be true or false, got {value!r}", key_path=key)
        return value
    if not isinstance(current, int | float | str):
        raise ConfigError("cannot be set", key_path=key)
    kind = type(current)
    result: int | float | str | None
    try:
        result = kind(value) if not isinstance(value, bool) else None
    except (TypeError, ValueError):
        result = None
    if result is None:
        raise ConfigError(f"must be {'an integer' if kind is int else kind.__name__},"
                          f" got {value!r}", key_path=key)
    if isinstance(result, str):
        return result
    if name in _POSITIVE and result < _POSITIVE[name]:
        raise ConfigError(f"must be >= {_POSITIVE[name]}, got {result}", key_path=key)
    if name in _MAXIMUM and result > _MAXIMUM[name]:
        raise ConfigError(f"must be <= {_MAXIMUM[name]}, got {result}", key_path=key)
    if name == "port" and result > 65535:
        raise ConfigError(f"must be <= 65535, got {result}", key_path=key)
    return result
