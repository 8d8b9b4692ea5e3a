-- PostgreSQL twin of migrations/sqlite/0006_settlement_batches.sql: the same tables and meaning; every integer
-- column is BIGINT (the store reads and binds them as i64), BLOB is BYTEA.

-- Settlement batches: the settlement service's own durable state machine (plan, book, sign,
-- broadcast, confirm, or cancel), so a restart resumes every unfinished batch where it stopped.
-- Written by the settlement service only. Like vaults, not a projection: kept across
-- `store rebuild`, and must be backed up with the store.

CREATE TABLE settlement_batches (
    id BIGINT PRIMARY KEY,             -- the batch id (engine BatchId), chosen by the service, increasing
    status TEXT NOT NULL,               -- 'planned' | 'booked' | 'signed' | 'broadcast' | 'confirmed' | 'cancelled'
    created_at BIGINT NOT NULL,         -- unix ms
    updated_at BIGINT NOT NULL,
    asset BIGINT NOT NULL,             -- engine AssetId
    fee_rate BIGINT NOT NULL,           -- sat per kvB
    vbytes BIGINT NOT NULL,
    fee BIGINT NOT NULL,                -- sat, the planned fee (bumps add to it, see versions)
    plan TEXT NOT NULL,                 -- JSON written by the service (inputs, outputs, legs, deferred)
    psbt TEXT NOT NULL,                 -- base64 unsigned PSBT of version 0
    bumps BIGINT NOT NULL DEFAULT 0,   -- the current version number (0 = as planned)
    confirmations BIGINT NOT NULL DEFAULT 0,
    confirmed_height BIGINT,
    confirmed_version BIGINT,
    last_error TEXT
);
CREATE INDEX settlement_batches_by_status ON settlement_batches (status);

-- Each transaction version of a batch (0 = as planned, k = after k RBF bumps), once fully signed.
CREATE TABLE settlement_batch_versions (
    batch BIGINT NOT NULL,
    version BIGINT NOT NULL,
    txid TEXT NOT NULL,
    tx_hex TEXT NOT NULL,               -- the signed transaction
    fee BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    broadcast_at BIGINT,                -- last time it was sent to the chain
    PRIMARY KEY (batch, version)
);
-- The deposit service asks of every transaction paying a vault whether it is a batch's.
CREATE INDEX settlement_batch_versions_by_txid ON settlement_batch_versions (txid);

-- Signatures collected so far, per input of a version's unsigned transaction, so a restart does
-- not sign an input twice.
CREATE TABLE settlement_batch_signatures (
    batch BIGINT NOT NULL,
    version BIGINT NOT NULL,
    input BIGINT NOT NULL,
    witness TEXT NOT NULL,              -- hex of the consensus-encoded witness
    PRIMARY KEY (batch, version, input)
);
