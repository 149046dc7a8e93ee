"""Entry script of the frozen `tidings` executable (see packaging/tidings.spec)."""

from __future__ import annotations

# First, before the ~0.7 s of imports below: a SIGKILLed bootloader must not
# leave this process behind (appliance/system/bootloader.py).
from appliance.system.bootloader import die_with_bootloader

die_with_bootloader()

from appliance.cli import main  # noqa: E402 - after the parent-death signal is set

if __name__ == "__main__":
    main()
