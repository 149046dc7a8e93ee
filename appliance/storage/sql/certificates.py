"""Certificates, renewal state and leases for the ACME manager (issue 13).

Reads run on reader threads; writes run in transactions of their own on the
writer thread (`Writer.run_meta`), which leave directory_version alone: a
certificate or a lease is no directory change, and raising the version
would make every other process drop its caches.

Every write must be right when several processes or nodes write at once.
On SQLite, ``BEGIN IMMEDIATE`` admits one writer at a time.  On MariaDB
(READ COMMITTED) a certificate or renewal state is saved by one upsert
statement, which takes the row's exclusive lock (or inserts it) at once;
a lease is taken by a conditional UPDATE under the row's lock, or, for a
name never leased before, by an INSERT that at most one process's insert
wins.  None of them takes a shared lock first and then asks for an
exclusive one: INSERT IGNORE then UPDATE did, and InnoDB rolled back 448 of
2,000 writes that five processes made at once as deadlocks (measured; none
with these statements, `Writer.run_meta` retries any that happen anyway).
"""

from __future__ import annotations

from appliance.errors import StorageError
from appliance.storage.models import RenewalState, StoredCertificate
from appliance.storage.sql.dialect import Connection
from appliance.storage.sql.files import BIGINT_MAX

#: Longest name (certificates, renewal states, leases) and lease owner, in
#: characters: the MariaDB columns are VARCHAR(255).
NAME_CHARS = 255
#: `RenewalState.last_error` is cut to this many characters: it is for people
#: to read, and a CA's whole error document must not fail the save (MariaDB's
#: TEXT holds 65,535 bytes, 4 per character at worst).
ERROR_CHARS = 4000

_CERTIFICATE = ("SELECT name, fullchain_pem, key_pem, issuer, not_before_ms, not_after_ms,"
                " version FROM certificates WHERE name = ?")
_CERTIFICATE_COLUMNS = ("name", "fullchain_pem", "key_pem", "issuer", "not_before_ms",
                        "not_after_ms", "version")
_STATE_COLUMNS = ("name", "attempts", "next_attempt_ms", "last_attempt_ms", "last_error",
                  "request", "requested_ms")
_ANSWER_COLUMNS = ("name", "answer", "expires_ms")
#: A key authorization is ``token.thumbprint``: well under this.
ANSWER_BYTES = 1024
_TAKE_LEASE = ("UPDATE leases SET owner = ?, expires_ms = ?"
               " WHERE name = ? AND (owner = ? OR expires_ms <= ?)")
_LEASE_OWNER = "SELECT owner FROM leases WHERE name = ?"


def check_name(name: str, what: str = "name") -> None:
    """Refuse a name or owner the store cannot key on.

    Raises:
        StorageError: empty, or longer than `NAME_CHARS`.
    """
    if not 0 < len(name) <= NAME_CHARS:
        raise StorageError(f"the store refused a {what}: it must be 1 to {NAME_CHARS}"
                           f" characters, not {name!r:.80}")


def load_certificate(conn: Connection, name: str) -> StoredCertificate | None:
    """See `CertificateStore.load_certificate`."""
    row = conn.execute(_CERTIFICATE, (name,)).fetchone()
    if row is None:
        return None
    name, chain, key, issuer, not_before, not_after, version = row
    return StoredCertificate(str(name), bytes(chain), bytes(key), str(issuer), int(not_before),
                             int(not_after), int(version))


def certificate_version(conn: Connection, name: str) -> int:
    """See `CertificateStore.certificate_version`."""
    row = conn.execute("SELECT version FROM certificates WHERE name = ?", (name,)).fetchone()
    return 0 if row is None else int(row[0])


def save_certificate(conn: Connection, cert: StoredCertificate) -> int:
    """See `CertificateStore.save_certificate`; in the caller's transaction."""
    check_name(cert.name)
    sql = conn.dialect.upsert("certificates", _CERTIFICATE_COLUMNS, _CERTIFICATE_COLUMNS[1:-1],
                              "version = version + 1")
    conn.execute(sql, (cert.name, cert.fullchain_pem, cert.key_pem, cert.issuer,
                       cert.not_before_ms, cert.not_after_ms, 1))
    # The row our upsert wrote, locked by it until COMMIT.
    return int(conn.execute("SELECT version FROM certificates WHERE name = ?",
                            (cert.name,)).fetchone()[0])


def renewal_state(conn: Connection, name: str) -> RenewalState:
    """See `CertificateStore.renewal_state`."""
    row = conn.execute("SELECT attempts, next_attempt_ms, last_attempt_ms, last_error,"
                       " request, requested_ms FROM renewal_state WHERE name = ?",
                       (name,)).fetchone()
    if row is None:
        return RenewalState(name)
    attempts, next_ms, last_ms, error, request, requested = row
    return RenewalState(name, int(attempts), int(next_ms), int(last_ms), str(error),
                        int(request), int(requested))


def save_renewal_state(conn: Connection, state: RenewalState) -> None:
    """See `CertificateStore.save_renewal_state`; in the caller's transaction.

    `last_error` is kept to its first `ERROR_CHARS` characters.
    """
    check_name(state.name)
    conn.execute(conn.dialect.upsert("renewal_state", _STATE_COLUMNS, _STATE_COLUMNS[1:], ""),
                 (state.name, state.attempts, state.next_attempt_ms, state.last_attempt_ms,
                  state.last_error[:ERROR_CHARS], state.request, state.requested_ms))


def acquire_lease(conn: Connection, name: str, owner: str, now_ms: int, ttl_ms: int) -> bool:
    """See `CertificateStore.acquire_lease`; in the caller's transaction.

    The conditional UPDATE decides, under the row's lock; who holds the lease
    is then read back rather than taken from the row count (MariaDB reports
    0 affected rows for a refresh that changed nothing).  Within the
    transaction the read sees our own UPDATE, or else the latest committed
    holder.

    Raises:
        StorageError: an empty or too long name or owner, `ttl_ms` not
            positive, or a time outside 0 .. 2**63 - 1.
    """
    check_name(name)
    check_name(owner, "lease owner")
    if ttl_ms <= 0:
        raise StorageError(f"the store refused a lease of {ttl_ms} ms: it must be positive")
    if not 0 <= now_ms <= BIGINT_MAX - ttl_ms:
        raise StorageError(f"the store refused a lease from {now_ms} for {ttl_ms} ms:"
                           " out of range")
    conn.execute(_TAKE_LEASE, (owner, now_ms + ttl_ms, name, owner, now_ms))
    row = conn.execute(_LEASE_OWNER, (name,)).fetchone()
    if row is None:
        # Nobody ever asked for `name`: of the processes asking now, the one
        # whose INSERT comes first wins; the others' INSERTs wait for it to
        # commit, are ignored, and they read its owner.  IGNORE turns too long or out of
        # range values into warnings, so they were all checked above.
        conn.execute(f"{conn.dialect.insert_ignore} INTO leases VALUES (?, ?, ?)",
                     (name, owner, now_ms + ttl_ms))
        row = conn.execute(_LEASE_OWNER, (name,)).fetchone()
    return row is not None and str(row[0]) == owner


def release_lease(conn: Connection, name: str, owner: str) -> None:
    """See `CertificateStore.release_lease`; in the caller's transaction."""
    check_name(name)
    check_name(owner, "lease owner")
    conn.execute("DELETE FROM leases WHERE name = ? AND owner = ?", (name, owner))


def save_challenge_answer(conn: Connection, name: str, answer: bytes, expires_ms: int,
                          now_ms: int) -> None:
    """See `CertificateStore.save_challenge_answer`; expired answers go at the same time.

    Raises:
        StorageError: a name out of bounds or an answer over `ANSWER_BYTES`.
    """
    check_name(name)
    if len(answer) > ANSWER_BYTES:
        raise StorageError(f"the store refused a challenge answer of {len(answer)} bytes")
    conn.execute("DELETE FROM challenge_answers WHERE expires_ms <= ?", (now_ms,))
    conn.execute(conn.dialect.upsert("challenge_answers", _ANSWER_COLUMNS,
                                     _ANSWER_COLUMNS[1:], ""), (name, answer, expires_ms))


def challenge_answer(conn: Connection, name: str, now_ms: int) -> bytes | None:
    """See `CertificateStore.challenge_answer`."""
    row = conn.execute("SELECT answer FROM challenge_answers WHERE name = ? AND expires_ms > ?",
                       (name, now_ms)).fetchone()
    return None if row is None else bytes(row[0])


def drop_challenge_answer(conn: Connection, name: str) -> None:
    """See `CertificateStore.drop_challenge_answer`."""
    conn.execute("DELETE FROM challenge_answers WHERE name = ?", (name,))
