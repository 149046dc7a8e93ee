"""Entry script of the frozen `tidings` executable (see packaging/tidings.spec)."""

from __future__ import annotations

from appliance.cli import main

if __name__ == "__main__":
    main()
