"""`tidings serve`."""

from __future__ import annotations

import click

from appliance import __version__, app
from appliance.cli.context import CliContext
from appliance.transport.loop import run


@click.command()
@click.option("--host", help="Address to listen on (default 127.0.0.1).")
@click.option("--port", type=int, help="Port to listen on; 0 picks a free one (default 7447).")
@click.pass_obj
def serve(ctx: CliContext, host: str | None, port: int | None) -> None:
    """Run the messaging server until SIGTERM."""
    config = ctx.config(server__host=host, server__port=port)

    def ready(bound_host: str, bound_port: int) -> None:
        # The one line operators and tests read to learn the address (issue #2).
        print(f"tidings {__version__} listening on {bound_host}:{bound_port}"
              f" (data: {config.storage.data_dir})", flush=True)

    run(app.serve(config, ready))
