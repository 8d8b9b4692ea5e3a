//! The gateway's link to Redis, where the gateways of one exchange keep what they share (request
//! budgets, idempotency records): one connection per process, which reconnects by itself, with
//! short timeouts so a Redis that is away costs a request milliseconds, not seconds.

use std::time::Duration;

pub use redis::aio::ConnectionManager as RedisConnection;

/// Connects to `url` (`redis://host:port[/db]`).
pub async fn connect(url: &str) -> Result<RedisConnection, String> {
    let client = redis::Client::open(url).map_err(|e| format!("redis url {url}: {e}"))?;
    let config = redis::aio::ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(1)))
        .set_response_timeout(Some(Duration::from_millis(500)))
        .set_number_of_retries(1);
    RedisConnection::new_with_config(client, config).await.map_err(|e| format!("connecting to redis at {url}: {e}"))
}
