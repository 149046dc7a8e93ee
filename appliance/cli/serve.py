"""`tidings serve`."""

from __future__ import annotations

import click

from appliance import __version__, app
from appliance.cli.context import CliContext
from appliance.transport.loop import run


@click.command()
@click.option("--host", help="Address to listen on (default 127.0.0.1).")
@click.option("--port", type=int, help="Port to listen on; 0 picks a free one (default 7447).")
@click.option("--redirect-port", type=int,
              help="Also listen on this port (usually 80) and redirect HTTP to HTTPS.")
@click.pass_obj
def serve(ctx: CliContext, host: str | None, port: int | None,
          redirect_port: int | None) -> None:
    """Run the messaging server until SIGTERM."""
    config = ctx.config(server__host=host, server__port=port,
                        server__redirect_port=redirect_port)

    def ready(bound_host: str, bound_port: int, redirect_port: int | None) -> None:
        # The one line operators and tests read to learn the address (issue #2).
        redirect = ("" if redirect_port is None
                    else f", redirecting http on port {redirect_port} to https")
        print(f"tidings {__version__} listening on {bound_host}:{bound_port}"
              f" (data: {config.storage.data_dir}){redirect}", flush=True)

    run(app.serve(config, ready, lambda: ctx.config(
        server__host=host, server__port=port, server__redirect_port=redirect_port)))
