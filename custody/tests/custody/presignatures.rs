//! A presignature signs at most once, also across a restart of the file-backed store.

use tandem_custody::{
    combine_partial_signatures, CustodyError, ExecutionId, FilePresignatureStore, Keyring, MasterKey, PartyRole,
    PresignatureStore,
};

use crate::common::*;

#[test]
fn presignature_is_single_use_across_restart() {
    let g = &*GROUP_2OF3;
    let keys = g.keygen();
    let (funding, spend) = funding_and_spend(&keys[0].script_pubkey());
    let signers = [PartyRole::Wallet, PartyRole::CoSigner];
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let rings: Vec<Keyring> = (0..3).map(|_| Keyring::new(MasterKey::generate())).collect();
    let open = |i: usize| FilePresignatureStore::open(dirs[i].path(), rings[i].clone()).unwrap();
    let stores: Vec<FilePresignatureStore> = (0..3).map(open).collect();

    // Two presignatures for the same key and signer set.
    let mut ids = Vec::new();
    for _ in 0..2 {
        let eid = ExecutionId::random();
        let futs: Vec<BoxFut<'_, tandem_custody::Result<_>>> = signer_endpoints(&signers)
            .into_iter()
            .map(|(r, ep)| {
                let i = r.index() as usize;
                Box::pin(g.party(r).generate_presignature(&keys[i], &signers, eid, ep, &stores[i])) as BoxFut<'_, tandem_custody::Result<_>>
            })
            .collect();
        for r in run_parties(futs) {
            r.expect("presign");
        }
        ids.push(eid);
    }
    let wallet = PartyRole::Wallet.index() as usize;
    let cosigner = PartyRole::CoSigner.index() as usize;
    let mut avail = stores[wallet].available(&keys[0].public_key).unwrap();
    avail.sort();
    let mut expected = ids.clone();
    expected.sort();
    assert_eq!(avail, expected);

    // Use the first one.
    let p_w = g.party(PartyRole::Wallet).issue_partial_signature(&keys[wallet], &stores[wallet], ids[0], &spend, input0()).unwrap();
    let p_c = g.party(PartyRole::CoSigner).issue_partial_signature(&keys[cosigner], &stores[cosigner], ids[0], &spend, input0()).unwrap();
    let sig = combine_partial_signatures(&keys[0].public(), &spend, input0(), &[p_w, p_c]).unwrap();
    verify_spend(&keys[0], &funding, &spend, &sig);

    // The wallet tries again with another transaction: refused.
    let mut other = spend.clone();
    other.output[0].value = bitcoin::Amount::from_sat(5_000);
    let again = g.party(PartyRole::Wallet).issue_partial_signature(&keys[wallet], &stores[wallet], ids[0], &other, input0());
    assert!(matches!(again, Err(CustodyError::PresignatureAlreadyUsed(id)) if id == ids[0]), "{again:?}");

    // Simulated restart: drop and re-open every store.
    drop(stores);
    let stores: Vec<FilePresignatureStore> = (0..3).map(open).collect();
    assert!(stores[wallet].is_used(&ids[0]).unwrap());
    assert_eq!(stores[wallet].available(&keys[0].public_key).unwrap(), vec![ids[1]]);
    let again = g.party(PartyRole::Wallet).issue_partial_signature(&keys[wallet], &stores[wallet], ids[0], &other, input0());
    assert!(matches!(again, Err(CustodyError::PresignatureAlreadyUsed(_))), "{again:?}");
    // Re-inserting a used presignature is refused too (a restored backup cannot revive it).
    assert!(stores[wallet].consume(&ids[0]).is_err());

    // The unused one still works after the restart.
    let p_w = g.party(PartyRole::Wallet).issue_partial_signature(&keys[wallet], &stores[wallet], ids[1], &other, input0()).unwrap();
    let p_c = g.party(PartyRole::CoSigner).issue_partial_signature(&keys[cosigner], &stores[cosigner], ids[1], &other, input0()).unwrap();
    let sig = combine_partial_signatures(&keys[0].public(), &other, input0(), &[p_w, p_c]).unwrap();
    verify_spend_other(&keys[0], &funding, &other, &sig);

    // Stored presignatures are sealed: wrong master key cannot read them.
    let eid = ExecutionId::random();
    let futs: Vec<BoxFut<'_, tandem_custody::Result<_>>> = signer_endpoints(&signers)
        .into_iter()
        .map(|(r, ep)| {
            let i = r.index() as usize;
            Box::pin(g.party(r).generate_presignature(&keys[i], &signers, eid, ep, &stores[i])) as BoxFut<'_, tandem_custody::Result<_>>
        })
        .collect();
    for r in run_parties(futs) {
        r.expect("presign");
    }
    drop(stores);
    let wrong = FilePresignatureStore::open(dirs[wallet].path(), Keyring::new(MasterKey::generate()));
    assert!(matches!(wrong, Err(CustodyError::UnknownMasterKey { .. })), "{wrong:?}");
}

/// `verify_spend` for a transaction whose only output differs from the default spend.
fn verify_spend_other(
    key: &tandem_custody::VaultKey,
    funding: &bitcoin::Transaction,
    spend: &bitcoin::Transaction,
    sig: &tandem_custody::InputSignature,
) {
    let mut signed = spend.clone();
    sig.apply_to_tx(&mut signed, 0).unwrap();
    bitcoinconsensus::verify(
        funding.output[0].script_pubkey.as_bytes(),
        PREVOUT_SAT,
        &bitcoin::consensus::serialize(&signed),
        None,
        0,
    )
    .expect("consensus");
    assert_eq!(sig.public_key, key.public_key);
}

#[test]
fn torn_used_log_is_recovered() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let ring = Keyring::new(MasterKey::generate());
    let id = ExecutionId::random();
    {
        let mut f = std::fs::OpenOptions::new().create(true).append(true).open(dir.path().join("used.log")).unwrap();
        writeln!(f, "{}", id.to_hex()).unwrap();
        // A crash in the middle of the next append.
        write!(f, "{}", &ExecutionId::random().to_hex()[..20]).unwrap();
    }
    let store = FilePresignatureStore::open(dir.path(), ring.clone()).unwrap();
    assert!(store.is_used(&id).unwrap());
    drop(store);
    let text = std::fs::read_to_string(dir.path().join("used.log")).unwrap();
    assert_eq!(text, format!("{}\n", id.to_hex()));
}
