//! The command journal on a real Kafka-protocol broker (Tansu): replicas writing one partition
//! agree on every answer and the state; a replica started later, or from a snapshot's offset,
//! reads the same log to the same state; a broker that stops answering makes commands fail
//! with `Unavailable` (the gateway's 503) while reads go on, and nothing acknowledged is lost;
//! nor when the broker is restarted (its data on S3).

use std::time::{Duration, Instant};

use tandem_kafka::testing::{Broker, ObjectStore};
use tandem_kafka::{ensure_topic, KafkaConfig, KafkaFeed, KafkaLog};
use tandem_matching::{
    AccountKind, Command, Engine, ExchangeConfig, Seq, Sequencer, SequencerConfig, SequencerError,
    SequencerHandle, SnapshotSink, MemorySnapshots,
};

fn genesis() -> Engine {
    Engine::genesis(ExchangeConfig::default().to_engine().unwrap(), Seq(1)).unwrap()
}

fn config(broker: &Broker, topic: &str) -> KafkaConfig {
    let config = KafkaConfig {
        publish_timeout: Duration::from_secs(2),
        ..KafkaConfig::new(&broker.addr, topic)
    };
    ensure_topic(&config).unwrap();
    config
}

fn replica(
    config: &KafkaConfig,
    engine: Engine,
    from: u64,
    snapshots: Option<Box<dyn SnapshotSink>>,
) -> Sequencer {
    let sequencer = SequencerConfig {
        snapshot_every: 10,
        ..SequencerConfig::default()
    };
    Sequencer::start_shared(
        engine,
        KafkaLog::connect(config).unwrap(),
        KafkaFeed::connect(config, from).unwrap(),
        snapshots,
        sequencer,
        vec![],
    )
}

fn open_account() -> Command {
    Command::OpenAccount {
        kind: AccountKind::User,
    }
}

fn wait_for(h: &SequencerHandle, seq: u64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while h.read_blocking(|e| e.last_seq().0).unwrap() < seq {
        assert!(Instant::now() < deadline, "replica stuck before seq {seq}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Submits until the broker takes a command again (refusals meanwhile are `Unavailable`).
fn accepted_once_back(h: &SequencerHandle, within: Duration) -> std::sync::Arc<tandem_matching::Applied> {
    let deadline = Instant::now() + within;
    loop {
        match h.submit_blocking(open_account()) {
            Ok(a) => return a,
            Err(SequencerError::Unavailable(e)) => {
                assert!(Instant::now() < deadline, "the broker did not come back: {e}");
            }
            Err(e) => panic!("{e}"),
        }
    }
}

/// A replica reading the partition from its start reaches `h`'s state at `seq`.
fn a_fresh_replica_agrees(config: &KafkaConfig, h: &SequencerHandle, seq: u64) {
    let fresh = replica(config, genesis(), 0, None);
    wait_for(&fresh.handle(), seq);
    wait_for(h, seq);
    assert_eq!(hash(&fresh.handle()), hash(h));
    fresh.shutdown();
}

fn hash(h: &SequencerHandle) -> tandem_matching::StateHash {
    h.read_blocking(|e| e.state_hash()).unwrap()
}

#[test]
fn replicas_on_one_partition_build_the_same_exchange() {
    let broker = Broker::start();
    let config = config(&broker, "tandem.commands");
    let snapshots = MemorySnapshots::default();
    let a = replica(&config, genesis(), 0, Some(Box::new(snapshots.clone())));
    let b = replica(&config, genesis(), 0, None);
    let writers: Vec<_> = [a.handle(), b.handle()]
        .into_iter()
        .map(|h| {
            std::thread::spawn(move || {
                (0..30)
                    .map(|_| h.submit_blocking(open_account()).unwrap().seq.0)
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut seqs: Vec<u64> = writers
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    seqs.sort_unstable();
    assert_eq!(
        seqs,
        (2..62).collect::<Vec<_>>(),
        "every command answered once, numbered by the partition"
    );
    wait_for(&a.handle(), 61);
    wait_for(&b.handle(), 61);
    assert_eq!(hash(&a.handle()), hash(&b.handle()));

    // Later: one replica from the partition's start, one from a snapshot's offset.
    let late = replica(&config, genesis(), 0, None);
    wait_for(&late.handle(), 61);
    assert_eq!(hash(&late.handle()), hash(&a.handle()));
    let (seq, position, bytes) = snapshots
        .saved
        .lock()
        .unwrap()
        .first()
        .cloned()
        .expect("a snapshot every 10 commands");
    assert_eq!(
        position,
        seq.0 - 2,
        "the partition holds only commands: offset = seq - 2 (genesis is seq 1)"
    );
    let restored = replica(
        &config,
        Engine::from_snapshot_bytes(&bytes).unwrap(),
        position + 1,
        None,
    );
    wait_for(&restored.handle(), 61);
    assert_eq!(hash(&restored.handle()), hash(&a.handle()));
    for s in [a, b, late, restored] {
        s.shutdown();
    }
}

#[test]
fn a_broker_that_stops_answering_refuses_commands_and_loses_nothing_acknowledged() {
    let broker = Broker::start();
    let config = config(&broker, "tandem.commands");
    let s = replica(&config, genesis(), 0, None);
    let h = s.handle();
    for _ in 0..5 {
        h.submit_blocking(open_account()).unwrap();
    }

    broker.pause();
    let refused = h.submit_blocking(open_account());
    assert!(
        matches!(refused, Err(SequencerError::Unavailable(_))),
        "{refused:?}"
    );
    assert!(
        !h.has_failed(),
        "a broker outage does not stop the sequencer"
    );
    assert_eq!(
        h.read_blocking(|e| e.last_seq()).unwrap(),
        Seq(6),
        "reads still answer"
    );

    broker.resume();
    let applied = accepted_once_back(&h, Duration::from_secs(30));
    // The refused command had an unknown outcome: it may have landed after all. Either way
    // every acknowledged one is in the partition, in order, and a fresh replica agrees.
    assert!(applied.seq.0 >= 7, "{:?}", applied.seq);
    a_fresh_replica_agrees(&config, &h, applied.seq.0);
    s.shutdown();
}

#[test]
fn a_broker_restarted_with_its_data_loses_nothing_acknowledged() {
    let store = ObjectStore::start();
    let mut broker = Broker::start_on(&store);
    // Each fetch lists the partition's objects in S3: poll it gently.
    let config = KafkaConfig { fetch_wait: Duration::from_millis(250), ..config(&broker, "tandem.commands") };
    let s = replica(&config, genesis(), 0, None);
    let h = s.handle();
    for _ in 0..5 {
        h.submit_blocking(open_account()).unwrap();
    }

    // Down: every command is refused, the replica goes on answering reads.
    broker.stop();
    let refused = h.submit_blocking(open_account());
    assert!(matches!(refused, Err(SequencerError::Unavailable(_))), "{refused:?}");
    assert!(!h.has_failed(), "a broker outage does not stop the sequencer");
    assert_eq!(h.read_blocking(|e| e.last_seq()).unwrap(), Seq(6), "reads still answer");

    // Back, with the partition it had: writing goes on after what was acknowledged.
    broker.start_again();
    let applied = accepted_once_back(&h, Duration::from_secs(60));
    assert!(applied.seq.0 >= 7, "{:?}", applied.seq);
    // A replica reading the restarted broker from the start holds every acknowledged command.
    a_fresh_replica_agrees(&config, &h, applied.seq.0);
    s.shutdown();
}
