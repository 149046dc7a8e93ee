"""Entry script of the frozen `tidings` executable (see packaging/tidings.spec)."""

from __future__ import annotations

# First, before the ~0.7 s of imports below: a SIGKILLed bootloader must not
# leave this process behind (appliance/system/bootloader.py) ...
from appliance.system.bootloader import die_with_bootloader, remove_stale_extractions

die_with_bootloader()
# ... nor, after one did, its unpacked files for ever.
remove_stale_extractions()

from appliance.cli import main  # noqa: E402 - after the parent-death signal is set

if __name__ == "__main__":
    main()
