"""`tidings cert status|renew`: the ACME certificate (issue 13).

Both work on the store, from any process: `status` reads what the running
servers share; `renew` leaves a request there that the server holding the
renewal lease acts on within `acme.check_interval_s`, and waits for its
outcome (the challenges must be answered by the server's own listeners).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from typing import Any

import click

from appliance import app
from appliance.certs.config import certificate_name
from appliance.certs.status import describe
from appliance.cli.context import CliContext
from appliance.config import ApplianceConfig
from appliance.errors import CertificateError, ConfigError
from appliance.storage.models import RENEW_FORCE, RENEW_IF_DUE
from appliance.transport.loop import run

#: How often `cert renew` looks for the outcome.
_POLL_S = 0.25


def _acme_config(ctx: CliContext) -> ApplianceConfig:
    config = ctx.config()
    if not config.acme.hostnames:
        raise ConfigError("no hostnames: ACME is off (the server serves [tls]'s files or its"
                          " self-signed certificate)", key_path="acme.hostnames")
    return config


@click.group(name="cert")
def cert() -> None:
    """The certificate ACME obtains and renews for [acme] hostnames."""


@cert.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def status(ctx: CliContext, as_json: bool) -> None:
    """Hostnames, issuer, expiry, next renewal and the last error."""
    config = _acme_config(ctx)
    name = certificate_name(config.acme.hostnames)

    async def go() -> dict[str, Any]:
        async with app.store_of(config) as store:
            stored = await store.load_certificate(name)
            state = await store.renewal_state(name)
        return describe(config.acme, stored, state,
                        "acme" if stored is not None else "self-signed")

    figures = run(go())
    if as_json:
        click.echo(json.dumps(figures, indent=2))
        return
    for key, value in figures.items():
        shown = ", ".join(value) if isinstance(value, list) else value
        click.echo(f"{key.replace('_', ' '):>18}: {'-' if shown is None else shown}")


@cert.command()
@click.option("--force", is_flag=True, help="Renew even if the certificate is not due.")
@click.option("--wait", "wait_s", type=click.FloatRange(0, 3600), default=300.0,
              help="Seconds to wait for the running server's outcome (0: do not wait).")
@click.pass_obj
def renew(ctx: CliContext, force: bool, wait_s: float) -> None:
    """Ask the running server to renew now (if due, or with --force), skipping any backoff."""
    config = _acme_config(ctx)
    name = certificate_name(config.acme.hostnames)

    async def go() -> str:
        async with app.store_of(config) as store:
            before = await store.certificate_version(name)
            state = await store.renewal_state(name)
            asked = int(time.time() * 1000)  # noqa: TID251 - compared with the server's wall clock
            await store.save_renewal_state(dataclasses.replace(
                state, request=RENEW_FORCE if force else RENEW_IF_DUE, requested_ms=asked))
            if not wait_s:
                return "renewal requested; the server acts on it within acme.check_interval_s"
            deadline = time.monotonic() + wait_s
            while time.monotonic() < deadline:
                await asyncio.sleep(_POLL_S)
                version = await store.certificate_version(name)
                state = await store.renewal_state(name)
                if version > before:
                    stored = await store.load_certificate(name)
                    until = describe(config.acme, stored, state, "acme")["not_after"]
                    return f"renewed: version {version}, valid until {until}"
                if not state.request and state.last_attempt_ms >= asked and state.last_error:
                    raise CertificateError(f"renewal failed: {state.last_error}")
                if not state.request:
                    return "not due: nothing to renew (use --force to renew anyway)"
            raise CertificateError(f"no outcome within {wait_s:.0f} s: is `tidings serve`"
                                   " running? The request stays; a server acts on it when"
                                   " it runs")

    click.echo(run(go()))
