"""Storage: one interface (`interface.Storage`), one backend per database."""

from __future__ import annotations

from appliance.storage.factory import open_storage
from appliance.storage.interface import Storage

__all__ = ["Storage", "open_storage"]
