//! Bad messages end a session with a clear error (never a panic or a hang), and a new session
//! with a new execution id then succeeds.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tandem_custody::transport::{LocalEndpoint, Tap};
use tandem_custody::{
    CustodyConfig, CustodyError, Envelope, ExecutionId, LocalNetwork, Party, PartyRole, Result, TransportError,
    VaultKey,
};

use crate::common::*;

/// Keygen among the shared 2-of-3 parties over `endpoints`.
fn keygen_over(parties: &[&Party], eid: ExecutionId, endpoints: Vec<LocalEndpoint>) -> Vec<Result<VaultKey>> {
    let futs: Vec<BoxFut<'_, tandem_custody::Result<_>>> =
        parties.iter().zip(endpoints).map(|(p, ep)| Box::pin(p.keygen(eid, ep)) as BoxFut<'_, tandem_custody::Result<_>>).collect();
    run_parties(futs)
}

fn shared_parties() -> Vec<&'static Party> {
    GROUP_2OF3.parties.iter().collect()
}

/// Runs a keygen whose envelopes pass through `tap`, checks that party 0 (the wallet) fails
/// with a transport violation accepted by `expect`, that the others fail too (peer abort or
/// their own detection), all well before the session deadline; then a fresh session succeeds.
fn faulty_keygen(tap: Tap, expect: impl Fn(&TransportError) -> bool) {
    let parties = shared_parties();
    let t0 = Instant::now();
    let results = keygen_over(&parties, ExecutionId::random(), LocalNetwork::session_with_tap(3, Some(tap)));
    let elapsed = t0.elapsed();
    let err0 = results[0].as_ref().expect_err("wallet must fail");
    let v = err0.transport_violation().unwrap_or_else(|| panic!("not a transport violation: {err0}"));
    assert!(expect(v), "unexpected violation: {v:?}");
    eprintln!("wallet: {err0}");
    for r in &results[1..] {
        let e = r.as_ref().expect_err("peers must fail too");
        assert!(matches!(e, CustodyError::Protocol { .. }), "peer error: {e}");
    }
    assert!(elapsed < Duration::from_secs(60), "failure took {elapsed:?}");
    let ok = keygen_over(&parties, ExecutionId::random(), LocalNetwork::session(3));
    assert!(ok.iter().all(|r| r.is_ok()), "fresh session after failure");
}

/// A tap acting once on the first envelope from `from` to `to`.
fn once(from: u16, to: u16, f: impl Fn(Envelope) -> Vec<Envelope> + Send + Sync + 'static) -> Tap {
    let done = Mutex::new(false);
    Arc::new(move |env: Envelope| {
        if env.sender == from && env.recipient == to && env.abort.is_none() {
            let mut d = done.lock().unwrap();
            if !*d {
                *d = true;
                return f(env);
            }
        }
        vec![env]
    })
}

#[test]
fn corrupted_message_ends_session() {
    faulty_keygen(
        once(1, 0, |mut e| {
            e.payload.truncate(e.payload.len() / 2);
            vec![e]
        }),
        |v| matches!(v, TransportError::Malformed { sender: 1, .. }),
    );
}

#[test]
fn tampered_but_wellformed_message_ends_session() {
    // Flip a hex digit inside the payload: still valid JSON, but the data (a commitment,
    // proof or point) no longer checks out, so the protocol itself aborts.
    let tap = once(1, 0, |mut e| {
        let text = String::from_utf8(e.payload.clone()).unwrap();
        let pos = text.rfind(|c: char| c.is_ascii_digit() && c != '0' && c != '1').unwrap();
        let mut bytes = text.into_bytes();
        bytes[pos] = if bytes[pos] == b'2' { b'3' } else { b'2' };
        e.payload = bytes;
        vec![e]
    });
    let parties = shared_parties();
    let results = keygen_over(&parties, ExecutionId::random(), LocalNetwork::session_with_tap(3, Some(tap)));
    let err0 = results[0].as_ref().expect_err("wallet must fail");
    eprintln!("wallet: {err0}");
    assert!(matches!(err0, CustodyError::Protocol { .. }), "{err0}");
    let ok = keygen_over(&parties, ExecutionId::random(), LocalNetwork::session(3));
    assert!(ok.iter().all(|r| r.is_ok()));
}

#[test]
fn duplicated_message_ends_session() {
    faulty_keygen(once(1, 0, |e| vec![e.clone(), e]), |v| {
        matches!(v, TransportError::Duplicate { sender: 1, seq: 0, expected: 1 })
    });
}

#[test]
fn message_from_unknown_party_ends_session() {
    faulty_keygen(
        once(1, 0, |e| {
            let mut forged = e.clone();
            forged.sender = 7;
            vec![forged, e]
        }),
        |v| matches!(v, TransportError::UnknownSender { sender: 7, .. }),
    );
}

#[test]
fn reordered_messages_end_session() {
    // Hold back the first envelope 1 → 0 and deliver it after the second.
    let held: Mutex<Option<Envelope>> = Mutex::new(None);
    let tap: Tap = Arc::new(move |env: Envelope| {
        if env.sender == 1 && env.recipient == 0 && env.abort.is_none() {
            let mut h = held.lock().unwrap();
            if env.seq == 0 {
                *h = Some(env);
                return vec![];
            }
            if let Some(first) = h.take() {
                return vec![env, first];
            }
        }
        vec![env]
    });
    faulty_keygen(tap, |v| matches!(v, TransportError::OutOfOrder { sender: 1, seq: 1, expected: 0 }));
}

#[test]
fn replay_from_another_session_ends_session() {
    // Record party 1's first message to party 0 in one session and replay it into another.
    let parties = shared_parties();
    let recorded: Arc<Mutex<Option<Envelope>>> = Arc::default();
    let rec = recorded.clone();
    let tap: Tap = Arc::new(move |env: Envelope| {
        if env.sender == 1 && env.recipient == 0 && env.seq == 0 {
            rec.lock().unwrap().get_or_insert(env.clone());
        }
        vec![env]
    });
    let first = keygen_over(&parties, ExecutionId::random(), LocalNetwork::session_with_tap(3, Some(tap)));
    assert!(first.iter().all(|r| r.is_ok()));
    let old = recorded.lock().unwrap().clone().unwrap();
    faulty_keygen(once(1, 0, move |e| vec![old.clone(), e]), |v| matches!(v, TransportError::WrongSession { .. }));
}

#[test]
fn silent_party_times_out_then_new_session_succeeds() {
    // Parties restored from the shared parties' aux info, with a short deadline.
    let cfg = CustodyConfig { session_timeout: Duration::from_secs(3), ..CustodyConfig::demo() };
    let parties: Vec<Party> = GROUP_2OF3
        .parties
        .iter()
        .map(|p| Party::with_aux_info(GROUP_2OF3.group.clone(), p.role(), cfg.clone(), p.aux_info().unwrap().clone()).unwrap())
        .collect();
    let refs: Vec<&Party> = parties.iter().collect();
    // The co-signer's messages are all lost.
    let tap: Tap = Arc::new(|env: Envelope| if env.sender == 2 && env.abort.is_none() { vec![] } else { vec![env] });
    let t0 = Instant::now();
    let results = keygen_over(&refs, ExecutionId::random(), LocalNetwork::session_with_tap(3, Some(tap)));
    let elapsed = t0.elapsed();
    for r in &results {
        let e = r.as_ref().expect_err("must fail");
        assert!(
            matches!(e, CustodyError::Timeout { .. })
                || matches!(e.transport_violation(), Some(TransportError::PeerAborted { .. })),
            "{e}"
        );
    }
    assert!(results.iter().any(|r| matches!(r, Err(CustodyError::Timeout { .. }))));
    assert!(elapsed < Duration::from_secs(30), "{elapsed:?}");
    let ok = keygen_over(&refs, ExecutionId::random(), LocalNetwork::session(3));
    assert!(ok.iter().all(|r| r.is_ok()));
}

#[test]
fn execution_id_reuse_is_refused() {
    let parties = shared_parties();
    let eid = ExecutionId::random();
    let first = keygen_over(&parties, eid, LocalNetwork::session(3));
    assert!(first.iter().all(|r| r.is_ok()));
    let again = keygen_over(&parties, eid, LocalNetwork::session(3));
    for r in again {
        assert!(matches!(r, Err(CustodyError::ExecutionIdReused(id)) if id == eid));
    }
    // Also across protocols: a signing session cannot reuse a keygen's id.
    let keys = GROUP_2OF3.keygen();
    let (_, spend) = funding_and_spend(&keys[0].script_pubkey());
    let signers = [PartyRole::Wallet, PartyRole::Provider];
    let ep = signer_endpoints(&signers).remove(0).1;
    let r = run_parties(vec![Box::pin(GROUP_2OF3.party(PartyRole::Wallet).sign_input(
        &keys[0],
        &signers,
        eid,
        &spend,
        input0(),
        ep,
    )) as BoxFut<'_, tandem_custody::Result<_>>]);
    assert!(matches!(r[0], Err(CustodyError::ExecutionIdReused(_))));
}

#[test]
fn corrupted_signing_message_ends_session() {
    let g = &*GROUP_2OF3;
    let keys = g.keygen();
    let (funding, spend) = funding_and_spend(&keys[0].script_pubkey());
    let signers = [PartyRole::Provider, PartyRole::CoSigner];
    let run = |tap: Option<Tap>| {
        let eid = ExecutionId::random();
        let endpoints = LocalNetwork::session_with_tap(2, tap);
        let futs: Vec<BoxFut<'_, tandem_custody::Result<_>>> = signers
            .iter()
            .zip(endpoints)
            .map(|(r, ep)| {
                Box::pin(g.party(*r).sign_input(&keys[r.index() as usize], &signers, eid, &spend, input0(), ep))
                    as BoxFut<'_, tandem_custody::Result<_>>
            })
            .collect();
        run_parties(futs)
    };
    // Session index 1 = co-signer; garble its first message to the provider.
    let res = run(Some(once(1, 0, |mut e| {
        e.payload = b"{\"not\":\"a message\"}".to_vec();
        vec![e]
    })));
    let e = res[0].as_ref().unwrap_err();
    assert!(matches!(e.transport_violation(), Some(TransportError::Malformed { sender: 1, .. })), "{e}");
    assert!(matches!(res[1].as_ref().unwrap_err().transport_violation(), Some(TransportError::PeerAborted { .. })));
    let res = run(None);
    let sig = res[0].as_ref().expect("fresh signing session");
    verify_spend(&keys[0], &funding, &spend, sig);
}
