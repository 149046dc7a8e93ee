-- 0007 (MariaDB): see 0007_certificates.sql.  Names and owners are at most
-- 255 characters, compared byte for byte without padding (utf8mb4_nopad_bin:
-- under a PAD SPACE collation 'a' = 'a ', and a lease holder must be exactly
-- who it says).  PEMs up to 16 MiB.
CREATE TABLE IF NOT EXISTS certificates (
  name VARCHAR(255) NOT NULL PRIMARY KEY,
  fullchain_pem MEDIUMBLOB NOT NULL,
  key_pem MEDIUMBLOB NOT NULL,
  issuer TEXT NOT NULL,
  not_before_ms BIGINT NOT NULL,
  not_after_ms BIGINT NOT NULL,
  version BIGINT NOT NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_nopad_bin;
CREATE TABLE IF NOT EXISTS renewal_state (
  name VARCHAR(255) NOT NULL PRIMARY KEY,
  attempts BIGINT NOT NULL,
  next_attempt_ms BIGINT NOT NULL,
  last_attempt_ms BIGINT NOT NULL,
  last_error TEXT NOT NULL,
  request INT NOT NULL DEFAULT 0,
  requested_ms BIGINT NOT NULL DEFAULT 0
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_nopad_bin;
CREATE TABLE IF NOT EXISTS leases (
  name VARCHAR(255) NOT NULL PRIMARY KEY,
  owner VARCHAR(255) NOT NULL,
  expires_ms BIGINT NOT NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_nopad_bin;
CREATE TABLE IF NOT EXISTS challenge_answers (
  name VARCHAR(255) NOT NULL PRIMARY KEY,
  answer BLOB NOT NULL,
  expires_ms BIGINT NOT NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_nopad_bin;
