//! Where the broker is and what the journal topic is called; topic creation.

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::types::RDKafkaErrorCode;

#[derive(Debug, thiserror::Error)]
pub enum KafkaError {
    #[error("kafka client configuration: {0}")]
    Config(String),
    #[error("creating topic {topic}: {reason}")]
    CreateTopic { topic: String, reason: String },
    #[error("assigning {topic} from offset {offset}: {reason}")]
    Assign {
        topic: String,
        offset: u64,
        reason: String,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KafkaConfig {
    /// `host:port[,host:port...]` (bootstrap servers).
    pub brokers: String,
    /// The command journal's topic (one partition).
    pub topic: String,
    /// How long a command may wait to be acknowledged before its publish fails (the gateway
    /// then answers 503): librdkafka's `message.timeout.ms`.
    pub publish_timeout: Duration,
    /// How long a reader's fetch waits for new records (librdkafka's `fetch.wait.max.ms`).
    /// Short keeps answers fast (2 ms); a broker on object storage (Tansu on S3), for which each
    /// fetch lists the partition's objects, wants longer (`?fetch_wait_ms=` in the URL).
    pub fetch_wait: Duration,
}

impl KafkaConfig {
    pub fn new(brokers: impl Into<String>, topic: impl Into<String>) -> KafkaConfig {
        KafkaConfig {
            brokers: brokers.into(),
            topic: topic.into(),
            publish_timeout: Duration::from_secs(5),
            fetch_wait: Duration::from_millis(2),
        }
    }

    /// Parses `kafka://host:port[,host:port]/topic[?fetch_wait_ms=N]`.
    pub fn parse(url: &str) -> Result<KafkaConfig, KafkaError> {
        let bad = || KafkaError::Config(format!("{url}: expected kafka://host:port/topic[?fetch_wait_ms=N]"));
        let rest = url.strip_prefix("kafka://").ok_or_else(bad)?;
        let (rest, query) = match rest.split_once('?') {
            Some((rest, query)) => (rest, Some(query)),
            None => (rest, None),
        };
        let mut config = match rest.split_once('/') {
            Some((brokers, topic)) if !brokers.is_empty() && !topic.is_empty() && !topic.contains('/') => {
                KafkaConfig::new(brokers, topic)
            }
            _ => return Err(bad()),
        };
        for pair in query.into_iter().flat_map(|q| q.split('&')) {
            match pair.split_once('=') {
                Some(("fetch_wait_ms", ms)) => {
                    let ms: u64 = ms.parse().ok().filter(|ms| (1..=10_000).contains(ms)).ok_or_else(|| {
                        KafkaError::Config(format!("{url}: fetch_wait_ms must be 1 to 10000"))
                    })?;
                    config.fetch_wait = Duration::from_millis(ms);
                }
                _ => return Err(KafkaError::Config(format!("{url}: unknown parameter {pair:?} (known: fetch_wait_ms)"))),
            }
        }
        Ok(config)
    }

    pub(crate) fn client(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.brokers)
            .set("client.id", "tandem");
        c
    }
}

/// Creates the journal topic with its one partition, unless it exists.
pub fn ensure_topic(config: &KafkaConfig) -> Result<(), KafkaError> {
    let err = |reason: String| KafkaError::CreateTopic {
        topic: config.topic.clone(),
        reason,
    };
    let admin: AdminClient<DefaultClientContext> =
        config.client().create().map_err(|e| err(e.to_string()))?;
    let topic = NewTopic::new(&config.topic, 1, TopicReplication::Fixed(1));
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let results = futures::executor::block_on(admin.create_topics([&topic], &options))
        .map_err(|e| err(e.to_string()))?;
    for result in results {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((_, code)) => return Err(err(code.to_string())),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_brokers_and_topic() {
        let c =
            KafkaConfig::parse("kafka://127.0.0.1:9092,127.0.0.1:9093/tandem.commands").unwrap();
        assert_eq!(
            (c.brokers.as_str(), c.topic.as_str()),
            ("127.0.0.1:9092,127.0.0.1:9093", "tandem.commands")
        );
        for bad in [
            "127.0.0.1:9092/t",
            "kafka://127.0.0.1:9092",
            "kafka:///t",
            "kafka://h:1/a/b",
            "kafka://h:1/",
            "kafka://h:1/t?fetch_wait_ms=0",
            "kafka://h:1/t?fetch_wait_ms=x",
            "kafka://h:1/t?linger=5",
        ] {
            assert!(KafkaConfig::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(c.fetch_wait, Duration::from_millis(2));
        let slow = KafkaConfig::parse("kafka://h:1/t?fetch_wait_ms=250").unwrap();
        assert_eq!((slow.topic.as_str(), slow.fetch_wait), ("t", Duration::from_millis(250)));
    }
}
