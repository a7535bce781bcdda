//! The deterministic simulator: many IBFT machines on a virtual network, with faults,
//! Byzantine actors and invariant checkers.
//!
//! # Job
//! Drive real [`crate::consensus::Machine`]s (the same code the node runs) through thousands of
//! seeded runs in which the network loses, duplicates, delays and reorders messages, partitions
//! (both ways or one way) and heals, nodes crash and restart from their durable WAL and chain,
//! and up to `f = max_faulty(committee)` council members are Byzantine; and check after every
//! step that the protocol stays safe, and after the faults heal that it makes progress.
//!
//! # Determinism
//! A run is a pure function of its options (scenario, seed, sizes, heights, block period,
//! weakening, scheme). All randomness comes from the simulator's own PRNG ([`rng`], xoshiro256**
//! seeded through splitmix64, one independent stream per purpose); time is virtual; events are
//! ordered by `(time, sequence number)` ([`queue`]); nothing that affects a run iterates a hash
//! map. Every delivered event (and every commit, rejection, evidence and sync request it
//! causes) is hashed into a trace fingerprint ([`trace`]); the tests check that a seed always
//! gives the same fingerprint and that different seeds differ. A run is replayable for a given
//! machine: changing the machine changes the runs.
//!
//! # Driver contract
//! [`world`] carries out the machine's effects in order: `Persist` appends to the node's
//! durable WAL, `Commit` to its durable chain (both survive crashes), `Schedule` delivers a
//! timer at its time, `BuildBlock`/`VerifyBlock` are answered after 1-5 ms by the stand-in
//! executor ([`exec`]), `RequestSync` is answered by the peer (through the network) with up to
//! 64 blocks of its durable chain, `OfferSync` makes the node itself send those blocks to the
//! lagging peer, `Broadcast`/`SendTo` go through the network model ([`net`]).
//! A crash drops the machine and everything in flight to it (between two inputs, or in the
//! middle of an effect batch: what was persisted by then survives, the rest of the batch is
//! lost); a restart builds a new machine from the last durable block and the WAL records above
//! it.
//!
//! # Invariants ([`checker`])
//! - agreement: no two honest nodes finalize different blocks at one height;
//! - validity: each finalized block extends its parent, its header follows the election
//!   (committee digest, elected proposer, randao reveal, mix), its contents are valid, and its
//!   commit certificate is for exactly this block, signed by a quorum of the committee elected
//!   for its height from the parent's mix, with an aggregate that verifies;
//! - no honest node is ever named in evidence;
//! - honest nodes commit heights in order;
//! - liveness: after the heal time `T`, every honest node reaches (highest honest height at
//!   `T`) + K within `T + K * 4 s` of virtual time (and a run may not exceed its event budget:
//!   a message storm is a liveness failure);
//! - no panic: a panic inside a run (a machine assertion) is caught and reported.
//!
//! # Scenarios ([`scenario`]) and Byzantine actors ([`byzantine`])
//! `honest`, `lossy`, `partition`, `asymmetric`, `crash-restart`, `equivocating-proposer`,
//! `double-voter`, `twins`, `silent-proposer`, `invalid-signatures`, `outside-committee`,
//! `stale-future`, or `all`. Each draws its sizes (unless `--council`/`--committee` fix them),
//! faults and heal time from the seed.
//!
//! # Replaying a seed
//! A failing run prints its replay command, e.g.
//!
//! ```text
//! corecell sim --scenario partition --seed 1234 --heights 50 --trace
//! ```
//!
//! which reruns exactly that run and prints its event trace (one line per delivered event:
//! virtual time, node, what arrived) followed by the report. The checker self-test runs with
//! `--weaken quorum-minus-one,no-lock` (deliberately broken machines) and must find violations.

pub mod batch;
pub mod byzantine;
pub mod checker;
pub mod exec;
pub mod instant;
pub mod net;
pub mod queue;
pub mod rng;
pub mod scenario;
pub mod trace;
pub mod world;

pub use batch::{run_batch, BatchOptions, BatchSummary};
pub use checker::{Violation, ViolationKind};
pub use scenario::{Behavior, Plan, Scenario};
pub use world::{run, RunOptions, RunReport, SchemeChoice};

#[cfg(test)]
mod tests;
