//! Load runs and benchmarks (`corecell testnet`, later `corecell bench`): the load generator,
//! the local network runner and their reports.
//!
//! - [`load`]: the open-loop `raw` load generator (ingress batches, finality from acks);
//! - [`testnet`]: a network of node processes on loopback under load, checked for agreement;
//! - [`report`]: latency histograms, the status line and the summary report.

pub mod load;
pub mod report;
pub mod testnet;
