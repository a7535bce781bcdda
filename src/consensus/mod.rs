//! The sans-IO IBFT consensus core (doc being written).

pub mod machine;
pub mod scheme;
pub mod types;
pub mod votes;

pub use machine::{ConsensusConfig, Machine, Weakening};
pub use scheme::{BlsScheme, FastScheme, SignatureScheme};
pub use types::{Effect, Evidence, Input, Message, Millis, Rejection, Timer, WalRecord};

#[cfg(test)]
mod tests;
