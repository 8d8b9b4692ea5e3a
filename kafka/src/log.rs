//! The writing end of the journal: an idempotent producer to the topic's one partition.

use rdkafka::error::KafkaError as RdKafkaError;
use rdkafka::producer::{FutureProducer, FutureRecord};
use tandem_matching::SharedLog;

use crate::config::{KafkaConfig, KafkaError};

pub struct KafkaLog {
    producer: FutureProducer,
    config: KafkaConfig,
}

impl KafkaLog {
    pub fn connect(config: &KafkaConfig) -> Result<KafkaLog, KafkaError> {
        Ok(KafkaLog {
            producer: producer(config)?,
            config: config.clone(),
        })
    }

    /// After a failed batch the producer's sequence numbers are in doubt (the broker may fence
    /// its producer id: `ProducerFenced`, not always reported as fatal): start a new one.
    /// Whatever the old one left in doubt was already answered as of unknown outcome.
    fn renew(&mut self) {
        match producer(&self.config) {
            Ok(p) => self.producer = p,
            Err(e) => {
                tracing::error!(error = %e, "cannot start a new producer for the command log")
            }
        }
    }
}

fn producer(config: &KafkaConfig) -> Result<FutureProducer, KafkaError> {
    config
        .client()
        // One partition, written in order, never a record twice through a broker retry.
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set(
            "message.timeout.ms",
            config.publish_timeout.as_millis().to_string(),
        )
        // Commands arrive in bursts: a millisecond gathers them into one produce request.
        .set("linger.ms", "1")
        .create()
        .map_err(|e: RdKafkaError| KafkaError::Config(e.to_string()))
}

impl SharedLog for KafkaLog {
    fn publish(&mut self, records: &[Vec<u8>]) -> Result<(), String> {
        let topic = self.config.topic.as_str();
        let mut deliveries = Vec::with_capacity(records.len());
        for record in records {
            let delivery = self
                .producer
                .send_result(
                    FutureRecord::<(), _>::to(topic)
                        .partition(0)
                        .payload(record),
                )
                .map_err(|(e, _)| format!("queueing a command for {}: {e}", topic))?;
            deliveries.push(delivery);
        }
        // Every record must be acknowledged; the first failure fails the batch (records after
        // it may still land: the caller treats the whole batch as of unknown outcome).
        let mut failure = None;
        for delivery in deliveries {
            let outcome = futures::executor::block_on(delivery);
            if failure.is_none() {
                failure = match outcome {
                    Ok(Ok(_)) => None,
                    Ok(Err((e, _))) => Some(format!("{}: {e}", topic)),
                    Err(_) => Some(format!("{}: the producer was closed", topic)),
                };
            }
        }
        if failure.is_some() {
            self.renew();
        }
        failure.map_or(Ok(()), Err)
    }
}
