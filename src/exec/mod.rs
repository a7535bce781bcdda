//! The exec shard: the transaction pool, block building and block checking.
//!
//! This first cut serves the `raw` workload: transactions are opaque byte strings (at most
//! `MAX_TX_BYTES`), nothing is executed and the state root stays zero. Transactions reach the
//! pool two ways:
//! - a client's ingress batch (through the net shard): admitted, then gossiped as the same
//!   batch to the other CNs so that whoever proposes next already holds it; when every admitted
//!   transaction of the batch is in a finalized block the client gets an `IngressAck` (FINAL);
//! - another CN's gossip: admitted without an answer.
//!
//! [`RawPool`] invariants: a transaction is identified by the xxh3 of its bytes (a dedup key,
//! not an identity: a collision only makes the pool skip a transaction, which its sender sees
//! as a refusal); `pending` holds exactly the keys not yet finalized; the queue holds each
//! pending transaction once, in arrival order, plus stale entries (finalized out of order)
//! that are skipped and compacted away; `queued_bytes` (stale ones included) never exceeds
//! the pool's byte limit, and the count of queue entries never exceeds its count limit.
//!
//! Block building takes pending transactions from the front of the queue up to the block
//! limits; they stay pooled until a block holding them is final, so a failed round loses
//! nothing. Checking a proposed block recomputes its transactions root (one keccak per
//! transaction, the part of block checking that is not the frame gate's).

pub mod mempool;
pub mod state;

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use crate::crypto::hash::{xxh3, Hash32};
use crate::runtime::{Rx, ShardStats, Tx};
use crate::types::chain::SignedTransaction;
use crate::types::frame::{encode_frame, Frame, FrameKind};
use crate::types::network::{ArchivedTxBatch, IngressAck};
use crate::types::{
    Block, BlockHeader, FinalizedBlock, Height, Round, MAX_BLOCK_TXS, MAX_BLOCK_TX_BYTES,
};

/// Default pool limit in bytes of transactions (16 full blocks).
pub const DEFAULT_POOL_BYTES: usize = 16 * MAX_BLOCK_TX_BYTES;
/// Default pool limit in transactions.
pub const DEFAULT_POOL_TXS: usize = 250_000;

/// Where an ingress connection's batch came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchOrigin {
    /// A client on an ingress connection (answered with an `IngressAck`).
    Client {
        /// The net shard's number of the connection.
        connection: u64,
    },
    /// Another CN's gossip.
    Peer,
}

/// A validated `TxBatch` frame from the net shard.
#[derive(Debug)]
pub struct BatchIn {
    /// Who sent it.
    pub origin: BatchOrigin,
    /// The frame; the net shard validated it as a `TxBatch` (`Frame::message`).
    pub frame: Frame,
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
    Finalized(Arc<FinalizedBlock>),
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
    /// Send this frame to every other CN.
    Gossip(Arc<Vec<u8>>),
    /// Answer a client's batch.
    Ack {
        /// The ingress connection.
        connection: u64,
        /// The answer.
        ack: IngressAck,
    },
}

/// Counters exec exposes.
#[derive(Debug, Default)]
pub struct ExecCounters {
    /// Transactions admitted to the pool.
    pub admitted: std::sync::atomic::AtomicU64,
    /// Transactions refused (pool full) or dropped as duplicates.
    pub refused: std::sync::atomic::AtomicU64,
    /// Transactions in finalized blocks.
    pub finalized: std::sync::atomic::AtomicU64,
    /// Transactions pending in the pool.
    pub pending: std::sync::atomic::AtomicU64,
}

/// A client batch waiting for its transactions to be final.
#[derive(Debug)]
struct LocalBatch {
    connection: u64,
    batch_id: u64,
    remaining: u32,
    admitted: u32,
}

/// The outcome of offering a batch to the pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// `admitted` transactions are pooled, `duplicates` were already there.
    Admitted {
        /// Newly pooled.
        admitted: u32,
        /// Already pooled (or finalized while pooled).
        duplicates: u32,
    },
    /// The pool is full: nothing of the batch was taken.
    PoolFull,
}

/// The raw transaction pool. See the module doc for its invariants.
#[derive(Debug)]
pub struct RawPool {
    max_bytes: usize,
    max_txs: usize,
    pending: HashSet<u64>,
    queue: VecDeque<(u64, Vec<u8>)>,
    queued_bytes: usize,
    /// Key of a locally admitted client transaction -> its batch number.
    local: HashMap<u64, u64>,
    batches: HashMap<u64, LocalBatch>,
    next_batch: u64,
}

impl RawPool {
    /// An empty pool with the given limits.
    pub fn new(max_bytes: usize, max_txs: usize) -> RawPool {
        assert!(max_bytes > 0 && max_txs > 0);
        RawPool {
            max_bytes,
            max_txs,
            pending: HashSet::new(),
            queue: VecDeque::new(),
            queued_bytes: 0,
            local: HashMap::new(),
            batches: HashMap::new(),
            next_batch: 0,
        }
    }

    /// Transactions waiting for a block.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Offers a batch. `client` = `(connection, batch id)` for a client's batch, whose FINAL
    /// answer [`RawPool::finalize`] produces later. Room is checked for the whole batch
    /// before duplicates are skipped, so a batch is taken whole or not at all.
    pub fn admit(&mut self, batch: &ArchivedTxBatch, client: Option<(u64, u64)>) -> Admission {
        let bytes: usize = batch.transactions.iter().map(|t| t.bytes.len()).sum();
        if self.queued_bytes + bytes > self.max_bytes
            || self.queue.len() + batch.transactions.len() > self.max_txs
        {
            self.compact_if_worth_it();
            if self.queued_bytes + bytes > self.max_bytes
                || self.queue.len() + batch.transactions.len() > self.max_txs
            {
                return Admission::PoolFull;
            }
        }
        let number = self.next_batch;
        let (mut admitted, mut duplicates) = (0u32, 0u32);
        for tx in batch.transactions.iter() {
            let key = xxh3(&tx.bytes);
            if !self.pending.insert(key) {
                duplicates += 1;
                continue;
            }
            admitted += 1;
            self.queued_bytes += tx.bytes.len();
            self.queue.push_back((key, tx.bytes.to_vec()));
            if client.is_some() {
                self.local.insert(key, number);
            }
        }
        if let Some((connection, batch_id)) = client {
            if admitted > 0 {
                self.next_batch += 1;
                self.batches.insert(
                    number,
                    LocalBatch {
                        connection,
                        batch_id,
                        remaining: admitted,
                        admitted,
                    },
                );
            }
        }
        self.check();
        Admission::Admitted {
            admitted,
            duplicates,
        }
    }

    /// The transactions of the next block: pending ones from the front of the queue, up to the
    /// block limits. They stay pooled until finalized.
    pub fn build(&mut self, max_txs: usize, max_bytes: usize) -> Vec<SignedTransaction> {
        while let Some((key, bytes)) = self.queue.front() {
            if self.pending.contains(key) {
                break;
            }
            self.queued_bytes -= bytes.len();
            self.queue.pop_front();
        }
        let mut out = Vec::new();
        let mut total = 0usize;
        for (key, bytes) in &self.queue {
            if out.len() >= max_txs || total + bytes.len() > max_bytes {
                break;
            }
            if self.pending.contains(key) {
                total += bytes.len();
                out.push(SignedTransaction {
                    bytes: bytes.clone(),
                });
            }
        }
        out
    }

    /// Removes a finalized block's transactions; returns the client batches now wholly final,
    /// as acks.
    pub fn finalize<'a>(
        &mut self,
        height: Height,
        txs: impl Iterator<Item = &'a [u8]>,
    ) -> (u64, Vec<(u64, IngressAck)>) {
        let mut removed = 0u64;
        let mut acks = Vec::new();
        for tx in txs {
            let key = xxh3(tx);
            if self.pending.remove(&key) {
                removed += 1;
            }
            if let Some(number) = self.local.remove(&key) {
                let batch = self
                    .batches
                    .get_mut(&number)
                    .expect("every local key names a live batch");
                batch.remaining -= 1;
                if batch.remaining == 0 {
                    let batch = self.batches.remove(&number).expect("present");
                    acks.push((
                        batch.connection,
                        IngressAck {
                            batch_id: batch.batch_id,
                            status: IngressAck::FINAL,
                            height,
                            count: batch.admitted,
                        },
                    ));
                }
            }
        }
        self.compact_if_worth_it();
        self.check();
        (removed, acks)
    }

    /// Compacts when at least a quarter of the queue is stale, so the cost of a compaction
    /// (a pass over the queue) is paid for by the entries it frees: a full pool refusing
    /// batch after batch does not rescan the queue each time.
    fn compact_if_worth_it(&mut self) {
        let stale = self.queue.len() - self.pending.len();
        if stale > 0 && stale * 4 >= self.queue.len() {
            self.compact();
        }
    }

    /// Drops stale queue entries.
    fn compact(&mut self) {
        let pending = &self.pending;
        let mut freed = 0usize;
        self.queue.retain(|(key, bytes)| {
            let keep = pending.contains(key);
            if !keep {
                freed += bytes.len();
            }
            keep
        });
        self.queued_bytes -= freed;
    }

    fn check(&self) {
        debug_assert!(self.queue.len() >= self.pending.len());
        assert!(
            self.queued_bytes <= self.max_bytes,
            "pool over its byte limit"
        );
        assert!(
            self.queue.len() <= self.max_txs,
            "pool over its count limit"
        );
    }
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
}

/// Runs the exec shard until consensus and net have closed their channels.
pub async fn run(
    mut pool: RawPool,
    channels: ExecChannels,
    stats: Arc<ShardStats>,
    counters: Arc<ExecCounters>,
) {
    use std::sync::atomic::Ordering::Relaxed;
    let ExecChannels {
        from_consensus,
        to_consensus,
        from_net,
        to_net,
    } = channels;
    let pool = std::rc::Rc::new(std::cell::RefCell::new(std::mem::replace(
        &mut pool,
        RawPool::new(1, 1),
    )));
    let to_net = std::rc::Rc::new(to_net);
    let ingress = {
        let pool = pool.clone();
        let to_net = to_net.clone();
        let stats = stats.clone();
        let counters = counters.clone();
        glommio::spawn_local(async move {
            while let Some(batch) = from_net.recv().await {
                stats.count_in();
                let start = Instant::now();
                debug_assert_eq!(batch.frame.kind, FrameKind::TxBatch);
                // SAFETY: the net shard validated this payload as an ArchivedTxBatch with
                // `Frame::message` (rkyv::access + limits) before sending it here, and the
                // bytes have not changed since.
                let archived =
                    unsafe { rkyv::access_unchecked::<ArchivedTxBatch>(&batch.frame.payload) };
                let client = match batch.origin {
                    BatchOrigin::Client { connection } => {
                        Some((connection, archived.id.to_native()))
                    }
                    BatchOrigin::Peer => None,
                };
                let outcome = pool.borrow_mut().admit(archived, client);
                let len = archived.transactions.len() as u64;
                let mut out = Vec::new();
                match outcome {
                    Admission::Admitted {
                        admitted,
                        duplicates,
                    } => {
                        counters.admitted.fetch_add(admitted as u64, Relaxed);
                        counters.refused.fetch_add(duplicates as u64, Relaxed);
                        if let Some((connection, batch_id)) = client {
                            if admitted > 0 {
                                let mut frame = crate::types::frame::FrameHeader {
                                    kind: FrameKind::TxBatch,
                                    len: batch.frame.payload.len() as u32,
                                }
                                .to_bytes()
                                .to_vec();
                                frame.extend_from_slice(&batch.frame.payload);
                                out.push(ExecToNet::Gossip(Arc::new(frame)));
                            } else {
                                out.push(ExecToNet::Ack {
                                    connection,
                                    ack: IngressAck {
                                        batch_id,
                                        status: IngressAck::REFUSED_DUPLICATE,
                                        height: 0,
                                        count: duplicates,
                                    },
                                });
                            }
                        }
                    }
                    Admission::PoolFull => {
                        counters.refused.fetch_add(len, Relaxed);
                        if let Some((connection, batch_id)) = client {
                            out.push(ExecToNet::Ack {
                                connection,
                                ack: IngressAck {
                                    batch_id,
                                    status: IngressAck::REFUSED_POOL_FULL,
                                    height: 0,
                                    count: len as u32,
                                },
                            });
                        }
                    }
                }
                counters
                    .pending
                    .store(pool.borrow().pending() as u64, Relaxed);
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
    while let Some(req) = from_consensus.recv().await {
        stats.count_in();
        let start = Instant::now();
        let reply = match req {
            ExecRequest::Build { height, round, .. } => {
                let transactions = pool.borrow_mut().build(MAX_BLOCK_TXS, MAX_BLOCK_TX_BYTES);
                Some(ExecReply::Built {
                    height,
                    round,
                    transactions,
                    state_root: [0; 32],
                })
            }
            ExecRequest::Verify(block) => {
                let valid = block.computed_transactions_root() == block.header.transactions_root
                    && block.header.state_root == [0; 32];
                Some(ExecReply::Verified {
                    height: block.header.height,
                    block_hash: block.hash(),
                    valid,
                })
            }
            ExecRequest::Finalized(fb) => {
                let height = fb.block.header.height;
                let (removed, acks) = pool.borrow_mut().finalize(
                    height,
                    fb.block.transactions.iter().map(|t| t.bytes.as_slice()),
                );
                counters
                    .finalized
                    .fetch_add(fb.block.transactions.len() as u64, Relaxed);
                counters
                    .pending
                    .store(pool.borrow().pending() as u64, Relaxed);
                let _ = removed;
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
}

/// Encodes a batch as a frame (clients and tests).
pub fn batch_frame(id: u64, transactions: Vec<SignedTransaction>) -> Vec<u8> {
    encode_frame(&crate::types::network::TxBatch { id, transactions })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::frame::FrameDecoder;

    fn archived(frame_bytes: &[u8]) -> Frame {
        let mut d = FrameDecoder::new();
        let mut input = frame_bytes;
        let frame = d.decode(&mut input).unwrap().unwrap();
        frame.message().unwrap();
        frame
    }

    fn txs(range: std::ops::Range<u32>, size: usize) -> Vec<SignedTransaction> {
        range
            .map(|i| {
                let mut bytes = vec![0xab; size];
                bytes[..4].copy_from_slice(&i.to_be_bytes());
                SignedTransaction { bytes }
            })
            .collect()
    }

    fn access(f: &Frame) -> &ArchivedTxBatch {
        rkyv::access::<ArchivedTxBatch, rkyv::rancor::Error>(&f.payload).unwrap()
    }

    #[test]
    fn client_batch_is_acked_once_all_its_txs_are_final() {
        let mut pool = RawPool::new(1 << 20, 1000);
        let f = archived(&batch_frame(7, txs(0..10, 64)));
        assert_eq!(
            pool.admit(access(&f), Some((3, 7))),
            Admission::Admitted {
                admitted: 10,
                duplicates: 0
            }
        );
        let block = pool.build(6, usize::MAX);
        assert_eq!(block.len(), 6);
        let (removed, acks) = pool.finalize(5, block.iter().map(|t| t.bytes.as_slice()));
        assert_eq!((removed, acks.len()), (6, 0));
        let rest = pool.build(100, usize::MAX);
        assert_eq!(rest.len(), 4, "finalized txs are not built again");
        let (_, acks) = pool.finalize(6, rest.iter().map(|t| t.bytes.as_slice()));
        assert_eq!(acks.len(), 1);
        assert_eq!(acks[0].0, 3);
        assert_eq!(
            (acks[0].1.batch_id, acks[0].1.height, acks[0].1.count),
            (7, 6, 10)
        );
        assert_eq!(pool.pending(), 0);
    }

    #[test]
    fn duplicates_and_a_full_pool_are_refused() {
        // Room is checked for the whole batch before dedup (conservative): 10 + 7 fit in 17.
        let mut pool = RawPool::new(64 * 17, 1000);
        let f = archived(&batch_frame(1, txs(0..10, 64)));
        pool.admit(access(&f), None);
        let again = archived(&batch_frame(2, txs(5..12, 64)));
        // 7 offered, 5 duplicates, 2 new.
        assert_eq!(
            pool.admit(access(&again), Some((1, 2))),
            Admission::Admitted {
                admitted: 2,
                duplicates: 5
            }
        );
        // 12 pooled + 6 offered > 17.
        let big = archived(&batch_frame(3, txs(100..106, 64)));
        assert_eq!(pool.admit(access(&big), None), Admission::PoolFull);
        assert_eq!(pool.pending(), 12);
    }

    #[test]
    fn build_respects_byte_limits_and_finalized_space_is_reused() {
        let mut pool = RawPool::new(64 * 10, 10);
        let f = archived(&batch_frame(1, txs(0..10, 64)));
        pool.admit(access(&f), None);
        assert_eq!(pool.build(100, 64 * 3 + 10).len(), 3);
        // Finalize out of order (the last 5): their space is reclaimed by compaction.
        let all = pool.build(100, usize::MAX);
        pool.finalize(1, all[5..].iter().map(|t| t.bytes.as_slice()));
        let more = archived(&batch_frame(2, txs(20..25, 64)));
        assert!(matches!(
            pool.admit(access(&more), None),
            Admission::Admitted { admitted: 5, .. }
        ));
    }
}
