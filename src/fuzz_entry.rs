//! Fuzz harness bodies: one function per fuzz target, shared by `fuzz/fuzz_targets/*.rs`
//! (cargo-fuzz) and `tests/fuzz_corpus.rs` (which replays the kept corpus and the fixed
//! crashes under plain `cargo test`), so both run the very same code.
//!
//! Each function takes arbitrary bytes, must not panic for any input, and asserts the
//! invariants the input path promises (an assertion failure is a finding, like a panic):
//!
//! - [`frame_stream`]: bytes fed in arbitrary chunks to a [`FrameDecoder`] give the same
//!   frames and the same error as fed at once; every frame's payload is within its kind's
//!   maximum; each frame goes through [`Frame::message`] and [`Frame::bootnode_message`]
//!   (exactly one protocol may accept it), and each accepted message is checked as below.
//! - [`proposal`], [`vote`], [`round_change`], [`finalized_block`], [`tx_batch`],
//!   [`ingress_ack`], [`sync_request`], [`peer_query`], [`peer_list`]: the bytes are one
//!   payload of that kind in 16-byte-aligned memory (the header gate refuses empty and
//!   oversized payloads first); an accepted message deserializes, keeps its kind's named
//!   limits, computes the same hash and signing message in place as deserialized, and
//!   re-encodes ([`encode_frame`], which panics over the limit) to a frame that decodes to
//!   the same value.
//! - [`transaction`]: [`decode_transaction`] (decode + sender recovery, as at admission) is
//!   deterministic; an accepted transaction's hash is keccak-256 of its bytes, and alloy's
//!   generic envelope decoder agrees on hash and sender.
//! - [`config_toml`], [`genesis_toml`]: text through `parse_toml` and `validate`, as a node
//!   loads its files; errors name the file; a valid file keeps every named limit and
//!   re-serializes to TOML that parses and validates to the same value.
//! - [`rpc_request`]: the bytes as the body of an HTTP POST to the JSON-RPC service an EN
//!   serves (jsonrpsee's HTTP handling and [`crate::rpc::methods::module`]), without a socket,
//!   with the exec side of the bridge answered by the real [`chain_index::answer`] over a
//!   transfer engine holding one finalized block and one pending transaction (and again over
//!   a raw chain); the answer is JSON-RPC 2.0 JSON (`null` for notifications), never an
//!   internal error.
//! - [`handshake`]: a real handshake whose hello and `Auth` are tampered with on the way:
//!   it authenticates exactly when nothing was touched and the peer is admitted.
//! - [`bootnode_registry`]: a bootnode's registry through queries, expiries and reloads: the
//!   registration cap, answers within their limits and roles, refusals changing nothing.
//! - [`block_log`], [`consensus_wal`], [`snapshot`], [`key_file`]: what a node reads from its
//!   data directory at start-up, as raw bytes or as records with correct checksums: refused
//!   with an error naming the file, or accepted consistently (the scan's index and head agree,
//!   accepted records round-trip, a snapshot or key round-trips).

use std::path::Path;
use std::sync::{Arc, OnceLock};

use alloy_consensus::transaction::SignerRecoverable;
use alloy_consensus::TxEnvelope;
use alloy_eips::eip2718::Decodable2718;
use alloy_primitives::U256;
use rkyv::util::AlignedVec;

use std::time::Duration;

use crate::config::genesis::{
    test_account_secret, AccountFile, CouncilMemberFile, ExecutionMode, Genesis, GenesisAccount,
    GenesisFile, MAX_BLOCK_PERIOD_MS, MAX_GENESIS_ACCOUNTS, TEST_ACCOUNT_BALANCE_WEI,
};
use crate::config::node::{
    check_name, ConfigFile, NodeConfig, Role, MAX_CONFIG_BYTES, MAX_CONFIG_PEERS,
    MAX_IO_MEMORY_KIB, MAX_SNAPSHOT_INTERVAL_BLOCKS, MIN_IO_MEMORY_KIB,
};
use crate::config::{parse_toml, to_hex, ConfigError};
use crate::crypto::bls::BlsSecretKey;
use crate::crypto::tx::{
    address_of_secret, decode_transaction, sign_transfer, DecodedTx, Transfer, TxError, TxType,
};
use crate::exec::chain_index::{self, ChainIndex, IndexedBlock, CHAIN_INDEX_MAX_BYTES};
use crate::exec::queries::RpcBridge;
use crate::exec::raw::RawPool;
use crate::exec::state::State;
use crate::exec::transfer::{FinalizedOutcome, TransferEngine, BASE_FEE_WEI};
use crate::exec::Engine;
use crate::net::handshake::{Handshake, Side, AUTH_LEN, HELLO_LEN, NONCE_LEN};
use crate::rpc::{ChainInfo, RpcConfig, DEFAULT_BRIDGE_QUEUE};
use crate::types::chain::{transactions_root, Block, BlockHeader, SignedTransaction};
use crate::types::consensus::{Proposal, QuorumCertificate, RoundChange, Vote, VoteKind};
use crate::types::frame::{
    encode_frame, BootnodeMessage, FrameHeader, Message, WireMessage, FRAME_HEADER_LEN,
    MAX_FRAME_PAYLOAD,
};
use crate::types::hash::{keccak256, Hash32};
use crate::types::network::{
    ip_from_wire, ip_to_wire, IngressAck, PeerList, PeerQuery, SyncRequest, TxBatch, MAX_BATCH_TXS,
    MAX_BATCH_TX_BYTES, MAX_PEER_LIST,
};
use crate::types::MAX_TX_BYTES;
use crate::types::{
    signers, FinalizedBlock, Frame, FrameDecoder, FrameError, FrameKind, MAX_BLOCK_TXS,
    MAX_BLOCK_TX_BYTES, MAX_COUNCIL_SIZE,
};

/// The chain id signing messages are computed for (any value would do).
const CHAIN_ID: u64 = 1001;

// ---------------------------------------------------------------------------------------------
// Frames
// ---------------------------------------------------------------------------------------------

/// Arbitrary bytes as a TCP stream into a [`FrameDecoder`]: `data[0]` picks the chunk sizes
/// (a seeded sequence, at most `2^(data[0] % 16)` bytes each), the rest is the stream.
pub fn frame_stream(data: &[u8]) {
    let Some((&control, stream)) = data.split_first() else {
        return;
    };
    // Reference: the whole stream in one call per frame.
    let whole = decode_stream(stream, |_| stream.len());
    // The same bytes in chunks.
    let max_chunk = 1usize << (control % 16);
    let mut rng = u64::from(control) | 0x9e37_79b9_7f4a_7c00;
    let chunked = decode_stream(stream, |_| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        1 + (rng as usize) % max_chunk
    });
    assert_eq!(
        whole.frames.len(),
        chunked.frames.len(),
        "chunking changed the frames"
    );
    for (a, b) in whole.frames.iter().zip(&chunked.frames) {
        assert_eq!(a.kind, b.kind, "chunking changed a frame's kind");
        assert_eq!(a.payload[..], b.payload[..], "chunking changed a payload");
    }
    assert_eq!(whole.error, chunked.error, "chunking changed the error");
    for frame in &whole.frames {
        check_frame(frame);
    }
}

struct Decoded {
    frames: Vec<Frame>,
    error: Option<FrameError>,
}

/// Feeds `stream` to a fresh decoder in chunks of `next_chunk(offset)` bytes, collecting
/// frames until the stream ends or the decoder refuses it (then the connection is dropped).
fn decode_stream(stream: &[u8], mut next_chunk: impl FnMut(usize) -> usize) -> Decoded {
    let mut decoder = FrameDecoder::new();
    let mut frames = Vec::new();
    let mut offset = 0;
    while offset < stream.len() {
        let take = next_chunk(offset).clamp(1, stream.len() - offset);
        let mut input = &stream[offset..offset + take];
        loop {
            let before = input.len();
            match decoder.decode(&mut input) {
                Ok(Some(frame)) => {
                    let len = frame.payload.len();
                    assert!(
                        len >= 1 && len <= frame.kind.max_payload(),
                        "a {} frame of {len} bytes passed the header gate",
                        frame.kind.name()
                    );
                    frames.push(frame);
                }
                Ok(None) => {
                    assert!(input.is_empty(), "the decoder stopped with input left");
                    break;
                }
                Err(error) => {
                    let _ = error.to_string();
                    return Decoded {
                        frames,
                        error: Some(error),
                    };
                }
            }
            assert!(input.len() <= before, "the decoder grew its input");
            assert!(
                decoder.buffered() <= FRAME_HEADER_LEN + MAX_FRAME_PAYLOAD,
                "the decoder buffers more than the largest frame"
            );
        }
        offset += take;
    }
    Decoded {
        frames,
        error: None,
    }
}

/// One payload of `kind`, as the net shard holds it after the header gate.
fn kind_payload(kind: FrameKind, data: &[u8]) {
    let declared = u32::try_from(data.len()).unwrap_or(u32::MAX);
    let header = FrameHeader {
        kind,
        len: declared,
    }
    .to_bytes();
    let gate = FrameHeader::parse(header);
    if data.is_empty() || data.len() > kind.max_payload() {
        // Refused before a byte of payload is buffered.
        assert!(
            gate.is_err(),
            "the header gate took a {} frame of {declared} bytes",
            kind.name()
        );
        return;
    }
    assert_eq!(
        gate,
        Ok(FrameHeader {
            kind,
            len: declared
        })
    );
    let mut payload = AlignedVec::<16>::with_capacity(data.len());
    payload.extend_from_slice(data);
    check_frame(&Frame { kind, payload });
}

/// A proposal payload (see the module doc).
pub fn proposal(data: &[u8]) {
    kind_payload(FrameKind::Proposal, data);
}
/// A vote payload.
pub fn vote(data: &[u8]) {
    kind_payload(FrameKind::Vote, data);
}
/// A round-change payload.
pub fn round_change(data: &[u8]) {
    kind_payload(FrameKind::RoundChange, data);
}
/// A finalized-block payload.
pub fn finalized_block(data: &[u8]) {
    kind_payload(FrameKind::FinalizedBlock, data);
}
/// A transaction-batch payload.
pub fn tx_batch(data: &[u8]) {
    kind_payload(FrameKind::TxBatch, data);
}
/// An ingress-acknowledgement payload.
pub fn ingress_ack(data: &[u8]) {
    kind_payload(FrameKind::IngressAck, data);
}
/// A sync-request payload.
pub fn sync_request(data: &[u8]) {
    kind_payload(FrameKind::SyncRequest, data);
}
/// A peer-query payload (bootnode protocol).
pub fn peer_query(data: &[u8]) {
    kind_payload(FrameKind::PeerQuery, data);
}
/// A peer-list payload (bootnode protocol).
pub fn peer_list(data: &[u8]) {
    kind_payload(FrameKind::PeerList, data);
}

fn de<T, A>(archived: &A) -> T
where
    A: rkyv::Deserialize<T, rkyv::rancor::Strategy<rkyv::de::Pool, rkyv::rancor::Error>>,
{
    match rkyv::deserialize::<T, rkyv::rancor::Error>(archived) {
        Ok(value) => value,
        Err(e) => panic!("a validated archive did not deserialize: {e}"),
    }
}

/// Both protocols' readers on one frame; whatever one accepts is checked.
fn check_frame(frame: &Frame) {
    let peer = frame.message();
    let boot = frame.bootnode_message();
    if frame.kind.is_bootnode() {
        assert!(
            matches!(peer, Err(FrameError::WrongProtocol { .. })),
            "a bootnode kind read as a peer message"
        );
    } else {
        assert!(
            matches!(boot, Err(FrameError::WrongProtocol { .. })),
            "a peer kind read as a bootnode message"
        );
    }
    match peer {
        Err(e) => {
            let _ = e.to_string();
        }
        Ok(Message::Proposal(p)) => {
            let value: Proposal = de(p);
            assert_eq!(p.block.header.hash(), value.block.hash());
            assert_eq!(p.signing_message(CHAIN_ID), value.signing_message(CHAIN_ID));
            assert_proposal_limits(&value);
            let back = reencoded(&value, |m| match m {
                Message::Proposal(p) => Some(de(p)),
                _ => None,
            });
            assert_eq!(back, value);
        }
        Ok(Message::Vote(v)) => {
            let value: Vote = de(v);
            assert_eq!(v.signing_message(CHAIN_ID), value.signing_message(CHAIN_ID));
            let back = reencoded(&value, |m| match m {
                Message::Vote(v) => Some(de(v)),
                _ => None,
            });
            assert_eq!(back, value);
        }
        Ok(Message::RoundChange(rc)) => {
            let value: RoundChange = de(rc);
            assert_eq!(
                rc.signing_message(CHAIN_ID),
                value.signing_message(CHAIN_ID)
            );
            assert_round_change_shape(&value);
            let back = reencoded(&value, |m| match m {
                Message::RoundChange(rc) => Some(de(rc)),
                _ => None,
            });
            assert_eq!(back, value);
        }
        Ok(Message::FinalizedBlock(f)) => {
            let value: FinalizedBlock = de(f);
            assert_eq!(f.block.header.hash(), value.block.hash());
            // Costs a keccak per transaction; the exec shard runs it. Must not panic.
            let root_ok = f.block.check_transactions_root().is_ok();
            assert_eq!(
                root_ok,
                value.block.computed_transactions_root() == value.block.header.transactions_root
            );
            assert_block_limits(&value.block);
            assert_certificate_shape(&value.certificate);
            assert_eq!(value.certificate.kind, VoteKind::Commit);
            assert_eq!(value.certificate.height, value.block.header.height);
            assert_eq!(value.certificate.block_hash, value.block.hash());
            let back = reencoded(&value, |m| match m {
                Message::FinalizedBlock(f) => Some(de(f)),
                _ => None,
            });
            assert_eq!(back, value);
        }
        Ok(Message::TxBatch(b)) => {
            let value: TxBatch = de(b);
            assert!(
                !value.transactions.is_empty(),
                "an empty batch was accepted"
            );
            assert_transactions_within(&value.transactions, MAX_BATCH_TXS, MAX_BATCH_TX_BYTES);
            // What the exec shard does with each at admission.
            for tx in &value.transactions {
                transaction(&tx.bytes);
            }
            let back = reencoded(&value, |m| match m {
                Message::TxBatch(b) => Some(de(b)),
                _ => None,
            });
            assert_eq!(back, value);
        }
        Ok(Message::IngressAck(a)) => {
            let value: IngressAck = de(a);
            let _ = IngressAck::status_name(value.status);
            let back = reencoded(&value, |m| match m {
                Message::IngressAck(a) => Some(de(a)),
                _ => None,
            });
            assert_eq!(back, value);
        }
        Ok(Message::SyncRequest(r)) => {
            let value: SyncRequest = de(r);
            let back = reencoded(&value, |m| match m {
                Message::SyncRequest(r) => Some(de(r)),
                _ => None,
            });
            assert_eq!(back, value);
        }
    }
    match boot {
        Err(e) => {
            let _ = e.to_string();
        }
        Ok(BootnodeMessage::PeerQuery(q)) => {
            let value: PeerQuery = de(q);
            assert_eq!(ip_to_wire(ip_from_wire(value.listen_ip)), value.listen_ip);
            let back = reencoded_boot(&value, |m| match m {
                BootnodeMessage::PeerQuery(q) => Some(de(q)),
                _ => None,
            });
            assert_eq!(back, value);
        }
        Ok(BootnodeMessage::PeerList(l)) => {
            let value: PeerList = de(l);
            assert!(
                value.peers.len() <= MAX_PEER_LIST,
                "peer list over its limit"
            );
            for (archived, record) in l.peers.iter().zip(&value.peers) {
                let address = archived.address();
                assert_eq!(address.port(), record.port);
                assert_eq!(
                    ip_to_wire(address.ip()),
                    record.ip,
                    "a wire address round-trips"
                );
            }
            let back = reencoded_boot(&value, |m| match m {
                BootnodeMessage::PeerList(l) => Some(de(l)),
                _ => None,
            });
            assert_eq!(back, value);
        }
    }
}

/// Re-encodes an accepted message (panics if its canonical payload breaks the kind's limit,
/// as a node relaying it would) and decodes the frame again.
fn reencode<T>(value: &T) -> Frame
where
    T: WireMessage
        + for<'a> rkyv::Serialize<
            rkyv::api::high::HighSerializer<
                AlignedVec<16>,
                rkyv::ser::allocator::ArenaHandle<'a>,
                rkyv::rancor::Error,
            >,
        >,
{
    let bytes = encode_frame(value);
    let mut decoder = FrameDecoder::new();
    let mut input = &bytes[..];
    let frame = match decoder.decode(&mut input) {
        Ok(Some(frame)) => frame,
        other => panic!(
            "a re-encoded {} frame did not decode: {other:?}",
            T::KIND.name()
        ),
    };
    assert!(
        input.is_empty() && decoder.buffered() == 0,
        "one frame, whole"
    );
    frame
}

fn reencoded<T>(value: &T, read: impl FnOnce(Message<'_>) -> Option<T>) -> T
where
    T: WireMessage
        + for<'a> rkyv::Serialize<
            rkyv::api::high::HighSerializer<
                AlignedVec<16>,
                rkyv::ser::allocator::ArenaHandle<'a>,
                rkyv::rancor::Error,
            >,
        >,
{
    let frame = reencode(value);
    match frame.message() {
        Ok(m) => read(m).expect("the re-encoded frame is of the same kind"),
        Err(e) => panic!("a re-encoded {} was refused: {e}", T::KIND.name()),
    }
}

fn reencoded_boot<T>(value: &T, read: impl FnOnce(BootnodeMessage<'_>) -> Option<T>) -> T
where
    T: WireMessage
        + for<'a> rkyv::Serialize<
            rkyv::api::high::HighSerializer<
                AlignedVec<16>,
                rkyv::ser::allocator::ArenaHandle<'a>,
                rkyv::rancor::Error,
            >,
        >,
{
    let frame = reencode(value);
    match frame.bootnode_message() {
        Ok(m) => read(m).expect("the re-encoded frame is of the same kind"),
        Err(e) => panic!("a re-encoded {} was refused: {e}", T::KIND.name()),
    }
}

/// The named limits of a list of transactions, restated independently of `check_limits`.
fn assert_transactions_within(txs: &[SignedTransaction], max_txs: usize, max_bytes: usize) {
    assert!(
        txs.len() <= max_txs,
        "{} transactions over {max_txs}",
        txs.len()
    );
    let mut total = 0usize;
    for tx in txs {
        assert!(
            !tx.bytes.is_empty() && tx.bytes.len() <= MAX_TX_BYTES,
            "a transaction of {} bytes",
            tx.bytes.len()
        );
        total += tx.bytes.len();
    }
    assert!(
        total <= max_bytes,
        "{total} transaction bytes over {max_bytes}"
    );
}

fn assert_block_limits(block: &Block) {
    assert_transactions_within(&block.transactions, MAX_BLOCK_TXS, MAX_BLOCK_TX_BYTES);
}

fn assert_certificate_shape(c: &QuorumCertificate) {
    assert!(
        c.signers.len() <= signers::bitmap_len(MAX_COUNCIL_SIZE),
        "a signer bitmap of {} bytes",
        c.signers.len()
    );
    assert!(
        signers::count(&c.signers) > 0,
        "a certificate without signers"
    );
}

fn assert_round_change_shape(rc: &RoundChange) {
    if let Some(p) = &rc.prepared {
        assert_certificate_shape(p);
        assert_eq!(p.kind, VoteKind::Prepare);
        assert_eq!(p.height, rc.height);
        assert!(
            p.round < rc.round,
            "a prepared certificate not from an earlier round"
        );
    }
}

fn assert_proposal_limits(p: &Proposal) {
    assert_block_limits(&p.block);
    assert!(p.justification.len() <= MAX_COUNCIL_SIZE);
    assert!(p.round > 0 || p.justification.is_empty());
    let mut seen = std::collections::BTreeSet::new();
    for rc in &p.justification {
        assert!((rc.signer as usize) < MAX_COUNCIL_SIZE);
        assert!(seen.insert(rc.signer), "two round changes from one signer");
        assert_round_change_shape(rc);
        assert_eq!(rc.height, p.block.header.height);
        assert_eq!(rc.round, p.round);
    }
}

// ---------------------------------------------------------------------------------------------
// Transactions
// ---------------------------------------------------------------------------------------------

/// Arbitrary bytes as a signed transaction at admission: decode and recover the sender.
pub fn transaction(data: &[u8]) {
    let result = decode_transaction(data);
    match &result {
        Err(e) => {
            let _ = e.to_string();
            if data.len() > MAX_TX_BYTES {
                assert!(matches!(e, TxError::TooLarge { .. }), "{e}");
            }
        }
        Ok(tx) => check_decoded(data, tx),
    }
    assert_eq!(
        decode_transaction(data),
        result,
        "decoding is deterministic"
    );
}

fn check_decoded(bytes: &[u8], tx: &DecodedTx) {
    assert!(!bytes.is_empty() && bytes.len() <= MAX_TX_BYTES);
    assert_eq!(
        tx.hash,
        keccak256(bytes),
        "the hash is keccak-256 of the bytes"
    );
    assert_eq!(tx.encoded_len, bytes.len());
    match tx.tx_type {
        TxType::Legacy => assert!(bytes[0] >= 0xc0),
        TxType::Eip2930 => assert_eq!(bytes[0], 0x01),
        TxType::Eip1559 => assert_eq!(bytes[0], 0x02),
    }
    // alloy's generic decoder agrees on the hash and the sender.
    let envelope = match TxEnvelope::decode_2718_exact(bytes) {
        Ok(e) => e,
        Err(e) => panic!("alloy refuses a transaction corecell accepted: {e}"),
    };
    assert_eq!(envelope.tx_hash().0, tx.hash);
    match envelope.recover_signer() {
        Ok(sender) => assert_eq!(<[u8; 20]>::from(sender), tx.sender),
        Err(e) => panic!("alloy cannot recover an accepted transaction's sender: {e}"),
    }
    for base_fee in [0, BASE_FEE_WEI, u128::MAX] {
        assert!(tx.effective_gas_price(base_fee) <= tx.max_fee_per_gas);
    }
}

// ---------------------------------------------------------------------------------------------
// Config and genesis files
// ---------------------------------------------------------------------------------------------

/// Where the fuzzed config "is": resolves relative paths and names the file in errors.
const CONFIG_PATH: &str = "/fuzz/node/config.toml";
/// Where the fuzzed genesis "is".
const GENESIS_PATH: &str = "/fuzz/genesis.toml";

fn check_error(e: &ConfigError, path: &Path) {
    assert_eq!(e.file, path);
    let text = e.to_string();
    assert!(
        text.starts_with(&path.display().to_string()),
        "an error that does not name its file: {text}"
    );
}

/// Arbitrary bytes as a node config file: the text a node reads (UTF-8, at most
/// [`MAX_CONFIG_BYTES`]) through `parse_toml` and [`NodeConfig::validate`].
pub fn config_toml(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return; // read_bounded refuses it as not UTF-8
    };
    if text.len() as u64 > MAX_CONFIG_BYTES {
        return;
    }
    let path = Path::new(CONFIG_PATH);
    let file: ConfigFile = match parse_toml(path, text) {
        Ok(file) => file,
        Err(e) => return check_error(&e, path),
    };
    let config = match NodeConfig::validate(path, file.clone()) {
        Ok(config) => config,
        Err(e) => return check_error(&e, path),
    };
    check_config(&config);
    // Written back (as `corecell genesis` writes configs), it loads to the same config.
    let again = match toml::to_string(&file) {
        Ok(text) => text,
        Err(e) => panic!("a valid config does not serialize: {e}"),
    };
    let reparsed: ConfigFile = match parse_toml(path, &again) {
        Ok(file) => file,
        Err(e) => panic!("a written config does not parse: {e}\n{again}"),
    };
    match NodeConfig::validate(path, reparsed) {
        Ok(back) => assert_eq!(back, config, "a written config loads differently"),
        Err(e) => panic!("a written config does not validate: {e}\n{again}"),
    }
}

fn check_config(c: &NodeConfig) {
    assert!(check_name(&c.name).is_ok());
    assert!(c.peers.len() <= MAX_CONFIG_PEERS);
    assert!(c.bootnodes.len() <= MAX_CONFIG_PEERS);
    assert!(c.allowlist.len() <= MAX_CONFIG_PEERS);
    assert!((MIN_IO_MEMORY_KIB..=MAX_IO_MEMORY_KIB).contains(&c.io_memory_kib));
    assert!((1..=MAX_SNAPSHOT_INTERVAL_BLOCKS).contains(&c.snapshot_interval_blocks));
    assert_eq!(
        c.rpc_listen.is_some(),
        c.role == Role::En,
        "JSON-RPC is the EN's"
    );
    assert_eq!(c.bootnode_serves.is_some(), c.role == Role::Bootnode);
    assert!(c.ingress_listen.is_none() || matches!(c.role, Role::Cn | Role::En));
    assert!(c.bootnodes.iter().all(|b| b.role == Role::Bootnode));
    for p in [&c.genesis, &c.key_file, &c.data_dir] {
        assert!(p.is_absolute(), "{} is not resolved", p.display());
    }
}

/// Arbitrary bytes as a genesis file, through `parse_toml` and [`Genesis::validate`].
pub fn genesis_toml(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = Path::new(GENESIS_PATH);
    let file: GenesisFile = match parse_toml(path, text) {
        Ok(file) => file,
        Err(e) => return check_error(&e, path),
    };
    let genesis = match Genesis::validate(path, &file, crate::exec::genesis_state_root) {
        Ok(genesis) => genesis,
        Err(e) => return check_error(&e, path),
    };
    check_genesis(&genesis);
    // The validated genesis, written back, loads to the same chain.
    let written = GenesisFile {
        chain_id: genesis.chain_id,
        timestamp_ms: genesis.timestamp_ms,
        committee_size: genesis.committee_size,
        block_period_ms: genesis.block_period_ms,
        council: genesis
            .council
            .iter()
            .map(CouncilMemberFile::from)
            .collect(),
        execution: genesis.execution,
        accounts: genesis
            .accounts
            .iter()
            .map(|a| AccountFile {
                address: to_hex(&a.address),
                balance: a.balance.to_string(),
            })
            .collect(),
    };
    let again = match toml::to_string(&written) {
        Ok(text) => text,
        Err(e) => panic!("a valid genesis does not serialize: {e}"),
    };
    let reparsed: GenesisFile = match parse_toml(path, &again) {
        Ok(file) => file,
        Err(e) => panic!("a written genesis does not parse: {e}\n{again}"),
    };
    let back = match Genesis::validate(path, &reparsed, crate::exec::genesis_state_root) {
        Ok(back) => back,
        Err(e) => panic!("a written genesis does not validate: {e}\n{again}"),
    };
    assert_eq!(back.chain_id, genesis.chain_id);
    assert_eq!(back.timestamp_ms, genesis.timestamp_ms);
    assert_eq!(back.committee_size, genesis.committee_size);
    assert_eq!(back.block_period_ms, genesis.block_period_ms);
    assert_eq!(back.council, genesis.council);
    assert_eq!(back.accounts, genesis.accounts);
    assert_eq!(back.execution, genesis.execution);
    assert_eq!(back.state_root, genesis.state_root);
    assert_eq!(back.header().hash(), genesis.header().hash());
}

fn check_genesis(g: &Genesis) {
    let n = g.council.len();
    assert!(g.chain_id != 0);
    assert!((1..=MAX_COUNCIL_SIZE).contains(&n));
    assert!((1..=n).contains(&g.committee_size));
    assert!(g.block_period_ms <= MAX_BLOCK_PERIOD_MS);
    assert!(g.accounts.len() <= MAX_GENESIS_ACCOUNTS);
    let mut names = std::collections::BTreeSet::new();
    for m in &g.council {
        assert!(check_name(&m.name).is_ok());
        assert!(names.insert(m.name.as_str()), "a council name twice");
        assert_eq!(crate::crypto::bls::node_id_of(&m.public_key), m.node_id);
    }
    let addresses: std::collections::BTreeSet<_> = g.accounts.iter().map(|a| a.address).collect();
    assert_eq!(addresses.len(), g.accounts.len(), "an account twice");
    if g.execution == ExecutionMode::Raw {
        assert_eq!(g.state_root, [0; 32]);
    }
    for (i, m) in g.council.iter().enumerate() {
        assert_eq!(g.council_index(&m.public_key), Some(i as u32));
    }
}

// ---------------------------------------------------------------------------------------------
// JSON-RPC
// ---------------------------------------------------------------------------------------------

/// Test accounts of the JSON-RPC fixture's chain ([`test_account_secret`] 0..).
pub const RPC_FIXTURE_ACCOUNTS: u64 = 4;
/// The fixture chain's id.
pub const RPC_FIXTURE_CHAIN_ID: u64 = 1001;
const FIXTURE_TIME_MS: u64 = 1_780_000_000_000;

/// What the JSON-RPC fixture holds, for writing seed requests.
#[derive(Debug, Clone)]
pub struct RpcFixture {
    /// The genesis header's hash (block 0).
    pub genesis_hash: Hash32,
    /// Block 1's hash.
    pub block_hash: Hash32,
    /// Hashes of block 1's transactions.
    pub tx_hashes: Vec<Hash32>,
    /// The pending transaction's hash and bytes.
    pub pending: (Hash32, Vec<u8>),
    /// A transaction the pool would admit (not yet sent).
    pub fresh: Vec<u8>,
    /// The funded accounts.
    pub accounts: Vec<[u8; 20]>,
}

struct Template {
    info: RpcFixture,
    chain: ChainInfo,
    state: State,
    finalized: Arc<FinalizedBlock>,
    outcome: FinalizedOutcome,
}

fn signed(from: u64, nonce: u64, to: [u8; 20], tx_type: TxType) -> Vec<u8> {
    let transfer = Transfer {
        chain_id: RPC_FIXTURE_CHAIN_ID,
        nonce,
        to,
        value: U256::from(1_000u64),
        gas_limit: 21_000,
        max_fee_per_gas: 2 * BASE_FEE_WEI,
        max_priority_fee_per_gas: 1,
    };
    match sign_transfer(&test_account_secret(from), tx_type, &transfer) {
        Ok(bytes) => bytes,
        Err(e) => panic!("signing a fixture transfer: {e}"),
    }
}

fn template() -> &'static Template {
    static TEMPLATE: OnceLock<Template> = OnceLock::new();
    TEMPLATE.get_or_init(build_template)
}

fn build_template() -> Template {
    let accounts: Vec<[u8; 20]> = (0..RPC_FIXTURE_ACCOUNTS)
        .map(|i| address_of_secret(&test_account_secret(i)).expect("a test key"))
        .collect();
    let genesis_accounts: Vec<GenesisAccount> = accounts
        .iter()
        .map(|&address| GenesisAccount {
            address,
            balance: U256::from(TEST_ACCOUNT_BALANCE_WEI),
        })
        .collect();
    let mut state =
        State::from_genesis(RPC_FIXTURE_CHAIN_ID, &genesis_accounts).expect("fixture genesis");
    let genesis_header = BlockHeader {
        parent_hash: [0; 32],
        height: 0,
        round: 0,
        timestamp_ms: FIXTURE_TIME_MS,
        proposer: 0,
        randao_reveal: [0; 96],
        mix: [7; 32],
        transactions_root: transactions_root(std::iter::empty()),
        state_root: state.root(),
        committee_digest: [0; 32],
    };
    let chain = ChainInfo {
        chain_id: RPC_FIXTURE_CHAIN_ID,
        execution: ExecutionMode::Transfer,
        council_node_ids: (1..=4u8).map(|i| [i; 20]).collect(),
        committee_size: 4,
        genesis_header: genesis_header.clone(),
    };
    // Block 1: three transfers, one of each type.
    let mut engine = TransferEngine::new(state);
    for (from, tx_type) in [
        (0, TxType::Eip1559),
        (1, TxType::Legacy),
        (2, TxType::Eip2930),
    ] {
        let bytes = signed(from, 0, accounts[3], tx_type);
        engine
            .admit_one(&bytes, FIXTURE_TIME_MS)
            .expect("fixture transfer admitted");
    }
    let (transactions, state_root) = engine.build(1);
    let header = BlockHeader {
        parent_hash: genesis_header.hash(),
        height: 1,
        round: 0,
        timestamp_ms: FIXTURE_TIME_MS + 1000,
        proposer: 2,
        randao_reveal: [0; 96],
        mix: [8; 32],
        transactions_root: transactions_root(transactions.iter().map(|t| t.bytes.as_slice())),
        state_root,
        committee_digest: [0; 32],
    };
    let block = Block {
        header,
        transactions,
    };
    let mut bitmap = signers::empty(4);
    for i in 0..3 {
        signers::set(&mut bitmap, i);
    }
    let finalized = Arc::new(FinalizedBlock {
        certificate: QuorumCertificate {
            kind: VoteKind::Commit,
            height: 1,
            round: 0,
            block_hash: block.hash(),
            signers: bitmap,
            signature: [0; 96],
        },
        block,
    });
    let (_, outcome) = engine
        .finalize_with_outcome(&finalized, None)
        .expect("fixture block finalizes");
    let state = engine.final_state().clone();
    let pending = signed(0, 1, accounts[1], TxType::Eip1559);
    let fresh = signed(3, 0, accounts[0], TxType::Legacy);
    let info = RpcFixture {
        genesis_hash: genesis_header.hash(),
        block_hash: finalized.block.hash(),
        tx_hashes: outcome.tx_hashes.clone(),
        pending: (keccak256(&pending), pending),
        fresh,
        accounts,
    };
    Template {
        info,
        chain,
        state,
        finalized,
        outcome,
    }
}

/// The JSON-RPC fixture's facts (for seed requests).
pub fn rpc_fixture() -> RpcFixture {
    template().info.clone()
}

/// A fresh exec side: the engine and index the bridge is answered from.
fn exec_side(raw: bool) -> (Engine, ChainIndex) {
    let t = template();
    let mut index = ChainIndex::new(CHAIN_INDEX_MAX_BYTES);
    let engine = if raw {
        index.push(IndexedBlock::raw(t.finalized.clone()));
        Engine::Raw(RawPool::new(1 << 20, 1 << 10))
    } else {
        let mut engine = TransferEngine::new(t.state.clone());
        engine
            .admit_one(&t.info.pending.1, FIXTURE_TIME_MS)
            .expect("the pending fixture transaction is admitted");
        index.push(IndexedBlock::executed(
            t.finalized.clone(),
            t.outcome.tx_hashes.clone(),
            t.outcome.senders.clone(),
            t.outcome.outcome.receipts.clone(),
            t.outcome.outcome.gas_used,
        ));
        Engine::Transfer(Box::new(engine))
    };
    (engine, index)
}

/// Arbitrary bytes as the body of a JSON-RPC HTTP POST to an EN (see the module doc).
pub fn rpc_request(data: &[u8]) {
    thread_local! {
        static RUNTIME: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("a tokio runtime");
    }
    for raw in [false, true] {
        let (status, content_type, body) =
            RUNTIME.with(|rt| rt.block_on(serve_one(data.to_vec(), raw)));
        check_rpc_answer(data, status, &content_type, &body);
    }
}

async fn serve_one(body: Vec<u8>, raw: bool) -> (u16, String, Vec<u8>) {
    use http_body_util::BodyExt;
    use jsonrpsee::server::{stop_channel, ConnectionState, HttpBody, HttpRequest};
    let t = template();
    let mut chain = t.chain.clone();
    if raw {
        chain.execution = ExecutionMode::Raw;
        chain.genesis_header.state_root = [0; 32];
    }
    let mut config = RpcConfig::new(std::net::SocketAddr::from(([127, 0, 0, 1], 0)), chain);
    // One request at a time: the server-wide rate limit would only make answers depend on
    // the fuzzer's speed.
    config.requests_per_second = 0;
    let (bridge, inbox) = RpcBridge::new(DEFAULT_BRIDGE_QUEUE);
    let module = match crate::rpc::methods::module(&config, bridge) {
        Ok(module) => module,
        Err(e) => panic!("the JSON-RPC module: {e}"),
    };
    // The server's own settings.
    let server_config = crate::rpc::server_config(&config);
    let (engine, index) = exec_side(raw);
    // The exec shard's side of the bridge (`exec::run_with_rpc`), until the module is dropped.
    let exec = async move {
        let mut engine = engine;
        while let Ok(request) = inbox.recv_async().await {
            let answered = chain_index::answer(
                &mut engine,
                &index,
                0,
                request.query,
                FIXTURE_TIME_MS + 2000,
            );
            let _ = request.reply.send(answered.answer);
        }
    };
    let call = async move {
        let mut request = HttpRequest::new(HttpBody::from(body));
        *request.method_mut() = http::Method::POST;
        request.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json"),
        );
        let (stop, _handle) = stop_channel();
        let permit = Arc::new(tokio::sync::Semaphore::new(1))
            .try_acquire_owned()
            .expect("a fresh permit");
        let connection = ConnectionState::new(stop, 0, permit);
        let response = jsonrpsee::server::http::call_with_service_builder(
            request,
            server_config,
            connection,
            module,
            jsonrpsee::server::middleware::rpc::RpcServiceBuilder::new(),
        )
        .await;
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let body = match response.into_body().collect().await {
            Ok(collected) => collected.to_bytes().to_vec(),
            Err(e) => panic!("reading the answer: {e}"),
        };
        (status, content_type, body)
    };
    // The call ends first: the exec loop ends only once the module (holding the bridge) is
    // gone, which the call drops when it returns.
    futures_lite::future::or(call, async {
        exec.await;
        // Reached only if the call is still pending with the bridge closed: the call then
        // finishes on its own (an internal error, which the check refuses).
        std::future::pending().await
    })
    .await
}

fn check_rpc_answer(request: &[u8], status: u16, content_type: &str, body: &[u8]) {
    let shown = || String::from_utf8_lossy(body).into_owned();
    assert!(
        matches!(status, 200 | 400 | 413),
        "HTTP {status} to a JSON POST: {}",
        shown()
    );
    assert!(
        content_type.starts_with("application/json"),
        "a {content_type} answer: {}",
        shown()
    );
    if body.is_empty() {
        // An empty batch answer is acknowledged with an empty body.
        assert_eq!(status, 200);
        return;
    }
    let value: serde_json::Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => panic!("a non-JSON answer ({e}): {}", shown()),
    };
    let first = request.iter().find(|b| !b.is_ascii_whitespace());
    match &value {
        // A notification, or a batch of notifications only, has no response (JSON-RPC 2.0
        // section 6); jsonrpsee acknowledges it over HTTP with `null`. (It skips the params
        // of a notification unparsed, so the request need not be strictly valid JSON.)
        serde_json::Value::Null => assert!(
            matches!(first, Some(b'{' | b'[')),
            "`null` to a request that is neither a call nor a batch"
        ),
        serde_json::Value::Object(_) => check_rpc_response(&value),
        serde_json::Value::Array(items) => {
            assert_eq!(first, Some(&b'['), "a batch answer to a single request");
            assert!(!items.is_empty(), "an empty batch answer");
            for item in items {
                check_rpc_response(item);
            }
        }
        other => panic!("an answer that is neither object nor array: {other}"),
    }
}

fn check_rpc_response(value: &serde_json::Value) {
    let object = value.as_object().expect("a response object");
    assert_eq!(
        object.get("jsonrpc"),
        Some(&serde_json::json!("2.0")),
        "{value}"
    );
    assert!(
        object.contains_key("id"),
        "a response without an id: {value}"
    );
    match (object.get("result"), object.get("error")) {
        (Some(_), None) => {}
        (None, Some(error)) => {
            let code = error.get("code").and_then(|c| c.as_i64());
            let message = error.get("message").and_then(|m| m.as_str());
            assert!(
                code.is_some() && message.is_some(),
                "a malformed error: {value}"
            );
            // -32603: the exec side answered another question, dropped it or timed out;
            // none of that may happen with a live exec side.
            assert_ne!(code, Some(-32603), "an internal error: {value}");
        }
        _ => panic!("a response with neither or both of result and error: {value}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Handshake
// ---------------------------------------------------------------------------------------------

/// The handshake's chain id and the two fixed keys of its fuzz target: ours and the peer's.
fn handshake_keys() -> &'static (BlsSecretKey, BlsSecretKey) {
    static KEYS: OnceLock<(BlsSecretKey, BlsSecretKey)> = OnceLock::new();
    KEYS.get_or_init(|| {
        (
            BlsSecretKey::from_seed(&[0x11; 32]),
            BlsSecretKey::from_seed(&[0x22; 32]),
        )
    })
}

/// Arbitrary bytes as tampering with a real handshake between two nodes: `data[0]` picks who
/// dialed and whether the peer is admitted; the next [`HELLO_LEN`] bytes are XORed into the
/// peer's hello on its way to us, the next [`AUTH_LEN`] into its `Auth` (missing bytes are
/// zero: untouched). Invariants: we authenticate the peer exactly when neither message was
/// touched and the peer is admitted, and then as the peer's real key and role; anything else
/// is refused with an error, never a panic.
pub fn handshake(data: &[u8]) {
    let (ours, theirs) = handshake_keys();
    let Some((&control, rest)) = data.split_first() else {
        return;
    };
    let (our_side, their_side) = if control & 1 == 0 {
        (Side::Listener, Side::Dialer)
    } else {
        (Side::Dialer, Side::Listener)
    };
    let admitted = control & 2 == 0;
    let mut hello_mask = [0u8; HELLO_LEN];
    let mut auth_mask = [0u8; AUTH_LEN];
    let (for_hello, for_auth) = rest.split_at(rest.len().min(HELLO_LEN));
    hello_mask[..for_hello.len()].copy_from_slice(for_hello);
    auth_mask[..for_auth.len().min(AUTH_LEN)]
        .copy_from_slice(&for_auth[..for_auth.len().min(AUTH_LEN)]);
    let exchange = |b: u8| crate::net::handshake::KeyExchange {
        secret: [b; 32],
        encrypt: b & 1 == 1,
    };
    let mut us = Handshake::new(
        our_side,
        ours,
        CHAIN_ID,
        Role::Cn,
        [0xa5; NONCE_LEN],
        exchange(0x17),
    );
    let mut them = Handshake::new(
        their_side,
        theirs,
        CHAIN_ID,
        Role::Pn,
        [0x5a; NONCE_LEN],
        exchange(0x28),
    );
    let mut hello = them.hello();
    for (b, m) in hello.iter_mut().zip(hello_mask) {
        *b ^= m;
    }
    let admit = |_role: Role, _node_id: [u8; 20]| {
        if admitted {
            Ok(())
        } else {
            Err("not on the allowlist".to_string())
        }
    };
    let Ok(_our_auth) = us.on_peer_hello(&hello, admit) else {
        assert!(
            !admitted || hello_mask != [0; HELLO_LEN],
            "the genuine hello of an admitted peer was refused"
        );
        return;
    };
    // The peer answers our (untouched) hello with its Auth, which we receive tampered.
    let their_auth = them
        .on_peer_hello(&us.hello(), |_, _| Ok(()))
        .expect("the peer takes our genuine hello");
    let mut auth = their_auth;
    for (b, m) in auth.iter_mut().zip(auth_mask) {
        *b ^= m;
    }
    let genuine = hello_mask == [0; HELLO_LEN] && auth_mask == [0; AUTH_LEN];
    match us.on_peer_auth(&auth) {
        Ok(session) => {
            assert!(genuine, "a tampered handshake authenticated");
            assert_eq!(session.peer.node_id, theirs.public_key().node_id());
            assert_eq!(session.peer.role, Role::Pn);
            assert!(session.keys.encrypt, "one side asked for encryption");
        }
        Err(_) => assert!(!genuine, "the genuine handshake was refused"),
    }
}

// ---------------------------------------------------------------------------------------------
// Bootnode registry
// ---------------------------------------------------------------------------------------------

/// Arbitrary bytes as a bootnode's life: `data[0]` picks the tier it serves, then every 8
/// bytes are one event (a query from one of 64 nodes, in a role, with or without a
/// registration address, at a time that only moves forward; an expiry sweep; or a reload of
/// the directory admitting a subset of the nodes). Invariants after every event: no more than
/// [`crate::net::bootnode::MAX_REGISTRATIONS`] registrations; a refused node changes nothing; an answer lists at
/// most [`MAX_PEER_LIST`] peers, never the asker, only roles its rule tells it about and only
/// admitted nodes (registered, with a unicast address) or static peers; after a reload no
/// registration of a node it removed is left.
pub fn bootnode_registry(data: &[u8]) {
    use crate::net::bootnode::{rule, Directory, DiscoveredPeer, Registry, MAX_REGISTRATIONS};
    let Some((&control, events)) = data.split_first() else {
        return;
    };
    const ROLES: [Role; 3] = [Role::Cn, Role::Pn, Role::En];
    let serves = ROLES[control as usize % 3];
    let node_id = |k: u8| -> [u8; 20] { [k % 64 + 1; 20] };
    let council: std::collections::BTreeSet<[u8; 20]> = (0..16).map(node_id).collect();
    let directory_of = |mask: u64| Directory {
        allowlist: (0..64u8)
            .filter(|k| mask >> k & 1 == 1)
            .map(node_id)
            .collect(),
        static_peers: (0..4u8)
            .map(|k| DiscoveredPeer {
                role: ROLES[k as usize % 3],
                node_id: node_id(60 + k),
                address: std::net::SocketAddr::from(([10, 0, 0, k + 1], 4000)),
            })
            .collect(),
    };
    let mut registry = Registry::new(serves, council, directory_of(u64::MAX));
    let start = std::time::Instant::now();
    let mut now = start;
    for (n, event) in events.chunks_exact(8).enumerate() {
        now += Duration::from_secs(u64::from(event[7] % 64));
        match event[0] % 8 {
            0 => {
                registry.expire(now);
            }
            1 => {
                let mask = u64::from_le_bytes(event.try_into().expect("8 bytes"));
                let change = registry.set_directory(directory_of(mask));
                for removed in &change.removed {
                    assert!(
                        registry.admit(Role::Pn, removed).is_err()
                            && registry.admit(Role::Cn, removed).is_err()
                            && registry.admit(Role::En, removed).is_err()
                    );
                }
            }
            _ => {
                let role = ROLES[event[1] as usize % 3];
                let asker = node_id(event[2]);
                let register = (event[3] & 1 == 1)
                    .then(|| std::net::SocketAddr::from(([127, 0, event[4], event[5] | 1], 30000)));
                let before = registry.registered();
                match registry.query(now, role, asker, register, n as u64) {
                    Err(_) => {
                        assert!(registry.admit(role, &asker).is_err());
                        assert_eq!(
                            registry.registered(),
                            before,
                            "a refused node changed the registry"
                        );
                    }
                    Ok(answer) => {
                        let told = rule(serves, role).expect("admitted, so a rule").told;
                        assert!(answer.peers.len() <= MAX_PEER_LIST);
                        for p in &answer.peers {
                            assert_ne!(p.node_id, asker, "an asker told about itself");
                            assert!(told.contains(&p.role), "{role:?} told about a {:?}", p.role);
                            let is_static =
                                registry.directory().static_peers.iter().any(|s| s == p);
                            assert!(
                                is_static || registry.admit(p.role, &p.node_id).is_ok(),
                                "told about a node not admitted"
                            );
                        }
                    }
                }
            }
        }
        assert!(registry.registered() <= MAX_REGISTRATIONS);
    }
}

// ---------------------------------------------------------------------------------------------
// What a node reads from disk: block log segments, the consensus WAL, snapshots, key files
// ---------------------------------------------------------------------------------------------

/// A folder of this process for the disk targets (each run of a target rewrites its files).
fn scratch_dir(name: &str) -> std::path::PathBuf {
    static ROOT: OnceLock<std::path::PathBuf> = OnceLock::new();
    let root = ROOT.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("corecell-fuzz-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("scratch folder");
        dir
    });
    let dir = root.join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch folder");
    dir
}

/// The genesis header block log inputs extend.
pub fn block_log_genesis() -> BlockHeader {
    crate::store::fixtures::genesis_header()
}

/// `count` blocks after [`block_log_genesis`] (see [`crate::store::fixtures`]), for seeds.
pub fn block_log_chain(count: u64) -> Vec<FinalizedBlock> {
    let mut blocks: Vec<FinalizedBlock> = Vec::new();
    let genesis = block_log_genesis();
    for height in 1..=count {
        let parent = blocks.last().map_or(&genesis, |b| &b.block.header);
        let transactions: Vec<SignedTransaction> = (0..height % 4)
            .map(|i| SignedTransaction {
                bytes: vec![(height + i) as u8 | 1; 40],
            })
            .collect();
        blocks.push(crate::store::fixtures::child_block(parent, transactions));
    }
    blocks
}

/// The file bytes a disk target writes: with `data[0]` even, the rest as it is; with it odd,
/// the rest as payloads (each a little-endian `u16` length, then that many bytes), each framed
/// as a record with its correct checksum, so the archive and chain checks behind the checksum
/// are reached as well.
fn record_file(data: &[u8]) -> Vec<u8> {
    let Some((&mode, mut rest)) = data.split_first() else {
        return Vec::new();
    };
    if mode & 1 == 0 {
        return rest.to_vec();
    }
    let mut out = Vec::new();
    while rest.len() >= 2 {
        let len = usize::from(u16::from_le_bytes([rest[0], rest[1]])).min(rest.len() - 2);
        let payload = &rest[2..2 + len];
        rest = &rest[2 + len..];
        if !payload.is_empty() {
            crate::store::record::append_record(&mut out, payload);
        }
    }
    out
}

/// The input of [`block_log`] or [`consensus_wal`] that frames `payloads` as records.
pub fn records_input(payloads: &[Vec<u8>]) -> Vec<u8> {
    let mut out = vec![1u8];
    for p in payloads {
        out.extend_from_slice(&(p.len() as u16).to_le_bytes());
        out.extend_from_slice(p);
    }
    out
}

/// Arbitrary bytes as the first block log segment of a data directory (see `record_file`),
/// scanned as at start-up ([`crate::store::scan_block_log`], which changes nothing).
/// Invariants: refused with an error naming the file, or accepted with as many indexed
/// blocks as good records, heights 1..=head from the genesis, the good length within the
/// file; a second scan gives the same result.
pub fn block_log(data: &[u8]) {
    let dir = scratch_dir("block_log");
    let bytes = record_file(data);
    let path = crate::store::segment_path(&dir, 1);
    std::fs::write(&path, &bytes).expect("write the segment");
    let genesis = block_log_genesis();
    match crate::store::scan_block_log(&dir, &genesis) {
        Err(e) => assert!(
            e.to_string().contains(&path.display().to_string()),
            "an error that does not name its file: {e}"
        ),
        Ok(scan) => {
            assert_eq!(scan.segments.len(), 1);
            let segment = &scan.segments[0];
            assert!(segment.good_len <= segment.file_len);
            assert_eq!(segment.file_len, bytes.len() as u64);
            assert_eq!(scan.blocks(), scan.head.height);
            assert_eq!(scan.index.blocks(), scan.blocks());
            assert_eq!(scan.index.head_height(), scan.head.height);
            for h in 1..=scan.head.height {
                assert!(scan.index.locate(h).is_some(), "height {h} not indexed");
            }
            let again = crate::store::scan_block_log(&dir, &genesis).expect("the same scan");
            assert_eq!(again.head.hash(), scan.head.hash());
            assert_eq!(again.segments[0].good_len, segment.good_len);
        }
    }
}

/// Arbitrary bytes as the consensus WAL (see `record_file`), scanned as at start-up
/// ([`crate::store::scan_wal`]). Invariants: refused with an error, or accepted with the good
/// prefix within the file, and the accepted records written anew scan back as the same
/// records, all good. (The bytes need not come back: an archive with slack bytes can be
/// accepted, and re-encodes shorter.)
pub fn consensus_wal(data: &[u8]) {
    let dir = scratch_dir("consensus_wal");
    let bytes = record_file(data);
    std::fs::write(dir.join(crate::store::WAL_FILE), &bytes).expect("write the WAL");
    let Ok(scan) = crate::store::scan_wal(&dir) else {
        return;
    };
    assert!(scan.good_len <= scan.file_len);
    assert_eq!(scan.file_len, bytes.len() as u64);
    let mut reencoded = Vec::new();
    for record in &scan.records {
        crate::store::record::append_record(&mut reencoded, &crate::types::to_bytes(record));
    }
    std::fs::write(dir.join(crate::store::WAL_FILE), &reencoded).expect("write the WAL");
    let again = crate::store::scan_wal(&dir).expect("re-encoded records scan");
    assert_eq!(again.records, scan.records);
    assert_eq!(again.good_len, reencoded.len() as u64);
}

/// Arbitrary bytes as a state snapshot file ([`State::decode_snapshot`]). Invariants: an
/// accepted snapshot encodes back to a snapshot that decodes to the same chain, height,
/// accounts and state root.
pub fn snapshot(data: &[u8]) {
    let Ok(mut state) = State::decode_snapshot(data) else {
        return;
    };
    let mut again = State::decode_snapshot(&state.encode_snapshot()).expect("re-encoded snapshot");
    assert_eq!(again.chain_id(), state.chain_id());
    assert_eq!(again.height(), state.height());
    assert_eq!(again.len(), state.len());
    assert_eq!(again.root(), state.root());
}

/// Arbitrary bytes as a node key file, written 0600 and loaded as at start-up
/// ([`crate::config::keys::NodeKey::load`]). Invariants: refused with an error naming the file,
/// or a key whose public key, node id and proof of possession belong to its secret, and which
/// written back loads as the same key.
pub fn key_file(data: &[u8]) {
    use crate::config::keys::NodeKey;
    use std::os::unix::fs::PermissionsExt;
    let dir = scratch_dir("key_file");
    let path = dir.join("node.key");
    std::fs::write(&path, data).expect("write the key file");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    match NodeKey::load(&path) {
        Err(e) => check_error(&e, &path),
        Ok(key) => {
            let public = key.secret.public_key();
            assert_eq!(key.public_key, public.to_bytes());
            assert_eq!(key.node_id, public.node_id());
            let again = dir.join("again.key");
            key.write(&again, true).expect("write the key back");
            let reloaded = NodeKey::load(&again).expect("the written key loads");
            assert_eq!(reloaded.public_key, key.public_key);
            assert_eq!(reloaded.secret.to_bytes(), key.secret.to_bytes());
        }
    }
}
