//! Tests of the wire types: archive and frame round trips, block identity, the incremental frame
//! decoder, the size limits, and hostile input (which must be refused with an error, never a
//! panic).
//!
//! Valid values are built with real BLS keys (a council of four, every member on the committee)
//! so that the certificates and signatures carried by the round-tripped archives also verify.

use std::collections::HashSet;
use std::fmt::Debug;
use std::net::SocketAddr;
use std::sync::OnceLock;

use proptest::prelude::*;
use rkyv::api::high::{HighDeserializer, HighSerializer, HighValidator};
use rkyv::bytecheck::CheckBytes;
use rkyv::rancor::Error as RkyvError;
use rkyv::ser::allocator::ArenaHandle;
use rkyv::util::AlignedVec;
use rkyv::Archive;

use super::chain::{ArchivedBlock, ArchivedBlockHeader, ArchivedFinalizedBlock, SignedTransaction};
use super::consensus::{
    ArchivedProposal, ArchivedQuorumCertificate, ArchivedRoundChange, ArchivedVote,
};
use super::frame::{
    self, encode_frame, BootnodeMessage, FrameHeader, Message, WireMessage, FRAME_HEADER_LEN,
    MAX_BLOCK_PAYLOAD, MAX_FINALIZED_BLOCK_PAYLOAD, MAX_PEER_LIST_PAYLOAD, MAX_PEER_QUERY_PAYLOAD,
    MAX_PROPOSAL_PAYLOAD, MAX_ROUND_CHANGE_PAYLOAD, MAX_VOTE_PAYLOAD,
};
use super::network::{
    ip_from_wire, ArchivedIngressAck, ArchivedSyncRequest, ArchivedTxBatch, IngressAck, PeerList,
    PeerQuery, PeerRecord, SyncRequest, TxBatch, MAX_PEER_LIST,
};
use super::*;
use crate::crypto::bls::{BlsSecretKey, BlsSignature, CouncilKeys, Domain};
use crate::crypto::election::{next_mix, randao_reveal, Committee};
use crate::types::hash::{keccak256, Hash32};
use crate::types::MAX_TX_BYTES;

const CHAIN_ID: u64 = 1001;
/// Council (and committee) size of the fixtures. Quorum of 4 is 3.
const COUNCIL: usize = 4;
/// The parent mix every fixture height is elected from.
const PARENT_MIX: Hash32 = [7u8; 32];
/// Height of the fixtures.
const HEIGHT: Height = 10;
/// Council index of the fixtures' proposer.
const PROPOSER: CouncilIndex = 2;
/// The signers of the fixtures' certificates and justification (a quorum of 4).
const QUORUM_SIGNERS: [CouncilIndex; 3] = [0, 1, 3];

const ALL_KINDS: [FrameKind; 7] = [
    FrameKind::Proposal,
    FrameKind::Vote,
    FrameKind::RoundChange,
    FrameKind::FinalizedBlock,
    FrameKind::TxBatch,
    FrameKind::IngressAck,
    FrameKind::SyncRequest,
];

// ---------------------------------------------------------------------------------------------
// Fixtures
// ---------------------------------------------------------------------------------------------

struct Fixture {
    secrets: Vec<BlsSecretKey>,
    keys: CouncilKeys,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let secrets: Vec<BlsSecretKey> = (0..COUNCIL)
            .map(|i| BlsSecretKey::from_seed(&[i as u8 + 1; 32]))
            .collect();
        let members: Vec<_> = secrets
            .iter()
            .map(|sk| (sk.public_key().to_bytes(), sk.prove_possession().to_bytes()))
            .collect();
        let keys = CouncilKeys::new(&members).expect("fixture council is valid");
        Fixture { secrets, keys }
    })
}

fn secret(index: CouncilIndex) -> &'static BlsSecretKey {
    &fixture().secrets[index as usize]
}

fn committee(height: Height) -> Committee {
    Committee::elect(COUNCIL, COUNCIL, height, &PARENT_MIX)
}

/// A non-empty transaction whose bytes depend on `seed` (not a decodable Ethereum transaction:
/// the wire types carry opaque bytes).
fn tx(seed: usize, len: usize) -> SignedTransaction {
    let mut bytes: Vec<u8> = (0..len).map(|k| (seed * 31 + k * 7) as u8).collect();
    if let Some(first) = bytes.first_mut() {
        *first = 0x02;
    }
    SignedTransaction { bytes }
}

/// A header with a distinct value in every field; `transactions_root` is left zero.
fn header(height: Height, round: Round) -> BlockHeader {
    let reveal = randao_reveal(secret(PROPOSER), CHAIN_ID, height);
    BlockHeader {
        parent_hash: [0xa1; 32],
        height,
        round,
        timestamp_ms: 1_700_000_000_000u64.wrapping_add(height),
        proposer: PROPOSER,
        randao_reveal: reveal,
        mix: next_mix(&PARENT_MIX, &reveal),
        transactions_root: [0; 32],
        state_root: [0xb2; 32],
        committee_digest: committee(height).digest(),
    }
}

/// A block whose `transactions_root` matches its transactions.
fn block_with(height: Height, round: Round, transactions: Vec<SignedTransaction>) -> Block {
    let mut block = Block {
        header: header(height, round),
        transactions,
    };
    block.header.transactions_root = block.computed_transactions_root();
    block
}

fn block(height: Height, round: Round, txs: usize) -> Block {
    block_with(
        height,
        round,
        (0..txs).map(|i| tx(i, 40 + i * 13)).collect(),
    )
}

fn bitmap(council: usize, signers_: &[CouncilIndex]) -> Vec<u8> {
    let mut bm = signers::empty(council);
    for &s in signers_ {
        signers::set(&mut bm, s);
    }
    bm
}

fn vote(kind: VoteKind, height: Height, round: Round, hash: Hash32, signer: CouncilIndex) -> Vote {
    let message = kind.signing_message(CHAIN_ID, height, round, &hash);
    Vote {
        kind,
        height,
        round,
        block_hash: hash,
        signer,
        signature: secret(signer).sign(Domain::Vote, &message).to_bytes(),
    }
}

/// A certificate aggregated from real signatures of `signers_`.
fn certificate(
    kind: VoteKind,
    height: Height,
    round: Round,
    hash: Hash32,
    signers_: &[CouncilIndex],
) -> QuorumCertificate {
    let message = kind.signing_message(CHAIN_ID, height, round, &hash);
    let sigs: Vec<BlsSignature> = signers_
        .iter()
        .map(|&s| secret(s).sign(Domain::Vote, &message))
        .collect();
    let refs: Vec<&BlsSignature> = sigs.iter().collect();
    QuorumCertificate {
        kind,
        height,
        round,
        block_hash: hash,
        signers: bitmap(COUNCIL, signers_),
        signature: BlsSignature::aggregate(&refs)
            .expect("non-empty aggregate")
            .to_bytes(),
    }
}

fn round_change(
    height: Height,
    round: Round,
    signer: CouncilIndex,
    prepared: Option<QuorumCertificate>,
) -> RoundChange {
    let mut rc = RoundChange {
        height,
        round,
        signer,
        prepared,
        signature: [0; 96],
    };
    rc.signature = secret(signer)
        .sign(Domain::Vote, &rc.signing_message(CHAIN_ID))
        .to_bytes();
    rc
}

fn proposal(round: Round, block: Block, justification: Vec<RoundChange>) -> Proposal {
    let mut p = Proposal {
        proposer: block.header.proposer,
        round,
        block,
        justification,
        signature: [0; 96],
    };
    p.signature = secret(p.block.header.proposer)
        .sign(Domain::Vote, &p.signing_message(CHAIN_ID))
        .to_bytes();
    p
}

fn finalized(block: Block) -> FinalizedBlock {
    let h = &block.header;
    let certificate = certificate(
        VoteKind::Commit,
        h.height,
        h.round,
        block.hash(),
        &QUORUM_SIGNERS,
    );
    FinalizedBlock { block, certificate }
}

fn sample_vote(kind: VoteKind) -> Vote {
    vote(kind, HEIGHT, 1, block(HEIGHT, 1, 2).hash(), 3)
}

/// A prepared certificate of round 1 for the round-1 block at [`HEIGHT`].
fn sample_prepared() -> QuorumCertificate {
    let b = block(HEIGHT, 1, 3);
    certificate(VoteKind::Prepare, HEIGHT, 1, b.hash(), &QUORUM_SIGNERS)
}

fn sample_round_change(with_prepared: bool) -> RoundChange {
    round_change(HEIGHT, 3, 1, with_prepared.then(sample_prepared))
}

fn sample_proposal_round0() -> Proposal {
    proposal(0, block(HEIGHT, 0, 3), Vec::new())
}

/// Round 2 re-proposes the block first proposed (and prepared) in round 1, justified by a
/// quorum of round changes for round 2, one of which carries the round-1 prepared certificate.
fn sample_proposal_round2() -> Proposal {
    let b = block(HEIGHT, 1, 3);
    let prepared = certificate(VoteKind::Prepare, HEIGHT, 1, b.hash(), &QUORUM_SIGNERS);
    let justification = vec![
        round_change(HEIGHT, 2, 0, None),
        round_change(HEIGHT, 2, 1, Some(prepared)),
        round_change(HEIGHT, 2, 3, None),
    ];
    proposal(2, b, justification)
}

fn sample_finalized() -> FinalizedBlock {
    finalized(block(HEIGHT, 0, 4))
}

/// One valid encoded frame of each shape, built once (signing is the slow part).
fn sample_tx_batch() -> TxBatch {
    TxBatch {
        id: 42,
        transactions: (0..3u8)
            .map(|i| SignedTransaction {
                bytes: vec![i + 1; 64 + i as usize],
            })
            .collect(),
    }
}

fn sample_frames() -> &'static [Vec<u8>] {
    static FRAMES: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    FRAMES.get_or_init(|| {
        vec![
            encode_frame(&sample_vote(VoteKind::Prepare)),
            encode_frame(&sample_vote(VoteKind::Commit)),
            encode_frame(&sample_round_change(false)),
            encode_frame(&sample_round_change(true)),
            encode_frame(&sample_proposal_round0()),
            encode_frame(&sample_proposal_round2()),
            encode_frame(&sample_finalized()),
            encode_frame(&sample_tx_batch()),
            encode_frame(&IngressAck {
                batch_id: 7,
                status: IngressAck::FINAL,
                height: HEIGHT,
                count: 3,
            }),
            encode_frame(&SyncRequest {
                from_height: HEIGHT,
            }),
        ]
    })
}

// ---------------------------------------------------------------------------------------------
// Generic helpers
// ---------------------------------------------------------------------------------------------

type Ser<'a> = HighSerializer<AlignedVec<16>, ArenaHandle<'a>, RkyvError>;

/// A wire message, and how to find its archive in a [`Message`].
trait Wire: WireMessage + Archive + PartialEq + Debug {
    fn archived<'a>(message: Message<'a>) -> Option<&'a Self::Archived>;
}

impl Wire for Vote {
    fn archived<'a>(message: Message<'a>) -> Option<&'a ArchivedVote> {
        match message {
            Message::Vote(m) => Some(m),
            _ => None,
        }
    }
}
impl Wire for RoundChange {
    fn archived<'a>(message: Message<'a>) -> Option<&'a ArchivedRoundChange> {
        match message {
            Message::RoundChange(m) => Some(m),
            _ => None,
        }
    }
}
impl Wire for Proposal {
    fn archived<'a>(message: Message<'a>) -> Option<&'a ArchivedProposal> {
        match message {
            Message::Proposal(m) => Some(m),
            _ => None,
        }
    }
}
impl Wire for FinalizedBlock {
    fn archived<'a>(message: Message<'a>) -> Option<&'a ArchivedFinalizedBlock> {
        match message {
            Message::FinalizedBlock(m) => Some(m),
            _ => None,
        }
    }
}

/// Encodes with [`to_bytes`], decodes with `rkyv::from_bytes` and with `rkyv::access` +
/// `rkyv::deserialize`, and checks both equal `value` and that re-encoding gives the same bytes.
fn archive_round_trip<T>(value: &T) -> AlignedVec<16>
where
    T: Archive + PartialEq + Debug + for<'a> rkyv::Serialize<Ser<'a>>,
    T::Archived: for<'a> CheckBytes<HighValidator<'a, RkyvError>>
        + rkyv::Deserialize<T, HighDeserializer<RkyvError>>,
{
    let bytes = to_bytes(value);
    assert!(!bytes.is_empty());
    let via_from_bytes: T = rkyv::from_bytes::<T, RkyvError>(&bytes).expect("from_bytes");
    assert_eq!(&via_from_bytes, value);
    let archived = rkyv::access::<T::Archived, RkyvError>(&bytes).expect("access");
    let via_deserialize: T = rkyv::deserialize::<T, RkyvError>(archived).expect("deserialize");
    assert_eq!(&via_deserialize, value);
    assert_eq!(
        to_bytes(&via_deserialize).as_slice(),
        bytes.as_slice(),
        "encoding is deterministic"
    );
    bytes
}

/// [`archive_round_trip`], then [`encode_frame`] and back through [`FrameDecoder`] and
/// [`Frame::message`] (and [`frame::access`]). Returns the encoded frame.
fn frame_round_trip<T>(value: &T) -> Vec<u8>
where
    T: Wire + for<'a> rkyv::Serialize<Ser<'a>>,
    T::Archived: for<'a> CheckBytes<HighValidator<'a, RkyvError>>
        + rkyv::Deserialize<T, HighDeserializer<RkyvError>>,
{
    let payload = archive_round_trip(value);
    let framed = encode_frame(value);
    assert_eq!(framed.len(), FRAME_HEADER_LEN + payload.len());
    assert_eq!(framed[..4], (payload.len() as u32).to_be_bytes());
    assert_eq!(framed[4], T::KIND as u8);
    assert_eq!(&framed[FRAME_HEADER_LEN..], payload.as_slice());
    assert!(payload.len() <= T::KIND.max_payload());

    let mut decoder = FrameDecoder::new();
    let mut input = framed.as_slice();
    let frame = decoder
        .decode(&mut input)
        .expect("valid frame")
        .expect("whole frame");
    assert!(input.is_empty());
    assert_eq!(decoder.buffered(), 0);
    assert_eq!(frame.kind, T::KIND);
    assert_eq!(frame.payload.as_slice(), payload.as_slice());

    let message = frame.message().expect("valid message");
    let archived = T::archived(message).expect("message of the frame's kind");
    let back: T = rkyv::deserialize::<T, RkyvError>(archived).expect("deserialize");
    assert_eq!(&back, value);

    let direct = frame::access::<T::Archived>(T::KIND.name(), &frame.payload).expect("access");
    let back: T = rkyv::deserialize::<T, RkyvError>(direct).expect("deserialize");
    assert_eq!(&back, value);
    framed
}

/// Feeds `stream` to a fresh decoder in chunks of the given sizes (cycled; a size of zero feeds
/// an empty slice), stopping at the first error. Returns the frames, the error if any, and what
/// the decoder holds at the end. Checks that `Ok(None)` always means the chunk was used up.
fn decode_chunks(stream: &[u8], sizes: &[usize]) -> (Vec<Frame>, Option<FrameError>, usize) {
    let mut decoder = FrameDecoder::new();
    let mut frames = Vec::new();
    let mut rest = stream;
    let mut sizes = sizes.iter().copied().cycle();
    loop {
        let mut size = sizes.next().unwrap_or(rest.len());
        if size == 0 {
            // An empty feed changes nothing; then make progress anyway.
            let before = decoder.buffered();
            assert!(matches!(decoder.decode(&mut &[][..]), Ok(None)));
            assert_eq!(decoder.buffered(), before);
            size = 1;
        }
        let size = size.min(rest.len());
        let (chunk, tail) = rest.split_at(size);
        rest = tail;
        let mut chunk = chunk;
        loop {
            match decoder.decode(&mut chunk) {
                Ok(Some(frame)) => {
                    assert!(frame.payload.len() <= frame.kind.max_payload());
                    assert!(!frame.payload.is_empty());
                    frames.push(frame);
                }
                Ok(None) => {
                    assert!(chunk.is_empty(), "Ok(None) with input left over");
                    break;
                }
                Err(e) => return (frames, Some(e), decoder.buffered()),
            }
        }
        assert!(decoder.buffered() <= FRAME_HEADER_LEN + MAX_PROPOSAL_PAYLOAD);
        if rest.is_empty() {
            return (frames, None, decoder.buffered());
        }
    }
}

/// Copies `bytes` into 16-byte-aligned memory.
fn aligned(bytes: &[u8]) -> AlignedVec<16> {
    let mut v = AlignedVec::<16>::with_capacity(bytes.len());
    v.extend_from_slice(bytes);
    v
}

/// A frame whose payload is `payload`, as the decoder would hand it out.
fn frame_of(kind: FrameKind, payload: &[u8]) -> Frame {
    Frame {
        kind,
        payload: aligned(payload),
    }
}

/// The raw frame bytes `header(len, kind) | payload`.
fn raw_frame(kind: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = (payload.len() as u32).to_be_bytes().to_vec();
    out.push(kind);
    out.extend_from_slice(payload);
    out
}

/// Runs the whole receive path on arbitrary bytes: decode (whole and in the given chunks), then
/// `message()` on every frame. Must never panic.
fn receive_all(stream: &[u8], sizes: &[usize]) -> usize {
    let (frames, _, _) = decode_chunks(stream, sizes);
    let mut accepted = 0;
    for frame in &frames {
        if let Ok(message) = frame.message() {
            accepted += 1;
            touch(message);
        }
    }
    accepted
}

/// Reads every field a consumer reads from an accepted message (so a validated archive that
/// would make a reader panic is caught).
fn touch(message: Message<'_>) {
    match message {
        Message::Vote(v) => {
            let _ = v.signing_message(CHAIN_ID);
            let _: Vote = rkyv::deserialize::<Vote, RkyvError>(v).expect("deserialize");
        }
        Message::RoundChange(rc) => {
            let _ = rc.signing_message(CHAIN_ID);
            let _: RoundChange = rkyv::deserialize::<RoundChange, RkyvError>(rc).expect("de");
        }
        Message::Proposal(p) => {
            let _ = p.signing_message(CHAIN_ID);
            let _ = p.block.header.hash();
            let _: Proposal = rkyv::deserialize::<Proposal, RkyvError>(p).expect("deserialize");
        }
        Message::FinalizedBlock(f) => {
            let _ = f.block.header.hash();
            let _: FinalizedBlock =
                rkyv::deserialize::<FinalizedBlock, RkyvError>(f).expect("deserialize");
        }
        Message::TxBatch(b) => {
            let _: TxBatch = rkyv::deserialize::<TxBatch, RkyvError>(b).expect("deserialize");
        }
        Message::IngressAck(a) => {
            let _: IngressAck = rkyv::deserialize::<IngressAck, RkyvError>(a).expect("de");
        }
        Message::SyncRequest(r) => {
            let _: SyncRequest = rkyv::deserialize::<SyncRequest, RkyvError>(r).expect("de");
        }
    }
}

fn limit_error(frame: &Frame) -> LimitError {
    match frame.message() {
        Err(FrameError::Limit { kind, source }) => {
            assert_eq!(kind, frame.kind.name());
            source
        }
        other => panic!("expected a limit error, got {other:?}"),
    }
}

fn limit_error_of<T>(value: &T) -> LimitError
where
    T: WireMessage + for<'a> rkyv::Serialize<Ser<'a>>,
{
    limit_error(&frame_of(T::KIND, &to_bytes(value)))
}

fn is_invalid(e: &LimitError, what: &str) -> bool {
    matches!(e, LimitError::Invalid(m) if m.contains(what))
}

// ---------------------------------------------------------------------------------------------
// 1. Round trips
// ---------------------------------------------------------------------------------------------

#[test]
fn block_header_round_trips() {
    for h in [header(0, 0), header(HEIGHT, 7), header(u64::MAX, u32::MAX)] {
        let bytes = archive_round_trip(&h);
        let archived = rkyv::access::<ArchivedBlockHeader, RkyvError>(&bytes).unwrap();
        assert_eq!(archived.hash(), h.hash());
    }
}

#[test]
fn block_round_trips() {
    for txs in [0, 1, 5] {
        let b = block(HEIGHT, 0, txs);
        assert_eq!(b.transactions.len(), txs);
        let bytes = archive_round_trip(&b);
        let archived = rkyv::access::<ArchivedBlock, RkyvError>(&bytes).unwrap();
        assert_eq!(archived.check_limits(), Ok(()));
        assert_eq!(archived.transactions.len(), txs);
        for (a, n) in archived.transactions.iter().zip(&b.transactions) {
            assert_eq!(a.bytes.as_slice(), n.bytes.as_slice());
        }
    }
}

#[test]
fn quorum_certificates_of_both_kinds_round_trip_and_verify() {
    let f = fixture();
    let hash = block(HEIGHT, 1, 2).hash();
    for kind in [VoteKind::Prepare, VoteKind::Commit] {
        let qc = certificate(kind, HEIGHT, 1, hash, &QUORUM_SIGNERS);
        let bytes = archive_round_trip(&qc);
        let archived = rkyv::access::<ArchivedQuorumCertificate, RkyvError>(&bytes).unwrap();
        assert_eq!(archived.kind.to_native(), kind);
        assert_eq!(archived.check_shape(), Ok(()));
        f.keys
            .verify_certificate(CHAIN_ID, archived, kind, &committee(HEIGHT))
            .expect("the archived certificate verifies");
    }
}

#[test]
fn votes_of_both_kinds_round_trip_through_frames() {
    let f = fixture();
    for kind in [VoteKind::Prepare, VoteKind::Commit] {
        let v = sample_vote(kind);
        let framed = frame_round_trip(&v);
        let frame = decode_chunks(&framed, &[framed.len()]).0.pop().unwrap();
        let Ok(Message::Vote(archived)) = frame.message() else {
            panic!("not a vote")
        };
        assert_eq!(archived.kind.to_native(), kind);
        assert_eq!(
            archived.signing_message(CHAIN_ID),
            v.signing_message(CHAIN_ID)
        );
        f.keys
            .verify(
                archived.signer.to_native(),
                Domain::Vote,
                &archived.signing_message(CHAIN_ID),
                &archived.signature,
            )
            .expect("the archived vote's signature verifies");
    }
}

#[test]
fn round_changes_with_and_without_prepared_round_trip_through_frames() {
    let f = fixture();
    for with_prepared in [false, true] {
        let rc = sample_round_change(with_prepared);
        let framed = frame_round_trip(&rc);
        let frame = decode_chunks(&framed, &[7]).0.pop().unwrap();
        let Ok(Message::RoundChange(archived)) = frame.message() else {
            panic!("not a round change")
        };
        assert_eq!(archived.prepared.is_some(), with_prepared);
        assert_eq!(
            archived.signing_message(CHAIN_ID),
            rc.signing_message(CHAIN_ID)
        );
        f.keys
            .verify(
                1,
                Domain::Vote,
                &archived.signing_message(CHAIN_ID),
                &archived.signature,
            )
            .expect("the archived round change's signature verifies");
        if let Some(p) = archived.prepared.as_ref() {
            f.keys
                .verify_certificate(CHAIN_ID, p, VoteKind::Prepare, &committee(HEIGHT))
                .expect("the carried prepared certificate verifies");
        }
    }
    // With and without a prepared certificate the signed messages differ.
    assert_ne!(
        sample_round_change(false).signing_message(CHAIN_ID),
        sample_round_change(true).signing_message(CHAIN_ID)
    );
}

#[test]
fn proposals_round_trip_through_frames() {
    let p0 = sample_proposal_round0();
    let p2 = sample_proposal_round2();
    assert!(p0.justification.is_empty());
    assert_eq!(p2.justification.len(), QUORUM_SIGNERS.len());
    for p in [&p0, &p2] {
        let framed = frame_round_trip(p);
        let frame = decode_chunks(&framed, &[1]).0.pop().unwrap();
        let Ok(Message::Proposal(archived)) = frame.message() else {
            panic!("not a proposal")
        };
        assert_eq!(archived.block.header.hash(), p.block.hash());
        assert_eq!(
            archived.signing_message(CHAIN_ID),
            p.signing_message(CHAIN_ID)
        );
        assert_eq!(archived.justification.len(), p.justification.len());
        fixture()
            .keys
            .verify(
                archived.block.header.proposer.to_native(),
                Domain::Vote,
                &archived.signing_message(CHAIN_ID),
                &archived.signature,
            )
            .expect("the archived proposal's signature verifies");
    }
}

#[test]
fn finalized_block_round_trips_through_frames() {
    let fb = sample_finalized();
    let framed = frame_round_trip(&fb);
    let frame = decode_chunks(&framed, &[3, 100]).0.pop().unwrap();
    let Ok(Message::FinalizedBlock(archived)) = frame.message() else {
        panic!("not a finalized block")
    };
    assert_eq!(archived.block.header.hash(), fb.block.hash());
    assert_eq!(archived.certificate.block_hash, fb.block.hash());
    fixture()
        .keys
        .verify_certificate(
            CHAIN_ID,
            &archived.certificate,
            VoteKind::Commit,
            &committee(HEIGHT),
        )
        .expect("the archived commit certificate verifies");
}

// ---------------------------------------------------------------------------------------------
// 2. Block hash
// ---------------------------------------------------------------------------------------------

#[test]
fn block_hash_is_keccak_of_the_documented_layout() {
    let h = header(HEIGHT, 5);
    let b = block(HEIGHT, 5, 2);
    for h in [h, b.header.clone()] {
        let mut layout = Vec::new();
        layout.extend_from_slice(&h.parent_hash);
        layout.extend_from_slice(&h.height.to_be_bytes());
        layout.extend_from_slice(&h.round.to_be_bytes());
        layout.extend_from_slice(&h.timestamp_ms.to_be_bytes());
        layout.extend_from_slice(&h.proposer.to_be_bytes());
        layout.extend_from_slice(&h.randao_reveal);
        layout.extend_from_slice(&h.mix);
        layout.extend_from_slice(&h.transactions_root);
        layout.extend_from_slice(&h.state_root);
        layout.extend_from_slice(&h.committee_digest);
        assert_eq!(layout.len(), BlockHeader::HASH_LAYOUT_LEN);
        assert_eq!(h.hash_layout().as_slice(), layout.as_slice());
        assert_eq!(h.hash(), keccak256(&layout));
    }
    assert_eq!(b.hash(), b.header.hash());
}

#[test]
fn archived_block_hash_equals_native_and_every_header_field_changes_it() {
    type Mutation = (&'static str, fn(&mut BlockHeader));
    let mutations: [Mutation; 10] = [
        ("parent_hash", |h| h.parent_hash[31] ^= 1),
        ("height", |h| h.height += 1),
        ("round", |h| h.round += 1),
        ("timestamp_ms", |h| h.timestamp_ms += 1),
        ("proposer", |h| h.proposer += 1),
        ("randao_reveal", |h| h.randao_reveal[50] ^= 0x80),
        ("mix", |h| h.mix[0] ^= 1),
        ("transactions_root", |h| h.transactions_root[16] ^= 4),
        ("state_root", |h| h.state_root[3] ^= 0x10),
        ("committee_digest", |h| h.committee_digest[31] ^= 0xff),
    ];
    let base = block(HEIGHT, 1, 3);
    let hash_of = |b: &Block| {
        let bytes = to_bytes(b);
        let archived = rkyv::access::<ArchivedBlock, RkyvError>(&bytes).unwrap();
        assert_eq!(archived.header.hash(), b.hash(), "archived hash == native");
        b.hash()
    };
    let base_hash = hash_of(&base);
    let mut seen = HashSet::from([base_hash]);
    for (field, mutate) in mutations {
        let mut b = base.clone();
        mutate(&mut b.header);
        assert_ne!(b.header, base.header, "{field}: mutation changed nothing");
        let h = hash_of(&b);
        assert_ne!(h, base_hash, "changing {field} did not change the hash");
        assert!(
            seen.insert(h),
            "changing {field} collided with another field"
        );
    }
    // The transactions themselves are bound only through transactions_root.
    let mut other_txs = base.clone();
    other_txs.transactions[0].bytes[1] ^= 1;
    assert_eq!(other_txs.hash(), base_hash);
    assert_ne!(
        other_txs.computed_transactions_root(),
        base.header.transactions_root
    );
}

#[test]
fn transactions_root_distinguishes_lists() {
    let roots: HashSet<Hash32> = [
        Vec::new(),
        vec![tx(0, 10)],
        vec![tx(0, 10), tx(1, 10)],
        vec![tx(1, 10), tx(0, 10)],
        vec![tx(0, 20)],
    ]
    .into_iter()
    .map(|txs| block_with(1, 0, txs).computed_transactions_root())
    .collect();
    assert_eq!(roots.len(), 5);
}

// ---------------------------------------------------------------------------------------------
// 3. FrameDecoder
// ---------------------------------------------------------------------------------------------

fn sample_stream() -> Vec<u8> {
    sample_frames().concat()
}

fn assert_frames_are_the_samples(frames: &[Frame]) {
    let expected = sample_frames();
    assert_eq!(frames.len(), expected.len());
    for (frame, bytes) in frames.iter().zip(expected) {
        assert_eq!(frame.kind as u8, bytes[4]);
        assert_eq!(frame.payload.as_slice(), &bytes[FRAME_HEADER_LEN..]);
        touch(frame.message().expect("valid message"));
    }
}

#[test]
fn decoder_whole_stream() {
    let stream = sample_stream();
    let mut decoder = FrameDecoder::new();
    let mut input = stream.as_slice();
    let mut frames = Vec::new();
    while let Some(frame) = decoder.decode(&mut input).expect("valid stream") {
        assert_eq!(
            decoder.buffered(),
            0,
            "nothing buffered after a whole frame"
        );
        frames.push(frame);
    }
    assert!(input.is_empty());
    assert_eq!(decoder.buffered(), 0);
    assert_frames_are_the_samples(&frames);
    // An empty input is a no-op.
    assert!(decoder.decode(&mut &[][..]).unwrap().is_none());
    assert_eq!(decoder.buffered(), 0);
}

#[test]
fn decoder_one_byte_at_a_time() {
    let stream = sample_stream();
    let mut decoder = FrameDecoder::new();
    let mut frames = Vec::new();
    let mut since_frame = 0;
    for byte in &stream {
        let mut input = std::slice::from_ref(byte);
        let out = decoder.decode(&mut input).expect("valid stream");
        assert!(input.is_empty());
        since_frame += 1;
        match out {
            Some(frame) => {
                assert_eq!(since_frame, FRAME_HEADER_LEN + frame.payload.len());
                assert_eq!(decoder.buffered(), 0);
                since_frame = 0;
                frames.push(frame);
            }
            None => assert_buffered_mid_frame(&decoder, since_frame),
        }
    }
    assert_eq!(since_frame, 0);
    assert_frames_are_the_samples(&frames);
}

/// What the decoder holds `received` bytes into an incomplete frame: all of them, header and
/// payload.
fn assert_buffered_mid_frame(decoder: &FrameDecoder, received: usize) {
    assert_eq!(
        decoder.buffered(),
        received,
        "buffered() after {received} bytes of an incomplete frame"
    );
}

/// After exactly a whole 5-byte header `buffered()` must not be 0, or a caller cannot tell
/// "between frames" (clean EOF) from "inside a frame".
#[test]
fn buffered_counts_the_header_of_an_incomplete_frame() {
    let framed = &sample_frames()[0];
    for cut in 1..framed.len() {
        let mut decoder = FrameDecoder::new();
        let mut input = &framed[..cut];
        assert!(decoder.decode(&mut input).unwrap().is_none());
        assert_eq!(decoder.buffered(), cut, "after {cut} bytes of a frame");
    }
}

#[test]
fn decoder_fixed_chunk_sizes() {
    let stream = sample_stream();
    for sizes in [
        vec![2],
        vec![3],
        vec![5],
        vec![6],
        vec![64],
        vec![4, 1, 0, 9],
        vec![1000],
    ] {
        let (frames, err, buffered) = decode_chunks(&stream, &sizes);
        assert_eq!(err, None);
        assert_eq!(buffered, 0);
        assert_frames_are_the_samples(&frames);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn decoder_random_chunks_give_the_same_frames(
        sizes in prop::collection::vec(0usize..300, 1..40),
    ) {
        let stream = sample_stream();
        let (frames, err, buffered) = decode_chunks(&stream, &sizes);
        prop_assert_eq!(err, None);
        prop_assert_eq!(buffered, 0);
        assert_frames_are_the_samples(&frames);
    }
}

// ---------------------------------------------------------------------------------------------
// 4. Hostile input
// ---------------------------------------------------------------------------------------------

#[test]
fn unknown_kind_bytes_are_refused() {
    for kind in (0..=u8::MAX).filter(|b| FrameKind::from_byte(*b).is_none()) {
        assert!(!(1..=7).contains(&kind));
        for len in [0u32, 1, 100, u32::MAX] {
            let mut header = len.to_be_bytes().to_vec();
            header.push(kind);
            assert_eq!(
                FrameHeader::parse(header.clone().try_into().unwrap()),
                Err(FrameError::UnknownKind(kind))
            );
            let mut decoder = FrameDecoder::new();
            let mut input = header.as_slice();
            assert_eq!(
                decoder.decode(&mut input).unwrap_err(),
                FrameError::UnknownKind(kind)
            );
            assert_eq!(decoder.buffered(), 0);
        }
    }
    for kind in ALL_KINDS {
        assert_eq!(FrameKind::from_byte(kind as u8), Some(kind));
    }
}

#[test]
fn zero_length_is_refused_for_every_kind() {
    for kind in ALL_KINDS {
        let mut decoder = FrameDecoder::new();
        let stream = [0, 0, 0, 0, kind as u8, 1, 2, 3];
        let mut input = &stream[..];
        assert_eq!(
            decoder.decode(&mut input).unwrap_err(),
            FrameError::Empty { kind: kind.name() }
        );
        assert_eq!(decoder.buffered(), 0);
        assert_eq!(input.len(), 3, "nothing past the header was consumed");
        // A frame handed out with an empty payload anyway is refused by validation.
        assert!(frame_of(kind, &[]).message().is_err());
    }
}

#[test]
fn oversized_lengths_are_refused_before_buffering() {
    for kind in ALL_KINDS {
        let max = kind.max_payload();
        for len in [u32::MAX as u64, max as u64 + 1] {
            let mut stream = (len as u32).to_be_bytes().to_vec();
            stream.push(kind as u8);
            stream.extend_from_slice(&[0xaa; 64]);
            let mut decoder = FrameDecoder::new();
            let mut input = stream.as_slice();
            assert_eq!(
                decoder.decode(&mut input).unwrap_err(),
                FrameError::TooLarge {
                    kind: kind.name(),
                    len,
                    max
                }
            );
            assert!(decoder.buffered() <= FRAME_HEADER_LEN);
            assert_eq!(decoder.buffered(), 0);
            assert_eq!(input.len(), 64, "no payload byte was consumed");
        }
        // The maximum itself is a valid header.
        let header = FrameHeader {
            kind,
            len: max as u32,
        };
        assert_eq!(FrameHeader::parse(header.to_bytes()), Ok(header));
    }
    assert!(MAX_PROPOSAL_PAYLOAD < u32::MAX as usize);
}

#[test]
fn every_prefix_of_a_frame_is_incomplete() {
    for framed in sample_frames() {
        for cut in 0..framed.len() {
            let mut decoder = FrameDecoder::new();
            let mut input = &framed[..cut];
            assert!(decoder.decode(&mut input).expect("no error").is_none());
            assert!(input.is_empty());
            assert_buffered_mid_frame(&decoder, cut);
            let mut rest = &framed[cut..];
            let frame = decoder.decode(&mut rest).unwrap().expect("completed");
            assert!(rest.is_empty());
            assert_eq!(frame.payload.as_slice(), &framed[FRAME_HEADER_LEN..]);
        }
    }
}

/// Every strict prefix of a payload (copied into aligned memory) fails `access` and
/// `message()`; returns how many prefixes there were.
fn truncations_fail<A>(kind: FrameKind, payload: &[u8]) -> usize
where
    A: rkyv::Portable + for<'a> CheckBytes<HighValidator<'a, RkyvError>>,
{
    for cut in 0..payload.len() {
        let truncated = aligned(&payload[..cut]);
        assert!(
            frame::access::<A>(kind.name(), &truncated).is_err(),
            "{} payload truncated to {cut} of {} bytes still validates",
            kind.name(),
            payload.len()
        );
        assert!(rkyv::access::<A, RkyvError>(&truncated).is_err());
        assert!(frame_of(kind, &truncated).message().is_err());
    }
    payload.len()
}

#[test]
fn truncated_payloads_are_refused() {
    let mut checked = 0;
    for framed in sample_frames() {
        let kind = FrameKind::from_byte(framed[4]).unwrap();
        let payload = &framed[FRAME_HEADER_LEN..];
        checked += match kind {
            FrameKind::Vote => truncations_fail::<ArchivedVote>(kind, payload),
            FrameKind::RoundChange => truncations_fail::<ArchivedRoundChange>(kind, payload),
            FrameKind::Proposal => truncations_fail::<ArchivedProposal>(kind, payload),
            FrameKind::FinalizedBlock => truncations_fail::<ArchivedFinalizedBlock>(kind, payload),
            FrameKind::TxBatch => truncations_fail::<ArchivedTxBatch>(kind, payload),
            FrameKind::IngressAck => truncations_fail::<ArchivedIngressAck>(kind, payload),
            FrameKind::SyncRequest => truncations_fail::<ArchivedSyncRequest>(kind, payload),
            FrameKind::PeerQuery | FrameKind::PeerList => {
                unreachable!("the samples are peer and ingress frames")
            }
        };
    }
    assert!(checked > 1000);
}

/// A valid archive of one message type under the kind byte of another.
///
/// Observed (and pinned here): every such cross-kind payload is refused, except between the two
/// tag-free all-integer messages: an ingress ack's tail reads as a valid sync request (any 8
/// bytes are a height). The kind byte, not the payload, says what a frame is; a node takes
/// ingress acks only on connections it dialed as a client and sync requests only from
/// authenticated peers, so the confusion needs a sender that already lies about the kind.
/// Others are refused by `rkyv::access` (too short for the root, or the bytes at the root
/// position are not a valid archive of the named type); none reaches the semantic limits as a
/// valid value.
#[test]
fn valid_archive_under_the_wrong_kind() {
    let mut outcomes = Vec::new();
    for framed in sample_frames() {
        let real = FrameKind::from_byte(framed[4]).unwrap();
        let payload = &framed[FRAME_HEADER_LEN..];
        for kind in ALL_KINDS.into_iter().filter(|k| *k != real) {
            if payload.len() > kind.max_payload() {
                // The decoder would refuse the header already.
                let stream = raw_frame(kind as u8, payload);
                assert!(matches!(
                    decode_chunks(&stream, &[stream.len()]).1,
                    Some(FrameError::TooLarge { .. })
                ));
                outcomes.push(format!("{} as {}: TooLarge", real.name(), kind.name()));
                continue;
            }
            let stream = raw_frame(kind as u8, payload);
            let (frames, err, _) = decode_chunks(&stream, &[stream.len()]);
            assert_eq!(err, None);
            let outcome = match frames[0].message() {
                Ok(m) => {
                    touch(m);
                    "ACCEPTED".to_string()
                }
                Err(FrameError::Invalid { .. }) => "Invalid".to_string(),
                Err(FrameError::Limit { source, .. }) => format!("Limit({source})"),
                Err(e) => format!("{e}"),
            };
            outcomes.push(format!("{} as {}: {outcome}", real.name(), kind.name()));
        }
    }
    eprintln!("wrong-kind outcomes:\n  {}", outcomes.join("\n  "));
    let accepted: Vec<_> = outcomes
        .iter()
        .filter(|o| o.ends_with("ACCEPTED") && !o.starts_with("ingress-ack as sync-request"))
        .collect();
    assert!(
        accepted.is_empty(),
        "accepted under the wrong kind: {accepted:?}"
    );
}

/// rkyv reads the root object from the *end* of the buffer and does not require every byte to
/// be reachable, so bytes in front of a valid archive are not refused. Recorded here: a vote
/// behind 8-aligned junk (still within MAX_VOTE_PAYLOAD) is accepted and means the same vote.
/// Harmless for identity (hashes and signatures never cover rkyv bytes), but a payload's bytes
/// are not a canonical encoding of the message: never dedup or cache by raw payload bytes.
#[test]
fn junk_in_front_of_a_valid_archive_does_not_change_the_message() {
    let v = sample_vote(VoteKind::Commit);
    let payload = to_bytes(&v);
    let mut accepted = 0;
    for junk in [1usize, 3, 8, 16, 64, MAX_VOTE_PAYLOAD - payload.len()] {
        let mut padded = vec![0xa5u8; junk];
        padded.extend_from_slice(&payload);
        assert!(padded.len() <= MAX_VOTE_PAYLOAD);
        match frame_of(FrameKind::Vote, &padded).message() {
            Ok(Message::Vote(a)) => {
                accepted += 1;
                assert_eq!(junk % 8, 0, "root accepted at a misaligned offset");
                let back: Vote = rkyv::deserialize::<Vote, RkyvError>(a).unwrap();
                assert_eq!(back, v);
            }
            Ok(other) => panic!("a vote frame gave {other:?}"),
            Err(e) => assert_ne!(junk % 8, 0, "8-aligned junk refused: {e}"),
        }
    }
    eprintln!("vote behind junk accepted for {accepted} of 6 junk lengths");
}

#[test]
fn misaligned_payloads_are_refused() {
    for framed in sample_frames() {
        let kind = FrameKind::from_byte(framed[4]).unwrap();
        let payload = &framed[FRAME_HEADER_LEN..];
        let mut buffer = AlignedVec::<16>::with_capacity(payload.len() + 1);
        buffer.push(0);
        buffer.extend_from_slice(payload);
        let shifted = &buffer[1..];
        assert_eq!(shifted, payload);
        assert_eq!(shifted.as_ptr() as usize % 2, 1, "offset by one");
        let err = match kind {
            FrameKind::Vote => frame::access::<ArchivedVote>(kind.name(), shifted).err(),
            FrameKind::RoundChange => {
                frame::access::<ArchivedRoundChange>(kind.name(), shifted).err()
            }
            FrameKind::Proposal => frame::access::<ArchivedProposal>(kind.name(), shifted).err(),
            FrameKind::FinalizedBlock => {
                frame::access::<ArchivedFinalizedBlock>(kind.name(), shifted).err()
            }
            FrameKind::TxBatch => frame::access::<ArchivedTxBatch>(kind.name(), shifted).err(),
            FrameKind::IngressAck => {
                frame::access::<ArchivedIngressAck>(kind.name(), shifted).err()
            }
            FrameKind::SyncRequest => {
                frame::access::<ArchivedSyncRequest>(kind.name(), shifted).err()
            }
            FrameKind::PeerQuery | FrameKind::PeerList => {
                unreachable!("the samples are peer and ingress frames")
            }
        };
        match err {
            Some(FrameError::Invalid { kind: k, reason }) => {
                assert_eq!(k, kind.name());
                // rkyv's error text is only detailed in builds with debug assertions.
                assert!(
                    reason.contains("unaligned") || !cfg!(debug_assertions),
                    "{reason}"
                );
            }
            other => panic!("{}: misaligned payload gave {other:?}", kind.name()),
        }
        // The same bytes at an aligned address validate.
        assert!(frame_of(kind, payload).message().is_ok());
    }
}

/// Flips every byte of a valid payload with several masks; each mutant is answered without a
/// panic. Returns (accepted, refused).
fn flip_every_byte(kind: FrameKind, payload: &[u8], masks: &[u8]) -> (usize, usize) {
    let (mut accepted, mut refused) = (0, 0);
    let mut mutant = aligned(payload);
    for at in 0..payload.len() {
        for &mask in masks {
            mutant[at] = payload[at] ^ mask;
            let frame = Frame {
                kind,
                payload: mutant.clone(),
            };
            match frame.message() {
                Ok(m) => {
                    touch(m);
                    accepted += 1;
                }
                Err(_) => refused += 1,
            }
        }
        mutant[at] = payload[at];
    }
    (accepted, refused)
}

const ALL_MASKS: [u8; 9] = [0x01, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40, 0x80, 0xff];

#[test]
fn byte_flips_of_votes_and_round_changes_never_panic() {
    for framed in &sample_frames()[..4] {
        let kind = FrameKind::from_byte(framed[4]).unwrap();
        assert!(matches!(kind, FrameKind::Vote | FrameKind::RoundChange));
        let (accepted, refused) = flip_every_byte(kind, &framed[FRAME_HEADER_LEN..], &ALL_MASKS);
        // Flips of the hash and signature bytes stay valid archives; flips of the kind byte,
        // the option tag or the relative pointers do not.
        assert!(accepted > 0 && refused > 0, "{accepted} / {refused}");
    }
}

#[test]
fn byte_flips_of_proposals_and_finalized_blocks_never_panic() {
    for framed in &sample_frames()[4..8] {
        let kind = FrameKind::from_byte(framed[4]).unwrap();
        assert!(matches!(
            kind,
            FrameKind::Proposal | FrameKind::FinalizedBlock | FrameKind::TxBatch
        ));
        // Three masks (every accepted mutant is hashed, several times); the property tests
        // below mutate these frames in other ways.
        let (accepted, refused) =
            flip_every_byte(kind, &framed[FRAME_HEADER_LEN..], &[0x01, 0x80, 0xff]);
        assert!(refused > 0, "{accepted} / {refused}");
    }
}

/// The frame gate (`message()`) does not hash transactions; the exec shard checks the root
/// with `check_transactions_root`, which refuses a root that does not match.
#[test]
fn block_with_wrong_transactions_root_is_refused() {
    let root_error = |b: &Block| {
        let bytes = to_bytes(b);
        let archived = rkyv::access::<ArchivedBlock, RkyvError>(&bytes).unwrap();
        archived.check_limits().expect("structurally fine");
        archived
            .check_transactions_root()
            .expect_err("wrong root refused")
    };
    let good = block(HEIGHT, 0, 3);
    let bytes = to_bytes(&good);
    let archived = rkyv::access::<ArchivedBlock, RkyvError>(&bytes).unwrap();
    assert_eq!(archived.check_transactions_root(), Ok(()));

    let mut b = block(HEIGHT, 0, 3);
    b.header.transactions_root[0] ^= 1;
    assert!(is_invalid(&root_error(&b), "transactions_root"));
    // Transactions changed under an unchanged header.
    let mut b = block(HEIGHT, 0, 3);
    b.transactions.swap(0, 1);
    assert!(is_invalid(&root_error(&b), "transactions_root"));
    // The frame gate itself accepts it: the root is exec's check, not net's.
    let mut decoder = FrameDecoder::new();
    let framed = encode_frame(&proposal(0, b, Vec::new()));
    let frame = decoder.decode(&mut framed.as_slice()).unwrap().unwrap();
    assert!(frame.message().is_ok());
}

#[test]
fn justification_with_two_round_changes_from_one_signer_is_refused() {
    let rcs = vec![
        round_change(HEIGHT, 2, 0, None),
        round_change(HEIGHT, 2, 1, None),
        round_change(HEIGHT, 2, 0, None),
    ];
    let e = limit_error_of(&proposal(2, block(HEIGHT, 0, 1), rcs));
    assert!(is_invalid(&e, "two round changes from one signer"), "{e}");
}

#[test]
fn block_with_an_empty_transaction_is_refused() {
    let b = block_with(
        HEIGHT,
        0,
        vec![
            tx(0, 10),
            SignedTransaction { bytes: Vec::new() },
            tx(2, 10),
        ],
    );
    let e = limit_error_of(&proposal(0, b.clone(), Vec::new()));
    assert_eq!(e, LimitError::Invalid("empty transaction in block"));
    let e = limit_error_of(&finalized(b));
    assert_eq!(e, LimitError::Invalid("empty transaction in block"));
}

#[test]
fn block_transaction_size_and_count_limits() {
    // One transaction over MAX_TX_BYTES.
    let b = block_with(HEIGHT, 0, vec![tx(0, MAX_TX_BYTES + 1)]);
    assert!(matches!(
        limit_error_of(&proposal(0, b, Vec::new())),
        LimitError::TooMany { what: "transaction bytes", len, max }
            if len == MAX_TX_BYTES + 1 && max == MAX_TX_BYTES
    ));
    // Exactly MAX_TX_BYTES is fine.
    let b = block_with(HEIGHT, 0, vec![tx(0, MAX_TX_BYTES)]);
    frame_round_trip(&proposal(0, b, Vec::new()));
    // More than MAX_BLOCK_TX_BYTES in total.
    let n = MAX_BLOCK_TX_BYTES / MAX_TX_BYTES + 1;
    // (The root is left wrong: the size checks come first, and not hashing 8 MiB keeps the
    // test fast.)
    let b = Block {
        header: header(HEIGHT, 0),
        transactions: (0..n).map(|i| tx(i, MAX_TX_BYTES)).collect(),
    };
    let fb = finalized(b);
    assert!(to_bytes(&fb).len() <= MAX_FINALIZED_BLOCK_PAYLOAD);
    assert!(matches!(
        limit_error_of(&fb),
        LimitError::TooMany {
            what: "block transaction bytes",
            ..
        }
    ));
    // More than MAX_BLOCK_TXS transactions.
    let b = Block {
        header: header(HEIGHT, 0),
        transactions: (0..=MAX_BLOCK_TXS).map(|i| tx(i, 1)).collect(),
    };
    assert!(matches!(
        limit_error_of(&finalized(b)),
        LimitError::TooMany { what: "block transactions", len, .. } if len == MAX_BLOCK_TXS + 1
    ));
}

#[test]
fn round_change_with_a_commit_certificate_is_refused() {
    let hash = block(HEIGHT, 1, 3).hash();
    let commit = certificate(VoteKind::Commit, HEIGHT, 1, hash, &QUORUM_SIGNERS);
    let e = limit_error_of(&round_change(HEIGHT, 3, 1, Some(commit)));
    assert!(is_invalid(&e, "non-prepare"), "{e}");
}

#[test]
fn round_change_with_a_prepared_certificate_not_from_an_earlier_round_is_refused() {
    let hash = block(HEIGHT, 1, 3).hash();
    for (rc_round, prepared_round) in [(3, 3), (3, 4), (0, 0), (3, u32::MAX), (0, 1)] {
        let p = certificate(
            VoteKind::Prepare,
            HEIGHT,
            prepared_round,
            hash,
            &QUORUM_SIGNERS,
        );
        let e = limit_error_of(&round_change(HEIGHT, rc_round, 1, Some(p)));
        assert!(
            is_invalid(&e, "earlier round"),
            "({rc_round}, {prepared_round}): {e}"
        );
    }
    // Every earlier round is accepted.
    for prepared_round in 0..3 {
        let p = certificate(
            VoteKind::Prepare,
            HEIGHT,
            prepared_round,
            hash,
            &QUORUM_SIGNERS,
        );
        frame_round_trip(&round_change(HEIGHT, 3, 1, Some(p)));
    }
}

#[test]
fn round_change_with_a_prepared_certificate_of_another_height_is_refused() {
    let hash = block(HEIGHT, 1, 3).hash();
    for height in [HEIGHT - 1, HEIGHT + 1, 0, u64::MAX] {
        let p = certificate(VoteKind::Prepare, height, 1, hash, &QUORUM_SIGNERS);
        let e = limit_error_of(&round_change(HEIGHT, 3, 1, Some(p)));
        assert!(is_invalid(&e, "another height"), "{height}: {e}");
    }
}

#[test]
fn certificates_with_empty_or_oversized_signer_bitmaps_are_refused() {
    let mut bad_bitmaps = vec![
        Vec::new(),
        vec![0u8],
        vec![0u8; signers::bitmap_len(MAX_COUNCIL_SIZE)],
    ];
    let mut oversized = vec![0u8; signers::bitmap_len(MAX_COUNCIL_SIZE) + 1];
    oversized[0] = 1;
    bad_bitmaps.push(oversized);
    for signers_ in bad_bitmaps {
        let empty = signers::count(&signers_) == 0;
        let check = |e: LimitError| {
            if empty {
                assert_eq!(e, LimitError::Invalid("certificate without signers"));
            } else {
                assert!(matches!(
                    e,
                    LimitError::TooMany {
                        what: "signer bitmap bytes",
                        ..
                    }
                ));
            }
        };
        // In a round change's prepared certificate.
        let mut p = sample_prepared();
        p.signers = signers_.clone();
        check(limit_error_of(&round_change(HEIGHT, 3, 1, Some(p))));
        // In a finalized block's commit certificate.
        let mut fb = sample_finalized();
        fb.certificate.signers = signers_.clone();
        check(limit_error_of(&fb));
        // In the check on its own.
        let mut qc = sample_prepared();
        qc.signers = signers_;
        let bytes = to_bytes(&qc);
        let archived = rkyv::access::<ArchivedQuorumCertificate, RkyvError>(&bytes).unwrap();
        check(archived.check_shape().unwrap_err());
    }
}

#[test]
fn round0_proposal_with_a_justification_is_refused() {
    let p = proposal(
        0,
        block(HEIGHT, 0, 2),
        vec![round_change(HEIGHT, 0, 0, None)],
    );
    let e = limit_error_of(&p);
    assert!(is_invalid(&e, "round 0"), "{e}");
}

#[test]
fn proposal_justification_must_match_its_height_and_round_and_be_well_formed() {
    let base = sample_proposal_round2();
    // A round change for another round or height.
    for (height, round) in [(HEIGHT, 1), (HEIGHT, 3), (HEIGHT + 1, 2)] {
        let mut p = base.clone();
        p.justification[2] = round_change(height, round, 3, None);
        let e = limit_error_of(&p);
        assert!(is_invalid(&e, "another height or round"), "{e}");
    }
    // A malformed round change inside the justification.
    let mut p = base.clone();
    let commit = certificate(
        VoteKind::Commit,
        HEIGHT,
        1,
        base.block.hash(),
        &QUORUM_SIGNERS,
    );
    p.justification[0] = round_change(HEIGHT, 2, 0, Some(commit));
    let e = limit_error_of(&p);
    assert!(is_invalid(&e, "non-prepare"), "{e}");
    // More round changes than a council.
    let mut p = base.clone();
    let rc = round_change(HEIGHT, 2, 0, None);
    p.justification = vec![rc; MAX_COUNCIL_SIZE + 1];
    assert!(matches!(
        limit_error_of(&p),
        LimitError::TooMany { what: "justification round changes", len, .. }
            if len == MAX_COUNCIL_SIZE + 1
    ));
    // A bad block inside a proposal is refused too.
    let mut p = base;
    p.block
        .transactions
        .push(SignedTransaction { bytes: Vec::new() });
    assert!(is_invalid(&limit_error_of(&p), "empty transaction"));
}

#[test]
fn finalized_block_with_a_certificate_for_another_block_is_refused() {
    let fb = sample_finalized();
    // Another hash.
    let mut other = fb.clone();
    other.certificate = certificate(
        VoteKind::Commit,
        HEIGHT,
        0,
        block(HEIGHT, 0, 5).hash(),
        &QUORUM_SIGNERS,
    );
    let e = limit_error_of(&other);
    assert!(is_invalid(&e, "another block"), "{e}");
    // Another height, same hash.
    let mut other = fb.clone();
    other.certificate.height += 1;
    let e = limit_error_of(&other);
    assert!(is_invalid(&e, "another block"), "{e}");
    // The right block, but a prepared certificate.
    let mut other = fb;
    other.certificate.kind = VoteKind::Prepare;
    let e = limit_error_of(&other);
    assert!(is_invalid(&e, "non-commit"), "{e}");
}

// ---------------------------------------------------------------------------------------------
// 5. Property tests: no input panics
// ---------------------------------------------------------------------------------------------

/// How one edit changes a frame.
#[derive(Debug, Clone)]
enum Edit {
    Flip { at: usize, mask: u8 },
    Set { at: usize, value: u8 },
    Truncate { at: usize },
    Insert { at: usize, bytes: Vec<u8> },
    Extend { bytes: Vec<u8> },
}

fn edit_strategy() -> impl Strategy<Value = Edit> {
    prop_oneof![
        4 => (any::<usize>(), 1u8..=255).prop_map(|(at, mask)| Edit::Flip { at, mask }),
        2 => (any::<usize>(), any::<u8>()).prop_map(|(at, value)| Edit::Set { at, value }),
        1 => any::<usize>().prop_map(|at| Edit::Truncate { at }),
        1 => (any::<usize>(), prop::collection::vec(any::<u8>(), 1..16))
            .prop_map(|(at, bytes)| Edit::Insert { at, bytes }),
        1 => prop::collection::vec(any::<u8>(), 1..64).prop_map(|bytes| Edit::Extend { bytes }),
    ]
}

fn apply(frame: &mut Vec<u8>, edit: &Edit) {
    let len = frame.len();
    match edit {
        Edit::Flip { at, mask } if len > 0 => frame[at % len] ^= mask,
        Edit::Set { at, value } if len > 0 => frame[at % len] = *value,
        Edit::Truncate { at } => frame.truncate(at % (len + 1)),
        Edit::Insert { at, bytes } => {
            let at = at % (len + 1);
            frame.splice(at..at, bytes.iter().copied());
        }
        Edit::Extend { bytes } => frame.extend_from_slice(bytes),
        _ => {}
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn random_bytes_in_random_chunks_never_panic(
        bytes in prop::collection::vec(any::<u8>(), 0..4096),
        sizes in prop::collection::vec(0usize..600, 1..16),
    ) {
        receive_all(&bytes, &sizes);
    }

    #[test]
    fn random_payloads_behind_a_valid_header_never_panic(
        kind in prop::sample::select(ALL_KINDS.to_vec()),
        payload in prop::collection::vec(any::<u8>(), 1..2048),
        sizes in prop::collection::vec(1usize..600, 1..8),
    ) {
        let payload = &payload[..payload.len().min(kind.max_payload())];
        let stream = raw_frame(kind as u8, payload);
        let (frames, err, buffered) = decode_chunks(&stream, &sizes);
        prop_assert_eq!(err, None);
        prop_assert_eq!(buffered, 0);
        prop_assert_eq!(frames.len(), 1);
        prop_assert_eq!(frames[0].kind, kind);
        prop_assert_eq!(frames[0].payload.as_slice(), payload);
        if let Ok(m) = frames[0].message() {
            touch(m);
        }
    }

    #[test]
    fn mutated_valid_frames_never_panic(
        which in 0usize..7,
        edits in prop::collection::vec(edit_strategy(), 1..6),
        sizes in prop::collection::vec(1usize..300, 1..8),
    ) {
        let mut framed = sample_frames()[which].clone();
        for edit in &edits {
            apply(&mut framed, edit);
        }
        receive_all(&framed, &sizes);
        // And the payload alone under its own kind, wherever the header now points.
        if framed.len() > FRAME_HEADER_LEN {
            if let Some(kind) = FrameKind::from_byte(framed[4]) {
                let payload = &framed[FRAME_HEADER_LEN..];
                if !payload.is_empty() && payload.len() <= kind.max_payload() {
                    if let Ok(m) = frame_of(kind, payload).message() {
                        touch(m);
                    }
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 6. Size limits hold for the largest legitimate messages
// ---------------------------------------------------------------------------------------------

#[test]
fn largest_vote_fits_its_limit() {
    for kind in [VoteKind::Prepare, VoteKind::Commit] {
        let v = Vote {
            kind,
            height: u64::MAX,
            round: u32::MAX,
            block_hash: [0xff; 32],
            signer: (MAX_COUNCIL_SIZE - 1) as CouncilIndex,
            signature: [0xff; 96],
        };
        let len = to_bytes(&v).len();
        assert!(
            len <= MAX_VOTE_PAYLOAD,
            "vote payload {len} > {MAX_VOTE_PAYLOAD}"
        );
        frame_round_trip(&v);
    }
}

fn full_council_certificate(
    kind: VoteKind,
    height: Height,
    round: Round,
    hash: Hash32,
) -> QuorumCertificate {
    QuorumCertificate {
        kind,
        height,
        round,
        block_hash: hash,
        signers: vec![0xff; signers::bitmap_len(MAX_COUNCIL_SIZE)],
        signature: [0xee; 96],
    }
}

fn largest_round_change(round: Round) -> RoundChange {
    RoundChange {
        height: u64::MAX,
        round,
        signer: (MAX_COUNCIL_SIZE - 1) as CouncilIndex,
        prepared: Some(full_council_certificate(
            VoteKind::Prepare,
            u64::MAX,
            round - 1,
            [0xdd; 32],
        )),
        signature: [0xcc; 96],
    }
}

#[test]
fn round_change_with_a_full_council_certificate_fits_its_limit() {
    let rc = largest_round_change(u32::MAX);
    assert_eq!(
        signers::count(&rc.prepared.as_ref().unwrap().signers),
        MAX_COUNCIL_SIZE
    );
    let len = to_bytes(&rc).len();
    assert!(
        len <= MAX_ROUND_CHANGE_PAYLOAD,
        "round change payload {len} > {MAX_ROUND_CHANGE_PAYLOAD}"
    );
    frame_round_trip(&rc);
    // The commit certificate of a finalized block with a full bitmap also fits the margin
    // MAX_FINALIZED_BLOCK_PAYLOAD leaves above a block.
    let b = block(HEIGHT, 0, 3);
    let fb = FinalizedBlock {
        certificate: full_council_certificate(VoteKind::Commit, HEIGHT, 0, b.hash()),
        block: b.clone(),
    };
    let cert_overhead = to_bytes(&fb).len() - to_bytes(&b).len();
    assert!(cert_overhead <= MAX_FINALIZED_BLOCK_PAYLOAD - MAX_BLOCK_PAYLOAD);
    frame_round_trip(&fb);
}

/// The largest block the limits allow: MAX_BLOCK_TXS transactions of MAX_BLOCK_TX_BYTES in
/// total, in a finalized block with a full-council certificate and in a proposal justified by a
/// full council of round changes, each with a full-council prepared certificate.
///
/// Only sizes and archive validation are checked, which keeps the test fast (hashing 8 MiB of
/// transactions twice more adds little: `check_limits` is covered by the smaller tests).
#[test]
fn largest_block_fits_the_block_proposal_and_finalized_limits() {
    let small = MAX_BLOCK_TX_BYTES / MAX_BLOCK_TXS;
    let larger = MAX_BLOCK_TX_BYTES % MAX_BLOCK_TXS;
    let transactions: Vec<SignedTransaction> = (0..MAX_BLOCK_TXS)
        .map(|i| SignedTransaction {
            bytes: vec![i as u8 | 1; small + usize::from(i < larger)],
        })
        .collect();
    assert_eq!(
        transactions.iter().map(|t| t.bytes.len()).sum::<usize>(),
        MAX_BLOCK_TX_BYTES
    );
    let b = Block {
        header: header(u64::MAX, u32::MAX - 1),
        transactions,
    };
    let block_len = to_bytes(&b).len();
    assert!(
        block_len <= MAX_BLOCK_PAYLOAD,
        "{block_len} > {MAX_BLOCK_PAYLOAD}"
    );

    let fb = FinalizedBlock {
        certificate: full_council_certificate(VoteKind::Commit, u64::MAX, u32::MAX - 1, b.hash()),
        block: b.clone(),
    };
    let framed = encode_frame(&fb);
    assert!(framed.len() - FRAME_HEADER_LEN <= MAX_FINALIZED_BLOCK_PAYLOAD);
    let (frames, err, _) = decode_chunks(&framed, &[1 << 20]);
    assert_eq!(err, None);
    let archived =
        frame::access::<ArchivedFinalizedBlock>("finalized-block", &frames[0].payload).unwrap();
    assert_eq!(archived.block.transactions.len(), MAX_BLOCK_TXS);
    assert_eq!(archived.certificate.check_shape(), Ok(()));

    let p = Proposal {
        proposer: u32::MAX,
        round: u32::MAX,
        justification: vec![largest_round_change(u32::MAX); MAX_COUNCIL_SIZE],
        block: b,
        signature: [0xbb; 96],
    };
    let framed = encode_frame(&p);
    assert!(framed.len() - FRAME_HEADER_LEN <= MAX_PROPOSAL_PAYLOAD);
    let (frames, err, _) = decode_chunks(&framed, &[1 << 20]);
    assert_eq!(err, None);
    let archived = frame::access::<ArchivedProposal>("proposal", &frames[0].payload).unwrap();
    assert_eq!(archived.justification.len(), MAX_COUNCIL_SIZE);
    for rc in archived.justification.iter() {
        assert_eq!(rc.check_shape(), Ok(()));
    }
}

// ---------------------------------------------------------------------------------------------
// Bootnode protocol frames
// ---------------------------------------------------------------------------------------------

fn full_peer_list() -> PeerList {
    PeerList {
        peers: (0..MAX_PEER_LIST)
            .map(|i| {
                let address = if i % 2 == 0 {
                    SocketAddr::from(([10, 0, (i >> 8) as u8, i as u8], 30000 + i as u16))
                } else {
                    SocketAddr::from(([0x2001, 0xdb8, 0, 0, 0, 0, 0, i as u16], 65535))
                };
                PeerRecord::new(2, [i as u8; 20], address)
            })
            .collect(),
    }
}

#[test]
fn bootnode_frames_round_trip_within_their_limits() {
    let list = full_peer_list();
    let framed = encode_frame(&list);
    assert!(framed.len() - FRAME_HEADER_LEN <= MAX_PEER_LIST_PAYLOAD);
    let (frames, err, _) = decode_chunks(&framed, &[framed.len()]);
    assert_eq!(err, None);
    let Ok(BootnodeMessage::PeerList(archived)) = frames[0].bootnode_message() else {
        panic!("a peer list frame reads as a peer list");
    };
    for (record, archived) in list.peers.iter().zip(archived.peers.iter()) {
        assert_eq!(
            archived.address(),
            SocketAddr::new(ip_from_wire(record.ip), record.port)
        );
    }
    assert!(
        archived.peers[0].address().is_ipv4(),
        "mapped v4 reads back as v4"
    );
    assert!(archived.peers[1].address().is_ipv6());
    let back: PeerList = rkyv::deserialize::<PeerList, RkyvError>(archived).expect("de");
    assert_eq!(back, list);

    let query = PeerQuery::new(Some(SocketAddr::from(([127, 0, 0, 1], 62001))));
    let framed = encode_frame(&query);
    assert!(framed.len() - FRAME_HEADER_LEN <= MAX_PEER_QUERY_PAYLOAD);
    let (frames, _, _) = decode_chunks(&framed, &[framed.len()]);
    let Ok(BootnodeMessage::PeerQuery(q)) = frames[0].bootnode_message() else {
        panic!("a peer query frame reads as a peer query");
    };
    assert_eq!(ip_from_wire(q.listen_ip), std::net::Ipv4Addr::LOCALHOST);
    assert_eq!(q.listen_port.to_native(), 62001);
    assert_eq!(PeerQuery::new(None).listen_port, 0);
    assert!(ip_from_wire(PeerQuery::new(None).listen_ip).is_unspecified());
}

#[test]
fn a_peer_list_over_the_limit_is_refused() {
    let mut list = full_peer_list();
    list.peers.push(list.peers[0]);
    let payload = to_bytes(&list);
    // The archive still fits the frame (records are 40 bytes, the budget is 64 a record) ...
    assert!(payload.len() <= MAX_PEER_LIST_PAYLOAD);
    // ... and the named limit refuses it.
    match frame_of(FrameKind::PeerList, &payload).bootnode_message() {
        Err(FrameError::Limit { source, .. }) => assert!(matches!(
            source,
            LimitError::TooMany { len, max: MAX_PEER_LIST, .. } if len == MAX_PEER_LIST + 1
        )),
        other => panic!("expected a limit error, got {other:?}"),
    }
}

#[test]
fn each_protocol_refuses_the_others_frames() {
    for framed in sample_frames() {
        let frame = frame_of(
            FrameKind::from_byte(framed[4]).unwrap(),
            &framed[FRAME_HEADER_LEN..],
        );
        assert!(matches!(
            frame.bootnode_message(),
            Err(FrameError::WrongProtocol { .. })
        ));
    }
    let query = encode_frame(&PeerQuery::new(None));
    let list = encode_frame(&full_peer_list());
    for framed in [query, list] {
        let kind = FrameKind::from_byte(framed[4]).unwrap();
        assert!(kind.is_bootnode());
        let payload = &framed[FRAME_HEADER_LEN..];
        assert!(matches!(
            frame_of(kind, payload).message(),
            Err(FrameError::WrongProtocol { .. })
        ));
        // No strict prefix reads as the whole message. (rkyv finds the root at the end, so a
        // prefix ending in bytes that form a valid vector header, e.g. zeros = an empty list,
        // can validate: as a shorter list, never as the original.)
        for cut in 0..payload.len() {
            match frame_of(kind, &payload[..cut]).bootnode_message() {
                Err(_) => {}
                Ok(BootnodeMessage::PeerList(l)) => {
                    assert!(
                        l.peers.len() < MAX_PEER_LIST,
                        "prefix {cut} read as the full list"
                    );
                    for r in l.peers.iter() {
                        let _ = r.address();
                    }
                }
                Ok(BootnodeMessage::PeerQuery(_)) => panic!("a query prefix of {cut} validated"),
            }
        }
    }
}
