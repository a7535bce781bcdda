//! The fuzz corpus as regression tests: every file under `fuzz/corpus/<target>/` (seeds and
//! inputs kept from fuzzing) and `fuzz/artifacts/<target>/` (crashes found and fixed) is
//! replayed through `corecell::fuzz_entry::<target>`, the very function the fuzz target
//! calls, so a fixed crash stays fixed under plain `cargo test`.
//!
//! The seeds (`seed-*` files) are written by the ignored test [`generate_seed_corpus`]:
//! `cargo test --test fuzz_corpus -- --ignored generate_seed_corpus` rewrites them (and
//! `generate_session_and_disk_seeds` those of the handshake, bootnode and disk targets).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};

use alloy_primitives::U256;
use corecell::config::genesis::{test_account_secret, ExecutionMode, NetworkSpec};
use corecell::crypto::tx::{sign_transfer, Transfer, TxType};
use corecell::fuzz_entry;
use corecell::types::chain::{transactions_root, Block, BlockHeader, SignedTransaction};
use corecell::types::frame::encode_frame;
use corecell::types::network::{IngressAck, PeerList, PeerQuery, PeerRecord, SyncRequest, TxBatch};
use corecell::types::{
    signers, FinalizedBlock, Proposal, QuorumCertificate, RoundChange, Vote, VoteKind,
};

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

/// Files of `fuzz/<kind>/<target>/`, sorted (none if the folder does not exist).
fn files(kind: &str, target: &str) -> Vec<PathBuf> {
    let dir = fuzz_dir().join(kind).join(target);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut out: Vec<PathBuf> = entries
        .map(|e| e.expect("a corpus entry").path())
        .filter(|p| p.is_file())
        .collect();
    out.sort();
    out
}

fn replay(target: &str, run: fn(&[u8])) {
    let corpus = files("corpus", target);
    assert!(
        corpus.iter().any(|p| p
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("seed-"))),
        "fuzz/corpus/{target}/ has no seeds: run the ignored generate_seed_corpus test"
    );
    let artifacts = files("artifacts", target);
    for path in corpus.iter().chain(&artifacts) {
        let data = std::fs::read(path).expect("read a corpus file");
        // A panic names the file first.
        eprintln!("replaying {}", path.display());
        run(&data);
    }
    eprintln!(
        "{target}: {} corpus inputs and {} fixed crashes replayed",
        corpus.len(),
        artifacts.len()
    );
}

/// One test per target, `replay::<target>`.
mod replay {
    use super::{fuzz_entry, replay};

    macro_rules! replay_tests {
        ($($target:ident),* $(,)?) => {
            $(
                #[test]
                fn $target() {
                    replay(stringify!($target), fuzz_entry::$target);
                }
            )*
            /// Every target, for the check that none is left out.
            pub(super) const TARGETS: &[&str] = &[$(stringify!($target)),*];
        };
    }

    replay_tests!(
        frame_stream,
        proposal,
        vote,
        round_change,
        finalized_block,
        tx_batch,
        ingress_ack,
        sync_request,
        peer_query,
        peer_list,
        transaction,
        config_toml,
        genesis_toml,
        rpc_request,
        handshake,
        bootnode_registry,
        block_log,
        consensus_wal,
        snapshot,
        key_file,
    );
}

#[test]
fn every_fuzz_target_has_a_replay_test() {
    let manifest = std::fs::read_to_string(fuzz_dir().join("Cargo.toml")).expect("fuzz manifest");
    let declared: Vec<&str> = manifest
        .lines()
        .filter_map(|l| l.strip_prefix("name = \""))
        .filter_map(|l| l.strip_suffix('"'))
        .filter(|n| *n != "corecell-fuzz")
        .collect();
    let mut declared_sorted = declared.clone();
    declared_sorted.sort_unstable();
    let mut tested = replay::TARGETS.to_vec();
    tested.sort_unstable();
    assert_eq!(
        declared_sorted, tested,
        "fuzz/Cargo.toml targets vs replay tests"
    );
}

// ---------------------------------------------------------------------------------------------
// Seed generator
// ---------------------------------------------------------------------------------------------

const CHAIN: u64 = fuzz_entry::RPC_FIXTURE_CHAIN_ID;

fn write_seed(target: &str, name: &str, bytes: &[u8]) {
    let dir = fuzz_dir().join("corpus").join(target);
    std::fs::create_dir_all(&dir).expect("corpus folder");
    std::fs::write(dir.join(format!("seed-{name}")), bytes).expect("write seed");
}

fn signed_tx(from: u64, nonce: u64, tx_type: TxType) -> Vec<u8> {
    let transfer = Transfer {
        chain_id: CHAIN,
        nonce,
        to: [0x42; 20],
        value: U256::from(12_345u64),
        gas_limit: 21_000,
        max_fee_per_gas: 2 * corecell::exec::transfer::BASE_FEE_WEI,
        max_priority_fee_per_gas: 1,
    };
    sign_transfer(&test_account_secret(from), tx_type, &transfer).expect("sign")
}

fn bitmap(council: usize, members: &[u32]) -> Vec<u8> {
    let mut b = signers::empty(council);
    for &m in members {
        signers::set(&mut b, m);
    }
    b
}

fn block(height: u64, txs: Vec<Vec<u8>>) -> Block {
    let transactions: Vec<SignedTransaction> = txs
        .into_iter()
        .map(|bytes| SignedTransaction { bytes })
        .collect();
    Block {
        header: BlockHeader {
            parent_hash: [0x11; 32],
            height,
            round: 0,
            timestamp_ms: 1_780_000_000_000 + height * 500,
            proposer: 1,
            randao_reveal: [0xa5; 96],
            mix: [0x22; 32],
            transactions_root: transactions_root(transactions.iter().map(|t| t.bytes.as_slice())),
            state_root: [0x33; 32],
            committee_digest: [0x44; 32],
        },
        transactions,
    }
}

fn round_change(height: u64, round: u32, signer: u32, prepared: Option<u32>) -> RoundChange {
    RoundChange {
        height,
        round,
        signer,
        prepared: prepared.map(|r| QuorumCertificate {
            kind: VoteKind::Prepare,
            height,
            round: r,
            block_hash: [0x55; 32],
            signers: bitmap(4, &[0, 1, 2]),
            signature: [0x66; 96],
        }),
        signature: [0x77; 96],
    }
}

/// Writes one frame's payload as a seed of its kind, and returns the whole frame.
fn frame_seed(target: &str, name: &str, frame: Vec<u8>) -> Vec<u8> {
    write_seed(target, name, &frame[5..]);
    frame
}

#[test]
#[ignore = "rewrites fuzz/corpus/*/seed-*; run by hand"]
fn generate_seed_corpus() {
    let txs = vec![
        signed_tx(0, 0, TxType::Eip1559),
        signed_tx(1, 0, TxType::Legacy),
        signed_tx(2, 0, TxType::Eip2930),
    ];

    // Transactions.
    for (tx, name) in txs.iter().zip(["eip1559", "legacy", "eip2930"]) {
        write_seed("transaction", name, tx);
    }

    // One payload per kind (and whole frames for the stream).
    let mut peer_frames = Vec::new();
    let b = block(7, txs.clone());
    let hash = b.hash();
    peer_frames.push(frame_seed(
        "proposal",
        "round0",
        encode_frame(&Proposal {
            proposer: 1,
            round: 0,
            block: b.clone(),
            justification: vec![],
            signature: [0x88; 96],
        }),
    ));
    peer_frames.push(frame_seed(
        "proposal",
        "round2-justified",
        encode_frame(&Proposal {
            proposer: 2,
            round: 2,
            block: b.clone(),
            justification: vec![
                round_change(7, 2, 0, Some(1)),
                round_change(7, 2, 1, None),
                round_change(7, 2, 3, Some(0)),
            ],
            signature: [0x88; 96],
        }),
    ));
    for (kind, name) in [(VoteKind::Prepare, "prepare"), (VoteKind::Commit, "commit")] {
        peer_frames.push(frame_seed(
            "vote",
            name,
            encode_frame(&Vote {
                kind,
                height: 7,
                round: 0,
                block_hash: hash,
                signer: 3,
                signature: [0x99; 96],
            }),
        ));
    }
    peer_frames.push(frame_seed(
        "round_change",
        "unprepared",
        encode_frame(&round_change(7, 1, 2, None)),
    ));
    peer_frames.push(frame_seed(
        "round_change",
        "prepared",
        encode_frame(&round_change(7, 3, 2, Some(2))),
    ));
    for (name, b) in [("empty", block(8, vec![])), ("three-txs", b.clone())] {
        peer_frames.push(frame_seed(
            "finalized_block",
            name,
            encode_frame(&FinalizedBlock {
                certificate: QuorumCertificate {
                    kind: VoteKind::Commit,
                    height: b.header.height,
                    round: 0,
                    block_hash: b.hash(),
                    signers: bitmap(4, &[0, 2, 3]),
                    signature: [0xaa; 96],
                },
                block: b,
            }),
        ));
    }
    peer_frames.push(frame_seed(
        "tx_batch",
        "three-txs",
        encode_frame(&TxBatch {
            id: 42,
            transactions: txs
                .iter()
                .map(|bytes| SignedTransaction {
                    bytes: bytes.clone(),
                })
                .collect(),
        }),
    ));
    peer_frames.push(frame_seed(
        "tx_batch",
        "opaque",
        encode_frame(&TxBatch {
            id: 1,
            transactions: vec![SignedTransaction {
                bytes: b"raw".to_vec(),
            }],
        }),
    ));
    for (status, name) in [
        (IngressAck::FINAL, "final"),
        (IngressAck::REFUSED_INVALID, "invalid"),
    ] {
        peer_frames.push(frame_seed(
            "ingress_ack",
            name,
            encode_frame(&IngressAck {
                batch_id: 42,
                status,
                height: 7,
                count: 3,
            }),
        ));
    }
    peer_frames.push(frame_seed(
        "sync_request",
        "from5",
        encode_frame(&SyncRequest { from_height: 5 }),
    ));
    let mut boot_frames = Vec::new();
    let v4 = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1)), 30100);
    let v6 = SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), 30101);
    boot_frames.push(frame_seed(
        "peer_query",
        "register",
        encode_frame(&PeerQuery::new(Some(v4))),
    ));
    boot_frames.push(frame_seed(
        "peer_query",
        "ask",
        encode_frame(&PeerQuery::new(None)),
    ));
    boot_frames.push(frame_seed(
        "peer_list",
        "two",
        encode_frame(&PeerList {
            peers: vec![
                PeerRecord::new(1, [0x12; 20], v4),
                PeerRecord::new(2, [0x34; 20], v6),
            ],
        }),
    ));
    boot_frames.push(frame_seed(
        "peer_list",
        "empty",
        encode_frame(&PeerList { peers: vec![] }),
    ));

    // Streams: control byte (chunking) + frames.
    let stream = |control: u8, frames: &[Vec<u8>]| {
        let mut s = vec![control];
        for f in frames {
            s.extend_from_slice(f);
        }
        s
    };
    let all_peer = stream(0x07, &peer_frames);
    write_seed("frame_stream", "peer-frames", &all_peer);
    write_seed(
        "frame_stream",
        "peer-frames-bytewise",
        &stream(0x00, &peer_frames),
    );
    write_seed(
        "frame_stream",
        "bootnode-frames",
        &stream(0x0c, &boot_frames),
    );
    write_seed(
        "frame_stream",
        "truncated",
        &all_peer[..all_peer.len() - 17],
    );
    let mut bad = stream(0x03, &peer_frames[..2]);
    bad.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 2]);
    write_seed("frame_stream", "oversized-header", &bad);

    // Config and genesis files: the repo's examples and a generated network.
    let configs = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs");
    let mut examples: Vec<PathBuf> = std::fs::read_dir(&configs)
        .expect("configs/")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    examples.sort();
    for p in examples {
        let name = p.file_name().expect("name").to_string_lossy().into_owned();
        let target = if name.starts_with("genesis") {
            "genesis_toml"
        } else {
            "config_toml"
        };
        write_seed(
            target,
            &format!("configs-{name}"),
            &std::fs::read(&p).expect("read"),
        );
    }
    for (execution, accounts) in [(ExecutionMode::Transfer, 3), (ExecutionMode::Raw, 0)] {
        let out = tempfile::tempdir().expect("tempdir");
        let spec = NetworkSpec {
            cns: 4,
            pns: 1,
            ens: 1,
            host: IpAddr::V4(Ipv4Addr::LOCALHOST),
            base_port: 31000,
            committee_size: Some(3),
            block_period_ms: 500,
            accounts,
            chain_id: CHAIN,
            timestamp_ms: 1_780_000_000_000,
            seed: Some(7),
            execution,
        };
        let network = spec.generate(out.path()).expect("generate");
        let genesis = std::fs::read(&network.genesis_path).expect("genesis");
        write_seed(
            "genesis_toml",
            &format!("generated-{}", execution.name()),
            &genesis,
        );
        if execution == ExecutionMode::Transfer {
            for node in &network.nodes {
                let text = std::fs::read(&node.config_path).expect("config");
                write_seed("config_toml", &format!("generated-{}", node.name), &text);
            }
        }
    }

    // JSON-RPC requests against the fixture chain.
    let f = fuzz_entry::rpc_fixture();
    let hex = |b: &[u8]| format!("0x{}", hex::encode(b));
    let (acct, block_hash, tx0) = (
        hex(&f.accounts[0]),
        hex(&f.block_hash),
        hex(&f.tx_hashes[0]),
    );
    let pending = hex(&f.pending.0);
    let calls: Vec<(&str, String)> = vec![
        ("eth_chainId", "[]".into()),
        ("net_version", "[]".into()),
        ("web3_clientVersion", "[]".into()),
        ("eth_blockNumber", "[]".into()),
        ("eth_gasPrice", "[]".into()),
        ("eth_maxPriorityFeePerGas", "[]".into()),
        ("eth_syncing", "[]".into()),
        ("eth_getBalance", format!(r#"["{acct}","latest"]"#)),
        ("kaia_getBalance", format!(r#"["{acct}","0x0"]"#)),
        (
            "eth_getTransactionCount",
            format!(r#"["{acct}","pending"]"#),
        ),
        (
            "klay_getTransactionCount",
            format!(r#"["{acct}",{{"blockHash":"{block_hash}"}}]"#),
        ),
        (
            "eth_sendRawTransaction",
            format!(r#"["{}"]"#, hex(&f.fresh)),
        ),
        (
            "eth_sendRawTransaction",
            format!(r#"["{}"]"#, hex(&f.pending.1)),
        ),
        ("eth_getTransactionByHash", format!(r#"["{tx0}"]"#)),
        ("eth_getTransactionByHash", format!(r#"["{pending}"]"#)),
        ("eth_getTransactionReceipt", format!(r#"["{tx0}"]"#)),
        ("eth_getBlockByNumber", r#"["0x1",true]"#.into()),
        ("eth_getBlockByNumber", r#"["earliest",false]"#.into()),
        ("eth_getBlockByNumber", r#"["latest"]"#.into()),
        ("eth_getBlockByHash", format!(r#"["{block_hash}",true]"#)),
        (
            "eth_getBlockByHash",
            format!(r#"["{}",false]"#, hex(&f.genesis_hash)),
        ),
        (
            "eth_estimateGas",
            format!(r#"[{{"from":"{acct}","to":"{acct}","value":"0x1"}}]"#),
        ),
        ("eth_feeHistory", r#"["0x4","latest",[10,50,90]]"#.into()),
        ("eth_feeHistory", r#"[2,"0x1"]"#.into()),
        ("corecell_getBlockByNumber", r#"["0x1"]"#.into()),
        ("corecell_getCertificate", r#"["latest"]"#.into()),
        ("eth_noSuchMethod", "[]".into()),
    ];
    let body = |id: usize, method: &str, params: &str| {
        format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"{method}","params":{params}}}"#)
    };
    for (i, (method, params)) in calls.iter().enumerate() {
        write_seed(
            "rpc_request",
            &format!("{i:02}-{method}"),
            body(i, method, params).as_bytes(),
        );
    }
    let batch: Vec<String> = calls
        .iter()
        .take(8)
        .enumerate()
        .map(|(i, (m, p))| body(i, m, p))
        .collect();
    write_seed(
        "rpc_request",
        "batch",
        format!("[{}]", batch.join(",")).as_bytes(),
    );
    write_seed(
        "rpc_request",
        "notification",
        br#"{"jsonrpc":"2.0","method":"eth_chainId","params":[]}"#,
    );
    write_seed(
        "rpc_request",
        "malformed",
        br#"{"jsonrpc":"2.0","id":1,"method":"#,
    );
}

/// Seeds of the handshake, bootnode registry and disk targets (see the module doc).
#[test]
#[ignore = "rewrites the seed files of fuzz/corpus/"]
fn generate_session_and_disk_seeds() {
    use corecell::config::genesis::GenesisAccount;
    use corecell::config::keys::NodeKey;
    use corecell::consensus::WalRecord;
    use corecell::exec::state::State;

    // The handshake: untouched (both sides), the peer not admitted, one hello byte and one
    // auth byte flipped.
    let untouched = vec![0u8; 1 + 94 + 96];
    write_seed("handshake", "untouched-listener", &untouched);
    let mut dialer = untouched.clone();
    dialer[0] = 1;
    write_seed("handshake", "untouched-dialer", &dialer);
    write_seed("handshake", "not-admitted", &[2]);
    let mut hello = untouched.clone();
    hello[1 + 20] = 0x40;
    write_seed("handshake", "hello-key-flipped", &hello);
    let mut auth = untouched.clone();
    auth[1 + 94 + 5] = 1;
    write_seed("handshake", "auth-flipped", &auth);

    // The bootnode registry: each tier, queries with registrations, a reload, expiry.
    for (tier, name) in [(0u8, "cn"), (1, "pn"), (2, "en")] {
        let mut events = vec![tier];
        for k in 0..12u8 {
            // query: role k % 3, node k, register, address 127.0.k.1, 1 s later
            events.extend_from_slice(&[2, k % 3, k, 1, k, 1, 0, 1]);
        }
        events.extend_from_slice(&[1, 0xff, 0x0f, 0, 0, 0, 0, 0]); // reload: nodes 0..11 only
        events.extend_from_slice(&[2, 1, 3, 0, 0, 0, 0, 63]); // query after 63 s
        events.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 63]); // expiry sweep 63 s later
        write_seed("bootnode_registry", &format!("serves-{name}"), &events);
    }

    // A block log: five blocks as records, and the same file as raw bytes.
    let payloads: Vec<Vec<u8>> = fuzz_entry::block_log_chain(5)
        .iter()
        .map(|b| corecell::types::to_bytes(b).to_vec())
        .collect();
    let records = fuzz_entry::records_input(&payloads);
    write_seed("block_log", "five-blocks-records", &records);
    let mut raw = vec![0u8];
    for p in &payloads {
        raw.extend_from_slice(&corecell::store::encode_record(p));
    }
    write_seed("block_log", "five-blocks-raw", &raw);

    // A consensus WAL: one record of each kind.
    let block = fuzz_entry::block_log_chain(1).remove(0).block;
    let wal: Vec<Vec<u8>> = [
        WalRecord::Proposed { round: 0, block },
        WalRecord::Voted {
            kind: VoteKind::Prepare,
            height: 1,
            round: 0,
            block_hash: [4; 32],
        },
        WalRecord::RoundChanged {
            height: 1,
            round: 1,
        },
    ]
    .iter()
    .map(|r| corecell::types::to_bytes(r).to_vec())
    .collect();
    write_seed(
        "consensus_wal",
        "three-records",
        &fuzz_entry::records_input(&wal),
    );

    // A snapshot of a few accounts.
    let accounts: Vec<GenesisAccount> = (0..4u8)
        .map(|k| GenesisAccount {
            address: [k + 1; 20],
            balance: U256::from(1_000_000u64) * U256::from(k + 1),
        })
        .collect();
    let state = State::from_genesis(CHAIN, &accounts).expect("genesis state");
    write_seed("snapshot", "four-accounts", &state.encode_snapshot());

    // A key file as `corecell keygen` writes it.
    let key = NodeKey::from_secret(corecell::crypto::bls::BlsSecretKey::from_seed(&[3; 32]));
    write_seed("key_file", "keygen", key.to_toml().as_bytes());
}

/// The disk targets' seeds reach the accepting paths (so mutations start from good files).
#[test]
fn the_disk_seeds_are_good_files() {
    let seed = |target: &str, name: &str| {
        std::fs::read(
            fuzz_dir()
                .join("corpus")
                .join(target)
                .join(format!("seed-{name}")),
        )
        .expect("seed")
    };
    let dir = tempfile::tempdir().expect("tempdir");
    // Mode byte 0: the rest is the segment as it is.
    let raw = seed("block_log", "five-blocks-raw");
    std::fs::write(corecell::store::segment_path(dir.path(), 1), &raw[1..]).expect("write");
    let scan = corecell::store::scan_block_log(dir.path(), &fuzz_entry::block_log_genesis())
        .expect("the seed segment scans");
    assert_eq!(scan.blocks(), 5);
    let snapshot = seed("snapshot", "four-accounts");
    let state = corecell::exec::state::State::decode_snapshot(&snapshot).expect("snapshot");
    assert_eq!(state.len(), 4);
    let key = dir.path().join("node.key");
    std::fs::write(&key, seed("key_file", "keygen")).expect("write");
    std::fs::set_permissions(
        &key,
        <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o600),
    )
    .expect("chmod");
    corecell::config::keys::NodeKey::load(&key).expect("the seed key loads");
}
