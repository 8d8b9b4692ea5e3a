//! Integration tests of the custody core. One test binary, so the expensive aux info
//! generation (from fixture primes) runs once per signer group and is shared by all tests.

mod common;
mod faults;
mod presignatures;
mod secure;
mod primes;
mod shares;
mod signing;
