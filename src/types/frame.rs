//! The frame envelope: how every message travels between nodes.
//!
//! Layout: `be_u32 payload length | u8 kind | payload`, where the payload is the rkyv archive of
//! the message type the kind names ([`FrameKind`]).
//!
//! Invariants of decoding (everything here handles untrusted bytes):
//! - The 5-byte header is checked *before* any payload is buffered: an unknown kind, an empty
//!   payload, or a length above the kind's named maximum ([`FrameKind::max_payload`]) is refused,
//!   so a peer cannot make us allocate more than the maximum of the kind it names.
//! - Payloads are received into 16-byte-aligned memory (`AlignedVec<16>`) and validated with
//!   `rkyv::access` (bytecheck) before any field is read; then the type's named limits are
//!   checked ([`Frame::message`]).
//! - No input makes decoding panic: every failure is a [`FrameError`].
//! - Payload bytes are not canonical: rkyv finds the root at the end of the buffer, so
//!   aligned junk in front of a valid archive still validates to the same message. Never use
//!   raw payload bytes as an identity, dedup or cache key; use the message's hash layout.
//! - Two protocols share the envelope. [`Frame::message`] reads the frames of peer and ingress
//!   connections; the bootnode protocol's kinds ([`FrameKind::PeerQuery`],
//!   [`FrameKind::PeerList`]) are read only with [`Frame::bootnode_message`], and each method
//!   refuses the other protocol's kinds as [`FrameError::WrongProtocol`], so a bootnode frame
//!   on a mesh connection (or a vote on a bootnode connection) is a violation.

use rkyv::util::AlignedVec;
use rkyv::Portable;

use super::chain::{ArchivedFinalizedBlock, FinalizedBlock};
use super::consensus::{
    ArchivedProposal, ArchivedRoundChange, ArchivedVote, Proposal, RoundChange, Vote,
};
use super::network::{
    ArchivedIngressAck, ArchivedPeerList, ArchivedPeerQuery, ArchivedSyncRequest, ArchivedTxBatch,
    IngressAck, PeerList, PeerQuery, SyncRequest, TxBatch, MAX_BATCH_TXS, MAX_BATCH_TX_BYTES,
    MAX_PEER_LIST,
};
use super::{LimitError, MAX_BLOCK_TXS, MAX_BLOCK_TX_BYTES, MAX_COUNCIL_SIZE};

/// Bytes of the frame header: `u32` length and `u8` kind.
pub const FRAME_HEADER_LEN: usize = 5;
/// Payload bytes reserved when a header arrives; larger payloads grow as their bytes arrive.
pub const INITIAL_PAYLOAD_RESERVE: usize = 64 * 1024;
/// Largest vote payload.
pub const MAX_VOTE_PAYLOAD: usize = 256;
/// Largest round-change payload (one prepared certificate with a full-council bitmap).
pub const MAX_ROUND_CHANGE_PAYLOAD: usize = 1024;
/// Largest block archive: header, per-transaction archive overhead and the transaction bytes.
pub const MAX_BLOCK_PAYLOAD: usize = 1024 + MAX_BLOCK_TXS * 8 + MAX_BLOCK_TX_BYTES;
/// Largest proposal payload: a block plus a justification of one round change per council
/// member.
pub const MAX_PROPOSAL_PAYLOAD: usize =
    MAX_BLOCK_PAYLOAD + MAX_COUNCIL_SIZE * MAX_ROUND_CHANGE_PAYLOAD;
/// Largest finalized-block payload: a block and one commit certificate.
pub const MAX_FINALIZED_BLOCK_PAYLOAD: usize = MAX_BLOCK_PAYLOAD + MAX_ROUND_CHANGE_PAYLOAD;
/// Largest transaction-batch payload.
pub const MAX_TX_BATCH_PAYLOAD: usize = 1024 + MAX_BATCH_TXS * 8 + MAX_BATCH_TX_BYTES;
/// Largest ingress-acknowledgement payload.
pub const MAX_INGRESS_ACK_PAYLOAD: usize = 64;
/// Largest sync-request payload.
pub const MAX_SYNC_REQUEST_PAYLOAD: usize = 64;
/// Largest peer-query payload (the archive is 18 bytes).
pub const MAX_PEER_QUERY_PAYLOAD: usize = 64;
/// Largest peer-list payload: the vector's header and [`MAX_PEER_LIST`] records of at most 64
/// bytes each (an archived record is 40).
pub const MAX_PEER_LIST_PAYLOAD: usize = 64 + MAX_PEER_LIST * 64;
/// Largest payload of any kind: no frame is ever buffered beyond this.
pub const MAX_FRAME_PAYLOAD: usize = MAX_PROPOSAL_PAYLOAD;

/// What a frame carries. The discriminant is the kind byte on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum FrameKind {
    /// A [`Proposal`] (PRE-PREPARE).
    Proposal = 1,
    /// A [`Vote`] (PREPARE or COMMIT).
    Vote = 2,
    /// A [`RoundChange`].
    RoundChange = 3,
    /// A [`FinalizedBlock`] (block plus commit certificate).
    FinalizedBlock = 4,
    /// A [`TxBatch`] (client ingress or CN gossip).
    TxBatch = 5,
    /// An [`IngressAck`] (node to client).
    IngressAck = 6,
    /// A [`SyncRequest`].
    SyncRequest = 7,
    /// A [`PeerQuery`] (node to bootnode).
    PeerQuery = 8,
    /// A [`PeerList`] (bootnode to node).
    PeerList = 9,
}

impl FrameKind {
    /// The kind for a wire byte, if known.
    pub fn from_byte(byte: u8) -> Option<FrameKind> {
        Some(match byte {
            1 => FrameKind::Proposal,
            2 => FrameKind::Vote,
            3 => FrameKind::RoundChange,
            4 => FrameKind::FinalizedBlock,
            5 => FrameKind::TxBatch,
            6 => FrameKind::IngressAck,
            7 => FrameKind::SyncRequest,
            8 => FrameKind::PeerQuery,
            9 => FrameKind::PeerList,
            _ => return None,
        })
    }

    /// The largest payload a frame of this kind may declare.
    pub const fn max_payload(self) -> usize {
        match self {
            FrameKind::Proposal => MAX_PROPOSAL_PAYLOAD,
            FrameKind::Vote => MAX_VOTE_PAYLOAD,
            FrameKind::RoundChange => MAX_ROUND_CHANGE_PAYLOAD,
            FrameKind::FinalizedBlock => MAX_FINALIZED_BLOCK_PAYLOAD,
            FrameKind::TxBatch => MAX_TX_BATCH_PAYLOAD,
            FrameKind::IngressAck => MAX_INGRESS_ACK_PAYLOAD,
            FrameKind::SyncRequest => MAX_SYNC_REQUEST_PAYLOAD,
            FrameKind::PeerQuery => MAX_PEER_QUERY_PAYLOAD,
            FrameKind::PeerList => MAX_PEER_LIST_PAYLOAD,
        }
    }

    /// The name used in logs and errors.
    pub fn name(self) -> &'static str {
        match self {
            FrameKind::Proposal => "proposal",
            FrameKind::Vote => "vote",
            FrameKind::RoundChange => "round-change",
            FrameKind::FinalizedBlock => "finalized-block",
            FrameKind::TxBatch => "tx-batch",
            FrameKind::IngressAck => "ingress-ack",
            FrameKind::SyncRequest => "sync-request",
            FrameKind::PeerQuery => "peer-query",
            FrameKind::PeerList => "peer-list",
        }
    }

    /// Whether the kind belongs to the bootnode protocol (read with
    /// [`Frame::bootnode_message`]) rather than to peer and ingress connections.
    pub const fn is_bootnode(self) -> bool {
        matches!(self, FrameKind::PeerQuery | FrameKind::PeerList)
    }
}

/// Why a frame was refused. Any of these from a peer is a protocol violation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The kind byte names no message type.
    #[error("unknown frame kind {0}")]
    UnknownKind(u8),
    /// The header declares an empty payload.
    #[error("{kind} frame with an empty payload")]
    Empty {
        /// Kind named by the header.
        kind: &'static str,
    },
    /// The header declares more bytes than the kind allows.
    #[error("{kind} frame of {len} bytes exceeds the maximum of {max}")]
    TooLarge {
        /// Kind named by the header.
        kind: &'static str,
        /// Declared length.
        len: u64,
        /// The kind's maximum.
        max: usize,
    },
    /// The payload failed rkyv validation.
    #[error("{kind} payload is not a valid archive: {reason}")]
    Invalid {
        /// Kind named by the header.
        kind: &'static str,
        /// What rkyv reported.
        reason: String,
    },
    /// The kind belongs to the other protocol sharing the envelope (a bootnode frame on a peer
    /// or ingress connection, or the other way round).
    #[error("{kind} frame does not belong to {protocol} connections")]
    WrongProtocol {
        /// Kind named by the header.
        kind: &'static str,
        /// The protocol of the connection it arrived on.
        protocol: &'static str,
    },
    /// The payload is a valid archive but breaks a named limit.
    #[error("{kind} payload refused: {source}")]
    Limit {
        /// Kind named by the header.
        kind: &'static str,
        /// The broken limit.
        source: LimitError,
    },
}

/// A validated frame header: the payload length is within the kind's maximum.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// What the payload is.
    pub kind: FrameKind,
    /// Payload length in bytes, `1..=kind.max_payload()`.
    pub len: u32,
}

impl FrameHeader {
    /// Parses and checks a header. This is the only gate in front of buffering a payload.
    pub fn parse(bytes: [u8; FRAME_HEADER_LEN]) -> Result<FrameHeader, FrameError> {
        let len = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
        let kind = FrameKind::from_byte(bytes[4]).ok_or(FrameError::UnknownKind(bytes[4]))?;
        if len == 0 {
            return Err(FrameError::Empty { kind: kind.name() });
        }
        if len as usize > kind.max_payload() {
            return Err(FrameError::TooLarge {
                kind: kind.name(),
                len: len.into(),
                max: kind.max_payload(),
            });
        }
        Ok(FrameHeader { kind, len })
    }

    /// The header bytes.
    pub fn to_bytes(self) -> [u8; FRAME_HEADER_LEN] {
        let l = self.len.to_be_bytes();
        [l[0], l[1], l[2], l[3], self.kind as u8]
    }
}

/// A message type that travels in frames of one kind.
pub trait WireMessage {
    /// The frame kind that carries it.
    const KIND: FrameKind;
}

impl WireMessage for Proposal {
    const KIND: FrameKind = FrameKind::Proposal;
}
impl WireMessage for Vote {
    const KIND: FrameKind = FrameKind::Vote;
}
impl WireMessage for RoundChange {
    const KIND: FrameKind = FrameKind::RoundChange;
}
impl WireMessage for FinalizedBlock {
    const KIND: FrameKind = FrameKind::FinalizedBlock;
}
impl WireMessage for TxBatch {
    const KIND: FrameKind = FrameKind::TxBatch;
}
impl WireMessage for IngressAck {
    const KIND: FrameKind = FrameKind::IngressAck;
}
impl WireMessage for SyncRequest {
    const KIND: FrameKind = FrameKind::SyncRequest;
}
impl WireMessage for PeerQuery {
    const KIND: FrameKind = FrameKind::PeerQuery;
}
impl WireMessage for PeerList {
    const KIND: FrameKind = FrameKind::PeerList;
}

/// Encodes `message` as one frame: header then rkyv payload.
///
/// Panics if the payload exceeds the kind's maximum: producing such a frame is a bug of the
/// sender (block building enforces the limits first), and a peer would refuse it anyway.
pub fn encode_frame<T>(message: &T) -> Vec<u8>
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
    let payload = super::to_bytes(message);
    assert!(
        !payload.is_empty() && payload.len() <= T::KIND.max_payload(),
        "{} payload of {} bytes breaks the frame limit",
        T::KIND.name(),
        payload.len()
    );
    let header = FrameHeader {
        kind: T::KIND,
        len: payload.len() as u32,
    };
    let mut out = Vec::with_capacity(FRAME_HEADER_LEN + payload.len());
    out.extend_from_slice(&header.to_bytes());
    out.extend_from_slice(&payload);
    out
}

/// A whole frame: its kind and its payload in 16-byte-aligned memory, not yet validated.
#[derive(Debug)]
pub struct Frame {
    /// The kind from the header.
    pub kind: FrameKind,
    /// The payload bytes.
    pub payload: AlignedVec<16>,
}

/// A validated message borrowed from a [`Frame`]'s payload.
#[derive(Debug)]
pub enum Message<'a> {
    /// PRE-PREPARE.
    Proposal(&'a ArchivedProposal),
    /// PREPARE or COMMIT.
    Vote(&'a ArchivedVote),
    /// ROUND-CHANGE.
    RoundChange(&'a ArchivedRoundChange),
    /// A finalized block with its certificate.
    FinalizedBlock(&'a ArchivedFinalizedBlock),
    /// A batch of transactions.
    TxBatch(&'a ArchivedTxBatch),
    /// An answer to an ingress batch.
    IngressAck(&'a ArchivedIngressAck),
    /// A request for finalized blocks.
    SyncRequest(&'a ArchivedSyncRequest),
}

/// A validated bootnode-protocol message borrowed from a [`Frame`]'s payload.
#[derive(Debug)]
pub enum BootnodeMessage<'a> {
    /// A node's query (and registration).
    PeerQuery(&'a ArchivedPeerQuery),
    /// A bootnode's answer.
    PeerList(&'a ArchivedPeerList),
}

impl Frame {
    /// Validates the payload as the archive its kind names (`rkyv::access`), then checks the
    /// type's named limits. Nothing of the payload is read before this succeeds.
    ///
    /// Bootnode-protocol kinds are refused as [`FrameError::WrongProtocol`].
    pub fn message(&self) -> Result<Message<'_>, FrameError> {
        let kind = self.kind.name();
        let limit = |source| FrameError::Limit { kind, source };
        Ok(match self.kind {
            FrameKind::PeerQuery | FrameKind::PeerList => {
                return Err(FrameError::WrongProtocol {
                    kind,
                    protocol: "peer or ingress",
                })
            }
            FrameKind::Proposal => {
                let m = access::<ArchivedProposal>(kind, &self.payload)?;
                m.check_limits().map_err(limit)?;
                Message::Proposal(m)
            }
            FrameKind::Vote => Message::Vote(access::<ArchivedVote>(kind, &self.payload)?),
            FrameKind::RoundChange => {
                let m = access::<ArchivedRoundChange>(kind, &self.payload)?;
                m.check_shape().map_err(limit)?;
                Message::RoundChange(m)
            }
            FrameKind::FinalizedBlock => {
                let m = access::<ArchivedFinalizedBlock>(kind, &self.payload)?;
                m.check_limits().map_err(limit)?;
                Message::FinalizedBlock(m)
            }
            FrameKind::TxBatch => {
                let m = access::<ArchivedTxBatch>(kind, &self.payload)?;
                m.check_limits().map_err(limit)?;
                Message::TxBatch(m)
            }
            FrameKind::IngressAck => {
                Message::IngressAck(access::<ArchivedIngressAck>(kind, &self.payload)?)
            }
            FrameKind::SyncRequest => {
                Message::SyncRequest(access::<ArchivedSyncRequest>(kind, &self.payload)?)
            }
        })
    }
}

impl Frame {
    /// Validates the payload of a bootnode-protocol frame and checks its named limits; any
    /// other kind is refused as [`FrameError::WrongProtocol`].
    pub fn bootnode_message(&self) -> Result<BootnodeMessage<'_>, FrameError> {
        let kind = self.kind.name();
        match self.kind {
            FrameKind::PeerQuery => Ok(BootnodeMessage::PeerQuery(access::<ArchivedPeerQuery>(
                kind,
                &self.payload,
            )?)),
            FrameKind::PeerList => {
                let m = access::<ArchivedPeerList>(kind, &self.payload)?;
                m.check_limits()
                    .map_err(|source| FrameError::Limit { kind, source })?;
                Ok(BootnodeMessage::PeerList(m))
            }
            _ => Err(FrameError::WrongProtocol {
                kind,
                protocol: "bootnode",
            }),
        }
    }
}

/// Validates `bytes` as an archived `T` (bytecheck), reporting failures as [`FrameError`].
pub fn access<'b, T>(kind: &'static str, bytes: &'b [u8]) -> Result<&'b T, FrameError>
where
    T: Portable
        + for<'a> rkyv::bytecheck::CheckBytes<rkyv::api::high::HighValidator<'a, rkyv::rancor::Error>>,
{
    rkyv::access::<T, rkyv::rancor::Error>(bytes).map_err(|e| FrameError::Invalid {
        kind,
        reason: e.to_string(),
    })
}

/// Incremental frame decoder for a byte stream (a TCP connection).
///
/// Feed it whatever arrived with [`FrameDecoder::decode`]; it returns each frame as soon as it
/// is whole. The header is validated before any payload is buffered; the buffer starts at
/// most [`INITIAL_PAYLOAD_RESERVE`] bytes and grows with the bytes actually received, never
/// past the declared length, so memory per connection is bounded by the largest kind's
/// maximum and by what the peer really sent. After an error the stream is out of sync: drop
/// the connection.
#[derive(Debug, Default)]
pub struct FrameDecoder {
    header: [u8; FRAME_HEADER_LEN],
    header_filled: usize,
    body: Option<(FrameHeader, AlignedVec<16>)>,
}

impl FrameDecoder {
    /// A decoder at the start of a stream.
    pub fn new() -> FrameDecoder {
        FrameDecoder::default()
    }

    /// Consumes bytes from the front of `input` until one frame is complete (returned) or the
    /// input is used up (`Ok(None)`). Call again with the rest of `input` for further frames.
    pub fn decode(&mut self, input: &mut &[u8]) -> Result<Option<Frame>, FrameError> {
        loop {
            if let Some((header, body)) = self.body.as_mut() {
                let want = header.len as usize - body.len();
                let take = want.min(input.len());
                body.extend_from_slice(&input[..take]);
                *input = &input[take..];
                if body.len() < header.len as usize {
                    return Ok(None);
                }
                let (header, payload) = self.body.take().expect("body present in this branch");
                debug_assert_eq!(payload.len(), header.len as usize);
                return Ok(Some(Frame {
                    kind: header.kind,
                    payload,
                }));
            }
            if input.is_empty() {
                return Ok(None);
            }
            let take = (FRAME_HEADER_LEN - self.header_filled).min(input.len());
            self.header[self.header_filled..self.header_filled + take]
                .copy_from_slice(&input[..take]);
            self.header_filled += take;
            *input = &input[take..];
            if self.header_filled < FRAME_HEADER_LEN {
                return Ok(None);
            }
            self.header_filled = 0;
            let header = FrameHeader::parse(self.header)?;
            // Reserve at most INITIAL_PAYLOAD_RESERVE up front and grow as bytes arrive, so a
            // bare header announcing a large payload does not pin megabytes.
            let mut body = AlignedVec::<16>::new();
            body.reserve_exact((header.len as usize).min(INITIAL_PAYLOAD_RESERVE));
            self.body = Some((header, body));
        }
    }

    /// Bytes received of an incomplete frame (header and payload); 0 between frames.
    pub fn buffered(&self) -> usize {
        match &self.body {
            Some((_, body)) => FRAME_HEADER_LEN + body.len(),
            None => self.header_filled,
        }
    }
}
