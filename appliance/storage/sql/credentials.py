"""The credential change log and bulk token checks (issue 12, finding 5).

A revocation, a deletion, a rename or an app-secret replacement writes a row
to ``credential_changes`` in the transaction that makes the change; a
running server reads the rows past its cursor every
``limits.credentials_poll_s`` (one indexed range read) and re-checks the
tokens of the live sessions they concern with one query per chunk of hashes.
"""

from __future__ import annotations

from collections.abc import Sequence

from appliance.storage.models import CredentialChange, Principal
from appliance.storage.sql.dialect import Connection

#: Rows kept behind the newest: a server reads the log every half second,
#: so it never falls this far behind except across a store outage, after
#: which it re-checks every live session anyway (`CredentialWatcher`).
KEEP_CHANGES = 10_000
#: Token hashes per query: below SQLite's and MariaDB's parameter limits,
#: and small enough that one query never holds a reader for long.
HASHES_PER_QUERY = 500


def record_change(conn: Connection, app: int, user: int | None) -> None:
    """Log a credential change inside the caller's admin transaction.

    The version comes from the directory_version row, raised and read here:
    its row lock is held until COMMIT, so a reader that sees version V has
    seen every change numbered below V (MariaDB commits two processes'
    changes in lock order; an AUTO_INCREMENT id would not be ordered so).
    """
    conn.execute("UPDATE directory_version SET version = version + 1")
    version = int(conn.execute("SELECT version FROM directory_version").fetchone()[0])
    conn.execute("INSERT INTO credential_changes (version, app_id, user_id) VALUES (?, ?, ?)",
                 (version, app, user))
    conn.execute("DELETE FROM credential_changes WHERE version <= ?", (version - KEEP_CHANGES,))


def latest_change(conn: Connection) -> int:
    """See `CredentialStore.latest_credential_change`."""
    return int(conn.execute(
        "SELECT coalesce(max(version), 0) FROM credential_changes").fetchone()[0])


def changes_after(conn: Connection, after: int, limit: int) -> list[CredentialChange]:
    """See `CredentialStore.credential_changes`."""
    rows = conn.execute("SELECT version, app_id, user_id FROM credential_changes"
                        " WHERE version > ? ORDER BY version LIMIT ?", (after, limit))
    return [CredentialChange(int(v), int(a), None if u is None else int(u)) for v, a, u in rows]


def token_owners(conn: Connection, hashes: Sequence[bytes]) -> dict[bytes, Principal]:
    """See `CredentialStore.token_owners`."""
    found: dict[bytes, Principal] = {}
    for start in range(0, len(hashes), HASHES_PER_QUERY):
        chunk = hashes[start:start + HASHES_PER_QUERY]
        marks = ", ".join("?" * len(chunk))
        for token, app, user, address, expires in conn.execute(
                "SELECT t.hash, u.app_id, u.id, u.address, t.expires_ms FROM tokens t"
                f" JOIN users u ON u.id = t.user_id WHERE t.hash IN ({marks})", tuple(chunk)):
            found[bytes(token)] = Principal(int(app), int(user), bytes(address), int(expires))
    return found
