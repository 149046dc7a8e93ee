"""systemd's service notification protocol (sd_notify(3)) without a dependency.

``Type=notify`` units wait for ``READY=1``; under the one-file executable the
messages come from the bootloader's child, so the unit says
``NotifyAccess=all`` and the watchdog accepts ``WATCHDOG_PID`` being our
parent (packaging.md §4.2).  Outside systemd (no ``NOTIFY_SOCKET``) every call
does nothing.

Like sd_notify's ``unset_environment``, a `Notifier` takes ``NOTIFY_SOCKET``,
``WATCHDOG_USEC`` and ``WATCHDOG_PID`` out of the environment: a program the
server starts (mariadbd says READY=1 by itself) must not speak for the unit.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import MutableMapping

log = logging.getLogger(__name__)

#: systemd refuses watchdog timeouts it cannot represent; anything outside
#: this range in ``WATCHDOG_USEC`` is not systemd's and is ignored.
_WATCHDOG_USEC_RANGE = (1_000, 24 * 3600 * 1_000_000)
#: A STATUS= text is one line for `systemctl status`; longer is cut.
MAX_STATUS_CHARS = 200


def _address(raw: str) -> str | None:
    """The socket address in ``$NOTIFY_SOCKET``: a path, or ``@name`` (abstract)."""
    if not raw or raw[0] not in "/@":
        return None
    return "\0" + raw[1:] if raw[0] == "@" else raw


def watchdog_interval(usec: str | None, pid: str | None, own_pids: tuple[int, ...]
                      ) -> float | None:
    """Seconds between WATCHDOG=1 pings (half the timeout, sd_watchdog_enabled(3)),
    or None when the watchdog is off or meant for another process."""
    if usec is None or not usec.isdigit():
        return None
    value = int(usec)
    if not _WATCHDOG_USEC_RANGE[0] <= value <= _WATCHDOG_USEC_RANGE[1]:
        log.warning("WATCHDOG_USEC=%s out of range; watchdog not kept", usec[:20])
        return None
    # The one-file executable: systemd's main pid is the bootloader, our parent.
    if pid and (not pid.isdigit() or int(pid) not in own_pids):
        return None
    return value / 2_000_000


def _one_line(text: str) -> str:
    """A STATUS= value: one line of printable text, bounded."""
    flat = "".join(c if c.isprintable() else " " for c in text)
    return flat[:MAX_STATUS_CHARS]


class Notifier:
    """Tells systemd how the server is: ready, reloading, stopping, alive, its status."""

    def __init__(self, environ: MutableMapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        self.address = _address(env.pop("NOTIFY_SOCKET", ""))
        self.watchdog_s = watchdog_interval(env.pop("WATCHDOG_USEC", None),
                                            env.pop("WATCHDOG_PID", None),
                                            (os.getpid(), os.getppid()))
        self._sock: socket.socket | None = None
        self._failing = False

    @property
    def enabled(self) -> bool:
        """Whether systemd listens (the unit is ``Type=notify``)."""
        return self.address is not None

    def send(self, *lines: str) -> bool:
        """Send `lines` as one datagram; False when nobody listens or it failed.

        Never blocks (a full queue drops the message) and never raises:
        notifications are advisory, the server must not fail over them.
        """
        if self.address is None:
            return False
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX,
                                           socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                self._sock.setblocking(False)
            self._sock.sendto("\n".join(lines).encode(), self.address)
        except OSError as exc:
            if not self._failing:  # once per outage, not once per watchdog ping
                log.warning("cannot notify systemd: %s", exc)
            self._failing = True
            return False
        if self._failing:
            log.info("notifying systemd again")
        self._failing = False
        return True

    def ready(self, status: str) -> bool:
        """``READY=1``: listening and the store ready (also the end of a reload)."""
        return self.send("READY=1", f"STATUS={_one_line(status)}")

    def reloading(self) -> bool:
        """``RELOADING=1`` with the time it began (systemd >= 257 requires it)."""
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.send("RELOADING=1", f"MONOTONIC_USEC={usec}", "STATUS=reloading")

    def stopping(self) -> bool:
        """``STOPPING=1``: draining, then exit."""
        return self.send("STOPPING=1", "STATUS=stopping")

    def status(self, text: str) -> bool:
        """A ``STATUS=`` line for `systemctl status` (one line, bounded)."""
        return self.send(f"STATUS={_one_line(text)}")

    async def watchdog(self) -> None:
        """Ping ``WATCHDOG=1`` from the event loop until cancelled: a stuck loop stops
        the pings and systemd restarts the service (``WatchdogSec=``)."""
        if self.watchdog_s is None:
            return
        while True:
            self.send("WATCHDOG=1")
            await asyncio.sleep(self.watchdog_s)

    def close(self) -> None:
        """Release the socket."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None



def sd_notify(*lines: str) -> bool:
    """Send `lines` once to ``$NOTIFY_SOCKET``, left in the environment (for code that
    has no `Notifier`; the server passes its own, which took the variable out)."""
    notifier = Notifier(dict(os.environ))
    try:
        return notifier.send(*lines)
    finally:
        notifier.close()
