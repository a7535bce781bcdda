//! The `[byzantine]` config section (TEST ONLY, cargo feature `byzantine`): which misbehaviours
//! a node's Byzantine layer (`consensus_shard::byzantine`, and the net shard's
//! `net::tamper`) carries out, and the seed of its choices.

use std::collections::BTreeSet;

/// One way of misbehaving.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Behaviour {
    /// Two different proposals for one slot.
    Equivocate,
    /// Two different votes for one slot.
    DoubleVote,
    /// Corrupted signatures.
    BadSignature,
    /// Signed messages for heights far and a bit ahead.
    FutureHeight,
    /// Finalized blocks sent with other transactions under their certified header.
    TamperBodies,
    /// Bursts of validly signed work for the others (far rounds, stale and forged messages).
    Flood,
}

impl Behaviour {
    /// Every behaviour.
    pub const ALL: [Behaviour; 6] = [
        Behaviour::Equivocate,
        Behaviour::DoubleVote,
        Behaviour::BadSignature,
        Behaviour::FutureHeight,
        Behaviour::TamperBodies,
        Behaviour::Flood,
    ];

    /// Its name in the config.
    pub fn name(self) -> &'static str {
        match self {
            Behaviour::Equivocate => "equivocate",
            Behaviour::DoubleVote => "double-vote",
            Behaviour::BadSignature => "bad-signature",
            Behaviour::FutureHeight => "future-height",
            Behaviour::TamperBodies => "tamper-bodies",
            Behaviour::Flood => "flood",
        }
    }

    /// The behaviour named `name`.
    pub fn from_name(name: &str) -> Option<Behaviour> {
        Behaviour::ALL.into_iter().find(|b| b.name() == name)
    }
}

/// What the node's `[byzantine]` section asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ByzantineSettings {
    /// The behaviours (at least one).
    pub behaviours: BTreeSet<Behaviour>,
    /// Seed of the layer's choices.
    pub seed: u64,
}
