"""Presence (SPEC M6, PROTOCOL.md §8.2): online, offline, typing, activity, last seen.

`Presence` (core.py) is the part the engine holds; `watchers` is who watches
whom (an interface a cluster implements later), `subscriptions` serves
PRESENCE_SUBSCRIBE, `typing_relay` and `typing_timers` carry typing states
and end them.  Imports downward only, as the engine does: never the
transport, a concrete store, or asyncio.
"""
