"""Names people choose: addresses and group names (SPEC M1, M5), checked by one rule.

For every entry point (the CLI, REST, the wire's GROUP_MANAGE) and every
lookup, so that two names that look alike are never two users or groups.
Pure functions: the service layer and the engine both use them.
"""

from __future__ import annotations

import unicodedata
from typing import Final

from appliance.errors import UsageError
from appliance.protocol.wire.constants import MAX_ADDRESS_BYTES
from appliance.protocol.wire.groups import MAX_GROUP_NAME_BYTES

#: Addresses starting with it belong to the server, never to a device's user.
RESERVED_PREFIX: Final = "@"
#: The sender of what the app's backend sends as the app (``POST /v1/messages``
#: without ``from``), and of a group's announcements; created on first use,
#: never a device's user.
APP_SENDER: Final = "@app"
#: Unicode categories an address may not contain: controls, format characters
#: (bidi controls such as U+202E, zero-width U+200B-U+200D, U+FEFF), surrogates,
#: private use, unassigned, line and paragraph separators.  Two addresses that
#: look alike must not be two users (UTS #39, "confusable" spoofing).
_INVISIBLE: Final = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})

__all__ = ["APP_SENDER", "MAX_GROUP_NAME_BYTES", "RESERVED_PREFIX", "check_address",
           "check_group_name"]


def _text(value: str, what: str, limit: int) -> bytes:
    """`value` as UTF-8, 1..`limit` bytes, with no invisible character."""
    try:
        raw = value.encode()
    except UnicodeEncodeError:
        raise UsageError(f"{what} is not valid Unicode (a lone surrogate)") from None
    if not 1 <= len(raw) <= limit:
        raise UsageError(f"{what} must be 1-{limit} bytes of UTF-8, got {len(raw)}")
    if not value.isprintable():  # true of no character in _INVISIBLE: the fast path
        bad = next((c for c in value if unicodedata.category(c) in _INVISIBLE), None)
        if bad is not None:
            raise UsageError(f"{what} must not contain control, format or invisible"
                             f" characters (found U+{ord(bad):04X})")
    return raw


def check_address(address: str) -> str:
    """The one address rule (SPEC M1), for the CLI, REST and every lookup.

    Returns the address in Unicode NFC, so that a name typed with combining
    accents and the same name precomposed are one user.

    Raises:
        UsageError: not 1-64 bytes of UTF-8, invisible or control characters,
            or the reserved prefix.
    """
    if not address.isascii():  # ASCII is NFC already: the usual case costs nothing
        address = unicodedata.normalize("NFC", address)
    _text(address, "address", MAX_ADDRESS_BYTES)
    if address.startswith(RESERVED_PREFIX):
        raise UsageError(f"addresses starting with {RESERVED_PREFIX!r} are reserved"
                         f" ({APP_SENDER!r} is the app itself)")
    return address


def check_group_name(name: str) -> str:
    """A group name: 1-255 bytes of UTF-8 in NFC, no invisible or control characters
    (it must fit the MariaDB column, VARCHAR(255) characters, whatever its characters;
    a 1 MB name was once accepted, issue 12).

    Raises:
        UsageError: anything else.
    """
    if not name.isascii():
        name = unicodedata.normalize("NFC", name)
    _text(name, "group name", MAX_GROUP_NAME_BYTES)
    return name
