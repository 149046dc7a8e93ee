"""Entry script of the frozen `tidings` executable (see packaging/tidings.spec)."""

from __future__ import annotations

# First, before the ~0.7 s of imports below: a SIGKILLed bootloader must not
# leave this process behind (appliance/system/bootloader.py) ...
from appliance.system.bootloader import die_with_bootloader, remove_stale_extractions

die_with_bootloader()
# ... nor, after one did, its unpacked files for ever.
remove_stale_extractions()

import sys  # noqa: E402

from appliance.media.images.protocol import WORKER_ARG  # noqa: E402 - stdlib only, cheap

if __name__ == "__main__" and sys.argv[1:2] == [WORKER_ARG]:
    # An image worker started by the server (appliance/media/images/pool.py): Pillow
    # and the codec only, never the CLI (~0.7 s of imports per worker).
    from appliance.media.images.worker import run as image_worker

    raise SystemExit(image_worker())

from appliance.cli import main  # noqa: E402 - after the parent-death signal is set

if __name__ == "__main__":
    main()
