"""Numbered schema migrations shared by every backend.

Files are ``NNNN_name.sql``; a backend may override one with
``NNNN_name.<dialect>.sql``.  Each applied migration is recorded with the
SHA-256 of its text: a changed file, or a database newer than this binary,
stops start-up instead of running on a schema we do not understand.

Schema history:
  1  apps, users, tokens, devices, groups, messages, deliveries, receipts.
  2  app secrets (hashed) for the backend REST API.
  3  operator keys (hashed) for managing apps over the REST API.
  4  directory_version: raised by every admin change (cache invalidation).
  5  MariaDB: no automatic statistics on the queue tables (deliveries, receipts).
  6  credential_changes: revocations, deletions, renames seen by live servers.
  7  certificates, renewal_state, leases: the ACME manager's shared state.
  8  files, file_grants, file_variants, blobs, pictures, media_keys (issue 15).
  10 group flags (SEND_BY_SELECTED on existing groups), group_status.ts_ms,
     group_counts: per-recipient ledger and aggregate receipts (issue 16).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from importlib import resources

_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)(?:\.([a-z]+))?\.sql$")


@dataclass(frozen=True, slots=True)
class Migration:
    """One numbered migration as it applies to one dialect."""

    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        """SHA-256 of the SQL text, recorded when the migration is applied."""
        return hashlib.sha256(self.sql.encode()).hexdigest()

    def statements(self) -> list[str]:
        """The SQL split into statements (one per `;` at a line end)."""
        body = "\n".join(line for line in self.sql.splitlines()
                         if not line.lstrip().startswith("--"))
        return [s.strip() for s in re.split(r";\s*$", body, flags=re.M) if s.strip()]


def load(dialect: str) -> list[Migration]:
    """Every migration for `dialect`, in version order."""
    chosen: dict[int, tuple[str, str, bool]] = {}
    for entry in resources.files(__package__).iterdir():
        match = _NAME.match(entry.name)
        if not match:
            continue
        version, name, suffix = int(match[1]), match[2], match[3]
        if suffix not in (None, dialect):
            continue
        specific = suffix == dialect
        if version in chosen and chosen[version][2] and not specific:
            continue
        chosen[version] = (name, entry.read_text(encoding="utf-8"), specific)
    return [Migration(v, n, sql) for v, (n, sql, _) in sorted(chosen.items())]
