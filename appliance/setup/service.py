"""The installed service: its socket's ports, its data's owner, enable/start/restart.

systemd holds the ports in `tidings.socket` (packaging.md §4.6); the wizard's
ports go into a drop-in of that unit, written by `socket_dropins` alone so
that it is easy to keep in line with ``systemd/tidings.socket``.  ``systemctl
start``/``restart`` of a ``Type=notify`` unit returns once the server said
READY=1, so readiness needs no polling; `appliance.setup.probe` then checks
health and sends the first message.
"""

from __future__ import annotations

import ipaddress
import os
import pwd
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from appliance.errors import LifecycleError
from appliance.system import layout
from appliance.system.systemd import systemctl, unit_property

SOCKET_DROPIN: Final = layout.UNIT_DIR / f"{layout.SOCKET_UNIT}.d" / "listen.conf"
DROPIN_MODE: Final = 0o644


def listen_stream(listen_address: str, port: int) -> str:
    """A ``ListenStream=`` value: the port alone for every address (IPv4 and IPv6, as
    systemd's default BindIPv6Only= does), else ``ADDRESS:PORT`` / ``[ADDRESS]:PORT``."""
    if not listen_address:
        return str(port)
    if ipaddress.ip_address(listen_address).version == 6:
        return f"[{listen_address}]:{port}"
    return f"{listen_address}:{port}"


def socket_dropins(listen_address: str, port: int, http_port: int) -> dict[Path, str]:
    """The drop-ins that put the answers' ports into `tidings.socket`.

    The empty ``ListenStream=`` first clears the unit's own list (systemd.socket(5)).
    The server tells the two sockets apart by their port: ``FileDescriptorName=``
    names every socket of a unit alike, so it cannot name them one by one.
    """
    lines = ["# Written by `tidings setup`: the ports of its answers.", "[Socket]",
             "ListenStream=", f"ListenStream={listen_stream(listen_address, port)}"]
    if http_port > 0:
        lines.append(f"ListenStream={listen_stream(listen_address, http_port)}")
    return {SOCKET_DROPIN: "\n".join(lines) + "\n"}


def write_dropins(files: dict[Path, str]) -> bool:
    """Write the drop-ins that differ (atomically, 0644); whether any changed."""
    changed = False
    for path, text in files.items():
        try:
            if path.read_text(encoding="utf-8") == text:
                continue
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise LifecycleError(exc.strerror or str(exc), step=f"reading {path}") from None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            os.chmod(path.parent, 0o755)
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
                f.flush()
                os.fchmod(f.fileno(), DROPIN_MODE)
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except OSError as exc:
            raise LifecycleError(exc.strerror or str(exc), step=f"writing {path}",
                                 fix="run setup as root (sudo)") from None
        changed = True
    return changed


def give_to_service(data_dir: Path) -> int:
    """As root, hand what setup created in the data directory (the SQLite file, the
    self-signed certificate...) to the service's user; returns how many entries changed.

    Nothing to do when not root or when the system user does not exist (tests, a
    user's own install).  Symbolic links are neither followed nor changed.
    """
    if os.geteuid() != 0:
        return 0
    try:
        account = pwd.getpwnam(layout.SERVICE_USER)
    except KeyError:
        return 0
    owner = (account.pw_uid, account.pw_gid)
    changed = 0
    for root, dirs, files in os.walk(data_dir):
        for name in (root, *(os.path.join(root, n) for n in (*dirs, *files))):
            st = os.lstat(name)
            if (st.st_uid, st.st_gid) != owner and not os.path.islink(name):
                os.chown(name, *owner, follow_symlinks=False)
                changed += 1
    return changed


def loaded(unit: str) -> bool:
    return unit_property(unit, "LoadState") == "loaded"


@dataclass(frozen=True, slots=True)
class StartPlan:
    """What changed, so the service is restarted only when it must be."""

    config_changed: bool
    ports_changed: bool
    private_database: bool


def start(plan: StartPlan) -> str:
    """Enable the units and (re)start the service; returns once it is READY=1.

    Raises:
        LifecycleError: the units are not installed, or systemctl failed.
    """
    if not loaded(layout.SERVICE_UNIT):
        raise LifecycleError(f"{layout.SERVICE_UNIT} is not installed", step="starting",
                             fix="run the installer first, or setup with --no-start")
    units = [u for u in (layout.SOCKET_UNIT, layout.SERVICE_UNIT) if loaded(u)]
    if plan.ports_changed:
        systemctl("daemon-reload")
    if plan.private_database and loaded(layout.MARIADB_UNIT):
        systemctl("enable", "--now", layout.MARIADB_UNIT)
    systemctl("enable", *units)
    running = unit_property(layout.SERVICE_UNIT, "ActiveState") == "active"
    socket_up = layout.SOCKET_UNIT in units \
        and unit_property(layout.SOCKET_UNIT, "ActiveState") == "active"
    if plan.ports_changed and socket_up:
        # The socket holds the old ports: both stop, then start on the new ones.
        systemctl("stop", layout.SERVICE_UNIT, layout.SOCKET_UNIT)
        systemctl("start", *units)
        return "restarted on the new ports"
    if running and (plan.config_changed or plan.ports_changed):
        systemctl("restart", layout.SERVICE_UNIT)
        return "restarted with the new configuration"
    if running:
        return "already running; its configuration is unchanged"
    systemctl("start", *units)
    return "started"
