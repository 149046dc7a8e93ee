"""What group messages cost (`appliance.engine.fanout`): pure accounting, a fake clock."""

from __future__ import annotations

from appliance.config.limits import EngineLimits
from appliance.engine.fanout import MAX_GROUPS, GroupFanout


def test_a_group_costs_what_its_last_commit_made_and_the_difference_is_settled() -> None:
    fanout = GroupFanout(EngineLimits(fanout_rate_per_s=1000.0, fanout_burst=5000))
    assert (fanout.estimate(7), fanout.known(7)) == (1, None)
    assert fanout.take(1, 0.0, 1)
    fanout.settle(1, 0.0, 1, 2001, group_id=7)  # a new group of 2,000: charged after
    assert (fanout.estimate(7), fanout.known(7)) == (2001, 2001)
    assert fanout.take(1, 0.0, 2001)
    assert not fanout.take(1, 0.0, 2001)  # 5000 - 1 - 2000 - 2001 = 998 left
    # A refused message is refunded; a relayed one is settled without teaching the
    # group's stored cost.
    fanout.settle(1, 0.0, 2001, 0)
    assert fanout.take(1, 0.0, 2001)
    fanout.settle(1, 0.0, 1, 3)
    assert fanout.estimate(7) == 2001
    # Another user has a bucket of its own.
    assert fanout.take(2, 0.0, 2001)


def test_the_table_of_group_costs_is_bounded_and_forgets_the_least_recent() -> None:
    """Past MAX_GROUPS the table forgot every group at once, so each was learnt again
    one a commit (one user creating groups made every busy group unknown); now the
    group committed to longest ago goes, and a busy group stays known."""
    fanout = GroupFanout(EngineLimits())
    busy = 1
    for group in range(1, MAX_GROUPS + 10):
        fanout.settle(1, float(group), 0, 5, group_id=group)
        fanout.settle(1, float(group), 0, 7, group_id=busy)  # committed to all the time
    assert fanout.known(MAX_GROUPS + 9) == 5
    assert fanout.known(busy) == 7
    assert fanout.known(2) is None  # the least recently committed went first
    assert fanout.known(11) == 5
    assert len(fanout._costs) == MAX_GROUPS
