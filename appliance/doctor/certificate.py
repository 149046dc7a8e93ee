"""The served certificate: expiry and renewal.

From the running server's report when there is one (what clients get now),
else from what the configuration says would be served: the ACME certificate
in the store, the ``[tls]`` files, or the self-signed pair in the data
directory.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Final

from appliance.certs.config import certificate_name
from appliance.certs.selfsigned import CERT_NAME
from appliance.certs.status import pem_not_after_ms, served
from appliance.config.database import resolve_database
from appliance.doctor.model import Finding, Subject, Verdict
from appliance.doctor.store import created
from appliance.service.database import running
from appliance.status.report import Certificate, iso
from appliance.storage.factory import open_location

NAME: Final = "certificate"
#: Below this many days left: fail, whatever renews it (SPEC M13: a lapsed
#: certificate stops every client).
FAIL_DAYS: Final = 7.0
#: The operator's own files are renewed by hand: warn this early.
WARN_MANUAL_DAYS: Final = 30.0


def check_certificate(subject: Subject) -> Finding:
    """Fail when the served certificate expires within `FAIL_DAYS` (or has); warn when
    ACME renewal is failing, or the operator's own certificate expires within a month."""
    cert = (subject.report.certificate if subject.report is not None else None) \
        or _configured(subject)
    days = cert.days_left(subject.now_ms)
    figures = {"serving": cert.serving, "not_after": iso(cert.not_after_ms),
               "days_left": None if days is None else round(days, 1),
               "renewal": cert.renewal, "failed_attempts": cert.failed_attempts,
               "last_error": cert.last_error or None}
    what = f"{cert.serving} certificate"
    if days is None and cert.serving != "self-signed":
        return Finding(NAME, Verdict.FAIL, f"{what}: cannot read its expiry", _fix(cert),
                       figures)
    when = ("not made yet (made at the first start)" if days is None
            else f"expires {iso(cert.not_after_ms)} ({days:.1f} days left)")
    if days is None:
        days = float("inf")
    if days < 0:
        return Finding(NAME, Verdict.FAIL, f"{what} EXPIRED at {iso(cert.not_after_ms)}",
                       _fix(cert), figures)
    if days < FAIL_DAYS:
        return Finding(NAME, Verdict.FAIL, f"{what} {when}: under {FAIL_DAYS:g} days",
                       _fix(cert), figures)
    if cert.renewal == "failing":
        return Finding(NAME, Verdict.WARN, f"{what} {when}; renewal failing:"
                       f" {cert.failed_attempts} attempts, last error: {cert.last_error}",
                       _fix(cert), figures)
    if cert.renewal == "manual" and days < WARN_MANUAL_DAYS:
        return Finding(NAME, Verdict.WARN, f"{what} {when}: replace it soon", _fix(cert),
                       figures)
    return Finding(NAME, Verdict.OK, f"{what} {when}; renewal {cert.renewal}",
                   figures=figures)


def _fix(cert: Certificate) -> str:
    if cert.renewal in ("automatic", "failing"):
        return ("see `tidings cert status` for the CA's error, fix it (DNS, ports 80/443"
                " reachable), then `tidings cert renew --force`")
    if cert.serving == "provided":
        return "install a renewed certificate at [tls] cert/key, then `systemctl reload tidings`"
    return (f"move {CERT_NAME} and its key out of <data_dir>/tls and restart: a new"
            " self-signed pair is made (or configure ACME with `tidings setup`)")


def _configured(subject: Subject) -> Certificate:
    """What the server would serve, from the configuration (no server running)."""
    config = subject.config
    if config.acme.hostnames:
        return asyncio.run(_acme(subject))
    if config.tls.cert:
        return served("provided", pem_not_after_ms(Path(config.tls.cert).expanduser()))
    return served("self-signed", pem_not_after_ms(subject.data_dir / "tls" / CERT_NAME))


async def _acme(subject: Subject) -> Certificate:
    config = subject.config
    name = certificate_name(config.acme.hostnames)
    location = resolve_database(config.storage.database, subject.data_dir)
    fallback = subject.data_dir / "tls" / CERT_NAME
    if not created(location):
        return served("self-signed", pem_not_after_ms(fallback))
    with running(location, subject.data_dir):
        store = await open_location(location, config.storage.timeout_s, subject.now_ms,
                                    migrate=False)
        try:
            stored = await store.load_certificate(name)
            state = await store.renewal_state(name)
        finally:
            await store.close()
    if stored is not None:
        return served("acme", stored.not_after_ms, config.acme, stored, state)
    return served("self-signed", pem_not_after_ms(fallback), config.acme, None, state)
