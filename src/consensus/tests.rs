//! Machine tests with a minimal in-order driver (instant delivery, no faults). The simulator
//! (`crate::sim`) covers faults, Byzantine actors and randomized schedules.

use std::collections::{BTreeMap, VecDeque};

use super::*;
use crate::types::chain::transactions_root;
use crate::types::hash::{keccak256_parts, Hash32};
use crate::types::{Block, BlockHeader, CommitCertificate, CouncilIndex, Height};

const N: usize = 4;

fn config() -> ConsensusConfig {
    ConsensusConfig {
        chain_id: 1001,
        council_size: N,
        committee_size: N,
        block_period_ms: 500,
        round_timeout_base_ms: 400,
        round_timeout_max_ms: 8000,
        weakening: Weakening::default(),
    }
}

fn genesis() -> BlockHeader {
    BlockHeader::synthetic_genesis(7)
}

/// A tiny driver: instant delivery in FIFO order, timers by time, a set of nodes that are
/// down (their inputs dropped).
struct Net {
    now: Millis,
    machines: Vec<Machine<FastScheme>>,
    queue: VecDeque<(usize, Input)>,
    timers: BTreeMap<(Millis, u64), (usize, Timer)>,
    seq: u64,
    down: Vec<bool>,
    /// Every link cut: messages are dropped, timers still fire.
    isolated: bool,
    finalized: Vec<Vec<(Block, CommitCertificate)>>,
    wal: Vec<Vec<WalRecord>>,
    rejected: Vec<(usize, CouncilIndex, Rejection)>,
}

fn state_root(parent: &Hash32, txs_root: &Hash32) -> Hash32 {
    keccak256_parts(&[parent, txs_root])
}

impl Net {
    fn new(config: ConsensusConfig) -> Net {
        let mut net = Net {
            now: 0,
            machines: Vec::new(),
            queue: VecDeque::new(),
            timers: BTreeMap::new(),
            seq: 0,
            down: vec![false; config.council_size],
            isolated: false,
            finalized: vec![Vec::new(); config.council_size],
            wal: vec![Vec::new(); config.council_size],
            rejected: Vec::new(),
        };
        for i in 0..config.council_size {
            let scheme = FastScheme::new(i as u32, config.council_size);
            let (m, effects) = Machine::new(config.clone(), scheme, i as u32, genesis(), &[], 0);
            net.machines.push(m);
            net.apply(i, effects);
        }
        net
    }

    fn apply(&mut self, node: usize, effects: Vec<Effect>) {
        for e in effects {
            match e {
                Effect::Persist(r) => self.wal[node].push(r),
                Effect::Broadcast(m) => {
                    for to in 0..self.machines.len().max(self.down.len()) {
                        if to != node {
                            self.queue.push_back((to, Input::Message(m.clone())));
                        }
                    }
                }
                Effect::SendTo(to, m) => self.queue.push_back((to as usize, Input::Message(m))),
                Effect::Schedule { timer, at } => {
                    self.seq += 1;
                    self.timers.insert((at, self.seq), (node, timer));
                }
                Effect::BuildBlock {
                    height,
                    round,
                    parent,
                } => {
                    let txs = vec![crate::types::chain::SignedTransaction {
                        bytes: vec![height as u8, round as u8, 1],
                    }];
                    let root = transactions_root(txs.iter().map(|t| t.bytes.as_slice()));
                    let state_root = state_root(&parent.hash(), &root);
                    self.queue.push_back((
                        node,
                        Input::BlockBuilt {
                            height,
                            round,
                            transactions: txs,
                            state_root,
                        },
                    ));
                }
                Effect::VerifyBlock(block) => {
                    let root = block.computed_transactions_root();
                    let valid =
                        block.header.state_root == state_root(&block.header.parent_hash, &root);
                    let input = Input::BlockVerified {
                        height: block.header.height,
                        block_hash: block.hash(),
                        valid,
                    };
                    self.queue.push_back((node, input));
                }
                Effect::Commit {
                    block, certificate, ..
                } => self.finalized[node].push((block, certificate)),
                Effect::RequestSync { peer, from_height } => {
                    let blocks: Vec<_> = self.finalized[peer as usize]
                        .iter()
                        .filter(|(b, _)| b.header.height >= from_height)
                        .cloned()
                        .collect();
                    for (block, certificate) in blocks {
                        let f = crate::types::FinalizedBlock { block, certificate };
                        let m = Message::Finalized {
                            sender: peer,
                            block: Box::new(f),
                        };
                        self.queue.push_back((node, Input::Message(m)));
                    }
                }
                Effect::OfferSync { peer, from_height } => {
                    let blocks: Vec<_> = self.finalized[node]
                        .iter()
                        .filter(|(b, _)| b.header.height >= from_height)
                        .cloned()
                        .collect();
                    for (block, certificate) in blocks {
                        let f = crate::types::FinalizedBlock { block, certificate };
                        let m = Message::Finalized {
                            sender: node as CouncilIndex,
                            block: Box::new(f),
                        };
                        self.queue.push_back((peer as usize, Input::Message(m)));
                    }
                }
                Effect::Evidence(e) => panic!("evidence in an honest run: {e:?}"),
                Effect::Rejected { from, reason } => self.rejected.push((node, from, reason)),
            }
        }
    }

    /// Runs until every live node finalized `height` or `deadline` passes.
    fn run_until(&mut self, height: Height, deadline: Millis) {
        loop {
            let done = (0..self.machines.len())
                .all(|i| self.down[i] || self.machines[i].head().height >= height);
            if done || self.now > deadline {
                return;
            }
            if let Some((to, input)) = self.queue.pop_front() {
                let cut = self.isolated && matches!(input, Input::Message(_));
                if !self.down[to] && !cut {
                    let effects = self.machines[to].handle(self.now, input);
                    self.apply(to, effects);
                }
                continue;
            }
            let Some(((at, _), (node, timer))) = self.timers.pop_first() else {
                return;
            };
            self.now = self.now.max(at);
            if !self.down[node] {
                let effects = self.machines[node].handle(self.now, Input::Timer(timer));
                self.apply(node, effects);
            }
        }
    }

    fn assert_agreement(&self) {
        let mut by_height: BTreeMap<Height, Hash32> = BTreeMap::new();
        for chain in &self.finalized {
            for (b, c) in chain {
                assert_eq!(c.block_hash, b.hash());
                let h = by_height.entry(b.header.height).or_insert(b.hash());
                assert_eq!(
                    *h,
                    b.hash(),
                    "two blocks finalized at height {}",
                    b.header.height
                );
            }
        }
    }
}

#[test]
fn four_honest_nodes_finalize_at_the_block_period() {
    let mut net = Net::new(config());
    net.run_until(20, 60_000);
    for (i, chain) in net.finalized.iter().enumerate() {
        assert_eq!(chain.len(), 20, "node {i} finalized {}", chain.len());
        assert!(
            chain
                .windows(2)
                .all(|w| w[1].0.header.parent_hash == w[0].0.hash()),
            "a chain"
        );
    }
    net.assert_agreement();
    // Instant delivery: one block per period, all in round 0.
    assert!(net.now <= 20 * 500 + 500, "took {} ms", net.now);
    assert!(net.finalized[0]
        .iter()
        .all(|(b, c)| b.header.round == 0 && c.round == 0));
    assert!(net.rejected.is_empty(), "{:?}", net.rejected);
}

#[test]
fn a_down_proposer_costs_one_round_timeout() {
    let mut net = Net::new(config());
    net.run_until(3, 60_000);
    // Take down the round-0 proposer of the next height.
    let next = net.machines[0].committee().proposer(0) as usize;
    net.down[next] = true;
    let start = net.now;
    net.run_until(4, 60_000);
    let (b, c) = net.finalized[(next + 1) % N]
        .last()
        .expect("finalized")
        .clone();
    assert_eq!(b.header.height, 4);
    assert!(c.round >= 1, "finalized after a round change");
    let elapsed = net.now - start;
    assert!(
        elapsed < 500 + 400 + 800 + 100,
        "a failed proposer cost {elapsed} ms"
    );
    net.assert_agreement();
}

#[test]
fn a_restarted_node_resumes_from_its_wal_and_catches_up() {
    let mut net = Net::new(config());
    net.run_until(2, 60_000);
    net.down[3] = true;
    net.run_until(6, 60_000);
    // Restart node 3 from its durable state: last finalized header and its WAL.
    let head = net.finalized[3]
        .last()
        .map(|(b, _)| b.header.clone())
        .unwrap_or_else(genesis);
    let scheme = FastScheme::new(3, N);
    let (m, effects) = Machine::new(config(), scheme, 3, head, &net.wal[3], net.now);
    net.machines[3] = m;
    net.down[3] = false;
    net.apply(3, effects);
    net.run_until(10, 120_000);
    assert!(
        net.finalized[3].len() >= 10,
        "node 3 caught up to {}",
        net.finalized[3].len()
    );
    net.assert_agreement();
}

#[test]
fn votes_from_outside_the_committee_are_rejected_and_reported() {
    let mut cfg = config();
    cfg.council_size = 7;
    cfg.committee_size = 4;
    let mut net = Net::new(cfg.clone());
    net.run_until(1, 10_000);
    let m = &net.machines[0];
    let outsider = (0..7)
        .find(|i| !m.committee().contains(*i))
        .expect("an outsider");
    let mut vote = crate::types::Vote {
        kind: crate::types::VoteKind::Prepare,
        height: m.height(),
        round: 0,
        block_hash: [1; 32],
        signer: outsider,
        signature: [0; 96],
    };
    vote.signature = FastScheme::new(outsider, 7).sign(
        crate::crypto::bls::Domain::Vote,
        &vote.signing_message(1001),
    );
    let effects = net.machines[0].handle(net.now, Input::Message(Message::Vote(vote)));
    assert!(effects.iter().any(|e| matches!(e, Effect::Rejected { from, reason: Rejection::NotInCommittee } if *from == outsider)));
}

/// Counts single and batched aggregate checks; otherwise [`FastScheme`].
#[derive(Debug)]
struct CountingScheme {
    inner: FastScheme,
    single: std::cell::Cell<usize>,
    batches: std::cell::Cell<usize>,
    /// Single-signature checks (round changes, proposals, votes).
    verifies: std::cell::Cell<usize>,
}

impl SignatureScheme for CountingScheme {
    fn sign(&self, domain: crate::crypto::bls::Domain, message: &[u8]) -> BlsSignatureBytes {
        self.inner.sign(domain, message)
    }
    fn verify(
        &self,
        signer: CouncilIndex,
        domain: crate::crypto::bls::Domain,
        message: &[u8],
        signature: &BlsSignatureBytes,
    ) -> bool {
        self.verifies.set(self.verifies.get() + 1);
        self.inner.verify(signer, domain, message, signature)
    }
    fn aggregate(&self, signatures: &[&BlsSignatureBytes]) -> Option<BlsSignatureBytes> {
        self.inner.aggregate(signatures)
    }
    fn verify_aggregate(
        &self,
        signers: &[u8],
        domain: crate::crypto::bls::Domain,
        message: &[u8],
        signature: &BlsSignatureBytes,
    ) -> bool {
        self.single.set(self.single.get() + 1);
        self.inner
            .verify_aggregate(signers, domain, message, signature)
    }
    fn verify_aggregates_batch(
        &self,
        domain: crate::crypto::bls::Domain,
        items: &[(&[u8], &[u8], &BlsSignatureBytes)],
    ) -> bool {
        self.batches.set(self.batches.get() + 1);
        items
            .iter()
            .all(|(s, m, sig)| self.inner.verify_aggregate(s, domain, m, sig))
    }
}

use crate::types::BlsSignatureBytes;

/// A node at the genesis fed a run of finalized blocks (the later ones first, so they wait in
/// its future buffer, as a sync answer's tail does behind a slow head).
fn sync_run(corrupt: Option<Height>) -> (Machine<CountingScheme>, Vec<Effect>) {
    let mut net = Net::new(config());
    net.run_until(6, 60_000);
    let mut blocks: Vec<crate::types::FinalizedBlock> = net.finalized[0]
        .iter()
        .take(6)
        .map(|(block, certificate)| crate::types::FinalizedBlock {
            block: block.clone(),
            certificate: certificate.clone(),
        })
        .collect();
    if let Some(h) = corrupt {
        blocks[h as usize - 1].certificate.signature[0] ^= 1;
    }
    let scheme = CountingScheme {
        inner: FastScheme::new(3, N),
        single: Default::default(),
        batches: Default::default(),
        verifies: Default::default(),
    };
    let (mut m, _) = Machine::new(config(), scheme, 3, genesis(), &[], 0);
    let mut effects = Vec::new();
    for f in blocks.iter().skip(1) {
        effects.extend(m.handle(0, finalized_from(1, f)));
    }
    assert_eq!(m.head().height, 0, "later blocks wait for the first");
    effects.extend(m.handle(0, finalized_from(1, &blocks[0])));
    (m, effects)
}

/// A finalized block as council member `sender` sends it.
fn finalized_from(sender: CouncilIndex, f: &crate::types::FinalizedBlock) -> Input {
    Input::Message(Message::Finalized {
        sender,
        block: Box::new(f.clone()),
    })
}

/// `f` with other transactions than its certified header commits to (a tampering relay).
fn with_forged_body(f: &crate::types::FinalizedBlock) -> crate::types::FinalizedBlock {
    let mut forged = f.clone();
    forged
        .block
        .transactions
        .push(crate::types::chain::SignedTransaction {
            bytes: vec![0x02, 0xde, 0xad],
        });
    assert_eq!(
        forged.block.hash(),
        f.block.hash(),
        "the header is untouched"
    );
    forged
}

#[test]
fn a_forged_body_in_a_synced_block_is_refused_in_the_senders_name_and_costs_no_pairing() {
    let mut net = Net::new(config());
    net.run_until(2, 60_000);
    let (block, certificate) = net.finalized[0][0].clone();
    let genuine = crate::types::FinalizedBlock { block, certificate };
    let scheme = CountingScheme {
        inner: FastScheme::new(3, N),
        single: Default::default(),
        batches: Default::default(),
        verifies: Default::default(),
    };
    let (mut m, _) = Machine::new(config(), scheme, 3, genesis(), &[], 0);
    let effects = m.handle(0, finalized_from(2, &with_forged_body(&genuine)));
    assert!(
        effects.contains(&Effect::Rejected {
            from: 2,
            reason: Rejection::ForgedBody
        }),
        "{effects:?}"
    );
    assert!(committed(&effects).is_empty());
    assert_eq!(m.scheme().single.get() + m.scheme().batches.get(), 0);
    // The genuine copy from another member is adopted, with its transactions' hashes.
    let effects = m.handle(1, finalized_from(1, &genuine));
    assert_eq!(committed(&effects), vec![1]);
    let hashes: Vec<_> = genuine
        .block
        .transactions
        .iter()
        .map(|t| crate::types::hash::keccak256(&t.bytes))
        .collect();
    assert!(effects.iter().any(|e| matches!(e,
        Effect::Commit { tx_hashes: Some(h), .. } if *h == hashes)));
}

fn committed(effects: &[Effect]) -> Vec<Height> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Commit { block, .. } => Some(block.header.height),
            _ => None,
        })
        .collect()
}

#[test]
fn a_run_of_synced_blocks_is_verified_in_one_batch() {
    let (m, effects) = sync_run(None);
    assert_eq!(committed(&effects), vec![1, 2, 3, 4, 5, 6]);
    assert_eq!(m.head().height, 6);
    assert_eq!(m.scheme().batches.get(), 1, "one batch for the run");
    assert_eq!(m.scheme().single.get(), 0, "no certificate checked alone");
}

#[test]
fn a_bad_certificate_in_a_synced_run_stops_it_there() {
    let (m, effects) = sync_run(Some(4));
    // The batch fails; the blocks are then checked one by one: 1-3 are final, 4 is refused,
    // and 5 and 6 wait for a valid 4.
    assert_eq!(committed(&effects), vec![1, 2, 3]);
    assert_eq!(m.head().height, 3);
    assert!(effects.iter().any(|e| matches!(
        e,
        Effect::Rejected {
            reason: Rejection::BadCertificate,
            ..
        }
    )));
    assert_eq!(
        m.scheme().batches.get(),
        1,
        "the run is batched once, not per height"
    );
    assert_eq!(
        m.scheme().single.get(),
        4,
        "then 1, 2, 3 and the bad 4 alone"
    );
}

// ---- follower ------------------------------------------------------------------------------

/// The first `n` finalized blocks of a four-node network.
fn finalized_chain(n: usize) -> Vec<crate::types::FinalizedBlock> {
    let mut net = Net::new(config());
    net.run_until(n as Height, 120_000);
    net.assert_agreement();
    net.finalized[0]
        .iter()
        .take(n)
        .map(|(block, certificate)| crate::types::FinalizedBlock {
            block: block.clone(),
            certificate: certificate.clone(),
        })
        .collect()
}

fn follower() -> Follower<CountingScheme> {
    let scheme = CountingScheme {
        inner: FastScheme::new(0, N),
        single: Default::default(),
        batches: Default::default(),
        verifies: Default::default(),
    };
    Follower::new(config(), scheme, genesis(), 0)
}

fn deliver(
    f: &mut Follower<CountingScheme>,
    now: Millis,
    from: crate::types::PeerSlot,
    block: &crate::types::FinalizedBlock,
) -> Vec<FollowerEffect> {
    f.handle(
        now,
        FollowerInput::Finalized {
            from,
            block: Box::new(block.clone()),
            received: Some(std::sync::Arc::new(vec![from as u8])),
        },
    )
}

fn adopted(effects: &[FollowerEffect]) -> Vec<Height> {
    effects
        .iter()
        .filter_map(|e| match e {
            FollowerEffect::Commit(f) => Some(f.block.block.header.height),
            _ => None,
        })
        .collect()
}

#[test]
fn a_follower_adopts_final_blocks_in_order_and_ignores_duplicates() {
    let chain = finalized_chain(4);
    let mut f = follower();
    for (i, b) in chain.iter().enumerate() {
        let effects = deliver(&mut f, 10, 7, b);
        assert_eq!(adopted(&effects), vec![i as Height + 1]);
        assert!(!effects
            .iter()
            .any(|e| matches!(e, FollowerEffect::RequestSync { .. })));
    }
    let checks = f.scheme().single.get();
    assert_eq!(checks, 4, "one aggregate check per block");
    // A second copy (another PN's) costs nothing and changes nothing.
    assert!(deliver(&mut f, 20, 8, &chain[2]).is_empty());
    assert_eq!(f.scheme().single.get(), checks);
    assert_eq!(f.head().height, 4);
}

#[test]
fn a_follower_refuses_forged_certificates_and_names_the_sender() {
    let chain = finalized_chain(2);
    type Forge = fn(&mut crate::types::FinalizedBlock);
    let forgeries: [(&str, Forge); 5] = [
        ("wrong signature", |b| b.certificate.signature[5] ^= 1),
        ("below quorum", |b| {
            // Drop signers until one short of the quorum (3 of 4).
            let set: Vec<CouncilIndex> = crate::types::signers::iter(&b.certificate.signers)
                .take(2)
                .collect();
            let mut bitmap = crate::types::signers::empty(N);
            for i in set {
                crate::types::signers::set(&mut bitmap, i);
            }
            b.certificate.signers = bitmap;
        }),
        ("wrong message (round)", |b| b.certificate.round += 1),
        ("certificate of another block", |b| {
            b.certificate.block_hash[0] ^= 1
        }),
        ("a prepare certificate", |b| {
            b.certificate.kind = crate::types::VoteKind::Prepare
        }),
    ];
    for (what, forge) in forgeries {
        let mut f = follower();
        let mut bad = chain[0].clone();
        forge(&mut bad);
        let effects = deliver(&mut f, 10, 9, &bad);
        assert!(
            effects.iter().any(|e| matches!(
                e,
                FollowerEffect::Reject {
                    from: 9,
                    height: 1,
                    ..
                }
            )),
            "{what}: {effects:?}"
        );
        assert_eq!(f.head().height, 0, "{what}: nothing adopted");
        // The real block from an honest peer is still adopted.
        assert_eq!(
            adopted(&deliver(&mut f, 11, 3, &chain[0])),
            vec![1],
            "{what}"
        );
    }
}

#[test]
fn a_follower_refuses_a_forged_body_names_the_sender_and_adopts_the_genuine_copy_after_it() {
    let chain = finalized_chain(3);
    let mut f = follower();
    // The tampered copy of block 1 comes first (from peer 9), straight or buffered.
    let effects = deliver(&mut f, 10, 9, &with_forged_body(&chain[0]));
    assert_eq!(
        effects,
        vec![FollowerEffect::Reject {
            from: 9,
            height: 1,
            why: crate::consensus::finality::NotFinal::Body,
        }]
    );
    assert_eq!(
        f.scheme().single.get(),
        0,
        "no pairing spent on a forged body"
    );
    // A forged 2 waits in the buffer beside the genuine 2; the genuine 1 then adopts 1 and 2.
    deliver(&mut f, 11, 9, &with_forged_body(&chain[1]));
    deliver(&mut f, 11, 3, &chain[1]);
    let effects = deliver(&mut f, 12, 3, &chain[0]);
    assert_eq!(adopted(&effects), vec![1, 2]);
    for e in &effects {
        if let FollowerEffect::Commit(a) = e {
            // What is adopted is the genuine copy, with the bytes it came in (the relay sends
            // exactly those) and its transactions' hashes.
            let h = a.block.block.header.height as usize;
            assert_eq!(a.block, chain[h - 1]);
            assert_eq!(a.from, 3);
            assert_eq!(a.received.as_deref(), Some(&vec![3u8]));
            let hashes: Vec<_> = chain[h - 1]
                .block
                .transactions
                .iter()
                .map(|t| crate::types::hash::keccak256(&t.bytes))
                .collect();
            assert_eq!(a.tx_hashes, hashes);
        }
    }
    assert_eq!(f.buffered(), 0, "the forged 2 is dropped with its height");
    assert_eq!(f.buffered_bytes(), 0);
}

#[test]
fn a_followers_buffer_is_bounded_in_bytes() {
    let chain = finalized_chain(2);
    let mut f = follower();
    // Large candidates for heights ahead: kept until the byte budget is spent.
    let big = crate::types::chain::SignedTransaction {
        bytes: vec![7; 1024 * 1024],
    };
    let mut kept = 0;
    for height in 3..40 {
        let mut b = chain[1].clone();
        b.block.header.height = height;
        b.block.transactions = vec![big.clone(); 8];
        deliver(&mut f, 10, 1, &b);
        kept = f.buffered();
        assert!(f.buffered_bytes() <= follower::MAX_BUFFERED_BYTES);
    }
    let per_block = 8 * 1024 * 1024 + follower::BLOCK_OVERHEAD_BYTES;
    assert_eq!(kept, follower::MAX_BUFFERED_BYTES / per_block);
    // The next height still goes straight through.
    assert_eq!(adopted(&deliver(&mut f, 11, 2, &chain[0])), vec![1]);
}

#[test]
fn a_follower_buffers_blocks_ahead_asks_for_the_gap_and_checks_the_run_in_one_batch() {
    let chain = finalized_chain(6);
    let mut f = follower();
    let effects = deliver(&mut f, 10, 4, &chain[5]);
    assert_eq!(
        effects,
        vec![FollowerEffect::RequestSync { from_height: 1 }],
        "a block ahead asks for the gap"
    );
    // The sync answer's blocks arrive; requests are not repeated within the retry interval.
    for b in &chain[1..5] {
        let effects = deliver(&mut f, 20, 4, b);
        assert!(adopted(&effects).is_empty());
        assert!(effects.is_empty(), "no second request at once: {effects:?}");
    }
    assert_eq!(f.buffered(), 5);
    let effects = deliver(&mut f, 30, 4, &chain[0]);
    assert_eq!(adopted(&effects), vec![1, 2, 3, 4, 5, 6]);
    assert_eq!(f.scheme().batches.get(), 1, "the run is one batch");
    assert_eq!(f.scheme().single.get(), 0);
    assert_eq!(f.buffered(), 0);
}

#[test]
fn a_forged_block_ahead_does_not_hide_the_real_one_and_a_quiet_follower_polls() {
    let chain = finalized_chain(3);
    let mut f = follower();
    let mut forged = chain[1].clone();
    forged.certificate.signature[0] ^= 1;
    // A liar's block 2 arrives first, then the real 2, then 1.
    deliver(&mut f, 10, 66, &forged);
    deliver(&mut f, 10, 5, &chain[1]);
    let effects = deliver(&mut f, 10, 5, &chain[0]);
    assert_eq!(adopted(&effects), vec![1, 2]);
    assert!(effects.contains(&FollowerEffect::Reject {
        from: 66,
        height: 2,
        why: crate::consensus::finality::NotFinal::Signature,
    }));
    // Buffers are bounded: candidates per height, heights ahead.
    for i in 0..10 {
        let mut b = chain[2].clone();
        b.block.header.height = 40;
        b.certificate.signature[1] = i;
        deliver(&mut f, 11, 1, &b);
    }
    assert_eq!(f.buffered(), follower::MAX_BLOCKS_PER_HEIGHT);
    let mut far = chain[2].clone();
    far.block.header.height = 10_000;
    deliver(&mut f, 12, 1, &far);
    assert_eq!(
        f.buffered(),
        follower::MAX_BLOCKS_PER_HEIGHT,
        "too far: not kept"
    );
    // Quiet: a tick after the poll interval asks for blocks.
    let effects = f.handle(10 + follower::SYNC_POLL_MS, FollowerInput::Tick);
    assert_eq!(
        effects,
        vec![FollowerEffect::RequestSync { from_height: 3 }]
    );
}

/// The proposal of height 1, round 0, by its elected proposer, and that proposer's index.
fn first_proposal() -> (crate::types::Proposal, CouncilIndex) {
    first_proposal_with(|i| FastScheme::new(i, N))
}

/// [`first_proposal`] with the scheme `scheme_of(i)` of each member `i`.
fn first_proposal_with<S: SignatureScheme>(
    scheme_of: impl Fn(CouncilIndex) -> S,
) -> (crate::types::Proposal, CouncilIndex) {
    let probe = Machine::new(config(), scheme_of(0), 0, genesis(), &[], 0).0;
    let proposer = probe.committee().proposer(0);
    let (mut m, _) = Machine::new(config(), scheme_of(proposer), proposer, genesis(), &[], 0);
    let built = m.handle(500, Input::Timer(Timer::Propose { height: 1 }));
    let parent = built
        .iter()
        .find_map(|e| match e {
            Effect::BuildBlock { parent, .. } => Some(parent.clone()),
            _ => None,
        })
        .expect("the proposer builds at its proposal time");
    let txs = vec![crate::types::chain::SignedTransaction {
        bytes: vec![1, 0, 1],
    }];
    let root = transactions_root(txs.iter().map(|t| t.bytes.as_slice()));
    let effects = m.handle(
        500,
        Input::BlockBuilt {
            height: 1,
            round: 0,
            transactions: txs,
            state_root: state_root(&parent.hash(), &root),
        },
    );
    let proposal = effects
        .into_iter()
        .find_map(|e| match e {
            Effect::Broadcast(Message::Proposal(p)) => Some(*p),
            _ => None,
        })
        .expect("a proposal");
    (proposal, proposer)
}

/// `proposal` for a different block of the same slot (a later timestamp), signed by `signer`.
fn other_block(
    proposal: &crate::types::Proposal,
    by: CouncilIndex,
    ms: u64,
) -> crate::types::Proposal {
    let mut p = proposal.clone();
    p.block.header.timestamp_ms += ms;
    p.signature = FastScheme::new(by, N).sign(
        crate::crypto::bls::Domain::Vote,
        &p.signing_message(config().chain_id),
    );
    p
}

fn evidence_of(effects: &[Effect]) -> Vec<Evidence> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Evidence(ev) => Some(ev.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn two_signed_proposals_of_different_blocks_are_evidence_against_the_proposer() {
    let (a, proposer) = first_proposal();
    let receiver = (proposer + 1) % N as CouncilIndex;
    let scheme = FastScheme::new(receiver, N);
    let (mut m, _) = Machine::new(config(), scheme, receiver, genesis(), &[], 0);
    let deliver = |m: &mut Machine<FastScheme>, p: &crate::types::Proposal| {
        m.handle(600, Input::Message(Message::Proposal(Box::new(p.clone()))))
    };
    let first = deliver(&mut m, &a);
    assert!(evidence_of(&first).is_empty());
    assert!(
        first.iter().any(|e| matches!(e, Effect::VerifyBlock(_))),
        "the first proposal is accepted"
    );
    // A copy costs nothing and proves nothing.
    assert!(deliver(&mut m, &a).is_empty());
    // A different block with a forged signature is refused, and is no evidence.
    let mut forged = other_block(&a, proposer, 2);
    forged.signature[5] ^= 0xff;
    let refused = deliver(&mut m, &forged);
    assert!(evidence_of(&refused).is_empty());
    assert!(refused.iter().any(|e| matches!(e,
        Effect::Rejected { from, reason: Rejection::BadSignature } if *from == proposer)));
    // A different block signed by someone else is not the proposer's doing.
    let by_other = other_block(&a, receiver, 3);
    assert!(evidence_of(&deliver(&mut m, &by_other)).is_empty());
    // A different, validly signed block for the same slot is evidence naming the proposer.
    let b = other_block(&a, proposer, 1);
    let evidence = evidence_of(&deliver(&mut m, &b));
    assert_eq!(evidence.len(), 1, "{evidence:?}");
    let e = &evidence[0];
    assert_eq!(
        (e.signer, e.kind, e.height, e.round),
        (proposer, EvidenceKind::Proposal, 1, 0)
    );
    assert_eq!(e.first, (a.block.hash(), a.signature));
    assert_eq!(e.second, (b.block.hash(), b.signature));
    // Reported once per round.
    let again = other_block(&a, proposer, 4);
    assert!(evidence_of(&deliver(&mut m, &again)).is_empty());

    // The second block was kept: a commit quorum for it finalizes it here, although this
    // node accepted (and would prepare) the first.
    let mut effects = Vec::new();
    for signer in (0..N as CouncilIndex).filter(|s| *s != receiver) {
        let mut vote = crate::types::Vote {
            kind: crate::types::VoteKind::Commit,
            height: 1,
            round: 0,
            block_hash: b.block.hash(),
            signer,
            signature: [0; 96],
        };
        vote.signature = FastScheme::new(signer, N).sign(
            crate::crypto::bls::Domain::Vote,
            &vote.signing_message(config().chain_id),
        );
        effects.extend(m.handle(700, Input::Message(Message::Vote(vote))));
    }
    assert!(
        effects.iter().any(|e| matches!(e,
            Effect::Commit { block, .. } if block.hash() == b.block.hash())),
        "{effects:?}"
    );
}

#[test]
fn a_forged_vote_sent_ahead_of_the_real_one_is_reported_as_a_bad_signature() {
    let receiver: CouncilIndex = 0;
    let (mut m, _) = Machine::new(
        config(),
        FastScheme::new(receiver, N),
        receiver,
        genesis(),
        &[],
        0,
    );
    let signer: CouncilIndex = 2;
    let mut vote = crate::types::Vote {
        kind: crate::types::VoteKind::Prepare,
        height: 1,
        round: 0,
        block_hash: [7; 32],
        signer,
        signature: [0; 96],
    };
    vote.signature = FastScheme::new(signer, N).sign(
        crate::crypto::bls::Domain::Vote,
        &vote.signing_message(config().chain_id),
    );
    let mut forged = vote.clone();
    forged.signature[0] ^= 1;
    assert!(m
        .handle(10, Input::Message(Message::Vote(forged)))
        .is_empty());
    let effects = m.handle(11, Input::Message(Message::Vote(vote)));
    assert_eq!(
        effects,
        vec![Effect::Rejected {
            from: signer,
            reason: Rejection::BadSignature
        }]
    );
}

#[test]
fn messages_a_million_heights_ahead_are_refused() {
    let (mut m, _) = Machine::new(config(), FastScheme::new(0, N), 0, genesis(), &[], 0);
    let mut vote = crate::types::Vote {
        kind: crate::types::VoteKind::Commit,
        height: 1_000_000,
        round: 0,
        block_hash: [7; 32],
        signer: 1,
        signature: [0; 96],
    };
    vote.signature = FastScheme::new(1, N).sign(
        crate::crypto::bls::Domain::Vote,
        &vote.signing_message(config().chain_id),
    );
    for round in 0..100 {
        vote.round = round;
        let effects = m.handle(10, Input::Message(Message::Vote(vote.clone())));
        assert!(effects.contains(&Effect::Rejected {
            from: 1,
            reason: Rejection::TooFarAhead
        }));
    }
}

#[test]
fn every_rejection_reason_has_its_index_and_a_distinct_name() {
    let names: std::collections::BTreeSet<&str> = Rejection::ALL.iter().map(|r| r.name()).collect();
    assert_eq!(names.len(), Rejection::ALL.len());
    for (i, r) in Rejection::ALL.iter().enumerate() {
        assert_eq!(*r as usize, i, "{r:?}");
    }
}

#[test]
fn one_member_cannot_grow_the_future_buffer_past_its_bounds_or_crowd_out_the_others() {
    use crate::consensus::machine::{
        approximate_bytes, future_bytes_per_signer, MAX_FUTURE_BYTES, MAX_FUTURE_HEIGHTS,
        MAX_FUTURE_MESSAGES_PER_SIGNER,
    };
    let (mut m, _) = Machine::new(config(), FastScheme::new(0, N), 0, genesis(), &[], 0);
    let vote = |signer: CouncilIndex, height: Height, hash: u8| {
        let mut v = crate::types::Vote {
            kind: crate::types::VoteKind::Commit,
            height,
            round: 0,
            block_hash: [hash; 32],
            signer,
            signature: [0; 96],
        };
        v.signature = FastScheme::new(signer, N).sign(
            crate::crypto::bls::Domain::Vote,
            &v.signing_message(config().chain_id),
        );
        Message::Vote(v)
    };
    // A flood of votes for height 3 from member 1: only its share is kept.
    for i in 0..1000u32 {
        m.handle(10, Input::Message(vote(1, 3, i as u8)));
    }
    assert_eq!(m.future_buffered().0, MAX_FUTURE_MESSAGES_PER_SIGNER);
    // Member 2's early vote for that height is still kept.
    m.handle(10, Input::Message(vote(2, 3, 0)));
    assert_eq!(m.future_buffered().0, MAX_FUTURE_MESSAGES_PER_SIGNER + 1);

    // Proposals of 8 MiB blocks for the heights ahead, from member 1: the bytes it holds stay
    // within its share of the buffer.
    let (proposal, _) = first_proposal();
    let mut big = proposal;
    big.block.transactions = vec![crate::types::chain::SignedTransaction {
        bytes: vec![0; 8 << 20],
    }];
    let one = approximate_bytes(&Message::Proposal(Box::new(big.clone())));
    let flood = |m: &mut Machine<FastScheme>, proposer: CouncilIndex| {
        for height in 2..=MAX_FUTURE_HEIGHTS {
            for _ in 0..4 {
                let mut p = big.clone();
                p.proposer = proposer;
                p.block.header.height = height;
                m.handle(10, Input::Message(Message::Proposal(Box::new(p))));
            }
        }
    };
    let share = future_bytes_per_signer(N);
    assert_eq!(
        share,
        MAX_FUTURE_BYTES / N,
        "a council of {N} splits the buffer"
    );
    let (count0, bytes0) = m.future_buffered();
    flood(&mut m, 1);
    let (count1, bytes1) = m.future_buffered();
    assert!(
        count1 > count0,
        "member 1's proposals are buffered up to its share"
    );
    assert!(bytes1 - bytes0 <= share, "{bytes0} -> {bytes1}");
    assert!(
        bytes1 + one > bytes0 + share,
        "filled to its share: {bytes1}"
    );
    // Member 2 still gets its share after member 1's flood, and member 3 too: all together
    // never past MAX_FUTURE_BYTES.
    flood(&mut m, 2);
    let (_, bytes2) = m.future_buffered();
    assert!(
        bytes2 - bytes1 + one > share,
        "member 2 kept its share: {bytes1} -> {bytes2}"
    );
    flood(&mut m, 3);
    flood(&mut m, 0);
    let (_, all) = m.future_buffered();
    assert!(all <= MAX_FUTURE_BYTES, "{all}");
    // A large council: a member's share is still two of the largest proposals.
    assert_eq!(
        future_bytes_per_signer(10_000),
        2 * crate::types::frame::MAX_PROPOSAL_PAYLOAD
    );
}

#[test]
fn after_a_partition_heals_reconnected_peers_get_the_current_round_again_and_finalize_at_once() {
    let mut net = Net::new(config());
    net.run_until(3, 60_000);
    let height = net.machines[0].head().height;
    // Every link down for 5 s: round timers fire (400, 800, 1,600 ms, ...) and every round
    // change is lost, also those of timers due at the moment the links come back.
    net.isolated = true;
    net.run_until(height + 1, net.now + 5_000);
    while let Some(((at, _), (node, timer))) = net.timers.first_key_value() {
        if *at > net.now {
            break;
        }
        let (node, timer) = (*node, *timer);
        net.timers.pop_first();
        let effects = net.machines[node].handle(net.now, Input::Timer(timer));
        net.apply(node, effects);
    }
    net.queue
        .retain(|(_, input)| !matches!(input, Input::Message(_)));
    assert!(net.machines.iter().all(|m| m.head().height == height));
    let rounds: Vec<crate::types::Round> = net.machines.iter().map(|m| m.round()).collect();
    assert!(rounds.iter().all(|r| *r >= 3), "rounds {rounds:?}");
    let next_timer = net.timers.first_key_value().map(|((at, _), _)| *at);
    // The links come back; every node hears that its peers reconnected.
    net.isolated = false;
    let healed = net.now;
    for node in 0..N {
        for peer in 0..N {
            if peer != node {
                net.queue
                    .push_back((node, Input::PeerConnected(peer as CouncilIndex)));
            }
        }
    }
    net.run_until(height + 1, healed + 60_000);
    // Finalized from the re-sent messages alone, before the next round timer (without them
    // the next block waits for that timer, then for a quorum of round changes).
    assert!(
        next_timer.is_some_and(|at| net.now < at),
        "healed at {healed} ms, final at {} ms, next timer at {next_timer:?} (rounds {rounds:?})",
        net.now
    );
    assert!(net.machines.iter().all(|m| m.head().height == height + 1));
    net.assert_agreement();
}

#[test]
fn a_reconnected_peer_gets_this_nodes_own_vote_of_the_current_round_again_as_signed() {
    let (proposal, proposer) = first_proposal();
    let me = (proposer + 1) % N as CouncilIndex;
    let peer = (proposer + 2) % N as CouncilIndex;
    let (mut m, _) = Machine::new(config(), FastScheme::new(me, N), me, genesis(), &[], 0);
    // Before it voted, a reconnecting peer gets no vote from it.
    let before = m.handle(500, Input::PeerConnected(peer));
    assert!(
        !before
            .iter()
            .any(|e| matches!(e, Effect::SendTo(_, Message::Vote(_)))),
        "{before:?}"
    );
    let block_hash = proposal.block.hash();
    let effects = m.handle(
        510,
        Input::Message(Message::Proposal(Box::new(proposal.clone()))),
    );
    assert!(effects.iter().any(|e| matches!(e, Effect::VerifyBlock(_))));
    let effects = m.handle(
        520,
        Input::BlockVerified {
            height: 1,
            block_hash,
            valid: true,
        },
    );
    let prepare = effects
        .iter()
        .find_map(|e| match e {
            Effect::Broadcast(Message::Vote(v)) => Some(v.clone()),
            _ => None,
        })
        .expect("a PREPARE once the block is verified");
    assert_eq!(
        (prepare.kind, prepare.signer, prepare.block_hash),
        (crate::types::VoteKind::Prepare, me, block_hash)
    );
    // The peer's link comes back: it gets exactly that vote (same signature, nothing signed
    // anew), and only it.
    let again = m.handle(530, Input::PeerConnected(peer));
    let resent: Vec<&crate::types::Vote> = again
        .iter()
        .filter_map(|e| match e {
            Effect::SendTo(to, Message::Vote(v)) if *to == peer => Some(v),
            _ => None,
        })
        .collect();
    assert_eq!(resent, vec![&prepare]);
    assert!(
        again
            .iter()
            .all(|e| matches!(e, Effect::SendTo(to, _) if *to == peer)),
        "{again:?}"
    );
}

/// What a member other than the proposer does with `proposal`: the rejections it reports
/// and whether it asked for the block to be verified (the proposal accepted).
fn judge<S: SignatureScheme>(
    scheme_of: &impl Fn(CouncilIndex) -> S,
    proposal: &crate::types::Proposal,
) -> (Vec<Rejection>, bool) {
    let me = (proposal.proposer + 1) % N as CouncilIndex;
    let (mut m, _) = Machine::new(config(), scheme_of(me), me, genesis(), &[], 0);
    let effects = m.handle(
        510,
        Input::Message(Message::Proposal(Box::new(proposal.clone()))),
    );
    let rejected = effects
        .iter()
        .filter_map(|e| match e {
            Effect::Rejected { from, reason } => {
                assert_eq!(*from, proposal.proposer);
                Some(*reason)
            }
            _ => None,
        })
        .collect();
    let accepted = effects.iter().any(|e| matches!(e, Effect::VerifyBlock(_)));
    (rejected, accepted)
}

fn proposal_signature_and_randao_reveal_are_checked<S: SignatureScheme>(
    scheme_of: impl Fn(CouncilIndex) -> S,
) {
    let chain_id = config().chain_id;
    let (good, proposer) = first_proposal_with(&scheme_of);
    let signer = scheme_of(proposer);
    assert_eq!(judge(&scheme_of, &good), (vec![], true));
    // A reveal validly signed by the proposer, but for another height, with the mix derived
    // from it and the proposal signed again: only the reveal is wrong.
    let mut bad_reveal = good.clone();
    let h = &mut bad_reveal.block.header;
    h.randao_reveal = signer.sign(
        crate::crypto::bls::Domain::Randao,
        &crate::crypto::election::randao_message(chain_id, 2),
    );
    h.mix = crate::crypto::election::next_mix(&genesis().mix, &h.randao_reveal);
    bad_reveal.signature = signer.sign(
        crate::crypto::bls::Domain::Vote,
        &bad_reveal.signing_message(chain_id),
    );
    assert_eq!(
        judge(&scheme_of, &bad_reveal),
        (vec![Rejection::BadRandaoReveal], false)
    );
    // The proposal signed by another member: a bad signature, also when the reveal is bad too.
    let other = scheme_of((proposer + 2) % N as CouncilIndex);
    let mut bad_signature = good.clone();
    bad_signature.signature = other.sign(
        crate::crypto::bls::Domain::Vote,
        &good.signing_message(chain_id),
    );
    assert_eq!(
        judge(&scheme_of, &bad_signature),
        (vec![Rejection::BadSignature], false)
    );
    let mut both_bad = bad_reveal.clone();
    both_bad.signature = bad_signature.signature;
    assert_eq!(
        judge(&scheme_of, &both_bad),
        (vec![Rejection::BadSignature], false)
    );
    // A reveal whose mix does not follow from it, all signatures valid: a bad proposal.
    let mut bad_mix = good.clone();
    bad_mix.block.header.mix[0] ^= 1;
    bad_mix.signature = signer.sign(
        crate::crypto::bls::Domain::Vote,
        &bad_mix.signing_message(chain_id),
    );
    assert_eq!(
        judge(&scheme_of, &bad_mix),
        (vec![Rejection::BadProposal], false)
    );
}

#[test]
fn a_proposal_is_refused_for_its_signature_its_randao_reveal_or_its_mix_fast_scheme() {
    proposal_signature_and_randao_reveal_are_checked(|i| FastScheme::new(i, N));
}

/// The same with BLS, where the signature and the reveal are verified in one multi-pairing.
#[test]
fn a_proposal_is_refused_for_its_signature_its_randao_reveal_or_its_mix_bls_scheme() {
    let schemes = crate::consensus::scheme::tests::bls_council(N as u8, 40);
    proposal_signature_and_randao_reveal_are_checked(|i| schemes[i as usize].clone());
}

fn counting(me: CouncilIndex) -> CountingScheme {
    CountingScheme {
        inner: FastScheme::new(me, N),
        single: Default::default(),
        batches: Default::default(),
        verifies: Default::default(),
    }
}

/// A round change of height 1 for `round` signed by `signer`.
fn round_change(signer: CouncilIndex, round: crate::types::Round) -> Input {
    let mut rc = crate::types::RoundChange {
        height: 1,
        round,
        signer,
        prepared: None,
        signature: [0; 96],
    };
    rc.signature = FastScheme::new(signer, N).sign(
        crate::crypto::bls::Domain::Vote,
        &rc.signing_message(config().chain_id),
    );
    Input::Message(Message::RoundChange(rc))
}

#[test]
fn far_round_changes_cost_no_signature_check_until_f_plus_one_name_them_and_are_then_followed() {
    use crate::consensus::machine::{MAX_FAR_ROUND_CHANGES_PER_HEIGHT, ROUND_WINDOW};
    let (mut m, _) = Machine::new(config(), counting(0), 0, genesis(), &[], 0);
    // Member 1 names ever higher far rounds: each replaces its last, none is checked, and
    // past the per-height allowance they are refused as spam.
    let far = 1000;
    let mut effects = Vec::new();
    for k in 0..=MAX_FAR_ROUND_CHANGES_PER_HEIGHT {
        effects = m.handle(1, round_change(1, far + k));
    }
    assert_eq!(
        m.scheme().verifies.get(),
        0,
        "no far round change checked alone"
    );
    assert_eq!(
        effects,
        vec![Effect::Rejected {
            from: 1,
            reason: Rejection::FarRound
        }]
    );
    assert!(
        Rejection::FarRound.is_misbehaviour(),
        "counted toward a ban"
    );
    assert_eq!(m.round(), 0, "one member alone moves no one");
    // A second member (f + 1 = 2 of 4) names a far round too: both are checked then (two
    // signatures), and the node follows the lower, which an honest member must be in.
    m.handle(2, round_change(2, 3 * ROUND_WINDOW));
    assert_eq!(m.scheme().verifies.get(), 2);
    assert_eq!(m.round(), 3 * ROUND_WINDOW);
    // Rounds in the window are checked on arrival, older or repeated ones never.
    let before = m.scheme().verifies.get();
    m.handle(3, round_change(3, 3 * ROUND_WINDOW + 1));
    m.handle(3, round_change(3, 3 * ROUND_WINDOW + 1));
    m.handle(3, round_change(3, 3 * ROUND_WINDOW));
    assert_eq!(m.scheme().verifies.get(), before + 1);
}

#[test]
fn a_proposal_for_a_far_round_is_refused_before_any_signature_work() {
    use crate::consensus::machine::ROUND_WINDOW;
    let (mut m, _) = Machine::new(config(), counting(0), 0, genesis(), &[], 0);
    let (mut p, _) = first_proposal();
    let round = ROUND_WINDOW + 5;
    p.round = round;
    p.proposer = m.committee().proposer(round);
    let effects = m.handle(1, Input::Message(Message::Proposal(Box::new(p))));
    assert_eq!(
        effects,
        vec![Effect::Rejected {
            from: m.committee().proposer(round),
            reason: Rejection::FarRound
        }]
    );
    assert_eq!(m.scheme().verifies.get() + m.scheme().single.get(), 0);
}

#[test]
fn a_finalized_block_in_the_future_buffer_is_charged_to_its_sender_not_its_proposer() {
    use crate::consensus::machine::MAX_FUTURE_MESSAGES_PER_SIGNER;
    let chain = finalized_chain(3);
    let (mut m, _) = Machine::new(config(), FastScheme::new(0, N), 0, genesis(), &[], 0);
    let proposer = chain[2].block.header.proposer;
    let sender = (proposer + 1) % N as CouncilIndex;
    // Member `sender` floods height 3 with copies of a block `proposer` proposed.
    for _ in 0..1000 {
        m.handle(10, finalized_from(sender, &chain[2]));
    }
    assert_eq!(m.future_buffered().0, MAX_FUTURE_MESSAGES_PER_SIGNER);
    // The proposer's own vote for height 3 is still kept: the flood used the sender's share.
    let mut v = crate::types::Vote {
        kind: crate::types::VoteKind::Commit,
        height: 3,
        round: 0,
        block_hash: [5; 32],
        signer: proposer,
        signature: [0; 96],
    };
    v.signature = FastScheme::new(proposer, N).sign(
        crate::crypto::bls::Domain::Vote,
        &v.signing_message(config().chain_id),
    );
    m.handle(10, Input::Message(Message::Vote(v)));
    assert_eq!(m.future_buffered().0, MAX_FUTURE_MESSAGES_PER_SIGNER + 1);
}
