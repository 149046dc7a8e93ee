"""`tidings user add|del|rename|list|token|revoke|privacy|block|blocks`."""

from __future__ import annotations

import datetime as dt

import click

from appliance import app
from appliance.cli.context import CliContext
from appliance.cli.durations import parse_duration
from appliance.storage.models import Privacy
from appliance.transport.loop import run

_app_option = click.option("--app", "app_name", default="default", help="App (tenant) name.")


@click.group()
def user() -> None:
    """Manage users and their access tokens."""


@user.command("add")
@click.argument("address")
@_app_option
@click.pass_obj
def add(ctx: CliContext, address: str, app_name: str) -> None:
    """Create a user with this ADDRESS (1-64 bytes of UTF-8)."""
    async def go() -> None:
        async with app.admin(ctx.config(), app_name) as svc:
            info = await svc.add_user(address)
            click.echo(f"created user {info.address} (id {info.user_id})")
    run(go())


@user.command("del")
@click.argument("address")
@_app_option
@click.pass_obj
def delete(ctx: CliContext, address: str, app_name: str) -> None:
    """Delete a user, its tokens, devices and queued messages."""
    async def go() -> None:
        async with app.admin(ctx.config(), app_name) as svc:
            await svc.delete_user(address)
            click.echo(f"deleted user {address}")
    run(go())


@user.command("rename")
@click.argument("address")
@click.argument("new_address")
@_app_option
@click.pass_obj
def rename(ctx: CliContext, address: str, new_address: str, app_name: str) -> None:
    """Give the user ADDRESS the address NEW_ADDRESS (its devices and queues stay).

    A running server closes the user's open connections (ADDRESS_CHANGED);
    they reconnect with the same token and get the new address.
    """
    async def go() -> None:
        async with app.admin(ctx.config(), app_name) as svc:
            info = await svc.rename_user(address, new_address)
            click.echo(f"renamed user {address} to {info.address}")
    run(go())


@user.command("list")
@click.option("--after", default="", help="List addresses after this one (paging).")
@click.option("--limit", default=100, type=click.IntRange(1, 10_000))
@_app_option
@click.pass_obj
def list_(ctx: CliContext, after: str, limit: int, app_name: str) -> None:
    """List users in address order."""
    async def go() -> None:
        async with app.admin(ctx.config(), app_name) as svc:
            for info in await svc.list_users(after, limit):
                click.echo(info.address)
    run(go())


@user.command("token")
@click.argument("address")
@click.option("--expires", "expires", default="30d",
              help="Lifetime: seconds or a number with s, m, h, d.")
@_app_option
@click.pass_obj
def token(ctx: CliContext, address: str, expires: str, app_name: str) -> None:
    """Issue an access token for ADDRESS; prints the token (shown only once)."""
    ttl = parse_duration(expires)

    async def go() -> None:
        async with app.admin(ctx.config(), app_name) as svc:
            issued = await svc.issue_token(address, ttl)
            until = dt.datetime.fromtimestamp(issued.expires_ms / 1000, dt.UTC)
            click.echo(issued.token)
            click.echo(f"expires {until:%Y-%m-%d %H:%M:%S} UTC", err=True)
    run(go())


@user.command("revoke")
@click.argument("address")
@_app_option
@click.pass_obj
def revoke(ctx: CliContext, address: str, app_name: str) -> None:
    """Revoke every access token of ADDRESS."""
    async def go() -> None:
        async with app.admin(ctx.config(), app_name) as svc:
            count = await svc.revoke_tokens(address)
            click.echo(f"revoked {count} token(s) of {address}")
    run(go())


@user.command("privacy")
@click.argument("address")
@click.argument("value", required=False,
                type=click.Choice([p.name.lower() for p in Privacy]))
@_app_option
@click.pass_obj
def privacy(ctx: CliContext, address: str, value: str | None, app_name: str) -> None:
    """Show who may see ADDRESS's presence, or set it to VALUE.

    everyone (the default), contacts (the users its app declared), or nobody.
    A running server applies a change within a second.
    """
    async def go() -> None:
        async with app.admin(ctx.config(), app_name) as svc:
            chosen = None if value is None else Privacy[value.upper()]
            click.echo((await svc.privacy(address, chosen)).name.lower())
    run(go())


@user.command("block")
@click.argument("address")
@click.argument("other")
@click.option("--undo", is_flag=True, help="Unblock OTHER instead.")
@_app_option
@click.pass_obj
def block(ctx: CliContext, address: str, other: str, undo: bool, app_name: str) -> None:
    """ADDRESS blocks OTHER: OTHER's messages to it are refused (BLOCKED) and OTHER
    sees nothing of its presence.  A running server applies it within a second."""
    async def go() -> None:
        async with app.admin(ctx.config(), app_name) as svc:
            changed = await svc.set_block(address, other, not undo)
            verb = "unblocks" if undo else "blocks"
            click.echo(f"{address} {verb} {other}" + ("" if changed else " (already)"))
    run(go())


@user.command("blocks")
@click.argument("address")
@_app_option
@click.pass_obj
def blocks(ctx: CliContext, address: str, app_name: str) -> None:
    """List the addresses ADDRESS blocks."""
    async def go() -> None:
        async with app.admin(ctx.config(), app_name) as svc:
            for other in await svc.blocks(address):
                click.echo(other)
    run(go())
