//! The net shard: the CN mesh and the client ingress port.
//!
//! **Mesh.** Every connection starts with the authenticated handshake of [`handshake`]; the
//! listener admits only council members other than itself (the allowlist is the genesis
//! council: an empty council admits no one). Between two CNs the one with the lower council
//! index dials, so each pair holds one connection; a newer connection from the same peer
//! replaces the older. Dialing retries with backoff from [`DIAL_BACKOFF_MIN`] doubling to
//! [`DIAL_BACKOFF_MAX`].
//!
//! **Frames from a peer** are checked in this order: the decoder's header gate (kind, per-kind
//! size), the per-peer message rates ([`PeerLimits::messages_per_second`] for all frames and
//! the much lower [`PeerLimits::consensus_messages_per_second`] for the frames that cost the
//! consensus shard signature checks), `rkyv` validation
//! and named limits (`Frame::message`), and that consensus messages are signed by the peer
//! itself (no relaying in the mesh: a vote whose signer is not the connection's peer is a
//! violation). Any violation closes the connection and bans the peer's node id for
//! [`PeerLimits::ban`], with the reason logged. Signatures are checked by the consensus shard.
//!
//! **Back-pressure.** Each connection has a bounded queue of outgoing frames
//! ([`PeerLimits::queue_frames`] frames, [`PeerLimits::queue_bytes`] bytes); what does not
//! fit is dropped and counted (consensus tolerates loss, and a slow peer never stalls the
//! node). Messages to the consensus shard use `try_send`: a flood from a peer fills the
//! channel and is dropped rather than blocking the reader of every other peer.
//!
//! **Ingress** (clients, not authenticated): only `TxBatch` frames, at most
//! [`MAX_INGRESS_CONNECTIONS`] connections; batches go to the exec shard (with TCP
//! back-pressure to the client), answers (`IngressAck`) come back from exec.

pub mod bootnode;
pub mod handshake;

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::channels::local_channel;
use glommio::net::{TcpListener, TcpStream};

use crate::consensus::Message as ConsensusMessage;
use crate::crypto::bls::BlsSecretKey;
use crate::exec::{BatchIn, BatchOrigin, ExecToNet};
use crate::node::config::Role;
use crate::runtime::{Rx, ShardStats, Tx};
use crate::store::{PeerFrame, SyncServe};
use crate::types::frame::{encode_frame, Frame, FrameDecoder, FrameKind, Message};
use crate::types::network::SyncRequest;
use crate::types::CouncilIndex;
use handshake::{Handshake, PeerIdentity, Side, AUTH_LEN, HELLO_LEN};

/// First wait before redialing a peer.
pub const DIAL_BACKOFF_MIN: Duration = Duration::from_millis(50);
/// Longest wait before redialing a peer.
pub const DIAL_BACKOFF_MAX: Duration = Duration::from_secs(2);
/// A handshake must finish within this.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(3);
/// Most handshakes in progress at once (slow or silent connections beyond are closed).
pub const MAX_PENDING_HANDSHAKES: usize = 64;
/// Most client connections on the ingress port.
pub const MAX_INGRESS_CONNECTIONS: usize = 256;
/// An ingress connection that sends nothing for this long is closed (idle connections
/// would otherwise hold the [`MAX_INGRESS_CONNECTIONS`] slots).
pub const INGRESS_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Wait after a failed accept (e.g. out of file descriptors) before the next one.
pub const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(50);
/// Socket read size.
pub const READ_CHUNK: usize = 256 * 1024;
/// A peer's sync requests are served at most this often (each may cost
/// `MAX_SYNC_BLOCKS` block reads: without a bound a peer could amplify one small frame into
/// megabytes of disk reads and sends). Requests inside the interval are dropped, not
/// punished: a node that is behind asks again on its next round timeout.
pub const SYNC_REQUEST_INTERVAL: Duration = Duration::from_millis(200);

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

/// A council member this node connects to.
#[derive(Debug, Clone)]
pub struct MeshPeer {
    /// Council index.
    pub index: CouncilIndex,
    /// Node id (keccak of its BLS key, first 20 bytes).
    pub node_id: [u8; 20],
    /// Where it listens.
    pub address: SocketAddr,
}

/// Static facts the net shard needs.
#[derive(Clone)]
pub struct NetConfig {
    /// Chain id (bound into the handshake).
    pub chain_id: u64,
    /// This node's council index.
    pub me: CouncilIndex,
    /// This node's key.
    pub secret: BlsSecretKey,
    /// p2p listen address.
    pub listen: SocketAddr,
    /// Client ingress listen address.
    pub ingress: Option<SocketAddr>,
    /// The other council members.
    pub peers: Vec<MeshPeer>,
    /// Limits.
    pub limits: PeerLimits,
}

/// What consensus asks of the net shard.
#[derive(Debug)]
pub enum NetCommand {
    /// Send a frame to every connected council member.
    Broadcast(Arc<Vec<u8>>),
    /// Send a frame to one council member.
    SendTo(CouncilIndex, Arc<Vec<u8>>),
}

/// What the net shard hands the consensus shard.
#[derive(Debug)]
pub struct Inbound {
    /// The authenticated peer it came from.
    pub from: CouncilIndex,
    /// The message (its signatures not yet checked).
    pub message: ConsensusMessage,
}

/// Counters the net shard exposes.
#[derive(Debug, Default)]
pub struct NetCounters {
    /// Peers connected now.
    pub peers: AtomicU64,
    /// Bytes received from peers and clients.
    pub bytes_in: AtomicU64,
    /// Bytes sent.
    pub bytes_out: AtomicU64,
    /// Frames dropped because a queue was full.
    pub dropped: AtomicU64,
    /// Connections closed for a violation.
    pub violations: AtomicU64,
    /// Handshakes refused.
    pub refused_handshakes: AtomicU64,
}

/// The channels of the net shard.
pub struct NetChannels {
    /// From consensus.
    pub from_consensus: Rx<NetCommand>,
    /// To consensus.
    pub to_consensus: Tx<Inbound>,
    /// To exec (batches).
    pub to_exec: Tx<BatchIn>,
    /// From exec (gossip, acks).
    pub from_exec: Rx<ExecToNet>,
    /// To store (sync requests to serve).
    pub to_store: Tx<SyncServe>,
    /// From store (sync answers).
    pub from_store: Rx<PeerFrame>,
}

/// An outgoing queue of one connection: frames waiting for its writer task, bounded in count
/// and bytes, and a doorbell that wakes the writer (dropping the outbox ends the writer).
struct Outbox {
    connection: u64,
    queue: Rc<RefCell<OutQueue>>,
    doorbell: local_channel::LocalSender<()>,
}

/// Frames waiting to be written, and their total size.
#[derive(Default)]
struct OutQueue {
    frames: std::collections::VecDeque<Arc<Vec<u8>>>,
    bytes: usize,
}

struct State {
    config: NetConfig,
    peers: HashMap<CouncilIndex, Outbox>,
    clients: HashMap<u64, Outbox>,
    /// Ingress connections open (accepted and not yet closed).
    client_connections: usize,
    banned: HashMap<[u8; 20], Instant>,
    pending_handshakes: usize,
    next_connection: u64,
    stop: Arc<AtomicBool>,
    counters: Arc<NetCounters>,
    stats: Arc<ShardStats>,
    to_consensus: Tx<Inbound>,
    to_exec: Rc<Tx<BatchIn>>,
    to_store: Tx<SyncServe>,
}

type Shared = Rc<RefCell<State>>;

impl State {
    fn council_index(&self, node_id: &[u8; 20]) -> Option<CouncilIndex> {
        self.config
            .peers
            .iter()
            .find(|p| &p.node_id == node_id)
            .map(|p| p.index)
    }

    fn is_banned(&mut self, node_id: &[u8; 20]) -> bool {
        match self.banned.get(node_id) {
            Some(until) if *until > Instant::now() => true,
            Some(_) => {
                self.banned.remove(node_id);
                false
            }
            None => false,
        }
    }

    fn enqueue(&self, outbox: &Outbox, frame: Arc<Vec<u8>>) {
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
    stats: Arc<ShardStats>,
    counters: Arc<NetCounters>,
) -> Result<(), String> {
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
    let state: Shared = Rc::new(RefCell::new(State {
        config: config.clone(),
        peers: HashMap::new(),
        clients: HashMap::new(),
        client_connections: 0,
        banned: HashMap::new(),
        pending_handshakes: 0,
        next_connection: 0,
        stop: stop.clone(),
        counters,
        stats,
        to_consensus,
        to_exec: Rc::new(to_exec),
        to_store,
    }));
    let mut tasks = Vec::new();
    // Commands from consensus.
    {
        let state = state.clone();
        tasks.push(glommio::spawn_local(async move {
            while let Some(cmd) = from_consensus.recv().await {
                let s = state.borrow();
                s.stats.count_in();
                match cmd {
                    NetCommand::Broadcast(frame) => {
                        for outbox in s.peers.values() {
                            s.enqueue(outbox, frame.clone());
                        }
                    }
                    NetCommand::SendTo(peer, frame) => {
                        if let Some(outbox) = s.peers.get(&peer) {
                            s.enqueue(outbox, frame);
                        }
                    }
                }
            }
        }));
    }
    // Gossip and acks from exec.
    {
        let state = state.clone();
        tasks.push(glommio::spawn_local(async move {
            while let Some(cmd) = from_exec.recv().await {
                let s = state.borrow();
                s.stats.count_in();
                match cmd {
                    ExecToNet::Gossip(frame) => {
                        for outbox in s.peers.values() {
                            s.enqueue(outbox, frame.clone());
                        }
                    }
                    ExecToNet::Ack { connection, ack } => {
                        if let Some(outbox) = s.clients.get(&connection) {
                            s.enqueue(outbox, Arc::new(encode_frame(&ack)));
                        }
                    }
                }
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
                if let Some(outbox) = s.peers.get(&peer) {
                    s.enqueue(outbox, frame);
                }
            }
        }));
    }
    // Dialers: the lower index dials.
    for peer in config.peers.iter().filter(|p| p.index > config.me).cloned() {
        let state = state.clone();
        glommio::spawn_local(dial_loop(state, peer)).detach();
    }
    // The accept loops run as tasks until stop, when they are cancelled (one accept each is
    // in flight at any time; no polling timeouts that would resubmit it).
    if let Some(ingress) = ingress {
        let state = state.clone();
        tasks.push(glommio::spawn_local(async move {
            loop {
                let stream = accept_next(&ingress).await;
                let connection = {
                    let mut s = state.borrow_mut();
                    if s.client_connections >= MAX_INGRESS_CONNECTIONS || s.stop.load(Relaxed) {
                        continue;
                    }
                    // Counted here, not when run_client registers it, so a burst of accepts
                    // cannot overshoot the limit.
                    s.client_connections += 1;
                    s.next_connection += 1;
                    s.next_connection
                };
                glommio::spawn_local(run_client(state.clone(), stream, connection)).detach();
            }
        }));
    }
    {
        let state = state.clone();
        tasks.push(glommio::spawn_local(async move {
            loop {
                let stream = accept_next(&listener).await;
                {
                    let mut s = state.borrow_mut();
                    if s.pending_handshakes >= MAX_PENDING_HANDSHAKES || s.stop.load(Relaxed) {
                        s.counters.refused_handshakes.fetch_add(1, Relaxed);
                        continue;
                    }
                    s.pending_handshakes += 1;
                }
                let state = state.clone();
                glommio::spawn_local(async move {
                    let mut stream = stream;
                    let identity =
                        run_handshake(&state, &mut stream, Side::Listener, None).await;
                    state.borrow_mut().pending_handshakes -= 1;
                    match identity {
                        Ok((index, identity)) => run_peer(state, stream, index, identity).await,
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

async fn dial_loop(state: Shared, peer: MeshPeer) {
    let mut backoff = DIAL_BACKOFF_MIN;
    loop {
        if state.borrow().stop.load(Relaxed) {
            return;
        }
        let connected = state.borrow().peers.contains_key(&peer.index);
        if !connected {
            let attempt = within(HANDSHAKE_TIMEOUT, TcpStream::connect(peer.address)).await;
            if let Some(Ok(mut stream)) = attempt {
                match run_handshake(&state, &mut stream, Side::Dialer, Some(&peer)).await {
                    Ok((index, identity)) => {
                        backoff = DIAL_BACKOFF_MIN;
                        run_peer(state.clone(), stream, index, identity).await;
                        continue;
                    }
                    Err(reason) => {
                        tracing::info!(peer = peer.index, %reason, "outbound handshake failed");
                    }
                }
            }
            glommio::timer::sleep(backoff).await;
            backoff = (backoff * 2).min(DIAL_BACKOFF_MAX);
        } else {
            glommio::timer::sleep(DIAL_BACKOFF_MAX).await;
        }
    }
}

/// Runs the handshake on a fresh stream; returns the peer's council index and identity.
async fn run_handshake(
    state: &Shared,
    stream: &mut TcpStream,
    side: Side,
    expect: Option<&MeshPeer>,
) -> Result<(CouncilIndex, PeerIdentity), String> {
    let (secret, chain_id) = {
        let s = state.borrow();
        (s.config.secret.clone(), s.config.chain_id)
    };
    let mut nonce = [0u8; 32];
    getrandom::fill(&mut nonce).map_err(|e| format!("no randomness for the nonce: {e}"))?;
    let mut hs = Handshake::new(side, &secret, chain_id, Role::Cn, nonce);
    let stream_ref = stream;
    let work = async {
        let hello_bytes = hs.hello();
        stream_ref
            .write_all(&hello_bytes)
            .await
            .map_err(|e| e.to_string())?;
        let mut hello = [0u8; HELLO_LEN];
        stream_ref
            .read_exact(&mut hello)
            .await
            .map_err(|e| format!("reading hello: {e}"))?;
        let auth = hs
            .on_peer_hello(&hello, |role, node_id| {
                let mut s = state.borrow_mut();
                if role != Role::Cn {
                    return Err(format!(
                        "role {} is not admitted to the CN mesh",
                        role.name()
                    ));
                }
                let Some(index) = s.council_index(&node_id) else {
                    return Err("not a council member".into());
                };
                if let Some(peer) = expect {
                    if peer.index != index {
                        return Err(format!(
                            "dialed council member {} but {index} answered",
                            peer.index
                        ));
                    }
                }
                if s.is_banned(&node_id) {
                    return Err("banned for an earlier violation".into());
                }
                Ok(())
            })
            .map_err(|e| e.to_string())?;
        stream_ref
            .write_all(&auth)
            .await
            .map_err(|e| e.to_string())?;
        let mut peer_auth = [0u8; AUTH_LEN];
        stream_ref
            .read_exact(&mut peer_auth)
            .await
            .map_err(|e| format!("reading auth: {e}"))?;
        hs.on_peer_auth(&peer_auth).map_err(|e| e.to_string())
    };
    let identity = within(HANDSHAKE_TIMEOUT, work)
        .await
        .ok_or_else(|| "handshake timed out".to_string())??;
    let index = state
        .borrow()
        .council_index(&identity.node_id)
        .ok_or_else(|| "not a council member".to_string())?;
    Ok((index, identity))
}

/// Token bucket of one connection's frames.
struct RateLimit {
    per_second: f64,
    tokens: f64,
    last: Instant,
}

impl RateLimit {
    fn new(per_second: u32) -> RateLimit {
        RateLimit {
            per_second: per_second as f64,
            tokens: per_second as f64,
            last: Instant::now(),
        }
    }

    fn take(&mut self) -> bool {
        let now = Instant::now();
        let elapsed = now.duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.per_second).min(self.per_second);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

fn new_outbox(state: &Shared) -> (Outbox, Rc<RefCell<OutQueue>>, Doorbell) {
    let mut s = state.borrow_mut();
    s.next_connection += 1;
    let (doorbell, ring) = local_channel::new_bounded(1);
    let queue = Rc::new(RefCell::new(OutQueue::default()));
    (
        Outbox {
            connection: s.next_connection,
            queue: queue.clone(),
            doorbell,
        },
        queue,
        ring,
    )
}

/// The receiving side of an outbox's wake-up signal.
type Doorbell = local_channel::LocalReceiver<()>;

/// Writes an outbox's frames to the socket until the outbox is dropped or the socket fails.
/// Frames queued together are coalesced into one write of up to [`READ_CHUNK`] bytes.
async fn write_frames(
    writer: &mut futures_lite::io::WriteHalf<TcpStream>,
    queue: Rc<RefCell<OutQueue>>,
    doorbell: Doorbell,
    counters: Arc<NetCounters>,
    stats: Arc<ShardStats>,
) {
    let mut buffer = Vec::with_capacity(READ_CHUNK);
    loop {
        buffer.clear();
        {
            let mut q = queue.borrow_mut();
            while let Some(frame) = q.frames.front() {
                if !buffer.is_empty() && buffer.len() + frame.len() > READ_CHUNK {
                    break;
                }
                buffer.extend_from_slice(frame);
                q.bytes -= frame.len();
                q.frames.pop_front();
                stats.queue_depth.fetch_sub(1, Relaxed);
            }
        }
        if buffer.is_empty() {
            if doorbell.recv().await.is_none() {
                break;
            }
            continue;
        }
        if writer.write_all(&buffer).await.is_err() {
            break;
        }
        counters.bytes_out.fetch_add(buffer.len() as u64, Relaxed);
    }
    let _ = writer.close().await;
}

/// Serves one authenticated peer connection until it closes or misbehaves.
async fn run_peer(state: Shared, stream: TcpStream, index: CouncilIndex, identity: PeerIdentity) {
    let _ = stream.set_nodelay(true);
    let (outbox, queue, doorbell) = new_outbox(&state);
    let connection = outbox.connection;
    let counters = {
        let mut s = state.borrow_mut();
        // A newer connection replaces an older one (its writer ends when its outbox drops).
        s.peers.insert(index, outbox);
        s.counters.peers.store(s.peers.len() as u64, Relaxed);
        s.counters.clone()
    };
    tracing::info!(peer = index, "peer connected");
    let (mut reader, mut writer) = futures_lite::io::split(stream);
    let writer_task = glommio::spawn_local({
        let counters = counters.clone();
        let stats = state.borrow().stats.clone();
        let queue = queue.clone();
        async move { write_frames(&mut writer, queue, doorbell, counters, stats).await }
    });
    let limits = state.borrow().config.limits.clone();
    let mut rate = RateLimit::new(limits.messages_per_second);
    let mut consensus_rate = RateLimit::new(limits.consensus_messages_per_second);
    let mut last_sync: Option<Instant> = None;
    let mut decoder = FrameDecoder::new();
    let mut buf = vec![0u8; READ_CHUNK];
    let violation: Option<String> = 'read: loop {
        // A read of data already buffered does not suspend: yield so that one busy connection
        // cannot starve the other tasks of this executor (other peers, the exec shard).
        futures_lite::future::yield_now().await;
        let n = match reader.read(&mut buf).await {
            Ok(0) | Err(_) => break None,
            Ok(n) => n,
        };
        counters.bytes_in.fetch_add(n as u64, Relaxed);
        // Busy time: decoding, checking and handing on what this read brought.
        let handling = Instant::now();
        let mut input = &buf[..n];
        loop {
            let frame = match decoder.decode(&mut input) {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                Err(e) => break 'read Some(format!("bad frame: {e}")),
            };
            if !rate.take() {
                break 'read Some(format!(
                    "more than {} frames per second",
                    limits.messages_per_second
                ));
            }
            let costs_consensus = matches!(
                frame.kind,
                FrameKind::Proposal
                    | FrameKind::Vote
                    | FrameKind::RoundChange
                    | FrameKind::FinalizedBlock
            );
            if costs_consensus && !consensus_rate.take() {
                break 'read Some(format!(
                    "more than {} consensus frames per second",
                    limits.consensus_messages_per_second
                ));
            }
            if let Err(reason) = dispatch_peer_frame(&state, index, frame, &mut last_sync) {
                break 'read Some(reason);
            }
        }
        state.borrow().stats.add_busy(handling);
        if state.borrow().stop.load(Relaxed) {
            break None;
        }
        // Is this still the peer's current connection?
        if state.borrow().peers.get(&index).map(|o| o.connection) != Some(connection) {
            break None;
        }
    };
    {
        let mut s = state.borrow_mut();
        if s.peers.get(&index).map(|o| o.connection) == Some(connection) {
            s.peers.remove(&index);
        }
        s.counters.peers.store(s.peers.len() as u64, Relaxed);
        if let Some(reason) = &violation {
            let until = Instant::now() + s.config.limits.ban;
            s.banned.insert(identity.node_id, until);
            s.counters.violations.fetch_add(1, Relaxed);
            tracing::warn!(peer = index, %reason, ban_s = s.config.limits.ban.as_secs(), "peer banned");
        } else {
            tracing::info!(peer = index, "peer disconnected");
        }
    }
    writer_task.await;
    // The outbox is out of the tables now, so nothing more is queued: frames left behind leave
    // the queue-depth gauge with the connection.
    let left = std::mem::take(&mut queue.borrow_mut().frames).len() as u64;
    state.borrow().stats.queue_depth.fetch_sub(left, Relaxed);
}

/// Routes one frame from an authenticated peer; `Err` is a protocol violation.
fn dispatch_peer_frame(
    state: &Shared,
    from: CouncilIndex,
    frame: Frame,
    last_sync: &mut Option<Instant>,
) -> Result<(), String> {
    let s = state.borrow();
    s.stats.count_in();
    let message = frame.message().map_err(|e| e.to_string())?;
    let de = |e: rkyv::rancor::Error| format!("decoding: {e}");
    let inbound = match message {
        Message::Proposal(p) => {
            if p.proposer.to_native() != from {
                return Err("proposal signed by another member (no relaying in the mesh)".into());
            }
            ConsensusMessage::Proposal(Box::new(
                rkyv::deserialize::<_, rkyv::rancor::Error>(p).map_err(de)?,
            ))
        }
        Message::Vote(v) => {
            if v.signer.to_native() != from {
                return Err("vote signed by another member".into());
            }
            ConsensusMessage::Vote(rkyv::deserialize::<_, rkyv::rancor::Error>(v).map_err(de)?)
        }
        Message::RoundChange(rc) => {
            if rc.signer.to_native() != from {
                return Err("round change signed by another member".into());
            }
            ConsensusMessage::RoundChange(
                rkyv::deserialize::<_, rkyv::rancor::Error>(rc).map_err(de)?,
            )
        }
        Message::FinalizedBlock(f) => ConsensusMessage::Finalized(Box::new(
            rkyv::deserialize::<_, rkyv::rancor::Error>(f).map_err(de)?,
        )),
        Message::TxBatch(_) => {
            if s.to_exec
                .try_send(BatchIn {
                    origin: BatchOrigin::Peer,
                    frame,
                    received: Instant::now(),
                })
                .is_err()
            {
                s.counters.dropped.fetch_add(1, Relaxed);
            }
            return Ok(());
        }
        Message::SyncRequest(r) => {
            let from_height = r.from_height.to_native();
            let now = Instant::now();
            if last_sync.is_some_and(|t| now.duration_since(t) < SYNC_REQUEST_INTERVAL) {
                s.counters.dropped.fetch_add(1, Relaxed);
                return Ok(());
            }
            *last_sync = Some(now);
            if s.to_store
                .try_send(SyncServe {
                    peer: from,
                    from_height,
                })
                .is_err()
            {
                s.counters.dropped.fetch_add(1, Relaxed);
            }
            return Ok(());
        }
        Message::IngressAck(_) => return Err("ingress ack from a council member".into()),
    };
    if s.to_consensus
        .try_send(Inbound {
            from,
            message: inbound,
        })
        .is_err()
    {
        s.counters.dropped.fetch_add(1, Relaxed);
    }
    Ok(())
}

/// Serves one client ingress connection.
async fn run_client(state: Shared, stream: TcpStream, connection: u64) {
    let _ = stream.set_nodelay(true);
    let (outbox, queue, doorbell) = new_outbox(&state);
    let counters = {
        let mut s = state.borrow_mut();
        s.clients.insert(connection, outbox);
        s.counters.clone()
    };
    let (mut reader, mut writer) = futures_lite::io::split(stream);
    let writer_task = glommio::spawn_local({
        let counters = counters.clone();
        let stats = state.borrow().stats.clone();
        let queue = queue.clone();
        async move { write_frames(&mut writer, queue, doorbell, counters, stats).await }
    });
    let mut decoder = FrameDecoder::new();
    let mut buf = vec![0u8; READ_CHUNK];
    let to_exec = state.borrow().to_exec.clone();
    'read: loop {
        // See `run_peer`: one busy client must not starve the executor's other tasks.
        futures_lite::future::yield_now().await;
        let n = match within(INGRESS_IDLE_TIMEOUT, reader.read(&mut buf)).await {
            Some(Ok(0)) | Some(Err(_)) => break,
            Some(Ok(n)) => n,
            None => {
                tracing::info!(connection, "ingress client idle; dropped");
                break;
            }
        };
        counters.bytes_in.fetch_add(n as u64, Relaxed);
        let mut input = &buf[..n];
        loop {
            // Busy time: decoding and checking (not the wait for room in exec's inbox).
            let handling = Instant::now();
            let frame = match decoder.decode(&mut input) {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                Err(e) => {
                    tracing::info!(connection, reason = %e, "ingress client dropped");
                    break 'read;
                }
            };
            let ok = frame.kind == FrameKind::TxBatch && frame.message().is_ok();
            if !ok {
                tracing::info!(
                    connection,
                    kind = frame.kind.name(),
                    "ingress client sent a bad frame; dropped"
                );
                break 'read;
            }
            state.borrow().stats.count_in();
            state.borrow().stats.add_busy(handling);
            let batch = BatchIn {
                origin: BatchOrigin::Client { connection },
                frame,
                received: Instant::now(),
            };
            if to_exec.send(batch).await.is_err() {
                break 'read;
            }
        }
        if state.borrow().stop.load(Relaxed) {
            break;
        }
    }
    {
        let mut s = state.borrow_mut();
        s.clients.remove(&connection);
        s.client_connections -= 1;
    }
    writer_task.await;
    // The outbox is out of the tables now, so nothing more is queued: frames left behind leave
    // the queue-depth gauge with the connection.
    let left = std::mem::take(&mut queue.borrow_mut().frames).len() as u64;
    state.borrow().stats.queue_depth.fetch_sub(left, Relaxed);
}

/// A sync request frame (consensus's `RequestSync` on the wire).
pub fn sync_request_frame(from_height: u64) -> Vec<u8> {
    encode_frame(&SyncRequest { from_height })
}
