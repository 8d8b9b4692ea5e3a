//! The event stream: every applied command's events, in seq order, on a topic of their own
//! (`<journal topic>.events`, one partition), for consumers outside the exchange.
//!
//! The stream starts at seq 2: seq 1 is the journal's genesis (the assets and markets), which the
//! engine is built from rather than applying it, so it has no events.
//!
//! A record's key is its seq (8 bytes, big-endian) and its value JSON:
//! `{"seq": N, "timestamp": ms, "events": [...]}` (the engine's own event types). A publisher
//! resumes after the last seq the topic holds; seqs are the journal's, so a record published
//! twice (two replicas publishing, or a retry whose first try landed) carries the same seq and
//! content, and a consumer keeps the first per seq: delivered twice, effective once.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};
use tandem_matching::{Applied, Event, Seq, Timestamp};

use crate::config::{KafkaConfig, KafkaError};

/// One applied command's events as the stream carries them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventRecord {
    pub seq: Seq,
    pub timestamp: Timestamp,
    pub events: Vec<Event>,
}

impl EventRecord {
    pub fn decode(bytes: &[u8]) -> Result<EventRecord, serde_json::Error> {
        serde_json::from_slice(bytes)
    }
}

/// The event topic of a journal.
pub fn events_config(journal: &KafkaConfig) -> KafkaConfig {
    KafkaConfig { topic: format!("{}.events", journal.topic), ..journal.clone() }
}

/// The seq of the stream's last record (0: empty).
pub fn last_published(config: &KafkaConfig) -> Result<Seq, KafkaError> {
    let err = |reason: String| KafkaError::Assign { topic: config.topic.clone(), offset: 0, reason };
    let consumer: BaseConsumer = config
        .client()
        .set("group.id", "tandem-events-tail")
        .set("enable.auto.commit", "false")
        .create()
        .map_err(|e| KafkaError::Config(e.to_string()))?;
    let (_, high) = consumer.fetch_watermarks(&config.topic, 0, Duration::from_secs(10)).map_err(|e| err(e.to_string()))?;
    if high <= 0 {
        return Ok(Seq(0));
    }
    // Read from the watermark's last record to the end: a broker may report a watermark short
    // of the end (Tansu 0.6 reports its last batch's first offset + 1), never beyond it.
    let mut assignment = TopicPartitionList::new();
    assignment.add_partition_offset(&config.topic, 0, Offset::Offset(high - 1)).map_err(|e| err(e.to_string()))?;
    consumer.assign(&assignment).map_err(|e| err(e.to_string()))?;
    let mut last = None;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        match consumer.poll(Duration::from_millis(if last.is_some() { 300 } else { 1000 })) {
            Some(Ok(m)) => {
                let record = EventRecord::decode(m.payload().unwrap_or_default())
                    .map_err(|e| err(format!("offset {} is not an event record: {e}", m.offset())))?;
                last = Some(last.map_or(record.seq, |l: Seq| l.max(record.seq)));
            }
            Some(Err(e)) => return Err(err(e.to_string())),
            None => match last {
                Some(seq) => return Ok(seq),
                None if std::time::Instant::now() > deadline => {
                    return Err(err("the last record could not be read".into()))
                }
                None => {}
            },
        }
    }
}

/// Publishes what `applied` brings, skipping seqs up to `after` (already on the stream), until
/// the channel closes. A failed publish is retried until it lands: the stream never skips a seq.
pub fn spawn_publisher(
    config: &KafkaConfig,
    applied: crossbeam_channel::Receiver<Arc<Applied>>,
    after: Seq,
) -> Result<JoinHandle<()>, KafkaError> {
    spawn(config, applied, after, None)
}

/// Whose turn it is to publish, among processes that follow the same journal: the epoch of the
/// turn this process holds (a leadership lock elsewhere sets it), 0 while another's.
#[derive(Clone, Debug, Default)]
pub struct PublishTurn {
    pub epoch: Arc<AtomicU64>,
    /// Cleared when this publisher can no longer take a turn (it let records go that the
    /// stream may still lack); the leadership loop then stops trying.
    pub eligible: Arc<AtomicBool>,
}

impl PublishTurn {
    pub fn new() -> PublishTurn {
        PublishTurn { epoch: Arc::new(AtomicU64::new(0)), eligible: Arc::new(AtomicBool::new(true)) }
    }

    fn leading(&self) -> bool {
        self.epoch.load(Ordering::Acquire) != 0
    }
}

/// [`spawn_publisher`] for one of several processes of which one publishes at a time (`turn`).
/// Out of turn it keeps what the stream may still lack (what the publishing process has not
/// published yet, learnt from the topic every second); when its turn starts it reads where the
/// stream ends and publishes on from there. Before each batch it checks it still has the turn.
pub fn spawn_led_publisher(
    config: &KafkaConfig,
    applied: crossbeam_channel::Receiver<Arc<Applied>>,
    after: Seq,
    turn: PublishTurn,
) -> Result<JoinHandle<()>, KafkaError> {
    spawn(config, applied, after, Some(turn))
}

fn spawn(
    config: &KafkaConfig,
    applied: crossbeam_channel::Receiver<Arc<Applied>>,
    after: Seq,
    turn: Option<PublishTurn>,
) -> Result<JoinHandle<()>, KafkaError> {
    let producer = producer(config)?;
    let config = config.clone();
    std::thread::Builder::new()
        .name("tandem-events".into())
        .spawn(move || Publisher { producer, config, after, turn, waiting: VecDeque::new(), in_turn: false }.run(applied))
        .map_err(|e| KafkaError::Config(format!("spawning the event publisher: {e}")))
}

/// Most records a publisher out of turn keeps for the stream (about the publishing process's
/// lag); past it, it gives up being able to take a turn rather than publish a gap.
const MAX_WAITING: usize = 1 << 20;

fn producer(config: &KafkaConfig) -> Result<FutureProducer, KafkaError> {
    config
        .client()
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("message.timeout.ms", config.publish_timeout.as_millis().to_string())
        .set("linger.ms", "5")
        .create()
        .map_err(|e| KafkaError::Config(e.to_string()))
}

struct Publisher {
    producer: FutureProducer,
    config: KafkaConfig,
    /// The last seq known to be on the stream.
    after: Seq,
    turn: Option<PublishTurn>,
    /// Out of turn: applied records the stream may still lack, in seq order.
    waiting: VecDeque<Arc<Applied>>,
    /// Whether it held the turn at its last batch.
    in_turn: bool,
}

impl Publisher {
    fn run(mut self, applied: crossbeam_channel::Receiver<Arc<Applied>>) {
        const MAX_BATCH: usize = 1024;
        let mut learnt = std::time::Instant::now();
        loop {
            // A follower wakes without traffic too, to notice its turn.
            let first = match applied.recv_timeout(Duration::from_millis(200)) {
                Ok(a) => Some(a),
                Err(crossbeam_channel::RecvTimeoutError::Timeout) => None,
                Err(crossbeam_channel::RecvTimeoutError::Disconnected) => break,
            };
            let mut batch: Vec<Arc<Applied>> = first.into_iter().collect();
            while !batch.is_empty() && batch.len() < MAX_BATCH {
                match applied.try_recv() {
                    Ok(a) => batch.push(a),
                    Err(_) => break,
                }
            }
            let Some(turn) = self.turn.clone() else {
                self.publish_all(batch.iter());
                continue;
            };
            self.waiting.extend(batch);
            if !turn.leading() {
                self.in_turn = false;
                if learnt.elapsed() >= Duration::from_secs(1) {
                    learnt = std::time::Instant::now();
                    match last_published(&self.config) {
                        Ok(seq) => self.after = self.after.max(seq),
                        Err(e) => tracing::debug!(error = %e, "cannot read where the event stream ends"),
                    }
                }
                self.forget_published();
                if self.waiting.len() > MAX_WAITING && turn.eligible.swap(false, Ordering::AcqRel) {
                    tracing::error!(
                        kept = self.waiting.len(),
                        "the publishing process is too far behind: this one will not take a turn (restart it to)"
                    );
                }
                if !turn.eligible.load(Ordering::Acquire) {
                    self.waiting.clear();
                }
                continue;
            }
            if !self.in_turn {
                // Where the last turn's publisher stopped (retried: publishing past a gap is
                // what must never happen).
                loop {
                    match last_published(&self.config) {
                        Ok(seq) => {
                            self.after = self.after.max(seq);
                            break;
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "cannot read where the event stream ends; retrying");
                            std::thread::sleep(Duration::from_millis(500));
                        }
                    }
                }
                self.forget_published();
                tracing::info!(after = self.after.0, epoch = turn.epoch.load(Ordering::Acquire), "publishing events: this process's turn");
                self.in_turn = true;
            }
            while !self.waiting.is_empty() && turn.leading() {
                let n = self.waiting.len().min(MAX_BATCH);
                let chunk: Vec<Arc<Applied>> = self.waiting.drain(..n).collect();
                self.publish_all(chunk.iter());
            }
        }
    }

    fn forget_published(&mut self) {
        while self.waiting.front().is_some_and(|a| a.seq <= self.after) {
            self.waiting.pop_front();
        }
    }

    /// Publishes the records after `after`, retrying until they land.
    fn publish_all<'a>(&mut self, batch: impl Iterator<Item = &'a Arc<Applied>>) {
        let records: Vec<(Seq, Vec<u8>)> = batch
            .filter(|a| a.seq > self.after)
            .map(|a| {
                let record = EventRecord { seq: a.seq, timestamp: a.timestamp, events: a.events.clone() };
                (a.seq, serde_json::to_vec(&record).expect("events always encode"))
            })
            .collect();
        let Some(&(last, _)) = records.last() else { return };
        let mut delay = Duration::from_millis(100);
        while let Err(e) = publish(&self.producer, &self.config.topic, &records) {
            tracing::warn!(error = %e, first = records[0].0 .0, last = last.0, "publishing events failed; retrying");
            std::thread::sleep(delay);
            delay = (delay * 2).min(Duration::from_secs(5));
            // The producer's sequence numbers are in doubt after a failure: a new one.
            if let Ok(p) = producer(&self.config) {
                self.producer = p;
            }
        }
        self.after = last;
    }
}

fn publish(producer: &FutureProducer, topic: &str, records: &[(Seq, Vec<u8>)]) -> Result<(), String> {
    let mut deliveries = Vec::with_capacity(records.len());
    for (seq, value) in records {
        let key = seq.0.to_be_bytes();
        let delivery = producer
            .send_result(FutureRecord::to(topic).partition(0).key(&key[..]).payload(value))
            .map_err(|(e, _)| e.to_string())?;
        deliveries.push(delivery);
    }
    let mut failure = None;
    for delivery in deliveries {
        match futures::executor::block_on(delivery) {
            Ok(Ok(_)) => {}
            Ok(Err((e, _))) => failure = failure.or(Some(e.to_string())),
            Err(_) => failure = failure.or(Some("the producer was closed".to_string())),
        }
    }
    failure.map_or(Ok(()), Err)
}
