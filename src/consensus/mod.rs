//! The sans-IO IBFT consensus core (being written).

pub mod machine;
pub mod scheme;
pub mod types;

pub use machine::{ConsensusConfig, Machine, Weakening};
pub use scheme::{BlsScheme, FastScheme, SignatureScheme};
pub use types::{Effect, Evidence, Input, Message, Millis, Rejection, Timer, WalRecord};
