use super::*;
use crate::command::Command;
use crate::config::ExchangeConfig;
use crate::event::Event;
use crate::types::{AccountId, AccountKind, AssetId, Amount};

fn genesis() -> Engine {
    Engine::genesis(ExchangeConfig::default().to_engine().unwrap(), Seq(1)).unwrap()
}

fn replica(log: &MemorySharedLog, engine: Engine, from: u64) -> Sequencer {
    Sequencer::start_shared(engine, log.clone(), log.feed_from(from), None, SequencerConfig::default(), vec![])
}

fn open_account() -> Command {
    Command::OpenAccount { kind: AccountKind::User }
}

fn opened(applied: &Applied) -> AccountId {
    match applied.events.as_slice() {
        [Event::AccountOpened { account, .. }] => *account,
        other => panic!("not an account opening: {other:?}"),
    }
}

/// Waits until `h` has applied `seq`.
fn wait_for(h: &SequencerHandle, seq: u64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while h.read_blocking(|e| e.last_seq().0).unwrap() < seq {
        assert!(Instant::now() < deadline, "replica stuck before seq {seq}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn replicas_writing_one_log_agree_on_every_answer_and_the_state() {
    let log = MemorySharedLog::default();
    let (a, b) = (replica(&log, genesis(), 0), replica(&log, genesis(), 0));
    let writers: Vec<_> = [a.handle(), b.handle()]
        .into_iter()
        .flat_map(|h| (0..2).map(move |_| h.clone()))
        .map(|h| std::thread::spawn(move || (0..40).map(|_| h.submit_blocking(open_account()).unwrap()).collect::<Vec<_>>()))
        .collect();
    let answers: Vec<Arc<Applied>> = writers.into_iter().flat_map(|t| t.join().unwrap()).collect();
    // Each seq answered once, to the process that wrote it, with the account the log's order gave.
    let mut seqs: Vec<u64> = answers.iter().map(|a| a.seq.0).collect();
    seqs.sort_unstable();
    assert_eq!(seqs, (2..162).collect::<Vec<_>>());
    let mut accounts: Vec<AccountId> = answers.iter().map(|a| opened(a)).collect();
    accounts.sort_unstable();
    accounts.dedup();
    assert_eq!(accounts.len(), 160, "no account handed out twice");

    wait_for(&a.handle(), 161);
    wait_for(&b.handle(), 161);
    let hash = |s: &Sequencer| s.handle().read_blocking(|e| e.state_hash()).unwrap();
    assert_eq!(hash(&a), hash(&b));
    assert_eq!(log.len(), 160);

    // A replica started later from genesis reads the same log to the same state.
    let late = replica(&log, genesis(), 0);
    wait_for(&late.handle(), 161);
    assert_eq!(hash(&late), hash(&a));
    for s in [a, b, late] {
        s.shutdown();
    }
}

#[test]
fn a_snapshot_records_the_log_position_it_covers() {
    let log = MemorySharedLog::default();
    // A record that is no command: skipped by every replica, so positions and seqs differ.
    log.append_raw(b"not a submission".to_vec());
    let snapshots = MemorySnapshots::default();
    let config = SequencerConfig { snapshot_every: 10, ..SequencerConfig::default() };
    let leader = Sequencer::start_shared(genesis(), log.clone(), log.feed_from(0), Some(Box::new(snapshots.clone())), config, vec![]);
    let h = leader.handle();
    for _ in 0..25 {
        h.submit_blocking(open_account()).unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while snapshots.saved.lock().unwrap().is_empty() {
        assert!(Instant::now() < deadline, "no snapshots");
        std::thread::sleep(Duration::from_millis(5));
    }
    // Command seq s (genesis is 1) is record s - 1, after the one that is no command.
    for (seq, position, _) in snapshots.saved.lock().unwrap().iter() {
        assert_eq!(*position, seq.0 - 1, "snapshot at {seq:?}");
    }
    let (_, position, bytes) = snapshots.saved.lock().unwrap().last().cloned().unwrap();

    // Restored from the snapshot and read on from the next position: the same state.
    let restored = replica(&log, Engine::from_snapshot_bytes(&bytes).unwrap(), position + 1);
    wait_for(&restored.handle(), 26);
    let hash = |h: &SequencerHandle| h.read_blocking(|e| e.state_hash()).unwrap();
    assert_eq!(hash(&restored.handle()), hash(&h));
    restored.shutdown();
    leader.shutdown();
}

#[test]
fn while_the_log_is_down_commands_are_refused_and_nothing_stops() {
    let log = MemorySharedLog::default();
    let s = replica(&log, genesis(), 0);
    let h = s.handle();
    log.down.store(true, Ordering::Release);
    let refused = h.submit_blocking(open_account());
    assert!(matches!(refused, Err(SequencerError::Unavailable(_))), "{refused:?}");
    assert!(!h.has_failed());
    assert_eq!(h.read_blocking(|e| e.account_count()).unwrap(), 2, "nothing applied");

    log.down.store(false, Ordering::Release);
    let applied = h.submit_blocking(open_account()).unwrap();
    assert_eq!(applied.seq, Seq(2));
    s.shutdown();
}

/// Hands every record out twice, as a reader that reconnects and fetches again might.
struct Stutter(MemoryFeed);

impl SharedFeed for Stutter {
    fn poll(&mut self, max: usize, wait: Duration) -> Result<Vec<SharedRecord>, String> {
        let records = self.0.poll(max, wait)?;
        Ok(records.iter().flat_map(|r| [r.clone(), r.clone()]).collect())
    }

    fn next_position(&self) -> u64 {
        self.0.next_position()
    }

    fn seek(&mut self, position: u64) -> Result<(), String> {
        self.0.seek(position)
    }
}

/// Shows some records before the one preceding them, as a broker with producers writing at
/// once can (Tansu does): every third poll, the first record held back.
struct LaterFirst {
    feed: MemoryFeed,
    polls: u64,
}

impl SharedFeed for LaterFirst {
    fn poll(&mut self, max: usize, wait: Duration) -> Result<Vec<SharedRecord>, String> {
        let mut records = self.feed.poll(max, wait)?;
        self.polls += 1;
        if self.polls.is_multiple_of(3) && records.len() > 1 {
            records.remove(0);
        }
        Ok(records)
    }

    fn next_position(&self) -> u64 {
        self.feed.next_position()
    }

    fn seek(&mut self, position: u64) -> Result<(), String> {
        self.feed.seek(position)
    }
}

#[test]
fn a_record_shown_after_a_later_one_is_still_read_in_order() {
    let log = MemorySharedLog::default();
    let plain = replica(&log, genesis(), 0);
    let odd = Sequencer::start_shared(
        genesis(),
        log.clone(),
        LaterFirst { feed: log.feed_from(0), polls: 0 },
        None,
        SequencerConfig::default(),
        vec![],
    );
    // Commands in bursts, so polls return several records.
    for _ in 0..20 {
        let writes: Vec<_> = (0..5).map(|_| plain.handle()).map(|h| std::thread::spawn(move || h.submit_blocking(open_account()))).collect();
        for w in writes {
            w.join().unwrap().unwrap();
        }
    }
    wait_for(&odd.handle(), 101);
    let hash = |s: &Sequencer| s.handle().read_blocking(|e| e.state_hash()).unwrap();
    assert_eq!(hash(&odd), hash(&plain), "the same commands under the same seqs");
    for s in [plain, odd] {
        s.shutdown();
    }
}

#[test]
fn a_record_read_twice_is_applied_once() {
    let log = MemorySharedLog::default();
    let s = Sequencer::start_shared(genesis(), log.clone(), Stutter(log.feed_from(0)), None, SequencerConfig::default(), vec![]);
    let h = s.handle();
    let deposit = Command::CreditDeposit {
        account: AccountId(3),
        asset: AssetId(1),
        amount: Amount(100),
        reference: "wire-1".into(),
    };
    h.submit_blocking(open_account()).unwrap();
    let credited = h.submit_blocking(deposit).unwrap();
    assert_eq!(credited.seq, Seq(3));
    assert_eq!(h.read_blocking(|e| e.last_seq()).unwrap(), Seq(3));
    let balances = h.read_blocking(|e| e.balances(AccountId(3))).unwrap().unwrap();
    assert_eq!(balances[1].available, Amount(100), "credited once");
    s.shutdown();
}

#[test]
fn a_client_withdrawal_on_the_log_twice_pays_once() {
    let log = MemorySharedLog::default();
    let (a, b) = (replica(&log, genesis(), 0), replica(&log, genesis(), 0));
    let h = a.handle();
    let account = opened(&h.submit_blocking(open_account()).unwrap());
    let btc = AssetId(0);
    let deposit = Command::CreditDeposit { account, asset: btc, amount: Amount(1_000), reference: "wire-1".into() };
    h.submit_blocking(deposit).unwrap();
    // The same submission twice, as when a writer retried one whose first publish had in fact
    // landed (its outcome was unknown), or a client retried after a 503.
    let withdrawal = Submission {
        origin: 7,
        request: 1,
        timestamp: Timestamp(1),
        command: Command::RequestClientWithdrawal {
            account,
            asset: btc,
            amount: Amount(400),
            destination: "bcrt1q...".into(),
            client_withdrawal_id: crate::types::ClientWithdrawalId::new("payout-1").unwrap(),
        },
    };
    log.append_raw(withdrawal.encode());
    log.append_raw(withdrawal.encode());
    for s in [&a, &b] {
        wait_for(&s.handle(), 5);
        let balance = s.handle().read_blocking(move |e| e.balance(account, btc)).unwrap().unwrap();
        assert_eq!((balance.available, balance.locked), (Amount(600), Amount(400)), "paid once");
        assert_eq!(s.handle().read_blocking(|e| e.pending_withdrawals().len()).unwrap(), 1);
    }
    let hash = |s: &Sequencer| s.handle().read_blocking(|e| e.state_hash()).unwrap();
    assert_eq!(hash(&a), hash(&b));
    for s in [a, b] {
        s.shutdown();
    }
}
