//! A Byzantine CN among four real `corecell` node processes on loopback (build with
//! `--features byzantine`; see `corecell::consensus_shard::byzantine`).
//!
//! What these tests prove:
//!
//! 1. With cn3 equivocating as proposer, double voting, sending corrupted signatures and signed
//!    messages for heights far ahead, all at once: the three honest CNs keep finalizing (20
//!    heights past the start within a deadline), none of them crashes, the block logs of all
//!    four agree at every height they share, and every honest CN records evidence naming cn3
//!    (the metric `evidence_by_signer{signer="3"}`, and lines in its `data/evidence.log`
//!    naming cn3's council index and node id, and no one else), refuses the far-future
//!    messages and the bad signatures (counted per reason), and bans cn3 for the stream of
//!    bad signatures. When the 30 s ban ends, cn3 is let back in, keeps misbehaving and is
//!    banned again, while the honest CNs keep finalizing.
//! 2. With cn3 only equivocating as proposer, a peer that gets both of its signed blocks for
//!    one slot records proposal evidence naming cn3, and the honest CNs keep finalizing.
//! 3. With cn3 equivocating, double voting and sending far-future messages but no bad
//!    signatures, it is never banned (evidence is recorded, not punished by disconnection),
//!    and for 30 heights of its misbehaviour the honest CNs keep finalizing, each names it in
//!    evidence, and all four logs agree.
//!
//! 4. A PN that rewrites the transactions of every finalized block it sends (relay and sync
//!    answers; `tamper-bodies`): ENs behind only that PN refuse every such block, ban it and
//!    stay up without adopting anything; once an honest PN appears they catch up and stay in
//!    step behind both; every node's block log holds the same whole blocks and passes
//!    `db check` (bodies and state replay).
//! 5. A CN that sends tampered finalized blocks (sync answers and offers): a CN that was down
//!    and comes back while only that CN talks to it refuses every one (`forged_body`), bans it
//!    and stays at its height; once the honest CNs speak again it catches up from them, and
//!    every log agrees and passes `db check`.
//!
//! 6. A CN flooding the others with validly signed work (`flood`: round changes for ever higher
//!    far rounds, far-round proposals, stale votes, forged finalized blocks, a burst with each
//!    of its messages): the honest CNs keep at least 80 % of the block rate they have with it
//!    down, their peak memory stays within twice that of the run without it, far-round spam
//!    is refused and the culprit is banned.
//!
//! Hygiene: child processes are owned by guards that kill and reap them; every wait has a
//! deadline; tests are serialized ([`serial`]); ports 16000-19499 only; 127.0.0.1 only.

#![cfg(feature = "byzantine")]

use std::path::PathBuf;
use std::time::{Duration, Instant};

mod common;

use common::*;
use corecell::config::node::Role;

const BYZANTINE: usize = 3;
const HONEST: [usize; 3] = [0, 1, 2];

fn evidence_metric(signer: usize) -> String {
    format!("corecell_evidence_by_signer_total{{signer=\"{signer}\"}}")
}

fn rejected_metric(reason: &str) -> String {
    format!("corecell_rejected_by_reason_total{{reason=\"{reason}\"}}")
}

fn evidence_log(net: &Net, i: usize) -> PathBuf {
    net.nodes[i].dir.join("data").join("evidence.log")
}

/// Generates the four-CN network with cn3 configured to misbehave as `behaviours`.
fn byzantine_net(base: u16, behaviours: &[&str]) -> Net {
    let net = Net::generate(base, 200, 16, None);
    misbehave(&net, BYZANTINE, behaviours);
    net
}

/// Configures node `i` of `net` to misbehave as `behaviours`.
fn misbehave(net: &Net, i: usize, behaviours: &[&str]) {
    let config = net.nodes[i].dir.join("config.toml");
    let mut text = std::fs::read_to_string(&config).expect("config");
    let names: Vec<String> = behaviours.iter().map(|b| format!("{b:?}")).collect();
    text.push_str(&format!(
        "\n[byzantine]\nbehaviours = [{}]\nseed = 7\n",
        names.join(", ")
    ));
    std::fs::write(&config, text).expect("config");
}

/// `corecell db check` of node `i`'s data directory (block log, bodies, WAL, state replay)
/// passes.
fn assert_db_check_passes(net: &Net, i: usize) {
    let data = net.nodes[i].dir.join("data");
    let out = std::process::Command::new(BIN)
        .args(["db", "check", "--data"])
        .arg(&data)
        .output()
        .expect("db check runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(0), "{}: {text}", net.nodes[i].name);
    assert!(
        text.contains("every block's transactions match"),
        "{}: {text}",
        net.nodes[i].name
    );
}

/// What a follower or CN logs when it bans the sender of a block with a forged body.
const FORGED_BODY_BAN: &str = "carries transactions its header does not commit to";

/// Waits until every node in `which` reports `name` at least `at_least`.
fn wait_all(net: &mut Net, which: &[usize], name: &str, at_least: f64, within: Duration) {
    for &i in which {
        net.wait_metric(i, name, at_least, within);
    }
}

/// Checks node `i`'s evidence log: at least one line, every line names cn3 (index and node
/// id); returns the lines.
fn assert_evidence_log_names_cn3(net: &Net, i: usize) -> Vec<String> {
    let path = evidence_log(net, i);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {}: {e}", net.nodes[i].name, path.display()));
    let node_id = format!("node_id=0x{}", hex::encode(net.nodes[BYZANTINE].node_id));
    let lines: Vec<String> = text.lines().map(str::to_string).collect();
    assert!(
        !lines.is_empty(),
        "{}: empty evidence log",
        net.nodes[i].name
    );
    for line in &lines {
        assert!(
            line.contains(&format!(" signer={BYZANTINE} ")) && line.contains(&node_id),
            "{}: evidence against someone else: {line}",
            net.nodes[i].name
        );
        let first = line.split(" first=").nth(1).map(|s| &s[..66]);
        let second = line.split(" second=").nth(1).map(|s| &s[..66]);
        assert!(
            first.is_some() && first != second,
            "two different hashes: {line}"
        );
    }
    lines
}

/// Stops every running node (each must exit 0) and checks that all four block logs agree;
/// returns their lengths.
fn stop_and_agree(net: &mut Net) -> Vec<usize> {
    let running: Vec<usize> = (0..CNS).filter(|&i| net.nodes[i].is_running()).collect();
    net.stop(&running);
    let chains = net.chains(&(0..CNS).collect::<Vec<_>>());
    assert_agree(&chains);
    chains.iter().map(|(_, c)| c.len()).collect()
}

#[test]
fn three_honest_cns_finalize_past_a_byzantine_one_and_name_it() {
    let _serial = serial();
    let started = Instant::now();
    let mut net = byzantine_net(
        16000,
        &[
            "equivocate",
            "double-vote",
            "bad-signature",
            "future-height",
        ],
    );
    net.spawn_all();
    let start = net.heights(&HONEST);
    let targets: Vec<u64> = start.iter().map(|h| h + 20).collect();
    net.wait_heights(&HONEST, &targets, Duration::from_secs(120));
    let reached = net.heights(&HONEST);

    // Every honest CN has evidence against cn3, refused its far-future messages and its bad
    // signatures, and banned it for them.
    let within = Duration::from_secs(30);
    wait_all(&mut net, &HONEST, &evidence_metric(BYZANTINE), 1.0, within);
    wait_all(
        &mut net,
        &HONEST,
        &rejected_metric("too_far_ahead"),
        1.0,
        within,
    );
    wait_all(
        &mut net,
        &HONEST,
        &rejected_metric("bad_signature"),
        1.0,
        within,
    );
    wait_all(&mut net, &HONEST, VIOLATIONS, 1.0, within);
    let mut report = Vec::new();
    for i in HONEST {
        let samples = net.nodes[i].metrics().expect("metrics");
        for honest in HONEST {
            assert_eq!(
                sample_of(&samples, &evidence_metric(honest)),
                None,
                "{} has evidence against honest cn{honest}",
                net.nodes[i].name
            );
        }
        let m = |name: &str| sample_of(&samples, name).unwrap_or(0.0);
        report.push(format!(
            "{}: evidence against cn3 {}, too far ahead {}, bad signatures {}, bans {}",
            net.nodes[i].name,
            m(&evidence_metric(BYZANTINE)),
            m(&rejected_metric("too_far_ahead")),
            m(&rejected_metric("bad_signature")),
            m(VIOLATIONS)
        ));
    }
    net.assert_running(&HONEST);

    // The ban lasts 30 s; then cn3 is let back in, keeps sending bad signatures and is banned
    // again. The honest CNs finalize throughout.
    let before_second_ban = net.heights(&HONEST);
    wait_all(&mut net, &HONEST, VIOLATIONS, 2.0, Duration::from_secs(120));
    let after_second_ban = net.heights(&HONEST);
    let byzantine_height = net.nodes[BYZANTINE].metric(HEIGHT);
    assert!(
        after_second_ban
            .iter()
            .zip(&before_second_ban)
            .all(|(a, b)| a > b),
        "finalized nothing while cn3 was let back in: {before_second_ban:?} -> {after_second_ban:?}"
    );
    net.assert_running(&HONEST);

    let lengths = stop_and_agree(&mut net);
    let mut kinds = std::collections::BTreeSet::new();
    for (i, target) in HONEST.into_iter().zip(&targets) {
        assert!(
            lengths[i] as u64 >= *target,
            "{}'s block log holds {} blocks, it reported {target}",
            net.nodes[i].name,
            lengths[i]
        );
        for line in assert_evidence_log_names_cn3(&net, i) {
            let kind = line
                .split(" kind=")
                .nth(1)
                .and_then(|s| s.split(' ').next());
            kinds.insert(kind.unwrap_or("?").to_string());
        }
    }
    eprintln!(
        "heights {start:?} -> {reached:?}, at the second ban {after_second_ban:?} (cn3 at \
         {byzantine_height:?}); logs {lengths:?} agree; evidence kinds {kinds:?}; {}; {:.1?}",
        report.join("; "),
        started.elapsed()
    );
}

#[test]
fn a_peer_given_both_blocks_of_an_equivocating_proposer_names_it() {
    let _serial = serial();
    let started = Instant::now();
    let mut net = byzantine_net(16100, &["equivocate"]);
    net.spawn_all();
    let start = net.heights(&HONEST);
    // cn3 proposes about one height in four; wait until one of its split proposals reached
    // a witness.
    let deadline = Instant::now() + Duration::from_secs(120);
    let witness = loop {
        net.assert_running(&HONEST);
        let found = HONEST.into_iter().find(|&i| {
            std::fs::read_to_string(evidence_log(&net, i))
                .is_ok_and(|t| t.contains(" kind=proposal "))
        });
        if let Some(i) = found {
            break i;
        }
        assert!(
            Instant::now() < deadline,
            "no proposal evidence after 120 s; heights {:?}\n{}",
            net.heights(&HONEST),
            tail(&net.nodes[BYZANTINE].log(), 30)
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(net.sample(witness, &evidence_metric(BYZANTINE)) >= 1.0);
    let targets: Vec<u64> = start.iter().map(|h| h + 10).collect();
    net.wait_heights(&HONEST, &targets, Duration::from_secs(60));
    let lengths = stop_and_agree(&mut net);
    let lines = assert_evidence_log_names_cn3(&net, witness);
    assert!(
        lines.iter().all(|l| l.contains(" kind=proposal ")),
        "only proposal evidence without double votes: {lines:?}"
    );
    eprintln!(
        "witness {} logged {} proposal evidence lines; logs {lengths:?} agree; {:.1?}",
        net.nodes[witness].name,
        lines.len(),
        started.elapsed()
    );
}

#[test]
fn a_byzantine_cn_with_valid_signatures_stays_connected_and_is_named_for_thirty_heights() {
    let _serial = serial();
    let started = Instant::now();
    let mut net = byzantine_net(16200, &["equivocate", "double-vote", "future-height"]);
    net.spawn_all();
    let start = net.heights(&HONEST);
    let targets: Vec<u64> = start.iter().map(|h| h + 30).collect();
    net.wait_heights(&HONEST, &targets, Duration::from_secs(120));
    wait_all(
        &mut net,
        &HONEST,
        &evidence_metric(BYZANTINE),
        1.0,
        Duration::from_secs(30),
    );
    let mut report = Vec::new();
    for i in HONEST {
        let samples = net.nodes[i].metrics().expect("metrics");
        let m = |name: &str| sample_of(&samples, name).unwrap_or(0.0);
        assert_eq!(m(VIOLATIONS), 0.0, "{} banned someone", net.nodes[i].name);
        assert_eq!(
            m(PEERS_CN),
            (CNS - 1) as f64,
            "{} lost a peer",
            net.nodes[i].name
        );
        assert_eq!(m(&rejected_metric("bad_signature")), 0.0);
        assert!(m(&rejected_metric("too_far_ahead")) >= 1.0);
        report.push(format!(
            "{}: evidence against cn3 {}, round changes {}",
            net.nodes[i].name,
            m(&evidence_metric(BYZANTINE)),
            m(ROUND_CHANGES)
        ));
    }
    let lengths = stop_and_agree(&mut net);
    for i in HONEST {
        assert_evidence_log_names_cn3(&net, i);
    }
    eprintln!(
        "heights {start:?} -> {targets:?}+; logs {lengths:?} agree; {}; {:.1?}",
        report.join("; "),
        started.elapsed()
    );
}

#[test]
fn ens_refuse_a_pn_that_tampers_with_block_bodies_and_catch_up_once_an_honest_pn_appears() {
    let _serial = serial();
    let started = Instant::now();
    let mut net = Net::generate_tiers(16300, 200, 16, 2, 2);
    let (cns, pns, ens) = (
        net.of_role(Role::Cn),
        net.of_role(Role::Pn),
        net.of_role(Role::En),
    );
    let (tamperer, honest) = (pns[0], pns[1]);
    misbehave(&net, tamperer, &["tamper-bodies"]);
    // Everyone but the honest PN.
    for i in net.of_role(Role::Bootnode) {
        net.spawn(i);
    }
    for &i in cns.iter().chain([&tamperer]).chain(&ens) {
        net.spawn(i);
    }
    net.wait_heights(&cns, &[8; 4], STARTUP);
    net.wait_heights(&[tamperer], &[8], STARTUP);
    // The ENs hear of blocks only from the tampering PN: every one is refused and it is
    // banned (again after each ban ends), and they stay up at the genesis.
    for &en in &ens {
        net.wait_metric(en, VIOLATIONS, 1.0, STARTUP);
    }
    let cn_heights = net.heights(&cns);
    net.wait_heights(
        &cns,
        &cn_heights.iter().map(|h| h + 5).collect::<Vec<_>>(),
        STARTUP,
    );
    net.assert_running(&ens);
    assert_eq!(net.heights(&ens), vec![0, 0], "nothing forged adopted");
    for &en in &ens {
        assert!(
            net.log_lines(en, FORGED_BODY_BAN) >= 1,
            "{} never named the forged body\n{}",
            net.nodes[en].name,
            tail(&net.nodes[en].log(), 20)
        );
    }
    // An honest PN appears: the ENs catch up through it and stay in step behind both PNs.
    net.spawn(honest);
    let target = net.heights(&cns).into_iter().max().unwrap_or(0) + 3;
    net.wait_heights(&ens, &[target; 2], STARTUP);
    let later = net.heights(&cns).into_iter().max().unwrap_or(0) + 10;
    net.wait_heights(&ens, &[later; 2], STARTUP);
    net.wait_metric(honest, VIOLATIONS, 1.0, STARTUP);
    let heights = net.heights(&net.chain_nodes());
    let lengths = net.stop_all_and_assert_agree();
    for i in net.chain_nodes() {
        assert_db_check_passes(&net, i);
    }
    eprintln!(
        "ENs refused the tampering PN, then followed {later}+ behind both; heights {heights:?}; \
         logs {lengths:?} agree and pass db check; {:.1?}",
        started.elapsed()
    );
}

#[test]
fn a_cn_refuses_tampered_sync_answers_bans_their_sender_and_catches_up_from_honest_cns() {
    let _serial = serial();
    let started = Instant::now();
    let mut net = byzantine_net(16400, &["tamper-bodies"]);
    let lagging = 2;
    net.spawn_all();
    net.wait_heights(&[0, 1, 2, 3], &[5; 4], STARTUP);
    // cn2 goes down; the rest finalize on (cn3 votes honestly: it only tampers with the
    // finalized blocks it sends).
    net.kill(lagging);
    let behind = net.heights(&[0]).into_iter().next().unwrap_or(0);
    net.wait_heights(&[0, 1, 3], &[behind + 15; 3], STARTUP);
    // cn0 and cn1 go quiet, so only the tampering cn3 answers the returning cn2.
    let quiet = [0, 1];
    for &i in &quiet {
        net.nodes[i]
            .proc
            .as_mut()
            .expect("running")
            .signal(libc::SIGSTOP);
    }
    net.spawn(lagging);
    net.wait_metric(lagging, &rejected_metric("forged_body"), 1.0, STARTUP);
    let stuck_at = net.heights(&[lagging])[0];
    net.wait_metric(lagging, VIOLATIONS, 1.0, STARTUP);
    assert!(net.log_lines(lagging, "not final (forged_body)") >= 1);
    for &i in &quiet {
        net.nodes[i]
            .proc
            .as_mut()
            .expect("stopped")
            .signal(libc::SIGCONT);
    }
    // Back: cn2 catches up from the honest CNs and the network goes on.
    let target = net.heights(&[0, 1, 3]).into_iter().max().unwrap_or(0) + 5;
    net.wait_heights(&[0, 1, 2, 3], &[target; 4], STARTUP);
    let lengths = stop_and_agree(&mut net);
    for i in 0..CNS {
        assert_db_check_passes(&net, i);
    }
    eprintln!(
        "cn2 refused cn3's tampered blocks at height {stuck_at}, then caught up to {target}; \
         logs {lengths:?} agree and pass db check; {:.1?}",
        started.elapsed()
    );
}

/// The slowest of `which`'s finalization rates (blocks per second) over `window`.
fn block_rate(net: &mut Net, which: &[usize], window: Duration) -> f64 {
    let (h0, t0) = (net.heights(which), Instant::now());
    let deadline = t0 + window;
    while Instant::now() < deadline {
        net.assert_running(which);
        std::thread::sleep(Duration::from_millis(200));
    }
    let (h1, elapsed) = (net.heights(which), t0.elapsed().as_secs_f64());
    h0.iter()
        .zip(&h1)
        .map(|(a, b)| (b - a) as f64 / elapsed)
        .fold(f64::INFINITY, f64::min)
}

/// The largest peak resident set size among `which`, in MiB.
fn peak_rss_mib(net: &Net, which: &[usize]) -> f64 {
    which
        .iter()
        .map(|&i| {
            net.nodes[i]
                .metric("corecell_process_max_rss_bytes")
                .unwrap_or(0.0)
        })
        .fold(0.0, f64::max)
        / (1024.0 * 1024.0)
}

#[test]
fn a_flooding_cn_costs_the_honest_ones_little_block_rate_and_memory_and_is_banned() {
    let _serial = serial();
    let started = Instant::now();
    let window = Duration::from_secs(12);
    // Without it: four honest CNs, then the same network with cn3 down.
    let mut base = Net::generate(16500, 200, 16, None);
    base.spawn_all();
    base.wait_heights(&HONEST, &[5; 3], STARTUP);
    let all_honest = block_rate(&mut base, &HONEST, window);
    base.kill(BYZANTINE);
    base.wait_heights(
        &HONEST,
        &base
            .heights(&HONEST)
            .iter()
            .map(|h| h + 3)
            .collect::<Vec<_>>(),
        STARTUP,
    );
    let cn3_down = block_rate(&mut base, &HONEST, window);
    let base_rss = peak_rss_mib(&base, &HONEST);
    base.stop(&HONEST);
    drop(base);

    // With cn3 flooding: far rounds, stale votes, forged finalized blocks, at each message.
    let mut net = byzantine_net(16600, &["flood"]);
    for i in 0..CNS {
        net.spawn(i);
    }
    net.wait_heights(&HONEST, &[5; 3], STARTUP);
    let flooded = block_rate(&mut net, &HONEST, window);
    wait_all(&mut net, &HONEST, VIOLATIONS, 1.0, STARTUP);
    let flood_rss = peak_rss_mib(&net, &HONEST);
    net.assert_running(&HONEST);
    let refused: Vec<f64> = ["far_round", "bad_certificate", "forged_body"]
        .iter()
        .map(|r| {
            HONEST
                .iter()
                .map(|&i| net.sample(i, &rejected_metric(r)))
                .sum()
        })
        .collect();
    let lengths = stop_and_agree(&mut net);
    eprintln!(
        "block rate (slowest honest CN, {window:?}): all honest {all_honest:.2}/s, cn3 down \
         {cn3_down:.2}/s, cn3 flooding {flooded:.2}/s ({:.0} % of cn3 down, {:.0} % of all \
         honest); peak RSS {base_rss:.0} MiB without, {flood_rss:.0} MiB with; refused \
         far_round/bad_certificate/forged_body {refused:?}; logs {lengths:?}; {:.1?}",
        100.0 * flooded / cn3_down,
        100.0 * flooded / all_honest,
        started.elapsed()
    );
    assert!(
        flooded >= 0.8 * cn3_down,
        "flooded {flooded:.2}/s, without cn3 {cn3_down:.2}/s"
    );
    assert!(
        flood_rss <= 2.0 * base_rss + 64.0,
        "peak RSS {flood_rss:.0} MiB under the flood, {base_rss:.0} MiB without"
    );
    assert!(refused[0] >= 1.0, "far-round spam refused");
}
