//! Running a node: wiring the role's shards onto the runtime (`corecell node`).
//!
//! A CN runs four shards: net, consensus, exec, store (see DESIGN.md section 1), connected by
//! bounded lock-free channels:
//!
//! ```text
//!   net --Inbound--> consensus --NetCommand--> net
//!   net --BatchIn--> exec --ExecToNet--> net
//!   net --SyncServe--> store --PeerFrame--> net
//!   consensus --ExecRequest--> exec --ExecReply--> consensus
//!   consensus --StoreRequest--> store --StoreReply--> consensus
//! ```
//!
//! Shutdown (SIGINT/SIGTERM): a stop flag is set; net stops accepting and closes its
//! connections; consensus finishes the effect in hand (a persist or commit waits for its
//! fsync) and drops its senders; exec and store then see their inboxes close, the store
//! fsyncs and closes its files, and the process exits 0.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;

use super::metrics::{self, NodeCounters};
use super::topology::{Ends, ShardEnds};
use crate::config::clock::now_ms;
use crate::config::genesis::ExecutionMode;
use crate::config::{Role, Shard};
use crate::consensus::{BlsScheme, ConsensusConfig, Follower, Machine, Weakening};
use crate::consensus_shard::FollowerChannels;
use crate::consensus_shard::{
    self, follower as follower_shard, ConsensusChannels, ConsensusCounters,
};
use crate::exec::{
    self, Engine, ExecChannels, ExecCounters, RawPool, SnapshotPolicy, TransferEngine,
};
use crate::net::{self, DialTarget, NetChannels, NetConfig, NetCounters, PeerLimits};
use crate::node::setup::NodeSetup;
use crate::rpc;
use crate::runtime::{self, NodeShardStats, Runtime, ShardStart};
use crate::store::{self, StoreChannels};

/// Round timeout of round 0 (ms); later rounds double it, up to [`ROUND_TIMEOUT_MAX_MS`].
pub const ROUND_TIMEOUT_BASE_MS: u64 = 400;
/// Cap of the round timeout (ms).
pub const ROUND_TIMEOUT_MAX_MS: u64 = 8000;

/// Options from the command line that override the config.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// `--metrics ADDR`.
    pub metrics: Option<SocketAddr>,
}

/// Runs the node until SIGINT/SIGTERM or a fatal error.
pub fn run(setup: NodeSetup, options: RunOptions) -> Result<(), String> {
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, stop.clone())
            .map_err(|e| format!("installing the signal handler: {e}"))?;
    }
    match setup.config.role {
        Role::Cn | Role::Pn | Role::En => run_shards(setup, options, stop),
        Role::Bootnode => super::bootnode_run::run_bootnode(setup, options, stop),
    }
}

/// The loader of a CN's, PN's or EN's run-time permissions: the config at `path` validated
/// as at start (errors name the file and field); only `network.allowlist` and
/// `[[network.peers]]` are taken from it, and a change of role is refused.
fn permission_loader(path: std::path::PathBuf, role: Role) -> net::PermissionLoader {
    Box::new(move || {
        let config = crate::config::NodeConfig::load(&path).map_err(|e| e.to_string())?;
        if config.role != role {
            return Err(format!(
                "{}: role changed from {} to {}; that needs a restart",
                path.display(),
                role.name(),
                config.role.name()
            ));
        }
        Ok(net::Permissions {
            allowlist: config.allowlist,
            dial: config.peers.iter().map(DialTarget::from).collect(),
        })
    })
}

/// How long shutdown may take once asked for before the process gives up on a clean exit.
pub const SHUTDOWN_DEADLINE: std::time::Duration = std::time::Duration::from_secs(10);

/// Waits for the runtime to finish; once `stop` is set, waits at most [`SHUTDOWN_DEADLINE`].
pub(super) fn join_with_deadline(runtime: Runtime, stop: &AtomicBool) -> Result<(), String> {
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("join".into())
        .spawn(move || {
            let _ = done_tx.send(runtime.join());
        })
        .map_err(|e| format!("starting the join thread: {e}"))?;
    let mut stopping_since = None;
    loop {
        match done_rx.recv_timeout(std::time::Duration::from_millis(50)) {
            Ok(result) => return result,
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                return Err("the runtime join thread died".into())
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
        }
        if stop.load(Relaxed) {
            let since = *stopping_since.get_or_insert_with(std::time::Instant::now);
            if since.elapsed() > SHUTDOWN_DEADLINE {
                return Err(format!(
                    "shards did not stop within {} s of the stop request",
                    SHUTDOWN_DEADLINE.as_secs()
                ));
            }
        }
    }
}

/// Everything a CN, PN or EN needs before its shards start: the start-up input checked, the
/// data directory recovered, the engine loaded, the settings of each shard.
struct NodeParts {
    config: crate::config::NodeConfig,
    genesis: crate::config::genesis::Genesis,
    secret: crate::crypto::bls::BlsSecretKey,
    me: Option<crate::types::CouncilIndex>,
    /// The data directory as found (the store shard takes it).
    recovered: Option<store::Recovered>,
    /// The last finalized header found there.
    head_header: crate::types::BlockHeader,
    /// The consensus WAL's records found there (a CN's machine restarts from them).
    wal: Vec<crate::consensus::WalRecord>,
    /// CNs and ENs execute; a PN only checks and relays blocks.
    engine: Option<(Engine, Option<SnapshotPolicy>)>,
    consensus_config: ConsensusConfig,
    net_config: NetConfig,
}

impl NodeParts {
    fn prepare(setup: NodeSetup) -> Result<NodeParts, String> {
        let NodeSetup {
            config,
            genesis,
            key,
            council_index,
        } = setup;
        let role = config.role;
        assert!(
            matches!(role, Role::Cn | Role::Pn | Role::En),
            "a CN, PN or EN runs the node shards"
        );
        let me = match (role, council_index) {
            (Role::Cn, None) => {
                return Err(format!(
                    "{}: this node's key (node id {}) is not in the genesis council, so it cannot run as a CN",
                    config.path.display(),
                    crate::config::to_hex(&key.node_id)
                ))
            }
            (_, me) => me,
        };
        let recovered =
            store::recover(&config.data_dir, &genesis.header()).map_err(|e| e.to_string())?;
        tracing::info!(
            node = %config.name,
            role = role.name(),
            head = recovered.head.height,
            wal_records = recovered.wal.len(),
            cut_bytes = ?recovered.cut,
            "data directory recovered"
        );
        let engine = if role == Role::Pn {
            None
        } else {
            Some(match genesis.execution {
                ExecutionMode::Transfer => {
                    let loaded = exec::snapshot::load_state(
                        &config.data_dir,
                        &genesis,
                        &recovered.head,
                        &recovered.index,
                    )?;
                    let state = loaded.state;
                    tracing::info!(
                        height = state.height(),
                        accounts = state.len(),
                        snapshot = ?loaded.snapshot_height,
                        "account state ready"
                    );
                    (
                        Engine::Transfer(Box::new(TransferEngine::new(state))),
                        Some(SnapshotPolicy {
                            every_blocks: config.snapshot_interval_blocks,
                        }),
                    )
                }
                ExecutionMode::Raw => (
                    Engine::Raw(RawPool::new(
                        exec::DEFAULT_POOL_BYTES,
                        exec::DEFAULT_POOL_TXS,
                    )),
                    None,
                ),
            })
        };
        let consensus_config = ConsensusConfig {
            chain_id: genesis.chain_id,
            council_size: genesis.council.len(),
            committee_size: genesis.committee_size,
            block_period_ms: genesis.block_period_ms,
            round_timeout_base_ms: ROUND_TIMEOUT_BASE_MS,
            round_timeout_max_ms: ROUND_TIMEOUT_MAX_MS,
            weakening: Weakening::default(),
        };
        let net_config = NetConfig {
            chain_id: genesis.chain_id,
            role,
            secret: key.secret.clone(),
            listen: config.listen,
            ingress: config.ingress_listen,
            council: genesis.council.iter().map(|m| m.node_id).collect(),
            dial: config.peers.iter().map(DialTarget::from).collect(),
            allowlist: config.allowlist.clone(),
            encryption: config.encryption,
            bootnodes: config.bootnodes.clone(),
            head: recovered.head.height,
            limits: PeerLimits::default(),
            #[cfg(feature = "byzantine")]
            tamper_bodies: config.byzantine.as_ref().is_some_and(|b| {
                b.behaviours
                    .contains(&crate::config::byzantine::Behaviour::TamperBodies)
            }),
        };
        Ok(NodeParts {
            config,
            genesis,
            secret: key.secret,
            me,
            head_header: recovered.head.clone(),
            wal: recovered.wal.clone(),
            recovered: Some(recovered),
            engine,
            consensus_config,
            net_config,
        })
    }
}

/// What every shard's start shares: the stop flag, the first fatal error, its statistics.
#[derive(Clone)]
struct ShardContext {
    stop: Arc<AtomicBool>,
    fatal: Arc<std::sync::Mutex<Option<String>>>,
    stats: NodeShardStats,
    counters: NodeCounters,
}

/// Runs a CN, PN or EN until `stop` is set: its shards from the topology table
/// ([`super::topology`]), each started with its ends of the role's links, plus the JSON-RPC and
/// metrics threads.
pub fn run_shards(
    setup: NodeSetup,
    options: RunOptions,
    stop: Arc<AtomicBool>,
) -> Result<(), String> {
    let mut parts = NodeParts::prepare(setup)?;
    let role = parts.config.role;
    let config = parts.config.clone();

    // EN: the JSON-RPC server's bridge to the exec shard; `highest_known` is fed by the
    // follower (for eth_syncing).
    let (rpc_bridge, rpc_inbox) = match config.rpc_listen {
        Some(_) => {
            let (bridge, inbox) = exec::queries::RpcBridge::new(rpc::DEFAULT_BRIDGE_QUEUE);
            (Some(bridge), Some(inbox))
        }
        None => (None, None),
    };
    let highest_known = rpc_bridge
        .as_ref()
        .map_or_else(Arc::default, |b| b.highest_known.clone());

    let stats: NodeShardStats = role.shards().iter().map(|s| (*s, Arc::default())).collect();
    let counters = NodeCounters {
        consensus: Arc::new(ConsensusCounters::default()),
        net: Arc::new(NetCounters::default()),
        exec: Arc::new(ExecCounters::default()),
        shards: stats.clone(),
    };
    counters
        .consensus
        .height
        .store(parts.head_header.height, Relaxed);
    let context = ShardContext {
        stop: stop.clone(),
        fatal: Arc::default(),
        stats,
        counters: counters.clone(),
    };

    // SIGHUP: the net shard re-reads the allowlist and static peers from the config file.
    let reload_flag = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGHUP, reload_flag.clone())
        .map_err(|e| format!("installing the SIGHUP handler: {e}"))?;
    let reload = net::Reload {
        flag: reload_flag,
        load: permission_loader(config.path.clone(), role),
    };

    let mut ends = Ends::for_role(role);
    let mut starts: BTreeMap<Shard, ShardStart> = BTreeMap::new();
    let mut reload = Some(reload);
    let mut rpc_inbox = rpc_inbox;
    let mut highest_known = Some(highest_known);
    for shard in role.shards() {
        let shard_ends = ends.take(*shard);
        let start = match shard {
            Shard::Net => start_net(
                &context,
                shard_ends,
                parts.net_config.clone(),
                reload.take().expect("one net shard"),
            ),
            Shard::Consensus => start_consensus(
                &context,
                shard_ends,
                &parts,
                highest_known.take().expect("one consensus shard"),
            ),
            Shard::Exec => start_exec(
                &context,
                shard_ends,
                parts
                    .engine
                    .take()
                    .expect("a role with an exec shard has an engine"),
                role,
                config.rpc_index_mib,
                rpc_inbox.take(),
            ),
            Shard::Store => start_store(
                &context,
                shard_ends,
                config.data_dir.clone(),
                parts.recovered.take().expect("one store shard"),
            ),
            Shard::Rpc => unreachable!("the JSON-RPC server is a thread, not a shard"),
        };
        starts.insert(*shard, start);
    }
    ends.done();

    let plans = runtime::plan(&config.placement, role.shards(), &runtime::allowed_cpus())
        .map_err(|e| format!("{}: runtime.placement: {e}", config.path.display()))?;
    for p in &plans {
        let names: Vec<&str> = p.shards.iter().map(|s| s.name()).collect();
        tracing::info!(cpu = ?p.cpu, shards = ?names, "executor");
    }
    let metrics_addr = options.metrics.or(config.metrics_listen);
    let metrics_thread = match metrics_addr {
        Some(addr) => Some(metrics::serve(addr, counters.clone(), stop.clone())?),
        None => None,
    };
    // The JSON-RPC server binds before the shards start, so a taken port is a clear error.
    let rpc_server = match (config.rpc_listen, rpc_bridge) {
        (Some(listen), Some(bridge)) => {
            let rpc_config =
                rpc::RpcConfig::new(listen, rpc::ChainInfo::from_genesis(&parts.genesis));
            let server = rpc::start(rpc_config, bridge, stop.clone())?;
            tracing::info!(address = %server.local_addr, "JSON-RPC serving");
            Some(server)
        }
        _ => None,
    };
    let runtime = Runtime::start(&plans, config.io_memory_kib as usize * 1024, starts)?;
    tracing::info!(node = %config.name, role = role.name(), council_index = ?parts.me, p2p = %config.listen, "node running");
    let result = join_with_deadline(runtime, &stop);
    stop.store(true, Relaxed);
    if let Some(t) = metrics_thread {
        let _ = t.join();
    }
    if let Some(server) = rpc_server {
        let _ = server.thread.join();
    }
    result?;
    if let Some(e) = context.fatal.lock().map_or(None, |mut f| f.take()) {
        return Err(e);
    }
    tracing::info!(
        node = %config.name,
        height = counters.consensus.height.load(Relaxed),
        "node stopped cleanly"
    );
    Ok(())
}

/// The net shard: peers, relay, ingress, discovery.
fn start_net(
    context: &ShardContext,
    ends: ShardEnds,
    net_config: NetConfig,
    reload: net::Reload,
) -> ShardStart {
    let context = context.clone();
    Box::new(move || {
        Box::pin(async move {
            let mut ends = ends.connect().await;
            let channels = NetChannels {
                from_consensus: ends.rx_always(Shard::Consensus),
                to_consensus: ends.tx_always(Shard::Consensus),
                to_exec: ends.tx(Shard::Exec),
                from_exec: ends.rx(Shard::Exec),
                to_store: ends.tx_always(Shard::Store),
                from_store: ends.rx_always(Shard::Store),
            };
            ends.done();
            let result = net::run(
                net_config,
                channels,
                context.stop.clone(),
                Some(reload),
                context.stats[&Shard::Net].clone(),
                context.counters.net.clone(),
            )
            .await;
            shard_finished(Shard::Net, result, &context.fatal, &context.stop);
        })
    })
}

/// The consensus shard: a CN's machine, or a PN's or EN's follower.
fn start_consensus(
    context: &ShardContext,
    ends: ShardEnds,
    parts: &NodeParts,
    highest_known: Arc<std::sync::atomic::AtomicU64>,
) -> ShardStart {
    let context = context.clone();
    let role = parts.config.role;
    let me = parts.me;
    let consensus_config = parts.consensus_config.clone();
    let head_header = parts.head_header.clone();
    let wal = parts.wal.clone();
    let secret = parts.secret.clone();
    let council = Arc::new(parts.genesis.council_keys.clone());
    let records = consensus_shard::ConsensusRecords {
        evidence_log: crate::consensus_shard::evidence::EvidenceLog::open(
            &parts.config.data_dir,
            parts.genesis.council.iter().map(|m| m.node_id).collect(),
        ),
        #[cfg(feature = "byzantine")]
        byzantine: match (&parts.config.byzantine, me) {
            (Some(settings), Some(me)) => {
                Some(crate::consensus_shard::byzantine::ByzantineLayer::new(
                    settings,
                    me,
                    parts.genesis.council.len(),
                    parts.genesis.chain_id,
                ))
            }
            _ => None,
        },
    };
    Box::new(move || {
        Box::pin(async move {
            let mut ends = ends.connect().await;
            let from_net = ends.rx_always(Shard::Net);
            let to_net = ends.tx_always(Shard::Net);
            let to_store = ends.tx_always(Shard::Store);
            let from_store = ends.rx_always(Shard::Store);
            let to_exec = ends.tx(Shard::Exec);
            let from_exec = ends.rx(Shard::Exec);
            ends.done();
            let (stop, stats, counters) = (
                context.stop.clone(),
                context.stats[&Shard::Consensus].clone(),
                context.counters.consensus.clone(),
            );
            let scheme = BlsScheme::new(secret, council);
            let result = match (me, role, to_exec, from_exec) {
                (Some(me), Role::Cn, Some(to_exec), Some(from_exec)) => {
                    let channels = ConsensusChannels {
                        from_net,
                        to_net,
                        to_exec,
                        from_exec,
                        to_store,
                        from_store,
                    };
                    let (machine, initial) =
                        Machine::new(consensus_config, scheme, me, head_header, &wal, now_ms());
                    consensus_shard::run(machine, initial, channels, stop, stats, counters, records)
                        .await
                }
                (_, _, to_exec, from_exec) => {
                    // A follower never asks exec for answers.
                    drop(from_exec);
                    let channels = FollowerChannels {
                        from_net,
                        to_net,
                        to_exec,
                        to_store,
                        from_store,
                    };
                    let follower = Follower::new(consensus_config, scheme, head_header, now_ms());
                    let progress = follower_shard::Progress { highest_known };
                    follower_shard::run(follower, channels, progress, stop, stats, counters).await
                }
            };
            shard_finished(Shard::Consensus, result, &context.fatal, &context.stop);
        })
    })
}

/// The exec shard: pool, execution, state, and (EN) the RPC thread's queries.
fn start_exec(
    context: &ShardContext,
    ends: ShardEnds,
    (engine, snapshots): (Engine, Option<SnapshotPolicy>),
    role: Role,
    rpc_index_mib: u64,
    rpc_inbox: Option<exec::queries::RpcInbox>,
) -> ShardStart {
    let context = context.clone();
    Box::new(move || {
        Box::pin(async move {
            let mut ends = ends.connect().await;
            let channels = ExecChannels {
                from_consensus: ends.rx_always(Shard::Consensus),
                to_consensus: ends.tx_always(Shard::Consensus),
                from_net: ends.rx_always(Shard::Net),
                to_net: ends.tx_always(Shard::Net),
                to_store: ends.tx(Shard::Store),
            };
            ends.done();
            // An EN sends on again what stays unconfirmed (its PN may have died).
            let resend = (role == Role::En).then(exec::Resend::default);
            let rpc = rpc_inbox.map(|inbox| exec::RpcService {
                inbox,
                index_max_bytes: (rpc_index_mib * 1024 * 1024) as usize,
            });
            let result = exec::run_with_rpc(
                engine,
                snapshots,
                channels,
                rpc,
                resend,
                context.stats[&Shard::Exec].clone(),
                context.counters.exec.clone(),
            )
            .await;
            shard_finished(Shard::Exec, result, &context.fatal, &context.stop);
        })
    })
}

/// The store shard: block log, WAL, fsync.
fn start_store(
    context: &ShardContext,
    ends: ShardEnds,
    dir: std::path::PathBuf,
    recovered: store::Recovered,
) -> ShardStart {
    let context = context.clone();
    Box::new(move || {
        Box::pin(async move {
            let mut ends = ends.connect().await;
            let channels = StoreChannels {
                from_consensus: ends.rx_always(Shard::Consensus),
                to_consensus: ends.tx_always(Shard::Consensus),
                from_net: ends.rx_always(Shard::Net),
                to_net: ends.tx_always(Shard::Net),
                from_exec: ends.rx(Shard::Exec),
            };
            ends.done();
            let result = store::run(
                dir,
                recovered,
                channels,
                context.stats[&Shard::Store].clone(),
            )
            .await;
            shard_finished(
                Shard::Store,
                result.map_err(|e| e.to_string()),
                &context.fatal,
                &context.stop,
            );
        })
    })
}

/// Logs a shard's end. A failed shard's error is kept (the first one becomes the node's exit
/// error) and the whole node is asked to stop.
pub(super) fn shard_finished(
    shard: Shard,
    result: Result<(), String>,
    fatal: &std::sync::Mutex<Option<String>>,
    stop: &AtomicBool,
) {
    if let Err(e) = result {
        tracing::error!(shard = shard.name(), error = %e, "shard failed; stopping the node");
        if let Ok(mut f) = fatal.lock() {
            f.get_or_insert(e);
        }
        stop.store(true, Relaxed);
    }
    tracing::info!(shard = shard.name(), "shard stopped");
}
