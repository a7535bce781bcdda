//! The raw transaction pool of [`ExecutionMode::Raw`](crate::config::genesis::ExecutionMode)
//! chains: transactions are opaque byte strings (at most `MAX_TX_BYTES`), ordered and
//! finalized but never executed; the state root stays zero.
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

use std::collections::{HashMap, HashSet, VecDeque};

use crate::types::chain::SignedTransaction;
use crate::types::hash::xxh3;
use crate::types::network::{ArchivedTxBatch, IngressAck};
use crate::types::{Height, MAX_BLOCK_TX_BYTES};

/// Default pool limit in bytes of transactions (16 full blocks).
pub const DEFAULT_POOL_BYTES: usize = 16 * MAX_BLOCK_TX_BYTES;
/// Default pool limit in transactions.
pub const DEFAULT_POOL_TXS: usize = 250_000;

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::batch_frame;
    use crate::types::frame::Frame;
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
