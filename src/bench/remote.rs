//! `corecell bench`: the open-loop load generator against a network that is already running,
//! on this machine or others.
//!
//! Targets are CN native ingress addresses (`HOST:PORT`), listed with `--target` or read from
//! a testnet's `endpoints.json` (`--endpoints`, which also names the genesis and each node's
//! metrics address). Workloads are those of `testnet` ([`LoadWorkload`]): `raw` (opaque
//! transactions, for a chain whose genesis says `execution = "raw"`) or `transfer`
//! (pre-signed before the load starts, see [`TransferPlan`]).
//!
//! Transfers need the chain id and funded senders. The chain id comes from the genesis
//! (`--genesis`, or the one `endpoints.json` names when it is readable here) or from
//! `--chain-id`; with a genesis, every sender must be one of its accounts. The senders are the
//! deterministic test accounts `first_account .. first_account + accounts`, their nonces start
//! at `--nonce-start` (default 0). A chain remembers nonces: a second run with the same
//! accounts must start past the nonces the first one got finalized, or use other accounts
//! (`--first-account`), or the nodes refuse its transactions as `nonce-too-low` (the run says
//! so at the end, [`refusal_hints`]).
//!
//! Steps: check the options ([`plan`]: no network, no files beyond the endpoints and genesis
//! files); connect to every target once (a wrong address fails in seconds, before any signing);
//! sign; run the load for the duration through the loop `testnet` uses
//! ([`drive`](super::drive::drive)), a status line a second; stop and report the same figures
//! as `testnet` (submitted, finalized, refused by reason, dropped, finality p50/p99/max,
//! throughput, the generator's lag behind its schedule).
//!
//! Node figures come from the nodes' metrics when their addresses are known (`endpoints.json`
//! or `--metrics`): the height, and over the run, round changes (the most any node saw), CPU
//! seconds per node and CPU per finalized transaction; blocks are the height gained. Without
//! metrics the height is the highest block a FINAL answer named, blocks the span of heights the
//! run's transactions landed in, and round changes and CPU are unknown. The nodes' agreement is
//! not checked (their block logs are not read). The run fails when nothing was finalized.

use std::collections::{BTreeMap, HashSet};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use serde::Deserialize;

use super::drive::{self, NodeSample, RunLength};
use super::load::{Load, LoadSpec, LoadWorkload, TransferPlan, MIN_TX_SIZE};
use super::report::{shard_metric, NodeReport, RunReport, CN_SHARDS};
use super::testnet::Workload;
use crate::config::genesis::{test_account_secret, ExecutionMode, Genesis};
use crate::config::node::Role;
use crate::crypto::tx::address_of_secret;
use crate::node::metrics::scrape;

/// How long connecting to a target may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one metrics scrape may take.
pub const SCRAPE_TIMEOUT: Duration = Duration::from_millis(500);
/// The largest `endpoints.json` read.
pub const MAX_ENDPOINTS_BYTES: u64 = 1024 * 1024;
/// The most ingress targets one run drives.
pub const MAX_TARGETS: usize = 1024;
/// Targets probed at once before the load ([`probe`]).
pub const PROBE_PARALLELISM: usize = 64;

/// What `corecell bench` was asked to do.
#[derive(Debug, Clone, PartialEq)]
pub struct BenchOptions {
    /// Ingress addresses given with `--target`.
    pub targets: Vec<SocketAddr>,
    /// A testnet's `endpoints.json` (instead of `--target`).
    pub endpoints: Option<PathBuf>,
    /// Metrics addresses given with `--metrics` (added to those of `endpoints.json`).
    pub metrics: Vec<SocketAddr>,
    /// `raw` or `transfer`.
    pub workload: Workload,
    /// Offered transactions per second, in total.
    pub rate: u64,
    /// How long the load runs.
    pub duration: Duration,
    /// Bytes per raw transaction.
    pub tx_size: usize,
    /// Test accounts sending transfers.
    pub accounts: u64,
    /// The first of them.
    pub first_account: u64,
    /// Every sender's first nonce.
    pub nonce_start: u64,
    /// The chain's genesis (chain id, accounts).
    pub genesis: Option<PathBuf>,
    /// The chain id, when there is no genesis at hand.
    pub chain_id: Option<u64>,
}

/// A checked bench run: where to send, what, and where to read node metrics.
#[derive(Debug, Clone)]
pub struct BenchPlan {
    /// Ingress addresses, one connection each.
    pub targets: Vec<SocketAddr>,
    /// Node metrics to scrape: a name and an address.
    pub metrics: Vec<(String, SocketAddr)>,
    /// The transfers to sign (`None` for raw).
    pub transfer: Option<TransferPlan>,
    /// The genesis used, when one was.
    pub genesis_path: Option<PathBuf>,
    /// The chain's block period from the genesis, ms (0 when unknown).
    pub block_period_ms: Option<u64>,
    /// Notes for the operator (what was not checked, and why).
    pub notes: Vec<String>,
}

/// Parses a target `HOST:PORT` (an IP address or a name resolved now; the first address a
/// name resolves to is used). Port 0 and unspecified addresses (`0.0.0.0`) are refused.
pub fn parse_target(text: &str) -> Result<SocketAddr, String> {
    let text = text.trim();
    let addr = match text.parse::<SocketAddr>() {
        Ok(addr) => addr,
        Err(_) => {
            let Some((host, port)) = text.rsplit_once(':') else {
                return Err(format!("`{text}` is not HOST:PORT"));
            };
            if host.is_empty() || port.parse::<u16>().is_err() {
                return Err(format!("`{text}` is not HOST:PORT"));
            }
            text.to_socket_addrs()
                .map_err(|e| format!("`{text}`: {e}"))?
                .next()
                .ok_or_else(|| format!("`{text}` resolves to no address"))?
        }
    };
    if addr.port() == 0 {
        return Err(format!("`{text}`: port 0 is not a port a node listens on"));
    }
    if addr.ip().is_unspecified() {
        return Err(format!(
            "`{text}`: {} is not an address to connect to (name the node's address)",
            addr.ip()
        ));
    }
    Ok(addr)
}

/// What `corecell bench` needs from a testnet's `endpoints.json`.
#[derive(Debug, Clone, PartialEq)]
pub struct Endpoints {
    /// The genesis file it names (relative paths are taken from the file's folder).
    pub genesis: Option<PathBuf>,
    /// The CNs' ingress addresses, in file order.
    pub ingress: Vec<SocketAddr>,
    /// The nodes' metrics addresses with their names, in file order.
    pub metrics: Vec<(String, SocketAddr)>,
}

#[derive(Deserialize)]
struct EndpointsFile {
    #[serde(default)]
    genesis: Option<String>,
    nodes: Vec<EndpointNode>,
}

#[derive(Deserialize)]
struct EndpointNode {
    name: String,
    #[serde(default)]
    ingress: Option<String>,
    #[serde(default)]
    metrics: Option<String>,
}

impl Endpoints {
    /// Reads and checks `path` (see [`Endpoints::parse`]).
    pub fn load(path: &Path) -> Result<Endpoints, String> {
        let size = std::fs::metadata(path)
            .map_err(|e| format!("reading {}: {e}", path.display()))?
            .len();
        if size > MAX_ENDPOINTS_BYTES {
            return Err(format!(
                "{}: {size} bytes is more than an endpoints file holds ({MAX_ENDPOINTS_BYTES})",
                path.display()
            ));
        }
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("reading {}: {e}", path.display()))?;
        Endpoints::parse(path, &text)
    }

    /// Parses the text of an `endpoints.json` found at `path`: every node's `ingress` and
    /// `metrics` must be an address (or null), and at least one node must have an ingress.
    pub fn parse(path: &Path, text: &str) -> Result<Endpoints, String> {
        let file: EndpointsFile =
            serde_json::from_str(text).map_err(|e| format!("{}: {e}", path.display()))?;
        let field = |i: usize, name: &str, value: &Option<String>| -> Result<_, String> {
            value
                .as_deref()
                .map(|v| {
                    parse_target(v)
                        .map_err(|e| format!("{}: nodes[{i}].{name}: {e}", path.display()))
                })
                .transpose()
        };
        let mut ingress = Vec::new();
        let mut metrics = Vec::new();
        for (i, node) in file.nodes.iter().enumerate() {
            if let Some(addr) = field(i, "ingress", &node.ingress)? {
                ingress.push(addr);
            }
            if let Some(addr) = field(i, "metrics", &node.metrics)? {
                metrics.push((node.name.clone(), addr));
            }
        }
        if ingress.is_empty() {
            return Err(format!(
                "{}: no node has an ingress address",
                path.display()
            ));
        }
        let genesis = file.genesis.map(|g| {
            let g = PathBuf::from(g);
            match (g.is_relative(), path.parent()) {
                (true, Some(dir)) => dir.join(g),
                _ => g,
            }
        });
        Ok(Endpoints {
            genesis,
            ingress,
            metrics,
        })
    }
}

/// Checks the options and resolves the run: targets, metrics, the transfer plan (its chain id
/// and senders checked against the genesis when there is one). Reads the endpoints and
/// genesis files; touches no network.
pub fn plan(options: &BenchOptions) -> Result<BenchPlan, String> {
    let mut notes = Vec::new();
    let endpoints = options
        .endpoints
        .as_deref()
        .map(Endpoints::load)
        .transpose()?;
    let targets = match (&endpoints, options.targets.is_empty()) {
        (Some(_), false) => {
            return Err("give the targets with --target or --endpoints, not both".into())
        }
        (Some(e), true) => e.ingress.clone(),
        (None, false) => options.targets.clone(),
        (None, true) => {
            return Err(
                "no target: give CN ingress addresses with --target HOST:PORT (repeatable) or \
                 a testnet's endpoints.json with --endpoints FILE"
                    .into(),
            )
        }
    };
    if targets.len() > MAX_TARGETS {
        return Err(format!("{} targets; at most {MAX_TARGETS}", targets.len()));
    }
    let mut seen = HashSet::new();
    if let Some(twice) = targets.iter().find(|t| !seen.insert(**t)) {
        return Err(format!("target {twice} is listed twice"));
    }
    let mut metrics = endpoints
        .as_ref()
        .map_or_else(Vec::new, |e| e.metrics.clone());
    metrics.extend(options.metrics.iter().map(|a| (a.to_string(), *a)));
    if options.rate == 0 || options.duration.is_zero() {
        return Err("--rate and --duration must be above 0".into());
    }
    let genesis_path = match (
        &options.genesis,
        endpoints.as_ref().and_then(|e| e.genesis.clone()),
    ) {
        (Some(g), _) => Some(g.clone()),
        (None, Some(g)) if g.is_file() => Some(g),
        (None, Some(g)) => {
            notes.push(format!(
                "the genesis endpoints.json names ({}) is not readable here; pass --genesis \
                 FILE to check the chain id and accounts",
                g.display()
            ));
            None
        }
        (None, None) => None,
    };
    let genesis = genesis_path
        .as_deref()
        .map(|p| Genesis::load(p, crate::exec::genesis_state_root).map_err(|e| e.to_string()))
        .transpose()?;
    let transfer = match options.workload {
        Workload::None => {
            return Err("--workload none sends nothing: choose raw or transfer".into())
        }
        Workload::Raw => {
            if !(MIN_TX_SIZE..=crate::types::MAX_TX_BYTES).contains(&options.tx_size) {
                return Err(format!(
                    "--tx-size {} is outside {MIN_TX_SIZE}..={}",
                    options.tx_size,
                    crate::types::MAX_TX_BYTES
                ));
            }
            if let Some(g) = genesis
                .as_ref()
                .filter(|g| g.execution == ExecutionMode::Transfer)
            {
                return Err(format!(
                    "chain {} executes transfers (its genesis says execution = \"transfer\"): it \
                     refuses opaque transactions as invalid; use --workload transfer",
                    g.chain_id
                ));
            }
            None
        }
        Workload::Transfer => Some(transfer_plan(options, genesis.as_ref(), targets.len())?),
    };
    if let (Some(plan), None) = (&transfer, &genesis) {
        notes.push(format!(
            "no genesis: test accounts {}..{} are not checked against the chain (unfunded \
             senders are refused as insufficient-funds)",
            plan.first_account,
            plan.first_account + plan.accounts
        ));
    }
    Ok(BenchPlan {
        targets,
        metrics,
        transfer,
        genesis_path,
        block_period_ms: genesis.as_ref().map(|g| g.block_period_ms),
        notes,
    })
}

/// The transfer plan of `options` for `targets` targets, its chain id from the genesis or
/// `--chain-id` (both: they must agree), its senders checked against the genesis's accounts.
fn transfer_plan(
    options: &BenchOptions,
    genesis: Option<&Genesis>,
    targets: usize,
) -> Result<TransferPlan, String> {
    let chain_id = match (genesis, options.chain_id) {
        (Some(g), Some(id)) if g.chain_id != id => {
            return Err(format!(
                "--chain-id {id} is not the genesis's chain id {}",
                g.chain_id
            ))
        }
        (Some(g), _) => g.chain_id,
        (None, Some(id)) => id,
        (None, None) => {
            return Err(
                "the transfer workload signs for a chain: give --genesis FILE (or \
                 --endpoints of a testnet whose genesis is readable here) or --chain-id ID"
                    .into(),
            )
        }
    };
    let plan = TransferPlan {
        accounts: options.accounts,
        first_account: options.first_account,
        nonce_start: options.nonce_start,
        chain_id,
        targets: targets as u64,
        rate: options.rate,
        duration: options.duration,
    };
    plan.check()?;
    if let Some(g) = genesis {
        if g.execution != ExecutionMode::Transfer {
            return Err(format!(
                "chain {} does not execute transfers (its genesis says execution = \"raw\"); \
                 use --workload raw",
                g.chain_id
            ));
        }
        check_accounts(&plan, g)?;
    }
    Ok(plan)
}

/// Checks that every sender of `plan` is an account of `genesis`.
fn check_accounts(plan: &TransferPlan, genesis: &Genesis) -> Result<(), String> {
    let funded: HashSet<[u8; 20]> = genesis.accounts.iter().map(|a| a.address).collect();
    for account in plan.account_range() {
        let address = address_of_secret(&test_account_secret(account))
            .map_err(|e| format!("test account {account}: {e}"))?;
        if !funded.contains(&address) {
            return Err(format!(
                "test account {account} (0x{}) is not in the genesis ({} accounts): lower \
                 --accounts or --first-account",
                hex::encode(address),
                genesis.accounts.len()
            ));
        }
    }
    Ok(())
}

/// Connects to every target once (up to [`PROBE_PARALLELISM`] at a time) and closes the
/// connections: a wrong address or a network that is not running fails here, within
/// [`CONNECT_TIMEOUT`] per group of targets. The error names the first target (in order) that
/// could not be reached.
pub fn probe(targets: &[SocketAddr]) -> Result<(), String> {
    for group in targets.chunks(PROBE_PARALLELISM) {
        let results: Vec<Result<(), String>> = std::thread::scope(|scope| {
            let probes: Vec<_> = group
                .iter()
                .map(|target| {
                    scope.spawn(move || {
                        TcpStream::connect_timeout(target, CONNECT_TIMEOUT)
                            .map(drop)
                            .map_err(|e| {
                                format!(
                                    "cannot reach ingress {target}: {e} (is the network \
                                     running, and is this a CN's ingress address: base port + \
                                     3000 + k for a testnet?)"
                                )
                            })
                    })
                })
                .collect();
            probes
                .into_iter()
                .map(|p| {
                    p.join()
                        .unwrap_or_else(|_| Err("a probe thread panicked".into()))
                })
                .collect()
        });
        results.into_iter().collect::<Result<(), String>>()?;
    }
    Ok(())
}

/// Hints about refusals that point at the run's set-up rather than the network. `plan` is the
/// transfer plan of a transfer run (`None` for raw).
///
/// A rerun of a transfer plan against the same chain sends the very transactions of the
/// first run (signatures are deterministic, RFC 6979): the pools refuse those they still
/// remember as `duplicate` and the older ones as `nonce-too-low`; both say the senders' nonces
/// are used up.
pub fn refusal_hints(rejected: &BTreeMap<String, u64>, plan: Option<&TransferPlan>) -> Vec<String> {
    let mut hints = Vec::new();
    let count = |reason: &str| rejected.get(reason).copied().unwrap_or(0);
    let used_up = match plan {
        Some(_) => count("nonce-too-low").saturating_add(count("duplicate")),
        None => count("nonce-too-low"),
    };
    if used_up > 0 {
        let next = plan.map_or_else(String::new, |p| {
            format!(
                " (for example --first-account {})",
                p.first_account.saturating_add(p.accounts)
            )
        });
        hints.push(format!(
            "{used_up} transactions were refused as nonce-too-low or duplicate: their senders had \
             already used those nonces on this chain (an earlier run with the same accounts \
             sends the very same signed transactions). Run again with other test \
             accounts{next}, or with --nonce-start past the nonces they used"
        ));
    }
    if count("chain-id") > 0 {
        hints.push(
            "transactions were refused for their chain id: sign for the chain the nodes run \
             (--genesis FILE or --chain-id)"
                .into(),
        );
    }
    if count("insufficient-funds") > 0 {
        hints.push(
            "transactions were refused for insufficient funds: the senders are not funded on \
             this chain (are they its genesis test accounts? pass --genesis to check)"
                .into(),
        );
    }
    if count("invalid") > 0 || count("not-a-transfer") > 0 {
        hints.push(
            "transactions were refused as invalid: raw transactions sent to a chain that \
             executes transfers? (--workload transfer)"
                .into(),
        );
    }
    hints
}

/// Runs the bench (see the module doc) and returns its report. An error means no report:
/// bad options, an unreachable target, a failed signing.
pub fn run(options: &BenchOptions, interrupted: &AtomicBool) -> Result<RunReport, String> {
    let plan = plan(options)?;
    for note in &plan.notes {
        println!("bench: note: {note}");
    }
    probe(&plan.targets)?;
    let targets: Vec<String> = plan.targets.iter().map(|t| t.to_string()).collect();
    match &plan.transfer {
        Some(t) => println!(
            "bench: transfer workload, {} tx/s for {} s to {} (chain {}, test accounts {}..{}, nonces from {})",
            options.rate,
            options.duration.as_secs(),
            targets.join(", "),
            t.chain_id,
            t.first_account,
            t.first_account + t.accounts,
            t.nonce_start
        ),
        None => println!(
            "bench: raw workload, {} tx/s of {} bytes for {} s to {}",
            options.rate,
            options.tx_size,
            options.duration.as_secs(),
            targets.join(", ")
        ),
    }
    if let Some(warning) = plan
        .transfer
        .as_ref()
        .and_then(TransferPlan::sender_rate_warning)
    {
        println!("bench: warning: {warning}");
    }
    let (workload, tx_size) = match &plan.transfer {
        Some(t) => {
            let schedule = t.sign(true)?;
            let size = schedule.mean_tx_bytes();
            (LoadWorkload::Transfer(schedule), size)
        }
        None => (
            LoadWorkload::Raw {
                rate: options.rate,
                tx_size: options.tx_size,
            },
            options.tx_size,
        ),
    };
    let mut scraper = Scraper::new(&plan.metrics);
    let load = Load::start(LoadSpec {
        targets: plan.targets.clone(),
        workload,
    })?;
    let outcome = drive::drive(
        Some(load),
        RunLength::For(options.duration),
        interrupted,
        |_| Ok(scraper.sample()),
    )?;
    outcome.print_warnings("bench");
    for hint in refusal_hints(&outcome.rejected, plan.transfer.as_ref()) {
        eprintln!("bench: {hint}");
    }
    scraper.sample();
    let mut report = outcome.report(options.workload.name(), options.rate, tx_size);
    report.targets = targets;
    report.agreement_checked = false;
    report.block_period_ms = plan.block_period_ms;
    report.nodes = scraper.node_reports();
    report.blocks = match (outcome.first_sample.height, scraper.height()) {
        (Some(before), Some(after)) => after.saturating_sub(before),
        _ => outcome
            .final_heights
            .map_or(0, |(lowest, highest)| highest - lowest + 1),
    };
    report.round_changes = outcome.last_sample.round_changes.unwrap_or(0);
    if !report.nodes.is_empty() {
        let cpu: f64 = report.nodes.iter().map(|n| n.cpu_seconds).sum();
        report.cpu_us_per_tx =
            (outcome.finalized > 0).then(|| cpu * 1e6 / outcome.finalized as f64);
    }
    Ok(report)
}

/// The nodes' metrics over a run: the first good scrape of each node is its baseline.
struct Scraper {
    nodes: Vec<ScrapedNode>,
}

struct ScrapedNode {
    name: String,
    addr: SocketAddr,
    first: Option<Vec<(String, f64)>>,
    last: Option<Vec<(String, f64)>>,
    failed_once: bool,
}

fn metric(samples: &[(String, f64)], name: &str) -> f64 {
    samples
        .iter()
        .find(|(n, _)| n == name)
        .map_or(0.0, |(_, v)| *v)
}

impl Scraper {
    fn new(metrics: &[(String, SocketAddr)]) -> Scraper {
        Scraper {
            nodes: metrics
                .iter()
                .map(|(name, addr)| ScrapedNode {
                    name: name.clone(),
                    addr: *addr,
                    first: None,
                    last: None,
                    failed_once: false,
                })
                .collect(),
        }
    }

    /// Scrapes every node (a failure keeps its last figures and is said once per node) and
    /// returns the highest height and the most round changes any node had since its baseline;
    /// both `None` when no node answered yet.
    fn sample(&mut self) -> NodeSample {
        for node in &mut self.nodes {
            match scrape(node.addr, SCRAPE_TIMEOUT) {
                Ok(s) => {
                    node.first.get_or_insert_with(|| s.clone());
                    node.last = Some(s);
                }
                Err(e) if !node.failed_once => {
                    node.failed_once = true;
                    eprintln!(
                        "bench: metrics of {}: {e} (its figures may be stale)",
                        node.name
                    );
                }
                Err(_) => {}
            }
        }
        let round_changes = self
            .nodes
            .iter()
            .filter_map(|n| {
                Some(since(
                    n.first.as_ref()?,
                    n.last.as_ref()?,
                    "corecell_round_changes_total",
                ))
            })
            .map(|d| d as u64)
            .max();
        NodeSample {
            height: self.height(),
            round_changes,
        }
    }

    /// The highest height any node reported last.
    fn height(&self) -> Option<u64> {
        self.nodes
            .iter()
            .filter_map(|n| n.last.as_ref())
            .map(|s| metric(s, "corecell_height") as u64)
            .max()
    }

    /// One report per node that answered: its height, and its counters over the run.
    fn node_reports(&self) -> Vec<NodeReport> {
        self.nodes
            .iter()
            .filter_map(|n| {
                let (first, last) = (n.first.as_ref()?, n.last.as_ref()?);
                let delta = |name: &str| since(first, last, name);
                Some(NodeReport {
                    name: n.name.clone(),
                    role: Role::Cn,
                    height: metric(last, "corecell_height") as u64,
                    round_changes: delta("corecell_round_changes_total") as u64,
                    cpu_seconds: delta("corecell_process_cpu_seconds"),
                    max_rss_mib: metric(last, "corecell_process_max_rss_bytes") / (1024.0 * 1024.0),
                    resources: None,
                    signature_recoveries: delta("corecell_signature_recoveries_total") as u64,
                    block_txs_pooled: delta("corecell_block_txs_pooled_total") as u64,
                    block_txs_recovered: delta("corecell_block_txs_recovered_total") as u64,
                    shard_busy_s: CN_SHARDS
                        .iter()
                        .map(|shard| {
                            let busy = delta(&shard_metric("corecell_shard_busy_seconds", shard));
                            (shard.to_string(), busy)
                        })
                        .collect(),
                    // Queue peaks need every sample; `bench` keeps only the first and last.
                    shard_queue_peak: Default::default(),
                })
            })
            .collect()
    }
}

/// How much counter `name` grew from `first` to `last` (0 when it went down: a restart).
fn since(first: &[(String, f64)], last: &[(String, f64)], name: &str) -> f64 {
    (metric(last, name) - metric(first, name)).max(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::genesis::NetworkSpec;

    fn options() -> BenchOptions {
        BenchOptions {
            targets: vec!["127.0.0.1:49000".parse().expect("addr")],
            endpoints: None,
            metrics: Vec::new(),
            workload: Workload::Raw,
            rate: 1_000,
            duration: Duration::from_secs(5),
            tx_size: 512,
            accounts: 100,
            first_account: 0,
            nonce_start: 0,
            genesis: None,
            chain_id: None,
        }
    }

    /// A generated 1-CN network with `accounts` test accounts in `dir`, on ports `base..`.
    fn network(dir: &Path, accounts: usize, execution: ExecutionMode) -> PathBuf {
        NetworkSpec {
            cns: 1,
            pns: 0,
            ens: 0,
            host: "127.0.0.1".parse().expect("ip"),
            base_port: 46_900,
            committee_size: None,
            block_period_ms: 500,
            accounts,
            chain_id: 4242,
            timestamp_ms: 1,
            seed: Some(7),
            execution,
        }
        .generate(dir)
        .expect("generates")
        .genesis_path
    }

    #[test]
    fn targets_parse_and_bad_ones_are_refused() {
        assert_eq!(
            parse_target("127.0.0.1:33000"),
            Ok("127.0.0.1:33000".parse().expect("addr"))
        );
        assert_eq!(
            parse_target(" [::1]:33000 "),
            Ok("[::1]:33000".parse().expect("addr"))
        );
        let local = parse_target("localhost:33000").expect("resolves");
        assert!(local.ip().is_loopback() && local.port() == 33_000);
        assert!(parse_target("127.0.0.1")
            .expect_err("no port")
            .contains("HOST:PORT"));
        assert!(parse_target("nonsense")
            .expect_err("no port")
            .contains("HOST:PORT"));
        assert!(parse_target("127.0.0.1:99999")
            .expect_err("port")
            .contains("HOST:PORT"));
        assert!(parse_target(":33000")
            .expect_err("no host")
            .contains("HOST:PORT"));
        assert!(parse_target("127.0.0.1:0")
            .expect_err("port 0")
            .contains("port 0"));
        assert!(parse_target("0.0.0.0:33000")
            .expect_err("unspecified")
            .contains("not an address to connect to"));
    }

    #[test]
    fn options_are_checked_before_anything_is_sent() {
        assert!(plan(&options()).is_ok());
        let no_target = BenchOptions {
            targets: Vec::new(),
            ..options()
        };
        assert!(plan(&no_target).expect_err("none").contains("no target"));
        let twice = BenchOptions {
            targets: vec![options().targets[0]; 2],
            ..options()
        };
        assert!(plan(&twice).expect_err("twice").contains("listed twice"));
        for (rate, secs) in [(0, 5), (1_000, 0)] {
            let o = BenchOptions {
                rate,
                duration: Duration::from_secs(secs),
                ..options()
            };
            assert!(plan(&o).expect_err("zero").contains("above 0"));
        }
        let none = BenchOptions {
            workload: Workload::None,
            ..options()
        };
        assert!(plan(&none).expect_err("none").contains("sends nothing"));
        let tiny = BenchOptions {
            tx_size: 3,
            ..options()
        };
        assert!(plan(&tiny).expect_err("size").contains("--tx-size 3"));
        let transfer = BenchOptions {
            workload: Workload::Transfer,
            ..options()
        };
        assert!(plan(&transfer)
            .expect_err("no chain")
            .contains("--chain-id"));
        let with_id = BenchOptions {
            chain_id: Some(1001),
            ..transfer.clone()
        };
        let p = plan(&with_id).expect("chain id is enough");
        let t = p.transfer.expect("a transfer plan");
        assert_eq!((t.chain_id, t.accounts, t.targets), (1001, 100, 1));
        assert!(
            p.notes.iter().any(|n| n.contains("not checked")),
            "{:?}",
            p.notes
        );
        let no_accounts = BenchOptions {
            accounts: 0,
            ..with_id.clone()
        };
        assert!(plan(&no_accounts).is_err());
        let huge = BenchOptions {
            rate: 1_000_000,
            duration: Duration::from_secs(60),
            ..with_id.clone()
        };
        assert!(plan(&huge).expect_err("too many").contains("lower --rate"));
        let nonce_overflow = BenchOptions {
            nonce_start: u64::MAX - 10,
            ..with_id
        };
        assert!(plan(&nonce_overflow)
            .expect_err("overflow")
            .contains("--nonce-start"));
    }

    #[test]
    fn the_genesis_gives_the_chain_id_and_must_hold_the_senders() {
        let dir = tempfile::tempdir().expect("tempdir");
        let genesis = network(&dir.path().join("net"), 10, ExecutionMode::Transfer);
        let transfer = BenchOptions {
            workload: Workload::Transfer,
            accounts: 6,
            first_account: 4,
            nonce_start: 17,
            genesis: Some(genesis.clone()),
            ..options()
        };
        let p = plan(&transfer).expect("accounts 4..10 exist");
        let t = p.transfer.expect("transfer");
        assert_eq!((t.chain_id, t.first_account, t.nonce_start), (4242, 4, 17));
        assert!(p.notes.is_empty(), "{:?}", p.notes);
        let beyond = BenchOptions {
            first_account: 5,
            ..transfer.clone()
        };
        let err = plan(&beyond).expect_err("account 10 is not funded");
        assert!(
            err.contains("test account 10") && err.contains("not in the genesis"),
            "{err}"
        );
        let other_chain = BenchOptions {
            chain_id: Some(1001),
            ..transfer.clone()
        };
        assert!(plan(&other_chain)
            .expect_err("mismatch")
            .contains("not the genesis's chain id 4242"));
        let same_chain = BenchOptions {
            chain_id: Some(4242),
            ..transfer.clone()
        };
        assert!(plan(&same_chain).is_ok());
        // Raw transactions to a transfer chain would all be refused as invalid.
        let raw = BenchOptions {
            workload: Workload::Raw,
            ..transfer.clone()
        };
        assert!(plan(&raw).expect_err("raw").contains("executes transfers"));
        // And transfers to a raw chain are not executed.
        let raw_genesis = network(&dir.path().join("raw"), 10, ExecutionMode::Raw);
        let to_raw = BenchOptions {
            genesis: Some(raw_genesis),
            ..transfer
        };
        assert!(plan(&to_raw)
            .expect_err("raw chain")
            .contains("--workload raw"));
        let missing = BenchOptions {
            genesis: Some(dir.path().join("nope.toml")),
            ..options()
        };
        assert!(plan(&missing).expect_err("missing").contains("nope.toml"));
    }

    #[test]
    fn endpoints_give_targets_metrics_and_the_genesis() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("endpoints.json");
        let text = r#"{
            "genesis": "genesis.toml",
            "nodes": [
                {"name": "cn0", "role": "cn", "ingress": "127.0.0.1:49000", "metrics": "127.0.0.1:48000"},
                {"name": "cn1", "role": "cn", "ingress": "127.0.0.1:49001", "metrics": null},
                {"name": "pn0", "role": "pn", "ingress": null, "metrics": "127.0.0.1:48002"}
            ]
        }"#;
        let e = Endpoints::parse(&path, text).expect("parses");
        assert_eq!(e.ingress.len(), 2);
        assert_eq!(
            e.ingress[1],
            "127.0.0.1:49001".parse::<SocketAddr>().expect("addr")
        );
        assert_eq!(
            e.metrics
                .iter()
                .map(|(n, _)| n.as_str())
                .collect::<Vec<_>>(),
            ["cn0", "pn0"]
        );
        assert_eq!(e.genesis, Some(dir.path().join("genesis.toml")));

        let bad = text.replace("127.0.0.1:49001", "localhost");
        let err = Endpoints::parse(&path, &bad).expect_err("bad ingress");
        assert!(
            err.contains("nodes[1].ingress") && err.contains("HOST:PORT"),
            "{err}"
        );
        let none = r#"{"nodes": [{"name": "cn0", "ingress": null}]}"#;
        assert!(Endpoints::parse(&path, none)
            .expect_err("empty")
            .contains("no node has an ingress"));
        assert!(Endpoints::parse(&path, "{")
            .expect_err("json")
            .contains("endpoints.json"));
        assert!(
            Endpoints::parse(&path, r#"{"genesis": "g"}"#).is_err(),
            "nodes is required"
        );

        // --endpoints replaces --target; the genesis it names is used when readable.
        std::fs::write(&path, text).expect("write");
        let from_file = BenchOptions {
            targets: Vec::new(),
            endpoints: Some(path.clone()),
            ..options()
        };
        let p = plan(&from_file).expect("plan");
        assert_eq!(p.targets, e.ingress);
        assert_eq!(p.metrics.len(), 2);
        assert_eq!(p.genesis_path, None);
        assert!(
            p.notes.iter().any(|n| n.contains("not readable here")),
            "{:?}",
            p.notes
        );
        let both = BenchOptions {
            endpoints: Some(path.clone()),
            ..options()
        };
        assert!(plan(&both).expect_err("both").contains("not both"));
        let missing = BenchOptions {
            targets: Vec::new(),
            endpoints: Some(dir.path().join("missing.json")),
            ..options()
        };
        assert!(plan(&missing)
            .expect_err("missing")
            .contains("missing.json"));
    }

    #[test]
    fn an_unreachable_target_fails_fast_and_says_which() {
        // A port bound and held by a socket that never listens: a connection to it is refused,
        // and no other test can take the port meanwhile (a port merely freed can be handed to
        // the next bind, which made this test flaky).
        let held = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
            .expect("socket");
        held.bind(&std::net::SocketAddr::from(([127, 0, 0, 1], 0)).into())
            .expect("bind");
        let addr = held
            .local_addr()
            .ok()
            .and_then(|a| a.as_socket())
            .expect("an address");
        let started = std::time::Instant::now();
        let open = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let open_addr = open.local_addr().expect("address");
        assert_eq!(probe(&[open_addr]), Ok(()));
        let err = probe(&[open_addr, addr]).expect_err("refused");
        assert!(
            err.contains(&format!("cannot reach ingress {addr}")),
            "{err}"
        );
        assert!(started.elapsed() < Duration::from_secs(2));
    }

    #[test]
    fn refusals_that_point_at_the_set_up_get_a_hint() {
        let plan = TransferPlan {
            accounts: 100,
            first_account: 200,
            nonce_start: 0,
            chain_id: 1001,
            targets: 4,
            rate: 1_000,
            duration: Duration::from_secs(10),
        };
        let rejected: BTreeMap<String, u64> = [
            ("nonce-too-low".to_string(), 42),
            ("duplicate".to_string(), 8),
            ("sender-full".to_string(), 3),
        ]
        .into_iter()
        .collect();
        let hints = refusal_hints(&rejected, Some(&plan));
        assert_eq!(hints.len(), 1, "{hints:?}");
        assert!(hints[0].starts_with("50 transactions were refused as nonce-too-low or duplicate"));
        assert!(hints[0].contains("--first-account 300") && hints[0].contains("--nonce-start"));
        // Raw transactions are unique per run: a duplicate says nothing about nonces.
        let raw = refusal_hints(&rejected, None);
        assert!(raw[0].starts_with("42 transactions"), "{raw:?}");
        let other: BTreeMap<String, u64> = [
            ("chain-id".to_string(), 1),
            ("insufficient-funds".to_string(), 1),
            ("invalid".to_string(), 1),
        ]
        .into_iter()
        .collect();
        assert_eq!(refusal_hints(&other, None).len(), 3);
        assert!(refusal_hints(&BTreeMap::new(), None).is_empty());
    }

    #[test]
    fn counters_count_from_the_first_scrape() {
        let first = vec![
            ("corecell_process_cpu_seconds".to_string(), 10.0),
            ("corecell_round_changes_total".to_string(), 4.0),
        ];
        let last = vec![
            ("corecell_process_cpu_seconds".to_string(), 12.5),
            ("corecell_round_changes_total".to_string(), 3.0),
        ];
        assert_eq!(since(&first, &last, "corecell_process_cpu_seconds"), 2.5);
        assert_eq!(
            since(&first, &last, "corecell_round_changes_total"),
            0.0,
            "a restart"
        );
        assert_eq!(since(&first, &last, "corecell_height"), 0.0, "absent");
    }
}
