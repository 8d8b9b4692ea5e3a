//! The event stream on a real Kafka-protocol broker: every applied command's events, in seq
//! order with no gap; a publisher restarted after the last seq the topic holds adds nothing
//! twice and goes on from there.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tandem_kafka::events::{events_config, last_published, spawn_publisher, EventRecord};
use tandem_kafka::testing::Broker;
use tandem_kafka::{ensure_topic, KafkaConfig, KafkaFeed};
use tandem_matching::{
    AccountKind, Applied, Command, Engine, Event, ExchangeConfig, MemoryLog, Seq, Sequencer, SequencerConfig, SharedFeed,
};

fn sequencer(sink: crossbeam_channel::Sender<Arc<Applied>>) -> Sequencer {
    let engine = Engine::genesis(ExchangeConfig::default().to_engine().unwrap(), Seq(1)).unwrap();
    Sequencer::start(engine, MemoryLog::default(), None, SequencerConfig::default(), vec![sink])
}

/// Every record of the stream, waiting until there are `count`.
fn read_all(config: &KafkaConfig, count: usize) -> Vec<EventRecord> {
    let mut feed = KafkaFeed::connect(config, 0).unwrap();
    let mut records = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while records.len() < count {
        assert!(Instant::now() < deadline, "{} of {count} event records", records.len());
        for r in feed.poll(256, Duration::from_millis(200)).unwrap() {
            records.push(EventRecord::decode(&r.bytes).unwrap());
        }
    }
    // Nothing more arrives.
    assert!(feed.poll(256, Duration::from_millis(500)).unwrap().is_empty(), "more records than commands");
    records
}

#[test]
fn the_stream_carries_every_seq_once_across_a_publisher_restart() {
    let broker = Broker::start();
    let config = events_config(&KafkaConfig::new(&broker.addr, "tandem.commands"));
    ensure_topic(&config).unwrap();
    assert_eq!(last_published(&config).unwrap(), Seq(0));

    let (tx, rx) = crossbeam_channel::bounded(1024);
    let exchange = sequencer(tx);
    let publisher = spawn_publisher(&config, rx, Seq(0)).unwrap();
    let h = exchange.handle();
    for _ in 0..20 {
        h.submit_blocking(Command::OpenAccount { kind: AccountKind::User }).unwrap();
    }
    exchange.shutdown();
    publisher.join().unwrap();
    let records = read_all(&config, 20);
    assert_eq!(records.iter().map(|r| r.seq.0).collect::<Vec<_>>(), (2..22).collect::<Vec<_>>());
    assert!(matches!(records[0].events.as_slice(), [Event::AccountOpened { .. }]), "{:?}", records[0]);
    assert_eq!(last_published(&config).unwrap(), Seq(21));

    // A restarted node replays from an older snapshot: what the stream holds is not sent again.
    let (tx, rx) = crossbeam_channel::bounded(1024);
    let replayed = sequencer(tx);
    let publisher = spawn_publisher(&config, rx, last_published(&config).unwrap()).unwrap();
    let h = replayed.handle();
    for _ in 0..25 {
        h.submit_blocking(Command::OpenAccount { kind: AccountKind::User }).unwrap();
    }
    replayed.shutdown();
    publisher.join().unwrap();
    let records = read_all(&config, 25);
    assert_eq!(records.iter().map(|r| r.seq.0).collect::<Vec<_>>(), (2..27).collect::<Vec<_>>(), "no gap, no repeat");
}
