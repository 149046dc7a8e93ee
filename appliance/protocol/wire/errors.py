"""Errors of the native wire codec.

`RemoteWireError` means the peer broke the protocol: the transport sends a
CLOSE frame with `close_code` and `reason`, then closes that one connection.
"""

from __future__ import annotations

from appliance.errors import LocalProtocolError, RemoteProtocolError

#: CloseCode.PROTOCOL_ERROR, repeated here so this module imports nothing else.
_PROTOCOL_ERROR = 2


class RemoteWireError(RemoteProtocolError):
    """The peer sent bytes that violate PROTOCOL.md."""


class LocalWireError(LocalProtocolError):
    """We asked the codec to send something PROTOCOL.md forbids."""

    def __init__(self, message: str, *, close_code: int = _PROTOCOL_ERROR) -> None:
        super().__init__(message, close_code=close_code)
