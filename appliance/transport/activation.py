"""Listening sockets handed over by systemd (socket activation, sd_listen_fds(3)).

With ``tidings.socket`` systemd owns the listening sockets: they stay open
while the server restarts or is upgraded, so a connection attempt in between
waits in the backlog instead of being refused, and ports below 1024 need no
capability.  The protocol: ``LISTEN_PID`` (ours: PyInstaller's bootloader
rewrites it for its child), ``LISTEN_FDS`` sockets from fd 3 on, and
``LISTEN_FDNAMES`` (colon-separated, one per socket).

Which socket is which: a socket named ``main`` or ``redirect``
(``FileDescriptorName=`` of a socket unit of its own) has that role; other
names (``FileDescriptorName=`` applies to every socket of a unit, so the one
``tidings.socket`` holding both ports names both alike) take the roles in the
order systemd passes them, which is the order of the ``ListenStream=`` lines:
first the main port, then the redirect port.
"""

from __future__ import annotations

import os
import socket
from collections.abc import MutableMapping

from appliance.errors import ConfigError

#: sd_listen_fds(3): the first passed descriptor.
LISTEN_FDS_START = 3
#: The roles, in the order unnamed sockets take them.
MAIN = "main"
REDIRECT = "redirect"
ROLES = (MAIN, REDIRECT)
#: Where an error about passed sockets points the operator.
KEY = "tidings.socket"


def listen_sockets(environ: MutableMapping[str, str] | None = None
                   ) -> dict[str, socket.socket]:
    """The sockets systemd passed, by role (`MAIN`, `REDIRECT`); {} when none.

    Takes ``LISTEN_*`` out of the environment (sd_listen_fds' unset_environment:
    a program the server starts must not adopt them) and makes the descriptors
    close-on-exec.

    Raises:
        ConfigError: more sockets than roles, two for one role, or a descriptor
            that is not a listening TCP socket (key ``tidings.socket``).
    """
    env = os.environ if environ is None else environ
    pid = env.pop("LISTEN_PID", None)
    count = env.pop("LISTEN_FDS", None)
    names = env.pop("LISTEN_FDNAMES", None)
    if pid is None or count is None or not pid.isdigit() or int(pid) != os.getpid():
        return {}  # not for us (an inherited environment) or nothing passed
    if not count.isdigit() or not 1 <= int(count) <= len(ROLES):
        raise ConfigError(f"systemd passed {count[:20]!r} sockets; tidings takes one for the"
                          f" main port and one for the redirect port: check the"
                          f" ListenStream= lines", key_path=KEY)
    n = int(count)
    labels = names.split(":") if names else [""] * n
    if len(labels) != n:
        raise ConfigError(f"LISTEN_FDNAMES names {len(labels)} sockets, LISTEN_FDS says {n}",
                          key_path=KEY)
    return {role: adopt(LISTEN_FDS_START + i, role)
            for i, role in enumerate(assign_roles(labels))}


def assign_roles(labels: list[str]) -> list[str]:
    """The role of each passed socket: its own name if that is a role, else the next
    role not named by any socket, in order.

    Raises:
        ConfigError: two sockets for one role.
    """
    named = [label for label in labels if label in ROLES]
    if len(set(named)) != len(named):
        raise ConfigError("two sockets are named for one role (FileDescriptorName=)",
                          key_path=KEY)
    free = [role for role in ROLES if role not in named]
    roles = []
    for label in labels:
        if label in ROLES:
            roles.append(label)
        elif free:
            roles.append(free.pop(0))
        else:  # cannot happen: at most len(ROLES) sockets
            raise ConfigError("more sockets than roles", key_path=KEY)
    return roles


def adopt(fd: int, role: str) -> socket.socket:
    """The listening TCP socket at descriptor `fd`, non-blocking and close-on-exec.

    Raises:
        ConfigError: `fd` is not open, not a socket, or not a listening TCP socket.
    """
    try:
        sock = socket.socket(fileno=fd)
    except OSError as exc:
        raise ConfigError(f"descriptor {fd} ({role}) is not a socket: {exc.strerror}",
                          key_path=KEY) from None
    try:
        listening = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
    except OSError:
        listening = 0
    if (sock.family not in (socket.AF_INET, socket.AF_INET6)
            or sock.type != socket.SOCK_STREAM or not listening):
        stream = sock.type == socket.SOCK_STREAM
        what = (f"{_name(sock.family)} {_name(sock.type)}"
                f"{', not listening' if stream and not listening else ''}")
        sock.detach()  # not ours to close: systemd's configuration is wrong, not the fd
        raise ConfigError(f"descriptor {fd} ({role}) is not a listening TCP socket ({what});"
                          f" the socket unit needs ListenStream= with a port or address:port",
                          key_path=KEY)
    os.set_inheritable(fd, False)
    sock.setblocking(False)
    return sock


def _name(constant: object) -> str:
    """AF_INET, SOCK_STREAM...: the name when the socket module knows one."""
    return str(getattr(constant, "name", constant))
