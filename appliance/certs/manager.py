"""The certificate manager: obtain, renew, share and install certificates (issue 13).

One manager per server process.  The store is the meeting point (certmagic's
"storage is the cluster boundary", guide 6.5): the certificate and key, the
renewal state and a lease live there, so processes and nodes sharing one
database place one order (the lease holder's) and all serve its result.

Each `check_interval_s` the manager:
1. loads a certificate another process saved (its version rose) and installs it;
2. renews when due (⅓ of the lifetime left, or the CA's RFC 9773 window),
   when the store has no certificate yet, or when an operator asked
   (`tidings cert renew`), unless a failed attempt's backoff or the CA's
   Retry-After says not yet;
3. renewing: takes the lease, re-reads the store (someone may have just
   renewed), asks each issuer in order in a worker thread, saves the result,
   installs it.  A failure records its error and the next attempt's time and
   never touches the certificate being served.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import socket
import threading
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from appliance.certs.acme_client import HTTP01, TLS_ALPN01, AcmeIssuer, Eab, Issued
from appliance.certs.challenges import ChallengeAnswers
from appliance.certs.config import AcmeConfig, certificate_name, directory_url
from appliance.certs.files import CertificateFiles
from appliance.certs.keys import account_key
from appliance.certs.schedule import next_attempt_ms, renewal_due_ms
from appliance.certs.status import describe, iso
from appliance.errors import CertificateError, ConfigError, StorageError
from appliance.storage.interface import CertificateStore
from appliance.storage.models import RENEW_FORCE, RenewalState, StoredCertificate

log = logging.getLogger(__name__)

T = TypeVar("T")

#: The renewal lease: held this long, refreshed a third of the way through,
#: so a killed process blocks renewals for at most this long (certmagic: 10 s
#: stale locks with 5 s refreshes; an ACME order takes seconds to minutes).
LEASE_TTL_MS = 60_000
#: A published challenge answer lives this long at most (a validation takes
#: seconds; the answer is withdrawn when it is over).
ANSWER_TTL_MS = 10 * 60_000
#: Ask a CA for renewal information (RFC 9773) no more often than this unless
#: it says otherwise; the RFC's default Retry-After is six hours.
_ARI_DEFAULT_RECHECK_MS = 6 * 3600 * 1000


def lease_name(name: str) -> str:
    return f"acme:{name}"


def in_thread(fn: Callable[[], T]) -> asyncio.Future[T]:
    """Run blocking `fn` in a daemon thread: a shutdown never waits for a slow CA."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def settle(ok: bool, value: Any) -> None:
        if future.done():
            return
        if ok:
            future.set_result(value)
        else:
            future.set_exception(value)

    def work() -> None:
        try:
            result = fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the awaiting task
            loop.call_soon_threadsafe(settle, False, exc)
        else:
            loop.call_soon_threadsafe(settle, True, result)

    threading.Thread(target=work, name="acme", daemon=True).start()
    return future


class CertificateManager:
    """Keeps a trusted certificate for `config.hostnames` installed in the server."""

    def __init__(self, config: AcmeConfig, store: CertificateStore, data_dir: Path,
                 install: Callable[[Path], None], answers: ChallengeAnswers, *,
                 http01_available: bool, now_ms: Callable[[], int]) -> None:
        self.config = config
        self.name = certificate_name(config.hostnames)
        self._store = store
        self._install_file = install
        self.answers = answers
        self._http01 = http01_available
        self._now_ms = now_ms
        self._files = CertificateFiles(data_dir / "tls" / "acme" / sorted(config.hostnames)[0])
        self._state_dir = data_dir / "acme"
        self._owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._issuers: list[AcmeIssuer] | None = None
        self._wake = asyncio.Event()
        self.current: StoredCertificate | None = None
        self.state = RenewalState(self.name)
        self.serving = "self-signed"
        self.suggested_ms = 0  # the CA's RFC 9773 suggestion for the current certificate
        self._ari_recheck_ms = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        answers.publish = self._publish

    # --- running --------------------------------------------------------------------

    async def run(self) -> None:
        """The maintenance loop; runs until cancelled."""
        self._loop = asyncio.get_running_loop()
        if self.current is None:
            await self.load_stored()
        if self.current is None:
            log.warning("no certificate for %s yet: serving the self-signed certificate until"
                        " ACME obtains one", ", ".join(self.config.hostnames))
        while True:
            try:
                await self.check()
            except StorageError as exc:  # the database is away (SPEC M14): next round
                log.warning("certificate check skipped: %s", exc)
            except Exception:
                log.exception("certificate check failed")
            self._wake.clear()
            try:
                async with asyncio.timeout(self.config.check_interval_s):
                    await self._wake.wait()
            except TimeoutError:
                pass

    async def load_stored(self) -> None:
        """Install the certificate the store has, if any (before the listeners start,
        so that no handshake after a restart gets the self-signed one)."""
        try:
            await self._load_stored()
        except StorageError as exc:
            log.warning("certificates: store unavailable at start (%s); retrying", exc)

    def wake(self) -> None:
        """Check now rather than at the next interval."""
        self._wake.set()

    async def check(self) -> None:
        """One round: pick up a certificate from the store, renew if due."""
        if await self._store.certificate_version(self.name) > self._version():
            await self._load_stored()
        self.state = await self._store.renewal_state(self.name)
        now = self._now_ms()
        await self._maybe_ask_renewal_info(now)
        if self._should_attempt(self.state, now):
            await self._attempt()
        elif self.state.request:
            # `tidings cert renew` without --force, and nothing is due: answered.
            self.state = dataclasses.replace(self.state, request=0)
            await self._store.save_renewal_state(self.state)

    def _version(self) -> int:
        return self.current.version if self.current is not None else 0

    def due_ms(self) -> int:
        """When the served certificate should be renewed (0: there is none; now)."""
        cert = self.current
        if cert is None:
            return 0
        return renewal_due_ms(cert.not_before_ms, cert.not_after_ms,
                              self.config.renew_remaining, self.suggested_ms)

    def _should_attempt(self, state: RenewalState, now: int) -> bool:
        if state.request == RENEW_FORCE:
            return True
        if self.due_ms() > now:
            return False
        # Due: an operator's request skips the backoff; nothing else does.
        return bool(state.request) or now >= state.next_attempt_ms

    # --- renewing -------------------------------------------------------------------

    async def _attempt(self) -> None:
        lease = lease_name(self.name)
        if not await self._store.acquire_lease(lease, self._owner, self._now_ms(),
                                               LEASE_TTL_MS):
            log.debug("another process is renewing %s", self.name)
            return
        try:
            # Re-read under the lease: the previous holder may have just renewed.
            if await self._store.certificate_version(self.name) > self._version():
                await self._load_stored()
            state = await self._store.renewal_state(self.name)
            if not self._should_attempt(state, self._now_ms()):
                self.state = state
                return
            await self._renew(state, lease)
        finally:
            try:
                await self._store.release_lease(lease, self._owner)
            except StorageError as exc:  # it expires by itself
                log.warning("certificate lease not released: %s", exc)

    async def _holding(self, lease: str, work: asyncio.Future[T]) -> T:
        """Await `work`, refreshing the lease a third of the way through each term."""
        while not work.done():
            await asyncio.wait({work}, timeout=LEASE_TTL_MS / 3000)
            if work.done():
                break
            try:
                await self._store.acquire_lease(lease, self._owner, self._now_ms(),
                                                LEASE_TTL_MS)
            except StorageError as exc:
                log.warning("certificate lease not refreshed: %s", exc)
        return work.result()

    async def _renew(self, state: RenewalState, lease: str) -> None:
        started = self._now_ms()
        failures: list[CertificateError] = []
        challenge = self._challenge(state.attempts)
        for issuer in self._issuer_list():
            log.info("ordering a certificate for %s from %s (%s)",
                     ", ".join(self.config.hostnames), issuer.url, challenge)
            try:
                issued = await self._holding(lease, in_thread(lambda i=issuer: i.obtain(  # type: ignore[misc]
                    self.config.hostnames, self.config.key_type, challenge, self.answers,
                    self.config.attempt_timeout_s)))
            except CertificateError as exc:
                log.warning("certificate for %s: %s", self.name, exc)
                failures.append(exc)
                continue
            await self._save_issued(issued, started)
            return
        await self._record_failure(state, failures, started)

    def _challenge(self, failures: int) -> str:
        """The challenge for this attempt: as configured, or with "auto" HTTP-01 and
        TLS-ALPN-01 in turn after each failure (certmagic rotates too: a CA or a
        firewall that breaks one must not take the certificate down)."""
        if self.config.challenge != "auto":
            return self.config.challenge
        if not self._http01:
            return TLS_ALPN01
        return HTTP01 if failures % 2 == 0 else TLS_ALPN01

    def _issuer_list(self) -> list[AcmeIssuer]:
        if self._issuers is None:
            key = account_key(self._state_dir)
            eab = (Eab(self.config.eab_kid, self.config.eab_hmac_key)
                   if self.config.eab_kid else None)
            self._issuers = [AcmeIssuer(directory_url(i), key, self._state_dir,
                                        email=self.config.email, eab=eab,
                                        ca_bundle=self.config.ca_bundle)
                             for i in self.config.issuers]
        return self._issuers

    async def _save_issued(self, issued: Issued, started: int) -> None:
        cert = StoredCertificate(self.name, issued.fullchain_pem, issued.key_pem,
                                 issued.issuer, issued.not_before_ms, issued.not_after_ms)
        version = await self._store.save_certificate(cert)
        self.state = RenewalState(self.name, last_attempt_ms=started)
        await self._store.save_renewal_state(self.state)
        self._install(StoredCertificate(**{**_fields(cert), "version": version}))
        log.info("certificate for %s obtained from %s, valid until %s; renewal due %s",
                 ", ".join(self.config.hostnames), issued.issuer, iso(issued.not_after_ms),
                 iso(self.due_ms()))

    async def _record_failure(self, state: RenewalState, failures: list[CertificateError],
                              started: int) -> None:
        attempts = state.attempts + 1
        retry_at = max((f.retry_at_ms for f in failures), default=0)
        next_ms = next_attempt_ms(self._now_ms(), attempts, self.config.retry_min_s,
                                  self.config.retry_max_s, retry_at)
        message = " | ".join(str(f) for f in failures) or "no issuer configured"
        self.state = RenewalState(self.name, attempts, next_ms, started, message[:4000])
        await self._store.save_renewal_state(self.state)
        log.error("certificate for %s not obtained (failure %d in a row); still serving the"
                  " %s certificate; next attempt at %s: %s", ", ".join(self.config.hostnames),
                  attempts, "current" if self.current else "self-signed", iso(next_ms), message)

    def _publish(self, name: str, key_authorization: str | None) -> None:
        """From the ACME worker thread: share an answer through the store, so that
        whichever process the CA's validation reaches can give it; blocks until
        saved, before the CA is told to validate."""
        loop = self._loop
        if loop is None:
            return
        now = self._now_ms()
        work = (self._store.drop_challenge_answer(name) if key_authorization is None else
                self._store.save_challenge_answer(name, key_authorization.encode(),
                                                  now + ANSWER_TTL_MS, now))
        try:
            asyncio.run_coroutine_threadsafe(work, loop).result(timeout=30)
        except StorageError as exc:
            if key_authorization is not None:  # a validation reaching another node fails
                raise CertificateError(f"challenge answer not shared: {exc}") from None
            log.warning("challenge answer %s not withdrawn (it expires): %s", name, exc)

    # --- renewal information (RFC 9773) ------------------------------------------------

    async def _maybe_ask_renewal_info(self, now: int) -> None:
        cert = self.current
        if cert is None or now < self._ari_recheck_ms:
            return
        issuer = next((i for i in self._issuer_list() if i.url == cert.issuer), None)
        if issuer is None:
            self._ari_recheck_ms = now + _ARI_DEFAULT_RECHECK_MS
            return
        try:
            suggested, recheck = await in_thread(lambda: issuer.renewal_info(cert.fullchain_pem))
        except CertificateError as exc:
            log.info("renewal information: %s", exc)
            self._ari_recheck_ms = exc.retry_at_ms or now + _ARI_DEFAULT_RECHECK_MS
            return
        self.suggested_ms = int(suggested.timestamp() * 1000) if suggested else 0
        self._ari_recheck_ms = int(recheck.timestamp() * 1000)

    # --- installing ---------------------------------------------------------------------

    async def _load_stored(self) -> None:
        cert = await self._store.load_certificate(self.name)
        if cert is None:
            return
        if cert.not_after_ms <= self._now_ms():
            log.error("the stored certificate for %s expired at %s; renewing",
                      self.name, iso(cert.not_after_ms))
        self._install(cert)

    def _install(self, cert: StoredCertificate) -> None:
        """Write the files, swap the server's context; on error keep serving the old one."""
        try:
            bundle = self._files.write(cert.fullchain_pem, cert.key_pem)
            self._install_file(bundle)
        except (OSError, ConfigError) as exc:
            log.error("certificate for %s (version %d) not installed, keeping the current"
                      " one: %s", self.name, cert.version, exc)
            return
        self._ari_recheck_ms = 0  # ask the CA about this certificate at the next check
        self.current = cert
        self.suggested_ms = 0
        self.serving = "acme"
        log.info("serving the certificate for %s (version %d) until %s",
                 ", ".join(self.config.hostnames), cert.version, iso(cert.not_after_ms))

    def status(self) -> dict[str, Any]:
        """The figures `/v1/operator/stats` reports."""
        return describe(self.config, self.current, self.state, self.serving, self.suggested_ms)


def _fields(cert: StoredCertificate) -> dict[str, Any]:
    return {name: getattr(cert, name) for name in cert.__dataclass_fields__}
