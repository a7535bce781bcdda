//! Blocks and block headers.
//!
//! A block is a header plus the transactions as raw signed EIP-2718 bytes (decoded and
//! sender-recovered once, at admission, by the exec shard; never again).
//!
//! Identity: the block hash is keccak-256 of the header's canonical layout
//! ([`BlockHeader::HASH_LAYOUT_LEN`] bytes, all integers big-endian, fields in declaration
//! order). The transactions are bound by `transactions_root`, see [`transactions_root`].

use rkyv::{Archive, Deserialize, Serialize};

use super::consensus::CommitCertificate;
use super::{
    BlsSignatureBytes, CouncilIndex, Height, LimitError, Round, MAX_BLOCK_TXS, MAX_BLOCK_TX_BYTES,
};
use crate::types::hash::{keccak256, Hash32};
use crate::types::MAX_TX_BYTES;

/// The header of a block: everything consensus signs over (through the block hash).
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct BlockHeader {
    /// Hash of the parent block's header (zero for genesis).
    pub parent_hash: Hash32,
    /// Height of this block; the parent's height plus one.
    pub height: Height,
    /// The round in which this block was first proposed.
    pub round: Round,
    /// Proposal time, milliseconds since the Unix epoch.
    pub timestamp_ms: u64,
    /// Council index of the proposer.
    pub proposer: CouncilIndex,
    /// The proposer's randao reveal for this height: `BLS_sign(sk, chain_id || height)`.
    pub randao_reveal: BlsSignatureBytes,
    /// The mix after this block: `parent.mix xor keccak256(randao_reveal)`.
    pub mix: Hash32,
    /// Commitment to the transactions, see [`transactions_root`].
    pub transactions_root: Hash32,
    /// Commitment to the account state after executing this block.
    pub state_root: Hash32,
    /// keccak-256 of the committee of this height (see `election::committee_digest`).
    pub committee_digest: Hash32,
}

impl BlockHeader {
    /// A genesis header with every field zero but the mix (keccak-256 of `seed`): the chain
    /// start of simulations and tests, which need no council or accounts.
    pub fn synthetic_genesis(seed: u64) -> BlockHeader {
        BlockHeader {
            parent_hash: [0; 32],
            height: 0,
            round: 0,
            timestamp_ms: 0,
            proposer: 0,
            randao_reveal: [0; 96],
            mix: keccak256(&seed.to_be_bytes()),
            transactions_root: [0; 32],
            state_root: [0; 32],
            committee_digest: [0; 32],
        }
    }

    /// Length of the canonical layout hashed into the block hash.
    pub const HASH_LAYOUT_LEN: usize = 32 + 8 + 4 + 8 + 4 + 96 + 32 + 32 + 32 + 32;

    /// The block hash: keccak-256 of the canonical layout.
    pub fn hash(&self) -> Hash32 {
        keccak256(&self.hash_layout())
    }

    /// The canonical layout: fields in declaration order, integers big-endian.
    pub fn hash_layout(&self) -> [u8; Self::HASH_LAYOUT_LEN] {
        header_layout(HeaderFields {
            parent_hash: &self.parent_hash,
            height: self.height,
            round: self.round,
            timestamp_ms: self.timestamp_ms,
            proposer: self.proposer,
            randao_reveal: &self.randao_reveal,
            mix: &self.mix,
            transactions_root: &self.transactions_root,
            state_root: &self.state_root,
            committee_digest: &self.committee_digest,
        })
    }
}

impl ArchivedBlockHeader {
    /// The block hash computed in place from the archive (same as [`BlockHeader::hash`]).
    pub fn hash(&self) -> Hash32 {
        keccak256(&header_layout(HeaderFields {
            parent_hash: &self.parent_hash,
            height: self.height.to_native(),
            round: self.round.to_native(),
            timestamp_ms: self.timestamp_ms.to_native(),
            proposer: self.proposer.to_native(),
            randao_reveal: &self.randao_reveal,
            mix: &self.mix,
            transactions_root: &self.transactions_root,
            state_root: &self.state_root,
            committee_digest: &self.committee_digest,
        }))
    }
}

struct HeaderFields<'a> {
    parent_hash: &'a Hash32,
    height: u64,
    round: u32,
    timestamp_ms: u64,
    proposer: u32,
    randao_reveal: &'a BlsSignatureBytes,
    mix: &'a Hash32,
    transactions_root: &'a Hash32,
    state_root: &'a Hash32,
    committee_digest: &'a Hash32,
}

fn header_layout(f: HeaderFields<'_>) -> [u8; BlockHeader::HASH_LAYOUT_LEN] {
    let mut out = [0u8; BlockHeader::HASH_LAYOUT_LEN];
    let mut at = 0;
    let mut put = |bytes: &[u8]| {
        out[at..at + bytes.len()].copy_from_slice(bytes);
        at += bytes.len();
    };
    put(f.parent_hash);
    put(&f.height.to_be_bytes());
    put(&f.round.to_be_bytes());
    put(&f.timestamp_ms.to_be_bytes());
    put(&f.proposer.to_be_bytes());
    put(f.randao_reveal);
    put(f.mix);
    put(f.transactions_root);
    put(f.state_root);
    put(f.committee_digest);
    debug_assert_eq!(at, BlockHeader::HASH_LAYOUT_LEN);
    out
}

/// A signed transaction exactly as its sender encoded it (an EIP-2718 envelope).
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct SignedTransaction {
    /// The EIP-2718 bytes.
    pub bytes: Vec<u8>,
}

/// A block: a header and its transactions.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct Block {
    /// The header.
    pub header: BlockHeader,
    /// The transactions in execution order.
    pub transactions: Vec<SignedTransaction>,
}

impl Block {
    /// The block hash (the header's hash).
    pub fn hash(&self) -> Hash32 {
        self.header.hash()
    }

    /// The root the header must carry for these transactions.
    pub fn computed_transactions_root(&self) -> Hash32 {
        transactions_root(self.transactions.iter().map(|tx| tx.bytes.as_slice()))
    }
}

/// Which list of transactions is checked (names the limits in errors).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransactionList {
    /// A block's transactions.
    Block,
    /// A `TxBatch`'s transactions.
    Batch,
}

/// Named limits of a list of transactions: at most `max_txs`, none empty, each at most
/// `MAX_TX_BYTES`, together at most `max_bytes`.
pub fn check_transaction_list(
    txs: &[ArchivedSignedTransaction],
    list: TransactionList,
    max_txs: usize,
    max_bytes: usize,
) -> Result<(), LimitError> {
    let (what_count, what_empty, what_bytes) = match list {
        TransactionList::Block => (
            "block transactions",
            "empty transaction in block",
            "block transaction bytes",
        ),
        TransactionList::Batch => (
            "batch transactions",
            "empty transaction in batch",
            "batch transaction bytes",
        ),
    };
    if txs.len() > max_txs {
        return Err(LimitError::TooMany {
            what: what_count,
            len: txs.len(),
            max: max_txs,
        });
    }
    let mut total = 0usize;
    for tx in txs {
        let len = tx.bytes.len();
        if len == 0 {
            return Err(LimitError::Invalid(what_empty));
        }
        if len > MAX_TX_BYTES {
            return Err(LimitError::TooMany {
                what: "transaction bytes",
                len,
                max: MAX_TX_BYTES,
            });
        }
        total += len;
    }
    if total > max_bytes {
        return Err(LimitError::TooMany {
            what: what_bytes,
            len: total,
            max: max_bytes,
        });
    }
    Ok(())
}

impl ArchivedBlock {
    /// Checks the named limits on an archive that already passed `rkyv::access`:
    /// transaction count, no empty transaction, per-transaction size, total size.
    pub fn check_limits(&self) -> Result<(), LimitError> {
        check_transaction_list(
            &self.transactions,
            TransactionList::Block,
            MAX_BLOCK_TXS,
            MAX_BLOCK_TX_BYTES,
        )
    }

    /// Checks that the header's `transactions_root` commits to the transactions carried.
    ///
    /// Not part of [`ArchivedBlock::check_limits`]: it costs one keccak-256 per transaction
    /// (the bulk of decoding a block frame), so it runs where the transaction hashes are needed
    /// anyway (the exec shard, which re-executes the block before a PREPARE), not in the net
    /// shard's frame gate.
    pub fn check_transactions_root(&self) -> Result<(), LimitError> {
        let root = transactions_root(self.transactions.iter().map(|tx| tx.bytes.as_slice()));
        if root != self.header.transactions_root {
            return Err(LimitError::Invalid(
                "transactions_root does not match the transactions",
            ));
        }
        Ok(())
    }
}

/// The transactions root: `keccak256(be_u32(count) || keccak256(tx_0) || ... || keccak256(tx_n-1))`.
///
/// Each transaction is identified by keccak-256 of its exact bytes (its Ethereum hash), and the
/// count prefix makes the empty list and every length distinct.
pub fn transactions_root<'a>(txs: impl ExactSizeIterator<Item = &'a [u8]>) -> Hash32 {
    transactions_root_of_hashes(txs.map(keccak256))
}

/// [`transactions_root`] from the transactions' hashes (for callers that already hold them).
pub fn transactions_root_of_hashes(hashes: impl ExactSizeIterator<Item = Hash32>) -> Hash32 {
    let count = u32::try_from(hashes.len()).unwrap_or(u32::MAX);
    let mut hasher = alloy_primitives::Keccak256::new();
    hasher.update(count.to_be_bytes());
    for hash in hashes {
        hasher.update(hash);
    }
    hasher.finalize().0
}

/// A finalized block with the certificate that finalized it: what CNs hand to PNs and ENs, and
/// what a node that is behind fetches during sync.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct FinalizedBlock {
    /// The block.
    pub block: Block,
    /// The commit certificate whose `block_hash` is the block's hash.
    pub certificate: CommitCertificate,
}

impl ArchivedFinalizedBlock {
    /// Structural checks on a validated archive: block limits, and that the certificate is a
    /// commit certificate for this very block. Signatures are checked by `crypto::bls`.
    pub fn check_limits(&self) -> Result<(), LimitError> {
        self.block.check_limits()?;
        self.certificate.check_shape()?;
        if self.certificate.kind != super::consensus::ArchivedVoteKind::Commit {
            return Err(LimitError::Invalid(
                "finalized block carries a non-commit certificate",
            ));
        }
        if self.certificate.height.to_native() != self.block.header.height.to_native()
            || self.certificate.block_hash != self.block.header.hash()
        {
            return Err(LimitError::Invalid("certificate is for another block"));
        }
        Ok(())
    }
}
