//! Load runs and benchmarks (`corecell testnet`, `corecell testnet --sweep`, `corecell bench`):
//! the load generator, the local network runner, the runner against a running network, and
//! their reports.
//!
//! - [`load`]: the open-loop load generator, workloads `raw` (opaque transactions) and
//!   `transfer` (pre-signed Ethereum transfers between genesis test accounts): ingress
//!   batches, finality and refusals by reason from the nodes' acks;
//! - [`drive`]: the measuring loop `testnet` and `bench` share (status line a second, the
//!   load's figures at the end, the generator's lag);
//! - [`testnet`]: a network of node processes on loopback under load, checked for agreement;
//! - [`sweep`]: `testnet` at several offered rates in turn, with a table, JSON and a plot;
//! - [`remote`]: `corecell bench`, the load generator against a network already running here
//!   or on other machines;
//! - [`report`]: latency histograms, the status line and the summary report;
//! - [`svg`]: the small SVG line-chart writer the sweep plots with.

pub mod drive;
pub mod load;
pub mod remote;
pub mod report;
pub mod svg;
pub mod sweep;
pub mod testnet;
