-- PostgreSQL twin of migrations/sqlite/0003_cosigners.sql: the same tables and meaning; every integer
-- column is BIGINT (the store reads and binds them as i64), BLOB is BYTEA.

-- Co-signers: the independent third party of 2-of-3 vaults, known by the secp256k1 identity key
-- it signs its relay requests with (see tandem-store's `cosigners` and docs/API.md). Like
-- device_keys this is not a projection: it survives `tandem store rebuild` and must be backed
-- up with the store.

-- BIP-340 x-only public key, lowercase hex (64 characters).
CREATE TABLE cosigners (
    identity_pubkey TEXT PRIMARY KEY,
    label TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
