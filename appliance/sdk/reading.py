"""Reading for the SDK's `Client`: a conversation's history in pages, READ reports.

    session = client.read_session("bob")      # or a Group
    page = session.older(20)                  # newest first, then further back
    session.mark_read()                       # READ reports go to their senders

Both read the local store (store.py); READ reports are written when online and
again after every reconnect until the store holds them as reported
(PROTOCOL.md §6).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from appliance.protocol.wire import MAX_IDS_PER_FRAME, ReadReport
from appliance.sdk.models import ConnectionState, Group, StoredMessage

if TYPE_CHECKING:
    from appliance.sdk.native import NativeWire
    from appliance.sdk.store import LocalStore


class ReadSession:
    """One conversation's history from the local store, newest first, in pages."""

    def __init__(self, client: ReadingFeatures, peer: str, group_id: int) -> None:
        self._client = client
        self.peer = peer
        self.group_id = group_id
        self._cursor: int | None = None
        self.exhausted = False

    def older(self, limit: int = 50) -> list[StoredMessage]:
        """The next `limit` older messages (an empty list at the beginning)."""
        if self.exhausted:
            return []
        rows = self._client._store_or_raise().history(
            self.peer.encode(), self.group_id, limit, self._cursor)
        if len(rows) < limit:
            self.exhausted = True
        if rows:
            self._cursor = rows[-1][0]
        return [m for _, m in rows]

    def mark_read(self, ids: list[int] | None = None) -> int:
        """Mark the conversation's received messages read and send READ reports."""
        return self._client.mark_read(Group(self.group_id) if self.group_id else self.peer, ids)


class ReadingFeatures:
    """The reading half of `Client` (a mixin: the client holds the store and the connection)."""

    state: ConnectionState
    _wire: NativeWire | None
    _store: LocalStore | None
    _store_or_raise: Callable[[], LocalStore]

    def read_session(self, conversation: str | Group) -> ReadSession:
        """A conversation's history, newest first: ``session.older(20)`` pages back."""
        if isinstance(conversation, Group):
            return ReadSession(self, "", conversation.id)
        return ReadSession(self, conversation, 0)

    def mark_read(self, conversation: str | Group, ids: list[int] | None = None) -> int:
        """Mark received messages of a conversation read (all, or those `ids`).

        READ reports go to their senders now, or when the client is next
        online.  Returns how many messages changed.
        """
        store = self._store_or_raise()
        if isinstance(conversation, Group):
            changed = store.mark_read(b"", conversation.id, ids)
        else:
            changed = store.mark_read(conversation.encode(), 0, ids)
        if changed and self.state is ConnectionState.ONLINE:
            self._send_reads()
        return changed

    def _send_reads(self) -> None:
        wire = self._wire
        store = self._store
        if wire is None or store is None or not wire.online:
            return
        for sender, group_id, ids in store.unreported_reads():
            for start in range(0, len(ids), MAX_IDS_PER_FRAME):
                wire.write(wire.codec.send(ReadReport(
                    sender, group_id, tuple(ids[start:start + MAX_IDS_PER_FRAME]))))
