"""`tidings db status|migrate|bootstrap|copy|run-private`."""

from __future__ import annotations

import sys

import click

from appliance.cli.context import CliContext
from appliance.config.database import DEFAULT_DATABASE
from appliance.engine.clock import SystemClock
from appliance.service import database


@click.group("db")
def db() -> None:
    """The database: where it is, its schema, MariaDB set-up and moving data."""


@db.command("status")
@click.pass_obj
def status(ctx: CliContext) -> None:
    """Show the database in use and its migrations (changes nothing)."""
    st = database.status(ctx.config().storage)
    click.echo(f"database: {st.location.describe()} (chosen by: {st.chosen_by})")
    for mig in st.schema.applied:
        click.echo(f"  applied  {mig.version:04d} {mig.name}  sha256:{mig.checksum[:12]}")
    for pending in st.schema.pending:
        click.echo(f"  pending  {pending.version:04d} {pending.name}")
    if st.schema.pending:
        click.echo(f"{len(st.schema.pending)} migration(s) pending: run 'tidings db migrate'"
                   " (the server also applies them when it starts)")
    else:
        click.echo("schema up to date")
    for warning in st.warnings:
        click.echo(f"warning: {warning}", err=True)


@db.command("migrate")
@click.pass_obj
def migrate(ctx: CliContext) -> None:
    """Apply the migrations this binary has and the database lacks."""
    done = database.migrate(ctx.config().storage, SystemClock().wall_ms())
    if done:
        click.echo("applied migrations " + ", ".join(f"{v:04d}" for v in done))
    else:
        click.echo("schema already up to date")


@db.command("bootstrap")
@click.option("--private", is_flag=True,
              help="Initialise a private MariaDB server in the data directory instead of"
                   " using the machine's server.")
@click.option("--socket", default=database.SYSTEM_SOCKET,
              help="The machine's MariaDB server socket (not with --private).")
@click.option("--name", "db_name", default=DEFAULT_DATABASE, help="Database name.")
@click.option("--service-user", help="OS user the service runs as (default: the current user);"
                                     " its MariaDB account authenticates by unix_socket.")
@click.option("--install-server/--no-install-server", default=None,
              help="Install mariadb-server with apt if it is missing (default: ask).")
@click.pass_obj
def bootstrap(ctx: CliContext, private: bool, socket: str, db_name: str,
              service_user: str | None, install_server: bool | None) -> None:
    """Create the database and a password-less account, migrate, and use it from now on."""
    config = ctx.config().storage

    def confirm() -> bool:
        if install_server is not None:
            return install_server
        if not sys.stdin.isatty():
            return False
        return click.confirm("MariaDB is not installed. Install mariadb-server with apt now?",
                             default=True)

    now = SystemClock().wall_ms()
    if private:
        result = database.bootstrap_private(config.data_dir, database=db_name,
                                            service_user=service_user,
                                            timeout_s=config.timeout_s, now_ms=now,
                                            confirm_install=confirm)
    else:
        result = database.bootstrap_system(config.data_dir, socket=socket, database=db_name,
                                           service_user=service_user,
                                           timeout_s=config.timeout_s, now_ms=now,
                                           confirm_install=confirm)
    if result.installed_server:
        click.echo("installed mariadb-server")
    if result.initialised_server:
        click.echo(f"initialised a private MariaDB server in {config.data_dir / 'mariadb'}")
    click.echo(f"MariaDB {result.server_version}: database {db_name!r}"
               f" {'created' if result.created_database else 'exists'}, account"
               f" {result.location.user!r}@localhost (unix_socket, no password)"
               f" {'created' if result.created_user else 'exists'}")
    if result.migrated:
        click.echo("applied migrations " + ", ".join(f"{v:04d}" for v in result.migrated))
    click.echo(f"recorded in {result.recorded_in}: the server now uses"
               f" {result.location.describe()}")
    for warning in result.warnings:
        click.echo(f"warning: {warning}", err=True)


@db.command("copy")
@click.option("--to", "target", required=True,
              help="Where to copy to: sqlite, private, a MariaDB socket path or a mariadb://"
                   " URL.  It must hold no users yet.")
@click.option("--switch/--no-switch", default=True,
              help="Afterwards use the copy (recorded in the data directory).")
@click.pass_obj
def copy(ctx: CliContext, target: str, switch: bool) -> None:
    """Copy every user, token, group, message and status to another database.

    Stop the server first: the copy refuses to run while one uses either side.
    """
    def progress(table: str, rows: int) -> None:
        click.echo(f"  {table}: {rows} rows")

    destination, counts = database.copy(ctx.config().storage, target, SystemClock().wall_ms(),
                                        switch=switch, progress=progress)
    click.echo(f"copied {sum(counts.values())} rows to {destination.describe()}")
    if switch:
        click.echo("the server now uses the copy; the old database is left as it was")


@db.command("run-private")
@click.pass_obj
def run_private(ctx: CliContext) -> None:
    """Run the private MariaDB server in the foreground (for systemd)."""
    from appliance.dbserver.private import PrivateLayout, exec_foreground

    exec_foreground(PrivateLayout(ctx.config().storage.data_dir))
