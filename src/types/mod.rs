//! Chain and wire types, and the frame envelope that carries them.
//!
//! Every type here is an rkyv archive: flat (integers, fixed byte arrays, `Vec<u8>`, `Vec` of flat
//! types, `Option` of a flat type), with no maps, pointers to shared data or recursion, so a
//! received payload can be validated once with `rkyv::access` and then read in place.
//!
//! Identity is keccak-256 over an *explicit* byte layout written out in this module (see
//! [`BlockHeader::hash`] and [`VoteKind::signing_message`]), never over rkyv bytes: the archive
//! layout is a transport detail, the hash layout is part of the protocol.
//!
//! - [`chain`]: [`BlockHeader`], [`Block`], [`FinalizedBlock`].
//! - [`consensus`]: [`Vote`], [`QuorumCertificate`] (a [`CommitCertificate`] or a
//!   [`PreparedCertificate`]), [`RoundChange`], [`Proposal`], and the [`signers`] bitmap.
//! - [`network`]: [`network::TxBatch`], [`network::IngressAck`], [`network::SyncRequest`], and
//!   the bootnode protocol's [`network::PeerQuery`] and [`network::PeerList`].
//! - [`frame`]: `u32 length | u8 kind | payload`, its limits and an incremental decoder.
//! - [`hash`]: keccak-256 for identity (blocks, transactions), xxh3 for checksums and dedup keys.

pub mod chain;
pub mod consensus;
pub mod frame;
pub mod hash;
pub mod network;
pub mod signers;

pub use chain::{Block, BlockHeader, FinalizedBlock};
pub use consensus::{
    CommitCertificate, PreparedCertificate, Proposal, QuorumCertificate, RoundChange, Vote,
    VoteKind,
};
pub use frame::{Frame, FrameDecoder, FrameError, FrameKind};

/// A block height. The genesis block has height 0.
pub type Height = u64;
/// A consensus round within a height, from 0.
pub type Round = u32;
/// The position of a validator in the genesis council (0-based).
pub type CouncilIndex = u32;
/// The net shard's number for a connected peer. A council member's slot is its council index
/// (so consensus addresses CNs by index); any other peer (PN, EN) gets a slot from
/// [`TIER_SLOT_BASE`] up, kept for its node id while the node runs.
pub type PeerSlot = u32;
/// The first slot of a peer that is not a council member (above every council index).
pub const TIER_SLOT_BASE: PeerSlot = 1 << 24;
/// A compressed BLS12-381 G1 public key (`min_pk`).
pub type BlsPublicKeyBytes = [u8; 48];
/// A compressed BLS12-381 G2 signature (`min_pk`).
pub type BlsSignatureBytes = [u8; 96];

/// The largest council a genesis may name. Bounds the signer bitmap at 128 bytes.
pub const MAX_COUNCIL_SIZE: usize = 1024;
/// Largest accepted transaction envelope, in bytes. Checked before any decoding.
///
/// 128 KiB is geth's txpool limit (`txMaxSize`), so anything a standard Ethereum client would relay
/// fits.
pub const MAX_TX_BYTES: usize = 128 * 1024;
/// The most transactions one block may carry.
pub const MAX_BLOCK_TXS: usize = 50_000;
/// The most bytes of signed transactions one block may carry.
pub const MAX_BLOCK_TX_BYTES: usize = 8 * 1024 * 1024;

/// Why a decoded value was refused after its archive validated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitError {
    /// A collection is longer than its named limit.
    #[error("{what}: {len} exceeds the limit of {max}")]
    TooMany {
        /// Which collection.
        what: &'static str,
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A value is malformed in a way the archive format cannot express.
    #[error("{0}")]
    Invalid(&'static str),
}

/// Serializes a wire value to rkyv bytes (16-byte aligned).
///
/// Serialization of our flat types cannot fail except by allocation failure, which aborts.
pub fn to_bytes<T>(value: &T) -> rkyv::util::AlignedVec<16>
where
    T: for<'a> rkyv::Serialize<
        rkyv::api::high::HighSerializer<
            rkyv::util::AlignedVec<16>,
            rkyv::ser::allocator::ArenaHandle<'a>,
            rkyv::rancor::Error,
        >,
    >,
{
    match rkyv::to_bytes::<rkyv::rancor::Error>(value) {
        Ok(bytes) => bytes,
        // Our types hold no fallible serializers (no shared pointers, no maps); reaching this is
        // a bug in this crate, not bad input.
        Err(err) => panic!("rkyv serialization of a flat wire type failed: {err}"),
    }
}

#[cfg(test)]
mod tests;
