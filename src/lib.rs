//! corecell: a thread-per-core node for a Klaytn-style layered BFT blockchain.
//!
//! The library holds everything the `corecell` binary is made of:
//! - [`types`]: chain and wire types (rkyv, validated on access) and the frame envelope;
//! - [`crypto`]: hashes, BLS12-381 signatures and certificates, proposer/committee election,
//!   Ethereum transaction decoding and sender recovery;
//! - [`node`]: node keys, genesis and per-node configuration;
//! - [`rpc`]: Ethereum JSON-RPC served by an endpoint node, bridged to the exec shard;
//! - [`fuzz_entry`]: the fuzz targets' bodies (`fuzz/`), replayed by `tests/fuzz_corpus.rs`.
//!
//! See `DESIGN.md` in the shared folder for the architecture this grows into.

pub mod bench;
pub mod consensus;
pub mod crypto;
pub mod exec;
pub mod fuzz_entry;
pub mod net;
pub mod node;
pub mod rpc;
pub mod runtime;
pub mod sim;
pub mod store;
pub mod types;
