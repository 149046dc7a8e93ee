"""The SDK's local store on its own: dedupe, forward-only statuses, outbox, history."""

from __future__ import annotations

from pathlib import Path

import pytest

from appliance.errors import StorageError
from appliance.protocol.wire import Flag, Message, Status
from appliance.sdk.models import OutgoingMessage
from appliance.sdk.store import LocalStore, queued

NOW = 1_700_000_000_000


def out(msg_id: int, peer: str = "bob", *, expiry_s: int = 3600, flags: int = Flag.DEFAULT,
        group_id: int = 0) -> OutgoingMessage:
    return OutgoingMessage(id=msg_id, peer=peer, group_id=group_id, payload=b"p%d" % msg_id,
                           expiry_s=expiry_s, flags=flags)


def incoming(msg_id: int, sender: bytes = b"bob", *, seq: int = 1, group_id: int = 0,
             flags: int = Flag.DEFAULT, peer: bytes | None = None) -> Message:
    return Message(msg_id, sender if peer is None else peer, b"in%d" % msg_id, seq=seq,
                   group_id=group_id, flags=flags, timestamp_ms=NOW)


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    s = LocalStore(tmp_path / "c.sqlite3")
    yield s  # type: ignore[misc]
    s.close()


def test_device_id_is_created_once_and_kept(tmp_path: Path) -> None:
    first = LocalStore(tmp_path / "d.sqlite3")
    device = first.device_id()
    first.close()
    again = LocalStore(tmp_path / "d.sqlite3")
    assert again.device_id() == device
    assert len(device) == 32
    again.close()


def test_statuses_only_move_forward(store: LocalStore) -> None:
    store.commit([out(1), out(2)], [], [], NOW)
    moves = [(1, Status.SENT), (1, Status.SENT), (1, Status.READ), (1, Status.DELIVERED),
             (2, Status.FAILED), (2, Status.SENT), (2, Status.EXPIRED), (2, Status.DELIVERED),
             (99, Status.SENT)]
    changed, _ = store.commit([], [], [(i, st, NOW) for i, st in moves], NOW)
    assert changed == [True, False, True, False, True, True, True, False, False]
    history = {m.id: m.status for m in (r for _, r in store.history(b"bob", 0, 10, None))}
    assert history == {1: Status.READ, 2: Status.EXPIRED}


def test_outbox_holds_unanswered_messages_in_order(store: LocalStore) -> None:
    store.commit([out(5), out(3), out(0), out(7, expiry_s=0), out(8, flags=Flag.TRANSIENT),
                  out(9, expiry_s=1)], [], [], NOW)
    waiting, expired = store.outbox(NOW + 500)
    assert [m.id for m in waiting] == [5, 3, 9]  # not id 0, not real-time
    assert expired == []
    store.commit([], [], [(5, Status.SENT, NOW), (3, Status.FAILED, NOW)], NOW)
    waiting, expired = store.outbox(NOW + 2000)
    assert [m.id for m in waiting] == [3]  # FAILED is resent
    assert expired == [9]  # waited past its expiry
    assert [queued(m) for m in (out(1), out(0), out(2, expiry_s=0))] == [True, False, False]


def test_received_messages_are_deduplicated_by_sender_and_id(store: LocalStore) -> None:
    _, fresh = store.commit([], [incoming(10, seq=1), incoming(11, seq=2), incoming(10, seq=3),
                                 incoming(10, b"carol", seq=4)], [], NOW)
    assert fresh == [True, True, False, True]
    _, fresh = store.commit([], [incoming(11, seq=2), incoming(5, seq=6),
                                 incoming(0, seq=7), incoming(0, seq=7), incoming(0, seq=8)],
                            [], NOW)
    assert fresh == [False, True, True, False, True]  # id 0: deduplicated by seq


def test_copies_of_our_other_devices_sends_are_ours(store: LocalStore) -> None:
    copy = incoming(42, peer=b"carol", flags=Flag.DEFAULT | Flag.OUTGOING_COPY, seq=9)
    _, fresh = store.commit([], [copy], [], NOW)
    assert fresh == [True]
    [(_, stored)] = store.history(b"carol", 0, 10, None)
    assert (stored.outgoing, stored.sender, stored.status) == (True, "", Status.SENT)
    changed, _ = store.commit([], [], [(42, Status.DELIVERED, NOW)], NOW)
    assert changed == [True]


def test_history_pages_newest_first_and_mark_read(store: LocalStore) -> None:
    store.commit([out(1)], [incoming(2, seq=1), incoming(3, seq=2)], [], NOW)
    store.commit([], [incoming(4, b"team-mate", seq=3, group_id=7)], [], NOW)
    page = store.history(b"bob", 0, 2, None)
    assert [m.id for _, m in page] == [3, 2]
    older = store.history(b"bob", 0, 2, page[-1][0])
    assert [m.id for _, m in older] == [1]
    assert store.mark_read(b"bob", 0, [3]) == 1
    assert store.mark_read(b"bob", 0, None) == 1
    assert store.mark_read(b"", 7, None) == 1
    assert sorted(store.unreported_reads()) == [(b"bob", 0, [2, 3]), (b"team-mate", 7, [4])]
    assert store.unreported_reads() == []
    statuses = [m.status for _, m in store.history(b"bob", 0, 10, None)]
    assert statuses == [Status.READ, Status.READ, Status.OUTBOX]


def test_a_newer_store_or_an_unusable_file_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "new.sqlite3"
    s = LocalStore(path)
    s.conn.execute("PRAGMA user_version = 99")
    s.close()
    with pytest.raises(StorageError, match="newer than this SDK"):
        LocalStore(path)
    with pytest.raises(StorageError, match="cannot open the local store"):
        LocalStore(tmp_path)  # a directory
    with pytest.raises(ValueError, match="synchronous"):
        LocalStore(tmp_path / "x.sqlite3", synchronous="OFF")
