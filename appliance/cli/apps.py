"""`tidings app add|list|secret`: apps (tenants) and their REST API secrets."""

from __future__ import annotations

import click

from appliance import app
from appliance.cli.context import CliContext
from appliance.service.admin import issue_operator_key
from appliance.transport.loop import run


@click.group("app")
def app_group() -> None:
    """Manage apps and the secrets their backends call the REST API with."""


@app_group.command("add")
@click.argument("name")
@click.pass_obj
def add(ctx: CliContext, name: str) -> None:
    """Create an app; prints its first secret (shown once) on stdout."""
    async def go() -> None:
        async with app.admin(ctx.config(), "default") as svc:
            info, secret = await svc.add_app(name)
            click.echo(secret)
            click.echo(f"created app {info.name} (id {info.app_id})", err=True)
    run(go())


@app_group.command("list")
@click.pass_obj
def list_apps(ctx: CliContext) -> None:
    """List the apps."""
    async def go() -> None:
        async with app.admin(ctx.config(), "default") as svc:
            for info in await svc.list_apps():
                click.echo(info.name)
    run(go())


@app_group.command("secret")
@click.argument("name", default="default")
@click.option("--keep-old", is_flag=True, help="Keep the app's other secrets valid.")
@click.pass_obj
def secret(ctx: CliContext, name: str, keep_old: bool) -> None:
    """Issue a new REST API secret for app NAME (shown once; old ones revoked)."""
    async def go() -> None:
        async with app.admin(ctx.config(), name) as svc:
            click.echo(await svc.issue_app_secret(replace=not keep_old))
    run(go())


@click.group("operator")
def operator_group() -> None:
    """The operator's own credential."""


@operator_group.command("key")
@click.pass_obj
def operator_key(ctx: CliContext) -> None:
    """Issue the operator key for /v1/apps (shown once; the previous one stops working)."""
    async def go() -> None:
        async with app.admin(ctx.config(), "default") as svc:
            click.echo(await issue_operator_key(svc.store, svc.clock))
    run(go())
