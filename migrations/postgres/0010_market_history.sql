-- Binance-style market history (gateway/src/binance): aggregate trades, candles and the 24-hour
-- ticker read trades by market and time, and user data streams need listen keys.
--
-- An aggregate trade is the run of trades one taker order made at one price in one command; its
-- id is the run's first trade id, written by the projection. Rows projected before this
-- migration get theirs from the same rule.
ALTER TABLE trades ADD COLUMN agg_trade_id BIGINT NOT NULL DEFAULT 0;
CREATE INDEX trades_by_seq_once ON trades (seq);
UPDATE trades SET agg_trade_id = (
    SELECT MIN(run.trade_id) FROM trades AS run
    WHERE run.seq = trades.seq AND run.taker_order = trades.taker_order AND run.price = trades.price
);
DROP INDEX trades_by_seq_once;
CREATE INDEX trades_by_market_agg ON trades (market_id, agg_trade_id);
CREATE INDEX trades_by_market_time ON trades (market_id, ts);

-- A listen key names one account's user data stream (Binance's `userDataStream`): valid until
-- `expires_at` (ms), kept alive by the client; one per account. Shared by every gateway on the
-- store.
CREATE TABLE listen_keys (
    listen_key TEXT PRIMARY KEY,
    account_id BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE UNIQUE INDEX listen_keys_by_account ON listen_keys (account_id);
