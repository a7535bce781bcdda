//! The net shard's door: what it hands consensus ([`Inbound`]), what consensus asks of it
//! ([`NetCommand`]), and the channel ends it owns ([`NetChannels`]).

use std::sync::Arc;

use crate::consensus::Message as ConsensusMessage;
use crate::exec::{BatchIn, ExecToNet};
use crate::runtime::{Rx, Tx};
use crate::store::{PeerFrame, SyncServe};
use crate::types::{Height, PeerSlot};

/// What the net shard hands the consensus shard.
// Messages travel inline (one per frame, moved straight into the machine); `Connected` is rare.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Inbound {
    /// A consensus message.
    Message {
        /// The authenticated peer it came from.
        from: PeerSlot,
        /// The message (its signatures not yet checked).
        message: ConsensusMessage,
    },
    /// A finalized block for a PN's or EN's follower (nothing about it checked yet).
    Block {
        /// The authenticated peer it came from.
        from: PeerSlot,
        /// The block.
        block: Box<crate::types::FinalizedBlock>,
        /// The frame it arrived in (a PN relays it once the follower adopted the block).
        received: Option<Arc<Vec<u8>>>,
    },
    /// A CN's connection to another CN came up (its slot is its council index): the
    /// consensus machine sends it the current round's own messages again.
    Connected {
        /// The peer's slot.
        peer: PeerSlot,
    },
}

/// What the consensus shard (the machine of a CN, the follower of a PN or EN) asks of the net
/// shard.
#[derive(Debug)]
pub enum NetCommand {
    /// Send a frame to every connected council member.
    Broadcast(Arc<Vec<u8>>),
    /// Send a frame to one peer.
    SendTo(PeerSlot, Arc<Vec<u8>>),
    /// A block is final and durable here: a CN passes `frame` to its PNs; a PN relays the
    /// bytes it received for it (the copy its follower checked and adopted) to its ENs and
    /// the other PNs, except `from`.
    Finalized {
        /// Its height: the node's head from now on.
        height: Height,
        /// Its frame, when the node passes blocks on (a CN encodes it; a PN relays what it
        /// received).
        frame: Option<Arc<Vec<u8>>>,
        /// The peer the adopted copy came from (not sent back to it).
        from: Option<PeerSlot>,
    },
    /// A council member is still working on a height this CN finalized: send it the
    /// finalized blocks from `from_height` on, unless it was offered (or asked for) blocks
    /// within [`SYNC_REQUEST_INTERVAL`](super::SYNC_REQUEST_INTERVAL) (the per-peer sync budget).
    OfferSync {
        /// The lagging member's slot.
        peer: PeerSlot,
        /// First height it lacks.
        from_height: Height,
    },
    /// Ask an upstream peer (a PN's CN or another PN; an EN's PN) for finalized blocks.
    RequestSync {
        /// First height wanted.
        from_height: Height,
    },
    /// Close the connection of a peer and ban it: a follower's peer that sent a block that is
    /// not final, or a council member that sent a stream of bad signatures
    /// ([`crate::consensus_shard::evidence`]).
    Ban {
        /// The peer.
        peer: PeerSlot,
        /// Why (logged).
        reason: String,
    },
}

/// The channels of the net shard.
pub struct NetChannels {
    /// From consensus.
    pub from_consensus: Rx<NetCommand>,
    /// To consensus.
    pub to_consensus: Tx<Inbound>,
    /// To exec (batches); a PN has no exec shard.
    pub to_exec: Option<Tx<BatchIn>>,
    /// From exec (gossip, acks).
    pub from_exec: Option<Rx<ExecToNet>>,
    /// To store (sync requests to serve).
    pub to_store: Tx<SyncServe>,
    /// From store (sync answers).
    pub from_store: Rx<PeerFrame>,
}
