"""GROUP_MANAGE from clients (PROTOCOL.md §8.3), answered with GROUP_RESULT.

A session has one request in flight at a time (another is answered BUSY at
once), and each request takes a token of its user's send rate, as a message
does (RATE_LIMITED beyond it): a client cannot queue store work faster than
the store answers it.  The codec bounded the frame (its members, its name);
what an operation needs (a name for RENAME, members for ADD...) is checked
here before the store is read.  Only a client that asked for extensions may
send it: it is the only kind that can read the answer.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from appliance.engine.groups.manager import Actor, GroupManager
from appliance.engine.session import Session
from appliance.errors import (
    ForbiddenError,
    GroupFullError,
    GroupNotFoundError,
    MemberNotFoundError,
    NotFoundError,
    StorageError,
    UsageError,
)
from appliance.protocol.wire import CloseCode, Feature
from appliance.protocol.wire.groups import GroupManage, GroupOp, GroupResult, GroupResultCode

if TYPE_CHECKING:
    from appliance.engine.core import Engine

log = logging.getLogger(__name__)

_R = GroupResultCode
_OP = GroupOp
#: Results of a change refused before anything was changed, so nothing was announced.
_NOTHING_ANNOUNCED = frozenset((_R.NO_GROUP, _R.NO_USER, _R.FORBIDDEN, _R.INVALID, _R.FULL))
#: Operations that carry a name (all others none), members (CREATE may, all others none),
#: and flags (all others 0).
_NAMED = frozenset((_OP.CREATE, _OP.RENAME))
_LISTED = frozenset((_OP.ADD, _OP.REMOVE, _OP.SET_PERMS))
_FLAGGED = frozenset((_OP.CREATE, _OP.SET_FLAGS))


def check(frame: GroupManage) -> bool:
    """Whether `frame` carries what its operation needs, and nothing it does not."""
    op = frame.op
    if (op == _OP.CREATE) != (frame.group_id == 0):
        return False
    if (op in _NAMED) != bool(frame.name) or (op not in _FLAGGED and frame.flags):
        return False
    if op in _LISTED:
        if not frame.members:
            return False
    elif op != _OP.CREATE and frame.members:
        return False
    return op != _OP.REMOVE or all(perms == 0 for _, perms in frame.members)


class GroupRequests:
    """Handles GROUP_MANAGE frames (the engine calls `on_manage`)."""

    def __init__(self, engine: Engine, manager: GroupManager) -> None:
        self.engine = engine
        self.manager = manager
        #: Sessions with a request in flight (one each).
        self._busy: set[Session] = set()
        engine.extension_handlers[GroupManage] = self.on_manage
        engine.features |= Feature.GROUP_MANAGE | Feature.GROUP_RECEIPTS

    @property
    def in_flight(self) -> int:
        """Requests being handled now."""
        return len(self._busy)

    def on_manage(self, session: Session, frame: GroupManage) -> None:
        """A GROUP_MANAGE from `session`: checked now, done in a task, answered after."""
        if not session.extensions:
            self.engine.end_session(session, CloseCode.PROTOCOL_ERROR,
                                    "GROUP_MANAGE needs HELLO client_flags EXTENSIONS")
            return
        if session in self._busy:
            self._answer(session, frame, _R.BUSY)
            return
        engine = self.engine
        if session.send_credit <= 0 \
                and not engine.quotas.may_send(session, engine.clock.monotonic()):
            engine.refusals["rate_limited"] += 1
            self._answer(session, frame, _R.RATE_LIMITED)
            return
        session.send_credit -= 1
        if not check(frame):
            self._answer(session, frame, _R.INVALID)
            return
        # The change is announced to every member (a stored SYSTEM message from
        # ``@app``, exempt itself): its deliveries are the requester's to pay
        # (`appliance.engine.fanout`), or membership churn would amplify as a
        # flood of group messages does.  An ADD's announcement reaches the new
        # members too; a change refused is refunded (`_handle`).
        if frame.op == _OP.CREATE:
            cost = len(frame.members) + 1
        else:
            cost = engine.quotas.fanout.estimate(frame.group_id)
            if frame.op == _OP.ADD:
                cost += len(frame.members)
        if not engine.quotas.fanout.take(session.user_id, engine.clock.monotonic(), cost):
            engine.refusals["fanout_limited"] += 1
            self._answer(session, frame, _R.RATE_LIMITED)
            return
        self._busy.add(session)
        engine.scheduler.spawn(self._handle(session, frame, cost), name="group-manage")

    async def _handle(self, session: Session, frame: GroupManage, cost: int) -> None:
        group_id, count = frame.group_id, 0
        try:
            code, group_id, count = await self._apply(session, frame)
        except GroupNotFoundError:
            code = _R.NO_GROUP
        except MemberNotFoundError:
            code = _R.NO_USER
        except NotFoundError:  # the group went while the change was made
            code = _R.NO_GROUP
        except ForbiddenError:
            code = _R.FORBIDDEN
        except GroupFullError:
            code = _R.FULL
        except UsageError:
            code = _R.INVALID
        except StorageError as exc:
            log.warning("group change by %r failed: %s", session, exc)
            code = _R.FAILED
        finally:
            self._busy.discard(session)
        if code in _NOTHING_ANNOUNCED:  # refunded (not FAILED: the store may have taken it)
            engine = self.engine
            engine.quotas.fanout.settle(session.user_id, engine.clock.monotonic(), cost, 0)
        if not session.closed:
            session.link.group_result(GroupResult(frame.request_id, code, group_id, count))

    async def _apply(self, session: Session, frame: GroupManage) -> tuple[int, int, int]:
        """Do what `frame` asks for `session`'s user: (result, group id, members after)."""
        app, gid, by = session.app_id, frame.group_id, Actor(session.user_id, session.address)
        manager, op = self.manager, frame.op
        try:
            name = frame.name.decode()
        except UnicodeDecodeError:
            raise UsageError("a group name must be UTF-8") from None
        if op == GroupOp.CREATE:
            info = await manager.create(app, name, frame.members, frame.flags, by)
        elif op == GroupOp.ADD:
            info = await manager.change(app, gid, frame.members, (), by)
        elif op == GroupOp.SET_PERMS:
            info = await manager.change(app, gid, frame.members, (), by, existing=True)
        elif op == GroupOp.REMOVE:
            info = await manager.change(app, gid, (), [a for a, _ in frame.members], by)
        elif op == GroupOp.RENAME:
            info = await manager.update(app, gid, name=name, by=by)
        elif op == GroupOp.SET_FLAGS:
            info = await manager.update(app, gid, flags=frame.flags, by=by)
        elif op == GroupOp.LEAVE:
            info = await manager.leave(app, gid, by)
        else:
            await manager.delete(app, gid, by)
            return _R.OK, gid, 0
        return _R.OK, info.group_id, len(info.members)

    @staticmethod
    def _answer(session: Session, frame: GroupManage, code: int) -> None:
        session.link.group_result(GroupResult(frame.request_id, code, frame.group_id))
