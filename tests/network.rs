//! The CN mesh end to end: real `corecell` node processes on loopback.
//!
//! What these tests prove:
//!
//! 1. A network of four CNs under load (`corecell testnet`) finalizes at least 20 blocks, and
//!    every node's block log holds the same hash at every height: checked by the testnet's own
//!    report and, independently, by reading each node's `data/` here.
//! 2. The mesh admits council members only: a well-formed handshake signed by a key outside
//!    the council is refused before the node signs anything (no `Auth` comes back), the
//!    refusal is counted, and consensus carries on.
//! 3. Hostile bytes do not hurt a node: random garbage on the p2p port, a frame header
//!    declaring `u32::MAX` bytes on the ingress port, and a council member's handshake replayed
//!    from an earlier session are all refused (connection closed, nothing accepted), and every
//!    node keeps finalizing.
//! 4. With one of four CNs killed (f = 1), the other three keep finalizing, stop cleanly on
//!    SIGTERM (exit 0), and their block logs agree.
//! 5. Connection floods do not lock the peers out: silent connections from one address hold
//!    at most that address's share of the handshake slots; from many addresses they fill the
//!    shared slots, but a peer connecting from a known address still gets through.
//! 6. Slowloris clients cannot hold the ingress port: a client that dribbles a frame is closed
//!    at the frame deadline, and a new client takes the slot of the longest-idle one.
//!
//! Hygiene: every child process is owned by a guard ([`Proc`]) that kills and reaps it when
//! dropped, also when a test panics; every wait has a deadline; the tests are serialized by a
//! mutex (the nodes need the CPU more than the tests need parallelism) and use distinct port
//! ranges as well. Nodes use 127.0.0.1 only; the flood and slowloris attackers connect from
//! other loopback addresses (127.0.0.2 to 127.0.0.9).

use std::fs::File;
use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use corecell::config::genesis::Genesis;
use corecell::config::keys::NodeKey;
use corecell::config::node::Role;
use corecell::crypto::bls::BlsSecretKey;
use corecell::net::handshake::{Handshake, Side, AUTH_LEN, HANDSHAKE_MAGIC, HELLO_LEN};
use corecell::types::FrameKind;

mod common;

use common::*;

#[test]
fn four_cns_finalize_twenty_blocks_with_identical_hashes() {
    let _serial = serial();
    let started = Instant::now();
    let base: u16 = 40000;
    assert_ports_free(base, CNS);
    let tmp = tempfile::Builder::new()
        .prefix("corecell-testnet-")
        .tempdir()
        .expect("tempdir");
    let net_dir = tmp.path().join("net");
    let json = tmp.path().join("r.json");
    let output = tmp.path().join("testnet.log");
    let log = File::create(&output).expect("testnet log");
    let log2 = log.try_clone().expect("testnet log");
    let mut command = Command::new(BIN);
    command
        .arg("testnet")
        .arg("--dir")
        .arg(&net_dir)
        .args(["--cns", "4", "--block-period-ms", "100", "--duration", "4"])
        .args(["--rate", "500", "--base-port", &base.to_string()])
        .arg("--json")
        .arg(&json)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log2);
    let mut testnet = Proc::spawn("testnet", &mut command, true);
    let limit = Duration::from_secs(180);
    let Some(status) = testnet.wait_until(Instant::now() + limit) else {
        panic!(
            "testnet still running after {limit:?}\n{}",
            tail(&output, 40)
        );
    };
    assert!(status.success(), "testnet: {status}\n{}", tail(&output, 60));

    let text = std::fs::read_to_string(&json).expect("JSON report");
    let report: serde_json::Value = serde_json::from_str(&text).expect("report is JSON");
    assert_eq!(report["agree"], serde_json::Value::Bool(true), "{text}");
    let blocks = report["blocks"].as_u64().expect("blocks");
    assert!(blocks >= 20, "only {blocks} blocks\n{text}");
    let txs = report["finalized_txs"].as_u64().expect("finalized_txs");
    assert!(txs > 0, "no transaction finalized\n{text}");

    // Independently of the report: every node's block log.
    let genesis = Genesis::load(
        &net_dir.join("genesis.toml"),
        corecell::exec::genesis_state_root,
    )
    .expect("genesis");
    let chains: Vec<(String, Vec<BlockDigest>)> = (0..CNS)
        .map(|k| {
            let name = format!("cn{k}");
            let chain = read_chain(&net_dir.join(&name).join("data"), &genesis, &name);
            (name, chain)
        })
        .collect();
    for (name, chain) in &chains {
        assert!(
            chain.len() >= 20,
            "{name} holds {} blocks, expected at least 20",
            chain.len()
        );
    }
    assert_agree(&chains);
    eprintln!(
        "testnet: {blocks} blocks, {txs} txs, logs of {:?} agree; {:.1?}",
        chains.iter().map(|(_, c)| c.len()).collect::<Vec<_>>(),
        started.elapsed()
    );
    db_check_finds_torn_tails_and_corruption(&net_dir.join("cn0").join("data"), chains[0].1.len());
}

/// `corecell db check` on a real data directory: clean (the nodes stopped cleanly, so the last
/// segment ends at its last record, without page padding), then with a torn tail (reported,
/// still ok), then with a flipped byte in the first record (refused, naming file and offset 0).
fn db_check_finds_torn_tails_and_corruption(data: &Path, blocks: usize) {
    let db_check = |data: &Path| {
        let out = Command::new(BIN)
            .args(["db", "check", "--data"])
            .arg(data)
            .output()
            .expect("db check runs");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.code(), text)
    };
    let (code, text) = db_check(data);
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.contains(&format!("{blocks} blocks, heights 1..={blocks}")),
        "{text}"
    );
    assert!(
        !text.contains("torn") && !text.contains("padding"),
        "a clean stop leaves the last segment at its logical end\n{text}"
    );
    // A short run fills one segment, named for height 1.
    let log = data.join("blocks-00000000000000000001.log");
    assert!(text.contains("(1 segment)"), "{text}");
    let len = std::fs::metadata(&log).expect("block log").len();
    // Torn tail: half a record header appended.
    let mut bytes = std::fs::read(&log).expect("read log");
    bytes.extend_from_slice(&[7, 0, 0]);
    std::fs::write(&log, &bytes).expect("write log");
    let (code, text) = db_check(data);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("torn tail of 3 bytes"), "{text}");
    // Corruption in the middle: a payload byte of the first record.
    bytes.truncate(len as usize);
    bytes[40] ^= 0xff;
    std::fs::write(&log, &bytes).expect("write log");
    let (code, text) = db_check(data);
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains("blocks-00000000000000000001.log")
            && text.contains("corrupt record at offset 0"),
        "{text}"
    );
}

#[test]
fn a_key_outside_the_council_is_refused() {
    let _serial = serial();
    let started = Instant::now();
    let mut net = Net::start(44000, 200);
    let all: Vec<usize> = (0..CNS).collect();
    let refused_before = net.sample(0, REFUSED);

    let outsider = BlsSecretKey::random().expect("OS randomness");
    assert_eq!(
        net.genesis.council_index(&outsider.public_key().to_bytes()),
        None
    );
    let mut s = connect(net.nodes[0].p2p);
    let mut hs = Handshake::new(
        Side::Dialer,
        &outsider,
        CHAIN_ID,
        Role::Cn,
        nonce(),
        key_exchange(),
    );
    s.write_all(&hs.hello()).expect("send hello");
    let mut their_hello = [0u8; HELLO_LEN];
    read_exact_within(&mut s, &mut their_hello, IO).expect("cn0 sends its hello on accept");
    let cn0_id = net.nodes[0].node_id;
    let our_auth = hs
        .on_peer_hello(&their_hello, |role, id| {
            if role == Role::Cn && id == cn0_id {
                Ok(())
            } else {
                Err(format!("expected cn0, got {role:?} {}", hex::encode(id)))
            }
        })
        .expect("cn0's hello is genuine");
    // cn0 may have closed already: a failed write is fine, an Auth back is not.
    let _ = s.write_all(&our_auth);
    let (closed, got) = read_until_closed(&mut s, PROMPT_CLOSE);
    assert!(
        closed,
        "cn0 kept an outsider's connection open for {PROMPT_CLOSE:?} (got {} bytes)",
        got.len()
    );
    assert!(
        got.is_empty(),
        "cn0 sent an outsider {} bytes after its hello (an Auth is {AUTH_LEN}): it signed for a key outside the council",
        got.len()
    );
    drop(s);
    net.wait_metric(0, REFUSED, refused_before + 1.0, Duration::from_secs(10));

    // Consensus went on, and the mesh is intact.
    let before = net.heights(&all);
    let targets: Vec<u64> = before.iter().map(|h| h + 5).collect();
    net.wait_heights(&all, &targets, Duration::from_secs(30));
    net.wait_meshed(Duration::from_secs(10));
    eprintln!(
        "outsider refused; heights {before:?} -> at least {targets:?}; {:.1?}",
        started.elapsed()
    );
}

#[test]
fn garbage_huge_length_and_replayed_handshake_are_refused() {
    let _serial = serial();
    let started = Instant::now();
    let mut net = Net::start(48000, 200);
    let all: Vec<usize> = (0..CNS).collect();

    // (a) 4 KiB of random bytes on cn1's p2p port.
    let refused_before = net.sample(1, REFUSED);
    let mut garbage = vec![0u8; 4096];
    getrandom::fill(&mut garbage).expect("OS randomness");
    if garbage[..4] == HANDSHAKE_MAGIC {
        garbage[0] ^= 0xff;
    }
    let mut s = connect(net.nodes[1].p2p);
    let _ = s.write_all(&garbage); // cn1 may close mid-write
    let (closed, got) = read_until_closed(&mut s, PROMPT_CLOSE);
    assert!(
        closed,
        "cn1 kept a garbage connection open for {PROMPT_CLOSE:?}"
    );
    assert!(
        got.len() <= HELLO_LEN,
        "cn1 sent {} bytes to garbage; at most its hello ({HELLO_LEN}) was expected",
        got.len()
    );
    assert!(
        got.is_empty() || got.starts_with(&HANDSHAKE_MAGIC),
        "cn1 sent something other than its hello: {:02x?}",
        &got[..got.len().min(16)]
    );
    drop(s);
    net.wait_metric(1, REFUSED, refused_before + 1.0, Duration::from_secs(10));
    net.assert_running(&all);

    // (b) A frame header declaring u32::MAX bytes on cn1's ingress port.
    let mut s = connect(net.nodes[1].ingress);
    let mut header = u32::MAX.to_be_bytes().to_vec();
    header.push(FrameKind::TxBatch as u8);
    s.write_all(&header).expect("send header");
    let (closed, got) = read_until_closed(&mut s, IO);
    assert!(
        closed,
        "cn1's ingress kept a connection open for {IO:?} after a u32::MAX frame header"
    );
    assert!(
        got.is_empty(),
        "cn1's ingress answered a u32::MAX header with {} bytes",
        got.len()
    );
    drop(s);
    net.assert_running(&all);
    assert!(
        net.nodes[1].metric(HEIGHT).is_some(),
        "cn1 stopped serving metrics"
    );

    // (c) Replay. Session 1: a genuine handshake as cn3 toward cn0, recorded.
    let cn3 = NodeKey::load(&net.nodes[3].dir.join("key.toml")).expect("cn3's key");
    let cn0_id = net.nodes[0].node_id;
    let only_cn0 = |role: Role, id: [u8; 20]| {
        if role == Role::Cn && id == cn0_id {
            Ok(())
        } else {
            Err(format!("expected cn0, got {role:?} {}", hex::encode(id)))
        }
    };
    let mut s1 = connect(net.nodes[0].p2p);
    let mut hs1 = Handshake::new(
        Side::Dialer,
        &cn3.secret,
        CHAIN_ID,
        Role::Cn,
        nonce(),
        key_exchange(),
    );
    let recorded_hello = hs1.hello();
    s1.write_all(&recorded_hello).expect("send hello");
    let mut cn0_hello_1 = [0u8; HELLO_LEN];
    read_exact_within(&mut s1, &mut cn0_hello_1, IO).expect("cn0's hello");
    let recorded_auth = hs1
        .on_peer_hello(&cn0_hello_1, only_cn0)
        .expect("cn0's hello is genuine");
    s1.write_all(&recorded_auth).expect("send auth");
    let mut cn0_auth_1 = [0u8; AUTH_LEN];
    read_exact_within(&mut s1, &mut cn0_auth_1, IO).expect("cn0 answers cn3 with its Auth");
    let session = hs1
        .on_peer_auth(&cn0_auth_1)
        .expect("cn0 authenticates in session 1");
    assert_eq!(session.peer.node_id, cn0_id);
    // Control: an accepted session carries cn0's consensus frames, so the absence of any byte
    // after the handshake in session 2 below means the session was refused.
    let mut frames = [0u8; 4096];
    s1.set_read_timeout(Some(IO)).expect("read timeout");
    let n = s1.read(&mut frames).expect("frames in an accepted session");
    assert!(n > 0, "cn0 closed the genuine session 1");
    drop(s1);

    // Session 2: replay the recorded hello, then, after cn0's fresh hello, the recorded Auth,
    // then a sync request cn0 would answer with blocks if it took the session.
    let refused_before = net.sample(0, REFUSED);
    let mut s2 = connect(net.nodes[0].p2p);
    s2.write_all(&recorded_hello).expect("replay hello");
    let mut cn0_hello_2 = [0u8; HELLO_LEN];
    read_exact_within(&mut s2, &mut cn0_hello_2, IO).expect("cn0's hello");
    assert_ne!(cn0_hello_2, cn0_hello_1, "cn0 reused its nonce");
    let _ = s2.write_all(&recorded_auth);
    let _ = s2.write_all(&corecell::net::sync_request_frame(1));
    let (closed, got) = read_until_closed(&mut s2, PROMPT_CLOSE);
    assert!(
        closed,
        "cn0 kept a replayed session open for {PROMPT_CLOSE:?} ({} bytes received)",
        got.len()
    );
    assert!(
        got.len() <= AUTH_LEN,
        "cn0 sent {} bytes in a replayed session: frames after the handshake (at most its own Auth, {AUTH_LEN} bytes, was expected)",
        got.len()
    );
    drop(s2);
    net.wait_metric(0, REFUSED, refused_before + 1.0, Duration::from_secs(10));

    // Afterwards: the real cn3 is back in cn0's mesh, every node keeps finalizing, none
    // exited, and no honest peer was banned.
    net.wait_meshed(Duration::from_secs(20));
    let before = net.heights(&all);
    let targets: Vec<u64> = before.iter().map(|h| h + 5).collect();
    net.wait_heights(&all, &targets, Duration::from_secs(30));
    for i in all {
        assert_eq!(
            net.sample(i, VIOLATIONS),
            0.0,
            "{} banned a peer for a violation",
            net.nodes[i].name
        );
    }
    eprintln!(
        "garbage, huge header and replay refused; heights {before:?} -> at least {targets:?}; {:.1?}",
        started.elapsed()
    );
}

#[test]
fn killing_one_of_four_cns_keeps_the_others_finalizing() {
    let _serial = serial();
    let started = Instant::now();
    let mut net = Net::start(52000, 200);
    let all: Vec<usize> = (0..CNS).collect();
    let rest = [0, 1, 2];
    net.wait_heights(&all, &[3; CNS], Duration::from_secs(30));

    net.kill(3);

    let before = net.heights(&rest);
    let round_changes_before = net.sample(0, ROUND_CHANGES);
    let targets: Vec<u64> = before.iter().map(|h| h + 10).collect();
    net.wait_heights(&rest, &targets, Duration::from_secs(20));
    let round_changes = net.sample(0, ROUND_CHANGES) - round_changes_before;

    // Clean stop: SIGTERM to all three, then each must exit 0.
    net.stop(&rest);

    let chains: Vec<(String, Vec<BlockDigest>)> = all
        .iter()
        .map(|&i| (net.nodes[i].name.clone(), net.chain(i)))
        .collect();
    for (&i, target) in rest.iter().zip(&targets) {
        let (name, chain) = &chains[i];
        assert!(
            chain.len() as u64 >= *target,
            "{name}'s block log holds {} blocks, but it reported height {target}",
            chain.len()
        );
    }
    // The three survivors, and the killed cn3 at the heights it had.
    assert_agree(&chains);
    eprintln!(
        "cn3 killed at {before:?}; {round_changes} round changes at cn0 since; logs {:?} agree; {:.1?}",
        chains.iter().map(|(_, c)| c.len()).collect::<Vec<_>>(),
        started.elapsed()
    );
}

/// A connection from `source` (another loopback address) to `to`, silent.
fn connect_from(source: [u8; 4], to: std::net::SocketAddr) -> Option<std::net::TcpStream> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).ok()?;
    let from = std::net::SocketAddr::from((source, 0));
    socket.bind(&from.into()).ok()?;
    socket
        .connect_timeout(&to.into(), Duration::from_millis(500))
        .ok()?;
    Some(socket.into())
}

/// What a handshake flood achieved.
struct FloodOutcome {
    /// Connections opened in all.
    opened: usize,
    /// Most flood connections cn3 held in handshakes (had greeted) at once.
    most_greeted: usize,
    /// Handshakes cn3 counted as refused during the flood.
    refused: f64,
}

/// Floods cn3 of a network started at `base` with silent connections, `per_source` from each
/// address of `sources` (kept open and re-opened as cn3 closes them), restarts cn0 under the
/// flood and checks that it rejoins the mesh and everyone keeps finalizing.
fn flood_cn3_and_restart_cn0(base: u16, sources: &[[u8; 4]], per_source: usize) -> FloodOutcome {
    let started = Instant::now();
    let mut net = Net::start(base, 200);
    let all: Vec<usize> = (0..CNS).collect();
    // cn3 is dialed by every other CN: its handshake slots are what they need.
    let target = net.nodes[3].p2p;
    let refused_before = net.sample(3, REFUSED);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flood = {
        let stop = stop.clone();
        let sources = sources.to_vec();
        std::thread::spawn(move || {
            let (mut opened, mut most_greeted) = (0usize, 0usize);
            // Each open connection per source, and whether cn3 greeted it (sent its hello:
            // the connection holds a handshake slot until cn3 closes it).
            let mut live: Vec<Vec<(std::net::TcpStream, bool)>> =
                sources.iter().map(|_| Vec::new()).collect();
            let mut buf = [0u8; 4096];
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                for (source, live) in sources.iter().zip(live.iter_mut()) {
                    live.retain_mut(|(s, greeted)| {
                        let _ = s.set_nonblocking(true);
                        loop {
                            match s.read(&mut buf) {
                                Ok(0) => return false,
                                Ok(_) => *greeted = true,
                                Err(e) => return e.kind() == std::io::ErrorKind::WouldBlock,
                            }
                        }
                    });
                    while live.len() < per_source {
                        match connect_from(*source, target) {
                            Some(s) => {
                                opened += 1;
                                live.push((s, false));
                            }
                            None => break,
                        }
                    }
                }
                let held = live.iter().flatten().filter(|(_, g)| *g).count();
                most_greeted = most_greeted.max(held);
                std::thread::sleep(Duration::from_millis(50));
            }
            (opened, most_greeted)
        })
    };
    std::thread::sleep(Duration::from_secs(2));
    // Under the flood, cn0 restarts: its handshake with cn3 (from 127.0.0.1) must get through.
    net.kill(0);
    net.spawn(0);
    net.wait_meshed(Duration::from_secs(9));
    let before = net.heights(&all);
    let targets: Vec<u64> = before.iter().map(|h| h + 3).collect();
    net.wait_heights(&all, &targets, Duration::from_secs(20));
    // Past the handshake timeout, so held slots are freed and taken again under the flood.
    let flood_for = corecell::net::HANDSHAKE_TIMEOUT * 2;
    std::thread::sleep(flood_for.saturating_sub(started.elapsed()));
    net.assert_running(&all);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (opened, most_greeted) = flood.join().expect("flood thread");
    let refused = net.sample(3, REFUSED) - refused_before;
    net.assert_running(&all);
    eprintln!(
        "flood of {opened} connections from {} addresses: at most {most_greeted} held, {refused} refused; cn0 rejoined; {:.1?}",
        sources.len(),
        started.elapsed()
    );
    FloodOutcome {
        opened,
        most_greeted,
        refused,
    }
}

#[test]
fn a_connection_flood_from_one_address_does_not_lock_out_the_peers() {
    let _serial = serial();
    // The attacker, at 127.0.0.2, keeps 80 silent connections open at cn3 (more than the 64
    // handshake slots of the whole node).
    const FLOOD: usize = 80;
    let outcome = flood_cn3_and_restart_cn0(24000, &[[127, 0, 0, 2]], FLOOD);
    // One address gets at most a quarter of the node's handshake slots; the rest stay free
    // for the peers elsewhere.
    assert!(
        outcome.most_greeted >= 1
            && outcome.most_greeted * 4 <= corecell::net::MAX_PENDING_HANDSHAKES,
        "cn3 held {} of the flood's connections in handshakes at once (of {} slots)",
        outcome.most_greeted,
        corecell::net::MAX_PENDING_HANDSHAKES
    );
    assert!(
        outcome.opened > FLOOD,
        "the flood re-opened connections ({} in all): cn3 closed the excess",
        outcome.opened
    );
    assert!(
        outcome.refused >= (FLOOD - corecell::net::MAX_PENDING_HANDSHAKES_PER_ADDRESS) as f64,
        "cn3 counted {} refused handshakes",
        outcome.refused
    );
}

#[test]
fn a_connection_flood_from_many_addresses_does_not_lock_out_the_known_peers() {
    let _serial = serial();
    // Eight attacking addresses, each at its per-address limit: together they could hold
    // twice the node's shared handshake slots. The peers' address (127.0.0.1, in every CN's
    // peer list) is known, so its handshakes do not queue behind them.
    let sources: Vec<[u8; 4]> = (2..10).map(|x| [127, 0, 0, x]).collect();
    let per_source = corecell::net::MAX_PENDING_HANDSHAKES_PER_ADDRESS;
    let outcome = flood_cn3_and_restart_cn0(20000, &sources, per_source);
    assert!(
        outcome.most_greeted >= corecell::net::MAX_PENDING_HANDSHAKES / 2
            && outcome.most_greeted <= corecell::net::MAX_PENDING_HANDSHAKES,
        "the flood filled the shared slots but no more: it held {} at once (of {})",
        outcome.most_greeted,
        corecell::net::MAX_PENDING_HANDSHAKES
    );
    assert!(
        outcome.refused
            >= (sources.len() * per_source - corecell::net::MAX_PENDING_HANDSHAKES) as f64,
        "cn3 counted {} refused handshakes",
        outcome.refused
    );
}

/// Connections from `source` to `to` that each send a frame header and then one byte every
/// `every`, until `stop`; returns (connections opened, longest any one lived).
fn slowloris(
    source: [u8; 4],
    to: std::net::SocketAddr,
    connections: usize,
    every: Duration,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<(usize, Duration)> {
    std::thread::spawn(move || {
        // A TxBatch frame header declaring the largest batch, which never comes in full.
        let header = corecell::types::frame::FrameHeader {
            kind: FrameKind::TxBatch,
            len: FrameKind::TxBatch.max_payload() as u32,
        }
        .to_bytes();
        let mut opened = 0usize;
        let mut longest = Duration::ZERO;
        let mut live: Vec<(std::net::TcpStream, Instant)> = Vec::new();
        let mut buf = [0u8; 256];
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            // One byte more on each; a connection the node closed is gone.
            live.retain_mut(|(s, since)| {
                let alive = match s.read(&mut buf) {
                    Ok(0) => false,
                    Ok(_) => true,
                    Err(e) => e.kind() == std::io::ErrorKind::WouldBlock,
                } && s.write_all(&[0]).is_ok();
                if !alive {
                    longest = longest.max(since.elapsed());
                }
                alive
            });
            while live.len() < connections {
                let Some(mut s) = connect_from(source, to) else {
                    break;
                };
                let _ = s.set_nonblocking(true);
                if s.write_all(&header).is_ok() {
                    opened += 1;
                    live.push((s, Instant::now()));
                }
            }
            std::thread::sleep(every);
        }
        for (_, since) in &live {
            longest = longest.max(since.elapsed());
        }
        (opened, longest)
    })
}

#[test]
fn slowloris_clients_cannot_hold_the_ingress_slots() {
    let _serial = serial();
    let started = Instant::now();
    let mut net = Net::start(8000, 200);
    let ingress = net.nodes[0].ingress;
    assert!(net.nodes[0].serves_ingress);
    // Four addresses, each at its per-address limit: every one of cn0's ingress slots is held
    // by a connection that dribbles one byte of a frame every 300 ms, forever.
    let per_source = corecell::net::MAX_INGRESS_CONNECTIONS_PER_ADDRESS;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let attackers: Vec<_> = (2..6)
        .map(|x| {
            slowloris(
                [127, 0, 0, x],
                ingress,
                per_source,
                Duration::from_millis(300),
                stop.clone(),
            )
        })
        .collect();
    let slots = corecell::net::MAX_INGRESS_CONNECTIONS as f64;
    net.wait_metric(
        0,
        "corecell_ingress_connections",
        slots,
        Duration::from_secs(10),
    );
    // Every slot is held; an honest client still gets in (taking the slot of the
    // longest-idle attacker) and its transfers become final.
    let mut client = TransferClient::new(ingress, net.genesis.chain_id, 0..8);
    client.run_for(Duration::from_secs(3), Duration::from_millis(200));
    client.drain(Duration::from_secs(10));
    assert!(
        !client.finalized.is_empty() && client.pending.is_empty(),
        "the honest client's transfers: {} final, {} batches unsettled, refused {:?}",
        client.finalized.len(),
        client.pending.len(),
        client.refused
    );
    assert!(net.sample(0, "corecell_ingress_evicted_total") >= 1.0);
    // Past the frame deadline, the dribblers are closed for being slow.
    let frame_timeout = corecell::net::INGRESS_FRAME_TIMEOUT;
    std::thread::sleep(frame_timeout.saturating_sub(started.elapsed()) + Duration::from_secs(2));
    net.wait_metric(
        0,
        "corecell_ingress_slow_total",
        1.0,
        Duration::from_secs(5),
    );
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut longest = Duration::ZERO;
    let mut opened = 0;
    for a in attackers {
        let (n, l) = a.join().expect("slowloris thread");
        opened += n;
        longest = longest.max(l);
    }
    // No dribbling connection outlived the frame deadline by more than the attacker's own
    // polling slack.
    assert!(
        longest <= frame_timeout + Duration::from_secs(2),
        "a slowloris connection lived {longest:?} (frame deadline {frame_timeout:?})"
    );
    let all: Vec<usize> = (0..CNS).collect();
    let before = net.heights(&all);
    let targets: Vec<u64> = before.iter().map(|h| h + 3).collect();
    net.wait_heights(&all, &targets, Duration::from_secs(20));
    net.assert_running(&all);
    eprintln!(
        "slowloris: {opened} connections, longest lived {longest:?}; refused {}, evicted {}, slow {}; honest client {} final; {:.1?}",
        net.sample(0, "corecell_ingress_refused_total"),
        net.sample(0, "corecell_ingress_evicted_total"),
        net.sample(0, "corecell_ingress_slow_total"),
        client.finalized.len(),
        started.elapsed()
    );
}
