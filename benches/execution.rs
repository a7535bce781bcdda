//! Execution benchmarks: transfer execution and the state root of the exec shard's
//! [`State`].
//!
//! - `execute/transfers_10k_accounts`: one block of 10,000 signed-then-decoded EIP-1559
//!   transfers among 10,000 funded accounts (each sender once, recipients existing). The
//!   throughput unit is one transaction. Signing and sender recovery happen before the timed
//!   loop; each iteration executes the block on a fresh clone of the genesis state (the clone
//!   is not timed).
//! - `execute/transfers_to_new_accounts`: the same senders paying 10,000 fresh addresses, so
//!   every recipient is created (map insert, bucket keccak at commit).
//! - `root/after_10k_block/{100000,1000000}`: `State::root()` right after a 10,000-transfer
//!   block (20,000 touched accounts) with 100,000 and 1,000,000 accounts. Only `root()` is
//!   timed; its cost follows the touched accounts, not the total.
//! - `root/after_1k_block/{100000,1000000}`: the same after a 1,000-transfer block (2,000
//!   touched accounts).
//! - `root/full/1000000`: the first `root()` of a 1,000,000-account genesis (every bucket
//!   dirty), for contrast.
//! - `snapshot/{encode,decode}/100000`: snapshot of 100,000 accounts.
//!
//! Run with `cargo bench --bench execution`, one group with e.g.
//! `cargo bench --bench execution -- root`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use alloy_primitives::U256;
use criterion::{
    criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, SamplingMode, Throughput,
};

use corecell::config::genesis::{test_account_secret, GenesisAccount};
use corecell::crypto::tx::{
    address_of_secret, decode_transaction, sign_transfer, DecodedTx, Transfer, TxType,
};
use corecell::exec::state::{Address, State, TRANSFER_GAS};
use corecell::types::hash::keccak256;

const CHAIN_ID: u64 = 1001;
const ACCOUNTS: usize = 10_000;
const BLOCK: usize = 10_000;
const BASE_FEE: u128 = 25_000_000_000;
const BALANCE: u128 = 1_000_000 * 1_000_000_000_000_000_000;

/// A synthetic address (no key behind it): for states too large to sign for.
fn synthetic(i: u64) -> Address {
    let mut a = [0u8; 20];
    a.copy_from_slice(&keccak256(&i.to_be_bytes())[12..]);
    a
}

fn funded(addresses: &[Address]) -> Vec<GenesisAccount> {
    addresses
        .iter()
        .map(|&address| GenesisAccount {
            address,
            balance: U256::from(BALANCE),
        })
        .collect()
}

/// Signs and decodes one EIP-1559 transfer per secret, sender `i` paying `to(i)`.
fn signed_block(secrets: &[[u8; 32]], to: impl Fn(usize) -> Address) -> Vec<DecodedTx> {
    secrets
        .iter()
        .enumerate()
        .map(|(i, secret)| {
            let transfer = Transfer {
                chain_id: CHAIN_ID,
                nonce: 0,
                to: to(i),
                value: U256::from(1_000_000_000_000_000u64 + i as u64),
                gas_limit: TRANSFER_GAS,
                max_fee_per_gas: 2 * BASE_FEE,
                max_priority_fee_per_gas: 1_000_000_000,
            };
            let bytes = sign_transfer(secret, TxType::Eip1559, &transfer).expect("signs");
            decode_transaction(&bytes).expect("decodes")
        })
        .collect()
}

fn execute(c: &mut Criterion) {
    let secrets: Vec<[u8; 32]> = (0..ACCOUNTS as u64).map(test_account_secret).collect();
    let addresses: Vec<Address> = secrets
        .iter()
        .map(|s| address_of_secret(s).expect("valid key"))
        .collect();
    let genesis = State::from_genesis(CHAIN_ID, &funded(&addresses)).expect("genesis");
    let proposer = Some(synthetic(u64::MAX));

    let mut g = c.benchmark_group("execute");
    g.sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4))
        .sampling_mode(SamplingMode::Flat)
        .throughput(Throughput::Elements(BLOCK as u64));

    let existing = signed_block(&secrets[..BLOCK], |i| addresses[(i * 7919 + 1) % ACCOUNTS]);
    let fresh = signed_block(&secrets[..BLOCK], |i| synthetic(1_000_000 + i as u64));
    for (name, block) in [
        ("transfers_10k_accounts", &existing),
        ("transfers_to_new_accounts", &fresh),
    ] {
        // Check once, outside the timed loop, that the block is valid.
        let mut check = genesis.clone();
        let outcome = check
            .execute_block(block, proposer, BASE_FEE)
            .expect("valid block");
        assert_eq!(outcome.receipts.len(), BLOCK);
        g.bench_function(name, |b| {
            b.iter_batched(
                || genesis.clone(),
                |mut state| {
                    let outcome = state.execute_block(black_box(block), proposer, BASE_FEE);
                    (state, outcome)
                },
                BatchSize::PerIteration,
            )
        });
    }
    g.finish();
}

/// A block of `size` transfers among `addresses` at the senders' current nonces: sender
/// `k·i + round` (distinct), recipient another spread-out account.
fn synthetic_block(
    state: &State,
    addresses: &[Address],
    size: usize,
    round: usize,
) -> Vec<DecodedTx> {
    let n = addresses.len();
    (0..size)
        .map(|i| {
            let sender = addresses[(i * (n / size) + round) % n];
            let to = addresses[(i * 7919 + 13 * round + 1) % n];
            let nonce = state.nonce(&sender);
            DecodedTx {
                hash: keccak256(&[&sender[..], &nonce.to_be_bytes()].concat()),
                sender,
                tx_type: TxType::Eip1559,
                chain_id: CHAIN_ID,
                nonce,
                gas_limit: TRANSFER_GAS,
                max_fee_per_gas: 2 * BASE_FEE,
                max_priority_fee_per_gas: 1_000_000_000,
                to: Some(to),
                value: U256::from(1_000 + i as u64),
                input_len: 0,
                encoded_len: 110,
            }
        })
        .collect()
}

fn root(c: &mut Criterion) {
    let mut g = c.benchmark_group("root");
    g.sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4))
        .sampling_mode(SamplingMode::Flat);
    let proposer = Some(synthetic(u64::MAX));
    for n in [100_000usize, 1_000_000] {
        let addresses: Vec<Address> = (0..n as u64).map(synthetic).collect();
        let mut state = State::from_genesis(CHAIN_ID, &funded(&addresses)).expect("genesis");
        state.root();
        if n == 1_000_000 {
            g.bench_function(BenchmarkId::new("full", n), |b| {
                b.iter_batched(
                    || State::from_genesis(CHAIN_ID, &funded(&addresses)).expect("genesis"),
                    |mut state| (state.root(), state),
                    BatchSize::PerIteration,
                )
            });
        }
        let mut round = 0usize;
        for (name, size) in [("after_10k_block", BLOCK), ("after_1k_block", BLOCK / 10)] {
            g.bench_function(BenchmarkId::new(name, n), |b| {
                b.iter_custom(|iters| {
                    let mut timed = Duration::ZERO;
                    for _ in 0..iters {
                        let block = synthetic_block(&state, &addresses, size, round);
                        round += 1;
                        state
                            .execute_block(&block, proposer, BASE_FEE)
                            .expect("valid block");
                        let start = Instant::now();
                        black_box(state.root());
                        timed += start.elapsed();
                    }
                    timed
                })
            });
        }
    }
    g.finish();
}

fn snapshot(c: &mut Criterion) {
    let mut g = c.benchmark_group("snapshot");
    g.sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sampling_mode(SamplingMode::Flat);
    let n = 100_000usize;
    let addresses: Vec<Address> = (0..n as u64).map(synthetic).collect();
    let state = State::from_genesis(CHAIN_ID, &funded(&addresses)).expect("genesis");
    let bytes = state.encode_snapshot();
    g.throughput(Throughput::Elements(n as u64));
    g.bench_function(BenchmarkId::new("encode", n), |b| {
        b.iter(|| black_box(&state).encode_snapshot())
    });
    g.bench_function(BenchmarkId::new("decode", n), |b| {
        b.iter(|| State::decode_snapshot(black_box(&bytes)).expect("valid snapshot"))
    });
    g.finish();
}

criterion_group!(benches, execute, root, snapshot);
criterion_main!(benches);
