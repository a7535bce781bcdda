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

use std::collections::{HashMap, HashSet};
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use alloy_primitives::U256;
use common::*;
use corecell::crypto::hash::{keccak256, Hash32};
use corecell::crypto::tx::{sign_transfer, Transfer, TxType};
use corecell::exec::batch_frame;
use corecell::exec::transfer::BASE_FEE_WEI;
use corecell::node::genesis::{test_account_secret, Genesis};
use corecell::types::chain::SignedTransaction;
use corecell::types::frame::{FrameDecoder, Message};
use corecell::types::network::IngressAck;

/// Test accounts in the genesis.
const ACCOUNTS: usize = 64;

/// Sends signed transfers to one CN's ingress port and tracks the answers.
struct TransferClient {
    addr: SocketAddr,
    stream: Option<TcpStream>,
    decoder: FrameDecoder,
    chain_id: u64,
    /// (secret, next nonce) of each sender this client uses.
    senders: Vec<([u8; 32], u64)>,
    next_batch: u64,
    /// Unsettled batches: id -> transaction hashes.
    pending: HashMap<u64, Vec<Hash32>>,
    /// FINAL counts so far per pending batch.
    final_counts: HashMap<u64, u32>,
    /// Transactions of batches answered FINAL in full.
    finalized: HashSet<Hash32>,
    /// Non-FINAL answers, by status name.
    refused: HashMap<&'static str, u64>,
}

impl TransferClient {
    fn new(addr: SocketAddr, chain_id: u64, accounts: std::ops::Range<u64>) -> TransferClient {
        TransferClient {
            addr,
            stream: None,
            decoder: FrameDecoder::new(),
            chain_id,
            senders: accounts.map(|i| (test_account_secret(i), 0)).collect(),
            next_batch: 1,
            pending: HashMap::new(),
            final_counts: HashMap::new(),
            finalized: HashSet::new(),
            refused: HashMap::new(),
        }
    }

    fn connected(&mut self) -> Option<&mut TcpStream> {
        if self.stream.is_none() {
            let s = TcpStream::connect_timeout(&self.addr, IO).ok()?;
            s.set_nodelay(true).ok()?;
            s.set_write_timeout(Some(IO)).ok()?;
            s.set_read_timeout(Some(Duration::from_millis(2))).ok()?;
            self.decoder = FrameDecoder::new();
            self.stream = Some(s);
        }
        self.stream.as_mut()
    }

    /// Sends one batch: the next transfer of every sender (to the next sender, 1 wei).
    fn send_batch(&mut self) {
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
        if sent {
            self.pending.insert(id, hashes);
        } else {
            self.stream = None;
        }
    }

    /// Reads whatever answers have arrived.
    fn poll_acks(&mut self) {
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
    fn run_for(&mut self, duration: Duration, every: Duration) {
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
    fn drain(&mut self, within: Duration) {
        let end = Instant::now() + within;
        while !self.pending.is_empty() && Instant::now() < end {
            self.poll_acks();
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// Every transaction hash in a data directory's block log.
fn chain_transactions(data: &Path, genesis: &Genesis) -> HashSet<Hash32> {
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

    let chains: Vec<(String, Vec<Hash32>)> = all
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

    let chains: Vec<(String, Vec<Hash32>)> = all
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
