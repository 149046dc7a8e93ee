"""One ACME conversation (RFC 8555) on certbot's `acme` and `josepy`: account,
order, challenges, finalization, renewal information.

Blocking (`acme` speaks through `requests`): the manager runs it in a worker
thread while the event loop serves the challenge answers it publishes in
`ChallengeAnswers`.  Every library exception is translated here into a
`CertificateError` that says what the operator can do about it.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import json
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import requests
from acme import challenges, client, errors, messages
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from josepy import b64, errors as jose_errors, jwa, jwk

from appliance import __version__
from appliance.certs.challenges import ChallengeAnswers
from appliance.certs.diagnose import hint_for
from appliance.certs.keys import certificate_key, csr_for, write_private
from appliance.errors import (
    AcmeProblemError,
    CaUnreachableError,
    CertificateError,
    ChallengeFailedError,
    RateLimitedError,
)

log = logging.getLogger(__name__)

USER_AGENT = f"tidings/{__version__}"
HTTP01, TLS_ALPN01 = "http-01", "tls-alpn-01"
#: A CA that keeps refusing our nonces is broken, not unlucky (RFC 8555 §6.5 asks
#: clients to retry badNonce; pebble refuses 5 % of good ones on purpose).
MAX_BAD_NONCE_RETRIES = 10
#: Authorizations and orders are polled first this long after the CA was asked to
#: act (it cannot have finished sooner), then 1.5 times less often each time up to
#: the cap, and never before the CA's Retry-After (RFC 8555 §7.5.1, §7.4).  A CA
#: that validates or issues in milliseconds (pebble; Let's Encrypt's finalization
#: when quick) is seen after 0.3 s rather than after a whole second.
_POLL_FIRST_S, _POLL_GROWTH, _POLL_MAX_S = 0.3, 1.5, 5.0
#: Network timeout of one request to the CA.
_REQUEST_TIMEOUT_S = 30


@dataclass(frozen=True, slots=True)
class Issued:
    """A certificate a CA gave us."""

    fullchain_pem: bytes
    key_pem: bytes
    issuer: str  # the directory URL
    not_before_ms: int
    not_after_ms: int


@dataclass(frozen=True, slots=True)
class Eab:
    """External Account Binding credentials (RFC 8555 §7.3.4)."""

    kid: str
    hmac_key: str


class _Network(client.ClientNetwork):
    """`ClientNetwork` that retries badNonce as RFC 8555 §6.5 says and keeps Retry-After.

    The library retries a badNonce once with a nonce it fetches anew; the RFC
    says the error response carries a fresh nonce to retry with, and pebble
    refuses 5 % of nonces, so a whole issuance sees several.
    """

    last_response: requests.Response | None = None

    def _send_request(self, method: str, url: str, *args: Any, **kwargs: Any
                      ) -> requests.Response:
        response = super()._send_request(method, url, *args, **kwargs)
        self.last_response = response
        return response

    def post(self, *args: Any, **kwargs: Any) -> requests.Response:
        for attempt in range(MAX_BAD_NONCE_RETRIES + 1):
            try:
                return self._post_once(*args, **dict(kwargs))
            except messages.Error as error:
                response = self.last_response
                if response is not None:
                    # Kept on the error (mutable, see acme GH #9539) for rate limits.
                    error.retry_after = response.headers.get("Retry-After")
                if error.code != "badNonce" or attempt == MAX_BAD_NONCE_RETRIES:
                    raise
                if response is not None and self.REPLAY_NONCE_HEADER in response.headers:
                    self._add_nonce(response)
                log.debug("ACME badNonce, retrying with a fresh nonce (%d)", attempt + 1)
        raise AssertionError("unreachable")


class _TlsAlpn01Response(challenges.KeyAuthorizationChallengeResponse):
    """The answer to a tls-alpn-01 challenge: ``{}`` (RFC 8555 §7.5.1).

    `acme` 5 dropped TLS-ALPN-01; an empty `ChallengeResponse` is falsy and
    would be sent as a POST-as-GET that never starts validation (guide 6.2),
    which a key-authorization response (truthy) is not.
    """

    typ = TLS_ALPN01


def _retry_at_ms(header: str | None, now: float | None = None) -> int:
    """A Retry-After header (seconds or an HTTP date, RFC 9110 §10.2.3) as epoch ms; 0 if none."""
    if not header:
        return 0
    now = time.time() if now is None else now
    try:
        return int((now + max(0, int(header))) * 1000)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(header)
    except (TypeError, ValueError):
        return 0
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return int(when.timestamp() * 1000)


def problem_of(error: messages.Error) -> dict[str, object]:
    """The CA's problem document (RFC 7807), as the CA sent it."""
    return cast(dict[str, object], json.loads(json.dumps(error.to_partial_json(),
                                                         default=str)))


def translate(exc: BaseException, issuer: str) -> CertificateError:
    """A `CertificateError` for whatever `acme`, `josepy` or `requests` raised."""
    if isinstance(exc, CertificateError):
        return exc
    if isinstance(exc, messages.Error):
        problem = problem_of(exc)
        retry_at = _retry_at_ms(getattr(exc, "retry_after", None))
        detail = exc.detail or exc.title or exc.description or ""
        if exc.code == "rateLimited":
            until = (dt.datetime.fromtimestamp(retry_at / 1000, dt.UTC).isoformat(
                timespec="seconds") if retry_at else "later")
            return RateLimitedError(f"{issuer} rate-limited us until {until}: {detail}",
                                    problem=problem, issuer=issuer, retry_at_ms=retry_at)
        return AcmeProblemError(f"{issuer} refused: {exc.typ}: {detail}", problem=problem,
                                issuer=issuer, retry_at_ms=retry_at)
    if isinstance(exc, requests.exceptions.RequestException):
        return CaUnreachableError(f"cannot reach the CA at {issuer}: {_short(exc)}",
                                  issuer=issuer)
    if isinstance(exc, errors.TimeoutError):
        return CertificateError(f"{issuer} did not finish the order in time", issuer=issuer)
    if isinstance(exc, errors.Error | jose_errors.Error | ValueError | KeyError):
        return CertificateError(f"{issuer}: unexpected answer: {exc!r}", issuer=issuer)
    return CertificateError(f"{issuer}: {exc!r}", issuer=issuer)


def _short(exc: BaseException) -> str:
    """The innermost reason of a `requests` error, not its whole chain."""
    while exc.__context__ is not None and len(str(exc)) > 200:
        exc = exc.__context__
    return str(exc)[:300]


def _ms(when: dt.datetime) -> int:
    return int(when.timestamp() * 1000)


def _aware(when: dt.datetime) -> dt.datetime:
    """`acme` mixes naive local times (datetime.now()) with aware UTC ones (guide 6.1)."""
    return when.astimezone(dt.UTC) if when.tzinfo is None else when


class _Pause:
    """The waits between the polls of one authorization set or order (see _POLL_FIRST_S)."""

    def __init__(self, deadline: float, sleep: Callable[[float], None]) -> None:
        self._deadline = deadline
        self._sleep = sleep
        self._interval = _POLL_FIRST_S

    def wait(self, retry_after: str | None, late: Callable[[], CertificateError]) -> None:
        """Sleep before the next poll, at least as long as `retry_after` (the CA's header)
        asks; raise `late()` once the attempt's deadline has passed."""
        wait = self._interval
        retry = _retry_at_ms(retry_after)
        if retry:
            wait = max(wait, retry / 1000 - time.time())
        remaining = self._deadline - time.monotonic()
        if remaining <= 0:
            raise late()
        self._sleep(min(wait, remaining) * random.uniform(0.9, 1.1))
        self._interval = min(self._interval * _POLL_GROWTH, _POLL_MAX_S)


def _post_as_get(acme: client.ClientV2, url: str) -> requests.Response:
    """A POST-as-GET (RFC 8555 §6.3) of `url`, as `acme` sends its own."""
    response: requests.Response = acme.net.post(url, None,
                                                new_nonce_url=acme.directory["newNonce"])
    return response


class AcmeIssuer:
    """One CA (an ACME directory), with the appliance's account there."""

    def __init__(self, directory_url: str, account_key: jwk.JWKEC, state_dir: Path, *,
                 email: str = "", eab: Eab | None = None, ca_bundle: str = "") -> None:
        self.url = directory_url
        self._key = account_key
        self._accounts = state_dir / "accounts.json"
        self._email = email
        self._eab = eab
        self._ca_bundle = ca_bundle
        self._client: client.ClientV2 | None = None

    # --- account (RFC 8555 §7.3) -------------------------------------------------------

    def connect(self) -> client.ClientV2:
        """The directory and our account there, registering it on first use.

        Raises:
            CertificateError: the CA is unreachable or refuses the account.
        """
        try:
            return self._connect()
        except Exception as exc:  # noqa: BLE001 - translated for the operator
            raise translate(exc, self.url) from None

    def _connect(self) -> client.ClientV2:
        # `verify` is handed to requests as is: a path trusts that bundle (a private CA).
        verify = cast(bool, self._ca_bundle or True)
        net = _Network(self._key, alg=jwa.ES256, verify_ssl=verify, user_agent=USER_AGENT,
                       timeout=_REQUEST_TIMEOUT_S)
        directory = client.ClientV2.get_directory(self.url, net)
        acme = client.ClientV2(directory, net)
        uri = self._known_accounts().get(self.url)
        if uri:
            net.account = messages.RegistrationResource(uri=uri, body=messages.Registration())
            try:
                acme.query_registration(net.account)
            except messages.Error as exc:
                if exc.code not in ("accountDoesNotExist", "unauthorized"):
                    raise
                # The CA forgot us (pebble does on every restart): register again.
                log.warning("ACME account at %s is gone (%s); registering again", self.url,
                            exc.code)
                net.account = None
                uri = ""
        if not uri:
            self._register(acme, net)
        self._client = acme
        return acme

    def _register(self, acme: client.ClientV2, net: _Network) -> None:
        fields: dict[str, Any] = {"terms_of_service_agreed": True}
        if self._email:
            fields["email"] = self._email
        if self._eab is not None:
            fields["external_account_binding"] = messages.ExternalAccountBinding.from_data(
                account_public_key=self._key.public_key(), kid=self._eab.kid,
                hmac_key=self._eab.hmac_key, directory=acme.directory)
        elif acme.external_account_required():
            raise CertificateError(
                f"{self.url} requires External Account Binding: set acme.eab_kid and"
                " acme.eab_hmac_key to the credentials the CA gave you", issuer=self.url)
        try:
            regr = acme.new_account(messages.NewRegistration.from_data(**fields))
            uri = regr.uri
        except errors.ConflictError as exc:  # the key has an account already
            uri = exc.location
            net.account = messages.RegistrationResource(uri=uri, body=messages.Registration())
        known = self._known_accounts()
        known[self.url] = uri
        write_private(self._accounts, json.dumps(known, indent=2).encode())
        log.info("ACME account at %s: %s", self.url, uri)

    def _known_accounts(self) -> dict[str, str]:
        try:
            data = json.loads(self._accounts.read_text())
        except (OSError, ValueError):
            return {}
        return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}

    # --- one certificate (RFC 8555 §7.4) ---------------------------------------------

    def obtain(self, hostnames: tuple[str, ...], key_type: str, challenge: str,
               answers: ChallengeAnswers, timeout_s: float,
               sleep: Callable[[float], None] = time.sleep) -> Issued:
        """Order a certificate for `hostnames`, answering `challenge` for each name.

        Raises:
            CertificateError: whatever stopped it (typed: unreachable, refused,
                rate-limited, a challenge failed).
        """
        deadline = time.monotonic() + timeout_s
        acme = self._client or self.connect()
        try:
            return self._obtain(acme, hostnames, key_type, challenge, answers, deadline, sleep)
        except Exception as exc:  # noqa: BLE001 - translated for the operator
            self._client = None  # a fresh directory and nonce next time
            raise translate(exc, self.url) from None

    def _obtain(self, acme: client.ClientV2, hostnames: tuple[str, ...], key_type: str,
                challenge: str, answers: ChallengeAnswers, deadline: float,
                sleep: Callable[[float], None]) -> Issued:
        key_pem = certificate_key(key_type)
        order = acme.new_order(csr_for(key_pem, hostnames))
        published: list[tuple[str, str]] = []
        try:
            waiting = []
            for authzr in order.authorizations:
                if authzr.body.status == messages.STATUS_VALID:
                    continue  # validated recently: CAs reuse authorizations
                challb = self._pick(authzr, challenge)
                published.append(self._answer(acme, authzr, challb, challenge, answers))
                waiting.append(authzr)
            self._await_validation(acme, waiting, challenge, deadline, sleep)
            # Where an order stands when it stalls: validated, so finalization is next.
            log.info("validated %s with %s at %s; finalizing the order", ", ".join(hostnames),
                     challenge, self.url)
        finally:
            for kind, value in published:
                if kind == HTTP01:
                    answers.drop_http01(value)
                else:
                    answers.drop_tls_alpn01(value)
        fullchain_pem = self._finalize(acme, order, deadline, sleep).encode()
        cert = x509.load_pem_x509_certificate(fullchain_pem)
        return Issued(fullchain_pem, key_pem, self.url, _ms(cert.not_valid_before_utc),
                      _ms(cert.not_valid_after_utc))

    def _pick(self, authzr: messages.AuthorizationResource, challenge: str
              ) -> messages.ChallengeBody:
        offered = []
        for challb in authzr.body.challenges:
            typ = challb.to_partial_json().get("type")
            offered.append(str(typ))
            if typ == challenge:
                return challb
        name = authzr.body.identifier.value
        raise CertificateError(f"{self.url} does not offer {challenge} for {name} (it offers"
                               f" {', '.join(offered)}): set acme.challenge", issuer=self.url)

    def _answer(self, acme: client.ClientV2, authzr: messages.AuthorizationResource,
                challb: messages.ChallengeBody, challenge: str,
                answers: ChallengeAnswers) -> tuple[str, str]:
        hostname = authzr.body.identifier.value
        response: challenges.ChallengeResponse
        if challenge == HTTP01:
            response, validation = challb.chall.response_and_validation(self._key)
            token = challb.chall.encode("token")
            answers.put_http01(token, validation)
            published = (HTTP01, token)
        else:
            # UnrecognizedChallenge in acme 5: the token is in its JSON (guide 6.2).
            token = challb.chall.jobj["token"]
            thumbprint = b64.b64encode(self._key.thumbprint(
                hash_function=hashes.SHA256)).decode()
            key_authorization = f"{token}.{thumbprint}"
            answers.put_tls_alpn01(hostname, key_authorization)
            response = _TlsAlpn01Response(key_authorization=key_authorization)
            published = (TLS_ALPN01, hostname)
        acme.answer_challenge(challb, response)
        return published

    def _await_validation(self, acme: client.ClientV2,
                          waiting: list[messages.AuthorizationResource], challenge: str,
                          deadline: float, sleep: Callable[[float], None]) -> None:
        """Poll each authorization until valid, first _POLL_FIRST_S after answering (a
        poll at once only finds it pending), then as `_Pause` and the CA's Retry-After
        say (RFC 8555 §7.5.1)."""
        pause = _Pause(deadline, sleep)

        def late() -> CertificateError:
            names = ", ".join(a.body.identifier.value for a in waiting)
            return CertificateError(f"{self.url} had not validated {names} in time"
                                    " (acme.attempt_timeout_s)", issuer=self.url)

        retry_after: str | None = None
        while waiting:
            pause.wait(retry_after, late)
            retry_after = None
            for authzr in list(waiting):
                updated, response = acme.poll(authzr)
                status = updated.body.status
                if status == messages.STATUS_VALID:
                    waiting.remove(authzr)
                elif status != messages.STATUS_PENDING and status != messages.STATUS_PROCESSING:
                    raise self._failed(updated, challenge)
                elif _retry_at_ms(response.headers.get("Retry-After")) > _retry_at_ms(
                        retry_after):
                    retry_after = response.headers.get("Retry-After")

    def _finalize(self, acme: client.ClientV2, order: messages.OrderResource, deadline: float,
                  sleep: Callable[[float], None]) -> str:
        """Finalize `order` and download its certificate chain (RFC 8555 §7.4), polling
        the order as the authorizations are: `acme`'s own `poll_finalization` sleeps a
        whole second before its first look, even at an order the CA has already issued.

        Raises:
            messages.Error: the CA made the order invalid (its problem document).
            CertificateError: not issued within the attempt's deadline.
        """
        try:
            order = acme.begin_finalization(order)
        except messages.Error as exc:
            if exc.code != "orderNotReady":  # authorizations still settling: poll for "ready"
                raise
        pause = _Pause(deadline, sleep)

        def late() -> CertificateError:
            return CertificateError(f"{self.url} did not issue the certificate in time"
                                    " (acme.attempt_timeout_s)", issuer=self.url)

        retry_after: str | None = None
        while True:
            body = order.body
            if body.status == messages.STATUS_VALID and body.certificate is not None:
                return _post_as_get(acme, body.certificate).text
            if body.status == messages.STATUS_INVALID:
                if body.error is not None:
                    raise body.error
                raise CertificateError(f"{self.url} abandoned the order (invalid, no reason"
                                       " given)", issuer=self.url)
            pause.wait(retry_after, late)
            if body.status == messages.STATUS_READY:
                order, retry_after = acme.begin_finalization(order), None
                continue
            response = _post_as_get(acme, order.uri)
            order = order.update(body=messages.Order.from_json(response.json()))
            retry_after = response.headers.get("Retry-After")

    def _failed(self, authzr: messages.AuthorizationResource,
                challenge: str) -> ChallengeFailedError:
        hostname = authzr.body.identifier.value
        error: messages.Error | None = None
        for challb in authzr.body.challenges:
            if challb.error is not None:
                error = challb.error
        problem: dict[str, object] = (problem_of(error) if error is not None else {
            "type": "about:blank", "detail": f"authorization {authzr.body.status}"})
        hint = hint_for(hostname, challenge, str(problem.get("type", "")))
        detail = problem.get("detail") or problem.get("type")
        return ChallengeFailedError(
            f"{self.url} could not validate {hostname} with {challenge}: {detail}. {hint}",
            problem=problem, hostname=hostname, hint=hint, issuer=self.url)

    # --- renewal information (RFC 9773) -------------------------------------------------

    def renewal_info(self, fullchain_pem: bytes) -> tuple[dt.datetime | None, dt.datetime]:
        """(when the CA suggests renewing, or None if it offers no ARI; when to ask again).

        Raises:
            CertificateError: the CA could not be asked; ask again later.
        """
        try:
            acme = self._client or self.connect()
            suggested, recheck = acme.renewal_time(fullchain_pem)
        except errors.ARIError as exc:
            raise CertificateError(f"{self.url}: renewal information unavailable: {exc}",
                                   issuer=self.url, retry_at_ms=_ms(_aware(exc.retry_after))
                                   ) from None
        except Exception as exc:  # noqa: BLE001 - translated for the operator
            raise translate(exc, self.url) from None
        return (None if suggested is None else _aware(suggested)), _aware(recheck)
