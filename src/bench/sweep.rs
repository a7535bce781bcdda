//! `corecell testnet --sweep R1,R2,...`: one full testnet run per offered rate, in turn, then a
//! table, `sweep.json` and a plot `sweep.svg`.
//!
//! Each rate gets a fresh network (new genesis, so nonces start over) in its own subfolder of
//! the output folder, `NN-rate-R` (`NN` = the run's number, so a rate may repeat); every other
//! option is the same for every run, ports included (the nodes' listeners set `SO_REUSEADDR`,
//! so a run does not wait for the previous one's sockets). Each run's report is printed and
//! written to `NN-rate-R/report.json`. A run that fails (nodes disagree, no block, a failed
//! state check, a node that dies, an error) stops the sweep: the remaining rates are not run,
//! and the table, JSON and plot cover the runs made so far. So does an interrupt.
//!
//! The table ([`table`]) lists per run: offered and finalized tx/s, finality p50/p99, CPU per
//! finalized transaction (all nodes), round changes, refusals, the generator's lag and the
//! result. The plot ([`plot`]) has two panels: finalized tx/s against offered tx/s (with the
//! dashed `y = x` line a network that keeps up would follow), and finality p50 and p99 against
//! finalized tx/s (the latency each throughput costs). Points are joined in offered-rate
//! order.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;

use serde::Serialize;

use super::report::RunReport;
use super::svg::{self, Chart, Series};
use super::testnet::{self, TestnetOptions};

/// The most rates one sweep runs.
pub const MAX_SWEEP_RATES: usize = 32;
/// The sweep's JSON document, in the output folder.
pub const SWEEP_JSON: &str = "sweep.json";
/// The sweep's plot, in the output folder.
pub const SWEEP_SVG: &str = "sweep.svg";

/// Parses a comma-separated list of offered rates (tx/s), e.g. `10000,50000,100000`: at least
/// one, at most [`MAX_SWEEP_RATES`], each above 0; any order, repeats allowed.
pub fn parse_rates(text: &str) -> Result<Vec<u64>, String> {
    let mut rates = Vec::new();
    for part in text.split(',') {
        let part = part.trim();
        if part.is_empty() {
            if text.trim().is_empty() {
                return Err("--sweep needs at least one rate, e.g. --sweep 2000,4000".into());
            }
            return Err(format!("--sweep `{text}` has an empty entry"));
        }
        let rate: u64 = part
            .replace('_', "")
            .parse()
            .map_err(|_| format!("--sweep: `{part}` is not a rate in tx/s (a whole number)"))?;
        if rate == 0 {
            return Err("--sweep: a rate of 0 tx/s measures nothing".into());
        }
        rates.push(rate);
    }
    if rates.len() > MAX_SWEEP_RATES {
        return Err(format!(
            "--sweep lists {} rates; at most {MAX_SWEEP_RATES}",
            rates.len()
        ));
    }
    Ok(rates)
}

/// The folder of run `index` (from 0) at `rate`: `<dir>/NN-rate-R`.
pub fn run_dir(dir: &Path, index: usize, rate: u64) -> PathBuf {
    dir.join(format!("{:02}-rate-{rate}", index + 1))
}

/// One run of a sweep.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SweepPoint {
    /// Offered transactions per second.
    pub offered_rate: u64,
    /// The run's folder.
    pub dir: PathBuf,
    /// `ok`, or what failed.
    pub result: String,
    /// The run's report; `None` when the run ended in an error before it had one.
    pub report: Option<RunReport>,
}

impl SweepPoint {
    /// Whether the run passed.
    pub fn passed(&self) -> bool {
        self.result == "ok"
    }
}

/// A finished (or stopped) sweep.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Sweep {
    /// The workload of every run.
    pub workload: String,
    /// Consensus nodes of every run.
    pub cns: usize,
    /// Seconds of load per run.
    pub duration_s: u64,
    /// The rates asked for, in order.
    pub rates: Vec<u64>,
    /// The runs made, in order.
    pub points: Vec<SweepPoint>,
    /// Why the sweep stopped before its last rate; `None` when it ran them all.
    pub stopped_early: Option<String>,
}

impl Sweep {
    /// The sweep as one pretty-printed JSON object (non-finite numbers become `null`).
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self)
            .unwrap_or_else(|e| serde_json::json!({ "error": e.to_string() }).to_string())
    }
}

/// Checks a sweep before anything runs: the rates, every rate's run options (the transfer plan
/// of the highest rate must fit the pre-signing bound), and that no run folder exists yet.
pub fn check(options: &TestnetOptions, rates: &[u64]) -> Result<(), String> {
    if rates.is_empty() {
        return Err("--sweep needs at least one rate".into());
    }
    if let Some(zero) = rates.iter().position(|&r| r == 0) {
        return Err(format!("--sweep: rate number {} is 0", zero + 1));
    }
    if options.workload == testnet::Workload::None {
        return Err("--sweep needs a workload (transfer or raw), not none".into());
    }
    for (i, &rate) in rates.iter().enumerate() {
        testnet::check(&TestnetOptions {
            rate,
            ..options.clone()
        })
        .map_err(|e| format!("--sweep rate {rate}: {e}"))?;
        let dir = run_dir(&options.dir, i, rate);
        if dir.exists() {
            return Err(format!(
                "{} already exists: give the sweep a fresh --dir",
                dir.display()
            ));
        }
    }
    Ok(())
}

/// Runs `rates` in turn (see the module doc). Errors of a run are in its point; only a
/// failure to prepare the output folder is an error of the sweep.
pub fn run(
    options: &TestnetOptions,
    rates: &[u64],
    interrupted: Arc<AtomicBool>,
) -> Result<Sweep, String> {
    check(options, rates)?;
    std::fs::create_dir_all(&options.dir)
        .map_err(|e| format!("creating {}: {e}", options.dir.display()))?;
    let mut sweep = Sweep {
        workload: options.workload.name().to_string(),
        cns: options.cns,
        duration_s: options.duration.as_secs(),
        rates: rates.to_vec(),
        points: Vec::new(),
        stopped_early: None,
    };
    for (i, &rate) in rates.iter().enumerate() {
        if interrupted.load(Relaxed) {
            sweep.stopped_early = Some(format!(
                "interrupted before rate {rate} ({} of {} runs made)",
                i,
                rates.len()
            ));
            break;
        }
        let dir = run_dir(&options.dir, i, rate);
        println!(
            "sweep: run {} of {}: {rate} tx/s in {}",
            i + 1,
            rates.len(),
            dir.display()
        );
        let run_options = TestnetOptions {
            dir: dir.clone(),
            rate,
            json: None,
            ..options.clone()
        };
        let point = match testnet::run(&run_options, interrupted.clone()) {
            Ok(report) => {
                println!();
                print!("{}", report.summary_table());
                let path = dir.join("report.json");
                if let Err(e) = std::fs::write(&path, report.to_json()) {
                    eprintln!("sweep: writing {}: {e}", path.display());
                }
                let result = match testnet::verdict(&report) {
                    Ok(()) => "ok".to_string(),
                    Err(e) => e,
                };
                SweepPoint {
                    offered_rate: rate,
                    dir,
                    result,
                    report: Some(report),
                }
            }
            Err(e) => SweepPoint {
                offered_rate: rate,
                dir,
                result: format!("error: {e}"),
                report: None,
            },
        };
        let failed = !point.passed();
        let result = point.result.clone();
        sweep.points.push(point);
        if failed {
            let left = rates.len() - i - 1;
            sweep.stopped_early = Some(format!(
                "rate {rate} failed ({result}); {left} rate{} not run",
                if left == 1 { "" } else { "s" }
            ));
            break;
        }
        if interrupted.load(Relaxed) && i + 1 < rates.len() {
            sweep.stopped_early = Some(format!(
                "interrupted after rate {rate} ({} of {} runs made)",
                i + 1,
                rates.len()
            ));
            break;
        }
    }
    Ok(sweep)
}

/// Writes `sweep.json` and `sweep.svg` into `dir`; returns their paths.
pub fn write_outputs(dir: &Path, sweep: &Sweep) -> Result<(PathBuf, PathBuf), String> {
    let json = dir.join(SWEEP_JSON);
    std::fs::write(&json, sweep.to_json())
        .map_err(|e| format!("writing {}: {e}", json.display()))?;
    let svg = dir.join(SWEEP_SVG);
    std::fs::write(&svg, plot(&sweep.points))
        .map_err(|e| format!("writing {}: {e}", svg.display()))?;
    Ok((json, svg))
}

/// The sweep table, one row per run, a header first; ends with a newline. Figures of a run
/// without a report show as `-`.
pub fn table(points: &[SweepPoint]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "  {:>12}  {:>14}  {:>15}  {:>10}  {:>10}  {:>13}  {:>10}  {:>10}  result",
        "offered tx/s",
        "finalized tx/s",
        "finality p50 ms",
        "p99 ms",
        "cpu us/tx",
        "round changes",
        "rejected",
        "gen lag ms"
    );
    for p in points {
        let cells: [String; 7] = match &p.report {
            Some(r) => [
                number(r.tps, 1),
                number(r.finality_ms.p50, 1),
                number(r.finality_ms.p99, 1),
                r.cpu_us_per_tx.map_or("-".to_string(), |c| number(c, 1)),
                number(r.round_changes as f64, 0),
                number(r.rejected_total() as f64, 0),
                number(r.generator_behind_ms as f64, 0),
            ],
            None => std::array::from_fn(|_| "-".to_string()),
        };
        let _ = writeln!(
            out,
            "  {:>12}  {:>14}  {:>15}  {:>10}  {:>10}  {:>13}  {:>10}  {:>10}  {}",
            number(p.offered_rate as f64, 0),
            cells[0],
            cells[1],
            cells[2],
            cells[3],
            cells[4],
            cells[5],
            cells[6],
            p.result.replace(|c: char| c.is_control(), " ")
        );
    }
    out
}

/// `x` with `decimals` decimals and a comma every three digits; `n/a` when not finite.
fn number(x: f64, decimals: usize) -> String {
    svg::tick_label(x, 10f64.powi(-(decimals as i32))).replace("NaN", "n/a")
}

/// The sweep's plot (see the module doc): the runs with a report, in offered-rate order.
pub fn plot(points: &[SweepPoint]) -> String {
    let mut runs: Vec<(u64, &RunReport)> = points
        .iter()
        .filter_map(|p| p.report.as_ref().map(|r| (p.offered_rate, r)))
        .filter(|(_, r)| r.tps.is_finite())
        .collect();
    runs.sort_by_key(|(rate, _)| *rate);
    let highest = runs.iter().map(|(rate, _)| *rate).max().unwrap_or(0) as f64;
    let throughput = Chart {
        title: "Throughput against offered load".into(),
        x_label: "offered load (tx/s)".into(),
        y_label: "finalized (tx/s)".into(),
        series: vec![
            Series {
                name: "offered (y = x)".into(),
                color: "#999999".into(),
                dashed: true,
                markers: false,
                points: if runs.is_empty() {
                    Vec::new()
                } else {
                    vec![(0.0, 0.0), (highest, highest)]
                },
            },
            Series {
                name: "finalized".into(),
                color: "#1f77b4".into(),
                dashed: false,
                markers: true,
                points: runs.iter().map(|(rate, r)| (*rate as f64, r.tps)).collect(),
            },
        ],
    };
    let latency = Chart {
        title: "Finality latency against throughput".into(),
        x_label: "finalized (tx/s)".into(),
        y_label: "finality (ms)".into(),
        series: vec![
            Series {
                name: "p50".into(),
                color: "#2ca02c".into(),
                dashed: false,
                markers: true,
                points: runs
                    .iter()
                    .map(|(_, r)| (r.tps, r.finality_ms.p50))
                    .collect(),
            },
            Series {
                name: "p99".into(),
                color: "#d62728".into(),
                dashed: false,
                markers: true,
                points: runs
                    .iter()
                    .map(|(_, r)| (r.tps, r.finality_ms.p99))
                    .collect(),
            },
        ],
    };
    svg::render(&[throughput, latency])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::report::Percentiles;
    use crate::bench::svg::tests::{attribute_values, check_well_formed};
    use crate::bench::testnet::Workload;
    use std::time::Duration;

    fn options(dir: &Path) -> TestnetOptions {
        TestnetOptions {
            dir: dir.to_path_buf(),
            cns: 4,
            pns: 0,
            ens: 0,
            workload: Workload::Transfer,
            rate: 4_000,
            accounts: 1_000,
            tx_size: 512,
            duration: Duration::from_secs(10),
            block_period_ms: 500,
            base_port: 46_000,
            json: None,
            binary: PathBuf::from("corecell"),
            kill_at: None,
            placement: "spread".into(),
            rpc_index_mib: None,
        }
    }

    fn point(rate: u64, tps: f64, p50: f64, p99: f64, result: &str) -> SweepPoint {
        SweepPoint {
            offered_rate: rate,
            dir: PathBuf::from(format!("/tmp/s/01-rate-{rate}")),
            result: result.into(),
            report: Some(RunReport {
                tps,
                finality_ms: Percentiles {
                    p50,
                    p99,
                    max: p99 * 1.5,
                },
                cpu_us_per_tx: Some(312.46),
                round_changes: 3,
                rejected: [("nonce-too-high".to_string(), 1_234)]
                    .into_iter()
                    .collect(),
                generator_behind_ms: 7,
                ..RunReport::default()
            }),
        }
    }

    #[test]
    fn rates_parse_and_bad_lists_are_refused() {
        assert_eq!(
            parse_rates("10000,50000,100000"),
            Ok(vec![10_000, 50_000, 100_000])
        );
        assert_eq!(
            parse_rates(" 4000 , 2000,4000 "),
            Ok(vec![4_000, 2_000, 4_000])
        );
        assert_eq!(parse_rates("10_000"), Ok(vec![10_000]));
        assert!(parse_rates("")
            .expect_err("empty")
            .contains("at least one rate"));
        assert!(parse_rates("1000,,2000")
            .expect_err("hole")
            .contains("empty entry"));
        assert!(parse_rates("1000,0").expect_err("zero").contains("0 tx/s"));
        assert!(parse_rates("1000,fast")
            .expect_err("word")
            .contains("`fast`"));
        assert!(parse_rates("-5").is_err());
        let many = vec!["1"; MAX_SWEEP_RATES + 1].join(",");
        assert!(parse_rates(&many)
            .expect_err("too many")
            .contains("at most"));
    }

    #[test]
    fn a_sweep_is_checked_before_anything_runs() {
        let dir = tempfile::tempdir().expect("tempdir");
        let o = options(dir.path());
        assert_eq!(check(&o, &[2_000, 4_000]), Ok(()));
        assert!(check(&o, &[]).is_err());
        assert!(check(&o, &[2_000, 0])
            .expect_err("zero")
            .contains("rate number 2"));
        let idle = TestnetOptions {
            workload: Workload::None,
            ..o.clone()
        };
        assert!(check(&idle, &[2_000])
            .expect_err("none")
            .contains("not none"));
        // The highest rate's transfers do not fit the pre-signing bound.
        let err = check(&o, &[2_000, 1_000_000]).expect_err("too big");
        assert!(
            err.contains("--sweep rate 1000000") && err.contains("lower --rate"),
            "{err}"
        );
        std::fs::create_dir_all(run_dir(dir.path(), 1, 4_000)).expect("mkdir");
        let err = check(&o, &[2_000, 4_000]).expect_err("exists");
        assert!(err.contains("02-rate-4000 already exists"), "{err}");
        assert_eq!(
            run_dir(Path::new("/out"), 0, 2_000),
            PathBuf::from("/out/01-rate-2000")
        );
    }

    #[test]
    fn a_failing_rate_stops_the_sweep_and_an_interrupt_stops_it_before_the_next() {
        let dir = tempfile::tempdir().expect("tempdir");
        // The nodes cannot start: the first run fails, the other rates are not run.
        let o = TestnetOptions {
            cns: 1,
            workload: Workload::Raw,
            binary: dir.path().join("no-such-corecell"),
            ..options(&dir.path().join("sweep"))
        };
        let sweep = run(&o, &[1_000, 2_000, 3_000], Arc::new(AtomicBool::new(false)))
            .expect("the sweep itself runs");
        assert_eq!(sweep.points.len(), 1);
        assert!(
            sweep.points[0].result.starts_with("error: starting cn0"),
            "{}",
            sweep.points[0].result
        );
        assert!(sweep.points[0].report.is_none());
        let why = sweep.stopped_early.clone().expect("stopped early");
        assert!(
            why.contains("rate 1000 failed") && why.contains("2 rates not run"),
            "{why}"
        );
        assert!(table(&sweep.points).contains("error: starting cn0"));
        write_outputs(&o.dir, &sweep).expect("writes");
        assert!(o.dir.join(SWEEP_SVG).is_file() && o.dir.join(SWEEP_JSON).is_file());

        let o = TestnetOptions {
            dir: dir.path().join("interrupted"),
            ..o
        };
        let sweep = run(&o, &[1_000, 2_000], Arc::new(AtomicBool::new(true))).expect("runs");
        assert!(sweep.points.is_empty());
        assert!(sweep
            .stopped_early
            .expect("stopped")
            .contains("interrupted before rate 1000"));
    }

    #[test]
    fn the_table_has_a_row_per_run_in_aligned_columns() {
        let mut failed = point(9_000, f64::NAN, 0.0, 0.0, "no block was finalized");
        if let Some(r) = failed.report.as_mut() {
            r.cpu_us_per_tx = None;
        }
        let points = vec![
            point(2_000, 1_998.44, 410.25, 720.0, "ok"),
            point(40_000, 12_345.6, 1_500.0, 4_000.5, "ok"),
            failed,
            SweepPoint {
                offered_rate: 100_000,
                dir: PathBuf::from("/tmp/s/04-rate-100000"),
                result: "error: cn3 exited\nunder load".into(),
                report: None,
            },
        ];
        let t = table(&points);
        println!("{t}");
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 5);
        assert!(lines[0].contains("offered tx/s") && lines[0].ends_with("result"));
        assert!(lines[1].contains("  2,000  ") && lines[1].contains("1,998.4"));
        assert!(lines[1].contains("410.3") || lines[1].contains("410.2"));
        assert!(lines[1].contains("312.5") && lines[1].contains("1,234"));
        assert!(lines[1].ends_with("  ok"));
        assert!(lines[2].contains("40,000") && lines[2].contains("12,345.6"));
        assert!(lines[3].contains("n/a") && lines[3].ends_with("no block was finalized"));
        assert!(lines[4].contains("100,000") && lines[4].ends_with("error: cn3 exited under load"));
        // Columns line up: `result` starts at the same place on every line.
        let at = lines[0].find("result").expect("header");
        for l in &lines[1..] {
            assert_eq!(&l[at - 2..at], "  ", "{l}");
            assert_ne!(&l[at..at + 1], " ", "{l}");
        }
    }

    #[test]
    fn the_plot_maps_runs_to_both_panels() {
        let points = vec![
            point(4_000, 3_000.0, 800.0, 1_900.0, "ok"),
            point(2_000, 2_000.0, 400.0, 700.0, "ok"),
            SweepPoint {
                offered_rate: 8_000,
                dir: PathBuf::from("x"),
                result: "error: boom".into(),
                report: None,
            },
        ];
        let svg = plot(&points);
        check_well_formed(&svg).unwrap_or_else(|e| panic!("{e}\n{svg}"));
        for text in [
            "Throughput against offered load",
            "Finality latency against throughput",
            "offered load (tx/s)",
            "finalized (tx/s)",
            "finality (ms)",
            ">p50</text>",
            ">p99</text>",
            ">offered (y = x)</text>",
        ] {
            assert!(svg.contains(text), "{text}");
        }
        // 2 runs with a report: 2 dots for throughput, 2 + 2 for latency.
        let cx = attribute_values(&svg, "circle", "cx");
        let cy = attribute_values(&svg, "circle", "cy");
        assert_eq!(cx.len(), 6);
        // Left panel, in offered-rate order: x axis 0..4,000, y axis 0..4,000.
        let (left, right, top, bottom) = svg::plot_area(0);
        let first = (left + (right - left) * 0.5, bottom - (bottom - top) * 0.5);
        assert_eq!(cx[0], format!("{:.1}", first.0));
        assert_eq!(cy[0], format!("{:.1}", first.1));
        assert_eq!(cx[1], format!("{right:.1}"));
        // Right panel: x = finalized tx/s (0..3,000), y = ms (0..2,000): p99 of the 4,000 run.
        let (left, right, top, bottom) = svg::plot_area(1);
        assert_eq!(cx[5], format!("{right:.1}"));
        assert_eq!(
            cy[5],
            format!("{:.1}", bottom - (bottom - top) * 1_900.0 / 2_000.0)
        );
        assert_eq!(cx[2], format!("{:.1}", left + (right - left) * 2.0 / 3.0));
    }

    #[test]
    fn the_json_names_the_runs_and_why_the_sweep_stopped() {
        let sweep = Sweep {
            workload: "transfer".into(),
            cns: 4,
            duration_s: 8,
            rates: vec![2_000, 4_000, 8_000],
            points: vec![
                point(2_000, 1_990.0, 400.0, 700.0, "ok"),
                point(
                    4_000,
                    1.0,
                    0.0,
                    0.0,
                    "nodes disagree on the finalized chain",
                ),
            ],
            stopped_early: Some("rate 4000 failed".into()),
        };
        let v: serde_json::Value = serde_json::from_str(&sweep.to_json()).expect("JSON");
        assert_eq!(v["rates"], serde_json::json!([2_000, 4_000, 8_000]));
        assert_eq!(v["points"][0]["offered_rate"], 2_000);
        assert_eq!(v["points"][0]["report"]["tps"], 1_990.0);
        assert_eq!(
            v["points"][1]["result"],
            "nodes disagree on the finalized chain"
        );
        assert_eq!(v["stopped_early"], "rate 4000 failed");
        let dir = tempfile::tempdir().expect("tempdir");
        let (json, svg) = write_outputs(dir.path(), &sweep).expect("writes");
        assert!(json.ends_with(SWEEP_JSON) && svg.ends_with(SWEEP_SVG));
        let plot = std::fs::read_to_string(svg).expect("read");
        check_well_formed(&plot).unwrap_or_else(|e| panic!("{e}"));
    }
}
