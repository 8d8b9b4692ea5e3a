-- PostgreSQL twin of migrations/sqlite/0007_signed_requests.sql: the same tables and meaning; every integer
-- column is BIGINT (the store reads and binds them as i64), BLOB is BYTEA.

-- Requests a wallet signed with its device key that create an obligation (placing an order,
-- asking for a withdrawal), kept byte for byte with their signature: anyone holding the wallet's
-- public key can check that its user asked for them. The wallet checks a settlement batch's fills
-- against them before it co-signs; the co-signer needs them to force-settle a late seller. Written
-- by the gateway once the engine took the command (`seq`), so not derived from the journal: kept
-- across `store rebuild`, and must be backed up with the store.
CREATE TABLE signed_requests (
    kind TEXT NOT NULL,                 -- 'order' | 'withdrawal'
    ref_id BIGINT NOT NULL,             -- the order id or withdrawal id the request became
    account_id BIGINT NOT NULL,
    seq BIGINT NOT NULL,                -- the engine sequence number of that command
    device_pubkey TEXT NOT NULL,        -- hex x-only key (BIP-340)
    timestamp_ms BIGINT NOT NULL,       -- X-Tandem-Timestamp
    method TEXT NOT NULL,
    path TEXT NOT NULL,                 -- path and query, as signed
    body BYTEA NOT NULL,                 -- as signed
    signature TEXT NOT NULL,            -- hex BIP-340 signature
    PRIMARY KEY (kind, ref_id)
);
CREATE INDEX signed_requests_by_account ON signed_requests (account_id, seq);

-- Holders whose wallet missed a batch's signing deadline: left out of batches, their debt fronted
-- by the pool, and force-settled by the provider and the co-signer once the deadline has passed.
-- Written by the settlement service; a row goes when the holder settles again.
CREATE TABLE settlement_late (
    holder BIGINT PRIMARY KEY,          -- engine AccountId
    batch BIGINT NOT NULL,              -- the batch it missed (the first, if several)
    since BIGINT NOT NULL               -- unix ms when it was found late
);

-- Each batch's legs (also in its plan), with the sequence number its window was cut at: what a
-- holder's last settled window was, for the evidence of the next one.
CREATE TABLE settlement_legs (
    batch BIGINT NOT NULL,
    holder BIGINT NOT NULL,             -- engine AccountId
    delta BIGINT NOT NULL,              -- sat, signed
    fee BIGINT NOT NULL,                -- sat
    cut_seq BIGINT NOT NULL,            -- the engine sequence number the window's targets were read at
    PRIMARY KEY (batch, holder)
);
CREATE INDEX settlement_legs_by_holder ON settlement_legs (holder, batch);
