//! Request budgets. Every caller may spend so much request weight per clock minute: each API key,
//! wallet device key or co-signer identity (counted once its signature checks, so nobody can
//! spend someone else's budget), and each peer IP (counted for every request). A request over a
//! budget is answered `429 rate_limited` with `Retry-After`; every answer carries what is left of
//! the tighter budget (`X-RateLimit-Limit`, `X-RateLimit-Remaining`, `X-RateLimit-Reset`).
//!
//! Where the counts live is a [`LimitStore`]: in this process ([`MemoryLimits`], the embedded
//! default) or in Redis ([`RedisLimits`]), shared by every gateway process so a caller's budget
//! is the same whichever one it reaches. When Redis cannot be reached the limiter counts in this
//! process instead (each gateway then grants the whole budget on its own) and says so in the
//! log: a degraded limit, never a wrong answer to the request itself.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::future::BoxFuture;

/// The budgets, in request weight per minute; 0: unlimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LimitConfig {
    pub per_caller_per_minute: u32,
    pub per_ip_per_minute: u32,
}

impl Default for LimitConfig {
    fn default() -> Self {
        LimitConfig { per_caller_per_minute: 60_000, per_ip_per_minute: 120_000 }
    }
}

impl LimitConfig {
    pub const UNLIMITED: LimitConfig = LimitConfig { per_caller_per_minute: 0, per_ip_per_minute: 0 };
}

/// What one budget looks like after a request spent from it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Budget {
    pub limit: u32,
    pub used: u32,
    /// Milliseconds until the window resets.
    pub reset_in_ms: u64,
}

impl Budget {
    pub fn exceeded(&self) -> bool {
        self.used > self.limit
    }

    pub fn remaining(&self) -> u32 {
        self.limit.saturating_sub(self.used)
    }
}

/// Counters of request weight per key and window.
pub trait LimitStore: Send + Sync {
    /// Adds `cost` to `key`'s count in window `window` (a minute number) and answers the count
    /// after; a window's count is forgotten after `ttl`.
    fn spend<'a>(&'a self, key: &'a str, window: u64, cost: u32, ttl: Duration) -> BoxFuture<'a, Result<u64, String>>;
}

/// Counts in this process.
#[derive(Default)]
pub struct MemoryLimits {
    counts: Mutex<WindowCounts>,
}

/// The counts of the newest window seen; an earlier window's are over and dropped whole.
#[derive(Default)]
struct WindowCounts {
    window: u64,
    by_key: HashMap<String, u64>,
}

impl MemoryLimits {
    fn add(&self, key: &str, window: u64, cost: u32) -> u64 {
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        // A request stamped just before the turn of a minute (window < counts.window) is
        // counted in the newer window rather than resurrecting the old one.
        if window > counts.window {
            *counts = WindowCounts { window, by_key: HashMap::new() };
        }
        let n = match counts.by_key.get_mut(key) {
            Some(n) => n,
            None => counts.by_key.entry(key.to_owned()).or_insert(0),
        };
        *n += u64::from(cost);
        *n
    }
}

impl LimitStore for MemoryLimits {
    fn spend<'a>(&'a self, key: &'a str, window: u64, cost: u32, _ttl: Duration) -> BoxFuture<'a, Result<u64, String>> {
        let used = self.add(key, window, cost);
        Box::pin(async move { Ok(used) })
    }
}

/// Counts in Redis: `INCRBY` and `PEXPIRE` in one transaction per request.
pub struct RedisLimits {
    connection: crate::redis_link::RedisConnection,
    /// Prefix of every key (several exchanges, or tests, can share one Redis).
    prefix: String,
}

impl RedisLimits {
    pub fn new(connection: crate::redis_link::RedisConnection, prefix: &str) -> RedisLimits {
        RedisLimits { connection, prefix: prefix.to_owned() }
    }
}

impl LimitStore for RedisLimits {
    fn spend<'a>(&'a self, key: &'a str, window: u64, cost: u32, ttl: Duration) -> BoxFuture<'a, Result<u64, String>> {
        Box::pin(async move {
            let mut connection = self.connection.clone();
            let key = format!("{}limit:{key}:{window}", self.prefix);
            let (used,): (u64,) = redis::pipe()
                .atomic()
                .incr(&key, cost)
                .pexpire(&key, ttl.as_millis() as i64)
                .ignore()
                .query_async(&mut connection)
                .await
                .map_err(|e| e.to_string())?;
            Ok(used)
        })
    }
}

/// The gateway's budgets: a store, and this process's counts to fall back on.
pub struct Limiter {
    config: LimitConfig,
    store: Arc<dyn LimitStore>,
    fallback: MemoryLimits,
    /// When the store last failed (to log it once a minute, not on every request).
    last_failure: Mutex<Option<u64>>,
    /// Until when (ms) the store is not asked after a failure, so a Redis that is down costs
    /// requests no connect timeout each.
    store_down_until: AtomicU64,
}

/// How long a failed store is left alone before it is tried again.
const STORE_RETRY_MS: u64 = 1_000;

/// What is counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Subject<'a> {
    /// An authenticated caller: its API key, device key or co-signer identity.
    Caller(&'a str),
    Ip(&'a str),
}

const WINDOW_MS: u64 = 60_000;

impl Limiter {
    pub fn new(config: LimitConfig, store: Arc<dyn LimitStore>) -> Limiter {
        Limiter {
            config,
            store,
            fallback: MemoryLimits::default(),
            last_failure: Mutex::new(None),
            store_down_until: AtomicU64::new(0),
        }
    }

    /// In this process only.
    pub fn in_memory(config: LimitConfig) -> Limiter {
        Limiter::new(config, Arc::new(MemoryLimits::default()))
    }

    /// Spends `cost` from `subject`'s budget now; `None` when that budget is unlimited.
    pub async fn spend(&self, subject: Subject<'_>, cost: u32) -> Option<Budget> {
        self.spend_at(subject, cost, now_ms()).await
    }

    async fn spend_at(&self, subject: Subject<'_>, cost: u32, now_ms: u64) -> Option<Budget> {
        let (limit, key) = match subject {
            Subject::Caller(k) => (self.config.per_caller_per_minute, format!("caller:{k}")),
            Subject::Ip(ip) => (self.config.per_ip_per_minute, format!("ip:{ip}")),
        };
        if limit == 0 {
            return None;
        }
        let window = now_ms / WINDOW_MS;
        let ttl = Duration::from_millis(2 * WINDOW_MS);
        let from_store = if now_ms < self.store_down_until.load(Ordering::Relaxed) {
            None
        } else {
            match self.store.spend(&key, window, cost, ttl).await {
                Ok(used) => Some(used),
                Err(e) => {
                    self.store_down_until.store(now_ms + STORE_RETRY_MS, Ordering::Relaxed);
                    self.log_failure(&e, now_ms);
                    None
                }
            }
        };
        let used = match from_store {
            Some(used) => used,
            None => self.fallback.add(&key, window, cost),
        };
        let used = u32::try_from(used).unwrap_or(u32::MAX);
        Some(Budget { limit, used, reset_in_ms: WINDOW_MS - now_ms % WINDOW_MS })
    }

    fn log_failure(&self, error: &str, now_ms: u64) {
        let mut last = self.last_failure.lock().unwrap_or_else(|p| p.into_inner());
        if last.is_none_or(|t| now_ms.saturating_sub(t) >= WINDOW_MS) {
            *last = Some(now_ms);
            tracing::warn!(%error, "rate limits cannot reach their store; counting in this process until it answers");
        }
    }
}

/// `X-RateLimit-Limit`, `-Remaining` and `-Reset` (seconds) of `budget`.
pub fn set_headers(headers: &mut actix_web::http::header::HeaderMap, budget: &Budget) {
    use actix_web::http::header::{HeaderName, HeaderValue};
    for (name, value) in [
        ("x-ratelimit-limit", budget.limit.to_string()),
        ("x-ratelimit-remaining", budget.remaining().to_string()),
        ("x-ratelimit-reset", budget.reset_in_ms.div_ceil(1000).to_string()),
    ] {
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(HeaderName::from_static(name), value);
        }
    }
}

/// The per-IP budget of every request, and the budget headers of every answer (the tighter of
/// the IP's and, once authenticated, the caller's). [`crate::serve`] wraps every route in it;
/// an app embedding [`crate::configure`] wraps itself: `App::new().wrap(from_fn(middleware))`.
pub async fn middleware(
    req: actix_web::dev::ServiceRequest,
    next: actix_web::middleware::Next<impl actix_web::body::MessageBody + 'static>,
) -> Result<actix_web::dev::ServiceResponse<actix_web::body::EitherBody<impl actix_web::body::MessageBody>>, actix_web::Error> {
    use actix_web::HttpMessage as _;
    let gateway = req.app_data::<actix_web::web::Data<crate::Gateway>>().cloned();
    // Probes (load balancers, monitoring) are not budgeted: refusing them would take a
    // healthy process out of service.
    let probe = matches!(req.path(), "/health" | "/ready" | "/metrics" | "/v1/health");
    let ip = req.peer_addr().map(|a| a.ip().to_string()).filter(|_| !probe);
    // A Binance-compatible request costs Binance's weight, and is answered in Binance's terms.
    let binance = crate::binance::weights::is_binance(req.path());
    let cost = if binance { crate::binance::weights::weight(req.method(), req.path(), req.query_string()) } else { 1 };
    let ip_budget = match (&gateway, &ip) {
        (Some(gw), Some(ip)) => gw.limiter.spend(Subject::Ip(ip), cost).await,
        _ => None,
    };
    if let Some(b) = ip_budget.filter(|b| b.exceeded()) {
        let response = match binance {
            true => crate::binance::weights::too_much_weight(&b),
            false => actix_web::ResponseError::error_response(&crate::error::ApiError::rate_limited(&b)),
        };
        let mut response = req.into_response(response).map_into_right_body();
        set_headers(response.headers_mut(), &b);
        return Ok(response);
    }
    let mut response = next.call(req).await?.map_into_left_body();
    let caller_budget = response.request().extensions().get::<Budget>().copied();
    let tighter = [ip_budget, caller_budget].into_iter().flatten().min_by_key(|b| b.remaining());
    if let Some(b) = tighter {
        set_headers(response.headers_mut(), &b);
    }
    if let (true, Some(b)) = (binance, ip_budget) {
        crate::binance::weights::set_used_weight(response.headers_mut(), &b);
    }
    Ok(response)
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_budget_is_spent_per_subject_and_window() {
        let limiter = Limiter::in_memory(LimitConfig { per_caller_per_minute: 3, per_ip_per_minute: 0 });
        let t = 1_700_000_000_000 - 1_700_000_000_000 % WINDOW_MS;
        for used in 1..=3 {
            let b = limiter.spend_at(Subject::Caller("k1"), 1, t + 5).await.unwrap();
            assert_eq!((b.used, b.remaining(), b.exceeded()), (used, 3 - used, false));
        }
        let over = limiter.spend_at(Subject::Caller("k1"), 1, t + 10).await.unwrap();
        assert!(over.exceeded());
        assert_eq!(over.reset_in_ms, WINDOW_MS - 10);
        // Another caller has its own budget; the next minute starts afresh.
        assert!(!limiter.spend_at(Subject::Caller("k2"), 1, t + 10).await.unwrap().exceeded());
        assert_eq!(limiter.spend_at(Subject::Caller("k1"), 1, t + WINDOW_MS).await.unwrap().used, 1);
        // Unlimited budgets are not counted.
        assert_eq!(limiter.spend_at(Subject::Ip("127.0.0.1"), 1, t).await, None);
    }

    /// A store that is down.
    struct Down;

    impl LimitStore for Down {
        fn spend<'a>(&'a self, _: &'a str, _: u64, _: u32, _: Duration) -> BoxFuture<'a, Result<u64, String>> {
            Box::pin(async { Err("connection refused".to_owned()) })
        }
    }

    #[tokio::test]
    async fn without_its_store_the_limiter_counts_in_this_process() {
        let limiter = Limiter::new(LimitConfig { per_caller_per_minute: 2, per_ip_per_minute: 0 }, Arc::new(Down));
        let t = 1_700_000_000_000;
        assert!(!limiter.spend_at(Subject::Caller("k"), 1, t).await.unwrap().exceeded());
        assert!(!limiter.spend_at(Subject::Caller("k"), 1, t).await.unwrap().exceeded());
        assert!(limiter.spend_at(Subject::Caller("k"), 1, t).await.unwrap().exceeded(), "still limited");
    }

    fn redis_url() -> String {
        std::env::var("TANDEM_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
    }

    fn unique_prefix() -> String {
        format!("tandem-test:{}:{}:", std::process::id(), now_ms())
    }

    #[tokio::test]
    async fn gateways_sharing_redis_share_each_callers_budget() {
        let prefix = unique_prefix();
        let config = LimitConfig { per_caller_per_minute: 5, per_ip_per_minute: 0 };
        let one = Limiter::new(config, Arc::new(RedisLimits::new(crate::redis_link::connect(&redis_url()).await.unwrap(), &prefix)));
        let two = Limiter::new(config, Arc::new(RedisLimits::new(crate::redis_link::connect(&redis_url()).await.unwrap(), &prefix)));
        let t = now_ms();
        for _ in 0..3 {
            assert!(!one.spend_at(Subject::Caller("key"), 1, t).await.unwrap().exceeded());
        }
        assert_eq!(two.spend_at(Subject::Caller("key"), 1, t).await.unwrap().used, 4);
        assert_eq!(two.spend_at(Subject::Caller("key"), 1, t).await.unwrap().remaining(), 0);
        assert!(one.spend_at(Subject::Caller("key"), 1, t).await.unwrap().exceeded(), "the sixth request of the minute");
        // Heavier requests cost more of it; other callers are untouched.
        assert_eq!(two.spend_at(Subject::Caller("other"), 4, t).await.unwrap().used, 4);
    }

    /// A redis-server of the test's own, on a free port, to stop and start again.
    struct OwnRedis {
        port: u16,
        process: Option<std::process::Child>,
    }

    impl OwnRedis {
        async fn start(port: u16) -> OwnRedis {
            let process = std::process::Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
                .stdout(std::process::Stdio::null())
                .spawn()
                .expect("redis-server (Debian's redis-server package) on PATH");
            let redis = OwnRedis { port, process: Some(process) };
            for _ in 0..100 {
                if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
                    return redis;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            panic!("redis-server did not listen on {port}");
        }

        fn stop(&mut self) {
            if let Some(mut p) = self.process.take() {
                let _ = p.kill();
                let _ = p.wait();
            }
        }
    }

    impl Drop for OwnRedis {
        fn drop(&mut self) {
            self.stop();
        }
    }

    #[tokio::test]
    async fn when_redis_goes_away_the_limit_holds_in_process_and_redis_takes_over_again() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut redis = OwnRedis::start(port).await;
        let url = format!("redis://127.0.0.1:{}", redis.port);
        let limiter = Limiter::new(
            LimitConfig { per_caller_per_minute: 3, per_ip_per_minute: 0 },
            Arc::new(RedisLimits::new(crate::redis_link::connect(&url).await.unwrap(), "t:")),
        );
        let t = now_ms();
        assert_eq!(limiter.spend_at(Subject::Caller("k"), 1, t).await.unwrap().used, 1);

        redis.stop();
        let started = std::time::Instant::now();
        for used in 1..=3 {
            assert_eq!(limiter.spend_at(Subject::Caller("k"), 1, t).await.unwrap().used, used);
        }
        assert!(limiter.spend_at(Subject::Caller("k"), 1, t).await.unwrap().exceeded(), "still limited without Redis");
        assert!(started.elapsed() < Duration::from_secs(3), "a Redis that is down is not waited for on every request");

        // Back, and asked again once the retry pause is over: counts are Redis's again.
        let _redis = OwnRedis::start(port).await;
        let mut direct = redis::Client::open(url.as_str()).unwrap().get_multiplexed_async_connection().await.unwrap();
        let mut used = 0;
        for attempt in 1..=20 {
            // Each attempt after the pause a failed one would start.
            let at = t + attempt * (STORE_RETRY_MS + 1);
            used = limiter.spend_at(Subject::Caller("k"), 1, at).await.unwrap().used;
            let stored: Option<u64> =
                redis::cmd("GET").arg(format!("t:limit:caller:k:{}", at / WINDOW_MS)).query_async(&mut direct).await.unwrap();
            if stored == Some(u64::from(used)) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("the limiter did not return to Redis (last count {used})");
    }
}
