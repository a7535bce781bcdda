//! A Byzantine CN among four real `corecell` node processes on loopback (build with
//! `--features byzantine`; see `corecell::node::byzantine`).
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
//! Hygiene: child processes are owned by guards that kill and reap them; every wait has a
//! deadline; tests are serialized ([`serial`]); ports 16000-19499 only; 127.0.0.1 only.

#![cfg(feature = "byzantine")]

use std::path::PathBuf;
use std::time::{Duration, Instant};

mod common;

use common::*;

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
    let config = net.nodes[BYZANTINE].dir.join("config.toml");
    let mut text = std::fs::read_to_string(&config).expect("config");
    let names: Vec<String> = behaviours.iter().map(|b| format!("{b:?}")).collect();
    text.push_str(&format!(
        "\n[byzantine]\nbehaviours = [{}]\nseed = 7\n",
        names.join(", ")
    ));
    std::fs::write(&config, text).expect("config");
    net
}

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
