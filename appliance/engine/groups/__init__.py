"""Groups, completed (SPEC M5, issue 16): changes by the app and by members, announced.

`GroupManager` (manager.py) makes every change through the store's interface,
scoped to one app, and announces it to the members (announce.py);
`GroupRequests` (requests.py) takes GROUP_MANAGE frames from clients and answers
GROUP_RESULT.  The routing rule a group's flags change lives with the store's
(`appliance.storage.routing`); the aggregate receipts are the store's too
(`appliance.storage.sql.aggregate`), pushed like any report by `Delivery`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from appliance.engine.groups.manager import Actor, GroupManager
from appliance.engine.groups.requests import GroupRequests

if TYPE_CHECKING:
    from appliance.engine.core import Engine

__all__ = ["Actor", "GroupManager", "GroupRequests", "install"]


def install(engine: Engine) -> GroupManager:
    """The engine's group part: its manager, and GROUP_MANAGE taken from clients
    (registered with `engine`: the frame's handler, the features it announces)."""
    manager = GroupManager(engine)
    manager.requests = GroupRequests(engine, manager)
    return manager
