//! Wire types outside the consensus protocol proper: transaction batches (client ingress and
//! CN-to-CN gossip), ingress acknowledgements, and sync requests.
//!
//! - [`TxBatch`]: a client sends transactions to a node's ingress port in batches; a CN that
//!   admits a batch gossips it to the other CNs so whichever CN proposes next already holds it.
//!   `id` is the sender's own number for the batch (a client's sequence number); the receiver
//!   only echoes it back in [`IngressAck`].
//! - [`IngressAck`]: the node's answer to one ingress batch, fixed size: refused at once
//!   (`status != FINAL`), or final (every admitted transaction of the batch is in a finalized
//!   block, the last of them at `height`).
//! - [`SyncRequest`]: "send me your finalized blocks from `from_height` on" (the consensus
//!   core's `RequestSync` effect on the wire); answered with `FinalizedBlock` frames, at most
//!   [`MAX_SYNC_BLOCKS`] per request.

use rkyv::{Archive, Deserialize, Serialize};

use super::chain::{check_transaction_list, SignedTransaction, TransactionList};
use super::{Height, LimitError};

/// The most transactions one [`TxBatch`] may carry.
pub const MAX_BATCH_TXS: usize = 8192;
/// The most transaction bytes one [`TxBatch`] may carry.
pub const MAX_BATCH_TX_BYTES: usize = 2 * 1024 * 1024;
/// The most finalized blocks sent for one [`SyncRequest`].
pub const MAX_SYNC_BLOCKS: u64 = 64;

/// A batch of transactions from a client, or gossiped between CNs.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct TxBatch {
    /// The sender's number for this batch, echoed in [`IngressAck::batch_id`].
    pub id: u64,
    /// The transactions, in the sender's order.
    pub transactions: Vec<SignedTransaction>,
}

impl ArchivedTxBatch {
    /// Named limits: count, no empty transaction, per-transaction and total size.
    pub fn check_limits(&self) -> Result<(), LimitError> {
        if self.transactions.is_empty() {
            return Err(LimitError::Invalid("empty transaction batch"));
        }
        check_transaction_list(
            &self.transactions,
            TransactionList::Batch,
            MAX_BATCH_TXS,
            MAX_BATCH_TX_BYTES,
        )
    }
}

/// What became of an ingress batch.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct IngressAck {
    /// The [`TxBatch::id`] answered.
    pub batch_id: u64,
    /// One of the `IngressAck::*` status codes.
    pub status: u8,
    /// For [`IngressAck::FINAL`]: the height of the block holding the batch's last
    /// transaction; otherwise 0.
    pub height: Height,
    /// Transactions of the batch admitted (final) or refused.
    pub count: u32,
}

impl IngressAck {
    /// Every admitted transaction of the batch is final.
    pub const FINAL: u8 = 0;
    /// Refused: the node's pool is full (back off and retry).
    pub const REFUSED_POOL_FULL: u8 = 1;
    /// Refused: the node does not take ingress (it is shutting down, or not a CN).
    pub const REFUSED_UNAVAILABLE: u8 = 2;
    /// Refused: every transaction of the batch was a duplicate of one already pooled.
    pub const REFUSED_DUPLICATE: u8 = 3;

    /// A readable name of a status code.
    pub fn status_name(status: u8) -> &'static str {
        match status {
            IngressAck::FINAL => "final",
            IngressAck::REFUSED_POOL_FULL => "pool-full",
            IngressAck::REFUSED_UNAVAILABLE => "unavailable",
            IngressAck::REFUSED_DUPLICATE => "duplicate",
            _ => "unknown",
        }
    }
}

/// A request for finalized blocks from `from_height` on.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct SyncRequest {
    /// The first height wanted.
    pub from_height: Height,
}
