//! Account state of the exec shard: balances and nonces, transfer execution, the state root and
//! snapshots.
//!
//! # Job
//!
//! [`State`] holds every account in memory, executes the decoded transactions of one block at a
//! time ([`State::execute_block`]), commits to its contents with a keccak-256 root
//! ([`State::root`]) whose cost follows the accounts a block touched, and writes and reads
//! snapshots for restarts ([`State::encode_snapshot`], [`State::decode_snapshot`]). It is
//! sans-IO and deterministic: no clock, no randomness in any result, no I/O.
//!
//! # Invariants
//!
//! - **No empty accounts.** An account with nonce 0 and balance 0 is the same as an absent one
//!   (EIP-161): it is never stored, never in the root, never in a snapshot. Stored accounts never
//!   become empty (a sender's nonce is at least 1 afterwards; others only receive), so nothing is
//!   ever deleted.
//! - **Bounded supply.** The sum of all balances plus [`State::burned`] is fixed at genesis and
//!   fits in a `U256` (checked by [`State::from_genesis`] and [`State::decode_snapshot`]).
//!   Execution only moves or burns value, so no balance addition can overflow; this is asserted.
//! - **All or nothing.** A block is applied completely or not at all: execution writes to the
//!   accounts and keeps an undo journal; the first invalid transaction rolls everything back
//!   (values, created accounts) and the state is exactly as before, height included.
//! - **Root bookkeeping.** Every bucket holding an account changed since the last [`State::root`]
//!   is in the dirty list; every other tree node is the hash of its current contents. Marking a
//!   bucket dirty that did not change (after a rolled-back block) only costs a rehash.
//!
//! # Execution semantics (transfers only)
//!
//! For each transaction, in order, with `base_fee` given for the block:
//!
//! 1. Refused (the whole block is invalid, [`BlockError::InvalidTransaction`] names the index):
//!    chain id ≠ the state's; contract creation (`to` = none); call data (`input_len` > 0);
//!    `gas_limit` < [`TRANSFER_GAS`]; `max_fee_per_gas` < `base_fee` (not includable);
//!    `max_priority_fee_per_gas` > `max_fee_per_gas`; nonce ≠ the sender's; the sender's nonce
//!    is `u64::MAX` (EIP-2681); `value + gas_limit × max_fee_per_gas` overflows 256 bits or
//!    exceeds the sender's balance (the up-front check of Ethereum's `buyGas`). A block with
//!    more than [`MAX_BLOCK_TXS`] transactions, or one after height `u64::MAX`, is refused
//!    before any transaction is looked at.
//! 2. Otherwise `gas_used` = 21,000 and `price` = [`DecodedTx::effective_gas_price`] (≥
//!    `base_fee` by the checks above). The sender pays `value + 21,000 × price` and its nonce
//!    goes up by one; the recipient receives `value` (an absent recipient of a zero value is not
//!    created). A sender may be absent only if its cost is zero (price 0, value 0).
//!
//! **Fees (EIP-1559 style).** Of each transaction's fee, `21,000 × base_fee` is burned and
//! `21,000 × (price − base_fee)` is the priority fee. The block's priority fees are credited in
//! one sum to `proposer_fee_recipient` after the last transaction (as Klaytn distributes
//! rewards when a block is finalized), so a proposer cannot spend them within the same block;
//! with no recipient they are burned too. [`State::burned`] is the running total of burned wei,
//! so `Σ balances + burned` is the genesis supply forever.
//!
//! Every receipt of a valid block has `status = true` (transfers cannot revert; a failing
//! transaction makes the block invalid instead).
//!
//! # State root
//!
//! Accounts are spread over [`BUCKETS`] = 2^16 buckets by the first two bytes of
//! `keccak256(address)` (big-endian): an attacker must grind ~2^16 keccaks per address to
//! crowd one bucket, while recipients' addresses themselves are free to choose. Byte layout:
//!
//! ```text
//! entry(a)        = address (20) || nonce (u64 BE, 8) || balance (U256 BE, 32)      60 bytes
//! leaf(bucket)    = keccak256(0x00 || entry(a_1) || … || entry(a_k))   a_1 < … < a_k bytewise
//! empty leaf      = keccak256(0x00)                                    (k = 0, a constant)
//! node            = keccak256(0x01 || left (32) || right (32))
//! root            = the node at depth 0 of the complete binary tree of depth 16 whose leaf i
//!                   (left to right) is leaf(bucket i)
//! ```
//!
//! Leaves and nodes are tagged so neither preimage can be read as the other. The tree is stored
//! as a heap (node `i` has children `2i`, `2i + 1`; leaf of bucket `b` at `2^16 + b`; 4 MiB).
//! [`State::root`] rehashes the dirty buckets and, level by level, their ancestors only: the
//! cost of a block's root is about `dirty buckets × (bucket size + 16)` keccaks of ≤ 136 bytes,
//! where the expected bucket size is `accounts / 65,536` (15 at a million accounts). It grows
//! with the accounts a block touches, and only mildly (through the bucket size) with the total.
//!
//! # Snapshot layout (version 1)
//!
//! All integers big-endian:
//!
//! ```text
//! offset   size  field
//! 0        8     magic "CCSTATE\0"
//! 8        4     version (u32) = 1
//! 12       8     chain id (u64)
//! 20       8     height (u64): the last executed block
//! 28       32    burned (U256)
//! 60       8     account count n (u64)
//! 68       60·n  entry(a) for each account, as in the state root, ordered by
//!                (bucket(a), a) strictly increasing (so each account once)
//! 68+60·n  8     xxh3-64 of bytes [0, 68+60·n)
//! ```
//!
//! Decoding is for untrusted bytes: the magic, version and checksum are checked first; the
//! count must make the length add up exactly (so allocation is bounded by the input) and be at
//! most [`MAX_ACCOUNTS`]; entries must be in canonical order, non-empty, and the supply must
//! fit. No input panics.
//!
//! # Account map
//!
//! Accounts live in a `Vec` of slots indexed by a `HashMap<address, slot>` with std's keyed
//! SipHash-1-3 (`RandomState`). A cheaper hasher reading the first 8 address bytes would not
//! be safe: recipient addresses are chosen freely by senders (`0x00…01`, `0x00…02`, …), so an
//! attacker could make every new account collide. The per-process random key affects only the
//! map's internal layout, never a result. With it, one core executes about 4 million
//! transfers per second among 10,000 accounts (`cargo bench --bench execution`).

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::fmt;

use alloy_primitives::U256;

use crate::config::genesis::GenesisAccount;
use crate::crypto::tx::DecodedTx;
use crate::types::hash::{keccak256, xxh3, Hash32};
use crate::types::MAX_BLOCK_TXS;

/// A 20-byte account address.
pub type Address = [u8; 20];

/// Gas used by (and intrinsic gas of) a plain transfer.
pub const TRANSFER_GAS: u64 = 21_000;
/// log2 of the number of state-root buckets (the depth of the bucket tree).
pub const BUCKET_BITS: u32 = 16;
/// Number of state-root buckets.
pub const BUCKETS: usize = 1 << BUCKET_BITS;
/// Bytes of one encoded account (`address || nonce || balance`).
pub const ENTRY_BYTES: usize = 60;
/// Domain tag of bucket (leaf) hashes.
pub const LEAF_TAG: u8 = 0x00;
/// Domain tag of inner node hashes.
pub const NODE_TAG: u8 = 0x01;
/// The most accounts a state can hold (slots are numbered with `u32`).
pub const MAX_ACCOUNTS: usize = u32::MAX as usize;
/// First bytes of every snapshot.
pub const SNAPSHOT_MAGIC: [u8; 8] = *b"CCSTATE\0";
/// The snapshot layout version written and read.
pub const SNAPSHOT_VERSION: u32 = 1;
/// Bytes of the snapshot header (before the entries).
pub const SNAPSHOT_HEADER_BYTES: usize = 68;
/// Bytes of the snapshot trailer (the xxh3 checksum).
pub const SNAPSHOT_CHECKSUM_BYTES: usize = 8;

/// One account.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Account {
    /// Number of transactions sent.
    pub nonce: u64,
    /// Balance in wei.
    pub balance: U256,
}

impl Account {
    /// Nonce 0 and balance 0: the same as an absent account, never stored.
    pub fn is_empty(&self) -> bool {
        self.nonce == 0 && self.balance.is_zero()
    }
}

/// The receipt of one executed transaction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Receipt {
    /// Whether it succeeded (always true for now: a failing transfer invalidates its block).
    pub status: bool,
    /// Gas used by this transaction.
    pub gas_used: u64,
    /// Gas used by the block up to and including this transaction.
    pub cumulative_gas_used: u64,
    /// Height of the block.
    pub block_height: u64,
    /// Position in the block.
    pub index: u32,
}

/// What executing a valid block produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockOutcome {
    /// Height of the executed block (the state's new height).
    pub height: u64,
    /// One receipt per transaction, in block order.
    pub receipts: Vec<Receipt>,
    /// Gas used by the whole block.
    pub gas_used: u64,
    /// Wei burned by this block (base fees, plus priority fees when there is no recipient).
    pub burned: U256,
    /// Priority fees credited to the proposer's fee recipient.
    pub proposer_fees: U256,
}

/// Why a transaction makes its block invalid.
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
pub enum TxRefusal {
    /// Signed for another chain.
    #[error("chain id {got}, this chain is {expected}")]
    WrongChainId {
        /// The state's chain id.
        expected: u64,
        /// The transaction's.
        got: u64,
    },
    /// `to` is empty: contract creation is not supported.
    #[error("contract creation is not supported (transfers only)")]
    ContractCreation,
    /// Call data: contract calls are not supported.
    #[error("{len} bytes of call data: contract calls are not supported (transfers only)")]
    CallData {
        /// Length of the call data.
        len: usize,
    },
    /// Gas limit below the intrinsic gas of a transfer.
    #[error("gas limit {gas_limit} is below the intrinsic gas {TRANSFER_GAS}")]
    GasLimitTooLow {
        /// The transaction's gas limit.
        gas_limit: u64,
    },
    /// `max_fee_per_gas` below the block's base fee: not includable.
    #[error("max fee per gas {max_fee_per_gas} is below the base fee {base_fee}")]
    FeeCapBelowBaseFee {
        /// The transaction's fee cap.
        max_fee_per_gas: u128,
        /// The block's base fee.
        base_fee: u128,
    },
    /// `max_priority_fee_per_gas > max_fee_per_gas` (invalid under EIP-1559).
    #[error("max priority fee per gas {max_priority_fee_per_gas} is above the max fee per gas {max_fee_per_gas}")]
    TipAboveFeeCap {
        /// The transaction's tip cap.
        max_priority_fee_per_gas: u128,
        /// The transaction's fee cap.
        max_fee_per_gas: u128,
    },
    /// The nonce is not the sender's next one.
    #[error("nonce {got}, the sender's next nonce is {expected}")]
    WrongNonce {
        /// The sender's current nonce.
        expected: u64,
        /// The transaction's nonce.
        got: u64,
    },
    /// The sender's nonce is `u64::MAX` and cannot go up (EIP-2681).
    #[error("the sender's nonce is at its maximum")]
    NonceOverflow,
    /// `value + gas_limit × max_fee_per_gas` does not fit in 256 bits.
    #[error("value + gas limit × max fee per gas overflows 256 bits")]
    CostOverflow,
    /// The sender cannot pay `value + gas_limit × max_fee_per_gas` up front.
    #[error("insufficient balance: {balance} wei, needs {needed} (value + gas limit × max fee)")]
    InsufficientBalance {
        /// What the sender must hold.
        needed: U256,
        /// What it holds.
        balance: U256,
    },
}

/// Why a block is invalid. The state is left unchanged.
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
pub enum BlockError {
    /// More transactions than a block may hold.
    #[error("block has {count} transactions, the limit is {max}")]
    TooManyTransactions {
        /// Transactions in the block.
        count: usize,
        /// [`MAX_BLOCK_TXS`].
        max: usize,
    },
    /// The state is at height `u64::MAX` (only reachable from a crafted snapshot).
    #[error("the state is at the last possible height")]
    HeightOverflow,
    /// A transaction is invalid.
    #[error("transaction {index} (0x{}) is invalid: {reason}", hex::encode(.hash))]
    InvalidTransaction {
        /// Position in the block.
        index: usize,
        /// Its hash.
        hash: Hash32,
        /// Why.
        reason: TxRefusal,
    },
}

/// Why genesis accounts cannot make a state.
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
pub enum GenesisError {
    /// The same address twice.
    #[error("account 0x{} is listed twice", hex::encode(.0))]
    DuplicateAccount(Address),
    /// The balances add up to more than `2^256 - 1`.
    #[error("the genesis balances add up to more than 2^256 - 1 wei")]
    SupplyOverflow,
    /// More than [`MAX_ACCOUNTS`] accounts.
    #[error("{0} accounts, more than {MAX_ACCOUNTS}")]
    TooManyAccounts(usize),
}

/// The state root of a transfer chain's genesis accounts: what `config::genesis` is handed
/// ([`crate::config::genesis::GenesisStateRoot`]) when a genesis file is loaded.
pub fn genesis_state_root(chain_id: u64, accounts: &[GenesisAccount]) -> Result<Hash32, String> {
    State::from_genesis(chain_id, accounts)
        .map(|mut state| state.root())
        .map_err(|e| e.to_string())
}

/// Why bytes are not a valid snapshot.
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
pub enum SnapshotError {
    /// Shorter than a header and checksum.
    #[error("snapshot is {len} bytes, shorter than the {min}-byte minimum")]
    TooShort {
        /// Input length.
        len: usize,
        /// Header plus checksum.
        min: usize,
    },
    /// Does not start with [`SNAPSHOT_MAGIC`].
    #[error("not a state snapshot (bad magic)")]
    BadMagic,
    /// A layout version this build cannot read.
    #[error("snapshot version {0}, this build reads version {SNAPSHOT_VERSION}")]
    UnsupportedVersion(u32),
    /// The xxh3 trailer does not match.
    #[error("snapshot checksum {stored:#018x} does not match the contents ({computed:#018x})")]
    ChecksumMismatch {
        /// The trailer.
        stored: u64,
        /// xxh3 of the contents.
        computed: u64,
    },
    /// The account count is over [`MAX_ACCOUNTS`].
    #[error("snapshot claims {0} accounts, more than {MAX_ACCOUNTS}")]
    TooManyAccounts(u64),
    /// The account count does not match the length.
    #[error("snapshot claims {count} accounts but holds {entry_bytes} bytes of entries")]
    LengthMismatch {
        /// The claimed count.
        count: u64,
        /// Bytes between the header and the checksum.
        entry_bytes: usize,
    },
    /// Entry `index` is not after the previous one in (bucket, address) order.
    #[error("snapshot entry {0} is out of order or repeated")]
    NotCanonical(usize),
    /// Entry `index` is an empty account.
    #[error("snapshot entry {0} is an empty account")]
    EmptyAccount(usize),
    /// Balances plus burned exceed `2^256 - 1`.
    #[error("snapshot balances and burned add up to more than 2^256 - 1 wei")]
    SupplyOverflow,
}

/// One stored account.
#[derive(Clone, Copy)]
struct Slot {
    account: Account,
    address: Address,
    /// Its bucket (set when the account's block commits).
    bucket: u16,
}

/// All accounts, in memory. See the module documentation.
#[derive(Clone)]
pub struct State {
    chain_id: u64,
    height: u64,
    burned: U256,
    /// Address → position in `slots`.
    index: HashMap<Address, u32>,
    slots: Vec<Slot>,
    /// Per bucket, its slots sorted by address.
    buckets: Vec<Vec<u32>>,
    /// The bucket tree as a heap: `nodes[1]` is the root, leaf `b` is `nodes[BUCKETS + b]`.
    nodes: Vec<Hash32>,
    /// Buckets changed since the last `root()`, each once.
    dirty: Vec<u32>,
    is_dirty: Vec<bool>,
    /// Undo journal of the block being executed or held tentatively: (slot, value before).
    journal: Vec<(u32, Account)>,
    /// The block applied tentatively (see [`State::execute_tentative`]), if any.
    tentative: Option<Tentative>,
}

/// What undoing a tentatively applied block needs besides the journal.
#[derive(Debug, Clone, Copy)]
struct Tentative {
    /// Slots from here on were created by the block.
    first_new: usize,
    burned_before: U256,
    height_before: u64,
}

impl fmt::Debug for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("State")
            .field("chain_id", &self.chain_id)
            .field("height", &self.height)
            .field("accounts", &self.slots.len())
            .field("burned", &self.burned)
            .field("dirty_buckets", &self.dirty.len())
            .finish()
    }
}

/// The bucket of `address`: the first two bytes of its keccak-256, big-endian.
pub fn bucket_of(address: &Address) -> u16 {
    let digest = keccak256(address);
    u16::from_be_bytes([digest[0], digest[1]])
}

/// Appends `entry(address, account)` (60 bytes) to `out`.
fn put_entry(out: &mut Vec<u8>, address: &Address, account: &Account) {
    out.extend_from_slice(address);
    out.extend_from_slice(&account.nonce.to_be_bytes());
    out.extend_from_slice(&account.balance.to_be_bytes::<32>());
}

/// `keccak256(NODE_TAG || left || right)`.
fn node_hash(left: &Hash32, right: &Hash32) -> Hash32 {
    let mut buf = [0u8; 65];
    buf[0] = NODE_TAG;
    buf[1..33].copy_from_slice(left);
    buf[33..].copy_from_slice(right);
    keccak256(&buf)
}

/// The hash of an empty subtree at each depth: `[0]` is the empty root, `[16]` the empty leaf.
fn empty_hashes() -> [Hash32; BUCKET_BITS as usize + 1] {
    let mut empty = [[0u8; 32]; BUCKET_BITS as usize + 1];
    empty[BUCKET_BITS as usize] = keccak256(&[LEAF_TAG]);
    for depth in (0..BUCKET_BITS as usize).rev() {
        empty[depth] = node_hash(&empty[depth + 1], &empty[depth + 1]);
    }
    empty
}

/// `a × b` without overflow (at most 192 bits).
#[inline]
fn mul_u64_u128(a: u64, b: u128) -> U256 {
    let a = u128::from(a);
    let low = a * (b as u64 as u128);
    let high = a * (b >> 64);
    let mid = (low >> 64) + (high as u64 as u128);
    U256::from_limbs([
        low as u64,
        mid as u64,
        ((high >> 64) + (mid >> 64)) as u64,
        0,
    ])
}

/// `a + b` where the supply invariant guarantees no overflow.
#[inline]
fn add_within_supply(a: U256, b: U256) -> U256 {
    let (sum, overflow) = a.overflowing_add(b);
    assert!(
        !overflow,
        "balance overflow: the supply invariant is broken"
    );
    sum
}

fn read_u64(bytes: &[u8], at: usize) -> u64 {
    let mut word = [0u8; 8];
    word.copy_from_slice(&bytes[at..at + 8]);
    u64::from_be_bytes(word)
}

fn read_u256(bytes: &[u8], at: usize) -> U256 {
    let mut word = [0u8; 32];
    word.copy_from_slice(&bytes[at..at + 32]);
    U256::from_be_bytes(word)
}

impl State {
    /// A state with no account, at height 0.
    fn empty(chain_id: u64) -> State {
        let empty = empty_hashes();
        let mut nodes = vec![[0u8; 32]; 2 * BUCKETS];
        for (depth, hash) in empty.iter().enumerate() {
            nodes[1 << depth..2 << depth].fill(*hash);
        }
        State {
            chain_id,
            height: 0,
            burned: U256::ZERO,
            index: HashMap::new(),
            slots: Vec::new(),
            buckets: vec![Vec::new(); BUCKETS],
            nodes,
            dirty: Vec::new(),
            is_dirty: vec![false; BUCKETS],
            journal: Vec::new(),
            tentative: None,
        }
    }

    /// The state at height 0 of chain `chain_id` holding the genesis accounts. Accounts with a
    /// zero balance are empty and not stored; their order does not matter.
    pub fn from_genesis(chain_id: u64, accounts: &[GenesisAccount]) -> Result<State, GenesisError> {
        if accounts.len() > MAX_ACCOUNTS {
            return Err(GenesisError::TooManyAccounts(accounts.len()));
        }
        let mut state = State::empty(chain_id);
        state.index.reserve(accounts.len());
        state.slots.reserve(accounts.len());
        let mut supply = U256::ZERO;
        for genesis in accounts {
            supply = supply
                .checked_add(genesis.balance)
                .ok_or(GenesisError::SupplyOverflow)?;
            if genesis.balance.is_zero() {
                continue;
            }
            let slot = state.slots.len() as u32;
            match state.index.entry(genesis.address) {
                Entry::Occupied(_) => return Err(GenesisError::DuplicateAccount(genesis.address)),
                Entry::Vacant(vacant) => {
                    vacant.insert(slot);
                }
            }
            state.slots.push(Slot {
                account: Account {
                    nonce: 0,
                    balance: genesis.balance,
                },
                address: genesis.address,
                bucket: bucket_of(&genesis.address),
            });
        }
        for (slot, entry) in state.slots.iter().enumerate() {
            state.buckets[usize::from(entry.bucket)].push(slot as u32);
        }
        let slots = &state.slots;
        for (bucket, members) in state.buckets.iter_mut().enumerate() {
            if !members.is_empty() {
                members.sort_unstable_by_key(|&s| slots[s as usize].address);
                state.is_dirty[bucket] = true;
                state.dirty.push(bucket as u32);
            }
        }
        Ok(state)
    }

    /// The chain id transactions must carry.
    pub fn chain_id(&self) -> u64 {
        self.chain_id
    }

    /// Height of the last executed block (0 at genesis).
    pub fn height(&self) -> u64 {
        self.height
    }

    /// Total wei burned since genesis.
    pub fn burned(&self) -> U256 {
        self.burned
    }

    /// Number of (non-empty) accounts.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether there is no account at all.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// The account at `address`, if it is not empty.
    pub fn account(&self, address: &Address) -> Option<Account> {
        self.index
            .get(address)
            .map(|&slot| self.slots[slot as usize].account)
    }

    /// The nonce of `address` (0 for an unknown account).
    pub fn nonce(&self, address: &Address) -> u64 {
        self.account(address).map_or(0, |a| a.nonce)
    }

    /// The balance of `address` (0 for an unknown account).
    pub fn balance(&self, address: &Address) -> U256 {
        self.account(address).map_or(U256::ZERO, |a| a.balance)
    }

    /// The sum of all balances (O(accounts)); plus [`State::burned`] it is the genesis supply.
    pub fn total_balance(&self) -> U256 {
        self.slots.iter().fold(U256::ZERO, |sum, slot| {
            add_within_supply(sum, slot.account.balance)
        })
    }

    fn mark_dirty(&mut self, bucket: u16) {
        let bucket = usize::from(bucket);
        if !self.is_dirty[bucket] {
            self.is_dirty[bucket] = true;
            self.dirty.push(bucket as u32);
        }
    }

    /// The slot of `address`, created (empty, bucket not yet set) if absent.
    #[inline]
    fn slot_or_create(&mut self, address: Address) -> u32 {
        match self.index.entry(address) {
            Entry::Occupied(occupied) => *occupied.get(),
            Entry::Vacant(vacant) => {
                assert!(self.slots.len() < MAX_ACCOUNTS, "account slots exhausted");
                let slot = self.slots.len() as u32;
                vacant.insert(slot);
                self.slots.push(Slot {
                    account: Account::default(),
                    address,
                    bucket: 0,
                });
                slot
            }
        }
    }

    /// Sets the account in `slot`, journaling its previous value.
    #[inline]
    fn write(&mut self, slot: u32, before: Account, after: Account) {
        self.journal.push((slot, before));
        self.slots[slot as usize].account = after;
    }

    /// Executes the next block (height + 1): every transaction in order, then the priority fees
    /// to `proposer_fee_recipient` (burned if none). On the first invalid transaction the state
    /// is left exactly as it was and the error names it. See the module documentation for the
    /// rules.
    pub fn execute_block(
        &mut self,
        txs: &[DecodedTx],
        proposer_fee_recipient: Option<Address>,
        base_fee: u128,
    ) -> Result<BlockOutcome, BlockError> {
        let outcome = self.execute_tentative(txs, proposer_fee_recipient, base_fee)?;
        self.confirm_tentative();
        Ok(outcome)
    }

    /// Whether a block is applied tentatively.
    pub fn has_tentative(&self) -> bool {
        self.tentative.is_some()
    }

    /// Executes the next block like [`State::execute_block`], but keeps what it takes to undo
    /// it: the state (and [`State::root`]) then reads as after the block until
    /// [`State::confirm_tentative`] makes it permanent or [`State::discard_tentative`] puts the
    /// state back exactly as before (root included). A proposed block is executed this way
    /// before it is final, so that the proposer's and the validators' execution is also the
    /// finalization's when the same block is finalized.
    ///
    /// # Panics
    /// If a block is already applied tentatively (confirm or discard it first).
    pub fn execute_tentative(
        &mut self,
        txs: &[DecodedTx],
        proposer_fee_recipient: Option<Address>,
        base_fee: u128,
    ) -> Result<BlockOutcome, BlockError> {
        assert!(
            self.tentative.is_none(),
            "a block is already applied tentatively"
        );
        if txs.len() > MAX_BLOCK_TXS {
            return Err(BlockError::TooManyTransactions {
                count: txs.len(),
                max: MAX_BLOCK_TXS,
            });
        }
        let height = self
            .height
            .checked_add(1)
            .ok_or(BlockError::HeightOverflow)?;
        debug_assert!(self.journal.is_empty());
        let first_new = self.slots.len();
        let burn_per_tx = mul_u64_u128(TRANSFER_GAS, base_fee);
        let mut priority_fees = U256::ZERO;
        let mut receipts = Vec::with_capacity(txs.len());
        let mut cumulative_gas_used = 0u64;
        for (index, tx) in txs.iter().enumerate() {
            match self.apply(tx, base_fee) {
                Ok(fee) => {
                    // fee ≥ burn_per_tx because price ≥ base_fee (checked in `apply`).
                    priority_fees = add_within_supply(priority_fees, fee - burn_per_tx);
                    cumulative_gas_used += TRANSFER_GAS;
                    receipts.push(Receipt {
                        status: true,
                        gas_used: TRANSFER_GAS,
                        cumulative_gas_used,
                        block_height: height,
                        // index < MAX_BLOCK_TXS, checked above.
                        index: index as u32,
                    });
                }
                Err(reason) => {
                    self.rollback(first_new);
                    return Err(BlockError::InvalidTransaction {
                        index,
                        hash: tx.hash,
                        reason,
                    });
                }
            }
        }
        // burn_per_tx < 2^143 and txs.len() ≤ MAX_BLOCK_TXS < 2^16: no overflow.
        let mut burned = burn_per_tx * U256::from(txs.len());
        let mut proposer_fees = U256::ZERO;
        match proposer_fee_recipient {
            Some(recipient) if !priority_fees.is_zero() => {
                let slot = self.slot_or_create(recipient);
                let before = self.slots[slot as usize].account;
                let after = Account {
                    nonce: before.nonce,
                    balance: add_within_supply(before.balance, priority_fees),
                };
                self.write(slot, before, after);
                proposer_fees = priority_fees;
            }
            Some(_) => {}
            None => burned = add_within_supply(burned, priority_fees),
        }
        self.commit(first_new);
        self.tentative = Some(Tentative {
            first_new,
            burned_before: self.burned,
            height_before: self.height,
        });
        self.burned = add_within_supply(self.burned, burned);
        self.height = height;
        Ok(BlockOutcome {
            height,
            receipts,
            gas_used: cumulative_gas_used,
            burned,
            proposer_fees,
        })
    }

    /// Applies one transfer; returns its whole fee (`TRANSFER_GAS × price`).
    #[inline]
    fn apply(&mut self, tx: &DecodedTx, base_fee: u128) -> Result<U256, TxRefusal> {
        if tx.chain_id != self.chain_id {
            return Err(TxRefusal::WrongChainId {
                expected: self.chain_id,
                got: tx.chain_id,
            });
        }
        let Some(to) = tx.to else {
            return Err(TxRefusal::ContractCreation);
        };
        if tx.input_len != 0 {
            return Err(TxRefusal::CallData { len: tx.input_len });
        }
        if tx.gas_limit < TRANSFER_GAS {
            return Err(TxRefusal::GasLimitTooLow {
                gas_limit: tx.gas_limit,
            });
        }
        if tx.max_fee_per_gas < base_fee {
            return Err(TxRefusal::FeeCapBelowBaseFee {
                max_fee_per_gas: tx.max_fee_per_gas,
                base_fee,
            });
        }
        if tx.max_priority_fee_per_gas > tx.max_fee_per_gas {
            return Err(TxRefusal::TipAboveFeeCap {
                max_priority_fee_per_gas: tx.max_priority_fee_per_gas,
                max_fee_per_gas: tx.max_fee_per_gas,
            });
        }
        let price = tx.effective_gas_price(base_fee);
        assert!(
            (base_fee..=tx.max_fee_per_gas).contains(&price),
            "effective gas price outside [base fee, fee cap]"
        );

        let sender_slot = self.index.get(&tx.sender).copied();
        let sender = sender_slot.map_or(Account::default(), |s| self.slots[s as usize].account);
        if tx.nonce != sender.nonce {
            return Err(TxRefusal::WrongNonce {
                expected: sender.nonce,
                got: tx.nonce,
            });
        }
        let Some(next_nonce) = sender.nonce.checked_add(1) else {
            return Err(TxRefusal::NonceOverflow);
        };
        let Some(needed) = mul_u64_u128(tx.gas_limit, tx.max_fee_per_gas).checked_add(tx.value)
        else {
            return Err(TxRefusal::CostOverflow);
        };
        if needed > sender.balance {
            return Err(TxRefusal::InsufficientBalance {
                needed,
                balance: sender.balance,
            });
        }

        // price ≤ max fee and 21,000 ≤ gas limit, so fee + value ≤ needed ≤ balance.
        let fee = mul_u64_u128(TRANSFER_GAS, price);
        let sender_slot = match sender_slot {
            Some(slot) => slot,
            None => self.slot_or_create(tx.sender),
        };
        self.write(
            sender_slot,
            sender,
            Account {
                nonce: next_nonce,
                balance: sender.balance - (fee + tx.value),
            },
        );
        if !tx.value.is_zero() {
            // Looked up after the sender's write, so a transfer to oneself nets to the fee.
            let slot = self.slot_or_create(to);
            let before = self.slots[slot as usize].account;
            let after = Account {
                nonce: before.nonce,
                balance: add_within_supply(before.balance, tx.value),
            };
            self.write(slot, before, after);
        }
        Ok(fee)
    }

    /// Makes the tentatively applied block permanent (nothing to do when there is none).
    pub fn confirm_tentative(&mut self) {
        if self.tentative.take().is_some() {
            self.journal.clear();
        }
    }

    /// Undoes the tentatively applied block, if any: the state is exactly as before it, and
    /// the buckets it touched are rehashed at the next [`State::root`].
    pub fn discard_tentative(&mut self) {
        let Some(t) = self.tentative.take() else {
            return;
        };
        for i in (0..self.journal.len()).rev() {
            let (slot, before) = self.journal[i];
            if (slot as usize) < t.first_new {
                self.slots[slot as usize].account = before;
                self.mark_dirty(self.slots[slot as usize].bucket);
            }
        }
        self.journal.clear();
        for slot in (t.first_new..self.slots.len()).rev() {
            let (address, bucket) = (self.slots[slot].address, self.slots[slot].bucket);
            let members = &mut self.buckets[usize::from(bucket)];
            let at = members
                .iter()
                .position(|&s| s as usize == slot)
                .expect("a created account was filed into its bucket");
            members.remove(at);
            self.index.remove(&address);
            self.mark_dirty(bucket);
        }
        self.slots.truncate(t.first_new);
        self.burned = t.burned_before;
        self.height = t.height_before;
    }

    /// Undoes the block being executed: journaled values in reverse, then created accounts.
    fn rollback(&mut self, first_new: usize) {
        for &(slot, before) in self.journal.iter().rev() {
            if (slot as usize) < first_new {
                self.slots[slot as usize].account = before;
            }
        }
        self.journal.clear();
        for slot in self.slots.drain(first_new..) {
            self.index.remove(&slot.address);
        }
    }

    /// Makes the executed block permanent: marks changed buckets dirty and files created
    /// accounts into their buckets.
    fn commit(&mut self, first_new: usize) {
        let journal = std::mem::take(&mut self.journal);
        for &(slot, _) in &journal {
            if (slot as usize) < first_new {
                self.mark_dirty(self.slots[slot as usize].bucket);
            }
        }
        // Kept until the block is confirmed or discarded.
        self.journal = journal;
        for slot in first_new..self.slots.len() {
            let address = self.slots[slot].address;
            assert!(
                !self.slots[slot].account.is_empty(),
                "created an empty account"
            );
            let bucket = bucket_of(&address);
            self.slots[slot].bucket = bucket;
            let slots = &self.slots;
            let members = &mut self.buckets[usize::from(bucket)];
            let at = members.partition_point(|&s| slots[s as usize].address < address);
            members.insert(at, slot as u32);
            self.mark_dirty(bucket);
        }
    }

    /// `leaf(bucket)`, using `buf` as scratch.
    fn bucket_hash(&self, bucket: usize, buf: &mut Vec<u8>) -> Hash32 {
        buf.clear();
        buf.push(LEAF_TAG);
        for &slot in &self.buckets[bucket] {
            let slot = &self.slots[slot as usize];
            put_entry(buf, &slot.address, &slot.account);
        }
        keccak256(buf)
    }

    /// The state root (see the module documentation), after rehashing the buckets changed
    /// since the last call and their ancestors.
    pub fn root(&mut self) -> Hash32 {
        if self.dirty.is_empty() {
            return self.nodes[1];
        }
        let mut level = std::mem::take(&mut self.dirty);
        level.sort_unstable();
        let mut buf = Vec::with_capacity(1 + 64 * ENTRY_BYTES);
        for node in level.iter_mut() {
            let bucket = *node as usize;
            self.is_dirty[bucket] = false;
            self.nodes[BUCKETS + bucket] = self.bucket_hash(bucket, &mut buf);
            *node += BUCKETS as u32;
        }
        // `level` holds sorted, distinct node indices of one depth; replace them by their
        // parents (sorted, distinct) and rehash those, up to the root.
        while level[0] > 1 {
            for node in level.iter_mut() {
                *node /= 2;
            }
            level.dedup();
            for &node in &level {
                let node = node as usize;
                self.nodes[node] = node_hash(&self.nodes[2 * node], &self.nodes[2 * node + 1]);
            }
        }
        level.clear();
        self.dirty = level;
        self.nodes[1]
    }

    /// The snapshot of this state (layout in the module documentation). Deterministic: equal
    /// states give equal bytes.
    ///
    /// # Panics
    /// If a block is applied tentatively (a snapshot holds final state only).
    pub fn encode_snapshot(&self) -> Vec<u8> {
        assert!(
            self.tentative.is_none(),
            "snapshot of a state with a tentative block"
        );
        let mut out = Vec::with_capacity(
            SNAPSHOT_HEADER_BYTES + self.slots.len() * ENTRY_BYTES + SNAPSHOT_CHECKSUM_BYTES,
        );
        out.extend_from_slice(&SNAPSHOT_MAGIC);
        out.extend_from_slice(&SNAPSHOT_VERSION.to_be_bytes());
        out.extend_from_slice(&self.chain_id.to_be_bytes());
        out.extend_from_slice(&self.height.to_be_bytes());
        out.extend_from_slice(&self.burned.to_be_bytes::<32>());
        out.extend_from_slice(&(self.slots.len() as u64).to_be_bytes());
        debug_assert_eq!(out.len(), SNAPSHOT_HEADER_BYTES);
        for members in &self.buckets {
            for &slot in members {
                let slot = &self.slots[slot as usize];
                put_entry(&mut out, &slot.address, &slot.account);
            }
        }
        assert_eq!(
            out.len(),
            SNAPSHOT_HEADER_BYTES + self.slots.len() * ENTRY_BYTES,
            "every account is in exactly one bucket"
        );
        let checksum = xxh3(&out);
        out.extend_from_slice(&checksum.to_be_bytes());
        out
    }

    /// Reads a snapshot written by [`State::encode_snapshot`]. Safe on any bytes.
    pub fn decode_snapshot(bytes: &[u8]) -> Result<State, SnapshotError> {
        let min = SNAPSHOT_HEADER_BYTES + SNAPSHOT_CHECKSUM_BYTES;
        if bytes.len() < min {
            return Err(SnapshotError::TooShort {
                len: bytes.len(),
                min,
            });
        }
        if bytes[..8] != SNAPSHOT_MAGIC {
            return Err(SnapshotError::BadMagic);
        }
        let mut version = [0u8; 4];
        version.copy_from_slice(&bytes[8..12]);
        let version = u32::from_be_bytes(version);
        if version != SNAPSHOT_VERSION {
            return Err(SnapshotError::UnsupportedVersion(version));
        }
        let (body, trailer) = bytes.split_at(bytes.len() - SNAPSHOT_CHECKSUM_BYTES);
        let stored = read_u64(trailer, 0);
        let computed = xxh3(body);
        if stored != computed {
            return Err(SnapshotError::ChecksumMismatch { stored, computed });
        }
        let chain_id = read_u64(body, 12);
        let height = read_u64(body, 20);
        let burned = read_u256(body, 28);
        let count = read_u64(body, 60);
        if count > MAX_ACCOUNTS as u64 {
            return Err(SnapshotError::TooManyAccounts(count));
        }
        let entries = &body[SNAPSHOT_HEADER_BYTES..];
        // count ≤ 2^32 - 1, so count × 60 cannot overflow u64.
        if count * ENTRY_BYTES as u64 != entries.len() as u64 {
            return Err(SnapshotError::LengthMismatch {
                count,
                entry_bytes: entries.len(),
            });
        }
        // Allocation is now bounded by the input's length.
        let count = count as usize;
        let mut state = State::empty(chain_id);
        state.height = height;
        state.burned = burned;
        state.index.reserve(count);
        state.slots.reserve(count);
        let mut supply = burned;
        let mut previous: Option<(u16, Address)> = None;
        for (i, entry) in entries.chunks_exact(ENTRY_BYTES).enumerate() {
            let mut address = [0u8; 20];
            address.copy_from_slice(&entry[..20]);
            let account = Account {
                nonce: read_u64(entry, 20),
                balance: read_u256(entry, 28),
            };
            if account.is_empty() {
                return Err(SnapshotError::EmptyAccount(i));
            }
            supply = supply
                .checked_add(account.balance)
                .ok_or(SnapshotError::SupplyOverflow)?;
            let bucket = bucket_of(&address);
            if previous.is_some_and(|p| p >= (bucket, address)) {
                return Err(SnapshotError::NotCanonical(i));
            }
            previous = Some((bucket, address));
            // Strictly increasing order means each address once; the slot is new.
            let slot = i as u32;
            state.index.insert(address, slot);
            state.slots.push(Slot {
                account,
                address,
                bucket,
            });
            state.buckets[usize::from(bucket)].push(slot);
            state.mark_dirty(bucket);
        }
        Ok(state)
    }
}

/// The mempool checks admissions against the state it will execute on.
impl super::mempool::AccountView for State {
    fn nonce(&self, a: &[u8; 20]) -> u64 {
        State::nonce(self, a)
    }

    fn balance(&self, a: &[u8; 20]) -> U256 {
        State::balance(self, a)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;
    use crate::crypto::tx::{
        address_of_secret, decode_transaction, sign_transfer, Transfer, TxType,
    };

    const CHAIN: u64 = 1001;
    const ETHER: u128 = 1_000_000_000_000_000_000;

    fn addr(i: u64) -> Address {
        let mut a = [0u8; 20];
        a.copy_from_slice(&keccak256(&i.to_be_bytes())[..20]);
        a
    }

    fn wei(v: u128) -> U256 {
        U256::from(v)
    }

    fn genesis(balances: &[(Address, u128)]) -> State {
        let accounts: Vec<GenesisAccount> = balances
            .iter()
            .map(|&(address, balance)| GenesisAccount {
                address,
                balance: wei(balance),
            })
            .collect();
        State::from_genesis(CHAIN, &accounts).unwrap()
    }

    /// An EIP-1559 transfer with fee cap 100 and tip 3.
    fn tx(sender: Address, nonce: u64, to: Address, value: u128) -> DecodedTx {
        DecodedTx {
            hash: keccak256(&[&sender[..], &nonce.to_be_bytes(), &to].concat()),
            sender,
            tx_type: TxType::Eip1559,
            chain_id: CHAIN,
            nonce,
            gas_limit: TRANSFER_GAS,
            max_fee_per_gas: 100,
            max_priority_fee_per_gas: 3,
            to: Some(to),
            value: wei(value),
            input_len: 0,
            encoded_len: 110,
        }
    }

    /// A transfer with fee cap and tip 0 (valid at base fee 0, costs only `value`).
    fn free(sender: Address, nonce: u64, to: Address, value: u128) -> DecodedTx {
        let mut t = tx(sender, nonce, to, value);
        t.max_fee_per_gas = 0;
        t.max_priority_fee_per_gas = 0;
        t
    }

    /// An independent, from-scratch root straight from the definition (sparse recursion).
    fn reference_root(state: &State) -> Hash32 {
        let mut by_bucket: BTreeMap<u32, Vec<(Address, Account)>> = BTreeMap::new();
        for slot in &state.slots {
            by_bucket
                .entry(u32::from(bucket_of(&slot.address)))
                .or_default()
                .push((slot.address, slot.account));
        }
        let leaves: Vec<(u32, Hash32)> = by_bucket
            .into_iter()
            .map(|(bucket, mut accounts)| {
                accounts.sort_by_key(|(a, _)| *a);
                let mut bytes = vec![0x00u8];
                for (a, account) in accounts {
                    bytes.extend_from_slice(&a);
                    bytes.extend_from_slice(&account.nonce.to_be_bytes());
                    bytes.extend_from_slice(&account.balance.to_be_bytes::<32>());
                }
                (bucket, keccak256(&bytes))
            })
            .collect();
        fn subtree(depth: u32, leaves: &[(u32, Hash32)]) -> Hash32 {
            if depth == 16 {
                assert!(leaves.len() <= 1);
                return leaves.first().map_or(keccak256(&[0x00]), |l| l.1);
            }
            let bit = 1u32 << (15 - depth);
            let split = leaves.partition_point(|(b, _)| b & bit == 0);
            let left = subtree(depth + 1, &leaves[..split]);
            let right = subtree(depth + 1, &leaves[split..]);
            keccak256(&[&[0x01u8][..], &left, &right].concat())
        }
        subtree(0, &leaves)
    }

    /// Sets an account directly (test setup for states execution cannot reach quickly).
    fn force_account(state: &mut State, address: Address, account: Account) {
        let first_new = state.slots.len();
        let slot = state.slot_or_create(address);
        let before = state.slots[slot as usize].account;
        state.write(slot, before, account);
        state.commit(first_new);
        state.journal.clear();
    }

    /// Everything observable about a state: its snapshot and root.
    fn fingerprint(state: &mut State) -> (Vec<u8>, Hash32, usize) {
        (state.encode_snapshot(), state.root(), state.len())
    }

    #[test]
    fn genesis_balances_and_unknown_accounts() {
        let mut state = genesis(&[(addr(1), 5), (addr(2), 7), (addr(3), 0)]);
        assert_eq!(state.chain_id(), CHAIN);
        assert_eq!(state.height(), 0);
        assert_eq!(
            state.len(),
            2,
            "a zero-balance account is empty, not stored"
        );
        assert_eq!(state.balance(&addr(1)), wei(5));
        assert_eq!(state.balance(&addr(2)), wei(7));
        assert_eq!(state.nonce(&addr(2)), 0);
        for unknown in [addr(3), addr(99)] {
            assert_eq!(state.balance(&unknown), U256::ZERO);
            assert_eq!(state.nonce(&unknown), 0);
            assert_eq!(state.account(&unknown), None);
        }
        assert_eq!(state.total_balance(), wei(12));
        assert_eq!(state.burned(), U256::ZERO);
        assert_eq!(state.root(), reference_root(&state));
    }

    #[test]
    fn genesis_refusals() {
        let a = |address, balance| GenesisAccount { address, balance };
        assert_eq!(
            State::from_genesis(CHAIN, &[a(addr(1), wei(1)), a(addr(1), wei(2))]).unwrap_err(),
            GenesisError::DuplicateAccount(addr(1))
        );
        assert_eq!(
            State::from_genesis(CHAIN, &[a(addr(1), U256::MAX), a(addr(2), wei(1))]).unwrap_err(),
            GenesisError::SupplyOverflow
        );
        // Exactly the maximum supply is fine.
        let mut state =
            State::from_genesis(CHAIN, &[a(addr(1), U256::MAX - wei(1)), a(addr(2), wei(1))])
                .unwrap();
        assert_eq!(state.total_balance(), U256::MAX);
        // ... and transfers stay within it.
        let outcome = state
            .execute_block(&[free(addr(2), 0, addr(1), 0)], None, 0)
            .unwrap();
        assert_eq!(outcome.burned, U256::ZERO);
        assert_eq!(state.total_balance(), U256::MAX);
    }

    #[test]
    fn empty_state_root_is_the_empty_tree() {
        let mut state = State::from_genesis(CHAIN, &[]).unwrap();
        let empty = empty_hashes();
        assert_eq!(state.root(), empty[0]);
        assert_eq!(state.root(), reference_root(&state));
        assert_eq!(empty[16], keccak256(&[LEAF_TAG]));
    }

    #[test]
    fn sparse_reference_matches_a_dense_tree() {
        // The dense definition: all 65,536 leaves hashed level by level.
        let mut state = genesis(&[(addr(1), 1), (addr(2), 2), (addr(3), 3)]);
        let mut level: Vec<Hash32> = (0..BUCKETS)
            .map(|bucket| {
                let mut bytes = vec![LEAF_TAG];
                let mut members: Vec<&Slot> = state
                    .slots
                    .iter()
                    .filter(|s| usize::from(bucket_of(&s.address)) == bucket)
                    .collect();
                members.sort_by_key(|s| s.address);
                for s in members {
                    put_entry(&mut bytes, &s.address, &s.account);
                }
                keccak256(&bytes)
            })
            .collect();
        while level.len() > 1 {
            level = level
                .chunks_exact(2)
                .map(|pair| node_hash(&pair[0], &pair[1]))
                .collect();
        }
        assert_eq!(level[0], reference_root(&state));
        assert_eq!(state.root(), level[0]);
    }

    #[test]
    fn transfer_moves_value_and_splits_fees() {
        let (alice, bob, proposer) = (addr(1), addr(2), addr(3));
        let mut state = genesis(&[(alice, ETHER), (bob, 10)]);
        // base fee 10, fee cap 100, tip 3: price 13.
        let outcome = state
            .execute_block(&[tx(alice, 0, bob, 1_000)], Some(proposer), 10)
            .unwrap();
        assert_eq!(state.balance(&alice), wei(ETHER - 1_000 - 21_000 * 13));
        assert_eq!(state.nonce(&alice), 1);
        assert_eq!(state.balance(&bob), wei(10 + 1_000));
        assert_eq!(state.nonce(&bob), 0);
        assert_eq!(state.balance(&proposer), wei(21_000 * 3));
        assert_eq!(outcome.proposer_fees, wei(21_000 * 3));
        assert_eq!(outcome.burned, wei(21_000 * 10));
        assert_eq!(state.burned(), wei(21_000 * 10));
        assert_eq!(state.height(), 1);
        assert_eq!(state.total_balance() + state.burned(), wei(ETHER + 10));
    }

    #[test]
    fn fee_cap_limits_the_price() {
        let (alice, bob) = (addr(1), addr(2));
        let mut state = genesis(&[(alice, ETHER)]);
        // base fee 99, cap 100, tip 3: price min(100, 102) = 100, priority part 1.
        let outcome = state
            .execute_block(&[tx(alice, 0, bob, 1)], Some(addr(3)), 99)
            .unwrap();
        assert_eq!(state.balance(&alice), wei(ETHER - 1 - 21_000 * 100));
        assert_eq!(outcome.proposer_fees, wei(21_000));
        assert_eq!(outcome.burned, wei(21_000 * 99));
    }

    #[test]
    fn legacy_price_pays_the_difference_to_the_proposer() {
        let (alice, bob, proposer) = (addr(1), addr(2), addr(3));
        let mut state = genesis(&[(alice, ETHER)]);
        for tx_type in [TxType::Legacy, TxType::Eip2930] {
            let mut t = tx(alice, state.nonce(&alice), bob, 5);
            t.tx_type = tx_type;
            t.max_fee_per_gas = 50;
            t.max_priority_fee_per_gas = 50;
            let outcome = state.execute_block(&[t], Some(proposer), 20).unwrap();
            assert_eq!(outcome.burned, wei(21_000 * 20));
            assert_eq!(outcome.proposer_fees, wei(21_000 * 30));
        }
        assert_eq!(state.balance(&proposer), wei(2 * 21_000 * 30));
        assert_eq!(state.total_balance() + state.burned(), wei(ETHER));
    }

    #[test]
    fn without_a_recipient_the_priority_fee_is_burned() {
        let (alice, bob) = (addr(1), addr(2));
        let mut state = genesis(&[(alice, ETHER)]);
        let outcome = state
            .execute_block(&[tx(alice, 0, bob, 1), tx(alice, 1, bob, 1)], None, 10)
            .unwrap();
        assert_eq!(outcome.burned, wei(2 * 21_000 * 13));
        assert_eq!(outcome.proposer_fees, U256::ZERO);
        assert_eq!(state.burned(), wei(2 * 21_000 * 13));
        assert_eq!(state.len(), 2);
        assert_eq!(state.total_balance() + state.burned(), wei(ETHER));
    }

    #[test]
    fn receipts_count_gas_and_heights() {
        let (alice, bob) = (addr(1), addr(2));
        let mut state = genesis(&[(alice, ETHER)]);
        let empty = state.execute_block(&[], Some(addr(9)), 7).unwrap();
        assert_eq!(empty.height, 1);
        assert!(empty.receipts.is_empty());
        assert_eq!(empty.gas_used, 0);
        assert_eq!(state.account(&addr(9)), None, "no fees, no account");
        let block: Vec<DecodedTx> = (0..3).map(|n| tx(alice, n, bob, 1)).collect();
        let outcome = state.execute_block(&block, Some(addr(9)), 7).unwrap();
        assert_eq!(outcome.height, 2);
        assert_eq!(outcome.gas_used, 3 * TRANSFER_GAS);
        for (i, receipt) in outcome.receipts.iter().enumerate() {
            assert_eq!(
                *receipt,
                Receipt {
                    status: true,
                    gas_used: TRANSFER_GAS,
                    cumulative_gas_used: (i as u64 + 1) * TRANSFER_GAS,
                    block_height: 2,
                    index: i as u32,
                }
            );
        }
        assert_eq!(state.height(), 2);
    }

    #[test]
    fn self_transfer_pays_only_the_fee_and_nonces_follow_each_other() {
        let alice = addr(1);
        let mut state = genesis(&[(alice, ETHER)]);
        let block: Vec<DecodedTx> = (0..5).map(|n| tx(alice, n, alice, ETHER / 2)).collect();
        state.execute_block(&block, None, 10).unwrap();
        assert_eq!(state.nonce(&alice), 5);
        assert_eq!(state.balance(&alice), wei(ETHER - 5 * 21_000 * 13));
        assert_eq!(state.len(), 1);
    }

    #[test]
    fn zero_value_creates_no_recipient_and_a_free_tx_creates_its_sender() {
        let (alice, stranger) = (addr(1), addr(2));
        let mut state = genesis(&[(alice, ETHER)]);
        state
            .execute_block(&[tx(alice, 0, stranger, 0)], None, 0)
            .unwrap();
        assert_eq!(state.account(&stranger), None);
        // An unknown sender with a zero-cost transaction (price 0, value 0) is valid.
        state
            .execute_block(&[free(stranger, 0, alice, 0)], None, 0)
            .unwrap();
        assert_eq!(
            state.account(&stranger),
            Some(Account {
                nonce: 1,
                balance: U256::ZERO
            })
        );
        assert_eq!(state.root(), reference_root(&state));
    }

    #[test]
    fn signed_transactions_of_every_type_execute() {
        let secret = keccak256(b"state-test-key");
        let sender = address_of_secret(&secret).unwrap();
        let bob = addr(2);
        let mut state = genesis(&[(sender, ETHER)]);
        let types = [TxType::Legacy, TxType::Eip2930, TxType::Eip1559];
        let block: Vec<DecodedTx> = types
            .iter()
            .enumerate()
            .map(|(nonce, &tx_type)| {
                let transfer = Transfer {
                    chain_id: CHAIN,
                    nonce: nonce as u64,
                    to: bob,
                    value: wei(1_000),
                    gas_limit: 30_000,
                    max_fee_per_gas: 50,
                    max_priority_fee_per_gas: 2,
                };
                decode_transaction(&sign_transfer(&secret, tx_type, &transfer).unwrap()).unwrap()
            })
            .collect();
        let outcome = state.execute_block(&block, Some(addr(3)), 40).unwrap();
        // Legacy and EIP-2930 pay 50 (tip 10); EIP-1559 pays 42 (tip 2).
        assert_eq!(outcome.proposer_fees, wei(21_000 * (10 + 10 + 2)));
        assert_eq!(outcome.burned, wei(3 * 21_000 * 40));
        assert_eq!(state.balance(&bob), wei(3_000));
        assert_eq!(
            state.balance(&sender),
            wei(ETHER - 3_000 - 21_000 * (50 + 50 + 42))
        );
        assert_eq!(state.nonce(&sender), 3);
    }

    /// Executes `block` expecting transaction `index` to be refused with `reason`, and checks
    /// that nothing changed.
    fn assert_refused(
        state: &mut State,
        block: &[DecodedTx],
        base_fee: u128,
        index: usize,
        reason: TxRefusal,
    ) {
        let before = fingerprint(state);
        let (height, burned) = (state.height(), state.burned());
        let err = state
            .execute_block(block, Some(addr(77)), base_fee)
            .unwrap_err();
        assert_eq!(
            err,
            BlockError::InvalidTransaction {
                index,
                hash: block[index].hash,
                reason
            }
        );
        assert!(err.to_string().contains(&format!("transaction {index} ")));
        assert_eq!(fingerprint(state), before);
        assert_eq!((state.height(), state.burned()), (height, burned));
        assert_eq!(state.account(&addr(77)), None);
        assert_eq!(state.root(), reference_root(state));
    }

    #[test]
    fn every_refusal_leaves_the_state_unchanged() {
        let (alice, bob, carol) = (addr(1), addr(2), addr(3));
        let mut state = genesis(&[(alice, ETHER), (bob, 21_000 * 100 + 50)]);
        // A valid prefix that touches old accounts and creates a new one (carol).
        let prefix = || vec![tx(alice, 0, bob, 7), tx(alice, 1, carol, 9)];
        let with = |bad: DecodedTx| {
            let mut block = prefix();
            block.push(bad);
            block
        };
        let base = tx(bob, 0, alice, 50);

        let mut t = base.clone();
        t.chain_id = 1;
        let reason = TxRefusal::WrongChainId {
            expected: CHAIN,
            got: 1,
        };
        assert_refused(&mut state, &with(t), 10, 2, reason);

        let mut t = base.clone();
        t.to = None;
        assert_refused(&mut state, &with(t), 10, 2, TxRefusal::ContractCreation);

        let mut t = base.clone();
        t.input_len = 4;
        assert_refused(&mut state, &with(t), 10, 2, TxRefusal::CallData { len: 4 });

        let mut t = base.clone();
        t.gas_limit = 20_999;
        let reason = TxRefusal::GasLimitTooLow { gas_limit: 20_999 };
        assert_refused(&mut state, &with(t), 10, 2, reason);

        let reason = TxRefusal::FeeCapBelowBaseFee {
            max_fee_per_gas: 100,
            base_fee: 101,
        };
        // With base fee 101 the prefix is refused already (same fee cap).
        assert_refused(&mut state, &with(base.clone()), 101, 0, reason);

        let mut t = base.clone();
        t.max_priority_fee_per_gas = 101;
        let reason = TxRefusal::TipAboveFeeCap {
            max_priority_fee_per_gas: 101,
            max_fee_per_gas: 100,
        };
        assert_refused(&mut state, &with(t), 10, 2, reason);

        for nonce in [1, u64::MAX] {
            let mut t = base.clone();
            t.nonce = nonce;
            let reason = TxRefusal::WrongNonce {
                expected: 0,
                got: nonce,
            };
            assert_refused(&mut state, &with(t), 10, 2, reason);
        }
        // A replay of the prefix's first transaction inside the block.
        let mut block = prefix();
        block.push(tx(alice, 0, bob, 7));
        let reason = TxRefusal::WrongNonce {
            expected: 2,
            got: 0,
        };
        assert_refused(&mut state, &block, 10, 2, reason);

        // bob holds 21,000 × 100 + 7 (+ 50 at genesis) after the prefix: the up-front cost is
        // value + 21,000 × 100 (the fee cap, not the price).
        let mut t = base.clone();
        t.value = wei(58);
        let reason = TxRefusal::InsufficientBalance {
            needed: wei(21_000 * 100 + 58),
            balance: wei(21_000 * 100 + 57),
        };
        assert_refused(&mut state, &with(t), 10, 2, reason);
        let mut t = base.clone();
        t.gas_limit = 21_001;
        t.value = U256::ZERO;
        let reason = TxRefusal::InsufficientBalance {
            needed: wei(21_001 * 100),
            balance: wei(21_000 * 100 + 57),
        };
        assert_refused(&mut state, &with(t), 10, 2, reason);
        let mut t = base.clone();
        t.value = U256::MAX;
        assert_refused(&mut state, &with(t), 10, 2, TxRefusal::CostOverflow);
        // An unknown sender has nothing.
        let reason = TxRefusal::InsufficientBalance {
            needed: wei(21_000 * 100 + 1),
            balance: U256::ZERO,
        };
        assert_refused(&mut state, &with(tx(addr(50), 0, alice, 1)), 10, 2, reason);

        // Exactly enough passes: 21,000 × 100 + 57.
        let mut t = base.clone();
        t.value = wei(57);
        state.execute_block(&with(t), None, 10).unwrap();
        assert_eq!(state.balance(&bob), wei(21_000 * (100 - 13)));
        assert_eq!(state.balance(&carol), wei(9));
    }

    #[test]
    fn nonce_overflow_is_refused() {
        let alice = addr(1);
        let mut state = genesis(&[(addr(2), 1)]);
        force_account(
            &mut state,
            alice,
            Account {
                nonce: u64::MAX,
                balance: wei(ETHER),
            },
        );
        let t = tx(alice, u64::MAX, addr(2), 1);
        assert_refused(&mut state, &[t], 0, 0, TxRefusal::NonceOverflow);
    }

    #[test]
    fn too_many_transactions_is_refused_up_front() {
        let mut state = genesis(&[(addr(1), ETHER)]);
        let before = fingerprint(&mut state);
        let block = vec![tx(addr(1), 0, addr(2), 1); MAX_BLOCK_TXS + 1];
        assert_eq!(
            state.execute_block(&block, None, 0).unwrap_err(),
            BlockError::TooManyTransactions {
                count: MAX_BLOCK_TXS + 1,
                max: MAX_BLOCK_TXS
            }
        );
        assert_eq!(fingerprint(&mut state), before);
    }

    #[test]
    fn the_last_height_is_refused() {
        let state = genesis(&[(addr(1), ETHER)]);
        let mut bytes = state.encode_snapshot();
        bytes[20..28].copy_from_slice(&u64::MAX.to_be_bytes());
        let mut state = State::decode_snapshot(&reseal(bytes)).unwrap();
        let before = fingerprint(&mut state);
        assert_eq!(
            state.execute_block(&[], None, 0).unwrap_err(),
            BlockError::HeightOverflow
        );
        assert_eq!(fingerprint(&mut state), before);
    }

    #[test]
    fn root_changes_on_every_balance_and_nonce_change() {
        let accounts: Vec<(Address, u128)> =
            (0..200).map(|i| (addr(i), 1_000 + i as u128)).collect();
        let mut state = genesis(&accounts);
        let mut seen = std::collections::HashSet::new();
        assert!(seen.insert(state.root()));
        for &(a, _) in &accounts {
            let before = state.account(&a).unwrap();
            let mut after = before;
            after.balance += wei(1);
            force_account(&mut state, a, after);
            assert!(seen.insert(state.root()), "balance change kept the root");
            after.nonce += 1;
            force_account(&mut state, a, after);
            assert!(seen.insert(state.root()), "nonce change kept the root");
        }
        // A 1-wei transfer changes it too, and the root is the from-scratch one.
        state
            .execute_block(&[free(addr(0), 1, addr(1), 1)], None, 0)
            .unwrap();
        assert!(seen.insert(state.root()));
        assert_eq!(state.root(), reference_root(&state));
    }

    #[test]
    fn root_is_stable_without_changes_and_after_refused_blocks() {
        let mut state = genesis(&[(addr(1), ETHER), (addr(2), 5)]);
        let root = state.root();
        assert_eq!(state.root(), root);
        let _ = state.execute_block(
            &[tx(addr(1), 0, addr(3), 1), tx(addr(2), 0, addr(1), 1)],
            None,
            10,
        );
        assert_eq!(state.root(), root);
        assert_eq!(
            state.encode_snapshot(),
            genesis(&[(addr(2), 5), (addr(1), ETHER)]).encode_snapshot()
        );
    }

    #[test]
    fn a_discarded_tentative_block_leaves_no_trace() {
        let mut state = genesis(&[(addr(1), ETHER), (addr(2), 5 * ETHER)]);
        let before = fingerprint(&mut state);
        let block = [
            tx(addr(1), 0, addr(3), 7),
            tx(addr(2), 0, addr(4), 9),
            tx(addr(1), 1, addr(2), 1),
        ];
        let outcome = state.execute_tentative(&block, Some(addr(5)), 10).unwrap();
        assert!(state.has_tentative());
        assert_eq!(state.height(), 1);
        assert_eq!(state.balance(&addr(3)), wei(7));
        let tentative_root = state.root();
        assert_ne!(tentative_root, before.1);
        assert_eq!(tentative_root, reference_root(&state));
        state.discard_tentative();
        assert!(!state.has_tentative());
        assert_eq!(state.height(), 0);
        assert_eq!(state.burned(), U256::ZERO);
        assert_eq!(fingerprint(&mut state), before);
        assert_eq!(state.root(), reference_root(&state));

        // Executing it again and confirming gives what `execute_block` gives.
        let again = state.execute_tentative(&block, Some(addr(5)), 10).unwrap();
        assert_eq!(again, outcome);
        state.confirm_tentative();
        state.discard_tentative(); // nothing left to discard
        let mut direct = genesis(&[(addr(1), ETHER), (addr(2), 5 * ETHER)]);
        assert_eq!(
            direct.execute_block(&block, Some(addr(5)), 10).unwrap(),
            outcome
        );
        assert_eq!(fingerprint(&mut state), fingerprint(&mut direct));
        assert_eq!(state.root(), tentative_root);
    }

    #[test]
    #[should_panic(expected = "already applied tentatively")]
    fn a_second_tentative_block_is_a_bug() {
        let mut state = genesis(&[(addr(1), ETHER)]);
        state.execute_tentative(&[], None, 10).unwrap();
        let _ = state.execute_tentative(&[], None, 10);
    }

    #[test]
    fn snapshot_round_trip() {
        let mut state = genesis(&[(addr(1), ETHER), (addr(2), 5)]);
        state
            .execute_block(&[tx(addr(1), 0, addr(3), 1)], Some(addr(4)), 10)
            .unwrap();
        let bytes = state.encode_snapshot();
        assert_eq!(
            bytes.len(),
            SNAPSHOT_HEADER_BYTES + 4 * ENTRY_BYTES + SNAPSHOT_CHECKSUM_BYTES
        );
        assert_eq!(&bytes[..8], b"CCSTATE\0");
        let mut decoded = State::decode_snapshot(&bytes).unwrap();
        assert_eq!(decoded.encode_snapshot(), bytes);
        assert_eq!(decoded.root(), state.root());
        assert_eq!(decoded.height(), 1);
        assert_eq!(decoded.chain_id(), CHAIN);
        assert_eq!(decoded.burned(), state.burned());
        for i in 1..=4 {
            assert_eq!(decoded.account(&addr(i)), state.account(&addr(i)));
        }
        // Both go on identically.
        let next = [tx(addr(1), 1, addr(5), 2)];
        let a = state.execute_block(&next, Some(addr(4)), 10).unwrap();
        let b = decoded.execute_block(&next, Some(addr(4)), 10).unwrap();
        assert_eq!(a, b);
        assert_eq!(decoded.root(), state.root());
        assert_eq!(decoded.encode_snapshot(), state.encode_snapshot());
    }

    /// Re-seals `bytes` with a correct checksum after an edit.
    fn reseal(mut bytes: Vec<u8>) -> Vec<u8> {
        let body = bytes.len() - SNAPSHOT_CHECKSUM_BYTES;
        let checksum = xxh3(&bytes[..body]);
        bytes[body..].copy_from_slice(&checksum.to_be_bytes());
        bytes
    }

    #[test]
    fn snapshot_refusals() {
        let state = genesis(&[(addr(1), ETHER), (addr(2), 5), (addr(3), 6)]);
        let good = state.encode_snapshot();
        let decode = |bytes: &[u8]| State::decode_snapshot(bytes).unwrap_err();
        let min = SNAPSHOT_HEADER_BYTES + SNAPSHOT_CHECKSUM_BYTES;
        assert_eq!(
            decode(&good[..min - 1]),
            SnapshotError::TooShort { len: min - 1, min }
        );
        assert_eq!(decode(&[]), SnapshotError::TooShort { len: 0, min });

        let mut bad = good.clone();
        bad[0] ^= 1;
        assert_eq!(decode(&bad), SnapshotError::BadMagic);

        let mut bad = good.clone();
        bad[8..12].copy_from_slice(&2u32.to_be_bytes());
        assert_eq!(decode(&reseal(bad)), SnapshotError::UnsupportedVersion(2));

        let mut bad = good.clone();
        bad[SNAPSHOT_HEADER_BYTES + 30] ^= 0x40;
        assert!(matches!(
            decode(&bad),
            SnapshotError::ChecksumMismatch { .. }
        ));
        let mut bad = good.clone();
        bad.truncate(good.len() - 1);
        assert!(matches!(
            decode(&bad),
            SnapshotError::ChecksumMismatch { .. }
        ));

        // Absurd counts are refused before any allocation.
        for count in [u64::MAX, MAX_ACCOUNTS as u64 + 1] {
            let mut bad = good.clone();
            bad[60..68].copy_from_slice(&count.to_be_bytes());
            assert_eq!(decode(&reseal(bad)), SnapshotError::TooManyAccounts(count));
        }
        for count in [2u64, 4, MAX_ACCOUNTS as u64] {
            let mut bad = good.clone();
            bad[60..68].copy_from_slice(&count.to_be_bytes());
            assert_eq!(
                decode(&reseal(bad)),
                SnapshotError::LengthMismatch {
                    count,
                    entry_bytes: 3 * ENTRY_BYTES
                }
            );
        }

        let entry = |i: usize| SNAPSHOT_HEADER_BYTES + i * ENTRY_BYTES;
        // Swapped entries are out of order; a repeated entry too.
        let mut bad = good.clone();
        let (first, second) = (
            good[entry(0)..entry(1)].to_vec(),
            good[entry(1)..entry(2)].to_vec(),
        );
        bad[entry(0)..entry(1)].copy_from_slice(&second);
        bad[entry(1)..entry(2)].copy_from_slice(&first);
        assert_eq!(decode(&reseal(bad)), SnapshotError::NotCanonical(1));
        let mut bad = good.clone();
        bad[entry(1)..entry(2)].copy_from_slice(&first);
        assert_eq!(decode(&reseal(bad)), SnapshotError::NotCanonical(1));

        // An empty account (nonce 0, balance 0).
        let mut bad = good.clone();
        bad[entry(2) + 20..entry(3)].fill(0);
        assert_eq!(decode(&reseal(bad)), SnapshotError::EmptyAccount(2));

        // Balances plus burned beyond 2^256 - 1.
        let mut bad = good.clone();
        bad[28..60].fill(0xff);
        assert_eq!(decode(&reseal(bad)), SnapshotError::SupplyOverflow);
    }

    /// A block of valid transfers built from `ops` against a model of balances and nonces,
    /// which it updates. Each op is (sender, recipient, value seed, fee kind) over `pool`.
    struct Model {
        accounts: BTreeMap<Address, Account>,
        burned: U256,
    }

    impl Model {
        fn get(&self, a: &Address) -> Account {
            self.accounts.get(a).copied().unwrap_or_default()
        }

        fn build_block(
            &mut self,
            pool: &[Address],
            ops: &[(usize, usize, u128, u8)],
            recipient: Option<Address>,
            base_fee: u128,
        ) -> Vec<DecodedTx> {
            let mut block = Vec::new();
            let mut tips = U256::ZERO;
            for &(s, r, seed, kind) in ops {
                let (sender, to) = (pool[s % pool.len()], pool[r % pool.len()]);
                let mut t = tx(sender, self.get(&sender).nonce, to, 0);
                t.hash = keccak256(
                    &(block.len() as u64 + 1000 * self.accounts.len() as u64).to_be_bytes(),
                );
                match kind % 3 {
                    0 => {
                        t.tx_type = TxType::Legacy;
                        t.max_fee_per_gas = base_fee + u128::from(kind);
                        t.max_priority_fee_per_gas = t.max_fee_per_gas;
                    }
                    1 => {
                        t.max_fee_per_gas = base_fee + u128::from(kind / 3);
                        t.max_priority_fee_per_gas = u128::from(kind % 7).min(t.max_fee_per_gas);
                    }
                    _ => {
                        t.gas_limit = 21_000 + u64::from(kind) * 100;
                        t.max_fee_per_gas = base_fee * 2 + 1;
                        t.max_priority_fee_per_gas = 1;
                    }
                }
                let up_front = U256::from(t.gas_limit) * U256::from(t.max_fee_per_gas);
                let balance = self.get(&sender).balance;
                if balance < up_front {
                    continue;
                }
                let spare = balance - up_front;
                t.value = if spare.is_zero() {
                    U256::ZERO
                } else {
                    U256::from(seed) % spare
                };
                let price = t.effective_gas_price(base_fee);
                let fee = U256::from(21_000u64) * U256::from(price);
                let mut from = self.get(&sender);
                from.nonce += 1;
                from.balance -= fee + t.value;
                self.accounts.insert(sender, from);
                let mut dest = self.get(&to);
                dest.balance += t.value;
                if !dest.is_empty() {
                    self.accounts.insert(to, dest);
                }
                self.burned += U256::from(21_000u64) * U256::from(base_fee);
                tips += fee - U256::from(21_000u64) * U256::from(base_fee);
                block.push(t);
            }
            match recipient {
                Some(r) if !tips.is_zero() => {
                    let mut acc = self.get(&r);
                    acc.balance += tips;
                    self.accounts.insert(r, acc);
                }
                Some(_) => {}
                None => self.burned += tips,
            }
            block
        }
    }

    fn pool() -> Vec<Address> {
        (0..12).map(addr).collect()
    }

    const GENESIS_BALANCE: u128 = 1_000_000_000_000;

    fn start(funded: usize) -> (State, Model) {
        let balances: Vec<(Address, u128)> = pool()[..funded]
            .iter()
            .map(|&a| (a, GENESIS_BALANCE))
            .collect();
        let state = genesis(&balances);
        let accounts = balances
            .iter()
            .map(|&(a, b)| {
                (
                    a,
                    Account {
                        nonce: 0,
                        balance: wei(b),
                    },
                )
            })
            .collect();
        (
            state,
            Model {
                accounts,
                burned: U256::ZERO,
            },
        )
    }

    type Ops = Vec<(usize, usize, u128, u8)>;

    fn blocks_strategy() -> impl Strategy<Value = Vec<(Ops, Option<usize>, u128)>> {
        prop::collection::vec(
            (
                prop::collection::vec((0usize..12, 0usize..12, any::<u128>(), any::<u8>()), 0..12),
                prop::option::of(0usize..12),
                0u128..1_000,
            ),
            1..6,
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn random_blocks_follow_the_model_conserve_supply_and_keep_the_root(
            funded in 1usize..8,
            blocks in blocks_strategy(),
        ) {
            let pool = pool();
            let (mut state, mut model) = start(funded);
            let supply = wei(GENESIS_BALANCE) * U256::from(funded);
            for (height, (ops, recipient, base_fee)) in blocks.iter().enumerate() {
                let recipient = recipient.map(|r| pool[r]);
                let block = model.build_block(&pool, ops, recipient, *base_fee);
                let outcome = state.execute_block(&block, recipient, *base_fee).unwrap();
                prop_assert_eq!(outcome.height, height as u64 + 1);
                prop_assert_eq!(outcome.receipts.len(), block.len());
                prop_assert_eq!(state.burned(), model.burned);
                prop_assert_eq!(state.total_balance() + state.burned(), supply);
                prop_assert_eq!(state.len(), model.accounts.len());
                for a in &pool {
                    prop_assert_eq!(state.account(a), model.accounts.get(a).copied());
                }
                // Check the root only after some blocks, so dirty marks accumulate.
                if height % 2 == 1 {
                    prop_assert_eq!(state.root(), reference_root(&state));
                }
            }
            prop_assert_eq!(state.root(), reference_root(&state));
            // And the snapshot carries all of it.
            let mut decoded = State::decode_snapshot(&state.encode_snapshot()).unwrap();
            prop_assert_eq!(decoded.root(), state.root());
            prop_assert_eq!(decoded.burned(), state.burned());
            prop_assert_eq!(decoded.height(), state.height());
        }

        #[test]
        fn an_invalid_transaction_anywhere_rolls_the_block_back(
            funded in 1usize..8,
            blocks in blocks_strategy(),
            position in any::<prop::sample::Index>(),
            kind in 0u8..6,
        ) {
            let pool = pool();
            let (mut state, mut model) = start(funded);
            for (ops, recipient, base_fee) in &blocks {
                let recipient = recipient.map(|r| pool[r]);
                let snapshot = model.accounts.clone();
                let burned = model.burned;
                let mut block = model.build_block(&pool, ops, recipient, *base_fee);
                model.accounts = snapshot;
                model.burned = burned;
                let at = position.index(block.len() + 1);
                // A transaction invalid whatever precedes it.
                let mut bad = tx(pool[0], 0, pool[1], 0);
                bad.max_fee_per_gas = *base_fee;
                bad.max_priority_fee_per_gas = 0;
                match kind {
                    0 => bad.chain_id = CHAIN + 1,
                    1 => bad.to = None,
                    2 => bad.input_len = 1,
                    3 => bad.gas_limit = 0,
                    4 => bad.nonce = u64::MAX,
                    _ => bad.value = wei(u128::MAX),
                }
                block.insert(at, bad);
                let before = fingerprint(&mut state);
                let err = state.execute_block(&block, recipient, *base_fee).unwrap_err();
                let is_at = matches!(err, BlockError::InvalidTransaction { index, .. } if index == at);
                prop_assert!(is_at, "{:?} not at {}", err, at);
                prop_assert_eq!(fingerprint(&mut state), before);
                prop_assert_eq!(state.root(), reference_root(&state));
                // The block without it is still valid afterwards.
                block.remove(at);
                let rebuilt = model.build_block(&pool, ops, recipient, *base_fee);
                prop_assert_eq!(&rebuilt, &block);
                state.execute_block(&block, recipient, *base_fee).unwrap();
            }
        }

        #[test]
        fn root_is_independent_of_insertion_order(
            balances in prop::collection::vec(1u128.., 1..40),
            seed in any::<u64>(),
        ) {
            let accounts: Vec<GenesisAccount> = balances
                .iter()
                .enumerate()
                .map(|(i, &b)| GenesisAccount { address: addr(i as u64), balance: wei(b) })
                .collect();
            let mut shuffled = accounts.clone();
            // Deterministic Fisher-Yates from the seed.
            let mut x = seed | 1;
            for i in (1..shuffled.len()).rev() {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                shuffled.swap(i, (x % (i as u64 + 1)) as usize);
            }
            let mut a = State::from_genesis(CHAIN, &accounts).unwrap();
            let mut b = State::from_genesis(CHAIN, &shuffled).unwrap();
            prop_assert_eq!(a.root(), b.root());
            prop_assert_eq!(a.encode_snapshot(), b.encode_snapshot());
            prop_assert_eq!(a.root(), reference_root(&a));
            // Accounts created by execution in a different order give the same root too.
            let mut c = State::from_genesis(CHAIN, &accounts[..1]).unwrap();
            let mut d = State::from_genesis(CHAIN, &accounts[..1]).unwrap();
            let rich = accounts[0].address;
            let amounts: Vec<(Address, u128)> = (100..110).map(|i| (addr(i), i as u128)).collect();
            let forward: Vec<DecodedTx> = amounts
                .iter()
                .map(|&(to, v)| tx(rich, 0, to, v))
                .collect();
            let mut backward = forward.clone();
            backward.reverse();
            for (n, t) in forward.iter().enumerate() {
                let mut t = t.clone();
                t.max_fee_per_gas = 0;
                t.max_priority_fee_per_gas = 0;
                t.nonce = n as u64;
                t.value = U256::from(t.value.to::<u128>().min(balances[0] / 20));
                let _ = c.execute_block(&[t], None, 0);
            }
            for (n, t) in backward.iter().enumerate() {
                let mut t = t.clone();
                t.max_fee_per_gas = 0;
                t.max_priority_fee_per_gas = 0;
                t.nonce = n as u64;
                t.value = U256::from(t.value.to::<u128>().min(balances[0] / 20));
                let _ = d.execute_block(&[t], None, 0);
            }
            prop_assert_eq!(c.root(), reference_root(&c));
            prop_assert_eq!(c.root(), d.root());
        }

        #[test]
        fn random_bytes_never_panic_the_snapshot_decoder(
            bytes in prop::collection::vec(any::<u8>(), 0..600),
        ) {
            let _ = State::decode_snapshot(&bytes);
        }

        #[test]
        fn sealed_random_bodies_never_panic_the_snapshot_decoder(
            header in prop::collection::vec(any::<u8>(), 48),
            mut entries in prop::collection::vec(prop::collection::vec(any::<u8>(), 60), 0..8),
            sort in any::<bool>(),
            count_delta in prop::sample::select(vec![0i64, 0, 0, -1, 1]),
        ) {
            // Valid magic, version, count and checksum around random contents, so decoding
            // reaches the entries (in canonical order when `sort`).
            if sort {
                entries.sort_by_key(|e| {
                    let mut a = [0u8; 20];
                    a.copy_from_slice(&e[..20]);
                    (bucket_of(&a), a)
                });
            }
            let count = (entries.len() as i64 + count_delta).max(0) as u64;
            let mut bytes = SNAPSHOT_MAGIC.to_vec();
            bytes.extend_from_slice(&SNAPSHOT_VERSION.to_be_bytes());
            bytes.extend_from_slice(&header);
            bytes.extend_from_slice(&count.to_be_bytes());
            bytes.extend_from_slice(&entries.concat());
            bytes.extend_from_slice(&[0; 8]);
            let bytes = reseal(bytes);
            if let Ok(mut state) = State::decode_snapshot(&bytes) {
                prop_assert_eq!(state.encode_snapshot(), bytes);
                prop_assert_eq!(state.root(), reference_root(&state));
            }
        }

        #[test]
        fn mutated_snapshots_never_panic(
            edits in prop::collection::vec((any::<usize>(), any::<u8>()), 1..4),
            reseal_it in any::<bool>(),
        ) {
            let mut state = genesis(&[(addr(1), ETHER), (addr(2), 5), (addr(3), 6)]);
            state.execute_block(&[tx(addr(1), 0, addr(4), 3)], Some(addr(5)), 1).unwrap();
            let good = state.encode_snapshot();
            let mut bytes = good.clone();
            for (at, byte) in edits {
                let at = at % bytes.len();
                bytes[at] = byte;
            }
            let bytes = if reseal_it { reseal(bytes) } else { bytes };
            match State::decode_snapshot(&bytes) {
                Ok(decoded) => prop_assert_eq!(decoded.encode_snapshot(), bytes),
                Err(_) => prop_assert_ne!(bytes, good),
            }
        }
    }
}
