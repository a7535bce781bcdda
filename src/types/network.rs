//! Wire types outside the consensus protocol proper: transaction batches (client ingress and
//! CN-to-CN gossip), ingress acknowledgements, and sync requests.
//!
//! - [`TxBatch`]: a client sends transactions to a node's ingress port in batches; a CN that
//!   admits a batch gossips it to the other CNs so whichever CN proposes next already holds it.
//!   `id` is the sender's own number for the batch (a client's sequence number); the receiver
//!   only echoes it back in [`IngressAck`].
//! - [`IngressAck`]: the node's answer to one ingress batch, fixed size: refused at once
//!   (`status != FINAL`), or final (every admitted transaction of the batch is in a finalized
//!   block, the last of them at `height`).
//! - [`SyncRequest`]: "send me your finalized blocks from `from_height` on" (the consensus
//!   core's `RequestSync` effect on the wire); answered with `FinalizedBlock` frames, at most
//!   [`MAX_SYNC_BLOCKS`] per request.
//! - [`PeerQuery`] and [`PeerList`]: the bootnode protocol (`net::bootnode`). After the
//!   authenticated handshake a node sends one `PeerQuery` ("register me at this listen address,
//!   if `listen_port != 0`, and tell me whom to connect to"); the bootnode answers one
//!   `PeerList` of at most [`MAX_PEER_LIST`] [`PeerRecord`]s.
//!
//! Addresses on the wire are 16 bytes: an IPv6 address as is, an IPv4 address mapped into
//! IPv6 (`::ffff:a.b.c.d`, RFC 4291 section 2.5.5.2); [`ip_to_wire`] and [`ip_from_wire`]
//! convert, and a mapped address always reads back as IPv4.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use rkyv::{Archive, Deserialize, Serialize};

use super::chain::{check_transaction_list, SignedTransaction, TransactionList};
use super::{Height, LimitError};

/// The most transactions one [`TxBatch`] may carry.
pub const MAX_BATCH_TXS: usize = 8192;
/// The most transaction bytes one [`TxBatch`] may carry.
pub const MAX_BATCH_TX_BYTES: usize = 2 * 1024 * 1024;
/// The most finalized blocks sent for one [`SyncRequest`].
pub const MAX_SYNC_BLOCKS: u64 = 64;
/// The most records one [`PeerList`] may carry.
pub const MAX_PEER_LIST: usize = 256;

/// A batch of transactions from a client, or gossiped between CNs.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct TxBatch {
    /// The sender's number for this batch, echoed in [`IngressAck::batch_id`].
    pub id: u64,
    /// The transactions, in the sender's order.
    pub transactions: Vec<SignedTransaction>,
}

impl ArchivedTxBatch {
    /// Named limits: count, no empty transaction, per-transaction and total size.
    pub fn check_limits(&self) -> Result<(), LimitError> {
        if self.transactions.is_empty() {
            return Err(LimitError::Invalid("empty transaction batch"));
        }
        check_transaction_list(
            &self.transactions,
            TransactionList::Batch,
            MAX_BATCH_TXS,
            MAX_BATCH_TX_BYTES,
        )
    }
}

/// What became of (part of) an ingress batch.
///
/// One batch gets several answers: at once, one per refusal reason that hit some of its
/// transactions (`count` = how many); later, once every admitted transaction is settled, one
/// [`IngressAck::FINAL`] with the number that reached a finalized block (if any did), and one
/// [`IngressAck::DROPPED`] with the number the pool dropped after admitting them (evicted by
/// better-paying ones, made stale or unfunded by a block, expired), if any did. A client
/// knows a batch is settled when the counts of its answers add up to its size.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct IngressAck {
    /// The [`TxBatch::id`] answered.
    pub batch_id: u64,
    /// One of the `IngressAck::*` status codes.
    pub status: u8,
    /// For [`IngressAck::FINAL`]: the height of the block holding the batch's last
    /// transaction; otherwise 0.
    pub height: Height,
    /// Transactions of the batch this answer is about.
    pub count: u32,
}

impl IngressAck {
    /// `count` transactions of the batch are final.
    pub const FINAL: u8 = 0;
    /// Refused: the node's pool is full (back off and retry).
    pub const REFUSED_POOL_FULL: u8 = 1;
    /// Refused: the node does not take ingress (it is shutting down, or not a CN).
    pub const REFUSED_UNAVAILABLE: u8 = 2;
    /// Refused: already pooled, or recently finalized.
    pub const REFUSED_DUPLICATE: u8 = 3;
    /// Admitted, then dropped by the pool before any block included them.
    pub const DROPPED: u8 = 4;
    /// Refused: the node is behind on admissions (overloaded); back off and retry.
    pub const REFUSED_BUSY: u8 = 5;
    /// Refused: larger than a transaction may be.
    pub const REFUSED_OVERSIZED: u8 = 16;
    /// Refused: not a valid, supported, validly signed Ethereum transaction.
    pub const REFUSED_INVALID: u8 = 17;
    /// Refused: signed for another chain.
    pub const REFUSED_CHAIN_ID: u8 = 18;
    /// Refused: contract creation or call (transfers only).
    pub const REFUSED_NOT_A_TRANSFER: u8 = 19;
    /// Refused: fee fields out of order, gas limit too low or above the block gas limit.
    pub const REFUSED_GAS: u8 = 20;
    /// Refused: max fee per gas below the pool's minimum.
    pub const REFUSED_UNDERPRICED: u8 = 21;
    /// Refused: the nonce is already used.
    pub const REFUSED_NONCE_TOO_LOW: u8 = 22;
    /// Refused: the nonce is too far ahead of the account's.
    pub const REFUSED_NONCE_TOO_HIGH: u8 = 23;
    /// Refused: the balance does not cover value + gas limit x max fee.
    pub const REFUSED_INSUFFICIENT_FUNDS: u8 = 24;
    /// Refused: same sender and nonce as a pooled one, without the fee bump.
    pub const REFUSED_REPLACEMENT_UNDERPRICED: u8 = 25;
    /// Refused: the sender has as many pooled transactions as it may.
    pub const REFUSED_SENDER_FULL: u8 = 26;

    /// A readable name of a status code (the load generator's report keys).
    pub fn status_name(status: u8) -> &'static str {
        match status {
            IngressAck::FINAL => "final",
            IngressAck::REFUSED_POOL_FULL => "pool-full",
            IngressAck::REFUSED_UNAVAILABLE => "unavailable",
            IngressAck::REFUSED_DUPLICATE => "duplicate",
            IngressAck::DROPPED => "dropped",
            IngressAck::REFUSED_BUSY => "busy",
            IngressAck::REFUSED_OVERSIZED => "oversized",
            IngressAck::REFUSED_INVALID => "invalid",
            IngressAck::REFUSED_CHAIN_ID => "chain-id",
            IngressAck::REFUSED_NOT_A_TRANSFER => "not-a-transfer",
            IngressAck::REFUSED_GAS => "gas",
            IngressAck::REFUSED_UNDERPRICED => "underpriced",
            IngressAck::REFUSED_NONCE_TOO_LOW => "nonce-too-low",
            IngressAck::REFUSED_NONCE_TOO_HIGH => "nonce-too-high",
            IngressAck::REFUSED_INSUFFICIENT_FUNDS => "insufficient-funds",
            IngressAck::REFUSED_REPLACEMENT_UNDERPRICED => "replacement-underpriced",
            IngressAck::REFUSED_SENDER_FULL => "sender-full",
            _ => "unknown",
        }
    }
}

/// A request for finalized blocks from `from_height` on.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct SyncRequest {
    /// The first height wanted.
    pub from_height: Height,
}

/// A node's question to a bootnode: register me (unless `listen_port` is 0) and tell me whom
/// to connect to. The asker's role and node id are not in the message: they are the ones its
/// handshake proved.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct PeerQuery {
    /// The address the asker listens on for peers ([`ip_to_wire`]). The unspecified address
    /// (`::` or `::ffff:0.0.0.0`) means "the address you see me connect from".
    pub listen_ip: [u8; 16],
    /// The port it listens on; 0 = do not register me, only answer.
    pub listen_port: u16,
}

impl PeerQuery {
    /// A query registering `listen` (its port must not be 0), or only asking (`None`).
    pub fn new(listen: Option<SocketAddr>) -> PeerQuery {
        match listen {
            Some(addr) => PeerQuery {
                listen_ip: ip_to_wire(addr.ip()),
                listen_port: addr.port(),
            },
            None => PeerQuery {
                listen_ip: [0; 16],
                listen_port: 0,
            },
        }
    }
}

/// One node a bootnode tells about.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct PeerRecord {
    /// Its role ([`Role::to_byte`](crate::config::node::Role::to_byte)).
    pub role: u8,
    /// Its node id, to be proven in the handshake when dialing it.
    pub node_id: [u8; 20],
    /// Its listen address ([`ip_to_wire`]).
    pub ip: [u8; 16],
    /// Its listen port (never 0).
    pub port: u16,
}

impl PeerRecord {
    /// The record of a node at `address`.
    pub fn new(role: u8, node_id: [u8; 20], address: SocketAddr) -> PeerRecord {
        PeerRecord {
            role,
            node_id,
            ip: ip_to_wire(address.ip()),
            port: address.port(),
        }
    }
}

impl ArchivedPeerRecord {
    /// The listen address (an IPv4-mapped address reads back as IPv4).
    pub fn address(&self) -> SocketAddr {
        SocketAddr::new(ip_from_wire(self.ip), self.port.to_native())
    }
}

/// A bootnode's answer: the nodes the asker should connect to.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct PeerList {
    /// At most [`MAX_PEER_LIST`] records, no node id twice.
    pub peers: Vec<PeerRecord>,
}

impl ArchivedPeerList {
    /// Named limits: at most [`MAX_PEER_LIST`] records. (Whether each record is usable is
    /// the receiver's check: see `net::bootnode::query_bootnode`.)
    pub fn check_limits(&self) -> Result<(), LimitError> {
        if self.peers.len() > MAX_PEER_LIST {
            return Err(LimitError::TooMany {
                what: "peer list records",
                len: self.peers.len(),
                max: MAX_PEER_LIST,
            });
        }
        Ok(())
    }
}

/// The 16-byte wire form of an address: IPv6 as is, IPv4 mapped (`::ffff:a.b.c.d`).
pub fn ip_to_wire(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}

/// The address of a 16-byte wire form; an IPv4-mapped address reads back as IPv4.
pub fn ip_from_wire(bytes: [u8; 16]) -> IpAddr {
    Ipv6Addr::from(bytes).to_canonical()
}
