//! The IBFT state machine of one council member. See the module doc of [`crate::consensus`]
//! for the protocol rules this implements.

use std::collections::{BTreeMap, BTreeSet};

use super::finality;
use super::scheme::SignatureScheme;
use super::types::{
    Effect, Evidence, EvidenceKind, Input, Message, Millis, Rejection, Timer, WalRecord,
};
use super::votes::{Added, VoteSet};
use crate::crypto::bls::Domain;
use crate::crypto::election::{self, Committee};
use crate::types::chain::SignedTransaction;
use crate::types::hash::Hash32;
use crate::types::{
    signers, Block, BlockHeader, CouncilIndex, FinalizedBlock, Height, Proposal, QuorumCertificate,
    Round, RoundChange, Vote, VoteKind,
};

/// Heights ahead of the current one whose messages are buffered.
pub const MAX_FUTURE_HEIGHTS: u64 = 64;
/// Buffered messages per future height.
pub const MAX_FUTURE_MESSAGES_PER_HEIGHT: usize = 4096;
/// Buffered messages per future height that name one signer (a proposal's proposer, a vote's
/// or round change's signer, a finalized block's proposer): one member cannot crowd the
/// others' early messages out of a height. An honest member sends about three per round.
pub const MAX_FUTURE_MESSAGES_PER_SIGNER: usize = 64;
/// Bytes of buffered future messages, all heights together (by [`approximate_bytes`]): a
/// member sending far-ahead proposals of maximal blocks cannot make the buffer grow past this.
pub const MAX_FUTURE_BYTES: usize = 256 * 1024 * 1024;
/// The least a member may hold of [`MAX_FUTURE_BYTES`], whatever the council's size: two
/// proposals of the largest block. A member's share is `MAX_FUTURE_BYTES / council size`, or
/// this if larger, so one member flooding the buffer leaves the others their share
/// ([`future_bytes_per_signer`]).
pub const MIN_FUTURE_BYTES_PER_SIGNER: usize = 2 * crate::types::frame::MAX_PROPOSAL_PAYLOAD;
/// Distinct peers asked for sync per height.
pub const MAX_SYNC_REQUESTS_PER_HEIGHT: usize = 3;
/// Sync offers to lagging peers per height (bounds what stale messages can make us send).
pub const MAX_SYNC_OFFERS_PER_HEIGHT: usize = 8;
/// Largest round a message may name (bounds timer arithmetic and vote maps).
pub const MAX_ROUND: Round = 1 << 20;
/// Round changes for rounds up to this far above the node's round are checked (a pairing)
/// when they arrive; those further up are kept unchecked (one per member, its highest) and
/// checked only when the f + 1 rule would follow them. Proposals and votes further up are
/// refused before any signature work (their round is not one this node can vote in; a
/// commit quorum decided there reaches this node as a finalized block).
pub const ROUND_WINDOW: Round = 16;
/// Round changes beyond [`ROUND_WINDOW`] one member may send per height; the rest are
/// refused ([`Rejection::FarRound`]). An honest member enters rounds at most once per round
/// timeout, so it sends a few per height at most, however far ahead it is.
pub const MAX_FAR_ROUND_CHANGES_PER_HEIGHT: u32 = 16;

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

impl ConsensusConfig {
    /// How long round `round` lasts: `min(base * 2^round, max)`.
    pub fn round_timeout(&self, round: Round) -> Millis {
        let factor = 1u64 << round.min(20);
        self.round_timeout_base_ms
            .saturating_mul(factor)
            .min(self.round_timeout_max_ms)
    }
}

/// Deliberate protocol bugs for testing the checkers. Never set outside tests and `sim`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Weakening {
    /// Accept certificates and quorums one vote short.
    pub quorum_minus_one: bool,
    /// Ignore the prepared value (the lock) when proposing after a round change, and accept
    /// proposals without checking their justification.
    pub no_lock: bool,
}

/// State of the height being decided; reset when a block is finalized.
#[derive(Debug, Default)]
struct HeightState {
    /// Highest prepared certificate held (the lock: `pr`, `pv` of the paper).
    prepared: Option<QuorumCertificate>,
    /// Accepted (valid, justified) proposal per round.
    proposals: BTreeMap<Round, Proposal>,
    /// Blocks seen in valid proposals, by hash.
    blocks: BTreeMap<Hash32, Block>,
    /// Block verification results from the driver.
    verified: BTreeMap<Hash32, bool>,
    /// Blocks sent for verification and not answered yet.
    verifying: BTreeSet<Hash32>,
    /// Votes per (round, kind).
    votes: BTreeMap<(Round, VoteKind), VoteSet>,
    /// Certificates already formed: later votes for them need no aggregate check.
    certified: BTreeSet<(Round, VoteKind, Hash32)>,
    /// Each member's highest round change (this node's own included), and whether it was
    /// checked: at most one per member, so the f + 1 rule and the proposer's quorum look at
    /// no more than the committee, however many rounds a member names.
    round_changes: BTreeMap<CouncilIndex, HeldRoundChange>,
    /// Round changes beyond [`ROUND_WINDOW`] received per member at this height.
    far_round_changes: BTreeMap<CouncilIndex, u32>,
    /// This node's own signed votes: (round, kind) -> hash. Never signs a different one.
    /// Restored from the WAL, which keeps only the hashes; the signed votes of this run are
    /// in `votes` (kept there verified, never replaced), whence a reconnecting peer gets them.
    sent: BTreeMap<(Round, VoteKind), Hash32>,
    /// Rounds this node proposed in.
    proposed: BTreeMap<Round, Hash32>,
    /// Rounds whose block this node asked the driver to build.
    building: BTreeSet<Round>,
    /// Rounds this node sent a round change for.
    round_changed: BTreeSet<Round>,
    /// A commit certificate whose block this node does not have yet.
    decided: Option<QuorumCertificate>,
    /// Signers already reported for equivocation, per (round, kind).
    evidenced: BTreeSet<(CouncilIndex, Round, EvidenceKind)>,
    /// Peers asked for sync at this height.
    sync_asked: BTreeSet<CouncilIndex>,
    /// Lagging peers offered sync at this height: (peer, their height, their round).
    sync_offered: BTreeSet<(CouncilIndex, Height, Round)>,
}

/// A member's highest round change at the current height.
#[derive(Debug, Clone, PartialEq, Eq)]
struct HeldRoundChange {
    rc: RoundChange,
    /// Its signature and prepared certificate were checked ([`Machine::check_round_change`]).
    checked: bool,
}

/// The consensus machine of one council member.
#[derive(Debug)]
pub struct Machine<S> {
    scheme: S,
    config: ConsensusConfig,
    me: CouncilIndex,
    /// The last finalized header.
    head: BlockHeader,
    /// The height being decided: `head.height + 1`.
    height: Height,
    round: Round,
    committee: Committee,
    state: HeightState,
    /// Messages for future heights, bounded.
    future: FutureBuffer,
    /// The driver's time at the input being handled.
    now: Millis,
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
        assert!(
            (me as usize) < config.council_size,
            "me outside the council"
        );
        assert!(config.committee_size >= 1 && config.round_timeout_base_ms >= 1);
        let height = head.height + 1;
        let committee = Committee::elect(
            config.council_size,
            config.committee_size,
            height,
            &head.mix,
        );
        let future = FutureBuffer::new(future_bytes_per_signer(config.council_size));
        let mut machine = Machine {
            scheme,
            config,
            me,
            head,
            height,
            round: 0,
            committee,
            state: HeightState::default(),
            future,
            now,
        };
        machine.restore(wal);
        let mut out = Vec::new();
        machine.start_height(now, &mut out);
        (machine, out)
    }

    /// The signature scheme.
    pub fn scheme(&self) -> &S {
        &self.scheme
    }

    /// Rebuilds what this node signed at its current height from the WAL.
    fn restore(&mut self, wal: &[WalRecord]) {
        for record in wal {
            match record {
                WalRecord::Voted {
                    kind,
                    height,
                    round,
                    block_hash,
                } if *height == self.height => {
                    self.state.sent.insert((*round, *kind), *block_hash);
                }
                WalRecord::Proposed { round, block } if block.header.height == self.height => {
                    self.state.proposed.insert(*round, block.hash());
                    self.state.verified.insert(block.hash(), true);
                    self.state.blocks.insert(block.hash(), block.clone());
                }
                WalRecord::RoundChanged { height, round } if *height == self.height => {
                    self.round = self.round.max(*round);
                    self.state.round_changed.insert(*round);
                }
                WalRecord::Prepared(cert)
                    if cert.height == self.height
                        && self
                            .state
                            .prepared
                            .as_ref()
                            .is_none_or(|p| p.round < cert.round) =>
                {
                    self.state.prepared = Some(cert.clone());
                }
                _ => {}
            }
        }
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

    /// This height's committee.
    pub fn committee(&self) -> &Committee {
        &self.committee
    }

    fn quorum(&self) -> usize {
        let q = self.committee.quorum();
        if self.config.weakening.quorum_minus_one {
            q.saturating_sub(1).max(1)
        } else {
            q
        }
    }

    fn in_committee(&self) -> bool {
        self.committee.contains(self.me)
    }

    /// When the proposer of round 0 may propose: the parent's time plus the block period.
    fn proposal_time(&self, now: Millis) -> Millis {
        now.max(
            self.head
                .timestamp_ms
                .saturating_add(self.config.block_period_ms),
        )
    }

    fn start_height(&mut self, now: Millis, out: &mut Vec<Effect>) {
        let propose_at = self.proposal_time(now);
        let round_end = if self.round == 0 {
            propose_at + self.config.round_timeout(0)
        } else {
            now + self.config.round_timeout(self.round)
        };
        out.push(Effect::Schedule {
            timer: Timer::Round {
                height: self.height,
                round: self.round,
            },
            at: round_end,
        });
        if self.round == 0 && self.committee.proposer(0) == self.me {
            out.push(Effect::Schedule {
                timer: Timer::Propose {
                    height: self.height,
                },
                at: propose_at,
            });
        }
        // Messages that arrived early for this height.
        for m in self.future.take_height(self.height) {
            self.on_message(now, m, out);
        }
    }

    /// Feeds one input; returns what the driver must do, in order.
    pub fn handle(&mut self, now: Millis, input: Input) -> Vec<Effect> {
        self.now = self.now.max(now);
        let now = self.now;
        let mut out = Vec::new();
        match input {
            Input::Timer(timer) => self.on_timer(now, timer, &mut out),
            Input::Message(m) => self.on_message(now, m, &mut out),
            Input::BlockBuilt {
                height,
                round,
                transactions,
                state_root,
            } => self.on_block_built(now, height, round, transactions, state_root, &mut out),
            Input::BlockVerified {
                height,
                block_hash,
                valid,
            } => self.on_block_verified(now, height, block_hash, valid, &mut out),
            Input::PeerConnected(peer) => self.on_peer_connected(peer, &mut out),
        }
        out
    }

    fn on_timer(&mut self, now: Millis, timer: Timer, out: &mut Vec<Effect>) {
        match timer {
            Timer::Propose { height } => {
                if height == self.height && self.round == 0 && self.committee.proposer(0) == self.me
                {
                    self.build_block(0, out);
                }
            }
            Timer::Round { height, round } => {
                if height != self.height || round != self.round {
                    return; // stale
                }
                // Stuck while others are ahead, or decided without the block: ask peers for
                // finalized blocks. Requests may be lost, so each timeout may ask again.
                self.state.sync_asked.clear();
                if let Some(cert) = &self.state.decided {
                    let signers: Vec<CouncilIndex> = signers::iter(&cert.signers).collect();
                    for peer in signers {
                        self.request_sync(peer, out);
                    }
                }
                let ahead: Vec<CouncilIndex> = self.future.signers().into_iter().collect();
                for peer in ahead {
                    self.request_sync(peer, out);
                }
                if self.in_committee() {
                    self.move_to_round(now, round + 1, out);
                } else {
                    // Observers follow rounds too, so their timers keep running.
                    self.round = round + 1;
                    out.push(Effect::Schedule {
                        timer: Timer::Round {
                            height: self.height,
                            round: self.round,
                        },
                        at: now + self.config.round_timeout(self.round),
                    });
                }
            }
        }
    }

    fn build_block(&mut self, round: Round, out: &mut Vec<Effect>) {
        if self.state.proposed.contains_key(&round) || !self.state.building.insert(round) {
            return;
        }
        out.push(Effect::BuildBlock {
            height: self.height,
            round,
            parent: self.head.clone(),
        });
    }

    fn on_block_built(
        &mut self,
        now: Millis,
        height: Height,
        round: Round,
        transactions: Vec<SignedTransaction>,
        state_root: Hash32,
        out: &mut Vec<Effect>,
    ) {
        if height != self.height || round != self.round || self.state.proposed.contains_key(&round)
        {
            return;
        }
        let chain_id = self.config.chain_id;
        let reveal = self
            .scheme
            .sign(Domain::Randao, &election::randao_message(chain_id, height));
        let mut block = Block {
            header: BlockHeader {
                parent_hash: self.head.hash(),
                height,
                round,
                timestamp_ms: self.proposal_time(now),
                proposer: self.me,
                randao_reveal: reveal,
                mix: election::next_mix(&self.head.mix, &reveal),
                transactions_root: [0; 32],
                state_root,
                committee_digest: self.committee.digest(),
            },
            transactions,
        };
        block.header.transactions_root = block.computed_transactions_root();
        self.state.verified.insert(block.hash(), true);
        self.propose(now, round, block, out);
    }

    /// Signs and sends a PRE-PREPARE for `block` in `round`, with the round's round changes as
    /// its justification.
    fn propose(&mut self, now: Millis, round: Round, block: Block, out: &mut Vec<Effect>) {
        let hash = block.hash();
        debug_assert!(
            !self.state.proposed.contains_key(&round),
            "one proposal per round"
        );
        let justification: Vec<RoundChange> = if round == 0 {
            Vec::new()
        } else {
            self.state
                .round_changes
                .values()
                .filter(|h| h.checked && h.rc.round == round)
                .map(|h| h.rc.clone())
                .collect()
        };
        let mut proposal = Proposal {
            proposer: self.me,
            round,
            block,
            justification,
            signature: [0; 96],
        };
        proposal.signature = self.scheme.sign(
            Domain::Vote,
            &proposal.signing_message(self.config.chain_id),
        );
        self.state.proposed.insert(round, hash);
        out.push(Effect::Persist(WalRecord::Proposed {
            round,
            block: proposal.block.clone(),
        }));
        out.push(Effect::Broadcast(Message::Proposal(Box::new(
            proposal.clone(),
        ))));
        self.on_proposal(now, proposal, out);
    }

    fn on_message(&mut self, now: Millis, m: Message, out: &mut Vec<Effect>) {
        let h = m.height();
        if h < self.height {
            self.offer_sync(&m, out);
            return; // stale: already finalized here
        }
        if h > self.height {
            self.buffer_future(m, out);
            return;
        }
        match m {
            Message::Proposal(p) => self.on_proposal(now, *p, out),
            Message::Vote(v) => self.on_vote(now, v, out),
            Message::RoundChange(rc) => self.on_round_change(now, rc, out),
            Message::Finalized { sender, block } => self.on_finalized(now, sender, *block, out),
        }
    }

    fn buffer_future(&mut self, m: Message, out: &mut Vec<Effect>) {
        let h = m.height();
        let signer = m.signer();
        if (signer as usize) >= self.config.council_size {
            out.push(Effect::Rejected {
                from: signer,
                reason: Rejection::NotInCouncil,
            });
            return;
        }
        // Two or more heights ahead: this node is behind; ask the sender for blocks (unless
        // this already is a sync answer).
        if h >= self.height + 2 && !matches!(m, Message::Finalized { .. }) {
            self.request_sync(signer, out);
        }
        if h > self.height + MAX_FUTURE_HEIGHTS {
            out.push(Effect::Rejected {
                from: signer,
                reason: Rejection::TooFarAhead,
            });
            return;
        }
        self.future.push(m);
    }

    /// A consensus message for a height this node already finalized: its sender is behind.
    /// Offer it the finalized blocks, once per (sender, height, round) and a few times per
    /// height at most.
    fn offer_sync(&mut self, m: &Message, out: &mut Vec<Effect>) {
        let round = match m {
            Message::Proposal(p) => p.round,
            Message::Vote(v) => v.round,
            Message::RoundChange(rc) => rc.round,
            Message::Finalized { .. } => return,
        };
        let peer = m.signer();
        if peer == self.me
            || (peer as usize) >= self.config.council_size
            || self.state.sync_offered.len() >= MAX_SYNC_OFFERS_PER_HEIGHT
            || !self.state.sync_offered.insert((peer, m.height(), round))
        {
            return;
        }
        out.push(Effect::OfferSync {
            peer,
            from_height: m.height(),
        });
    }

    fn request_sync(&mut self, peer: CouncilIndex, out: &mut Vec<Effect>) {
        if peer == self.me
            || self.state.sync_asked.len() >= MAX_SYNC_REQUESTS_PER_HEIGHT
            || !self.state.sync_asked.insert(peer)
        {
            return;
        }
        out.push(Effect::RequestSync {
            peer,
            from_height: self.height,
        });
    }

    /// Membership of a signer: in the council and in this height's committee.
    fn check_member(&self, signer: CouncilIndex, out: &mut Vec<Effect>) -> bool {
        if (signer as usize) >= self.config.council_size {
            out.push(Effect::Rejected {
                from: signer,
                reason: Rejection::NotInCouncil,
            });
            return false;
        }
        if !self.committee.contains(signer) {
            out.push(Effect::Rejected {
                from: signer,
                reason: Rejection::NotInCommittee,
            });
            return false;
        }
        true
    }

    // ---- PRE-PREPARE -------------------------------------------------------------------

    fn on_proposal(&mut self, now: Millis, p: Proposal, out: &mut Vec<Effect>) {
        let round = p.round;
        if round > MAX_ROUND {
            return; // absurd
        }
        if let Some(held) = self.state.proposals.get(&round) {
            let held = (held.proposer, held.block.hash(), held.signature);
            self.on_second_proposal(now, held, p, out);
            return;
        }
        let proposer = p.proposer;
        if !self.check_member(proposer, out) {
            return;
        }
        if proposer != self.committee.proposer(round) {
            out.push(Effect::Rejected {
                from: proposer,
                reason: Rejection::WrongProposer,
            });
            return;
        }
        if round > self.round.saturating_add(ROUND_WINDOW) {
            out.push(Effect::Rejected {
                from: proposer,
                reason: Rejection::FarRound,
            });
            return;
        }
        if let Err(reason) = self.check_proposal_signed(now, &p) {
            out.push(Effect::Rejected {
                from: proposer,
                reason,
            });
            return;
        }
        if round > 0 && !self.config.weakening.no_lock {
            if let Err(reason) = self.check_justification(&p) {
                out.push(Effect::Rejected {
                    from: proposer,
                    reason,
                });
                return;
            }
        }
        // A proposal of a round already left: keep its block (a commit quorum of that round
        // may still arrive) but do not vote on it.
        if round < self.round {
            let hash = p.block.hash();
            self.state.blocks.entry(hash).or_insert(p.block);
            self.maybe_commit_decided(now, out);
            return;
        }
        // A justified proposal for a later round: its quorum of round changes moves us there.
        if round > self.round {
            self.enter_round(now, round, out);
        }
        let hash = p.block.hash();
        self.state
            .blocks
            .entry(hash)
            .or_insert_with(|| p.block.clone());
        self.state.proposals.insert(round, p);
        self.maybe_prepare(round, out);
        self.maybe_commit_decided(now, out);
    }

    /// Another proposal for a round whose proposal this node already accepted (`held`: its
    /// proposer, block hash and signature). A copy of it costs nothing. A different block,
    /// validly signed by the same proposer, is equivocation evidence (once per round); its
    /// block is kept if its header is valid, in case a commit quorum certifies it.
    fn on_second_proposal(
        &mut self,
        now: Millis,
        (proposer, held_hash, held_signature): (
            CouncilIndex,
            Hash32,
            crate::types::BlsSignatureBytes,
        ),
        p: Proposal,
        out: &mut Vec<Effect>,
    ) {
        let hash = p.block.hash();
        if hash == held_hash
            || p.proposer != proposer
            || self
                .state
                .evidenced
                .contains(&(proposer, p.round, EvidenceKind::Proposal))
        {
            return;
        }
        if !self.scheme.verify(
            proposer,
            Domain::Vote,
            &p.signing_message(self.config.chain_id),
            &p.signature,
        ) {
            out.push(Effect::Rejected {
                from: proposer,
                reason: Rejection::BadSignature,
            });
            return;
        }
        self.state
            .evidenced
            .insert((proposer, p.round, EvidenceKind::Proposal));
        out.push(Effect::Evidence(Evidence {
            signer: proposer,
            kind: EvidenceKind::Proposal,
            height: self.height,
            round: p.round,
            first: (held_hash, held_signature),
            second: (hash, p.signature),
        }));
        if self.check_block_header(now, &p.block, p.round).is_ok() {
            self.state.blocks.entry(hash).or_insert(p.block);
            self.maybe_commit_decided(now, out);
        }
    }

    /// A proposal's signature and its block's header (see [`Self::check_block_header`]), in
    /// that order of rejection reasons. The proposal's signature and the randao reveal (two
    /// pairing checks) are verified with one multi-pairing; only if that fails are they
    /// checked one by one, to name the bad one. This node's own proposal is not verified.
    fn check_proposal_signed(&self, now: Millis, p: &Proposal) -> Result<(), Rejection> {
        let chain_id = self.config.chain_id;
        let (h, round) = (&p.block.header, p.round);
        let own = p.proposer == self.me && self.state.proposed.get(&round) == Some(&p.block.hash());
        let fields = self.check_header_fields(now, &p.block, round);
        if own {
            fields?;
            return self.check_mix(&p.block);
        }
        let message = p.signing_message(chain_id);
        let randao_message = election::randao_message(chain_id, self.height);
        let both = [
            (p.proposer, Domain::Vote, &message[..], &p.signature),
            (
                h.proposer,
                Domain::Randao,
                &randao_message[..],
                &h.randao_reveal,
            ),
        ];
        if fields.is_err() || !self.scheme.verify_each(&both) {
            if !self
                .scheme
                .verify(p.proposer, Domain::Vote, &message, &p.signature)
            {
                return Err(Rejection::BadSignature);
            }
            fields?;
            // The pair failed and the proposal's signature verifies alone: the reveal is bad
            // (a batch of valid signatures always verifies). Checked in tests only: the bytes
            // are a peer's, and refusing the proposal is safe either way.
            debug_assert!(
                !self.scheme.verify(
                    h.proposer,
                    Domain::Randao,
                    &randao_message,
                    &h.randao_reveal
                ),
                "a batch of valid signatures must verify"
            );
            return Err(Rejection::BadRandaoReveal);
        }
        self.check_mix(&p.block)
    }

    /// Header checks against this node's chain, for a block proposed in `round`. The block was
    /// built in `header.round <= round` by that round's elected proposer, whose reveal proves
    /// its election.
    fn check_block_header(
        &self,
        now: Millis,
        block: &Block,
        round: Round,
    ) -> Result<(), Rejection> {
        self.check_header_fields(now, block, round)?;
        let h = &block.header;
        let message = election::randao_message(self.config.chain_id, self.height);
        if !self
            .scheme
            .verify(h.proposer, Domain::Randao, &message, &h.randao_reveal)
        {
            return Err(Rejection::BadRandaoReveal);
        }
        self.check_mix(block)
    }

    /// The header's fields against this node's chain (everything but the randao reveal's
    /// signature and the mix derived from it).
    fn check_header_fields(
        &self,
        now: Millis,
        block: &Block,
        round: Round,
    ) -> Result<(), Rejection> {
        let h = &block.header;
        if h.height != self.height
            || h.parent_hash != self.head.hash()
            || h.committee_digest != self.committee.digest()
            || h.timestamp_ms
                < self
                    .head
                    .timestamp_ms
                    .saturating_add(self.config.block_period_ms)
            || h.timestamp_ms > now.saturating_add(self.config.round_timeout_max_ms)
            || h.round > round
            || h.proposer != self.committee.proposer(h.round)
            || block.computed_transactions_root() != h.transactions_root
        {
            return Err(Rejection::BadProposal);
        }
        Ok(())
    }

    /// The header's mix follows from the head's and the header's randao reveal.
    fn check_mix(&self, block: &Block) -> Result<(), Rejection> {
        let h = &block.header;
        if h.mix != election::next_mix(&self.head.mix, &h.randao_reveal) {
            return Err(Rejection::BadProposal);
        }
        Ok(())
    }

    /// JustifyPrePrepare: a quorum of valid round changes for the proposal's round, from
    /// distinct committee members; if any of them carries a prepared certificate, the proposed
    /// block is the one prepared in the highest round among them.
    fn check_justification(&self, p: &Proposal) -> Result<(), Rejection> {
        let mut seen = BTreeSet::new();
        let mut highest: Option<&QuorumCertificate> = None;
        for rc in &p.justification {
            if rc.height != self.height
                || rc.round != p.round
                || !self.committee.contains(rc.signer)
            {
                return Err(Rejection::Unjustified);
            }
            if !seen.insert(rc.signer) || self.check_round_change(rc).is_err() {
                return Err(Rejection::Unjustified);
            }
            if let Some(cert) = &rc.prepared {
                if highest.is_none_or(|h| h.round < cert.round) {
                    highest = Some(cert);
                }
            }
        }
        if seen.len() < self.quorum() {
            return Err(Rejection::Unjustified);
        }
        match highest {
            Some(cert) if cert.block_hash != p.block.hash() => Err(Rejection::Unjustified),
            _ => Ok(()),
        }
    }

    /// Sends PREPARE for the proposal of `round` once its block is verified.
    fn maybe_prepare(&mut self, round: Round, out: &mut Vec<Effect>) {
        if round != self.round
            || !self.in_committee()
            || self.state.sent.contains_key(&(round, VoteKind::Prepare))
        {
            return;
        }
        let Some(p) = self.state.proposals.get(&round) else {
            return;
        };
        let hash = p.block.hash();
        match self.state.verified.get(&hash) {
            Some(true) => self.vote(VoteKind::Prepare, round, hash, out),
            Some(false) => {}
            None => {
                if self.state.verifying.insert(hash) {
                    out.push(Effect::VerifyBlock(p.block.clone()));
                }
            }
        }
    }

    fn on_block_verified(
        &mut self,
        now: Millis,
        height: Height,
        hash: Hash32,
        valid: bool,
        out: &mut Vec<Effect>,
    ) {
        if height != self.height || !self.state.verifying.remove(&hash) {
            return;
        }
        self.state.verified.insert(hash, valid);
        if !valid {
            if let Some(b) = self.state.blocks.get(&hash) {
                out.push(Effect::Rejected {
                    from: b.header.proposer,
                    reason: Rejection::InvalidBlock,
                });
            }
            return;
        }
        self.maybe_prepare(self.round, out);
        self.maybe_commit_decided(now, out);
    }

    // ---- PREPARE and COMMIT ------------------------------------------------------------

    /// Signs, persists and sends this node's vote, unless it already signed this slot.
    fn vote(&mut self, kind: VoteKind, round: Round, block_hash: Hash32, out: &mut Vec<Effect>) {
        if let Some(previous) = self.state.sent.get(&(round, kind)) {
            assert_eq!(
                *previous, block_hash,
                "refusing to equivocate: already voted {kind:?} for another block"
            );
            return;
        }
        let mut vote = Vote {
            kind,
            height: self.height,
            round,
            block_hash,
            signer: self.me,
            signature: [0; 96],
        };
        vote.signature = self
            .scheme
            .sign(Domain::Vote, &vote.signing_message(self.config.chain_id));
        self.state.sent.insert((round, kind), block_hash);
        out.push(Effect::Persist(WalRecord::Voted {
            kind,
            height: self.height,
            round,
            block_hash,
        }));
        out.push(Effect::Broadcast(Message::Vote(vote.clone())));
        self.add_vote(vote, true, out);
    }

    /// See [`Input::PeerConnected`]. Everything sent here was persisted when it was first
    /// sent, so nothing new is signed and nothing waits for the disk.
    fn on_peer_connected(&mut self, peer: CouncilIndex, out: &mut Vec<Effect>) {
        if peer == self.me || (peer as usize) >= self.config.council_size {
            return;
        }
        let round = self.round;
        if let Some(p) = self.state.proposals.get(&round) {
            if p.proposer == self.me {
                out.push(Effect::SendTo(peer, Message::Proposal(Box::new(p.clone()))));
            }
        }
        for kind in [VoteKind::Prepare, VoteKind::Commit] {
            let Some(set) = self.state.votes.get(&(round, kind)) else {
                continue;
            };
            if let Some((block_hash, signature)) = set.signed_vote_of(self.me) {
                assert_eq!(self.state.sent.get(&(round, kind)), Some(&block_hash));
                let vote = Vote {
                    kind,
                    height: self.height,
                    round,
                    block_hash,
                    signer: self.me,
                    signature,
                };
                out.push(Effect::SendTo(peer, Message::Vote(vote)));
            }
        }
        if let Some(held) = self
            .state
            .round_changes
            .get(&self.me)
            .filter(|h| h.rc.round == round)
        {
            out.push(Effect::SendTo(peer, Message::RoundChange(held.rc.clone())));
        }
    }

    fn on_vote(&mut self, _now: Millis, v: Vote, out: &mut Vec<Effect>) {
        if v.round > MAX_ROUND || !self.check_member(v.signer, out) || v.signer == self.me {
            return;
        }
        if v.round > self.round.saturating_add(ROUND_WINDOW) {
            // Nothing this node can use before it gets near that round; one vote set per
            // named round would let one member make it hold millions.
            out.push(Effect::Rejected {
                from: v.signer,
                reason: Rejection::FarRound,
            });
            return;
        }
        self.add_vote(v, false, out);
    }

    fn add_vote(&mut self, v: Vote, verified: bool, out: &mut Vec<Effect>) {
        let chain_id = self.config.chain_id;
        let set = self.state.votes.entry((v.round, v.kind)).or_default();
        match set.add(&self.scheme, chain_id, &v, verified) {
            Added::Stored => {}
            Added::ForgeryReplaced => out.push(Effect::Rejected {
                from: v.signer,
                reason: Rejection::BadSignature,
            }),
            Added::BadSignature => {
                out.push(Effect::Rejected {
                    from: v.signer,
                    reason: Rejection::BadSignature,
                });
                return;
            }
            Added::Equivocation { first } => {
                if self
                    .state
                    .evidenced
                    .insert((v.signer, v.round, v.kind.into()))
                {
                    out.push(Effect::Evidence(Evidence {
                        signer: v.signer,
                        kind: v.kind.into(),
                        height: v.height,
                        round: v.round,
                        first,
                        second: (v.block_hash, v.signature),
                    }));
                }
                return;
            }
        }
        self.try_certificate(v.round, v.kind, v.block_hash, out);
    }

    /// If the votes of `(round, kind)` for `hash` reach a quorum, fold them into a certificate
    /// and act on it.
    fn try_certificate(
        &mut self,
        round: Round,
        kind: VoteKind,
        hash: Hash32,
        out: &mut Vec<Effect>,
    ) {
        if self.state.certified.contains(&(round, kind, hash)) {
            return; // a vote past the quorum: the certificate exists, skip the pairing check
        }
        let quorum = self.quorum();
        let Some(set) = self.state.votes.get_mut(&(round, kind)) else {
            return;
        };
        if set.count_for(&hash) < quorum {
            return;
        }
        let (cert, refused) = set.certify(
            &self.scheme,
            self.config.chain_id,
            self.config.council_size,
            kind,
            self.height,
            round,
            &hash,
            quorum,
        );
        for signer in refused {
            out.push(Effect::Rejected {
                from: signer,
                reason: Rejection::BadSignature,
            });
        }
        let Some(cert) = cert else { return };
        self.state.certified.insert((round, kind, hash));
        match kind {
            VoteKind::Prepare => self.on_prepared(cert, out),
            VoteKind::Commit => self.on_committed(cert, out),
        }
    }

    /// A prepare quorum in the current round: lock on it (`pr`, `pv`) and COMMIT.
    fn on_prepared(&mut self, cert: QuorumCertificate, out: &mut Vec<Effect>) {
        if cert.round != self.round
            || !self.in_committee()
            || self
                .state
                .sent
                .contains_key(&(cert.round, VoteKind::Commit))
        {
            return;
        }
        let (round, hash) = (cert.round, cert.block_hash);
        if self.state.prepared.as_ref().is_none_or(|p| p.round < round) {
            out.push(Effect::Persist(WalRecord::Prepared(cert.clone())));
            self.state.prepared = Some(cert);
        }
        self.vote(VoteKind::Commit, round, hash, out);
    }

    /// A commit quorum (any round of this height): the block is final.
    fn on_committed(&mut self, cert: QuorumCertificate, out: &mut Vec<Effect>) {
        if self.state.decided.is_none() {
            self.state.decided = Some(cert);
        }
        self.maybe_commit_decided(self.now, out);
    }

    /// Finalizes the decided block once this node has it.
    fn maybe_commit_decided(&mut self, now: Millis, out: &mut Vec<Effect>) {
        let Some(cert) = self.state.decided.clone() else {
            return;
        };
        let Some(block) = self.state.blocks.get(&cert.block_hash).cloned() else {
            // Decided without the block (its proposal never reached us): fetch it.
            let signers: Vec<CouncilIndex> = signers::iter(&cert.signers).collect();
            for peer in signers {
                self.request_sync(peer, out);
            }
            return;
        };
        self.finalize(now, block, cert, out);
    }

    fn finalize(
        &mut self,
        now: Millis,
        block: Block,
        certificate: QuorumCertificate,
        out: &mut Vec<Effect>,
    ) {
        debug_assert_eq!(block.hash(), certificate.block_hash);
        debug_assert_eq!(block.header.height, self.height);
        self.finalize_with(now, block, certificate, None, out);
    }

    /// [`Machine::finalize`] with the transactions' hashes when they are known.
    fn finalize_with(
        &mut self,
        now: Millis,
        block: Block,
        certificate: QuorumCertificate,
        tx_hashes: Option<Vec<Hash32>>,
        out: &mut Vec<Effect>,
    ) {
        debug_assert_eq!(block.hash(), certificate.block_hash);
        debug_assert_eq!(block.header.height, self.height);
        let header = block.header.clone();
        out.push(Effect::Commit {
            block,
            certificate,
            tx_hashes,
        });
        self.head = header;
        self.height += 1;
        self.round = 0;
        self.committee = Committee::elect(
            self.config.council_size,
            self.config.committee_size,
            self.height,
            &self.head.mix,
        );
        self.state = HeightState::default();
        self.future.drop_below(self.height);
        self.start_height(now.max(self.head.timestamp_ms), out);
    }

    // ---- ROUND-CHANGE ------------------------------------------------------------------

    /// A round change is valid if its signature verifies and its prepared certificate, if
    /// any, is a valid prepare quorum of this height from an earlier round.
    fn check_round_change(&self, rc: &RoundChange) -> Result<(), Rejection> {
        let chain_id = self.config.chain_id;
        if !self.scheme.verify(
            rc.signer,
            Domain::Vote,
            &rc.signing_message(chain_id),
            &rc.signature,
        ) {
            return Err(Rejection::BadSignature);
        }
        if let Some(cert) = &rc.prepared {
            self.check_certificate(cert, VoteKind::Prepare)
                .map_err(|_| Rejection::BadRoundChange)?;
            if cert.round >= rc.round {
                return Err(Rejection::BadRoundChange);
            }
        }
        Ok(())
    }

    /// Certificate checks: kind, height, canonical bitmap of committee members, a quorum, and
    /// the aggregate signature.
    fn check_certificate(&self, cert: &QuorumCertificate, kind: VoteKind) -> Result<(), Rejection> {
        if !finality::certificate_shape_ok(
            cert,
            kind,
            self.height,
            self.config.council_size,
            &self.committee,
        ) {
            return Err(Rejection::BadCertificate);
        }
        let message = cert.signing_message(self.config.chain_id);
        if !self
            .scheme
            .verify_aggregate(&cert.signers, Domain::Vote, &message, &cert.signature)
        {
            return Err(Rejection::BadCertificate);
        }
        Ok(())
    }

    fn on_round_change(&mut self, now: Millis, rc: RoundChange, out: &mut Vec<Effect>) {
        if rc.round <= self.round.saturating_sub(1) || rc.round > MAX_ROUND || rc.signer == self.me
        {
            return; // for a round already left behind, or absurd
        }
        if !self.check_member(rc.signer, out) {
            return;
        }
        // Only a member's highest round change counts: an older or repeated one is dropped
        // before any signature work.
        if self
            .state
            .round_changes
            .get(&rc.signer)
            .is_some_and(|h| h.rc.round >= rc.round)
        {
            return;
        }
        let checked = if rc.round > self.round.saturating_add(ROUND_WINDOW) {
            let far = self.state.far_round_changes.entry(rc.signer).or_default();
            *far += 1;
            if *far > MAX_FAR_ROUND_CHANGES_PER_HEIGHT {
                out.push(Effect::Rejected {
                    from: rc.signer,
                    reason: Rejection::FarRound,
                });
                return;
            }
            false
        } else {
            if let Err(reason) = self.check_round_change(&rc) {
                out.push(Effect::Rejected {
                    from: rc.signer,
                    reason,
                });
                return;
            }
            true
        };
        self.state
            .round_changes
            .insert(rc.signer, HeldRoundChange { rc, checked });
        self.after_round_change(now, out);
    }

    /// Checks the held round changes of `signers` not checked yet; drops (and rejects) the
    /// bad ones. Returns whether all of them were good.
    fn check_held_round_changes(
        &mut self,
        signers: &[CouncilIndex],
        out: &mut Vec<Effect>,
    ) -> bool {
        let mut all_good = true;
        for signer in signers {
            let Some(held) = self.state.round_changes.get(signer) else {
                continue;
            };
            if held.checked {
                continue;
            }
            match self.check_round_change(&held.rc) {
                Ok(()) => {
                    if let Some(h) = self.state.round_changes.get_mut(signer) {
                        h.checked = true;
                    }
                }
                Err(reason) => {
                    self.state.round_changes.remove(signer);
                    out.push(Effect::Rejected {
                        from: *signer,
                        reason,
                    });
                    all_good = false;
                }
            }
        }
        all_good
    }

    fn after_round_change(&mut self, now: Millis, out: &mut Vec<Effect>) {
        // f + 1 members are in later rounds: at least one honest member timed out; follow the
        // lowest round among the f + 1 highest. Each member counts once (its highest), so
        // this looks at the committee, not at every round named; unchecked round changes
        // (far rounds) are checked only here, and only the f + 1 followed.
        let f = self.committee.max_faulty();
        while self.in_committee() {
            let mut later: Vec<(Round, CouncilIndex)> = self
                .state
                .round_changes
                .iter()
                .filter(|(_, h)| h.rc.round > self.round)
                .map(|(&signer, h)| (h.rc.round, signer))
                .collect();
            if later.len() <= f {
                break;
            }
            later.sort_unstable_by(|a, b| b.cmp(a));
            let followed: Vec<CouncilIndex> = later[..=f].iter().map(|&(_, s)| s).collect();
            if !self.check_held_round_changes(&followed, out) {
                continue; // a bad one was dropped: look again
            }
            let target = later[f].0;
            if target > self.round {
                self.move_to_round(now, target, out);
            }
            break;
        }
        self.maybe_propose_after_round_change(now, out);
    }

    /// The proposer of the current round, holding a quorum of round changes for it, proposes:
    /// the highest prepared block among them if any, else a new block.
    fn maybe_propose_after_round_change(&mut self, now: Millis, out: &mut Vec<Effect>) {
        let round = self.round;
        if round == 0
            || self.committee.proposer(round) != self.me
            || self.state.proposed.contains_key(&round)
        {
            return;
        }
        let at_round: Vec<CouncilIndex> = self
            .state
            .round_changes
            .iter()
            .filter(|(_, h)| h.rc.round == round)
            .map(|(&s, _)| s)
            .collect();
        if at_round.len() < self.quorum() {
            return;
        }
        self.check_held_round_changes(&at_round, out);
        let rcs: Vec<&RoundChange> = self
            .state
            .round_changes
            .values()
            .filter(|h| h.checked && h.rc.round == round)
            .map(|h| &h.rc)
            .collect();
        if rcs.len() < self.quorum() {
            return;
        }
        let highest = rcs
            .iter()
            .filter_map(|rc| rc.prepared.as_ref())
            .max_by_key(|c| c.round)
            .map(|c| c.block_hash);
        match highest {
            Some(hash) if !self.config.weakening.no_lock => {
                if let Some(block) = self.state.blocks.get(&hash).cloned() {
                    self.propose(now, round, block, out);
                }
                // Without the prepared block this node cannot propose it; the round times out.
            }
            _ => self.build_block(round, out),
        }
    }

    /// Moves to a higher `round`: persist, restart the round timer, send ROUND-CHANGE.
    fn move_to_round(&mut self, now: Millis, round: Round, out: &mut Vec<Effect>) {
        debug_assert!(round > self.round);
        self.enter_round(now, round, out);
        if !self.state.round_changed.insert(round) {
            return;
        }
        let mut rc = RoundChange {
            height: self.height,
            round,
            signer: self.me,
            prepared: if self.config.weakening.no_lock {
                None
            } else {
                self.state.prepared.clone()
            },
            signature: [0; 96],
        };
        rc.signature = self
            .scheme
            .sign(Domain::Vote, &rc.signing_message(self.config.chain_id));
        out.push(Effect::Persist(WalRecord::RoundChanged {
            height: self.height,
            round,
        }));
        out.push(Effect::Broadcast(Message::RoundChange(rc.clone())));
        self.state
            .round_changes
            .insert(self.me, HeldRoundChange { rc, checked: true });
        self.maybe_propose_after_round_change(now, out);
    }

    /// Sets the round and its timer; acts on a proposal already held for it.
    fn enter_round(&mut self, now: Millis, round: Round, out: &mut Vec<Effect>) {
        if round <= self.round {
            return;
        }
        self.round = round;
        out.push(Effect::Schedule {
            timer: Timer::Round {
                height: self.height,
                round,
            },
            at: now + self.config.round_timeout(round),
        });
        self.maybe_prepare(round, out);
    }

    // ---- catch-up ----------------------------------------------------------------------

    /// A finalized block for the current height: adopt it if its certificate is valid.
    ///
    /// A sync answer arrives as a run of finalized blocks, the later ones buffered as future
    /// messages. The buffered blocks that extend this one are taken with it and their
    /// certificates checked in one batch (one multi-pairing for the whole run with BLS); if
    /// the batch fails, the blocks are checked one by one, in order, up to the first bad one.
    ///
    /// A block that is not final (a bad certificate, or transactions its certified header does
    /// not commit to) is `sender`'s lie: rejected in its name. Whoever sent a buffered block
    /// of the run is blamed for that block.
    fn on_finalized(
        &mut self,
        now: Millis,
        sender: CouncilIndex,
        f: FinalizedBlock,
        out: &mut Vec<Effect>,
    ) {
        if f.certificate.block_hash != f.block.hash()
            || f.block.header.parent_hash != self.head.hash()
        {
            out.push(Effect::Rejected {
                from: sender,
                reason: Rejection::BadCertificate,
            });
            return;
        }
        let mut run = vec![(sender, f)];
        while let Some(next) = self.take_buffered_successor(&run[run.len() - 1].1.block.header) {
            run.push(next);
        }
        let blocks: Vec<FinalizedBlock> = run.iter().map(|(_, f)| f.clone()).collect();
        let verdict = finality::final_prefix(
            &self.scheme,
            &self.config,
            &self.head,
            &self.committee,
            &blocks,
        );
        drop(blocks);
        let valid = verdict.len();
        let mut hashes = verdict.tx_hashes.into_iter();
        let mut run = run.into_iter().enumerate();
        while let Some((i, (sender, f))) = run.next() {
            // Finalizing a block replays the messages buffered for the next height, which may
            // hold a copy of the next block of the run (another peer's sync answer), already
            // finalized then.
            if f.block.header.height != self.height
                || f.block.header.parent_hash != self.head.hash()
            {
                break;
            }
            if i >= valid {
                let reason = match verdict.refused {
                    Some(finality::NotFinal::Body) => Rejection::ForgedBody,
                    _ => Rejection::BadCertificate,
                };
                out.push(Effect::Rejected {
                    from: sender,
                    reason,
                });
                // The blocks after it wait for a valid block at its height.
                for (_, (sender, later)) in run {
                    self.future.push(Message::Finalized {
                        sender,
                        block: Box::new(later),
                    });
                }
                return;
            }
            let tx_hashes = hashes.next().expect("one list of hashes per final block");
            self.finalize_with(now, f.block, f.certificate, Some(tx_hashes), out);
        }
    }

    /// Removes from the future buffer a finalized block that extends `parent` (by height,
    /// parent hash and its certificate naming it), if one is buffered.
    fn take_buffered_successor(
        &mut self,
        parent: &BlockHeader,
    ) -> Option<(CouncilIndex, FinalizedBlock)> {
        let parent_hash = parent.hash();
        let taken = self.future.take_first(parent.height + 1, |m| {
            matches!(m, Message::Finalized { block: g, .. }
                if g.block.header.parent_hash == parent_hash
                    && g.certificate.block_hash == g.block.hash())
        })?;
        match taken {
            Message::Finalized { sender, block } => Some((sender, *block)),
            _ => unreachable!("matched a finalized block above"),
        }
    }

    /// Messages and (approximate) bytes buffered for later heights.
    pub fn future_buffered(&self) -> (usize, usize) {
        (self.future.len(), self.future.bytes)
    }
}

/// About how many bytes `m` holds in memory: its transactions and a fixed allowance for the
/// rest (headers, signatures, certificates, justifications).
pub fn approximate_bytes(m: &Message) -> usize {
    let txs = |b: &Block| {
        b.transactions
            .iter()
            .map(|t| t.bytes.len() + 32)
            .sum::<usize>()
    };
    match m {
        Message::Proposal(p) => 512 + txs(&p.block) + 512 * p.justification.len(),
        Message::Vote(_) => 256,
        Message::RoundChange(_) => 512,
        Message::Finalized { block: f, .. } => 512 + txs(&f.block) + f.certificate.signers.len(),
    }
}

/// The bytes of buffered future messages one member's messages may hold in a council of
/// `council_size` (see [`MIN_FUTURE_BYTES_PER_SIGNER`]).
pub fn future_bytes_per_signer(council_size: usize) -> usize {
    (MAX_FUTURE_BYTES / council_size.max(1)).max(MIN_FUTURE_BYTES_PER_SIGNER)
}

/// Messages for later heights, bounded by [`MAX_FUTURE_MESSAGES_PER_HEIGHT`],
/// [`MAX_FUTURE_MESSAGES_PER_SIGNER`], [`MAX_FUTURE_BYTES`] and per signer by
/// [`future_bytes_per_signer`] (beyond, new ones are dropped: a node that misses early
/// messages catches up by sync). `bytes` is always the sum of [`approximate_bytes`] of what is
/// held, and `bytes_by_signer` the same per signer (no zero entries).
#[derive(Debug)]
struct FutureBuffer {
    by_height: BTreeMap<Height, Vec<Message>>,
    bytes: usize,
    bytes_by_signer: BTreeMap<CouncilIndex, usize>,
    max_bytes_per_signer: usize,
}

impl FutureBuffer {
    fn new(max_bytes_per_signer: usize) -> FutureBuffer {
        FutureBuffer {
            by_height: BTreeMap::new(),
            bytes: 0,
            bytes_by_signer: BTreeMap::new(),
            max_bytes_per_signer,
        }
    }

    /// Keeps `m` unless a bound is reached.
    fn push(&mut self, m: Message) {
        let size = approximate_bytes(&m);
        let signer = m.signer();
        let held = self.bytes_by_signer.get(&signer).copied().unwrap_or(0);
        if self.bytes + size > MAX_FUTURE_BYTES || held + size > self.max_bytes_per_signer {
            return;
        }
        let slot = self.by_height.entry(m.height()).or_default();
        if slot.len() >= MAX_FUTURE_MESSAGES_PER_HEIGHT
            || slot.iter().filter(|x| x.signer() == signer).count()
                >= MAX_FUTURE_MESSAGES_PER_SIGNER
        {
            return;
        }
        slot.push(m);
        self.bytes += size;
        *self.bytes_by_signer.entry(signer).or_default() += size;
    }

    fn forget(&mut self, taken: &[Message]) {
        for m in taken {
            let size = approximate_bytes(m);
            assert!(size <= self.bytes, "future buffer accounting");
            self.bytes -= size;
            let signer = m.signer();
            let held = self
                .bytes_by_signer
                .get_mut(&signer)
                .expect("a held message's signer is counted");
            assert!(size <= *held, "future buffer accounting per signer");
            *held -= size;
            if *held == 0 {
                self.bytes_by_signer.remove(&signer);
            }
        }
    }

    /// Removes and returns the messages of `height`, in arrival order.
    fn take_height(&mut self, height: Height) -> Vec<Message> {
        let taken = self.by_height.remove(&height).unwrap_or_default();
        self.forget(&taken);
        taken
    }

    /// Drops the messages of heights below `height`.
    fn drop_below(&mut self, height: Height) {
        let kept = self.by_height.split_off(&height);
        let dropped = std::mem::replace(&mut self.by_height, kept);
        for (_, ms) in dropped {
            self.forget(&ms);
        }
    }

    /// Removes and returns the first message of `height` that `matches`.
    fn take_first(
        &mut self,
        height: Height,
        matches: impl Fn(&Message) -> bool,
    ) -> Option<Message> {
        let slot = self.by_height.get_mut(&height)?;
        let at = slot.iter().position(matches)?;
        let m = slot.remove(at);
        if slot.is_empty() {
            self.by_height.remove(&height);
        }
        self.forget(std::slice::from_ref(&m));
        Some(m)
    }

    /// The signers named by buffered messages.
    fn signers(&self) -> BTreeSet<CouncilIndex> {
        self.by_height
            .values()
            .flat_map(|ms| ms.iter().map(Message::signer))
            .collect()
    }

    fn len(&self) -> usize {
        self.by_height.values().map(Vec::len).sum()
    }
}
