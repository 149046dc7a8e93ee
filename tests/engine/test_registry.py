"""`LocalRegistry`: who is online, by user, device and address (issue 16)."""

from __future__ import annotations

from appliance.engine.registry import LocalRegistry
from appliance.engine.session import Session
from tests.engine.test_delivery import FakeLink

APP = 1


def _session(user_id: int, address: bytes, device_rowid: int) -> Session:
    return Session(FakeLink(), APP, user_id, address, b"d%d" % device_rowid, device_rowid, 0)


def test_a_renamed_users_old_address_is_forgotten_when_its_last_session_goes() -> None:
    """Attack: alice is renamed to alice2 and reconnects under the new name before the
    credential watcher closes her old session.  Before, the old address stayed mapped to
    her for as long as any of her devices was online: real-time messages to "alice"
    (by then another user, or no one) were relayed to alice2."""
    registry = LocalRegistry()
    old = _session(1, b"alice", 10)
    assert registry.add(old)
    renamed = _session(1, b"alice2", 11)
    assert not registry.add(renamed)
    assert registry.user_at((APP, b"alice")) == 1
    assert not registry.remove(old)  # closed by the credential watcher: not her last device
    assert registry.user_at((APP, b"alice")) is None
    assert registry.user_at((APP, b"alice2")) == 1
    newcomer = _session(2, b"alice", 12)  # a new user takes the freed name
    assert registry.add(newcomer)
    assert registry.user_at((APP, b"alice")) == 2
    assert registry.remove(renamed)
    assert registry.user_at((APP, b"alice")) == 2  # not the newcomer's entry
    assert registry.user_at((APP, b"alice2")) is None
    assert registry.remove(newcomer)
    assert (len(registry), registry.users(), registry.sessions()) == (0, [], [])
    assert registry._by_address == {}  # nothing left behind


def test_an_address_stays_while_another_device_under_it_is_online() -> None:
    registry = LocalRegistry()
    first, second = _session(1, b"bob", 20), _session(1, b"bob", 21)
    registry.add(first)
    registry.add(second)
    assert not registry.remove(first)
    assert registry.user_at((APP, b"bob")) == 1
    assert registry.remove(second)
    assert registry.user_at((APP, b"bob")) is None
    assert not registry.remove(second)  # twice: nothing happens
