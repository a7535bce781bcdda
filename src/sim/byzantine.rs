//! Byzantine actors: an honest [`Machine`] wrapped by code that rewrites its outgoing effects or
//! injects messages of its own.
//!
//! A Byzantine actor signs only with its own key, through its own instance of the run's
//! signature scheme, so everything it sends is exactly what a real faulty validator holding
//! one key could send. What each [`Behavior`] does:
//!
//! - **equivocating proposer**: when its machine broadcasts a proposal of its own, the actor
//!   sends it to a random half of the council and, to the other half, a *second valid block*
//!   for the same slot (other transactions, both roots recomputed, same reveal and
//!   justification, the proposal re-signed). Its prepares and commits for the first block go
//!   to the first half; the second half gets the same votes for the second block.
//! - **double voter**: every vote is followed by a second, properly signed vote of the same
//!   kind, height and round for a random block hash.
//! - **twins**: no rewriting; the simulator runs two machines with the same index and key,
//!   each connected to a different half of the council.
//! - **silent proposer**: drops its own proposals.
//! - **invalid signatures**: every vote or round change it sends is followed by a burst of
//!   votes and round changes with random signature bytes (claiming random signers, honest ones
//!   included), and some proposals it receives are forwarded with a corrupted signature.
//! - **outside committee**: at a height whose committee it is not on, it answers each
//!   proposal with signed prepares and commits (for the proposal and for a random block) and
//!   sends signed round changes on its timers.
//! - **stale and far future**: replays messages of earlier heights it saw or sent, sends
//!   properly signed commits for random blocks 2-64 heights ahead (inside the machines'
//!   buffering window), and properly signed votes, round changes and proposals for
//!   height + 1000.

use std::collections::{BTreeMap, BTreeSet};

use crate::consensus::{Effect, Input, Machine, Message, Millis, SignatureScheme, Timer};
use crate::crypto::bls::Domain;
use crate::crypto::election::Committee;
use crate::types::hash::Hash32;
use crate::types::{CouncilIndex, Height, Proposal, RoundChange, Vote, VoteKind};

use super::exec::{random_transactions, state_root, tx_root};
use super::rng::SimRng;
use super::scenario::Behavior;

/// Messages a stale/future actor remembers for replay.
const MEMORY: usize = 64;

/// A council member's machine, honest or wrapped by a Byzantine behavior.
#[derive(Debug)]
pub struct Actor<S> {
    /// The (honest) machine underneath.
    pub machine: Machine<S>,
    byz: Option<Byzantine<S>>,
}

/// What an actor needs to know about the run.
#[derive(Debug, Clone, Copy)]
pub struct ActorContext {
    /// Chain id.
    pub chain_id: u64,
    /// Council size.
    pub council: usize,
    /// Committee size.
    pub committee: usize,
}

#[derive(Debug)]
struct Byzantine<S> {
    behavior: Behavior,
    me: CouncilIndex,
    scheme: S,
    ctx: ActorContext,
    rng: SimRng,
    /// Equivocation: real block hash -> (second block hash, members that got the second).
    forks: BTreeMap<Hash32, (Hash32, Vec<CouncilIndex>)>,
    memory: Vec<Message>,
    /// The last proposal seen (template of far-future proposals).
    last_proposal: Option<Box<Proposal>>,
    /// Slots whose proposal was already forwarded corrupted (once each: Byzantine actors
    /// hear each other, and forwarding every copy would breed a storm among them).
    forwarded: BTreeSet<(Height, u32)>,
    /// Counters of what was injected or suppressed.
    injected: u64,
}

impl<S: SignatureScheme> Actor<S> {
    /// An honest actor.
    pub fn honest(machine: Machine<S>) -> Actor<S> {
        Actor { machine, byz: None }
    }

    /// A Byzantine actor: `machine` rewritten by `behavior`, signing with `scheme` (its own
    /// key), drawing from `rng`.
    pub fn byzantine(
        machine: Machine<S>,
        behavior: Behavior,
        me: CouncilIndex,
        scheme: S,
        ctx: ActorContext,
        rng: SimRng,
    ) -> Actor<S> {
        let byz = (behavior != Behavior::Twins).then(|| Byzantine {
            behavior,
            me,
            scheme,
            ctx,
            rng,
            forks: BTreeMap::new(),
            memory: Vec::new(),
            last_proposal: None,
            forwarded: BTreeSet::new(),
            injected: 0,
        });
        Actor { machine, byz }
    }

    /// Messages injected or suppressed by the Byzantine wrapper so far.
    pub fn injected(&self) -> u64 {
        self.byz.as_ref().map_or(0, |b| b.injected)
    }

    /// Rewrites the effects of starting the machine.
    pub fn start(&mut self, effects: Vec<Effect>) -> Vec<Effect> {
        match self.byz.as_mut() {
            None => effects,
            Some(b) => b.rewrite(&self.machine, None, effects),
        }
    }

    /// Feeds one input to the machine and returns the (possibly rewritten) effects.
    pub fn handle(&mut self, now: Millis, input: Input) -> Vec<Effect> {
        let Some(b) = self.byz.as_mut() else {
            return self.machine.handle(now, input);
        };
        let seen = b.observe(&input);
        let effects = self.machine.handle(now, input);
        b.rewrite(&self.machine, Some(seen), effects)
    }
}

/// What the wrapper noted about an input before the machine consumed it.
enum Seen {
    Proposal {
        height: Height,
        round: u32,
        hash: Hash32,
        proposal: Option<Box<Proposal>>,
    },
    RoundTimer,
    ProposeTimer,
    Other,
}

impl<S: SignatureScheme> Byzantine<S> {
    fn sign_vote(&self, kind: VoteKind, height: Height, round: u32, block_hash: Hash32) -> Vote {
        let msg = kind.signing_message(self.ctx.chain_id, height, round, &block_hash);
        Vote {
            kind,
            height,
            round,
            block_hash,
            signer: self.me,
            signature: self.scheme.sign(Domain::Vote, &msg),
        }
    }

    fn sign_round_change(&self, height: Height, round: u32) -> RoundChange {
        let mut rc = RoundChange {
            height,
            round,
            signer: self.me,
            prepared: None,
            signature: [0; 96],
        };
        rc.signature = self
            .scheme
            .sign(Domain::Vote, &rc.signing_message(self.ctx.chain_id));
        rc
    }

    fn others(&self) -> Vec<CouncilIndex> {
        (0..self.ctx.council as CouncilIndex)
            .filter(|&i| i != self.me)
            .collect()
    }

    fn remember(&mut self, m: &Message) {
        if matches!(m, Message::Finalized { .. }) {
            return;
        }
        if self.memory.len() >= MEMORY {
            let i = self.rng.below(MEMORY as u64) as usize;
            self.memory[i] = m.clone();
        } else {
            self.memory.push(m.clone());
        }
    }

    fn observe(&mut self, input: &Input) -> Seen {
        match input {
            Input::Message(m) => {
                if self.behavior == Behavior::StaleFuture {
                    self.remember(m);
                    if let Message::Proposal(p) = m {
                        self.last_proposal = Some(p.clone());
                    }
                }
                match m {
                    Message::Proposal(p) => Seen::Proposal {
                        height: p.block.header.height,
                        round: p.round,
                        hash: p.block.hash(),
                        proposal: (self.behavior == Behavior::InvalidSignatures).then(|| p.clone()),
                    },
                    _ => Seen::Other,
                }
            }
            Input::Timer(Timer::Round { .. }) => Seen::RoundTimer,
            Input::Timer(Timer::Propose { .. }) => Seen::ProposeTimer,
            _ => Seen::Other,
        }
    }

    fn rewrite(
        &mut self,
        machine: &Machine<S>,
        seen: Option<Seen>,
        effects: Vec<Effect>,
    ) -> Vec<Effect> {
        let mut out = Vec::with_capacity(effects.len() + 4);
        for e in effects {
            match self.behavior {
                Behavior::EquivocatingProposer => self.equivocate(e, &mut out),
                Behavior::DoubleVoter => {
                    let second = match &e {
                        Effect::Broadcast(Message::Vote(v)) if v.signer == self.me => {
                            Some((None, v.clone()))
                        }
                        Effect::SendTo(to, Message::Vote(v)) if v.signer == self.me => {
                            Some((Some(*to), v.clone()))
                        }
                        _ => None,
                    };
                    out.push(e);
                    if let Some((to, v)) = second {
                        let other = self.rng.hash32();
                        let v2 = Message::Vote(self.sign_vote(v.kind, v.height, v.round, other));
                        self.injected += 1;
                        out.push(match to {
                            Some(t) => Effect::SendTo(t, v2),
                            None => Effect::Broadcast(v2),
                        });
                    }
                }
                Behavior::Twins => out.push(e),
                // Every proposal its machine sends is its own (only the round's proposer
                // proposes): drop them all.
                Behavior::SilentProposer => match &e {
                    Effect::Broadcast(Message::Proposal(_))
                    | Effect::SendTo(_, Message::Proposal(_)) => {
                        self.injected += 1;
                    }
                    _ => out.push(e),
                },
                Behavior::InvalidSignatures => {
                    let burst = matches!(
                        &e,
                        Effect::Broadcast(Message::Vote(_) | Message::RoundChange(_))
                    );
                    let height = e_height(&e).unwrap_or(machine.height());
                    out.push(e);
                    if burst {
                        self.garbage(height, machine.round(), &mut out);
                    }
                }
                Behavior::OutsideCommittee | Behavior::StaleFuture => {
                    if self.behavior == Behavior::StaleFuture {
                        if let Effect::Broadcast(m) | Effect::SendTo(_, m) = &e {
                            let m = m.clone();
                            self.remember(&m);
                        }
                    }
                    out.push(e);
                }
            }
        }
        match (self.behavior, seen) {
            (
                Behavior::InvalidSignatures,
                Some(Seen::Proposal {
                    proposal: Some(p), ..
                }),
            ) if self.rng.chance(0.5)
                && self.forwarded.insert((p.block.header.height, p.round)) =>
            {
                let height = machine.height();
                self.forwarded.retain(|&(h, _)| h >= height);
                let mut bad = p;
                let i = self.rng.below(96) as usize;
                bad.signature[i] ^= 1 << self.rng.below(8);
                self.injected += 1;
                out.push(Effect::Broadcast(Message::Proposal(bad)));
            }
            (
                Behavior::OutsideCommittee,
                Some(Seen::Proposal {
                    height,
                    round,
                    hash,
                    ..
                }),
            ) if height == machine.height() && !self.on_committee(machine, height) => {
                for kind in [VoteKind::Prepare, VoteKind::Commit] {
                    let v = self.sign_vote(kind, height, round, hash);
                    out.push(Effect::Broadcast(Message::Vote(v)));
                    let other = self.rng.hash32();
                    let v = self.sign_vote(kind, height, round, other);
                    out.push(Effect::Broadcast(Message::Vote(v)));
                    self.injected += 2;
                }
            }
            (Behavior::OutsideCommittee, Some(Seen::RoundTimer)) => {
                let height = machine.height();
                if !self.on_committee(machine, height) {
                    let rc = self.sign_round_change(height, machine.round() + 1);
                    out.push(Effect::Broadcast(Message::RoundChange(rc)));
                    self.injected += 1;
                }
            }
            // Paced by its own timers, never by what it receives (Byzantine actors hear each
            // other's replays: reacting to them would breed a storm among them).
            (Behavior::StaleFuture, Some(Seen::RoundTimer | Seen::ProposeTimer)) => {
                let proposal = self.last_proposal.clone();
                self.stale_and_future(machine, proposal, &mut out);
            }
            _ => {}
        }
        out
    }

    fn on_committee(&self, machine: &Machine<S>, height: Height) -> bool {
        Committee::elect(
            self.ctx.council,
            self.ctx.committee,
            height,
            &machine.head().mix,
        )
        .contains(self.me)
    }

    fn equivocate(&mut self, e: Effect, out: &mut Vec<Effect>) {
        match e {
            // Only the round's proposer proposes: every proposal its machine broadcasts is its
            // own (a fresh block, or in a later round possibly a re-proposed one).
            Effect::Broadcast(Message::Proposal(p)) => {
                let real_hash = p.block.hash();
                let mut second = (*p).clone();
                // Other transactions (at least one, so never the same list), roots recomputed:
                // a second block honest nodes will find valid.
                let mut txs = random_transactions(&mut self.rng, 1, 3);
                if txs == second.block.transactions {
                    txs.push(random_transactions(&mut self.rng, 1, 1).remove(0));
                }
                second.block.header.transactions_root = tx_root(&txs);
                second.block.header.state_root = state_root(&second.block.header.parent_hash, &txs);
                second.block.transactions = txs;
                second.signature = self
                    .scheme
                    .sign(Domain::Vote, &second.signing_message(self.ctx.chain_id));
                let second_hash = second.block.hash();
                let mut others = self.others();
                self.rng.shuffle(&mut others);
                let split = others.len().div_ceil(2);
                let (a, b) = others.split_at(split);
                for &i in a {
                    out.push(Effect::SendTo(i, Message::Proposal(p.clone())));
                }
                let second = Box::new(second);
                for &i in b {
                    out.push(Effect::SendTo(i, Message::Proposal(second.clone())));
                }
                self.injected += 1;
                self.forks.insert(real_hash, (second_hash, b.to_vec()));
            }
            Effect::Broadcast(Message::Vote(v)) if v.signer == self.me => {
                match self.forks.get(&v.block_hash).cloned() {
                    None => out.push(Effect::Broadcast(Message::Vote(v))),
                    Some((second_hash, b)) => {
                        let v2 = self.sign_vote(v.kind, v.height, v.round, second_hash);
                        for i in self.others() {
                            let m = if b.contains(&i) {
                                v2.clone()
                            } else {
                                v.clone()
                            };
                            out.push(Effect::SendTo(i, Message::Vote(m)));
                        }
                        self.injected += 1;
                    }
                }
            }
            Effect::SendTo(to, Message::Vote(v)) if v.signer == self.me => {
                match self.forks.get(&v.block_hash) {
                    Some((second_hash, b)) if b.contains(&to) => {
                        let v2 = self.sign_vote(v.kind, v.height, v.round, *second_hash);
                        out.push(Effect::SendTo(to, Message::Vote(v2)));
                        self.injected += 1;
                    }
                    _ => out.push(Effect::SendTo(to, Message::Vote(v))),
                }
            }
            Effect::Commit { .. } => {
                // The height is decided: its forks are of no more use.
                self.forks.clear();
                out.push(e);
            }
            other => out.push(other),
        }
    }

    fn garbage(&mut self, height: Height, round: u32, out: &mut Vec<Effect>) {
        let n = self.ctx.council as u64;
        for _ in 0..self.rng.range(3, 8) {
            let mut signature = [0u8; 96];
            self.rng.fill(&mut signature);
            let signer = self.rng.below(n) as CouncilIndex;
            let m = if self.rng.chance(0.75) {
                Message::Vote(Vote {
                    kind: if self.rng.chance(0.5) {
                        VoteKind::Prepare
                    } else {
                        VoteKind::Commit
                    },
                    height: height + self.rng.below(2),
                    round,
                    block_hash: self.rng.hash32(),
                    signer,
                    signature,
                })
            } else {
                Message::RoundChange(RoundChange {
                    height,
                    round: round + 1 + self.rng.below(2) as u32,
                    signer,
                    prepared: None,
                    signature,
                })
            };
            self.injected += 1;
            out.push(Effect::Broadcast(m));
        }
    }

    fn stale_and_future(
        &mut self,
        machine: &Machine<S>,
        proposal: Option<Box<Proposal>>,
        out: &mut Vec<Effect>,
    ) {
        let height = machine.height();
        // Replay old messages.
        if self.rng.chance(0.6) {
            let old: Vec<&Message> = self.memory.iter().filter(|m| m.height() < height).collect();
            for _ in 0..self.rng.range(1, 3) {
                if let Some(&m) = self.rng.pick(&old) {
                    out.push(Effect::Broadcast(m.clone()));
                    self.injected += 1;
                }
            }
        }
        // Near-future votes (within the machines' buffering window), properly signed for
        // random blocks: they must be buffered within bounds and never decide anything.
        if self.rng.chance(0.3) {
            let near = height + self.rng.range(2, 64);
            let hash = self.rng.hash32();
            let v = self.sign_vote(VoteKind::Commit, near, 0, hash);
            out.push(Effect::Broadcast(Message::Vote(v)));
            self.injected += 1;
        }
        // Far-future messages, properly signed.
        if self.rng.chance(0.3) {
            let far = height + 1000;
            let round = self.rng.below(3) as u32;
            let m = match self.rng.below(3) {
                0 => {
                    let kind = if self.rng.chance(0.5) {
                        VoteKind::Prepare
                    } else {
                        VoteKind::Commit
                    };
                    let hash = self.rng.hash32();
                    Message::Vote(self.sign_vote(kind, far, round, hash))
                }
                1 => Message::RoundChange(self.sign_round_change(far, round + 1)),
                _ => match proposal {
                    Some(p) => {
                        let mut p = p;
                        p.block.header.height = far;
                        p.block.header.proposer = self.me;
                        p.proposer = self.me;
                        p.round = 0;
                        p.justification.clear();
                        p.signature = self
                            .scheme
                            .sign(Domain::Vote, &p.signing_message(self.ctx.chain_id));
                        Message::Proposal(p)
                    }
                    None => Message::RoundChange(self.sign_round_change(far, 1)),
                },
            };
            out.push(Effect::Broadcast(m));
            self.injected += 1;
        }
    }
}

fn e_height(e: &Effect) -> Option<Height> {
    match e {
        Effect::Broadcast(m) | Effect::SendTo(_, m) => Some(m.height()),
        _ => None,
    }
}
