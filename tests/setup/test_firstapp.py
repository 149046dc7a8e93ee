"""The first app: created once with a working secret; a second run changes nothing."""

from __future__ import annotations

import asyncio
from pathlib import Path

from appliance import app
from appliance.config import load_config
from appliance.service.admin import app_for_secret
from appliance.setup.firstapp import FIRST_RECIPIENT, ensure_first_app, existing_first_app


def test_the_first_app_is_created_once_and_never_rotated(tmp_path: Path) -> None:
    config = load_config(None, {"storage.data_dir": tmp_path})
    assert existing_first_app(config) is None  # no store yet: nothing read, nothing made
    assert not (tmp_path / "tidings.sqlite3").exists()

    first = ensure_first_app(config, "myapp")
    assert first.created
    assert first.secret is not None
    assert first.secret not in repr(first)
    again = ensure_first_app(config, "myapp")
    assert (again.created, again.secret) == (False, None)
    assert existing_first_app(config) == "myapp"

    async def check() -> None:
        async with app.store_of(config) as store:
            found = await app_for_secret(store, first.secret or "")
            assert found is not None
            assert found.name == "myapp"
            assert [a.name for a in await store.list_apps()] == ["default", "myapp"]
            assert await store.find_user(found.app_id, FIRST_RECIPIENT.encode()) is not None

    asyncio.run(check())
