//! Measurements and reports of a load run (`corecell testnet`, `corecell bench`).
//!
//! # Job
//! [`LatencyHistogram`] records latencies (block intervals, transaction finality) in
//! microseconds; [`Percentiles`] condenses one into the milliseconds a report shows;
//! [`RunReport`] (with one [`NodeReport`] per node) is the result of a run (what was submitted,
//! finalized, refused by reason and dropped, how fast, whether the nodes agree), rendered as a
//! terminal table ([`RunReport::summary_table`]) or one JSON object ([`RunReport::to_json`]);
//! [`StatusLine`] is the one-line progress printed while a run is going.
//!
//! # Invariants
//! - A histogram's memory is fixed ([`BUCKETS`] counters) whatever the number of samples.
//! - Every value from 0 to [`HIGHEST_TRACKABLE_US`] (one hour) is tracked with a relative error
//!   of at most [`MAX_RELATIVE_ERROR`] (1/256, about 0.39%, well inside 1%): values below 256 us
//!   are exact, above that each power of two is split into 128 equal buckets and a percentile
//!   reports the middle of its bucket (kept inside the exact `[min, max]`). Values above the
//!   limit are recorded as the limit and counted ([`LatencyHistogram::clamped`]).
//! - Percentiles use the nearest-rank definition: `percentile(p)` is the `ceil(p/100 * n)`-th
//!   smallest sample (the first for `p = 0`), so `percentile(0)` is the exact minimum and
//!   `percentile(100)` the exact maximum.
//! - No input panics: counters saturate, `p` outside `0..=100` is clamped, a NaN `p` gives
//!   `None`, and non-finite floats render as `n/a` (and serialize as JSON `null`).

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::load::BEHIND_WARNING_MS;
use crate::config::node::Role;

/// The largest latency a histogram tracks: one hour, in microseconds. Larger values are
/// recorded as this value and counted by [`LatencyHistogram::clamped`].
pub const HIGHEST_TRACKABLE_US: u64 = 3_600_000_000;

/// The largest relative error of [`LatencyHistogram::percentile`] against the exact
/// nearest-rank percentile of the recorded (clamped) samples: `|reported - exact| <= exact / 256`.
pub const MAX_RELATIVE_ERROR: f64 = 1.0 / 256.0;

/// log2 of the number of buckets per power of two.
const SUB_BITS: u32 = 7;
/// Buckets per power of two; values below this are recorded exactly, one bucket each.
const SUB_COUNT: u64 = 1 << SUB_BITS;
/// The highest power of two (exponent) a tracked value can reach.
const MAX_EXP: u32 = 63 - HIGHEST_TRACKABLE_US.leading_zeros();

/// Number of counters in every [`LatencyHistogram`] (its fixed memory is `8 * BUCKETS` bytes).
pub const BUCKETS: usize = ((MAX_EXP - SUB_BITS + 2) as usize) << SUB_BITS;

/// The bucket of `v` (which must be `<= HIGHEST_TRACKABLE_US`).
fn bucket_of(v: u64) -> usize {
    if v < SUB_COUNT {
        return v as usize;
    }
    let exp = 63 - v.leading_zeros(); // >= SUB_BITS
    let shift = exp - SUB_BITS;
    // (v >> shift) is in [SUB_COUNT, 2 * SUB_COUNT): the top SUB_BITS + 1 bits of v.
    (((exp - SUB_BITS + 1) as usize) << SUB_BITS) + ((v >> shift) - SUB_COUNT) as usize
}

/// The smallest value of bucket `i` and the bucket's width.
fn bucket_range(i: usize) -> (u64, u64) {
    let i = i as u64;
    if i < SUB_COUNT {
        return (i, 1);
    }
    let exp = (i >> SUB_BITS) as u32 + SUB_BITS - 1;
    let shift = exp - SUB_BITS;
    let mantissa = (i & (SUB_COUNT - 1)) + SUB_COUNT;
    (mantissa << shift, 1 << shift)
}

/// The 1-based nearest rank of percentile `p` among `n > 0` samples (`p` already in 0..=100).
fn nearest_rank(p: f64, n: u64) -> u64 {
    let r = (p / 100.0 * n as f64).ceil();
    // `as` saturates; NaN cannot reach here.
    (r as u64).clamp(1, n)
}

/// A latency histogram in microseconds with fixed memory and bounded relative error.
///
/// See the module documentation for the error bound ([`MAX_RELATIVE_ERROR`]), the tracked range
/// (0 to [`HIGHEST_TRACKABLE_US`]) and the percentile definition (nearest rank).
#[derive(Clone, PartialEq, Eq)]
pub struct LatencyHistogram {
    /// Samples per bucket; always `BUCKETS` long.
    counts: Box<[u64]>,
    /// Samples recorded (saturating).
    count: u64,
    /// Samples that were above `HIGHEST_TRACKABLE_US` (saturating).
    clamped: u64,
    /// Exact smallest sample; `u64::MAX` when empty.
    min: u64,
    /// Exact largest sample (after clamping); 0 when empty.
    max: u64,
    /// Sum of all samples (after clamping, saturating).
    sum: u128,
}

impl LatencyHistogram {
    /// An empty histogram.
    pub fn new() -> LatencyHistogram {
        LatencyHistogram {
            counts: vec![0; BUCKETS].into_boxed_slice(),
            count: 0,
            clamped: 0,
            min: u64::MAX,
            max: 0,
            sum: 0,
        }
    }

    /// Records one sample of `us` microseconds.
    pub fn record(&mut self, us: u64) {
        self.record_n(us, 1);
    }

    /// Records `count` samples of `us` microseconds each (the transactions of one block share a
    /// finality latency). Values above [`HIGHEST_TRACKABLE_US`] are recorded as that value and
    /// counted by [`clamped`](Self::clamped); `count == 0` records nothing.
    pub fn record_n(&mut self, us: u64, count: u64) {
        if count == 0 {
            return;
        }
        let v = if us > HIGHEST_TRACKABLE_US {
            self.clamped = self.clamped.saturating_add(count);
            HIGHEST_TRACKABLE_US
        } else {
            us
        };
        let b = &mut self.counts[bucket_of(v)];
        *b = b.saturating_add(count);
        self.count = self.count.saturating_add(count);
        self.sum = self.sum.saturating_add(u128::from(v) * u128::from(count));
        self.min = self.min.min(v);
        self.max = self.max.max(v);
    }

    /// Records one sample of duration `d` (whole microseconds, saturating).
    pub fn record_duration(&mut self, d: Duration) {
        self.record(u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
    }

    /// The number of samples recorded (saturating at `u64::MAX`).
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Whether no sample has been recorded.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// How many of the samples were above [`HIGHEST_TRACKABLE_US`] and recorded as that value.
    pub fn clamped(&self) -> u64 {
        self.clamped
    }

    /// The `p`-th percentile (`p` in `0..=100`, clamped into it) in microseconds, by nearest
    /// rank, within [`MAX_RELATIVE_ERROR`] of the exact value; `percentile(0.0)` is the exact
    /// minimum and `percentile(100.0)` the exact maximum. `None` when empty or `p` is NaN.
    pub fn percentile(&self, p: f64) -> Option<u64> {
        if self.count == 0 || p.is_nan() {
            return None;
        }
        let rank = nearest_rank(p.clamp(0.0, 100.0), self.count);
        if rank <= 1 {
            return Some(self.min);
        }
        if rank >= self.count {
            return Some(self.max);
        }
        let mut seen = 0u64;
        for (i, &c) in self.counts.iter().enumerate() {
            seen = seen.saturating_add(c);
            if c != 0 && seen >= rank {
                let (low, width) = bucket_range(i);
                return Some((low + width / 2).clamp(self.min, self.max));
            }
        }
        Some(self.max)
    }

    /// The exact smallest sample (after clamping); `None` when empty.
    pub fn min(&self) -> Option<u64> {
        (self.count > 0).then_some(self.min)
    }

    /// The exact largest sample (after clamping); `None` when empty.
    pub fn max(&self) -> Option<u64> {
        (self.count > 0).then_some(self.max)
    }

    /// The mean of the samples (after clamping) in microseconds; `None` when empty.
    pub fn mean(&self) -> Option<f64> {
        (self.count > 0).then(|| self.sum as f64 / self.count as f64)
    }

    /// Adds every sample of `other` to this histogram: the result equals recording both sets of
    /// samples into one histogram.
    pub fn merge(&mut self, other: &LatencyHistogram) {
        for (a, &b) in self.counts.iter_mut().zip(other.counts.iter()) {
            *a = a.saturating_add(b);
        }
        self.count = self.count.saturating_add(other.count);
        self.clamped = self.clamped.saturating_add(other.clamped);
        self.sum = self.sum.saturating_add(other.sum);
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
    }

    /// Forgets every sample (keeps the memory).
    pub fn reset(&mut self) {
        self.counts.fill(0);
        self.count = 0;
        self.clamped = 0;
        self.min = u64::MAX;
        self.max = 0;
        self.sum = 0;
    }
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        LatencyHistogram::new()
    }
}

impl fmt::Debug for LatencyHistogram {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LatencyHistogram")
            .field("count", &self.count)
            .field("clamped", &self.clamped)
            .field("min", &self.min())
            .field("max", &self.max())
            .field("mean", &self.mean())
            .finish()
    }
}

/// How often `testnet` samples the CNs' and ENs' heights for the EN lag.
pub const LAG_SAMPLE_MS: u64 = 20;

/// Three latency percentiles in milliseconds, as shown in a [`RunReport`].
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct Percentiles {
    /// Median, ms.
    pub p50: f64,
    /// 99th percentile, ms.
    pub p99: f64,
    /// Largest sample, ms.
    pub max: f64,
}

impl Percentiles {
    /// The p50, p99 and max of a microsecond histogram, in milliseconds; all zero when empty.
    pub fn from_histogram(h: &LatencyHistogram) -> Percentiles {
        let ms = |us: Option<u64>| us.map_or(0.0, |us| us as f64 / 1000.0);
        Percentiles {
            p50: ms(h.percentile(50.0)),
            p99: ms(h.percentile(99.0)),
            max: ms(h.max()),
        }
    }
}

/// What one node did during a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeReport {
    /// The node's name (from its config).
    pub name: String,
    /// The node's role (serialized lowercase: `"cn"`, `"pn"`, `"en"`, `"bootnode"`).
    pub role: Role,
    /// The node's chain height at the end of the run.
    pub height: u64,
    /// Round changes the node went through (0 for nodes outside the council).
    pub round_changes: u64,
    /// CPU time (user + system) the node's process used, seconds.
    pub cpu_seconds: f64,
    /// The node's peak resident memory, MiB.
    pub max_rss_mib: f64,
    /// Transaction signature recoveries the node did (admission and block checking).
    #[serde(default)]
    pub signature_recoveries: u64,
    /// Transactions of blocks it checked or finalized that it already held decoded (gossip).
    #[serde(default)]
    pub block_txs_pooled: u64,
    /// Transactions of blocks it checked or finalized that it had to decode and recover then.
    #[serde(default)]
    pub block_txs_recovered: u64,
    /// Per shard (by name): seconds the shard spent handling messages during the run (its
    /// `corecell_shard_busy_seconds`; a shard that awaits I/O in a handler, the store's fsyncs,
    /// counts that wait too).
    #[serde(default)]
    pub shard_busy_s: BTreeMap<String, f64>,
    /// Per shard: the deepest inbox seen at the once-a-second samples.
    #[serde(default)]
    pub shard_queue_peak: BTreeMap<String, u64>,
    /// Resident memory and open files after the warm-up and at the end (`testnet` reads them
    /// from `/proc`; `None` when unknown).
    #[serde(default)]
    pub resources: Option<ResourceTrend>,
}

/// A node's resident memory and open file descriptors at two points of a run: flat figures
/// under a steady load mean nothing leaks.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ResourceTrend {
    /// Seconds into the load of the first point (after the warm-up).
    pub start_s: f64,
    /// Seconds into the load of the last point.
    pub end_s: f64,
    /// Resident memory at the first point, MiB.
    pub rss_start_mib: f64,
    /// Resident memory halfway between the two points, MiB.
    pub rss_mid_mib: f64,
    /// Resident memory at the last point, MiB.
    pub rss_end_mib: f64,
    /// Open file descriptors at the first point.
    pub fds_start: u64,
    /// Open file descriptors at the last point.
    pub fds_end: u64,
}

/// The sample name of a per-shard metric, e.g. `corecell_shard_busy_seconds{shard="exec"}`.
pub fn shard_metric(name: &str, shard: &str) -> String {
    format!("{name}{{shard=\"{shard}\"}}")
}

/// Names of a CN's shards, in the order the report lists them.
pub const CN_SHARDS: [&str; 4] = ["net", "consensus", "exec", "store"];

/// Busy share of each shard (busy seconds over the run's duration, mean over the nodes that
/// report it), busiest first.
pub fn shard_shares(nodes: &[NodeReport], duration_s: f64) -> Vec<(String, f64)> {
    let mut sums: BTreeMap<&str, (f64, u32)> = BTreeMap::new();
    for n in nodes {
        for (shard, busy) in &n.shard_busy_s {
            let e = sums.entry(shard.as_str()).or_default();
            e.0 += busy;
            e.1 += 1;
        }
    }
    let mut out: Vec<(String, f64)> = sums
        .into_iter()
        .map(|(shard, (busy, n))| {
            (
                shard.to_string(),
                busy / f64::from(n) / duration_s.max(1e-3),
            )
        })
        .collect();
    out.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    out
}

/// The result of a load run: what was offered, what got finalized, how fast, and whether the
/// nodes agree on the chain.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct RunReport {
    /// Name of the workload (transaction mix) that was run.
    pub workload: String,
    /// Number of consensus nodes.
    pub cns: usize,
    /// Number of proxy nodes.
    pub pns: usize,
    /// Number of endpoint nodes.
    pub ens: usize,
    /// Measured duration of the run, seconds.
    pub duration_s: f64,
    /// Blocks finalized during the run.
    pub blocks: u64,
    /// Transactions finalized during the run.
    pub finalized_txs: u64,
    /// Finalized transactions per second (`finalized_txs / duration_s`).
    pub tps: f64,
    /// Time between consecutive finalized blocks, ms.
    pub block_interval_ms: Percentiles,
    /// Time from a transaction's submission to its block's finalization, ms.
    pub finality_ms: Percentiles,
    /// How long after the first CN each EN held a block (heights sampled from the nodes'
    /// metrics every [`LAG_SAMPLE_MS`] ms), ms; `None` without ENs.
    #[serde(default)]
    pub en_lag_ms: Option<Percentiles>,
    /// Round changes during the run (consensus view changes, council-wide).
    pub round_changes: u64,
    /// Whether every node holds the same chain (same hash at every common height); meaningful
    /// only when `agreement_checked`.
    pub agree: bool,
    /// Whether the nodes' chains were compared (`testnet` reads every node's block log;
    /// `bench` sees the network from outside and does not).
    #[serde(default = "yes")]
    pub agreement_checked: bool,
    /// Transactions per second the load generator tried to submit.
    pub offered_rate: u64,
    /// Transactions the load generator sent.
    pub submitted: u64,
    /// Transactions the nodes refused at once, by reason (the
    /// [`IngressAck::status_name`](crate::types::network::IngressAck::status_name) of the
    /// refusal, e.g. `"nonce-too-high"`); reasons never seen are absent.
    #[serde(default)]
    pub rejected: BTreeMap<String, u64>,
    /// Transactions a node admitted, then dropped from its pool before any block included them.
    #[serde(default)]
    pub dropped: u64,
    /// The largest lag of the load generator behind its own schedule, ms. Latency counts from
    /// the scheduled send time, so the lag is inside the finality figures; above
    /// [`BEHIND_WARNING_MS`] the generator, not only the network, limited the run.
    #[serde(default)]
    pub generator_behind_ms: u64,
    /// The ingress addresses the load was sent to (empty for an idle run).
    #[serde(default)]
    pub targets: Vec<String>,
    /// Size of one transaction, bytes (the mean size for signed transfers).
    pub tx_size: usize,
    /// Configured block period, ms (0: propose as soon as the last block is final); `None`
    /// when unknown (a bench without the chain's genesis).
    pub block_period_ms: Option<u64>,
    /// CPU time of all nodes per finalized transaction, microseconds; `None` when unknown.
    pub cpu_us_per_tx: Option<f64>,
    /// The final state check (transfer chains): `None` when not made.
    #[serde(default)]
    pub state: Option<StateCheck>,
    /// One entry per node.
    pub nodes: Vec<NodeReport>,
}

/// The final state check of a run: one node's block log replayed from the genesis (every
/// block executed and its header's state root compared), and the supply counted.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct StateCheck {
    /// The node whose log was replayed.
    pub node: String,
    /// Its last height.
    pub height: u64,
    /// The state root there, `0x`-hex; every node's header at that height carries it when the
    /// nodes agree.
    pub state_root: String,
    /// Accounts in the state.
    pub accounts: u64,
    /// Wei burned in fees, decimal.
    pub burned_wei: String,
    /// Whether `Σ balances + burned` equals the genesis supply.
    pub supply_conserved: bool,
    /// Whether every block's state root was reproduced.
    pub roots_reproduced: bool,
    /// Wall time of the replay, seconds.
    pub replay_s: f64,
    /// What went wrong, when something did.
    #[serde(default)]
    pub error: Option<String>,
}

impl StateCheck {
    /// Whether the check passed.
    pub fn passed(&self) -> bool {
        self.error.is_none() && self.roots_reproduced && self.supply_conserved
    }
}

impl RunReport {
    /// Transactions refused, all reasons together.
    pub fn rejected_total(&self) -> u64 {
        self.rejected.values().fold(0, |a, &b| a.saturating_add(b))
    }

    /// A fixed-width multi-line table for a terminal: totals, rates, latency percentiles, the
    /// agreement verdict, then one row per node. Ends with a newline.
    pub fn summary_table(&self) -> String {
        let mut out = String::new();
        let mut row = |label: &str, value: String| {
            let _ = writeln!(out, "  {label:<16}{value}");
        };
        row("workload", printable(&self.workload));
        // A remote run does not know the network's shape, only its targets.
        if self.cns + self.pns + self.ens > 0 {
            row(
                "network",
                format!(
                    "{} CN  {} PN  {} EN",
                    group(self.cns as u64),
                    group(self.pns as u64),
                    group(self.ens as u64)
                ),
            );
        }
        row("duration", format!("{} s", fixed(self.duration_s, 1)));
        if !self.targets.is_empty() {
            let targets: Vec<String> = self.targets.iter().map(|t| printable(t)).collect();
            row(
                "ingress",
                format!("{} (native TxBatch)", targets.join(", ")),
            );
        }
        row(
            "offered load",
            format!(
                "{} tx/s  tx size {} B  block period {}",
                group(self.offered_rate),
                group(self.tx_size as u64),
                match self.block_period_ms {
                    None => "unknown".to_string(),
                    Some(0) => "0 (back to back)".to_string(),
                    Some(ms) => format!("{} ms", group(ms)),
                }
            ),
        );
        row(
            "submitted",
            format!(
                "{} txs  rejected {}  dropped {}",
                group(self.submitted),
                group(self.rejected_total()),
                group(self.dropped)
            ),
        );
        if !self.rejected.is_empty() {
            let reasons: Vec<String> = self
                .rejected
                .iter()
                .map(|(reason, n)| format!("{} {}", printable(reason), group(*n)))
                .collect();
            row("rejected by", reasons.join(", "));
        }
        row(
            "finalized",
            format!(
                "{} txs in {} blocks",
                group(self.finalized_txs),
                group(self.blocks)
            ),
        );
        row("throughput", format!("{} tx/s", fixed(self.tps, 1)));
        row(
            "cpu per tx",
            self.cpu_us_per_tx
                .map_or_else(|| "n/a".to_string(), |c| format!("{} us", fixed(c, 1))),
        );
        // Per tier, when the network has more than CNs.
        if self.finalized_txs > 0 && self.nodes.iter().any(|n| n.role != Role::Cn) {
            let tiers: Vec<String> = [Role::Cn, Role::Pn, Role::En, Role::Bootnode]
                .into_iter()
                .filter_map(|role| {
                    let of_role: Vec<&NodeReport> =
                        self.nodes.iter().filter(|n| n.role == role).collect();
                    if of_role.is_empty() {
                        return None;
                    }
                    let cpu: f64 = of_role.iter().map(|n| n.cpu_seconds).sum();
                    Some(format!(
                        "{} {} us ({} us/node)",
                        role.name().to_uppercase(),
                        fixed(cpu * 1e6 / self.finalized_txs as f64, 1),
                        fixed(
                            cpu * 1e6 / self.finalized_txs as f64 / of_role.len() as f64,
                            1
                        )
                    ))
                })
                .collect();
            row("cpu by tier", tiers.join(", "));
        }
        let pooled: u64 = self.nodes.iter().map(|n| n.block_txs_pooled).sum();
        let recovered: u64 = self.nodes.iter().map(|n| n.block_txs_recovered).sum();
        let recoveries: u64 = self.nodes.iter().map(|n| n.signature_recoveries).sum();
        if pooled + recovered > 0 && self.finalized_txs > 0 {
            row(
                "signatures",
                format!(
                    "{} recoveries per finalized tx over all nodes; block txs already pooled {}% (gossip), recovered at block time {}",
                    fixed(recoveries as f64 / self.finalized_txs as f64, 2),
                    fixed(100.0 * pooled as f64 / (pooled + recovered) as f64, 1),
                    group(recovered)
                ),
            );
        }
        let shares = shard_shares(&self.nodes, self.duration_s);
        if let Some((busiest, _)) = shares.first() {
            let peak = |shard: &str| {
                self.nodes
                    .iter()
                    .filter_map(|n| n.shard_queue_peak.get(shard))
                    .max()
                    .copied()
                    .unwrap_or(0)
            };
            let parts: Vec<String> = shares
                .iter()
                .map(|(shard, share)| {
                    format!(
                        "{} {}% (queue peak {})",
                        printable(shard),
                        fixed(share * 100.0, 0),
                        group(peak(shard))
                    )
                })
                .collect();
            row(
                "shards",
                format!(
                    "busy share of a core, mean over nodes: {}; busiest: {}",
                    parts.join(", "),
                    printable(busiest)
                ),
            );
        }
        row("block interval", percentiles(&self.block_interval_ms));
        row("finality", percentiles(&self.finality_ms));
        if let Some(lag) = &self.en_lag_ms {
            row(
                "EN lag",
                format!(
                    "{}  behind the first CN to hold each block (sampled every {LAG_SAMPLE_MS} ms)",
                    percentiles(lag)
                ),
            );
        }
        if !self.targets.is_empty() {
            row("generator", generator_verdict(self.generator_behind_ms));
        }
        row(
            "round changes",
            if self.nodes.is_empty() {
                "n/a (no node metrics)".to_string()
            } else {
                group(self.round_changes)
            },
        );
        row(
            "agree",
            if !self.agreement_checked {
                "not checked (the nodes' block logs were not read)".to_string()
            } else if self.agree {
                "yes (all nodes hold the same chain)".to_string()
            } else {
                "NO (nodes disagree on the chain)".to_string()
            },
        );
        if let Some(state) = &self.state {
            row(
                "state",
                match &state.error {
                    Some(e) => format!("FAILED: {}", printable(e)),
                    None => format!(
                        "root {} at height {} ({} accounts): every block's root reproduced by replaying {}'s log in {} s; supply {}",
                        printable(&state.state_root),
                        group(state.height),
                        group(state.accounts),
                        printable(&state.node),
                        fixed(state.replay_s, 1),
                        if state.supply_conserved {
                            "conserved"
                        } else {
                            "NOT conserved"
                        }
                    ),
                },
            );
        }

        if self.nodes.is_empty() {
            return out;
        }
        let names: Vec<String> = self.nodes.iter().map(|n| printable(&n.name)).collect();
        let w = names
            .iter()
            .map(|n| n.chars().count())
            .max()
            .unwrap_or(0)
            .max(4);
        let trends = self.nodes.iter().any(|n| n.resources.is_some());
        if trends {
            let spans: Vec<String> = self
                .nodes
                .iter()
                .filter_map(|n| n.resources)
                .take(1)
                .map(|t| format!("{} s -> {} s", fixed(t.start_s, 0), fixed(t.end_s, 0)))
                .collect();
            row(
                "resources",
                format!(
                    "resident memory and open files per node at {} of the load (node table)",
                    spans.join("")
                ),
            );
        }
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "  {:<w$}  {:<8}  {:>12}  {:>13}  {:>10}  {:>11}{}",
            "node",
            "role",
            "height",
            "round changes",
            "cpu s",
            "max rss MiB",
            if trends {
                format!("  {:>22}  {:>11}", "rss MiB start/mid/end", "fds")
            } else {
                String::new()
            }
        );
        for (n, name) in self.nodes.iter().zip(&names) {
            let _ = writeln!(
                out,
                "  {:<w$}  {:<8}  {:>12}  {:>13}  {:>10}  {:>11}{}",
                name,
                n.role.name(),
                group(n.height),
                group(n.round_changes),
                fixed(n.cpu_seconds, 2),
                fixed(n.max_rss_mib, 1),
                match (trends, n.resources) {
                    (true, Some(t)) => format!(
                        "  {:>22}  {:>11}",
                        format!(
                            "{}/{}/{}",
                            fixed(t.rss_start_mib, 1),
                            fixed(t.rss_mid_mib, 1),
                            fixed(t.rss_end_mib, 1)
                        ),
                        format!("{}/{}", t.fds_start, t.fds_end)
                    ),
                    (true, None) => format!("  {:>22}  {:>11}", "n/a", "n/a"),
                    (false, _) => String::new(),
                }
            );
        }
        out
    }

    /// The report as one (pretty-printed) JSON object whose keys are the field names.
    /// Non-finite floats become `null`.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self)
            .unwrap_or_else(|e| serde_json::json!({ "error": e.to_string() }).to_string())
    }
}

/// The one-line progress report printed periodically during a run.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct StatusLine {
    /// Seconds since the run started.
    pub elapsed_s: f64,
    /// Current chain height.
    pub height: u64,
    /// Finalized transactions per second over the last period.
    pub tps: f64,
    /// Median block interval over the last period, ms.
    pub block_interval_ms_p50: f64,
    /// Median finality over the last period, ms.
    pub finality_ms_p50: f64,
    /// 99th percentile finality over the last period, ms.
    pub finality_ms_p99: f64,
    /// Round changes since the run started.
    pub round_changes: u64,
    /// Transactions refused since the run started (all reasons).
    pub rejected: u64,
    /// Transactions dropped by the pools since the run started.
    pub dropped: u64,
    /// The load generator's largest lag behind its schedule over the last period, ms; `None`
    /// when there is no load.
    #[serde(default)]
    pub behind_ms: Option<u64>,
}

impl StatusLine {
    /// One compact line without a newline, e.g.
    /// `[  12s] height 140  tps 9,980  interval p50 101 ms  finality p50 38 ms p99 95 ms  rejected 12  dropped 0  round changes 0  gen lag 0 ms`.
    /// Milliseconds below 10 keep one decimal; non-finite values print as `n/a`. A generator
    /// lag of [`BEHIND_WARNING_MS`] or more ends the line with
    /// `GENERATOR BEHIND SCHEDULE by N ms` instead of `gen lag N ms`; without a load there is
    /// no lag to show.
    pub fn render(&self) -> String {
        let lag = match self.behind_ms {
            Some(ms) if ms >= BEHIND_WARNING_MS => {
                format!("  GENERATOR BEHIND SCHEDULE by {} ms", group(ms))
            }
            Some(ms) => format!("  gen lag {} ms", group(ms)),
            None => String::new(),
        };
        format!(
            "[{:>4}s] height {}  tps {}  interval p50 {} ms  finality p50 {} ms p99 {} ms  rejected {}  dropped {}  round changes {}{lag}",
            fixed(self.elapsed_s.floor(), 0),
            group(self.height),
            fixed(self.tps, 0),
            millis(self.block_interval_ms_p50),
            millis(self.finality_ms_p50),
            millis(self.finality_ms_p99),
            group(self.rejected),
            group(self.dropped),
            group(self.round_changes)
        )
    }
}

/// `true`, the serde default of fields that older reports did not have.
fn yes() -> bool {
    true
}

/// The summary's verdict on the load generator's schedule.
fn generator_verdict(behind_ms: u64) -> String {
    if behind_ms >= BEHIND_WARNING_MS {
        format!(
            "FELL BEHIND its schedule by up to {} ms: the generator, not only the network, \
             limited this run (the lag is inside the finality figures)",
            group(behind_ms)
        )
    } else {
        format!("kept its schedule (largest lag {} ms)", group(behind_ms))
    }
}

/// `p50 x ms  p99 y ms  max z ms`, one decimal.
fn percentiles(p: &Percentiles) -> String {
    format!(
        "p50 {} ms  p99 {} ms  max {} ms",
        fixed(p.p50, 1),
        fixed(p.p99, 1),
        fixed(p.max, 1)
    )
}

/// Milliseconds for the status line: one decimal below 10, whole above.
fn millis(ms: f64) -> String {
    if ms.abs() < 10.0 {
        fixed(ms, 1)
    } else {
        fixed(ms, 0)
    }
}

/// `n` with a comma every three digits: `1234567` -> `1,234,567`.
fn group(n: u64) -> String {
    group_digits(&n.to_string())
}

/// Inserts a comma every three digits of a string of ASCII digits.
fn group_digits(digits: &str) -> String {
    let len = digits.len();
    let mut out = String::with_capacity(len + len / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (len - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `x` with `decimals` decimals and thousand separators; `n/a` when not finite.
fn fixed(x: f64, decimals: usize) -> String {
    if !x.is_finite() {
        return "n/a".to_string();
    }
    let s = format!("{:.*}", decimals, x.abs());
    let (int, frac) = s.split_once('.').unwrap_or((&s, ""));
    let mut out = String::new();
    if x < 0.0 && s.bytes().any(|b| matches!(b, b'1'..=b'9')) {
        out.push('-');
    }
    out.push_str(&group_digits(int));
    if !frac.is_empty() {
        out.push('.');
        out.push_str(frac);
    }
    out
}

/// `s` with control characters replaced, so it cannot break the table's layout.
fn printable(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The exact nearest-rank percentile of `sorted` (non-empty).
    fn exact(sorted: &[u64], p: f64) -> u64 {
        sorted[(nearest_rank(p, sorted.len() as u64) - 1) as usize]
    }

    fn within_bound(approx: u64, exact: u64) -> bool {
        // |approx - exact| <= exact * MAX_RELATIVE_ERROR, in integers.
        u128::from(approx.abs_diff(exact)) * 256 <= u128::from(exact)
    }

    fn sample() -> impl Strategy<Value = u64> {
        prop_oneof![
            0u64..300,
            0u64..100_000,
            0u64..=HIGHEST_TRACKABLE_US,
            (HIGHEST_TRACKABLE_US / 2)..=HIGHEST_TRACKABLE_US,
        ]
    }

    #[test]
    fn buckets_tile_the_range() {
        let mut next = 0u64;
        for i in 0..BUCKETS {
            let (low, width) = bucket_range(i);
            assert_eq!(
                low,
                next,
                "bucket {i} starts where {} ended",
                i.wrapping_sub(1)
            );
            assert_eq!(bucket_of(low), i);
            assert_eq!(bucket_of(low + width - 1), i);
            // The relative width is what the error bound rests on.
            assert!(
                width == 1 || width * 128 <= low,
                "bucket {i}: {low}+{width}"
            );
            next = low + width;
        }
        assert!(
            next > HIGHEST_TRACKABLE_US,
            "buckets cover the trackable range"
        );
        assert!(bucket_of(HIGHEST_TRACKABLE_US) < BUCKETS);
        assert_eq!(
            bucket_range(BUCKETS - 1).0 >> 32,
            0,
            "no bucket wasted beyond 2^32"
        );
    }

    #[test]
    fn empty_histogram() {
        let h = LatencyHistogram::new();
        assert_eq!(h.count(), 0);
        assert!(h.is_empty());
        for p in [0.0, 50.0, 100.0, f64::NAN] {
            assert_eq!(h.percentile(p), None);
        }
        assert_eq!((h.min(), h.max(), h.mean()), (None, None, None));
        assert_eq!(Percentiles::from_histogram(&h), Percentiles::default());
        assert_eq!(h, LatencyHistogram::default());
    }

    #[test]
    fn small_values_are_exact_and_p_is_clamped() {
        let mut h = LatencyHistogram::new();
        for v in 1..=100 {
            h.record(v);
        }
        assert_eq!(h.percentile(50.0), Some(50));
        assert_eq!(h.percentile(99.0), Some(99));
        assert_eq!(h.percentile(0.0), Some(1));
        assert_eq!(h.percentile(-3.0), Some(1));
        assert_eq!(h.percentile(100.0), Some(100));
        assert_eq!(h.percentile(f64::INFINITY), Some(100));
        assert_eq!(h.percentile(f64::NAN), None);
        assert_eq!(h.mean(), Some(50.5));
        let p = Percentiles::from_histogram(&h);
        assert_eq!((p.p50, p.p99, p.max), (0.05, 0.099, 0.1));
    }

    #[test]
    fn record_n_and_zero_count() {
        let mut a = LatencyHistogram::new();
        a.record_n(12_345, 0);
        assert!(a.is_empty());
        assert_eq!(a.min(), None);
        a.record_n(12_345, 3);
        let mut b = LatencyHistogram::new();
        for _ in 0..3 {
            b.record(12_345);
        }
        assert_eq!(a, b);
        assert_eq!(a.count(), 3);
        a.record_duration(Duration::from_millis(5));
        assert_eq!(a.max(), Some(12_345));
        assert_eq!(a.min(), Some(5_000));
    }

    #[test]
    fn clamping() {
        let mut h = LatencyHistogram::new();
        h.record(10);
        h.record(HIGHEST_TRACKABLE_US);
        assert_eq!(h.clamped(), 0);
        h.record(HIGHEST_TRACKABLE_US + 1);
        h.record(u64::MAX);
        h.record_duration(Duration::MAX);
        assert_eq!(h.clamped(), 3);
        assert_eq!(h.count(), 5);
        assert_eq!(h.max(), Some(HIGHEST_TRACKABLE_US));
        assert_eq!(h.percentile(100.0), Some(HIGHEST_TRACKABLE_US));
        assert!(h
            .percentile(50.0)
            .is_some_and(|a| within_bound(a, HIGHEST_TRACKABLE_US)));
        // Saturation instead of overflow.
        h.record_n(u64::MAX, u64::MAX);
        h.record_n(u64::MAX, u64::MAX);
        assert_eq!(h.count(), u64::MAX);
        assert_eq!(h.clamped(), u64::MAX);
        assert!(h
            .percentile(50.0)
            .is_some_and(|a| within_bound(a, HIGHEST_TRACKABLE_US)));
        assert!(h.mean().is_some_and(f64::is_finite));
        h.reset();
        assert_eq!(h, LatencyHistogram::new());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn percentiles_within_bound(
            values in proptest::collection::vec(sample(), 1..400),
            ps in proptest::collection::vec(0.0f64..=100.0, 1..8),
        ) {
            let mut h = LatencyHistogram::new();
            for &v in &values {
                h.record(v);
            }
            let mut sorted = values.clone();
            sorted.sort_unstable();
            prop_assert_eq!(h.count(), values.len() as u64);
            prop_assert_eq!(h.min(), sorted.first().copied());
            prop_assert_eq!(h.max(), sorted.last().copied());
            let mean = sorted.iter().map(|&v| v as f64).sum::<f64>() / sorted.len() as f64;
            prop_assert!((h.mean().unwrap_or(f64::NAN) - mean).abs() <= mean * 1e-9 + 1e-9);
            for p in ps.into_iter().chain([0.0, 50.0, 99.0, 100.0]) {
                let e = exact(&sorted, p);
                let a = h.percentile(p);
                prop_assert!(
                    a.is_some_and(|a| within_bound(a, e)),
                    "p{}: histogram {:?}, exact {}", p, a, e
                );
            }
            prop_assert_eq!(h.percentile(0.0), Some(sorted[0]));
            prop_assert_eq!(h.percentile(100.0), sorted.last().copied());
        }

        #[test]
        fn record_n_matches_repeats(v in sample(), n in 0u64..50) {
            let mut a = LatencyHistogram::new();
            a.record_n(v, n);
            let mut b = LatencyHistogram::new();
            for _ in 0..n {
                b.record(v);
            }
            prop_assert_eq!(a, b);
        }

        #[test]
        fn merge_equals_recording_both(
            left in proptest::collection::vec(sample(), 0..200),
            right in proptest::collection::vec(sample(), 0..200),
        ) {
            let mut a = LatencyHistogram::new();
            left.iter().for_each(|&v| a.record(v));
            let mut b = LatencyHistogram::new();
            right.iter().for_each(|&v| b.record(v));
            let mut both = LatencyHistogram::new();
            left.iter().chain(&right).for_each(|&v| both.record(v));
            a.merge(&b);
            prop_assert_eq!(a, both);
        }
    }

    #[test]
    fn shard_shares_average_over_nodes_and_name_the_busiest() {
        let mut r = report();
        r.duration_s = 10.0;
        let busy = |pairs: &[(&str, f64)]| -> BTreeMap<String, f64> {
            pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
        };
        r.nodes[0].shard_busy_s = busy(&[("net", 1.0), ("exec", 6.0), ("consensus", 2.0)]);
        r.nodes[1].shard_busy_s = busy(&[("net", 3.0), ("exec", 4.0), ("consensus", 2.0)]);
        r.nodes[0].shard_queue_peak = [("exec".to_string(), 17u64)].into_iter().collect();
        r.nodes[1].shard_queue_peak = [("exec".to_string(), 40u64)].into_iter().collect();
        let shares = shard_shares(&r.nodes, r.duration_s);
        assert_eq!(shares[0], ("exec".to_string(), 0.5));
        assert_eq!(shares[1].0, "consensus");
        assert!((shares[1].1 - 0.2).abs() < 1e-9);
        assert_eq!(shares[2].0, "net");
        let text = r.summary_table();
        let line = text
            .lines()
            .find(|l| l.trim_start().starts_with("shards"))
            .expect("a shards row");
        assert!(line.contains("exec 50% (queue peak 40)"), "{line}");
        assert!(line.ends_with("busiest: exec"), "{line}");
        // No shard figures (e.g. nodes that exported none): no row.
        for n in &mut r.nodes {
            n.shard_busy_s.clear();
        }
        assert!(!r.summary_table().contains("busiest"));
    }

    fn report() -> RunReport {
        let mut fin = LatencyHistogram::new();
        fin.record_n(38_000, 900);
        fin.record_n(95_000, 100);
        RunReport {
            workload: "transfer".into(),
            cns: 4,
            pns: 2,
            ens: 1,
            duration_s: 60.0,
            blocks: 600,
            finalized_txs: 598_800,
            tps: 9_980.0,
            block_interval_ms: Percentiles {
                p50: 101.0,
                p99: 120.5,
                max: 150.0,
            },
            finality_ms: Percentiles::from_histogram(&fin),
            en_lag_ms: Some(Percentiles {
                p50: 41.0,
                p99: 90.0,
                max: 120.0,
            }),
            round_changes: 0,
            agree: true,
            agreement_checked: true,
            offered_rate: 10_000,
            submitted: 600_000,
            rejected: [
                ("nonce-too-high".to_string(), 1_150),
                ("sender-full".to_string(), 50),
            ]
            .into_iter()
            .collect(),
            dropped: 12,
            generator_behind_ms: 3,
            targets: vec!["127.0.0.1:33000".into(), "127.0.0.1:33001".into()],
            tx_size: 110,
            block_period_ms: Some(100),
            cpu_us_per_tx: Some(12.5),
            state: None,
            nodes: vec![
                NodeReport {
                    name: "cn-0".into(),
                    role: Role::Cn,
                    height: 600,
                    round_changes: 0,
                    cpu_seconds: 12.34,
                    max_rss_mib: 123.4,
                    signature_recoveries: 0,
                    block_txs_pooled: 0,
                    block_txs_recovered: 0,
                    shard_busy_s: BTreeMap::new(),
                    shard_queue_peak: BTreeMap::new(),
                    resources: Some(ResourceTrend {
                        start_s: 6.0,
                        end_s: 60.0,
                        rss_start_mib: 90.5,
                        rss_mid_mib: 90.8,
                        rss_end_mib: 91.0,
                        fds_start: 40,
                        fds_end: 40,
                    }),
                },
                NodeReport {
                    name: "proxy-node-long-name-1".into(),
                    role: Role::Pn,
                    height: 599,
                    round_changes: 0,
                    cpu_seconds: 3.5,
                    max_rss_mib: 80.0,
                    signature_recoveries: 0,
                    block_txs_pooled: 0,
                    block_txs_recovered: 0,
                    shard_busy_s: BTreeMap::new(),
                    shard_queue_peak: BTreeMap::new(),
                    resources: None,
                },
                NodeReport {
                    name: "en-0".into(),
                    role: Role::En,
                    height: 1_234_567,
                    round_changes: 7,
                    cpu_seconds: 1.0,
                    max_rss_mib: 64.0,
                    signature_recoveries: 0,
                    block_txs_pooled: 0,
                    block_txs_recovered: 0,
                    shard_busy_s: BTreeMap::new(),
                    shard_queue_peak: BTreeMap::new(),
                    resources: None,
                },
            ],
        }
    }

    #[test]
    fn json_round_trip_has_field_names() {
        let r = report();
        let json = r.to_json();
        for key in [
            "workload",
            "cns",
            "pns",
            "ens",
            "duration_s",
            "blocks",
            "finalized_txs",
            "tps",
            "block_interval_ms",
            "finality_ms",
            "p50",
            "p99",
            "max",
            "round_changes",
            "agree",
            "agreement_checked",
            "offered_rate",
            "submitted",
            "rejected",
            "nonce-too-high",
            "dropped",
            "generator_behind_ms",
            "targets",
            "tx_size",
            "block_period_ms",
            "cpu_us_per_tx",
            "nodes",
            "name",
            "role",
            "height",
            "cpu_seconds",
            "max_rss_mib",
        ] {
            assert!(
                json.contains(&format!("\"{key}\":")),
                "missing {key} in {json}"
            );
        }
        assert!(json.contains("\"role\": \"pn\""));
        let back: RunReport = serde_json::from_str(&json).expect("parses");
        assert_eq!(back, r);
        assert!((r.finality_ms.p50 - 38.0).abs() <= 38.0 * MAX_RELATIVE_ERROR);
        assert!((r.finality_ms.p99 - 95.0).abs() <= 95.0 * MAX_RELATIVE_ERROR);
        assert_eq!(r.finality_ms.max, 95.0);

        let none = RunReport {
            cpu_us_per_tx: None,
            state: None,
            ..RunReport::default()
        };
        let back: RunReport = serde_json::from_str(&none.to_json()).expect("parses");
        assert_eq!(back, none);
    }

    #[test]
    fn non_finite_values_do_not_panic() {
        let mut r = report();
        r.tps = f64::NAN;
        r.duration_s = f64::INFINITY;
        r.cpu_us_per_tx = Some(f64::NEG_INFINITY);
        r.nodes[0].cpu_seconds = f64::NAN;
        r.workload = "bad\nname\t".into();
        let json = r.to_json();
        let v: serde_json::Value = serde_json::from_str(&json).expect("valid JSON");
        assert!(v["tps"].is_null());
        let table = r.summary_table();
        assert!(table.contains("n/a"));
        assert!(table.contains("bad?name?"));
        let s = StatusLine {
            elapsed_s: f64::NAN,
            tps: f64::INFINITY,
            finality_ms_p99: f64::NAN,
            ..StatusLine::default()
        }
        .render();
        assert!(s.contains("n/a") && !s.contains('\n'));
    }

    #[test]
    fn summary_table_lists_nodes_and_verdict() {
        let mut r = report();
        let table = r.summary_table();
        println!("{table}");
        for n in &r.nodes {
            assert!(table.contains(&n.name), "{} missing", n.name);
        }
        assert!(table.contains(&format!("{:<16}yes", "agree")));
        assert!(table.contains("598,800 txs in 600 blocks"));
        assert!(table.contains("9,980.0 tx/s"));
        assert!(table.contains("tx size 110 B  block period 100 ms"));
        assert!(table.contains("p50 38.0 ms  p99 95.0 ms"));
        assert!(table.contains(&format!("{:<16}p50 41.0 ms  p99 90.0 ms", "EN lag")));
        assert!(table.contains("at 6 s -> 60 s of the load"));
        assert!(table.contains("90.5/90.8/91.0") && table.contains("40/40"));
        assert!(table.contains("1,234,567"));
        assert!(table.contains("600,000 txs  rejected 1,200  dropped 12"));
        assert!(table.contains(&format!(
            "{:<16}nonce-too-high 1,150, sender-full 50",
            "rejected by"
        )));
        assert!(table.lines().all(|l| !l.ends_with(' ')));
        // Node rows line up: every row of the node table has the same length.
        let rows: Vec<&str> = table
            .lines()
            .skip_while(|l| !l.trim_start().starts_with("node"))
            .collect();
        assert_eq!(rows.len(), 1 + r.nodes.len());
        assert!(rows.iter().all(|l| l.len() == rows[0].len()));
        assert!(table.contains(&format!(
            "{:<16}127.0.0.1:33000, 127.0.0.1:33001 (native TxBatch)",
            "ingress"
        )));
        assert!(table.contains(&format!(
            "{:<16}kept its schedule (largest lag 3 ms)",
            "generator"
        )));
        r.agree = false;
        assert!(r.summary_table().contains(&format!("{:<16}NO", "agree")));
        r.agreement_checked = false;
        assert!(r
            .summary_table()
            .contains(&format!("{:<16}not checked", "agree")));
        r.generator_behind_ms = 1_500;
        assert!(r.summary_table().contains(&format!(
            "{:<16}FELL BEHIND its schedule by up to 1,500 ms",
            "generator"
        )));
        // Without node metrics (a bench given only ingress targets) round changes are unknown,
        // and without its genesis the chain's block period too.
        r.nodes.clear();
        r.block_period_ms = None;
        assert!(r.summary_table().contains("block period unknown"));
        r.block_period_ms = Some(0);
        assert!(r.summary_table().contains("block period 0 (back to back)"));
        r.block_period_ms = None;
        let table = r.summary_table();
        assert!(table.contains(&format!("{:<16}n/a (no node metrics)", "round changes")));
        assert!(
            !table.contains("max rss MiB"),
            "no node table without nodes"
        );
    }

    #[test]
    fn status_line() {
        let s = StatusLine {
            elapsed_s: 12.7,
            height: 140,
            tps: 9_980.2,
            block_interval_ms_p50: 101.3,
            finality_ms_p50: 38.1,
            finality_ms_p99: 95.0,
            round_changes: 0,
            rejected: 1_234,
            dropped: 5,
            behind_ms: Some(2),
        };
        assert_eq!(
            s.render(),
            "[  12s] height 140  tps 9,980  interval p50 101 ms  finality p50 38 ms p99 95 ms  rejected 1,234  dropped 5  round changes 0  gen lag 2 ms"
        );
        let idle = StatusLine {
            behind_ms: None,
            ..s
        };
        assert!(
            idle.render().ends_with("round changes 0"),
            "{}",
            idle.render()
        );
        let late = StatusLine {
            behind_ms: Some(BEHIND_WARNING_MS + 150),
            ..s
        };
        assert!(
            late.render()
                .ends_with("round changes 0  GENERATOR BEHIND SCHEDULE by 250 ms"),
            "{}",
            late.render()
        );
        let fast = StatusLine {
            elapsed_s: 3_601.0,
            height: 1_000_000,
            finality_ms_p50: 2.26,
            ..s
        };
        assert!(fast.render().starts_with("[3,601s] height 1,000,000 "));
        assert!(fast.render().contains("finality p50 2.3 ms"));
    }

    #[test]
    fn number_formatting() {
        assert_eq!(group(0), "0");
        assert_eq!(group(999), "999");
        assert_eq!(group(1_000), "1,000");
        assert_eq!(group(u64::MAX), "18,446,744,073,709,551,615");
        assert_eq!(fixed(1_234_567.891, 2), "1,234,567.89");
        assert_eq!(fixed(-1_234.56, 1), "-1,234.6");
        assert_eq!(fixed(-0.01, 1), "0.0");
        assert_eq!(fixed(999.96, 1), "1,000.0");
        assert_eq!(fixed(f64::NAN, 1), "n/a");
        assert_eq!(fixed(f64::MAX, 0).len(), 309 + 102);
        assert_eq!(millis(9.94), "9.9");
        assert_eq!(millis(9.96), "10.0");
        assert_eq!(millis(10.4), "10");
    }
}
