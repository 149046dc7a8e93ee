"""systemd's readiness protocol (sd_notify(3)) without a dependency.

``Type=notify`` units wait for ``READY=1``; under the one-file executable the
message comes from the bootloader's child, so the units say
``NotifyAccess=all`` (packaging.md §4.2).  Outside systemd (no
``NOTIFY_SOCKET``) every call does nothing.
"""

from __future__ import annotations

import logging
import os
import socket

log = logging.getLogger(__name__)


def sd_notify(*lines: str) -> bool:
    """Send `lines` as one datagram to ``$NOTIFY_SOCKET``; False when there is none."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address[0] == "@":  # an abstract-namespace socket
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall("\n".join(lines).encode())
    except OSError as exc:
        # Readiness is advisory for us: never fail the server over it.
        log.warning("cannot notify systemd on %s: %s", address, exc)
        return False
    return True
