//! The exec shard's door: what it receives (batches from net, requests from consensus), what
//! it answers and sends (replies to consensus, gossip and acks to net), and the channel ends
//! it owns ([`ExecChannels`]). Its query door for the RPC thread is [`super::queries`].

use std::sync::Arc;
use std::time::Instant;

use crate::runtime::{Rx, Tx};
use crate::types::chain::SignedTransaction;
use crate::types::frame::Frame;
use crate::types::hash::Hash32;
use crate::types::network::IngressAck;
use crate::types::{Block, BlockHeader, FinalizedBlock, Height, Round};

/// Where an ingress connection's batch came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchOrigin {
    /// A client on an ingress connection (answered with an `IngressAck`).
    Client {
        /// The net shard's number of the connection.
        connection: u64,
    },
    /// Another CN's gossip (admitted without an answer, not gossiped again).
    Peer,
    /// A client's transactions relayed by a PN (admitted without an answer, and gossiped to
    /// the other CNs like a client's).
    Relay,
}

/// A validated `TxBatch` frame from the net shard.
#[derive(Debug)]
pub struct BatchIn {
    /// Who sent it.
    pub origin: BatchOrigin,
    /// The frame; the net shard validated it as a `TxBatch` (`Frame::message`).
    pub frame: Frame,
    /// When the net shard received it.
    pub received: Instant,
}

/// What consensus asks of exec.
// A header travels inline in `Build` (one per block); boxing it would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum ExecRequest {
    /// Build a block on `parent` for `(height, round)`.
    Build {
        /// Height.
        height: Height,
        /// Round.
        round: Round,
        /// Parent header.
        parent: BlockHeader,
    },
    /// Check a proposed block.
    Verify(Box<Block>),
    /// A block is final and durable.
    Finalized {
        /// The block.
        block: Arc<FinalizedBlock>,
        /// Its transactions' hashes, when the sender computed them (it checked the block's
        /// body against its header on the way in).
        tx_hashes: Option<Vec<Hash32>>,
    },
}

/// Exec's answers to consensus.
#[derive(Debug)]
pub enum ExecReply {
    /// A block body for `(height, round)`.
    Built {
        /// Height.
        height: Height,
        /// Round.
        round: Round,
        /// Transactions, in order.
        transactions: Vec<SignedTransaction>,
        /// State root after them.
        state_root: Hash32,
    },
    /// The verdict on a proposed block.
    Verified {
        /// Height.
        height: Height,
        /// Block hash.
        block_hash: Hash32,
        /// Whether it is valid.
        valid: bool,
    },
}

/// What exec asks of the net shard.
#[derive(Debug)]
pub enum ExecToNet {
    /// Pass these admitted transactions on: a CN sends the frame to every other CN, an EN to
    /// one of its PNs.
    Gossip(Arc<Vec<u8>>),
    /// Answer a client's batch.
    Ack {
        /// The ingress connection.
        connection: u64,
        /// The answer.
        ack: IngressAck,
    },
}

/// The channels of the exec shard.
pub struct ExecChannels {
    /// From consensus.
    pub from_consensus: Rx<ExecRequest>,
    /// To consensus.
    pub to_consensus: Tx<ExecReply>,
    /// Batches from the net shard.
    pub from_net: Rx<BatchIn>,
    /// To the net shard.
    pub to_net: Tx<ExecToNet>,
    /// State snapshots for the store shard to write (`None`: this exec shard writes none).
    pub to_store: Option<Tx<crate::store::snapshots::SnapshotWrite>>,
}
