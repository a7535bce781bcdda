//! The consensus shard of a PN or EN: drives the sans-IO [`Follower`] with wall-clock time,
//! the network, the store shard and (EN) the exec shard.
//!
//! Finalized blocks from the net shard and a clock tick every [`TICK`] are merged into one
//! local queue and fed to the follower one at a time. Effects are carried out in order:
//! - `Commit`: the store appends the block and fsyncs; only then is it reported final (the
//!   head the net shard checks duplicates against, metrics), executed (EN: the exec shard) and
//!   passed on (PN: the net shard relays the bytes it received for it);
//! - `Reject`: the net shard closes the sender's connection and bans it;
//! - `RequestSync`: the net shard asks an upstream peer.
//!
//! BLS verification (one aggregate check per block, one batch per run) runs here, inside the
//! follower.

use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use glommio::channels::local_channel;

use super::{ConsensusCounters, FollowerChannels};
use crate::config::clock::now_ms;
use crate::consensus::{Adopted, BlsScheme, Follower, FollowerEffect, FollowerInput};
use crate::exec::ExecRequest;
use crate::net::{Inbound, NetCommand};
use crate::runtime::ShardStats;
use crate::store::{StoreReply, StoreRequest};

/// How often the follower's clock ticks.
pub const TICK: Duration = Duration::from_millis(250);

enum Event {
    Input(FollowerInput),
    Closed,
}

/// How far the follower is, shared with the other shards.
pub struct Progress {
    /// The highest height a peer sent a block for (JSON-RPC's `eth_syncing`).
    pub highest_known: Arc<AtomicU64>,
}

/// Runs the follower until `stop` is set or a channel closes.
pub async fn run(
    mut follower: Follower<BlsScheme>,
    channels: FollowerChannels,
    progress: Progress,
    stop: Arc<AtomicBool>,
    stats: Arc<ShardStats>,
    counters: Arc<ConsensusCounters>,
) -> Result<(), String> {
    let FollowerChannels {
        from_net,
        to_net,
        to_exec,
        to_store,
        from_store,
    } = channels;
    let (events, queue) = local_channel::new_unbounded::<Event>();
    let events = Rc::new(events);
    let forward_net = {
        let events = events.clone();
        glommio::spawn_local(async move {
            while let Some(inbound) = from_net.recv().await {
                if let Inbound::Block {
                    from,
                    block,
                    received,
                } = inbound
                {
                    let _ = events.try_send(Event::Input(FollowerInput::Finalized {
                        from,
                        block,
                        received,
                    }));
                }
            }
            let _ = events.try_send(Event::Closed);
        })
    };
    // The clock, which also notices the stop request.
    {
        let events = events.clone();
        let stop = stop.clone();
        glommio::spawn_local(async move {
            while !stop.load(Relaxed) {
                glommio::timer::sleep(TICK).await;
                let _ = events.try_send(Event::Input(FollowerInput::Tick));
            }
            let _ = events.try_send(Event::Closed);
        })
        .detach();
    }
    let mut result = Ok(());
    'events: while let Some(Event::Input(input)) = queue.recv().await {
        stats.queue_depth.store(events.len() as u64, Relaxed);
        stats.count_in();
        let start = Instant::now();
        let effects = follower.handle(now_ms(), input);
        progress
            .highest_known
            .store(follower.highest_seen(), Relaxed);
        stats.add_busy(start);
        for effect in effects {
            let sent = match effect {
                FollowerEffect::Commit(adopted) => {
                    let Adopted {
                        block,
                        tx_hashes,
                        from,
                        received,
                    } = *adopted;
                    let height = block.block.header.height;
                    let txs = block.block.transactions.len() as u64;
                    let finalized = Arc::new(block);
                    let waited = Instant::now();
                    stats.count_out();
                    if to_store
                        .send(StoreRequest::Commit(finalized.clone()))
                        .await
                        .is_err()
                    {
                        result = Err("the store shard stopped".to_string());
                        break 'events;
                    }
                    match from_store.recv().await {
                        Some(StoreReply::Committed(h)) if h == height => {}
                        other => {
                            result = Err(format!(
                                "the store answered {other:?} to the commit of block {height}"
                            ));
                            break 'events;
                        }
                    }
                    counters
                        .commit_wait_ns
                        .fetch_add(waited.elapsed().as_nanos() as u64, Relaxed);
                    // Durable: now it is final here.
                    counters.height.store(height, Relaxed);
                    counters.blocks.fetch_add(1, Relaxed);
                    counters.finalized_txs.fetch_add(txs, Relaxed);
                    tracing::debug!(height, txs, "finalized");
                    if let Some(to_exec) = &to_exec {
                        stats.count_out();
                        if to_exec
                            .send(ExecRequest::Finalized {
                                block: finalized,
                                tx_hashes: Some(tx_hashes),
                            })
                            .await
                            .is_err()
                        {
                            result = Err("the exec shard stopped".to_string());
                            break 'events;
                        }
                    }
                    NetCommand::Finalized {
                        height,
                        frame: received,
                        from: Some(from),
                    }
                }
                FollowerEffect::Reject { from, height, why } => {
                    counters.rejected.fetch_add(1, Relaxed);
                    NetCommand::Ban {
                        peer: from,
                        reason: format!("sent block {height}, which {}", why.describe()),
                    }
                }
                FollowerEffect::RequestSync { from_height } => {
                    NetCommand::RequestSync { from_height }
                }
            };
            stats.count_out();
            if to_net.send(sent).await.is_err() {
                tracing::debug!("net shard closed; command not sent");
            }
        }
    }
    drop(events);
    forward_net.cancel().await;
    result
}
