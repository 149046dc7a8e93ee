"""Confirmed receipts are removed off the writer's connection (MariaDB)."""

from __future__ import annotations

import asyncio

from appliance.storage.mariadb import MariaDBStorage
from appliance.storage.mariadb.connection import open_raw
from appliance.storage.models import NewMessage, WriteBatch
from tests.support.mariadb import MariaDBServer

NOW = 1_700_000_000_000


def test_receipts_confirmed_by_every_device_are_removed(mariadb: MariaDBServer) -> None:
    location = mariadb.database("trim")

    async def go() -> None:
        store = await MariaDBStorage.open(location, 10.0, NOW, server=True)
        try:
            alice = (await store.create_user(1, "alice", NOW)).user_id
            bob = (await store.create_user(1, "bob", NOW)).user_id
            a1 = (await store.register_device(alice, b"a1", NOW, 0)).device_rowid
            a2 = (await store.register_device(alice, b"a2", NOW, 0)).device_rowid
            b1 = (await store.register_device(bob, b"b1", NOW, 0)).device_rowid
            sent = await store.write(WriteBatch(messages=[
                NewMessage(1, alice, a1, i, b"bob", 0, 0, NOW + 60_000, 0, 3, 0, b"x")
                for i in (1, 2, 3)]), NOW)
            acked = await store.write(WriteBatch(acks=[(b1, a.seq, 0) for a in sent.accepted]),
                                      NOW)
            seqs = [r.report_seq for r in acked.receipts]
            # a1 confirmed all three, a2 only the first: only that one may go.
            await store.write(WriteBatch(report_acks={a1: seqs[2], a2: seqs[0]}), NOW)
        finally:
            await store.close()  # waits for the trimmer

    asyncio.run(go())
    conn = open_raw(location, 10)
    try:
        cur = conn.cursor()
        cur.execute("SELECT msg_id FROM receipts ORDER BY seq")
        assert [m for (m,) in cur.fetchall()] == [2, 3]
    finally:
        conn.close()
