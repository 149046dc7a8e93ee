"""The MariaDB backend (SPEC M14), through the `mariadb` connector."""

from __future__ import annotations

from appliance.storage.mariadb.store import MariaDBStorage

__all__ = ["MariaDBStorage"]
