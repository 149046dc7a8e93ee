"""The first app: created once, its secret shown once, never rotated by a re-run.

`tidings app add` does the same through the same service (`AdminService.add_app`);
the wizard adds the user the first message goes to.  A re-run that names an
existing app leaves it and its secrets alone and says so.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from appliance import app
from appliance.config import ApplianceConfig
from appliance.config.database import resolve_database
from appliance.dbserver.private import socket_live
from appliance.engine.clock import SystemClock
from appliance.errors import ApplianceError, ConflictError
from appliance.service.admin import DEFAULT_APP, AdminService
from appliance.storage.factory import open_location

#: The user the wizard's first message is sent to (created with the app).
FIRST_RECIPIENT: Final = "welcome"
#: How long reading the existing apps (for a re-run's default) may wait on a database.
READ_TIMEOUT_S: Final = 5.0


@dataclass(frozen=True, slots=True)
class FirstApp:
    """The outcome: `secret` only when the app was created now (shown once, never stored)."""

    name: str
    secret: str | None
    recipient: str = FIRST_RECIPIENT

    @property
    def created(self) -> bool:
        return self.secret is not None

    def __repr__(self) -> str:  # a secret never reaches a log through repr()
        return f"FirstApp(name={self.name!r}, created={self.created})"


def ensure_first_app(config: ApplianceConfig, name: str) -> FirstApp:
    """Create app `name` with its first secret and the first message's recipient, unless it
    exists (then nothing changes).

    Raises:
        StorageError: the store cannot be opened or written.
    """
    return asyncio.run(_ensure(config, name))


async def _ensure(config: ApplianceConfig, name: str) -> FirstApp:
    async with app.admin(config, DEFAULT_APP) as svc:
        try:
            info, secret = await svc.add_app(name)
        except ConflictError:
            return FirstApp(name, None)
        with contextlib.suppress(ConflictError):
            await AdminService(svc.store, svc.clock, info.name).add_user(FIRST_RECIPIENT)
        return FirstApp(info.name, secret)


def existing_first_app(config: ApplianceConfig) -> str | None:
    """The oldest app other than the built-in ``default``, read from an existing store;
    None when there is none or the store cannot be read now (nothing is created)."""
    try:
        return asyncio.run(_first_app(config))
    except (ApplianceError, OSError):
        return None


async def _first_app(config: ApplianceConfig) -> str | None:
    location = resolve_database(config.storage.database, config.storage.data_dir)
    if location.kind == "sqlite":
        if location.sqlite_path is None or not location.sqlite_path.is_file():
            return None
    elif location.socket and not socket_live(Path(location.socket)):
        return None
    store = await open_location(location, READ_TIMEOUT_S, SystemClock().wall_ms(),
                                migrate=False)
    try:
        apps = sorted(await store.list_apps(), key=lambda a: a.app_id)
    finally:
        await store.close()
    return next((a.name for a in apps if a.name != DEFAULT_APP), None)
