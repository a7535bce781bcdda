//! Crashes under a transfer load: real `corecell` node processes on loopback, kill -9 and
//! restart.
//!
//! What these tests prove:
//!
//! 1. One CN killed with SIGKILL mid-load and restarted (from its state snapshot plus a replay
//!    of its block log) catches up with the others through sync and finalizes with them again;
//!    every block log agrees at every height.
//! 2. All four CNs killed at once mid-load and restarted: the chain continues, every
//!    transaction a node reported final (a FINAL answer on its ingress port) is in every
//!    node's chain, and each node's state, replayed from its own block log, has the state root
//!    of its last header and holds the genesis supply: `Σ balances + burned` is unchanged.
//!
//! The load is signed transfers between genesis test accounts sent in batches to CN ingress
//! ports by [`TransferClient`], which remembers the batches whose every transaction was
//! answered FINAL.

mod common;

use std::collections::HashSet;
use std::path::Path;
use std::time::{Duration, Instant};

use alloy_primitives::U256;
use common::*;
use corecell::config::genesis::Genesis;
use corecell::types::hash::Hash32;

/// Test accounts in the genesis.
const ACCOUNTS: usize = 64;

/// Replays a node's block log into its state (checking every block's state root, as a
/// restart does) and checks the supply.
fn assert_state_adds_up(name: &str, data: &Path, genesis: &Genesis) -> u64 {
    let recovered = corecell::store::recover(data, &genesis.header()).expect("recovers");
    let audit = corecell::exec::snapshot::audit_state(
        data,
        genesis,
        &recovered.head,
        &recovered.index,
        corecell::exec::snapshot::ReplayStart::NewestSnapshot,
    )
    .unwrap_or_else(|e| panic!("{name}: {e}"));
    assert!(audit.root_matches_head, "{name}: state root");
    assert!(
        audit.supply_conserved,
        "{name}: balances plus burned fees are not the genesis supply"
    );
    assert!(
        audit.state.burned() > U256::ZERO,
        "{name}: no fee was burned"
    );
    recovered.head.height
}

#[test]
fn a_killed_cn_restarts_from_its_snapshot_and_catches_up() {
    let _serial = serial();
    let started = Instant::now();
    let mut net = Net::generate(56000, 200, ACCOUNTS, Some(10));
    net.spawn_all();
    let all: Vec<usize> = (0..CNS).collect();
    let mut client = TransferClient::new(net.nodes[0].ingress, CHAIN_ID, 0..32);
    client.run_for(Duration::from_secs(4), Duration::from_millis(100));
    net.kill(3);
    let killed_at = net.heights(&[0])[0];
    client.run_for(Duration::from_secs(4), Duration::from_millis(100));
    // The other three finalize without cn3 (slowly in a debug build on two vCPUs: a round
    // whose proposer is cn3 times out).
    let rest = [0, 1, 2];
    net.wait_heights(&rest, &[killed_at + 3; 3], Duration::from_secs(90));
    let ahead = net.heights(&[0])[0];

    net.spawn(3);
    // cn3 restarts from a snapshot (every 10 blocks) and replays the rest, then syncs.
    let target = net.heights(&[0])[0] + 3;
    client.run_for(Duration::from_secs(3), Duration::from_millis(100));
    net.wait_heights(&all, &[target; CNS], Duration::from_secs(120));
    client.drain(Duration::from_secs(10));
    net.stop(&all);

    let chains: Vec<(String, Vec<BlockDigest>)> = all
        .iter()
        .map(|&i| (net.nodes[i].name.clone(), net.chain(i)))
        .collect();
    assert_agree(&chains);
    // The restart began from a snapshot (taken every 10 blocks), not from the genesis: either
    // the replay after it started above height 1, or there was nothing to replay and the
    // state came straight from a snapshot.
    let log = std::fs::read_to_string(net.nodes[3].log()).expect("cn3 log");
    let value = |line: &str, key: &str| -> Option<u64> {
        line.split(&format!("{key}="))
            .nth(1)?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    };
    let restart = log
        .lines()
        .skip_while(|l| !l.contains("account state ready"))
        .skip(1)
        .collect::<Vec<_>>();
    let restart_height = restart
        .iter()
        .find(|l| l.contains("account state ready"))
        .and_then(|l| value(l, "height"))
        .expect("cn3 logged its state height on restart");
    match restart
        .iter()
        .find(|l| l.contains("replaying finalized blocks"))
    {
        Some(l) => assert!(
            value(l, "from").is_some_and(|from| from > 10),
            "cn3 replayed from the genesis: {l}"
        ),
        None => assert!(restart_height > 0 && restart_height % 10 == 0),
    }
    assert!(
        !client.finalized.is_empty(),
        "no batch was answered FINAL; refusals {:?}",
        client.refused
    );
    for (i, node) in net.nodes.iter().enumerate() {
        let data = node.dir.join("data");
        let txs = chain_transactions(&data, &net.genesis);
        let missing = client.finalized.difference(&txs).count();
        assert_eq!(missing, 0, "{}: final transactions missing", node.name);
        let head = assert_state_adds_up(&node.name, &data, &net.genesis);
        assert!(head >= target, "{} at {head}", net.nodes[i].name);
    }
    let snapshots = std::fs::read_dir(net.nodes[3].dir.join("data").join("state"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert!(snapshots > 0, "cn3 wrote no snapshot");
    eprintln!(
        "cn3 killed near height {killed_at}, restarted with state at {restart_height} while the others were at {ahead}; {} txs final; refusals {:?}; chains {:?}; {:.1?}",
        client.finalized.len(),
        client.refused,
        chains.iter().map(|(_, c)| c.len()).collect::<Vec<_>>(),
        started.elapsed()
    );
}

#[test]
fn all_cns_killed_at_once_lose_nothing_reported_final() {
    let _serial = serial();
    let started = Instant::now();
    let mut net = Net::generate(60000, 200, ACCOUNTS, Some(7));
    net.spawn_all();
    let all: Vec<usize> = (0..CNS).collect();
    let mut before = TransferClient::new(net.nodes[1].ingress, CHAIN_ID, 0..32);
    before.run_for(Duration::from_secs(5), Duration::from_millis(50));
    // Read the answers already sent, then kill every node at once mid-load.
    before.send_batch();
    before.poll_acks();
    for i in 0..CNS {
        net.kill(i);
    }
    let final_before: HashSet<Hash32> = before.finalized.clone();
    assert!(
        !final_before.is_empty(),
        "nothing final before the crash; refusals {:?}",
        before.refused
    );

    // Restart; fresh senders (the killed pools' transactions are gone, so the old senders'
    // nonces are unknown to this client).
    net.spawn_all();
    let resumed = net.heights(&[0])[0];
    let mut after = TransferClient::new(net.nodes[2].ingress, CHAIN_ID, 32..64);
    after.run_for(Duration::from_secs(3), Duration::from_millis(100));
    net.wait_heights(&all, &[resumed + 5; CNS], Duration::from_secs(120));
    after.drain(Duration::from_secs(10));
    net.stop(&all);

    let chains: Vec<(String, Vec<BlockDigest>)> = all
        .iter()
        .map(|&i| (net.nodes[i].name.clone(), net.chain(i)))
        .collect();
    assert_agree(&chains);
    assert!(
        !after.finalized.is_empty(),
        "nothing final after the restart"
    );
    for node in &net.nodes {
        let data = node.dir.join("data");
        let txs = chain_transactions(&data, &net.genesis);
        let lost = final_before.difference(&txs).count();
        assert_eq!(
            lost, 0,
            "{}: {lost} transactions reported final before the crash are not in its chain",
            node.name
        );
        assert_eq!(after.finalized.difference(&txs).count(), 0);
        assert_state_adds_up(&node.name, &data, &net.genesis);
    }
    eprintln!(
        "{} txs final before the crash, {} after; chains {:?}; {:.1?}",
        final_before.len(),
        after.finalized.len(),
        chains.iter().map(|(_, c)| c.len()).collect::<Vec<_>>(),
        started.elapsed()
    );
}
