"""Parsing of human durations for options like ``--expires 30d``."""

from __future__ import annotations

import re

from appliance.errors import UsageError

_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> int:
    """Seconds in "90", "90s", "15m", "12h" or "30d".

    Raises:
        UsageError: anything else, or zero.
    """
    match = re.fullmatch(r"\s*(\d+)\s*([smhd]?)\s*", text)
    if not match or int(match[1]) == 0:
        raise UsageError(f"bad duration {text!r}: use a positive number with s, m, h or d")
    return int(match[1]) * _UNITS[match[2]]
