//! The exec shard: transaction pools, block building, block checking and execution.
//!
//! What a chain's transactions are is a genesis setting
//! ([`ExecutionMode`](crate::config::genesis::ExecutionMode)), served by one of two engines:
//! - [`transfer::TransferEngine`] (`transfer`, the default): signed Ethereum transfers in a
//!   [`mempool::Mempool`], executed against the account [`state::State`] whose root every
//!   header carries;
//! - [`raw::RawPool`] (`raw`): opaque transactions, ordered and finalized, not executed.
//!
//! Transactions reach the shard two ways, through the net shard:
//! - a client's ingress batch: admitted; refusals answered at once (one `IngressAck` per
//!   reason); the admitted part gossiped to the other CNs so that whoever proposes next already
//!   holds it (client batches admitted within [`GOSSIP_DELAY`] go out as one batch); FINAL (and
//!   DROPPED) answers once the admitted transactions settle;
//! - another CN's gossip: admitted without an answer and not gossiped again.
//!
//! Consensus asks the shard to build a block, to check a proposed one, and tells it when a
//! block is final (after it is durable). Requests are handled in order, so a block is always
//! built and checked on the state of the last finalized block.
//!
//! Restarts ([`snapshot`]): every [`snapshot::SNAPSHOT_INTERVAL_BLOCKS`] finalized blocks the
//! state is encoded here and handed to the store shard, which writes it durably
//! ([`crate::store::snapshots`]); a node starts from the latest snapshot and replays the block
//! log after it.
//!
//! The shard's door (what it receives and sends, and its channel ends) is [`door`] (re-exported
//! here); its query door for the RPC thread is [`queries`].
//!
//! A finalized block that does not execute to its header's state root is fatal: [`run`]
//! returns the error and the node stops rather than serve a diverged state.

pub mod chain_index;
pub mod door;
pub mod mempool;
pub mod queries;
pub mod raw;
pub mod snapshot;
pub mod state;
pub mod transfer;
pub use door::{BatchIn, BatchOrigin, ExecChannels, ExecReply, ExecRequest, ExecToNet};

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Instant;

use crate::runtime::ShardStats;
use crate::types::chain::SignedTransaction;
use crate::types::frame::{encode_frame, FrameKind};
use crate::types::hash::Hash32;
use crate::types::network::{ArchivedTxBatch, IngressAck};
use crate::types::{Block, FinalizedBlock, Height, MAX_BLOCK_TXS, MAX_BLOCK_TX_BYTES};

pub use raw::{Admission, RawPool, DEFAULT_POOL_BYTES, DEFAULT_POOL_TXS};

/// Gossip frames go out at most this often (see `GossipBuffer`).
pub const GOSSIP_DELAY: std::time::Duration = std::time::Duration::from_millis(10);
/// A gossip batch goes out at once when it holds this many transactions ...
pub const GOSSIP_MAX_TXS: usize = 2048;
/// ... or this many bytes (well within a `TxBatch`'s limits).
pub const GOSSIP_MAX_BYTES: usize = 256 * 1024;

const _: () = assert!(
    GOSSIP_MAX_TXS + crate::types::network::MAX_BATCH_TXS / 2
        <= crate::types::network::MAX_BATCH_TXS
        && GOSSIP_MAX_BYTES + crate::types::network::MAX_BATCH_TX_BYTES / 2
            <= crate::types::network::MAX_BATCH_TX_BYTES,
    "a full gossip buffer plus one more client batch fits in one TxBatch"
);
pub use state::genesis_state_root;
pub use transfer::TransferEngine;

/// A batch that waited longer than this in the exec shard's inbox is not admitted: a client's
/// is answered `REFUSED_BUSY` at once, a peer's gossip is dropped (a block holding its
/// transactions recovers them then). Under a load beyond what the node can verify, this keeps
/// the inbox from growing into seconds of signature recoveries that starve consensus, and
/// tells clients to back off.
pub const ADMISSION_DEADLINE: std::time::Duration = std::time::Duration::from_millis(250);

/// Counters exec exposes (metrics).
#[derive(Debug, Default)]
pub struct ExecCounters {
    /// Transactions admitted to the pool.
    pub admitted: AtomicU64,
    /// Transactions refused at admission (any reason).
    pub refused: AtomicU64,
    /// Admitted transactions dropped before any block included them.
    pub dropped: AtomicU64,
    /// Transactions not admitted because their batch waited past [`ADMISSION_DEADLINE`].
    pub shed: AtomicU64,
    /// Transactions in finalized blocks.
    pub finalized: AtomicU64,
    /// Transactions pending in the pool.
    pub pending: AtomicU64,
    /// Signature recoveries done.
    pub recoveries: AtomicU64,
    /// Transactions of checked or finalized blocks found decoded in the pool.
    pub block_txs_pooled: AtomicU64,
    /// Transactions of checked or finalized blocks that had to be decoded and recovered.
    pub block_txs_recovered: AtomicU64,
    /// Height of the executed, finalized state.
    pub state_height: AtomicU64,
}

/// The engine of the chain's execution mode.
#[derive(Debug)]
pub enum Engine {
    /// Signed transfers, executed.
    Transfer(Box<TransferEngine>),
    /// Opaque transactions.
    Raw(RawPool),
}

/// How often the exec shard hands the store shard a state snapshot to write.
#[derive(Debug, Clone)]
pub struct SnapshotPolicy {
    /// A snapshot after every this many finalized blocks.
    pub every_blocks: u64,
}

impl Engine {
    fn publish(&self, c: &ExecCounters) {
        match self {
            Engine::Transfer(e) => {
                let k = e.counters();
                c.admitted.store(k.admitted, Relaxed);
                c.refused.store(k.refused, Relaxed);
                c.dropped.store(k.dropped, Relaxed);
                c.finalized.store(k.finalized, Relaxed);
                c.recoveries.store(k.recoveries, Relaxed);
                c.block_txs_pooled.store(k.block_txs_pooled, Relaxed);
                c.block_txs_recovered.store(k.block_txs_recovered, Relaxed);
                c.pending.store(e.pooled() as u64, Relaxed);
                c.state_height.store(e.head(), Relaxed);
            }
            Engine::Raw(p) => c.pending.store(p.pending() as u64, Relaxed),
        }
    }

    /// Offers a batch; returns the answers for the client and the transactions to gossip (a
    /// client's or a PN's admitted ones; a CN peer's are never gossiped again).
    fn admit(
        &mut self,
        batch: &BatchIn,
        counters: &ExecCounters,
    ) -> (Vec<ExecToNet>, Vec<SignedTransaction>) {
        debug_assert_eq!(batch.frame.kind, FrameKind::TxBatch);
        // SAFETY: the net shard validated this payload as an ArchivedTxBatch with
        // `Frame::message` (rkyv::access + limits) before sending it here, and the bytes have
        // not changed since.
        let archived = unsafe { rkyv::access_unchecked::<ArchivedTxBatch>(&batch.frame.payload) };
        let client = match batch.origin {
            BatchOrigin::Client { connection } => Some((connection, archived.id.to_native())),
            BatchOrigin::Peer | BatchOrigin::Relay => None,
        };
        let gossips = batch.origin != BatchOrigin::Peer;
        let len = archived.transactions.len();
        let mut acks = Vec::new();
        let mut admitted_indices = Vec::new();
        // The answer refusing `count` transactions of a client's batch for `status`.
        let refusal = |status: u8, count: u32| {
            client.map(|(connection, batch_id)| ExecToNet::Ack {
                connection,
                ack: IngressAck {
                    batch_id,
                    status,
                    height: 0,
                    count,
                },
            })
        };
        if batch.received.elapsed() > ADMISSION_DEADLINE {
            counters.shed.fetch_add(len as u64, Relaxed);
            acks.extend(refusal(IngressAck::REFUSED_BUSY, len as u32));
            return (acks, Vec::new());
        }
        match self {
            Engine::Transfer(engine) => {
                let outcome = engine.admit_batch(
                    archived.transactions.iter().map(|t| t.bytes.as_slice()),
                    client,
                    crate::config::clock::now_ms(),
                );
                admitted_indices = outcome.admitted;
                acks.extend(
                    outcome
                        .acks
                        .into_iter()
                        .map(|(connection, ack)| ExecToNet::Ack { connection, ack }),
                );
            }
            Engine::Raw(pool) => match pool.admit(archived, client) {
                Admission::Admitted {
                    admitted,
                    duplicates,
                } => {
                    counters.admitted.fetch_add(admitted as u64, Relaxed);
                    counters.refused.fetch_add(duplicates as u64, Relaxed);
                    if gossips && admitted > 0 {
                        admitted_indices = (0..len).collect();
                    }
                    if duplicates > 0 {
                        acks.extend(refusal(IngressAck::REFUSED_DUPLICATE, duplicates));
                    }
                }
                Admission::PoolFull => {
                    counters.refused.fetch_add(len as u64, Relaxed);
                    acks.extend(refusal(IngressAck::REFUSED_POOL_FULL, len as u32));
                }
            },
        }
        self.publish(counters);
        let gossip = if gossips {
            admitted_indices
                .iter()
                .map(|&i| SignedTransaction {
                    bytes: archived.transactions[i].bytes.to_vec(),
                })
                .collect()
        } else {
            Vec::new()
        };
        (acks, gossip)
    }

    /// Builds block `height` (the next one).
    fn build(&mut self, height: Height) -> (Vec<SignedTransaction>, Hash32) {
        match self {
            Engine::Transfer(e) => e.build(height),
            Engine::Raw(p) => (p.build(MAX_BLOCK_TXS, MAX_BLOCK_TX_BYTES), [0; 32]),
        }
    }

    /// Checks a proposed block.
    fn verify(&mut self, block: &Block) -> Result<(), String> {
        match self {
            Engine::Transfer(e) => e.verify(block),
            Engine::Raw(_) => {
                if block.computed_transactions_root() != block.header.transactions_root {
                    Err("transactions root does not match the transactions".into())
                } else if block.header.state_root != [0; 32] {
                    Err("a raw chain's state root is zero".into())
                } else {
                    Ok(())
                }
            }
        }
    }

    /// Applies a finalized block; returns the answers for clients. An error is fatal. With
    /// an `index` (the node serves JSON-RPC), the block and its receipts are indexed.
    fn finalize(
        &mut self,
        fb: &Arc<FinalizedBlock>,
        tx_hashes: Option<&[Hash32]>,
        counters: &ExecCounters,
        index: Option<&mut chain_index::ChainIndex>,
    ) -> Result<Vec<(u64, IngressAck)>, String> {
        let acks = match self {
            Engine::Transfer(e) => match index {
                Some(index) => {
                    let (acks, executed) = e.finalize_with_outcome(fb, tx_hashes)?;
                    index.push(chain_index::IndexedBlock::executed(
                        fb.clone(),
                        executed.tx_hashes,
                        executed.senders,
                        executed.outcome.receipts,
                        executed.outcome.gas_used,
                    ));
                    acks
                }
                None => e.finalize_with_outcome(fb, tx_hashes)?.0,
            },
            Engine::Raw(p) => {
                if let Some(index) = index {
                    index.push(chain_index::IndexedBlock::raw(fb.clone()));
                }
                counters
                    .finalized
                    .fetch_add(fb.block.transactions.len() as u64, Relaxed);
                p.finalize(
                    fb.block.header.height,
                    fb.block.transactions.iter().map(|t| t.bytes.as_slice()),
                )
                .1
            }
        };
        self.publish(counters);
        Ok(acks)
    }
}

/// Admitted client transactions on their way to the other CNs. A gossip frame costs each peer
/// a wake-up, a read, a validation and a channel hop whatever its size, so frames go out at
/// most once per [`GOSSIP_DELAY`] (sooner when [`GOSSIP_MAX_TXS`] / [`GOSSIP_MAX_BYTES`] fill
/// up), like Nagle's algorithm: a transaction arriving after a quiet spell goes out at once,
/// and under load the client batches that arrive within one delay share a frame.
#[derive(Debug, Default)]
struct GossipBuffer {
    txs: Vec<SignedTransaction>,
    bytes: usize,
    next_id: u64,
    /// When the last frame went out.
    last_sent: Option<Instant>,
}

impl GossipBuffer {
    fn is_full(&self) -> bool {
        self.txs.len() >= GOSSIP_MAX_TXS || self.bytes >= GOSSIP_MAX_BYTES
    }

    fn push(&mut self, txs: Vec<SignedTransaction>) {
        self.bytes += txs.iter().map(|t| t.bytes.len()).sum::<usize>();
        self.txs.extend(txs);
    }

    /// How long the buffer may wait before it goes out (zero: now).
    fn wait(&self, now: Instant) -> std::time::Duration {
        match self.last_sent {
            _ if self.is_full() => std::time::Duration::ZERO,
            Some(at) => (at + GOSSIP_DELAY).saturating_duration_since(now),
            None => std::time::Duration::ZERO,
        }
    }

    /// The buffered transactions as one `TxBatch` frame, if any.
    fn take_frame(&mut self) -> Option<Arc<Vec<u8>>> {
        if self.txs.is_empty() {
            return None;
        }
        self.last_sent = Some(Instant::now());
        self.next_id += 1;
        self.bytes = 0;
        Some(Arc::new(batch_frame(
            self.next_id,
            std::mem::take(&mut self.txs),
        )))
    }
}

/// Runs the exec shard until consensus and net have closed their channels. An error (a
/// finalized block that does not execute to its state root, a snapshot that cannot be
/// written) stops the node.
pub async fn run(
    engine: Engine,
    snapshots: Option<SnapshotPolicy>,
    channels: ExecChannels,
    stats: Arc<ShardStats>,
    counters: Arc<ExecCounters>,
) -> Result<(), String> {
    run_with_rpc(engine, snapshots, channels, None, None, stats, counters).await
}

/// Re-sending of overdue transactions (an EN's exec shard; a CN's gossip reaches every CN
/// directly and a block brings what a proposer missed).
#[derive(Debug, Clone, Copy)]
pub struct Resend {
    /// A pooled, executable transaction this long after it arrived is sent again ...
    pub after_ms: u64,
    /// ... checked this often, ...
    pub every: std::time::Duration,
    /// ... at most this many per check.
    pub max: usize,
}

impl Default for Resend {
    fn default() -> Resend {
        Resend {
            after_ms: 3_000,
            every: std::time::Duration::from_secs(2),
            max: GOSSIP_MAX_TXS,
        }
    }
}

/// What the exec shard of a node serving JSON-RPC (an EN) needs: the bridge's exec end, and
/// the byte budget of its index of recent blocks.
#[derive(Debug)]
pub struct RpcService {
    /// Questions from the RPC thread (see [`crate::exec::queries::RpcBridge::new`]).
    pub inbox: crate::exec::queries::RpcInbox,
    /// Budget of the [`chain_index::ChainIndex`] (default
    /// [`chain_index::CHAIN_INDEX_MAX_BYTES`]).
    pub index_max_bytes: usize,
}

/// [`run`], also answering JSON-RPC questions when `rpc` is given: the shard then keeps a
/// [`chain_index::ChainIndex`] of the blocks it finalizes, and a task answers the bridge's
/// questions one at a time (yielding between them), putting transactions admitted by
/// `eth_sendRawTransaction` on the gossip buffer like a client's batch; and with `resend`, sends
/// overdue pooled transactions again ([`Resend`]).
pub async fn run_with_rpc(
    engine: Engine,
    snapshots: Option<SnapshotPolicy>,
    channels: ExecChannels,
    rpc: Option<RpcService>,
    resend: Option<Resend>,
    stats: Arc<ShardStats>,
    counters: Arc<ExecCounters>,
) -> Result<(), String> {
    let ExecChannels {
        from_consensus,
        to_consensus,
        from_net,
        to_net,
        to_store,
    } = channels;
    assert!(
        snapshots.is_none() || to_store.is_some(),
        "a snapshot policy needs a store shard to write them"
    );
    engine.publish(&counters);
    let engine = Rc::new(RefCell::new(engine));
    let to_net = Rc::new(to_net);
    let gossip = Rc::new(RefCell::new(GossipBuffer::default()));
    // Armed when the gossip buffer becomes non-empty but may not go out yet; the flusher
    // sends it when its wait is over (unless it filled up and went out before).
    let (doorbell, rings) = glommio::channels::local_channel::new_bounded::<()>(1);
    let doorbell = Rc::new(doorbell);
    let started_at = match &*engine.borrow() {
        Engine::Transfer(e) => e.head(),
        Engine::Raw(_) => 0,
    };
    let index = rpc.as_ref().map(|r| {
        Rc::new(RefCell::new(chain_index::ChainIndex::new(
            r.index_max_bytes,
        )))
    });
    let rpc_task = match (rpc, &index) {
        (Some(rpc), Some(index)) => Some({
            let engine = engine.clone();
            let index = index.clone();
            let gossip = gossip.clone();
            let doorbell = doorbell.clone();
            let to_net = to_net.clone();
            let stats = stats.clone();
            let counters = counters.clone();
            glommio::spawn_local(async move {
                while let Ok(request) = rpc.inbox.recv_async().await {
                    stats.count_in();
                    let start = Instant::now();
                    let admission =
                        matches!(request.query, crate::exec::queries::RpcQuery::SendRaw(_));
                    let answered = chain_index::answer(
                        &mut engine.borrow_mut(),
                        &index.borrow(),
                        started_at,
                        request.query,
                        crate::config::clock::now_ms(),
                    );
                    // The asker may have gone (client disconnected): nothing to do then.
                    let _ = request.reply.send(answered.answer);
                    let mut out: Vec<ExecToNet> = answered
                        .acks
                        .into_iter()
                        .map(|(connection, ack)| ExecToNet::Ack { connection, ack })
                        .collect();
                    if admission {
                        engine.borrow().publish(&counters);
                    }
                    if let Some(tx) = answered.gossip {
                        gossip_admitted(&gossip, vec![tx], &doorbell, &mut out);
                    }
                    stats.add_busy(start);
                    for m in out {
                        stats.count_out();
                        if to_net.send(m).await.is_err() {
                            return;
                        }
                    }
                    // Answering is short, but a ready channel does not suspend: let
                    // consensus requests and the other tasks in.
                    futures_lite::future::yield_now().await;
                }
            })
        }),
        _ => None,
    };
    let resender = resend.map(|policy| {
        let engine = engine.clone();
        let gossip = gossip.clone();
        let doorbell = doorbell.clone();
        let to_net = to_net.clone();
        let stats = stats.clone();
        glommio::spawn_local(async move {
            loop {
                glommio::timer::sleep(policy.every).await;
                let start = Instant::now();
                let overdue = match &*engine.borrow() {
                    Engine::Transfer(e) => {
                        e.overdue(crate::config::clock::now_ms(), policy.after_ms, policy.max)
                    }
                    Engine::Raw(_) => Vec::new(),
                };
                if overdue.is_empty() {
                    continue;
                }
                tracing::debug!(txs = overdue.len(), "re-sending overdue transactions");
                let mut out = Vec::new();
                gossip_admitted(&gossip, overdue, &doorbell, &mut out);
                stats.add_busy(start);
                for m in out {
                    stats.count_out();
                    if to_net.send(m).await.is_err() {
                        return;
                    }
                }
            }
        })
    });
    let flusher = {
        let gossip = gossip.clone();
        let to_net = to_net.clone();
        let stats = stats.clone();
        glommio::spawn_local(async move {
            while rings.recv().await.is_some() {
                let wait = gossip.borrow().wait(Instant::now());
                glommio::timer::sleep(wait).await;
                let frame = gossip.borrow_mut().take_frame();
                if let Some(frame) = frame {
                    stats.count_out();
                    if to_net.send(ExecToNet::Gossip(frame)).await.is_err() {
                        return;
                    }
                }
            }
        })
    };
    let ingress = {
        let engine = engine.clone();
        let to_net = to_net.clone();
        let stats = stats.clone();
        let counters = counters.clone();
        glommio::spawn_local(async move {
            while let Some(batch) = from_net.recv().await {
                // Admission recovers a signature per transaction (tens of µs each) and a
                // ready channel does not suspend: yield between batches so that consensus
                // requests, and the shards sharing this executor, are not starved.
                futures_lite::future::yield_now().await;
                stats.count_in();
                let start = Instant::now();
                let (acks, admitted) = engine.borrow_mut().admit(&batch, &counters);
                let mut out = acks;
                if !admitted.is_empty() {
                    gossip_admitted(&gossip, admitted, &doorbell, &mut out);
                }
                stats.add_busy(start);
                for m in out {
                    stats.count_out();
                    if to_net.send(m).await.is_err() {
                        return;
                    }
                }
            }
        })
    };
    let mut result = Ok(());
    while let Some(req) = from_consensus.recv().await {
        stats.count_in();
        let start = Instant::now();
        let reply = match req {
            ExecRequest::Build { height, round, .. } => {
                let (transactions, state_root) = engine.borrow_mut().build(height);
                Some(ExecReply::Built {
                    height,
                    round,
                    transactions,
                    state_root,
                })
            }
            ExecRequest::Verify(block) => {
                let verdict = engine.borrow_mut().verify(&block);
                if let Err(reason) = &verdict {
                    tracing::warn!(
                        height = block.header.height,
                        round = block.header.round,
                        proposer = block.header.proposer,
                        %reason,
                        "proposed block refused"
                    );
                }
                Some(ExecReply::Verified {
                    height: block.header.height,
                    block_hash: block.hash(),
                    valid: verdict.is_ok(),
                })
            }
            ExecRequest::Finalized {
                block: fb,
                tx_hashes,
            } => {
                let acks = {
                    let mut index = index.as_ref().map(|i| i.borrow_mut());
                    engine.borrow_mut().finalize(
                        &fb,
                        tx_hashes.as_deref(),
                        &counters,
                        index.as_deref_mut(),
                    )
                };
                let acks = match acks {
                    Ok(acks) => acks,
                    Err(e) => {
                        result = Err(e);
                        break;
                    }
                };
                if let Some(policy) = &snapshots {
                    let height = fb.block.header.height;
                    if height % policy.every_blocks == 0 {
                        let snapshot = match &mut *engine.borrow_mut() {
                            Engine::Transfer(e) => Some(snapshot::snapshot_of(e.final_state())),
                            Engine::Raw(_) => None,
                        };
                        // The store shard writes it; a write that fails stops the node there.
                        if let (Some(snapshot), Some(to_store)) = (snapshot, &to_store) {
                            stats.count_out();
                            if to_store.send(snapshot).await.is_err() {
                                result = Err("the store shard stopped".to_string());
                                break;
                            }
                        }
                    }
                }
                for (connection, ack) in acks {
                    stats.count_out();
                    if to_net
                        .send(ExecToNet::Ack { connection, ack })
                        .await
                        .is_err()
                    {
                        break;
                    }
                }
                None
            }
        };
        stats.add_busy(start);
        if let Some(reply) = reply {
            stats.count_out();
            if to_consensus.send(reply).await.is_err() {
                break;
            }
        }
    }
    drop(to_consensus);
    ingress.cancel().await;
    flusher.cancel().await;
    if let Some(resender) = resender {
        resender.cancel().await;
    }
    if let Some(task) = rpc_task {
        task.cancel().await;
    }
    result
}

/// Puts admitted transactions on the gossip buffer: the frame goes into `out` at once when the
/// buffer may go out now; otherwise the flusher is woken (if the buffer was empty) to send it
/// when its wait is over.
fn gossip_admitted(
    gossip: &RefCell<GossipBuffer>,
    txs: Vec<SignedTransaction>,
    doorbell: &glommio::channels::local_channel::LocalSender<()>,
    out: &mut Vec<ExecToNet>,
) {
    let mut buffer = gossip.borrow_mut();
    let was_empty = buffer.txs.is_empty();
    buffer.push(txs);
    if buffer.wait(Instant::now()).is_zero() {
        out.extend(buffer.take_frame().map(ExecToNet::Gossip));
    } else if was_empty {
        let _ = doorbell.try_send(());
    }
}

/// Encodes a batch as a frame (clients and tests).
pub fn batch_frame(id: u64, transactions: Vec<SignedTransaction>) -> Vec<u8> {
    encode_frame(&crate::types::network::TxBatch { id, transactions })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::frame::{FrameDecoder, Message};
    use crate::types::Frame;

    fn txs(n: usize, size: usize) -> Vec<SignedTransaction> {
        (0..n)
            .map(|i| SignedTransaction {
                bytes: vec![i as u8; size],
            })
            .collect()
    }

    /// The one whole, valid frame in `bytes`.
    fn decode(bytes: &[u8]) -> Frame {
        let mut input = bytes;
        FrameDecoder::new()
            .decode(&mut input)
            .expect("valid")
            .expect("whole")
    }

    #[test]
    fn gossip_buffer_fills_by_count_or_bytes_and_empties_into_one_batch() {
        let mut buffer = GossipBuffer::default();
        assert!(buffer.take_frame().is_none(), "nothing to send");
        buffer.push(txs(3, 100));
        buffer.push(txs(2, 50));
        assert!(!buffer.is_full());
        let frame = buffer.take_frame().expect("a frame");
        assert!(buffer.txs.is_empty() && buffer.bytes == 0);
        let decoded = decode(&frame);
        let Ok(Message::TxBatch(batch)) = decoded.message() else {
            panic!("not a batch");
        };
        assert_eq!(batch.id.to_native(), 1);
        assert_eq!(batch.transactions.len(), 5);
        assert_eq!(batch.transactions[3].bytes.len(), 50);

        buffer.push(txs(GOSSIP_MAX_TXS, 1));
        assert!(buffer.is_full(), "full by count");
        let _ = buffer.take_frame();
        buffer.push(txs(3, GOSSIP_MAX_BYTES / 3 + 1));
        assert!(buffer.is_full(), "full by bytes");
        let frame = buffer.take_frame().expect("a frame");
        let decoded = decode(&frame);
        let Ok(Message::TxBatch(batch)) = decoded.message() else {
            panic!("not a batch");
        };
        assert_eq!(batch.id.to_native(), 3, "ids increase");
    }

    #[test]
    fn a_batch_that_waited_past_the_deadline_is_answered_busy_and_not_admitted() {
        let mut engine = Engine::Raw(RawPool::new(1 << 20, 1000));
        let counters = ExecCounters::default();
        let frame = |id| decode(&batch_frame(id, txs(4, 40)));
        let late = BatchIn {
            origin: BatchOrigin::Client { connection: 7 },
            frame: frame(1),
            received: Instant::now() - ADMISSION_DEADLINE - std::time::Duration::from_millis(1),
        };
        let (acks, gossip) = engine.admit(&late, &counters);
        assert!(gossip.is_empty());
        match acks.as_slice() {
            [ExecToNet::Ack { connection: 7, ack }] => {
                assert_eq!(
                    (ack.batch_id, ack.status, ack.count),
                    (1, IngressAck::REFUSED_BUSY, 4)
                );
            }
            other => panic!("unexpected answers {other:?}"),
        }
        assert_eq!(counters.shed.load(Relaxed), 4);
        assert!(matches!(&engine, Engine::Raw(p) if p.pending() == 0));
        // The same batch on time is admitted and gossiped.
        let fresh = BatchIn {
            origin: BatchOrigin::Client { connection: 7 },
            frame: frame(2),
            received: Instant::now(),
        };
        let (acks, gossip) = engine.admit(&fresh, &counters);
        assert!(acks.is_empty());
        assert_eq!(gossip.len(), 4);
        assert!(matches!(&engine, Engine::Raw(p) if p.pending() == 4));
    }

    #[test]
    fn gossip_goes_out_at_once_after_a_quiet_spell_and_at_most_once_per_delay_under_load() {
        let mut buffer = GossipBuffer::default();
        let start = Instant::now();
        buffer.push(txs(1, 10));
        assert!(buffer.wait(start).is_zero(), "first frame: no wait");
        let _ = buffer.take_frame();
        let sent = buffer.last_sent.expect("recorded");
        buffer.push(txs(1, 10));
        let wait = buffer.wait(sent);
        assert!(
            wait > std::time::Duration::ZERO && wait <= GOSSIP_DELAY,
            "{wait:?}"
        );
        assert!(
            buffer.wait(sent + GOSSIP_DELAY).is_zero(),
            "after the delay: no wait"
        );
        buffer.push(txs(GOSSIP_MAX_TXS, 1));
        assert!(
            buffer.wait(sent).is_zero(),
            "a full buffer goes out at once"
        );
    }
}
