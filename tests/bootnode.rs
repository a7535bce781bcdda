//! Bootnodes end to end: a real `corecell node` bootnode process on loopback (ports
//! 62000-62999), asked by clients running `query_bootnode` on a glommio executor in the test.
//!
//! What these tests prove:
//!
//! 1. A PN bootnode refuses a PN that is not on its allowlist; once the test appends the PN's
//!    node id to the bootnode's config and sends SIGHUP, the same PN is admitted and
//!    registered, and a second PN is then told about the first. A config that fails to load
//!    on SIGHUP changes nothing; removing the PN again drops its registration at once.
//! 2. A CN bootnode admits council members on its allowlist only: not an allowlisted key
//!    outside the council, not a council member off the allowlist, not a council key claiming
//!    another role, not a node on another chain; and the client refuses a bootnode whose node
//!    id is not the one it expects.
//! 3. An EN bootnode tells ENs the registered and the static PNs, and never other ENs.
//! 4. Garbage bytes, a silent connection, too many connections from one address and an
//!    authenticated node sending the wrong frame are all dropped, and the bootnode keeps
//!    serving; SIGTERM stops it with exit 0.

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use corecell::config::genesis::NetworkSpec;
use corecell::config::keys::NodeKey;
use corecell::config::node::{PeerEntry, Role};
use corecell::net::bootnode::{
    query_bootnode, BootnodeError, DiscoveredPeer, MAX_SESSIONS_PER_IP, SESSION_TIMEOUT,
};
use corecell::net::handshake::{Handshake, HandshakeError, Side, AUTH_LEN, HELLO_LEN};
use corecell::node::metrics::scrape;
use corecell::types::frame::encode_frame;
use corecell::types::network::PeerQuery;

mod common;

use common::*;

/// A bootnode must answer within this after start or a reload.
const READY: Duration = Duration::from_secs(20);

/// A generated genesis with `cns` council members (their keys), in a temporary folder. The
/// generated CN configs are never started: only the genesis and the council keys are used.
struct Chain {
    tmp: tempfile::TempDir,
    genesis: PathBuf,
    council: Vec<NodeKey>,
}

fn chain(cns: usize) -> Chain {
    let tmp = tempfile::Builder::new()
        .prefix("corecell-bootnode-")
        .tempdir()
        .expect("tempdir");
    let spec = NetworkSpec {
        cns,
        pns: 0,
        ens: 0,
        host: "127.0.0.1".parse().expect("loopback"),
        base_port: 62000,
        committee_size: None,
        block_period_ms: 1000,
        accounts: 0,
        chain_id: CHAIN_ID,
        timestamp_ms: now_ms(),
        seed: None,
        execution: Default::default(),
    };
    let net = spec.generate(&tmp.path().join("net")).expect("generate");
    let council = net
        .nodes
        .iter()
        .map(|n| NodeKey::load(&n.config_path.with_file_name("key.toml")).expect("key"))
        .collect();
    Chain {
        genesis: net.genesis_path,
        council,
        tmp,
    }
}

fn new_key() -> NodeKey {
    NodeKey::generate().expect("OS randomness")
}

/// A bootnode's config, rendered to TOML by [`BootnodeSpec::write`].
struct BootnodeSpec {
    serves: Role,
    listen: SocketAddr,
    metrics: SocketAddr,
    allowlist: Vec<[u8; 20]>,
    static_peers: Vec<(Role, [u8; 20], SocketAddr)>,
}

impl BootnodeSpec {
    fn write(&self, path: &Path, genesis: &Path) {
        let hex = |id: &[u8; 20]| format!("\"0x{}\"", hex::encode(id));
        let mut text = format!(
            "role = \"bootnode\"\nname = \"boot\"\ngenesis = {:?}\nkey_file = \"key.toml\"\n\
             data_dir = \"data\"\n\n[bootnode]\nserves = \"{}\"\n\n[network]\nlisten = \"{}\"\n\
             allowlist = [{}]\n",
            genesis.display().to_string(),
            self.serves.name(),
            self.listen,
            self.allowlist
                .iter()
                .map(hex)
                .collect::<Vec<_>>()
                .join(", "),
        );
        for (i, (role, id, address)) in self.static_peers.iter().enumerate() {
            text += &format!(
                "\n[[network.peers]]\nname = \"static{i}\"\nrole = \"{}\"\nnode_id = {}\n\
                 address = \"{address}\"\n",
                role.name(),
                hex(id)
            );
        }
        text += &format!(
            "\n[metrics]\nlisten = \"{}\"\n\n[runtime]\nplacement = \"unbound\"\n",
            self.metrics
        );
        // Write then rename, so a reload never reads a half-written file.
        let tmp = path.with_extension("toml.new");
        std::fs::write(&tmp, text).expect("write config");
        std::fs::rename(&tmp, path).expect("rename config");
    }
}

/// A running bootnode process.
struct Bootnode {
    spec: BootnodeSpec,
    dir: PathBuf,
    genesis: PathBuf,
    entry: PeerEntry,
    proc: Proc,
}

impl Bootnode {
    fn start(chain: &Chain, spec: BootnodeSpec) -> Bootnode {
        for port in [spec.listen.port(), spec.metrics.port()] {
            assert!((62000..63000).contains(&port));
        }
        let dir = chain
            .tmp
            .path()
            .join(format!("boot-{}", spec.listen.port()));
        std::fs::create_dir_all(&dir).expect("bootnode folder");
        let key = new_key();
        key.write(&dir.join("key.toml"), false).expect("key file");
        spec.write(&dir.join("config.toml"), &chain.genesis);
        let log = std::fs::File::create(dir.join("node.log")).expect("log");
        let log2 = log.try_clone().expect("log");
        let mut command = Command::new(BIN);
        command
            .arg("node")
            .arg("--config")
            .arg(dir.join("config.toml"))
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2);
        let proc = Proc::spawn("bootnode", &mut command, false);
        let entry = PeerEntry {
            name: "boot".into(),
            role: Role::Bootnode,
            node_id: key.node_id,
            address: spec.listen,
        };
        let mut boot = Bootnode {
            spec,
            dir,
            genesis: chain.genesis.clone(),
            entry,
            proc,
        };
        boot.wait_listening();
        boot
    }

    fn log(&self) -> String {
        tail(&self.dir.join("node.log"), 40)
    }

    fn assert_running(&mut self) {
        if let Some(status) = self.proc.poll() {
            panic!("the bootnode exited ({status})\n{}", self.log());
        }
    }

    /// Waits until the bootnode's metrics answer and its p2p port accepts (the metrics
    /// endpoint starts before the listener, so both are checked).
    fn wait_listening(&mut self) {
        let deadline = Instant::now() + READY;
        loop {
            self.assert_running();
            if scrape(self.spec.metrics, Duration::from_secs(1)).is_ok()
                && TcpStream::connect_timeout(&self.spec.listen, Duration::from_secs(1)).is_ok()
            {
                return;
            }
            assert!(Instant::now() < deadline, "bootnode not up\n{}", self.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn metric(&self, name: &str) -> f64 {
        let samples = scrape(self.spec.metrics, Duration::from_secs(2)).expect("metrics");
        samples
            .into_iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v)
            .unwrap_or_else(|| panic!("no {name}"))
    }

    /// Waits until metric `name` reaches `at_least`.
    fn wait_metric(&mut self, name: &str, at_least: f64) {
        let deadline = Instant::now() + READY;
        loop {
            self.assert_running();
            let value = self.metric(name);
            if value >= at_least {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{name} is {value}, expected at least {at_least}\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Rewrites the config (the spec as changed) and sends SIGHUP.
    fn reload(&mut self) {
        self.spec
            .write(&self.dir.join("config.toml"), &self.genesis);
        self.proc.signal(libc::SIGHUP);
    }

    /// SIGTERM; the bootnode must exit 0.
    fn stop(mut self) {
        self.proc.signal(libc::SIGTERM);
        let status = self
            .proc
            .wait_until(Instant::now() + STOP)
            .unwrap_or_else(|| panic!("no exit after SIGTERM\n{}", self.log()));
        assert_eq!(status.code(), Some(0), "exit on SIGTERM\n{}", self.log());
    }
}

/// Runs `query_bootnode` on a fresh glommio executor.
fn query(
    boot: &PeerEntry,
    key: &NodeKey,
    chain_id: u64,
    role: Role,
    register: Option<SocketAddr>,
) -> Result<Vec<DiscoveredPeer>, BootnodeError> {
    let executor = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .io_memory(2 << 20)
        .make()
        .expect("glommio executor");
    executor.run(query_bootnode(boot, &key.secret, chain_id, role, register))
}

/// Queries until `done` holds for the result (the bootnode applies a reload within its
/// housekeeping interval); returns that result.
fn query_until(
    boot: &mut Bootnode,
    key: &NodeKey,
    role: Role,
    register: Option<SocketAddr>,
    what: &str,
    done: impl Fn(&Result<Vec<DiscoveredPeer>, BootnodeError>) -> bool,
) -> Result<Vec<DiscoveredPeer>, BootnodeError> {
    let deadline = Instant::now() + READY;
    loop {
        boot.assert_running();
        let result = query(&boot.entry, key, CHAIN_ID, role, register);
        if done(&result) {
            return result;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: last result {result:?}\n{}",
            boot.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn ids(peers: &[DiscoveredPeer]) -> Vec<[u8; 20]> {
    let mut v: Vec<_> = peers.iter().map(|p| p.node_id).collect();
    v.sort();
    v
}

fn sorted(mut v: Vec<[u8; 20]>) -> Vec<[u8; 20]> {
    v.sort();
    v
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

#[test]
fn pn_bootnode_admits_an_unlisted_pn_once_sighup_adds_it() {
    let _serial = serial();
    let chain = chain(1);
    let (pn_a, pn_b, en) = (new_key(), new_key(), new_key());
    let static_pn = new_key().node_id;
    let mut boot = Bootnode::start(
        &chain,
        BootnodeSpec {
            serves: Role::Pn,
            listen: loopback(62100),
            metrics: loopback(62101),
            allowlist: vec![pn_b.node_id, en.node_id],
            static_peers: vec![(Role::Pn, static_pn, loopback(62199))],
        },
    );
    let (a_listen, b_listen, en_listen) = (loopback(62110), loopback(62111), loopback(62112));

    // Not on the allowlist: refused, and the refusal is counted.
    let refused_before = boot.metric(REFUSED);
    match query(&boot.entry, &pn_a, CHAIN_ID, Role::Pn, Some(a_listen)) {
        Err(BootnodeError::NotAdmitted) => {}
        other => panic!("an unlisted PN got {other:?}"),
    }
    boot.wait_metric(REFUSED, refused_before + 1.0);

    // An allowlisted PN registers with an unspecified IP: the bootnode records the address
    // it sees. It is told only the static PN so far.
    let b_unspecified = SocketAddr::from(([0, 0, 0, 0], b_listen.port()));
    let peers = query(&boot.entry, &pn_b, CHAIN_ID, Role::Pn, Some(b_unspecified))
        .expect("an allowlisted PN is admitted");
    assert_eq!(ids(&peers), vec![static_pn]);
    assert_eq!(peers[0].address, loopback(62199));
    assert_eq!(peers[0].role, Role::Pn);

    // Add PN A at run time: the test appends its id and sends SIGHUP.
    boot.spec.allowlist.push(pn_a.node_id);
    boot.reload();
    let peers = query_until(
        &mut boot,
        &pn_a,
        Role::Pn,
        Some(a_listen),
        "PN A admitted after SIGHUP",
        |r| r.is_ok(),
    )
    .expect("admitted");
    assert_eq!(ids(&peers), sorted(vec![pn_b.node_id, static_pn]));
    let b = peers.iter().find(|p| p.node_id == pn_b.node_id).expect("B");
    assert_eq!(
        b.address, b_listen,
        "registered at the address the bootnode saw"
    );
    assert_eq!(b.role, Role::Pn);

    // The second PN now sees the first, at the address it registered.
    let peers = query(&boot.entry, &pn_b, CHAIN_ID, Role::Pn, Some(b_listen)).expect("B");
    assert_eq!(ids(&peers), sorted(vec![pn_a.node_id, static_pn]));
    let a = peers.iter().find(|p| p.node_id == pn_a.node_id).expect("A");
    assert_eq!((a.role, a.address), (Role::Pn, a_listen));
    assert_eq!(boot.metric(PEERS), 2.0, "two registered PNs");

    // An allowlisted EN at the PN bootnode is told the PNs, and registers so PNs find it.
    let peers = query(&boot.entry, &en, CHAIN_ID, Role::En, Some(en_listen)).expect("EN");
    assert_eq!(
        ids(&peers),
        sorted(vec![pn_a.node_id, pn_b.node_id, static_pn])
    );
    let peers = query(&boot.entry, &pn_a, CHAIN_ID, Role::Pn, None).expect("A again");
    assert!(peers
        .iter()
        .any(|p| p.node_id == en.node_id && p.role == Role::En && p.address == en_listen));

    // A config that does not load is not applied: the running allowlist stays.
    std::fs::write(boot.dir.join("config.toml"), "role = [not toml").expect("break config");
    boot.proc.signal(libc::SIGHUP);
    std::thread::sleep(Duration::from_millis(500));
    query(&boot.entry, &pn_a, CHAIN_ID, Role::Pn, None).expect("still admitted");
    assert!(
        std::fs::read_to_string(boot.dir.join("node.log"))
            .expect("log")
            .contains("directory reload refused"),
        "the refused reload is logged\n{}",
        boot.log()
    );

    // Removing A again refuses it and drops its registration at once.
    boot.spec.allowlist.retain(|id| *id != pn_a.node_id);
    boot.reload();
    let _ = query_until(
        &mut boot,
        &pn_a,
        Role::Pn,
        None,
        "PN A refused after removal",
        |r| matches!(r, Err(BootnodeError::NotAdmitted)),
    );
    let peers = query(&boot.entry, &pn_b, CHAIN_ID, Role::Pn, Some(b_listen)).expect("B");
    assert_eq!(ids(&peers), sorted(vec![en.node_id, static_pn]));
    boot.stop();
}

#[test]
fn cn_bootnode_admits_council_members_on_its_allowlist_only() {
    let _serial = serial();
    let chain = chain(3);
    let outsider = new_key();
    let [cn0, cn1, cn2] = [&chain.council[0], &chain.council[1], &chain.council[2]];
    let mut boot = Bootnode::start(
        &chain,
        BootnodeSpec {
            serves: Role::Cn,
            listen: loopback(62300),
            metrics: loopback(62301),
            allowlist: vec![cn0.node_id, cn1.node_id, outsider.node_id],
            static_peers: vec![],
        },
    );
    let peers = query(&boot.entry, cn0, CHAIN_ID, Role::Cn, Some(loopback(62310))).expect("cn0");
    assert!(peers.is_empty());
    let peers = query(&boot.entry, cn1, CHAIN_ID, Role::Cn, Some(loopback(62311))).expect("cn1");
    assert_eq!(ids(&peers), vec![cn0.node_id]);
    assert_eq!(peers[0].address, loopback(62310));

    for (who, key, role) in [
        (
            "an allowlisted key outside the council",
            &outsider,
            Role::Cn,
        ),
        ("a council member off the allowlist", cn2, Role::Cn),
        ("a council key claiming to be a PN", cn0, Role::Pn),
    ] {
        match query(&boot.entry, key, CHAIN_ID, role, None) {
            Err(BootnodeError::NotAdmitted) => {}
            other => panic!("{who} got {other:?}"),
        }
    }

    // Another chain: both ends refuse the handshake; the bootnode counts it.
    let refused = boot.metric(REFUSED);
    match query(&boot.entry, cn0, CHAIN_ID + 1, Role::Cn, None) {
        Err(BootnodeError::Handshake(HandshakeError::WrongChainId { .. })) => {}
        other => panic!("a node on another chain got {other:?}"),
    }
    boot.wait_metric(REFUSED, refused + 1.0);

    // The client refuses a bootnode that is not the one it expects.
    let mut impostor = boot.entry.clone();
    impostor.node_id = outsider.node_id;
    match query(&impostor, cn0, CHAIN_ID, Role::Cn, None) {
        Err(BootnodeError::Handshake(HandshakeError::NotAdmitted { .. })) => {}
        other => panic!("an unexpected bootnode id gave {other:?}"),
    }
    boot.stop();
}

#[test]
fn en_bootnode_tells_ens_the_pns() {
    let _serial = serial();
    let chain = chain(1);
    let (pn, en_a, en_b) = (new_key(), new_key(), new_key());
    let static_pn = new_key().node_id;
    let mut boot = Bootnode::start(
        &chain,
        BootnodeSpec {
            serves: Role::En,
            listen: loopback(62500),
            metrics: loopback(62501),
            allowlist: vec![pn.node_id, en_a.node_id, en_b.node_id],
            static_peers: vec![(Role::Pn, static_pn, loopback(62599))],
        },
    );
    query(&boot.entry, &pn, CHAIN_ID, Role::Pn, Some(loopback(62510))).expect("PN registers");
    let peers = query(
        &boot.entry,
        &en_a,
        CHAIN_ID,
        Role::En,
        Some(loopback(62511)),
    )
    .expect("EN A");
    assert_eq!(ids(&peers), sorted(vec![pn.node_id, static_pn]));
    assert!(peers.iter().all(|p| p.role == Role::Pn));
    let peers = query(&boot.entry, &en_b, CHAIN_ID, Role::En, None).expect("EN B");
    assert_eq!(
        ids(&peers),
        sorted(vec![pn.node_id, static_pn]),
        "ENs are not handed out by an EN bootnode"
    );
    boot.assert_running();
    boot.stop();
}

/// Runs the handshake by hand on a blocking socket (the client's side, admitting the
/// bootnode), so the test can then send what it likes.
fn authenticated_socket(boot: &PeerEntry, key: &NodeKey, role: Role) -> SealedSocket {
    let mut s = connect(boot.address);
    let mut hs = Handshake::new(
        Side::Dialer,
        &key.secret,
        CHAIN_ID,
        role,
        nonce(),
        key_exchange(),
    );
    s.write_all(&hs.hello()).expect("hello");
    let mut hello = [0u8; HELLO_LEN];
    read_exact_within(&mut s, &mut hello, IO).expect("bootnode hello");
    let auth = hs.on_peer_hello(&hello, |_, _| Ok(())).expect("auth");
    s.write_all(&auth).expect("auth");
    let mut peer_auth = [0u8; AUTH_LEN];
    read_exact_within(&mut s, &mut peer_auth, IO).expect("bootnode auth");
    let session = hs.on_peer_auth(&peer_auth).expect("bootnode authenticated");
    assert_eq!(session.peer.node_id, boot.node_id);
    SealedSocket::new(s, &session.keys)
}

#[test]
fn bootnode_drops_garbage_silent_and_rude_connections_and_keeps_serving() {
    let _serial = serial();
    let chain = chain(1);
    let pn = new_key();
    let mut boot = Bootnode::start(
        &chain,
        BootnodeSpec {
            serves: Role::Pn,
            listen: loopback(62700),
            metrics: loopback(62701),
            allowlist: vec![pn.node_id],
            static_peers: vec![],
        },
    );
    let addr = boot.spec.listen;

    // Garbage instead of a hello: closed at once.
    let mut s = connect(addr);
    s.write_all(&[0x5a; 300]).expect("garbage");
    let (closed, got) = read_until_closed(&mut s, PROMPT_CLOSE);
    assert!(closed, "garbage connection still open");
    assert!(
        got.len() <= HELLO_LEN,
        "nothing but the bootnode's hello came back"
    );

    // Too many connections from one address: the excess is closed at once, the others are
    // closed when their session times out.
    let silent: Vec<TcpStream> = (0..MAX_SESSIONS_PER_IP).map(|_| connect(addr)).collect();
    std::thread::sleep(Duration::from_millis(300));
    let mut excess = connect(addr);
    let (closed, got) = read_until_closed(&mut excess, PROMPT_CLOSE);
    assert!(
        closed && got.is_empty(),
        "connection over the per-address limit served"
    );
    let started = Instant::now();
    for mut s in silent {
        let left = (SESSION_TIMEOUT + Duration::from_secs(3)).saturating_sub(started.elapsed());
        let (closed, _) = read_until_closed(&mut s, left);
        assert!(
            closed,
            "silent connection not closed within the session timeout"
        );
    }

    // An authenticated node that sends the wrong frame is dropped and counted.
    let violations = boot.metric(VIOLATIONS);
    let mut s = authenticated_socket(&boot.entry, &pn, Role::Pn);
    s.write_sealed(&encode_frame(&corecell::types::network::SyncRequest {
        from_height: 1,
    }))
    .expect("wrong frame");
    let (closed, got) = s.read_until_closed(PROMPT_CLOSE);
    assert!(closed && got.is_empty(), "no answer to a wrong frame");
    boot.wait_metric(VIOLATIONS, violations + 1.0);

    // A registration at a multicast address is a violation too.
    let mut s = authenticated_socket(&boot.entry, &pn, Role::Pn);
    let multicast = SocketAddr::from(([224, 0, 0, 1], 30000));
    s.write_sealed(&encode_frame(&PeerQuery::new(Some(multicast))))
        .expect("query");
    let (closed, got) = s.read_until_closed(PROMPT_CLOSE);
    assert!(
        closed && got.is_empty(),
        "a multicast registration was answered"
    );
    boot.wait_metric(VIOLATIONS, violations + 2.0);

    // A proper query right after the handshake, one byte per record, sent byte by byte, is
    // still served.
    let mut s = authenticated_socket(&boot.entry, &pn, Role::Pn);
    let mut records = Vec::new();
    for byte in encode_frame(&PeerQuery::new(None)) {
        s.sealer.seal(&[byte], &mut records).expect("seal");
    }
    for byte in records {
        s.stream.write_all(&[byte]).expect("query byte");
        std::thread::sleep(Duration::from_millis(1));
    }
    let (closed, answer) = s.read_until_closed(IO);
    assert!(closed, "answer then close");
    assert!(answer.len() >= 5, "an answer");
    assert_eq!(answer[4], corecell::types::FrameKind::PeerList as u8);
    assert_eq!(
        answer.len() - 5,
        u32::from_be_bytes([answer[0], answer[1], answer[2], answer[3]]) as usize
    );

    // And the real client still works.
    let peers = query(&boot.entry, &pn, CHAIN_ID, Role::Pn, Some(loopback(62710))).expect("PN");
    assert!(peers.is_empty());
    boot.assert_running();
    boot.stop();
}
