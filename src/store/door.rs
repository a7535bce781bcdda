//! The store shard's door: what it receives (persist and commit requests from consensus, sync
//! requests from net), what it answers (fsynced replies, sync frames), and the channel ends it
//! owns ([`StoreChannels`]).

use std::sync::Arc;

use crate::consensus::WalRecord;
use crate::runtime::{Rx, Tx};
use crate::types::{CouncilIndex, FinalizedBlock, Height};

/// What other shards ask of the store.
#[derive(Debug)]
pub enum StoreRequest {
    /// Append these WAL records and fsync; answer [`StoreReply::Persisted`].
    Persist(Vec<WalRecord>),
    /// Append this finalized block and fsync; answer [`StoreReply::Committed`].
    Commit(Arc<FinalizedBlock>),
}

/// The store's answers to the consensus shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreReply {
    /// The WAL records are durable.
    Persisted,
    /// The block at this height is durable.
    Committed(Height),
}

/// A request from the net shard: send `peer` finalized blocks from `from_height` on.
#[derive(Debug, Clone, Copy)]
pub struct SyncServe {
    /// Who asked.
    pub peer: CouncilIndex,
    /// First height wanted.
    pub from_height: Height,
}

/// A frame for the net shard to send to one council member.
#[derive(Debug)]
pub struct PeerFrame {
    /// To whom.
    pub peer: CouncilIndex,
    /// The frame bytes.
    pub frame: Arc<Vec<u8>>,
}

/// The channels of the store shard.
pub struct StoreChannels {
    /// Requests from consensus.
    pub from_consensus: Rx<StoreRequest>,
    /// Answers to consensus.
    pub to_consensus: Tx<StoreReply>,
    /// Sync requests from the net shard.
    pub from_net: Rx<SyncServe>,
    /// Sync answers for the net shard.
    pub to_net: Tx<PeerFrame>,
    /// State snapshots to write, from the exec shard (a PN has none).
    pub from_exec: Option<Rx<super::snapshots::SnapshotWrite>>,
}
