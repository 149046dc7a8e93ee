"""Who a message goes to: the one routing and permission rule (SPEC M5, PROTOCOL.md §4).

Pure functions, called by the writer for reliable messages (from its cached
directory, `storage.sql.directory`) and by the engine's relay for real-time
ones (from `DirectoryStore.group_roster`), so that both paths decide alike:

* a group message needs a group of the sender's app (else INVALID_DEST: group
  ids are global, apps are not visible in them, and nothing crosses apps);
* its sender must be a member with the SEND permission (else NOT_MEMBER);
* it reaches the members with the RECEIVE permission, the sender included
  when it has RECEIVE (its other devices get their copy as recipients);
* a 1:1 message needs its peer to be a user of the sender's app (else
  INVALID_DEST); the caller looks the address up in that app;
* blocks (issue 16): a 1:1 message to a user who blocks its sender is
  refused with BLOCKED; a group message skips the members who block its
  sender (it is SENT to the others: a group does not learn who blocks whom);
* presence (SPEC M6): who may see a user's presence (`presence_visible`).
"""

from __future__ import annotations

from collections.abc import Set

from appliance.protocol.wire.constants import Status
from appliance.storage.models import GroupRoster, Perm, Privacy

__all__ = ["GroupRoster", "group_recipients", "peer_recipients", "presence_visible"]

_SEND = Perm.SEND
_RECEIVE = Perm.RECEIVE
_NOBODY: frozenset[int] = frozenset()


def group_recipients(roster: GroupRoster | None, app_id: int, sender_id: int,
                     blockers: Set[int] = _NOBODY) -> list[int] | Status:
    """The user ids a group message of `sender_id` (a user of `app_id`) reaches.

    `roster` is the group's (None: there is no such group); `blockers` are
    members who block the sender (they are skipped).

    Returns:
        The members with RECEIVE, in the roster's order; or the status that
        refuses the message: INVALID_DEST (no such group in this app) or
        NOT_MEMBER (the sender is no member, or one without SEND).
    """
    if roster is None or roster.app_id != app_id:
        return Status.INVALID_DEST
    members = roster.members
    perms = members.get(sender_id)
    if perms is None or not perms & _SEND:
        return Status.NOT_MEMBER
    if blockers:
        return [user for user, bits in members.items()
                if bits & _RECEIVE and user not in blockers]
    return [user for user, bits in members.items() if bits & _RECEIVE]


def peer_recipients(peer_id: int | None, blocked: bool = False) -> list[int] | Status:
    """The user ids a 1:1 message reaches: its peer's, found in the sender's app.

    `peer_id` is None when the address names no user of that app (INVALID_DEST);
    `blocked`: the peer blocks the sender (BLOCKED).
    """
    if peer_id is None:
        return Status.INVALID_DEST
    return Status.BLOCKED if blocked else [peer_id]


def presence_visible(privacy: int, *, own: bool, contact: bool, blocks_viewer: bool) -> bool:
    """Whether a viewer may see a user's presence (PROTOCOL.md §8.2).

    `privacy` is the user's `Privacy`; `own`: the viewer is the user itself
    (its other devices always see it); `contact`: the user lists the viewer
    among its contacts; `blocks_viewer`: the user blocks the viewer, who then
    sees nothing of it, whatever the privacy.  A user the viewer may not see
    is shown exactly as a user that does not exist.
    """
    if own:
        return True
    if blocks_viewer:
        return False
    if privacy == Privacy.EVERYONE:
        return True
    return privacy == Privacy.CONTACTS and contact
