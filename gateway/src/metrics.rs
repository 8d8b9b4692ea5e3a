//! `/metrics`: Prometheus text from the gateway's own registry.
//!
//! Owns the HTTP request counter and latency histogram (fed by [`track`]), and a collector that
//! reads the sequencer's atomics and the projector's position at scrape time, so the engine
//! threads never touch Prometheus.

use crate::Gateway;
use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::web::Data;
use actix_web::HttpResponse;
use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{
    Counter, Encoder, Gauge, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};
use std::sync::atomic::Ordering;
use std::time::Instant;
use tandem_matching::SequencerHandle;
use tandem_store::ProjectorHandle;

pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    latency: HistogramVec,
}

impl Metrics {
    pub fn new(sequencer: SequencerHandle, projector: ProjectorHandle) -> Metrics {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new("tandem_http_requests_total", "HTTP requests by route pattern, method and status"),
            &["route", "method", "status"],
        )
        .expect("static metric definition");
        let latency = HistogramVec::new(
            HistogramOpts::new("tandem_http_request_duration_seconds", "HTTP request latency by route pattern")
                .buckets(vec![0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5]),
            &["route"],
        )
        .expect("static metric definition");
        // Names are static and distinct, so registration cannot collide.
        for c in [
            Box::new(requests.clone()) as Box<dyn Collector>,
            Box::new(latency.clone()),
            Box::new(EngineCollector::new(sequencer, projector)),
        ] {
            if let Err(e) = registry.register(c) {
                tracing::error!(error = %e, "metric registration failed");
            }
        }
        Metrics { registry, requests, latency }
    }

    /// Adds a gauge read at scrape time from another part of the node (e.g. the custody prime
    /// pool), without the gateway depending on that part.
    pub fn register_gauge_fn(
        &self,
        name: &str,
        help: &str,
        read: impl Fn() -> i64 + Send + Sync + 'static,
    ) -> Result<(), prometheus::Error> {
        let desc = Desc::new(name.into(), help.into(), vec![], Default::default())?;
        self.registry.register(Box::new(GaugeFn { name: name.into(), help: help.into(), desc, read: Box::new(read) }))
    }

    pub fn observe(&self, route: &str, method: &str, status: u16, seconds: f64) {
        self.requests.with_label_values(&[route, method, &status.to_string()]).inc();
        self.latency.with_label_values(&[route]).observe(seconds);
    }

    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut buf) {
            tracing::error!(error = %e, "metrics encoding failed");
        }
        String::from_utf8(buf).unwrap_or_default()
    }
}

/// Middleware: counts and times every request under its route pattern (not its raw path, so
/// ids do not explode the label set).
pub async fn track(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let started = Instant::now();
    let gateway = req.app_data::<Data<Gateway>>().cloned();
    let method = req.method().as_str().to_owned();
    let result = next.call(req).await;
    if let Some(gw) = gateway {
        let (route, status) = match &result {
            Ok(res) => (res.request().match_pattern().unwrap_or_else(|| "unmatched".into()), res.status().as_u16()),
            Err(e) => ("unmatched".into(), e.as_response_error().status_code().as_u16()),
        };
        let route = if route.is_empty() { "unmatched".to_owned() } else { route };
        gw.metrics.observe(&route, &method, status, started.elapsed().as_secs_f64());
    }
    result
}

pub async fn scrape(gw: Data<Gateway>) -> HttpResponse {
    HttpResponse::Ok().content_type("text/plain; version=0.0.4; charset=utf-8").body(gw.metrics.render())
}

/// Reads the sequencer's counters at scrape time. Each scrape builds fresh metric values, so
/// concurrent scrapes never race on shared state.
struct EngineCollector {
    sequencer: SequencerHandle,
    projector: ProjectorHandle,
    descs: Vec<Desc>,
}

const COUNTERS: [(&str, &str); 7] = [
    ("tandem_engine_commands_applied_total", "Commands applied by the engine"),
    ("tandem_engine_commands_rejected_total", "Commands the engine rejected (changed nothing)"),
    ("tandem_engine_trades_total", "Trades executed"),
    ("tandem_journal_batches_total", "Journal group commits"),
    ("tandem_journal_commit_seconds_total", "Time spent in journal commits (fsync)"),
    ("tandem_snapshots_total", "Engine snapshots saved"),
    ("tandem_engine_orders_accepted_total", "Orders the engine accepted"),
];

const GAUGES: [(&str, &str); 5] = [
    ("tandem_journal_commit_seconds_max", "Slowest journal commit so far"),
    ("tandem_engine_last_seq", "Last command seq applied by the engine"),
    ("tandem_engine_open_orders", "Orders resting on the books"),
    ("tandem_projector_projected_seq", "Last command seq projected into the store"),
    ("tandem_projector_lag", "Commands applied but not yet projected"),
];

impl EngineCollector {
    fn new(sequencer: SequencerHandle, projector: ProjectorHandle) -> EngineCollector {
        let descs = COUNTERS
            .iter()
            .chain(GAUGES.iter())
            .filter_map(|(name, help)| Desc::new((*name).into(), (*help).into(), vec![], Default::default()).ok())
            .collect();
        EngineCollector { sequencer, projector, descs }
    }
}

fn counter(name: &str, help: &str, v: u64) -> Vec<MetricFamily> {
    match IntCounter::new(name, help) {
        Ok(c) => {
            c.inc_by(v);
            c.collect()
        }
        Err(_) => vec![],
    }
}

fn float_counter(name: &str, help: &str, v: f64) -> Vec<MetricFamily> {
    match Counter::new(name, help) {
        Ok(c) => {
            c.inc_by(v.max(0.0));
            c.collect()
        }
        Err(_) => vec![],
    }
}

fn gauge(name: &str, help: &str, v: i64) -> Vec<MetricFamily> {
    match IntGauge::new(name, help) {
        Ok(g) => {
            g.set(v);
            g.collect()
        }
        Err(_) => vec![],
    }
}

fn float_gauge(name: &str, help: &str, v: f64) -> Vec<MetricFamily> {
    match Gauge::new(name, help) {
        Ok(g) => {
            g.set(v);
            g.collect()
        }
        Err(_) => vec![],
    }
}

impl Collector for EngineCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let m = self.sequencer.metrics();
        let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        let last_seq = load(&m.last_seq);
        let projected = self.projector.projected_seq().0;
        let as_i64 = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        let mut out = Vec::new();
        out.extend(counter(COUNTERS[0].0, COUNTERS[0].1, load(&m.commands_applied)));
        out.extend(counter(COUNTERS[1].0, COUNTERS[1].1, load(&m.commands_rejected)));
        out.extend(counter(COUNTERS[2].0, COUNTERS[2].1, load(&m.trades)));
        out.extend(counter(COUNTERS[3].0, COUNTERS[3].1, load(&m.batches)));
        out.extend(float_counter(COUNTERS[4].0, COUNTERS[4].1, load(&m.commit_nanos_total) as f64 / 1e9));
        out.extend(counter(COUNTERS[5].0, COUNTERS[5].1, load(&m.snapshots)));
        out.extend(counter(COUNTERS[6].0, COUNTERS[6].1, load(&m.orders_accepted)));
        out.extend(float_gauge(GAUGES[0].0, GAUGES[0].1, load(&m.commit_nanos_max) as f64 / 1e9));
        out.extend(gauge(GAUGES[1].0, GAUGES[1].1, as_i64(last_seq)));
        out.extend(gauge(GAUGES[2].0, GAUGES[2].1, as_i64(load(&m.open_orders))));
        out.extend(gauge(GAUGES[3].0, GAUGES[3].1, as_i64(projected)));
        out.extend(gauge(GAUGES[4].0, GAUGES[4].1, as_i64(last_seq.saturating_sub(projected))));
        out
    }
}

/// A gauge whose value a closure reads at scrape time.
struct GaugeFn {
    name: String,
    help: String,
    desc: Desc,
    read: Box<dyn Fn() -> i64 + Send + Sync>,
}

impl Collector for GaugeFn {
    fn desc(&self) -> Vec<&Desc> {
        vec![&self.desc]
    }

    fn collect(&self) -> Vec<MetricFamily> {
        gauge(&self.name, &self.help, (self.read)())
    }
}
