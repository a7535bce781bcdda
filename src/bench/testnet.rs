//! `corecell testnet`: a local network of separate node processes on loopback, under load,
//! with a report.
//!
//! Workloads: `transfer` (the default: signed Ethereum transfers between the genesis test
//! accounts, all signed before the nodes start, see [`TransferPlan`]; the genesis executes
//! them), `raw` (opaque transactions, a consensus benchmark: the genesis does not execute
//! them) and `none` (an idle network).
//!
//! The network is `--cns` CNs, `--pns` PNs and `--ens` ENs (default 4 + 2 + 2) with a PN
//! bootnode and an EN bootnode. With ENs the load enters only at the ENs' native ingress ports,
//! so transactions travel EN -> PN -> CN and blocks CN -> PN -> EN; without ENs it enters at
//! the CNs'.
//!
//! Steps: generate genesis and configs into the directory (`corecell genesis`'s generator,
//! with `--accounts` prefunded test accounts); for `transfer`, pre-sign the whole schedule;
//! start each node as its own process (`corecell node --config ...`, output to
//! `<node>/node.log`), bootnodes first; wait until every node serves metrics and sees the peers
//! its role needs (a CN the other CNs, a PN its CN and the other PNs, an EN every PN); write
//! `endpoints.json`; drive
//! the workload for the duration, printing one status line per second; stop the load, stop
//! every node with SIGTERM and wait for it to exit; read every node's block log and check that
//! all nodes hold the same block hash at every height; print the summary (and write it as
//! JSON with `--json`). Exit status: non-zero when nodes disagree, no block was finalized, or
//! a node failed.
//!
//! Figures: finality latency is measured by the load generator from a batch's scheduled send
//! time to the arrival of the node's FINAL ack (the block holding the batch's last admitted
//! transaction is durable at the node it was sent to: with ENs, from submission at the EN to
//! final at that EN); the EN lag is how long after the first CN each EN held each block
//! (heights sampled from metrics every [`LAG_SAMPLE_MS`] ms); refusals are counted by reason and pool
//! drops apart (both from the nodes' acks); block intervals come from the block headers'
//! timestamps of the blocks finalized under load; CPU is each node's own user+system time
//! (from its metrics), so `cpu_us_per_tx` carries to other machines. The load and the status
//! lines run in the loop `corecell bench` uses too ([`drive`](super::drive)), which shows the
//! generator's lag behind its schedule on every line and in the summary.
//!
//! [`check`] validates the options without touching anything (`--sweep` checks every rate
//! with it first); [`verdict`] says whether a finished run passed.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::drive::{NodeSample, RunLength};
use super::load::{Load, LoadSpec, LoadWorkload, TransferPlan, TransferSchedule};
use super::report::{
    shard_metric, LatencyHistogram, NodeReport, Percentiles, ResourceTrend, RunReport, StateCheck,
    CN_SHARDS, LAG_SAMPLE_MS,
};
use crate::config::genesis::{ExecutionMode, GeneratedNetwork, Genesis, NetworkSpec, PlannedNode};
use crate::config::node::Role;
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
    /// Proxy nodes.
    pub pns: usize,
    /// Endpoint nodes (the load enters at theirs when there are any).
    pub ens: usize,
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
    /// The ENs' `[rpc] index_mib` (recent blocks kept for JSON-RPC); `None`: the default.
    pub rpc_index_mib: Option<u64>,
}

struct NodeProcess {
    node: PlannedNode,
    child: Child,
    metrics: SocketAddr,
    /// Killed on purpose (`--kill-at`): not scraped, not stopped, its chain is a prefix.
    killed: bool,
}

/// The `transfer` workload's plan for `options` (`None` for the other workloads): the first
/// `accounts` test accounts of a fresh genesis, nonces from 0, one target per CN.
fn transfer_plan(options: &TestnetOptions) -> Option<TransferPlan> {
    (options.workload == Workload::Transfer).then_some(TransferPlan {
        accounts: options.accounts as u64,
        first_account: 0,
        nonce_start: 0,
        chain_id: crate::config::genesis::DEFAULT_CHAIN_ID,
        targets: load_tier_size(options) as u64,
        rate: options.rate,
        duration: options.duration,
    })
}

/// The nodes the load enters at: the ENs, or the CNs when there are no ENs.
fn load_tier_size(options: &TestnetOptions) -> usize {
    if options.ens > 0 {
        options.ens
    } else {
        options.cns
    }
}

/// The role the load enters at.
fn load_tier(options: &TestnetOptions) -> Role {
    if options.ens > 0 {
        Role::En
    } else {
        Role::Cn
    }
}

/// Checks a run's options without touching anything: the council size, a rate and duration
/// for a load, test accounts and a transfer plan within the pre-signing bound, the placement.
pub fn check(options: &TestnetOptions) -> Result<(), String> {
    if !(1..=crate::types::MAX_COUNCIL_SIZE).contains(&options.cns) {
        return Err(format!(
            "--cns {} is outside 1..={}",
            options.cns,
            crate::types::MAX_COUNCIL_SIZE
        ));
    }
    if options.ens > 0 && options.pns == 0 {
        return Err("ENs connect only to PNs: --ens needs --pns of at least 1".into());
    }
    if options.pns > 64 || options.ens > 64 {
        return Err("a local testnet runs at most 64 PNs and 64 ENs".into());
    }
    if options.workload != Workload::None && (options.rate == 0 || options.duration.is_zero()) {
        return Err(format!(
            "--workload {} needs --rate and --duration above 0",
            options.workload.name()
        ));
    }
    if options.workload == Workload::Transfer && options.accounts == 0 {
        return Err("--workload transfer needs --accounts of at least 1".into());
    }
    if !matches!(options.placement.as_str(), "auto" | "unbound" | "spread") {
        return Err(format!(
            "--placement must be `spread`, `auto` or `unbound`, not `{}`",
            options.placement
        ));
    }
    match transfer_plan(options) {
        Some(plan) => plan.check(),
        None => Ok(()),
    }
}

/// "4 CNs + 2 PNs + 2 ENs".
fn network_name(options: &TestnetOptions) -> String {
    let mut parts = vec![format!("{} CNs", options.cns)];
    if options.pns > 0 {
        parts.push(format!("{} PNs", options.pns));
    }
    if options.ens > 0 {
        parts.push(format!("{} ENs", options.ens));
    }
    parts.join(" + ")
}

/// Runs a testnet; returns the report (agreement is in it) or an error.
pub fn run(options: &TestnetOptions, interrupted: Arc<AtomicBool>) -> Result<RunReport, String> {
    let timestamp_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_err(|e| format!("system clock before 1970: {e}"))?
        .as_millis() as u64;
    let spec = NetworkSpec {
        cns: options.cns,
        pns: options.pns,
        ens: options.ens,
        host: "127.0.0.1".parse().map_err(|_| "loopback".to_string())?,
        base_port: options.base_port,
        committee_size: None,
        block_period_ms: options.block_period_ms,
        accounts: options.accounts,
        chain_id: crate::config::genesis::DEFAULT_CHAIN_ID,
        timestamp_ms,
        seed: None,
        execution: options.workload.execution(),
    };
    // The options and the transfer plan (size bound) are checked before anything is written.
    check(options)?;
    let plan = transfer_plan(options);
    if let Some(warning) = plan.as_ref().and_then(TransferPlan::sender_rate_warning) {
        println!("testnet: warning: {warning}");
    }
    let network = spec.generate(&options.dir)?;
    if options.placement != "auto" {
        set_placement(&network, &options.placement)?;
    }
    if let Some(mib) = options.rpc_index_mib {
        set_rpc_index(&network, mib)?;
    }
    let genesis = Genesis::load(&network.genesis_path, crate::exec::genesis_state_root)
        .map_err(|e| e.to_string())?;
    match options.workload {
        Workload::Transfer => println!(
            "testnet: {} in {} (block period {} ms, workload transfer, {} tx/s from {} accounts, {} s)",
            network_name(options),
            options.dir.display(),
            options.block_period_ms,
            options.rate,
            options.accounts,
            options.duration.as_secs()
        ),
        Workload::Raw => println!(
            "testnet: {} in {} (block period {} ms, workload raw, {} tx/s of {} bytes, {} s)",
            network_name(options),
            options.dir.display(),
            options.block_period_ms,
            options.rate,
            options.tx_size,
            options.duration.as_secs()
        ),
        Workload::None => println!(
            "testnet: {} in {} (block period {} ms, no load)",
            network_name(options),
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
    for n in nodes.iter().filter(|n| n.node.role != Role::Bootnode) {
        let dir = n
            .node
            .config_path
            .parent()
            .unwrap_or(Path::new("."))
            .join("data");
        // Whole blocks: a node holding a certified header with other transactions disagrees.
        let digests = crate::store::finalized_block_digests(&dir, &genesis_header)
            .map_err(|e| format!("{}: {e}", n.node.name))?;
        chains.push(digests);
    }
    let longest = chains.iter().map(|c| c.len()).max().unwrap_or(0);
    let mut agree = true;
    for h in 0..longest {
        let mut seen = chains.iter().filter_map(|c| c.get(h));
        if let Some(first) = seen.next() {
            if let Some(other) = seen.find(|x| *x != first) {
                agree = false;
                let what = if other.header_hash != first.header_hash {
                    "headers"
                } else {
                    "transactions under one certified header"
                };
                eprintln!("DISAGREEMENT at height {}: different {what}", h + 1);
            }
        }
    }
    report.agree = agree;
    for (n, chain) in report
        .nodes
        .iter_mut()
        .filter(|n| n.role != Role::Bootnode)
        .zip(&chains)
    {
        n.height = chain.len() as u64;
    }
    let first_cn = nodes
        .iter()
        .find(|n| n.node.role == Role::Cn)
        .ok_or("no CN")?;
    let first_dir = first_cn
        .node
        .config_path
        .parent()
        .map(|p| p.join("data"))
        .ok_or("no CN folder")?;
    if genesis.execution == ExecutionMode::Transfer {
        report.state = Some(check_state(&first_cn.node.name, &first_dir, &genesis));
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

/// Whether a finished run passed: the nodes agree, at least one block was finalized and the
/// final state check (when made) passed; the error says what failed.
pub fn verdict(report: &RunReport) -> Result<(), String> {
    if !report.agree {
        return Err("nodes disagree on the finalized chain".into());
    }
    if report.blocks == 0 {
        return Err("no block was finalized".into());
    }
    if let Some(state) = report.state.as_ref().filter(|s| !s.passed()) {
        return Err(format!(
            "the final state check failed: {}",
            state
                .error
                .clone()
                .unwrap_or_else(|| "state roots or supply do not add up".into())
        ));
    }
    Ok(())
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

/// Rewrites the `[runtime] placement` of every generated node config (the generator writes
/// `auto`); each node loads and validates it again at start.
fn set_placement(network: &GeneratedNetwork, placement: &str) -> Result<(), String> {
    use crate::config::node::PlacementSection;
    if !matches!(placement, "auto" | "unbound" | "spread") {
        return Err(format!(
            "--placement must be `spread`, `auto` or `unbound`, not `{placement}`"
        ));
    }
    let cpus = crate::runtime::allowed_cpus();
    for (k, node) in network.nodes.iter().enumerate() {
        let shards = node.role.shards();
        let path = &node.config_path;
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("reading {}: {e}", path.display()))?;
        let mut file: crate::config::node::ConfigFile =
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

/// Rewrites the `[rpc] index_mib` of every generated EN config.
fn set_rpc_index(network: &GeneratedNetwork, mib: u64) -> Result<(), String> {
    for node in network.nodes.iter().filter(|n| n.role == Role::En) {
        let path = &node.config_path;
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("reading {}: {e}", path.display()))?;
        let mut file: crate::config::node::ConfigFile =
            toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        if let Some(rpc) = file.rpc.as_mut() {
            rpc.index_mib = mib;
        }
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
    // Bootnodes first, so the nodes that ask them find them up.
    let order = network
        .nodes
        .iter()
        .filter(|n| n.role == Role::Bootnode)
        .chain(network.nodes.iter().filter(|n| n.role != Role::Bootnode));
    for node in order {
        match start_node(options, node) {
            Ok(started) => nodes.push(started),
            Err(e) => {
                // The nodes already started would outlive a failed run (a sweep goes on).
                let _ = stop_nodes(&mut nodes);
                return Err(e);
            }
        }
    }
    Ok(nodes)
}

/// Starts one node process (see [`start_nodes`]).
fn start_node(options: &TestnetOptions, node: &PlannedNode) -> Result<NodeProcess, String> {
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
    Ok(NodeProcess {
        node: node.clone(),
        child,
        metrics: node.metrics,
        killed: false,
    })
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
    // What each role must see connected before the load starts.
    let ready_when = |role: Role, s: &[(String, f64)]| match role {
        Role::Cn => metric(s, "corecell_peers_cn") >= (options.cns - 1) as f64,
        Role::Pn => {
            metric(s, "corecell_peers_cn") >= 1.0
                && metric(s, "corecell_peers_pn") >= (options.pns - 1) as f64
        }
        Role::En => metric(s, "corecell_peers_pn") >= options.pns as f64,
        Role::Bootnode => true,
    };
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
                if ready_when(n.node.role, &s) {
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
    let tier = load_tier(options);
    let targets: Vec<SocketAddr> = network
        .nodes
        .iter()
        .filter(|n| n.role == tier)
        .filter_map(|n| n.ingress)
        .collect();
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
        Some(workload) => Some(Load::start(LoadSpec {
            targets: targets.clone(),
            workload,
        })?),
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
    let length = if forever {
        RunLength::UntilInterrupted
    } else {
        RunLength::For(options.duration)
    };
    let nodes_metrics: Vec<(Role, SocketAddr)> =
        nodes.iter().map(|n| (n.node.role, n.metrics)).collect();
    let mut samples: Vec<Vec<(String, f64)>> = vec![Vec::new(); nodes.len()];
    // Per node: (seconds into the load, resident MiB, open files), once a second.
    let mut resources: Vec<Vec<(f64, f64, u64)>> = vec![Vec::new(); nodes.len()];
    let mut queue_peaks: Vec<BTreeMap<String, u64>> = vec![BTreeMap::new(); nodes.len()];
    let mut killed_at_ms = None;
    let observe = |elapsed: Duration| -> Result<NodeSample, String> {
        if let (Some(at), None) = (options.kill_at, killed_at_ms) {
            if elapsed >= at {
                if let Some(victim) = nodes.iter_mut().rev().find(|n| n.node.role == Role::Cn) {
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
        for (i, n) in nodes.iter_mut().enumerate() {
            if n.killed {
                continue;
            }
            if let Ok(Some(status)) = n.child.try_wait() {
                return Err(format!("{} exited under load ({status})", n.node.name));
            }
            if let Some((rss, fds)) = process_resources(n.child.id()) {
                resources[i].push((elapsed.as_secs_f64(), rss, fds));
            }
            if let Ok(s) = scrape(n.metrics, Duration::from_millis(500)) {
                for shard in CN_SHARDS {
                    let depth = metric(&s, &shard_metric("corecell_shard_queue_depth", shard));
                    let peak = queue_peaks[i].entry(shard.to_string()).or_default();
                    *peak = (*peak).max(depth as u64);
                }
                samples[i] = s;
            }
        }
        let highest = |name: &str| {
            samples
                .iter()
                .map(|s| metric(s, name) as u64)
                .max()
                .unwrap_or(0)
        };
        Ok(NodeSample {
            height: Some(highest("corecell_height")),
            round_changes: Some(highest("corecell_round_changes_total")),
        })
    };
    let metrics_of = |role: Role| -> Vec<SocketAddr> {
        nodes_metrics
            .iter()
            .filter(|(r, _)| *r == role)
            .map(|(_, a)| *a)
            .collect()
    };
    let lag = LagSampler::start(metrics_of(Role::Cn), metrics_of(Role::En));
    let outcome = super::drive::drive(load, length, interrupted, observe);
    let en_lag_ms = lag.finish();
    let outcome = outcome?;
    outcome.print_warnings("load");
    // Final scrape for CPU and memory.
    for (i, n) in nodes.iter().enumerate().filter(|(_, n)| !n.killed) {
        if let Ok(s) = scrape(n.metrics, Duration::from_millis(500)) {
            samples[i] = s;
        }
    }
    let node_reports: Vec<NodeReport> = nodes
        .iter()
        .zip(&samples)
        .enumerate()
        .map(|(i, (n, s))| NodeReport {
            name: n.node.name.clone(),
            role: n.node.role,
            height: metric(s, "corecell_height") as u64,
            round_changes: metric(s, "corecell_round_changes_total") as u64,
            cpu_seconds: metric(s, "corecell_process_cpu_seconds"),
            max_rss_mib: metric(s, "corecell_process_max_rss_bytes") / (1024.0 * 1024.0),
            resources: resource_trend(&resources[i]),
            signature_recoveries: metric(s, "corecell_signature_recoveries_total") as u64,
            block_txs_pooled: metric(s, "corecell_block_txs_pooled_total") as u64,
            block_txs_recovered: metric(s, "corecell_block_txs_recovered_total") as u64,
            shard_busy_s: CN_SHARDS
                .iter()
                .map(|shard| {
                    let busy = metric(s, &shard_metric("corecell_shard_busy_seconds", shard));
                    (shard.to_string(), busy)
                })
                .collect(),
            shard_queue_peak: queue_peaks[i].clone(),
        })
        .collect();
    let cpu: f64 = node_reports.iter().map(|n| n.cpu_seconds).sum();
    *killed_at = killed_at_ms;
    let offered_rate = match options.workload {
        Workload::Transfer | Workload::Raw => options.rate,
        Workload::None => 0,
    };
    let mut report = outcome.report(options.workload.name(), offered_rate, options.tx_size);
    report.en_lag_ms = en_lag_ms;
    report.cns = options.cns;
    report.pns = options.pns;
    report.ens = options.ens;
    report.agreement_checked = true;
    report.blocks = nodes
        .iter()
        .zip(&node_reports)
        .filter(|(n, _)| !n.killed && n.node.role != Role::Bootnode)
        .map(|(_, r)| r.height)
        .min()
        .unwrap_or(0);
    report.round_changes = outcome.last_sample.round_changes.unwrap_or(0);
    report.block_period_ms = Some(options.block_period_ms);
    report.cpu_us_per_tx = (outcome.finalized > 0).then(|| cpu * 1e6 / outcome.finalized as f64);
    report.targets = if offered_rate > 0 {
        targets.iter().map(|t| t.to_string()).collect()
    } else {
        Vec::new()
    };
    report.nodes = node_reports;
    Ok(report)
}

/// A process's resident memory (MiB) and open file descriptors, from `/proc` (Linux).
fn process_resources(pid: u32) -> Option<(f64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss_kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count() as u64;
    Some((rss_kib / 1024.0, fds))
}

/// The first sample after the warm-up (the first tenth of the samples), the one halfway from
/// there to the end, and the last one.
fn resource_trend(samples: &[(f64, f64, u64)]) -> Option<ResourceTrend> {
    let first = samples.len() / 10;
    let start = samples.get(first)?;
    let mid = samples.get((first + samples.len() - 1) / 2)?;
    let end = samples.last()?;
    Some(ResourceTrend {
        start_s: start.0,
        end_s: end.0,
        rss_start_mib: start.1,
        rss_mid_mib: mid.1,
        rss_end_mib: end.1,
        fds_start: start.2,
        fds_end: end.2,
    })
}

/// Samples the CNs' and ENs' heights from their metrics every [`LAG_SAMPLE_MS`] ms on its own
/// thread, noting when each height was first seen at any CN and at each EN.
struct LagSampler {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<LagRecord>>,
}

/// When each height was first seen: at any CN, and per EN.
#[derive(Default)]
struct LagRecord {
    cns: BTreeMap<u64, Instant>,
    ens: Vec<BTreeMap<u64, Instant>>,
}

impl LagSampler {
    fn start(cns: Vec<SocketAddr>, ens: Vec<SocketAddr>) -> LagSampler {
        let stop = Arc::new(AtomicBool::new(false));
        if ens.is_empty() {
            return LagSampler { stop, thread: None };
        }
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("lag-sampler".into())
            .spawn(move || {
                let mut record = LagRecord {
                    ens: vec![BTreeMap::new(); ens.len()],
                    ..LagRecord::default()
                };
                let mut last_cn = vec![None; cns.len()];
                let mut last_en = vec![None; ens.len()];
                let height = |addr: SocketAddr| {
                    scrape(addr, Duration::from_millis(200))
                        .ok()
                        .map(|s| metric(&s, "corecell_height") as u64)
                };
                // Heights above the last one seen get this instant (a node may pass several
                // between samples); the first sample of a node only sets its baseline.
                let note = |last: &mut Option<u64>,
                            now: u64,
                            at: Instant,
                            seen: &mut BTreeMap<u64, Instant>| {
                    if let Some(prev) = *last {
                        for h in prev + 1..=now {
                            seen.entry(h).or_insert(at);
                        }
                    }
                    *last = Some(now.max(last.unwrap_or(0)));
                };
                while !flag.load(Relaxed) {
                    let tick = Instant::now();
                    for (i, a) in cns.iter().enumerate() {
                        if let Some(h) = height(*a) {
                            note(&mut last_cn[i], h, Instant::now(), &mut record.cns);
                        }
                    }
                    for (i, a) in ens.iter().enumerate() {
                        if let Some(h) = height(*a) {
                            note(&mut last_en[i], h, Instant::now(), &mut record.ens[i]);
                        }
                    }
                    let period = Duration::from_millis(LAG_SAMPLE_MS);
                    std::thread::sleep(period.saturating_sub(tick.elapsed()));
                }
                record
            })
            .ok();
        LagSampler { stop, thread }
    }

    /// Stops sampling; the percentiles of every EN's lag behind the first CN over the heights
    /// both saw come in, `None` without ENs or samples.
    fn finish(mut self) -> Option<Percentiles> {
        self.stop.store(true, Relaxed);
        let record = self.thread.take()?.join().ok()?;
        let mut h = LatencyHistogram::new();
        for en in &record.ens {
            for (height, at) in en {
                if let Some(cn_at) = record.cns.get(height) {
                    h.record(at.saturating_duration_since(*cn_at).as_micros() as u64);
                }
            }
        }
        (h.count() > 0).then(|| Percentiles::from_histogram(&h))
    }
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

/// Writes `endpoints.json`: the genesis and accounts files and every node's addresses, paths
/// made absolute so that `corecell bench --endpoints` works from any folder.
fn write_endpoints(dir: &Path, network: &GeneratedNetwork) -> Result<(), String> {
    let absolute = |p: &Path| {
        std::fs::canonicalize(p)
            .unwrap_or_else(|_| p.to_path_buf())
            .display()
            .to_string()
    };
    let nodes: Vec<serde_json::Value> = network
        .nodes
        .iter()
        .map(|n| {
            serde_json::json!({
                "name": n.name,
                "role": n.role.name(),
                "p2p": n.p2p.to_string(),
                "ingress": n.ingress.map(|a| a.to_string()),
                "metrics": n.metrics.to_string(),
                "rpc": n.rpc.map(|a| a.to_string()),
                "config": absolute(&n.config_path),
            })
        })
        .collect();
    let text = serde_json::to_string_pretty(&serde_json::json!({
        "genesis": absolute(&network.genesis_path),
        "accounts": absolute(&network.accounts_path),
        "nodes": nodes,
    }))
    .map_err(|e| e.to_string())?;
    let path = dir.join("endpoints.json");
    std::fs::write(&path, text).map_err(|e| format!("writing {}: {e}", path.display()))
}
