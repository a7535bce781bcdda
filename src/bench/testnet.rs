//! `corecell testnet`: a local network of separate node processes on loopback, under load,
//! with a report.
//!
//! Workloads: `transfer` (the default: signed Ethereum transfers between the genesis test
//! accounts, all signed before the nodes start, see [`TransferPlan`]; the genesis executes
//! them), `raw` (opaque transactions, a consensus benchmark: the genesis does not execute
//! them) and `none` (an idle network).
//!
//! Steps: generate genesis and configs into the directory (`corecell genesis`'s generator,
//! with `--accounts` prefunded test accounts); for `transfer`, pre-sign the whole schedule;
//! start each CN as its own process (`corecell node --config ...`, output to `<node>/node.log`);
//! wait until every CN serves metrics and sees all its peers; write `endpoints.json`; drive
//! the workload for the duration, printing one status line per second; stop the load, stop
//! every node with SIGTERM and wait for it to exit; read every node's block log and check that
//! all nodes hold the same block hash at every height; print the summary (and write it as
//! JSON with `--json`). Exit status: non-zero when nodes disagree, no block was finalized, or
//! a node failed.
//!
//! Figures: finality latency is measured by the load generator from a batch's scheduled send
//! time to the arrival of the node's FINAL ack (the block holding the batch's last admitted
//! transaction is durable at the node it was sent to); refusals are counted by reason and pool
//! drops apart (both from the nodes' acks); block intervals come from the block headers'
//! timestamps of the blocks finalized under load; CPU is each node's own user+system time
//! (from its metrics), so `cpu_us_per_tx` carries to other machines.

use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::load::{Load, LoadSpec, LoadWorkload, TransferPlan, TransferSchedule};
use super::report::{LatencyHistogram, NodeReport, Percentiles, RunReport, StateCheck, StatusLine};
use crate::node::config::Role;
use crate::node::genesis::{ExecutionMode, GeneratedNetwork, Genesis, NetworkSpec, PlannedNode};
use crate::node::metrics::scrape;

/// How long nodes get to come up and connect.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a node gets to exit after SIGTERM before it is killed.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(15);

/// The workload of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workload {
    /// Pre-signed Ethereum transfers between the genesis test accounts, to the CNs' ingress
    /// ports (the default).
    Transfer,
    /// Opaque transactions to the CNs' ingress ports.
    Raw,
    /// No load: the network idles (a local dev chain when the duration is 0).
    None,
}

impl Workload {
    /// Parses `transfer`, `raw` or `none`.
    pub fn parse(text: &str) -> Result<Workload, String> {
        match text {
            "transfer" => Ok(Workload::Transfer),
            "raw" => Ok(Workload::Raw),
            "none" => Ok(Workload::None),
            other => Err(format!(
                "unknown workload `{other}`: choose `transfer`, `raw` or `none`"
            )),
        }
    }

    /// The name used on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Workload::Transfer => "transfer",
            Workload::Raw => "raw",
            Workload::None => "none",
        }
    }

    /// What the genesis says the chain's transactions are: opaque for `raw`, executed
    /// transfers otherwise.
    pub fn execution(self) -> ExecutionMode {
        match self {
            Workload::Raw => ExecutionMode::Raw,
            Workload::Transfer | Workload::None => ExecutionMode::Transfer,
        }
    }
}

/// A testnet run's options.
#[derive(Debug, Clone)]
pub struct TestnetOptions {
    /// Where to put everything (created; must not hold a genesis already).
    pub dir: PathBuf,
    /// Consensus nodes.
    pub cns: usize,
    /// Workload.
    pub workload: Workload,
    /// Offered transactions per second.
    pub rate: u64,
    /// Prefunded genesis test accounts; the `transfer` workload's senders.
    pub accounts: usize,
    /// Bytes per raw transaction.
    pub tx_size: usize,
    /// Load duration; 0 with workload `none` = run until Ctrl-C.
    pub duration: Duration,
    /// Target block period.
    pub block_period_ms: u64,
    /// First port.
    pub base_port: u16,
    /// Where to write the JSON report.
    pub json: Option<PathBuf>,
    /// The `corecell` binary to start nodes with.
    pub binary: PathBuf,
    /// Kill -9 the last CN this long into the load (fault figure: block gaps after it).
    pub kill_at: Option<Duration>,
    /// Shard placement written into every node's config: `spread` (the default: node `k`
    /// pins shard `i` to allowed CPU `(i + k) mod CPUs`, so the nodes' consensus shards do not
    /// all land on one CPU), `auto` (each node spreads its own shards from CPU 0 up) or
    /// `unbound`.
    pub placement: String,
}

struct NodeProcess {
    node: PlannedNode,
    child: Child,
    metrics: SocketAddr,
    /// Killed on purpose (`--kill-at`): not scraped, not stopped, its chain is a prefix.
    killed: bool,
}

/// Runs a testnet; returns the report (agreement is in it) or an error.
pub fn run(options: &TestnetOptions, interrupted: Arc<AtomicBool>) -> Result<RunReport, String> {
    let timestamp_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_err(|e| format!("system clock before 1970: {e}"))?
        .as_millis() as u64;
    let spec = NetworkSpec {
        cns: options.cns,
        pns: 0,
        ens: 0,
        host: "127.0.0.1".parse().map_err(|_| "loopback".to_string())?,
        base_port: options.base_port,
        committee_size: None,
        block_period_ms: options.block_period_ms,
        accounts: options.accounts,
        chain_id: crate::node::genesis::DEFAULT_CHAIN_ID,
        timestamp_ms,
        seed: None,
        execution: options.workload.execution(),
    };
    // The transfer plan is checked (size bound, sender rate) before anything is written.
    let plan = match options.workload {
        Workload::Transfer => {
            let plan = TransferPlan {
                accounts: options.accounts as u64,
                chain_id: spec.chain_id,
                targets: options.cns as u64,
                rate: options.rate,
                duration: options.duration,
            };
            plan.check()?;
            if let Some(warning) = plan.sender_rate_warning() {
                println!("testnet: warning: {warning}");
            }
            Some(plan)
        }
        Workload::Raw | Workload::None => None,
    };
    let network = spec.generate(&options.dir)?;
    if options.placement != "auto" {
        set_placement(&network, &options.placement)?;
    }
    let genesis = Genesis::load(&network.genesis_path).map_err(|e| e.to_string())?;
    match options.workload {
        Workload::Transfer => println!(
            "testnet: {} CNs in {} (block period {} ms, workload transfer, {} tx/s from {} accounts, {} s)",
            options.cns,
            options.dir.display(),
            options.block_period_ms,
            options.rate,
            options.accounts,
            options.duration.as_secs()
        ),
        Workload::Raw => println!(
            "testnet: {} CNs in {} (block period {} ms, workload raw, {} tx/s of {} bytes, {} s)",
            options.cns,
            options.dir.display(),
            options.block_period_ms,
            options.rate,
            options.tx_size,
            options.duration.as_secs()
        ),
        Workload::None => println!(
            "testnet: {} CNs in {} (block period {} ms, no load)",
            options.cns,
            options.dir.display(),
            options.block_period_ms
        ),
    }
    // Sign before the nodes start: signing uses every core, and the nodes' startup timeout
    // should not include it.
    let transfers = match plan {
        Some(plan) => Some(sign_transfers(&plan, &network, &genesis)?),
        None => None,
    };
    let mean_tx_bytes = transfers
        .as_ref()
        .map_or(options.tx_size, TransferSchedule::mean_tx_bytes);
    let mut nodes = start_nodes(options, &network)?;
    let mut killed_at = None;
    let result = drive(
        options,
        &network,
        transfers,
        &mut nodes,
        &interrupted,
        &mut killed_at,
    );
    let stopped = stop_nodes(&mut nodes);
    let mut report = result?;
    stopped?;
    report.tx_size = mean_tx_bytes;
    // Agreement, blocks and intervals from the block logs.
    let genesis_header = genesis.header();
    let mut chains = Vec::new();
    for n in &nodes {
        let dir = n
            .node
            .config_path
            .parent()
            .unwrap_or(Path::new("."))
            .join("data");
        let headers = crate::store::finalized_headers(&dir, &genesis_header)
            .map_err(|e| format!("{}: {e}", n.node.name))?;
        chains.push(headers.iter().map(|h| h.hash()).collect::<Vec<_>>());
    }
    let longest = chains.iter().map(|c| c.len()).max().unwrap_or(0);
    let mut agree = true;
    for h in 0..longest {
        let mut seen = chains.iter().filter_map(|c| c.get(h));
        if let Some(first) = seen.next() {
            if seen.any(|x| x != first) {
                agree = false;
                eprintln!("DISAGREEMENT at height {}", h + 1);
            }
        }
    }
    report.agree = agree;
    for (n, chain) in report.nodes.iter_mut().zip(&chains) {
        n.height = chain.len() as u64;
    }
    let first_dir = nodes
        .first()
        .and_then(|n| n.node.config_path.parent().map(|p| p.join("data")))
        .ok_or("no node")?;
    if genesis.execution == ExecutionMode::Transfer {
        report.state = Some(check_state(&nodes[0].node.name, &first_dir, &genesis));
    }
    let intervals = block_intervals(&first_dir, &genesis_header, report.duration_s)?;
    report.block_interval_ms = intervals;
    if let Some(at) = killed_at {
        let headers = crate::store::finalized_headers(&first_dir, &genesis_header)
            .map_err(|e| e.to_string())?;
        let gaps: Vec<u64> = headers
            .windows(2)
            .filter(|p| p[1].timestamp_ms >= at)
            .map(|p| p[1].timestamp_ms.saturating_sub(p[0].timestamp_ms.max(at)))
            .collect();
        let rounds: Vec<u32> = headers
            .iter()
            .filter(|h| h.timestamp_ms >= at)
            .map(|h| h.round)
            .collect();
        println!(
            "after the kill: {} blocks, {} of them decided in a round above 0; largest gap between consecutive blocks {} ms",
            gaps.len(),
            rounds.iter().filter(|r| **r > 0).count(),
            gaps.iter().max().copied().unwrap_or(0)
        );
    }
    Ok(report)
}

/// The final state check (see [`StateCheck`]) of the node whose data directory is `data`.
fn check_state(name: &str, data: &Path, genesis: &Genesis) -> StateCheck {
    let started = Instant::now();
    println!("checking the state: replaying {name}'s block log from the genesis");
    let mut check = StateCheck {
        node: name.to_string(),
        ..StateCheck::default()
    };
    let audit = crate::store::recover(data, &genesis.header())
        .map_err(|e| e.to_string())
        .and_then(|recovered| {
            crate::exec::snapshot::audit_state(
                data,
                genesis,
                &recovered.head,
                &recovered.index,
                crate::exec::snapshot::ReplayStart::Genesis,
            )
        });
    match audit {
        Ok(mut audit) => {
            check.height = audit.state.height();
            check.state_root = format!("0x{}", hex::encode(audit.state.root()));
            check.accounts = audit.state.len() as u64;
            check.burned_wei = audit.state.burned().to_string();
            check.roots_reproduced = audit.root_matches_head;
            check.supply_conserved = audit.supply_conserved;
        }
        Err(e) => check.error = Some(e),
    }
    check.replay_s = started.elapsed().as_secs_f64();
    check
}

/// Signs the `transfer` workload's plan after checking it against the generated network: its
/// chain id, its ingress targets, its test accounts.
fn sign_transfers(
    plan: &TransferPlan,
    network: &GeneratedNetwork,
    genesis: &Genesis,
) -> Result<TransferSchedule, String> {
    let targets = network.nodes.iter().filter(|n| n.ingress.is_some()).count() as u64;
    if genesis.chain_id != plan.chain_id
        || targets != plan.targets
        || (genesis.accounts.len() as u64) < plan.accounts
    {
        return Err(format!(
            "the generated network (chain {}, {targets} ingress ports, {} accounts) does not \
             match the transfer plan (chain {}, {} targets, {} accounts)",
            genesis.chain_id,
            genesis.accounts.len(),
            plan.chain_id,
            plan.targets,
            plan.accounts
        ));
    }
    plan.sign(true)
}

/// Rewrites the `[runtime] placement` of every generated CN config (the generator writes
/// `auto`); each node loads and validates it again at start.
fn set_placement(network: &GeneratedNetwork, placement: &str) -> Result<(), String> {
    use crate::node::config::PlacementSection;
    if !matches!(placement, "auto" | "unbound" | "spread") {
        return Err(format!(
            "--placement must be `spread`, `auto` or `unbound`, not `{placement}`"
        ));
    }
    let cpus = crate::runtime::allowed_cpus();
    let shards = Role::Cn.shards();
    for (k, node) in network
        .nodes
        .iter()
        .filter(|n| n.role == Role::Cn)
        .enumerate()
    {
        let path = &node.config_path;
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("reading {}: {e}", path.display()))?;
        let mut file: crate::node::config::ConfigFile =
            toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        file.runtime.placement = if placement == "spread" && !cpus.is_empty() {
            PlacementSection::Table(
                shards
                    .iter()
                    .enumerate()
                    .map(|(i, shard)| (shard.name().to_string(), cpus[(i + k) % cpus.len()]))
                    .collect(),
            )
        } else {
            PlacementSection::Mode(placement.into())
        };
        let body = toml::to_string(&file).map_err(|e| format!("{}: {e}", path.display()))?;
        std::fs::write(path, body).map_err(|e| format!("writing {}: {e}", path.display()))?;
    }
    Ok(())
}

fn start_nodes(
    options: &TestnetOptions,
    network: &GeneratedNetwork,
) -> Result<Vec<NodeProcess>, String> {
    let mut nodes = Vec::new();
    for node in network.nodes.iter().filter(|n| n.role == Role::Cn) {
        let dir = node.config_path.parent().unwrap_or(Path::new("."));
        let log = std::fs::File::create(dir.join("node.log"))
            .map_err(|e| format!("creating {}: {e}", dir.join("node.log").display()))?;
        let log2 = log.try_clone().map_err(|e| e.to_string())?;
        // Own process group: a Ctrl-C in the terminal reaches the testnet only, which then
        // stops every node with SIGTERM and still checks and reports. If the testnet itself
        // dies (kill -9), the kernel sends each node SIGTERM (PR_SET_PDEATHSIG), so no node
        // outlives it.
        let mut command = Command::new(&options.binary);
        command.process_group(0);
        // SAFETY: the hook runs in the forked child before exec and only calls prctl(2), which
        // is async-signal-safe.
        unsafe {
            command.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = command
            .arg("node")
            .arg("--config")
            .arg(&node.config_path)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .map_err(|e| format!("starting {}: {e}", node.name))?;
        nodes.push(NodeProcess {
            node: node.clone(),
            child,
            metrics: node.metrics,
            killed: false,
        });
    }
    Ok(nodes)
}

fn metric(samples: &[(String, f64)], name: &str) -> f64 {
    samples
        .iter()
        .find(|(n, _)| n == name)
        .map_or(0.0, |(_, v)| *v)
}

fn drive(
    options: &TestnetOptions,
    network: &GeneratedNetwork,
    transfers: Option<TransferSchedule>,
    nodes: &mut [NodeProcess],
    interrupted: &AtomicBool,
    killed_at: &mut Option<u64>,
) -> Result<RunReport, String> {
    // Wait for every node to serve metrics and see all its peers.
    let started = Instant::now();
    let want_peers = (options.cns - 1) as f64;
    loop {
        let mut ready = 0;
        for n in nodes.iter_mut() {
            if let Ok(Some(status)) = n.child.try_wait() {
                return Err(format!(
                    "{} exited during startup ({status}); see {}",
                    n.node.name,
                    n.node.config_path.with_file_name("node.log").display()
                ));
            }
            if let Ok(s) = scrape(n.metrics, Duration::from_millis(500)) {
                if metric(&s, "corecell_peers") >= want_peers {
                    ready += 1;
                }
            }
        }
        if ready == nodes.len() {
            break;
        }
        if started.elapsed() > STARTUP_TIMEOUT || interrupted.load(Relaxed) {
            return Err(format!(
                "only {ready} of {} nodes were up and connected after {} s",
                nodes.len(),
                STARTUP_TIMEOUT.as_secs()
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    println!(
        "testnet: {} nodes up and meshed in {:.1} s",
        nodes.len(),
        started.elapsed().as_secs_f64()
    );
    write_endpoints(&options.dir, network)?;
    let targets: Vec<SocketAddr> = network.nodes.iter().filter_map(|n| n.ingress).collect();
    let workload = match (options.workload, transfers) {
        (Workload::Raw, _) => Some(LoadWorkload::Raw {
            rate: options.rate,
            tx_size: options.tx_size,
        }),
        (Workload::Transfer, Some(schedule)) => Some(LoadWorkload::Transfer(schedule)),
        (Workload::Transfer, None) => return Err("the transfers were not signed".into()),
        (Workload::None, _) => None,
    };
    let load = match workload {
        Some(workload) => Some(Load::start(LoadSpec { targets, workload })?),
        None => None,
    };
    let forever = options.duration.is_zero() && options.workload == Workload::None;
    if forever {
        println!(
            "testnet: running until Ctrl-C; endpoints in {}, accounts in {}",
            options.dir.join("endpoints.json").display(),
            network.accounts_path.display()
        );
    }
    let load_start = Instant::now();
    let mut last = (Instant::now(), 0u64, 0u64);
    let mut start_txs = None;
    let mut round_changes = 0u64;
    let mut samples: Vec<Vec<(String, f64)>> = vec![Vec::new(); nodes.len()];
    let mut killed_at_ms = None;
    while forever || load_start.elapsed() < options.duration {
        if interrupted.load(Relaxed) {
            println!("testnet: interrupted; stopping");
            break;
        }
        if let (Some(at), None) = (options.kill_at, killed_at_ms) {
            if load_start.elapsed() >= at {
                if let Some(victim) = nodes.last_mut() {
                    let _ = victim.child.kill();
                    let _ = victim.child.wait();
                    victim.killed = true;
                    killed_at_ms = Some(
                        SystemTime::now()
                            .duration_since(UNIX_EPOCH)
                            .map_or(0, |d| d.as_millis() as u64),
                    );
                    println!("testnet: killed {} (SIGKILL)", victim.node.name);
                }
            }
        }
        std::thread::sleep(Duration::from_secs(1).saturating_sub(last.0.elapsed()));
        for (i, n) in nodes.iter_mut().enumerate() {
            if n.killed {
                continue;
            }
            if let Ok(Some(status)) = n.child.try_wait() {
                return Err(format!("{} exited under load ({status})", n.node.name));
            }
            if let Ok(s) = scrape(n.metrics, Duration::from_millis(500)) {
                samples[i] = s;
            }
        }
        let height = samples
            .iter()
            .map(|s| metric(s, "corecell_height") as u64)
            .max()
            .unwrap_or(0);
        round_changes = samples
            .iter()
            .map(|s| metric(s, "corecell_round_changes_total") as u64)
            .max()
            .unwrap_or(0);
        let (finalized, rejected, dropped, window) = match &load {
            Some(l) => (
                l.stats.finalized.load(Relaxed),
                l.stats.rejected_total(),
                l.stats.dropped.load(Relaxed),
                l.stats.take_window(),
            ),
            None => (0, 0, 0, LatencyHistogram::new()),
        };
        start_txs.get_or_insert(0);
        let dt = last.0.elapsed().as_secs_f64();
        let tps = finalized.saturating_sub(last.1) as f64 / dt.max(1e-3);
        let interval = if height > last.2 {
            dt * 1000.0 / (height - last.2) as f64
        } else {
            0.0
        };
        let w = Percentiles::from_histogram(&window);
        println!(
            "{}",
            StatusLine {
                elapsed_s: load_start.elapsed().as_secs_f64(),
                height,
                tps,
                block_interval_ms_p50: interval,
                finality_ms_p50: w.p50,
                finality_ms_p99: w.p99,
                round_changes,
                rejected,
                dropped,
            }
            .render()
        );
        last = (Instant::now(), finalized, height);
    }
    let duration_s = load_start.elapsed().as_secs_f64();
    let stats = load.map(|l| l.stop());
    // Final scrape for CPU and memory.
    for (i, n) in nodes.iter().enumerate().filter(|(_, n)| !n.killed) {
        if let Ok(s) = scrape(n.metrics, Duration::from_millis(500)) {
            samples[i] = s;
        }
    }
    let node_reports: Vec<NodeReport> = nodes
        .iter()
        .zip(&samples)
        .map(|(n, s)| NodeReport {
            name: n.node.name.clone(),
            role: n.node.role,
            height: metric(s, "corecell_height") as u64,
            round_changes: metric(s, "corecell_round_changes_total") as u64,
            cpu_seconds: metric(s, "corecell_process_cpu_seconds"),
            max_rss_mib: metric(s, "corecell_process_max_rss_bytes") / (1024.0 * 1024.0),
            signature_recoveries: metric(s, "corecell_signature_recoveries_total") as u64,
            block_txs_pooled: metric(s, "corecell_block_txs_pooled_total") as u64,
            block_txs_recovered: metric(s, "corecell_block_txs_recovered_total") as u64,
        })
        .collect();
    let (submitted, finalized, rejected, dropped, finality, behind, errors) = match &stats {
        Some(s) => (
            s.submitted.load(Relaxed),
            s.finalized.load(Relaxed),
            s.rejected_by_reason(),
            s.dropped.load(Relaxed),
            s.latency.lock().map(|h| h.clone()).unwrap_or_default(),
            s.behind_ms.load(Relaxed),
            s.errors.lock().map(|e| e.clone()).unwrap_or_default(),
        ),
        None => (
            0,
            0,
            Default::default(),
            0,
            LatencyHistogram::new(),
            0,
            Vec::new(),
        ),
    };
    for e in &errors {
        eprintln!("load: {e}");
    }
    if let Some(s) = &stats {
        let more = s.errors_not_kept.load(Relaxed);
        if more > 0 {
            eprintln!("load: {more} more errors not shown");
        }
    }
    if behind > 100 {
        eprintln!("load: the generator fell behind its schedule by up to {behind} ms (the machine is saturated; latency includes it)");
    }
    let cpu: f64 = node_reports.iter().map(|n| n.cpu_seconds).sum();
    *killed_at = killed_at_ms;
    Ok(RunReport {
        workload: options.workload.name().into(),
        cns: options.cns,
        pns: 0,
        ens: 0,
        duration_s,
        blocks: nodes
            .iter()
            .zip(&node_reports)
            .filter(|(n, _)| !n.killed)
            .map(|(_, r)| r.height)
            .min()
            .unwrap_or(0),
        finalized_txs: finalized,
        tps: finalized as f64 / duration_s.max(1e-3),
        block_interval_ms: Percentiles::default(),
        finality_ms: Percentiles::from_histogram(&finality),
        round_changes,
        agree: false,
        offered_rate: match options.workload {
            Workload::Transfer | Workload::Raw => options.rate,
            Workload::None => 0,
        },
        submitted,
        rejected,
        dropped,
        tx_size: options.tx_size,
        block_period_ms: options.block_period_ms,
        cpu_us_per_tx: (finalized > 0).then(|| cpu * 1e6 / finalized as f64),
        state: None,
        nodes: node_reports,
    })
}

/// Percentiles of the intervals between consecutive blocks' header timestamps, over the last
/// `window_s` seconds of the chain.
fn block_intervals(
    data_dir: &Path,
    genesis: &crate::types::BlockHeader,
    window_s: f64,
) -> Result<Percentiles, String> {
    let headers = crate::store::finalized_headers(data_dir, genesis).map_err(|e| e.to_string())?;
    let Some(last) = headers.last() else {
        return Ok(Percentiles::default());
    };
    let since = last.timestamp_ms.saturating_sub((window_s * 1000.0) as u64);
    let mut h = LatencyHistogram::new();
    for pair in headers.windows(2) {
        if pair[0].timestamp_ms >= since {
            h.record(pair[1].timestamp_ms.saturating_sub(pair[0].timestamp_ms) * 1000);
        }
    }
    Ok(Percentiles::from_histogram(&h))
}

fn stop_nodes(nodes: &mut [NodeProcess]) -> Result<(), String> {
    for n in nodes.iter().filter(|n| !n.killed) {
        // SAFETY: kill(2) with a pid we spawned and still own (not yet reaped).
        unsafe {
            libc::kill(n.child.id() as i32, libc::SIGTERM);
        }
    }
    let deadline = Instant::now() + STOP_TIMEOUT;
    let mut problems = Vec::new();
    for n in nodes.iter_mut().filter(|n| !n.killed) {
        loop {
            match n.child.try_wait() {
                Ok(Some(status)) if status.success() => break,
                Ok(Some(status)) => {
                    problems.push(format!("{} exited with {status}", n.node.name));
                    break;
                }
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                _ => {
                    let _ = n.child.kill();
                    let _ = n.child.wait();
                    problems.push(format!(
                        "{} did not stop within {} s of SIGTERM and was killed",
                        n.node.name,
                        STOP_TIMEOUT.as_secs()
                    ));
                    break;
                }
            }
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}

fn write_endpoints(dir: &Path, network: &GeneratedNetwork) -> Result<(), String> {
    let nodes: Vec<serde_json::Value> = network
        .nodes
        .iter()
        .filter(|n| n.role == Role::Cn)
        .map(|n| {
            serde_json::json!({
                "name": n.name,
                "role": n.role.name(),
                "p2p": n.p2p.to_string(),
                "ingress": n.ingress.map(|a| a.to_string()),
                "metrics": n.metrics.to_string(),
                "rpc": n.rpc.map(|a| a.to_string()),
                "config": n.config_path.display().to_string(),
            })
        })
        .collect();
    let text = serde_json::to_string_pretty(&serde_json::json!({
        "genesis": network.genesis_path.display().to_string(),
        "accounts": network.accounts_path.display().to_string(),
        "nodes": nodes,
    }))
    .map_err(|e| e.to_string())?;
    let path = dir.join("endpoints.json");
    std::fs::write(&path, text).map_err(|e| format!("writing {}: {e}", path.display()))
}
