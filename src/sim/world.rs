//! The simulator proper: nodes, virtual time, the event loop, and the driver contract.
//!
//! Each council member is one *instance* (twins are two instances with one council index).
//! An instance has durable storage (its WAL records and its finalized chain, both of which
//! survive a crash) and, while it is up, an [`Actor`] (its machine, possibly wrapped by a
//! Byzantine behavior). Everything that happens is an event in one [`EventQueue`] ordered by
//! `(virtual time, sequence number)`: message deliveries, timers, the block builder's and
//! verifier's answers, sync requests, crashes, restarts and the heal time. Inputs addressed to
//! an instance carry its *incarnation*; a crash bumps it, so whatever was in flight to the old
//! incarnation (timers, answers, messages) is lost with it.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::consensus::{
    BlsScheme, ConsensusConfig, Effect, FastScheme, Input, Machine, Message, Millis,
    SignatureScheme, Timer, WalRecord, Weakening,
};
use crate::crypto::bls::{BlsSecretKey, CouncilKeys};
use crate::types::chain::SignedTransaction;
use crate::types::hash::{keccak256_parts, Hash32};
use crate::types::{signers, BlockHeader, CouncilIndex, FinalizedBlock, Height, Round};

use super::byzantine::{Actor, ActorContext};
use super::checker::{short, Checker, Violation, ViolationKind};
use super::exec::{block_is_valid, random_transactions, state_root};
use super::net::{Fate, NetStats, Network};
use super::queue::EventQueue;
use super::rng::SimRng;
use super::scenario::{Behavior, Plan, Scenario};
use super::trace::{Trace, TraceEvent};

/// Chain id of every simulated chain.
pub const SIM_CHAIN_ID: u64 = 1001;
/// Virtual time allowed per height after the heal time before liveness fails.
pub const LIVENESS_MS_PER_HEIGHT: u64 = 4_000;
/// Most finalized blocks a sync answer carries.
pub const SYNC_BATCH: usize = 64;

/// Which signature scheme a run uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SchemeChoice {
    /// BLS for every tenth seed (`seed % 10 == 0`) when the council has at most 7 members,
    /// the fast scheme otherwise.
    Auto,
    /// Always the fast (insecure) scheme.
    Fast,
    /// Always BLS.
    Bls,
}

impl SchemeChoice {
    /// Parses `auto`, `fast` or `bls`.
    pub fn parse(s: &str) -> Result<SchemeChoice, String> {
        match s {
            "auto" => Ok(SchemeChoice::Auto),
            "fast" => Ok(SchemeChoice::Fast),
            "bls" => Ok(SchemeChoice::Bls),
            _ => Err(format!("unknown scheme `{s}` (expected auto, fast or bls)")),
        }
    }

    /// The `--scheme` name.
    pub fn name(self) -> &'static str {
        match self {
            SchemeChoice::Auto => "auto",
            SchemeChoice::Fast => "fast",
            SchemeChoice::Bls => "bls",
        }
    }
}

/// Everything that determines a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunOptions {
    /// Scenario.
    pub scenario: Scenario,
    /// Seed.
    pub seed: u64,
    /// Council size override.
    pub council: Option<usize>,
    /// Committee size override.
    pub committee: Option<usize>,
    /// Heights every honest node must finalize after the heal time (K).
    pub heights: u64,
    /// Block period.
    pub block_period_ms: u64,
    /// Deliberate protocol bugs (checker self-test).
    pub weakening: Weakening,
    /// Signature scheme.
    pub scheme: SchemeChoice,
    /// Keep the text trace.
    pub trace: bool,
}

impl RunOptions {
    /// Defaults: 50 heights, 500 ms blocks, no weakening, automatic scheme, no trace.
    pub fn new(scenario: Scenario, seed: u64) -> RunOptions {
        RunOptions {
            scenario,
            seed,
            council: None,
            committee: None,
            heights: 50,
            block_period_ms: 500,
            weakening: Weakening::default(),
            scheme: SchemeChoice::Auto,
            trace: false,
        }
    }

    /// The command that replays this run with its trace.
    pub fn replay_command(&self) -> String {
        let mut cmd = format!(
            "corecell sim --scenario {} --seed {} --heights {}",
            self.scenario.name(),
            self.seed,
            self.heights
        );
        if let Some(n) = self.council {
            cmd += &format!(" --council {n}");
        }
        if let Some(c) = self.committee {
            cmd += &format!(" --committee {c}");
        }
        if self.block_period_ms != 500 {
            cmd += &format!(" --block-period-ms {}", self.block_period_ms);
        }
        let mut weak = Vec::new();
        if self.weakening.quorum_minus_one {
            weak.push("quorum-minus-one");
        }
        if self.weakening.no_lock {
            weak.push("no-lock");
        }
        if !weak.is_empty() {
            cmd += &format!(" --weaken {}", weak.join(","));
        }
        if self.scheme != SchemeChoice::Auto {
            cmd += &format!(" --scheme {}", self.scheme.name());
        }
        cmd + " --trace"
    }
}

/// The outcome of one run.
#[derive(Debug, Clone)]
pub struct RunReport {
    /// The options of the run.
    pub options: RunOptions,
    /// The plan, described.
    pub plan: String,
    /// Council size.
    pub council: usize,
    /// Committee size.
    pub committee: usize,
    /// `fast` or `bls`.
    pub scheme: &'static str,
    /// Lowest finalized height over honest nodes at the end.
    pub min_finalized: Height,
    /// Highest finalized height over honest nodes at the end.
    pub max_finalized: Height,
    /// Heights every honest node had to reach (max honest height at the heal time + K).
    pub target: Height,
    /// Virtual time at the end.
    pub virtual_ms: Millis,
    /// Events delivered.
    pub events: u64,
    /// Fingerprint of the event trace.
    pub trace_hash: String,
    /// Broken invariants.
    pub violations: Vec<Violation>,
    /// Rejections by reason (all nodes).
    pub rejected: BTreeMap<String, u64>,
    /// Evidence naming Byzantine members.
    pub byzantine_evidence: u64,
    /// Network counters.
    pub net: NetStats,
    /// Messages injected or suppressed by Byzantine wrappers.
    pub injected: u64,
    /// Highest round any honest machine reached.
    pub max_round: Round,
    /// The text trace, when asked for.
    pub trace_lines: Vec<String>,
}

impl RunReport {
    /// Safety violations.
    pub fn safety_violations(&self) -> usize {
        self.violations
            .iter()
            .filter(|v| v.kind.is_safety())
            .count()
    }

    /// Liveness failures.
    pub fn liveness_failures(&self) -> usize {
        self.violations
            .iter()
            .filter(|v| !v.kind.is_safety())
            .count()
    }
}

/// Runs one seed of one scenario. A panic inside the run (a machine assertion, say) is
/// caught and reported as a [`ViolationKind::Panic`] violation with the panic message.
pub fn run(opts: &RunOptions) -> RunReport {
    run_plan(
        opts,
        Plan::build(opts.scenario, opts.seed, opts.council, opts.committee),
    )
}

/// Runs `plan` (normally [`Plan::build`] of the options; tests hand-make plans) with the
/// options' seed, heights, block period, weakening and scheme.
pub fn run_plan(opts: &RunOptions, plan: Plan) -> RunReport {
    let described = plan.describe();
    let (council, committee) = (plan.council, plan.committee);
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run_unguarded(opts, plan))) {
        Ok(report) => report,
        Err(payload) => {
            let message = payload
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "(non-string panic payload)".into());
            RunReport {
                options: opts.clone(),
                plan: described,
                council,
                committee,
                scheme: "?",
                min_finalized: 0,
                max_finalized: 0,
                target: opts.heights,
                virtual_ms: 0,
                events: 0,
                trace_hash: String::new(),
                violations: vec![Violation {
                    kind: ViolationKind::Panic,
                    at: 0,
                    description: format!("the run panicked: {message}"),
                }],
                rejected: BTreeMap::new(),
                byzantine_evidence: 0,
                net: NetStats::default(),
                injected: 0,
                max_round: 0,
                trace_lines: Vec::new(),
            }
        }
    }
}

fn run_unguarded(opts: &RunOptions, plan: Plan) -> RunReport {
    let n = plan.council;
    let bls = match opts.scheme {
        SchemeChoice::Auto => opts.seed.is_multiple_of(10) && n <= 7,
        SchemeChoice::Fast => false,
        SchemeChoice::Bls => true,
    };
    if bls {
        let sks: Vec<BlsSecretKey> = (0..n as u64)
            .map(|i| {
                BlsSecretKey::from_seed(&keccak256_parts(&[
                    b"corecell-sim-bls",
                    &opts.seed.to_be_bytes(),
                    &i.to_be_bytes(),
                ]))
            })
            .collect();
        let members: Vec<_> = sks
            .iter()
            .map(|s| (s.public_key().to_bytes(), s.prove_possession().to_bytes()))
            .collect();
        let council = match CouncilKeys::new(&members) {
            Ok(c) => Arc::new(c),
            // Distinct seeds give distinct valid keys with proofs of possession.
            Err(e) => unreachable!("simulated BLS council is invalid: {e}"),
        };
        let schemes = sks
            .into_iter()
            .map(|sk| BlsScheme::new(sk, council.clone()))
            .collect();
        World::new(opts, plan, schemes, "bls").run()
    } else {
        let schemes = (0..n as CouncilIndex)
            .map(|i| FastScheme::new(i, n))
            .collect();
        World::new(opts, plan, schemes, "fast").run()
    }
}

/// The genesis header of a simulated chain.
pub fn genesis_header(seed: u64) -> BlockHeader {
    BlockHeader::synthetic_genesis(seed)
}

/// The consensus config of a simulated chain.
pub fn sim_config(
    council: usize,
    committee: usize,
    block_period_ms: u64,
    weakening: Weakening,
) -> ConsensusConfig {
    ConsensusConfig {
        chain_id: SIM_CHAIN_ID,
        council_size: council,
        committee_size: committee,
        block_period_ms,
        round_timeout_base_ms: 400,
        round_timeout_max_ms: 8000,
        weakening,
    }
}

// Messages travel inline, as in `Effect`; the queue holds a few thousand events at most.
#[allow(clippy::large_enum_variant)]
enum Ev {
    Net {
        to: usize,
        inc: u32,
        from: usize,
        msg: Message,
    },
    Timer {
        to: usize,
        inc: u32,
        timer: Timer,
    },
    Built {
        to: usize,
        inc: u32,
        height: Height,
        round: Round,
        transactions: Vec<SignedTransaction>,
        state_root: Hash32,
    },
    Verified {
        to: usize,
        inc: u32,
        height: Height,
        block_hash: Hash32,
        valid: bool,
    },
    Sync {
        peer: usize,
        requester: usize,
        from_height: Height,
    },
    Crash(usize, Option<u8>),
    Restart(usize),
    Heal,
}

struct Inst<S> {
    index: CouncilIndex,
    label: String,
    honest: bool,
    behavior: Option<Behavior>,
    actor: Option<Actor<S>>,
    incarnation: u32,
    wal: Vec<WalRecord>,
    chain: Vec<FinalizedBlock>,
    injected_before: u64,
    /// A pending mid-batch crash: after this many effects of the next batch.
    crash_after: Option<usize>,
}

impl<S> Inst<S> {
    fn height(&self) -> Height {
        self.chain.len() as Height
    }
}

struct World<S> {
    opts: RunOptions,
    plan: Plan,
    config: ConsensusConfig,
    genesis: BlockHeader,
    schemes: Vec<S>,
    scheme_name: &'static str,
    now: Millis,
    queue: EventQueue<Ev>,
    net: Network,
    insts: Vec<Inst<S>>,
    /// `peers[i]`: instances `i` can reach (connected, another council index).
    peers: Vec<Vec<usize>>,
    builder_rng: SimRng,
    trace: Trace,
    checker: Checker<S>,
    rejected: BTreeMap<String, u64>,
    target: Option<Height>,
    deadline: Millis,
    done: bool,
    max_round: Round,
}

impl<S: SignatureScheme + Clone> World<S> {
    fn new(opts: &RunOptions, plan: Plan, schemes: Vec<S>, scheme_name: &'static str) -> Self {
        let n = plan.council;
        let config = sim_config(n, plan.committee, opts.block_period_ms, opts.weakening);
        let mut insts = Vec::new();
        for i in 0..n as CouncilIndex {
            let behavior = plan.byzantine.get(&i).copied();
            let copies: &[&str] = if behavior == Some(Behavior::Twins) {
                &["a", "b"]
            } else {
                &[""]
            };
            for suffix in copies {
                insts.push(Inst {
                    index: i,
                    label: format!("n{i}{suffix}"),
                    honest: behavior.is_none(),
                    behavior,
                    actor: None,
                    incarnation: 0,
                    wal: Vec::new(),
                    chain: Vec::new(),
                    injected_before: 0,
                    crash_after: None,
                });
            }
        }
        // Who talks to whom: a twin copy only with its half of the council, both ways.
        let allowed = |inst: &Inst<S>, other: CouncilIndex| -> bool {
            match plan.twin_halves.get(&inst.index) {
                None => true,
                Some(halves) => {
                    let side = usize::from(inst.label.ends_with('b'));
                    halves[side].contains(&other)
                }
            }
        };
        let peers = (0..insts.len())
            .map(|a| {
                (0..insts.len())
                    .filter(|&b| {
                        insts[a].index != insts[b].index
                            && allowed(&insts[a], insts[b].index)
                            && allowed(&insts[b], insts[a].index)
                    })
                    .collect()
            })
            .collect();
        let honest = (0..n as CouncilIndex).map(|i| plan.is_honest(i)).collect();
        let checker = Checker::new(schemes[0].clone(), SIM_CHAIN_ID, n, plan.committee, honest);
        let net = Network::new(
            plan.net,
            plan.partitions.clone(),
            plan.heal_at,
            SimRng::stream(opts.seed, "net"),
        );
        let deadline = plan.heal_at + opts.heights.max(1) * LIVENESS_MS_PER_HEIGHT;
        World {
            opts: opts.clone(),
            config,
            genesis: genesis_header(opts.seed),
            schemes,
            scheme_name,
            now: 0,
            queue: EventQueue::new(),
            net,
            insts,
            peers,
            builder_rng: SimRng::stream(opts.seed, "builder"),
            trace: Trace::new(opts.trace),
            checker,
            rejected: BTreeMap::new(),
            target: None,
            deadline,
            done: false,
            max_round: 0,
            plan,
        }
    }

    fn max_events(&self) -> u64 {
        1_000_000 + self.opts.heights * 50_000
    }

    fn run(mut self) -> RunReport {
        for c in self.plan.crashes.clone() {
            for i in 0..self.insts.len() {
                if self.insts[i].index == c.node {
                    self.queue.push(c.at, Ev::Crash(i, c.mid_batch));
                    self.queue.push(c.restart_at, Ev::Restart(i));
                }
            }
        }
        self.queue.push(self.plan.heal_at, Ev::Heal);
        for i in 0..self.insts.len() {
            self.start(i);
        }
        let budget = self.max_events();
        while let Some((at, _, ev)) = self.queue.pop() {
            if at > self.deadline {
                break;
            }
            self.now = at;
            self.dispatch(ev);
            if self.done {
                break;
            }
            if self.trace.events() > budget {
                self.checker.on_liveness(
                    self.now,
                    format!("event budget of {budget} exhausted (a message storm?)"),
                );
                break;
            }
        }
        if !self.done {
            self.report_liveness();
        }
        self.report()
    }

    fn report_liveness(&mut self) {
        let target = self.target.unwrap_or(self.opts.heights);
        let behind: Vec<String> = self
            .insts
            .iter()
            .filter(|x| x.honest && x.height() < target)
            .map(|x| format!("{} at {}", x.label, x.height()))
            .collect();
        if behind.is_empty() {
            return;
        }
        let why = if self.queue.is_empty() {
            "the event queue ran dry".to_string()
        } else {
            format!("deadline {} ms", self.deadline)
        };
        self.checker.on_liveness(
            self.now,
            format!(
                "after heal at {} ms, honest nodes must reach height {target} by {} ms ({why}): {}",
                self.plan.heal_at,
                self.deadline,
                behind.join(", ")
            ),
        );
    }

    fn report(mut self) -> RunReport {
        let honest: Vec<Height> = self
            .insts
            .iter()
            .filter(|x| x.honest)
            .map(|x| x.height())
            .collect();
        let injected = self
            .insts
            .iter()
            .map(|x| x.injected_before + x.actor.as_ref().map_or(0, |a| a.injected()))
            .sum();
        RunReport {
            plan: self.plan.describe(),
            council: self.plan.council,
            committee: self.plan.committee,
            scheme: self.scheme_name,
            min_finalized: honest.iter().copied().min().unwrap_or(0),
            max_finalized: honest.iter().copied().max().unwrap_or(0),
            target: self.target.unwrap_or(self.opts.heights),
            virtual_ms: self.now,
            events: self.trace.events(),
            trace_hash: self.trace.fingerprint(),
            violations: std::mem::take(&mut self.checker.violations),
            rejected: std::mem::take(&mut self.rejected),
            byzantine_evidence: self.checker.byzantine_evidence,
            net: self.net.stats,
            injected,
            max_round: self.max_round,
            trace_lines: self.trace.take_lines(),
            options: self.opts,
        }
    }

    fn start(&mut self, i: usize) {
        let inst = &self.insts[i];
        let head = inst
            .chain
            .last()
            .map(|f| f.block.header.clone())
            .unwrap_or_else(|| self.genesis.clone());
        let wal: Vec<WalRecord> = inst
            .wal
            .iter()
            .filter(|r| r.height() > head.height)
            .cloned()
            .collect();
        let index = inst.index;
        let (machine, effects) = Machine::new(
            self.config.clone(),
            self.schemes[index as usize].clone(),
            index,
            head,
            &wal,
            self.now,
        );
        let mut actor = match inst.behavior {
            None => Actor::honest(machine),
            Some(b) => Actor::byzantine(
                machine,
                b,
                index,
                self.schemes[index as usize].clone(),
                ActorContext {
                    chain_id: SIM_CHAIN_ID,
                    council: self.plan.council,
                    committee: self.plan.committee,
                },
                SimRng::stream(
                    self.opts.seed,
                    &format!("byzantine-{}-{}", inst.label, inst.incarnation),
                ),
            ),
        };
        let effects = actor.start(effects);
        self.insts[i].actor = Some(actor);
        self.apply(i, effects);
    }

    fn up(&self, i: usize, inc: u32) -> bool {
        let x = &self.insts[i];
        x.actor.is_some() && x.incarnation == inc
    }

    fn input(&mut self, i: usize, input: Input) {
        let now = self.now;
        let x = &mut self.insts[i];
        let Some(actor) = x.actor.as_mut() else {
            return;
        };
        let effects = actor.handle(now, input);
        if x.honest {
            self.max_round = self.max_round.max(actor.machine.round());
        }
        self.apply(i, effects);
    }

    fn dispatch(&mut self, ev: Ev) {
        match ev {
            Ev::Net { to, inc, from, msg } => {
                if !self.up(to, inc) {
                    return;
                }
                let x = &self.insts[to];
                self.trace.record(
                    self.now,
                    to as u32,
                    &x.label,
                    TraceEvent::Message {
                        from: &self.insts[from].label,
                        msg: &msg,
                    },
                );
                self.input(to, Input::Message(msg));
            }
            Ev::Timer { to, inc, timer } => {
                if !self.up(to, inc) {
                    return;
                }
                let label = &self.insts[to].label;
                self.trace
                    .record(self.now, to as u32, label, TraceEvent::Timer(timer));
                self.input(to, Input::Timer(timer));
            }
            Ev::Built {
                to,
                inc,
                height,
                round,
                transactions,
                state_root,
            } => {
                if !self.up(to, inc) {
                    return;
                }
                let label = &self.insts[to].label;
                self.trace.record(
                    self.now,
                    to as u32,
                    label,
                    TraceEvent::Built {
                        height,
                        round,
                        txs: transactions.len(),
                        state_root: &state_root,
                    },
                );
                self.input(
                    to,
                    Input::BlockBuilt {
                        height,
                        round,
                        transactions,
                        state_root,
                    },
                );
            }
            Ev::Verified {
                to,
                inc,
                height,
                block_hash,
                valid,
            } => {
                if !self.up(to, inc) {
                    return;
                }
                let label = &self.insts[to].label;
                self.trace.record(
                    self.now,
                    to as u32,
                    label,
                    TraceEvent::Verified {
                        height,
                        block_hash: &block_hash,
                        valid,
                    },
                );
                self.input(
                    to,
                    Input::BlockVerified {
                        height,
                        block_hash,
                        valid,
                    },
                );
            }
            Ev::Sync {
                peer,
                requester,
                from_height,
            } => {
                if self.insts[peer].actor.is_none() {
                    return;
                }
                self.trace.record(
                    self.now,
                    peer as u32,
                    &self.insts[peer].label,
                    TraceEvent::SyncRequest {
                        requester: &self.insts[requester].label,
                        from_height,
                    },
                );
                let first = from_height.max(1) as usize - 1;
                let chain = &self.insts[peer].chain;
                let blocks: Vec<FinalizedBlock> =
                    chain.iter().skip(first).take(SYNC_BATCH).cloned().collect();
                for f in blocks {
                    self.send(
                        peer,
                        requester,
                        Message::Finalized {
                            sender: peer as CouncilIndex,
                            block: Box::new(f),
                        },
                    );
                }
            }
            Ev::Crash(i, mid_batch) => match mid_batch {
                None => self.crash(i),
                Some(k) => {
                    if self.insts[i].actor.is_some() {
                        self.insts[i].crash_after = Some(usize::from(k));
                    }
                }
            },
            Ev::Restart(i) => {
                if self.insts[i].crash_after.is_some() {
                    // A mid-batch crash whose batch never came: crash now.
                    self.crash(i);
                }
                if self.insts[i].actor.is_some() {
                    return;
                }
                self.insts[i].incarnation += 1;
                self.trace.record(
                    self.now,
                    i as u32,
                    &self.insts[i].label,
                    TraceEvent::Restart,
                );
                self.start(i);
            }
            Ev::Heal => {
                self.trace.record(self.now, u32::MAX, "*", TraceEvent::Heal);
                let top = self
                    .insts
                    .iter()
                    .filter(|x| x.honest)
                    .map(|x| x.height())
                    .max()
                    .unwrap_or(0);
                self.target = Some(top + self.opts.heights);
                self.check_done();
            }
        }
    }

    /// Node `i` crashes: its machine and everything in flight to it are lost; its WAL and
    /// chain stay.
    fn crash(&mut self, i: usize) {
        let x = &mut self.insts[i];
        x.crash_after = None;
        let Some(actor) = x.actor.take() else {
            return;
        };
        x.injected_before += actor.injected();
        x.incarnation += 1;
        self.trace
            .record(self.now, i as u32, &self.insts[i].label, TraceEvent::Crash);
    }

    fn check_done(&mut self) {
        if let Some(target) = self.target {
            self.done = self
                .insts
                .iter()
                .filter(|x| x.honest)
                .all(|x| x.height() >= target);
        }
    }

    fn send(&mut self, from: usize, to: usize, msg: Message) {
        let fate = self
            .net
            .transmit(self.insts[from].index, self.insts[to].index, self.now);
        let inc = self.insts[to].incarnation;
        match fate {
            Fate::Deliver(t) => {
                self.queue.push(t, Ev::Net { to, inc, from, msg });
            }
            Fate::Duplicate(a, b) => {
                self.queue.push(
                    a,
                    Ev::Net {
                        to,
                        inc,
                        from,
                        msg: msg.clone(),
                    },
                );
                self.queue.push(b, Ev::Net { to, inc, from, msg });
            }
            Fate::Partitioned | Fate::Lost => {}
        }
    }

    fn apply(&mut self, i: usize, effects: Vec<Effect>) {
        let now = self.now;
        let crash_after = self.insts[i].crash_after;
        for (done, e) in effects.into_iter().enumerate() {
            if crash_after == Some(done) {
                self.crash(i);
                return;
            }
            match e {
                Effect::Persist(record) => self.insts[i].wal.push(record),
                Effect::Broadcast(msg) => {
                    let peers = std::mem::take(&mut self.peers[i]);
                    for &d in &peers {
                        self.send(i, d, msg.clone());
                    }
                    self.peers[i] = peers;
                }
                Effect::SendTo(to, msg) => {
                    let peers = std::mem::take(&mut self.peers[i]);
                    for &d in &peers {
                        if self.insts[d].index == to {
                            self.send(i, d, msg.clone());
                        }
                    }
                    self.peers[i] = peers;
                }
                Effect::Schedule { timer, at } => {
                    let inc = self.insts[i].incarnation;
                    self.queue
                        .push(at.max(now), Ev::Timer { to: i, inc, timer });
                }
                Effect::BuildBlock {
                    height,
                    round,
                    parent,
                } => {
                    let transactions = random_transactions(&mut self.builder_rng, 0, 3);
                    let root = state_root(&parent.hash(), &transactions);
                    let delay = self.builder_rng.range(1, 5);
                    let inc = self.insts[i].incarnation;
                    self.queue.push(
                        now + delay,
                        Ev::Built {
                            to: i,
                            inc,
                            height,
                            round,
                            transactions,
                            state_root: root,
                        },
                    );
                }
                Effect::VerifyBlock(block) => {
                    let valid = block_is_valid(&block);
                    let delay = self.builder_rng.range(1, 5);
                    let inc = self.insts[i].incarnation;
                    self.queue.push(
                        now + delay,
                        Ev::Verified {
                            to: i,
                            inc,
                            height: block.header.height,
                            block_hash: block.hash(),
                            valid,
                        },
                    );
                }
                Effect::Commit {
                    block, certificate, ..
                } => {
                    let x = &self.insts[i];
                    let parent = x
                        .chain
                        .last()
                        .map(|f| &f.block.header)
                        .unwrap_or(&self.genesis);
                    let height = block.header.height;
                    if height != parent.height + 1 {
                        if x.honest {
                            let description = format!(
                                "{} committed height {height} while its chain ends at height {}",
                                x.label, parent.height
                            );
                            self.checker.on_chain_error(now, description);
                        }
                        continue;
                    }
                    let hash = block.hash();
                    self.trace.effect(i as u32, &x.label, &hash, || {
                        format!(
                            "COMMIT h={height} block {} cert r={} signers {:?}",
                            short(&hash),
                            certificate.round,
                            signers::iter(&certificate.signers).collect::<Vec<_>>()
                        )
                    });
                    if x.honest {
                        let parent = parent.clone();
                        self.checker
                            .on_commit(now, &x.label, &parent, &block, &certificate);
                    }
                    let x = &mut self.insts[i];
                    x.wal.retain(|r| r.height() > height);
                    x.chain.push(FinalizedBlock { block, certificate });
                    self.check_done();
                }
                Effect::RequestSync { peer, from_height } => {
                    self.trace.effect(
                        i as u32,
                        &self.insts[i].label,
                        &[
                            &[0xa0],
                            &peer.to_le_bytes()[..],
                            &from_height.to_le_bytes()[..],
                        ]
                        .concat(),
                        || format!("REQUEST-SYNC from n{peer} for h>={from_height}"),
                    );
                    let peers = std::mem::take(&mut self.peers[i]);
                    for &d in &peers {
                        if self.insts[d].index != peer {
                            continue;
                        }
                        let fate = self.net.transmit(self.insts[i].index, peer, now);
                        let arrivals = match fate {
                            Fate::Deliver(t) => vec![t],
                            Fate::Duplicate(a, b) => vec![a, b],
                            Fate::Partitioned | Fate::Lost => vec![],
                        };
                        for t in arrivals {
                            self.queue.push(
                                t,
                                Ev::Sync {
                                    peer: d,
                                    requester: i,
                                    from_height,
                                },
                            );
                        }
                    }
                    self.peers[i] = peers;
                }
                Effect::OfferSync { peer, from_height } => {
                    self.trace.effect(
                        i as u32,
                        &self.insts[i].label,
                        &[
                            &[0xa2],
                            &peer.to_le_bytes()[..],
                            &from_height.to_le_bytes()[..],
                        ]
                        .concat(),
                        || format!("OFFER-SYNC to n{peer} for h>={from_height}"),
                    );
                    // This node sends its finalized blocks to the lagging peer: the same as
                    // answering a sync request from it, without the request's network hop.
                    let peers = std::mem::take(&mut self.peers[i]);
                    for &d in &peers {
                        if self.insts[d].index == peer {
                            self.queue.push(
                                now,
                                Ev::Sync {
                                    peer: i,
                                    requester: d,
                                    from_height,
                                },
                            );
                        }
                    }
                    self.peers[i] = peers;
                }
                Effect::Evidence(evidence) => {
                    let label = self.insts[i].label.clone();
                    self.trace.effect(i as u32, &label, &evidence.first.0, || {
                        format!(
                            "EVIDENCE against n{} {} h={} r={}: {} vs {}",
                            evidence.signer,
                            evidence.kind.name(),
                            evidence.height,
                            evidence.round,
                            short(&evidence.first.0),
                            short(&evidence.second.0)
                        )
                    });
                    self.checker.on_evidence(now, &label, &evidence);
                }
                Effect::Rejected { from, reason } => {
                    self.trace.effect(
                        i as u32,
                        &self.insts[i].label,
                        &[&[0xa1, reason as u8], &from.to_le_bytes()[..]].concat(),
                        || format!("REJECTED claimed from n{from}: {reason:?}"),
                    );
                    *self.rejected.entry(format!("{reason:?}")).or_default() += 1;
                }
            }
        }
        if crash_after.is_some() {
            // The batch was shorter than the crash point: crash at its end.
            self.crash(i);
        }
    }
}
