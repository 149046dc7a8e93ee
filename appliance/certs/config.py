"""``[acme]``: the certificate manager's settings (issue 13, SPEC M13).

No hostnames, no ACME: the server serves ``[tls]``'s files or the self-signed
certificate.  With hostnames, it obtains one certificate naming all of them
(SANs) from the first issuer that gives one, and renews it by itself.
Configuring hostnames agrees to the chosen CA's terms of service on the
operator's behalf (RFC 8555 §7.3 ``termsOfServiceAgreed``), as Caddy does;
README says so.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from appliance.errors import ConfigError

#: Directories known by name; anything else must be an https:// URL.
KNOWN_DIRECTORIES = {
    "letsencrypt": "https://acme-v02.api.letsencrypt.org/directory",
    "letsencrypt-staging": "https://acme-staging-v02.api.letsencrypt.org/directory",
}
CHALLENGES = ("auto", "http-01", "tls-alpn-01")
KEY_TYPES = ("ecdsa", "rsa")
#: RFC 1035 §2.3.1 labels (LDH), at least two of them; no wildcards: neither
#: HTTP-01 nor TLS-ALPN-01 can validate one (RFC 8555 §8.3, RFC 8737 §3).
_HOSTNAME = re.compile(r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+"
                       r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
#: One certificate names at most this many hostnames (Let's Encrypt's limit).
MAX_HOSTNAMES = 100


@dataclass(frozen=True, slots=True)
class AcmeConfig:
    """Values of the ``[acme]`` table."""

    #: The names the certificate is for (DNS names resolving to this machine).
    #: Empty: no ACME.
    hostnames: tuple[str, ...] = ()
    #: The ACME account's contact, where the CA sends expiry warnings.
    email: str = ""
    #: ACME directories tried in order until one issues: "letsencrypt",
    #: "letsencrypt-staging" or an https:// URL.
    issuers: tuple[str, ...] = ("letsencrypt",)
    #: "http-01" (on `server.redirect_port`, usually 80), "tls-alpn-01" (on the
    #: main port, RFC 8737) or "auto": both, alternating after a failure.
    challenge: str = "auto"
    #: The certificate's key: "ecdsa" (P-256) or "rsa" (2048 bits).
    key_type: str = "ecdsa"
    #: Renew when this share of the certificate's lifetime remains (unless the
    #: CA's renewal information, RFC 9773, says earlier).
    renew_remaining: float = 1 / 3
    #: External Account Binding (RFC 8555 §7.3.4), for CAs that require it.
    eab_kid: str = ""
    eab_hmac_key: str = ""  # base64url, as the CA gives it
    #: A PEM bundle to trust the CA's HTTPS with (a private CA); "" = the system's.
    ca_bundle: str = ""
    #: Failed attempts are retried after retry_min_s, doubling (with jitter) up to
    #: retry_max_s.
    retry_min_s: float = 60.0
    retry_max_s: float = 6 * 3600.0
    #: How often the manager looks at the store: a certificate another process
    #: obtained, an operator's `tidings cert renew`, a renewal coming due.
    check_interval_s: float = 10.0
    #: One attempt (order, validation, finalization) gives up after this long.
    attempt_timeout_s: float = 120.0


def is_dns_name(name: str) -> bool:
    """Whether `name` is a lower-case DNS name of at least two labels (no wildcard, no IP)."""
    return bool(_HOSTNAME.match(name))


def directory_url(issuer: str) -> str:
    """The directory URL for a configured issuer name or URL."""
    return KNOWN_DIRECTORIES.get(issuer, issuer)


def certificate_name(hostnames: tuple[str, ...]) -> str:
    """The key the certificate is stored under: its hostnames, sorted."""
    return ",".join(sorted(hostnames))


def check(config: AcmeConfig) -> None:
    """Validate what the loader cannot.

    Raises:
        ConfigError: naming the key.
    """
    if len(config.hostnames) > MAX_HOSTNAMES:
        raise ConfigError(f"at most {MAX_HOSTNAMES} hostnames", key_path="acme.hostnames")
    for name in config.hostnames:
        if not is_dns_name(name):
            raise ConfigError(f"{name!r} is not a lower-case DNS name (no wildcards, no IP"
                              " addresses)", key_path="acme.hostnames")
    if not config.issuers:
        raise ConfigError("name at least one issuer", key_path="acme.issuers")
    for issuer in config.issuers:
        url = urlsplit(directory_url(issuer))
        if url.scheme != "https" or not url.hostname:
            raise ConfigError(f"{issuer!r} is neither {' nor '.join(KNOWN_DIRECTORIES)} nor an"
                              " https:// directory URL", key_path="acme.issuers")
    if config.challenge not in CHALLENGES:
        raise ConfigError(f"must be one of {', '.join(CHALLENGES)}", key_path="acme.challenge")
    if config.key_type not in KEY_TYPES:
        raise ConfigError(f"must be one of {', '.join(KEY_TYPES)}", key_path="acme.key_type")
    if not 0 < config.renew_remaining < 1:
        raise ConfigError("must be between 0 and 1 (a share of the lifetime)",
                          key_path="acme.renew_remaining")
    if bool(config.eab_kid) != bool(config.eab_hmac_key):
        raise ConfigError("eab_kid and eab_hmac_key go together",
                          key_path="acme.eab_hmac_key" if config.eab_kid else "acme.eab_kid")
    if config.hostnames and config.email and "@" not in config.email:
        raise ConfigError("must be an e-mail address", key_path="acme.email")
    if config.retry_max_s < config.retry_min_s:
        raise ConfigError("must be >= acme.retry_min_s", key_path="acme.retry_max_s")
