"""`tidings group add|del|list|show|members`."""

from __future__ import annotations

import click

from appliance import app
from appliance.cli.context import CliContext
from appliance.service.admin import parse_perms, perm_names
from appliance.storage.models import GroupInfo
from appliance.transport.loop import run

_app_option = click.option("--app", "app_name", default="default", help="App (tenant) name.")
_perms_option = click.option("--perms", default="send,receive",
                             help="Member permissions: send, receive, admin.")


def _show(info: GroupInfo) -> None:
    click.echo(f"group {info.group_id} {info.name!r}: {len(info.members)} member(s)")
    for m in info.members:
        click.echo(f"  {m.address.decode(errors='replace')} [{perm_names(m.perms)}]")


@click.group()
def group() -> None:
    """Manage groups and their members.

    These write to the store directly, so members are not told of the change
    (no system message, even while the server runs); an app's backend changes
    groups with announcements through the REST API (/v1/groups).
    """


@group.command("add")
@click.argument("name")
@click.option("--member", "members", multiple=True, help="Initial member address (repeatable).")
@_perms_option
@_app_option
@click.pass_obj
def add(ctx: CliContext, name: str, members: tuple[str, ...], perms: str, app_name: str) -> None:
    """Create a group called NAME; prints its numeric id."""
    bits = parse_perms(perms)

    async def go() -> None:
        async with app.admin(ctx.config(), app_name) as svc:
            _show(await svc.add_group(name, list(members), bits))
    run(go())


@group.command("del")
@click.argument("group_id", type=int)
@_app_option
@click.pass_obj
def delete(ctx: CliContext, group_id: int, app_name: str) -> None:
    """Delete group GROUP_ID."""
    async def go() -> None:
        async with app.admin(ctx.config(), app_name) as svc:
            await svc.delete_group(group_id)
            click.echo(f"deleted group {group_id}")
    run(go())


@group.command("list")
@_app_option
@click.pass_obj
def list_(ctx: CliContext, app_name: str) -> None:
    """List groups with their members."""
    async def go() -> None:
        async with app.admin(ctx.config(), app_name) as svc:
            for info in await svc.list_groups():
                _show(info)
    run(go())


@group.command("show")
@click.argument("group_id", type=int)
@_app_option
@click.pass_obj
def show(ctx: CliContext, group_id: int, app_name: str) -> None:
    """Show group GROUP_ID and its members."""
    async def go() -> None:
        async with app.admin(ctx.config(), app_name) as svc:
            _show(await svc.get_group(group_id))
    run(go())


@group.command("members")
@click.argument("group_id", type=int)
@click.option("--add", "add_", multiple=True, help="Address to add or re-permission.")
@click.option("--remove", multiple=True, help="Address to remove.")
@_perms_option
@_app_option
@click.pass_obj
def members(ctx: CliContext, group_id: int, add_: tuple[str, ...], remove: tuple[str, ...],
            perms: str, app_name: str) -> None:
    """Add or remove members of GROUP_ID."""
    bits = parse_perms(perms)

    async def go() -> None:
        async with app.admin(ctx.config(), app_name) as svc:
            _show(await svc.set_members(group_id, list(add_), list(remove), bits))
    run(go())
