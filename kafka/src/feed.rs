//! The reading end of the journal: the topic's one partition from a given offset, in order.
//!
//! The journal is written without transactions or compaction, so its offsets are contiguous;
//! the sequencer's reader checks that and seeks back over a gap ([`SharedFeed::seek`]).

use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use tandem_matching::{SharedFeed, SharedRecord};

use crate::config::{KafkaConfig, KafkaError};

pub struct KafkaFeed {
    consumer: BaseConsumer,
    topic: String,
    /// The offset of the next record `poll` hands over.
    next: u64,
}

impl KafkaFeed {
    /// Reads from `offset` on (0: the journal's start).
    pub fn connect(config: &KafkaConfig, offset: u64) -> Result<KafkaFeed, KafkaError> {
        let assign_err = |reason: String| KafkaError::Assign {
            topic: config.topic.clone(),
            offset,
            reason,
        };
        let consumer: BaseConsumer = config
            .client()
            // Required by librdkafka, unused: the partition is assigned, offsets never committed.
            .set("group.id", "tandem-journal-reader")
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("enable.partition.eof", "false")
            .set("fetch.wait.max.ms", config.fetch_wait.as_millis().to_string())
            .create()
            .map_err(|e| KafkaError::Config(e.to_string()))?;
        let mut assignment = TopicPartitionList::new();
        let start = i64::try_from(offset).map_err(|_| assign_err("offset out of range".into()))?;
        assignment
            .add_partition_offset(&config.topic, 0, Offset::Offset(start))
            .map_err(|e| assign_err(e.to_string()))?;
        consumer
            .assign(&assignment)
            .map_err(|e| assign_err(e.to_string()))?;
        Ok(KafkaFeed { consumer, topic: config.topic.clone(), next: offset })
    }
}

impl KafkaFeed {
    /// The offset the next record written will get (the partition's high watermark): a
    /// replica has read everything written before it started once it reaches it.
    pub fn end_offset(&self, topic: &str, timeout: Duration) -> Result<u64, String> {
        let (_, high) = self
            .consumer
            .fetch_watermarks(topic, 0, timeout)
            .map_err(|e| e.to_string())?;
        u64::try_from(high).map_err(|_| format!("{topic}: a negative high watermark"))
    }
}

impl SharedFeed for KafkaFeed {
    fn next_position(&self) -> u64 {
        self.next
    }

    fn seek(&mut self, position: u64) -> Result<(), String> {
        let offset = i64::try_from(position).map_err(|_| "offset out of range".to_string())?;
        self.consumer
            .seek(&self.topic, 0, Offset::Offset(offset), Duration::from_secs(5))
            .map_err(|e| format!("seeking to offset {position}: {e}"))?;
        self.next = position;
        Ok(())
    }

    fn poll(&mut self, max: usize, wait: Duration) -> Result<Vec<SharedRecord>, String> {
        let mut records = Vec::new();
        let mut timeout = wait;
        while records.len() < max {
            match self.consumer.poll(timeout) {
                None => break,
                Some(Err(e)) if records.is_empty() => return Err(e.to_string()),
                // Hand over what was read; the error comes back at the next poll if it lasts.
                Some(Err(_)) => break,
                Some(Ok(message)) => {
                    let position = u64::try_from(message.offset())
                        .map_err(|_| "a negative offset".to_string())?;
                    self.next = self.next.max(position + 1);
                    records.push(SharedRecord {
                        position,
                        bytes: message.payload().unwrap_or_default().to_vec(),
                    });
                }
            }
            timeout = Duration::ZERO;
        }
        Ok(records)
    }
}
