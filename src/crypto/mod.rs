//! Cryptography: BLS signatures and certificates, election, transactions. The hashes
//! (keccak-256 for identity, xxh3 for checksums) are a ground type: [`crate::types::hash`].
//!
//! - [`bls`]: BLS12-381 `min_pk` with the proof-of-possession scheme and one domain tag per purpose.
//! - [`election`]: randao reveals, the mix, and the deterministic committee/proposer shuffle.
//! - [`tx`]: Ethereum signed transactions (EIP-2718 envelopes) and sender recovery.

pub mod bls;
pub mod election;
pub mod tx;
