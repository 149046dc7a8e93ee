-- 0007: what the ACME manager keeps in the store (issue 13), so that every
-- process or node sharing the database serves the same certificate and only
-- one of them asks the CA for it (RFC 8555 §7.4; CAs rate-limit orders).
-- `certificates`: the newest certificate per name (its hostnames, sorted,
-- comma-joined); `version` rises by one on every save, so a process learns
-- of a new certificate with one indexed read.  `renewal_state`: failures
-- and backoff, kept across restarts so that a crash loop does not hammer
-- the CA.  `leases`: who may talk to the CA for `name` until `expires_ms`
-- (a crashed holder's lease simply runs out).  None of these touches
-- directory_version: they are not directory changes.  `challenge_answers`:
-- the HTTP-01 and TLS-ALPN-01 key authorizations of an order in progress, so
-- that whichever process or node the CA's validation reaches can answer it
-- (the lease holder placed the order; a load balancer picks the node).
CREATE TABLE certificates (
  name TEXT NOT NULL PRIMARY KEY,
  fullchain_pem BLOB NOT NULL,
  key_pem BLOB NOT NULL,
  issuer TEXT NOT NULL,
  not_before_ms INTEGER NOT NULL,
  not_after_ms INTEGER NOT NULL,
  version INTEGER NOT NULL
);
CREATE TABLE renewal_state (
  name TEXT NOT NULL PRIMARY KEY,
  attempts INTEGER NOT NULL,
  next_attempt_ms INTEGER NOT NULL,
  last_attempt_ms INTEGER NOT NULL,
  last_error TEXT NOT NULL,
  request INTEGER NOT NULL DEFAULT 0,
  requested_ms INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
CREATE TABLE leases (
  name TEXT NOT NULL PRIMARY KEY,
  owner TEXT NOT NULL,
  expires_ms INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE challenge_answers (
  name TEXT NOT NULL PRIMARY KEY,
  answer BLOB NOT NULL,
  expires_ms INTEGER NOT NULL
) WITHOUT ROWID;
