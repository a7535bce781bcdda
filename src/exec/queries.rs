//! The exec shard's query door: the questions the JSON-RPC thread asks it ([`RpcQuery`]), its
//! answers ([`RpcAnswer`]), and the bridge that carries them ([`RpcBridge`] on the RPC thread,
//! [`RpcInbox`] in the shard).
//!
//! The bridge is a **bounded** flume channel: the RPC thread runs tokio, the shard glommio, and
//! flume's async ends work from both (glommio's own channels connect executors only). Each
//! request carries a tokio oneshot for its answer. The RPC thread never waits for room
//! (`try_send`: a full queue is answered "node busy"); the shard answers with `Arc`s of indexed
//! blocks and plain values, so it never waits for the RPC thread either.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use alloy_primitives::U256;

use crate::exec::chain_index::IndexedBlock;
use crate::exec::mempool::Refusal;
use crate::types::hash::Hash32;
use crate::types::Height;

/// Which state a state query asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateAt {
    /// `latest`, `pending`, `safe`, `finalized` (or no block given).
    Latest,
    /// A block number: the head's is served, any other refused.
    Number(Height),
    /// A block hash: the head's is served, any other refused.
    Hash(Hash32),
}

/// Which block a block query asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockAt {
    /// The newest finalized block.
    Latest,
    /// By height.
    Number(Height),
    /// By hash.
    Hash(Hash32),
}

/// A question to the exec shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RpcQuery {
    /// The finalized head and what the index holds.
    Head,
    /// An account's nonce and balance.
    Account {
        /// The account.
        address: [u8; 20],
        /// Which state.
        at: StateAt,
    },
    /// Admit a signed transaction (and gossip it on).
    SendRaw(Vec<u8>),
    /// A block.
    Block(BlockAt),
    /// A transaction, finalized or pooled.
    Transaction(Hash32),
    /// Up to `count` blocks ending at `newest` (`None`: the head), oldest first.
    Blocks {
        /// The newest block wanted.
        newest: Option<Height>,
        /// How many.
        count: usize,
    },
}

/// The finalized head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeadInfo {
    /// The last finalized (and executed) height.
    pub height: Height,
    /// The oldest block the index still holds.
    pub oldest_indexed: Option<Height>,
    /// The height the exec shard started from (snapshot or genesis).
    pub started_at: Height,
}

/// An account at the head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AccountInfo {
    /// Next nonce at the head.
    pub nonce: u64,
    /// Next nonce counting the sender's pooled transactions.
    pub pending_nonce: u64,
    /// Balance, wei.
    pub balance: U256,
    /// The head height.
    pub height: Height,
}

/// A transaction looked up by hash.
#[derive(Debug, Clone)]
pub enum TxFound {
    /// In a finalized, indexed block, at this position.
    Included(Arc<IndexedBlock>, u32),
    /// Admitted, not yet in a block.
    Pending {
        /// Its bytes.
        bytes: Vec<u8>,
        /// Its sender.
        sender: [u8; 20],
    },
    /// Unknown, or in a block older than the index.
    Unknown,
}

/// The exec shard's answer.
#[derive(Debug, Clone)]
pub enum RpcAnswer {
    /// To [`RpcQuery::Head`].
    Head(HeadInfo),
    /// To [`RpcQuery::Account`]; `Err(head)` for a state other than the head's.
    Account(Result<AccountInfo, Height>),
    /// To [`RpcQuery::SendRaw`].
    Sent(Result<Hash32, Refusal>),
    /// To [`RpcQuery::Block`]: `None` when not indexed.
    Block(Option<Arc<IndexedBlock>>),
    /// To [`RpcQuery::Transaction`].
    Transaction(TxFound),
    /// To [`RpcQuery::Blocks`].
    Blocks(Vec<Arc<IndexedBlock>>),
    /// The chain is raw: no accounts nor Ethereum transactions.
    RawChain,
}

/// One question on the bridge, with where its answer goes.
#[derive(Debug)]
pub struct RpcRequest {
    /// The question.
    pub query: RpcQuery,
    /// The answer's way back.
    pub reply: tokio::sync::oneshot::Sender<RpcAnswer>,
}

/// The exec shard's end of the bridge (give it to `exec::run_with_rpc`).
pub type RpcInbox = flume::Receiver<RpcRequest>;

/// The RPC thread's end of the bridge.
#[derive(Debug, Clone)]
pub struct RpcBridge {
    /// Questions to the exec shard (bounded).
    pub to_exec: flume::Sender<RpcRequest>,
    /// The highest height this node knows the network has reached (fed by whoever learns
    /// it, e.g. the follower); above the exec head, `eth_syncing` reports syncing.
    pub highest_known: Arc<AtomicU64>,
}

impl RpcBridge {
    /// A bridge with a queue of `capacity` questions, and the exec shard's end.
    pub fn new(capacity: usize) -> (RpcBridge, RpcInbox) {
        let (to_exec, inbox) = flume::bounded(capacity);
        (
            RpcBridge {
                to_exec,
                highest_known: Arc::new(AtomicU64::new(0)),
            },
            inbox,
        )
    }
}
