"""Group management frames (PROTOCOL.md §8.3): GROUP_MANAGE, GROUP_RESULT.

Filled in by issue 16's group work; each frame is listed in `FRAMES`
(see `extensions.py`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

#: frame type -> (event class, body decoder, "client" or "server").
FRAMES: dict[int, tuple[type, Callable[[bytes], Any], str]] = {}
