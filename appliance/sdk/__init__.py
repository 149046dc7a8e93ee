"""The Tidings Python SDK: what an app builds on (SPEC M17).

    async with Client("127.0.0.1", 7447, token, store="alice.db") as client:
        message = client.send("bob", "hello")
        await message.sent()
        async for incoming in client.messages():
            print(incoming.sender, incoming.text)

Files (issue 15) go over HTTP on the same port, resumable both ways::

    message = await client.send_file("bob", "photo.jpg", caption="the view")
    ...
    for info in incoming.files:
        path = await client.download_file(info, "downloads/")

Groups (issue 16): ``await client.groups.create("team", ["bob"])``; announcements
arrive parsed (``client.groups.on_event``); a group message's aggregate reports
are statuses (``await message.reached(Status.READ_ALL)``).

Installable on its own: the ``tidings-sdk`` wheel (pure Python; h11 for files
only) installs this package as ``tidings`` (``from tidings import Client``), never
as ``appliance``, so it lives beside the server; see packaging/sdk/README.md.
"""

from __future__ import annotations

from appliance import __version__
from appliance.protocol.wire import Feature, Flag, Status
from appliance.sdk.client import Client
from appliance.sdk.errors import (
    AuthenticationError,
    BlockedError,
    ClientClosedError,
    ClientConnectionError,
    ClientError,
    ConnectFailedError,
    ExpiredError,
    FileAccessDeniedError,
    FileChangedError,
    FileCorruptError,
    FileRejectedError,
    FileTransferError,
    GroupRequestError,
    HandshakeTimeoutError,
    InboxFullError,
    InvalidDestinationError,
    InvalidFileError,
    NoSuchFileError,
    NoSuchUserError,
    NotMemberError,
    QuotaExceededError,
    RateLimitedError,
    ReplacedError,
    RequestError,
    SendError,
    SendFailedError,
    ServerClosedError,
    ServerProtocolError,
    TokenExpiredError,
    TooLargeError,
    TooManyDevicesError,
    TransferInterruptedError,
    UnauthorizedError,
    UserOfflineError,
)
from appliance.sdk.events import Backoff
from appliance.sdk.groups import GroupChange, GroupEvent, GroupFlag, MemberChange, Perm
from appliance.sdk.models import (
    ConnectionEvent,
    ConnectionState,
    FileInfo,
    Group,
    IncomingMessage,
    OutgoingMessage,
    StatusUpdate,
    StoredMessage,
    file_payload,
    parse_file_payload,
)
from appliance.sdk.presence import PresenceEvent, PresenceState
from appliance.sdk.reading import ReadSession
from appliance.sdk.server_info import ServerLimits

__all__ = [
    "__version__",
    "AuthenticationError", "Backoff", "BlockedError", "Client", "ClientClosedError",
    "ClientConnectionError", "ClientError", "ConnectFailedError", "ConnectionEvent",
    "ConnectionState", "ExpiredError", "Flag", "Group", "HandshakeTimeoutError",
    "InboxFullError", "IncomingMessage", "InvalidDestinationError", "InvalidFileError",
    "NotMemberError",
    "OutgoingMessage", "RateLimitedError", "ReadSession", "ReplacedError", "SendError",
    "SendFailedError", "ServerClosedError", "ServerProtocolError", "Status", "StatusUpdate",
    "StoredMessage", "TokenExpiredError", "TooLargeError", "TooManyDevicesError",
    "UserOfflineError",
    # files (issue 15)
    "FileAccessDeniedError", "FileChangedError", "FileCorruptError", "FileInfo",
    "FileRejectedError", "FileTransferError", "NoSuchFileError", "QuotaExceededError",
    "TransferInterruptedError", "UnauthorizedError", "file_payload", "parse_file_payload",
    # presence and blocking (issue 16)
    "NoSuchUserError", "PresenceEvent", "PresenceState", "RequestError",
    # what the server announced in WELCOME (issue 16)
    "Feature", "ServerLimits",
    # groups (issue 16): client.groups
    "GroupChange", "GroupEvent", "GroupFlag", "GroupRequestError", "MemberChange", "Perm",
]
