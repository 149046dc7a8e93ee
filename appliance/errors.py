"""The one error hierarchy of the appliance.

Every layer raises a subclass of `ApplianceError`; driver and library
exceptions are translated at the layer that calls them and never cross it.
Each error carries what its catcher needs to react: a close code for a
connection, a key path for configuration, a status for a message.
"""

from __future__ import annotations


class ApplianceError(Exception):
    """Root of every error the appliance raises on purpose."""


class ConfigError(ApplianceError):
    """A configuration value is wrong; `key_path` names it (e.g. ``server.port``)."""

    def __init__(self, message: str, *, key_path: str) -> None:
        super().__init__(f"{key_path}: {message}")
        self.key_path = key_path


class ProtocolError(ApplianceError):
    """Abstract: a wire protocol was violated. Never raised directly."""

    def __init__(self, message: str, *, close_code: int) -> None:
        if type(self) is ProtocolError:
            raise TypeError("ProtocolError is abstract; raise a subclass")
        super().__init__(message)
        self.close_code = close_code
        self.reason = message


class LocalProtocolError(ProtocolError):
    """We tried to do something the protocol forbids (a bug on our side)."""


class RemoteProtocolError(ProtocolError):
    """The peer violated the protocol; close that connection with `close_code`."""


class StorageError(ApplianceError):
    """Root of storage failures; never carries driver exceptions or HTTP codes."""


class StorageUnavailableError(StorageError):
    """The store cannot take writes now (disk full, locked, database down)."""


class SchemaNewerError(StorageError):
    """The database has migrations this executable does not know: it is older than the data."""

    def __init__(self, message: str, *, version: int, known: int) -> None:
        super().__init__(message)
        self.version = version
        self.known = known


class NotFoundError(StorageError):
    """The named record does not exist."""


class GroupNotFoundError(NotFoundError):
    """No such group in the caller's app (GROUP_RESULT NO_GROUP, HTTP 404)."""


class MemberNotFoundError(NotFoundError):
    """An address names no user of the app, or no member of the group where one must
    (GROUP_RESULT NO_USER, HTTP 404)."""


class ConflictError(StorageError):
    """The record already exists or the change conflicts with stored state."""


class GroupFullError(ConflictError):
    """The change would give a group more than its most members (GROUP_RESULT FULL,
    HTTP 409); nothing changed."""


class AuthError(ApplianceError):
    """Credentials were refused; `close_code` says why on the wire."""

    def __init__(self, message: str, *, close_code: int) -> None:
        super().__init__(message)
        self.close_code = close_code


class UsageError(ApplianceError):
    """An administrative request is invalid (bad address, unknown group...)."""


class DbServerError(ApplianceError):
    """The MariaDB server the appliance manages could not be set up or run."""


class DbServerMissingError(DbServerError):
    """MariaDB's programs are not installed; `package` is what provides them."""

    def __init__(self, message: str, *, package: str) -> None:
        super().__init__(message)
        self.package = package


class CertificateError(ApplianceError):
    """Obtaining or renewing a certificate failed (issue 13); the old one stays in use.

    `issuer` is the ACME directory URL asked ("" before any was); `retry_at_ms`
    is the earliest wall-clock time the CA wants to hear from us again (its
    ``Retry-After`` or rate-limit reset), 0 when the backoff alone decides.
    """

    def __init__(self, message: str, *, issuer: str = "", retry_at_ms: int = 0) -> None:
        super().__init__(message)
        self.issuer = issuer
        self.retry_at_ms = retry_at_ms


class CaUnreachableError(CertificateError):
    """The CA's ACME server could not be reached (DNS, connection, TLS, timeout)."""


class AcmeProblemError(CertificateError):
    """The CA refused a request; `problem` is its RFC 7807 problem document."""

    def __init__(self, message: str, *, problem: dict[str, object], issuer: str = "",
                 retry_at_ms: int = 0) -> None:
        super().__init__(message, issuer=issuer, retry_at_ms=retry_at_ms)
        self.problem = problem


class RateLimitedError(AcmeProblemError):
    """The CA rate-limited us (``urn:ietf:params:acme:error:rateLimited``) until `retry_at_ms`."""


class ChallengeFailedError(AcmeProblemError):
    """The CA could not validate `hostname` (RFC 8555 §8); `hint` says what to check."""

    def __init__(self, message: str, *, problem: dict[str, object], hostname: str, hint: str,
                 issuer: str = "") -> None:
        super().__init__(message, problem=problem, issuer=issuer)
        self.hostname = hostname
        self.hint = hint


class StatusFileError(ApplianceError):
    """The running server's status file cannot be read or is not one (`tidings status`)."""


class ReleaseError(ApplianceError):
    """A release (manifest, download, signature) cannot be used; nothing was changed."""


class VerificationError(ReleaseError):
    """A release file's checksum or signature does not verify: refuse it before any change."""


class LifecycleError(ApplianceError):
    """An install, setup, upgrade, backup or restore step failed; `step` names it,
    `fix` says what the operator can do."""

    def __init__(self, message: str, *, step: str, fix: str = "") -> None:
        super().__init__(f"{step}: {message}" + (f" ({fix})" if fix else ""))
        self.step = step
        self.fix = fix


class AnswerError(UsageError):
    """A `tidings setup` answer is refused (issue 14): `question` names it (its answers-file
    key), `fix` says what to give instead (usually the flag)."""

    def __init__(self, message: str, *, question: str, fix: str = "") -> None:
        super().__init__(f"{question}: {message}" + (f" ({fix})" if fix else ""))
        self.question = question
        self.reason = message
        self.fix = fix


class AnswersRefusedError(UsageError):
    """Several `tidings setup` answers are refused at once (an unattended run lists them all)."""

    def __init__(self, refusals: tuple[AnswerError, ...]) -> None:
        super().__init__("setup refused these answers; nothing was changed:\n"
                         + "\n".join(f"  {r}" for r in refusals))
        self.refusals = refusals


class QuotaError(UsageError):
    """A media limit refuses a request (issue 15): `limit` names the config key
    (``media.max_file_bytes``, ``media.max_app_bytes``) and `allowed` its value."""

    def __init__(self, message: str, *, limit: str, allowed: int) -> None:
        super().__init__(message)
        self.limit = limit
        self.allowed = allowed


class MediaError(ApplianceError):
    """Root of media failures (files, images, previews) that are not the caller's usage."""


class ImageRefusedError(UsageError):
    """An image is not one the server processes (format, size, bomb, damaged); `reason` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ImageBusyError(MediaError):
    """Every image worker is busy and the queue is full, or the app holds its share of
    them: retry after `retry_after_s` (HTTP 503)."""

    def __init__(self, message: str, *, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class ImageTimeoutError(ImageRefusedError):
    """An image took longer than ``media.image_timeout_s``: its worker was killed."""


class PreviewRefusedError(UsageError):
    """A URL is not one the server fetches (scheme, port, a private address...): `reason`."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class PreviewFetchError(MediaError):
    """Fetching a preview failed (timeout, too large, HTTP error, not HTML): `reason`."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class TooManyRequestsError(UsageError):
    """A per-user rate limit refuses the request (HTTP 429); retry after `retry_after_s`."""

    def __init__(self, message: str, *, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class BusyError(ApplianceError):
    """The server holds as much of some work as it takes at once (HTTP 503): nothing of
    the request was done; retry after `retry_after_s` (messages submitted by app backends
    and not answered yet, `limits.max_submitted`)."""

    def __init__(self, message: str, *, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class BodyAbortedError(ApplianceError):
    """A streamed request body ended early: the client went away, reset the stream, or
    stopped sending past the request deadline.  What arrived before stays usable (tus)."""


class ForbiddenError(ApplianceError):
    """The caller is known but may not do this (HTTP 403): a file not shared with the
    user, an expired or forged signed link, a group picture changed by a non-admin."""


class BlobError(MediaError):
    """The blob store's disk failed (full, I/O error, permissions): `reason` says how.
    Nothing of the blob being written was kept."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class AttachmentError(UsageError):
    """A FILE message's payload is not the convention (PROTOCOL.md §3.3.1): `reason` says
    why.  The message is refused with INVALID_FILE; the connection stays open (the frame
    itself is well formed, its content is the app's)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
