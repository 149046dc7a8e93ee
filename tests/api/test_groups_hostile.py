"""``GET /v1/groups`` over an app whose groups are large (session 18 attack review).

The groups are written straight into the server's SQLite file before it starts: 120,000
member rows through the API (1,000 per request, each announced to every member) would
take minutes; what is measured is the listing, through a real server.
"""

from __future__ import annotations

import http.client
import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from appliance.api.groups import MAX_PAGE_MEMBERS
from tests.support.hostile import RSS_BUDGET_BYTES, RssWatch
from tests.support.server import ServerProcess

pytestmark = pytest.mark.slow

GROUPS, MEMBERS = 60, 2000


def _populate(data_dir: Path) -> None:
    """`GROUPS` groups of the default app, each with the same `MEMBERS` members."""
    with sqlite3.connect(data_dir / "tidings.sqlite3") as db:
        db.executemany("INSERT INTO users (app_id, address, created_ms) VALUES (1, ?, 0)",
                       [(f"member-with-a-longish-address-{n:06d}".encode(),)
                        for n in range(MEMBERS)])
        users = [r[0] for r in db.execute("SELECT id FROM users WHERE app_id = 1")]
        db.executemany("INSERT INTO groups (app_id, name, flags, created_ms) VALUES (1, ?, 0, 0)",
                       [(f"group {n}",) for n in range(GROUPS)])
        for (group,) in db.execute("SELECT id FROM groups").fetchall():
            db.executemany("INSERT INTO members VALUES (?, ?, 3)", [(group, u) for u in users])


def test_a_page_of_large_groups_is_bounded_by_their_members(data_dir: Path) -> None:
    """Measured before the fix: a page was `limit` groups whatever their size.  One
    ``GET /v1/groups?limit=1000`` over 60 groups of 2,000 members answered 8.6 MB and
    grew the server by 73.7 MiB (200 such groups: 29 MB, +261 MiB, 1.0 s of the event
    loop; 1,000 of them would be ~1.3 GiB, and a few such requests at once more).  Now a
    page ends after the group whose members reach `MAX_PAGE_MEMBERS`: 5 groups a page
    here, +10.2 MiB for the whole walk, and `next` gives every group exactly once."""
    secret = subprocess.run([sys.executable, "-m", "appliance", "--data-dir", str(data_dir),
                             "app", "secret"], capture_output=True, text=True, check=True,
                            timeout=60).stdout.strip()
    _populate(data_dir)
    server = ServerProcess(data_dir)
    server.start()
    try:
        conn = http.client.HTTPConnection(server.host, server.port, timeout=60)
        seen: list[int] = []
        after = ""
        with RssWatch(server.proc.pid) as rss:  # type: ignore[union-attr]
            while True:
                conn.request("GET", f"/v1/groups?limit=1000{after}",
                             headers={"Authorization": f"Bearer {secret}"})
                response = conn.getresponse()
                page = json.loads(response.read())
                assert response.status == 200, page
                members = sum(len(g["members"]) for g in page["groups"])
                assert members < MAX_PAGE_MEMBERS + MEMBERS, members
                seen += [g["id"] for g in page["groups"]]
                if page["next"] is None:
                    break
                after = f"&after={page['next']}"
        conn.close()
    finally:
        server.stop()
    assert len(seen) == len(set(seen)) == GROUPS
    assert rss.growth < RSS_BUDGET_BYTES // 2, rss
    assert "Traceback" not in server.output, server.output
