//! Scenarios: what goes wrong in a run, drawn deterministically from the seed.
//!
//! A [`Plan`] is everything a run needs besides the machine: council and committee sizes, the
//! network parameters and partitions, the crash schedule, the Byzantine council members and
//! their behaviors, and the heal time after which no more *faults* happen (no loss,
//! duplication, partitions or crashes; every crashed node is back up). Byzantine members stay
//! Byzantine for the whole run: there are at most `f = max_faulty(committee)` of them, which
//! the protocol must tolerate forever.

use std::collections::BTreeMap;

use crate::consensus::Millis;
use crate::crypto::election::max_faulty;
use crate::types::CouncilIndex;

use super::net::{Cut, NetParams, Partition};
use super::rng::SimRng;

/// The named scenarios of `corecell sim --scenario`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scenario {
    /// No faults: latency with jitter only.
    Honest,
    /// Loss, duplication and wide jitter until the heal time.
    Lossy,
    /// Symmetric partitions (minority/majority, or no side with a quorum), then heal.
    Partition,
    /// One-way partitions: a member that can hear but not speak, or the reverse.
    Asymmetric,
    /// Members crash (losing everything not persisted) and restart.
    CrashRestart,
    /// A proposer that sends one block to half the council and another to the other half,
    /// and votes for each accordingly.
    EquivocatingProposer,
    /// Every vote is followed by a second, properly signed vote for a random block.
    DoubleVoter,
    /// Two honest machines with one council index (one key), each talking to half the council.
    Twins,
    /// A member that never sends its proposals.
    SilentProposer,
    /// A member that floods votes and round changes with random signature bytes.
    InvalidSignatures,
    /// Council members off the height's committee sign and send votes and round changes.
    OutsideCommittee,
    /// Re-sent old messages and properly signed messages for height + 1000.
    StaleFuture,
}

impl Scenario {
    /// Every scenario, in `all` order.
    pub const ALL: [Scenario; 12] = [
        Scenario::Honest,
        Scenario::Lossy,
        Scenario::Partition,
        Scenario::Asymmetric,
        Scenario::CrashRestart,
        Scenario::EquivocatingProposer,
        Scenario::DoubleVoter,
        Scenario::Twins,
        Scenario::SilentProposer,
        Scenario::InvalidSignatures,
        Scenario::OutsideCommittee,
        Scenario::StaleFuture,
    ];

    /// The `--scenario` name.
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Honest => "honest",
            Scenario::Lossy => "lossy",
            Scenario::Partition => "partition",
            Scenario::Asymmetric => "asymmetric",
            Scenario::CrashRestart => "crash-restart",
            Scenario::EquivocatingProposer => "equivocating-proposer",
            Scenario::DoubleVoter => "double-voter",
            Scenario::Twins => "twins",
            Scenario::SilentProposer => "silent-proposer",
            Scenario::InvalidSignatures => "invalid-signatures",
            Scenario::OutsideCommittee => "outside-committee",
            Scenario::StaleFuture => "stale-future",
        }
    }

    /// Parses a `--scenario` name (`all` is handled by [`Scenario::parse_list`]).
    pub fn from_name(name: &str) -> Option<Scenario> {
        Scenario::ALL.into_iter().find(|s| s.name() == name)
    }

    /// Parses `all` or a comma-separated list of names.
    pub fn parse_list(text: &str) -> Result<Vec<Scenario>, String> {
        if text == "all" {
            return Ok(Scenario::ALL.to_vec());
        }
        text.split(',')
            .map(|name| {
                Scenario::from_name(name.trim()).ok_or_else(|| {
                    let names: Vec<&str> = Scenario::ALL.iter().map(|s| s.name()).collect();
                    format!(
                        "unknown scenario `{name}` (expected all or one of: {})",
                        names.join(", ")
                    )
                })
            })
            .collect()
    }

    /// The Byzantine behavior this scenario gives its faulty members, if any.
    pub fn behavior(self) -> Option<Behavior> {
        match self {
            Scenario::EquivocatingProposer => Some(Behavior::EquivocatingProposer),
            Scenario::DoubleVoter => Some(Behavior::DoubleVoter),
            Scenario::Twins => Some(Behavior::Twins),
            Scenario::SilentProposer => Some(Behavior::SilentProposer),
            Scenario::InvalidSignatures => Some(Behavior::InvalidSignatures),
            Scenario::OutsideCommittee => Some(Behavior::OutsideCommittee),
            Scenario::StaleFuture => Some(Behavior::StaleFuture),
            _ => None,
        }
    }

    /// `(council, committee)` choices drawn from when the command line does not fix them.
    fn default_sizes(self) -> &'static [(usize, usize)] {
        match self {
            Scenario::Honest => &[(4, 4), (4, 4), (5, 5), (7, 7), (7, 4)],
            Scenario::Lossy => &[(4, 4), (4, 4), (7, 7), (6, 4)],
            Scenario::Partition => &[(4, 4), (5, 5), (7, 7), (7, 5)],
            Scenario::Asymmetric => &[(4, 4), (5, 5), (7, 7)],
            Scenario::CrashRestart => &[(4, 4), (4, 4), (5, 5), (7, 7), (7, 4)],
            Scenario::Twins => &[(4, 4), (4, 4), (7, 7)],
            Scenario::OutsideCommittee => &[(7, 4), (6, 4), (10, 7), (5, 4)],
            _ => &[(4, 4), (4, 4), (4, 4), (7, 7), (7, 4)],
        }
    }
}

/// How a Byzantine council member misbehaves. Each wraps an honest machine (see
/// `sim::byzantine`) and signs only with its own key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Behavior {
    /// Proposes one block to half the council and another to the other half.
    EquivocatingProposer,
    /// Follows every vote with a second vote for a random block.
    DoubleVoter,
    /// Runs twice (two machines, one key), each copy connected to a different half.
    Twins,
    /// Drops its own proposals.
    SilentProposer,
    /// Floods messages with random signature bytes.
    InvalidSignatures,
    /// Votes while off the committee.
    OutsideCommittee,
    /// Replays old messages and sends messages far in the future.
    StaleFuture,
}

impl Behavior {
    /// A short name for reports.
    pub fn name(self) -> &'static str {
        match self {
            Behavior::EquivocatingProposer => "equivocating-proposer",
            Behavior::DoubleVoter => "double-voter",
            Behavior::Twins => "twin",
            Behavior::SilentProposer => "silent-proposer",
            Behavior::InvalidSignatures => "invalid-signatures",
            Behavior::OutsideCommittee => "outside-committee",
            Behavior::StaleFuture => "stale-future",
        }
    }
}

/// A crash of `node` at `at`, back up at `restart_at`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CrashSpec {
    /// Council index of the honest member that crashes.
    pub node: CouncilIndex,
    /// When it crashes.
    pub at: Millis,
    /// When it restarts.
    pub restart_at: Millis,
    /// `None`: crash between two inputs. `Some(k)`: crash in the middle of the node's next
    /// effect batch (at or after `at`), after carrying out `k` of its effects: what was
    /// persisted by then survives, the rest of the batch (messages included) is lost.
    pub mid_batch: Option<u8>,
}

/// Everything about a run that is decided before it starts.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// The scenario.
    pub scenario: Scenario,
    /// Council size.
    pub council: usize,
    /// Committee size.
    pub committee: usize,
    /// Network parameters.
    pub net: NetParams,
    /// Partitions (each ends by `heal_at`).
    pub partitions: Vec<Partition>,
    /// Crashes (each restarts by `heal_at`).
    pub crashes: Vec<CrashSpec>,
    /// Byzantine members and what they do.
    pub byzantine: BTreeMap<CouncilIndex, Behavior>,
    /// For each twinned member, the two halves of the rest of the council its two copies talk
    /// to.
    pub twin_halves: BTreeMap<CouncilIndex, [Vec<CouncilIndex>; 2]>,
    /// After this time no more faults happen.
    pub heal_at: Millis,
}

impl Plan {
    /// Draws the plan of `scenario` for `seed`. `council`/`committee` override the scenario's
    /// sizes (the committee is clamped to the council).
    pub fn build(
        scenario: Scenario,
        seed: u64,
        council: Option<usize>,
        committee: Option<usize>,
    ) -> Plan {
        let mut rng = SimRng::stream(seed, "plan");
        let choices = scenario.default_sizes();
        let &(dn, dc) = rng.pick(choices).unwrap_or(&(4, 4));
        let n = council.unwrap_or(dn).max(1);
        let c = committee
            .unwrap_or(if council.is_some() { n.min(dc) } else { dc })
            .clamp(1, n);
        let mut plan = Plan {
            scenario,
            council: n,
            committee: c,
            net: NetParams::RELIABLE,
            partitions: Vec::new(),
            crashes: Vec::new(),
            byzantine: BTreeMap::new(),
            twin_halves: BTreeMap::new(),
            heal_at: 0,
        };
        let all: Vec<CouncilIndex> = (0..n as CouncilIndex).collect();
        match scenario {
            Scenario::Honest => {}
            Scenario::Lossy => {
                plan.net = NetParams {
                    min_latency_ms: 5,
                    max_latency_ms: rng.range(50, 150),
                    drop: rng.range(5, 25) as f64 / 100.0,
                    duplicate: rng.range(5, 20) as f64 / 100.0,
                };
                plan.heal_at = rng.range(8_000, 15_000);
            }
            Scenario::Partition => {
                plan.heal_at = rng.range(6_000, 15_000);
                let windows = rng.range(1, 2);
                let mut start = rng.range(500, 3_000);
                for w in 0..windows {
                    let end = if w + 1 == windows {
                        plan.heal_at
                    } else {
                        rng.range(
                            start + 1_000,
                            plan.heal_at.saturating_sub(1_000).max(start + 1_000),
                        )
                    };
                    let mut order = all.clone();
                    rng.shuffle(&mut order);
                    // Either a minority of up to f(council) members cut off, or an even split in
                    // which no side holds a quorum.
                    let side = if rng.chance(0.6) {
                        rng.range(1, max_faulty(n).max(1) as u64) as usize
                    } else {
                        n / 2
                    };
                    let (a, b) = order.split_at(side.min(n.saturating_sub(1)));
                    plan.partitions.push(Partition {
                        start,
                        end,
                        cut: Cut::Symmetric {
                            groups: vec![a.to_vec(), b.to_vec()],
                        },
                    });
                    start = end;
                }
            }
            Scenario::Asymmetric => {
                plan.heal_at = rng.range(6_000, 15_000);
                for _ in 0..rng.range(1, 3) {
                    let start = rng.range(200, plan.heal_at / 2);
                    let end = rng.range(start + 1_000, plan.heal_at);
                    let x = *rng.pick(&all).unwrap_or(&0);
                    let others: Vec<CouncilIndex> =
                        all.iter().copied().filter(|&o| o != x).collect();
                    let cut = match rng.below(3) {
                        // x can hear but not speak.
                        0 => Cut::OneWay {
                            from: vec![x],
                            to: others,
                        },
                        // x can speak but not hear.
                        1 => Cut::OneWay {
                            from: others,
                            to: vec![x],
                        },
                        // x cannot reach a random half.
                        _ => {
                            let mut o = others;
                            rng.shuffle(&mut o);
                            o.truncate(o.len().div_ceil(2));
                            Cut::OneWay {
                                from: vec![x],
                                to: o,
                            }
                        }
                    };
                    plan.partitions.push(Partition { start, end, cut });
                }
            }
            Scenario::CrashRestart => {
                plan.heal_at = rng.range(6_000, 15_000);
                plan.net.drop = if rng.chance(0.5) { 0.02 } else { 0.0 };
                let mut busy_until: BTreeMap<CouncilIndex, Millis> = BTreeMap::new();
                for _ in 0..rng.range(1, 5) {
                    let node = *rng.pick(&all).unwrap_or(&0);
                    let earliest = busy_until.get(&node).copied().unwrap_or(0) + 200;
                    let latest = plan.heal_at.saturating_sub(500);
                    if earliest >= latest {
                        continue;
                    }
                    let at = rng.range(earliest, latest);
                    let restart_at = rng.range(at + 100, (at + 4_000).min(plan.heal_at));
                    busy_until.insert(node, restart_at);
                    let mid_batch = rng.chance(0.5).then(|| rng.below(4) as u8);
                    plan.crashes.push(CrashSpec {
                        node,
                        at,
                        restart_at,
                        mid_batch,
                    });
                }
                plan.crashes.sort_by_key(|c| (c.at, c.node));
            }
            _ => {}
        }
        if let Some(behavior) = scenario.behavior() {
            let count = max_faulty(c);
            let mut order = all.clone();
            rng.shuffle(&mut order);
            for &b in order.iter().take(count) {
                plan.byzantine.insert(b, behavior);
                if behavior == Behavior::Twins {
                    let mut others: Vec<CouncilIndex> =
                        all.iter().copied().filter(|&o| o != b).collect();
                    rng.shuffle(&mut others);
                    let (x, y) = others.split_at(others.len().div_ceil(2));
                    let (mut x, mut y) = (x.to_vec(), y.to_vec());
                    x.sort_unstable();
                    y.sort_unstable();
                    plan.twin_halves.insert(b, [x, y]);
                }
            }
        }
        plan
    }

    /// Whether council member `i` is honest (crashing is not Byzantine).
    pub fn is_honest(&self, i: CouncilIndex) -> bool {
        !self.byzantine.contains_key(&i)
    }

    /// One line describing the faults, for reports.
    pub fn describe(&self) -> String {
        let mut parts = vec![format!(
            "council {} committee {} latency {}-{} ms",
            self.council, self.committee, self.net.min_latency_ms, self.net.max_latency_ms
        )];
        if self.net.drop > 0.0 || self.net.duplicate > 0.0 {
            parts.push(format!(
                "drop {:.0}% dup {:.0}%",
                self.net.drop * 100.0,
                self.net.duplicate * 100.0
            ));
        }
        for p in &self.partitions {
            parts.push(match &p.cut {
                Cut::Symmetric { groups } => {
                    format!("partition {:?} {}..{} ms", groups, p.start, p.end)
                }
                Cut::OneWay { from, to } => {
                    format!("one-way {:?} -/-> {:?} {}..{} ms", from, to, p.start, p.end)
                }
            });
        }
        for c in &self.crashes {
            let how = match c.mid_batch {
                None => String::new(),
                Some(k) => format!(" (mid-batch after {k} effects)"),
            };
            parts.push(format!(
                "crash n{} {}..{} ms{how}",
                c.node, c.at, c.restart_at
            ));
        }
        for (i, b) in &self.byzantine {
            parts.push(format!("n{i} {}", b.name()));
        }
        for (i, [a, b]) in &self.twin_halves {
            parts.push(format!("n{i}a<->{a:?} n{i}b<->{b:?}"));
        }
        parts.push(format!("heal {} ms", self.heal_at));
        parts.join("; ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_all_lists_every_scenario() {
        for s in Scenario::ALL {
            assert_eq!(Scenario::from_name(s.name()), Some(s));
        }
        assert_eq!(Scenario::parse_list("all").unwrap().len(), 12);
        assert_eq!(
            Scenario::parse_list("honest,twins").unwrap(),
            vec![Scenario::Honest, Scenario::Twins]
        );
        assert!(Scenario::parse_list("nope")
            .unwrap_err()
            .contains("unknown scenario"));
    }

    #[test]
    fn plans_are_deterministic_and_respect_their_bounds() {
        for s in Scenario::ALL {
            for seed in 0..200 {
                let p = Plan::build(s, seed, None, None);
                assert_eq!(p, Plan::build(s, seed, None, None), "{s:?} {seed}");
                assert!(p.committee <= p.council && p.committee >= 1);
                assert!(p.byzantine.len() <= max_faulty(p.committee), "{s:?} {seed}");
                for part in &p.partitions {
                    assert!(part.start < part.end && part.end <= p.heal_at, "{part:?}");
                }
                for c in &p.crashes {
                    assert!(c.at < c.restart_at && c.restart_at <= p.heal_at, "{c:?}");
                    assert!(p.is_honest(c.node));
                }
                if s == Scenario::OutsideCommittee {
                    assert!(p.committee < p.council, "needs members off the committee");
                }
                if let Some(b) = s.behavior() {
                    assert!(p.byzantine.values().all(|&x| x == b));
                    assert!(!p.byzantine.is_empty() || max_faulty(p.committee) == 0);
                }
                for (t, [a, b]) in &p.twin_halves {
                    assert_eq!(a.len() + b.len(), p.council - 1);
                    assert!(!a.contains(t) && !b.contains(t));
                    assert!(a.iter().all(|x| !b.contains(x)));
                }
                assert!(!p.describe().is_empty());
            }
        }
    }

    #[test]
    fn crash_windows_of_one_node_do_not_overlap() {
        for seed in 0..300 {
            let p = Plan::build(Scenario::CrashRestart, seed, None, None);
            for (i, a) in p.crashes.iter().enumerate() {
                for b in &p.crashes[i + 1..] {
                    if a.node == b.node {
                        assert!(a.restart_at < b.at || b.restart_at < a.at, "{a:?} {b:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn command_line_sizes_override_the_scenario() {
        let p = Plan::build(Scenario::Honest, 1, Some(10), Some(7));
        assert_eq!((p.council, p.committee), (10, 7));
        let p = Plan::build(Scenario::Honest, 1, Some(4), None);
        assert_eq!((p.council, p.committee), (4, 4));
        let p = Plan::build(Scenario::Honest, 1, Some(4), Some(9));
        assert_eq!((p.council, p.committee), (4, 4), "clamped");
        let p = Plan::build(Scenario::EquivocatingProposer, 3, Some(4), Some(4));
        assert_eq!(p.byzantine.len(), 1);
    }
}
