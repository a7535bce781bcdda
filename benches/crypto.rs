//! Crypto benchmarks: BLS signatures and certificates, committee election, hashes, and
//! transaction sender recovery.
//!
//! Run all of them with `cargo bench --bench crypto`, one group with e.g.
//! `cargo bench --bench crypto -- bls`. See `perf/README.md`.

use std::hint::black_box;
use std::time::Duration;

use alloy_primitives::U256;
use criterion::{
    criterion_group, criterion_main, BenchmarkId, Criterion, SamplingMode, Throughput,
};

use corecell::crypto::bls::{BlsSecretKey, BlsSignature, CertificateView, CouncilKeys, Domain};
use corecell::crypto::election::Committee;
use corecell::crypto::tx::{decode_transaction, sign_transfer, Transfer, TxType};
use corecell::types::hash::{keccak256, xxh3, Hash32};
use corecell::types::{signers, Height, QuorumCertificate, VoteKind};

const CHAIN_ID: u64 = 1001;
const COUNCIL: usize = 100;

/// A council of `COUNCIL` deterministic keys and its validated public keys.
struct Council {
    secrets: Vec<BlsSecretKey>,
    keys: CouncilKeys,
}

impl Council {
    fn new() -> Council {
        let secrets: Vec<BlsSecretKey> = (0..COUNCIL as u64)
            .map(|i| BlsSecretKey::from_seed(&keccak256(&i.to_be_bytes())))
            .collect();
        let members: Vec<_> = secrets
            .iter()
            .map(|sk| (sk.public_key().to_bytes(), sk.prove_possession().to_bytes()))
            .collect();
        let keys = CouncilKeys::new(&members).expect("valid council");
        Council { secrets, keys }
    }

    /// A commit certificate for `height` signed by every member of `committee`.
    fn commit_certificate(&self, committee: &Committee, height: Height) -> QuorumCertificate {
        let block_hash = keccak256(&height.to_be_bytes());
        let round = 0;
        let msg = VoteKind::Commit.signing_message(CHAIN_ID, height, round, &block_hash);
        let sigs: Vec<BlsSignature> = committee
            .members()
            .iter()
            .map(|&m| self.secrets[m as usize].sign(Domain::Vote, &msg))
            .collect();
        let refs: Vec<&BlsSignature> = sigs.iter().collect();
        let mut bitmap = signers::empty(COUNCIL);
        for &m in committee.members() {
            signers::set(&mut bitmap, m);
        }
        QuorumCertificate {
            kind: VoteKind::Commit,
            height,
            round,
            block_hash,
            signers: bitmap,
            signature: BlsSignature::aggregate(&refs)
                .expect("non-empty")
                .to_bytes(),
        }
    }
}

fn mix_of(height: Height) -> Hash32 {
    keccak256(&[b"bench-mix".as_slice(), &height.to_be_bytes()].concat())
}

fn bls(c: &mut Criterion) {
    let council = Council::new();
    let mut g = c.benchmark_group("bls");
    g.sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2))
        .sampling_mode(SamplingMode::Flat);

    let sk = &council.secrets[0];
    let msg = VoteKind::Commit.signing_message(CHAIN_ID, 42, 0, &keccak256(b"block"));
    let sig = sk.sign(Domain::Vote, &msg);
    let sig_bytes = sig.to_bytes();
    let pk = sk.public_key();

    g.bench_function("sign_vote", |b| {
        b.iter(|| black_box(sk).sign(Domain::Vote, black_box(&msg)))
    });
    // Verify with an already-decompressed signature (includes the G2 subgroup check).
    g.bench_function("verify", |b| {
        b.iter(|| pk.verify(Domain::Vote, black_box(&msg), black_box(&sig)))
    });
    // The path of a vote off the wire: decompress the 96 bytes, then verify.
    g.bench_function("verify_from_bytes", |b| {
        b.iter(|| {
            council
                .keys
                .verify(0, Domain::Vote, black_box(&msg), black_box(&sig_bytes))
        })
    });

    // A proposal's signature and its block's randao reveal (same signer, two domains): two
    // checks one by one, as a node did before, against one multi-pairing.
    let randao_msg = corecell::crypto::election::randao_message(CHAIN_ID, 42);
    let reveal_bytes = sk.sign(Domain::Randao, &randao_msg).to_bytes();
    g.bench_function("verify_proposal_and_reveal/one_by_one", |b| {
        b.iter(|| {
            council
                .keys
                .verify(0, Domain::Vote, black_box(&msg), black_box(&sig_bytes))
                .and_then(|()| {
                    council.keys.verify(
                        0,
                        Domain::Randao,
                        black_box(&randao_msg),
                        black_box(&reveal_bytes),
                    )
                })
        })
    });
    g.bench_function("verify_proposal_and_reveal/batched", |b| {
        let items = [
            (0, Domain::Vote, &msg[..], &sig_bytes),
            (0, Domain::Randao, &randao_msg[..], &reveal_bytes),
        ];
        b.iter(|| {
            council
                .keys
                .verify_each_batch(black_box(&items), black_box(&[9; 32]))
        })
    });

    let sigs: Vec<BlsSignature> = council
        .secrets
        .iter()
        .map(|sk| sk.sign(Domain::Vote, &msg))
        .collect();
    for n in [4usize, 22, 100] {
        let refs: Vec<&BlsSignature> = sigs[..n].iter().collect();
        g.throughput(Throughput::Elements(n as u64));
        g.bench_with_input(BenchmarkId::new("aggregate", n), &refs, |b, refs| {
            b.iter(|| BlsSignature::aggregate(black_box(refs)))
        });
    }

    for n in [4usize, 22, 100] {
        let height = 1000 + n as Height;
        let committee = Committee::elect(COUNCIL, n, height, &mix_of(height));
        let cert = council.commit_certificate(&committee, height);
        council
            .keys
            .verify_certificate(CHAIN_ID, &cert, VoteKind::Commit, &committee)
            .expect("certificate verifies");
        g.throughput(Throughput::Elements(1));
        g.bench_with_input(
            BenchmarkId::new("verify_certificate", n),
            &cert,
            |b, cert| {
                b.iter(|| {
                    council.keys.verify_certificate(
                        CHAIN_ID,
                        black_box(cert),
                        VoteKind::Commit,
                        &committee,
                    )
                })
            },
        );
    }

    let entropy = [7u8; 32];
    for count in [10usize, 100] {
        let items: Vec<(Committee, QuorumCertificate)> = (0..count as Height)
            .map(|i| {
                let height = 10_000 + i;
                let committee = Committee::elect(COUNCIL, 22, height, &mix_of(height));
                let cert = council.commit_certificate(&committee, height);
                (committee, cert)
            })
            .collect();
        let batch: Vec<(CertificateView<'_>, &Committee)> = items
            .iter()
            .map(|(committee, cert)| (CertificateView::from(cert), committee))
            .collect();
        council
            .keys
            .verify_certificates_batch(CHAIN_ID, &batch, &entropy)
            .expect("batch verifies");
        g.throughput(Throughput::Elements(count as u64));
        g.bench_with_input(
            BenchmarkId::new("verify_certificates_batch_22", count),
            &batch,
            |b, batch| {
                b.iter(|| {
                    council
                        .keys
                        .verify_certificates_batch(CHAIN_ID, black_box(batch), &entropy)
                })
            },
        );
    }
    g.finish();
}

fn election(c: &mut Criterion) {
    let mut g = c.benchmark_group("election");
    g.sample_size(50)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2));
    let mix = mix_of(7);
    g.bench_function("elect_100_22", |b| {
        b.iter(|| Committee::elect(black_box(COUNCIL), black_box(22), black_box(7), &mix))
    });
    g.finish();
}

fn hash(c: &mut Criterion) {
    let mut g = c.benchmark_group("hash");
    g.sample_size(50)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2));
    for size in [32usize, 1024, 64 * 1024] {
        let data: Vec<u8> = (0..size).map(|i| (i * 31 + 7) as u8).collect();
        g.throughput(Throughput::Bytes(size as u64));
        g.bench_with_input(BenchmarkId::new("keccak256", size), &data, |b, data| {
            b.iter(|| keccak256(black_box(data)))
        });
        g.bench_with_input(BenchmarkId::new("xxh3", size), &data, |b, data| {
            b.iter(|| xxh3(black_box(data)))
        });
    }
    g.finish();
}

fn tx(c: &mut Criterion) {
    let mut g = c.benchmark_group("tx");
    g.sample_size(50)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2));
    let secret = [0x42u8; 32];
    let transfer = Transfer {
        chain_id: CHAIN_ID,
        nonce: 17,
        to: [0x35; 20],
        value: U256::from(1_000_000_000_000_000_000u128),
        gas_limit: 21_000,
        max_fee_per_gas: 50_000_000_000,
        max_priority_fee_per_gas: 1_000_000_000,
    };
    for (name, tx_type) in [
        ("legacy_eip155", TxType::Legacy),
        ("eip2930", TxType::Eip2930),
        ("eip1559", TxType::Eip1559),
    ] {
        let bytes = sign_transfer(&secret, tx_type, &transfer).expect("signs");
        decode_transaction(&bytes).expect("decodes");
        g.bench_with_input(
            BenchmarkId::new("decode_recover", name),
            &bytes,
            |b, bytes| b.iter(|| decode_transaction(black_box(bytes))),
        );
    }
    g.finish();
}

criterion_group!(benches, bls, election, hash, tx);
criterion_main!(benches);
