"""`tidings ipfilter`: the IP filter's allow and block files (SPEC M13).

The running server reloads a file within a second of a change (and on
SIGHUP); connections from addresses it now refuses are closed then.
"""

from __future__ import annotations

import click

from appliance.cli.context import CliContext
from appliance.edge.files import LISTS, FilterFiles


def _files(ctx: CliContext) -> FilterFiles:
    config = ctx.config()
    return FilterFiles.of(config.edge, config.storage.data_dir)


@click.group(name="ipfilter")
def ipfilter() -> None:
    """Allow and block IPv4/IPv6 addresses and CIDRs (the block list wins)."""


@ipfilter.command()
@click.argument("cidrs", nargs=-1, required=True)
@click.pass_obj
def allow(ctx: CliContext, cidrs: tuple[str, ...]) -> None:
    """Add CIDRs to the allow list (once it is not empty, only they may connect)."""
    added, _ = _files(ctx).change("allow", add=cidrs)
    click.echo(f"allowed {added} new CIDR(s)")


@ipfilter.command()
@click.argument("cidrs", nargs=-1, required=True)
@click.pass_obj
def block(ctx: CliContext, cidrs: tuple[str, ...]) -> None:
    """Add CIDRs to the block list."""
    added, _ = _files(ctx).change("block", add=cidrs)
    click.echo(f"blocked {added} new CIDR(s)")


@ipfilter.command()
@click.option("--list", "name", type=click.Choice(LISTS), default="block",
              help="The list to remove from.")
@click.argument("cidrs", nargs=-1, required=True)
@click.pass_obj
def remove(ctx: CliContext, name: str, cidrs: tuple[str, ...]) -> None:
    """Remove CIDRs from a list."""
    _, removed = _files(ctx).change(name, remove=cidrs)
    click.echo(f"removed {removed} CIDR(s) from the {name} list")


@ipfilter.command(name="list")
@click.argument("name", type=click.Choice(LISTS), default="block")
@click.pass_obj
def list_(ctx: CliContext, name: str) -> None:
    """Print a list's CIDRs, one per line."""
    for network in _files(ctx).read(name):
        click.echo(str(network))
