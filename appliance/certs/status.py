"""What `tidings cert status` and `/v1/operator/stats` report about certificates."""

from __future__ import annotations

import datetime as dt
from typing import Any

from appliance.certs.config import AcmeConfig, certificate_name
from appliance.certs.schedule import renewal_due_ms
from appliance.storage.models import RenewalState, StoredCertificate


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
