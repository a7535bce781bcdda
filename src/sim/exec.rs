//! The simulator's stand-in for execution: deterministic pseudo-random transactions, a state
//! root that commits to the parent and the transactions, and the matching validity check.
//!
//! The real exec shard re-executes a block; here a block is valid exactly when
//! `transactions_root` commits to its transactions and
//! `state_root == keccak256(parent_hash || transactions_root)`. A Byzantine proposer that wants
//! honest nodes to accept a second block must therefore build it consistently (other
//! transactions, both roots recomputed), which is what the equivocating proposer does.

use crate::types::chain::{transactions_root, SignedTransaction};
use crate::types::hash::{keccak256_parts, Hash32};
use crate::types::Block;

use super::rng::SimRng;

/// Between `min` and `max` transactions of 20-120 random bytes each.
pub fn random_transactions(rng: &mut SimRng, min: u64, max: u64) -> Vec<SignedTransaction> {
    let count = rng.range(min, max);
    (0..count)
        .map(|_| {
            let len = rng.range(20, 120) as usize;
            SignedTransaction {
                bytes: rng.bytes(len),
            }
        })
        .collect()
}

/// The transactions root of `txs`.
pub fn tx_root(txs: &[SignedTransaction]) -> Hash32 {
    transactions_root(txs.iter().map(|t| t.bytes.as_slice()))
}

/// The state root "after executing" `txs` on the state of the block `parent_hash`.
pub fn state_root(parent_hash: &Hash32, txs: &[SignedTransaction]) -> Hash32 {
    keccak256_parts(&[parent_hash, &tx_root(txs)])
}

/// What the driver answers to `Effect::VerifyBlock`.
pub fn block_is_valid(block: &Block) -> bool {
    let root = block.computed_transactions_root();
    block.header.transactions_root == root
        && block.header.state_root == keccak256_parts(&[&block.header.parent_hash, &root])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::BlockHeader;

    #[test]
    fn a_consistently_built_block_is_valid_and_tampering_is_caught() {
        let mut rng = SimRng::new(1);
        let txs = random_transactions(&mut rng, 0, 3);
        assert!(txs.len() <= 3);
        assert!(txs.iter().all(|t| (20..=120).contains(&t.bytes.len())));
        let parent_hash = [7u8; 32];
        let mut block = Block {
            header: BlockHeader {
                parent_hash,
                height: 1,
                round: 0,
                timestamp_ms: 0,
                proposer: 0,
                randao_reveal: [0; 96],
                mix: [0; 32],
                transactions_root: tx_root(&txs),
                state_root: state_root(&parent_hash, &txs),
                committee_digest: [0; 32],
            },
            transactions: txs,
        };
        assert!(block_is_valid(&block));
        block.header.state_root[0] ^= 1;
        assert!(!block_is_valid(&block));
        block.header.state_root[0] ^= 1;
        block
            .transactions
            .push(SignedTransaction { bytes: vec![1; 30] });
        assert!(
            !block_is_valid(&block),
            "transactions no longer match the root"
        );
    }
}
