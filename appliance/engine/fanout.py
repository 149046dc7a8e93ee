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

from typing import TYPE_CHECKING

from appliance.config.limits import EngineLimits
from appliance.protocol.wire import Flag, Message
from appliance.ratelimit import UserRates
from appliance.storage.models import Outcome, WriteResult

if TYPE_CHECKING:
    from appliance.engine.session import Session

#: Groups whose last cost is remembered; past it the one committed to longest ago
#: is forgotten (its next message is learnt from again, `GroupCommit._hold_back`).
MAX_GROUPS = 65_536
_SYSTEM = Flag.SYSTEM
#: Outcomes whose targets are the group's cost (`BatchCharges.settle`).
_ROUTED = (Outcome.STORED, Outcome.RELAY)


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
            # Moved to the end (dicts keep insertion order): the first entry is the
            # group committed to longest ago, the one forgotten when the table is full.
            if costs.pop(group_id, None) is None and len(costs) >= MAX_GROUPS:
                del costs[next(iter(costs))]
            costs[group_id] = max(1, actual if learnt is None else learnt)
        if actual != charged:
            self.rates.charge(user_id, now, actual - charged)


class BatchCharges:
    """What each group message waiting for a commit was charged (`GroupCommit`), by
    `id` of its `Message` (alive until its commit), and the settling after it."""

    __slots__ = ("_charged", "_fanout")

    def __init__(self, fanout: GroupFanout) -> None:
        self._fanout = fanout
        self._charged: dict[int, int] = {}

    def __bool__(self) -> bool:
        return bool(self._charged)

    def add(self, m: Message, cost: int) -> None:
        """Group message `m` waits for a commit, charged `cost` (0: an announcement)."""
        self._charged[id(m)] = cost

    def pay(self, pair: tuple[Session, Message], cost: int, now: float) -> bool:
        """Whether group message `pair` has paid `cost`, its group's known cost (taking
        what is missing); if it cannot, it is refunded and forgotten."""
        session, m = pair
        paid = self._charged.get(id(m), 0)
        if paid >= cost:
            return True
        if self._fanout.take(session.user_id, now, cost - paid):
            self._charged[id(m)] = cost
            return True
        self._refund(pair, now)
        return False

    def solvent(self, pair: tuple[Session, Message], now: float) -> bool:
        """Whether the sender of group message `pair` is not in debt; if it is, the
        message is refunded and forgotten."""
        if self._fanout.take(pair[0].user_id, now, 0):
            return True
        self._refund(pair, now)
        return False

    def _refund(self, pair: tuple[Session, Message], now: float) -> None:
        session, m = pair
        self._fanout.settle(session.user_id, now, self._charged.pop(id(m), 0), 0)

    def take(self, senders: list[tuple[Session, Message]]) -> dict[int, int]:
        """The charges of the batch about to be committed (the held-back keep theirs)."""
        charged, taken = self._charged, {}
        for _, m in senders:
            cost = charged.pop(id(m), None) if m.group_id else None
            if cost is not None:
                taken[id(m)] = cost
        return taken

    def settle(self, senders: list[tuple[Session, Message]], charged: dict[int, int],
               result: WriteResult | None, now: float) -> None:
        """Charge or refund each group message's deliveries (`GroupFanout.settle`); a
        failed commit (`result` None) refunds them all."""
        settle = self._fanout.settle
        accepted = result.accepted if result is not None else [None] * len(senders)
        for (session, m), acc in zip(senders, accepted, strict=True):
            cost = charged.get(id(m))
            if cost is None:
                continue
            if m.flags & _SYSTEM:  # paid by the change it tells: only learnt from
                if acc is not None and acc.outcome is Outcome.STORED:
                    settle(session.user_id, now, 0, 0, m.group_id, len(acc.targets))
            elif acc is None or acc.outcome not in _ROUTED:
                settle(session.user_id, now, cost, 0)  # refused (answered) or failed
            else:
                # Stored: its delivery rows; relayed (a NO_STORE group): its members.
                # Learnt from both: a group whose cost is not known has its held-back
                # messages let through unchecked (`GroupCommit._hold_back`), and a
                # NO_STORE group's never was (200 of a flood relayed with a burst worth 9).
                settle(session.user_id, now, cost, len(acc.targets), m.group_id)
