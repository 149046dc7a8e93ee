"""Frames added to version 1 after it shipped (PROTOCOL.md §8): presence, group management.

Version 1 clients that predate them never receive one: a client says it
understands them by setting `HelloFlag.EXTENSIONS` in HELLO's `client_flags`,
and learns that the server has them from the extension fields that follow the
server version in WELCOME (`WelcomeInfo`, PROTOCOL.md §3.2): a server without
them sends none.  A server takes these frames from any client in OPEN.

Each family of frames lives in a module of its own (`presence`, `groups`) and
lists its frames in a `FRAMES` table: type -> (event class, decoder, who
sends it).  The codec (`connection.py`) consults `EXTENSION_FRAMES`; an
event class encodes itself (`encode_body`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final, Protocol

from appliance.protocol.wire import groups, presence


class ExtensionEvent(Protocol):
    """An event of an extension frame."""

    @property
    def FRAME_TYPE(self) -> int:  # noqa: N802 - a class constant in the event classes
        """The frame type (`FrameType`): read-only, so a class attribute of the event fits."""
        ...

    def encode_body(self) -> bytes:
        """The frame body (PROTOCOL.md §8).

        Raises:
            LocalWireError: a field is out of range.
        """
        ...


#: Who may send an extension frame.
FROM_CLIENT: Final = "client"
FROM_SERVER: Final = "server"

#: frame type -> (event class, body decoder, sender).
EXTENSION_FRAMES: dict[int, tuple[type, Callable[[bytes], Any], str]] = {
    **presence.FRAMES,
    **groups.FRAMES,
}

#: event class -> frame type, for `WireConnection.send`.
EXTENSION_TYPES: dict[type, int] = {cls: ftype for ftype, (cls, _, _) in
                                    EXTENSION_FRAMES.items()}

