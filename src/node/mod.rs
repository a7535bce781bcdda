//! The wiring: a whole node built from the rooms below it. Nothing below this floor imports
//! it (only `main` and the tools `bench` and `fuzz_entry` do).
//!
//! - [`setup`]: a node's whole start-up input (config, genesis, key), loaded and cross-checked.
//! - [`run`]: starts a CN, PN or EN: its shards, the links between them, the RPC and metrics
//!   threads, and the shutdown.
//! - [`bootnode_run`]: starts a bootnode.
//! - [`metrics`]: the Prometheus endpoint over the shards' counters.
//! - [`topology`]: the shards of each role and the links between them, as data.

pub mod bootnode_run;
pub mod metrics;
pub mod run;
pub mod setup;
pub mod topology;

#[cfg(test)]
pub(crate) mod tests;
