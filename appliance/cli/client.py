"""`tidings client send|listen`: try a server by hand, through the SDK."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from appliance.protocol.wire.constants import DEFAULT_EXPIRY_S
from appliance.sdk import Client, Group, IncomingMessage, Status
from appliance.transport.loop import run

_WAIT = {"sent": Status.SENT, "delivered": Status.DELIVERED, "read": Status.READ}


def _server(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit():
        raise click.BadParameter(f"expected HOST:PORT, got {value!r}")
    return host, int(port)


def _default_store(server: str, token: str) -> Path:
    # One store per (server, token): the device id and outbox survive runs.
    base = Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state")
    digest = hashlib.sha256(f"{server}|{token}".encode()).hexdigest()[:16]
    path = base / "tidings" / f"client-{digest}.sqlite3"
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


F = TypeVar("F", bound=Callable[..., Any])


def _connection_options(fn: F) -> F:
    fn = click.option("--store", type=click.Path(path_type=Path, dir_okay=False),
                      help="Local store (default: one per server and token under"
                           " ~/.local/state/tidings).")(fn)
    fn = click.option("--token", required=True, envvar="TIDINGS_TOKEN",
                      help="Access token (or TIDINGS_TOKEN).")(fn)
    fn = click.option("--server", default="127.0.0.1:7447", envvar="TIDINGS_SERVER",
                      help="HOST:PORT of the server (or TIDINGS_SERVER).")(fn)
    return click.option("--timeout", default=30.0,
                        help="Seconds to wait for the server.")(fn)


def _client(server: str, token: str, store: Path | None) -> Client:
    host, port = _server(server)
    return Client(host, port, token, store=store or _default_store(server, token))


@click.group()
def client() -> None:
    """A messaging client for trying a server by hand."""


@client.command()
@click.argument("to")
@click.argument("text")
@click.option("--group", "to_group", is_flag=True, help="TO is a group id, not a user address.")
@click.option("--expiry", default=DEFAULT_EXPIRY_S,
              help="Seconds to deliver within (0: real time).")
@click.option("--wait", "wait_for", type=click.Choice(sorted(_WAIT)), default="sent",
              help="Return once the message has this status.")
@_connection_options
def send(to: str, text: str, to_group: bool, expiry: int, wait_for: str, server: str,
         token: str, store: Path | None, timeout: float) -> None:
    """Send TEXT to the user TO (or, with --group, the group TO)."""
    if to_group and not to.isdigit():
        raise click.BadParameter(f"a group id is a number, got {to!r}", param_hint="TO")

    async def go() -> None:
        async with _client(server, token, store) as c, asyncio.timeout(timeout):
            await c.wait_online()
            message = c.send(Group(int(to)) if to_group else to, text, expiry_s=expiry)
            await message.reached(_WAIT[wait_for])
            click.echo(f"{Status(message.status).name.lower()} {message.id}")
    run(go())


@client.command()
@click.option("--count", default=0, help="Exit after this many messages (0: never).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@click.option("--mark-read", is_flag=True, help="Send READ reports for what is shown.")
@_connection_options
def listen(count: int, as_json: bool, mark_read: bool, server: str, token: str,
           store: Path | None, timeout: float) -> None:
    """Print messages as they arrive (queued ones first)."""

    def show(m: IncomingMessage) -> None:
        if as_json:
            click.echo(json.dumps({"id": m.id, "sender": m.sender, "group": m.group_id,
                                   "timestamp_ms": m.timestamp_ms, "type": m.type,
                                   "text": m.text}))
        else:
            where = f" in group {m.group_id}" if m.group_id else ""
            click.echo(f"{m.sender}{where}: {m.text}")

    async def go() -> None:
        async with _client(server, token, store) as c:
            inbox = c.messages()
            async with asyncio.timeout(timeout):
                await c.wait_online()
            shown = 0
            async for m in inbox:
                show(m)
                if mark_read and m.id:
                    c.mark_read(Group(m.group_id) if m.group_id else m.sender, [m.id])
                shown += 1
                if count and shown >= count:
                    break
    run(go())
