//! Mempool benchmarks: the exec shard's per-transaction work on the transfer path.
//!
//! - `admit/one_per_sender/1000`: 1,000 pre-signed transfers (legacy EIP-155, EIP-2930 and
//!   EIP-1559 in turn, as the testnet load sends them) from 1,000 senders, each offered once to
//!   an empty pool. This is what every client or gossiped transaction costs on arrival: the
//!   size and dedup checks, decoding, **sender recovery** (secp256k1), the shape, nonce and
//!   balance checks against the exec [`State`], and indexing. A fresh pool per iteration (made
//!   and dropped outside the timing).
//! - `admit/decode_recover_only/1000`: `decode_transaction` (envelope decoding and sender
//!   recovery, nothing else) of the same 1,000 transfers: the baseline the admissions are
//!   compared with, measured in the same run.
//! - `admit/four_per_sender/1000`: the same count from 250 senders with nonces 0..4 each, so
//!   three of every four admissions land behind a pooled predecessor of their sender.
//! - `admit/duplicate/1000`: the 1,000 transfers offered again to the pool that holds them:
//!   every one is refused `AlreadyKnown` before decoding (xxh3 key hit, confirmed by keccak
//!   identity). This is the cost of a re-gossiped transaction.
//! - `select/full_block/10000`: [`Mempool::select`] with the node's block limits (those of
//!   `TransferEngine::build`) from a pool of 10,000 executable transfers (2,500 senders with 4
//!   nonces each); the block takes all 10,000. The throughput unit is one selected transaction.
//!
//! The throughput unit everywhere is one transaction (criterion `elements`). Run with
//! `cargo bench --bench mempool`, one group with e.g. `cargo bench --bench mempool -- admit`.

use std::hint::black_box;
use std::time::Duration;

use alloy_primitives::U256;
use criterion::{
    criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, SamplingMode, Throughput,
};

use corecell::config::genesis::{test_account_secret, GenesisAccount};
use corecell::crypto::tx::{
    address_of_secret, decode_transaction, sign_transfer, Transfer, TxType,
};
use corecell::exec::mempool::{Mempool, MempoolConfig, PooledTx, Refusal};
use corecell::exec::state::{Address, State, TRANSFER_GAS};
use corecell::exec::transfer::BASE_FEE_WEI;
use corecell::types::{MAX_BLOCK_TXS, MAX_BLOCK_TX_BYTES};

const CHAIN_ID: u64 = 1001;
const BALANCE: u128 = 1_000_000 * 1_000_000_000_000_000_000;
const NOW_MS: u64 = 1_000_000;

/// `senders` funded genesis accounts (the testnet's deterministic dev keys).
struct Accounts {
    secrets: Vec<[u8; 32]>,
    addresses: Vec<Address>,
    state: State,
}

impl Accounts {
    fn new(senders: usize) -> Accounts {
        let secrets: Vec<[u8; 32]> = (0..senders as u64).map(test_account_secret).collect();
        let addresses: Vec<Address> = secrets
            .iter()
            .map(|s| address_of_secret(s).expect("valid key"))
            .collect();
        let genesis: Vec<GenesisAccount> = addresses
            .iter()
            .map(|&address| GenesisAccount {
                address,
                balance: U256::from(BALANCE),
            })
            .collect();
        let state = State::from_genesis(CHAIN_ID, &genesis).expect("genesis");
        Accounts {
            secrets,
            addresses,
            state,
        }
    }

    /// `per_sender` transfers from every account (nonces `0..per_sender`), sender `i` paying
    /// `i + 1`, transaction types in turn; ordered by nonce, then by sender.
    fn transfers(&self, per_sender: u64) -> Vec<Vec<u8>> {
        let n = self.secrets.len();
        let mut out = Vec::with_capacity(n * per_sender as usize);
        for nonce in 0..per_sender {
            for (i, secret) in self.secrets.iter().enumerate() {
                let transfer = Transfer {
                    chain_id: CHAIN_ID,
                    nonce,
                    to: self.addresses[(i + 1) % n],
                    value: U256::from(1u8),
                    gas_limit: TRANSFER_GAS,
                    max_fee_per_gas: 2 * BASE_FEE_WEI,
                    max_priority_fee_per_gas: 1_000_000_000,
                };
                let tx_type = [TxType::Legacy, TxType::Eip2930, TxType::Eip1559][out.len() % 3];
                out.push(sign_transfer(secret, tx_type, &transfer).expect("signs"));
            }
        }
        out
    }
}

fn empty_pool() -> Mempool {
    Mempool::new(MempoolConfig::new(CHAIN_ID), BASE_FEE_WEI)
}

/// A pool holding all of `txs`; panics if one is refused.
fn pool_of(txs: &[Vec<u8>], state: &State) -> Mempool {
    let mut pool = empty_pool();
    for tx in txs {
        pool.admit(tx, state, NOW_MS).expect("admitted");
    }
    assert_eq!(pool.len(), txs.len());
    pool
}

fn admit(c: &mut Criterion) {
    let mut g = c.benchmark_group("admit");
    g.sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sampling_mode(SamplingMode::Flat);

    for (name, senders, per_sender) in [("one_per_sender", 1000, 1), ("four_per_sender", 250, 4)] {
        let accounts = Accounts::new(senders);
        let txs = accounts.transfers(per_sender);
        // Outside the timing: every one is admitted into an empty pool.
        drop(pool_of(&txs, &accounts.state));
        g.throughput(Throughput::Elements(txs.len() as u64));
        if per_sender == 1 {
            // The baseline: decoding and sender recovery alone, on the same transactions.
            g.bench_function(BenchmarkId::new("decode_recover_only", txs.len()), |b| {
                b.iter(|| {
                    for tx in &txs {
                        let _ = black_box(decode_transaction(black_box(tx)));
                    }
                })
            });
        }
        g.bench_function(BenchmarkId::new(name, txs.len()), |b| {
            b.iter_batched(
                empty_pool,
                |mut pool| {
                    for tx in &txs {
                        let _ = black_box(pool.admit(black_box(tx), &accounts.state, NOW_MS));
                    }
                    pool
                },
                BatchSize::PerIteration,
            )
        });
    }

    let accounts = Accounts::new(1000);
    let txs = accounts.transfers(1);
    let mut pool = pool_of(&txs, &accounts.state);
    for tx in &txs {
        assert_eq!(
            pool.admit(tx, &accounts.state, NOW_MS).err(),
            Some(Refusal::AlreadyKnown)
        );
    }
    g.throughput(Throughput::Elements(txs.len() as u64));
    g.bench_function(BenchmarkId::new("duplicate", txs.len()), |b| {
        b.iter(|| {
            for tx in &txs {
                let _ = black_box(pool.admit(black_box(tx), &accounts.state, NOW_MS));
            }
        })
    });
    g.finish();
}

fn select(c: &mut Criterion) {
    let mut g = c.benchmark_group("select");
    g.sample_size(30)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    let accounts = Accounts::new(2500);
    let txs = accounts.transfers(4);
    let pool = pool_of(&txs, &accounts.state);
    /// The next block with the node's limits (`TransferEngine::build`).
    fn block<'a>(pool: &'a Mempool, state: &State) -> Vec<&'a PooledTx> {
        pool.select(
            state,
            MAX_BLOCK_TXS,
            MAX_BLOCK_TX_BYTES,
            pool.config().block_gas_limit,
            BASE_FEE_WEI,
        )
    }
    assert_eq!(
        block(&pool, &accounts.state).len(),
        txs.len(),
        "the block takes the whole pool"
    );
    g.throughput(Throughput::Elements(txs.len() as u64));
    g.bench_function(BenchmarkId::new("full_block", txs.len()), |b| {
        b.iter(|| block(black_box(&pool), &accounts.state))
    });
    g.finish();
}

criterion_group!(benches, admit, select);
criterion_main!(benches);
