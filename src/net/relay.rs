//! The PN's relay of transactions: deduplication by transaction hash over a window of recent
//! hashes, and the batch that goes on (as received, re-encoded with only the new transactions,
//! or none). The routing rule (where it goes) is [`super::rules::relay_upstream`].

use super::*;

/// Recently seen keys, bounded: the oldest is forgotten first.
#[derive(Default)]
pub(super) struct RecentSet {
    pub(super) order: VecDeque<u64>,
    pub(super) members: HashSet<u64>,
}

impl RecentSet {
    /// Remembers `key`; false if it was already remembered.
    fn insert(&mut self, key: u64, capacity: usize) -> bool {
        if !self.members.insert(key) {
            return false;
        }
        self.order.push_back(key);
        if self.order.len() > capacity {
            if let Some(old) = self.order.pop_front() {
                self.members.remove(&old);
            }
        }
        true
    }
}

/// What a PN relays of a transaction batch (see the module doc's relay rules).
#[derive(Debug, PartialEq, Eq)]
pub(super) enum BatchRelay {
    /// Every transaction was relayed recently: nothing.
    Duplicate,
    /// Every transaction is new: the frame as received.
    AsReceived,
    /// Some are new: this frame of those only (same batch id).
    Reencoded(Vec<u8>),
}

/// Notes the transactions of `batch` in `relayed` (by hash) and says what to relay.
pub(super) fn relay_fresh_transactions(
    relayed: &mut RecentSet,
    batch: &crate::types::network::ArchivedTxBatch,
) -> BatchRelay {
    let mut fresh = Vec::with_capacity(batch.transactions.len());
    for (i, tx) in batch.transactions.iter().enumerate() {
        let hash = crate::types::hash::keccak256(&tx.bytes);
        let key = u64::from_le_bytes([
            hash[0], hash[1], hash[2], hash[3], hash[4], hash[5], hash[6], hash[7],
        ]);
        if relayed.insert(key, RELAY_DEDUP_WINDOW) {
            fresh.push(i);
        }
    }
    if fresh.is_empty() {
        BatchRelay::Duplicate
    } else if fresh.len() == batch.transactions.len() {
        BatchRelay::AsReceived
    } else {
        let txs = fresh
            .iter()
            .map(|&i| crate::types::chain::SignedTransaction {
                bytes: batch.transactions[i].bytes.to_vec(),
            })
            .collect();
        BatchRelay::Reencoded(crate::exec::batch_frame(batch.id.to_native(), txs))
    }
}
