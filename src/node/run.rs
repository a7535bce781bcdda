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
use crate::config::clock::now_ms;
use crate::config::genesis::ExecutionMode;
use crate::config::{Role, Shard};
use crate::consensus::{BlsScheme, ConsensusConfig, Follower, Machine, Weakening};
use crate::consensus_shard::follower::FollowerChannels;
use crate::consensus_shard::{
    self, follower as follower_shard, ConsensusChannels, ConsensusCounters,
};
use crate::exec::{
    self, Engine, ExecChannels, ExecCounters, RawPool, SnapshotPolicy, TransferEngine,
};
use crate::net::{self, DialTarget, NetChannels, NetConfig, NetCounters, PeerLimits};
use crate::node::setup::NodeSetup;
use crate::rpc;
use crate::runtime::{self, Link, NodeShardStats, Runtime, ShardStart};
use crate::store::{self, StoreChannels};

/// Capacity of each shard-to-shard channel, in messages.
pub const LINK_CAPACITY: usize = 4096;
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
        Role::Cn | Role::Pn | Role::En => run_node(setup, options, stop),
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

/// Runs a CN, PN or EN until `stop` is set.
pub fn run_node(
    setup: NodeSetup,
    options: RunOptions,
    stop: Arc<AtomicBool>,
) -> Result<(), String> {
    let NodeSetup {
        config,
        genesis,
        key,
        council_index,
    } = setup;
    let role = config.role;
    assert!(
        matches!(role, Role::Cn | Role::Pn | Role::En),
        "run_node runs CNs, PNs and ENs"
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
    let genesis_header = genesis.header();
    let recovered = store::recover(&config.data_dir, &genesis_header).map_err(|e| e.to_string())?;
    tracing::info!(
        node = %config.name,
        role = role.name(),
        head = recovered.head.height,
        wal_records = recovered.wal.len(),
        cut_bytes = ?recovered.cut,
        "data directory recovered"
    );
    // CNs and ENs execute; a PN only checks and relays blocks.
    let exec_engine = if role == Role::Pn {
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
                        dir: config.data_dir.join(exec::snapshot::SNAPSHOT_DIR),
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
    let council = Arc::new(genesis.council_keys.clone());
    let consensus_config = ConsensusConfig {
        chain_id: genesis.chain_id,
        council_size: genesis.council.len(),
        committee_size: genesis.committee_size,
        block_period_ms: genesis.block_period_ms,
        round_timeout_base_ms: ROUND_TIMEOUT_BASE_MS,
        round_timeout_max_ms: ROUND_TIMEOUT_MAX_MS,
        weakening: Weakening::default(),
    };
    let head = Arc::new(std::sync::atomic::AtomicU64::new(recovered.head.height));
    let config_rpc_index_mib = config.rpc_index_mib;
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
        head: head.clone(),
        limits: PeerLimits::default(),
        #[cfg(feature = "byzantine")]
        tamper_bodies: config.byzantine.as_ref().is_some_and(|b| {
            b.behaviours
                .contains(&crate::config::byzantine::Behaviour::TamperBodies)
        }),
    };

    // Links (one per direction and pair).
    let net_cons: Link<net::Inbound> = Link::new(LINK_CAPACITY);
    let cons_net: Link<net::NetCommand> = Link::new(LINK_CAPACITY);
    let net_store: Link<store::SyncServe> = Link::new(LINK_CAPACITY);
    let store_net: Link<store::PeerFrame> = Link::new(LINK_CAPACITY);
    let cons_store: Link<store::StoreRequest> = Link::new(LINK_CAPACITY);
    let store_cons: Link<store::StoreReply> = Link::new(LINK_CAPACITY);
    // With an exec shard: batches and gossip with the net shard; requests from consensus
    // (answers only for a CN's machine).
    let exec_links = exec_engine.as_ref().map(|_| {
        (
            Link::<exec::BatchIn>::new(LINK_CAPACITY),
            Link::<exec::ExecToNet>::new(LINK_CAPACITY),
            Link::<exec::ExecRequest>::new(LINK_CAPACITY),
            Link::<exec::ExecReply>::new(LINK_CAPACITY),
        )
    });
    let (net_exec, exec_net, cons_exec, exec_cons) = match exec_links {
        Some((a, b, c, d)) => (Some(a), Some(b), Some(c), Some(d)),
        None => (None, None, None, None),
    };

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

    let shards: NodeShardStats = role.shards().iter().map(|s| (*s, Arc::default())).collect();
    let counters = NodeCounters {
        consensus: Arc::new(ConsensusCounters::default()),
        net: Arc::new(NetCounters::default()),
        exec: Arc::new(ExecCounters::default()),
        shards: shards.clone(),
    };
    counters
        .consensus
        .height
        .store(recovered.head.height, Relaxed);

    // The first fatal shard error: the node stops and exits non-zero with it.
    let fatal: Arc<std::sync::Mutex<Option<String>>> = Arc::default();
    let mut starts: BTreeMap<Shard, ShardStart> = BTreeMap::new();
    let (net_to_exec, exec_from_net) = match net_exec {
        Some(l) => (Some(l.sender), Some(l.receiver)),
        None => (None, None),
    };
    let (exec_to_net, net_from_exec) = match exec_net {
        Some(l) => (Some(l.sender), Some(l.receiver)),
        None => (None, None),
    };
    let (cons_to_exec, exec_from_cons) = match cons_exec {
        Some(l) => (Some(l.sender), Some(l.receiver)),
        None => (None, None),
    };
    let (exec_to_cons, cons_from_exec) = match exec_cons {
        Some(l) => (Some(l.sender), Some(l.receiver)),
        None => (None, None),
    };
    // SIGHUP: the net shard re-reads the allowlist and static peers from the config file.
    let reload_flag = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGHUP, reload_flag.clone())
        .map_err(|e| format!("installing the SIGHUP handler: {e}"))?;
    let reload = net::Reload {
        flag: reload_flag,
        load: permission_loader(config.path.clone(), role),
    };
    {
        let (stop, stats, c) = (
            stop.clone(),
            shards[&Shard::Net].clone(),
            counters.net.clone(),
        );
        let fatal = fatal.clone();
        let (from_consensus, to_consensus) = (cons_net.receiver, net_cons.sender);
        let (to_exec, from_exec) = (net_to_exec, net_from_exec);
        let (to_store, from_store) = (net_store.sender, store_net.receiver);
        starts.insert(
            Shard::Net,
            Box::new(move || {
                Box::pin(async move {
                    // Connect every end at once: each connect waits for its other end.
                    let from_consensus = glommio::spawn_local(from_consensus.connect());
                    let to_consensus = glommio::spawn_local(to_consensus.connect());
                    let to_exec = to_exec.map(|e| glommio::spawn_local(e.connect()));
                    let from_exec = from_exec.map(|e| glommio::spawn_local(e.connect()));
                    let to_store = glommio::spawn_local(to_store.connect());
                    let from_store = glommio::spawn_local(from_store.connect());
                    let channels = NetChannels {
                        from_consensus: from_consensus.await,
                        to_consensus: to_consensus.await,
                        to_exec: match to_exec {
                            Some(t) => Some(t.await),
                            None => None,
                        },
                        from_exec: match from_exec {
                            Some(t) => Some(t.await),
                            None => None,
                        },
                        to_store: to_store.await,
                        from_store: from_store.await,
                    };
                    let result =
                        net::run(net_config, channels, stop.clone(), Some(reload), stats, c).await;
                    shard_finished(Shard::Net, result, &fatal, &stop);
                })
            }),
        );
    }
    {
        let (stop, stats, c) = (
            stop.clone(),
            shards[&Shard::Consensus].clone(),
            counters.consensus.clone(),
        );
        let fatal = fatal.clone();
        let (from_net, to_net) = (net_cons.receiver, cons_net.sender);
        let (to_store, from_store) = (cons_store.sender, store_cons.receiver);
        let head_header = recovered.head.clone();
        let wal = recovered.wal.clone();
        let secret = key.secret.clone();
        let head = head.clone();
        let records = consensus_shard::ConsensusRecords {
            evidence_log: crate::consensus_shard::evidence::EvidenceLog::open(
                &config.data_dir,
                genesis.council.iter().map(|m| m.node_id).collect(),
            ),
            #[cfg(feature = "byzantine")]
            byzantine: match (&config.byzantine, me) {
                (Some(settings), Some(me)) => {
                    Some(crate::consensus_shard::byzantine::ByzantineLayer::new(
                        settings,
                        me,
                        genesis.council.len(),
                        genesis.chain_id,
                    ))
                }
                _ => None,
            },
        };
        starts.insert(
            Shard::Consensus,
            Box::new(move || {
                Box::pin(async move {
                    // Connect every end at once: each connect waits for its other end.
                    let from_net = glommio::spawn_local(from_net.connect());
                    let to_net = glommio::spawn_local(to_net.connect());
                    let to_exec = cons_to_exec.map(|e| glommio::spawn_local(e.connect()));
                    let from_exec = cons_from_exec.map(|e| glommio::spawn_local(e.connect()));
                    let to_store = glommio::spawn_local(to_store.connect());
                    let from_store = glommio::spawn_local(from_store.connect());
                    let (from_net, to_net) = (from_net.await, to_net.await);
                    let to_exec = match to_exec {
                        Some(t) => Some(t.await),
                        None => None,
                    };
                    let from_exec = match from_exec {
                        Some(t) => Some(t.await),
                        None => None,
                    };
                    let (to_store, from_store) = (to_store.await, from_store.await);
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
                            let (machine, initial) = Machine::new(
                                consensus_config,
                                scheme,
                                me,
                                head_header,
                                &wal,
                                now_ms(),
                            );
                            consensus_shard::run(
                                machine,
                                initial,
                                channels,
                                stop.clone(),
                                stats,
                                c,
                                records,
                            )
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
                            let follower =
                                Follower::new(consensus_config, scheme, head_header, now_ms());
                            let progress = follower_shard::Progress {
                                head,
                                highest_known,
                            };
                            follower_shard::run(
                                follower,
                                channels,
                                progress,
                                stop.clone(),
                                stats,
                                c,
                            )
                            .await
                        }
                    };
                    shard_finished(Shard::Consensus, result, &fatal, &stop);
                })
            }),
        );
    }
    if let (
        Some((engine, snapshots)),
        Some(from_consensus),
        Some(to_consensus),
        Some(from_net),
        Some(to_net),
    ) = (
        exec_engine,
        exec_from_cons,
        exec_to_cons,
        exec_from_net,
        exec_to_net,
    ) {
        let (stop, stats, c) = (
            stop.clone(),
            shards[&Shard::Exec].clone(),
            counters.exec.clone(),
        );
        let fatal = fatal.clone();
        starts.insert(
            Shard::Exec,
            Box::new(move || {
                Box::pin(async move {
                    // Connect every end at once: each connect waits for its other end.
                    let from_consensus = glommio::spawn_local(from_consensus.connect());
                    let to_consensus = glommio::spawn_local(to_consensus.connect());
                    let from_net = glommio::spawn_local(from_net.connect());
                    let to_net = glommio::spawn_local(to_net.connect());
                    let channels = ExecChannels {
                        from_consensus: from_consensus.await,
                        to_consensus: to_consensus.await,
                        from_net: from_net.await,
                        to_net: to_net.await,
                    };
                    // An EN sends on again what stays unconfirmed (its PN may have died).
                    let rpc_index_mib = config_rpc_index_mib;
                    let resend = (role == Role::En).then(exec::Resend::default);
                    let rpc = rpc_inbox.map(|inbox| exec::RpcService {
                        inbox,
                        index_max_bytes: (rpc_index_mib * 1024 * 1024) as usize,
                    });
                    let result =
                        exec::run_with_rpc(engine, snapshots, channels, rpc, resend, stats, c)
                            .await;
                    shard_finished(Shard::Exec, result, &fatal, &stop);
                })
            }),
        );
    }
    {
        let (stop, stats) = (stop.clone(), shards[&Shard::Store].clone());
        let fatal = fatal.clone();
        let (from_consensus, to_consensus) = (cons_store.receiver, store_cons.sender);
        let (from_net, to_net) = (net_store.receiver, store_net.sender);
        let dir = config.data_dir.clone();
        starts.insert(
            Shard::Store,
            Box::new(move || {
                Box::pin(async move {
                    // Connect every end at once: each connect waits for its other end.
                    let from_consensus = glommio::spawn_local(from_consensus.connect());
                    let to_consensus = glommio::spawn_local(to_consensus.connect());
                    let from_net = glommio::spawn_local(from_net.connect());
                    let to_net = glommio::spawn_local(to_net.connect());
                    let channels = StoreChannels {
                        from_consensus: from_consensus.await,
                        to_consensus: to_consensus.await,
                        from_net: from_net.await,
                        to_net: to_net.await,
                    };
                    let result = store::run(dir, recovered, channels, stats).await;
                    shard_finished(
                        Shard::Store,
                        result.map_err(|e| e.to_string()),
                        &fatal,
                        &stop,
                    );
                })
            }),
        );
    }

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
            let rpc_config = rpc::RpcConfig::new(listen, rpc::ChainInfo::from_genesis(&genesis));
            let server = rpc::start(rpc_config, bridge, stop.clone())?;
            tracing::info!(address = %server.local_addr, "JSON-RPC serving");
            Some(server)
        }
        _ => None,
    };
    let runtime = Runtime::start(&plans, config.io_memory_kib as usize * 1024, starts)?;
    tracing::info!(node = %config.name, role = role.name(), council_index = ?me, p2p = %config.listen, "node running");
    let result = join_with_deadline(runtime, &stop);
    stop.store(true, Relaxed);
    if let Some(t) = metrics_thread {
        let _ = t.join();
    }
    if let Some(server) = rpc_server {
        let _ = server.thread.join();
    }
    result?;
    if let Some(e) = fatal.lock().map_or(None, |mut f| f.take()) {
        return Err(e);
    }
    tracing::info!(
        node = %config.name,
        height = counters.consensus.height.load(Relaxed),
        "node stopped cleanly"
    );
    Ok(())
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
