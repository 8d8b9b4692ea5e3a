//! Protocols over `SecureLink`: keygen and signing with every envelope sealed, what the network
//! sees (ciphertexts only), and a tampered ciphertext ending the session cleanly.

use std::sync::{Arc, Mutex};

use bitcoin::secp256k1::Keypair;
use tandem_custody::channel::random_identity;
use tandem_custody::transport::{LocalEndpoint, Tap};
use tandem_custody::{
    CustodyError, Envelope, ExecutionId, InputSignature, LocalNetwork, PartyRole, SecureChannel, SecureLink,
    SessionMember, TransportError, VaultKey,
};

use crate::common::*;

/// Identity keys of the three parties, by role index.
fn identities() -> Vec<Keypair> {
    (0..3).map(|_| random_identity()).collect()
}

fn members(ids: &[Keypair], roles: &[PartyRole]) -> Vec<SessionMember> {
    roles.iter().map(|r| SessionMember::new(*r, ids[r.index() as usize].x_only_public_key().0)).collect()
}

/// Secure links for a session among `roles` (sorted), over a local network tapped by `tap`.
fn secure_links(
    ids: &[Keypair],
    roles: &[PartyRole],
    eid: ExecutionId,
    tap: Option<Tap>,
) -> Vec<SecureLink<LocalEndpoint>> {
    let m = members(ids, roles);
    LocalNetwork::session_with_tap(roles.len() as u16, tap)
        .into_iter()
        .zip(roles)
        .map(|(ep, r)| SecureLink::new(ep, &ids[r.index() as usize], eid, &m).unwrap())
        .collect()
}

/// A tap that records every envelope the network carries.
fn recorder() -> (Tap, Arc<Mutex<Vec<Envelope>>>) {
    let seen: Arc<Mutex<Vec<Envelope>>> = Arc::default();
    let s = seen.clone();
    (
        Arc::new(move |env: Envelope| {
            s.lock().unwrap().push(env.clone());
            vec![env]
        }),
        seen,
    )
}

fn secure_keygen(ids: &[Keypair], eid: ExecutionId, tap: Option<Tap>) -> Vec<tandem_custody::Result<VaultKey>> {
    let g = &*GROUP_2OF3;
    let links = secure_links(ids, &[PartyRole::Wallet, PartyRole::Provider, PartyRole::CoSigner], eid, tap);
    let futs: Vec<BoxFut<'_, tandem_custody::Result<_>>> = g
        .parties
        .iter()
        .zip(links)
        .map(|(p, link)| Box::pin(p.keygen(eid, link)) as BoxFut<'_, tandem_custody::Result<_>>)
        .collect();
    run_parties(futs)
}

/// Opens what the network carried in a session among `roles`, as each recipient would.
fn plaintexts(ids: &[Keypair], roles: &[PartyRole], eid: ExecutionId, seen: &[Envelope]) -> Vec<Vec<u8>> {
    let m = members(ids, roles);
    let mut chans: Vec<SecureChannel> =
        roles.iter().map(|r| SecureChannel::new(&ids[r.index() as usize], eid, &m).unwrap()).collect();
    seen.iter()
        .filter(|e| e.eid == eid)
        .map(|e| chans[e.recipient as usize].open(e.clone()).expect("recorded envelope opens").payload)
        .collect()
}

/// No 16-byte piece of any plaintext shows up in anything the network carried.
fn assert_opaque(plain: &[Vec<u8>], seen: &[Envelope]) {
    let wire: Vec<u8> = seen.iter().flat_map(|e| e.payload.iter().copied()).collect();
    let mut pieces = 0;
    for p in plain {
        assert!(!p.is_empty());
        for chunk in p.chunks_exact(16).step_by(4) {
            pieces += 1;
            assert!(!wire.windows(16).any(|w| w == chunk), "plaintext visible on the wire");
        }
    }
    assert!(pieces > 100, "too few pieces checked: {pieces}");
    // The protocol's JSON framing does not show either.
    for marker in [&b"{\""[..], b"\":"] {
        assert!(plain.iter().any(|p| p.windows(marker.len()).any(|w| w == marker)), "marker {marker:?} in plaintexts");
    }
    assert!(seen.iter().all(|e| serde_json::from_slice::<serde_json::Value>(&e.payload).is_err()));
}

#[test]
fn keygen_and_signing_over_secure_links_show_only_ciphertexts() {
    let g = &*GROUP_2OF3;
    let ids = identities();
    let all = [PartyRole::Wallet, PartyRole::Provider, PartyRole::CoSigner];

    let (tap, seen) = recorder();
    let eid = ExecutionId::random();
    let keys: Vec<VaultKey> =
        secure_keygen(&ids, eid, Some(tap)).into_iter().map(|r| r.expect("secure keygen")).collect();
    assert!(keys.iter().all(|k| k.public_key == keys[0].public_key));
    let seen_keygen = seen.lock().unwrap().clone();
    let plain = plaintexts(&ids, &all, eid, &seen_keygen);
    assert_eq!(plain.len(), seen_keygen.len());
    assert_opaque(&plain, &seen_keygen);
    // A broadcast is sealed separately for each recipient: no two ciphertexts are alike.
    let mut payloads: Vec<&Vec<u8>> = seen_keygen.iter().map(|e| &e.payload).collect();
    payloads.sort();
    payloads.dedup();
    assert_eq!(payloads.len(), seen_keygen.len());
    eprintln!(
        "keygen: {} envelopes, largest {} bytes sealed",
        seen_keygen.len(),
        seen_keygen.iter().map(|e| e.payload.len()).max().unwrap()
    );

    // Wallet + co-signer sign (the provider is not needed), over secure links.
    let signers = [PartyRole::Wallet, PartyRole::CoSigner];
    let (funding, spend) = funding_and_spend(&keys[0].script_pubkey());
    let (tap, seen) = recorder();
    let eid = ExecutionId::random();
    let links = secure_links(&ids, &signers, eid, Some(tap));
    let futs: Vec<BoxFut<'_, tandem_custody::Result<_>>> = signers
        .iter()
        .zip(links)
        .map(|(r, link)| {
            let key = &keys[r.index() as usize];
            Box::pin(g.party(*r).sign_input(key, &signers, eid, &spend, input0(), link))
                as BoxFut<'_, tandem_custody::Result<_>>
        })
        .collect();
    let sigs: Vec<InputSignature> = run_parties(futs).into_iter().map(|r| r.expect("secure signing")).collect();
    assert_eq!(sigs[0], sigs[1]);
    verify_spend(&keys[0], &funding, &spend, &sigs[0]);
    let seen_sign = seen.lock().unwrap().clone();
    assert_opaque(&plaintexts(&ids, &signers, eid, &seen_sign), &seen_sign);
    eprintln!(
        "signing: {} envelopes, largest {} bytes sealed",
        seen_sign.len(),
        seen_sign.iter().map(|e| e.payload.len()).max().unwrap()
    );
}

#[test]
fn tampered_ciphertext_ends_session_and_a_fresh_one_succeeds() {
    let ids = identities();
    let done = Mutex::new(false);
    let tap: Tap = Arc::new(move |mut env: Envelope| {
        if env.sender == 1 && env.recipient == 0 && env.abort.is_none() {
            let mut d = done.lock().unwrap();
            if !*d {
                *d = true;
                let last = env.payload.len() - 1;
                env.payload[last] ^= 0x80;
            }
        }
        vec![env]
    });
    let results = secure_keygen(&ids, ExecutionId::random(), Some(tap));
    let err = results[0].as_ref().expect_err("the wallet must refuse the tampered message");
    assert!(matches!(err.transport_violation(), Some(TransportError::Unauthenticated { sender: 1, seq: 0 })), "{err}");
    for r in &results[1..] {
        let e = r.as_ref().expect_err("peers must fail too");
        assert!(matches!(e, CustodyError::Protocol { .. }), "{e}");
    }
    // The wallet's abort reached the others sealed, and they trusted it.
    assert!(results[1..].iter().any(|r| matches!(
        r.as_ref().unwrap_err().transport_violation(),
        Some(TransportError::PeerAborted { sender: 0, .. })
    )));
    assert!(secure_keygen(&ids, ExecutionId::random(), None).iter().all(|r| r.is_ok()));
}

#[test]
fn a_party_with_another_identity_cannot_join() {
    // The co-signer's messages are sealed with a key the others do not expect: they cannot be
    // opened, so the session fails instead of accepting an impostor.
    let ids = identities();
    let impostor = random_identity();
    let eid = ExecutionId::random();
    let all = [PartyRole::Wallet, PartyRole::Provider, PartyRole::CoSigner];
    let honest = members(&ids, &all);
    let mut claimed = honest.clone();
    claimed[2].identity = impostor.x_only_public_key().0;
    let mut eps = LocalNetwork::session(3).into_iter();
    let links = vec![
        SecureLink::new(eps.next().unwrap(), &ids[0], eid, &honest).unwrap(),
        SecureLink::new(eps.next().unwrap(), &ids[1], eid, &honest).unwrap(),
        SecureLink::new(eps.next().unwrap(), &impostor, eid, &claimed).unwrap(),
    ];
    let g = &*GROUP_2OF3;
    let futs: Vec<BoxFut<'_, tandem_custody::Result<_>>> = g
        .parties
        .iter()
        .zip(links)
        .map(|(p, link)| Box::pin(p.keygen(eid, link)) as BoxFut<'_, tandem_custody::Result<_>>)
        .collect();
    let results = run_parties(futs);
    assert!(results.iter().all(|r| r.is_err()));
    assert!(results[..2].iter().any(|r| matches!(
        r.as_ref().unwrap_err().transport_violation(),
        Some(TransportError::Unauthenticated { sender: 2, .. })
    )));
}
