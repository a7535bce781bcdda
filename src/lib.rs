//! corecell: a thread-per-core node for a Klaytn-style layered BFT blockchain.
//!
//! The library holds everything the `corecell` binary is made of, in floors: a module imports
//! only the floors below it (`tests/layers.rs` checks it; `ARCHITECTURE.md` draws it).
//!
//! - Ground floor: [`types`] (chain and wire types, rkyv, validated on access; the frame
//!   envelope; hashes), [`crypto`] (BLS12-381 signatures and certificates, proposer/committee
//!   election, Ethereum transactions and sender recovery), [`config`] (keys, genesis, node
//!   configs, roles and shards, the wall clock).
//! - [`consensus`]: the sans-IO IBFT core (the validator's machine and the follower), driven
//!   by the node and by the simulator alike.
//! - [`runtime`]: the shard runtime (glommio executors placed on CPUs, lock-free links).
//! - The rooms, one per shard: [`store`] (block log, WAL, fsync), [`exec`] (pools, execution,
//!   the chain index and its query door), [`net`] (peer links, relay, ingress, bootnodes),
//!   [`consensus_shard`] (drives the core: a CN's machine or a PN's/EN's follower), and
//!   [`rpc`] (the EN's JSON-RPC thread).
//! - The wiring: [`node`] (a node's start-up input, its shards and links started, metrics).
//! - Tools: [`sim`] (the deterministic simulator), [`bench`](mod@bench) (`testnet`, `bench`, reports),
//!   [`fuzz_entry`] (the fuzz targets' bodies, replayed by `tests/fuzz_corpus.rs`).

pub mod bench;
pub mod config;
pub mod consensus;
pub mod consensus_shard;
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
