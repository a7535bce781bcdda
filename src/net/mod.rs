//! The net shard: peer connections of every tier, and the client ingress port.
//!
//! The rules below (admission, where each frame goes, the PN's upstream, bans, sync budgets,
//! ingress slots and eviction) are written once, without I/O, in [`rules`], and unit-tested
//! there. Around them: `peers` (handshake, the reader of each peer connection, frame
//! routing), `relay` (the PN's transaction deduplication), `ingress` (client connections),
//! `discovery` (whom to dial: static peers, bootnodes, reloads), `outbox` (each connection's
//! bounded queue and writer), the wire protection ([`handshake`], [`record`]), and this
//! module: the shard's configuration, its one `State`, and [`run`], which starts the tasks.
//!
//! **Who talks to whom.** Every connection starts with the authenticated handshake of
//! [`handshake`] (each side proves its node key and says its role). A node admits only peers
//! whose node id is on its allowlist (fail closed: an empty list admits no one), in the roles
//! its own role talks to:
//!
//! | this node | admits and dials | dial rule |
//! |---|---|---|
//! | CN | other council members (the CN mesh); its cell's PNs (inbound only) | of two CNs, the lower council index dials |
//! | PN | its CN; other PNs; ENs (inbound) | a PN dials its CN; of two PNs, the lower node id dials |
//! | EN | PNs | an EN dials its PNs |
//!
//! A peer claiming the CN role must be a genesis council member. A newer connection from the
//! same peer replaces the older. Dialing retries with backoff from [`DIAL_BACKOFF_MIN`]
//! doubling to [`DIAL_BACKOFF_MAX`]. Peers have a *slot* ([`PeerSlot`]): a CN's is its council
//! index, anyone else's is assigned from [`TIER_SLOT_BASE`] up.
//!
//! **What flows** (anything else from a peer is a violation):
//!
//! | from → to | frames | handling |
//! |---|---|---|
//! | CN → CN | proposal, vote, round change, finalized block, tx batch, sync request | consensus / exec (gossip) / store |
//! | PN → CN | tx batch, sync request | exec (admitted and gossiped to the CNs like a client's, no answer) / store |
//! | CN, PN → PN | finalized block | the follower (consensus shard); once adopted, relayed |
//! | EN, PN → PN | tx batch | relayed to the PN's CN |
//! | PN, EN → PN; PN → CN | sync request | store (blocks from the given height) |
//! | PN → EN | finalized block | the follower |
//!
//! **Relay and fan-out (PN).** A PN forwards the bytes it received, never a re-encoding:
//! - *blocks*: a finalized block from the PN's CN or another PN is handed to the follower with
//!   its frame bytes; the follower checks it whole (certificate and body, see
//!   [`crate::consensus::finality`]) and, once it adopts it, those very bytes are sent to every
//!   connected EN and every PN except the one they came from. A copy that is not final is
//!   refused and its sender banned; it never reaches the relay, and it does not stop a genuine
//!   copy of the same height from being adopted. A block at or below the node's head is a
//!   duplicate (another PN's copy) and is dropped unread. A PN thus gets each block from its CN
//!   and from the other PNs: whichever genuine copy comes first is relayed, so a PN whose CN is
//!   down still serves its ENs.
//! - *transactions*: a batch from an EN or a PN goes to the PN's CN; one from an EN goes to the
//!   other PNs instead while the PN has no CN connection. Deduplication is by transaction
//!   hash (keccak-256 of the transaction's bytes, its identity; a batch's payload is not
//!   canonical: another id or another grouping of the same transactions encodes differently):
//!   transactions relayed among the last [`RELAY_DEDUP_WINDOW`] are left out, a batch of
//!   nothing new is dropped, one of only new transactions goes on as received, and a mixed
//!   one is re-encoded with its new transactions only. Batches from PNs are never passed to
//!   other PNs, so nothing loops.
//!
//! An EN sends its transactions (the exec shard's gossip) to one PN, the connected one with the
//! lowest slot, and takes blocks from every PN it is connected to: when one PN dies the others
//! already carry the blocks, and the follower asks for any gap.
//!
//! **Frames from a peer** are checked in this order: the decoder's header gate (kind, per-kind
//! size), the per-peer message rates ([`PeerLimits::messages_per_second`] for all frames and
//! the much lower [`PeerLimits::consensus_messages_per_second`] for the frames that cost
//! signature checks), the table above, `rkyv` validation and named limits (`Frame::message`),
//! and that consensus messages are signed by the peer itself (no relaying in the mesh: a vote
//! whose signer is not the connection's peer is a violation). Any violation closes the
//! connection and bans the peer's node id for [`PeerLimits::ban`], with the reason logged. So
//! does a follower's refusal of a block the peer sent ([`NetCommand::Ban`]). Signatures are
//! checked by the consensus shard, which bans a member that sends a stream of bad ones
//! ([`crate::consensus_shard::evidence`]).
//!
//! **Back-pressure.** Each connection has a bounded queue of outgoing frames
//! ([`PeerLimits::queue_frames`] frames, [`PeerLimits::queue_bytes`] bytes); what does not
//! fit is dropped and counted (consensus tolerates loss, and a slow peer never stalls the
//! node). Messages to the consensus and exec shards use `try_send`: a flood from a peer fills
//! the channel and is dropped rather than blocking the reader of every other peer.
//!
//! **Floods.** At most [`MAX_PENDING_HANDSHAKES`] handshakes are in progress at once, and at
//! most [`MAX_PENDING_HANDSHAKES_PER_ADDRESS`] from one remote address; a handshake must finish
//! within [`HANDSHAKE_TIMEOUT`]. Beyond, a new connection is closed at once and counted.
//! Connections from a *known address* (the address of a configured peer or bootnode, or of a
//! peer a bootnode named) count only against the per-address limit: a flood from many other
//! addresses can fill the shared slots but cannot lock out the peers the node expects.
//!
//! **Ingress** (clients, not authenticated; CNs and ENs): only `TxBatch` frames, at most
//! [`MAX_INGRESS_CONNECTIONS`] connections ([`MAX_INGRESS_CONNECTIONS_PER_ADDRESS`] from one
//! address); batches go to the exec shard (with TCP back-pressure to the client), answers
//! (`IngressAck`) come back from exec. Slow and idle clients lose their slot:
//! - a connection without a whole frame for [`INGRESS_IDLE_TIMEOUT`] is closed (`idle`);
//! - a frame begun must be complete within [`INGRESS_FRAME_TIMEOUT`], so a client dribbling
//!   bytes (slowloris) is closed (`slow`) however steadily it sends;
//! - when every slot is taken, a new connection takes the slot of the connection that has gone
//!   longest without a whole frame, if that is at least [`INGRESS_EVICTABLE_IDLE`]
//!   (`evicted`); only when every client is active is the newcomer refused.

pub mod bootnode;
mod discovery;
pub mod door;
pub mod handshake;
mod ingress;
mod outbox;
mod peers;
pub mod record;
mod relay;
pub mod rules;
#[cfg(feature = "byzantine")]
pub mod tamper;
pub use door::{Inbound, NetChannels, NetCommand};

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::channels::local_channel;
use glommio::net::{TcpListener, TcpStream};

use crate::config::node::Role;
use crate::consensus::Message as ConsensusMessage;
use crate::crypto::bls::BlsSecretKey;
use crate::exec::{BatchIn, BatchOrigin, ExecToNet};
use crate::runtime::{ShardStats, Tx};
use crate::store::{PeerFrame, SyncServe};
use crate::types::frame::{encode_frame, Frame, FrameDecoder, FrameHeader, FrameKind, Message};
use crate::types::network::SyncRequest;
use crate::types::{CouncilIndex, Height, PeerSlot, TIER_SLOT_BASE};
use discovery::{apply_permissions, discover, start_dialing};
use handshake::{Handshake, KeyExchange, PeerIdentity, SessionKeys, Side, AUTH_LEN, HELLO_LEN};
use ingress::run_client;
use outbox::{new_outbox, write_frames, Outbox};
pub use peers::set_peer_liveness;
use peers::{run_handshake, run_peer};
use relay::{relay_fresh_transactions, BatchRelay, RecentSet};
use rules::{Bans, Gate, IngressSlots, Route, SlotGrant, SyncBudget};

/// First wait before redialing a peer.
pub const DIAL_BACKOFF_MIN: Duration = Duration::from_millis(50);
/// Longest wait before redialing a peer.
pub const DIAL_BACKOFF_MAX: Duration = Duration::from_secs(2);
/// A handshake must finish within this.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(3);
/// After a failed bootnode query, the next one waits this long (a node the bootnode does not
/// admit yet keeps asking: an operator may add it to the allowlist at run time).
pub const BOOTNODE_RETRY: Duration = Duration::from_secs(2);
/// Most handshakes in progress at once (slow or silent connections beyond are closed).
pub const MAX_PENDING_HANDSHAKES: usize = 64;
/// Most handshakes in progress at once from one remote address: a flood of silent
/// connections from one address cannot take all [`MAX_PENDING_HANDSHAKES`] slots from the
/// peers elsewhere. (Nodes on one host, as in a local testnet, share an address: this is
/// well above what a node's honest peers open at once.)
pub const MAX_PENDING_HANDSHAKES_PER_ADDRESS: usize = 16;
/// Most client connections on the ingress port.
pub const MAX_INGRESS_CONNECTIONS: usize = 256;
/// Most client connections on the ingress port from one remote address (a flood from one
/// address leaves room for the others).
pub const MAX_INGRESS_CONNECTIONS_PER_ADDRESS: usize = 64;
/// An ingress connection that completes no frame for this long is closed (idle connections
/// would otherwise hold the [`MAX_INGRESS_CONNECTIONS`] slots).
pub const INGRESS_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Idle time on a peer link before the kernel starts TCP keepalive probes
/// ([`set_peer_liveness`]).
pub const PEER_KEEPALIVE_IDLE: Duration = Duration::from_secs(5);
/// Time between unanswered keepalive probes on a peer link.
pub const PEER_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(2);
/// Unanswered keepalive probes after which the kernel ends a peer link.
pub const PEER_KEEPALIVE_PROBES: u32 = 3;
/// Data sent on a peer link and unacknowledged for this long ends it (`TCP_USER_TIMEOUT`).
pub const PEER_USER_TIMEOUT: Duration = Duration::from_secs(15);
// A silent idle link ends (after idle + probes x interval) no later than a busy one.
const _: () = assert!(
    PEER_KEEPALIVE_IDLE.as_secs()
        + PEER_KEEPALIVE_INTERVAL.as_secs() * PEER_KEEPALIVE_PROBES as u64
        <= PEER_USER_TIMEOUT.as_secs()
);
/// A frame whose first byte arrived must be complete within this (a slowloris client that
/// dribbles a byte at a time is closed). A full-size batch at 1 MB/s takes well under it.
pub const INGRESS_FRAME_TIMEOUT: Duration = Duration::from_secs(10);
/// With every ingress slot taken, a connection that has completed no frame for at least this
/// long gives its slot to a new one (the longest-idle first).
pub const INGRESS_EVICTABLE_IDLE: Duration = Duration::from_secs(1);
/// Most addresses remembered as known (configured ones plus those bootnodes named).
pub const MAX_KNOWN_ADDRESSES: usize = 4096;
/// Wait after a failed accept (e.g. out of file descriptors) before the next one.
pub const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(50);
/// Socket read size.
pub const READ_CHUNK: usize = 256 * 1024;
/// A peer's sync requests are served at most this often (each may cost
/// `MAX_SYNC_BLOCKS` block reads: without a bound a peer could amplify one small frame into
/// megabytes of disk reads and sends). Requests inside the interval are dropped, not
/// punished: a node that is behind asks again on its next round timeout.
pub const SYNC_REQUEST_INTERVAL: Duration = Duration::from_millis(200);
/// Transactions a PN remembers having relayed (by the first 8 bytes of their hash; about
/// 8 MiB of memory).
pub const RELAY_DEDUP_WINDOW: usize = 1 << 18;

/// Per-peer limits.
#[derive(Debug, Clone)]
pub struct PeerLimits {
    /// Frames a peer may send per second (averaged over one second, burst of the same size).
    pub messages_per_second: u32,
    /// Consensus frames (proposals, votes, round changes, finalized blocks) a peer may send
    /// per second. Each can cost a pairing check on the consensus shard; an honest CN sends a
    /// handful per height plus at most [`MAX_SYNC_BLOCKS`](crate::types::network::MAX_SYNC_BLOCKS)
    /// finalized blocks per sync request.
    pub consensus_messages_per_second: u32,
    /// Outgoing frames queued per peer.
    pub queue_frames: usize,
    /// Outgoing bytes queued per peer.
    pub queue_bytes: usize,
    /// How long a misbehaving peer stays banned.
    pub ban: Duration,
}

impl Default for PeerLimits {
    fn default() -> PeerLimits {
        PeerLimits {
            messages_per_second: 50_000,
            consensus_messages_per_second: 2_000,
            queue_frames: 8192,
            queue_bytes: 256 * 1024 * 1024,
            ban: Duration::from_secs(30),
        }
    }
}

/// A node this one dials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DialTarget {
    /// Its role (must match what it proves in the handshake).
    pub role: Role,
    /// Node id (keccak of its BLS key, first 20 bytes).
    pub node_id: [u8; 20],
    /// Where it listens.
    pub address: SocketAddr,
}

/// What a node may change at run time without a restart (SIGHUP): whom it admits and whom
/// it dials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Permissions {
    /// `network.allowlist`.
    pub allowlist: BTreeSet<[u8; 20]>,
    /// `[[network.peers]]`.
    pub dial: Vec<DialTarget>,
}

/// Loads [`Permissions`] again from the node's config (validated as at start); `Err` names
/// the file and field, and the current permissions stay.
pub type PermissionLoader = Box<dyn Fn() -> Result<Permissions, String> + Send>;

/// How the net shard is told to reload its permissions: a flag (set on SIGHUP) and the loader.
pub struct Reload {
    /// Set to ask for a reload; the shard clears it.
    pub flag: Arc<AtomicBool>,
    /// Loads the new permissions.
    pub load: PermissionLoader,
}

impl From<&crate::config::node::PeerEntry> for DialTarget {
    fn from(p: &crate::config::node::PeerEntry) -> DialTarget {
        DialTarget {
            role: p.role,
            node_id: p.node_id,
            address: p.address,
        }
    }
}

/// Static facts the net shard needs.
#[derive(Clone)]
pub struct NetConfig {
    /// Chain id (bound into the handshake).
    pub chain_id: u64,
    /// This node's role.
    pub role: Role,
    /// This node's key.
    pub secret: BlsSecretKey,
    /// p2p listen address.
    pub listen: SocketAddr,
    /// Client ingress listen address (CN, EN).
    pub ingress: Option<SocketAddr>,
    /// Node ids of the genesis council, by council index.
    pub council: Vec<[u8; 20]>,
    /// Nodes to dial (only those the dial rule of the module doc makes this node dial are).
    pub dial: Vec<DialTarget>,
    /// Node ids admitted (fail closed: no one else, whatever its role).
    pub allowlist: BTreeSet<[u8; 20]>,
    /// Ask for encrypted links (`network.encryption`; records are authenticated either way).
    pub encryption: bool,
    /// Bootnodes to register with and learn peers from.
    pub bootnodes: Vec<crate::config::node::PeerEntry>,
    /// Height of the last block this node made final when it starts; the consensus shard
    /// reports each later one ([`NetCommand::Finalized`]). PN, EN: blocks at or below it are
    /// duplicates.
    pub head: Height,
    /// Limits.
    pub limits: PeerLimits,
    /// Test only: every finalized-block frame sent carries other transactions
    /// (`crate::consensus_shard::byzantine`, behaviour `tamper-bodies`).
    #[cfg(feature = "byzantine")]
    pub tamper_bodies: bool,
}

impl NetConfig {
    /// This node's council index, if it is a CN.
    fn my_council_index(&self) -> Option<CouncilIndex> {
        let me = self.secret.public_key().node_id();
        (self.role == Role::Cn)
            .then(|| self.council.iter().position(|id| *id == me))
            .flatten()
            .map(|i| i as CouncilIndex)
    }

    /// Whether this node dials `target` (the dial rule of the module doc).
    fn dials(&self, target: &DialTarget) -> bool {
        let me = self.secret.public_key().node_id();
        match (self.role, target.role) {
            (Role::Cn, Role::Cn) => {
                let theirs = self.council.iter().position(|id| *id == target.node_id);
                matches!((self.my_council_index(), theirs), (Some(a), Some(b)) if (a as usize) < b)
            }
            (Role::Pn, Role::Cn) | (Role::En, Role::Pn) => true,
            (Role::Pn, Role::Pn) => me < target.node_id,
            _ => false,
        }
    }
}

/// Counters the net shard exposes.
#[derive(Debug, Default)]
pub struct NetCounters {
    /// Peers connected now.
    pub peers: AtomicU64,
    /// Peers connected now that are CNs, PNs, ENs.
    pub peers_by_role: [AtomicU64; 3],
    /// Bytes received from peers and clients.
    pub bytes_in: AtomicU64,
    /// Bytes sent.
    pub bytes_out: AtomicU64,
    /// Frames dropped because a queue was full.
    pub dropped: AtomicU64,
    /// Connections closed for a violation.
    pub violations: AtomicU64,
    /// Peer links closed because a record failed authentication (tampering on the path).
    pub link_failures: AtomicU64,
    /// Handshakes refused.
    pub refused_handshakes: AtomicU64,
    /// Frames relayed (PN: blocks down, transaction batches up), counted per frame received.
    pub relayed: AtomicU64,
    /// Frames dropped as duplicates (blocks at or below the head, batches already relayed).
    pub duplicates: AtomicU64,
    /// Ingress connections open now (each holds one of [`MAX_INGRESS_CONNECTIONS`] slots).
    pub ingress_connections: AtomicU64,
    /// Ingress connections refused (every slot busy with an active client, or the address's
    /// share used up).
    pub ingress_refused: AtomicU64,
    /// Ingress connections closed for completing no frame in [`INGRESS_IDLE_TIMEOUT`].
    pub ingress_idle: AtomicU64,
    /// Ingress connections closed for not completing a begun frame in
    /// [`INGRESS_FRAME_TIMEOUT`] (slowloris).
    pub ingress_slow: AtomicU64,
    /// Ingress connections closed to give their slot to a new connection.
    pub ingress_evicted: AtomicU64,
}

/// A connected, authenticated peer.
struct Peer {
    role: Role,
    node_id: [u8; 20],
    outbox: Outbox,
    /// When this CN last offered the peer finalized blocks ([`NetCommand::OfferSync`]).
    sync_offers: SyncBudget,
}

struct State {
    config: NetConfig,
    /// Height of the last block this node made final ([`NetConfig::head`], then each
    /// [`NetCommand::Finalized`]).
    head: Height,
    peers: HashMap<PeerSlot, Peer>,
    clients: HashMap<u64, Outbox>,
    /// Slots of peers that are not council members, by node id (stable while the node runs).
    tier_slots: HashMap<[u8; 20], PeerSlot>,
    /// Banned node ids.
    bans: Bans,
    pending_handshakes: usize,
    /// Handshakes in progress per remote address.
    pending_by_address: HashMap<std::net::IpAddr, usize>,
    /// The ingress port's connection slots.
    ingress_slots: IngressSlots,
    /// How to tell an ingress connection's task that it was evicted, by connection number.
    client_evictions: HashMap<u64, local_channel::LocalSender<()>>,
    /// Addresses of the peers and bootnodes this node knows (configured or named by a
    /// bootnode): their handshakes do not count against the shared limit.
    known_addresses: HashSet<std::net::IpAddr>,
    next_connection: u64,
    /// PN: hashes (first 8 bytes) of the transactions relayed recently.
    relayed_txs: RecentSet,
    /// Rotates sync requests over the upstream peers.
    sync_turn: usize,
    /// Node ids with a dial loop running.
    dialing: HashSet<[u8; 20]>,
    /// Node ids a bootnode named (dialed while allowlisted, whatever the static peers say).
    discovered: HashSet<[u8; 20]>,
    stop: Arc<AtomicBool>,
    counters: Arc<NetCounters>,
    stats: Arc<ShardStats>,
    to_consensus: Tx<Inbound>,
    to_exec: Option<Rc<Tx<BatchIn>>>,
    to_store: Tx<SyncServe>,
}

type Shared = Rc<RefCell<State>>;

impl State {
    /// Takes a slot for new ingress connection `connection` from `remote`, evicting the
    /// longest-idle client if every slot is taken ([`IngressSlots::take`]); false if the
    /// connection must be refused.
    fn take_client_slot(
        &mut self,
        connection: u64,
        remote: Option<std::net::IpAddr>,
        now: Instant,
    ) -> bool {
        let grant = self.ingress_slots.take(connection, remote, now);
        if let SlotGrant::Evicting(victim) = grant {
            // Its task ends on this (or on its own, if it is ending already).
            if let Some(evict) = self.client_evictions.remove(&victim) {
                let _ = evict.try_send(());
            }
            self.counters.ingress_evicted.fetch_add(1, Relaxed);
        }
        self.counters
            .ingress_connections
            .store(self.ingress_slots.held() as u64, Relaxed);
        grant != SlotGrant::Refused
    }

    /// Gives back the slot of ingress connection `connection`, if it still holds one.
    fn release_client_slot(&mut self, connection: u64) {
        self.client_evictions.remove(&connection);
        self.ingress_slots.release(connection);
        self.counters
            .ingress_connections
            .store(self.ingress_slots.held() as u64, Relaxed);
    }

    /// The slot of an admitted peer: a council member's index, or a tier slot.
    fn slot_of(&mut self, role: Role, node_id: &[u8; 20]) -> PeerSlot {
        if role == Role::Cn {
            if let Some(i) = self.config.council.iter().position(|id| id == node_id) {
                return i as PeerSlot;
            }
        }
        let next = TIER_SLOT_BASE + self.tier_slots.len() as PeerSlot;
        *self.tier_slots.entry(*node_id).or_insert(next)
    }

    /// Whether a peer that proved `node_id` in `role` may connect ([`rules::admit`]);
    /// `expect` is the target when this node dialed.
    fn admit(
        &mut self,
        role: Role,
        node_id: &[u8; 20],
        expect: Option<&DialTarget>,
    ) -> Result<(), String> {
        let gate = Gate {
            me: self.config.role,
            council: &self.config.council,
            allowlist: &self.config.allowlist,
        };
        rules::admit(
            gate,
            &mut self.bans,
            role,
            node_id,
            expect.map(|t| (t.role, t.node_id)),
            Instant::now(),
        )
    }

    fn enqueue(&self, outbox: &Outbox, frame: Arc<Vec<u8>>) {
        #[cfg(feature = "byzantine")]
        let frame = if self.config.tamper_bodies {
            crate::net::tamper::tamper_block_frame(frame)
        } else {
            frame
        };
        let mut q = outbox.queue.borrow_mut();
        let limits = &self.config.limits;
        if q.frames.len() >= limits.queue_frames || q.bytes + frame.len() > limits.queue_bytes {
            self.counters.dropped.fetch_add(1, Relaxed);
            return;
        }
        q.bytes += frame.len();
        q.frames.push_back(frame);
        self.stats.queue_depth.fetch_add(1, Relaxed);
        // A full doorbell already has a wake-up pending.
        let _ = outbox.doorbell.try_send(());
        self.stats.count_out();
    }

    /// Sends `frame` to every connected peer of one of `roles`, except `except`.
    fn send_to_roles(&self, roles: &[Role], except: Option<PeerSlot>, frame: &Arc<Vec<u8>>) {
        for (slot, peer) in &self.peers {
            if roles.contains(&peer.role) && Some(*slot) != except {
                self.enqueue(&peer.outbox, frame.clone());
            }
        }
    }

    /// The connected peer of one of `roles` with the lowest slot.
    fn first_of(&self, roles: &[Role]) -> Option<PeerSlot> {
        self.peers
            .iter()
            .filter(|(_, p)| roles.contains(&p.role))
            .map(|(slot, _)| *slot)
            .min()
    }

    /// Publishes the peer counts (all, and per role).
    fn publish_peers(&self) {
        self.counters.peers.store(self.peers.len() as u64, Relaxed);
        for (i, role) in [Role::Cn, Role::Pn, Role::En].into_iter().enumerate() {
            let n = self.peers.values().filter(|p| p.role == role).count();
            self.counters.peers_by_role[i].store(n as u64, Relaxed);
        }
    }

    /// Closes a peer's connection (its reader notices) and bans its node id.
    fn ban(&mut self, slot: PeerSlot, reason: &str) {
        let node_id = if slot < TIER_SLOT_BASE {
            self.config.council.get(slot as usize).copied()
        } else {
            self.tier_slots
                .iter()
                .find(|(_, s)| **s == slot)
                .map(|(id, _)| *id)
        };
        if let Some(node_id) = node_id {
            self.bans
                .ban(node_id, Instant::now(), self.config.limits.ban);
        }
        // Counted whether or not the peer is still connected (it may have hung up before the
        // verdict on what it sent).
        self.counters.violations.fetch_add(1, Relaxed);
        if self.peers.remove(&slot).is_some() {
            self.publish_peers();
        }
        tracing::warn!(peer = slot, %reason, ban_s = self.config.limits.ban.as_secs(), "peer banned");
    }

    /// Carries out one command of the consensus shard.
    fn on_command(&mut self, cmd: NetCommand) {
        self.stats.count_in();
        match cmd {
            NetCommand::Broadcast(frame) => self.send_to_roles(&[Role::Cn], None, &frame),
            NetCommand::SendTo(slot, frame) => {
                if let Some(peer) = self.peers.get(&slot) {
                    self.enqueue(&peer.outbox, frame);
                }
            }
            NetCommand::Finalized {
                height,
                frame,
                from,
            } => {
                debug_assert!(height > self.head, "heads only grow");
                self.head = height;
                let Some(frame) = frame else { return };
                match self.config.role {
                    Role::Cn => self.send_to_roles(&[Role::Pn], None, &frame),
                    Role::Pn => {
                        self.counters.relayed.fetch_add(1, Relaxed);
                        self.send_to_roles(&[Role::En, Role::Pn], from, &frame);
                    }
                    Role::En | Role::Bootnode => {}
                }
            }
            NetCommand::RequestSync { from_height } => {
                let upstream: &[Role] = match self.config.role {
                    Role::Pn if self.first_of(&[Role::Cn]).is_some() => &[Role::Cn],
                    Role::Pn | Role::En => &[Role::Pn],
                    Role::Cn | Role::Bootnode => &[],
                };
                let mut slots: Vec<PeerSlot> = self
                    .peers
                    .iter()
                    .filter(|(_, p)| upstream.contains(&p.role))
                    .map(|(s, _)| *s)
                    .collect();
                if slots.is_empty() {
                    return;
                }
                slots.sort_unstable();
                self.sync_turn = self.sync_turn.wrapping_add(1);
                let slot = slots[self.sync_turn % slots.len()];
                let frame = Arc::new(sync_request_frame(from_height));
                if let Some(peer) = self.peers.get(&slot) {
                    self.enqueue(&peer.outbox, frame);
                }
            }
            NetCommand::OfferSync { peer, from_height } => {
                let now = Instant::now();
                let Some(p) = self.peers.get_mut(&peer) else {
                    return;
                };
                if !p.sync_offers.take(now, SYNC_REQUEST_INTERVAL) {
                    self.counters.dropped.fetch_add(1, Relaxed);
                    return;
                }
                if self
                    .to_store
                    .try_send(SyncServe { peer, from_height })
                    .is_err()
                {
                    self.counters.dropped.fetch_add(1, Relaxed);
                }
            }
            NetCommand::Ban { peer, reason } => self.ban(peer, &reason),
        }
    }

    /// Carries out one message of the exec shard.
    fn on_exec(&self, cmd: ExecToNet) {
        self.stats.count_in();
        match cmd {
            ExecToNet::Gossip(frame) => match self.config.role {
                Role::Cn => self.send_to_roles(&[Role::Cn], None, &frame),
                // An EN hands its transactions to one PN.
                _ => {
                    if let Some(peer) = self.first_of(&[Role::Pn]).and_then(|s| self.peers.get(&s))
                    {
                        self.enqueue(&peer.outbox, frame);
                    } else {
                        self.counters.dropped.fetch_add(1, Relaxed);
                    }
                }
            },
            ExecToNet::Ack { connection, ack } => {
                if let Some(outbox) = self.clients.get(&connection) {
                    self.enqueue(outbox, Arc::new(encode_frame(&ack)));
                }
            }
        }
    }
}

/// The bytes of a frame as received: header and payload (forwarded unchanged by a relay).
fn frame_bytes(frame: &Frame) -> Vec<u8> {
    let header = FrameHeader {
        kind: frame.kind,
        len: frame.payload.len() as u32,
    };
    let mut bytes = Vec::with_capacity(header.to_bytes().len() + frame.payload.len());
    bytes.extend_from_slice(&header.to_bytes());
    bytes.extend_from_slice(&frame.payload);
    bytes
}

/// Binds a listener, refusing an address another process already listens on.
///
/// glommio's `TcpListener::bind` sets `SO_REUSEPORT`, so a second node started on the same
/// port would bind too and the kernel would split connections between the two; and it does not
/// set `SO_REUSEADDR`, so a node restarted right after a crash could not bind while its old
/// connections linger in TIME_WAIT (a minute). The socket is therefore made by std (which
/// sets `SO_REUSEADDR` and not `SO_REUSEPORT`: the kernel refuses a second live listener) and
/// handed to glommio.
fn bind_exclusive(addr: SocketAddr, what: &str) -> Result<TcpListener, String> {
    use std::os::fd::{FromRawFd, IntoRawFd};
    let listener = std::net::TcpListener::bind(addr).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AddrInUse {
            format!("{what} listen address {addr} is already in use by another process")
        } else {
            format!("binding {what} listen address {addr}: {e}")
        }
    })?;
    // SAFETY: the descriptor is a bound, listening TCP socket whose ownership moves to glommio
    // (`into_raw_fd` gives it up), as `from_raw_fd` requires.
    Ok(unsafe { TcpListener::from_raw_fd(listener.into_raw_fd()) })
}

/// The next accepted connection; after an accept error (out of descriptors or similar) it
/// backs off for [`ACCEPT_ERROR_BACKOFF`] instead of spinning.
async fn accept_next(listener: &TcpListener) -> TcpStream {
    loop {
        match listener.accept().await {
            Ok(stream) => return stream,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                glommio::timer::sleep(ACCEPT_ERROR_BACKOFF).await;
            }
        }
    }
}

/// Waits at most `limit` for `f`.
pub async fn within<T>(limit: Duration, f: impl std::future::Future<Output = T>) -> Option<T> {
    futures_lite::future::or(async { Some(f.await) }, async {
        glommio::timer::sleep(limit).await;
        None
    })
    .await
}

/// Runs the net shard until `stop` is set; then closes every connection and returns.
pub async fn run(
    config: NetConfig,
    channels: NetChannels,
    stop: Arc<AtomicBool>,
    reload: Option<Reload>,
    stats: Arc<ShardStats>,
    counters: Arc<NetCounters>,
) -> Result<(), String> {
    if config.ingress.is_some() && channels.to_exec.is_none() {
        return Err("client ingress needs an exec shard (CN or EN)".into());
    }
    let listener = bind_exclusive(config.listen, "p2p")?;
    let ingress = match config.ingress {
        Some(addr) => Some(bind_exclusive(addr, "ingress")?),
        None => None,
    };
    let NetChannels {
        from_consensus,
        to_consensus,
        to_exec,
        from_exec,
        to_store,
        from_store,
    } = channels;
    let dial: Vec<DialTarget> = config
        .dial
        .iter()
        .filter(|t| config.dials(t))
        .cloned()
        .collect();
    let known_addresses: HashSet<std::net::IpAddr> = config
        .dial
        .iter()
        .map(|t| t.address.ip())
        .chain(config.bootnodes.iter().map(|b| b.address.ip()))
        .collect();
    let state: Shared = Rc::new(RefCell::new(State {
        head: config.head,
        config,
        peers: HashMap::new(),
        clients: HashMap::new(),
        tier_slots: HashMap::new(),
        bans: Bans::default(),
        pending_handshakes: 0,
        pending_by_address: HashMap::new(),
        ingress_slots: IngressSlots::new(
            MAX_INGRESS_CONNECTIONS,
            MAX_INGRESS_CONNECTIONS_PER_ADDRESS,
            INGRESS_EVICTABLE_IDLE,
        ),
        client_evictions: HashMap::new(),
        known_addresses,
        next_connection: 0,
        relayed_txs: RecentSet::default(),
        sync_turn: 0,
        dialing: HashSet::new(),
        discovered: HashSet::new(),
        stop: stop.clone(),
        counters,
        stats,
        to_consensus,
        to_exec: to_exec.map(Rc::new),
        to_store,
    }));
    let mut tasks = Vec::new();
    // Commands from consensus.
    {
        let state = state.clone();
        tasks.push(glommio::spawn_local(async move {
            while let Some(cmd) = from_consensus.recv().await {
                state.borrow_mut().on_command(cmd);
            }
        }));
    }
    // Gossip and acks from exec.
    if let Some(from_exec) = from_exec {
        let state = state.clone();
        tasks.push(glommio::spawn_local(async move {
            while let Some(cmd) = from_exec.recv().await {
                state.borrow().on_exec(cmd);
            }
        }));
    }
    // Sync answers from store.
    {
        let state = state.clone();
        tasks.push(glommio::spawn_local(async move {
            while let Some(PeerFrame { peer, frame }) = from_store.recv().await {
                let s = state.borrow();
                s.stats.count_in();
                if let Some(p) = s.peers.get(&peer) {
                    s.enqueue(&p.outbox, frame);
                }
            }
        }));
    }
    for target in dial {
        start_dialing(&state, target);
    }
    let bootnodes = state.borrow().config.bootnodes.clone();
    if !bootnodes.is_empty() {
        tasks.push(glommio::spawn_local(discover(state.clone(), bootnodes)));
    }
    // The accept loops run as tasks until stop, when they are cancelled (one accept each is
    // in flight at any time; no polling timeouts that would resubmit it).
    if let Some(ingress) = ingress {
        let state = state.clone();
        tasks.push(glommio::spawn_local(async move {
            loop {
                let stream = accept_next(&ingress).await;
                let remote = stream.peer_addr().ok().map(|a| a.ip());
                let connection = {
                    let mut s = state.borrow_mut();
                    s.next_connection += 1;
                    let connection = s.next_connection;
                    if s.stop.load(Relaxed)
                        || !s.take_client_slot(connection, remote, Instant::now())
                    {
                        s.counters.ingress_refused.fetch_add(1, Relaxed);
                        continue;
                    }
                    connection
                };
                glommio::spawn_local(run_client(state.clone(), stream, connection, remote))
                    .detach();
            }
        }));
    }
    {
        let state = state.clone();
        tasks.push(glommio::spawn_local(async move {
            loop {
                let stream = accept_next(&listener).await;
                let remote = stream.peer_addr().ok().map(|a| a.ip());
                let known = {
                    let mut s = state.borrow_mut();
                    let from_remote = remote.map_or(0, |ip| {
                        s.pending_by_address.get(&ip).copied().unwrap_or(0)
                    });
                    let known = remote.is_some_and(|ip| s.known_addresses.contains(&ip));
                    if (!known && s.pending_handshakes >= MAX_PENDING_HANDSHAKES)
                        || from_remote >= MAX_PENDING_HANDSHAKES_PER_ADDRESS
                        || s.stop.load(Relaxed)
                    {
                        s.counters.refused_handshakes.fetch_add(1, Relaxed);
                        continue;
                    }
                    if !known {
                        s.pending_handshakes += 1;
                    }
                    if let Some(ip) = remote {
                        *s.pending_by_address.entry(ip).or_default() += 1;
                    }
                    known
                };
                let state = state.clone();
                glommio::spawn_local(async move {
                    let mut stream = stream;
                    let identity =
                        run_handshake(&state, &mut stream, Side::Listener, None).await;
                    {
                        let mut s = state.borrow_mut();
                        if !known {
                            s.pending_handshakes -= 1;
                        }
                        if let Some(ip) = remote {
                            if let Some(n) = s.pending_by_address.get_mut(&ip) {
                                *n -= 1;
                                if *n == 0 {
                                    s.pending_by_address.remove(&ip);
                                }
                            }
                        }
                    }
                    match identity {
                        Ok(identity) => run_peer(state, stream, identity).await,
                        Err(reason) => {
                            state
                                .borrow()
                                .counters
                                .refused_handshakes
                                .fetch_add(1, Relaxed);
                            tracing::info!(remote = ?stream.peer_addr().ok(), %reason, "inbound handshake refused");
                        }
                    }
                })
                .detach();
            }
        }));
    }
    while !stop.load(Relaxed) {
        glommio::timer::sleep(Duration::from_millis(50)).await;
        if let Some(reload) = &reload {
            if reload.flag.swap(false, Relaxed) {
                match (reload.load)() {
                    Ok(permissions) => apply_permissions(&state, permissions),
                    Err(reason) => tracing::warn!(
                        %reason,
                        "permission reload refused; keeping the current allowlist and peers"
                    ),
                }
            }
        }
    }
    // Stop: close every connection (dropping the outboxes ends the writers, which close).
    {
        let mut s = state.borrow_mut();
        s.peers.clear();
        s.clients.clear();
    }
    // Connection tasks still hold the state (and with it the channels into consensus, exec and
    // store) until their sockets fail or the executor ends; the command loops are cancelled
    // here so nothing of the net shard waits on the other shards while they shut down.
    drop(state);
    for t in tasks {
        t.cancel().await;
    }
    Ok(())
}

/// A sync request frame (consensus's `RequestSync` on the wire).
pub fn sync_request_frame(from_height: u64) -> Vec<u8> {
    encode_frame(&SyncRequest { from_height })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The options the kernel needs to end a silent peer link are set on the socket (what the
    /// kernel then does with them is its own behaviour: a dead path would need packets dropped
    /// below TCP, which this test machine cannot do; see RELIABILITY.md).
    #[test]
    fn a_peer_link_gets_keepalive_probes_and_a_user_timeout() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let stream =
            std::net::TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
        let socket = socket2::SockRef::from(&stream);
        assert!(!socket.keepalive().expect("keepalive"), "off by default");
        assert_eq!(socket.tcp_user_timeout().expect("user timeout"), None);
        set_peer_liveness(socket2::SockRef::from(&stream)).expect("options set");
        assert!(socket.keepalive().expect("keepalive"));
        assert_eq!(
            socket.tcp_keepalive_time().expect("idle"),
            PEER_KEEPALIVE_IDLE
        );
        assert_eq!(
            socket.tcp_keepalive_interval().expect("interval"),
            PEER_KEEPALIVE_INTERVAL
        );
        assert_eq!(
            socket.tcp_keepalive_retries().expect("probes"),
            PEER_KEEPALIVE_PROBES
        );
        assert_eq!(
            socket.tcp_user_timeout().expect("user timeout"),
            Some(PEER_USER_TIMEOUT)
        );
    }

    /// The PN's relay deduplicates on transaction hashes: the same transactions under another
    /// batch id (another payload) are not relayed again, and a batch mixing old and new ones
    /// goes on with the new ones only.
    #[test]
    fn a_pn_relays_each_transaction_once_whatever_batch_carries_it() {
        let tx = |b: u8| crate::types::chain::SignedTransaction {
            bytes: vec![0x02, b, b, b],
        };
        let relay = |relayed: &mut RecentSet, id: u64, txs: Vec<_>| {
            let frame = crate::exec::batch_frame(id, txs);
            let mut input = frame.as_slice();
            let frame = FrameDecoder::new()
                .decode(&mut input)
                .expect("valid")
                .expect("whole");
            let Ok(Message::TxBatch(batch)) = frame.message() else {
                panic!("a batch frame");
            };
            relay_fresh_transactions(relayed, batch)
        };
        let mut relayed = RecentSet::default();
        assert_eq!(
            relay(&mut relayed, 1, vec![tx(1), tx(2)]),
            BatchRelay::AsReceived
        );
        assert_eq!(
            relay(&mut relayed, 2, vec![tx(2), tx(1)]),
            BatchRelay::Duplicate,
            "same transactions, other id and order"
        );
        let BatchRelay::Reencoded(bytes) = relay(&mut relayed, 3, vec![tx(1), tx(3)]) else {
            panic!("a mixed batch is re-encoded");
        };
        assert_eq!(bytes, crate::exec::batch_frame(3, vec![tx(3)]));
    }
}
