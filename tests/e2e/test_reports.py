"""Stored reports end to end (PROTOCOL.md §3.5, §3.7), on SQLite and MariaDB.

A device that confirms a report with REPORT_ACK and reconnects at once must
never be sent that report again, while another device of its user keeps it
stored (issue 16: the HELLO's read could see the cursor from before the
confirmation's commit, which then landed and left no trace in memory).
"""

from __future__ import annotations

import pytest

from appliance.protocol.wire import Message, Status
from tests.e2e.test_delivery import World, run, world as world  # world: the fixture

pytestmark = pytest.mark.slow

ROUNDS = 300


def test_a_confirmed_report_never_comes_back_to_a_device_that_reconnects_at_once(
        world: World) -> None:
    async def go(w: World) -> None:
        await w.connect("alice", "laptop")  # confirms nothing: the reports stay stored
        bob = await w.connect("bob")
        phone = await w.connect("alice", "phone")
        resent = []
        for i in range(1, ROUNDS + 1):
            phone.send(Message(i, b"bob", b"x"))
            assert (await phone.status()).status == Status.SENT
            await bob.message()  # acknowledged: alice's devices get DELIVERED
            delivered = await phone.status()
            assert (delivered.id, delivered.status) == (i, Status.DELIVERED)
            phone.report_ack(delivered.report_seq)
            await phone.close()
            phone = await w.connect("alice", "phone")
            # The next status on the new connection must be the next message's SENT.
            phone.send(Message(10_000 + i, b"bob", b"barrier"))
            nxt = await phone.status()
            while nxt.report_seq:  # a stored report: every one here was confirmed
                resent.append((i, nxt.id, nxt.report_seq))
                nxt = await phone.status()
            assert (nxt.id, nxt.status) == (10_000 + i, Status.SENT)
            await bob.message()
            assert (await phone.status()).id == 10_000 + i  # its DELIVERED
        rounds = len({r[0] for r in resent})
        assert resent == [], f"confirmed reports sent again in {rounds} of {ROUNDS} rounds"
    run(go, world)
