//! Market-data snapshots in Redis, for fast reads by whatever is not a replica of the exchange:
//! dashboards, the operator console, a partner's market-data fan-out. The process whose turn it
//! is to publish the event stream (`tandem matching`; see [`crate::leadership::PublishLeader`])
//! writes each market's book, top [`BookSnapshots::depth`] levels, to `<prefix>book:<SYMBOL>`
//! whenever its `book_seq` moved, at most every [`BookSnapshots::interval`], and publishes the
//! same JSON on the channel of the same name:
//!
//! ```json
//! {"market": "BTC-USD", "book_seq": 812, "bids": [["59999.50", "0.25"]], "asks": [...], "updated_at": 1718000000000}
//! ```
//!
//! A reader gets a book at most one interval old with one `GET`, or every change with
//! `SUBSCRIBE`, without touching an engine. The gateways keep answering from their own engines
//! (`GET /v1/markets/{symbol}/book`, WebSocket): fresher, and they show a caller its own orders
//! at once. `book_seq` is the engine's own (see ARCHITECTURE, "book_seq"), so a snapshot and a
//! gateway's WebSocket diffs line up.

use std::collections::HashMap;
use std::time::Duration;

use redis::AsyncCommands as _;
use serde_json::json;
use tandem_gateway::dto::Fmt;
use tandem_gateway::redis_link::RedisConnection;
use tandem_matching::{EngineConfig, MarketId, SequencerHandle};
use tokio::task::JoinHandle;

pub struct BookSnapshots {
    pub sequencer: SequencerHandle,
    pub engine_config: EngineConfig,
    pub redis: RedisConnection,
    /// Prefix of the exchange's Redis keys.
    pub prefix: String,
    /// Levels per side.
    pub depth: usize,
    pub interval: Duration,
    /// Write only while this process's turn (`None`: always).
    pub turn: Option<tandem_kafka::events::PublishTurn>,
}

impl BookSnapshots {
    pub const DEFAULT_DEPTH: usize = 50;
    pub const DEFAULT_INTERVAL: Duration = Duration::from_millis(100);

    /// The key (and channel) of `symbol`'s book.
    pub fn key(prefix: &str, symbol: &str) -> String {
        format!("{prefix}book:{symbol}")
    }

    pub fn spawn(self) -> JoinHandle<()> {
        tokio::spawn(async move { self.run().await })
    }

    async fn run(mut self) {
        let mut written: HashMap<MarketId, u64> = HashMap::new();
        let mut tick = tokio::time::interval(self.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if self.turn.as_ref().is_some_and(|t| t.epoch.load(std::sync::atomic::Ordering::Acquire) == 0) {
                // Another process writes; after our next turn starts, write everything afresh.
                written.clear();
                continue;
            }
            for index in 0..self.engine_config.markets.len() {
                let market = MarketId(index as u16);
                if let Err(e) = self.write(market, &mut written).await {
                    tracing::debug!(error = %e, market = index, "market-data snapshot not written");
                }
            }
        }
    }

    async fn write(&mut self, market: MarketId, written: &mut HashMap<MarketId, u64>) -> anyhow::Result<()> {
        let Some((book_seq, depth)) = self.sequencer.book(market, self.depth).await? else { return Ok(()) };
        if written.get(&market) == Some(&book_seq) {
            return Ok(());
        }
        let f = Fmt(&self.engine_config);
        let side = |levels: &[tandem_matching::DepthLevel]| -> Vec<[String; 2]> {
            levels.iter().map(|l| [f.price(market, l.price), f.qty(market, l.quantity)]).collect()
        };
        let symbol = f.market(market);
        let snapshot = json!({
            "market": symbol,
            "book_seq": book_seq,
            "bids": side(&depth.bids),
            "asks": side(&depth.asks),
            "updated_at": crate::node::now_millis(),
        })
        .to_string();
        let key = Self::key(&self.prefix, &symbol);
        let () = self.redis.set(&key, &snapshot).await?;
        let _: i64 = self.redis.publish(&key, &snapshot).await?;
        written.insert(market, book_seq);
        Ok(())
    }
}
