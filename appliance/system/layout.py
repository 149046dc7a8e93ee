"""Where an installed appliance keeps its files (installer/install.sh writes the same).

Defined once here; the installer, a POSIX sh script, repeats these values
and tests/installer checks that they agree.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

#: The executable; the previous one is kept next to it by `tidings upgrade`.
BIN: Final = Path("/usr/local/bin/tidings")
PREVIOUS_SUFFIX: Final = ".prev"
#: The configuration the wizard writes (0640 root:tidings).
CONFIG_DIR: Final = Path("/etc/tidings")
CONFIG_FILE: Final = CONFIG_DIR / "tidings.toml"
#: The data directory (0750 tidings:tidings): store, keys, certificates.
DATA_DIR: Final = Path("/var/lib/tidings")
#: The system user and group the service runs as.
SERVICE_USER: Final = "tidings"
#: systemd units.
UNIT_DIR: Final = Path("/etc/systemd/system")
SERVICE_UNIT: Final = "tidings.service"
SOCKET_UNIT: Final = "tidings.socket"
MARIADB_UNIT: Final = "tidings-mariadb.service"
