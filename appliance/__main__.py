"""`python -m appliance` runs the `tidings` command."""

from __future__ import annotations

from appliance.cli import main

if __name__ == "__main__":
    main()
