//! A node whose command journal is a Kafka partition shared with other replicas.
//!
//! The partition's first record is the genesis (the assets and markets every replica must be
//! configured with); the first replica to find the partition empty writes it, and a second
//! genesis written by a racing replica is a command like any other, refused by the engine
//! alike everywhere. Snapshots live in the data dir, each prefixed with the partition offset
//! after the last record it covers, so a restart reads on from there; a start waits until the
//! replica has applied everything written before it, so its first answers are current.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use tandem_journal::SnapshotStore;
use tandem_kafka::{ensure_topic, KafkaConfig, KafkaFeed, KafkaLog};
use tandem_matching::{
    Applied, Command, Engine, EngineConfig, Seq, Sequencer, SequencerConfig, SharedFeed, SharedLog,
    SnapshotSink, Submission, Timestamp,
};

/// How long a starting replica may take to reach the partition's end.
const CATCH_UP: Duration = Duration::from_secs(600);

/// Starts the sequencer replica: genesis checked (or written), engine from the newest snapshot
/// at or before `snapshot_limit` (what every sink already has: the projections' seq, the event
/// stream's last), caught up with the partition. Blocks (Kafka's clients are synchronous): call
/// it off the async runtime.
pub fn start(
    kafka: &KafkaConfig,
    wanted: EngineConfig,
    snapshots: SnapshotStore,
    snapshot_limit: Seq,
    config: SequencerConfig,
    sinks: Vec<crossbeam_channel::Sender<Arc<Applied>>>,
) -> anyhow::Result<(Sequencer, EngineConfig)> {
    ensure_topic(kafka)?;
    let mut log = KafkaLog::connect(kafka)?;
    let engine_config = match first_record(kafka)? {
        Some(genesis) => genesis,
        None => {
            let genesis = Submission {
                origin: 0,
                request: 0,
                timestamp: Timestamp(crate::node::now_millis()),
                command: Command::Genesis(wanted.clone()),
            };
            log.publish(&[genesis.encode()])
                .map_err(|e| anyhow::anyhow!(e))
                .context("writing the genesis")?;
            first_record(kafka)?.context("the genesis written is not read back")?
        }
    };
    if engine_config != wanted {
        bail!(
            "the configured assets and markets differ from the ones this exchange was created with \
             (the genesis of Kafka topic {}); start with the original configuration",
            kafka.topic
        );
    }

    let (engine, from) = match latest_snapshot(&snapshots, snapshot_limit)? {
        Some((engine, position)) => (engine, position),
        None => (Engine::genesis(engine_config.clone(), Seq(1))?, 1),
    };
    tracing::info!(last_seq = engine.last_seq().0, from_offset = from, topic = %kafka.topic, "reading the shared journal");
    let feed = KafkaFeed::connect(kafka, from)?;
    let end = feed
        .end_offset(&kafka.topic, Duration::from_secs(10))
        .map_err(|e| anyhow::anyhow!(e))?;
    let sequencer = Sequencer::start_shared(
        engine,
        log,
        feed,
        Some(Box::new(SharedSnapshotSink {
            store: snapshots,
            keep: 3,
        })),
        config,
        sinks,
    );
    let metrics = sequencer.handle();
    let started = Instant::now();
    // To the high watermark, then until nothing more arrives for a moment: a broker may report
    // a watermark short of the end (Tansu 0.6 reports its last batch's first offset + 1).
    let (mut seen, mut idle_since) = (0, Instant::now());
    loop {
        let position = metrics.metrics().log_position.load(Ordering::Acquire);
        if position != seen {
            (seen, idle_since) = (position, Instant::now());
        }
        if (from >= end || position >= end) && idle_since.elapsed() > Duration::from_millis(300) {
            break;
        }
        if started.elapsed() > CATCH_UP {
            sequencer.shutdown();
            bail!("not caught up with Kafka topic {} (offset {end}) after {CATCH_UP:?}", kafka.topic);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    tracing::info!(
        last_seq = metrics.metrics().last_seq.load(Ordering::Relaxed),
        millis = started.elapsed().as_millis() as u64,
        "caught up with the shared journal"
    );
    Ok((sequencer, engine_config))
}

/// The engine configuration of the partition's first record, `None` if the partition is empty.
fn first_record(kafka: &KafkaConfig) -> anyhow::Result<Option<EngineConfig>> {
    let mut feed = KafkaFeed::connect(kafka, 0)?;
    if feed
        .end_offset(&kafka.topic, Duration::from_secs(10))
        .map_err(|e| anyhow::anyhow!(e))?
        == 0
    {
        return Ok(None);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let records = feed
            .poll(1, Duration::from_millis(200))
            .map_err(|e| anyhow::anyhow!(e))?;
        if let Some(first) = records.first() {
            if first.position != 0 {
                bail!(
                    "Kafka topic {} no longer starts at its genesis (first offset {})",
                    kafka.topic,
                    first.position
                );
            }
            return match Submission::decode(&first.bytes).map(|s| s.command) {
                Ok(Command::Genesis(config)) => Ok(Some(config)),
                _ => bail!(
                    "Kafka topic {} does not start with a genesis: not a Tandem journal",
                    kafka.topic
                ),
            };
        }
        if Instant::now() > deadline {
            bail!(
                "cannot read the first record of Kafka topic {}",
                kafka.topic
            );
        }
    }
}

/// The newest snapshot at or before `limit` and the offset to read on from.
fn latest_snapshot(store: &SnapshotStore, limit: Seq) -> anyhow::Result<Option<(Engine, u64)>> {
    let Some((seq, bytes)) = store.latest_at_or_before(limit.0)? else {
        return Ok(None);
    };
    let (position, engine) = bytes
        .split_at_checked(8)
        .context("a snapshot shorter than its offset")?;
    let position = u64::from_le_bytes(position.try_into().expect("8 bytes"));
    let engine = match Engine::from_snapshot_bytes(engine) {
        Ok(engine) => engine,
        // Written by an older release: the partition, read from its start, rebuilds the state.
        Err(tandem_matching::SnapshotError::Version(version)) => {
            tracing::warn!(seq, version, "snapshot of another format; reading the journal from genesis");
            return Ok(None);
        }
        Err(e) => return Err(anyhow::Error::new(e).context(format!("snapshot at seq {seq}"))),
    };
    if engine.last_seq().0 != seq {
        bail!(
            "snapshot file for seq {seq} holds seq {}",
            engine.last_seq().0
        );
    }
    Ok(Some((engine, position)))
}

/// Publishes the events of everything applied after the stream's last seq (in `turn`, when
/// several processes take turns); the seq the stream already holds is returned as a limit for
/// the snapshot to start from.
pub fn spawn_event_publisher(
    kafka: &KafkaConfig,
    turn: Option<tandem_kafka::events::PublishTurn>,
) -> anyhow::Result<(crossbeam_channel::Sender<Arc<Applied>>, Seq, std::thread::JoinHandle<()>)> {
    let events = tandem_kafka::events::events_config(kafka);
    ensure_topic(&events)?;
    let published = tandem_kafka::events::last_published(&events)?;
    let (tx, rx) = crossbeam_channel::bounded(1 << 16);
    let publisher = match turn {
        Some(turn) => tandem_kafka::events::spawn_led_publisher(&events, rx, published, turn)?,
        None => tandem_kafka::events::spawn_publisher(&events, rx, published)?,
    };
    tracing::info!(topic = %events.topic, after = published.0, "publishing events");
    Ok((tx, published, publisher))
}

/// Snapshots in the data dir, each prefixed with the offset to read on from (little-endian u64).
struct SharedSnapshotSink {
    store: SnapshotStore,
    keep: usize,
}

impl SnapshotSink for SharedSnapshotSink {
    fn save(&mut self, seq: Seq, position: u64, bytes: &[u8]) -> Result<(), String> {
        let mut framed = Vec::with_capacity(8 + bytes.len());
        framed.extend_from_slice(&(position + 1).to_le_bytes());
        framed.extend_from_slice(bytes);
        self.store.save(seq.0, &framed).map_err(|e| e.to_string())?;
        self.store.prune(self.keep).map_err(|e| e.to_string())
    }
}
