//! Consensus messages: votes, quorum certificates, round changes and proposals.
//!
//! These are the IBFT messages of Moniz, "The Istanbul BFT Consensus Algorithm" (2020), in
//! wire form:
//! - [`Proposal`] is PRE-PREPARE: a block for `(height, round)` signed by the round's proposer,
//!   with the quorum of ROUND-CHANGEs that justifies it when `round > 0`.
//! - [`Vote`] is PREPARE or COMMIT for one block hash.
//! - [`QuorumCertificate`] is a quorum of equal votes folded into one aggregated BLS signature
//!   plus a bitmap of who signed ([`super::signers`]). A quorum of COMMITs is a
//!   [`CommitCertificate`] (finality); a quorum of PREPAREs is a [`PreparedCertificate`] (the
//!   justification a ROUND-CHANGE carries).
//! - [`RoundChange`] asks to move to `round`, carrying the sender's prepared certificate if it
//!   has one.
//!
//! Signing messages have explicit layouts (see [`VoteKind::signing_message`],
//! [`RoundChange::signing_message`], [`Proposal::signing_message`]); each starts with a tag byte
//! so that no message of one kind can be replayed as another, and each binds the chain id.

use rkyv::{Archive, Deserialize, Serialize};

use super::chain::Block;
use super::signers;
use super::{BlsSignatureBytes, CouncilIndex, Height, LimitError, Round, MAX_COUNCIL_SIZE};
use crate::types::hash::Hash32;

/// Tag byte of a PRE-PREPARE signing message.
const TAG_PROPOSAL: u8 = 0x10;
/// Tag byte of a ROUND-CHANGE signing message.
const TAG_ROUND_CHANGE: u8 = 0x13;

/// Length of a vote or proposal signing message: tag, chain id, height, round, block hash.
pub const VOTE_MESSAGE_LEN: usize = 1 + 8 + 8 + 4 + 32;
/// Length of a round-change signing message: tag, chain id, height, round, prepared round,
/// prepared block hash.
pub const ROUND_CHANGE_MESSAGE_LEN: usize = 1 + 8 + 8 + 4 + 4 + 32;
/// Prepared round written in a round-change signing message when nothing was prepared.
pub const NOT_PREPARED: u32 = u32::MAX;

/// The kind of a vote. The discriminant is the tag byte of its signing message.
#[derive(
    Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash,
)]
#[rkyv(derive(Debug, Clone, Copy, PartialEq, Eq))]
#[repr(u8)]
pub enum VoteKind {
    /// PREPARE: "I received and accept this proposal".
    Prepare = 0x11,
    /// COMMIT: "I saw a prepare quorum; commit this block".
    Commit = 0x12,
}

impl VoteKind {
    /// The signing message of a vote: `tag || be_u64(chain_id) || be_u64(height) ||
    /// be_u32(round) || block_hash`.
    pub fn signing_message(
        self,
        chain_id: u64,
        height: Height,
        round: Round,
        block_hash: &Hash32,
    ) -> [u8; VOTE_MESSAGE_LEN] {
        tagged_message(self as u8, chain_id, height, round, block_hash)
    }

    /// The name used in logs and errors.
    pub fn name(self) -> &'static str {
        match self {
            VoteKind::Prepare => "prepare",
            VoteKind::Commit => "commit",
        }
    }
}

impl ArchivedVoteKind {
    /// The native kind.
    pub fn to_native(self) -> VoteKind {
        match self {
            ArchivedVoteKind::Prepare => VoteKind::Prepare,
            ArchivedVoteKind::Commit => VoteKind::Commit,
        }
    }
}

fn tagged_message(
    tag: u8,
    chain_id: u64,
    height: Height,
    round: Round,
    block_hash: &Hash32,
) -> [u8; VOTE_MESSAGE_LEN] {
    let mut m = [0u8; VOTE_MESSAGE_LEN];
    m[0] = tag;
    m[1..9].copy_from_slice(&chain_id.to_be_bytes());
    m[9..17].copy_from_slice(&height.to_be_bytes());
    m[17..21].copy_from_slice(&round.to_be_bytes());
    m[21..53].copy_from_slice(block_hash);
    m
}

/// One validator's PREPARE or COMMIT for a block at `(height, round)`.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct Vote {
    /// Prepare or commit.
    pub kind: VoteKind,
    /// Height voted on.
    pub height: Height,
    /// Round voted in.
    pub round: Round,
    /// Hash of the block voted for.
    pub block_hash: Hash32,
    /// Council index of the voter.
    pub signer: CouncilIndex,
    /// BLS signature over [`VoteKind::signing_message`] with the vote domain tag.
    pub signature: BlsSignatureBytes,
}

impl Vote {
    /// The message this vote's signature covers.
    pub fn signing_message(&self, chain_id: u64) -> [u8; VOTE_MESSAGE_LEN] {
        self.kind
            .signing_message(chain_id, self.height, self.round, &self.block_hash)
    }
}

impl ArchivedVote {
    /// The message this vote's signature covers, computed in place.
    pub fn signing_message(&self, chain_id: u64) -> [u8; VOTE_MESSAGE_LEN] {
        self.kind.to_native().signing_message(
            chain_id,
            self.height.to_native(),
            self.round.to_native(),
            &self.block_hash,
        )
    }
}

/// A quorum of equal votes: every signer in `signers` signed
/// `kind.signing_message(chain_id, height, round, block_hash)`, and `signature` is the
/// aggregate of their signatures. One `fast_aggregate_verify` checks it whatever the size.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct QuorumCertificate {
    /// Prepare (a prepared certificate) or commit (a commit certificate).
    pub kind: VoteKind,
    /// Height of the certified block.
    pub height: Height,
    /// Round in which the votes were cast.
    pub round: Round,
    /// Hash of the certified block.
    pub block_hash: Hash32,
    /// Bitmap of council indices that signed (canonical, see [`super::signers`]).
    pub signers: Vec<u8>,
    /// Aggregated BLS signature of all signers.
    pub signature: BlsSignatureBytes,
}

/// A quorum of COMMIT votes: the proof that a block is final. `kind` is always `Commit`.
pub type CommitCertificate = QuorumCertificate;
/// A quorum of PREPARE votes: carried by a ROUND-CHANGE as its justification. `kind` is always
/// `Prepare`.
pub type PreparedCertificate = QuorumCertificate;

impl QuorumCertificate {
    /// The message every signer signed.
    pub fn signing_message(&self, chain_id: u64) -> [u8; VOTE_MESSAGE_LEN] {
        self.kind
            .signing_message(chain_id, self.height, self.round, &self.block_hash)
    }
}

impl ArchivedQuorumCertificate {
    /// Structural checks that need no keys: bitmap size within [`MAX_COUNCIL_SIZE`] and at least
    /// one signer. Membership and the signature are checked against the council by
    /// `crypto::bls::CouncilKeys::verify_certificate`.
    pub fn check_shape(&self) -> Result<(), LimitError> {
        let max = signers::bitmap_len(MAX_COUNCIL_SIZE);
        if self.signers.len() > max {
            return Err(LimitError::TooMany {
                what: "signer bitmap bytes",
                len: self.signers.len(),
                max,
            });
        }
        if signers::count(&self.signers) == 0 {
            return Err(LimitError::Invalid("certificate without signers"));
        }
        Ok(())
    }
}

/// ROUND-CHANGE: the signer asks to move to `round` at `height`, and carries the highest
/// prepared certificate it holds for this height, if any.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct RoundChange {
    /// Height.
    pub height: Height,
    /// The round the signer wants to move to.
    pub round: Round,
    /// Council index of the sender.
    pub signer: CouncilIndex,
    /// The sender's prepared certificate for this height (its `round` is below `round`).
    pub prepared: Option<PreparedCertificate>,
    /// BLS signature over [`RoundChange::signing_message`] with the vote domain tag.
    pub signature: BlsSignatureBytes,
}

impl RoundChange {
    /// `tag || be_u64(chain_id) || be_u64(height) || be_u32(round) || be_u32(prepared round or
    /// NOT_PREPARED) || prepared block hash (or zero)`.
    pub fn signing_message(&self, chain_id: u64) -> [u8; ROUND_CHANGE_MESSAGE_LEN] {
        let prepared = self.prepared.as_ref().map(|p| (p.round, &p.block_hash));
        round_change_message(chain_id, self.height, self.round, prepared)
    }
}

impl ArchivedRoundChange {
    /// The signing message computed in place.
    pub fn signing_message(&self, chain_id: u64) -> [u8; ROUND_CHANGE_MESSAGE_LEN] {
        let prepared = self
            .prepared
            .as_ref()
            .map(|p| (p.round.to_native(), &p.block_hash));
        round_change_message(
            chain_id,
            self.height.to_native(),
            self.round.to_native(),
            prepared,
        )
    }

    /// Structural checks: the prepared certificate, if any, is a PREPARE quorum of this height
    /// from an earlier round.
    pub fn check_shape(&self) -> Result<(), LimitError> {
        if let Some(p) = self.prepared.as_ref() {
            p.check_shape()?;
            if p.kind != ArchivedVoteKind::Prepare {
                return Err(LimitError::Invalid(
                    "round change carries a non-prepare certificate",
                ));
            }
            if p.height != self.height {
                return Err(LimitError::Invalid(
                    "prepared certificate is for another height",
                ));
            }
            if p.round.to_native() >= self.round.to_native() {
                return Err(LimitError::Invalid(
                    "prepared certificate is not from an earlier round",
                ));
            }
        }
        Ok(())
    }
}

fn round_change_message(
    chain_id: u64,
    height: Height,
    round: Round,
    prepared: Option<(Round, &Hash32)>,
) -> [u8; ROUND_CHANGE_MESSAGE_LEN] {
    let (prepared_round, prepared_hash) = prepared.unwrap_or((NOT_PREPARED, &[0u8; 32]));
    let mut m = [0u8; ROUND_CHANGE_MESSAGE_LEN];
    m[0] = TAG_ROUND_CHANGE;
    m[1..9].copy_from_slice(&chain_id.to_be_bytes());
    m[9..17].copy_from_slice(&height.to_be_bytes());
    m[17..21].copy_from_slice(&round.to_be_bytes());
    m[21..25].copy_from_slice(&prepared_round.to_be_bytes());
    m[25..57].copy_from_slice(prepared_hash);
    m
}

/// PRE-PREPARE: `proposer`, elected for `(block.header.height, round)`, proposes `block`.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct Proposal {
    /// Council index of the proposer of `round`, who signs this proposal. For a block
    /// re-proposed in a later round this differs from `block.header.proposer` (who built the
    /// block, in `block.header.round`, and whose randao reveal it carries).
    pub proposer: CouncilIndex,
    /// The round of this proposal. A block re-proposed in a later round keeps the header (and
    /// so the `header.round`) it was first built with; this field says which round proposes it.
    pub round: Round,
    /// The proposed block; its header names the proposer and carries the randao reveal.
    pub block: Block,
    /// For `round > 0`: the quorum of ROUND-CHANGEs for `round` that justifies the value.
    pub justification: Vec<RoundChange>,
    /// The proposer's BLS signature over [`Proposal::signing_message`] (vote domain tag).
    pub signature: BlsSignatureBytes,
}

impl Proposal {
    /// `0x10 || be_u64(chain_id) || be_u64(height) || be_u32(round) || block hash`.
    pub fn signing_message(&self, chain_id: u64) -> [u8; VOTE_MESSAGE_LEN] {
        let h = &self.block.header;
        tagged_message(
            TAG_PROPOSAL,
            chain_id,
            h.height,
            self.round,
            &self.block.hash(),
        )
    }
}

impl ArchivedProposal {
    /// The signing message computed in place.
    pub fn signing_message(&self, chain_id: u64) -> [u8; VOTE_MESSAGE_LEN] {
        let h = &self.block.header;
        tagged_message(
            TAG_PROPOSAL,
            chain_id,
            h.height.to_native(),
            self.round.to_native(),
            &h.hash(),
        )
    }

    /// Structural checks: block limits, a justification no larger than a council with at most
    /// one round change per signer, each for this height and round and well formed.
    pub fn check_limits(&self) -> Result<(), LimitError> {
        self.block.check_limits()?;
        if self.justification.len() > MAX_COUNCIL_SIZE {
            return Err(LimitError::TooMany {
                what: "justification round changes",
                len: self.justification.len(),
                max: MAX_COUNCIL_SIZE,
            });
        }
        if self.round.to_native() == 0 && !self.justification.is_empty() {
            return Err(LimitError::Invalid(
                "round 0 proposal carries a justification",
            ));
        }
        let mut seen = [0u8; MAX_COUNCIL_SIZE / 8];
        for rc in self.justification.iter() {
            let signer = rc.signer.to_native() as usize;
            if signer >= MAX_COUNCIL_SIZE {
                return Err(LimitError::Invalid(
                    "justification round change from outside any council",
                ));
            }
            if seen[signer / 8] & (1 << (signer % 8)) != 0 {
                return Err(LimitError::Invalid(
                    "justification holds two round changes from one signer",
                ));
            }
            seen[signer / 8] |= 1 << (signer % 8);
            rc.check_shape()?;
            if rc.height != self.block.header.height || rc.round != self.round {
                return Err(LimitError::Invalid(
                    "justification round change for another height or round",
                ));
            }
        }
        Ok(())
    }
}
