//! Keygen and signing: every signing pair of 2-of-3, and 2-of-2, with and without
//! presignatures; each signature checked by libsecp256k1 and Bitcoin Core's interpreter.

use tandem_custody::{
    combine_partial_signatures, CustodyError, ExecutionId, InputSignature, MemoryPresignatureStore, PartyRole,
    PresignatureRef, PresignatureStore,
};

use crate::common::*;

/// Full interactive signing of input 0 of `spend` by `signers`.
fn sign_interactive(g: &TestGroup, keys: &[tandem_custody::VaultKey], signers: &[PartyRole], spend: &bitcoin::Transaction) -> InputSignature {
    let eid = ExecutionId::random();
    let futs: Vec<BoxFut<'_, tandem_custody::Result<_>>> = signer_endpoints(signers)
        .into_iter()
        .map(|(role, ep)| {
            let party = g.party(role);
            let key = &keys[role.index() as usize];
            Box::pin(party.sign_input(key, signers, eid, spend, input0(), ep)) as BoxFut<'_, tandem_custody::Result<_>>
        })
        .collect();
    let sigs: Vec<InputSignature> = run_parties(futs).into_iter().map(|r| r.expect("signing")).collect();
    // Every signer ends with the same signature.
    assert!(sigs.windows(2).all(|w| w[0] == w[1]));
    sigs[0]
}

/// Presignature generation by `signers`, then one-round signing and combining.
fn sign_with_presignature(
    g: &TestGroup,
    keys: &[tandem_custody::VaultKey],
    signers: &[PartyRole],
    spend: &bitcoin::Transaction,
) -> InputSignature {
    let stores: Vec<MemoryPresignatureStore> = (0..3).map(|_| MemoryPresignatureStore::new()).collect();
    let eid = ExecutionId::random();
    let futs: Vec<BoxFut<'_, tandem_custody::Result<_>>> = signer_endpoints(signers)
        .into_iter()
        .map(|(role, ep)| {
            let party = g.party(role);
            let key = &keys[role.index() as usize];
            let store = &stores[role.index() as usize];
            Box::pin(party.generate_presignature(key, signers, eid, ep, store)) as BoxFut<'_, tandem_custody::Result<_>>
        })
        .collect();
    let ids: Vec<_> = run_parties(futs).into_iter().map(|r| r.expect("presignature generation")).collect();
    assert!(ids.iter().all(|id| *id == eid));
    for r in signers {
        assert_eq!(stores[r.index() as usize].available(&keys[0].public_key).unwrap(), vec![eid]);
    }

    let partials: Vec<_> = signers
        .iter()
        .map(|r| {
            let i = r.index() as usize;
            g.party(*r).issue_partial_signature(&keys[i], &stores[i], eid, spend, input0()).expect("partial signature")
        })
        .collect();
    // Second use of any presignature is refused.
    for r in signers {
        let i = r.index() as usize;
        let again = g.party(*r).issue_partial_signature(&keys[i], &stores[i], eid, spend, input0());
        assert!(matches!(again, Err(CustodyError::PresignatureAlreadyUsed(_))), "{again:?}");
    }
    // A single partial is not enough; partials for another transaction do not combine.
    assert!(combine_partial_signatures(&keys[0].public(), spend, input0(), &partials[..1]).is_err());
    let mut other = spend.clone();
    other.output[0].value = bitcoin::Amount::from_sat(1);
    assert!(matches!(
        combine_partial_signatures(&keys[0].public(), &other, input0(), &partials),
        Err(CustodyError::SignatureInvalid)
    ));
    // Order of partials does not matter.
    let mut reversed = partials.clone();
    reversed.reverse();
    let a = combine_partial_signatures(&keys[0].public(), spend, input0(), &partials).expect("combine");
    let b = combine_partial_signatures(&keys[0].public(), spend, input0(), &reversed).expect("combine");
    assert_eq!(a, b);
    a
}

#[test]
fn two_of_three_every_pair_signs_with_and_without_presignatures() {
    let g = &*GROUP_2OF3;
    let keys = g.keygen();
    assert_eq!(keys.len(), 3);
    assert!(keys.iter().all(|k| k.public_key == keys[0].public_key && k.threshold() == 2));
    let (funding, spend) = funding_and_spend(&keys[0].script_pubkey());
    for signers in g.group.signing_sets() {
        let sig = sign_interactive(g, &keys, &signers, &spend);
        verify_spend(&keys[0], &funding, &spend, &sig);
        let sig = sign_with_presignature(g, &keys, &signers, &spend);
        verify_spend(&keys[0], &funding, &spend, &sig);
        eprintln!("signers {signers:?}: ok");
    }
}

#[test]
fn two_of_two_keygen_and_signing() {
    let g = &*GROUP_2OF2;
    let keys = g.keygen();
    assert_eq!(keys.len(), 2);
    assert_eq!(keys[0].public_key, keys[1].public_key);
    let (funding, spend) = funding_and_spend(&keys[0].script_pubkey());
    let signers = [PartyRole::Wallet, PartyRole::Provider];
    let sig = sign_interactive(g, &keys, &signers, &spend);
    verify_spend(&keys[0], &funding, &spend, &sig);
    let sig = sign_with_presignature(g, &keys, &signers, &spend);
    verify_spend(&keys[0], &funding, &spend, &sig);
}

#[test]
fn every_address_is_its_own_key() {
    let g = &*GROUP_2OF3;
    let a = g.keygen();
    let b = g.keygen();
    assert_ne!(a[0].public_key, b[0].public_key);
    assert_ne!(a[0].address(bitcoin::Network::Bitcoin), b[0].address(bitcoin::Network::Bitcoin));
    assert!(a[0].address(bitcoin::Network::Bitcoin).to_string().starts_with("bc1q"));
}

#[test]
fn psbt_signing_checks_witness_utxo() {
    let g = &*GROUP_2OF3;
    let keys = g.keygen();
    let (funding, spend) = funding_and_spend(&keys[0].script_pubkey());
    let mut psbt = bitcoin::psbt::Psbt::from_unsigned_tx(spend.clone()).unwrap();
    psbt.inputs[0].witness_utxo = Some(funding.output[0].clone());
    let signers = [PartyRole::Wallet, PartyRole::Provider];
    let eid = ExecutionId::random();
    let futs: Vec<BoxFut<'_, tandem_custody::Result<_>>> = signer_endpoints(&signers)
        .into_iter()
        .map(|(role, ep)| {
            Box::pin(g.party(role).sign_input(&keys[role.index() as usize], &signers, eid, &psbt, input0(), ep))
                as BoxFut<'_, tandem_custody::Result<_>>
        })
        .collect();
    let sig = run_parties(futs).pop().unwrap().expect("PSBT signing");
    verify_spend(&keys[0], &funding, &spend, &sig);
    sig.apply_to_psbt(&mut psbt, 0).unwrap();
    assert_eq!(psbt.inputs[0].partial_sigs.len(), 1);

    // A PSBT lying about the amount is refused before any session starts.
    let mut lying = psbt.clone();
    lying.inputs[0].witness_utxo.as_mut().unwrap().value = bitcoin::Amount::from_sat(1);
    let ep = signer_endpoints(&signers).remove(0).1;
    let err = run_parties(vec![Box::pin(g.party(PartyRole::Wallet).sign_input(
        &keys[0],
        &signers,
        ExecutionId::random(),
        &lying,
        input0(),
        ep,
    )) as BoxFut<'_, tandem_custody::Result<_>>])
    .pop()
    .unwrap()
    .unwrap_err();
    assert!(matches!(err, CustodyError::Transaction(_)), "{err}");
}

/// One-round signing over a link: each signer burns its presignature, sends its partial, and
/// combines; both end with the same valid signature. A second attempt with the same
/// presignature fails before anything is sent.
#[test]
fn presigned_signing_over_a_link_gives_every_signer_the_signature() {
    let g = &*GROUP_2OF2;
    let keys = g.keygen();
    let (funding, spend) = funding_and_spend(&keys[0].script_pubkey());
    let signers = [PartyRole::Wallet, PartyRole::Provider];
    let stores: Vec<MemoryPresignatureStore> = (0..2).map(|_| MemoryPresignatureStore::new()).collect();
    let pid = ExecutionId::random();
    let futs: Vec<BoxFut<'_, tandem_custody::Result<_>>> = signer_endpoints(&signers)
        .into_iter()
        .map(|(role, ep)| {
            let i = role.index() as usize;
            Box::pin(g.party(role).generate_presignature(&keys[i], &signers, pid, ep, &stores[i])) as BoxFut<'_, _>
        })
        .collect();
    run_parties(futs).into_iter().for_each(|r| {
        r.expect("presignature");
    });

    let sign = |eid: ExecutionId| {
        let futs: Vec<BoxFut<'_, tandem_custody::Result<InputSignature>>> = signer_endpoints(&signers)
            .into_iter()
            .map(|(role, ep)| {
                let i = role.index() as usize;
                let store = PresignatureRef { store: &stores[i], id: pid };
                Box::pin(g.party(role).sign_input_presigned(&keys[i], store, &signers, eid, &spend, input0(), ep))
                    as BoxFut<'_, _>
            })
            .collect();
        run_parties(futs)
    };
    let sigs: Vec<InputSignature> = sign(ExecutionId::random()).into_iter().map(|r| r.expect("one round")).collect();
    assert_eq!(sigs[0], sigs[1]);
    verify_spend(&keys[0], &funding, &spend, &sigs[0]);
    // Again with the same presignature: the first signer finds it used and says so; the other
    // never gets to burn anything.
    let again = sign(ExecutionId::random());
    assert!(matches!(again[0], Err(CustodyError::PresignatureAlreadyUsed(_))), "{:?}", again[0]);
    assert!(matches!(&again[1], Err(CustodyError::Protocol { .. })), "{:?}", again[1]);
}
