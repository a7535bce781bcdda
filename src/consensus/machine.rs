//! The IBFT state machine (stub: being written).

use super::scheme::SignatureScheme;
use super::types::{Effect, Input, Millis, WalRecord};
use crate::types::{BlockHeader, CouncilIndex, Height, Round};

/// Consensus parameters (from the genesis and the node config).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsensusConfig {
    /// Chain id bound into every signature.
    pub chain_id: u64,
    /// Council size.
    pub council_size: usize,
    /// Committee size per height.
    pub committee_size: usize,
    /// Target block period.
    pub block_period_ms: u64,
    /// Timeout of round 0 after the proposal time; round `r` waits `base * 2^r`, capped.
    pub round_timeout_base_ms: u64,
    /// Cap of the round timeout.
    pub round_timeout_max_ms: u64,
    /// Test-only protocol weakenings that let the simulator prove its checkers can fail.
    pub weakening: Weakening,
}

/// Deliberate protocol bugs for testing the checkers. Never set outside tests and `sim`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Weakening {
    /// Accept certificates and quorums one vote short.
    pub quorum_minus_one: bool,
    /// Ignore the prepared value (the lock) when proposing after a round change, and accept
    /// unjustified proposals.
    pub no_lock: bool,
}

/// The consensus machine of one council member.
#[derive(Debug)]
pub struct Machine<S> {
    scheme: S,
    config: ConsensusConfig,
    me: CouncilIndex,
    head: BlockHeader,
    height: Height,
    round: Round,
}

impl<S: SignatureScheme> Machine<S> {
    /// A machine for council member `me` whose last finalized block is `head`, resuming from
    /// the records in `wal` (empty on first start). Returns the effects of starting.
    pub fn new(
        config: ConsensusConfig,
        scheme: S,
        me: CouncilIndex,
        head: BlockHeader,
        wal: &[WalRecord],
        now: Millis,
    ) -> (Machine<S>, Vec<Effect>) {
        let _ = (wal, now);
        let height = head.height + 1;
        (
            Machine {
                scheme,
                config,
                me,
                head,
                height,
                round: 0,
            },
            Vec::new(),
        )
    }

    /// Feeds one input; returns what the driver must do, in order.
    pub fn handle(&mut self, now: Millis, input: Input) -> Vec<Effect> {
        let _ = (now, input, &self.scheme, &self.config, self.me);
        Vec::new()
    }

    /// The height being decided.
    pub fn height(&self) -> Height {
        self.height
    }

    /// The current round.
    pub fn round(&self) -> Round {
        self.round
    }

    /// The last finalized header.
    pub fn head(&self) -> &BlockHeader {
        &self.head
    }
}
