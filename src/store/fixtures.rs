//! Block log fixtures for tests, benchmarks and fuzzing (never used by the node): a fixed
//! genesis header, and blocks that extend a parent with a structurally valid commit
//! certificate whose signature is a dummy (a block log checks records, shapes, hashes and chain
//! links, never signatures).

use crate::types::chain::{transactions_root, SignedTransaction};
use crate::types::{Block, BlockHeader, FinalizedBlock, QuorumCertificate, VoteKind};

/// The genesis header block log fixtures extend.
pub fn genesis_header() -> BlockHeader {
    BlockHeader {
        parent_hash: [0; 32],
        height: 0,
        round: 0,
        timestamp_ms: 1_700_000_000_000,
        proposer: 0,
        randao_reveal: [0; 96],
        mix: [1; 32],
        transactions_root: transactions_root(std::iter::empty()),
        state_root: [2; 32],
        committee_digest: [3; 32],
    }
}

/// The child of `parent` carrying `transactions`, finalized in round `height % 3` by a
/// certificate of signers 0, 1 and 3 with a dummy signature.
pub fn child_block(parent: &BlockHeader, transactions: Vec<SignedTransaction>) -> FinalizedBlock {
    let height = parent.height + 1;
    let header = BlockHeader {
        parent_hash: parent.hash(),
        height,
        round: (height % 3) as u32,
        timestamp_ms: parent.timestamp_ms + 500,
        proposer: (height % 4) as u32,
        randao_reveal: [height as u8; 96],
        mix: [height as u8 ^ 0x5a; 32],
        transactions_root: transactions_root(transactions.iter().map(|t| t.bytes.as_slice())),
        state_root: [7; 32],
        committee_digest: [3; 32],
    };
    let certificate = QuorumCertificate {
        kind: VoteKind::Commit,
        height,
        round: header.round,
        block_hash: header.hash(),
        signers: vec![0b1011],
        signature: [9; 96],
    };
    FinalizedBlock {
        block: Block {
            header,
            transactions,
        },
        certificate,
    }
}
