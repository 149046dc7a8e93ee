"""Who a message goes to: the one routing and permission rule (SPEC M5, PROTOCOL.md §4).

Pure functions, called by the writer for reliable messages (from its cached
directory, `storage.sql.directory`) and by the engine's relay for real-time
ones (from `DirectoryStore.group_roster`), so that both paths decide alike:

* a group message needs a group of the sender's app (else INVALID_DEST: group
  ids are global, apps are not visible in them, and nothing crosses apps);
* its sender must be a member (else NOT_MEMBER), and one with the SEND
  permission when the group has `GroupFlag.SEND_BY_SELECTED` (every group
  has it unless its admin cleared it);
* a SYSTEM message (only the server sets that flag: a group's announcements
  from the app's ``@app``) needs no membership;
* it reaches the members with the RECEIVE permission, the sender included
  when it has RECEIVE (its other devices get their copy as recipients);
* to a group with `GroupFlag.NO_STORE` it is never stored, whatever its expiry
  (`group_stores`): it is relayed to the recipients online, as a real-time
  message; SYSTEM messages are stored all the same;
* a 1:1 message needs its peer to be a user of the sender's app (else
  INVALID_DEST); the caller looks the address up in that app.
"""

from __future__ import annotations

from appliance.protocol.wire.constants import Status
from appliance.storage.models import GroupFlag, GroupRoster, Perm

__all__ = ["GroupRoster", "group_recipients", "group_stores", "peer_recipients"]

_SEND = Perm.SEND
_RECEIVE = Perm.RECEIVE
_SELECTED = GroupFlag.SEND_BY_SELECTED
_NO_STORE = GroupFlag.NO_STORE


def group_recipients(roster: GroupRoster | None, app_id: int, sender_id: int,
                     system: bool = False) -> list[int] | Status:
    """The user ids a group message of `sender_id` (a user of `app_id`) reaches.

    `roster` is the group's (None: there is no such group); `system`: the
    message carries `Flag.SYSTEM` (the server's own announcement).

    Returns:
        The members with RECEIVE, in the roster's order; or the status that
        refuses the message: INVALID_DEST (no such group in this app) or
        NOT_MEMBER (the sender is no member, or one without SEND in a group
        with SEND_BY_SELECTED).
    """
    if roster is None or roster.app_id != app_id:
        return Status.INVALID_DEST
    members = roster.members
    if not system:
        perms = members.get(sender_id)
        if perms is None or (not perms & _SEND and roster.flags & _SELECTED):
            return Status.NOT_MEMBER
    return [user for user, bits in members.items() if bits & _RECEIVE]


def group_stores(roster: GroupRoster, system: bool = False) -> bool:
    """Whether a reliable message to this group is stored (else relayed: NO_STORE)."""
    return system or not roster.flags & _NO_STORE


def peer_recipients(peer_id: int | None) -> list[int] | Status:
    """The user ids a 1:1 message reaches: its peer's, found in the sender's app.

    `peer_id` is None when the address names no user of that app (INVALID_DEST).
    """
    return Status.INVALID_DEST if peer_id is None else [peer_id]
