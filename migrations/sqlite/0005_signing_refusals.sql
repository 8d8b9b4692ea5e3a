-- Signing refusals: every time a signer (the provider, or a wallet or co-signer that aborted a
-- session with the provider) declined to sign, with its reason, for operators
-- (`GET /v1/operator/refusals`). Like vaults, not a projection: kept across `store rebuild`.

CREATE TABLE signing_refusals (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at BIGINT NOT NULL,                 -- unix milliseconds
    signer TEXT NOT NULL,               -- 'wallet' | 'provider' | 'cosigner'
    code TEXT NOT NULL,                 -- the refusal code (custody::policy::RefusalCode)
    detail TEXT NOT NULL,
    purpose TEXT NOT NULL,              -- the spend's purpose, JSON
    execution_id TEXT NOT NULL,
    group_id TEXT,                      -- the vault, when the intent named one
    account_id BIGINT                   -- the vault's account, when known
);
CREATE INDEX signing_refusals_by_account ON signing_refusals (account_id);

-- The spends the provider signed, one row per input: the provider never signs a second spend
-- for the same obligation unless it conflicts with the first (shares an input), so at most one
-- of them can confirm and nothing is paid twice.
CREATE TABLE provider_signatures (
    purpose TEXT NOT NULL,              -- e.g. 'withdrawal:7', 'batch:3'
    txid TEXT NOT NULL,                 -- the unsigned transaction's txid
    outpoint TEXT NOT NULL,             -- the input spent, txid:vout
    execution_id TEXT NOT NULL,
    at BIGINT NOT NULL,
    PRIMARY KEY (purpose, txid, outpoint)
);
