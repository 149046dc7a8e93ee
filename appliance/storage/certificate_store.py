"""Certificates and their renewal state in the store (issue 13): part of `interface.Storage`."""

from __future__ import annotations

from typing import Protocol

from appliance.storage.models import (
    RenewalState,
    StoredCertificate,
)


class CertificateStore(Protocol):
    """What the ACME manager keeps in the store (issue 13), so that several
    processes or nodes sharing one database obtain a certificate once (the one
    holding the lease) and all serve it.

    None of these calls raise the store's caches or the directory version:
    they are not directory changes.
    """

    async def load_certificate(self, name: str) -> StoredCertificate | None:
        """The newest saved certificate for `name`, or None.

        Raises:
            StorageUnavailableError: the store cannot be read.
        """
        ...

    async def certificate_version(self, name: str) -> int:
        """The `version` of the newest saved certificate for `name` (0 when none).

        Raises:
            StorageUnavailableError: the store cannot be read.
        """
        ...

    async def save_certificate(self, cert: StoredCertificate) -> int:
        """Replace `cert.name`'s certificate; returns its new version (the old one + 1;
        `cert.version` is ignored).

        Raises:
            StorageUnavailableError: the store cannot be written.
        """
        ...

    async def renewal_state(self, name: str) -> RenewalState:
        """Where obtaining `name` stands (a zero state when never attempted).

        Raises:
            StorageUnavailableError: the store cannot be read.
        """
        ...

    async def save_renewal_state(self, state: RenewalState) -> None:
        """Replace `state.name`'s renewal state.

        Raises:
            StorageUnavailableError: the store cannot be written.
        """
        ...

    async def acquire_lease(self, name: str, owner: str, now_ms: int, ttl_ms: int) -> bool:
        """Take or extend the lease `name` for `owner` until `now_ms + ttl_ms`.

        True when `owner` now holds it: nobody held it, its holder's lease had
        expired (a crashed process), or `owner` held it already (a refresh).
        Atomic across processes and nodes sharing the store.

        Raises:
            StorageUnavailableError: the store cannot be written.
        """
        ...

    async def release_lease(self, name: str, owner: str) -> None:
        """Give the lease `name` up, if `owner` holds it (otherwise nothing happens).

        Raises:
            StorageUnavailableError: the store cannot be written.
        """
        ...

    async def save_challenge_answer(self, name: str, answer: bytes, expires_ms: int,
                                    now_ms: int) -> None:
        """Publish a challenge answer (``http-01:<token>`` or ``tls-alpn-01:<hostname>``
        -> key authorization) to every process until `expires_ms`.

        Raises:
            StorageError: `name` or `answer` out of bounds.
            StorageUnavailableError: the store cannot be written.
        """
        ...

    async def challenge_answer(self, name: str, now_ms: int) -> bytes | None:
        """The published, unexpired answer called `name`, or None.

        Raises:
            StorageUnavailableError: the store cannot be read.
        """
        ...

    async def drop_challenge_answer(self, name: str) -> None:
        """Withdraw an answer (the validation is over).

        Raises:
            StorageUnavailableError: the store cannot be written.
        """
        ...
