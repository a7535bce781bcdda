//! The shard runtime: glommio executors placed on CPUs, one future per shard, lock-free
//! channels between them, and per-shard accounting.
//!
//! A node is a set of shards ([`crate::config::Shard`]); each shard is one future that owns its
//! state outright and talks to other shards only through glommio `shared_channel`s (lock-free
//! SPSC rings; see [`Link`]). The [`ExecutorPlan`] decides which shards run in which executor:
//! - `placement = "auto"`: the CPUs this process may use (its affinity mask) are counted; with
//!   at least as many CPUs as shards every shard gets its own executor pinned to its own CPU,
//!   otherwise shards are dealt round-robin onto one executor per CPU (they then *share* an
//!   executor: cooperative tasks on one thread, still connected by the same channels).
//! - `placement = "unbound"`: one executor per shard, not pinned (tests, containers).
//! - a placement table: each shard pinned to the CPU named; shards naming the same CPU share
//!   an executor. A CPU outside the affinity mask is refused with an error naming it.
//!
//! Invariants: every shard of the plan runs in exactly one executor; no executor is empty;
//! shards never share memory with each other. The only shared memory is counters, each written
//! by one shard and read by a thread that is not a shard: the [`ShardStats`] and the shards'
//! own counters (read by the metrics endpoint), and the follower's highest known height (read
//! by the JSON-RPC thread for `eth_syncing`).

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use glommio::channels::shared_channel::{self, ConnectedReceiver, ConnectedSender};
use glommio::{CpuSet, LocalExecutorBuilder};

use crate::config::node::{Placement, Shard};

/// How long an idle executor spins before it parks (trades CPU for wake-up latency).
pub const DEFAULT_SPIN_BEFORE_PARK: Duration = Duration::from_micros(0);

/// Which shards one executor runs, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecutorPlan {
    /// The CPU it is pinned to; `None` = not pinned.
    pub cpu: Option<usize>,
    /// The shards it runs (at least one).
    pub shards: Vec<Shard>,
}

/// The CPUs this process may run on (its affinity mask), ascending.
pub fn allowed_cpus() -> Vec<usize> {
    // SAFETY: cpu_set_t is plain data; sched_getaffinity writes at most its size.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    let rc =
        unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    if rc != 0 {
        return (0..std::thread::available_parallelism().map_or(1, |n| n.get())).collect();
    }
    (0..libc::CPU_SETSIZE as usize)
        .filter(|cpu| unsafe { libc::CPU_ISSET(*cpu, &set) })
        .collect()
}

/// Places `shards` onto executors by `placement`, given the CPUs available.
pub fn plan(
    placement: &Placement,
    shards: &[Shard],
    cpus: &[usize],
) -> Result<Vec<ExecutorPlan>, String> {
    assert!(!shards.is_empty(), "a node runs at least one shard");
    let plans = match placement {
        Placement::Unbound => shards
            .iter()
            .map(|s| ExecutorPlan {
                cpu: None,
                shards: vec![*s],
            })
            .collect(),
        Placement::Auto => {
            if cpus.is_empty() {
                return Err("no CPU is available to this process".into());
            }
            let executors = shards.len().min(cpus.len());
            let mut plans: Vec<ExecutorPlan> = cpus[..executors]
                .iter()
                .map(|cpu| ExecutorPlan {
                    cpu: Some(*cpu),
                    shards: Vec::new(),
                })
                .collect();
            for (i, shard) in shards.iter().enumerate() {
                plans[i % executors].shards.push(*shard);
            }
            plans
        }
        Placement::Fixed(table) => {
            let mut by_cpu: BTreeMap<usize, Vec<Shard>> = BTreeMap::new();
            for shard in shards {
                let cpu = *table.get(shard).ok_or_else(|| {
                    format!(
                        "the placement table names no CPU for shard `{}`",
                        shard.name()
                    )
                })?;
                if !cpus.contains(&cpu) {
                    return Err(format!(
                        "shard `{}` is placed on CPU {cpu}, which this process may not use \
                         (allowed: {cpus:?})",
                        shard.name()
                    ));
                }
                by_cpu.entry(cpu).or_default().push(*shard);
            }
            by_cpu
                .into_iter()
                .map(|(cpu, shards)| ExecutorPlan {
                    cpu: Some(cpu),
                    shards,
                })
                .collect()
        }
    };
    check_plan(&plans, shards);
    Ok(plans)
}

fn check_plan(plans: &[ExecutorPlan], shards: &[Shard]) {
    let mut placed: Vec<Shard> = plans.iter().flat_map(|p| p.shards.clone()).collect();
    placed.sort();
    let mut wanted = shards.to_vec();
    wanted.sort();
    assert_eq!(placed, wanted, "every shard runs in exactly one executor");
    assert!(
        plans.iter().all(|p| !p.shards.is_empty()),
        "no empty executor"
    );
}

/// A shard's future, built on its executor's thread.
pub type ShardFuture = Pin<Box<dyn Future<Output = ()>>>;
/// What builds a shard's future: runs once, on the executor's thread.
pub type ShardStart = Box<dyn FnOnce() -> ShardFuture + Send>;

/// The running executors of a node.
pub struct Runtime {
    handles: Vec<(String, glommio::ExecutorJoinHandle<()>)>,
}

impl Runtime {
    /// Starts one executor per plan entry, each running the futures of its shards.
    ///
    /// `starts` must hold exactly the shards of the plan.
    pub fn start(
        plans: &[ExecutorPlan],
        io_memory: usize,
        mut starts: BTreeMap<Shard, ShardStart>,
    ) -> Result<Runtime, String> {
        let mut handles = Vec::new();
        for plan in plans {
            let name: String = plan
                .shards
                .iter()
                .map(|s| s.name())
                .collect::<Vec<_>>()
                .join("+");
            let mut shard_starts = Vec::new();
            for shard in &plan.shards {
                let start = starts
                    .remove(shard)
                    .ok_or_else(|| format!("no shard future for `{}`", shard.name()))?;
                shard_starts.push(start);
            }
            let placement = match plan.cpu {
                Some(cpu) => glommio::Placement::Fenced(
                    CpuSet::online()
                        .map_err(|e| format!("listing CPUs: {e}"))?
                        .filter(|l| l.cpu == cpu),
                ),
                None => glommio::Placement::Unbound,
            };
            let handle = LocalExecutorBuilder::new(placement)
                .name(&name)
                .io_memory(io_memory)
                .spin_before_park(DEFAULT_SPIN_BEFORE_PARK)
                .spawn(move || async move {
                    let tasks: Vec<_> = shard_starts
                        .into_iter()
                        .map(|start| glommio::spawn_local(start()))
                        .collect();
                    for task in tasks {
                        task.await;
                    }
                })
                .map_err(|e| format!("starting executor `{name}`: {e}"))?;
            handles.push((name, handle));
        }
        if let Some(shard) = starts.keys().next() {
            return Err(format!("shard `{}` is not in the plan", shard.name()));
        }
        Ok(Runtime { handles })
    }

    /// Waits for every executor to finish (its shards' futures all returned).
    pub fn join(self) -> Result<(), String> {
        let mut errors = Vec::new();
        for (name, handle) in self.handles {
            if let Err(e) = handle.join() {
                errors.push(format!("executor `{name}` failed: {e}"));
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors.join("; "))
        }
    }
}

/// Counters of one shard, written by the shard, read by metrics. Relaxed atomics: each value
/// is independent and only ever grows (except `queue_depth`, a gauge).
#[derive(Debug, Default)]
pub struct ShardStats {
    /// Nanoseconds spent handling messages (not waiting).
    pub busy_ns: AtomicU64,
    /// Messages received from other shards or the network.
    pub messages_in: AtomicU64,
    /// Messages sent to other shards or the network.
    pub messages_out: AtomicU64,
    /// Messages waiting in this shard's inboxes at the last look.
    pub queue_depth: AtomicU64,
}

impl ShardStats {
    /// Adds the time since `start` to the busy time.
    pub fn add_busy(&self, start: Instant) {
        let ns = u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.busy_ns.fetch_add(ns, Ordering::Relaxed);
    }

    /// Counts one message in.
    pub fn count_in(&self) {
        self.messages_in.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one message out.
    pub fn count_out(&self) {
        self.messages_out.fetch_add(1, Ordering::Relaxed);
    }
}

/// The stats of every shard of a node.
pub type NodeShardStats = BTreeMap<Shard, Arc<ShardStats>>;

/// One direction of a shard-to-shard channel before both ends are connected: created on the
/// main thread, moved into the two shards' start closures, connected on their executors.
pub struct Link<T: Send + 'static> {
    /// The sending end.
    pub sender: shared_channel::SharedSender<T>,
    /// The receiving end.
    pub receiver: shared_channel::SharedReceiver<T>,
}

impl<T: Send + 'static> Link<T> {
    /// A bounded channel of `capacity` messages.
    pub fn new(capacity: usize) -> Link<T> {
        let (sender, receiver) = shared_channel::new_bounded(capacity);
        Link { sender, receiver }
    }
}

/// A connected sending end.
pub type Tx<T> = ConnectedSender<T>;
/// A connected receiving end.
pub type Rx<T> = ConnectedReceiver<T>;

#[cfg(test)]
mod tests {
    use super::*;

    const CN: [Shard; 4] = [Shard::Net, Shard::Consensus, Shard::Exec, Shard::Store];

    #[test]
    fn auto_gives_each_shard_a_cpu_when_there_are_enough() {
        let plans = plan(&Placement::Auto, &CN, &[0, 1, 2, 3, 4, 5]).unwrap();
        assert_eq!(plans.len(), 4);
        for (i, p) in plans.iter().enumerate() {
            assert_eq!(p.cpu, Some(i));
            assert_eq!(p.shards, vec![CN[i]]);
        }
    }

    #[test]
    fn auto_shares_executors_on_fewer_cpus() {
        let plans = plan(&Placement::Auto, &CN, &[3, 7]).unwrap();
        assert_eq!(plans.len(), 2);
        assert_eq!(plans[0].cpu, Some(3));
        assert_eq!(plans[0].shards, vec![Shard::Net, Shard::Exec]);
        assert_eq!(plans[1].shards, vec![Shard::Consensus, Shard::Store]);
        let one = plan(&Placement::Auto, &CN, &[0]).unwrap();
        assert_eq!(one.len(), 1);
        assert_eq!(one[0].shards.len(), 4);
        assert!(plan(&Placement::Auto, &CN, &[]).is_err());
    }

    #[test]
    fn table_groups_by_cpu_and_refuses_missing_cpus() {
        let table: BTreeMap<Shard, usize> = [
            (Shard::Net, 0),
            (Shard::Consensus, 1),
            (Shard::Exec, 0),
            (Shard::Store, 1),
        ]
        .into();
        let plans = plan(&Placement::Fixed(table.clone()), &CN, &[0, 1]).unwrap();
        assert_eq!(plans.len(), 2);
        assert_eq!(plans[0].shards, vec![Shard::Net, Shard::Exec]);
        let err = plan(&Placement::Fixed(table), &CN, &[0]).unwrap_err();
        assert!(err.contains("CPU 1"), "{err}");
        let partial: BTreeMap<Shard, usize> = [(Shard::Net, 0)].into();
        let err = plan(&Placement::Fixed(partial), &CN, &[0]).unwrap_err();
        assert!(err.contains("consensus"), "{err}");
    }

    #[test]
    fn unbound_is_one_executor_per_shard() {
        let plans = plan(&Placement::Unbound, &CN, &[]).unwrap();
        assert_eq!(plans.len(), 4);
        assert!(plans.iter().all(|p| p.cpu.is_none()));
    }

    #[test]
    fn the_affinity_mask_is_not_empty() {
        assert!(!allowed_cpus().is_empty());
    }

    /// Shards sharing one executor still talk through the same channels.
    #[test]
    fn shards_sharing_an_executor_exchange_messages() {
        let ping: Link<u64> = Link::new(4);
        let pong: Link<u64> = Link::new(4);
        let (ping_tx, ping_rx) = (ping.sender, ping.receiver);
        let (pong_tx, pong_rx) = (pong.sender, pong.receiver);
        let result = Arc::new(AtomicU64::new(0));
        let seen = result.clone();
        let mut starts: BTreeMap<Shard, ShardStart> = BTreeMap::new();
        starts.insert(
            Shard::Net,
            Box::new(move || {
                Box::pin(async move {
                    let tx = ping_tx.connect().await;
                    let rx = pong_rx.connect().await;
                    let mut sum = 0;
                    for i in 1..=100u64 {
                        tx.send(i).await.unwrap();
                        sum += rx.recv().await.unwrap();
                    }
                    seen.store(sum, Ordering::SeqCst);
                })
            }),
        );
        starts.insert(
            Shard::Consensus,
            Box::new(move || {
                Box::pin(async move {
                    let rx = ping_rx.connect().await;
                    let tx = pong_tx.connect().await;
                    while let Some(v) = rx.recv().await {
                        if tx.send(v * 2).await.is_err() {
                            break;
                        }
                    }
                })
            }),
        );
        let plans = plan(&Placement::Auto, &[Shard::Net, Shard::Consensus], &[0]).unwrap();
        assert_eq!(plans.len(), 1);
        let plans = vec![ExecutorPlan {
            cpu: None,
            shards: plans[0].shards.clone(),
        }];
        Runtime::start(&plans, 512 * 1024, starts)
            .unwrap()
            .join()
            .unwrap();
        assert_eq!(result.load(Ordering::SeqCst), 2 * 5050);
    }
}
