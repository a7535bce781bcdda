//! Bootnodes: admit only permitted nodes, register them, and tell them whom to connect to.
//!
//! A bootnode serves one tier (`[bootnode] serves` in its config). What it does for each role
//! that asks ([`rule`]; any other role is refused):
//!
//! | serves | asker | admitted if                          | registered | is told             |
//! |--------|-------|--------------------------------------|------------|---------------------|
//! | `cn`   | CN    | on the allowlist **and** in the genesis council | yes | the other CNs  |
//! | `pn`   | PN    | on the allowlist                     | yes        | the other PNs, ENs  |
//! | `pn`   | EN    | on the allowlist                     | yes        | the PNs             |
//! | `en`   | EN    | on the allowlist                     | no         | the PNs             |
//! | `en`   | PN    | on the allowlist                     | yes        | the other PNs       |
//!
//! "Told" means: the registered nodes of those roles (freshest address) and the bootnode's own
//! static `[[network.peers]]` of those roles, never the asker itself, at most [`MAX_PEER_LIST`]
//! (when there are more, each answer starts one place further round the list, so askers are
//! spread over all of them). A CN bootnode is "not public": it admits no one outside the
//! council, whatever its allowlist says.
//!
//! # Protocol (one query per connection)
//!
//! 1. The authenticated handshake of [`super::handshake`]: the bootnode's hello carries role
//!    `bootnode`, the asker's its own role. The bootnode's `admit` is [`Registry::admit`], so
//!    an asker that is not admitted gets no `Auth` (the bootnode closes after its hello); the
//!    asker's `admit` checks that the bootnode's node id is the one its config names.
//! 2. The asker sends one [`PeerQuery`] frame (`FrameKind::PeerQuery`, at most
//!    `MAX_PEER_QUERY_PAYLOAD` bytes): its listen address, or port 0 = "do not register me".
//!    The unspecified address (`0.0.0.0`, `::`) means "the address you see me connect from";
//!    IPv4 travels mapped into IPv6 ([`crate::types::network::ip_to_wire`]).
//! 3. The bootnode checks admission again (the allowlist may have changed since the
//!    handshake), registers the asker if the table says so, and answers one [`PeerList`] frame
//!    (at most `MAX_PEER_LIST_PAYLOAD` bytes), then closes.
//!
//! Registrations expire [`REGISTRATION_TTL`] after the last query that registered them; a
//! node re-registers every [`REGISTRATION_REFRESH`]. At most [`MAX_REGISTRATIONS`] are held
//! (one per node id, so also at most one per allowlist entry).
//!
//! # Run-time allowlist changes
//!
//! [`serve`] re-reads the directory (allowlist and static peers) when its `reload` flag is set
//! (the bootnode process sets it on SIGHUP). A directory that fails to load is not applied: the
//! old one stays and the reason is logged. The change is logged (added and removed node ids);
//! registrations of nodes no longer admitted are dropped at once ([`Registry::set_directory`]).
//!
//! # Invariants
//!
//! - Fail closed: an empty allowlist admits no one; an unknown role is refused; a node is
//!   registered or told anything only after its handshake proved its key and role.
//! - Every session is bounded: at most [`MAX_BOOTNODE_SESSIONS`] at once and
//!   [`MAX_SESSIONS_PER_IP`] per remote address (the excess is closed at once), each finished
//!   within [`SESSION_TIMEOUT`] (a silent or slow connection is closed then), at most one frame
//!   read whose kind and size are checked before its payload is buffered.
//! - Refusals (not admitted, bad handshake, timeout before authentication) are logged with the
//!   reason and counted in `NetCounters::refused_handshakes`; protocol violations by an
//!   authenticated node in `NetCounters::violations`; `NetCounters::peers` is the number of
//!   registered nodes.
//! - The client ([`query_bootnode`]) accepts only an answer from the bootnode id it expects,
//!   within [`QUERY_TIMEOUT`], in which every record is well-formed ([`DiscoveredPeer`]).
//!
//! Known limit: a registered address is the one the node states (it is authenticated and
//! allowlisted, and whoever dials it checks its node id in the handshake); the connection's
//! source address is used only when the node states none.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;

use super::handshake::{
    Handshake, HandshakeError, KeyExchange, PeerIdentity, Session, Side, AUTH_LEN, HELLO_LEN,
};
use super::record::{Opener, Sealer};
use super::{accept_next, bind_exclusive, within, NetCounters, HANDSHAKE_TIMEOUT};
use crate::config::node::{PeerEntry, Role};
use crate::crypto::bls::BlsSecretKey;
use crate::runtime::ShardStats;
use crate::types::frame::{encode_frame, BootnodeMessage, Frame, FrameDecoder, FrameKind};
use crate::types::network::{
    ip_from_wire, ArchivedPeerRecord, PeerList, PeerQuery, PeerRecord, MAX_PEER_LIST,
};

/// A registration is forgotten this long after the last query that registered it.
pub const REGISTRATION_TTL: Duration = Duration::from_secs(120);
/// How often a node should query its bootnode again to stay registered (a third of the TTL,
/// so two lost refreshes do not drop it).
pub const REGISTRATION_REFRESH: Duration = Duration::from_secs(40);
/// The most nodes a bootnode keeps registered.
pub const MAX_REGISTRATIONS: usize = 4096;
/// The most sessions (connections) a bootnode serves at once.
pub const MAX_BOOTNODE_SESSIONS: usize = 256;
/// The most sessions from one remote IP address at once.
pub const MAX_SESSIONS_PER_IP: usize = 16;
/// A session (handshake, query, answer) must finish within this.
pub const SESSION_TIMEOUT: Duration = Duration::from_secs(5);
/// A client's whole query (connect, handshake, query, answer) must finish within this.
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(6);
/// How often the bootnode looks at its stop and reload flags and expires registrations.
pub const HOUSEKEEPING_INTERVAL: Duration = Duration::from_millis(50);

/// A node a bootnode told about: whom to dial, and the node id its handshake must prove.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DiscoveredPeer {
    /// Its role (CN, PN or EN).
    pub role: Role,
    /// Its node id.
    pub node_id: [u8; 20],
    /// Where it listens (a unicast address, port not 0).
    pub address: SocketAddr,
}

impl DiscoveredPeer {
    /// The peer as a config-style entry, named `<role>-<first 4 bytes of its id in hex>`.
    pub fn to_peer_entry(&self) -> PeerEntry {
        PeerEntry {
            name: format!("{}-{}", self.role.name(), hex::encode(&self.node_id[..4])),
            role: self.role,
            node_id: self.node_id,
            address: self.address,
        }
    }

    fn record(&self) -> PeerRecord {
        PeerRecord::new(self.role.to_byte(), self.node_id, self.address)
    }

    /// Checks a received record: a known node role, a unicast address, a port.
    fn from_record(record: &ArchivedPeerRecord) -> Result<DiscoveredPeer, String> {
        let role = match Role::from_byte(record.role) {
            Some(role @ (Role::Cn | Role::Pn | Role::En)) => role,
            Some(Role::Bootnode) => return Err("a bootnode is not handed out".into()),
            None => return Err(format!("unknown role byte {}", record.role)),
        };
        let address = record.address();
        check_listen_address(address)?;
        Ok(DiscoveredPeer {
            role,
            node_id: record.node_id,
            address,
        })
    }
}

/// Whether `address` can be dialed: a unicast IP (not unspecified, multicast or broadcast)
/// and a port other than 0.
pub fn check_listen_address(address: SocketAddr) -> Result<(), String> {
    let ip = address.ip();
    let broadcast = matches!(ip, IpAddr::V4(v4) if v4.is_broadcast());
    if ip.is_unspecified() || ip.is_multicast() || broadcast {
        return Err(format!("{address} is not a unicast address"));
    }
    if address.port() == 0 {
        return Err(format!("{address} has port 0"));
    }
    Ok(())
}

/// What a bootnode hands out and whom it admits, as loaded from its config (and reloaded).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Directory {
    /// Node ids admitted (empty: no one).
    pub allowlist: BTreeSet<[u8; 20]>,
    /// Nodes handed out whether or not they registered (`[[network.peers]]`).
    pub static_peers: Vec<DiscoveredPeer>,
}

/// Why a bootnode refused a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// This bootnode has nothing for that role.
    #[error("a {} bootnode does not serve a {}", .serves.name(), .role.name())]
    RoleNotServed {
        /// The role the node claimed.
        role: Role,
        /// The tier this bootnode serves.
        serves: Role,
    },
    /// The node id is not on the allowlist.
    #[error("not on the allowlist")]
    NotOnAllowlist,
    /// A CN bootnode admits council members only.
    #[error("not a member of the genesis council")]
    NotCouncilMember,
}

/// What a bootnode serving `serves` does for an asker of `role`: `None` = refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    /// Whether the asker's listen address is registered (so others are told about it).
    pub registers: bool,
    /// The roles of the nodes it is told about.
    pub told: &'static [Role],
}

/// The table in the module documentation.
pub fn rule(serves: Role, role: Role) -> Option<Rule> {
    let (registers, told): (bool, &'static [Role]) = match (serves, role) {
        (Role::Cn, Role::Cn) => (true, &[Role::Cn]),
        (Role::Pn, Role::Pn) => (true, &[Role::Pn, Role::En]),
        (Role::Pn, Role::En) => (true, &[Role::Pn]),
        (Role::En, Role::En) => (false, &[Role::Pn]),
        (Role::En, Role::Pn) => (true, &[Role::Pn]),
        _ => return None,
    };
    Some(Rule { registers, told })
}

/// What became of the registration a query asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegistrationOutcome {
    /// The query asked for none (port 0).
    NotAsked,
    /// The asker's role is not registered at this bootnode.
    NotTaken,
    /// Registered (or refreshed) until `now + REGISTRATION_TTL`.
    Registered,
    /// [`MAX_REGISTRATIONS`] other nodes are registered.
    Full,
}

/// A bootnode's answer to one admitted query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// Whom the asker should connect to (at most [`MAX_PEER_LIST`]).
    pub peers: Vec<DiscoveredPeer>,
    /// What became of its registration.
    pub registration: RegistrationOutcome,
}

/// How a directory reload changed the allowlist.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DirectoryChange {
    /// Node ids newly admitted.
    pub added: Vec<[u8; 20]>,
    /// Node ids no longer admitted.
    pub removed: Vec<[u8; 20]>,
    /// Registrations dropped because their node is no longer admitted.
    pub dropped_registrations: usize,
}

#[derive(Debug, Clone, Copy)]
struct Registration {
    role: Role,
    address: SocketAddr,
    expires: Instant,
}

/// The bootnode's decisions, sans-IO: who is admitted, who is registered, what each asker is
/// told. Time comes in as arguments.
#[derive(Debug, Clone)]
pub struct Registry {
    serves: Role,
    council: BTreeSet<[u8; 20]>,
    directory: Directory,
    registrations: BTreeMap<[u8; 20], Registration>,
}

impl Registry {
    /// A registry for a bootnode serving `serves`; `council` is the genesis council's node ids
    /// (consulted only when `serves` is CN).
    pub fn new(serves: Role, council: BTreeSet<[u8; 20]>, directory: Directory) -> Registry {
        Registry {
            serves,
            council,
            directory,
            registrations: BTreeMap::new(),
        }
    }

    /// The tier served.
    pub fn serves(&self) -> Role {
        self.serves
    }

    /// The current directory.
    pub fn directory(&self) -> &Directory {
        &self.directory
    }

    /// Nodes registered now (including any expired but not yet swept by [`Registry::expire`]).
    pub fn registered(&self) -> usize {
        self.registrations.len()
    }

    /// Whether a node of `role` with `node_id` is admitted (the handshake's `admit`).
    pub fn admit(&self, role: Role, node_id: &[u8; 20]) -> Result<Rule, Refusal> {
        let rule = rule(self.serves, role).ok_or(Refusal::RoleNotServed {
            role,
            serves: self.serves,
        })?;
        if !self.directory.allowlist.contains(node_id) {
            return Err(Refusal::NotOnAllowlist);
        }
        if self.serves == Role::Cn && !self.council.contains(node_id) {
            return Err(Refusal::NotCouncilMember);
        }
        Ok(rule)
    }

    /// Forgets registrations expired at `now`; returns how many.
    pub fn expire(&mut self, now: Instant) -> usize {
        let before = self.registrations.len();
        self.registrations.retain(|_, r| r.expires > now);
        before - self.registrations.len()
    }

    /// Answers an authenticated node's query: checks admission again, registers `register`
    /// (already checked to be a unicast address) if the node's role registers here, and lists
    /// whom it should connect to. `rotation` picks where a list longer than
    /// [`MAX_PEER_LIST`] starts (the caller counts its answers).
    pub fn query(
        &mut self,
        now: Instant,
        role: Role,
        node_id: [u8; 20],
        register: Option<SocketAddr>,
        rotation: u64,
    ) -> Result<Answer, Refusal> {
        let rule = self.admit(role, &node_id)?;
        self.expire(now);
        let registration = match register {
            None => RegistrationOutcome::NotAsked,
            Some(_) if !rule.registers => RegistrationOutcome::NotTaken,
            Some(address) => {
                if self.registrations.len() >= MAX_REGISTRATIONS
                    && !self.registrations.contains_key(&node_id)
                {
                    RegistrationOutcome::Full
                } else {
                    self.registrations.insert(
                        node_id,
                        Registration {
                            role,
                            address,
                            expires: now + REGISTRATION_TTL,
                        },
                    );
                    RegistrationOutcome::Registered
                }
            }
        };
        // Registered nodes first (their own, fresh address), then static entries not already
        // listed.
        let mut peers: Vec<DiscoveredPeer> = self
            .registrations
            .iter()
            .filter(|(id, r)| **id != node_id && rule.told.contains(&r.role))
            .map(|(id, r)| DiscoveredPeer {
                role: r.role,
                node_id: *id,
                address: r.address,
            })
            .collect();
        for p in &self.directory.static_peers {
            if p.node_id != node_id
                && rule.told.contains(&p.role)
                && !self.registrations.contains_key(&p.node_id)
            {
                peers.push(*p);
            }
        }
        if peers.len() > MAX_PEER_LIST {
            let start = (rotation % peers.len() as u64) as usize;
            peers.rotate_left(start);
            peers.truncate(MAX_PEER_LIST);
        }
        Ok(Answer {
            peers,
            registration,
        })
    }

    /// Replaces the directory (a reload); drops the registrations of nodes no longer
    /// admitted.
    pub fn set_directory(&mut self, directory: Directory) -> DirectoryChange {
        let added = directory
            .allowlist
            .difference(&self.directory.allowlist)
            .copied()
            .collect();
        let removed = self
            .directory
            .allowlist
            .difference(&directory.allowlist)
            .copied()
            .collect();
        self.directory = directory;
        let before = self.registrations.len();
        let allowlist = &self.directory.allowlist;
        self.registrations.retain(|id, _| allowlist.contains(id));
        DirectoryChange {
            added,
            removed,
            dropped_registrations: before - self.registrations.len(),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The handshake over a glommio stream (both ends)
// ---------------------------------------------------------------------------------------------

/// How a handshake over a stream failed.
#[derive(Debug)]
enum HandshakeFailure {
    /// The connection failed before the peer's hello arrived.
    BeforeHello(std::io::Error),
    /// The handshake refused the peer (or the peer's bytes).
    Refused(HandshakeError),
    /// The peer's hello arrived, then the connection ended before its `Auth`: it refused us.
    ClosedBeforeAuth(std::io::Error),
}

impl std::fmt::Display for HandshakeFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HandshakeFailure::BeforeHello(e) => {
                write!(f, "connection failed before the hello: {e}")
            }
            HandshakeFailure::Refused(e) => write!(f, "{e}"),
            HandshakeFailure::ClosedBeforeAuth(e) => {
                write!(f, "closed after the hello, before authenticating: {e}")
            }
        }
    }
}

/// Runs the handshake of [`super::handshake`] on `stream`. Bootnode sessions are always
/// encrypted (this side asks; a session is a few hundred bytes, so it costs nothing).
async fn authenticate(
    stream: &mut TcpStream,
    side: Side,
    secret: &BlsSecretKey,
    chain_id: u64,
    role: Role,
    admit: impl FnOnce(Role, [u8; 20]) -> Result<(), String>,
) -> Result<Session, HandshakeFailure> {
    let mut nonce = [0u8; 32];
    let mut ephemeral = [0u8; 32];
    getrandom::fill(&mut nonce)
        .and_then(|()| getrandom::fill(&mut ephemeral))
        .map_err(|e| {
            HandshakeFailure::BeforeHello(std::io::Error::other(format!(
                "no randomness for the handshake: {e}"
            )))
        })?;
    let exchange = KeyExchange {
        secret: ephemeral,
        encrypt: true,
    };
    let mut handshake = Handshake::new(side, secret, chain_id, role, nonce, exchange);
    stream
        .write_all(&handshake.hello())
        .await
        .map_err(HandshakeFailure::BeforeHello)?;
    let mut hello = [0u8; HELLO_LEN];
    stream
        .read_exact(&mut hello)
        .await
        .map_err(HandshakeFailure::BeforeHello)?;
    let auth = handshake
        .on_peer_hello(&hello, admit)
        .map_err(HandshakeFailure::Refused)?;
    stream
        .write_all(&auth)
        .await
        .map_err(HandshakeFailure::ClosedBeforeAuth)?;
    let mut peer_auth = [0u8; AUTH_LEN];
    stream
        .read_exact(&mut peer_auth)
        .await
        .map_err(HandshakeFailure::ClosedBeforeAuth)?;
    handshake
        .on_peer_auth(&peer_auth)
        .map_err(HandshakeFailure::Refused)
}

/// A bootnode session's stream after the handshake: frames travel in sealed records
/// ([`super::record`]).
struct SealedStream<'a> {
    stream: &'a mut TcpStream,
    sealer: Sealer,
    opener: Opener,
}

impl<'a> SealedStream<'a> {
    fn new(stream: &'a mut TcpStream, session: &Session) -> SealedStream<'a> {
        SealedStream {
            stream,
            sealer: session.keys.sealer(),
            opener: session.keys.opener(),
        }
    }

    /// Seals and writes one frame.
    async fn write_frame(&mut self, frame: &[u8]) -> std::io::Result<()> {
        let mut out = Vec::with_capacity(frame.len() + 64);
        self.sealer
            .seal(frame, &mut out)
            .map_err(std::io::Error::other)?;
        self.stream.write_all(&out).await
    }

    /// Reads exactly one frame of `kind`: records are opened as they arrive, and the frame
    /// header is checked (kind, size) before its payload is buffered.
    async fn read_frame(&mut self, kind: FrameKind) -> Result<Frame, String> {
        let mut decoder = FrameDecoder::new();
        let mut buf = vec![0u8; 16 * 1024];
        let mut plain = Vec::new();
        loop {
            let n = self
                .stream
                .read(&mut buf)
                .await
                .map_err(|e| format!("reading a {} frame: {e}", kind.name()))?;
            if n == 0 {
                return Err(format!("closed before a whole {} frame", kind.name()));
            }
            plain.clear();
            self.opener
                .open(&buf[..n], &mut plain)
                .map_err(|e| e.to_string())?;
            let mut input = plain.as_slice();
            if let Some(frame) = decoder.decode(&mut input).map_err(|e| e.to_string())? {
                if frame.kind != kind {
                    return Err(format!(
                        "expected a {} frame, got {}",
                        kind.name(),
                        frame.kind.name()
                    ));
                }
                return Ok(frame);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Client
// ---------------------------------------------------------------------------------------------

/// Why a bootnode query failed.
#[derive(Debug, thiserror::Error)]
pub enum BootnodeError {
    /// The entry asked about is not a bootnode, or the registration address is unusable.
    #[error("bad query: {0}")]
    BadQuery(String),
    /// The TCP connection could not be made.
    #[error("cannot connect to bootnode {address}: {reason}")]
    Connect {
        /// The bootnode's address.
        address: SocketAddr,
        /// The error.
        reason: String,
    },
    /// The whole query took longer than [`QUERY_TIMEOUT`].
    #[error("bootnode query timed out after {:?}", QUERY_TIMEOUT)]
    Timeout,
    /// The handshake failed on our side (wrong chain, wrong bootnode id or role, bad
    /// signature, or bytes that are not a handshake).
    #[error("handshake with the bootnode failed: {0}")]
    Handshake(HandshakeError),
    /// The bootnode sent its hello and closed without authenticating: it does not admit us.
    #[error("the bootnode did not admit this node (it closed the connection after its hello)")]
    NotAdmitted,
    /// The connection failed after the handshake.
    #[error("bootnode connection failed: {0}")]
    Io(String),
    /// The bootnode's answer is not a valid peer list, or a record in it is unusable.
    #[error("bootnode answer refused: {0}")]
    BadAnswer(String),
}

/// Asks `bootnode` whom this node (key `secret`, role `my_role`, on `chain_id`) should
/// connect to, and registers it at `register` (its p2p listen address; an unspecified IP
/// means "the address the bootnode sees") unless that is `None`. Runs on a glommio executor;
/// finishes within [`QUERY_TIMEOUT`].
///
/// The answer is accepted only from the node id in `bootnode`, and only if every record is
/// well-formed: a CN, PN or EN role, a unicast address with a port, not this node, no node
/// id twice. Call again every [`REGISTRATION_REFRESH`] to stay registered.
pub async fn query_bootnode(
    bootnode: &PeerEntry,
    secret: &BlsSecretKey,
    chain_id: u64,
    my_role: Role,
    register: Option<SocketAddr>,
) -> Result<Vec<DiscoveredPeer>, BootnodeError> {
    if bootnode.role != Role::Bootnode {
        return Err(BootnodeError::BadQuery(format!(
            "{} is a {}, not a bootnode",
            bootnode.name,
            bootnode.role.name()
        )));
    }
    if let Some(addr) = register {
        if addr.port() == 0 || addr.ip().is_multicast() {
            return Err(BootnodeError::BadQuery(format!(
                "cannot register {addr}: not a listen address"
            )));
        }
    }
    within(
        QUERY_TIMEOUT,
        query_bootnode_unbounded(bootnode, secret, chain_id, my_role, register),
    )
    .await
    .unwrap_or(Err(BootnodeError::Timeout))
}

async fn query_bootnode_unbounded(
    bootnode: &PeerEntry,
    secret: &BlsSecretKey,
    chain_id: u64,
    my_role: Role,
    register: Option<SocketAddr>,
) -> Result<Vec<DiscoveredPeer>, BootnodeError> {
    let mut stream =
        TcpStream::connect(bootnode.address)
            .await
            .map_err(|e| BootnodeError::Connect {
                address: bootnode.address,
                reason: e.to_string(),
            })?;
    let _ = stream.set_nodelay(true);
    let expected = bootnode.node_id;
    let session = authenticate(
        &mut stream,
        Side::Dialer,
        secret,
        chain_id,
        my_role,
        |role, node_id| {
            if role != Role::Bootnode {
                return Err(format!(
                    "expected a bootnode, it says it is a {}",
                    role.name()
                ));
            }
            if node_id != expected {
                return Err(format!(
                    "expected bootnode {}",
                    crate::config::to_hex(&expected)
                ));
            }
            Ok(())
        },
    )
    .await
    .map_err(|failure| match failure {
        HandshakeFailure::BeforeHello(e) => BootnodeError::Io(e.to_string()),
        HandshakeFailure::Refused(e) => BootnodeError::Handshake(e),
        HandshakeFailure::ClosedBeforeAuth(_) => BootnodeError::NotAdmitted,
    })?;
    let my_id = secret.public_key().node_id();
    let mut sealed = SealedStream::new(&mut stream, &session);
    sealed
        .write_frame(&encode_frame(&PeerQuery::new(register)))
        .await
        .map_err(|e| BootnodeError::Io(e.to_string()))?;
    let frame = sealed
        .read_frame(FrameKind::PeerList)
        .await
        .map_err(BootnodeError::BadAnswer)?;
    let list = match frame.bootnode_message() {
        Ok(BootnodeMessage::PeerList(list)) => list,
        Ok(BootnodeMessage::PeerQuery(_)) => {
            return Err(BootnodeError::BadAnswer("a query instead of a list".into()))
        }
        Err(e) => return Err(BootnodeError::BadAnswer(e.to_string())),
    };
    let mut seen = BTreeSet::new();
    let mut peers = Vec::with_capacity(list.peers.len());
    for (i, record) in list.peers.iter().enumerate() {
        let peer = DiscoveredPeer::from_record(record)
            .map_err(|reason| BootnodeError::BadAnswer(format!("record {i}: {reason}")))?;
        if peer.node_id == my_id {
            return Err(BootnodeError::BadAnswer(format!(
                "record {i} is this node itself"
            )));
        }
        if !seen.insert(peer.node_id) {
            return Err(BootnodeError::BadAnswer(format!(
                "record {i}: node id {} listed twice",
                crate::config::to_hex(&peer.node_id)
            )));
        }
        peers.push(peer);
    }
    tracing::debug!(
        bootnode = %bootnode.name,
        bootnode_role = session.peer.role.name(),
        peers = peers.len(),
        "bootnode answered"
    );
    Ok(peers)
}

// ---------------------------------------------------------------------------------------------
// Server
// ---------------------------------------------------------------------------------------------

/// Static facts a bootnode needs.
#[derive(Clone)]
pub struct BootnodeConfig {
    /// Chain id (bound into the handshake).
    pub chain_id: u64,
    /// The bootnode's key.
    pub secret: BlsSecretKey,
    /// Where it listens.
    pub listen: SocketAddr,
    /// The tier it serves.
    pub serves: Role,
    /// The genesis council's node ids.
    pub council: BTreeSet<[u8; 20]>,
    /// The directory at start.
    pub directory: Directory,
}

/// Loads the directory again (on reload); `Err` keeps the current one.
pub type DirectoryLoader = Box<dyn Fn() -> Result<Directory, String>>;

struct Server {
    chain_id: u64,
    secret: BlsSecretKey,
    registry: Registry,
    sessions: usize,
    sessions_per_ip: HashMap<IpAddr, usize>,
    answers: u64,
    counters: Arc<NetCounters>,
    stats: Arc<ShardStats>,
}

type SharedServer = Rc<RefCell<Server>>;

/// How a session ended badly.
enum SessionEnd {
    /// Refused before or during the handshake (not admitted, not a handshake, timeout).
    Refused(String),
    /// An authenticated node broke the protocol.
    Violation(String),
    /// The node went away before the answer was written.
    Closed(String),
}

/// Runs a bootnode until `stop` is set: accepts sessions on `config.listen`, and reloads the
/// directory with `load_directory` whenever `reload` is set.
pub async fn serve(
    config: BootnodeConfig,
    load_directory: DirectoryLoader,
    reload: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    stats: Arc<ShardStats>,
    counters: Arc<NetCounters>,
) -> Result<(), String> {
    let listener = bind_exclusive(config.listen, "bootnode")?;
    let serves = config.serves;
    let server: SharedServer = Rc::new(RefCell::new(Server {
        chain_id: config.chain_id,
        secret: config.secret,
        registry: Registry::new(config.serves, config.council, config.directory),
        sessions: 0,
        sessions_per_ip: HashMap::new(),
        answers: 0,
        counters,
        stats,
    }));
    tracing::info!(
        serves = serves.name(),
        listen = %config.listen,
        admitted = server.borrow().registry.directory().allowlist.len(),
        static_peers = server.borrow().registry.directory().static_peers.len(),
        "bootnode listening"
    );
    let accept = {
        let server = server.clone();
        glommio::spawn_local(async move {
            loop {
                let stream = accept_next(&listener).await;
                let Ok(remote) = stream.peer_addr() else {
                    continue;
                };
                {
                    let mut s = server.borrow_mut();
                    let from_ip = s.sessions_per_ip.get(&remote.ip()).copied().unwrap_or(0);
                    if s.sessions >= MAX_BOOTNODE_SESSIONS || from_ip >= MAX_SESSIONS_PER_IP {
                        s.counters.refused_handshakes.fetch_add(1, Relaxed);
                        tracing::info!(%remote, "bootnode busy; connection closed");
                        continue;
                    }
                    s.sessions += 1;
                    *s.sessions_per_ip.entry(remote.ip()).or_insert(0) += 1;
                }
                let server = server.clone();
                glommio::spawn_local(async move {
                    run_session(&server, stream, remote).await;
                    let mut s = server.borrow_mut();
                    s.sessions -= 1;
                    if let Some(n) = s.sessions_per_ip.get_mut(&remote.ip()) {
                        *n -= 1;
                        if *n == 0 {
                            s.sessions_per_ip.remove(&remote.ip());
                        }
                    }
                })
                .detach();
            }
        })
    };
    while !stop.load(Relaxed) {
        glommio::timer::sleep(HOUSEKEEPING_INTERVAL).await;
        if reload.swap(false, Relaxed) {
            apply_reload(&server, &load_directory);
        }
        let mut s = server.borrow_mut();
        let expired = s.registry.expire(Instant::now());
        if expired > 0 {
            tracing::info!(expired, "registrations expired");
        }
        s.counters
            .peers
            .store(s.registry.registered() as u64, Relaxed);
    }
    accept.cancel().await;
    tracing::info!("bootnode stopped");
    Ok(())
}

fn apply_reload(server: &SharedServer, load_directory: &DirectoryLoader) {
    let directory = match load_directory() {
        Ok(d) => d,
        Err(reason) => {
            tracing::warn!(%reason, "directory reload refused; keeping the current allowlist");
            return;
        }
    };
    let mut s = server.borrow_mut();
    let static_peers = directory.static_peers.len();
    let change = s.registry.set_directory(directory);
    let hex = |ids: &[[u8; 20]]| -> Vec<String> {
        ids.iter().map(|id| crate::config::to_hex(id)).collect()
    };
    tracing::info!(
        added = ?hex(&change.added),
        removed = ?hex(&change.removed),
        dropped_registrations = change.dropped_registrations,
        admitted = s.registry.directory().allowlist.len(),
        static_peers,
        "directory reloaded"
    );
    s.counters
        .peers
        .store(s.registry.registered() as u64, Relaxed);
}

/// Serves one connection: handshake, one query, one answer; logs and counts a bad end.
async fn run_session(server: &SharedServer, mut stream: TcpStream, remote: SocketAddr) {
    let _ = stream.set_nodelay(true);
    let authenticated: std::cell::Cell<Option<PeerIdentity>> = std::cell::Cell::new(None);
    let outcome = within(
        SESSION_TIMEOUT,
        session(server, &mut stream, remote, &authenticated),
    )
    .await
    .unwrap_or_else(|| {
        let reason = format!("session not finished within {SESSION_TIMEOUT:?}");
        Err(match authenticated.get() {
            None => SessionEnd::Refused(reason),
            Some(_) => SessionEnd::Violation(reason),
        })
    });
    {
        let s = server.borrow();
        let who = authenticated
            .get()
            .map(|p| format!("{} {}", p.role.name(), crate::config::to_hex(&p.node_id)));
        match outcome {
            Ok(()) => {}
            Err(SessionEnd::Refused(reason)) => {
                s.counters.refused_handshakes.fetch_add(1, Relaxed);
                tracing::info!(%remote, %reason, "bootnode refused a connection");
            }
            Err(SessionEnd::Violation(reason)) => {
                s.counters.violations.fetch_add(1, Relaxed);
                tracing::warn!(%remote, node = ?who, %reason, "bootnode dropped a node for a protocol violation");
            }
            Err(SessionEnd::Closed(reason)) => {
                tracing::debug!(%remote, node = ?who, %reason, "node left before the answer");
            }
        }
    }
    let _ = stream.close().await;
}

async fn session(
    server: &SharedServer,
    stream: &mut TcpStream,
    remote: SocketAddr,
    authenticated: &std::cell::Cell<Option<PeerIdentity>>,
) -> Result<(), SessionEnd> {
    let (secret, chain_id) = {
        let s = server.borrow();
        (s.secret.clone(), s.chain_id)
    };
    let admit = |role: Role, node_id: [u8; 20]| {
        server
            .borrow()
            .registry
            .admit(role, &node_id)
            .map(|_| ())
            .map_err(|r| r.to_string())
    };
    let session = within(
        HANDSHAKE_TIMEOUT,
        authenticate(
            stream,
            Side::Listener,
            &secret,
            chain_id,
            Role::Bootnode,
            admit,
        ),
    )
    .await
    .ok_or_else(|| SessionEnd::Refused("handshake timed out".into()))?
    .map_err(|e| SessionEnd::Refused(e.to_string()))?;
    let identity = session.peer;
    authenticated.set(Some(identity));
    let mut sealed = SealedStream::new(stream, &session);
    let frame = sealed
        .read_frame(FrameKind::PeerQuery)
        .await
        .map_err(SessionEnd::Violation)?;
    let query = match frame.bootnode_message() {
        Ok(BootnodeMessage::PeerQuery(q)) => q,
        Ok(BootnodeMessage::PeerList(_)) => {
            return Err(SessionEnd::Violation("a list instead of a query".into()))
        }
        Err(e) => return Err(SessionEnd::Violation(e.to_string())),
    };
    let register = match query.listen_port.to_native() {
        0 => None,
        port => {
            let stated = ip_from_wire(query.listen_ip);
            let ip = if stated.is_unspecified() {
                remote.ip()
            } else {
                stated
            };
            let address = SocketAddr::new(ip, port);
            check_listen_address(address)
                .map_err(|e| SessionEnd::Violation(format!("registration refused: {e}")))?;
            Some(address)
        }
    };
    let answer = {
        let mut s = server.borrow_mut();
        let handling = Instant::now();
        s.answers += 1;
        let rotation = s.answers;
        let answer = s.registry.query(
            Instant::now(),
            identity.role,
            identity.node_id,
            register,
            rotation,
        );
        s.counters
            .peers
            .store(s.registry.registered() as u64, Relaxed);
        s.stats.count_in();
        s.stats.add_busy(handling);
        answer
    };
    // Refused here only if the allowlist changed since the handshake.
    let answer = answer.map_err(|r| SessionEnd::Refused(r.to_string()))?;
    if answer.registration == RegistrationOutcome::Full {
        tracing::warn!(
            node = %crate::config::to_hex(&identity.node_id),
            max = MAX_REGISTRATIONS,
            "registrations full; node not registered"
        );
    }
    tracing::info!(
        %remote,
        role = identity.role.name(),
        node = %crate::config::to_hex(&identity.node_id),
        registration = ?answer.registration,
        registered_at = ?register,
        told = answer.peers.len(),
        "bootnode answered"
    );
    let list = PeerList {
        peers: answer.peers.iter().map(DiscoveredPeer::record).collect(),
    };
    let bytes = encode_frame(&list);
    sealed
        .write_frame(&bytes)
        .await
        .map_err(|e| SessionEnd::Closed(format!("writing the answer: {e}")))?;
    server
        .borrow()
        .counters
        .bytes_out
        .fetch_add(bytes.len() as u64, Relaxed);
    Ok(())
}

#[cfg(test)]
mod tests;
