//! Running a bootnode process (`corecell node --config bootnode.toml`, `role = "bootnode"`).
//!
//! A bootnode runs one shard, `net` ([`Role::Bootnode`]`.shards()`), on one glommio executor
//! placed by the config's `[runtime] placement`; the shard is [`bootnode::serve`]. Metrics
//! (optional, `[metrics] listen` or `--metrics`) use the node's usual endpoint: for a
//! bootnode `corecell_peers` is the number of registered nodes,
//! `corecell_refused_handshakes_total` counts refused connections and
//! `corecell_peer_violations_total` authenticated nodes dropped for breaking the protocol.
//!
//! Signals: SIGINT/SIGTERM stop it cleanly (exit 0). SIGHUP reloads the directory: the config
//! file is loaded and validated again exactly as at start (with its genesis and key), and its
//! `network.allowlist` and `network.peers` replace the running ones; a file that fails to
//! load, or that changes the role, `[bootnode] serves` or the key, is not applied (the reason
//! is logged and the running directory stays). Other changes (addresses, placement) need a
//! restart.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;

use super::metrics::{self, NodeCounters};
use super::run::{join_with_deadline, shard_finished, RunOptions};
use crate::config::to_hex;
use crate::config::{NodeConfig, Role, Shard};
use crate::consensus_shard::ConsensusCounters;
use crate::exec::ExecCounters;
use crate::net::bootnode::{self, BootnodeConfig, Directory, DiscoveredPeer};
use crate::net::NetCounters;
use crate::node::setup::NodeSetup;
use crate::runtime::{self, NodeShardStats, Runtime, ShardStart};

/// The directory a bootnode config names: its allowlist and its static peers.
pub fn directory_of(config: &NodeConfig) -> Directory {
    Directory {
        allowlist: config.allowlist.clone(),
        static_peers: config
            .peers
            .iter()
            .map(|p| DiscoveredPeer {
                role: p.role,
                node_id: p.node_id,
                address: p.address,
            })
            .collect(),
    }
}

/// Loads the config at `path` again (validated as at start) for a reload of a bootnode that
/// serves `serves` with key `node_id`.
fn reload_directory(path: &Path, serves: Role, node_id: [u8; 20]) -> Result<Directory, String> {
    let setup = NodeSetup::load(path).map_err(|e| e.to_string())?;
    let config = &setup.config;
    if config.role != Role::Bootnode || config.bootnode_serves != Some(serves) {
        return Err(format!(
            "{}: the role or [bootnode] serves changed; that needs a restart",
            path.display()
        ));
    }
    if setup.key.node_id != node_id {
        return Err(format!(
            "{}: the key changed; that needs a restart",
            path.display()
        ));
    }
    Ok(directory_of(config))
}

/// Runs a bootnode until `stop` is set.
pub fn run_bootnode(
    setup: NodeSetup,
    options: RunOptions,
    stop: Arc<AtomicBool>,
) -> Result<(), String> {
    let NodeSetup {
        config,
        genesis,
        key,
        ..
    } = setup;
    let serves = config.bootnode_serves.ok_or_else(|| {
        format!(
            "{}: a bootnode must say which tier it serves",
            config.path.display()
        )
    })?;
    let reload = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGHUP, reload.clone())
        .map_err(|e| format!("installing the SIGHUP handler: {e}"))?;
    let council: std::collections::BTreeSet<[u8; 20]> =
        genesis.council.iter().map(|m| m.node_id).collect();
    if serves == Role::Cn {
        for id in config.allowlist.iter().filter(|id| !council.contains(*id)) {
            tracing::warn!(
                node = %to_hex(id),
                "allowlisted but not a council member: a CN bootnode will not admit it"
            );
        }
    }
    let bootnode_config = BootnodeConfig {
        chain_id: genesis.chain_id,
        secret: key.secret.clone(),
        listen: config.listen,
        serves,
        council,
        directory: directory_of(&config),
    };
    let config_path: PathBuf = config.path.clone();
    let node_id = key.node_id;

    let shards: NodeShardStats = Role::Bootnode
        .shards()
        .iter()
        .map(|s| (*s, Arc::default()))
        .collect();
    let counters = NodeCounters {
        consensus: Arc::new(ConsensusCounters::default()),
        net: Arc::new(NetCounters::default()),
        exec: Arc::new(ExecCounters::default()),
        shards: shards.clone(),
    };
    let fatal: Arc<std::sync::Mutex<Option<String>>> = Arc::default();
    let mut starts: BTreeMap<Shard, ShardStart> = BTreeMap::new();
    {
        let (stop, stats, c) = (
            stop.clone(),
            shards[&Shard::Net].clone(),
            counters.net.clone(),
        );
        let fatal = fatal.clone();
        let reload = reload.clone();
        starts.insert(
            Shard::Net,
            Box::new(move || {
                Box::pin(async move {
                    let loader: bootnode::DirectoryLoader =
                        Box::new(move || reload_directory(&config_path, serves, node_id));
                    let result =
                        bootnode::serve(bootnode_config, loader, reload, stop.clone(), stats, c)
                            .await;
                    shard_finished(Shard::Net, result, &fatal, &stop);
                })
            }),
        );
    }
    let plans = runtime::plan(
        &config.placement,
        Role::Bootnode.shards(),
        &runtime::allowed_cpus(),
    )
    .map_err(|e| format!("{}: runtime.placement: {e}", config.path.display()))?;
    let metrics_addr = options.metrics.or(config.metrics_listen);
    let metrics_thread = match metrics_addr {
        Some(addr) => Some(metrics::serve(addr, counters.clone(), stop.clone())?),
        None => None,
    };
    let runtime = Runtime::start(&plans, config.io_memory_kib as usize * 1024, starts)?;
    tracing::info!(
        node = %config.name,
        node_id = %to_hex(&key.node_id),
        serves = serves.name(),
        p2p = %config.listen,
        "bootnode running"
    );
    let result = join_with_deadline(runtime, &stop);
    stop.store(true, Relaxed);
    if let Some(t) = metrics_thread {
        let _ = t.join();
    }
    result?;
    if let Some(e) = fatal.lock().map_or(None, |mut f| f.take()) {
        return Err(e);
    }
    tracing::info!(node = %config.name, "bootnode stopped cleanly");
    Ok(())
}
