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
    let producer = producer(config)?;
    let config = config.clone();
    std::thread::Builder::new()
        .name("tandem-events".into())
        .spawn(move || publish_until_closed(producer, &config, applied, after))
        .map_err(|e| KafkaError::Config(format!("spawning the event publisher: {e}")))
}

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

fn publish_until_closed(
    mut producer: FutureProducer,
    config: &KafkaConfig,
    applied: crossbeam_channel::Receiver<Arc<Applied>>,
    mut after: Seq,
) {
    const MAX_BATCH: usize = 1024;
    while let Ok(first) = applied.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match applied.try_recv() {
                Ok(a) => batch.push(a),
                Err(_) => break,
            }
        }
        let records: Vec<(Seq, Vec<u8>)> = batch
            .iter()
            .filter(|a| a.seq > after)
            .map(|a| {
                let record = EventRecord { seq: a.seq, timestamp: a.timestamp, events: a.events.clone() };
                (a.seq, serde_json::to_vec(&record).expect("events always encode"))
            })
            .collect();
        let Some(&(last, _)) = records.last() else { continue };
        let mut delay = Duration::from_millis(100);
        while let Err(e) = publish(&producer, &config.topic, &records) {
            tracing::warn!(error = %e, first = records[0].0 .0, last = last.0, "publishing events failed; retrying");
            std::thread::sleep(delay);
            delay = (delay * 2).min(Duration::from_secs(5));
            // The producer's sequence numbers are in doubt after a failure: a new one.
            if let Ok(p) = self::producer(config) {
                producer = p;
            }
        }
        after = last;
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
