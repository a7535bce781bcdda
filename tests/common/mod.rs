//! Helpers shared by the whole-node tests: child processes that are always reaped, generated
//! networks on loopback (four CNs, optionally with PNs, ENs and their bootnodes), metric
//! polling with deadlines, role-aware readiness, block log reading.
//!
//! Hygiene: every child process is owned by a guard ([`Proc`]) that kills and reaps it when
//! dropped, also when a test panics; every wait has a deadline; tests are serialized by
//! [`serial`]. Only 127.0.0.1 is used.

#![allow(dead_code)]

pub mod fault_proxy;

use std::collections::{HashMap, HashSet};
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use alloy_primitives::U256;
use corecell::config::genesis::test_account_secret;
use corecell::config::genesis::{Genesis, NetworkSpec};
use corecell::config::node::Role;
use corecell::crypto::tx::{sign_transfer, Transfer, TxType};
use corecell::exec::batch_frame;
use corecell::exec::transfer::BASE_FEE_WEI;
use corecell::net::HANDSHAKE_TIMEOUT;
use corecell::node::metrics::scrape;
pub use corecell::store::{finalized_headers, BlockDigest};
use corecell::types::chain::SignedTransaction;
use corecell::types::frame::{FrameDecoder, Message};
use corecell::types::hash::{keccak256, Hash32};
use corecell::types::network::IngressAck;
use corecell::types::BlockHeader;

pub const BIN: &str = env!("CARGO_BIN_EXE_corecell");
pub const CHAIN_ID: u64 = 1001;
pub const CNS: usize = 4;
/// Nodes get this long to come up and connect to every peer.
pub const STARTUP: Duration = Duration::from_secs(60);
/// A node gets this long to exit after SIGTERM (its own shutdown deadline is 10 s).
pub const STOP: Duration = Duration::from_secs(20);
/// Connect, write and single-message read timeout on raw sockets.
pub const IO: Duration = Duration::from_secs(5);
/// A refused connection must be closed well before the node's handshake timeout, so that a
/// close caused by the timeout (the node ignoring the bytes) fails the test.
pub const PROMPT_CLOSE: Duration = HANDSHAKE_TIMEOUT.saturating_sub(Duration::from_millis(500));

pub const HEIGHT: &str = "corecell_height";
pub const PEERS: &str = "corecell_peers";
pub const REFUSED: &str = "corecell_refused_handshakes_total";
pub const VIOLATIONS: &str = "corecell_peer_violations_total";
pub const ROUND_CHANGES: &str = "corecell_round_changes_total";
pub const PEERS_CN: &str = "corecell_peers_cn";
pub const PEERS_PN: &str = "corecell_peers_pn";
pub const PEERS_EN: &str = "corecell_peers_en";
pub const RELAYED: &str = "corecell_relayed_frames_total";
pub const DUPLICATES: &str = "corecell_duplicate_frames_total";
pub const POOL_ADMITTED: &str = "corecell_pool_admitted_total";

pub static SERIAL: Mutex<()> = Mutex::new(());

/// Runs tests one at a time even without `--test-threads=1`; a panicked test does not block
/// the others.
pub fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(PoisonError::into_inner)
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as u64
}

/// A fresh key exchange for a hand-run handshake (random ephemeral secret, encryption on).
pub fn key_exchange() -> corecell::net::handshake::KeyExchange {
    corecell::net::handshake::KeyExchange {
        secret: nonce(),
        encrypt: true,
    }
}

/// A blocking connection past a hand-run handshake: what the test sends is sealed into the
/// link's records (`corecell::net::record`), as a node's would be.
pub struct SealedSocket {
    pub stream: TcpStream,
    pub sealer: corecell::net::record::Sealer,
    pub opener: corecell::net::record::Opener,
}

impl SealedSocket {
    pub fn new(stream: TcpStream, keys: &corecell::net::handshake::SessionKeys) -> SealedSocket {
        SealedSocket {
            stream,
            sealer: keys.sealer(),
            opener: keys.opener(),
        }
    }

    /// Seals `bytes` into one record and sends it.
    pub fn write_sealed(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        let mut out = Vec::new();
        self.sealer
            .seal(bytes, &mut out)
            .map_err(std::io::Error::other)?;
        self.stream.write_all(&out)
    }

    /// Reads until the peer closes (or `within` passes); returns whether it closed and the
    /// plaintext of the records received (panics on a record that does not open).
    pub fn read_until_closed(&mut self, within: Duration) -> (bool, Vec<u8>) {
        let (closed, got) = read_until_closed(&mut self.stream, within);
        let mut plain = Vec::new();
        self.opener
            .open(&got, &mut plain)
            .expect("the node's records open");
        (closed, plain)
    }
}

pub fn nonce() -> [u8; 32] {
    let mut n = [0u8; 32];
    getrandom::fill(&mut n).expect("OS randomness");
    n
}

/// The last `lines` lines of a log file, for failure messages.
pub fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| format!("<{e}>"));
    let all: Vec<&str> = text.lines().collect();
    let from = all.len().saturating_sub(lines);
    format!(
        "--- last lines of {} ---\n{}",
        path.display(),
        all[from..].join("\n")
    )
}

/// Fails fast, with a clear message, if something already listens on a port the network
/// needs (p2p base+k, JSON-RPC base+1000+k, metrics base+2000+k, ingress base+3000+k). It
/// connects rather than binds: the nodes' p2p and ingress listeners use `SO_REUSEPORT`
/// (glommio), so a bind test would trip over a previous run's TIME_WAIT sockets, while a
/// second node process could still bind next to a live one and silently share its
/// connections.
pub fn assert_ports_free(base: u16, nodes: usize) {
    for k in 0..nodes as u16 {
        for port in [base + k, base + 1000 + k, base + 2000 + k, base + 3000 + k] {
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            if let Ok(stream) = TcpStream::connect_timeout(&addr, Duration::from_secs(1)) {
                // A connection to itself (ephemeral-range port, nothing listening) is not a
                // listener; dropping it frees the port.
                if stream.local_addr().ok() != Some(addr) {
                    panic!(
                        "something already listens on {addr}; is another network running there?"
                    );
                }
            }
        }
    }
}

/// A child process that is killed (SIGKILL) and reaped when dropped, unless it was already
/// reaped. With `group`, the child leads a process group of its own, and the whole group is
/// killed (for `corecell testnet`, whose nodes are its children).
pub struct Proc {
    pub name: String,
    pub child: Child,
    pub status: Option<ExitStatus>,
    pub group: bool,
}

impl Proc {
    pub fn spawn(name: &str, command: &mut Command, group: bool) -> Proc {
        if group {
            command.process_group(0);
        }
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name}: {e}"));
        Proc {
            name: name.to_string(),
            child,
            status: None,
            group,
        }
    }

    /// The exit status if the process has exited (it is then reaped).
    pub fn poll(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self
                .child
                .try_wait()
                .unwrap_or_else(|e| panic!("waiting for {}: {e}", self.name));
        }
        self.status
    }

    /// Waits for the exit until `deadline`; `None` if it is still running then.
    pub fn wait_until(&mut self, deadline: Instant) -> Option<ExitStatus> {
        loop {
            if let Some(status) = self.poll() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends `signal` to the (still running, unreaped) process.
    pub fn signal(&mut self, signal: libc::c_int) {
        assert!(
            self.poll().is_none(),
            "{} exited before it was signalled",
            self.name
        );
        // SAFETY: kill(2) on our own child, which `poll` just saw running and which is not
        // reaped, so the pid cannot have been reused.
        let rc = unsafe { libc::kill(self.child.id() as libc::pid_t, signal) };
        assert_eq!(rc, 0, "kill({}, {signal})", self.name);
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let clean_exit = self.status.is_some_and(|s| s.success());
        if self.group && !clean_exit {
            // SAFETY: the group was created for this child (`process_group(0)`), so its id is
            // the child's pid. Either the leader is not reaped yet, or it failed and its
            // orphaned children (still in the group) keep the id from being reused.
            unsafe {
                libc::kill(-(self.child.id() as libc::pid_t), libc::SIGKILL);
            }
        }
        if self.status.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// One node of a generated network.
pub struct Node {
    pub name: String,
    pub role: Role,
    pub dir: PathBuf,
    pub node_id: [u8; 20],
    pub p2p: SocketAddr,
    pub metrics: SocketAddr,
    /// The node's ingress port (base+3000+k). Only nodes with `serves_ingress` listen there:
    /// the CNs of a network without ENs, and ENs.
    pub ingress: SocketAddr,
    pub serves_ingress: bool,
    /// JSON-RPC address (ENs).
    pub rpc: Option<SocketAddr>,
    pub proc: Option<Proc>,
}

impl Node {
    pub fn log(&self) -> PathBuf {
        self.dir.join("node.log")
    }

    pub fn metric(&self, name: &str) -> Option<f64> {
        let samples = scrape(self.metrics, Duration::from_secs(1)).ok()?;
        samples.into_iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }

    /// Every metric sample of the node, or `None` if its metrics endpoint does not answer.
    pub fn metrics(&self) -> Option<Vec<(String, f64)>> {
        scrape(self.metrics, Duration::from_secs(1)).ok()
    }

    /// The JSON-RPC URL of an EN.
    pub fn rpc_url(&self) -> String {
        let rpc = self
            .rpc
            .unwrap_or_else(|| panic!("{} serves no JSON-RPC", self.name));
        format!("http://{rpc}")
    }

    /// Whether the node is running (not yet exited).
    pub fn is_running(&mut self) -> bool {
        self.proc.as_mut().is_some_and(|p| p.poll().is_none())
    }

    /// Panics (with the node's log) if the node has exited.
    pub fn assert_running(&mut self) {
        let name = self.name.clone();
        if let Some(status) = self.proc.as_mut().and_then(Proc::poll) {
            panic!(
                "{name} exited unexpectedly ({status})\n{}",
                tail(&self.log(), 40)
            );
        }
    }
}

/// The value of `name` among scraped `samples`.
pub fn sample_of(samples: &[(String, f64)], name: &str) -> Option<f64> {
    samples.iter().find(|(n, _)| n == name).map(|(_, v)| *v)
}

/// A generated network (four CNs; optionally PNs, ENs and their bootnodes, in the
/// generator's order: cns, pns, ens, `boot-pn`, `boot-en`) in a temporary folder, and its
/// running nodes.
pub struct Net {
    /// Declared first so the processes die before their folders are removed.
    pub nodes: Vec<Node>,
    pub genesis: Genesis,
    pub _tmp: tempfile::TempDir,
}

impl Net {
    /// Generates a network (genesis time now) with ports from `base_port` and starts every
    /// node, then waits until each sees its three peers.
    pub fn start(base_port: u16, block_period_ms: u64) -> Net {
        let mut net = Net::generate(base_port, block_period_ms, 16, None);
        net.spawn_all();
        net
    }

    /// Generates a four-CN network (genesis time now, `accounts` test accounts) with ports
    /// from `base_port` without starting it; `snapshot_interval` sets every node's
    /// `storage.snapshot_interval_blocks`.
    pub fn generate(
        base_port: u16,
        block_period_ms: u64,
        accounts: usize,
        snapshot_interval: Option<u64>,
    ) -> Net {
        let net = Net::generate_tiers(base_port, block_period_ms, accounts, 0, 0);
        if let Some(every) = snapshot_interval {
            for node in &net.nodes {
                let path = node.dir.join("config.toml");
                let text = std::fs::read_to_string(&path).expect("config");
                let default = "snapshot_interval_blocks = 1000";
                assert!(text.contains(default), "generated configs set the default");
                let text = text.replace(default, &format!("snapshot_interval_blocks = {every}"));
                std::fs::write(&path, text).expect("config");
            }
        }
        net
    }

    /// Generates a tiered network without starting it: four CNs, `pns` PNs (PN j in CN
    /// j mod 4's cell), `ens` ENs (with JSON-RPC and native ingress; the CNs then have no
    /// ingress), and the PN and EN bootnodes; genesis time now, `accounts` test accounts,
    /// ports from `base_port` (node k: p2p base+k, JSON-RPC base+1000+k, metrics base+2000+k,
    /// ingress base+3000+k).
    pub fn generate_tiers(
        base_port: u16,
        block_period_ms: u64,
        accounts: usize,
        pns: usize,
        ens: usize,
    ) -> Net {
        let tmp = tempfile::Builder::new()
            .prefix("corecell-network-")
            .tempdir()
            .expect("tempdir");
        let spec = NetworkSpec {
            cns: CNS,
            pns,
            ens,
            host: "127.0.0.1".parse().expect("loopback"),
            base_port,
            committee_size: None,
            block_period_ms,
            accounts,
            chain_id: CHAIN_ID,
            timestamp_ms: now_ms(),
            seed: None,
            execution: Default::default(),
        };
        assert_ports_free(base_port, spec.node_count());
        let generated = spec.generate(&tmp.path().join("net")).expect("generate");
        let genesis = Genesis::load(&generated.genesis_path, corecell::exec::genesis_state_root)
            .expect("genesis loads");
        let nodes: Vec<Node> = generated
            .nodes
            .iter()
            .enumerate()
            .map(|(k, n)| {
                let ingress_port = base_port + 3000 + u16::try_from(k).expect("few nodes");
                if let Some(ingress) = n.ingress {
                    assert_eq!(ingress.port(), ingress_port, "ingress at base+3000+k");
                }
                Node {
                    name: n.name.clone(),
                    role: n.role,
                    dir: n.config_path.parent().expect("node folder").to_path_buf(),
                    node_id: n.node_id,
                    p2p: n.p2p,
                    metrics: n.metrics,
                    ingress: SocketAddr::new(n.p2p.ip(), ingress_port),
                    serves_ingress: n.ingress.is_some(),
                    rpc: n.rpc,
                    proc: None,
                }
            })
            .collect();
        if pns == 0 && ens == 0 {
            assert!(
                nodes.iter().all(|n| n.role == Role::Cn && n.serves_ingress),
                "a CN-only network takes clients at its CNs"
            );
        }
        Net {
            nodes,
            genesis,
            _tmp: tmp,
        }
    }

    /// The index of the node named `name`.
    pub fn index(&self, name: &str) -> usize {
        self.nodes
            .iter()
            .position(|n| n.name == name)
            .unwrap_or_else(|| panic!("no node named {name}"))
    }

    /// The indices of the nodes of `role`, in order.
    pub fn of_role(&self, role: Role) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&i| self.nodes[i].role == role)
            .collect()
    }

    /// The indices of the nodes that keep a chain (CNs, PNs, ENs: all but bootnodes).
    pub fn chain_nodes(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&i| self.nodes[i].role != Role::Bootnode)
            .collect()
    }

    /// Starts node `i` (again, after a kill: its log is appended to).
    pub fn spawn(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        assert!(
            node.proc.as_mut().is_none_or(|p| p.poll().is_some()),
            "{} is still running",
            node.name
        );
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(node.log())
            .expect("node log");
        let log2 = log.try_clone().expect("node log");
        let mut command = Command::new(BIN);
        command
            .arg("node")
            .arg("--config")
            .arg(node.dir.join("config.toml"))
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2);
        node.proc = Some(Proc::spawn(&node.name, &mut command, false));
    }

    /// Starts every node (bootnodes first) and waits until each is ready ([`Net::wait_ready`]).
    pub fn spawn_all(&mut self) {
        self.spawn_all_unready();
        self.wait_ready(STARTUP);
    }

    /// Lines of node `i`'s log that contain `needle`.
    pub fn log_lines(&self, i: usize, needle: &str) -> usize {
        std::fs::read_to_string(self.nodes[i].log())
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains(needle))
            .count()
    }

    /// Starts every node (bootnodes first) without waiting for them to connect.
    pub fn spawn_all_unready(&mut self) {
        let mut order = self.of_role(Role::Bootnode);
        order.extend(self.chain_nodes());
        for i in order {
            self.spawn(i);
        }
    }

    /// Waits until node `i` reports `name` satisfying `ok`.
    pub fn wait_until_metric(
        &mut self,
        i: usize,
        name: &str,
        ok: impl Fn(f64) -> bool,
        within: Duration,
    ) {
        let deadline = Instant::now() + within;
        loop {
            self.assert_running(&[i]);
            let value = self.nodes[i].metric(name);
            if value.is_some_and(&ok) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{}: {name} is {value:?} after {within:?}\n{}",
                self.nodes[i].name,
                tail(&self.nodes[i].log(), 20)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Whether node `i` is connected as its role requires, from its scraped `samples`: a CN
    /// to every other CN; a PN to at least one CN and every other PN; an EN to every PN; a
    /// bootnode serves metrics.
    pub fn is_ready(&self, i: usize, samples: &[(String, f64)]) -> bool {
        let count = |role: Role| self.nodes.iter().filter(|n| n.role == role).count() as f64;
        let m = |name: &str| sample_of(samples, name);
        match self.nodes[i].role {
            Role::Cn => m(PEERS_CN) == Some(count(Role::Cn) - 1.0),
            Role::Pn => {
                m(PEERS_CN).is_some_and(|n| n >= 1.0) && m(PEERS_PN) == Some(count(Role::Pn) - 1.0)
            }
            Role::En => m(PEERS_PN) == Some(count(Role::Pn)),
            Role::Bootnode => m(PEERS).is_some(),
        }
    }

    /// Waits until every started node is ready ([`Net::is_ready`]); panics (with the peer
    /// counts of the nodes not ready, and a log tail) after `within`.
    pub fn wait_ready(&mut self, within: Duration) {
        let which: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| self.nodes[i].proc.is_some())
            .collect();
        self.wait_ready_of(&which, within);
    }

    /// Waits until each node in `which` is ready ([`Net::is_ready`]).
    pub fn wait_ready_of(&mut self, which: &[usize], within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            self.assert_running(which);
            let mut waiting = Vec::new();
            for &i in which {
                let samples = self.nodes[i].metrics().unwrap_or_default();
                if !self.is_ready(i, &samples) {
                    let m = |name: &str| sample_of(&samples, name);
                    waiting.push(format!(
                        "{} (peers cn {:?} pn {:?} en {:?})",
                        self.nodes[i].name,
                        m(PEERS_CN),
                        m(PEERS_PN),
                        m(PEERS_EN)
                    ));
                }
            }
            if waiting.is_empty() {
                return;
            }
            if Instant::now() >= deadline {
                let first = which
                    .iter()
                    .copied()
                    .find(|&i| waiting[0].starts_with(&self.nodes[i].name))
                    .unwrap_or(which[0]);
                panic!(
                    "not ready within {within:?}: {}\n{}",
                    waiting.join(", "),
                    tail(&self.nodes[first].log(), 30)
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Kill -9 node `i` and reaps it.
    pub fn kill(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        let p = node.proc.as_mut().expect("running");
        p.signal(libc::SIGKILL);
        let status = p.wait_until(Instant::now() + IO).expect("dies on SIGKILL");
        assert!(!status.success());
    }

    /// SIGTERM to the nodes `which`; each must exit 0 within [`STOP`].
    pub fn stop(&mut self, which: &[usize]) {
        for &i in which {
            self.nodes[i]
                .proc
                .as_mut()
                .expect("running")
                .signal(libc::SIGTERM);
        }
        let deadline = Instant::now() + STOP;
        for &i in which {
            let node = &mut self.nodes[i];
            let status = node.proc.as_mut().expect("running").wait_until(deadline);
            match status {
                Some(s) => assert_eq!(
                    s.code(),
                    Some(0),
                    "{} exited with {s} on SIGTERM\n{}",
                    node.name,
                    tail(&node.log(), 30)
                ),
                None => panic!(
                    "{} did not exit within {STOP:?} of SIGTERM\n{}",
                    node.name,
                    tail(&node.log(), 30)
                ),
            }
        }
    }

    pub fn assert_running(&mut self, which: &[usize]) {
        for &i in which {
            self.nodes[i].assert_running();
        }
    }

    /// Waits until every node reports `corecell_peers == 3`.
    pub fn wait_meshed(&mut self, within: Duration) {
        let deadline = Instant::now() + within;
        let all: Vec<usize> = (0..self.nodes.len()).collect();
        loop {
            self.assert_running(&all);
            let peers: Vec<Option<f64>> = self.nodes.iter().map(|n| n.metric(PEERS)).collect();
            if peers.iter().all(|p| *p == Some((CNS - 1) as f64)) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "nodes not meshed within {within:?}: peers {peers:?}\n{}",
                tail(&self.nodes[0].log(), 20)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// A metric of node `i`, retried for a few seconds (the metrics thread may be busy).
    pub fn sample(&self, i: usize, name: &str) -> f64 {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(v) = self.nodes[i].metric(name) {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "{}: no {name} from {}",
                self.nodes[i].name,
                self.nodes[i].metrics
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn heights(&self, which: &[usize]) -> Vec<u64> {
        which
            .iter()
            .map(|&i| self.sample(i, HEIGHT) as u64)
            .collect()
    }

    /// Waits until metric `name` of node `i` reaches `at_least`.
    pub fn wait_metric(&mut self, i: usize, name: &str, at_least: f64, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            self.assert_running(&[i]);
            let value = self.nodes[i].metric(name);
            if value.is_some_and(|v| v >= at_least) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{}: {name} is {value:?} after {within:?}, expected at least {at_least}\n{}",
                self.nodes[i].name,
                tail(&self.nodes[i].log(), 20)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until each node `which[j]` reports a height of at least `targets[j]`, checking
    /// that every node in `which` keeps running.
    pub fn wait_heights(&mut self, which: &[usize], targets: &[u64], within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            self.assert_running(which);
            let now: Vec<Option<u64>> = which
                .iter()
                .map(|&i| self.nodes[i].metric(HEIGHT).map(|h| h as u64))
                .collect();
            if now
                .iter()
                .zip(targets)
                .all(|(h, t)| h.is_some_and(|h| h >= *t))
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "heights of nodes {which:?} are {now:?} after {within:?}, expected at least {targets:?}\n{}",
                tail(&self.nodes[which[0]].log(), 30)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The whole blocks (header hash and body digest) of node `i`'s block log, by height
    /// from 1.
    pub fn chain(&self, i: usize) -> Vec<BlockDigest> {
        let node = &self.nodes[i];
        read_chain(&node.dir.join("data"), &self.genesis, &node.name)
    }

    /// The headers of node `i`'s block log, by height from 1 (works on a running node).
    pub fn headers(&self, i: usize) -> Vec<BlockHeader> {
        let node = &self.nodes[i];
        let data = node.dir.join("data");
        finalized_headers(&data, &self.genesis.header())
            .unwrap_or_else(|e| panic!("{}: reading {}: {e}", node.name, data.display()))
    }

    /// The (name, chain) of each node in `which`, for [`assert_agree`].
    pub fn chains(&self, which: &[usize]) -> Vec<(String, Vec<BlockDigest>)> {
        which
            .iter()
            .map(|&i| (self.nodes[i].name.clone(), self.chain(i)))
            .collect()
    }

    /// SIGTERM to every running node (each must exit 0), then the block logs of every
    /// chain-keeping node that was ever started must agree at every height; returns the
    /// chains' lengths.
    pub fn stop_all_and_assert_agree(&mut self) -> Vec<(String, usize)> {
        let running: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| self.nodes[i].is_running())
            .collect();
        self.stop(&running);
        let started: Vec<usize> = self
            .chain_nodes()
            .into_iter()
            .filter(|&i| self.nodes[i].proc.is_some())
            .collect();
        let chains = self.chains(&started);
        assert_agree(&chains);
        chains.iter().map(|(n, c)| (n.clone(), c.len())).collect()
    }
}

pub fn read_chain(data_dir: &Path, genesis: &Genesis, name: &str) -> Vec<BlockDigest> {
    corecell::store::finalized_block_digests(data_dir, &genesis.header())
        .unwrap_or_else(|e| panic!("{name}: reading {}: {e}", data_dir.display()))
}

/// Every two chains hold the same whole block (header hash and body) at every height both
/// have.
pub fn assert_agree(chains: &[(String, Vec<BlockDigest>)]) {
    let longest = chains.iter().map(|(_, c)| c.len()).max().unwrap_or(0);
    for h in 0..longest {
        let mut holders = chains.iter().filter_map(|(n, c)| c.get(h).map(|x| (n, x)));
        if let Some((first_name, first)) = holders.next() {
            for (name, hash) in holders {
                assert_eq!(
                    hash,
                    first,
                    "{name} and {first_name} disagree at height {}",
                    h + 1
                );
            }
        }
    }
}

pub fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect_timeout(&addr, IO).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.set_nodelay(true).expect("nodelay");
    s.set_write_timeout(Some(IO)).expect("write timeout");
    s
}

pub fn read_exact_within(
    s: &mut TcpStream,
    buf: &mut [u8],
    within: Duration,
) -> std::io::Result<()> {
    s.set_read_timeout(Some(within))?;
    s.read_exact(buf)
}

/// Reads until the peer closes the connection (EOF or reset) or `within` passes. Returns
/// whether it closed, and the bytes received before (at most 1 MiB kept).
pub fn read_until_closed(s: &mut TcpStream, within: Duration) -> (bool, Vec<u8>) {
    let deadline = Instant::now() + within;
    let mut got = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return (false, got);
        }
        s.set_read_timeout(Some(left)).expect("read timeout");
        match s.read(&mut buf) {
            Ok(0) => return (true, got),
            Ok(n) => {
                if got.len() < 1 << 20 {
                    got.extend_from_slice(&buf[..n]);
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::ConnectionReset
                        | ErrorKind::ConnectionAborted
                        | ErrorKind::BrokenPipe
                ) =>
            {
                return (true, got)
            }
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                ) => {}
            Err(e) => panic!("reading: {e}"),
        }
    }
}

/// Sends signed transfers to one node's native ingress port (a CN's, or an EN's) and tracks the
/// answers.
pub struct TransferClient {
    pub addr: SocketAddr,
    pub stream: Option<TcpStream>,
    pub decoder: FrameDecoder,
    pub chain_id: u64,
    /// (secret, next nonce) of each sender this client uses.
    pub senders: Vec<([u8; 32], u64)>,
    pub next_batch: u64,
    /// Unsettled batches: id -> transaction hashes.
    pub pending: HashMap<u64, Vec<Hash32>>,
    /// Unsettled batches' frames, sent again on a new connection.
    pub frames: HashMap<u64, Vec<u8>>,
    /// FINAL counts so far per pending batch.
    pub final_counts: HashMap<u64, u32>,
    /// Transactions of batches answered FINAL in full.
    pub finalized: HashSet<Hash32>,
    /// Non-FINAL answers, by status name.
    pub refused: HashMap<&'static str, u64>,
}

impl TransferClient {
    pub fn new(addr: SocketAddr, chain_id: u64, accounts: std::ops::Range<u64>) -> TransferClient {
        TransferClient {
            addr,
            stream: None,
            decoder: FrameDecoder::new(),
            chain_id,
            senders: accounts.map(|i| (test_account_secret(i), 0)).collect(),
            next_batch: 1,
            pending: HashMap::new(),
            frames: HashMap::new(),
            final_counts: HashMap::new(),
            finalized: HashSet::new(),
            refused: HashMap::new(),
        }
    }

    /// The connection, made anew if there is none. On a new connection the batches still
    /// unsettled are sent again, as a client must when its node restarted (its pool is gone);
    /// whatever is still pooled there is refused as a duplicate.
    pub fn connected(&mut self) -> Option<&mut TcpStream> {
        if self.stream.is_none() {
            let mut s = TcpStream::connect_timeout(&self.addr, IO).ok()?;
            s.set_nodelay(true).ok()?;
            s.set_write_timeout(Some(IO)).ok()?;
            s.set_read_timeout(Some(Duration::from_millis(2))).ok()?;
            self.decoder = FrameDecoder::new();
            let mut unsettled: Vec<(&u64, &Vec<u8>)> = self.frames.iter().collect();
            unsettled.sort_unstable_by_key(|(id, _)| **id);
            for (_, frame) in unsettled {
                s.write_all(frame).ok()?;
            }
            self.stream = Some(s);
        }
        self.stream.as_mut()
    }

    /// Sends one batch: the next transfer of every sender (to the next sender, 1 wei).
    pub fn send_batch(&mut self) {
        let n = self.senders.len();
        let mut txs = Vec::with_capacity(n);
        let mut hashes = Vec::with_capacity(n);
        for k in 0..n {
            let to = corecell::crypto::tx::address_of_secret(&self.senders[(k + 1) % n].0)
                .expect("test key");
            let (secret, nonce) = &mut self.senders[k];
            let bytes = sign_transfer(
                secret,
                TxType::Eip1559,
                &Transfer {
                    chain_id: self.chain_id,
                    nonce: *nonce,
                    to,
                    value: U256::from(1u8),
                    gas_limit: 21_000,
                    max_fee_per_gas: 2 * BASE_FEE_WEI,
                    max_priority_fee_per_gas: 1_000_000_000,
                },
            )
            .expect("signs");
            *nonce += 1;
            hashes.push(keccak256(&bytes));
            txs.push(SignedTransaction { bytes });
        }
        let id = self.next_batch;
        self.next_batch += 1;
        let frame = batch_frame(id, txs);
        let sent = self
            .connected()
            .map(|s| s.write_all(&frame).is_ok())
            .unwrap_or(false);
        // Kept either way: a failed send goes out again with the next connection.
        self.pending.insert(id, hashes);
        self.frames.insert(id, frame);
        if !sent {
            self.stream = None;
        }
    }

    /// Reads whatever answers have arrived.
    pub fn poll_acks(&mut self) {
        let mut buf = [0u8; 16 * 1024];
        loop {
            let Some(stream) = self.stream.as_mut() else {
                return;
            };
            let n = match stream.read(&mut buf) {
                Ok(0) => {
                    self.stream = None;
                    return;
                }
                Ok(n) => n,
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => return,
                Err(_) => {
                    self.stream = None;
                    return;
                }
            };
            let mut input = &buf[..n];
            while let Ok(Some(frame)) = self.decoder.decode(&mut input) {
                let Ok(Message::IngressAck(ack)) = frame.message() else {
                    panic!(
                        "the node sent a {} frame on the ingress port",
                        frame.kind.name()
                    );
                };
                let id = ack.batch_id.to_native();
                let count = ack.count.to_native();
                if ack.status == IngressAck::FINAL {
                    let total = self.final_counts.entry(id).or_default();
                    *total += count;
                    if let Some(hashes) = self.pending.get(&id) {
                        if *total as usize == hashes.len() {
                            let hashes = self.pending.remove(&id).expect("present");
                            self.frames.remove(&id);
                            self.finalized.extend(hashes);
                        }
                    }
                } else {
                    *self
                        .refused
                        .entry(IngressAck::status_name(ack.status))
                        .or_default() += count as u64;
                }
            }
        }
    }

    /// Sends a batch every `every` for `duration`, reading answers in between.
    pub fn run_for(&mut self, duration: Duration, every: Duration) {
        let end = Instant::now() + duration;
        while Instant::now() < end {
            self.send_batch();
            let next = Instant::now() + every;
            while Instant::now() < next {
                self.poll_acks();
            }
        }
    }

    /// Reads answers until every batch is settled FINAL or `within` passes.
    pub fn drain(&mut self, within: Duration) {
        let end = Instant::now() + within;
        while !self.pending.is_empty() && Instant::now() < end {
            self.poll_acks();
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// Every transaction hash in a data directory's block log.
pub fn chain_transactions(data: &Path, genesis: &Genesis) -> HashSet<Hash32> {
    let recovered = corecell::store::recover(data, &genesis.header()).expect("recovers");
    let mut out = HashSet::new();
    corecell::store::replay_blocks(data, &recovered.index, 1, |block| {
        for tx in block.block.transactions.iter() {
            out.insert(keccak256(&tx.bytes));
        }
        Ok(())
    })
    .expect("replays");
    out
}
