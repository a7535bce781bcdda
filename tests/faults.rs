//! Network faults between node processes: four real `corecell` CN processes on loopback, every
//! CN-to-CN connection routed through a fault proxy of ours (`tests/common/fault_proxy.rs`:
//! partitions, one-way loss, delay, jitter, loss as TCP sees it; this machine has no netem).
//!
//! What these tests prove:
//!
//! 0. The proxy does what it says: bytes pass in order, a delay holds them back, jitter and
//!    simulated retransmissions never reorder a stream, a blackhole discards one direction
//!    and closes the connection when it ends, a cut closes connections and refuses new ones
//!    until healed, and dropping the proxy closes everything.
//! 1. A minority partition (one CN cut from the other three): the three keep finalizing
//!    (quorum 3 of 4), the isolated CN's height does not move while it is cut; after the
//!    heal it catches up and all four block logs agree.
//! 2. An even 2/2 split: no one finalizes while it lasts (heights frozen for many block
//!    periods); after the heal finalizing resumes and all block logs agree (no fork).
//! 3. One-way loss: everything one CN sends is discarded (it still hears the others), then
//!    everything it receives is; the other three keep finalizing both times, in the second
//!    case the deaf CN stops; after each heal all four converge and agree.
//! 4. Delay, jitter (which reorders messages across links) and loss as retransmission
//!    delays on every link, two links 200 ms slower still, under a transfer load: the network
//!    keeps finalizing, every batch is answered FINAL, every transaction answered FINAL is in
//!    every chain, all chains agree; blocks/s and finality latency are printed.
//! 5. A seeded random schedule of ten faults (partitions with resets or silent, one-way
//!    losses, cut links, delay storms; `CORECELL_FAULT_SEED=<n>` replays one), each held at
//!    least 3 s and then healed, under a light load: whoever has a quorum keeps finalizing
//!    during each fault, whoever has none does not, everyone finalizes after each heal,
//!    everything answered FINAL is in every chain, and all chains agree at every round.
//!
//! 6. A man in the middle on one CN link flips one byte of a record, injects a record of its
//!    own, or replays an old record: each time the receiving CN's record layer refuses it
//!    (`link_auth_failures` counts it), the link is dialed again and comes back, nobody is
//!    banned, and the network keeps finalizing.
//!
//! A node's height may still move by what it had already received when a fault starts, so
//! "does not move" is checked after a short settling time ([`SETTLE`]).
//!
//! Ports (all on 127.0.0.1, below the ephemeral range): test t generates its nodes from base
//! 12000 + 20 t (p2p base+k, JSON-RPC base+1000+k, metrics base+2000+k, ingress base+3000+k)
//! and its proxy links listen at 12400 + 20 t + 4 i + j (dialer i, listener j). Hygiene as in
//! `tests/common`: every process is reaped, the proxy joins its threads when dropped, every
//! wait has a deadline, tests are serialized.

mod common;

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::fault_proxy::{route_through_proxy, Direction, Fault, FaultProxy, Shape, Tamper};
use common::*;
use corecell::sim::rng::SimRng;

/// Block period of the generated networks.
const PERIOD_MS: u64 = 200;
const ALL: [usize; CNS] = [0, 1, 2, 3];
/// Test accounts in the genesis.
const ACCOUNTS: usize = 64;
/// Deadline for the nodes that should finalize to get a few blocks further (debug build, 2
/// vCPUs, possibly shared with a build; a round whose proposer is unreachable times out).
const PROGRESS: Duration = Duration::from_secs(60);
/// How long each fault of the random schedule lasts at least.
const HOLD: Duration = Duration::from_secs(3);
/// Time for messages received before a fault to be handled.
const SETTLE: Duration = Duration::from_millis(1500);

fn base(t: u16) -> u16 {
    12000 + 20 * t
}

fn proxy_port(t: u16, i: usize, j: usize) -> u16 {
    12400 + 20 * t + (4 * i + j) as u16
}

/// The council index of node `i`.
fn council_index(net: &Net, i: usize) -> usize {
    net.genesis
        .council
        .iter()
        .position(|m| m.node_id == net.nodes[i].node_id)
        .expect("a council member")
}

/// Generates four CNs for test `t`, routes every CN-to-CN connection through a proxy link,
/// starts the nodes and waits until they are meshed; then checks that each pair connected
/// over exactly one link, the one from the lower council index to the higher (the dial rule).
fn start(t: u16, seed: u64) -> (Net, FaultProxy) {
    let mut net = Net::generate(base(t), PERIOD_MS, ACCOUNTS, None);
    let proxy = route_through_proxy(&net, seed, |i, j| proxy_port(t, i, j));
    assert_eq!(
        proxy.links.len(),
        CNS * (CNS - 1),
        "a link per ordered pair"
    );
    net.spawn_all();
    for i in 0..CNS {
        for j in i + 1..CNS {
            let (dialer, listener) = if council_index(&net, i) < council_index(&net, j) {
                (i, j)
            } else {
                (j, i)
            };
            let used = proxy.link(dialer, listener).stats();
            let unused = proxy.link(listener, dialer).stats();
            assert!(
                used.connections >= 1 && unused.connections == 0,
                "pair {i}-{j}: {dialer} -> {listener} {used:?}, {listener} -> {dialer} {unused:?}"
            );
        }
    }
    (net, proxy)
}

/// The highest height among `which`.
fn top(net: &Net, which: &[usize]) -> u64 {
    net.heights(which).into_iter().max().unwrap_or(0)
}

/// Waits until every node of `which` is `by` blocks above the highest of them now; returns
/// how long it took.
fn progress(net: &mut Net, which: &[usize], by: u64) -> Duration {
    let started = Instant::now();
    let target = top(net, which) + by;
    net.wait_heights(which, &vec![target; which.len()], PROGRESS);
    started.elapsed()
}

/// Checks, every 100 ms for `hold`, that the heights of `which` stay what they are at the
/// start; returns them.
fn assert_frozen(net: &mut Net, which: &[usize], hold: Duration, what: &str) -> Vec<u64> {
    let start = net.heights(which);
    let deadline = Instant::now() + hold;
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        net.assert_running(which);
        let now = net.heights(which);
        assert_eq!(
            now, start,
            "{what}: nodes {which:?} finalized while they should not (heights {start:?} -> {now:?})\n{}",
            tail(&net.nodes[which[0]].log(), 30)
        );
    }
    start
}

/// The block logs of every node, read while they run, agree at every height.
///
/// Reading a running node's log is not atomic: the node rewrites the last partial page of
/// its segment together with each new record (one O_DIRECT write), and a scan that reads the
/// old zero padding in one `read` and the new record bytes in the next sees a zero length
/// with data after it, which the scan calls corruption. So a failed read is retried (the
/// logs are checked strictly, without retries, after the nodes stop).
fn assert_agree_now(net: &Net) {
    let chains: Vec<(String, Vec<BlockDigest>)> = ALL
        .iter()
        .map(|&i| {
            let node = &net.nodes[i];
            let data = node.dir.join("data");
            let mut tries = 0;
            loop {
                match corecell::store::finalized_block_digests(&data, &net.genesis.header()) {
                    Ok(blocks) => break (node.name.clone(), blocks),
                    Err(e) => {
                        tries += 1;
                        assert!(tries < 20, "{}: reading {}: {e}", node.name, data.display());
                        std::thread::sleep(Duration::from_millis(50));
                    }
                }
            }
        })
        .collect();
    assert_agree(&chains);
}

/// Waits until every node has the highest height any node has now (so each holds every
/// block a FINAL answer so far named), stops them all, checks that their block logs agree and
/// that each holds every transaction `client` was answered FINAL; returns the chains' lengths.
fn stop_and_check_final(net: &mut Net, client: &TransferClient) -> Vec<(String, usize)> {
    net.wait_heights(&ALL, &[top(net, &ALL); CNS], PROGRESS);
    let chains = net.stop_all_and_assert_agree();
    for node in &net.nodes {
        let txs = chain_transactions(&node.dir.join("data"), &net.genesis);
        let missing = client.finalized.difference(&txs).count();
        assert_eq!(
            missing,
            0,
            "{}: {missing} of {} transactions answered FINAL are not in its chain; chains {chains:?}",
            node.name,
            client.finalized.len()
        );
    }
    chains
}

/// Every link touching node `n`: (from, to) -> the direction of `n`'s outgoing bytes on it.
fn outgoing_of(n: usize) -> impl Fn(usize, usize) -> Option<Direction> {
    move |from, to| {
        if from == n {
            Some(Direction::Forward)
        } else if to == n {
            Some(Direction::Backward)
        } else {
            None
        }
    }
}

/// Blackholes every byte node `n` sends (`sends`) or receives (`!sends`).
fn blackhole_node(proxy: &FaultProxy, n: usize, sends: bool) {
    let out = outgoing_of(n);
    for l in &proxy.links {
        if let Some(d) = out(l.from, l.to) {
            let d = match (sends, d) {
                (true, d) => d,
                (false, Direction::Forward) => Direction::Backward,
                (false, _) => Direction::Forward,
            };
            l.set(Fault::Blackhole(d));
        }
    }
}

/// Bytes node `n` sent that were discarded, and bytes it received, on its links.
fn sent_dropped_and_received(proxy: &FaultProxy, n: usize) -> (u64, u64) {
    let mut dropped = 0;
    let mut received = 0;
    for l in &proxy.links {
        let s = l.stats();
        if l.from == n {
            dropped += s.dropped[0];
            received += s.passed[1];
        } else if l.to == n {
            dropped += s.dropped[1];
            received += s.passed[0];
        }
    }
    (dropped, received)
}

// ---------------------------------------------------------------------------------------------
// 0. The proxy itself, against an echo server.

/// A loopback echo server (at most 8 connections), stopped and joined when dropped.
struct Echo {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Echo {
    fn start(addr: SocketAddr) -> Echo {
        let listener = TcpListener::bind(addr).expect("echo bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let stop = Arc::new(AtomicBool::new(false));
        let thread = std::thread::spawn({
            let stop = stop.clone();
            move || {
                let mut conns: Vec<JoinHandle<()>> = Vec::new();
                while !stop.load(Ordering::SeqCst) {
                    match listener.accept() {
                        Ok((mut s, _)) if conns.len() < 8 => {
                            let stop = stop.clone();
                            conns.push(std::thread::spawn(move || {
                                s.set_nonblocking(false).expect("blocking");
                                s.set_read_timeout(Some(Duration::from_millis(50)))
                                    .expect("timeout");
                                let mut buf = [0u8; 4096];
                                while !stop.load(Ordering::SeqCst) {
                                    match s.read(&mut buf) {
                                        Ok(0) => return,
                                        Ok(n) => {
                                            if s.write_all(&buf[..n]).is_err() {
                                                return;
                                            }
                                        }
                                        Err(e)
                                            if matches!(
                                                e.kind(),
                                                ErrorKind::WouldBlock | ErrorKind::TimedOut
                                            ) => {}
                                        Err(_) => return,
                                    }
                                }
                            }));
                        }
                        Ok(_) => {} // over the limit: dropped, closed
                        Err(_) => std::thread::sleep(Duration::from_millis(5)),
                    }
                }
                for c in conns {
                    let _ = c.join();
                }
            }
        });
        Echo {
            addr,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Reads exactly `n` bytes within `within`; `None` on timeout or close.
fn read_n(s: &mut TcpStream, n: usize, within: Duration) -> Option<Vec<u8>> {
    let mut out = vec![0u8; n];
    read_exact_within(s, &mut out, within).ok().map(|_| out)
}

/// Sends `msg` and times its echo.
fn round_trip(s: &mut TcpStream, msg: &[u8]) -> Duration {
    let t = Instant::now();
    s.write_all(msg).expect("write");
    let got = read_n(s, msg.len(), Duration::from_secs(5)).expect("echo arrives");
    assert_eq!(got, msg);
    t.elapsed()
}

#[test]
fn the_fault_proxy_delays_cuts_and_blackholes_as_configured() {
    let _serial = serial();
    let t = 0;
    let echo = Echo::start(SocketAddr::from(([127, 0, 0, 1], base(t))));
    let listen = SocketAddr::from(([127, 0, 0, 1], proxy_port(t, 0, 1)));
    let mut proxy = FaultProxy::new(7);
    proxy.add_link(0, 1, listen, echo.addr);
    let link = proxy.link(0, 1);

    // Pass.
    let mut s = connect(listen);
    let fast = round_trip(&mut s, b"hello");
    assert!(fast < Duration::from_millis(500), "{fast:?}");

    // Delay: 100 ms each way.
    link.set(Fault::delay(100, 0));
    let slow = round_trip(&mut s, b"slow");
    assert!(slow >= Duration::from_millis(200), "{slow:?}");

    // Jitter and retransmissions never reorder a stream: 200 numbered messages sent 1 ms
    // apart under 5..55 ms jitter and 30 % "loss" come back byte for byte in order.
    link.set(Fault::Shape(Shape {
        delay_ms: 5,
        jitter_ms: 50,
        loss_percent: 30,
        rto_ms: 20,
    }));
    let mut sent = Vec::new();
    for k in 0u32..200 {
        let m = k.to_be_bytes();
        s.write_all(&m).expect("write");
        sent.extend_from_slice(&m);
        std::thread::sleep(Duration::from_millis(1));
    }
    let back = read_n(&mut s, sent.len(), Duration::from_secs(20)).expect("all echoed");
    assert_eq!(back, sent, "a stream was reordered");
    let st = link.stats();
    assert!(
        st.retransmits[0] > 0 && st.retransmits[1] > 0,
        "no simulated loss: {st:?}"
    );

    // Blackhole forward: what the dialer sends vanishes; the connection stays up until the
    // fault ends, then it is closed.
    link.set(Fault::Blackhole(Direction::Forward));
    let before = link.stats();
    s.write_all(b"lost").expect("write");
    assert!(
        read_n(&mut s, 4, Duration::from_millis(500)).is_none(),
        "bytes crossed a blackhole"
    );
    assert_eq!(link.stats().dropped[0], before.dropped[0] + 4);
    assert_eq!(link.open(), 1, "the connection stays up while blackholed");
    link.set(Fault::Pass);
    let (closed, _) = read_until_closed(&mut s, Duration::from_secs(2));
    assert!(closed, "leaving a blackhole closes the connection");
    assert_eq!(link.stats().killed, before.killed + 1);

    // Blackhole backward: the echo server gets the bytes, its answer vanishes.
    let mut s = connect(listen);
    round_trip(&mut s, b"again");
    link.set(Fault::Blackhole(Direction::Backward));
    let before = link.stats();
    s.write_all(b"echoed?").expect("write");
    assert!(read_n(&mut s, 7, Duration::from_millis(500)).is_none());
    let after = link.stats();
    assert_eq!(
        after.passed[0],
        before.passed[0] + 7,
        "forward still passes"
    );
    assert_eq!(
        after.dropped[1],
        before.dropped[1] + 7,
        "the echo was dropped"
    );
    link.set(Fault::Pass);
    assert!(read_until_closed(&mut s, Duration::from_secs(2)).0);

    // Cut: a live connection is closed at once; new ones are accepted and closed until healed.
    let mut s = connect(listen);
    round_trip(&mut s, b"live");
    link.set(Fault::Cut);
    let cut_at = Instant::now();
    assert!(read_until_closed(&mut s, Duration::from_secs(2)).0);
    assert!(cut_at.elapsed() < Duration::from_millis(500));
    let refused = link.stats().refused;
    let mut s = connect(listen);
    assert!(
        read_until_closed(&mut s, Duration::from_secs(2)).0,
        "a new connection across a cut"
    );
    assert_eq!(link.stats().refused, refused + 1);
    link.set(Fault::Pass);
    let mut s = connect(listen);
    round_trip(&mut s, b"healed");

    // Dropped: the open connection closes, the port stops listening, every thread is joined.
    let dropped_at = Instant::now();
    drop(proxy);
    assert!(
        dropped_at.elapsed() < Duration::from_secs(2),
        "slow shutdown"
    );
    assert!(read_until_closed(&mut s, Duration::from_secs(2)).0);
    assert!(TcpStream::connect_timeout(&listen, Duration::from_millis(500)).is_err());
    drop(echo);
}

// ---------------------------------------------------------------------------------------------
// 1-5. Four CN processes.

#[test]
fn a_cut_off_cn_stops_the_other_three_continue_and_it_catches_up_after_the_heal() {
    let _serial = serial();
    let started = Instant::now();
    let (mut net, proxy) = start(1, 1);
    net.wait_heights(&ALL, &[3; CNS], PROGRESS);
    let isolated = 3;
    let majority = [0, 1, 2];

    proxy.set_where(|f, t| f == isolated || t == isolated, Fault::Cut);
    std::thread::sleep(SETTLE);
    let frozen_at = net.heights(&[isolated])[0];
    let majority_took = progress(&mut net, &majority, 5);
    // However long the majority took, the isolated CN stayed where it was, for at least 3 s.
    let h = assert_frozen(&mut net, &[isolated], Duration::from_secs(3), "isolated CN")[0];
    assert_eq!(h, frozen_at, "the isolated CN finalized while cut");
    assert_eq!(
        net.sample(isolated, PEERS_CN),
        0.0,
        "the isolated CN has peers"
    );
    let cut = proxy.stats_of(isolated);
    assert!(
        cut.killed >= 3 && cut.refused >= 1,
        "the cut did not happen: {cut:?}"
    );
    let majority_at = top(&net, &majority);
    assert!(majority_at >= frozen_at + 5);
    assert_agree_now(&net);

    proxy.heal();
    let healed = Instant::now();
    net.wait_heights(&ALL, &[majority_at + 2; CNS], PROGRESS);
    let caught_up = healed.elapsed();
    let chains = net.stop_all_and_assert_agree();
    eprintln!(
        "cn3 cut at height {frozen_at}; the others +5 in {majority_took:.1?} (at {majority_at}); cn3 caught up {caught_up:.1?} after the heal; chains {chains:?}; {:.1?}\n{}",
        started.elapsed(),
        proxy.report()
    );
}

#[test]
fn an_even_split_finalizes_nothing_and_resumes_after_the_heal() {
    let _serial = serial();
    let started = Instant::now();
    let (mut net, proxy) = start(2, 1);
    net.wait_heights(&ALL, &[3; CNS], PROGRESS);

    proxy.partition(&[0, 1], &[2, 3]);
    std::thread::sleep(SETTLE);
    // 4 s = 20 block periods without a quorum anywhere.
    let frozen = assert_frozen(&mut net, &ALL, Duration::from_secs(4), "2/2 split");
    for i in ALL {
        assert_eq!(net.sample(i, PEERS_CN), 1.0, "cn{i} sees the wrong side");
    }
    let rounds_before: Vec<f64> = ALL.iter().map(|&i| net.sample(i, ROUND_CHANGES)).collect();
    assert_agree_now(&net);

    proxy.heal();
    let healed = Instant::now();
    let target = frozen.iter().max().copied().unwrap_or(0) + 3;
    // The round changes sent during the split were lost with the connections; each CN sends
    // its current round's messages again to a peer that reconnects, so the first block comes
    // once the links are redialed (backoff at most DIAL_BACKOFF_MAX), not at the next round
    // timeout (6.7-7.0 s after the heal before the re-send).
    net.wait_heights(&ALL, &[target - 2; CNS], PROGRESS);
    let first = healed.elapsed();
    let bound = corecell::net::DIAL_BACKOFF_MAX + Duration::from_secs(2);
    assert!(
        first <= bound,
        "the first block came {first:.1?} after the heal (at most {bound:?} expected)"
    );
    net.wait_heights(&ALL, &[target; CNS], PROGRESS);
    let resumed = healed.elapsed();
    let chains = net.stop_all_and_assert_agree();
    eprintln!(
        "split at heights {frozen:?} (round changes so far {rounds_before:?}); first block {first:.1?} and all +3 {resumed:.1?} after the heal; chains {chains:?}; {:.1?}\n{}",
        started.elapsed(),
        proxy.report()
    );
}

#[test]
fn one_way_loss_at_one_cn_leaves_the_others_finalizing_and_heals() {
    let _serial = serial();
    let started = Instant::now();
    let (mut net, proxy) = start(3, 1);
    net.wait_heights(&ALL, &[3; CNS], PROGRESS);
    let lossy = 3;
    let others = [0, 1, 2];

    // Everything cn3 sends is lost; it still hears the others.
    blackhole_node(&proxy, lossy, true);
    let (dropped0, received0) = sent_dropped_and_received(&proxy, lossy);
    let mute_took = progress(&mut net, &others, 5);
    let (dropped1, received1) = sent_dropped_and_received(&proxy, lossy);
    assert!(
        dropped1 > dropped0 && received1 > received0,
        "cn3's bytes were not dropped ({dropped0} -> {dropped1}) or it heard nothing ({received0} -> {received1})"
    );
    let mute_cn3 = net.heights(&[lossy])[0];
    assert_agree_now(&net);
    proxy.heal();
    net.wait_heights(&ALL, &[top(&net, &others) + 2; CNS], PROGRESS);

    // Everything cn3 receives is lost: it stops, the others do not.
    blackhole_node(&proxy, lossy, false);
    std::thread::sleep(SETTLE);
    let deaf_at = net.heights(&[lossy])[0];
    let deaf_took = progress(&mut net, &others, 5);
    assert_frozen(&mut net, &[lossy], Duration::from_secs(2), "deaf CN");
    assert_eq!(net.heights(&[lossy])[0], deaf_at, "the deaf CN finalized");
    assert_agree_now(&net);
    proxy.heal();
    let healed = Instant::now();
    net.wait_heights(&ALL, &[top(&net, &others) + 2; CNS], PROGRESS);
    let caught_up = healed.elapsed();
    let killed = proxy.stats_of(lossy).killed;
    assert!(
        killed >= 6,
        "healing the blackholes closed {killed} connections"
    );
    let chains = net.stop_all_and_assert_agree();
    eprintln!(
        "mute cn3: others +5 in {mute_took:.1?} (cn3 itself at {mute_cn3}, {} bytes of its dropped); deaf cn3 frozen at {deaf_at}, others +5 in {deaf_took:.1?}, caught up {caught_up:.1?} after the heal; chains {chains:?}; {:.1?}\n{}",
        dropped1 - dropped0,
        started.elapsed(),
        proxy.report()
    );
}

/// Transfer load with per-batch finality: sends a batch every `every` for `duration` (or
/// until `until` says stop), then drains for up to `drain`.
struct Load {
    client: TransferClient,
    sent_at: HashMap<u64, Instant>,
    finality: Vec<Duration>,
    last_sent: Option<Instant>,
}

impl Load {
    fn new(client: TransferClient) -> Load {
        Load {
            client,
            sent_at: HashMap::new(),
            finality: Vec::new(),
            last_sent: None,
        }
    }

    fn settle(&mut self) {
        self.client.poll_acks();
        let pending = &self.client.pending;
        let done: Vec<u64> = self
            .sent_at
            .keys()
            .copied()
            .filter(|id| !pending.contains_key(id))
            .collect();
        for id in done {
            let at = self.sent_at.remove(&id).expect("present");
            self.finality.push(at.elapsed());
        }
    }

    fn send(&mut self) {
        let id = self.client.next_batch;
        self.client.send_batch();
        self.sent_at.insert(id, Instant::now());
    }

    /// About 100 ms of a light load: a batch every 200 ms at most, with at most 50 batches
    /// unsettled (a node cut off from the quorum answers nothing until the heal).
    fn tick(&mut self) {
        let due = self
            .last_sent
            .is_none_or(|t| t.elapsed() >= Duration::from_millis(200));
        if due && self.client.pending.len() < 50 {
            self.send();
            self.last_sent = Some(Instant::now());
        }
        for _ in 0..50 {
            self.settle();
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    fn run_for(&mut self, duration: Duration, every: Duration) {
        let end = Instant::now() + duration;
        while Instant::now() < end {
            self.send();
            let next = Instant::now() + every;
            while Instant::now() < next {
                self.settle();
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }

    fn drain(&mut self, within: Duration) {
        let end = Instant::now() + within;
        while !self.client.pending.is_empty() && Instant::now() < end {
            self.settle();
            std::thread::sleep(Duration::from_millis(5));
        }
        self.settle();
    }

    /// (p50, p90, max) of the finality latencies (ms) so far, from `from` on.
    fn percentiles(&self, from: usize) -> (u128, u128, u128) {
        let mut v = self.finality[from.min(self.finality.len())..].to_vec();
        v.sort();
        let at = |q: f64| {
            v.get(((v.len() as f64 - 1.0) * q).round() as usize)
                .map_or(0, Duration::as_millis)
        };
        (at(0.5), at(0.9), at(1.0))
    }
}

#[test]
fn delay_jitter_and_loss_on_every_link_slow_but_do_not_stop_finality_under_load() {
    let _serial = serial();
    let started = Instant::now();
    let (mut net, proxy) = start(4, 1);
    net.wait_heights(&ALL, &[2; CNS], PROGRESS);
    let mut load = Load::new(TransferClient::new(net.nodes[0].ingress, CHAIN_ID, 0..32));

    // Baseline, no fault: 5 s.
    let h0 = top(&net, &ALL);
    let t0 = Instant::now();
    load.run_for(Duration::from_secs(5), Duration::from_millis(100));
    let clean_blocks = top(&net, &ALL) - h0;
    let clean_secs = t0.elapsed().as_secs_f64();
    let clean_batches = load.finality.len();
    let clean = load.percentiles(0);

    // 20-80 ms per chunk each way, 5 % of chunks "lost" (200 ms RTO, doubling), and the two
    // links of the pairs cn0-cn1 and cn2-cn3 200 ms slower on top.
    let shaped = Shape {
        delay_ms: 20,
        jitter_ms: 60,
        loss_percent: 5,
        rto_ms: 200,
    };
    let slow = Shape {
        delay_ms: 220,
        ..shaped
    };
    let slow_pair = |f: usize, t: usize| matches!((f.min(t), f.max(t)), (0, 1) | (2, 3));
    proxy.set_where(|f, t| !slow_pair(f, t), Fault::Shape(shaped));
    proxy.set_where(slow_pair, Fault::Shape(slow));
    let h1 = top(&net, &ALL);
    let t1 = Instant::now();
    let from = load.finality.len();
    load.run_for(Duration::from_secs(15), Duration::from_millis(100));
    let shaped_blocks = top(&net, &ALL) - h1;
    let shaped_secs = t1.elapsed().as_secs_f64();
    load.drain(PROGRESS);
    assert!(
        load.client.pending.is_empty(),
        "{} batches never answered FINAL; refusals {:?}",
        load.client.pending.len(),
        load.client.refused
    );
    let shaped_batches = load.finality.len() - from;
    let lossy = load.percentiles(from);
    assert!(
        shaped_blocks >= 5,
        "only {shaped_blocks} blocks in {shaped_secs:.1} s under delay"
    );
    let retransmits: u64 = proxy
        .links
        .iter()
        .map(|l| l.stats().retransmits.iter().sum::<u64>())
        .sum();
    assert!(retransmits > 0, "no simulated loss happened");
    let chains = stop_and_check_final(&mut net, &load.client);
    assert_eq!(
        load.client.finalized.len(),
        load.client.senders.len() * (load.client.next_batch as usize - 1),
        "every transaction sent was answered FINAL"
    );
    eprintln!(
        "no fault: {clean_blocks} blocks in {clean_secs:.1} s ({:.2} blocks/s), {clean_batches} batches, finality p50 {} ms p90 {} ms max {} ms\n\
         delay 20-80 ms (+200 ms on cn0-cn1, cn2-cn3), 5 % loss as 200 ms RTO: {shaped_blocks} blocks in {shaped_secs:.1} s ({:.2} blocks/s), {shaped_batches} batches, finality p50 {} ms p90 {} ms max {} ms, {retransmits} retransmitted chunks\n\
         {} txs final, refusals {:?}; chains {chains:?}; {:.1?}\n{}",
        clean_blocks as f64 / clean_secs,
        clean.0,
        clean.1,
        clean.2,
        shaped_blocks as f64 / shaped_secs,
        lossy.0,
        lossy.1,
        lossy.2,
        load.client.finalized.len(),
        load.client.refused,
        started.elapsed(),
        proxy.report()
    );
}

/// One round of the random schedule.
#[derive(Debug, Clone, Copy)]
enum Round {
    /// One CN cut from the rest.
    Isolate(usize),
    /// Two against two.
    Split(usize, usize),
    /// Everything one CN sends is lost.
    Mute(usize),
    /// Everything one CN receives is lost.
    Deaf(usize),
    /// Everything one CN sends or receives is lost, its connections staying up (a silent
    /// partition, no reset).
    Silent(usize),
    /// The links between two CNs cut (both still reach the other two).
    CutLink(usize, usize),
    /// Delay, jitter and loss on every link.
    Storm,
}

impl Round {
    fn draw(rng: &mut SimRng) -> Round {
        let n = rng.below(CNS as u64) as usize;
        let m = (n + 1 + rng.below(CNS as u64 - 1) as usize) % CNS;
        match rng.below(7) {
            0 => Round::Isolate(n),
            1 => Round::Split(n, m),
            2 => Round::Mute(n),
            3 => Round::Deaf(n),
            4 => Round::Silent(n),
            5 => Round::CutLink(n, m),
            _ => Round::Storm,
        }
    }

    fn apply(self, proxy: &FaultProxy) {
        match self {
            Round::Isolate(n) => proxy.set_where(|f, t| f == n || t == n, Fault::Cut),
            Round::Split(a, b) => {
                let side = [a, b];
                let other: Vec<usize> = ALL.into_iter().filter(|x| !side.contains(x)).collect();
                proxy.partition(&side, &other);
            }
            Round::Mute(n) => blackhole_node(proxy, n, true),
            Round::Deaf(n) => blackhole_node(proxy, n, false),
            Round::Silent(n) => {
                proxy.set_where(|f, t| f == n || t == n, Fault::Blackhole(Direction::Both))
            }
            Round::CutLink(a, b) => proxy.partition(&[a], &[b]),
            Round::Storm => proxy.set_where(
                |_, _| true,
                Fault::Shape(Shape {
                    delay_ms: 30,
                    jitter_ms: 100,
                    loss_percent: 10,
                    rto_ms: 200,
                }),
            ),
        }
    }

    /// The nodes that must keep finalizing while the fault lasts (empty: no one may).
    fn must_finalize(self) -> Vec<usize> {
        match self {
            Round::Isolate(n) | Round::Mute(n) | Round::Deaf(n) | Round::Silent(n) => {
                ALL.into_iter().filter(|&x| x != n).collect()
            }
            Round::Split(..) => vec![],
            Round::CutLink(a, b) => ALL.into_iter().filter(|&x| x != a && x != b).collect(),
            Round::Storm => ALL.to_vec(),
        }
    }

    /// The nodes that must not finalize while the fault lasts.
    fn must_stop(self) -> Vec<usize> {
        match self {
            Round::Isolate(n) | Round::Deaf(n) | Round::Silent(n) => vec![n],
            Round::Split(..) => ALL.to_vec(),
            _ => vec![],
        }
    }
}

/// Waits until the nodes `which` reach `target`, keeping a light load going.
fn wait_under_load(net: &mut Net, load: &mut Load, which: &[usize], target: u64) -> Duration {
    let started = Instant::now();
    let deadline = started + PROGRESS;
    loop {
        net.assert_running(which);
        let heights = net.heights(which);
        if heights.iter().all(|&h| h >= target) {
            return started.elapsed();
        }
        assert!(
            Instant::now() < deadline,
            "nodes {which:?} at {heights:?}, not at {target} after {PROGRESS:?}\n{}",
            tail(&net.nodes[which[0]].log(), 30)
        );
        load.tick();
    }
}

#[test]
fn a_seeded_random_schedule_of_faults_and_heals_keeps_safety_and_liveness() {
    let _serial = serial();
    let started = Instant::now();
    let seed = match std::env::var("CORECELL_FAULT_SEED") {
        Ok(s) => s.parse().expect("CORECELL_FAULT_SEED is a u64"),
        Err(_) => u64::from_le_bytes(nonce()[..8].try_into().expect("8 bytes")),
    };
    eprintln!("fault schedule seed {seed} (CORECELL_FAULT_SEED={seed} replays it)");
    let mut rng = SimRng::stream(seed, "fault schedule");
    let (mut net, proxy) = start(5, seed);
    net.wait_heights(&ALL, &[2; CNS], PROGRESS);
    let mut load = Load::new(TransferClient::new(net.nodes[1].ingress, CHAIN_ID, 0..16));
    let rounds = 10;
    let mut log = Vec::new();
    for r in 0..rounds {
        let round = Round::draw(&mut rng);
        let round_started = Instant::now();
        round.apply(&proxy);
        std::thread::sleep(SETTLE);
        let stop = round.must_stop();
        let stopped_at = if stop.is_empty() {
            vec![]
        } else {
            net.heights(&stop)
        };
        let go = round.must_finalize();
        let during = if go.is_empty() {
            Duration::ZERO
        } else {
            let target = top(&net, &go) + 2;
            wait_under_load(&mut net, &mut load, &go, target)
        };
        // The fault lasts at least HOLD, under load; whoever must stop stays where it was.
        loop {
            if !stop.is_empty() {
                assert_eq!(
                    net.heights(&stop),
                    stopped_at,
                    "round {r} {round:?}: nodes {stop:?} finalized without a quorum"
                );
            }
            if round_started.elapsed() >= HOLD {
                break;
            }
            load.tick();
        }
        assert_agree_now(&net);
        proxy.heal();
        let target = top(&net, &ALL) + 2;
        let after = wait_under_load(&mut net, &mut load, &ALL, target);
        log.push(format!(
            "{r}: {round:?}: progress during {during:.1?}, all +2 {after:.1?} after the heal ({:.1?} in all)",
            round_started.elapsed()
        ));
    }
    load.drain(PROGRESS);
    assert!(
        load.client.pending.is_empty(),
        "{} batches never answered FINAL; refusals {:?}",
        load.client.pending.len(),
        load.client.refused
    );
    assert!(!load.client.finalized.is_empty(), "nothing answered FINAL");
    let chains = stop_and_check_final(&mut net, &load.client);
    eprintln!(
        "seed {seed}:\n  {}\n{} txs final ({} batches pending), refusals {:?}; chains {chains:?}; {:.1?}\n{}",
        log.join("\n  "),
        load.client.finalized.len(),
        load.client.pending.len(),
        load.client.refused,
        started.elapsed(),
        proxy.report()
    );
}

const LINK_FAILURES: &str = "corecell_link_auth_failures_total";

#[test]
fn a_man_in_the_middle_who_flips_injects_or_replays_is_detected_and_nobody_is_banned() {
    let _serial = serial();
    let started = Instant::now();
    let (mut net, proxy) = start(6, 1);
    net.wait_heights(&ALL, &[3; CNS], PROGRESS);
    // The link from the lowest council index to the next carries a connection.
    let (dialer, listener) = {
        let mut by_index: Vec<usize> = ALL.to_vec();
        by_index.sort_by_key(|&i| council_index(&net, i));
        (by_index[0], by_index[1])
    };
    let link = proxy.link(dialer, listener);
    let mut report = Vec::new();
    for (k, tamper) in [Tamper::FlipByte, Tamper::Inject, Tamper::Replay]
        .into_iter()
        .enumerate()
    {
        let failures = net.sample(listener, LINK_FAILURES);
        let connections = link.stats().connections;
        link.set(Fault::Tamper(tamper));
        net.wait_metric(listener, LINK_FAILURES, failures + 1.0, PROGRESS);
        assert_eq!(link.stats().tampered, k as u64 + 1, "{tamper:?} done once");
        // The link is dialed again and the mesh is whole; no one was banned for it.
        let deadline = Instant::now() + PROGRESS;
        while link.stats().connections <= connections {
            assert!(
                Instant::now() < deadline,
                "{tamper:?}: the link never came back"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        net.wait_meshed(PROGRESS);
        for i in ALL {
            assert_eq!(
                net.sample(i, VIOLATIONS),
                0.0,
                "{tamper:?}: {} banned a peer\n{}",
                net.nodes[i].name,
                tail(&net.nodes[i].log(), 10)
            );
        }
        let took = progress(&mut net, &ALL, 2);
        report.push(format!(
            "{tamper:?}: refused, relinked, +2 blocks in {took:.1?}"
        ));
    }
    let chains = net.stop_all_and_assert_agree();
    eprintln!(
        "{}; chains {chains:?}; {:.1?}",
        report.join("; "),
        started.elapsed()
    );
}
