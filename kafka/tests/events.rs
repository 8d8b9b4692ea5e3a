//! The event stream on a real Kafka-protocol broker: every applied command's events, in seq
//! order with no gap; a publisher restarted after the last seq the topic holds adds nothing
//! twice and goes on from there.

use std::sync::Arc;
use std::time::{Duration, Instant};

use std::sync::atomic::Ordering;
use tandem_kafka::events::{events_config, last_published, spawn_led_publisher, spawn_publisher, EventRecord, PublishTurn};
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

/// Two processes applying the same commands, publishing by turns: out of turn a publisher sends
/// nothing; when its turn comes it goes on where the stream ends, with nothing missed and
/// nothing sent twice.
#[test]
fn publishers_taking_turns_leave_no_gap_and_no_repeat() {
    let broker = Broker::start();
    let config = events_config(&KafkaConfig::new(&broker.addr, "tandem.commands"));
    ensure_topic(&config).unwrap();
    let (tx_a, rx_a) = crossbeam_channel::bounded(1024);
    let (tx_b, rx_b) = crossbeam_channel::bounded(1024);
    let engine = Engine::genesis(ExchangeConfig::default().to_engine().unwrap(), Seq(1)).unwrap();
    let exchange = Sequencer::start(engine, MemoryLog::default(), None, SequencerConfig::default(), vec![tx_a, tx_b]);
    let (a, b) = (PublishTurn::new(), PublishTurn::new());
    a.epoch.store(1, Ordering::Release);
    let publishers = [
        spawn_led_publisher(&config, rx_a, Seq(0), a.clone()).unwrap(),
        spawn_led_publisher(&config, rx_b, Seq(0), b.clone()).unwrap(),
    ];
    let h = exchange.handle();
    let open = |n: usize| {
        for _ in 0..n {
            h.submit_blocking(Command::OpenAccount { kind: AccountKind::User }).unwrap();
        }
    };
    let published_up_to = |seq: u64| {
        let deadline = Instant::now() + Duration::from_secs(30);
        while last_published(&config).unwrap() < Seq(seq) {
            assert!(Instant::now() < deadline, "seq {seq} not published");
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    open(20);
    published_up_to(21);

    // A's turn ends; nobody's has begun: nothing is published.
    a.epoch.store(0, Ordering::Release);
    std::thread::sleep(Duration::from_millis(300));
    open(10);
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(last_published(&config).unwrap(), Seq(21), "out of turn, nobody publishes");

    // B's turn: it publishes what A left, and on.
    b.epoch.store(2, Ordering::Release);
    open(10);
    published_up_to(41);
    exchange.shutdown();
    for p in publishers {
        p.join().unwrap();
    }
    let records = read_all(&config, 40);
    assert_eq!(records.iter().map(|r| r.seq.0).collect::<Vec<_>>(), (2..42).collect::<Vec<_>>(), "no gap, no repeat");
}
