-- PostgreSQL twin of migrations/sqlite/0001_projections.sql: the same tables and meaning; every integer
-- column is BIGINT (the store reads and binds them as i64), BLOB is BYTEA.

-- Query projections of the matching engine's events (see the tandem-store crate).
-- Everything here except api_keys and meta is derived from the journal and can be rebuilt.
--
-- Amounts, prices and ids are integers in minimal units (< 2^62 by engine rules); timestamps
-- are Unix milliseconds.
-- No foreign keys on projection tables: a projection must never get stuck on a missing parent
-- row, and api keys may be created before the projector has seen the account.

-- Single row: the last seq whose events are fully projected.
CREATE TABLE projection_cursor (
    id BIGINT PRIMARY KEY CHECK (id = 1),
    seq BIGINT NOT NULL
);
INSERT INTO projection_cursor (id, seq) VALUES (1, 0);

CREATE TABLE accounts (
    account_id BIGINT PRIMARY KEY,
    kind TEXT NOT NULL,
    created_seq BIGINT NOT NULL
);
-- The fee account and the settlement pool exist from genesis without an AccountOpened event.
INSERT INTO accounts (account_id, kind, created_seq) VALUES (1, 'fee', 0), (2, 'settlement_pool', 0);

CREATE TABLE orders (
    order_id BIGINT PRIMARY KEY,
    account_id BIGINT NOT NULL,
    market_id BIGINT NOT NULL,
    side TEXT NOT NULL,
    order_type TEXT NOT NULL,
    price BIGINT NOT NULL,
    quantity BIGINT NOT NULL,
    filled BIGINT NOT NULL,
    quote_filled BIGINT NOT NULL,
    status TEXT NOT NULL,
    time_in_force TEXT NOT NULL,
    post_only BIGINT NOT NULL,          -- 0 or 1
    client_order_id TEXT,
    created_seq BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_seq BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
-- An account's orders, newest first, paged by id.
CREATE INDEX orders_by_account ON orders (account_id, order_id);
-- Open orders only: market makers keep few open and very many closed orders.
CREATE INDEX orders_open_by_account ON orders (account_id, order_id)
    WHERE status IN ('new', 'partially_filled');
CREATE INDEX orders_by_client_id ON orders (account_id, client_order_id)
    WHERE client_order_id IS NOT NULL;

CREATE TABLE trades (
    trade_id BIGINT PRIMARY KEY,
    market_id BIGINT NOT NULL,
    price BIGINT NOT NULL,
    quantity BIGINT NOT NULL,
    notional BIGINT NOT NULL,
    maker_order BIGINT NOT NULL,
    maker_account BIGINT NOT NULL,
    taker_order BIGINT NOT NULL,
    taker_account BIGINT NOT NULL,
    taker_side TEXT NOT NULL,
    maker_fee BIGINT NOT NULL,
    taker_fee BIGINT NOT NULL,
    seq BIGINT NOT NULL,
    ts BIGINT NOT NULL
);
CREATE INDEX trades_by_market ON trades (market_id, trade_id);
CREATE INDEX trades_by_maker ON trades (maker_account, trade_id);
CREATE INDEX trades_by_taker ON trades (taker_account, trade_id);

CREATE TABLE balances (
    account_id BIGINT NOT NULL,
    asset_id BIGINT NOT NULL,
    available BIGINT NOT NULL,
    locked BIGINT NOT NULL,
    seq BIGINT NOT NULL,
    PRIMARY KEY (account_id, asset_id)
);

-- One row per BalanceChanged event; the key doubles as the "account's entries by seq" index.
CREATE TABLE ledger_entries (
    account_id BIGINT NOT NULL,
    seq BIGINT NOT NULL,
    asset_id BIGINT NOT NULL,
    ts BIGINT NOT NULL,
    available_delta BIGINT NOT NULL,
    locked_delta BIGINT NOT NULL,
    available BIGINT NOT NULL,
    locked BIGINT NOT NULL,
    cause TEXT NOT NULL,
    PRIMARY KEY (account_id, seq, asset_id)
);

-- At most one deposit per command, so its seq identifies it.
CREATE TABLE deposits (
    seq BIGINT PRIMARY KEY,
    account_id BIGINT NOT NULL,
    asset_id BIGINT NOT NULL,
    amount BIGINT NOT NULL,
    reference TEXT NOT NULL,
    ts BIGINT NOT NULL
);
CREATE INDEX deposits_by_account ON deposits (account_id, seq);

CREATE TABLE withdrawals (
    withdrawal_id BIGINT PRIMARY KEY,
    account_id BIGINT NOT NULL,
    asset_id BIGINT NOT NULL,
    amount BIGINT NOT NULL,
    destination TEXT NOT NULL,
    status TEXT NOT NULL,
    requested_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX withdrawals_by_account ON withdrawals (account_id, withdrawal_id);

-- Not projections: kept across a rebuild.
CREATE TABLE api_keys (
    api_key TEXT PRIMARY KEY,
    secret TEXT NOT NULL,
    account_id BIGINT NOT NULL,
    label TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX api_keys_by_account ON api_keys (account_id);

CREATE TABLE meta (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
