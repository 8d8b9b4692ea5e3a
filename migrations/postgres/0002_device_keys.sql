-- PostgreSQL twin of migrations/sqlite/0002_device_keys.sql: the same tables and meaning; every integer
-- column is BIGINT (the store reads and binds them as i64), BLOB is BYTEA.

-- Wallet device keys and their single-use enrolment codes (see tandem-store's `devices`).
-- Like api_keys these are not projections: they are not in the journal, survive
-- `tandem store rebuild`, and must be backed up with the store.

-- A wallet's signing key: BIP-340 x-only public key, lowercase hex (64 characters).
CREATE TABLE device_keys (
    device_pubkey TEXT PRIMARY KEY,
    account_id BIGINT NOT NULL,
    label TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX device_keys_by_account ON device_keys (account_id);

-- Codes an operator hands out to let one wallet enrol. Only a SHA-256 of the code is kept.
-- used_at is set when a wallet consumes the code; account_id once its account is open.
CREATE TABLE enrolment_codes (
    code_hash TEXT PRIMARY KEY,
    label TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    used_at BIGINT,
    account_id BIGINT
);
