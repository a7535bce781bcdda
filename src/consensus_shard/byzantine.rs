//! A Byzantine CN, for tests only (cargo feature `byzantine`, off by default; a build without
//! it has none of this code and refuses a config with a `[byzantine]` section).
//!
//! The node's [`Machine`](crate::consensus::Machine) stays honest and untouched. Between its
//! effects and the network sits a [`ByzantineLayer`]: a small sans-IO, seeded, deterministic
//! rewriter of the [`Effect::Broadcast`]s of consensus messages. It signs only with the node's
//! own key, so everything it sends is what a faulty validator holding that one key could send.
//! Its [`Behaviour`]s, any combination:
//!
//! - **`equivocate`**: each proposal of its own goes, as signed by the machine (block A), to a
//!   random half of the other members, and a different block B for the same height and round
//!   (A with a later timestamp: a valid block, validly signed) to the other half. One member of
//!   the second half (the *witness*) gets A too, after B. CNs do not relay proposals, so
//!   without a witness no honest node would hold both signed proposals (the split still shows
//!   as prepares for two blocks, and a failed round).
//! - **`double-vote`**: each PREPARE and COMMIT is sent together with a validly signed vote of
//!   the same kind, height and round for another block (B if it equivocated in that slot,
//!   else a random hash), in a random order.
//! - **`bad-signature`**: half of its consensus messages (chosen at random) are preceded by a
//!   copy with one signature byte flipped.
//! - **`future-height`**: each consensus message is accompanied by validly signed COMMITs for
//!   random blocks at [`FAR_AHEAD`] heights ahead and 2 to 4 heights ahead.
//! - **`flood`**: with each consensus message of its own, a burst of [`FLOOD_BURST`] validly
//!   signed messages meant to make the others work or hold: round changes for ever higher
//!   far rounds, proposals for far rounds (with its own proposals' blocks), stale votes for the
//!   height before (each a sync offer's trigger) and, every [`FLOOD_FORGED_EVERY`] bursts, a
//!   finalized block for the current height with a forged body. Sent at about the rate of its
//!   own messages times the burst, below the receivers' consensus frame cap.
//! - **`tamper-bodies`** (a CN or a PN): every finalized block the node sends (a CN's push to
//!   its PNs, a PN's relay, sync answers) keeps its genuine header and certificate but carries
//!   other transactions ([`crate::net::tamper::tamper_block_frame`], applied by the net shard to each frame it
//!   queues). The only behaviour a PN may have.
//!
//! Configured in the node's config:
//!
//! ```toml
//! [byzantine]
//! behaviours = ["equivocate", "double-vote", "bad-signature", "future-height"]
//! seed = 7
//! ```

use std::collections::BTreeSet;

pub use crate::config::byzantine::{Behaviour, ByzantineSettings};
use crate::consensus::{Effect, Message, SignatureScheme};
use crate::crypto::bls::Domain;
use crate::types::hash::Hash32;
use crate::types::{CouncilIndex, Height, Proposal, Round, Vote, VoteKind};

/// How far ahead the far-future messages are.
pub const FAR_AHEAD: Height = 1_000_000;
/// Messages a `flood` sends with each of its own.
pub const FLOOD_BURST: usize = 24;
/// A `flood` sends a forged finalized block with every this many bursts.
pub const FLOOD_FORGED_EVERY: u64 = 16;
/// The first far round a `flood` names (it counts up from there).
pub const FLOOD_FIRST_ROUND: Round = 10_000;

/// A small deterministic generator (splitmix64): the layer's only source of choices.
#[derive(Debug, Clone)]
struct Choices(u64);

impl Choices {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn coin(&mut self) -> bool {
        self.next() & 1 == 1
    }

    fn hash(&mut self) -> Hash32 {
        let mut h = [0u8; 32];
        for chunk in h.chunks_mut(8) {
            chunk.copy_from_slice(&self.next().to_le_bytes());
        }
        h
    }
}

/// What the layer sent besides the machine's own messages (for logs and tests).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ByzantineSent {
    /// Proposals split between two blocks.
    pub equivocations: u64,
    /// Second votes for another block.
    pub double_votes: u64,
    /// Messages with a corrupted signature.
    pub bad_signatures: u64,
    /// Messages for heights ahead.
    pub future_messages: u64,
    /// Flood messages (far rounds, stale votes, forged finalized blocks).
    pub flood_messages: u64,
}

/// The rewriter between a CN's machine and its network (see the module doc).
#[derive(Debug)]
pub struct ByzantineLayer {
    behaviours: BTreeSet<Behaviour>,
    me: CouncilIndex,
    council_size: usize,
    chain_id: u64,
    choices: Choices,
    /// The slot it last equivocated in and its second block's hash.
    equivocated: Option<(Height, Round, Hash32)>,
    sent: ByzantineSent,
    /// `flood`: the next far round to name, the bursts sent, the last own proposal's block.
    flood_round: Round,
    flood_bursts: u64,
    flood_block: Option<crate::types::Block>,
}

impl ByzantineLayer {
    /// The layer of council member `me`.
    pub fn new(
        settings: &ByzantineSettings,
        me: CouncilIndex,
        council_size: usize,
        chain_id: u64,
    ) -> ByzantineLayer {
        assert!((me as usize) < council_size, "me outside the council");
        ByzantineLayer {
            behaviours: settings.behaviours.clone(),
            me,
            council_size,
            chain_id,
            choices: Choices(settings.seed),
            equivocated: None,
            sent: ByzantineSent::default(),
            flood_round: FLOOD_FIRST_ROUND,
            flood_bursts: 0,
            flood_block: None,
        }
    }

    /// What it sent so far.
    pub fn sent(&self) -> ByzantineSent {
        self.sent
    }

    fn on(&self, b: Behaviour) -> bool {
        self.behaviours.contains(&b)
    }

    /// Rewrites a batch of the machine's effects, keeping their order (persists stay before
    /// the sends they guard). Only broadcasts of proposals, votes and round changes change.
    pub fn rewrite<S: SignatureScheme>(&mut self, scheme: &S, effects: Vec<Effect>) -> Vec<Effect> {
        let mut out = Vec::with_capacity(effects.len());
        for effect in effects {
            match effect {
                Effect::Broadcast(
                    m @ (Message::Proposal(_) | Message::Vote(_) | Message::RoundChange(_)),
                ) => self.rewrite_broadcast(scheme, m, &mut out),
                other => out.push(other),
            }
        }
        out
    }

    fn rewrite_broadcast<S: SignatureScheme>(
        &mut self,
        scheme: &S,
        m: Message,
        out: &mut Vec<Effect>,
    ) {
        if self.on(Behaviour::BadSignature) && self.choices.coin() {
            out.push(Effect::Broadcast(self.corrupted(&m)));
            self.sent.bad_signatures += 1;
        }
        if self.on(Behaviour::Flood) {
            self.flood(scheme, &m, out);
        }
        if self.on(Behaviour::FutureHeight) {
            let round = match &m {
                Message::Proposal(p) => p.round,
                Message::Vote(v) => v.round,
                Message::RoundChange(rc) => rc.round,
                Message::Finalized { .. } => 0,
            };
            let near = 2 + self.choices.below(3);
            for ahead in [FAR_AHEAD, near] {
                let hash = self.choices.hash();
                let vote =
                    self.signed_vote(scheme, VoteKind::Commit, m.height() + ahead, round, hash);
                out.push(Effect::Broadcast(Message::Vote(vote)));
                self.sent.future_messages += 1;
            }
        }
        match m {
            Message::Proposal(p) if self.on(Behaviour::Equivocate) && p.proposer == self.me => {
                self.equivocate(scheme, *p, out)
            }
            Message::Vote(v) if self.on(Behaviour::DoubleVote) && v.signer == self.me => {
                let other = match self.equivocated {
                    Some((h, r, b)) if h == v.height && r == v.round && b != v.block_hash => b,
                    _ => self.choices.hash(),
                };
                let second = self.signed_vote(scheme, v.kind, v.height, v.round, other);
                let (first, then) = if self.choices.coin() {
                    (v, second)
                } else {
                    (second, v)
                };
                out.push(Effect::Broadcast(Message::Vote(first)));
                out.push(Effect::Broadcast(Message::Vote(then)));
                self.sent.double_votes += 1;
            }
            m => out.push(Effect::Broadcast(m)),
        }
    }

    /// Block A to a random half of the others, block B to the rest, and A to one of the rest
    /// as well (after B).
    fn equivocate<S: SignatureScheme>(&mut self, scheme: &S, a: Proposal, out: &mut Vec<Effect>) {
        let mut peers: Vec<CouncilIndex> = (0..self.council_size as CouncilIndex)
            .filter(|&i| i != self.me)
            .collect();
        // Fisher-Yates with the seeded choices.
        for i in (1..peers.len()).rev() {
            let j = self.choices.below(i as u64 + 1) as usize;
            peers.swap(i, j);
        }
        let (to_a, to_b) = peers.split_at(peers.len().div_ceil(2));
        if to_b.is_empty() {
            out.push(Effect::Broadcast(Message::Proposal(Box::new(a))));
            return;
        }
        let mut b = a.clone();
        b.block.header.timestamp_ms += 1;
        b.signature = scheme.sign(Domain::Vote, &b.signing_message(self.chain_id));
        self.equivocated = Some((a.block.header.height, a.round, b.block.hash()));
        for &peer in to_a {
            out.push(Effect::SendTo(peer, Message::Proposal(Box::new(a.clone()))));
        }
        for &peer in to_b {
            out.push(Effect::SendTo(peer, Message::Proposal(Box::new(b.clone()))));
        }
        out.push(Effect::SendTo(to_b[0], Message::Proposal(Box::new(a))));
        self.sent.equivocations += 1;
    }

    fn signed_vote<S: SignatureScheme>(
        &self,
        scheme: &S,
        kind: VoteKind,
        height: Height,
        round: Round,
        block_hash: Hash32,
    ) -> Vote {
        let mut vote = Vote {
            kind,
            height,
            round,
            block_hash,
            signer: self.me,
            signature: [0; 96],
        };
        vote.signature = scheme.sign(Domain::Vote, &vote.signing_message(self.chain_id));
        vote
    }

    /// One `flood` burst beside the machine's message `m`.
    fn flood<S: SignatureScheme>(&mut self, scheme: &S, m: &Message, out: &mut Vec<Effect>) {
        let height = m.height();
        if let Message::Proposal(p) = m {
            self.flood_block = Some(p.block.clone());
        }
        self.flood_bursts += 1;
        let mut sent = 0;
        if self.flood_bursts.is_multiple_of(FLOOD_FORGED_EVERY) {
            if let Some(block) = &self.flood_block {
                let mut block = block.clone();
                block.header.height = height;
                block
                    .transactions
                    .push(crate::types::chain::SignedTransaction {
                        bytes: vec![0x02, 0xf1, 0x00, 0xd0],
                    });
                let certificate = crate::types::QuorumCertificate {
                    kind: VoteKind::Commit,
                    height,
                    round: 0,
                    block_hash: block.hash(),
                    signers: crate::types::signers::empty(self.council_size),
                    signature: [0; 96],
                };
                out.push(Effect::Broadcast(Message::Finalized {
                    sender: self.me,
                    block: Box::new(crate::types::FinalizedBlock { block, certificate }),
                }));
                sent += 1;
            }
        }
        while sent < FLOOD_BURST {
            match sent % 3 {
                0 => {
                    let mut rc = crate::types::RoundChange {
                        height,
                        round: self.flood_round,
                        signer: self.me,
                        prepared: None,
                        signature: [0; 96],
                    };
                    self.flood_round = self.flood_round.saturating_add(1);
                    rc.signature = scheme.sign(Domain::Vote, &rc.signing_message(self.chain_id));
                    out.push(Effect::Broadcast(Message::RoundChange(rc)));
                }
                1 => match &self.flood_block {
                    Some(block) => {
                        let mut p = Proposal {
                            proposer: self.me,
                            round: self.flood_round,
                            block: block.clone(),
                            justification: Vec::new(),
                            signature: [0; 96],
                        };
                        p.block.header.height = height;
                        p.signature = scheme.sign(Domain::Vote, &p.signing_message(self.chain_id));
                        out.push(Effect::Broadcast(Message::Proposal(Box::new(p))));
                    }
                    None => {
                        let hash = self.choices.hash();
                        let rc_round = self.flood_round;
                        let vote =
                            self.signed_vote(scheme, VoteKind::Prepare, height, rc_round, hash);
                        out.push(Effect::Broadcast(Message::Vote(vote)));
                    }
                },
                _ => {
                    let hash = self.choices.hash();
                    let stale = height.saturating_sub(1).max(1);
                    let vote = self.signed_vote(scheme, VoteKind::Commit, stale, 0, hash);
                    out.push(Effect::Broadcast(Message::Vote(vote)));
                }
            }
            sent += 1;
        }
        self.sent.flood_messages += sent as u64;
    }

    /// `m` with one byte of its signature flipped.
    fn corrupted(&mut self, m: &Message) -> Message {
        let at = self.choices.below(96) as usize;
        let mut m = m.clone();
        let signature = match &mut m {
            Message::Proposal(p) => &mut p.signature,
            Message::Vote(v) => &mut v.signature,
            Message::RoundChange(rc) => &mut rc.signature,
            Message::Finalized { block, .. } => &mut block.certificate.signature,
        };
        signature[at] ^= 0x5a;
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::consensus::FastScheme;
    use crate::types::{Block, BlockHeader};

    const CHAIN: u64 = 1001;
    const N: usize = 4;
    const ME: CouncilIndex = 3;

    fn settings(behaviours: &[Behaviour], seed: u64) -> ByzantineSettings {
        ByzantineSettings {
            behaviours: behaviours.iter().copied().collect(),
            seed,
        }
    }

    fn scheme() -> FastScheme {
        FastScheme::new(ME, N)
    }

    fn verifies(m: &Message) -> bool {
        let (signer, message, signature) = match m {
            Message::Proposal(p) => (p.proposer, p.signing_message(CHAIN).to_vec(), p.signature),
            Message::Vote(v) => (v.signer, v.signing_message(CHAIN).to_vec(), v.signature),
            Message::RoundChange(rc) => {
                (rc.signer, rc.signing_message(CHAIN).to_vec(), rc.signature)
            }
            Message::Finalized { .. } => unreachable!("not sent by the layer"),
        };
        signer == ME && scheme().verify(signer, Domain::Vote, &message, &signature)
    }

    fn proposal() -> Proposal {
        let header = BlockHeader {
            parent_hash: [1; 32],
            height: 9,
            round: 0,
            timestamp_ms: 5000,
            proposer: ME,
            randao_reveal: [2; 96],
            mix: [3; 32],
            transactions_root: [0; 32],
            state_root: [4; 32],
            committee_digest: [5; 32],
        };
        let mut p = Proposal {
            proposer: ME,
            round: 0,
            block: Block {
                header,
                transactions: Vec::new(),
            },
            justification: Vec::new(),
            signature: [0; 96],
        };
        p.signature = scheme().sign(Domain::Vote, &p.signing_message(CHAIN));
        p
    }

    fn vote(kind: VoteKind) -> Vote {
        let mut v = Vote {
            kind,
            height: 9,
            round: 0,
            block_hash: proposal().block.hash(),
            signer: ME,
            signature: [0; 96],
        };
        v.signature = scheme().sign(Domain::Vote, &v.signing_message(CHAIN));
        v
    }

    fn sends(effects: &[Effect]) -> Vec<(Option<CouncilIndex>, &Message)> {
        effects
            .iter()
            .filter_map(|e| match e {
                Effect::Broadcast(m) => Some((None, m)),
                Effect::SendTo(p, m) => Some((Some(*p), m)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn without_behaviours_nothing_changes() {
        let mut layer = ByzantineLayer::new(&settings(&[], 1), ME, N, CHAIN);
        let effects = vec![
            Effect::Persist(crate::consensus::WalRecord::RoundChanged {
                height: 9,
                round: 1,
            }),
            Effect::Broadcast(Message::Proposal(Box::new(proposal()))),
            Effect::Broadcast(Message::Vote(vote(VoteKind::Prepare))),
        ];
        assert_eq!(layer.rewrite(&scheme(), effects.clone()), effects);
    }

    #[test]
    fn an_equivocating_proposer_splits_two_valid_blocks_and_shows_both_to_one_witness() {
        let mut layer = ByzantineLayer::new(&settings(&[Behaviour::Equivocate], 5), ME, N, CHAIN);
        let a = proposal();
        let persist = Effect::Persist(crate::consensus::WalRecord::Proposed {
            round: 0,
            block: a.block.clone(),
        });
        let out = layer.rewrite(
            &scheme(),
            vec![
                persist.clone(),
                Effect::Broadcast(Message::Proposal(Box::new(a.clone()))),
            ],
        );
        assert_eq!(out[0], persist, "the persist stays first");
        let mut got: Vec<Vec<Hash32>> = vec![Vec::new(); N];
        for (to, m) in sends(&out) {
            let Message::Proposal(p) = m else {
                panic!("only proposals")
            };
            assert!(verifies(m), "validly signed");
            assert_eq!((p.block.header.height, p.round), (9, 0), "same slot");
            got[to.expect("sent to one peer each") as usize].push(p.block.hash());
        }
        assert!(got[ME as usize].is_empty());
        let hash_a = a.block.hash();
        let with_a = got.iter().filter(|g| g.as_slice() == [hash_a]).count();
        let with_b_only = got
            .iter()
            .filter(|g| g.len() == 1 && g[0] != hash_a)
            .count();
        let witnesses: Vec<&Vec<Hash32>> = got.iter().filter(|g| g.len() == 2).collect();
        assert_eq!((with_a, with_b_only, witnesses.len()), (2, 0, 1), "{got:?}");
        assert_ne!(witnesses[0][0], hash_a, "the witness gets B first");
        assert_eq!(witnesses[0][1], hash_a, "then A");
        assert_eq!(layer.sent().equivocations, 1);
    }

    #[test]
    fn a_double_voter_signs_a_second_vote_for_another_block_in_the_same_slot() {
        let mut layer = ByzantineLayer::new(&settings(&[Behaviour::DoubleVote], 9), ME, N, CHAIN);
        for kind in [VoteKind::Prepare, VoteKind::Commit] {
            let real = vote(kind);
            let out = layer.rewrite(
                &scheme(),
                vec![Effect::Broadcast(Message::Vote(real.clone()))],
            );
            let votes: Vec<&Vote> = sends(&out)
                .into_iter()
                .map(|(to, m)| match m {
                    Message::Vote(v) if to.is_none() && verifies(m) => v,
                    other => panic!("expected a broadcast valid vote, got {other:?}"),
                })
                .collect();
            assert_eq!(votes.len(), 2);
            assert!(votes.contains(&&real));
            let other = votes.iter().find(|v| **v != &real).expect("a second vote");
            assert_eq!((other.kind, other.height, other.round), (kind, 9, 0));
            assert_ne!(other.block_hash, real.block_hash);
        }
    }

    #[test]
    fn bad_signatures_and_future_heights_accompany_the_real_messages() {
        let mut layer = ByzantineLayer::new(
            &settings(&[Behaviour::BadSignature, Behaviour::FutureHeight], 3),
            ME,
            N,
            CHAIN,
        );
        let mut corrupted = 0;
        for _ in 0..50 {
            let real = vote(VoteKind::Prepare);
            let out = layer.rewrite(
                &scheme(),
                vec![Effect::Broadcast(Message::Vote(real.clone()))],
            );
            let sent = sends(&out);
            assert_eq!(
                sent.last().map(|(_, m)| *m),
                Some(&Message::Vote(real.clone())),
                "the real vote still goes out, last"
            );
            let mut far = 0;
            let mut near = 0;
            for (_, m) in &sent[..sent.len() - 1] {
                if !verifies(m) {
                    corrupted += 1;
                    assert_eq!(m.height(), 9, "a corrupted copy of the real vote");
                } else if m.height() == 9 + FAR_AHEAD {
                    far += 1;
                } else {
                    assert!((11..=13).contains(&m.height()), "{}", m.height());
                    near += 1;
                }
            }
            assert_eq!((far, near), (1, 1));
        }
        assert!(
            (10..=40).contains(&corrupted),
            "about half corrupted: {corrupted}"
        );
        assert_eq!(layer.sent().bad_signatures, corrupted);
        assert_eq!(layer.sent().future_messages, 100);
    }

    #[test]
    fn the_same_seed_makes_the_same_choices() {
        let all = settings(&Behaviour::ALL, 42);
        let run = || {
            let mut layer = ByzantineLayer::new(&all, ME, N, CHAIN);
            let mut out = Vec::new();
            for _ in 0..5 {
                out.extend(layer.rewrite(
                    &scheme(),
                    vec![
                        Effect::Broadcast(Message::Proposal(Box::new(proposal()))),
                        Effect::Broadcast(Message::Vote(vote(VoteKind::Prepare))),
                        Effect::Broadcast(Message::Vote(vote(VoteKind::Commit))),
                    ],
                ));
            }
            out
        };
        assert_eq!(run(), run());
    }

    #[test]
    fn behaviour_names_round_trip() {
        for b in Behaviour::ALL {
            assert_eq!(Behaviour::from_name(b.name()), Some(b));
        }
        assert_eq!(Behaviour::from_name("lie"), None);
    }
}
