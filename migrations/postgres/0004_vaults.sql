-- PostgreSQL twin of migrations/sqlite/0004_vaults.sql: the same tables and meaning; every integer
-- column is BIGINT (the store reads and binds them as i64), BLOB is BYTEA.

-- Vaults: a signer group (aux info done) owned by one account, and its deposit addresses (one
-- threshold key each). Written by the provider's vault service (src/provider) once its side of
-- a session is sealed in data/custody/secrets. Like device_keys these are not projections:
-- they survive `tandem store rebuild` and must be backed up with the store.

CREATE TABLE vaults (
    group_id TEXT PRIMARY KEY,          -- 32 hex characters
    account_id BIGINT NOT NULL,
    policy TEXT NOT NULL,               -- '2-of-2' | '2-of-3'
    wallet_identity TEXT NOT NULL,      -- the wallet's device key (x-only, hex)
    cosigner_identity TEXT,             -- 2-of-3 only
    created_at BIGINT NOT NULL
);
CREATE INDEX vaults_by_account ON vaults (account_id);

CREATE TABLE vault_addresses (
    address TEXT PRIMARY KEY,
    group_id TEXT NOT NULL REFERENCES vaults (group_id),
    key_index BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    UNIQUE (group_id, key_index)
);
