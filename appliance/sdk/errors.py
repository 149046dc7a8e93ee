"""The SDK's errors: one branch (`ClientError`) of the appliance's hierarchy.

Connection errors say whether the client will retry on its own
(`retryable`); send errors carry the message's `status` and `message_id`.
Nothing the server sends surfaces as anything but one of these.
"""

from __future__ import annotations

from appliance.errors import ApplianceError
from appliance.protocol.wire import CloseCode, Status
from appliance.protocol.wire.groups import GroupResultCode

_RETRYABLE = (GroupResultCode.FAILED, GroupResultCode.BUSY, GroupResultCode.RATE_LIMITED)


class ClientError(ApplianceError):
    """Root of every error the SDK raises."""


class ClientClosedError(ClientError):
    """The client was closed; it sends and receives nothing more."""


class ClientConnectionError(ClientError):
    """Abstract: a connection attempt or a connection failed.

    `retryable` is True when the client reconnects by itself (with backoff),
    False when only the app can fix it (a new token, another device id).
    `close_code` is the server's CLOSE code, or None when there was none.
    """

    retryable = True

    def __init__(self, message: str, *, close_code: int | None = None) -> None:
        super().__init__(message)
        self.close_code = close_code


class ConnectFailedError(ClientConnectionError):
    """The server could not be reached, or the connection dropped."""


class HandshakeTimeoutError(ClientConnectionError):
    """The server accepted TCP but did not answer HELLO in time."""


class ServerProtocolError(ClientConnectionError):
    """The server sent bytes that break the protocol; the client reconnects."""


class ServerClosedError(ClientConnectionError):
    """The server closed the connection with a CLOSE the client may retry after."""


class AuthenticationError(ClientConnectionError):
    """The server refused the access token (unknown, revoked or malformed)."""

    retryable = False


class TokenExpiredError(AuthenticationError):
    """The access token has expired: get a new one from the app's backend."""


class TooManyDevicesError(ClientConnectionError):
    """The user already has the maximum number of devices connected."""

    retryable = False


class ReplacedError(ClientConnectionError):
    """Another connection with this device id took over this one."""

    retryable = False


class SendError(ClientError):
    """A message ended in an error status; `status` says which."""

    def __init__(self, message: str, *, status: int, message_id: int) -> None:
        super().__init__(message)
        self.status = status
        self.message_id = message_id


class SendFailedError(SendError):
    """The server could not store the message (FAILED); the SDK resends it."""


class UserOfflineError(SendError):
    """A real-time message found no device of the recipient online."""


class InvalidDestinationError(SendError):
    """No such user or group."""


class ExpiredError(SendError):
    """The message expired before any device of the recipient took it."""


class BlockedError(SendError):
    """The recipient blocks the sender."""


class NotMemberError(SendError):
    """The sender may not send to this group."""


class TooLargeError(SendError):
    """The payload is larger than the server accepts."""


class RateLimitedError(SendError):
    """The sender is over its rate limit; the SDK resends the message later."""


class InboxFullError(SendError):
    """The recipient's queue is full."""


class InvalidFileError(SendError):
    """A FILE message's payload is not the convention, or names a file the sender may
    not share (missing, unfinished, expired, another app's, not granted to it)."""


_SEND_ERRORS: dict[int, type[SendError]] = {
    Status.FAILED: SendFailedError,
    Status.USER_OFFLINE: UserOfflineError,
    Status.INVALID_DEST: InvalidDestinationError,
    Status.EXPIRED: ExpiredError,
    Status.BLOCKED: BlockedError,
    Status.NOT_MEMBER: NotMemberError,
    Status.TOO_LARGE: TooLargeError,
    Status.RATE_LIMITED: RateLimitedError,
    Status.INBOX_FULL: InboxFullError,
    Status.INVALID_FILE: InvalidFileError,
}

_CLOSE_ERRORS: dict[int, type[ClientConnectionError]] = {
    CloseCode.AUTH_FAILED: AuthenticationError,
    CloseCode.TOKEN_EXPIRED: TokenExpiredError,
    CloseCode.TOO_MANY_DEVICES: TooManyDevicesError,
    CloseCode.REPLACED: ReplacedError,
}


def send_error(status: int, message_id: int) -> SendError:
    """The typed error for an error `status` of message `message_id`."""
    cls = _SEND_ERRORS.get(status, SendError)
    try:
        name = Status(status).name
    except ValueError:
        name = f"status {status:#x}"
    return cls(f"message {message_id}: {name}", status=status, message_id=message_id)


def close_error(code: int, reason: str) -> ClientConnectionError:
    """The typed error for a CLOSE frame from the server."""
    cls = _CLOSE_ERRORS.get(code, ServerClosedError)
    try:
        name = CloseCode(code).name
    except ValueError:
        name = f"code {code}"
    text = f"server closed the connection: {name}" + (f" ({reason})" if reason else "")
    return cls(text, close_code=code)


# --- files (HTTP: files.py) --------------------------------------------------------------


class HttpProblemError(ClientError):
    """An HTTP request of the SDK failed (the root of `FileTransferError` and `RequestError`).

    `http_status` is the server's answer (None when none came); `title` and
    `detail` are its problem+json document's (RFC 9457), "" when it had none.
    """

    def __init__(self, message: str, *, http_status: int | None = None, title: str = "",
                 detail: str = "") -> None:
        super().__init__(message)
        self.http_status = http_status
        self.title = title
        self.detail = detail


class FileTransferError(HttpProblemError):
    """An upload, a download or a file request failed (see `HttpProblemError`)."""


class TransferInterruptedError(FileTransferError):
    """The connection failed, was cut or timed out, on every attempt the SDK made
    (or the server stayed busy); what was transferred is kept: call again to resume."""


class UnauthorizedError(FileTransferError):
    """HTTP 401: the server refused the access token (unknown, revoked or expired)."""


class FileAccessDeniedError(FileTransferError):
    """HTTP 403: the file was not sent to this user (or a signed link is bad)."""


class NoSuchFileError(FileTransferError):
    """HTTP 404: no such file or upload (or one of another app, or one still uploading)."""


class QuotaExceededError(FileTransferError):
    """HTTP 413: the file is larger than the server takes (`limit`
    ``"media.max_file_bytes"``) or the app's storage is full (``"media.max_app_bytes"``);
    `allowed` is the limit in bytes (0 when the server did not say)."""

    def __init__(self, message: str, *, http_status: int | None = None, title: str = "",
                 detail: str = "", limit: str = "", allowed: int = 0) -> None:
        super().__init__(message, http_status=http_status, title=title, detail=detail)
        self.limit = limit
        self.allowed = allowed


class FileRejectedError(FileTransferError):
    """HTTP 4xx: the server refused the request as made (for example a damaged
    image, which the server never stores, or an invalid link lifetime)."""


class FileCorruptError(FileTransferError):
    """The bytes do not have the SHA-256 they must have (the server's, or the one
    the message named); nothing is kept."""


class FileChangedError(FileTransferError):
    """The local file changed (its size) while it was uploaded."""


class GroupRequestError(ClientError):
    """A group change the server refused or could not answer (PROTOCOL.md §8.3).

    `result` is the GROUP_RESULT code (`GroupResultCode`: NO_GROUP, FORBIDDEN,
    NO_USER, INVALID, FULL...), or None when no answer came (the connection dropped:
    the change may or may not have been made; read the group to know).
    `retryable`: sending it again later may succeed (FAILED, BUSY, RATE_LIMITED).
    """

    def __init__(self, message: str, *, result: int | None, group_id: int = 0) -> None:
        super().__init__(message)
        self.result = result
        self.group_id = group_id

    @property
    def retryable(self) -> bool:
        return self.result is None or self.result in _RETRYABLE


# --- blocks (HTTP: blocking.py) ------------------------------------------------------------


class RequestError(HttpProblemError):
    """A request of the SDK's other HTTP calls (blocks) failed (see `HttpProblemError`)."""


class NoSuchUserError(RequestError):
    """HTTP 404: the address names no user of this app."""
