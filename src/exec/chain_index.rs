//! The exec shard's index of recent finalized blocks, for JSON-RPC, and the exec side of the
//! RPC bridge ([`answer`]).
//!
//! # Job
//!
//! An endpoint node answers `eth_getBlockByNumber`, `eth_getTransactionByHash`,
//! `eth_getTransactionReceipt` and friends from here. The exec shard appends every block it
//! finalizes (after it executed, so the receipts are known) with [`ChainIndex::push`]; the
//! RPC thread asks through the bridge and gets [`IndexedBlock`]s behind an `Arc` (the block's
//! bytes are shared with the `FinalizedBlock` the shard was handed, never copied), and builds
//! the JSON itself, so the shard only does map look-ups for a query.
//!
//! # What is kept, and for how long
//!
//! The newest blocks whose [`IndexedBlock::cost_bytes`] add up to at most the byte budget
//! ([`CHAIN_INDEX_MAX_BYTES`] by default): header, transactions, certificate, each
//! transaction's hash, sender and receipt, plus the look-up maps (transaction hash ->
//! (height, index), block hash -> height). When a push goes over the budget the **oldest**
//! blocks are evicted; the newest block is always kept, even alone over the budget. A query
//! for an evicted (or never seen) block or transaction finds nothing: the RPC answers `null`,
//! as geth does for an unknown block or transaction (the RPC module doc says so too).
//!
//! # Invariants (checked by [`ChainIndex::check`], in debug builds after every push)
//!
//! - The kept blocks have consecutive heights, oldest first.
//! - `by_tx` holds exactly the transactions of the kept blocks, each at its (height, index);
//!   `by_hash` exactly their block hashes.
//! - `bytes` is the sum of the kept blocks' costs, and is at most the budget unless only one
//!   block is kept.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use crate::exec::queries::{AccountInfo, BlockAt, HeadInfo, RpcAnswer, RpcQuery, StateAt, TxFound};
use crate::exec::state::Receipt;
use crate::exec::Engine;
use crate::types::chain::SignedTransaction;
use crate::types::hash::{keccak256, Hash32};
use crate::types::network::IngressAck;
use crate::types::{FinalizedBlock, Height};

/// Default byte budget of the index (see the module doc).
pub const CHAIN_INDEX_MAX_BYTES: usize = 256 * 1024 * 1024;

/// Estimated bytes one block costs beyond its transactions (header, certificate, maps).
pub const BLOCK_OVERHEAD_BYTES: usize = 512;
/// Estimated bytes one transaction costs beyond its envelope: its hash, sender and receipt,
/// the envelope's `Vec` and the allocator's per-allocation overhead (16), and its entry in the
/// transaction hash map ([`TX_MAP_ENTRY_BYTES`]). Checked against the heap really held by
/// `tests/chain_index_memory.rs`.
pub const TX_OVERHEAD_BYTES: usize = 32
    + 20
    + std::mem::size_of::<Receipt>()
    + std::mem::size_of::<SignedTransaction>()
    + 16
    + TX_MAP_ENTRY_BYTES;

/// What one entry of the transaction hash map costs at the map's lowest load. The index
/// inserts and removes all the time, and a hashbrown table whose deleted slots run out doubles
/// when more than half its capacity (7/8 of its buckets) is live, so under this churn a table
/// can settle as little as 7/32 full: a 48-byte entry plus its control byte, times 32/7.
pub const TX_MAP_ENTRY_BYTES: usize = (std::mem::size_of::<(Hash32, TxLocation)>() + 1) * 32 / 7;

/// One finalized block and what executing it produced.
#[derive(Debug)]
pub struct IndexedBlock {
    /// The block and its certificate (shared with the exec shard's request).
    pub finalized: Arc<FinalizedBlock>,
    /// The block hash.
    pub hash: Hash32,
    /// keccak-256 of each transaction's bytes, in block order.
    pub tx_hashes: Vec<Hash32>,
    /// Each transaction's recovered sender, in block order (empty on a raw chain).
    pub senders: Vec<[u8; 20]>,
    /// Each transaction's receipt, in block order (empty on a raw chain).
    pub receipts: Vec<Receipt>,
    /// Gas used by the block (zero on a raw chain).
    pub gas_used: u64,
}

impl IndexedBlock {
    /// A transfer chain's block, from what its execution produced.
    ///
    /// # Panics
    /// If `senders` or `receipts` do not have one entry per transaction.
    pub fn executed(
        finalized: Arc<FinalizedBlock>,
        tx_hashes: Vec<Hash32>,
        senders: Vec<[u8; 20]>,
        receipts: Vec<Receipt>,
        gas_used: u64,
    ) -> IndexedBlock {
        let n = finalized.block.transactions.len();
        assert!(
            tx_hashes.len() == n && senders.len() == n && receipts.len() == n,
            "one hash, sender and receipt per transaction"
        );
        IndexedBlock {
            hash: finalized.block.hash(),
            finalized,
            tx_hashes,
            senders,
            receipts,
            gas_used,
        }
    }

    /// A raw chain's block: transactions are opaque, hashed but not executed.
    pub fn raw(finalized: Arc<FinalizedBlock>) -> IndexedBlock {
        let tx_hashes = finalized
            .block
            .transactions
            .iter()
            .map(|t| keccak256(&t.bytes))
            .collect();
        IndexedBlock {
            hash: finalized.block.hash(),
            finalized,
            tx_hashes,
            senders: Vec::new(),
            receipts: Vec::new(),
            gas_used: 0,
        }
    }

    /// The block's height.
    pub fn height(&self) -> Height {
        self.finalized.block.header.height
    }

    /// What keeping this block costs the index's byte budget (an estimate of its memory).
    pub fn cost_bytes(&self) -> usize {
        let txs = &self.finalized.block.transactions;
        BLOCK_OVERHEAD_BYTES
            + self.finalized.certificate.signers.len()
            + txs
                .iter()
                .map(|t| t.bytes.len() + TX_OVERHEAD_BYTES)
                .sum::<usize>()
    }
}

/// Where a finalized transaction is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TxLocation {
    /// Block height.
    pub height: Height,
    /// Position in the block.
    pub index: u32,
}

/// The index of recent finalized blocks. See the module doc.
#[derive(Debug)]
pub struct ChainIndex {
    max_bytes: usize,
    blocks: VecDeque<Arc<IndexedBlock>>,
    by_tx: HashMap<Hash32, TxLocation>,
    by_hash: HashMap<Hash32, Height>,
    bytes: usize,
}

impl ChainIndex {
    /// An empty index keeping at most `max_bytes` of blocks (the newest block is always kept).
    pub fn new(max_bytes: usize) -> ChainIndex {
        ChainIndex {
            max_bytes,
            blocks: VecDeque::new(),
            by_tx: HashMap::new(),
            by_hash: HashMap::new(),
            bytes: 0,
        }
    }

    /// Appends the next finalized block, evicting the oldest ones over the budget. A block
    /// that does not follow the newest kept one (a restart from a snapshot, a gap) empties the
    /// index first, so the kept heights stay consecutive.
    pub fn push(&mut self, block: IndexedBlock) {
        let height = block.height();
        if self
            .newest()
            .is_some_and(|h| h.checked_add(1) != Some(height))
        {
            self.clear();
        }
        for (i, hash) in block.tx_hashes.iter().enumerate() {
            // A transaction hash is unique on a transfer chain (the nonce); a raw chain may
            // repeat bytes in later blocks: the newest location wins, and eviction of the
            // older block leaves it (see `evict_oldest`).
            self.by_tx.insert(
                *hash,
                TxLocation {
                    height,
                    index: i as u32,
                },
            );
        }
        self.by_hash.insert(block.hash, height);
        self.bytes += block.cost_bytes();
        self.blocks.push_back(Arc::new(block));
        while self.bytes > self.max_bytes && self.blocks.len() > 1 {
            self.evict_oldest();
        }
        #[cfg(debug_assertions)]
        self.check();
    }

    fn evict_oldest(&mut self) {
        let Some(old) = self.blocks.pop_front() else {
            return;
        };
        let height = old.height();
        for hash in &old.tx_hashes {
            if self.by_tx.get(hash).is_some_and(|l| l.height == height) {
                self.by_tx.remove(hash);
            }
        }
        self.by_hash.remove(&old.hash);
        self.bytes -= old.cost_bytes();
    }

    fn clear(&mut self) {
        self.blocks.clear();
        self.by_tx.clear();
        self.by_hash.clear();
        self.bytes = 0;
    }

    /// The newest kept height.
    pub fn newest(&self) -> Option<Height> {
        self.blocks.back().map(|b| b.height())
    }

    /// The oldest kept height.
    pub fn oldest(&self) -> Option<Height> {
        self.blocks.front().map(|b| b.height())
    }

    /// Blocks kept.
    pub fn len(&self) -> usize {
        self.blocks.len()
    }

    /// Whether no block is kept.
    pub fn is_empty(&self) -> bool {
        self.blocks.is_empty()
    }

    /// The budget the kept blocks use.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// The kept block at `height`.
    pub fn by_height(&self, height: Height) -> Option<&Arc<IndexedBlock>> {
        let oldest = self.oldest()?;
        let offset = usize::try_from(height.checked_sub(oldest)?).ok()?;
        self.blocks.get(offset)
    }

    /// The kept block with this hash.
    pub fn by_hash(&self, hash: &Hash32) -> Option<&Arc<IndexedBlock>> {
        self.by_height(*self.by_hash.get(hash)?)
    }

    /// The kept block holding this transaction, and its position.
    pub fn transaction(&self, hash: &Hash32) -> Option<(&Arc<IndexedBlock>, u32)> {
        let at = self.by_tx.get(hash)?;
        Some((self.by_height(at.height)?, at.index))
    }

    /// Up to `count` kept blocks ending at `newest` (inclusive), oldest first.
    pub fn range(&self, newest: Height, count: usize) -> Vec<Arc<IndexedBlock>> {
        let Some(oldest_kept) = self.oldest() else {
            return Vec::new();
        };
        let end = newest.min(self.newest().unwrap_or(0));
        let start = end
            .saturating_sub(count.saturating_sub(1) as u64)
            .max(oldest_kept);
        if count == 0 || end < start {
            return Vec::new();
        }
        (start..=end)
            .filter_map(|h| self.by_height(h).cloned())
            .collect()
    }

    /// Asserts the invariants of the module doc.
    pub fn check(&self) {
        let mut bytes = 0;
        let mut txs = 0;
        for (i, b) in self.blocks.iter().enumerate() {
            if i > 0 {
                assert_eq!(
                    self.blocks[i - 1].height() + 1,
                    b.height(),
                    "kept heights are consecutive"
                );
            }
            bytes += b.cost_bytes();
            assert_eq!(
                self.by_hash.get(&b.hash),
                Some(&b.height()),
                "block hash map"
            );
            for (index, hash) in b.tx_hashes.iter().enumerate() {
                let at = self
                    .by_tx
                    .get(hash)
                    .expect("every kept transaction is mapped");
                if at.height == b.height() {
                    assert_eq!(at.index, index as u32, "transaction position");
                    txs += 1;
                }
            }
        }
        assert_eq!(bytes, self.bytes, "byte accounting");
        assert_eq!(txs, self.by_tx.len(), "no transaction of an evicted block");
        assert_eq!(self.by_hash.len(), self.blocks.len(), "one hash per block");
        assert!(
            self.bytes <= self.max_bytes || self.blocks.len() <= 1,
            "within the budget"
        );
    }
}

/// What answering one RPC question produced, besides the answer: a transaction to gossip on
/// and answers for native clients (an admission may replace or evict their transactions).
#[derive(Debug)]
pub struct Answered {
    /// The answer for the RPC thread.
    pub answer: RpcAnswer,
    /// An admitted transaction, for the gossip buffer.
    pub gossip: Option<SignedTransaction>,
    /// Answers for native clients' batches.
    pub acks: Vec<(u64, IngressAck)>,
}

/// Answers one RPC question from the engine and the index (the exec side of the bridge).
/// `started_at` is the height the shard started from.
pub fn answer(
    engine: &mut Engine,
    index: &ChainIndex,
    started_at: Height,
    query: RpcQuery,
    now_ms: u64,
) -> Answered {
    let head = match engine {
        Engine::Transfer(e) => e.head(),
        Engine::Raw(_) => index.newest().unwrap_or(started_at),
    };
    let mut answered = Answered {
        answer: RpcAnswer::RawChain,
        gossip: None,
        acks: Vec::new(),
    };
    answered.answer = match (query, engine) {
        (RpcQuery::Head, _) => RpcAnswer::Head(HeadInfo {
            height: head,
            oldest_indexed: index.oldest(),
            started_at,
        }),
        (RpcQuery::Block(at), _) => RpcAnswer::Block(
            match at {
                BlockAt::Latest => index.by_height(head),
                BlockAt::Number(n) => index.by_height(n),
                BlockAt::Hash(h) => index.by_hash(&h),
            }
            .cloned(),
        ),
        (RpcQuery::Blocks { newest, count }, _) => {
            RpcAnswer::Blocks(index.range(newest.unwrap_or(head).min(head), count))
        }
        (_, Engine::Raw(_)) => RpcAnswer::RawChain,
        (RpcQuery::Account { address, at }, Engine::Transfer(e)) => {
            let at_head = match at {
                StateAt::Latest => true,
                StateAt::Number(n) => n == head,
                StateAt::Hash(h) => index.by_hash(&h).is_some_and(|b| b.height() == head),
            };
            RpcAnswer::Account(if at_head {
                let account = e.head_account(&address);
                Ok(AccountInfo {
                    nonce: account.nonce,
                    pending_nonce: e.pending_nonce(&address, account.nonce),
                    balance: account.balance,
                    height: head,
                })
            } else {
                Err(head)
            })
        }
        (RpcQuery::SendRaw(bytes), Engine::Transfer(e)) => {
            RpcAnswer::Sent(match e.admit_one(&bytes, now_ms) {
                Ok(admitted) => {
                    answered.acks = admitted.acks;
                    answered.gossip = Some(SignedTransaction { bytes });
                    Ok(admitted.hash)
                }
                Err(refusal) => Err(refusal),
            })
        }
        (RpcQuery::Transaction(hash), Engine::Transfer(e)) => {
            RpcAnswer::Transaction(match index.transaction(&hash) {
                Some((block, i)) => TxFound::Included(block.clone(), i),
                None => match e.pooled_transaction(&hash) {
                    Some((bytes, sender)) => TxFound::Pending { bytes, sender },
                    None => TxFound::Unknown,
                },
            })
        }
    };
    answered
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::chain::{Block, BlockHeader, SignedTransaction};
    use crate::types::{QuorumCertificate, VoteKind};

    fn block(height: Height, txs: &[&[u8]]) -> IndexedBlock {
        let transactions: Vec<SignedTransaction> = txs
            .iter()
            .map(|b| SignedTransaction { bytes: b.to_vec() })
            .collect();
        let header = BlockHeader {
            parent_hash: [0; 32],
            height,
            round: 0,
            timestamp_ms: 0,
            proposer: 0,
            randao_reveal: [0; 96],
            mix: [0; 32],
            transactions_root: crate::types::chain::transactions_root(
                transactions.iter().map(|t| t.bytes.as_slice()),
            ),
            state_root: [0; 32],
            committee_digest: [0; 32],
        };
        let block = Block {
            header,
            transactions,
        };
        let fb = FinalizedBlock {
            certificate: QuorumCertificate {
                kind: VoteKind::Commit,
                height,
                round: 0,
                block_hash: block.hash(),
                signers: vec![1],
                signature: [0; 96],
            },
            block,
        };
        IndexedBlock::raw(Arc::new(fb))
    }

    #[test]
    fn lookups_find_kept_blocks_and_transactions() {
        let mut index = ChainIndex::new(1 << 20);
        index.push(block(1, &[b"a", b"b"]));
        index.push(block(2, &[b"c"]));
        assert_eq!((index.oldest(), index.newest()), (Some(1), Some(2)));
        let (b, i) = index.transaction(&keccak256(b"b")).expect("kept");
        assert_eq!((b.height(), i), (1, 1));
        let (b, i) = index.transaction(&keccak256(b"c")).expect("kept");
        assert_eq!((b.height(), i), (2, 0));
        let hash = index.by_height(2).expect("kept").hash;
        assert_eq!(index.by_hash(&hash).map(|b| b.height()), Some(2));
        assert!(index.by_height(3).is_none() && index.by_height(0).is_none());
        assert!(index.transaction(&keccak256(b"zz")).is_none());
        let r: Vec<Height> = index.range(5, 10).iter().map(|b| b.height()).collect();
        assert_eq!(r, vec![1, 2]);
        let r: Vec<Height> = index.range(2, 1).iter().map(|b| b.height()).collect();
        assert_eq!(r, vec![2]);
        assert!(index.range(2, 0).is_empty());
    }

    #[test]
    fn the_oldest_blocks_are_evicted_over_the_budget_and_their_lookups_go_with_them() {
        let one = block(1, &[&[1u8; 1000]]).cost_bytes();
        // Room for two such blocks, not three.
        let mut index = ChainIndex::new(2 * one + one / 2);
        for h in 1..=5u64 {
            index.push(block(h, &[&[h as u8; 1000]]));
        }
        assert_eq!(
            (index.oldest(), index.newest(), index.len()),
            (Some(4), Some(5), 2)
        );
        assert!(index.transaction(&keccak256(&[1u8; 1000])).is_none());
        assert!(index.transaction(&keccak256(&[3u8; 1000])).is_none());
        assert!(index.transaction(&keccak256(&[4u8; 1000])).is_some());
        assert!(index.by_height(3).is_none());
        assert!(index.bytes() <= 2 * one + one / 2);
        // A block over the whole budget is still kept, alone.
        index.push(block(6, &[&[6u8; 10_000]]));
        assert_eq!((index.oldest(), index.len()), (Some(6), 1));
        index.check();
    }

    #[test]
    fn a_gap_in_heights_starts_the_index_over() {
        let mut index = ChainIndex::new(1 << 20);
        index.push(block(1, &[b"a"]));
        index.push(block(7, &[b"b"]));
        assert_eq!((index.oldest(), index.newest()), (Some(7), Some(7)));
        assert!(index.transaction(&keccak256(b"a")).is_none());
        index.check();
    }
}
