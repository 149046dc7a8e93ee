"""Who watches whom: the index both ways stays consistent, and nothing outlives a device."""

from __future__ import annotations

from appliance.engine.presence.watchers import LocalWatchIndex


def test_watches_are_indexed_both_ways_and_dropped_with_the_device() -> None:
    index = LocalWatchIndex()
    index.watch(device=1, user=10, address=b"alice", visible=True)
    index.watch(device=1, user=11, address=b"bob", visible=False)
    index.watch(device=2, user=10, address=b"alice", visible=True)
    watched = index.watched(10)
    assert watched is not None
    assert (watched.address, watched.devices) == (b"alice", {1: True, 2: True})
    assert set(index.watching(1)) == {10, 11}
    index.set_visible(10, {1: False, 3: True})  # device 3 does not watch: ignored
    assert watched.devices == {1: False, 2: True}
    index.unwatch(1, 10)
    index.unwatch(1, 99)  # nothing to undo
    assert watched.devices == {2: True}
    index.drop_device(1)
    assert index.watched(11) is None
    assert list(index.watching(1)) == []
    index.drop_device(2)
    assert index.watched(10) is None
    assert len(index) == 0


def test_many_devices_leave_no_trace() -> None:
    index = LocalWatchIndex()
    for device in range(1000):
        for user in range(20):
            index.watch(device, user, b"u%d" % user, device % 2 == 0)
    watched = index.watched(5)
    assert watched is not None
    assert len(watched.devices) == 1000
    for device in range(1000):
        index.drop_device(device)
    assert all(index.watched(user) is None for user in range(20))
    assert len(index) == 0
