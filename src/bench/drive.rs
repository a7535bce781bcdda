//! The measuring loop that `corecell testnet` and `corecell bench` share.
//!
//! [`drive`] runs a started [`Load`] for a duration (or, with no load, until interrupted),
//! prints one [`StatusLine`] a second, stops the load and condenses what it saw into a
//! [`LoadOutcome`]. What only the caller can see of the nodes (their heights and round changes,
//! from metrics when it has them) comes from an observer it passes in, called once before the
//! load's first second (the baseline) and once a second after; the observer may also act (the
//! testnet's `--kill-at`) and may end the run with an error (a node died). The caller turns the
//! outcome into a [`RunReport`] with [`LoadOutcome::report`] and adds the node figures.
//!
//! Heights: a run without node metrics takes the height from the nodes' FINAL answers (the
//! highest block one of its batches landed in), which follows the chain as long as the load
//! keeps every block busy. Block intervals: each second's mean interval (seconds over blocks
//! that second), recorded once per block; `testnet` replaces them with the intervals between
//! the block headers' timestamps after the run.
//!
//! The generator's lag behind its schedule ([`LoadStats::take_behind_window`]) is on every
//! status line, and a lag of [`BEHIND_WARNING_MS`] or more is said again at the end: the
//! figures are then partly the generator's, not only the network's.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::{Duration, Instant};

use super::load::{Load, LoadStats, BEHIND_WARNING_MS};
use super::report::{LatencyHistogram, Percentiles, RunReport, StatusLine};

/// What the caller sees of the nodes at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NodeSample {
    /// The highest finalized height among the nodes; `None` without node metrics.
    pub height: Option<u64>,
    /// Round changes to show (the caller decides since when); `None` without node metrics.
    pub round_changes: Option<u64>,
}

/// How long [`drive`] runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunLength {
    /// This long (whole seconds are the norm; the loop ends at the first status line at or
    /// after it).
    For(Duration),
    /// Until the interrupt flag is set (an idle dev network).
    UntilInterrupted,
}

/// What a load run saw, from the load generator's side, plus the last node sample.
#[derive(Debug, Clone, Default)]
pub struct LoadOutcome {
    /// Wall time from the load's start to the end of the loop, seconds.
    pub duration_s: f64,
    /// Transactions sent.
    pub submitted: u64,
    /// Transactions the nodes answered FINAL.
    pub finalized: u64,
    /// Transactions refused at once, by reason.
    pub rejected: BTreeMap<String, u64>,
    /// Transactions admitted, then dropped from a pool.
    pub dropped: u64,
    /// Finality latency of every finalized transaction, microseconds.
    pub finality: LatencyHistogram,
    /// The generator's largest lag behind its schedule, ms.
    pub behind_ms: u64,
    /// Connection and protocol errors the load noted (the first ones).
    pub errors: Vec<String>,
    /// Errors beyond those kept.
    pub errors_not_kept: u64,
    /// Each second's mean block interval, once per block of that second, microseconds.
    pub block_intervals: LatencyHistogram,
    /// The lowest and highest heights the nodes' FINAL answers named.
    pub final_heights: Option<(u64, u64)>,
    /// The observer's first sample (before the load's first second).
    pub first_sample: NodeSample,
    /// The observer's last sample.
    pub last_sample: NodeSample,
    /// Whether the interrupt flag ended the run early.
    pub interrupted: bool,
}

impl LoadOutcome {
    /// A report holding the load's figures. The caller sets what it knows beyond them:
    /// `cns`, `blocks`, `round_changes`, `agree`, `cpu_us_per_tx`, `state`, `nodes` (and may
    /// replace `block_interval_ms`).
    pub fn report(&self, workload: &str, offered_rate: u64, tx_size: usize) -> RunReport {
        RunReport {
            workload: workload.to_string(),
            duration_s: self.duration_s,
            finalized_txs: self.finalized,
            tps: self.finalized as f64 / self.duration_s.max(1e-3),
            block_interval_ms: Percentiles::from_histogram(&self.block_intervals),
            finality_ms: Percentiles::from_histogram(&self.finality),
            offered_rate,
            submitted: self.submitted,
            rejected: self.rejected.clone(),
            dropped: self.dropped,
            generator_behind_ms: self.behind_ms,
            tx_size,
            ..RunReport::default()
        }
    }

    /// Prints the load's errors and, when it fell behind its schedule, a warning (stderr).
    pub fn print_warnings(&self, who: &str) {
        for e in &self.errors {
            eprintln!("{who}: {e}");
        }
        if self.errors_not_kept > 0 {
            eprintln!("{who}: {} more errors not shown", self.errors_not_kept);
        }
        if let Some(warning) = behind_warning(self.behind_ms) {
            eprintln!("{who}: warning: {warning}");
        }
    }
}

/// The warning for a generator that fell `behind_ms` behind its schedule; `None` under
/// [`BEHIND_WARNING_MS`].
pub fn behind_warning(behind_ms: u64) -> Option<String> {
    (behind_ms >= BEHIND_WARNING_MS).then(|| {
        format!(
            "the load generator fell behind its schedule by up to {behind_ms} ms (this machine \
             could not send at the offered rate: the figures are partly the generator's; the \
             lag is inside the finality latency)"
        )
    })
}

/// Runs `load` (none: an idle network) for `length`, printing a status line a second, and
/// returns what it saw. `observe(elapsed)` is called once before the first second and once a
/// second after; its error stops the load and ends the run with that error. The interrupt flag
/// ends the run early (the outcome says so). A [`RunLength::For`] loop makes at most one
/// status line per second of the length plus two.
pub fn drive(
    load: Option<Load>,
    length: RunLength,
    interrupted: &AtomicBool,
    mut observe: impl FnMut(Duration) -> Result<NodeSample, String>,
) -> Result<LoadOutcome, String> {
    let start = Instant::now();
    let first_sample = observe(Duration::ZERO)?;
    let max_lines = match length {
        RunLength::For(d) => d.as_secs().saturating_add(2),
        RunLength::UntilInterrupted => u64::MAX,
    };
    let mut outcome = LoadOutcome {
        first_sample,
        last_sample: first_sample,
        ..LoadOutcome::default()
    };
    let idle = LoadStats::default();
    let has_load = load.is_some();
    let stats = load.as_ref().map_or(&idle, |l| &*l.stats);
    let mut last_line = Instant::now();
    let mut last_finalized = 0u64;
    let mut last_height = first_sample.height;
    for _ in 0..max_lines {
        if let RunLength::For(d) = length {
            if start.elapsed() >= d {
                break;
            }
        }
        if interrupted.load(Relaxed) {
            println!("interrupted; stopping");
            outcome.interrupted = true;
            break;
        }
        std::thread::sleep(Duration::from_secs(1).saturating_sub(last_line.elapsed()));
        let sample = observe(start.elapsed())?;
        outcome.last_sample = sample;
        let height = sample
            .height
            .or_else(|| stats.final_heights().map(|(_, highest)| highest));
        let dt = last_line.elapsed().as_secs_f64().max(1e-3);
        last_line = Instant::now();
        let interval_ms = match (last_height, height) {
            (Some(before), Some(now)) if now > before => {
                let interval_ms = dt * 1000.0 / (now - before) as f64;
                outcome
                    .block_intervals
                    .record_n((interval_ms * 1000.0) as u64, now - before);
                interval_ms
            }
            _ => 0.0,
        };
        if height.is_some() {
            last_height = height;
        }
        let finalized = stats.finalized.load(Relaxed);
        let window = Percentiles::from_histogram(&stats.take_window());
        println!(
            "{}",
            StatusLine {
                elapsed_s: start.elapsed().as_secs_f64(),
                height: height.unwrap_or(0),
                tps: finalized.saturating_sub(last_finalized) as f64 / dt,
                block_interval_ms_p50: interval_ms,
                finality_ms_p50: window.p50,
                finality_ms_p99: window.p99,
                round_changes: sample.round_changes.unwrap_or(0),
                rejected: stats.rejected_total(),
                dropped: stats.dropped.load(Relaxed),
                behind_ms: has_load.then(|| stats.take_behind_window()),
            }
            .render()
        );
        last_finalized = finalized;
    }
    outcome.duration_s = start.elapsed().as_secs_f64();
    // A sender stuck in a write right now counts with its lag so far.
    stats.take_behind_window();
    let Some(load) = load else {
        return Ok(outcome);
    };
    let stats = load.stop();
    outcome.submitted = stats.submitted.load(Relaxed);
    outcome.finalized = stats.finalized.load(Relaxed);
    outcome.rejected = stats.rejected_by_reason();
    outcome.dropped = stats.dropped.load(Relaxed);
    outcome.finality = stats.latency.lock().map(|h| h.clone()).unwrap_or_default();
    outcome.behind_ms = stats.behind_ms.load(Relaxed);
    outcome.errors = stats.errors.lock().map(|e| e.clone()).unwrap_or_default();
    outcome.errors_not_kept = stats.errors_not_kept.load(Relaxed);
    outcome.final_heights = stats.final_heights();
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::load::{LoadSpec, LoadWorkload};
    use crate::types::frame::{encode_frame, FrameDecoder, Message};
    use crate::types::network::IngressAck;
    use std::io::{Read, Write};

    /// A node on `listener` for one connection that answers every batch FINAL at a height that
    /// grows by one per batch, until the connection closes or 20 s pass.
    fn finalizing_node(listener: std::net::TcpListener) {
        let deadline = Instant::now() + Duration::from_secs(20);
        let Ok((mut stream, _)) = listener.accept() else {
            return;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_millis(50)));
        let mut decoder = FrameDecoder::new();
        let mut buf = vec![0u8; 64 * 1024];
        let mut height = 100u64;
        while Instant::now() < deadline {
            let n = match stream.read(&mut buf) {
                Ok(0) => return,
                Ok(n) => n,
                Err(_) => continue,
            };
            let mut input = &buf[..n];
            while let Ok(Some(frame)) = decoder.decode(&mut input) {
                let Ok(Message::TxBatch(batch)) = frame.message() else {
                    return;
                };
                height += 1;
                let ack = encode_frame(&IngressAck {
                    batch_id: batch.id.to_native(),
                    status: IngressAck::FINAL,
                    height,
                    count: batch.transactions.len() as u32,
                });
                if stream.write_all(&ack).is_err() {
                    return;
                }
            }
        }
    }

    #[test]
    fn a_run_without_node_metrics_takes_heights_from_the_answers() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("address");
        let node = std::thread::spawn(move || finalizing_node(listener));
        let load = Load::start(LoadSpec {
            targets: vec![addr],
            workload: LoadWorkload::Raw {
                rate: 400,
                tx_size: 64,
            },
        })
        .expect("starts");
        let mut calls = Vec::new();
        let outcome = drive(
            Some(load),
            RunLength::For(Duration::from_secs(2)),
            &AtomicBool::new(false),
            |elapsed| {
                calls.push(elapsed);
                Ok(NodeSample::default())
            },
        )
        .expect("runs");
        node.join().expect("node");
        // The baseline, then one call per status line: two seconds, two lines.
        assert_eq!(calls.len(), 3, "{calls:?}");
        assert_eq!(calls[0], Duration::ZERO);
        assert!(outcome.duration_s >= 2.0 && outcome.duration_s < 3.5);
        assert!(!outcome.interrupted);
        // 400 tx/s for ~2 s, answered FINAL.
        assert!(
            (700..=900).contains(&outcome.submitted),
            "{}",
            outcome.submitted
        );
        assert!(outcome.finalized > 0 && outcome.finalized <= outcome.submitted);
        assert_eq!(outcome.finality.count(), outcome.finalized);
        let (lowest, highest) = outcome.final_heights.expect("FINAL answers");
        assert_eq!(lowest, 101);
        assert!(highest > lowest);
        // Heights from the answers give block intervals (one batch per 5 ms: a few ms each).
        assert!(!outcome.block_intervals.is_empty());
        let report = outcome.report("raw", 400, 64);
        assert_eq!(report.submitted, outcome.submitted);
        assert_eq!(report.finalized_txs, outcome.finalized);
        assert_eq!(report.offered_rate, 400);
        assert!(report.block_interval_ms.p50 > 0.0 && report.block_interval_ms.p50 < 50.0);
    }

    #[test]
    fn a_sender_stuck_on_a_node_that_does_not_read_shows_its_lag_and_stops() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("address");
        let release = std::sync::Arc::new(AtomicBool::new(false));
        let released = release.clone();
        // Accepts, never reads; holds the connection until released (at most 20 s).
        let node = std::thread::spawn(move || {
            let conn = listener.accept();
            let deadline = Instant::now() + Duration::from_secs(20);
            while !released.load(Relaxed) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            drop(conn);
        });
        // 32 MB/s: the socket buffers fill within a fraction of a second.
        let load = Load::start(LoadSpec {
            targets: vec![addr],
            workload: LoadWorkload::Raw {
                rate: 2_000,
                tx_size: 16 * 1024,
            },
        })
        .expect("starts");
        let lags = std::sync::Mutex::new(Vec::new());
        let stats = load.stats.clone();
        let started = Instant::now();
        let outcome = drive(
            Some(load),
            RunLength::For(Duration::from_secs(2)),
            &AtomicBool::new(false),
            |_| {
                lags.lock().expect("lock").push(stats.lag_now_ms());
                Ok(NodeSample::default())
            },
        )
        .expect("runs");
        // Stopping did not wait on the node: one write poll at most.
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{:?}",
            started.elapsed()
        );
        release.store(true, Relaxed);
        node.join().expect("node");
        let lags = lags.lock().expect("lock").clone();
        // Measured while the sender was stuck, growing.
        assert!(lags[2] >= 1_000 && lags[2] > lags[1], "{lags:?}");
        assert!(outcome.behind_ms >= 1_000, "{}", outcome.behind_ms);
        assert!(behind_warning(outcome.behind_ms).is_some());
        let mut report = outcome.report("raw", 2_000, 16 * 1024);
        report.targets = vec![addr.to_string()];
        assert!(report
            .summary_table()
            .contains("FELL BEHIND its schedule by up to"));
        assert!(outcome.submitted < 2_000, "{}", outcome.submitted);
    }

    #[test]
    fn an_observer_error_ends_the_run_and_the_interrupt_flag_ends_it_early() {
        let mut calls = 0;
        let err = drive(
            None,
            RunLength::For(Duration::from_secs(30)),
            &AtomicBool::new(false),
            |_| {
                calls += 1;
                if calls == 2 {
                    Err("cn3 exited under load".to_string())
                } else {
                    Ok(NodeSample {
                        height: Some(5),
                        round_changes: Some(0),
                    })
                }
            },
        )
        .expect_err("the observer failed");
        assert_eq!(err, "cn3 exited under load");

        let started = Instant::now();
        let outcome = drive(
            None,
            RunLength::UntilInterrupted,
            &AtomicBool::new(true),
            |_| Ok(NodeSample::default()),
        )
        .expect("runs");
        assert!(outcome.interrupted);
        assert!(started.elapsed() < Duration::from_secs(1));
        assert_eq!(outcome.submitted, 0);
    }

    #[test]
    fn the_behind_warning_starts_at_the_threshold() {
        assert_eq!(behind_warning(BEHIND_WARNING_MS - 1), None);
        let warning = behind_warning(BEHIND_WARNING_MS).expect("at the threshold");
        assert!(warning.contains("fell behind its schedule by up to 100 ms"));
    }
}
