//! Many runs: every requested scenario over a range of seeds, on a few threads, with a summary.
//!
//! Runs are independent and each is deterministic, so the threads only change the wall time:
//! results are gathered by (scenario, seed) index and reported in that order.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::types::Height;

use super::scenario::Scenario;
use super::world::{run, RunOptions, RunReport};

/// What to run.
#[derive(Debug, Clone)]
pub struct BatchOptions {
    /// Scenarios, each run over every seed.
    pub scenarios: Vec<Scenario>,
    /// Seeds.
    pub seeds: Vec<u64>,
    /// Everything else (its scenario and seed are replaced per run).
    pub template: RunOptions,
    /// Worker threads.
    pub jobs: usize,
    /// Print progress to stderr every few seconds.
    pub progress: bool,
}

/// Per-scenario totals.
#[derive(Debug, Clone, Default)]
pub struct ScenarioTotals {
    /// Runs.
    pub runs: u64,
    /// Runs with a safety violation.
    pub safety: u64,
    /// Runs with a liveness failure.
    pub liveness: u64,
    /// Lowest final height over honest nodes and runs.
    pub min_finalized: Option<Height>,
    /// Virtual milliseconds, summed.
    pub virtual_ms: u64,
    /// Highest round reached.
    pub max_round: u32,
    /// BLS runs.
    pub bls_runs: u64,
}

/// The outcome of a batch.
#[derive(Debug, Clone)]
pub struct BatchSummary {
    /// Every report, in (scenario, seed) order.
    pub reports: Vec<RunReport>,
    /// Totals per scenario.
    pub per_scenario: BTreeMap<Scenario, ScenarioTotals>,
    /// Wall time.
    pub wall: Duration,
}

impl BatchSummary {
    /// Safety violations over all runs.
    pub fn safety_violations(&self) -> usize {
        self.reports.iter().map(|r| r.safety_violations()).sum()
    }

    /// Liveness failures over all runs.
    pub fn liveness_failures(&self) -> usize {
        self.reports.iter().map(|r| r.liveness_failures()).sum()
    }

    /// Runs with any violation.
    pub fn failed_runs(&self) -> impl Iterator<Item = &RunReport> {
        self.reports.iter().filter(|r| !r.violations.is_empty())
    }

    /// The summary as one JSON object.
    pub fn to_json(&self, seeds: usize, scenarios: &[Scenario]) -> serde_json::Value {
        let wall = self.wall.as_secs_f64();
        let runs = self.reports.len();
        let mut rejected: BTreeMap<String, u64> = BTreeMap::new();
        for r in &self.reports {
            for (k, v) in &r.rejected {
                *rejected.entry(k.clone()).or_default() += v;
            }
        }
        let mut fingerprint = xxhash_rust::xxh3::Xxh3::new();
        for r in &self.reports {
            fingerprint.update(r.trace_hash.as_bytes());
        }
        let per: serde_json::Map<String, serde_json::Value> = self
            .per_scenario
            .iter()
            .map(|(s, t)| {
                (
                    s.name().to_string(),
                    serde_json::json!({
                        "runs": t.runs,
                        "safety_failed_runs": t.safety,
                        "liveness_failed_runs": t.liveness,
                        "min_finalized_height": t.min_finalized,
                        "virtual_seconds": t.virtual_ms as f64 / 1000.0,
                        "max_round": t.max_round,
                        "bls_runs": t.bls_runs,
                    }),
                )
            })
            .collect();
        serde_json::json!({
            "seeds": seeds,
            "scenarios": scenarios.iter().map(|s| s.name()).collect::<Vec<_>>(),
            "runs": runs,
            "safety_violations": self.safety_violations(),
            "liveness_failures": self.liveness_failures(),
            "failed_runs": self.failed_runs().count(),
            "min_finalized_heights": self.reports.iter().map(|r| r.min_finalized).min(),
            "virtual_seconds": self.reports.iter().map(|r| r.virtual_ms).sum::<u64>() as f64 / 1000.0,
            "wall_seconds": (wall * 1000.0).round() / 1000.0,
            "seed_runs_per_minute": if wall > 0.0 { (runs as f64 * 60.0 / wall).round() } else { 0.0 },
            "events": self.reports.iter().map(|r| r.events).sum::<u64>(),
            "bls_runs": self.reports.iter().filter(|r| r.scheme == "bls").count(),
            "byzantine_evidence": self.reports.iter().map(|r| r.byzantine_evidence).sum::<u64>(),
            "byzantine_messages": self.reports.iter().map(|r| r.injected).sum::<u64>(),
            "max_round": self.reports.iter().map(|r| r.max_round).max(),
            "messages_lost": self.reports.iter().map(|r| r.net.lost + r.net.partitioned).sum::<u64>(),
            "rejected": rejected,
            "runs_fingerprint": format!("{:032x}", fingerprint.digest128()),
            "per_scenario": per,
        })
    }
}

/// One run's report as a JSON object (for `--json`).
pub fn report_json(r: &RunReport) -> serde_json::Value {
    serde_json::json!({
        "scenario": r.options.scenario.name(),
        "seed": r.options.seed,
        "council": r.council,
        "committee": r.committee,
        "scheme": r.scheme,
        "min_finalized": r.min_finalized,
        "max_finalized": r.max_finalized,
        "target": r.target,
        "virtual_seconds": r.virtual_ms as f64 / 1000.0,
        "events": r.events,
        "max_round": r.max_round,
        "trace_hash": r.trace_hash,
        "violations": r.violations.iter().map(|v| v.to_string()).collect::<Vec<_>>(),
        "replay": (!r.violations.is_empty()).then(|| r.options.replay_command()),
        "plan": r.plan,
    })
}

/// Runs the batch.
pub fn run_batch(opts: &BatchOptions) -> BatchSummary {
    let started = Instant::now();
    let jobs: Vec<RunOptions> = opts
        .scenarios
        .iter()
        .flat_map(|&s| {
            opts.seeds.iter().map(move |&seed| {
                let mut o = opts.template.clone();
                o.scenario = s;
                o.seed = seed;
                o
            })
        })
        .collect();
    let total = jobs.len();
    let next = AtomicUsize::new(0);
    let mut slots: Vec<Option<RunReport>> = vec![None; total];
    let (tx, rx) = mpsc::channel::<(usize, RunReport)>();
    std::thread::scope(|scope| {
        for _ in 0..opts.jobs.max(1).min(total.max(1)) {
            let tx = tx.clone();
            let (jobs, next) = (&jobs, &next);
            scope.spawn(move || loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(o) = jobs.get(i) else { break };
                if tx.send((i, run(o))).is_err() {
                    break;
                }
            });
        }
        drop(tx);
        let mut done = 0usize;
        let mut failed = 0usize;
        let mut last = Instant::now();
        while done < total {
            match rx.recv_timeout(Duration::from_millis(500)) {
                Ok((i, r)) => {
                    done += 1;
                    if !r.violations.is_empty() {
                        failed += 1;
                    }
                    slots[i] = Some(r);
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
            if opts.progress && last.elapsed() >= Duration::from_secs(3) {
                last = Instant::now();
                let secs = started.elapsed().as_secs_f64();
                eprintln!(
                    "sim: {done}/{total} runs, {failed} failed, {:.0} s, {:.0} runs/min",
                    secs,
                    done as f64 * 60.0 / secs.max(1e-9)
                );
            }
        }
    });
    let reports: Vec<RunReport> = slots.into_iter().flatten().collect();
    let mut per_scenario: BTreeMap<Scenario, ScenarioTotals> = BTreeMap::new();
    for r in &reports {
        let t = per_scenario.entry(r.options.scenario).or_default();
        t.runs += 1;
        t.safety += u64::from(r.safety_violations() > 0);
        t.liveness += u64::from(r.liveness_failures() > 0);
        t.min_finalized = Some(
            t.min_finalized
                .map_or(r.min_finalized, |m| m.min(r.min_finalized)),
        );
        t.virtual_ms += r.virtual_ms;
        t.max_round = t.max_round.max(r.max_round);
        t.bls_runs += u64::from(r.scheme == "bls");
    }
    BatchSummary {
        reports,
        per_scenario,
        wall: started.elapsed(),
    }
}
