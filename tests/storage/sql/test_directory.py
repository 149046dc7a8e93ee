"""The writer's directory cache (`storage.sql.directory`): bounded by what exists.

Attack first: messages to group ids that name no group.  Before, each such id
was cached as "no group" for as long as the directory did not change: one
backend sending arrays of random group ids (REST, no per-user rate) grew the
server by 96 MiB in 20 s (~80 bytes an id), for good.
"""

from __future__ import annotations

import random

from appliance.protocol.wire.constants import STORED_U64_MAX, Status
from appliance.storage.interface import Storage
from appliance.storage.models import NewMessage, Outcome, Perm, WriteBatch
from tests.storage.conftest import Opener, run

NOW = 1_700_000_000_000
APP = 1


def _to_group(sender: int, msg_id: int, group_id: int) -> NewMessage:
    return NewMessage(APP, sender, 0, msg_id, b"", group_id, 0, NOW + 60_000, 0, 0, 0, b"x")


def test_ids_of_no_group_are_not_remembered(backend: Opener) -> None:
    async def go(store: Storage) -> None:
        sender = (await store.create_user(APP, "mallory", NOW)).user_id
        group = await store.create_group(APP, "real", NOW)
        await store.set_member(APP, group.group_id, sender, Perm.DEFAULT)
        rng = random.Random(16)
        for batch_no in range(5):
            messages = [_to_group(sender, batch_no * 1000 + i + 1,
                                  rng.randrange(group.group_id + 1, STORED_U64_MAX))
                        for i in range(1000)]
            messages.append(_to_group(sender, 10**6 + batch_no, group.group_id))
            result = await store.write(WriteBatch(messages=messages), NOW)
            assert {a.status for a in result.accepted[:-1]} == {Status.INVALID_DEST}
            assert result.accepted[-1].outcome is Outcome.STORED
        directory = store._writer.state.directory  # type: ignore[attr-defined]
        assert len(directory._groups) <= 1  # the group that exists, not 5,000 that do not
    run(backend, go)
