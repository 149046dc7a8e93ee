"""`tidings backup` and `tidings restore` (`appliance.backup`)."""

from __future__ import annotations

import os
from pathlib import Path

import click

from appliance.backup.backup import create_backup
from appliance.backup.restore import restore as restore_archive
from appliance.cli.context import CliContext
from appliance.config import ApplianceConfig, load_config
from appliance.engine.clock import SystemClock
from appliance.media.config import MEDIA_DIR
from appliance.system.layout import CONFIG_FILE


def config_file(ctx: CliContext) -> Path | None:
    """The configuration in use: --config, else the installed one if there is one."""
    if ctx.config_path is not None:
        return ctx.config_path
    return CONFIG_FILE if CONFIG_FILE.is_file() else None


def config_at(ctx: CliContext, path: Path | None) -> ApplianceConfig:
    """The configuration in `path` with the command line's --data-dir/--database."""
    return load_config(path, {"storage.data_dir": ctx.data_dir, "storage.database": ctx.database})


@click.command("backup")
@click.option("--output", "-o", type=click.Path(path_type=Path, dir_okay=False),
              help="Archive to write (default: <data dir>/backups/tidings-<version>-<time>"
                   ".tar.gz).  It holds keys: it is written 0600.")
@click.option("--no-media", is_flag=True,
              help="Leave out the uploaded files (media blobs): a small archive of the store,"
                   " configuration and keys only.")
@click.pass_obj
def backup(ctx: CliContext, output: Path | None, no_media: bool) -> None:
    """Write one archive: the store (consistent while the server runs), the
    configuration, the data directory's certificates and keys, and the
    uploaded files (unfinished uploads are left out)."""
    clock = SystemClock()
    started = clock.monotonic()
    path = config_file(ctx)
    result = create_backup(config_at(ctx, path), path, output, clock.wall_ms(),
                           media=not no_media)
    for skipped in result.skipped:
        click.echo(f"warning: not backed up (not a plain file or directory): {skipped}",
                   err=True)
    for warning in result.warnings:
        click.echo(f"warning: {warning}", err=True)
    m = result.manifest
    files = sum(1 for x in m.members if x.kind == "file") - 1
    media = result.media
    blobs = ("no media (--no-media)" if media is None else
             f"{media.written} media files ({media.bytes / 1e6:.1f} MB)")
    click.echo(f"backup written to {result.path} ({m.backend} store at schema {m.schema_version},"
               f" {files} other files, {blobs}, {result.path.stat().st_size / 1e6:.1f} MB)"
               f" in {clock.monotonic() - started:.2f} s")


@click.command("restore")
@click.argument("archive", type=click.Path(path_type=Path, dir_okay=False, exists=True))
@click.option("--force", is_flag=True,
              help="Overwrite a data directory or store that already holds data.")
@click.pass_obj
def restore(ctx: CliContext, archive: Path, force: bool) -> None:
    """Restore an archive of `tidings backup` onto this install (stop the server first).

    Everything is checked before anything is written; the store is then
    migrated to this build's schema.
    """
    clock = SystemClock()
    started = clock.monotonic()
    path = ctx.config_path or (CONFIG_FILE if os.geteuid() == 0 else None)
    result = restore_archive(archive, path, lambda p: config_at(ctx, p), force=force,
                             now_ms=clock.wall_ms())
    m = result.manifest
    click.echo(f"restored the backup of {m.data_dir} (tidings {m.tidings_version}) into"
               f" {result.data_dir}: {result.files} files, {result.blobs} media files, the"
               f" store into {result.location.describe()}")
    if not m.media.included:
        click.echo("the archive holds no media (a --no-media or pre-upgrade backup): files the"
                   f" store refers to are missing unless {result.data_dir / MEDIA_DIR} has them")
    if result.config_written is not None:
        click.echo(f"configuration written to {result.config_written}")
    elif any(x.name.startswith("config/") for x in m.members):
        click.echo("the archive's configuration was not restored: pass --config PATH")
    if result.migrated:
        click.echo("applied migrations " + ", ".join(f"{v:04d}" for v in result.migrated))
    click.echo(f"done in {clock.monotonic() - started:.2f} s; start the server")
