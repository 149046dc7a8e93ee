"""The Tidings Python SDK: what an app builds on (SPEC M17).

    async with Client("127.0.0.1", 7447, token, store="alice.db") as client:
        message = client.send("bob", "hello")
        await message.sent()
        async for incoming in client.messages():
            print(incoming.sender, incoming.text)

Installable on its own (``tidings-sdk``: pure Python, no dependencies); see
the README.
"""

from __future__ import annotations

from appliance.protocol.wire import Flag, Status
from appliance.sdk.client import Backoff, Client, ReadSession
from appliance.sdk.errors import (
    AuthenticationError,
    BlockedError,
    ClientClosedError,
    ClientConnectionError,
    ClientError,
    ConnectFailedError,
    ExpiredError,
    HandshakeTimeoutError,
    InboxFullError,
    InvalidDestinationError,
    InvalidFileError,
    NotMemberError,
    RateLimitedError,
    ReplacedError,
    SendError,
    SendFailedError,
    ServerClosedError,
    ServerProtocolError,
    TokenExpiredError,
    TooLargeError,
    TooManyDevicesError,
    UserOfflineError,
)
from appliance.sdk.models import (
    ConnectionEvent,
    ConnectionState,
    Group,
    IncomingMessage,
    OutgoingMessage,
    StatusUpdate,
    StoredMessage,
)

__all__ = [
    "AuthenticationError", "Backoff", "BlockedError", "Client", "ClientClosedError",
    "ClientConnectionError", "ClientError", "ConnectFailedError", "ConnectionEvent",
    "ConnectionState", "ExpiredError", "Flag", "Group", "HandshakeTimeoutError",
    "InboxFullError", "IncomingMessage", "InvalidDestinationError", "InvalidFileError",
    "NotMemberError",
    "OutgoingMessage", "RateLimitedError", "ReadSession", "ReplacedError", "SendError",
    "SendFailedError", "ServerClosedError", "ServerProtocolError", "Status", "StatusUpdate",
    "StoredMessage", "TokenExpiredError", "TooLargeError", "TooManyDevicesError",
    "UserOfflineError",
]
