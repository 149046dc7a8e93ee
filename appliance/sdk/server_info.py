"""What a server says about itself in WELCOME: its limits and features (PROTOCOL.md §3.2, §8).

The SDK sets `HelloFlag.EXTENSIONS` in every HELLO (`HELLO_FLAGS`), so a server
that has the extension fields sends them; one older than them sends none, and
then every limit is None and `Feature(0)` says no extension is there.  A field
the SDK does not know is kept in `ServerLimits.fields` and otherwise ignored, as
§3.2 asks of clients.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from appliance.protocol.wire import Feature, HelloFlag, Welcome, WelcomeField

#: The HELLO `client_flags` the SDK sends: it understands the extensions (§8).
HELLO_FLAGS = HelloFlag.EXTENSIONS


@dataclass(frozen=True, slots=True)
class ServerLimits:
    """The limits the server announced; None for one it did not (an older server).

    Attributes:
        max_payload_bytes: the largest payload it accepts (larger: TooLargeError).
        max_expiry_s: the longest expiry it keeps (a longer one is shortened),
            and how long it recognises a resent message id (§6.1).
        window: messages in flight to one device before it waits for ACKs.
        max_devices: devices of one user connected at once.
        max_presence_subscriptions: users one device may follow the presence of.
        typing_timeout_s: how long a typing state lasts without a refresh.
        fields: every field as sent, tag -> value, known or not.
    """

    max_payload_bytes: int | None = None
    max_expiry_s: int | None = None
    window: int | None = None
    max_devices: int | None = None
    max_presence_subscriptions: int | None = None
    typing_timeout_s: int | None = None
    fields: dict[int, int] = field(default_factory=dict)


def server_info(welcome: Welcome | None) -> tuple[ServerLimits, Feature]:
    """The limits and features a WELCOME announced (none: before the first WELCOME)."""
    info = welcome.info if welcome is not None else None
    if not info:
        return ServerLimits(), Feature(0)
    get = info.get
    limits = ServerLimits(get(WelcomeField.MAX_PAYLOAD_BYTES), get(WelcomeField.MAX_EXPIRY_S),
                          get(WelcomeField.WINDOW), get(WelcomeField.MAX_DEVICES),
                          get(WelcomeField.MAX_PRESENCE_SUBSCRIPTIONS),
                          get(WelcomeField.TYPING_TIMEOUT_S), dict(info))
    # Bits this SDK has no name for stay in the value (IntFlag keeps them).
    return limits, Feature(get(WelcomeField.FEATURES, 0))
