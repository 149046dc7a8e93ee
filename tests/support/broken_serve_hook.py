"""PyInstaller runtime hook of the deliberately broken test release (tests/support/releases.py).

Built in through ``TIDINGS_TEST_RUNTIME_HOOK`` (packaging/tidings.spec): the
executable reports its version and runs every command but `serve`, which
exits at once with an error, as a new release that crashes at start would.
"""

from __future__ import annotations

import sys

if "serve" in sys.argv[1:]:
    sys.stderr.write("tidings: deliberately broken test release: serve exits at once\n")
    sys.exit(70)
