//! Cryptography: hashes, BLS signatures and certificates, election, transactions.
//!
//! - [`hash`]: keccak-256 for identity (blocks, transactions), xxh3 for checksums and dedup keys.
//! - [`bls`]: BLS12-381 `min_pk` with the proof-of-possession scheme and one domain tag per purpose.
//! - [`election`]: randao reveals, the mix, and the deterministic committee/proposer shuffle.
//! - [`tx`]: Ethereum signed transactions (EIP-2718 envelopes) and sender recovery.

pub mod bls;
pub mod election;
pub mod hash;
pub mod tx;
