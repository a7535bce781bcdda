//! Load runs and benchmarks (`corecell testnet`, later `corecell bench`): the load generator,
//! the local network runner and their reports.
//!
//! - [`load`]: the open-loop load generator, workloads `raw` (opaque transactions) and
//!   `transfer` (pre-signed Ethereum transfers between genesis test accounts): ingress
//!   batches, finality and refusals by reason from the nodes' acks;
//! - [`testnet`]: a network of node processes on loopback under load, checked for agreement;
//! - [`report`]: latency histograms, the status line and the summary report.

pub mod load;
pub mod report;
pub mod testnet;
