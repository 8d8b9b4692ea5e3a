//! Fixture primes are refused unless allowed; aux info made from them stays marked.

use tandem_custody::primes::{fixture_primes, fixture_sets, PrimePool};
use tandem_custody::{
    CustodyConfig, CustodyError, ExecutionId, Keyring, LocalNetwork, MasterKey, Party, PartyRole, Policy,
    PrimesOrigin, SignerGroup,
};

use crate::common::*;

#[test]
fn fixture_primes_refused_unless_allowed() {
    assert!(fixture_sets() >= 2);
    let p = fixture_primes(0, PartyRole::Wallet).unwrap();
    assert_eq!(p.origin(), PrimesOrigin::Fixture);
    assert!(matches!(p.into_checked(false), Err(CustodyError::FixturePrimesRefused)));
    assert!(fixture_primes(0, PartyRole::Wallet).unwrap().into_checked(true).is_ok());
    assert!(!format!("{:?}", fixture_primes(0, PartyRole::Wallet).unwrap()).chars().any(|c| c.is_ascii_digit()));

    // A production party refuses them before any session starts.
    let group = SignerGroup::new(Policy::TwoOfTwo);
    let mut party = Party::new(group.clone(), PartyRole::Wallet, CustodyConfig::production()).unwrap();
    let ep = LocalNetwork::session(2).remove(0);
    let r = run_parties(vec![Box::pin(party.generate_aux_info(
        ExecutionId::random(),
        fixture_primes(1, PartyRole::Wallet).unwrap(),
        ep,
    )) as BoxFut<'_, tandem_custody::Result<_>>]);
    assert!(matches!(r[0], Err(CustodyError::FixturePrimesRefused)));
    assert!(!CustodyConfig::default().allow_fixture_primes);

    // Aux info generated from fixtures keeps the mark; a production party will not load it.
    let aux = GROUP_2OF3.party(PartyRole::Wallet).aux_info().unwrap().clone();
    assert_eq!(aux.primes_origin, PrimesOrigin::Fixture);
    let r = Party::with_aux_info(GROUP_2OF3.group.clone(), PartyRole::Wallet, CustodyConfig::production(), aux.clone());
    assert!(matches!(r, Err(CustodyError::FixturePrimesRefused)));
    assert!(Party::with_aux_info(GROUP_2OF3.group.clone(), PartyRole::Wallet, CustodyConfig::demo(), aux.clone()).is_ok());
    // Nor can it be loaded as another party's or another group's.
    assert!(Party::with_aux_info(GROUP_2OF3.group.clone(), PartyRole::Provider, CustodyConfig::demo(), aux.clone()).is_err());
    assert!(Party::with_aux_info(SignerGroup::new(Policy::TwoOfThree), PartyRole::Wallet, CustodyConfig::demo(), aux).is_err());
}

#[test]
fn prime_pool_hands_out_each_pair_once() {
    let dir = tempfile::tempdir().unwrap();
    let ring = Keyring::new(MasterKey::generate());
    let pool = PrimePool::open(dir.path(), ring.clone()).unwrap();
    assert_eq!(pool.len(), 0);
    assert!(pool.take().unwrap().is_none());
    // Pool entries are sealed; put two (fixture values stand in for generated ones here).
    pool.put(&fixture_primes(1, PartyRole::Wallet).unwrap()).unwrap();
    pool.put(&fixture_primes(1, PartyRole::Provider).unwrap()).unwrap();
    assert_eq!(pool.len(), 2);
    // Survives re-opening (persistent).
    drop(pool);
    let pool = PrimePool::open(dir.path(), ring).unwrap();
    assert_eq!(pool.len(), 2);
    let a = pool.take().unwrap().unwrap();
    assert_eq!(a.origin(), PrimesOrigin::Generated);
    assert_eq!(pool.len(), 1);
    let _b = pool.take().unwrap().unwrap();
    assert!(pool.take().unwrap().is_none());
    // Wrong master key cannot read pool entries.
    let pool2 = PrimePool::open(dir.path(), Keyring::new(MasterKey::generate())).unwrap();
    pool2.put(&fixture_primes(1, PartyRole::CoSigner).unwrap()).unwrap();
    let pool3 = PrimePool::open(dir.path(), Keyring::new(MasterKey::generate())).unwrap();
    assert!(pool3.take().is_err());
}

/// Generates one real pair in the background (tens of seconds on this machine): opt-in.
#[test]
#[ignore = "slow: generates safe primes (run with --ignored)"]
fn prime_pool_fill_generates_in_background() {
    let dir = tempfile::tempdir().unwrap();
    let pool = PrimePool::open(dir.path(), Keyring::new(MasterKey::generate())).unwrap();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let s2 = seen.clone();
    let h = pool.fill(1, move |p| s2.lock().unwrap().push((p.len, p.target))).unwrap();
    assert_eq!(h.join().unwrap().unwrap(), 1);
    assert_eq!(*seen.lock().unwrap(), vec![(1, 1)]);
    assert_eq!(pool.take().unwrap().unwrap().origin(), PrimesOrigin::Generated);
}
