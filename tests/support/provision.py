"""Create users, tokens and groups directly on a data directory (fast test setup)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from appliance.config import load_config
from appliance.config.database import resolve_database
from appliance.engine.clock import SystemClock
from appliance.service.admin import DEFAULT_APP, AdminService
from appliance.service.database import running
from appliance.storage import open_storage
from appliance.storage.models import Perm


def provision(data_dir: Path, users: list[str], groups: dict[str, list[str]] | None = None,
              token_ttl_s: int = 3600, *, app: str = DEFAULT_APP,
              flags: dict[str, int] | None = None
              ) -> tuple[dict[str, str], dict[str, int]]:
    """Create `users` (with one token each) and `groups` in `app` (created if it is new),
    with their `GroupFlag` bits from `flags` (by name); return (tokens, group ids)."""

    async def go() -> tuple[dict[str, str], dict[str, int]]:
        clock = SystemClock()
        store = await open_storage(load_config(None, {
            "storage.data_dir": data_dir,
            "storage.database": os.environ.get("TIDINGS_DATABASE")}).storage,
                                   clock.wall_ms())
        try:
            if app != DEFAULT_APP and app not in {a.name for a in
                                                  await AdminService(store, clock).list_apps()}:
                await AdminService(store, clock).add_app(app)
            svc = AdminService(store, clock, app)
            tokens = {}
            for name in users:
                await svc.add_user(name)
                tokens[name] = (await svc.issue_token(name, token_ttl_s)).token
            ids = {}
            for name, members in (groups or {}).items():
                group = await svc.add_group(name, members, Perm.DEFAULT)
                ids[name] = group.group_id
                if flags and name in flags:
                    await store.update_group(group.app_id, group.group_id, flags=flags[name])
            return tokens, ids
        finally:
            await store.close()

    config = load_config(None, {"storage.data_dir": data_dir,
                                "storage.database": os.environ.get("TIDINGS_DATABASE")})
    location = resolve_database(config.storage.database, data_dir)
    with running(location, data_dir):  # a private MariaDB server runs while we work
        return asyncio.run(go())


def write_config(path: Path, **limits: object) -> Path:
    """Write a TOML config with a [limits] table."""
    lines = ["[limits]"] + [f"{k} = {v!r}" for k, v in limits.items()]
    path.write_text("\n".join(lines) + "\n")
    return path
