//! The machine's inputs, effects, persisted records and evidence: the whole interface between
//! the sans-IO consensus core and whatever drives it (the node's consensus shard, or the
//! simulator).

use crate::types::chain::SignedTransaction;
use crate::types::hash::Hash32;
use crate::types::{
    Block, BlockHeader, BlsSignatureBytes, CommitCertificate, CouncilIndex, FinalizedBlock, Height,
    PreparedCertificate, Proposal, Round, RoundChange, Vote, VoteKind,
};

/// Milliseconds of the driver's clock (wall time in production, virtual time in the simulator).
pub type Millis = u64;

/// A consensus message between validators.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// PRE-PREPARE.
    Proposal(Box<Proposal>),
    /// PREPARE or COMMIT.
    Vote(Vote),
    /// ROUND-CHANGE.
    RoundChange(RoundChange),
    /// A finalized block with its commit certificate (catch-up and sync).
    Finalized {
        /// The council member that sent it (the driver sets it from the authenticated link it
        /// came over; it is not on the wire). Its authority is the certificate, but a block
        /// that is not final is this member's lie, and buffered blocks are charged to it.
        sender: CouncilIndex,
        /// The block.
        block: Box<FinalizedBlock>,
    },
}

impl Message {
    /// The height the message is about.
    pub fn height(&self) -> Height {
        match self {
            Message::Proposal(p) => p.block.header.height,
            Message::Vote(v) => v.height,
            Message::RoundChange(rc) => rc.height,
            Message::Finalized { block, .. } => block.block.header.height,
        }
    }

    /// The council member that signed it (for a finalized block, the member that sent it).
    pub fn signer(&self) -> CouncilIndex {
        match self {
            Message::Proposal(p) => p.proposer,
            Message::Vote(v) => v.signer,
            Message::RoundChange(rc) => rc.signer,
            Message::Finalized { sender, .. } => *sender,
        }
    }
}

/// A timer the machine asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Timer {
    /// Time for the proposer of `height` round 0 to propose (parent time + block period).
    Propose {
        /// Height.
        height: Height,
    },
    /// Round `round` of `height` timed out.
    Round {
        /// Height.
        height: Height,
        /// Round.
        round: Round,
    },
}

/// Everything that can happen to the machine.
// Votes and round changes travel inline (a few hundred bytes); blocks are boxed.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// A timer fired.
    Timer(Timer),
    /// A message arrived from the network (or from this node itself).
    Message(Message),
    /// The driver built the block asked for by [`Effect::BuildBlock`].
    BlockBuilt {
        /// Height.
        height: Height,
        /// Round.
        round: Round,
        /// The transactions, in order.
        transactions: Vec<SignedTransaction>,
        /// State root after executing them on the parent state.
        state_root: Hash32,
    },
    /// A council member's connection came up (again). It may have missed what this node sent
    /// while the link was down (a partition drops round changes and votes with the
    /// connections), so the machine sends it this height's own messages of the current round
    /// again: the proposal, the votes and the round change (all persisted when first sent).
    PeerConnected(CouncilIndex),
    /// The driver checked the block asked for by [`Effect::VerifyBlock`].
    BlockVerified {
        /// Height.
        height: Height,
        /// The block's hash.
        block_hash: Hash32,
        /// Whether its contents and state root are right.
        valid: bool,
    },
}

/// Something the driver must do. Effects are returned in order and must be carried out in
/// that order: in particular a [`Effect::Persist`] must be durable (fsynced) before any later
/// [`Effect::Broadcast`] or [`Effect::SendTo`] of the same batch leaves the node, and a
/// [`Effect::Commit`] must be durable before the block is reported final.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Append to the consensus WAL and fsync.
    Persist(WalRecord),
    /// Send to every other council member.
    Broadcast(Message),
    /// Send to one council member.
    SendTo(CouncilIndex, Message),
    /// Fire `timer` at `at` (replacing nothing: stale timers are ignored by the machine).
    Schedule {
        /// Which timer.
        timer: Timer,
        /// When.
        at: Millis,
    },
    /// Build a block on `parent` for `(height, round)` and answer with [`Input::BlockBuilt`].
    BuildBlock {
        /// Height.
        height: Height,
        /// Round.
        round: Round,
        /// The parent header.
        parent: BlockHeader,
    },
    /// Check a proposed block's contents (re-execute it) and answer with
    /// [`Input::BlockVerified`].
    VerifyBlock(Block),
    /// The block is final: store it durably, then apply it.
    Commit {
        /// The block.
        block: Block,
        /// Its commit certificate.
        certificate: CommitCertificate,
        /// The keccak-256 hash of each transaction, when the machine computed them (a block
        /// adopted by catch-up; one this node voted for was executed already).
        tx_hashes: Option<Vec<Hash32>>,
    },
    /// This node is behind `peer`: ask it for finalized blocks from `from_height` on (answered
    /// with [`Message::Finalized`]s).
    RequestSync {
        /// Whom to ask.
        peer: CouncilIndex,
        /// First height wanted.
        from_height: Height,
    },
    /// `peer` is still working on `from_height`, which this node finalized: send it this
    /// node's finalized blocks from `from_height` on (as [`Message::Finalized`]s). Its own
    /// messages stopped reaching a quorum, so without this it could wait forever.
    OfferSync {
        /// Who is behind.
        peer: CouncilIndex,
        /// First height it lacks.
        from_height: Height,
    },
    /// Proof that a council member signed two different votes for one slot.
    Evidence(Evidence),
    /// A message was refused; `from` is the council member it claims to be from.
    Rejected {
        /// Claimed sender.
        from: CouncilIndex,
        /// Why.
        reason: Rejection,
    },
}

/// What the machine persists before it lets a signed message out.
///
/// An rkyv archive so the node's consensus WAL can store it as it is (`store::wal`).
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub enum WalRecord {
    /// This node signed `kind` for `block_hash` at `(height, round)`.
    Voted {
        /// Prepare or commit.
        kind: VoteKind,
        /// Height.
        height: Height,
        /// Round.
        round: Round,
        /// Block voted for.
        block_hash: Hash32,
    },
    /// This node proposed `block` at `(height, round)`.
    Proposed {
        /// Round.
        round: Round,
        /// The block.
        block: Block,
    },
    /// This node moved to `round` at `height` (and signed a round change for it).
    RoundChanged {
        /// Height.
        height: Height,
        /// Round.
        round: Round,
    },
    /// This node holds a prepared certificate (its lock) for its height.
    Prepared(PreparedCertificate),
}

impl WalRecord {
    /// The height the record is about (records below a restarted node's head are stale).
    pub fn height(&self) -> Height {
        match self {
            WalRecord::Voted { height, .. } | WalRecord::RoundChanged { height, .. } => *height,
            WalRecord::Proposed { block, .. } => block.header.height,
            WalRecord::Prepared(cert) => cert.height,
        }
    }
}

/// What a member signed twice, for two different blocks, in one `(height, round)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum EvidenceKind {
    /// Two PREPAREs.
    Prepare,
    /// Two COMMITs.
    Commit,
    /// Two PRE-PREPAREs (the round's proposer proposed two different blocks).
    Proposal,
}

impl EvidenceKind {
    /// The name used in logs, metrics and the evidence log.
    pub fn name(self) -> &'static str {
        match self {
            EvidenceKind::Prepare => "prepare",
            EvidenceKind::Commit => "commit",
            EvidenceKind::Proposal => "proposal",
        }
    }
}

impl From<VoteKind> for EvidenceKind {
    fn from(kind: VoteKind) -> EvidenceKind {
        match kind {
            VoteKind::Prepare => EvidenceKind::Prepare,
            VoteKind::Commit => EvidenceKind::Commit,
        }
    }
}

/// Two different messages, both validly signed by one member, for the same
/// `(height, round, kind)`: two votes for different blocks, or two proposals of different
/// blocks. Either signature pair proves the member equivocated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Evidence {
    /// The equivocating member.
    pub signer: CouncilIndex,
    /// What it signed twice.
    pub kind: EvidenceKind,
    /// Height.
    pub height: Height,
    /// Round.
    pub round: Round,
    /// First block hash and signature seen.
    pub first: (Hash32, BlsSignatureBytes),
    /// Second, different, block hash and signature.
    pub second: (Hash32, BlsSignatureBytes),
}

/// Why a message was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Rejection {
    /// The signer is not in this height's committee.
    NotInCommittee,
    /// The signer is not in the council.
    NotInCouncil,
    /// A signature does not verify.
    BadSignature,
    /// A proposal from someone other than the round's elected proposer.
    WrongProposer,
    /// A proposal whose randao reveal does not verify under the proposer's key.
    BadRandaoReveal,
    /// A proposal whose header does not extend this node's chain (parent, mix, committee,
    /// timestamp) or whose round-0 justification rules are broken.
    BadProposal,
    /// A round > 0 proposal without a valid justification.
    Unjustified,
    /// A certificate that does not verify.
    BadCertificate,
    /// A round change whose prepared certificate is invalid.
    BadRoundChange,
    /// The block's contents failed verification.
    InvalidBlock,
    /// A message for a height too far ahead to buffer.
    TooFarAhead,
    /// A finalized block whose transactions are not the ones its certified header commits to.
    ForgedBody,
    /// A proposal or vote for a round far above this node's, or one round change too many for
    /// far rounds (see `machine::ROUND_WINDOW`).
    FarRound,
}

impl Rejection {
    /// Every reason, in declaration order (`reason as usize` indexes it).
    pub const ALL: [Rejection; 13] = [
        Rejection::NotInCommittee,
        Rejection::NotInCouncil,
        Rejection::BadSignature,
        Rejection::WrongProposer,
        Rejection::BadRandaoReveal,
        Rejection::BadProposal,
        Rejection::Unjustified,
        Rejection::BadCertificate,
        Rejection::BadRoundChange,
        Rejection::InvalidBlock,
        Rejection::TooFarAhead,
        Rejection::ForgedBody,
        Rejection::FarRound,
    ];

    /// The name used in logs and metrics (a `reason` label).
    pub fn name(self) -> &'static str {
        match self {
            Rejection::NotInCommittee => "not_in_committee",
            Rejection::NotInCouncil => "not_in_council",
            Rejection::BadSignature => "bad_signature",
            Rejection::WrongProposer => "wrong_proposer",
            Rejection::BadRandaoReveal => "bad_randao_reveal",
            Rejection::BadProposal => "bad_proposal",
            Rejection::Unjustified => "unjustified",
            Rejection::BadCertificate => "bad_certificate",
            Rejection::BadRoundChange => "bad_round_change",
            Rejection::InvalidBlock => "invalid_block",
            Rejection::TooFarAhead => "too_far_ahead",
            Rejection::ForgedBody => "forged_body",
            Rejection::FarRound => "far_round",
        }
    }

    /// Whether only a misbehaving member sends what is refused so (each costs the receiver
    /// signature work, or is spam): counted toward a ban by the node's driver.
    pub fn is_misbehaviour(self) -> bool {
        matches!(
            self,
            Rejection::BadSignature
                | Rejection::BadRandaoReveal
                | Rejection::Unjustified
                | Rejection::BadRoundChange
                | Rejection::FarRound
        )
    }
}
