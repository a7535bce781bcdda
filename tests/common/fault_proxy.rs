//! A fault-injecting TCP proxy of ours, on loopback, for the network-fault tests
//! (`tests/faults.rs`). This machine has no netem, so the faults are made here.
//!
//! **Shape.** One listener per *directed link* (dialer node -> listener node). A node's config
//! is rewritten ([`route_through_proxy`]) so that it dials each peer through that link's
//! listener; the proxy then connects to the peer's real p2p address and pumps bytes both ways.
//! [`Direction::Forward`] is dialer -> listener, [`Direction::Backward`] the answers. A CN
//! dials only the CNs of higher council index, so of the two links of a pair only one carries
//! a connection; the per-link [`LinkStats`] show which.
//!
//! **Faults** ([`Fault`]), switchable at run time for every link independently:
//!
//! - [`Fault::Pass`]: bytes pass as they come.
//! - [`Fault::Shape`]: every chunk read is held back by `delay_ms` plus a uniform
//!   `0..=jitter_ms`, and, with probability `loss_percent`, by a "retransmission timeout"
//!   `rto_ms` on top (again with the same probability, doubled, at most
//!   [`MAX_RETRANSMITS`] times). Within one stream the order is kept (a chunk is never
//!   released before the one read before it), as TCP keeps it: loss on a TCP connection is
//!   not missing bytes but a stall of everything behind the lost segment until the
//!   retransmission arrives, and that is what is modelled. **Reordering**: nothing reorders
//!   inside one TCP stream, so reordering is modelled as independent jitter per link:
//!   messages sent in one order by different peers (or by one node to different peers)
//!   arrive in another order. That is the only reordering a node over TCP can see.
//! - [`Fault::Cut`] (partition): the link's connections are closed at once (both sockets
//!   shut down, bytes still held back are discarded) and new connections are accepted and
//!   closed straight away, until the fault changes. This is a partition seen by a firewall
//!   that resets connections; a partition that silently eats packets is
//!   [`Fault::Blackhole`] with [`Direction::Both`].
//! - [`Fault::Blackhole`]: bytes in the given direction are read and silently discarded
//!   (counted in [`LinkStats::dropped`]); the other direction passes. A real TCP connection
//!   under 100 % one-way loss would stall and, after its retransmissions give up, die; here
//!   the connection stays up while the fault lasts (nodes have no keepalive, so they cannot
//!   tell the difference) and **when the fault changes, the link's connections are closed**,
//!   which is how such a connection ends, so that the nodes reconnect. Discarding bytes
//!   inside a live stream and then carrying on would corrupt the stream, which no network
//!   does to TCP.
//!
//! - [`Fault::Tamper`] (a man in the middle): once, in the forward direction of a connection
//!   past its handshake (the first [`HANDSHAKE_BYTES`] of each direction), the proxy flips one
//!   byte of a record, injects a record of its own (a well-formed header and bytes not sealed
//!   under the session key), or replays the last whole record it passed, at a record
//!   boundary (records are `u32 length | body`, see `corecell::net::record`); then the fault
//!   is [`Fault::Pass`] again. Counted in [`LinkStats::tampered`].
//!
//! **Bounds.** At most [`MAX_CONNECTIONS_PER_LINK`] connections per link (more are closed
//! at once and counted); four threads per connection (a reader and a writer per direction)
//! plus one listener thread per link; at most [`QUEUE_CHUNKS`] chunks of at most
//! [`CHUNK`] bytes held per direction (a full queue blocks the reader, which is TCP
//! back-pressure). Socket reads and queue waits time out every 50 ms, writes after 5 s,
//! connecting to the real listener after 1 s, and a reader blocked on a full queue is
//! released when its writer exits; so every thread notices the stop flag promptly.
//!
//! **Shutdown.** Dropping a [`FaultProxy`] sets every link's stop flag, shuts down every
//! socket, and joins every thread.
//!
//! Only 127.0.0.1 is used.

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use corecell::config::node::{ConfigFile, NodeConfig};
use corecell::sim::rng::SimRng;

use super::Net;

/// Most connections one link carries at once.
pub const MAX_CONNECTIONS_PER_LINK: usize = 4;
/// Largest chunk read at once.
pub const CHUNK: usize = 64 * 1024;
/// Chunks held back per direction of a connection (so at most 4 MiB).
pub const QUEUE_CHUNKS: usize = 64;
/// Most extra retransmission timeouts one chunk can suffer under [`Fault::Shape`].
pub const MAX_RETRANSMITS: u32 = 3;
/// Blocking reads and queue waits wake up this often to look at the stop flags.
const POLL: Duration = Duration::from_millis(50);
/// A write blocked this long (the receiving node stopped reading) closes the connection.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// Connecting to the real listener.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// What each side sends in the handshake, before the first record.
pub const HANDSHAKE_BYTES: usize =
    corecell::net::handshake::HELLO_LEN + corecell::net::handshake::AUTH_LEN;

/// A direction on a link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Dialer -> listener.
    Forward,
    /// Listener -> dialer.
    Backward,
    /// Both ways.
    Both,
}

impl Direction {
    fn covers(self, d: Direction) -> bool {
        self == Direction::Both || self == d
    }

    fn index(self) -> usize {
        match self {
            Direction::Forward => 0,
            Direction::Backward => 1,
            Direction::Both => unreachable!("a pump has one direction"),
        }
    }
}

/// Delay, jitter and loss (as TCP sees loss: a retransmission delay, not missing bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Shape {
    pub delay_ms: u64,
    pub jitter_ms: u64,
    /// Chance (percent) that a chunk is "lost" and arrives only after `rto_ms` more.
    pub loss_percent: u32,
    pub rto_ms: u64,
}

/// What a man in the middle does once ([`Fault::Tamper`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tamper {
    /// Flip one byte inside a record.
    FlipByte,
    /// Insert a record not sealed under the session key.
    Inject,
    /// Send the last whole record again.
    Replay,
}

/// What a link does to its traffic (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    Pass,
    Shape(Shape),
    Cut,
    Blackhole(Direction),
    Tamper(Tamper),
}

impl Fault {
    /// Delay plus uniform jitter, no loss.
    pub fn delay(delay_ms: u64, jitter_ms: u64) -> Fault {
        Fault::Shape(Shape {
            delay_ms,
            jitter_ms,
            ..Shape::default()
        })
    }
}

/// Counters of one link, cumulative since the proxy started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkStats {
    /// Connections accepted and connected through.
    pub connections: u64,
    /// Connections closed at once: while cut, over the connection limit, or the real listener
    /// unreachable.
    pub refused: u64,
    /// Live connections the proxy closed because of a fault change.
    pub killed: u64,
    /// Bytes delivered, forward and backward.
    pub passed: [u64; 2],
    /// Bytes discarded by a blackhole, forward and backward.
    pub dropped: [u64; 2],
    /// Chunks held back by a simulated retransmission, forward and backward.
    pub retransmits: [u64; 2],
    /// Tampering done ([`Fault::Tamper`]).
    pub tampered: u64,
}

#[derive(Default)]
struct Counters {
    connections: AtomicU64,
    refused: AtomicU64,
    killed: AtomicU64,
    passed: [AtomicU64; 2],
    dropped: [AtomicU64; 2],
    retransmits: [AtomicU64; 2],
    tampered: AtomicU64,
}

/// One live connection through a link.
struct Conn {
    /// Clones of the two sockets (dialer side, listener side), to shut them down.
    sockets: [TcpStream; 2],
    dead: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Conn {
    fn kill(&self) {
        self.dead.store(true, Ordering::SeqCst);
        for s in &self.sockets {
            let _ = s.shutdown(Shutdown::Both);
        }
    }

    fn finished(&self) -> bool {
        self.threads.iter().all(JoinHandle::is_finished)
    }

    fn join(self) {
        for t in self.threads {
            let _ = t.join();
        }
    }
}

struct LinkState {
    fault: Mutex<Fault>,
    stop: AtomicBool,
    conns: Mutex<Vec<Conn>>,
    counters: Counters,
    rng: Mutex<SimRng>,
    upstream: SocketAddr,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl LinkState {
    fn fault(&self) -> Fault {
        *lock(&self.fault)
    }

    fn stopping(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    /// How long a chunk read now is held back under `fault`, and whether it was "lost".
    fn hold(&self, fault: Fault) -> (Duration, bool) {
        let Fault::Shape(s) = fault else {
            return (Duration::ZERO, false);
        };
        let mut rng = lock(&self.rng);
        let mut ms = s.delay_ms + rng.range(0, s.jitter_ms + 1);
        let mut lost = false;
        let mut rto = s.rto_ms;
        for _ in 0..MAX_RETRANSMITS {
            if s.loss_percent == 0 || rng.below(100) >= u64::from(s.loss_percent) {
                break;
            }
            lost = true;
            ms += rto;
            rto *= 2;
        }
        (Duration::from_millis(ms), lost)
    }

    fn kill_all(&self) -> u64 {
        let conns = lock(&self.conns);
        for c in conns.iter() {
            c.kill();
        }
        conns.len() as u64
    }
}

/// One directed link: its listener and state.
pub struct Link {
    /// Node index of the dialer.
    pub from: usize,
    /// Node index of the listener.
    pub to: usize,
    /// Where the dialer connects (the proxy's listener).
    pub listen: SocketAddr,
    state: Arc<LinkState>,
    listener: Option<JoinHandle<()>>,
}

impl Link {
    fn start(from: usize, to: usize, listen: SocketAddr, upstream: SocketAddr, seed: u64) -> Link {
        assert!(
            listen.ip().is_loopback() && upstream.ip().is_loopback(),
            "loopback only"
        );
        let listener =
            TcpListener::bind(listen).unwrap_or_else(|e| panic!("fault proxy bind {listen}: {e}"));
        listener
            .set_nonblocking(true)
            .expect("nonblocking listener");
        let state = Arc::new(LinkState {
            fault: Mutex::new(Fault::Pass),
            stop: AtomicBool::new(false),
            conns: Mutex::new(Vec::new()),
            counters: Counters::default(),
            rng: Mutex::new(SimRng::new(seed)),
            upstream,
        });
        let thread = std::thread::Builder::new()
            .name(format!("proxy-{from}-{to}"))
            .spawn({
                let state = state.clone();
                move || accept_loop(listener, state)
            })
            .expect("proxy listener thread");
        Link {
            from,
            to,
            listen,
            state,
            listener: Some(thread),
        }
    }

    /// Switches the fault. Setting [`Fault::Cut`], or leaving a [`Fault::Blackhole`], closes
    /// the link's connections (see the module doc).
    pub fn set(&self, fault: Fault) {
        let mut current = lock(&self.state.fault);
        let old = *current;
        *current = fault;
        drop(current);
        let closes =
            matches!(fault, Fault::Cut) || (matches!(old, Fault::Blackhole(_)) && old != fault);
        if closes {
            let n = self.state.kill_all();
            self.state.counters.killed.fetch_add(n, Ordering::SeqCst);
        }
    }

    pub fn fault(&self) -> Fault {
        self.state.fault()
    }

    pub fn stats(&self) -> LinkStats {
        let c = &self.state.counters;
        let pair = |a: &[AtomicU64; 2]| [a[0].load(Ordering::SeqCst), a[1].load(Ordering::SeqCst)];
        LinkStats {
            connections: c.connections.load(Ordering::SeqCst),
            refused: c.refused.load(Ordering::SeqCst),
            killed: c.killed.load(Ordering::SeqCst),
            passed: pair(&c.passed),
            dropped: pair(&c.dropped),
            retransmits: pair(&c.retransmits),
            tampered: c.tampered.load(Ordering::SeqCst),
        }
    }

    /// Connections open through the link now.
    pub fn open(&self) -> usize {
        lock(&self.state.conns)
            .iter()
            .filter(|c| !c.dead.load(Ordering::SeqCst) && !c.finished())
            .count()
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::SeqCst);
        self.state.kill_all();
        if let Some(t) = self.listener.take() {
            let _ = t.join();
        }
    }
}

fn accept_loop(listener: TcpListener, state: Arc<LinkState>) {
    while !state.stopping() {
        // Reap finished connections.
        {
            let mut conns = lock(&state.conns);
            let (done, live): (Vec<Conn>, Vec<Conn>) = conns.drain(..).partition(Conn::finished);
            *conns = live;
            drop(conns);
            done.into_iter().for_each(Conn::join);
        }
        let (dialer, _) = match listener.accept() {
            Ok(pair) => pair,
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
            Err(_) => {
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        let refuse =
            state.fault() == Fault::Cut || lock(&state.conns).len() >= MAX_CONNECTIONS_PER_LINK;
        if refuse {
            state.counters.refused.fetch_add(1, Ordering::SeqCst);
            let _ = dialer.shutdown(Shutdown::Both);
            continue;
        }
        let Ok(upstream) = TcpStream::connect_timeout(&state.upstream, CONNECT_TIMEOUT) else {
            state.counters.refused.fetch_add(1, Ordering::SeqCst);
            let _ = dialer.shutdown(Shutdown::Both);
            continue;
        };
        match start_conn(&state, dialer, upstream) {
            Ok(conn) => {
                state.counters.connections.fetch_add(1, Ordering::SeqCst);
                lock(&state.conns).push(conn);
            }
            Err(_) => {
                state.counters.refused.fetch_add(1, Ordering::SeqCst);
            }
        }
    }
    // Stop: close and join everything.
    let conns = std::mem::take(&mut *lock(&state.conns));
    for c in &conns {
        c.kill();
    }
    conns.into_iter().for_each(Conn::join);
}

enum Item {
    Chunk(Instant, Vec<u8>),
    End,
}

fn start_conn(
    state: &Arc<LinkState>,
    dialer: TcpStream,
    upstream: TcpStream,
) -> std::io::Result<Conn> {
    dialer.set_nonblocking(false)?;
    for s in [&dialer, &upstream] {
        s.set_nodelay(true)?;
        s.set_read_timeout(Some(POLL))?;
        s.set_write_timeout(Some(WRITE_TIMEOUT))?;
    }
    let dead = Arc::new(AtomicBool::new(false));
    let sockets = [dialer.try_clone()?, upstream.try_clone()?];
    let mut threads = Vec::with_capacity(4);
    for (dir, src, dst) in [
        (
            Direction::Forward,
            dialer.try_clone()?,
            upstream.try_clone()?,
        ),
        (Direction::Backward, upstream, dialer),
    ] {
        let (tx, rx) = sync_channel::<Item>(QUEUE_CHUNKS);
        let kill_sockets = [src.try_clone()?, dst.try_clone()?];
        let reader = {
            let state = state.clone();
            let dead = dead.clone();
            std::thread::Builder::new()
                .name("proxy-read".into())
                .spawn(move || read_side(&state, &dead, dir, src, tx))?
        };
        let writer = {
            let state = state.clone();
            let dead = dead.clone();
            std::thread::Builder::new()
                .name("proxy-write".into())
                .spawn(move || write_side(&state, &dead, dir, dst, rx, kill_sockets))?
        };
        threads.push(reader);
        threads.push(writer);
    }
    Ok(Conn {
        sockets,
        dead,
        threads,
    })
}

/// Reads one direction and queues its chunks with their release times.
fn read_side(
    state: &LinkState,
    dead: &AtomicBool,
    dir: Direction,
    mut src: TcpStream,
    tx: SyncSender<Item>,
) {
    let mut buf = vec![0u8; CHUNK];
    let mut last_release = Instant::now();
    let mut records = RecordCutter::default();
    loop {
        if state.stopping() || dead.load(Ordering::SeqCst) {
            return;
        }
        let n = match src.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                ) =>
            {
                continue
            }
            Err(_) => break,
        };
        let fault = state.fault();
        match fault {
            Fault::Blackhole(d) if d.covers(dir) => {
                state.counters.dropped[dir.index()].fetch_add(n as u64, Ordering::SeqCst);
                continue;
            }
            Fault::Cut => return,
            _ => {}
        }
        let mut chunk = buf[..n].to_vec();
        let tamper = match fault {
            Fault::Tamper(t) if dir == Direction::Forward => Some(t),
            _ => None,
        };
        if records.pass(&mut chunk, tamper) {
            state.counters.tampered.fetch_add(1, Ordering::SeqCst);
            let mut current = lock(&state.fault);
            if *current == fault {
                *current = Fault::Pass;
            }
        }
        let (hold, lost) = state.hold(fault);
        if lost {
            state.counters.retransmits[dir.index()].fetch_add(1, Ordering::SeqCst);
        }
        // Never before the previous chunk: a TCP stream keeps its order.
        let release = (Instant::now() + hold).max(last_release);
        last_release = release;
        if tx.send(Item::Chunk(release, chunk)).is_err() {
            return;
        }
    }
    // EOF or error from the source: pass the end on after what is queued.
    let _ = tx.send(Item::End);
}

/// Follows the record boundaries of one direction (past the handshake) and tampers once.
#[derive(Default)]
struct RecordCutter {
    /// Bytes of this direction seen so far.
    seen: usize,
    /// The record being passed (header and body so far).
    current: Vec<u8>,
    /// The last whole record passed.
    last: Vec<u8>,
}

impl RecordCutter {
    /// Passes `chunk` through the tracker, applying `tamper` at the first chance; true if it
    /// tampered.
    fn pass(&mut self, chunk: &mut Vec<u8>, tamper: Option<Tamper>) -> bool {
        let mut out = Vec::with_capacity(chunk.len() + 64);
        let mut tampered = false;
        for &byte in chunk.iter() {
            self.seen += 1;
            out.push(byte);
            if self.seen <= HANDSHAKE_BYTES {
                continue;
            }
            self.current.push(byte);
            if let (Some(Tamper::FlipByte), false) = (tamper, tampered) {
                // A byte inside the body (past the length and a few bytes in).
                if self.current.len() == 8 {
                    *out.last_mut().expect("just pushed") ^= 0x20;
                    tampered = true;
                }
            }
            if self.current.len() >= 4 {
                let len = u32::from_be_bytes([
                    self.current[0],
                    self.current[1],
                    self.current[2],
                    self.current[3],
                ]) as usize;
                if self.current.len() == 4 + len {
                    self.last = std::mem::take(&mut self.current);
                    if !tampered {
                        match tamper {
                            Some(Tamper::Replay) => {
                                out.extend_from_slice(&self.last);
                                tampered = true;
                            }
                            Some(Tamper::Inject) => {
                                out.extend_from_slice(&[0, 0, 0, 24]);
                                out.extend_from_slice(&[0x42; 24]);
                                tampered = true;
                            }
                            _ => {}
                        }
                    }
                }
            }
        }
        *chunk = out;
        tampered
    }
}

/// Delivers one direction's chunks at their release times.
fn write_side(
    state: &LinkState,
    dead: &AtomicBool,
    dir: Direction,
    mut dst: TcpStream,
    rx: Receiver<Item>,
    sockets: [TcpStream; 2],
) {
    let gone = || state.stopping() || dead.load(Ordering::SeqCst);
    loop {
        let item = match rx.recv_timeout(POLL) {
            Ok(item) => item,
            Err(RecvTimeoutError::Timeout) => {
                if gone() {
                    return;
                }
                continue;
            }
            Err(RecvTimeoutError::Disconnected) => return,
        };
        match item {
            Item::Chunk(release, bytes) => {
                loop {
                    if gone() {
                        return;
                    }
                    let left = release.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        break;
                    }
                    std::thread::sleep(left.min(Duration::from_millis(20)));
                }
                if dst.write_all(&bytes).is_err() {
                    // The receiving side is gone or stuck: the whole connection ends.
                    dead.store(true, Ordering::SeqCst);
                    for s in &sockets {
                        let _ = s.shutdown(Shutdown::Both);
                    }
                    return;
                }
                state.counters.passed[dir.index()].fetch_add(bytes.len() as u64, Ordering::SeqCst);
            }
            Item::End => {
                let _ = dst.shutdown(Shutdown::Write);
                return;
            }
        }
    }
}

/// The proxy: a set of links, all stopped and joined when it is dropped.
pub struct FaultProxy {
    pub links: Vec<Link>,
    seed: u64,
}

impl FaultProxy {
    /// An empty proxy; `seed` seeds every link's jitter and loss draws.
    pub fn new(seed: u64) -> FaultProxy {
        FaultProxy {
            links: Vec::new(),
            seed,
        }
    }

    /// Starts a link listening at `listen` and forwarding to `upstream`.
    pub fn add_link(&mut self, from: usize, to: usize, listen: SocketAddr, upstream: SocketAddr) {
        let seed =
            self.seed ^ ((from as u64) << 32 | to as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        self.links
            .push(Link::start(from, to, listen, upstream, seed));
    }

    /// The link dialer `from` -> listener `to`.
    pub fn link(&self, from: usize, to: usize) -> &Link {
        self.links
            .iter()
            .find(|l| l.from == from && l.to == to)
            .unwrap_or_else(|| panic!("no proxy link {from} -> {to}"))
    }

    /// Sets `fault` on every link for which `which(from, to)` holds.
    pub fn set_where(&self, which: impl Fn(usize, usize) -> bool, fault: Fault) {
        for l in self.links.iter().filter(|l| which(l.from, l.to)) {
            l.set(fault);
        }
    }

    /// Cuts every link between a node in `a` and a node in `b`.
    pub fn partition(&self, a: &[usize], b: &[usize]) {
        self.set_where(
            |f, t| (a.contains(&f) && b.contains(&t)) || (b.contains(&f) && a.contains(&t)),
            Fault::Cut,
        );
    }

    /// Every link back to [`Fault::Pass`].
    pub fn heal(&self) {
        self.set_where(|_, _| true, Fault::Pass);
    }

    /// The links that carried at least one connection.
    pub fn used_links(&self) -> Vec<(usize, usize)> {
        self.links
            .iter()
            .filter(|l| l.stats().connections > 0)
            .map(|l| (l.from, l.to))
            .collect()
    }

    /// Counters summed over every link touching node `n` (as dialer or listener).
    pub fn stats_of(&self, n: usize) -> LinkStats {
        let mut sum = LinkStats::default();
        for l in self.links.iter().filter(|l| l.from == n || l.to == n) {
            let s = l.stats();
            sum.connections += s.connections;
            sum.refused += s.refused;
            sum.killed += s.killed;
            for d in 0..2 {
                sum.passed[d] += s.passed[d];
                sum.dropped[d] += s.dropped[d];
                sum.retransmits[d] += s.retransmits[d];
            }
        }
        sum
    }

    /// A table of every link's counters, for test output.
    pub fn report(&self) -> String {
        let mut out = String::new();
        for l in &self.links {
            let s = l.stats();
            if s.connections + s.refused == 0 {
                continue;
            }
            out.push_str(&format!(
                "  {} -> {}: conns {} refused {} killed {}, bytes fwd {} back {}, dropped fwd {} back {}, retransmits {} / {}\n",
                l.from, l.to, s.connections, s.refused, s.killed, s.passed[0], s.passed[1],
                s.dropped[0], s.dropped[1], s.retransmits[0], s.retransmits[1]
            ));
        }
        out
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        // Set every stop flag first so the links wind down together, then join each.
        for l in &self.links {
            l.state.stop.store(true, Ordering::SeqCst);
            l.state.kill_all();
        }
        self.links.clear();
    }
}

/// Rewrites the config of every chain-keeping node of `net` (not started yet) so that it
/// dials each of its `[[network.peers]]` through a proxy link of its own, at
/// `port(dialer, listener)` on 127.0.0.1, and starts those links. Every listed peer gets a
/// link, whether or not the dial rule makes the node dial it (unused links carry nothing,
/// see [`FaultProxy::used_links`]).
pub fn route_through_proxy(net: &Net, seed: u64, port: impl Fn(usize, usize) -> u16) -> FaultProxy {
    let mut proxy = FaultProxy::new(seed);
    let by_name: HashMap<&str, usize> = net
        .nodes
        .iter()
        .enumerate()
        .map(|(i, n)| (n.name.as_str(), i))
        .collect();
    for (i, node) in net.nodes.iter().enumerate() {
        assert!(node.proc.is_none(), "{} is running already", node.name);
        let path = node.dir.join("config.toml");
        let text = std::fs::read_to_string(&path).expect("config");
        let mut file: ConfigFile = toml::from_str(&text).expect("generated config parses");
        for peer in &mut file.network.peers {
            let j = by_name[peer.name.as_str()];
            assert_eq!(
                peer.address, net.nodes[j].p2p,
                "{} lists {}",
                node.name, peer.name
            );
            let listen = SocketAddr::from(([127, 0, 0, 1], port(i, j)));
            proxy.add_link(i, j, listen, net.nodes[j].p2p);
            peer.address = listen;
        }
        std::fs::write(&path, toml::to_string(&file).expect("config encodes")).expect("config");
        NodeConfig::load(&path)
            .unwrap_or_else(|e| panic!("rewritten config of {}: {e}", node.name));
    }
    proxy
}
