//! The `corecell` command: keys, genesis, node, the simulator, local testnets (and sweeps of
//! them), benchmarks of running networks, data directory checks.
//!
//! Every failure prints one `error: …` line that names what is wrong (and for files, which
//! file and field) and exits with status 1; usage errors exit with status 2.

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use corecell::config::genesis::{
    NetworkSpec, DEFAULT_BLOCK_PERIOD_MS, DEFAULT_CHAIN_ID, DEFAULT_TEST_ACCOUNTS,
};
use corecell::config::keys::NodeKey;
use corecell::config::node::Role;
use corecell::config::to_hex;
use corecell::node::setup::NodeSetup;

#[cfg(not(feature = "system-allocator"))]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// corecell: a thread-per-core node for a layered IBFT blockchain.
#[derive(Parser)]
#[command(name = "corecell", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create or inspect node key files.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Write a genesis, test accounts and one config per node for a local network.
    Genesis(GenesisArgs),
    /// Run a node (CN, PN, EN or bootnode) from its config, or validate it with --check.
    Node(NodeArgs),
    /// Run the deterministic consensus simulator over many seeds and check its invariants.
    Sim(SimArgs),
    /// Start a local network of node processes on loopback, drive a workload, check that
    /// every node agrees, and report throughput and latency (--sweep: at several rates in
    /// turn, with a table and a plot).
    Testnet(TestnetArgs),
    /// Drive the load generator against a network that is already running (here or on other
    /// machines) and report throughput, finality and refusals.
    Bench(BenchArgs),
    /// Inspect a node's data directory.
    #[command(subcommand)]
    Db(DbCommand),
    /// Measure JSON-RPC: eth_getBalance or eth_sendRawTransaction calls per second and
    /// latency p50/p99, against a running node (--url) or an in-process endpoint node.
    RpcBench(RpcBenchCli),
}

#[derive(clap::Args)]
struct RpcBenchCli {
    /// JSON-RPC address of a running node (host:port or http://host:port); without it, an
    /// in-process node (exec shard + RPC server on loopback) is measured.
    #[arg(long)]
    url: Option<String>,
    /// `balance` (eth_getBalance) or `send-raw` (eth_sendRawTransaction, pre-signed transfers).
    #[arg(long, default_value = "balance", value_parser = corecell::rpc::bench::parse_load_method)]
    method: corecell::rpc::bench::LoadMethod,
    /// Client threads, one keep-alive connection each.
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
    /// Seconds to run.
    #[arg(long, default_value_t = 5)]
    duration: u64,
    /// At most this many calls.
    #[arg(long, default_value_t = 1_000_000)]
    max_requests: u64,
    /// Test accounts used (the generated ones; funded in process).
    #[arg(long, default_value_t = 1000)]
    accounts: u64,
    /// send-raw: transfers per account (the pool holds at most 64 per sender).
    #[arg(long, default_value_t = 64)]
    txs_per_account: u64,
    /// send-raw: the accounts' next nonce (a remote node whose accounts already sent).
    #[arg(long, default_value_t = 0)]
    first_nonce: u64,
    /// Chain id (default: asked with eth_chainId).
    #[arg(long)]
    chain_id: Option<u64>,
    /// In process: pin the RPC thread to this CPU.
    #[arg(long)]
    rpc_cpu: Option<usize>,
    /// In process: pin the exec shard to this CPU.
    #[arg(long)]
    exec_cpu: Option<usize>,
}

#[derive(Subcommand)]
enum DbCommand {
    /// Verify a data directory (block log, consensus WAL and, on transfer chains, the state)
    /// without changing it, and report what it holds. Exits 1 on corruption or a state that
    /// does not replay to the head's state root.
    Check {
        /// The node's data directory.
        #[arg(long)]
        data: PathBuf,
        /// The network's genesis file [default: genesis.toml one or two folders up].
        #[arg(long)]
        genesis: Option<PathBuf>,
        /// Replay the state from the genesis instead of from the newest snapshot.
        #[arg(long)]
        full: bool,
    },
}

#[derive(Args)]
struct TestnetArgs {
    /// Where to generate the network (must not hold one) [default: a fresh temporary folder].
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Consensus nodes.
    #[arg(long, default_value_t = 4)]
    cns: usize,
    /// Proxy nodes (each in a CN's cell, round-robin).
    #[arg(long, default_value_t = 2)]
    pns: usize,
    /// Endpoint nodes; with ENs the load enters at their native ingress ports only (with
    /// none, at the CNs').
    #[arg(long, default_value_t = 2)]
    ens: usize,
    /// Workload: transfer (signed Ethereum transfers between the genesis test accounts, all
    /// signed before the load, executed by the nodes), raw (opaque transactions, not executed:
    /// a consensus benchmark) or none (an idle network).
    #[arg(long, default_value = "transfer")]
    workload: String,
    /// Offered load, transactions per second (split over the ENs, or the CNs without ENs:
    /// evenly for raw, by senders for transfer). The default is a load 4 CNs on a 2-vCPU machine sustain.
    #[arg(long, default_value_t = 4_000)]
    rate: u64,
    /// Prefunded genesis test accounts; with `--workload transfer` each sends rate/accounts
    /// tx/s (keep that under ~32: the pools hold 64 per sender).
    #[arg(long, default_value_t = DEFAULT_TEST_ACCOUNTS)]
    accounts: usize,
    /// Bytes per raw transaction.
    #[arg(long, default_value_t = 512)]
    tx_size: usize,
    /// Seconds of load; 0 with `--workload none` runs until Ctrl-C.
    #[arg(long, default_value_t = 30)]
    duration: u64,
    /// Target block period in milliseconds.
    #[arg(long, default_value_t = corecell::config::genesis::DEFAULT_BLOCK_PERIOD_MS)]
    block_period_ms: u64,
    /// First port (p2p base+k, metrics base+2000+k, ingress base+3000+k).
    #[arg(long, default_value_t = corecell::config::genesis::DEFAULT_BASE_PORT)]
    base_port: u16,
    /// Also write the report as one JSON object to this file (with --sweep: the sweep's,
    /// as in sweep.json).
    #[arg(long)]
    json: Option<PathBuf>,
    /// MiB of recent blocks, transactions and receipts each EN keeps for JSON-RPC
    /// (`[rpc] index_mib`; default 256). A soak run with a small value shows the ENs' memory
    /// level off within the run.
    #[arg(long)]
    rpc_index_mib: Option<u64>,
    /// Kill -9 the last CN this many seconds into the load and report the block gaps after.
    #[arg(long)]
    kill_at: Option<u64>,
    /// Shard placement of every node: spread (node k pins shard i to CPU (i + k) mod CPUs, so
    /// the nodes' consensus shards do not pile onto one CPU), auto (each node pins its shards
    /// from the first CPU up) or unbound (the kernel schedules them).
    #[arg(long, default_value = "spread")]
    placement: String,
    /// Run once per offered rate of this comma-separated list (e.g. 10000,50000,100000),
    /// each a fresh network in its own subfolder of --dir; print a table and write sweep.json
    /// and sweep.svg (throughput against offered load, finality against throughput) into
    /// --dir. Stops at the first rate that fails. Replaces --rate.
    #[arg(long, value_name = "RATES", conflicts_with = "rate")]
    sweep: Option<String>,
}

#[derive(Args)]
struct BenchArgs {
    /// A CN's native ingress address, HOST:PORT (as in a testnet's endpoints.json); repeat
    /// it, or list several separated by commas, to load several CNs.
    #[arg(long = "target", value_name = "ADDR", value_parser = parse_target, num_args = 1.., value_delimiter = ',')]
    targets: Vec<std::net::SocketAddr>,
    /// A testnet's endpoints.json instead of --target: its CNs' ingress addresses, their
    /// metrics addresses and the genesis.
    #[arg(long, value_name = "FILE", conflicts_with = "targets")]
    endpoints: Option<PathBuf>,
    /// A node's metrics address, HOST:PORT (repeatable): height, round changes and CPU per
    /// transaction over the run [default: those in --endpoints, else none].
    #[arg(long = "metrics", value_name = "ADDR", value_parser = parse_target, num_args = 1.., value_delimiter = ',')]
    metrics: Vec<std::net::SocketAddr>,
    /// Workload: transfer (signed Ethereum transfers between the genesis test accounts, all
    /// signed before the load) or raw (opaque transactions, for a chain with execution = "raw").
    #[arg(long, default_value = "transfer")]
    workload: String,
    /// Offered load, transactions per second in total.
    #[arg(long, default_value_t = 4_000)]
    rate: u64,
    /// Seconds of load.
    #[arg(long, default_value_t = 30)]
    duration: u64,
    /// Bytes per raw transaction.
    #[arg(long, default_value_t = 512)]
    tx_size: usize,
    /// Test accounts sending transfers (each sends rate/accounts tx/s: keep that under ~32).
    #[arg(long, default_value_t = DEFAULT_TEST_ACCOUNTS as u64)]
    accounts: u64,
    /// The first test account sending (a second run on the same chain: use accounts the
    /// first did not, e.g. --first-account 1000 after a run with --accounts 1000).
    #[arg(long, default_value_t = 0)]
    first_account: u64,
    /// Every sender's first nonce (0 for accounts that never sent; past the nonces a previous
    /// run got finalized, or the nodes refuse them as duplicate or nonce-too-low).
    #[arg(long, default_value_t = 0)]
    nonce_start: u64,
    /// The chain's genesis: its chain id, and the senders are checked against its accounts
    /// [default: the one --endpoints names, when readable].
    #[arg(long, value_name = "FILE")]
    genesis: Option<PathBuf>,
    /// The chain id to sign for, without a genesis at hand.
    #[arg(long)]
    chain_id: Option<u64>,
    /// Also write the report as one JSON object to this file.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
}

fn parse_target(text: &str) -> Result<std::net::SocketAddr, String> {
    corecell::bench::remote::parse_target(text)
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Write a new node key file (BLS key, proof of possession, node id), mode 0600.
    New {
        /// Where to write the key file.
        #[arg(long)]
        out: PathBuf,
        /// Overwrite an existing file.
        #[arg(long)]
        force: bool,
    },
    /// Print the public facts of a key file (node id, public key, proof of possession).
    Show {
        /// The key file.
        #[arg(long)]
        key: PathBuf,
    },
}

#[derive(Args)]
struct GenesisArgs {
    /// Consensus nodes (the council).
    #[arg(long, default_value_t = 4)]
    cns: usize,
    /// Proxy nodes (assigned to the CNs' cells round-robin).
    #[arg(long, default_value_t = 0)]
    pns: usize,
    /// Endpoint nodes (need at least one PN).
    #[arg(long, default_value_t = 0)]
    ens: usize,
    /// Output folder (must not already hold a genesis).
    #[arg(long)]
    out: PathBuf,
    /// Address every node listens on.
    #[arg(long, default_value = "127.0.0.1")]
    host: IpAddr,
    /// First p2p port; node k uses base+k (p2p), base+1000+k (JSON-RPC), base+2000+k (metrics),
    /// base+3000+k (ingress).
    #[arg(long, default_value_t = corecell::config::genesis::DEFAULT_BASE_PORT)]
    base_port: u16,
    /// Committee size per height [default: all CNs].
    #[arg(long)]
    committee_size: Option<usize>,
    /// Target block period in milliseconds.
    #[arg(long, default_value_t = DEFAULT_BLOCK_PERIOD_MS)]
    block_period_ms: u64,
    /// Prefunded deterministic test accounts (published in accounts.json).
    #[arg(long, default_value_t = DEFAULT_TEST_ACCOUNTS)]
    accounts: usize,
    /// EIP-155 chain id.
    #[arg(long, default_value_t = DEFAULT_CHAIN_ID)]
    chain_id: u64,
    /// Derive node keys from this seed (reproducible network) instead of OS randomness.
    #[arg(long)]
    seed: Option<u64>,
    /// What the chain's transactions are: `transfer` (signed Ethereum transfers, executed) or
    /// `raw` (opaque, not executed: a consensus benchmark mode).
    #[arg(long, default_value = "transfer", value_parser = parse_execution)]
    execution: corecell::config::genesis::ExecutionMode,
}

fn parse_execution(text: &str) -> Result<corecell::config::genesis::ExecutionMode, String> {
    use corecell::config::genesis::ExecutionMode;
    match text {
        "transfer" => Ok(ExecutionMode::Transfer),
        "raw" => Ok(ExecutionMode::Raw),
        other => Err(format!("`{other}`: expected `transfer` or `raw`")),
    }
}

#[derive(Args)]
struct NodeArgs {
    /// The node's config file.
    #[arg(long)]
    config: PathBuf,
    /// Load and validate the config, genesis and key, print a summary, and exit.
    #[arg(long)]
    check: bool,
    /// Load and validate as `--check` does, then print the node's topology (its executors,
    /// the CPUs they are placed on, the shards each runs, the links between shards) and exit.
    #[arg(long)]
    print_topology: bool,
    /// Serve Prometheus metrics on this address (overrides `[metrics] listen`).
    #[arg(long)]
    metrics: Option<std::net::SocketAddr>,
}

#[derive(Args)]
struct SimArgs {
    /// Seeds per scenario.
    #[arg(long, default_value_t = 100)]
    seeds: u64,
    /// First seed.
    #[arg(long, default_value_t = 0)]
    start: u64,
    /// Run this one seed only (with --trace: print its event trace).
    #[arg(long)]
    seed: Option<u64>,
    /// Council size [default: drawn per scenario and seed].
    #[arg(long)]
    council: Option<usize>,
    /// Committee size [default: the scenario's, clamped to the council].
    #[arg(long)]
    committee: Option<usize>,
    /// Heights every honest node must finalize after the faults heal.
    #[arg(long, default_value_t = 50)]
    heights: u64,
    /// A scenario name, a comma-separated list, or `all`.
    #[arg(long, default_value = "all")]
    scenario: String,
    /// Target block period in milliseconds.
    #[arg(long, default_value_t = 500)]
    block_period_ms: u64,
    /// Signature scheme: auto (BLS for every tenth seed on councils of at most 7), fast, bls.
    #[arg(long, default_value = "auto")]
    scheme: String,
    /// Deliberately broken machines to prove the checkers fire: quorum-minus-one, no-lock.
    #[arg(long)]
    weaken: Option<String>,
    /// Print the event trace of the run (needs --seed).
    #[arg(long)]
    trace: bool,
    /// Print one JSON object per run.
    #[arg(long)]
    json: bool,
    /// Worker threads [default: available cores].
    #[arg(long)]
    jobs: Option<usize>,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        // Colours only on a terminal: log files stay greppable.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Keys(KeysCommand::New { out, force }) => keys_new(&out, force),
        Command::Keys(KeysCommand::Show { key }) => keys_show(&key),
        Command::Genesis(args) => genesis(args),
        Command::Node(args) => node(args),
        Command::Sim(args) => sim(args),
        Command::Testnet(args) => testnet(args),
        Command::Bench(args) => bench(args),
        Command::Db(DbCommand::Check {
            data,
            genesis,
            full,
        }) => db_check(&data, genesis, full),
        Command::RpcBench(args) => {
            corecell::rpc::bench::rpc_bench(&corecell::rpc::bench::RpcBenchArgs {
                url: args.url,
                method: args.method,
                concurrency: args.concurrency,
                duration: std::time::Duration::from_secs(args.duration),
                max_requests: args.max_requests,
                accounts: args.accounts,
                txs_per_account: args.txs_per_account,
                first_nonce: args.first_nonce,
                chain_id: args.chain_id,
                rpc_cpu: args.rpc_cpu,
                exec_cpu: args.exec_cpu,
            })
            .map(|report| println!("{report}"))
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

fn keys_new(out: &std::path::Path, force: bool) -> Result<(), String> {
    let key = NodeKey::generate().map_err(|e| format!("the OS random source failed: {e}"))?;
    key.write(out, force).map_err(|e| match e.kind() {
        std::io::ErrorKind::AlreadyExists => format!(
            "{} already exists (use --force to overwrite)",
            out.display()
        ),
        _ => format!("cannot write {}: {e}", out.display()),
    })?;
    println!("wrote {} (mode 0600)", out.display());
    println!("node_id        {}", to_hex(&key.node_id));
    println!("bls_public_key {}", to_hex(&key.public_key));
    Ok(())
}

fn keys_show(path: &std::path::Path) -> Result<(), String> {
    let key = NodeKey::load(path).map_err(|e| e.to_string())?;
    println!("node_id             {}", to_hex(&key.node_id));
    println!("bls_public_key      {}", to_hex(&key.public_key));
    println!("proof_of_possession {}", to_hex(&key.proof_of_possession));
    Ok(())
}

fn genesis(a: GenesisArgs) -> Result<(), String> {
    let timestamp_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|e| format!("system clock before 1970: {e}"))?
        .as_millis() as u64;
    let spec = NetworkSpec {
        cns: a.cns,
        pns: a.pns,
        ens: a.ens,
        host: a.host,
        base_port: a.base_port,
        committee_size: a.committee_size,
        block_period_ms: a.block_period_ms,
        accounts: a.accounts,
        chain_id: a.chain_id,
        timestamp_ms,
        seed: a.seed,
        execution: a.execution,
    };
    let started = std::time::Instant::now();
    let net = spec.generate(&a.out)?;
    println!("wrote {}", net.genesis_path.display());
    println!(
        "wrote {} ({} development accounts; their keys are public)",
        net.accounts_path.display(),
        a.accounts
    );
    println!(
        "{:<8} {:<9} {:<22} {:<22} config",
        "node", "role", "p2p", "rpc"
    );
    for n in &net.nodes {
        let rpc = n.rpc.map(|r| r.to_string()).unwrap_or_else(|| "-".into());
        println!(
            "{:<8} {:<9} {:<22} {:<22} {}",
            n.name,
            n.role.name(),
            n.p2p.to_string(),
            rpc,
            n.config_path.display()
        );
    }
    // Load back what was written, exactly as `node --check` will: a generator bug shows here.
    for n in &net.nodes {
        NodeSetup::load(&n.config_path)
            .map_err(|e| format!("generated config does not load: {e}"))?;
    }
    println!(
        "{} nodes written and checked in {:.1?}",
        net.nodes.len(),
        started.elapsed()
    );
    println!(
        "next: corecell node --config {} --check",
        net.nodes[0].config_path.display()
    );
    Ok(())
}

fn node(a: NodeArgs) -> Result<(), String> {
    let setup = NodeSetup::load(&a.config).map_err(|e| e.to_string())?;
    let c = &setup.config;
    let g = &setup.genesis;
    println!("config ok: {}", c.path.display());
    println!(
        "  node      {} ({}), id {}",
        c.name,
        c.role.name(),
        to_hex(&setup.key.node_id)
    );
    if let Some(i) = setup.council_index {
        println!("  council   member #{i} of {}", g.council.len());
    }
    println!(
        "  genesis   chain {} | council {} | committee {} | block period {} ms | {} accounts",
        g.chain_id,
        g.council.len(),
        g.committee_size,
        g.block_period_ms,
        g.accounts.len()
    );
    println!("  genesis   block hash {}", to_hex(&g.header().hash()));
    println!(
        "  network   listen {} | {} peers | {} bootnodes | {} admitted",
        c.listen,
        c.peers.len(),
        c.bootnodes.len(),
        c.allowlist.len()
    );
    if c.allowlist.is_empty() && c.role != Role::Bootnode {
        println!("  warning   the allowlist is empty: this node admits no inbound peer");
    }
    if let Some(rpc) = c.rpc_listen {
        println!("  rpc       {rpc}");
    }
    println!(
        "  runtime   placement {:?} | io_memory {} KiB | data {}",
        c.placement,
        c.io_memory_kib,
        c.data_dir.display()
    );
    if let Some(ingress) = c.ingress_listen {
        println!("  ingress   {ingress}");
    }
    if a.print_topology {
        let plans = corecell::runtime::plan(
            &c.placement,
            c.role.shards(),
            &corecell::runtime::allowed_cpus(),
        )
        .map_err(|e| format!("{}: runtime.placement: {e}", c.path.display()))?;
        print!("{}", corecell::node::topology::describe(c.role, &plans));
        return Ok(());
    }
    if a.check {
        return Ok(());
    }
    corecell::node::run::run(
        setup,
        corecell::node::run::RunOptions { metrics: a.metrics },
    )
}

fn db_check(data: &std::path::Path, genesis: Option<PathBuf>, full: bool) -> Result<(), String> {
    use corecell::store::{self, WAL_FILE};
    if !data.is_dir() {
        return Err(format!("{} is not a directory", data.display()));
    }
    let genesis_path = match genesis {
        Some(g) => g,
        None => [
            data.join("../genesis.toml"),
            data.join("../../genesis.toml"),
        ]
        .into_iter()
        .find(|p| p.is_file())
        .ok_or_else(|| {
            format!(
                "no genesis.toml next to {} (pass --genesis FILE)",
                data.display()
            )
        })?,
    };
    let genesis =
        corecell::config::genesis::Genesis::load(&genesis_path, corecell::exec::genesis_state_root)
            .map_err(|e| e.to_string())?;
    let (log, forged) =
        store::scan_block_log_with_bodies(data, &genesis.header()).map_err(|e| e.to_string())?;
    println!(
        "block log  {} ({} segment{})",
        data.display(),
        log.segments.len(),
        if log.segments.len() == 1 { "" } else { "s" }
    );
    for segment in &log.segments {
        let name = segment.path.file_name().map_or_else(
            || segment.path.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        );
        let heights = if segment.blocks == 0 {
            "no blocks".to_string()
        } else {
            format!(
                "heights {}..={}",
                segment.first_height,
                segment.first_height + segment.blocks - 1
            )
        };
        println!(
            "  {name}  {heights}, {} bytes, {} good{}",
            segment.file_len,
            segment.good_len,
            segment_tail(segment)
        );
    }
    let head = &log.head;
    match log.blocks() {
        0 => println!("  no blocks"),
        blocks => println!(
            "  {blocks} blocks, heights 1..={}, head {} (round {}, {} ms)",
            head.height,
            to_hex(&head.hash()),
            head.round,
            head.timestamp_ms
        ),
    }
    match forged {
        None => println!("  every block's transactions match its header's transactions root"),
        Some(height) => {
            return Err(format!(
                "block {height} holds transactions its certified header does not commit to \
                 (stored from a tampering peer by an older version): the node cuts its log \
                 back to height {} on its next start and fetches the rest from its peers",
                height - 1
            ))
        }
    }
    let wal = store::scan_wal(data).map_err(|e| e.to_string())?;
    let head_height = log.head.height;
    let live = wal
        .records
        .iter()
        .filter(|r| r.height() > head_height)
        .count();
    println!("wal        {}", data.join(WAL_FILE).display());
    println!(
        "  {} records ({} about heights above the head), {} bytes, {} good{}",
        wal.records.len(),
        live,
        wal.file_len,
        wal.good_len,
        tail_note(wal.tail, wal.file_len - wal.good_len)
    );
    if genesis.execution == corecell::config::genesis::ExecutionMode::Transfer {
        db_check_state(data, &genesis, &log.head, &log.index, full)?;
    }
    println!("ok");
    Ok(())
}

/// The state part of `db check`: the snapshots found, then the state replayed (from the newest
/// usable snapshot, or the genesis with `full`) to the head, every block's root checked.
fn db_check_state(
    data: &std::path::Path,
    genesis: &corecell::config::genesis::Genesis,
    head: &corecell::types::BlockHeader,
    index: &corecell::store::BlockIndex,
    full: bool,
) -> Result<(), String> {
    use corecell::exec::snapshot;
    let dir = data.join(corecell::store::snapshots::SNAPSHOT_DIR);
    let snapshots = corecell::store::snapshots::list(&dir)?;
    let heights: Vec<String> = snapshots.iter().map(|(h, _)| h.to_string()).collect();
    println!(
        "state      {} ({} snapshot{}{})",
        dir.display(),
        snapshots.len(),
        if snapshots.len() == 1 { "" } else { "s" },
        if heights.is_empty() {
            String::new()
        } else {
            format!(" at heights {}", heights.join(", "))
        }
    );
    let started = std::time::Instant::now();
    let start = if full {
        snapshot::ReplayStart::Genesis
    } else {
        snapshot::ReplayStart::NewestSnapshot
    };
    let mut audit = snapshot::audit_state(data, genesis, head, index, start)?;
    let root = audit.state.root();
    if !audit.root_matches_head {
        return Err(format!(
            "the state at height {} has root {}, the head's header says {}",
            audit.state.height(),
            to_hex(&root),
            to_hex(&head.state_root)
        ));
    }
    if !audit.supply_conserved {
        return Err("balances plus burned fees are not the genesis supply".into());
    }
    let (state, from) = (&audit.state, audit.snapshot_height);
    println!(
        "  replayed {} to height {} in {:.1} s: root {} = the head's; {} accounts, {} wei burned, supply conserved",
        match from {
            None => "from the genesis".to_string(),
            Some(h) => format!("from the snapshot at height {h}"),
        },
        state.height(),
        started.elapsed().as_secs_f64(),
        to_hex(&root),
        state.len(),
        state.burned()
    );
    Ok(())
}

/// `db check`'s note on a block log segment whose good records end before the file.
fn segment_tail(segment: &corecell::store::SegmentScan) -> String {
    tail_note(segment.tail, segment.file_len - segment.good_len)
}

/// `db check`'s note on the `bytes` after a file's last good record.
fn tail_note(tail: corecell::store::Tail, bytes: u64) -> String {
    use corecell::store::Tail;
    match tail {
        Tail::Clean => String::new(),
        Tail::ZeroPadding => format!(
            "; {bytes} bytes of zero padding after the last record (DMA page rounding left by \
             a stop without cleanup; cut when the node starts)"
        ),
        Tail::Torn => format!("; torn tail of {bytes} bytes (cut when the node starts)"),
    }
}

/// Sets `SIGINT` and `SIGTERM` to raise the returned flag instead of killing the process.
fn interrupt_flag() -> Result<std::sync::Arc<std::sync::atomic::AtomicBool>, String> {
    let interrupted = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, interrupted.clone())
            .map_err(|e| format!("installing the signal handler: {e}"))?;
    }
    Ok(interrupted)
}

fn testnet(a: TestnetArgs) -> Result<(), String> {
    use corecell::bench::sweep;
    use corecell::bench::testnet::{self, TestnetOptions, Workload};
    let workload = Workload::parse(&a.workload)?;
    let rates = a.sweep.as_deref().map(sweep::parse_rates).transpose()?;
    let dir = match a.dir {
        Some(d) => d,
        None => {
            let base =
                std::env::temp_dir().join(format!("corecell-testnet-{}", std::process::id()));
            base.join(if rates.is_some() { "sweep" } else { "net" })
        }
    };
    let binary =
        std::env::current_exe().map_err(|e| format!("finding the corecell binary: {e}"))?;
    let options = TestnetOptions {
        dir,
        cns: a.cns,
        pns: a.pns,
        ens: a.ens,
        workload,
        rate: a.rate,
        accounts: a.accounts,
        tx_size: a.tx_size,
        duration: std::time::Duration::from_secs(a.duration),
        block_period_ms: a.block_period_ms,
        base_port: a.base_port,
        json: a.json.clone(),
        binary,
        kill_at: a.kill_at.map(std::time::Duration::from_secs),
        placement: a.placement.clone(),
        rpc_index_mib: a.rpc_index_mib,
    };
    if let Some(rates) = rates {
        sweep::check(&options, &rates)?;
        let interrupted = interrupt_flag()?;
        let result = sweep::run(&options, &rates, interrupted)?;
        println!();
        println!(
            "sweep: {} of {} rates run ({} workload, {} CNs, {} s each)",
            result.points.len(),
            rates.len(),
            result.workload,
            result.cns,
            result.duration_s
        );
        print!("{}", sweep::table(&result.points));
        let (json, svg) = sweep::write_outputs(&options.dir, &result)?;
        println!("sweep written to {} and {}", json.display(), svg.display());
        if let Some(path) = &a.json {
            std::fs::write(path, result.to_json())
                .map_err(|e| format!("writing {}: {e}", path.display()))?;
            println!("sweep written to {}", path.display());
        }
        if let Some(why) = &result.stopped_early {
            return Err(format!("the sweep stopped early: {why}"));
        }
        return Ok(());
    }
    testnet::check(&options)?;
    let interrupted = interrupt_flag()?;
    let report = testnet::run(&options, interrupted)?;
    println!();
    print!("{}", report.summary_table());
    if let Some(path) = &a.json {
        std::fs::write(path, report.to_json())
            .map_err(|e| format!("writing {}: {e}", path.display()))?;
        println!("report written to {}", path.display());
    }
    testnet::verdict(&report)
}

fn bench(a: BenchArgs) -> Result<(), String> {
    use corecell::bench::remote::{self, BenchOptions};
    use corecell::bench::testnet::Workload;
    let options = BenchOptions {
        targets: a.targets,
        endpoints: a.endpoints,
        metrics: a.metrics,
        workload: Workload::parse(&a.workload)?,
        rate: a.rate,
        duration: std::time::Duration::from_secs(a.duration),
        tx_size: a.tx_size,
        accounts: a.accounts,
        first_account: a.first_account,
        nonce_start: a.nonce_start,
        genesis: a.genesis,
        chain_id: a.chain_id,
    };
    // Bad options fail before the signal handler or any connection.
    remote::plan(&options)?;
    let interrupted = interrupt_flag()?;
    let report = remote::run(&options, &interrupted)?;
    println!();
    print!("{}", report.summary_table());
    if let Some(path) = &a.json {
        std::fs::write(path, report.to_json())
            .map_err(|e| format!("writing {}: {e}", path.display()))?;
        println!("report written to {}", path.display());
    }
    if report.finalized_txs == 0 {
        return Err(format!(
            "nothing was finalized ({} submitted, {} refused, {} dropped)",
            report.submitted,
            report.rejected_total(),
            report.dropped
        ));
    }
    Ok(())
}

fn sim(a: SimArgs) -> Result<(), String> {
    use corecell::consensus::Weakening;
    use corecell::sim::{batch, run_batch, BatchOptions, RunOptions, Scenario, SchemeChoice};

    let scenarios = Scenario::parse_list(&a.scenario)?;
    if let Some(n) = a.council {
        if !(1..=corecell::types::MAX_COUNCIL_SIZE).contains(&n) {
            return Err(format!(
                "--council {n} is outside 1..={}",
                corecell::types::MAX_COUNCIL_SIZE
            ));
        }
    }
    if a.committee == Some(0) {
        return Err("--committee must be at least 1".into());
    }
    if a.heights == 0 {
        return Err("--heights must be at least 1".into());
    }
    if a.trace && a.seed.is_none() {
        return Err("--trace prints one run: give it --seed".into());
    }
    let mut weakening = Weakening::default();
    for w in a.weaken.iter().flat_map(|w| w.split(',')) {
        match w.trim() {
            "quorum-minus-one" => weakening.quorum_minus_one = true,
            "no-lock" => weakening.no_lock = true,
            other => {
                return Err(format!(
                    "unknown weakening `{other}` (expected quorum-minus-one, no-lock)"
                ))
            }
        }
    }
    let mut template = RunOptions::new(scenarios[0], 0);
    template.council = a.council;
    template.committee = a.committee;
    template.heights = a.heights;
    template.block_period_ms = a.block_period_ms;
    template.weakening = weakening;
    template.scheme = SchemeChoice::parse(&a.scheme)?;
    template.trace = a.trace;
    let seeds: Vec<u64> = match a.seed {
        Some(s) => vec![s],
        None => (a.start..a.start.saturating_add(a.seeds)).collect(),
    };
    let jobs = a.jobs.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    });
    let opts = BatchOptions {
        scenarios: scenarios.clone(),
        seeds: seeds.clone(),
        template,
        jobs,
        progress: true,
    };
    let summary = run_batch(&opts);
    for r in &summary.reports {
        if a.trace {
            println!(
                "# trace of {} seed {} ({} scheme): {}",
                r.options.scenario.name(),
                r.options.seed,
                r.scheme,
                r.plan
            );
            for line in &r.trace_lines {
                println!("{line}");
            }
            println!(
                "# end: {} events, honest heights {}..{} (target {}), {:.3} virtual s, trace {}",
                r.events,
                r.min_finalized,
                r.max_finalized,
                r.target,
                r.virtual_ms as f64 / 1000.0,
                r.trace_hash
            );
        }
        if a.json {
            println!("{}", batch::report_json(r));
        }
    }
    for r in summary.failed_runs() {
        println!(
            "FAIL {} seed {} ({} scheme; {})",
            r.options.scenario.name(),
            r.options.seed,
            r.scheme,
            r.plan
        );
        for v in &r.violations {
            println!("  {v}");
        }
        println!("  replay: {}", r.options.replay_command());
    }
    if !a.json {
        println!(
            "{:<22} {:>5} {:>7} {:>8} {:>10} {:>9} {:>6}",
            "scenario", "runs", "safety", "liveness", "min height", "virtual s", "max r"
        );
        for (s, t) in &summary.per_scenario {
            println!(
                "{:<22} {:>5} {:>7} {:>8} {:>10} {:>9.1} {:>6}",
                s.name(),
                t.runs,
                t.safety,
                t.liveness,
                t.min_finalized.unwrap_or(0),
                t.virtual_ms as f64 / 1000.0,
                t.max_round
            );
        }
    }
    println!("{}", summary.to_json(seeds.len(), &scenarios));
    let failed = summary.failed_runs().count();
    if failed > 0 {
        return Err(format!(
            "{failed} of {} runs broke an invariant ({} safety violations, {} liveness failures)",
            summary.reports.len(),
            summary.safety_violations(),
            summary.liveness_failures()
        ));
    }
    Ok(())
}
