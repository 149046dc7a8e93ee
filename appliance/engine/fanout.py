"""What a group message costs: one token of its sender's fan-out rate per delivery.

A message to a group whose members have N devices costs the store N delivery
rows when stored, and N frames when relayed: as much as N 1:1 messages, which
the message rate alone does not see (one user writing to a group of 2,000 at
the message rate took every honest client's p99 from 5 ms to 1.8 s, issue 16).
So a user's group messages share ``limits.fanout_rate_per_s`` deliveries per
second.  The cost is known once the writer has routed the message; before, the
engine takes the group's cost at its last commit (`estimate`: 1 for a group not
seen yet), and `settle` charges the difference after the commit, into debt when
the estimate was low (a new group, members added): the sender's next group
messages then wait until the rate has paid it back.

The estimate also bounds a commit (``limits.commit_max_fanout``, `GroupCommit`).
"""

from __future__ import annotations

from appliance.config.limits import EngineLimits
from appliance.ratelimit import UserRates

#: Groups whose last cost is remembered; past it the table starts again (a group
#: forgotten costs 1 until its next commit, which `settle` then corrects).
MAX_GROUPS = 65_536


class GroupFanout:
    """Each user's fan-out tokens, and each group's cost at its last commit."""

    __slots__ = ("_costs", "rates")

    def __init__(self, limits: EngineLimits) -> None:
        self.rates = UserRates(limits.fanout_rate_per_s, limits.fanout_burst,
                               limits.max_rate_users)
        self._costs: dict[int, int] = {}

    def estimate(self, group_id: int) -> int:
        """Deliveries a stored message to `group_id` made at its last commit (1: unknown)."""
        return self._costs.get(group_id, 1)

    def known(self, group_id: int) -> int | None:
        """`estimate`, or None for a group not committed to yet (whose first message a
        commit then takes alone: `GroupCommit._hold_back`)."""
        return self._costs.get(group_id)

    def take(self, user_id: int, now: float, cost: int) -> bool:
        """Spend `cost` of `user_id`'s tokens, or refuse (RATE_LIMITED)."""
        return self.rates.take_cost(user_id, now, cost)

    def settle(self, user_id: int, now: float, charged: int, actual: int,
               group_id: int = 0, learnt: int | None = None) -> None:
        """The message `charged` with made `actual` deliveries: charge or refund the
        difference; remember `group_id`'s cost, `learnt` or else `actual` (a stored
        message's, not a relayed one's: that counts only the members online)."""
        if group_id:
            costs = self._costs
            if len(costs) >= MAX_GROUPS and group_id not in costs:
                costs.clear()
            costs[group_id] = max(1, actual if learnt is None else learnt)
        if actual != charged:
            self.rates.charge(user_id, now, actual - charged)
