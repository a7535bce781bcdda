//! Wire benchmarks: rkyv encoding, validation and in-place access of a 1,000-transaction block,
//! block identity hashes, frame decoding of vote streams and block frames, and the peer link's
//! record layer (sealing and opening 64 KiB and 512-byte writes, encrypted and integrity
//! only).
//!
//! Run all of them with `cargo bench --bench wire`, one group with e.g.
//! `cargo bench --bench wire -- frame`. See `perf/README.md`.

use std::hint::black_box;
use std::time::Duration;

use alloy_primitives::U256;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

use corecell::crypto::tx::{sign_transfer, Transfer, TxType};
use corecell::types::chain::{transactions_root, ArchivedBlock, SignedTransaction};
use corecell::types::frame::{self, encode_frame, Message};
use corecell::types::hash::keccak256;
use corecell::types::{
    signers, to_bytes, Block, BlockHeader, FinalizedBlock, FrameDecoder, Proposal,
    QuorumCertificate, Vote, VoteKind,
};

const CHAIN_ID: u64 = 1001;
const TXS: usize = 1_000;
const HEIGHT: u64 = 123_456;

/// 1,000 signed EIP-1559 value transfers (about 110 bytes each), from 10 senders.
fn transactions() -> Vec<SignedTransaction> {
    (0..TXS)
        .map(|i| {
            let mut secret = [0x11u8; 32];
            secret[31] = (i % 10) as u8 + 1;
            let mut to = [0u8; 20];
            to[..8].copy_from_slice(&(i as u64).to_be_bytes());
            let transfer = Transfer {
                chain_id: CHAIN_ID,
                nonce: (i / 10) as u64,
                to,
                value: U256::from(1_000_000_000_000_000u64 + i as u64),
                gas_limit: 21_000,
                max_fee_per_gas: 50_000_000_000,
                max_priority_fee_per_gas: 1_500_000_000,
            };
            SignedTransaction {
                bytes: sign_transfer(&secret, TxType::Eip1559, &transfer).expect("signs"),
            }
        })
        .collect()
}

fn block() -> Block {
    let transactions = transactions();
    let root = transactions_root(transactions.iter().map(|tx| tx.bytes.as_slice()));
    Block {
        header: BlockHeader {
            parent_hash: keccak256(b"parent"),
            height: HEIGHT,
            round: 0,
            timestamp_ms: 1_795_000_000_000,
            proposer: 3,
            randao_reveal: [0xa5; 96],
            mix: keccak256(b"mix"),
            transactions_root: root,
            state_root: keccak256(b"state"),
            committee_digest: keccak256(b"committee"),
        },
        transactions,
    }
}

/// A commit certificate shaped like a real one (22 signers of a council of 100). Frame decoding
/// checks only its shape, so the signature bytes need not verify.
fn certificate(block: &Block) -> QuorumCertificate {
    let mut bitmap = signers::empty(100);
    for i in 0..22 {
        signers::set(&mut bitmap, i * 4);
    }
    QuorumCertificate {
        kind: VoteKind::Commit,
        height: block.header.height,
        round: 0,
        block_hash: block.hash(),
        signers: bitmap,
        signature: [0x5a; 96],
    }
}

fn rkyv_block(c: &mut Criterion) {
    let block = block();
    let total_tx_bytes: usize = block.transactions.iter().map(|t| t.bytes.len()).sum();
    let bytes = to_bytes(&block);
    let archived: &ArchivedBlock = frame::access("block", &bytes).expect("valid archive");
    assert_eq!(archived.transactions.len(), TXS);
    eprintln!(
        "wire bench: {TXS} txs, {total_tx_bytes} tx bytes ({:.1} B/tx), block archive {} bytes",
        total_tx_bytes as f64 / TXS as f64,
        bytes.len()
    );

    let mut g = c.benchmark_group("rkyv");
    g.sample_size(50)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2));
    g.throughput(Throughput::Bytes(bytes.len() as u64));
    g.bench_function("encode_block_1000", |b| {
        b.iter(|| to_bytes(black_box(&block)))
    });
    g.bench_function("validate_block_1000", |b| {
        b.iter(|| {
            rkyv::access::<ArchivedBlock, rkyv::rancor::Error>(black_box(&bytes))
                .map(|a| a.transactions.len())
        })
    });
    g.throughput(Throughput::Elements(TXS as u64));
    // Reading through an already-validated archive: the cost after `access`.
    g.bench_function("read_tx_lens_1000", |b| {
        b.iter(|| {
            black_box(archived)
                .transactions
                .iter()
                .map(|tx| tx.bytes.len())
                .sum::<usize>()
        })
    });
    g.finish();

    let mut g = c.benchmark_group("block");
    g.sample_size(50)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2));
    g.bench_function("header_hash", |b| {
        b.iter(|| black_box(&block.header).hash())
    });
    g.bench_function("archived_header_hash", |b| {
        b.iter(|| black_box(&archived.header).hash())
    });
    g.throughput(Throughput::Bytes(total_tx_bytes as u64));
    g.bench_function("transactions_root_1000", |b| {
        b.iter(|| black_box(&block).computed_transactions_root())
    });
    g.finish();
}

fn frames(c: &mut Criterion) {
    let block = block();
    let mut g = c.benchmark_group("frame");
    g.sample_size(50)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2));

    // A stream of 1,000 COMMIT votes from 100 signers over 10 rounds, as one TCP read.
    let mut stream = Vec::new();
    for i in 0..1_000u32 {
        let vote = Vote {
            kind: VoteKind::Commit,
            height: HEIGHT,
            round: i / 100,
            block_hash: block.hash(),
            signer: i % 100,
            signature: [i as u8; 96],
        };
        stream.extend_from_slice(&encode_frame(&vote));
    }
    g.throughput(Throughput::Elements(1_000));
    g.bench_with_input(
        BenchmarkId::new("decode_votes", 1_000),
        &stream,
        |b, stream| {
            b.iter(|| {
                let mut decoder = FrameDecoder::new();
                let mut input = black_box(stream.as_slice());
                let mut n = 0u32;
                while let Some(frame) = decoder.decode(&mut input).expect("frame") {
                    match frame.message().expect("valid vote") {
                        Message::Vote(v) => n += v.signer.to_native() & 1,
                        _ => unreachable!("only votes in the stream"),
                    }
                }
                n
            })
        },
    );

    let proposal = Proposal {
        proposer: block.header.proposer,
        round: 0,
        block: block.clone(),
        justification: Vec::new(),
        signature: [0x33; 96],
    };
    let finalized = FinalizedBlock {
        certificate: certificate(&block),
        block,
    };
    for (name, bytes) in [
        ("decode_proposal_1000", encode_frame(&proposal)),
        ("decode_finalized_block_1000", encode_frame(&finalized)),
    ] {
        g.throughput(Throughput::Bytes(bytes.len() as u64));
        g.bench_with_input(name, &bytes, |b, bytes| {
            b.iter(|| {
                let mut decoder = FrameDecoder::new();
                let mut input = black_box(bytes.as_slice());
                let frame = decoder
                    .decode(&mut input)
                    .expect("frame")
                    .expect("whole frame");
                let txs = match frame.message().expect("valid block frame") {
                    Message::Proposal(p) => p.block.transactions.len(),
                    Message::FinalizedBlock(f) => f.block.transactions.len(),
                    _ => unreachable!("block frames only"),
                };
                assert_eq!(txs, TXS);
            })
        });
    }
    g.finish();
}

/// The link record layer: what sealing and opening cost per byte, encrypted (AES-256-GCM) and
/// integrity only (GMAC), for a coalesced 64 KiB write and a lone 512-byte frame.
fn link_records(c: &mut Criterion) {
    use corecell::net::record::{DirectionKey, Opener, Sealer};
    let key = DirectionKey {
        key: [7; 32],
        iv: [9; 12],
    };
    let mut group = c.benchmark_group("link_record");
    for encrypt in [true, false] {
        let mode = if encrypt { "encrypted" } else { "integrity" };
        for size in [512usize, 64 * 1024] {
            let plain = vec![0x5au8; size];
            group.throughput(Throughput::Bytes(size as u64));
            group.bench_with_input(
                BenchmarkId::new(format!("seal_{mode}"), size),
                &plain,
                |b, p| {
                    let mut sealer = Sealer::new(&key, encrypt);
                    let mut out = Vec::with_capacity(size + 64);
                    b.iter(|| {
                        out.clear();
                        sealer.seal(black_box(p), &mut out).expect("seal");
                    })
                },
            );
            // Open a pre-sealed stream of records, one per iteration.
            let mut sealer = Sealer::new(&key, encrypt);
            let mut wire = Vec::new();
            let records = 4096.min((64 << 20) / size);
            for _ in 0..records {
                sealer.seal(&plain, &mut wire).expect("seal");
            }
            let record_len = wire.len() / records;
            group.bench_with_input(
                BenchmarkId::new(format!("open_{mode}"), size),
                &wire,
                |b, w| {
                    let mut opener = Opener::new(&key, encrypt);
                    let mut out = Vec::with_capacity(size);
                    let mut at = 0;
                    b.iter(|| {
                        if at == records {
                            opener = Opener::new(&key, encrypt);
                            at = 0;
                        }
                        out.clear();
                        opener
                            .open(&w[at * record_len..(at + 1) * record_len], &mut out)
                            .expect("open");
                        at += 1;
                    })
                },
            );
        }
    }
    group.finish();
}

criterion_group!(benches, rkyv_block, frames, link_records);
criterion_main!(benches);
