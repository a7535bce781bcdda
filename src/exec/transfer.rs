//! The exec engine of [`ExecutionMode::Transfer`](crate::config::genesis::ExecutionMode) chains:
//! the mempool of signed Ethereum transfers, block building and checking against the account
//! state, finalization, and the answers to clients' ingress batches. Sans-IO: the exec shard
//! (`exec::run`) feeds it and carries out what it returns.
//!
//! # Flow of a transaction
//!
//! 1. **Admission** ([`TransferEngine::admit_batch`]): each transaction of a batch goes through
//!    [`Mempool::admit`], which decodes it and recovers its sender **once** (the only signature
//!    recovery a transaction costs this node, unless a block brings it before its gossip). A
//!    client's batch gets one answer per refusal reason at once; the admitted part is gossiped
//!    to the other CNs as a batch (the client's exact bytes when everything was admitted).
//! 2. **Building** ([`TransferEngine::build`]): the proposer selects executable transactions
//!    (best payers first, per-sender nonce order, within the block's count, byte and gas
//!    limits), executes them tentatively and returns their state root for the header.
//! 3. **Checking** ([`TransferEngine::verify`]): a validator recomputes the transactions root,
//!    takes each transaction's decoded form from its pool by hash (so gossip spares it the
//!    recovery; a transaction the pool lacks is decoded and recovered here), executes the block
//!    tentatively and compares the state root with the header's. Anything wrong makes the block
//!    invalid, so the validator does not PREPARE it and a round change follows.
//! 4. **Finalization** ([`TransferEngine::finalize`]): the block executed tentatively is
//!    confirmed when it is the finalized one (no second execution); otherwise (sync, or another
//!    round's block) the tentative one is discarded and the finalized block executed. A
//!    finalized block that does not execute to its header's state root means this node's state
//!    diverged from the network's: an error the node stops on. Then the pool drops what the
//!    block included and what it made stale or unfunded, and client batches whose transactions
//!    are all settled get their FINAL / DROPPED answers.
//!
//! # How blocks refer to transactions
//!
//! Blocks carry the full transaction bytes: a finalized block must stand alone in the block
//! log, in sync and for PNs and ENs. What gossip saves is the signature recovery at block
//! checking: the counters [`EngineCounters::block_txs_pooled`] and
//! [`EngineCounters::block_txs_recovered`] say how many of the checked blocks' transactions
//! were found in the pool and how many had to be recovered.
//!
//! # Fees
//!
//! The base fee is fixed at [`BASE_FEE_WEI`] (Kaia's minimum gas price, 25 gkei); there is no
//! base fee adjustment yet. Every fee is **burned**, the priority fee too: council members have
//! no account in the genesis to be paid into, so `Σ balances + burned` stays the genesis supply.
//!
//! # Invariants
//!
//! - At most one block is applied tentatively, and it is always at `head + 1`, where `head` is
//!   the last finalized height (`TentativeBlock::height == self.head + 1`).
//! - `local` maps exactly the admitted, unsettled transactions of clients' batches; a batch's
//!   `unsettled` count equals its entries in `local`; a batch is answered and removed when it
//!   reaches zero.

use std::collections::{BTreeMap, HashMap};

use crate::crypto::tx::{decode_transaction, DecodedTx};
use crate::exec::mempool::Refusal;
use crate::exec::mempool::{Included, Mempool, MempoolConfig, DEFAULT_MIN_GAS_PRICE};
use crate::exec::state::{Account, BlockOutcome, State};
use crate::types::chain::{transactions_root_of_hashes, SignedTransaction};
use crate::types::hash::{keccak256, Hash32};
use crate::types::network::IngressAck;
use crate::types::{Block, FinalizedBlock, Height, MAX_BLOCK_TXS, MAX_BLOCK_TX_BYTES};

/// The base fee of every block, in wei (fixed; see the module doc).
pub const BASE_FEE_WEI: u128 = DEFAULT_MIN_GAS_PRICE;

/// What the engine counts (exported as metrics by the exec shard).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct EngineCounters {
    /// Transactions admitted to the pool.
    pub admitted: u64,
    /// Transactions refused at admission (every reason).
    pub refused: u64,
    /// Admitted transactions dropped before any block included them.
    pub dropped: u64,
    /// Signature recoveries done (admission and block checking).
    pub recoveries: u64,
    /// Transactions of checked or finalized blocks whose decoded form came from the pool.
    pub block_txs_pooled: u64,
    /// Transactions of checked or finalized blocks that had to be decoded and recovered.
    pub block_txs_recovered: u64,
    /// Transactions in finalized blocks.
    pub finalized: u64,
}

/// A client's batch whose admitted transactions are not all settled.
#[derive(Debug)]
struct LocalBatch {
    connection: u64,
    batch_id: u64,
    unsettled: u32,
    finalized: u32,
    dropped: u32,
    last_height: Height,
}

/// The block applied to the state tentatively.
#[derive(Debug)]
struct TentativeBlock {
    height: Height,
    transactions_root: Hash32,
    state_root: Hash32,
    /// The decoded transactions, in block order (finalization needs their senders).
    txs: Vec<DecodedTx>,
    /// What executing it produced (receipts, gas), handed to the chain index at finalization.
    outcome: BlockOutcome,
}

/// What finalizing a block produced, besides the answers to clients: what the JSON-RPC chain
/// index keeps of it ([`crate::exec::chain_index`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FinalizedOutcome {
    /// keccak-256 of each transaction, in block order.
    pub tx_hashes: Vec<Hash32>,
    /// Each transaction's sender, in block order.
    pub senders: Vec<[u8; 20]>,
    /// The execution outcome (one receipt per transaction).
    pub outcome: BlockOutcome,
}

/// A transaction admitted one at a time (JSON-RPC `eth_sendRawTransaction`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdmittedOne {
    /// Its hash.
    pub hash: Hash32,
    /// Answers for native clients whose pooled transactions it replaced or evicted.
    pub acks: Vec<(u64, IngressAck)>,
}

/// What admitting a batch produced.
#[derive(Debug, Default)]
pub struct BatchOutcome {
    /// Indices (in the batch) of the transactions admitted.
    pub admitted: Vec<usize>,
    /// Answers for the client: one per refusal reason (empty for a peer's batch).
    pub acks: Vec<(u64, IngressAck)>,
}

/// The transfer engine. See the module doc.
pub struct TransferEngine {
    state: State,
    pool: Mempool,
    /// The last finalized height.
    head: Height,
    tentative: Option<TentativeBlock>,
    /// Admitted, unsettled client transactions: hash -> batch number.
    local: HashMap<Hash32, u64>,
    batches: HashMap<u64, LocalBatch>,
    next_batch: u64,
    counters: EngineCounters,
}

impl std::fmt::Debug for TransferEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TransferEngine")
            .field("head", &self.head)
            .field("pooled", &self.pool.len())
            .field("tentative", &self.tentative.as_ref().map(|t| t.height))
            .field("local_batches", &self.batches.len())
            .finish()
    }
}

impl TransferEngine {
    /// An engine on `state` (the state after the last finalized block) with an empty pool.
    pub fn new(state: State) -> TransferEngine {
        assert!(!state.has_tentative(), "the starting state must be final");
        let pool = Mempool::new(MempoolConfig::new(state.chain_id()), BASE_FEE_WEI);
        TransferEngine {
            head: state.height(),
            state,
            pool,
            tentative: None,
            local: HashMap::new(),
            batches: HashMap::new(),
            next_batch: 0,
            counters: EngineCounters::default(),
        }
    }

    /// The last finalized height.
    pub fn head(&self) -> Height {
        self.head
    }

    /// Transactions in the pool.
    pub fn pooled(&self) -> usize {
        self.pool.len()
    }

    /// The counters.
    pub fn counters(&self) -> EngineCounters {
        self.counters
    }

    /// The state after the last finalized block (a tentative block is discarded first).
    pub fn final_state(&mut self) -> &mut State {
        self.discard();
        &mut self.state
    }

    /// Offers a batch's transactions. `client` = `(connection, batch id)` for a client's
    /// batch: it gets one answer per refusal reason now, and FINAL / DROPPED answers when its
    /// admitted transactions settle.
    pub fn admit_batch<'a>(
        &mut self,
        txs: impl Iterator<Item = &'a [u8]>,
        client: Option<(u64, u64)>,
        now_ms: u64,
    ) -> BatchOutcome {
        let mut out = BatchOutcome::default();
        let mut refusals: BTreeMap<u8, u32> = BTreeMap::new();
        let mut admitted_hashes = Vec::new();
        let mut evicted = Vec::new();
        for (i, bytes) in txs.enumerate() {
            match self.pool.admit(bytes, &self.state, now_ms) {
                Ok(a) => {
                    self.counters.recoveries += 1;
                    self.counters.admitted += 1;
                    out.admitted.push(i);
                    admitted_hashes.push(a.hash);
                    evicted.extend(a.evicted);
                    evicted.extend(a.replaced);
                }
                Err(refusal) => {
                    use crate::exec::mempool::Refusal;
                    if !matches!(
                        refusal,
                        Refusal::Oversized { .. } | Refusal::AlreadyKnown | Refusal::Decode(_)
                    ) {
                        // Decoded (and recovered) before it was refused.
                        self.counters.recoveries += 1;
                    }
                    self.counters.refused += 1;
                    *refusals.entry(refusal.ingress_status()).or_default() += 1;
                }
            }
        }
        if let Some((connection, batch_id)) = client {
            for (status, count) in refusals {
                out.acks.push((
                    connection,
                    IngressAck {
                        batch_id,
                        status,
                        height: 0,
                        count,
                    },
                ));
            }
            if !admitted_hashes.is_empty() {
                let number = self.next_batch;
                self.next_batch += 1;
                for hash in &admitted_hashes {
                    let previous = self.local.insert(*hash, number);
                    debug_assert!(previous.is_none(), "an admitted hash was not pooled");
                }
                self.batches.insert(
                    number,
                    LocalBatch {
                        connection,
                        batch_id,
                        unsettled: admitted_hashes.len() as u32,
                        finalized: 0,
                        dropped: 0,
                        last_height: 0,
                    },
                );
            }
        }
        // Replaced or evicted client transactions are settled as dropped.
        for hash in evicted {
            self.settle(&hash, None, &mut out.acks);
        }
        out
    }

    /// Settles one client transaction: final at `height`, or dropped (`None`). Answers its
    /// batch when it was the last unsettled one.
    fn settle(&mut self, hash: &Hash32, height: Option<Height>, acks: &mut Vec<(u64, IngressAck)>) {
        let Some(number) = self.local.remove(hash) else {
            return;
        };
        let batch = self
            .batches
            .get_mut(&number)
            .expect("every local transaction names a live batch");
        match height {
            Some(h) => {
                batch.finalized += 1;
                batch.last_height = batch.last_height.max(h);
            }
            None => {
                batch.dropped += 1;
                self.counters.dropped += 1;
            }
        }
        batch.unsettled -= 1;
        if batch.unsettled > 0 {
            return;
        }
        let batch = self.batches.remove(&number).expect("present");
        if batch.finalized > 0 {
            acks.push((
                batch.connection,
                IngressAck {
                    batch_id: batch.batch_id,
                    status: IngressAck::FINAL,
                    height: batch.last_height,
                    count: batch.finalized,
                },
            ));
        }
        if batch.dropped > 0 {
            acks.push((
                batch.connection,
                IngressAck {
                    batch_id: batch.batch_id,
                    status: IngressAck::DROPPED,
                    height: 0,
                    count: batch.dropped,
                },
            ));
        }
    }

    /// Undoes the tentative block, if any.
    fn discard(&mut self) {
        if self.tentative.take().is_some() {
            self.state.discard_tentative();
        }
        debug_assert!(!self.state.has_tentative());
    }

    /// Executes `txs` as block `head + 1` tentatively; returns the state root.
    fn execute(
        &mut self,
        transactions_root: Hash32,
        txs: Vec<DecodedTx>,
    ) -> Result<Hash32, crate::exec::state::BlockError> {
        self.discard();
        let height = self.head + 1;
        let outcome = self.state.execute_tentative(&txs, None, BASE_FEE_WEI)?;
        let state_root = self.state.root();
        self.tentative = Some(TentativeBlock {
            height,
            transactions_root,
            state_root,
            txs,
            outcome,
        });
        Ok(state_root)
    }

    /// Pooled transactions that are executable now and arrived at least `older_than_ms`
    /// before `now_ms`, at most `max`, in block order. An EN sends them on again: a batch it
    /// handed to a PN that died on the way, or that a full queue dropped, would otherwise
    /// stay pooled here and never reach a proposer.
    pub fn overdue(&self, now_ms: u64, older_than_ms: u64, max: usize) -> Vec<SignedTransaction> {
        self.pool
            .ready(&self.state, BASE_FEE_WEI)
            .filter(|p| now_ms.saturating_sub(p.arrived_ms()) >= older_than_ms)
            .take(max)
            .map(|p| SignedTransaction {
                bytes: p.raw().to_vec(),
            })
            .collect()
    }

    /// The transactions and state root of block `head + 1`. It is executed tentatively, so
    /// that finalizing it costs nothing more.
    ///
    /// # Panics
    /// If `height` is not `head + 1`: consensus asks for a block only after telling exec of
    /// its parent's finalization, on the same channel.
    pub fn build(&mut self, height: Height) -> (Vec<SignedTransaction>, Hash32) {
        assert_eq!(
            height,
            self.head + 1,
            "asked to build a block that does not follow the finalized head"
        );
        self.discard();
        let selected: Vec<(Vec<u8>, DecodedTx)> = self
            .pool
            .select(
                &self.state,
                MAX_BLOCK_TXS,
                MAX_BLOCK_TX_BYTES,
                self.pool.config().block_gas_limit,
                BASE_FEE_WEI,
            )
            .into_iter()
            .map(|p| (p.raw().to_vec(), p.decoded().clone()))
            .collect();
        let (mut raw, mut decoded): (Vec<Vec<u8>>, Vec<DecodedTx>) = selected.into_iter().unzip();
        loop {
            let root = transactions_root_of_hashes(decoded.iter().map(|t| t.hash));
            match self.execute(root, decoded.clone()) {
                Ok(state_root) => {
                    let txs = raw
                        .into_iter()
                        .map(|bytes| SignedTransaction { bytes })
                        .collect();
                    return (txs, state_root);
                }
                Err(crate::exec::state::BlockError::InvalidTransaction {
                    index, reason, ..
                }) => {
                    // The pool's selection should only give executable transactions; if one
                    // is not, build on the prefix before it rather than propose nothing.
                    tracing::warn!(index, %reason, "selected transaction does not execute; building a shorter block");
                    debug_assert!(
                        false,
                        "the pool selected a transaction that does not execute: {reason}"
                    );
                    raw.truncate(index);
                    decoded.truncate(index);
                }
                Err(e) => panic!("an in-limits block at head + 1 failed as a whole: {e}"),
            }
        }
    }

    /// The decoded transactions of `block` (from the pool where it has them), and its
    /// transactions root.
    fn decode_block(&mut self, block: &Block) -> Result<(Vec<DecodedTx>, Hash32), String> {
        self.decode_block_hashed(block, None)
    }

    /// [`TransferEngine::decode_block`] with the transactions' hashes when a caller computed
    /// them already (the finality check of a block from a peer), so nothing is hashed twice.
    fn decode_block_hashed(
        &mut self,
        block: &Block,
        hashes: Option<&[Hash32]>,
    ) -> Result<(Vec<DecodedTx>, Hash32), String> {
        if let Some(hashes) = hashes {
            assert_eq!(
                hashes.len(),
                block.transactions.len(),
                "one hash per transaction"
            );
        }
        let mut txs = Vec::with_capacity(block.transactions.len());
        for (i, tx) in block.transactions.iter().enumerate() {
            let hash = match hashes {
                Some(hashes) => hashes[i],
                None => keccak256(&tx.bytes),
            };
            match self.pool.get(&hash) {
                Some(pooled) => {
                    self.counters.block_txs_pooled += 1;
                    txs.push(pooled.decoded().clone());
                }
                None => {
                    self.counters.block_txs_recovered += 1;
                    self.counters.recoveries += 1;
                    let decoded = decode_transaction(&tx.bytes)
                        .map_err(|e| format!("transaction {i} does not decode: {e}"))?;
                    debug_assert_eq!(decoded.hash, hash, "the hash handed in is the tx's");
                    txs.push(decoded);
                }
            }
        }
        let root = transactions_root_of_hashes(txs.iter().map(|t| t.hash));
        Ok((txs, root))
    }

    /// Checks a proposed block at `head + 1`: transactions root, execution, state root. On
    /// success the block stays applied tentatively.
    pub fn verify(&mut self, block: &Block) -> Result<(), String> {
        let height = block.header.height;
        if height != self.head + 1 {
            return Err(format!(
                "block at height {height}, but the finalized head is {}",
                self.head
            ));
        }
        if let Some(t) = &self.tentative {
            if t.transactions_root == block.header.transactions_root {
                return if t.state_root == block.header.state_root {
                    Ok(())
                } else {
                    Err("state root differs from the executed one".into())
                };
            }
        }
        let (txs, root) = self.decode_block(block)?;
        if root != block.header.transactions_root {
            return Err("transactions root does not match the transactions".into());
        }
        let state_root = self.execute(root, txs).map_err(|e| e.to_string())?;
        if state_root != block.header.state_root {
            self.discard();
            return Err(format!(
                "state root 0x{} in the header, 0x{} after executing the block",
                hex::encode(block.header.state_root),
                hex::encode(state_root)
            ));
        }
        Ok(())
    }

    /// Applies a finalized block at `head + 1` (see the module doc). Returns the answers for
    /// clients whose batches it settled. An error means this node's state diverged from the
    /// network's: the node must stop.
    pub fn finalize(&mut self, fb: &FinalizedBlock) -> Result<Vec<(u64, IngressAck)>, String> {
        self.finalize_with_outcome(fb, None).map(|(acks, _)| acks)
    }

    /// [`TransferEngine::finalize`], also handing back what the block's execution produced
    /// (for the JSON-RPC chain index).
    ///
    /// `tx_hashes`, when given, are the hashes of the block's transactions, already computed
    /// by the finality check (which also compared their root with the header's).
    pub fn finalize_with_outcome(
        &mut self,
        fb: &FinalizedBlock,
        tx_hashes: Option<&[Hash32]>,
    ) -> Result<(Vec<(u64, IngressAck)>, FinalizedOutcome), String> {
        let header = &fb.block.header;
        if header.height != self.head + 1 {
            return Err(format!(
                "finalized block at height {}, but the exec head is {}",
                header.height, self.head
            ));
        }
        let reuse = self.tentative.as_ref().is_some_and(|t| {
            t.transactions_root == header.transactions_root && t.state_root == header.state_root
        });
        if !reuse {
            let (txs, root) = self.decode_block_hashed(&fb.block, tx_hashes)?;
            if root != header.transactions_root {
                return Err(format!(
                    "finalized block {} has a transactions root that does not match its transactions",
                    header.height
                ));
            }
            let state_root = self
                .execute(root, txs)
                .map_err(|e| format!("finalized block {} does not execute: {e}", header.height))?;
            if state_root != header.state_root {
                self.discard();
                return Err(format!(
                    "state diverged at height {}: the finalized header says 0x{}, this node computed 0x{}",
                    header.height,
                    hex::encode(header.state_root),
                    hex::encode(state_root)
                ));
            }
        }
        let tentative = self.tentative.take().expect("executed above");
        assert_eq!(tentative.height, header.height);
        self.state.confirm_tentative();
        self.head = header.height;
        self.counters.finalized += tentative.txs.len() as u64;
        let included: Vec<Included> = tentative.txs.iter().map(Included::from).collect();
        self.pool.on_block_finalized(&included, &self.state);
        let mut acks = Vec::new();
        for tx in &tentative.txs {
            self.settle(&tx.hash, Some(header.height), &mut acks);
        }
        // Client transactions the block made stale or unfunded are gone from the pool.
        if !self.local.is_empty() {
            let gone: Vec<Hash32> = self
                .local
                .keys()
                .filter(|h| !self.pool.contains(h))
                .copied()
                .collect();
            for hash in gone {
                self.settle(&hash, None, &mut acks);
            }
        }
        self.check();
        let finalized = FinalizedOutcome {
            tx_hashes: tentative.txs.iter().map(|t| t.hash).collect(),
            senders: tentative.txs.iter().map(|t| t.sender).collect(),
            outcome: tentative.outcome,
        };
        Ok((acks, finalized))
    }

    /// Offers one transaction, as a JSON-RPC `eth_sendRawTransaction` does: the same checks
    /// and pool as [`TransferEngine::admit_batch`], without an ingress batch to answer later.
    pub fn admit_one(&mut self, bytes: &[u8], now_ms: u64) -> Result<AdmittedOne, Refusal> {
        match self.pool.admit(bytes, &self.state, now_ms) {
            Ok(a) => {
                self.counters.recoveries += 1;
                self.counters.admitted += 1;
                let mut acks = Vec::new();
                for hash in a.evicted.iter().chain(a.replaced.iter()) {
                    self.settle(hash, None, &mut acks);
                }
                Ok(AdmittedOne { hash: a.hash, acks })
            }
            Err(refusal) => {
                if !matches!(
                    refusal,
                    Refusal::Oversized { .. } | Refusal::AlreadyKnown | Refusal::Decode(_)
                ) {
                    self.counters.recoveries += 1;
                }
                self.counters.refused += 1;
                Err(refusal)
            }
        }
    }

    /// The account at the last finalized block. A block applied tentatively (a CN between
    /// checking a proposal and its finalization) is discarded first, so finalization then
    /// executes it again; an EN never holds one.
    pub fn head_account(&mut self, address: &[u8; 20]) -> Account {
        self.discard();
        self.state.account(address).unwrap_or_default()
    }

    /// The nonce the sender's next transaction takes counting its pooled ones:
    /// `state_nonce + pooled`, exact when the pooled nonces have no gap (a gap makes it
    /// larger than the next executable nonce).
    pub fn pending_nonce(&self, address: &[u8; 20], state_nonce: u64) -> u64 {
        state_nonce.saturating_add(self.pool.sender_len(address) as u64)
    }

    /// A pooled (not yet included) transaction's bytes and sender.
    pub fn pooled_transaction(&self, hash: &Hash32) -> Option<(Vec<u8>, [u8; 20])> {
        self.pool
            .get(hash)
            .map(|p| (p.raw().to_vec(), p.decoded().sender))
    }

    /// The chain id.
    pub fn chain_id(&self) -> u64 {
        self.state.chain_id()
    }

    fn check(&self) {
        debug_assert_eq!(
            self.local.len() as u64,
            self.batches
                .values()
                .map(|b| b.unsettled as u64)
                .sum::<u64>(),
            "local transactions and unsettled counts agree"
        );
        if let Some(t) = &self.tentative {
            assert_eq!(t.height, self.head + 1, "tentative block at head + 1");
        }
    }
}

#[cfg(test)]
mod tests {
    use alloy_primitives::U256;

    use super::*;
    use crate::config::genesis::{test_account_secret, GenesisAccount};
    use crate::crypto::tx::{address_of_secret, sign_transfer, Transfer, TxType};
    use crate::types::{BlockHeader, QuorumCertificate, VoteKind};

    const CHAIN: u64 = 1001;
    const ETHER: u128 = 1_000_000_000_000_000_000;

    fn accounts(n: u64) -> Vec<([u8; 32], [u8; 20])> {
        (0..n)
            .map(|i| {
                let s = test_account_secret(i);
                (s, address_of_secret(&s).unwrap())
            })
            .collect()
    }

    fn engine(accts: &[([u8; 32], [u8; 20])]) -> TransferEngine {
        let genesis: Vec<GenesisAccount> = accts
            .iter()
            .map(|(_, a)| GenesisAccount {
                address: *a,
                balance: U256::from(ETHER),
            })
            .collect();
        TransferEngine::new(State::from_genesis(CHAIN, &genesis).unwrap())
    }

    fn transfer(secret: &[u8; 32], nonce: u64, to: [u8; 20], value: u128) -> Vec<u8> {
        sign_transfer(
            secret,
            TxType::Eip1559,
            &Transfer {
                chain_id: CHAIN,
                nonce,
                to,
                value: U256::from(value),
                gas_limit: 21_000,
                max_fee_per_gas: 2 * BASE_FEE_WEI,
                max_priority_fee_per_gas: 1_000_000_000,
            },
        )
        .unwrap()
    }

    fn header(height: Height, txs: &[SignedTransaction], state_root: Hash32) -> BlockHeader {
        BlockHeader {
            parent_hash: [0; 32],
            height,
            round: 0,
            timestamp_ms: 0,
            proposer: 0,
            randao_reveal: [0; 96],
            mix: [0; 32],
            transactions_root: crate::types::chain::transactions_root(
                txs.iter().map(|t| t.bytes.as_slice()),
            ),
            state_root,
            committee_digest: [0; 32],
        }
    }

    fn finalized(block: Block) -> FinalizedBlock {
        FinalizedBlock {
            certificate: QuorumCertificate {
                kind: VoteKind::Commit,
                height: block.header.height,
                round: 0,
                block_hash: block.hash(),
                signers: Default::default(),
                signature: [0; 96],
            },
            block,
        }
    }

    #[test]
    fn a_built_block_verifies_elsewhere_and_finalizes_with_final_acks() {
        let accts = accounts(3);
        let mut proposer = engine(&accts);
        let mut validator = engine(&accts);
        let t0 = transfer(&accts[0].0, 0, accts[1].1, 5);
        let t1 = transfer(&accts[0].0, 1, accts[2].1, 6);
        let out =
            proposer.admit_batch([t0.as_slice(), t1.as_slice()].into_iter(), Some((9, 77)), 0);
        assert_eq!(out.admitted, vec![0, 1]);
        assert!(out.acks.is_empty(), "nothing refused");
        // The validator got the gossip.
        let gossip = validator.admit_batch([t0.as_slice(), t1.as_slice()].into_iter(), None, 0);
        assert_eq!(gossip.admitted.len(), 2);

        let (txs, state_root) = proposer.build(1);
        assert_eq!(txs.len(), 2);
        let block = Block {
            header: header(1, &txs, state_root),
            transactions: txs,
        };
        validator.verify(&block).unwrap();
        assert_eq!(validator.counters().block_txs_pooled, 2);
        assert_eq!(validator.counters().block_txs_recovered, 0);

        let fb = finalized(block);
        let acks = proposer.finalize(&fb).unwrap();
        assert_eq!(acks.len(), 1);
        assert_eq!(acks[0].0, 9);
        assert_eq!(
            acks[0].1,
            IngressAck {
                batch_id: 77,
                status: IngressAck::FINAL,
                height: 1,
                count: 2
            }
        );
        assert!(validator.finalize(&fb).unwrap().is_empty());
        for e in [&mut proposer, &mut validator] {
            assert_eq!(e.head(), 1);
            assert_eq!(e.pooled(), 0);
            let s = e.final_state();
            assert_eq!(s.nonce(&accts[0].1), 2);
            assert_eq!(s.balance(&accts[2].1), U256::from(ETHER + 6));
            assert_eq!(s.root(), state_root);
        }
    }

    #[test]
    fn overdue_lists_executable_transactions_that_waited_long_enough_in_block_order() {
        let accts = accounts(3);
        let mut e = engine(&accts);
        let raw = [
            transfer(&accts[0].0, 0, accts[2].1, 1),
            transfer(&accts[0].0, 1, accts[2].1, 1),
            // A nonce gap: not executable, so never overdue.
            transfer(&accts[1].0, 5, accts[2].1, 1),
        ];
        let out = e.admit_batch(raw.iter().map(|t| t.as_slice()), None, 10_000);
        assert_eq!(out.admitted, vec![0, 1, 2]);
        assert!(e.overdue(12_999, 3_000, 10).is_empty(), "not yet");
        let due = e.overdue(13_000, 3_000, 10);
        let bytes: Vec<&[u8]> = due.iter().map(|t| t.bytes.as_slice()).collect();
        assert_eq!(bytes, vec![raw[0].as_slice(), raw[1].as_slice()]);
        assert_eq!(e.overdue(13_000, 3_000, 1).len(), 1, "bounded");
    }

    #[test]
    fn wrong_state_root_or_transactions_are_refused_and_leave_no_trace() {
        let accts = accounts(2);
        let mut e = engine(&accts);
        let before = e.final_state().root();
        let txs = vec![SignedTransaction {
            bytes: transfer(&accts[0].0, 0, accts[1].1, 1),
        }];
        let bad_root = Block {
            header: header(1, &txs, [7; 32]),
            transactions: txs.clone(),
        };
        let err = e.verify(&bad_root).unwrap_err();
        assert!(err.contains("state root"), "{err}");
        assert_eq!(e.final_state().root(), before);
        // Transactions that do not match the header's root.
        let mut other = bad_root.clone();
        other.transactions[0].bytes = transfer(&accts[0].0, 0, accts[1].1, 2);
        assert!(e.verify(&other).unwrap_err().contains("transactions root"));
        // A transaction that does not execute (nonce 5).
        let gap = vec![SignedTransaction {
            bytes: transfer(&accts[0].0, 5, accts[1].1, 1),
        }];
        let block = Block {
            header: header(1, &gap, before),
            transactions: gap,
        };
        assert!(e.verify(&block).unwrap_err().contains("nonce"));
        // Garbage bytes.
        let junk = vec![SignedTransaction {
            bytes: vec![0x02, 0xff, 0x00],
        }];
        let block = Block {
            header: header(1, &junk, before),
            transactions: junk,
        };
        assert!(e.verify(&block).unwrap_err().contains("does not decode"));
        // The wrong height.
        let empty = Block {
            header: header(2, &[], before),
            transactions: vec![],
        };
        assert!(e.verify(&empty).is_err());
        assert_eq!(e.final_state().root(), before);
        assert_eq!(e.head(), 0);
    }

    #[test]
    fn a_synced_block_executes_and_a_diverging_one_is_an_error() {
        let accts = accounts(2);
        let mut leader = engine(&accts);
        let tx = transfer(&accts[1].0, 0, accts[0].1, 3);
        leader.admit_batch([tx.as_slice()].into_iter(), None, 0);
        let (txs, root) = leader.build(1);
        let fb = finalized(Block {
            header: header(1, &txs, root),
            transactions: txs,
        });
        // A node that never saw the transaction nor the proposal (sync).
        let mut behind = engine(&accts);
        behind.finalize(&fb).unwrap();
        assert_eq!(behind.counters().block_txs_recovered, 1);
        assert_eq!(behind.final_state().root(), root);
        // A certified block whose state root this node cannot reproduce.
        let mut other = engine(&accts);
        let mut forged = fb.clone();
        forged.block.header.state_root = [1; 32];
        let err = other.finalize(&forged).unwrap_err();
        assert!(err.contains("state diverged at height 1"), "{err}");
    }

    #[test]
    fn refusals_are_answered_per_reason_and_dropped_transactions_settle_their_batch() {
        let accts = accounts(3);
        let mut e = engine(&accts);
        let good = transfer(&accts[0].0, 0, accts[1].1, 1);
        let too_high = transfer(&accts[0].0, 1000, accts[1].1, 1);
        let junk = vec![0x02, 0x01];
        let out = e.admit_batch(
            [
                good.as_slice(),
                too_high.as_slice(),
                junk.as_slice(),
                good.as_slice(),
            ]
            .into_iter(),
            Some((1, 5)),
            0,
        );
        assert_eq!(out.admitted, vec![0]);
        let mut got: Vec<(u8, u32)> = out.acks.iter().map(|(_, a)| (a.status, a.count)).collect();
        got.sort();
        assert_eq!(
            got,
            vec![
                (IngressAck::REFUSED_DUPLICATE, 1),
                (IngressAck::REFUSED_INVALID, 1),
                (IngressAck::REFUSED_NONCE_TOO_HIGH, 1),
            ]
        );
        // Another version of nonce 0 (a peer's, better paid) is finalized instead: the
        // client's transaction is stale and its batch settles as dropped.
        let other = sign_transfer(
            &accts[0].0,
            TxType::Legacy,
            &Transfer {
                chain_id: CHAIN,
                nonce: 0,
                to: accts[2].1,
                value: U256::from(9u8),
                gas_limit: 21_000,
                max_fee_per_gas: 3 * BASE_FEE_WEI,
                max_priority_fee_per_gas: 0,
            },
        )
        .unwrap();
        let mut leader = engine(&accts);
        leader.admit_batch([other.as_slice()].into_iter(), None, 0);
        let (txs, root) = leader.build(1);
        let fb = finalized(Block {
            header: header(1, &txs, root),
            transactions: txs,
        });
        let acks = e.finalize(&fb).unwrap();
        assert_eq!(
            acks,
            vec![(
                1,
                IngressAck {
                    batch_id: 5,
                    status: IngressAck::DROPPED,
                    height: 0,
                    count: 1
                }
            )]
        );
        assert_eq!(e.counters().dropped, 1);
        assert_eq!(e.pooled(), 0);
    }

    #[test]
    fn building_after_a_discarded_proposal_starts_from_the_final_state() {
        let accts = accounts(2);
        let mut e = engine(&accts);
        let t0 = transfer(&accts[0].0, 0, accts[1].1, 1);
        e.admit_batch([t0.as_slice()].into_iter(), None, 0);
        let (first, root1) = e.build(1);
        // A round change: another proposal (empty) is checked, then this node builds again.
        let empty = Block {
            header: header(1, &[], e.final_state().root()),
            transactions: vec![],
        };
        e.verify(&empty).unwrap();
        let (again, root2) = e.build(1);
        assert_eq!(first, again);
        assert_eq!(root1, root2);
        // The empty block is finalized: the transfer stays pooled for the next height.
        let fb = finalized(empty);
        e.finalize(&fb).unwrap();
        assert_eq!(e.pooled(), 1);
        let (next, _) = e.build(2);
        assert_eq!(next.len(), 1);
    }
}
