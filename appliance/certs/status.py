"""What `tidings cert status`, `/v1/operator/stats`, `tidings status` and `tidings doctor`
report about certificates."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from cryptography import x509

from appliance.certs.config import AcmeConfig, certificate_name
from appliance.certs.schedule import renewal_due_ms
from appliance.status.report import Certificate
from appliance.storage.models import RenewalState, StoredCertificate

#: A certificate file (a chain, or the key and the chain) is a few KiB.
_MAX_PEM_BYTES = 1024 * 1024


def iso(ms: int) -> str | None:
    """Epoch milliseconds as an RFC 3339 UTC time; None for 0 (never)."""
    if not ms:
        return None
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).isoformat(timespec="seconds")


def describe(config: AcmeConfig, cert: StoredCertificate | None, state: RenewalState,
             serving: str, suggested_ms: int = 0) -> dict[str, Any]:
    """One certificate's figures; times are RFC 3339 UTC (None: not applicable)."""
    due = (renewal_due_ms(cert.not_before_ms, cert.not_after_ms, config.renew_remaining,
                          suggested_ms) if cert is not None else 0)
    return {
        "name": certificate_name(config.hostnames),
        "hostnames": list(config.hostnames),
        "serving": serving,
        "issuer": cert.issuer if cert is not None else None,
        "not_before": iso(cert.not_before_ms) if cert is not None else None,
        "not_after": iso(cert.not_after_ms) if cert is not None else None,
        "version": cert.version if cert is not None else 0,
        # With no certificate yet, the next renewal is the next attempt.
        "next_renewal": iso(max(due, state.next_attempt_ms)) if cert is not None
        else iso(state.next_attempt_ms) or "now",
        "failed_attempts": state.attempts,
        "next_attempt": iso(state.next_attempt_ms),
        "last_attempt": iso(state.last_attempt_ms),
        "last_error": state.last_error or None,
        "renewal_requested": bool(state.request),
    }


def pem_not_after_ms(path: Path) -> int:
    """When the first certificate in a PEM file expires (a bundle may hold the key first);
    0 when the file cannot be read or holds no certificate."""
    try:
        with path.open("rb") as f:
            data = f.read(_MAX_PEM_BYTES)
        first = x509.load_pem_x509_certificates(data)[0]
    except (OSError, ValueError, IndexError):
        return 0
    return int(first.not_valid_after_utc.timestamp() * 1000)


def served(serving: str, not_after_ms: int, acme: AcmeConfig | None = None,
           cert: StoredCertificate | None = None, state: RenewalState | None = None,
           suggested_ms: int = 0) -> Certificate:
    """The figures of the certificate being served, for the status file and the doctor.

    `serving` is ``acme``, ``provided`` or ``self-signed``; with ACME on
    (`acme` has hostnames and `state` is known), renewal is ``automatic`` or
    ``failing`` (attempts failing since the last success), even while the
    self-signed fallback is served; otherwise ``manual`` for the operator's
    own files and ``none`` for the self-signed pair.
    """
    if acme is None or not acme.hostnames or state is None:
        return Certificate(serving, not_after_ms, "manual" if serving == "provided" else "none")
    due = (renewal_due_ms(cert.not_before_ms, cert.not_after_ms, acme.renew_remaining,
                          suggested_ms) if cert is not None else 0)
    return Certificate(serving, not_after_ms, "failing" if state.attempts else "automatic",
                       state.attempts, state.last_error, max(due, state.next_attempt_ms))
