//! The Ethereum transaction mempool of the exec shard.
//!
//! **Job.** Hold signed Ethereum transactions (EIP-155 legacy, EIP-2930, EIP-1559 value
//! transfers) between their arrival (client ingress or peer gossip) and their inclusion in a
//! finalized block; hand the block builder the executable ones, best paying first. The pool is
//! sans-IO and deterministic: account state comes in through [`AccountView`], time through a
//! `now_ms` argument, and no outcome depends on hash-map iteration order.
//!
//! **Admission** ([`Mempool::admit`]) decodes the envelope and recovers the sender exactly once
//! (the 52 us step); the pool then keeps the [`DecodedTx`] next to the raw bytes and nothing
//! downstream decodes again. The checks, in order, each with its own [`Refusal`]: size, duplicate
//! (before decoding, so a re-gossiped transaction costs one xxh3 and no recovery), decoding and
//! signature, chain id, shape (no contract creation, no call data, tip not above the fee cap,
//! gas limit between [`TRANSFER_GAS`] and the block gas limit, max fee not below the pool's
//! minimum), nonce (not below the account's, less than `nonce_window` ahead of it), balance
//! (`value + gas_limit * max_fee_per_gas`, per transaction), replacement bump, per-sender cap,
//! room.
//!
//! **Duplicates.** A transaction's dedup key is the xxh3 of its bytes. The key set covers the
//! pooled transactions and the last `recent_included` transactions removed because a finalized
//! block included them. xxh3 is not collision resistant, so a key hit is confirmed by keccak
//! identity (the transaction hash) before refusing: a collision costs a keccak, never a wrong
//! refusal.
//!
//! **Ordering rule** (block building, [`Mempool::ready`] / [`Mempool::select`]). A transaction is
//! executable when its sender's pooled nonces run contiguously from the account's current nonce
//! up to it, its max fee covers the block's base fee and the sender's balance covers its own
//! cost. Executable transactions come out as a merge of the per-sender nonce queues: at each step
//! the sender whose next transaction pays the highest effective gas price at the block's base fee
//! goes first; equal prices go by arrival (the pool's admission sequence number, unique), so the
//! order is a pure function of the pool and the view. A sender's transactions always come out in
//! nonce order, whatever their prices. A transaction that waits on a missing nonce (a gap) is kept
//! and becomes executable when the gap is filled.
//!
//! **Eviction rule** (pool full). Only a sender's highest-nonce transaction (its *tail*) is ever
//! evicted, so eviction never opens a nonce gap. A tail's rank is the lowest effective gas price,
//! at the pool's base fee ([`Mempool::set_base_fee`]), among all of its sender's pooled
//! transactions: a well-paid transaction behind a cheap one is only as good as the cheap one,
//! since it cannot be included before it. The victim is the lowest-ranked tail, the oldest tail
//! (lowest arrival sequence) among equal ranks, repeated until the newcomer fits. A newcomer, ranked
//! the same way (its own price, or a cheaper pooled predecessor's), is admitted only if every
//! victim ranks strictly below it: the pool never evicts to admit something cheaper or equal, and
//! never evicts the newcomer's own sender to make room (except that a sender at its cap may trade
//! its own tail for a lower nonce, which moves it toward executable). Replacing a pooled
//! transaction (same sender and nonce) needs both fees raised by at least `price_bump_percent`.
//!
//! **Finalization** ([`Mempool::on_block_finalized`]) removes the block's transactions, then
//! re-checks *eagerly* every sender the block touched: transactions whose nonce is now below the
//! account nonce (stale, e.g. another version of the same nonce was included) and transactions
//! the new balance no longer covers (unfunded) are dropped. Untouched senders need no re-check:
//! only an account's own transactions raise its nonce or lower its balance (contract calls, the
//! only other way, are not admitted yet). [`Mempool::revalidate`] re-checks every sender, for a
//! state that changed some other way (snapshot load). [`Mempool::expire`] drops senders that sent
//! nothing for `max_age_ms`.
//!
//! **Invariants** (asserted after every mutation; a full recount checks them against the
//! contents after every mutation in unit tests while the pool and its dedup memory hold at most
//! [`FULL_CHECK_MAX_TXS`] entries, and once per [`FULL_CHECK_PERIOD`] admissions in other debug
//! builds, so that a debug node stays usable under load):
//! - the transaction count and the sum of raw byte lengths equal the pool's counters and never
//!   exceed `max_txs` / `max_bytes`; no sender holds more than `max_per_sender` transactions;
//! - every pooled transaction is in exactly one sender queue, under its own nonce, and in the
//!   hash index; no sender queue is empty;
//! - the eviction index holds exactly one entry per sender, equal to its recomputed rank;
//! - the dedup key multiset equals the keys of the pooled transactions plus the remembered
//!   included ones, and at most `recent_included` included ones are remembered.
//!
//! Memory per pooled transaction is its raw bytes plus a fixed overhead of a few hundred bytes
//! (the decoded form and the index entries); `max_bytes` bounds the former and `max_txs` the
//! latter.

use std::cmp::{Ordering, Reverse};
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap, HashSet, VecDeque};

use alloy_primitives::U256;

use crate::crypto::tx::{decode_transaction, DecodedTx, TxError};
use crate::types::hash::{keccak256, xxh3, Hash32};
use crate::types::MAX_TX_BYTES;
use crate::types::{MAX_BLOCK_TXS, MAX_BLOCK_TX_BYTES};

/// Intrinsic gas of a plain value transfer: the least gas limit a transaction may carry (one
/// constant with the state's execution rules).
pub use super::state::TRANSFER_GAS;
/// Default limit on pooled transactions (four full blocks).
pub const DEFAULT_MAX_TXS: usize = 4 * MAX_BLOCK_TXS;
/// Default limit on the raw bytes of pooled transactions (eight full blocks).
pub const DEFAULT_MAX_BYTES: usize = 8 * MAX_BLOCK_TX_BYTES;
/// Default limit on one sender's pooled transactions.
pub const DEFAULT_MAX_PER_SENDER: usize = 64;
/// Default nonce window: a transaction's nonce may be at most `window - 1` above its account's.
pub const DEFAULT_NONCE_WINDOW: u64 = 64;
/// Default minimum max fee per gas: 25 gkei (Kaia's lower bound on the base fee).
pub const DEFAULT_MIN_GAS_PRICE: u128 = 25_000_000_000;
/// Default block gas limit: a block full of plain transfers is bounded by the block's
/// transaction count limit, not by gas.
pub const DEFAULT_BLOCK_GAS_LIMIT: u64 = MAX_BLOCK_TXS as u64 * TRANSFER_GAS;
/// Default fee bump a replacement needs, in percent of each of the replaced fees (geth's).
pub const DEFAULT_PRICE_BUMP_PERCENT: u128 = 10;
/// Default number of included transactions remembered for dedup (two full blocks).
pub const DEFAULT_RECENT_INCLUDED: usize = 2 * MAX_BLOCK_TXS;
/// Default idle time after which a sender's transactions expire: 3 hours (geth's lifetime).
pub const DEFAULT_MAX_AGE_MS: u64 = 3 * 60 * 60 * 1000;
/// Unit tests recount the whole pool after every mutation up to this many transactions plus
/// remembered included ones.
pub const FULL_CHECK_MAX_TXS: usize = 4096;
/// Otherwise debug builds recount once per this many admissions.
pub const FULL_CHECK_PERIOD: u64 = 4096;

/// The account state the pool checks transactions against (implemented by the exec state).
pub trait AccountView {
    /// The account's next nonce (0 for an unknown account).
    fn nonce(&self, address: &[u8; 20]) -> u64;
    /// The account's balance in wei (0 for an unknown account).
    fn balance(&self, address: &[u8; 20]) -> U256;
}

/// The pool's limits and admission policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MempoolConfig {
    /// The chain id transactions must be signed for.
    pub chain_id: u64,
    /// Most pooled transactions.
    pub max_txs: usize,
    /// Most raw bytes of pooled transactions.
    pub max_bytes: usize,
    /// Most pooled transactions of one sender.
    pub max_per_sender: usize,
    /// A nonce must be below `account nonce + nonce_window`.
    pub nonce_window: u64,
    /// Least max fee per gas accepted, in wei.
    pub min_gas_price: u128,
    /// Most gas one transaction may ask for.
    pub block_gas_limit: u64,
    /// A replacement must raise both fees by at least this percentage.
    pub price_bump_percent: u128,
    /// How many included transactions the dedup set remembers (0: none).
    pub recent_included: usize,
    /// A sender that sent nothing for this long has its transactions expired.
    pub max_age_ms: u64,
}

impl MempoolConfig {
    /// The default limits and policy for chain `chain_id`.
    pub fn new(chain_id: u64) -> MempoolConfig {
        MempoolConfig {
            chain_id,
            max_txs: DEFAULT_MAX_TXS,
            max_bytes: DEFAULT_MAX_BYTES,
            max_per_sender: DEFAULT_MAX_PER_SENDER,
            nonce_window: DEFAULT_NONCE_WINDOW,
            min_gas_price: DEFAULT_MIN_GAS_PRICE,
            block_gas_limit: DEFAULT_BLOCK_GAS_LIMIT,
            price_bump_percent: DEFAULT_PRICE_BUMP_PERCENT,
            recent_included: DEFAULT_RECENT_INCLUDED,
            max_age_ms: DEFAULT_MAX_AGE_MS,
        }
    }
}

/// Why a transaction was not admitted.
///
/// The `Display` text starts with the Ethereum (geth) error text where one exists, followed by
/// details; [`Refusal::eth_message`] gives the bare Ethereum text for an RPC answer.
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Larger than [`MAX_TX_BYTES`]; nothing was hashed or decoded.
    #[error("oversized data: transaction is {len} bytes, the limit is {max}")]
    Oversized {
        /// The input length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The same transaction is pooled, or was recently included in a finalized block.
    #[error("already known")]
    AlreadyKnown,
    /// Not a valid, supported, validly signed envelope (see [`TxError`]).
    #[error("invalid transaction: {0}")]
    Decode(TxError),
    /// Signed for another chain.
    #[error("invalid chain id: transaction is for chain {got}, this chain is {expected}")]
    WrongChainId {
        /// The transaction's chain id.
        got: u64,
        /// This chain's id.
        expected: u64,
    },
    /// A contract creation (`to` is empty); not supported yet.
    #[error("contract creation is not supported yet")]
    ContractCreation,
    /// Call data: a contract call; not supported yet.
    #[error(
        "contract calls are not supported yet: the transaction carries {len} bytes of call data"
    )]
    CallData {
        /// Call data length.
        len: usize,
    },
    /// EIP-1559 priority fee above the max fee.
    #[error("max priority fee per gas higher than max fee per gas: {tip} > {max_fee}")]
    TipAboveFeeCap {
        /// Max priority fee per gas.
        tip: u128,
        /// Max fee per gas.
        max_fee: u128,
    },
    /// Gas limit below the intrinsic gas of a transfer.
    #[error("intrinsic gas too low: gas limit {gas_limit}, a transfer needs {min}")]
    IntrinsicGasTooLow {
        /// The transaction's gas limit.
        gas_limit: u64,
        /// [`TRANSFER_GAS`].
        min: u64,
    },
    /// Gas limit above the block gas limit: no block could include it.
    #[error("exceeds block gas limit: gas limit {gas_limit}, block gas limit {max}")]
    ExceedsBlockGasLimit {
        /// The transaction's gas limit.
        gas_limit: u64,
        /// The block gas limit.
        max: u64,
    },
    /// Max fee per gas below the pool's minimum.
    #[error("transaction underpriced: max fee per gas {max_fee}, the pool's minimum is {min}")]
    Underpriced {
        /// The transaction's max fee per gas.
        max_fee: u128,
        /// The pool's minimum.
        min: u128,
    },
    /// Nonce already used by the account.
    #[error("nonce too low: next nonce {account_nonce}, tx nonce {nonce}")]
    NonceTooLow {
        /// The transaction's nonce.
        nonce: u64,
        /// The account's next nonce.
        account_nonce: u64,
    },
    /// Nonce too far above the account's next nonce.
    #[error(
        "nonce too high: next nonce {account_nonce}, tx nonce {nonce}, the pool accepts fewer \
         than {window} ahead"
    )]
    NonceTooHigh {
        /// The transaction's nonce.
        nonce: u64,
        /// The account's next nonce.
        account_nonce: u64,
        /// The pool's nonce window.
        window: u64,
    },
    /// The balance does not cover `value + gas_limit * max_fee_per_gas`.
    #[error("insufficient funds for gas * price + value: balance {balance}, tx cost {cost}")]
    InsufficientFunds {
        /// The sender's balance.
        balance: U256,
        /// The transaction's cost (saturated at `U256::MAX` if it overflows).
        cost: U256,
    },
    /// Same sender and nonce as a pooled transaction, without the required fee bump.
    #[error(
        "replacement transaction underpriced: needs max fee per gas >= {min_max_fee} and max \
         priority fee per gas >= {min_tip}"
    )]
    ReplacementUnderpriced {
        /// Least acceptable max fee per gas.
        min_max_fee: u128,
        /// Least acceptable max priority fee per gas.
        min_tip: u128,
    },
    /// The sender already has `max` pooled transactions and this one is not a lower nonce.
    #[error("account limit exceeded: the sender already has {max} pooled transactions")]
    SenderFull {
        /// The per-sender cap.
        max: usize,
    },
    /// The pool is full and the transaction does not outbid the cheapest evictable one.
    #[error("txpool is full: the transaction does not outbid the cheapest pooled transactions")]
    PoolFull,
}

impl Refusal {
    /// The [`IngressAck`](crate::types::network::IngressAck) status a client's batch gets for
    /// this refusal.
    pub fn ingress_status(&self) -> u8 {
        use crate::types::network::IngressAck as A;
        match self {
            Refusal::Oversized { .. } => A::REFUSED_OVERSIZED,
            Refusal::AlreadyKnown => A::REFUSED_DUPLICATE,
            Refusal::Decode(_) => A::REFUSED_INVALID,
            Refusal::WrongChainId { .. } => A::REFUSED_CHAIN_ID,
            Refusal::ContractCreation | Refusal::CallData { .. } => A::REFUSED_NOT_A_TRANSFER,
            Refusal::TipAboveFeeCap { .. }
            | Refusal::IntrinsicGasTooLow { .. }
            | Refusal::ExceedsBlockGasLimit { .. } => A::REFUSED_GAS,
            Refusal::Underpriced { .. } => A::REFUSED_UNDERPRICED,
            Refusal::NonceTooLow { .. } => A::REFUSED_NONCE_TOO_LOW,
            Refusal::NonceTooHigh { .. } => A::REFUSED_NONCE_TOO_HIGH,
            Refusal::InsufficientFunds { .. } => A::REFUSED_INSUFFICIENT_FUNDS,
            Refusal::ReplacementUnderpriced { .. } => A::REFUSED_REPLACEMENT_UNDERPRICED,
            Refusal::SenderFull { .. } => A::REFUSED_SENDER_FULL,
            Refusal::PoolFull => A::REFUSED_POOL_FULL,
        }
    }

    /// The Ethereum (geth) error text for this refusal, for a JSON-RPC answer.
    pub fn eth_message(&self) -> &'static str {
        match self {
            Refusal::Oversized { .. } => "oversized data",
            Refusal::AlreadyKnown => "already known",
            Refusal::Decode(e) => match e {
                TxError::TooLarge { .. } => "oversized data",
                TxError::UnsupportedType(_) => "transaction type not supported",
                TxError::MissingChainId => {
                    "only replay-protected (EIP-155) transactions allowed over RPC"
                }
                TxError::HighS | TxError::BadSignature(_) => "invalid sender",
                TxError::Empty
                | TxError::Malformed(_)
                | TxError::TrailingBytes { .. }
                | TxError::NonCanonical
                | TxError::InvalidSecretKey => "invalid transaction",
            },
            Refusal::WrongChainId { .. } => "invalid chain id",
            Refusal::ContractCreation => "contract creation not supported",
            Refusal::CallData { .. } => "contract calls not supported",
            Refusal::TipAboveFeeCap { .. } => {
                "max priority fee per gas higher than max fee per gas"
            }
            Refusal::IntrinsicGasTooLow { .. } => "intrinsic gas too low",
            Refusal::ExceedsBlockGasLimit { .. } => "exceeds block gas limit",
            Refusal::Underpriced { .. } => "transaction underpriced",
            Refusal::NonceTooLow { .. } => "nonce too low",
            Refusal::NonceTooHigh { .. } => "nonce too high",
            Refusal::InsufficientFunds { .. } => "insufficient funds for gas * price + value",
            Refusal::ReplacementUnderpriced { .. } => "replacement transaction underpriced",
            Refusal::SenderFull { .. } => "account limit exceeded",
            Refusal::PoolFull => "txpool is full",
        }
    }
}

/// A pooled transaction: the raw envelope and its decoded form (decoded once, at admission).
#[derive(Debug, Clone)]
pub struct PooledTx {
    raw: Vec<u8>,
    tx: DecodedTx,
    key: u64,
    seq: u64,
    arrived_ms: u64,
}

impl PooledTx {
    /// The exact EIP-2718 envelope bytes, as received.
    pub fn raw(&self) -> &[u8] {
        &self.raw
    }

    /// The decoded transaction, with its recovered sender.
    pub fn decoded(&self) -> &DecodedTx {
        &self.tx
    }

    /// The transaction hash (keccak-256 of [`PooledTx::raw`]).
    pub fn hash(&self) -> &Hash32 {
        &self.tx.hash
    }

    /// The pool's admission sequence number: unique, increasing with arrival.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// When it was admitted (the `now_ms` given to [`Mempool::admit`]).
    pub fn arrived_ms(&self) -> u64 {
        self.arrived_ms
    }
}

/// A successful admission.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admitted {
    /// The admitted transaction's hash.
    pub hash: Hash32,
    /// Its recovered sender.
    pub sender: [u8; 20],
    /// Its nonce.
    pub nonce: u64,
    /// The pooled transaction it replaced (same sender and nonce), if any.
    pub replaced: Option<Hash32>,
    /// Transactions evicted to make room for it.
    pub evicted: Vec<Hash32>,
}

/// A transaction of a finalized block, as [`Mempool::on_block_finalized`] needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Included {
    /// Transaction hash.
    pub hash: Hash32,
    /// Its sender.
    pub sender: [u8; 20],
}

impl From<&DecodedTx> for Included {
    fn from(tx: &DecodedTx) -> Included {
        Included {
            hash: tx.hash,
            sender: tx.sender,
        }
    }
}

/// What a finalization or revalidation removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned {
    /// Pooled transactions the block included.
    pub included: usize,
    /// Transactions whose nonce is now below their account's.
    pub stale: usize,
    /// Transactions whose cost the sender's balance no longer covers.
    pub unfunded: usize,
}

/// A sender's eviction rank (see the module doc); ordered cheapest, then oldest, first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct EvictKey {
    /// Lowest effective gas price among the sender's pooled transactions.
    rank: u128,
    /// Arrival sequence number of the sender's tail (highest nonce).
    seq: u64,
    sender: [u8; 20],
}

/// One sender's pooled transactions, by nonce.
#[derive(Debug)]
struct SenderQueue {
    txs: BTreeMap<u64, PooledTx>,
    /// This sender's entry in the eviction index.
    key: EvictKey,
    /// Latest admission time among its transactions.
    last_arrival_ms: u64,
}

/// The mempool. See the module doc for its rules and invariants.
#[derive(Debug)]
pub struct Mempool {
    config: MempoolConfig,
    /// The base fee eviction ranks are computed at.
    base_fee: u128,
    senders: HashMap<[u8; 20], SenderQueue>,
    by_hash: HashMap<Hash32, ([u8; 20], u64)>,
    /// Dedup keys (xxh3 of the raw bytes) of pooled and remembered included transactions,
    /// with multiplicity.
    keys: HashMap<u64, u32>,
    /// Recently included transactions, oldest first: (dedup key, hash).
    recent: VecDeque<(u64, Hash32)>,
    recent_hashes: HashSet<Hash32>,
    /// One entry per sender: its tail's eviction rank.
    eviction: BTreeSet<EvictKey>,
    count: usize,
    bytes: usize,
    next_seq: u64,
}

/// `value + gas_limit * max_fee_per_gas`, or `None` if it overflows 256 bits.
fn cost(tx: &DecodedTx) -> Option<U256> {
    U256::from(tx.gas_limit)
        .checked_mul(U256::from(tx.max_fee_per_gas))?
        .checked_add(tx.value)
}

/// Whether `balance` covers the transaction's cost.
fn affordable(tx: &DecodedTx, balance: U256) -> bool {
    cost(tx).is_some_and(|c| c <= balance)
}

/// `ceil(fee * (100 + percent) / 100)`, saturated at `u128::MAX`.
fn bumped(fee: u128, percent: u128) -> u128 {
    let scaled = U256::from(fee) * (U256::from(percent) + U256::from(100u8));
    scaled.div_ceil(U256::from(100u8)).saturating_to::<u128>()
}

/// The eviction rank of a non-empty sender queue.
fn queue_key(txs: &BTreeMap<u64, PooledTx>, sender: &[u8; 20], base_fee: u128) -> EvictKey {
    let rank = txs
        .values()
        .map(|t| t.tx.effective_gas_price(base_fee))
        .min()
        .unwrap_or(0);
    let seq = txs.last_key_value().map_or(0, |(_, t)| t.seq);
    EvictKey {
        rank,
        seq,
        sender: *sender,
    }
}

impl Mempool {
    /// An empty pool; `base_fee` is the current base fee (eviction ranks are computed at it).
    ///
    /// # Panics
    /// If `max_txs`, `max_bytes`, `max_per_sender` or `nonce_window` is zero.
    pub fn new(config: MempoolConfig, base_fee: u128) -> Mempool {
        assert!(
            config.max_txs > 0
                && config.max_bytes > 0
                && config.max_per_sender > 0
                && config.nonce_window > 0,
            "mempool limits must be positive: {config:?}"
        );
        Mempool {
            config,
            base_fee,
            senders: HashMap::new(),
            by_hash: HashMap::new(),
            keys: HashMap::new(),
            recent: VecDeque::new(),
            recent_hashes: HashSet::new(),
            eviction: BTreeSet::new(),
            count: 0,
            bytes: 0,
            next_seq: 0,
        }
    }

    /// The pool's configuration.
    pub fn config(&self) -> &MempoolConfig {
        &self.config
    }

    /// The base fee eviction ranks are computed at.
    pub fn base_fee(&self) -> u128 {
        self.base_fee
    }

    /// Pooled transactions.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether the pool is empty.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Raw bytes of the pooled transactions.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Pooled transactions of `sender`.
    pub fn sender_len(&self, sender: &[u8; 20]) -> usize {
        self.senders.get(sender).map_or(0, |q| q.txs.len())
    }

    /// The pooled transaction with this hash.
    pub fn get(&self, hash: &Hash32) -> Option<&PooledTx> {
        let (sender, nonce) = self.by_hash.get(hash)?;
        self.senders.get(sender)?.txs.get(nonce)
    }

    /// Whether a transaction with this hash is pooled.
    pub fn contains(&self, hash: &Hash32) -> bool {
        self.by_hash.contains_key(hash)
    }

    /// Sets the base fee eviction ranks are computed at (call it when the chain's base fee
    /// changes). Re-ranks every sender when it changes: O(pooled transactions).
    pub fn set_base_fee(&mut self, base_fee: u128) {
        if base_fee == self.base_fee {
            return;
        }
        self.base_fee = base_fee;
        self.eviction.clear();
        for (sender, q) in &mut self.senders {
            q.key = queue_key(&q.txs, sender, base_fee);
            self.eviction.insert(q.key);
        }
        self.check();
    }

    /// Offers a transaction envelope (checks in the order of the module doc). On success the
    /// transaction is pooled, possibly replacing a same-nonce one and evicting cheaper ones.
    pub fn admit(
        &mut self,
        bytes: &[u8],
        view: &impl AccountView,
        now_ms: u64,
    ) -> Result<Admitted, Refusal> {
        if bytes.len() > MAX_TX_BYTES {
            return Err(Refusal::Oversized {
                len: bytes.len(),
                max: MAX_TX_BYTES,
            });
        }
        let key = xxh3(bytes);
        if self.keys.contains_key(&key) {
            // A key hit may be an xxh3 collision: confirm by transaction hash.
            let hash = keccak256(bytes);
            if self.by_hash.contains_key(&hash) || self.recent_hashes.contains(&hash) {
                return Err(Refusal::AlreadyKnown);
            }
        }
        let tx = decode_transaction(bytes).map_err(Refusal::Decode)?;
        self.check_shape(&tx)?;

        let account_nonce = view.nonce(&tx.sender);
        if tx.nonce < account_nonce {
            return Err(Refusal::NonceTooLow {
                nonce: tx.nonce,
                account_nonce,
            });
        }
        if tx.nonce - account_nonce >= self.config.nonce_window {
            return Err(Refusal::NonceTooHigh {
                nonce: tx.nonce,
                account_nonce,
                window: self.config.nonce_window,
            });
        }
        let balance = view.balance(&tx.sender);
        match cost(&tx) {
            Some(c) if c <= balance => {}
            c => {
                return Err(Refusal::InsufficientFunds {
                    balance,
                    cost: c.unwrap_or(U256::MAX),
                })
            }
        }

        // Room: what the pool would hold after this admission, before any eviction.
        let queue = self.senders.get(&tx.sender);
        let mut victims: Vec<([u8; 20], u64)> = Vec::new();
        let mut count_after = self.count + 1;
        let mut bytes_after = self.bytes + bytes.len();
        let replacing = match queue.and_then(|q| q.txs.get(&tx.nonce)) {
            Some(old) => {
                let min_max_fee = bumped(old.tx.max_fee_per_gas, self.config.price_bump_percent);
                let min_tip = bumped(
                    old.tx.max_priority_fee_per_gas,
                    self.config.price_bump_percent,
                );
                if tx.max_fee_per_gas < min_max_fee || tx.max_priority_fee_per_gas < min_tip {
                    return Err(Refusal::ReplacementUnderpriced {
                        min_max_fee,
                        min_tip,
                    });
                }
                count_after -= 1;
                bytes_after -= old.raw.len();
                true
            }
            None => false,
        };
        if !replacing {
            if let Some(q) = queue.filter(|q| q.txs.len() >= self.config.max_per_sender) {
                // A full sender may trade its tail for a lower nonce (closer to executable).
                match q.txs.last_key_value() {
                    Some((&tail, old)) if tail > tx.nonce => {
                        victims.push((tx.sender, tail));
                        count_after -= 1;
                        bytes_after -= old.raw.len();
                    }
                    _ => {
                        return Err(Refusal::SenderFull {
                            max: self.config.max_per_sender,
                        })
                    }
                }
            }
        }
        let need_count = count_after.saturating_sub(self.config.max_txs);
        let need_bytes = bytes_after.saturating_sub(self.config.max_bytes);
        if need_count > 0 || need_bytes > 0 {
            if bytes.len() > self.config.max_bytes {
                return Err(Refusal::PoolFull);
            }
            // The newcomer is only as good as its cheapest pooled predecessor.
            let own = tx.effective_gas_price(self.base_fee);
            let rank = queue.map_or(own, |q| {
                q.txs
                    .range(..tx.nonce)
                    .map(|(_, t)| t.tx.effective_gas_price(self.base_fee))
                    .fold(own, u128::min)
            });
            if !self.plan_eviction(&tx.sender, rank, need_count, need_bytes, &mut victims) {
                return Err(Refusal::PoolFull);
            }
        }

        // Commit: nothing below can fail.
        let (hash, sender, nonce) = (tx.hash, tx.sender, tx.nonce);
        let replaced = if replacing {
            self.take(&sender, &[nonce]).pop().map(|t| t.tx.hash)
        } else {
            None
        };
        // In eviction order (a sender's victims are its tails, highest nonce first).
        let mut evicted = Vec::with_capacity(victims.len());
        for (victim, nonce) in &victims {
            evicted.extend(self.take(victim, &[*nonce]).iter().map(|t| t.tx.hash));
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.insert(
            PooledTx {
                raw: bytes.to_vec(),
                tx,
                key,
                seq,
                arrived_ms: now_ms,
            },
            now_ms,
        );
        self.check();
        Ok(Admitted {
            hash,
            sender,
            nonce,
            replaced,
            evicted,
        })
    }

    /// The checks that need no state: chain id, supported shape, gas limits, minimum price.
    fn check_shape(&self, tx: &DecodedTx) -> Result<(), Refusal> {
        if tx.chain_id != self.config.chain_id {
            return Err(Refusal::WrongChainId {
                got: tx.chain_id,
                expected: self.config.chain_id,
            });
        }
        if tx.to.is_none() {
            return Err(Refusal::ContractCreation);
        }
        if tx.input_len > 0 {
            return Err(Refusal::CallData { len: tx.input_len });
        }
        if tx.max_priority_fee_per_gas > tx.max_fee_per_gas {
            return Err(Refusal::TipAboveFeeCap {
                tip: tx.max_priority_fee_per_gas,
                max_fee: tx.max_fee_per_gas,
            });
        }
        if tx.gas_limit < TRANSFER_GAS {
            return Err(Refusal::IntrinsicGasTooLow {
                gas_limit: tx.gas_limit,
                min: TRANSFER_GAS,
            });
        }
        if tx.gas_limit > self.config.block_gas_limit {
            return Err(Refusal::ExceedsBlockGasLimit {
                gas_limit: tx.gas_limit,
                max: self.config.block_gas_limit,
            });
        }
        if tx.max_fee_per_gas < self.config.min_gas_price {
            return Err(Refusal::Underpriced {
                max_fee: tx.max_fee_per_gas,
                min: self.config.min_gas_price,
            });
        }
        Ok(())
    }

    /// Picks tails to evict (module doc, eviction rule) until `need_count` transactions and
    /// `need_bytes` bytes are freed, appending them to `victims`. Every victim's sender ranks
    /// strictly below `rank`; `sender`'s own transactions are never picked. Returns false (and
    /// nothing must then be evicted) if that is not enough.
    fn plan_eviction(
        &self,
        sender: &[u8; 20],
        rank: u128,
        mut need_count: usize,
        mut need_bytes: usize,
        victims: &mut Vec<([u8; 20], u64)>,
    ) -> bool {
        // Senders not yet touched come from the index in order; a touched sender comes back
        // through the heap with the rank of what would remain of it.
        let mut index = self
            .eviction
            .iter()
            .filter(|k| &k.sender != sender)
            .peekable();
        let mut touched: BinaryHeap<Reverse<EvictKey>> = BinaryHeap::new();
        let mut popped: HashMap<[u8; 20], usize> = HashMap::new();
        while need_count > 0 || need_bytes > 0 {
            let from_index = index.peek().copied().copied();
            let from_heap = touched.peek().map(|r| r.0);
            let next = match (from_index, from_heap) {
                (None, None) => return false,
                (Some(a), Some(b)) if b < a => {
                    touched.pop();
                    b
                }
                (Some(a), _) => {
                    index.next();
                    a
                }
                (None, Some(b)) => {
                    touched.pop();
                    b
                }
            };
            if next.rank >= rank {
                return false;
            }
            let Some(q) = self.senders.get(&next.sender) else {
                debug_assert!(false, "eviction index names a sender with no queue");
                return false;
            };
            let gone = popped.entry(next.sender).or_insert(0);
            let mut remaining = q.txs.iter().rev().skip(*gone);
            let Some((&nonce, tail)) = remaining.next() else {
                debug_assert!(false, "a sender came back with nothing left");
                return false;
            };
            victims.push((next.sender, nonce));
            *gone += 1;
            need_count = need_count.saturating_sub(1);
            need_bytes = need_bytes.saturating_sub(tail.raw.len());
            let mut rest = remaining.peekable();
            if let Some(&(_, new_tail)) = rest.peek() {
                let seq = new_tail.seq;
                let rank = rest
                    .map(|(_, t)| t.tx.effective_gas_price(self.base_fee))
                    .min()
                    .unwrap_or(0);
                touched.push(Reverse(EvictKey {
                    rank,
                    seq,
                    sender: next.sender,
                }));
            }
        }
        true
    }

    /// Executable transactions in block order (module doc, ordering rule) at `base_fee`.
    ///
    /// The view is read once per sender when the iterator is made; the iterator then depends
    /// on the pool only.
    pub fn ready(&self, view: &impl AccountView, base_fee: u128) -> Ready<'_> {
        let mut heap = BinaryHeap::with_capacity(self.senders.len());
        for (sender, q) in &self.senders {
            if let Some(tx) = q.txs.get(&view.nonce(sender)) {
                if let Some(head) = Head::new(tx, q, view.balance(sender), base_fee) {
                    heap.push(head);
                }
            }
        }
        Ready { heap, base_fee }
    }

    /// The transactions of the next block: [`Mempool::ready`]'s order, within `max_txs`
    /// transactions, `max_bytes` raw bytes and `max_gas` gas (summed gas limits). A transaction
    /// that does not fit is skipped with all of its sender's later nonces; the others go on.
    /// Selected transactions stay pooled until a finalized block includes them.
    pub fn select(
        &self,
        view: &impl AccountView,
        max_txs: usize,
        max_bytes: usize,
        max_gas: u64,
        base_fee: u128,
    ) -> Vec<&PooledTx> {
        let mut ready = self.ready(view, base_fee);
        let mut out = Vec::new();
        let (mut bytes, mut gas) = (0usize, 0u64);
        while out.len() < max_txs && max_gas - gas >= TRANSFER_GAS {
            let Some(head) = ready.heap.pop() else { break };
            let tx = head.tx;
            if tx.raw.len() <= max_bytes - bytes && tx.tx.gas_limit <= max_gas - gas {
                bytes += tx.raw.len();
                gas += tx.tx.gas_limit;
                out.push(tx);
                ready.push_successor(&head);
            }
        }
        out
    }

    /// A block is final: removes its transactions, then drops the now stale and unfunded
    /// transactions of every sender it touched (see the module doc on finalization). `view`
    /// is the state after the block.
    pub fn on_block_finalized(&mut self, included: &[Included], view: &impl AccountView) -> Pruned {
        let mut pruned = Pruned::default();
        let mut touched: Vec<[u8; 20]> = Vec::with_capacity(included.len());
        for inc in included {
            touched.push(inc.sender);
            if let Some(&(sender, nonce)) = self.by_hash.get(&inc.hash) {
                debug_assert_eq!(sender, inc.sender, "a hash determines its sender");
                touched.push(sender);
                for tx in self.take(&sender, &[nonce]) {
                    self.remember(tx.key, tx.tx.hash);
                    pruned.included += 1;
                }
            }
        }
        touched.sort_unstable();
        touched.dedup();
        for sender in &touched {
            self.prune_sender(sender, view, &mut pruned);
        }
        self.check();
        pruned
    }

    /// Re-checks every sender against `view` (stale nonces, balances), for a state that
    /// changed other than by finalized blocks. O(pooled transactions).
    pub fn revalidate(&mut self, view: &impl AccountView) -> Pruned {
        let mut pruned = Pruned::default();
        let mut senders: Vec<[u8; 20]> = self.senders.keys().copied().collect();
        senders.sort_unstable();
        for sender in &senders {
            self.prune_sender(sender, view, &mut pruned);
        }
        self.check();
        pruned
    }

    /// Drops every transaction of the senders that sent nothing for `max_age_ms` before
    /// `now_ms`; returns how many transactions were dropped. O(senders).
    pub fn expire(&mut self, now_ms: u64) -> usize {
        let max_age = self.config.max_age_ms;
        let mut idle: Vec<[u8; 20]> = self
            .senders
            .iter()
            .filter(|(_, q)| now_ms.saturating_sub(q.last_arrival_ms) >= max_age)
            .map(|(s, _)| *s)
            .collect();
        idle.sort_unstable();
        let mut dropped = 0;
        for sender in &idle {
            let nonces: Vec<u64> = self
                .senders
                .get(sender)
                .map(|q| q.txs.keys().copied().collect())
                .unwrap_or_default();
            dropped += self.take(sender, &nonces).len();
        }
        self.check();
        dropped
    }

    /// Drops `sender`'s transactions that are stale or unfunded under `view`.
    fn prune_sender(&mut self, sender: &[u8; 20], view: &impl AccountView, pruned: &mut Pruned) {
        let Some(q) = self.senders.get(sender) else {
            return;
        };
        let account_nonce = view.nonce(sender);
        let balance = view.balance(sender);
        let mut drop = Vec::new();
        for (&nonce, t) in &q.txs {
            if nonce < account_nonce {
                pruned.stale += 1;
                drop.push(nonce);
            } else if !affordable(&t.tx, balance) {
                pruned.unfunded += 1;
                drop.push(nonce);
            }
        }
        if !drop.is_empty() {
            self.take(sender, &drop);
        }
    }

    /// Adds a transaction whose (sender, nonce) slot is free and whose room is made.
    fn insert(&mut self, tx: PooledTx, now_ms: u64) {
        let sender = tx.tx.sender;
        let nonce = tx.tx.nonce;
        self.count += 1;
        self.bytes += tx.raw.len();
        *self.keys.entry(tx.key).or_insert(0) += 1;
        let previous = self.by_hash.insert(tx.tx.hash, (sender, nonce));
        debug_assert!(previous.is_none(), "admitted a pooled hash");
        let base_fee = self.base_fee;
        let q = self.senders.entry(sender).or_insert_with(|| SenderQueue {
            txs: BTreeMap::new(),
            key: EvictKey {
                rank: 0,
                seq: 0,
                sender,
            },
            last_arrival_ms: now_ms,
        });
        self.eviction.remove(&q.key);
        let previous = q.txs.insert(nonce, tx);
        debug_assert!(previous.is_none(), "inserted over a pooled nonce");
        q.last_arrival_ms = q.last_arrival_ms.max(now_ms);
        q.key = queue_key(&q.txs, &sender, base_fee);
        self.eviction.insert(q.key);
    }

    /// Removes `sender`'s transactions with these nonces (absent ones are ignored) and returns
    /// them. Keeps every index and counter in step.
    fn take(&mut self, sender: &[u8; 20], nonces: &[u64]) -> Vec<PooledTx> {
        let Some(q) = self.senders.get_mut(sender) else {
            return Vec::new();
        };
        let removed: Vec<PooledTx> = nonces.iter().filter_map(|n| q.txs.remove(n)).collect();
        if removed.is_empty() {
            return removed;
        }
        self.eviction.remove(&q.key);
        if q.txs.is_empty() {
            self.senders.remove(sender);
        } else {
            q.key = queue_key(&q.txs, sender, self.base_fee);
            self.eviction.insert(q.key);
        }
        for tx in &removed {
            self.count -= 1;
            self.bytes -= tx.raw.len();
            self.by_hash.remove(&tx.tx.hash);
            self.unref_key(tx.key);
        }
        removed
    }

    /// Remembers an included transaction for dedup, forgetting the oldest beyond the limit.
    fn remember(&mut self, key: u64, hash: Hash32) {
        if self.config.recent_included == 0 || !self.recent_hashes.insert(hash) {
            return;
        }
        self.recent.push_back((key, hash));
        *self.keys.entry(key).or_insert(0) += 1;
        while self.recent.len() > self.config.recent_included {
            if let Some((key, hash)) = self.recent.pop_front() {
                self.recent_hashes.remove(&hash);
                self.unref_key(key);
            }
        }
    }

    fn unref_key(&mut self, key: u64) {
        if let Some(n) = self.keys.get_mut(&key) {
            *n -= 1;
            if *n == 0 {
                self.keys.remove(&key);
            }
        } else {
            debug_assert!(false, "dedup key {key:#x} released twice");
        }
    }

    /// The invariants of the module doc: the cheap ones always, a full recount in debug builds.
    fn check(&self) {
        assert!(
            self.count <= self.config.max_txs,
            "pool over its count limit"
        );
        assert!(
            self.bytes <= self.config.max_bytes,
            "pool over its byte limit"
        );
        assert!(
            self.recent.len() <= self.config.recent_included,
            "dedup memory over its limit"
        );
        debug_assert_eq!(self.by_hash.len(), self.count);
        debug_assert_eq!(self.eviction.len(), self.senders.len());
        let small = self.count + self.recent.len() <= FULL_CHECK_MAX_TXS;
        if cfg!(debug_assertions)
            && ((cfg!(test) && small) || self.next_seq.is_multiple_of(FULL_CHECK_PERIOD))
        {
            self.recount();
        }
    }

    /// Recounts everything from the contents and compares with the counters and indexes.
    fn recount(&self) {
        let (mut count, mut bytes) = (0usize, 0usize);
        let mut keys: HashMap<u64, u32> = HashMap::new();
        assert_eq!(self.eviction.len(), self.senders.len(), "eviction index");
        for (sender, q) in &self.senders {
            assert!(!q.txs.is_empty(), "empty sender queue");
            assert!(
                q.txs.len() <= self.config.max_per_sender,
                "sender over its cap"
            );
            assert_eq!(
                q.key,
                queue_key(&q.txs, sender, self.base_fee),
                "stale rank"
            );
            assert!(
                self.eviction.contains(&q.key),
                "sender missing from the index"
            );
            for (&nonce, t) in &q.txs {
                assert_eq!((t.tx.sender, t.tx.nonce), (*sender, nonce), "misfiled tx");
                assert_eq!(self.by_hash.get(&t.tx.hash), Some(&(*sender, nonce)));
                assert_eq!(t.key, xxh3(&t.raw), "dedup key");
                assert_eq!(t.tx.encoded_len, t.raw.len());
                count += 1;
                bytes += t.raw.len();
                *keys.entry(t.key).or_insert(0) += 1;
            }
        }
        assert_eq!(count, self.count, "count accounting");
        assert_eq!(bytes, self.bytes, "byte accounting");
        assert_eq!(self.by_hash.len(), count, "hash index");
        assert_eq!(self.recent.len(), self.recent_hashes.len(), "recent set");
        for (key, hash) in &self.recent {
            assert!(self.recent_hashes.contains(hash), "recent set");
            *keys.entry(*key).or_insert(0) += 1;
        }
        assert_eq!(keys, self.keys, "dedup keys");
    }
}

/// The head of a sender's executable run, in the block-order heap.
#[derive(Debug)]
struct Head<'a> {
    price: u128,
    tx: &'a PooledTx,
    queue: &'a SenderQueue,
    balance: U256,
}

impl<'a> Head<'a> {
    /// `tx` as a head, if it is includable at `base_fee` with `balance`.
    fn new(
        tx: &'a PooledTx,
        queue: &'a SenderQueue,
        balance: U256,
        base_fee: u128,
    ) -> Option<Head<'a>> {
        (tx.tx.max_fee_per_gas >= base_fee && affordable(&tx.tx, balance)).then(|| Head {
            price: tx.tx.effective_gas_price(base_fee),
            tx,
            queue,
            balance,
        })
    }

    /// Heap order: higher price first, then earlier arrival.
    fn order(&self) -> (u128, Reverse<u64>) {
        (self.price, Reverse(self.tx.seq))
    }
}

impl PartialEq for Head<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.order() == other.order()
    }
}

impl Eq for Head<'_> {}

impl PartialOrd for Head<'_> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Head<'_> {
    fn cmp(&self, other: &Self) -> Ordering {
        self.order().cmp(&other.order())
    }
}

/// Iterator over the executable transactions in block order; see [`Mempool::ready`].
#[derive(Debug)]
pub struct Ready<'a> {
    heap: BinaryHeap<Head<'a>>,
    base_fee: u128,
}

impl<'a> Ready<'a> {
    /// Makes the sender's next nonce after `head` a head, if it is pooled and includable.
    fn push_successor(&mut self, head: &Head<'a>) {
        let next = head
            .tx
            .tx
            .nonce
            .checked_add(1)
            .and_then(|n| head.queue.txs.get(&n));
        if let Some(tx) = next {
            if let Some(h) = Head::new(tx, head.queue, head.balance, self.base_fee) {
                self.heap.push(h);
            }
        }
    }
}

impl<'a> Iterator for Ready<'a> {
    type Item = &'a PooledTx;

    fn next(&mut self) -> Option<&'a PooledTx> {
        let head = self.heap.pop()?;
        self.push_successor(&head);
        Some(head.tx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::genesis::test_account_secret;
    use crate::crypto::tx::{address_of_secret, sign_transfer, Transfer, TxType};
    use alloy_consensus::{SignableTransaction, TxEip1559, TxEnvelope};
    use alloy_eips::eip2718::Encodable2718;
    use alloy_primitives::{Bytes, Signature, TxKind};
    use proptest::prelude::*;

    const CHAIN: u64 = 1001;
    const GWEI: u128 = 1_000_000_000;
    const RICH: u128 = 1_000_000_000_000_000_000_000; // 1000 ether

    /// An account state for tests: unknown accounts have nonce 0 and no balance.
    #[derive(Debug, Clone, Default)]
    struct State(HashMap<[u8; 20], (u64, U256)>);

    impl AccountView for State {
        fn nonce(&self, a: &[u8; 20]) -> u64 {
            self.0.get(a).map_or(0, |x| x.0)
        }
        fn balance(&self, a: &[u8; 20]) -> U256 {
            self.0.get(a).map_or(U256::ZERO, |x| x.1)
        }
    }

    impl State {
        /// Accounts `0..n` with nonce 0 and 1000 ether.
        fn funded(n: u64) -> State {
            State((0..n).map(|i| (addr(i), (0, U256::from(RICH)))).collect())
        }
        fn set_nonce(&mut self, i: u64, nonce: u64) {
            self.0.entry(addr(i)).or_insert((0, U256::ZERO)).0 = nonce;
        }
        fn set_balance(&mut self, i: u64, balance: U256) {
            self.0.entry(addr(i)).or_insert((0, U256::ZERO)).1 = balance;
        }
    }

    fn addr(i: u64) -> [u8; 20] {
        address_of_secret(&test_account_secret(i)).expect("test secrets are valid")
    }

    /// A transfer to sign: EIP-1559, 21000 gas, value 1, fee = tip = 10 gwei by default.
    #[derive(Debug, Clone)]
    struct T {
        account: u64,
        ty: TxType,
        transfer: Transfer,
    }

    fn t(account: u64, nonce: u64) -> T {
        T {
            account,
            ty: TxType::Eip1559,
            transfer: Transfer {
                chain_id: CHAIN,
                nonce,
                to: [0xee; 20],
                value: U256::from(1u8),
                gas_limit: TRANSFER_GAS,
                max_fee_per_gas: 10 * GWEI,
                max_priority_fee_per_gas: 10 * GWEI,
            },
        }
    }

    impl T {
        /// Max fee and tip both `price` (so the effective price is `price` at base fee 0).
        fn price(mut self, price: u128) -> T {
            self.transfer.max_fee_per_gas = price;
            self.transfer.max_priority_fee_per_gas = price;
            self
        }
        fn fees(mut self, max_fee: u128, tip: u128) -> T {
            self.transfer.max_fee_per_gas = max_fee;
            self.transfer.max_priority_fee_per_gas = tip;
            self
        }
        fn gas(mut self, gas: u64) -> T {
            self.transfer.gas_limit = gas;
            self
        }
        fn value(mut self, value: U256) -> T {
            self.transfer.value = value;
            self
        }
        fn chain(mut self, chain_id: u64) -> T {
            self.transfer.chain_id = chain_id;
            self
        }
        fn ty(mut self, ty: TxType) -> T {
            self.ty = ty;
            self
        }
        fn sign(&self) -> Vec<u8> {
            sign_transfer(&test_account_secret(self.account), self.ty, &self.transfer)
                .expect("test secrets are valid")
        }
        fn hash(&self) -> Hash32 {
            keccak256(&self.sign())
        }
        fn cost(&self) -> U256 {
            U256::from(self.transfer.gas_limit) * U256::from(self.transfer.max_fee_per_gas)
                + self.transfer.value
        }
    }

    /// Signs an arbitrary EIP-1559 transaction (sign_transfer only makes transfers).
    fn sign_custom(account: u64, tx: TxEip1559) -> Vec<u8> {
        let key = secp256k1::SecretKey::from_byte_array(&test_account_secret(account)).unwrap();
        let digest = secp256k1::Message::from_digest(tx.signature_hash().0);
        let (id, compact) = secp256k1::SECP256K1
            .sign_ecdsa_recoverable(&digest, &key)
            .serialize_compact();
        let signature = Signature::new(
            U256::from_be_slice(&compact[..32]),
            U256::from_be_slice(&compact[32..]),
            i32::from(id) == 1,
        );
        TxEnvelope::Eip1559(tx.into_signed(signature)).encoded_2718()
    }

    fn custom_1559() -> TxEip1559 {
        TxEip1559 {
            chain_id: CHAIN,
            nonce: 0,
            gas_limit: TRANSFER_GAS,
            max_fee_per_gas: 10 * GWEI,
            max_priority_fee_per_gas: 10 * GWEI,
            to: TxKind::Call([0xee; 20].into()),
            value: U256::from(1u8),
            access_list: Default::default(),
            input: Bytes::new(),
        }
    }

    /// Defaults, except a 1 gwei minimum price.
    fn config() -> MempoolConfig {
        MempoolConfig {
            min_gas_price: GWEI,
            ..MempoolConfig::new(CHAIN)
        }
    }

    fn pool() -> Mempool {
        Mempool::new(config(), 0)
    }

    fn small_pool(max_txs: usize) -> Mempool {
        Mempool::new(
            MempoolConfig {
                max_txs,
                ..config()
            },
            0,
        )
    }

    fn admit(pool: &mut Mempool, state: &State, tx: &T) -> Result<Admitted, Refusal> {
        pool.admit(&tx.sign(), state, 0)
    }

    fn hashes(txs: &[&PooledTx]) -> Vec<Hash32> {
        txs.iter().map(|t| *t.hash()).collect()
    }

    // ---- One test per refusal reason -------------------------------------------------------

    #[test]
    fn refuses_oversized() {
        let mut pool = pool();
        let state = State::funded(1);
        let blob = vec![0xf8; MAX_TX_BYTES + 1];
        assert_eq!(
            pool.admit(&blob, &state, 0),
            Err(Refusal::Oversized {
                len: MAX_TX_BYTES + 1,
                max: MAX_TX_BYTES
            })
        );
        assert!(pool.is_empty());
    }

    #[test]
    fn refuses_undecodable() {
        let mut pool = pool();
        let state = State::funded(1);
        let good = t(0, 0).sign();
        for bad in [&[][..], &[0x02], &good[..good.len() - 1], &[0x80, 0x01]] {
            assert!(
                matches!(pool.admit(bad, &state, 0), Err(Refusal::Decode(_))),
                "{bad:?}"
            );
        }
        assert_eq!(
            pool.admit(&[0x03, 0xc0], &state, 0),
            Err(Refusal::Decode(TxError::UnsupportedType(3)))
        );
        assert!(pool.is_empty());
    }

    #[test]
    fn refuses_bad_signature() {
        let mut pool = pool();
        let state = State::funded(1);
        // r = 0: no public key can be recovered.
        let tx = custom_1559().into_signed(Signature::new(U256::ZERO, U256::from(1u8), false));
        let bytes = TxEnvelope::Eip1559(tx).encoded_2718();
        let refusal = pool.admit(&bytes, &state, 0).unwrap_err();
        assert!(
            matches!(refusal, Refusal::Decode(TxError::BadSignature(_))),
            "{refusal:?}"
        );
        assert_eq!(refusal.eth_message(), "invalid sender");
    }

    #[test]
    fn refuses_wrong_chain_id() {
        let mut pool = pool();
        let state = State::funded(1);
        assert_eq!(
            admit(&mut pool, &state, &t(0, 0).chain(1)),
            Err(Refusal::WrongChainId {
                got: 1,
                expected: CHAIN
            })
        );
        assert!(admit(&mut pool, &state, &t(0, 0)).is_ok());
    }

    #[test]
    fn refuses_contract_creation() {
        let mut pool = pool();
        let state = State::funded(1);
        let create = sign_custom(
            0,
            TxEip1559 {
                to: TxKind::Create,
                ..custom_1559()
            },
        );
        assert_eq!(
            pool.admit(&create, &state, 0),
            Err(Refusal::ContractCreation)
        );
        // The same transaction as a transfer is fine.
        assert!(pool
            .admit(&sign_custom(0, custom_1559()), &state, 0)
            .is_ok());
    }

    #[test]
    fn refuses_call_data() {
        let mut pool = pool();
        let state = State::funded(1);
        let call = sign_custom(
            0,
            TxEip1559 {
                input: Bytes::from(vec![0xa9, 0x05, 0x9c, 0xbb]),
                ..custom_1559()
            },
        );
        assert_eq!(
            pool.admit(&call, &state, 0),
            Err(Refusal::CallData { len: 4 })
        );
    }

    #[test]
    fn refuses_tip_above_fee_cap() {
        let mut pool = pool();
        let state = State::funded(1);
        assert_eq!(
            admit(&mut pool, &state, &t(0, 0).fees(10 * GWEI, 10 * GWEI + 1)),
            Err(Refusal::TipAboveFeeCap {
                tip: 10 * GWEI + 1,
                max_fee: 10 * GWEI
            })
        );
        assert!(admit(&mut pool, &state, &t(0, 0).fees(10 * GWEI, 10 * GWEI)).is_ok());
    }

    #[test]
    fn refuses_intrinsic_gas_too_low() {
        let mut pool = pool();
        let state = State::funded(1);
        assert_eq!(
            admit(&mut pool, &state, &t(0, 0).gas(TRANSFER_GAS - 1)),
            Err(Refusal::IntrinsicGasTooLow {
                gas_limit: TRANSFER_GAS - 1,
                min: TRANSFER_GAS
            })
        );
        assert!(admit(&mut pool, &state, &t(0, 0).gas(TRANSFER_GAS)).is_ok());
    }

    #[test]
    fn refuses_gas_above_block_gas_limit() {
        let mut pool = Mempool::new(
            MempoolConfig {
                block_gas_limit: 100_000,
                ..config()
            },
            0,
        );
        let state = State::funded(1);
        let refusal = admit(&mut pool, &state, &t(0, 0).gas(100_001)).unwrap_err();
        assert_eq!(
            refusal,
            Refusal::ExceedsBlockGasLimit {
                gas_limit: 100_001,
                max: 100_000
            }
        );
        assert_eq!(refusal.eth_message(), "exceeds block gas limit");
        assert!(admit(&mut pool, &state, &t(0, 0).gas(100_000)).is_ok());
    }

    #[test]
    fn refuses_underpriced() {
        let mut pool = pool();
        let state = State::funded(1);
        for ty in [TxType::Legacy, TxType::Eip2930, TxType::Eip1559] {
            assert_eq!(
                admit(&mut pool, &state, &t(0, 0).ty(ty).price(GWEI - 1)),
                Err(Refusal::Underpriced {
                    max_fee: GWEI - 1,
                    min: GWEI
                })
            );
        }
        assert!(admit(&mut pool, &state, &t(0, 0).price(GWEI)).is_ok());
    }

    #[test]
    fn refuses_a_pooled_duplicate() {
        let mut pool = pool();
        let state = State::funded(1);
        let tx = t(0, 0);
        assert!(admit(&mut pool, &state, &tx).is_ok());
        let refusal = admit(&mut pool, &state, &tx).unwrap_err();
        assert_eq!(refusal, Refusal::AlreadyKnown);
        assert_eq!(refusal.eth_message(), "already known");
        assert_eq!(pool.len(), 1);
    }

    #[test]
    fn refuses_a_recently_included_transaction_as_already_known() {
        let mut pool = pool();
        let mut state = State::funded(1);
        let tx = t(0, 0);
        let bytes = tx.sign();
        let admitted = pool.admit(&bytes, &state, 0).unwrap();
        state.set_nonce(0, 1);
        let pruned = pool.on_block_finalized(
            &[Included {
                hash: admitted.hash,
                sender: admitted.sender,
            }],
            &state,
        );
        assert_eq!(pruned.included, 1);
        assert!(pool.is_empty());
        // Re-gossip after inclusion: known, refused before any decoding.
        assert_eq!(pool.admit(&bytes, &state, 0), Err(Refusal::AlreadyKnown));
        // The memory is bounded: with none kept, the same bytes are only "nonce too low".
        let mut forgetful = Mempool::new(
            MempoolConfig {
                recent_included: 0,
                ..config()
            },
            0,
        );
        let fresh = State::funded(1);
        forgetful.admit(&bytes, &fresh, 0).unwrap();
        forgetful.on_block_finalized(
            &[Included::from(&decode_transaction(&bytes).unwrap())],
            &state,
        );
        assert!(matches!(
            forgetful.admit(&bytes, &state, 0),
            Err(Refusal::NonceTooLow { .. })
        ));
    }

    #[test]
    fn an_xxh3_collision_is_not_a_duplicate() {
        let mut pool = pool();
        let state = State::funded(1);
        let bytes = t(0, 0).sign();
        // Pretend another transaction with the same xxh3 key is known.
        pool.keys.insert(xxh3(&bytes), 1);
        pool.recent.push_back((xxh3(&bytes), [0x55; 32]));
        pool.recent_hashes.insert([0x55; 32]);
        pool.config.recent_included = 1;
        assert!(pool.admit(&bytes, &state, 0).is_ok());
        assert_eq!(pool.keys[&xxh3(&bytes)], 2);
    }

    #[test]
    fn refuses_nonce_too_low() {
        let mut pool = pool();
        let mut state = State::funded(1);
        state.set_nonce(0, 5);
        assert_eq!(
            admit(&mut pool, &state, &t(0, 4)),
            Err(Refusal::NonceTooLow {
                nonce: 4,
                account_nonce: 5
            })
        );
        assert!(admit(&mut pool, &state, &t(0, 5)).is_ok());
    }

    #[test]
    fn refuses_nonce_beyond_the_window() {
        let mut pool = pool();
        let mut state = State::funded(1);
        state.set_nonce(0, 3);
        let window = DEFAULT_NONCE_WINDOW;
        assert_eq!(
            admit(&mut pool, &state, &t(0, 3 + window)),
            Err(Refusal::NonceTooHigh {
                nonce: 3 + window,
                account_nonce: 3,
                window
            })
        );
        assert!(admit(&mut pool, &state, &t(0, 3 + window - 1)).is_ok());
    }

    #[test]
    fn refuses_insufficient_funds() {
        let mut pool = pool();
        let mut state = State::default();
        let tx = t(0, 0).value(U256::from(1_000_000u64));
        state.set_balance(0, tx.cost() - U256::from(1u8));
        assert_eq!(
            admit(&mut pool, &state, &tx),
            Err(Refusal::InsufficientFunds {
                balance: tx.cost() - U256::from(1u8),
                cost: tx.cost()
            })
        );
        // An overflowing cost is refused, whatever the balance.
        state.set_balance(0, U256::MAX);
        let huge = t(0, 0).value(U256::MAX);
        assert_eq!(
            admit(&mut pool, &state, &huge),
            Err(Refusal::InsufficientFunds {
                balance: U256::MAX,
                cost: U256::MAX
            })
        );
        // Exactly enough is enough.
        state.set_balance(0, tx.cost());
        assert!(admit(&mut pool, &state, &tx).is_ok());
    }

    #[test]
    fn replacement_needs_a_ten_percent_bump_of_both_fees() {
        let mut pool = pool();
        let state = State::funded(1);
        let old = t(0, 0).fees(100 * GWEI, 10 * GWEI);
        let first = admit(&mut pool, &state, &old).unwrap();
        let expected = Refusal::ReplacementUnderpriced {
            min_max_fee: 110 * GWEI,
            min_tip: 11 * GWEI,
        };
        // 9% more on both, or 10% on only one of them: refused.
        for (fee, tip) in [
            (109 * GWEI, 11 * GWEI - GWEI / 10),
            (110 * GWEI - 1, 11 * GWEI),
            (110 * GWEI, 11 * GWEI - 1),
            (200 * GWEI, 10 * GWEI),
        ] {
            let refusal = admit(&mut pool, &state, &t(0, 0).fees(fee, tip)).unwrap_err();
            assert_eq!(refusal, expected, "fee {fee}, tip {tip}");
            assert_eq!(refusal.eth_message(), "replacement transaction underpriced");
        }
        // Same fees, different value: a different transaction, still no bump.
        assert_eq!(
            admit(&mut pool, &state, &old.clone().value(U256::from(2u8))),
            Err(expected)
        );
        assert!(pool.contains(&first.hash));
        // Exactly 10% on both: replaces.
        let new = t(0, 0).fees(110 * GWEI, 11 * GWEI);
        let second = admit(&mut pool, &state, &new).unwrap();
        assert_eq!(second.replaced, Some(first.hash));
        assert!(!pool.contains(&first.hash));
        assert_eq!(pool.len(), 1);
        assert_eq!(
            pool.get(&second.hash).unwrap().decoded().max_fee_per_gas,
            110 * GWEI
        );
        // The bump rounds up: a 1 wei tip needs 2.
        let mut cheap = Mempool::new(
            MempoolConfig {
                min_gas_price: 1,
                ..config()
            },
            0,
        );
        cheap
            .admit(&t(0, 0).fees(100, 1).sign(), &state, 0)
            .unwrap();
        assert!(cheap
            .admit(&t(0, 0).fees(200, 1).sign(), &state, 0)
            .is_err());
        assert!(cheap.admit(&t(0, 0).fees(200, 2).sign(), &state, 0).is_ok());
    }

    #[test]
    fn refuses_a_sender_over_its_cap() {
        let mut pool = Mempool::new(
            MempoolConfig {
                max_per_sender: 2,
                ..config()
            },
            0,
        );
        let state = State::funded(2);
        admit(&mut pool, &state, &t(0, 0)).unwrap();
        admit(&mut pool, &state, &t(0, 1)).unwrap();
        assert_eq!(
            admit(&mut pool, &state, &t(0, 2)),
            Err(Refusal::SenderFull { max: 2 })
        );
        // A replacement needs no room; other senders are not affected.
        assert!(admit(&mut pool, &state, &t(0, 1).price(20 * GWEI)).is_ok());
        assert!(admit(&mut pool, &state, &t(1, 0)).is_ok());
        assert_eq!(pool.sender_len(&addr(0)), 2);
    }

    #[test]
    fn a_sender_at_its_cap_may_fill_a_gap_below_its_tail() {
        let mut pool = Mempool::new(
            MempoolConfig {
                max_per_sender: 2,
                ..config()
            },
            0,
        );
        let state = State::funded(1);
        admit(&mut pool, &state, &t(0, 1)).unwrap();
        let tail = admit(&mut pool, &state, &t(0, 2)).unwrap();
        // Nonce 0 is what the sender needs: its tail (nonce 2) makes room.
        let head = admit(&mut pool, &state, &t(0, 0)).unwrap();
        assert_eq!(head.evicted, vec![tail.hash]);
        let order: Vec<u64> = pool.ready(&state, 0).map(|t| t.decoded().nonce).collect();
        assert_eq!(order, vec![0, 1]);
    }

    #[test]
    fn a_full_pool_refuses_what_does_not_outbid_the_cheapest() {
        let mut pool = small_pool(2);
        let state = State::funded(3);
        admit(&mut pool, &state, &t(0, 0).price(5 * GWEI)).unwrap();
        admit(&mut pool, &state, &t(1, 0).price(3 * GWEI)).unwrap();
        for price in [2 * GWEI, 3 * GWEI] {
            let refusal = admit(&mut pool, &state, &t(2, 0).price(price)).unwrap_err();
            assert_eq!(refusal, Refusal::PoolFull);
            assert_eq!(refusal.eth_message(), "txpool is full");
        }
        assert_eq!(pool.len(), 2);
        let admitted = admit(&mut pool, &state, &t(2, 0).price(3 * GWEI + 1)).unwrap();
        assert_eq!(admitted.evicted, vec![t(1, 0).price(3 * GWEI).hash()]);
        // A transaction bigger than the whole byte limit never fits.
        let mut tiny = Mempool::new(
            MempoolConfig {
                max_bytes: 50,
                ..config()
            },
            0,
        );
        assert_eq!(admit(&mut tiny, &state, &t(0, 0)), Err(Refusal::PoolFull));
    }

    // ---- Eviction ----------------------------------------------------------------------------

    #[test]
    fn eviction_takes_the_cheapest_then_the_oldest() {
        let mut pool = small_pool(3);
        let state = State::funded(6);
        let a = admit(&mut pool, &state, &t(0, 0).price(5 * GWEI)).unwrap();
        let b = admit(&mut pool, &state, &t(1, 0).price(3 * GWEI)).unwrap();
        let c = admit(&mut pool, &state, &t(2, 0).price(3 * GWEI)).unwrap();
        // 4 beats 3: the older of the two 3s goes first.
        let d = admit(&mut pool, &state, &t(3, 0).price(4 * GWEI)).unwrap();
        assert_eq!(d.evicted, vec![b.hash]);
        let e = admit(&mut pool, &state, &t(4, 0).price(4 * GWEI)).unwrap();
        assert_eq!(e.evicted, vec![c.hash]);
        // Now 5, 4, 4: a 4 cannot get in, a 6 evicts the older 4.
        assert_eq!(
            admit(&mut pool, &state, &t(5, 0).price(4 * GWEI)),
            Err(Refusal::PoolFull)
        );
        let f = admit(&mut pool, &state, &t(5, 0).price(6 * GWEI)).unwrap();
        assert_eq!(f.evicted, vec![d.hash]);
        for h in [a.hash, e.hash, f.hash] {
            assert!(pool.contains(&h));
        }
        assert_eq!(pool.len(), 3);
    }

    #[test]
    fn eviction_ranks_a_sender_by_its_cheapest_and_takes_tails_only() {
        let mut pool = small_pool(3);
        let state = State::funded(4);
        // Sender 0: a cheap head gating a well-paid tail; sender 1 pays 50.
        let head = admit(&mut pool, &state, &t(0, 0).price(GWEI)).unwrap();
        let tail = admit(&mut pool, &state, &t(0, 1).price(100 * GWEI)).unwrap();
        let mid = admit(&mut pool, &state, &t(1, 0).price(50 * GWEI)).unwrap();
        // 60 beats sender 0's rank (1): its tail goes, never its head (no gap).
        let x = admit(&mut pool, &state, &t(2, 0).price(60 * GWEI)).unwrap();
        assert_eq!(x.evicted, vec![tail.hash]);
        let y = admit(&mut pool, &state, &t(3, 0).price(2 * GWEI)).unwrap();
        assert_eq!(y.evicted, vec![head.hash]);
        assert!(pool.contains(&mid.hash));
        // A newcomer behind its own cheap predecessor ranks as that predecessor.
        let mut pool = small_pool(2);
        admit(&mut pool, &state, &t(0, 0).price(GWEI)).unwrap();
        admit(&mut pool, &state, &t(1, 0).price(5 * GWEI)).unwrap();
        assert_eq!(
            admit(&mut pool, &state, &t(0, 1).price(100 * GWEI)),
            Err(Refusal::PoolFull)
        );
    }

    #[test]
    fn eviction_frees_enough_bytes_for_a_bigger_transaction() {
        let state = State::funded(4);
        let small: Vec<T> = (0..3).map(|i| t(i, 0).price(10 * GWEI)).collect();
        let small_len: usize = small.iter().map(|s| s.sign().len()).sum();
        let big = t(3, 0).price(20 * GWEI).value(U256::from(1u8) << 200);
        let big_len = big.sign().len();
        assert!(big_len > small[0].sign().len() + 20);
        let mut pool = Mempool::new(
            MempoolConfig {
                max_bytes: small_len,
                ..config()
            },
            0,
        );
        for s in &small {
            admit(&mut pool, &state, s).unwrap();
        }
        let mut balance_state = state.clone();
        balance_state.set_balance(3, big.cost());
        let admitted = admit(&mut pool, &balance_state, &big).unwrap();
        // The two oldest small ones go; the pool stays within its byte limit.
        assert_eq!(admitted.evicted, vec![small[0].hash(), small[1].hash()]);
        assert_eq!(pool.len(), 2);
        assert!(pool.bytes() <= small_len);
    }

    #[test]
    fn eviction_ranks_follow_the_base_fee() {
        let state = State::funded(3);
        let legacy = t(0, 0).ty(TxType::Legacy).price(100 * GWEI);
        let dynamic = t(1, 0).fees(200 * GWEI, GWEI);
        let newcomer = t(2, 0).ty(TxType::Legacy).price(120 * GWEI);
        // At base fee 0 the EIP-1559 one pays 1 gwei: it is the cheapest.
        let mut pool = small_pool(2);
        admit(&mut pool, &state, &legacy).unwrap();
        admit(&mut pool, &state, &dynamic).unwrap();
        let a = admit(&mut pool, &state, &newcomer).unwrap();
        assert_eq!(a.evicted, vec![dynamic.hash()]);
        // At base fee 150 it pays 151: the legacy one (100) is the cheapest.
        let mut pool = small_pool(2);
        admit(&mut pool, &state, &legacy).unwrap();
        admit(&mut pool, &state, &dynamic).unwrap();
        pool.set_base_fee(150 * GWEI);
        let b = admit(&mut pool, &state, &newcomer).unwrap();
        assert_eq!(b.evicted, vec![legacy.hash()]);
    }

    // ---- Ordering, block building, finalization -----------------------------------------------

    #[test]
    fn a_nonce_gap_waits_until_it_is_filled() {
        let mut pool = pool();
        let state = State::funded(1);
        let later = admit(&mut pool, &state, &t(0, 1)).unwrap();
        assert_eq!(pool.ready(&state, 0).count(), 0);
        assert!(pool.select(&state, 100, usize::MAX, u64::MAX, 0).is_empty());
        let first = admit(&mut pool, &state, &t(0, 0)).unwrap();
        let order: Vec<Hash32> = pool.ready(&state, 0).map(|t| *t.hash()).collect();
        assert_eq!(order, vec![first.hash, later.hash]);
        // A later gap stops the run: nonce 3 waits for 2.
        admit(&mut pool, &state, &t(0, 3)).unwrap();
        assert_eq!(pool.ready(&state, 0).count(), 2);
    }

    /// Pool with: A = (nonce 0 at 10, nonce 1 at 100), B = 20, C = 20 (after B), in that
    /// arrival order.
    fn select_fixture() -> (Mempool, State, [Hash32; 4]) {
        let mut pool = pool();
        let state = State::funded(4);
        let a0 = admit(&mut pool, &state, &t(0, 0).price(10 * GWEI))
            .unwrap()
            .hash;
        let a1 = admit(&mut pool, &state, &t(0, 1).price(100 * GWEI))
            .unwrap()
            .hash;
        let b0 = admit(&mut pool, &state, &t(1, 0).price(20 * GWEI))
            .unwrap()
            .hash;
        let c0 = admit(&mut pool, &state, &t(2, 0).price(20 * GWEI))
            .unwrap()
            .hash;
        (pool, state, [a0, a1, b0, c0])
    }

    #[test]
    fn select_orders_by_price_then_arrival_and_nonce() {
        let (pool, state, [a0, a1, b0, c0]) = select_fixture();
        let all = pool.select(&state, 100, usize::MAX, u64::MAX, 0);
        // B and C tie at 20: B arrived first. A's well-paid nonce 1 waits for its nonce 0.
        assert_eq!(hashes(&all), vec![b0, c0, a0, a1]);
        let ready: Vec<Hash32> = pool.ready(&state, 0).map(|t| *t.hash()).collect();
        assert_eq!(ready, hashes(&all));
        // Raw bytes and decoded form come together.
        assert_eq!(keccak256(all[0].raw()), all[0].decoded().hash);
        // An account whose nonce moved on starts at its new nonce.
        let mut moved = state.clone();
        moved.set_nonce(0, 1);
        let order = hashes(&pool.select(&moved, 100, usize::MAX, u64::MAX, 0));
        assert_eq!(order, vec![a1, b0, c0]);
    }

    #[test]
    fn select_respects_its_limits() {
        let (mut pool, mut state, [a0, a1, b0, c0]) = select_fixture();
        let len = |h: &Hash32| pool.get(h).unwrap().raw().len();
        assert_eq!(
            hashes(&pool.select(&state, 2, usize::MAX, u64::MAX, 0)),
            vec![b0, c0]
        );
        assert_eq!(
            hashes(&pool.select(&state, 100, usize::MAX, 3 * TRANSFER_GAS, 0)),
            vec![b0, c0, a0]
        );
        // A0 does not fit in the bytes left: A is skipped (A1 would fit but waits for A0).
        let bytes = len(&b0) + len(&c0) + len(&a0) - 1;
        assert_eq!(
            hashes(&pool.select(&state, 100, bytes, u64::MAX, 0)),
            vec![b0, c0]
        );
        // Base fee 15: A0 (max fee 10) is not includable, so neither is A1.
        assert_eq!(
            hashes(&pool.select(&state, 100, usize::MAX, u64::MAX, 15 * GWEI)),
            vec![b0, c0]
        );
        // A sender whose balance no longer covers its head is skipped.
        state.set_balance(1, U256::from(1u8));
        assert_eq!(
            hashes(&pool.select(&state, 100, usize::MAX, u64::MAX, 0)),
            vec![c0, a0, a1]
        );
        state.set_balance(1, U256::from(RICH));
        // A big gas limit that does not fit is skipped, the rest goes on; the loop stops
        // once less than a transfer's gas is left.
        let d0 = admit(&mut pool, &state, &t(3, 0).price(30 * GWEI).gas(50_000))
            .unwrap()
            .hash;
        assert_eq!(
            hashes(&pool.select(&state, 100, usize::MAX, 60_000, 0)),
            vec![d0]
        );
        assert_eq!(
            hashes(&pool.select(&state, 100, usize::MAX, 45_000, 0)),
            vec![b0, c0]
        );
        assert!(pool.select(&state, 0, usize::MAX, u64::MAX, 0).is_empty());
    }

    #[test]
    fn finalization_removes_included_and_stale_transactions() {
        let mut pool = pool();
        let mut state = State::funded(3);
        let a: Vec<Hash32> = (0..3)
            .map(|n| admit(&mut pool, &state, &t(0, n)).unwrap().hash)
            .collect();
        let b0 = admit(&mut pool, &state, &t(1, 0)).unwrap().hash;
        let c0 = admit(&mut pool, &state, &t(2, 0)).unwrap().hash;
        // The block holds A0, A1 and another version of B's nonce 0 that we never saw.
        state.set_nonce(0, 2);
        state.set_nonce(1, 1);
        // C's nonce moved too, but C is not in the block: checked only by revalidate.
        state.set_nonce(2, 1);
        let block = [
            Included {
                hash: a[0],
                sender: addr(0),
            },
            Included {
                hash: a[1],
                sender: addr(0),
            },
            Included {
                hash: [0x42; 32],
                sender: addr(1),
            },
        ];
        let pruned = pool.on_block_finalized(&block, &state);
        assert_eq!(
            pruned,
            Pruned {
                included: 2,
                stale: 1,
                unfunded: 0
            }
        );
        assert!(!pool.contains(&a[0]) && !pool.contains(&a[1]) && !pool.contains(&b0));
        assert!(pool.contains(&a[2]) && pool.contains(&c0));
        assert_eq!(pool.len(), 2);
        assert_eq!(
            pool.revalidate(&state),
            Pruned {
                included: 0,
                stale: 1,
                unfunded: 0
            }
        );
        assert_eq!(
            hashes(&pool.select(&state, 100, usize::MAX, u64::MAX, 0)),
            vec![a[2]]
        );
    }

    #[test]
    fn finalization_drops_what_the_balance_no_longer_covers() {
        let mut pool = pool();
        let mut state = State::funded(1);
        let cheap = t(0, 1);
        let dear = t(0, 2).value(U256::from(RICH / 2));
        let h0 = admit(&mut pool, &state, &t(0, 0)).unwrap().hash;
        admit(&mut pool, &state, &cheap).unwrap();
        let dear_hash = admit(&mut pool, &state, &dear).unwrap().hash;
        state.set_nonce(0, 1);
        state.set_balance(0, dear.cost() - U256::from(1u8));
        let pruned = pool.on_block_finalized(
            &[Included {
                hash: h0,
                sender: addr(0),
            }],
            &state,
        );
        assert_eq!(pruned.unfunded, 1);
        assert!(!pool.contains(&dear_hash));
        assert!(pool.contains(&cheap.hash()));
    }

    #[test]
    fn idle_senders_expire() {
        let mut pool = Mempool::new(
            MempoolConfig {
                max_age_ms: 5_000,
                ..config()
            },
            0,
        );
        let state = State::funded(2);
        pool.admit(&t(0, 0).sign(), &state, 0).unwrap();
        pool.admit(&t(1, 0).sign(), &state, 1_000).unwrap();
        pool.admit(&t(0, 1).sign(), &state, 2_000).unwrap();
        assert_eq!(pool.expire(5_999), 0);
        assert_eq!(pool.expire(6_000), 1, "sender 1 sent nothing since 1000");
        assert_eq!(pool.sender_len(&addr(0)), 2);
        assert_eq!(
            pool.expire(6_999),
            0,
            "sender 0's latest arrival was at 2000"
        );
        assert_eq!(pool.expire(7_000), 2);
        assert!(pool.is_empty());
    }

    #[test]
    fn every_refusal_has_an_ethereum_text() {
        let texts = [
            (
                Refusal::NonceTooLow {
                    nonce: 1,
                    account_nonce: 2,
                },
                "nonce too low",
            ),
            (
                Refusal::InsufficientFunds {
                    balance: U256::ZERO,
                    cost: U256::from(1u8),
                },
                "insufficient funds for gas * price + value",
            ),
            (
                Refusal::Underpriced { max_fee: 1, min: 2 },
                "transaction underpriced",
            ),
            (Refusal::PoolFull, "txpool is full"),
        ];
        for (refusal, text) in texts {
            assert_eq!(refusal.eth_message(), text);
            assert!(refusal.to_string().starts_with(text), "{refusal}");
        }
        assert_eq!(
            Refusal::Decode(TxError::UnsupportedType(3)).eth_message(),
            "transaction type not supported"
        );
    }

    // ---- Bounds under random operations -------------------------------------------------------

    #[derive(Debug, Clone)]
    enum Op {
        Admit {
            account: u64,
            ahead: i64,
            price: u128,
            legacy: bool,
            big_value: bool,
        },
        Finalize {
            max_txs: usize,
        },
        BaseFee(u128),
        Expire,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => (0u64..5, -1i64..4, 1u128..6, any::<bool>(), any::<bool>()).prop_map(
                |(account, ahead, price, legacy, big_value)| Op::Admit {
                    account,
                    ahead,
                    price,
                    legacy,
                    big_value,
                }
            ),
            2 => (0usize..4).prop_map(|max_txs| Op::Finalize { max_txs }),
            1 => (0u128..4).prop_map(Op::BaseFee),
            1 => Just(Op::Expire),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn bounds_hold_under_random_operations(
            ops in prop::collection::vec(op(), 1..40),
            balances in prop::collection::vec(0u128..8, 5),
        ) {
            let max_txs = 6;
            let max_bytes = 4 * t(0, 0).sign().len();
            let cfg = MempoolConfig {
                max_txs,
                max_bytes,
                max_per_sender: 3,
                nonce_window: 4,
                recent_included: 4,
                max_age_ms: 10_000,
                ..config()
            };
            let mut pool = Mempool::new(cfg, 0);
            let mut state = State::default();
            for (i, b) in balances.iter().enumerate() {
                // Enough for `b` transactions at the top price.
                state.set_balance(i as u64, U256::from(b * 5 * GWEI * u128::from(TRANSFER_GAS)));
            }
            let mut now = 0u64;
            for op in ops {
                now += 1_000;
                match op {
                    Op::Admit { account, ahead, price, legacy, big_value } => {
                        let nonce = state.nonce(&addr(account)).saturating_add_signed(ahead);
                        let mut tx = t(account, nonce).price(price * GWEI);
                        if legacy {
                            tx = tx.ty(TxType::Legacy);
                        }
                        if big_value {
                            tx = tx.value(U256::from(1u64 << 40));
                        }
                        let before = (pool.len(), pool.bytes());
                        match pool.admit(&tx.sign(), &state, now) {
                            Ok(a) => {
                                prop_assert!(pool.contains(&a.hash));
                                prop_assert_eq!(a.nonce, nonce);
                            }
                            Err(_) => prop_assert_eq!((pool.len(), pool.bytes()), before),
                        }
                    }
                    Op::Finalize { max_txs } => {
                        let block: Vec<(Included, u64, U256)> = pool
                            .select(&state, max_txs, usize::MAX, u64::MAX, 0)
                            .iter()
                            .map(|t| {
                                let d = t.decoded();
                                let paid = U256::from(d.gas_limit)
                                    * U256::from(d.effective_gas_price(0))
                                    + d.value;
                                (Included::from(d), d.nonce, paid)
                            })
                            .collect();
                        // The block is executable: per sender, contiguous from its nonce.
                        for (inc, nonce, paid) in &block {
                            let (n, b) = state.0.get(&inc.sender).copied().unwrap_or_default();
                            prop_assert_eq!(*nonce, n);
                            // (Affordability is checked per transaction, not cumulatively.)
                            state.0.insert(inc.sender, (n + 1, b.saturating_sub(*paid)));
                        }
                        let included: Vec<Included> = block.iter().map(|b| b.0).collect();
                        let before = pool.len();
                        let pruned = pool.on_block_finalized(&included, &state);
                        prop_assert_eq!(pruned.included, included.len());
                        prop_assert_eq!(
                            before - pool.len(),
                            pruned.included + pruned.stale + pruned.unfunded
                        );
                    }
                    Op::BaseFee(fee) => pool.set_base_fee(fee * GWEI),
                    Op::Expire => {
                        pool.expire(now);
                    }
                }
                prop_assert!(pool.len() <= max_txs);
                prop_assert!(pool.bytes() <= max_bytes);
                prop_assert!(pool.recent.len() <= 4);
                prop_assert!(pool.keys.len() <= pool.len() + pool.recent.len());
                for i in 0..5 {
                    prop_assert!(pool.sender_len(&addr(i)) <= 3);
                }
                pool.recount();
            }
        }
    }
}
