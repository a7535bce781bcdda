//! The consensus shard: drives the sans-IO [`Machine`] with wall-clock time, the network, the
//! exec shard and the store shard.
//!
//! Inputs (network messages, exec answers, timers) are merged into one local queue and fed to
//! the machine one at a time. Effects are carried out in the order returned, with the
//! machine's durability rules enforced here:
//! - consecutive `Persist` effects are sent to the store as one batch and the shard waits for
//!   the store's fsync answer before it carries out any later effect (so no vote leaves the
//!   node before what it commits to is durable);
//! - a `Commit` waits for the store's fsync answer before the block is reported final (metrics,
//!   the exec shard's pool, client acks) and handed to the net shard for the CN's PNs.
//!
//! BLS verification runs here, inside the machine (certificates are one pairing check each).
//!
//! Misbehaviour the machine reports is recorded here ([`evidence`]): each
//! [`Effect::Evidence`] is counted (in total and per signer: the metrics `evidence` and
//! `evidence_by_signer{signer}`) and appended to `<data_dir>/evidence.log`; each
//! [`Effect::Rejected`] is counted per reason (`rejected_by_reason{reason}`), and a stream of
//! bad signatures from one member gets it banned through the net shard.
//!
//! With the test-only `byzantine` feature and a `[byzantine]` config section, the machine's
//! effects pass through a `ByzantineLayer` (`consensus_shard::byzantine`, built only with the `byzantine` feature) before they are carried out.

use std::collections::{BTreeMap, VecDeque};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use glommio::channels::local_channel;

use crate::config::clock::now_ms;
use crate::consensus::{BlsScheme, Effect, Input, Machine, Message as ConsensusMessage, Rejection};
use crate::exec::{ExecReply, ExecRequest};
use crate::net::{sync_request_frame, Inbound, NetCommand};
use crate::runtime::{Rx, ShardStats, Tx};
use crate::store::{StoreReply, StoreRequest};
use crate::types::frame::encode_frame;
use crate::types::{CouncilIndex, FinalizedBlock, Height};
use evidence::{EvidenceLog, MisbehaviourStrikes};

#[cfg(feature = "byzantine")]
pub mod byzantine;
pub mod door;
pub mod evidence;
pub mod follower;
pub use door::{ConsensusChannels, FollowerChannels};

/// What the consensus shard reports (metrics and the node's status).
#[derive(Debug, Default)]
pub struct ConsensusCounters {
    /// Height of the last finalized block.
    pub height: AtomicU64,
    /// Current round.
    pub round: AtomicU64,
    /// Round changes this node took part in (rounds above 0 entered).
    pub round_changes: AtomicU64,
    /// Blocks finalized since start.
    pub blocks: AtomicU64,
    /// Transactions in blocks finalized since start.
    pub finalized_txs: AtomicU64,
    /// Messages refused by the machine.
    pub rejected: AtomicU64,
    /// Messages refused, per reason (indexed by `Rejection as usize`, [`Rejection::ALL`]).
    pub rejected_by_reason: [AtomicU64; Rejection::ALL.len()],
    /// Equivocation evidence recorded.
    pub evidence: AtomicU64,
    /// Equivocation evidence recorded, per equivocating council member. Touched once per
    /// piece of evidence (rare), read per scrape.
    pub evidence_by_signer: Mutex<BTreeMap<CouncilIndex, u64>>,
    /// Time the shard waited for the store to make WAL records durable (before votes leave).
    pub persist_wait_ns: AtomicU64,
    /// Time the shard waited for the store to make finalized blocks durable.
    pub commit_wait_ns: AtomicU64,
}

/// What the consensus shard keeps besides the machine: the evidence log, and (test-only
/// builds) the Byzantine layer.
pub struct ConsensusRecords {
    /// `<data_dir>/evidence.log`.
    pub evidence_log: EvidenceLog,
    /// The test-only misbehaviour of this CN, if its config asks for it.
    #[cfg(feature = "byzantine")]
    pub byzantine: Option<byzantine::ByzantineLayer>,
}

// Inputs travel inline: one per message, and they are moved straight into the machine.
#[allow(clippy::large_enum_variant)]
enum Event {
    Input(Input),
    Closed,
}

/// Runs the consensus shard until `stop` is set (then returns after the effect in hand is
/// carried out) or a channel closes.
pub async fn run(
    mut machine: Machine<BlsScheme>,
    initial: Vec<crate::consensus::Effect>,
    channels: ConsensusChannels,
    stop: Arc<AtomicBool>,
    stats: Arc<ShardStats>,
    counters: Arc<ConsensusCounters>,
    records: ConsensusRecords,
) -> Result<(), String> {
    #[cfg(feature = "byzantine")]
    let mut byzantine = records.byzantine;
    #[cfg(feature = "byzantine")]
    let initial = match &mut byzantine {
        Some(layer) => {
            tracing::warn!("TEST ONLY: this CN is Byzantine");
            layer.rewrite(machine.scheme(), initial)
        }
        None => initial,
    };
    let ConsensusChannels {
        from_net,
        to_net,
        to_exec,
        from_exec,
        to_store,
        from_store,
    } = channels;
    let (events, queue) = local_channel::new_unbounded::<Event>();
    let events = Rc::new(events);
    let forward_net = {
        let events = events.clone();
        glommio::spawn_local(async move {
            while let Some(inbound) = from_net.recv().await {
                let input = match inbound {
                    Inbound::Message { message, .. } => Input::Message(message),
                    // Blocks for a follower: the net shard of a CN does not produce them.
                    Inbound::Block { .. } => continue,
                    Inbound::Connected { peer } => match CouncilIndex::try_from(peer) {
                        Ok(peer) => Input::PeerConnected(peer),
                        Err(_) => continue,
                    },
                };
                let _ = events.try_send(Event::Input(input));
            }
            let _ = events.try_send(Event::Closed);
        })
    };
    let forward_exec = {
        let events = events.clone();
        glommio::spawn_local(async move {
            while let Some(reply) = from_exec.recv().await {
                let input = match reply {
                    ExecReply::Built {
                        height,
                        round,
                        transactions,
                        state_root,
                    } => Input::BlockBuilt {
                        height,
                        round,
                        transactions,
                        state_root,
                    },
                    ExecReply::Verified {
                        height,
                        block_hash,
                        valid,
                    } => Input::BlockVerified {
                        height,
                        block_hash,
                        valid,
                    },
                };
                let _ = events.try_send(Event::Input(input));
            }
            let _ = events.try_send(Event::Closed);
        })
    };
    // A stop watcher wakes the loop when the node is asked to stop.
    {
        let events = events.clone();
        let stop = stop.clone();
        glommio::spawn_local(async move {
            while !stop.load(Relaxed) {
                glommio::timer::sleep(std::time::Duration::from_millis(20)).await;
            }
            let _ = events.try_send(Event::Closed);
        })
        .detach();
    }
    let mut driver = Driver {
        to_net,
        to_exec,
        to_store,
        from_store,
        events: events.clone(),
        stats: stats.clone(),
        counters,
        pending_effects: VecDeque::from(initial),
        evidence_log: records.evidence_log,
        strikes: MisbehaviourStrikes::default(),
    };
    let mut result = driver.drain().await;
    while result.is_ok() {
        let Some(event) = queue.recv().await else {
            break;
        };
        stats.queue_depth.store(events.len() as u64, Relaxed);
        let Event::Input(input) = event else {
            break;
        };
        stats.count_in();
        let start = Instant::now();
        if let Input::Timer(timer) = &input {
            tracing::debug!(?timer, "timer fired");
        }
        let effects = machine.handle(now_ms(), input);
        #[cfg(feature = "byzantine")]
        let effects = match &mut byzantine {
            Some(layer) => layer.rewrite(machine.scheme(), effects),
            None => effects,
        };
        let round = machine_round(&machine);
        driver.note_round(round);
        stats.add_busy(start);
        driver.pending_effects.extend(effects);
        result = driver.drain().await;
    }
    #[cfg(feature = "byzantine")]
    if let Some(layer) = &byzantine {
        tracing::warn!(sent = ?layer.sent(), "TEST ONLY: what the Byzantine layer sent");
    }
    // Closing our senders lets net, exec and store finish.
    drop(driver);
    drop(events);
    forward_net.cancel().await;
    forward_exec.cancel().await;
    result
}

fn machine_round(machine: &Machine<BlsScheme>) -> (Height, u32) {
    (machine.height(), machine.round())
}

struct Driver {
    to_net: Tx<NetCommand>,
    to_exec: Tx<ExecRequest>,
    to_store: Tx<StoreRequest>,
    from_store: Rx<StoreReply>,
    events: Rc<local_channel::LocalSender<Event>>,
    stats: Arc<ShardStats>,
    counters: Arc<ConsensusCounters>,
    pending_effects: VecDeque<Effect>,
    evidence_log: EvidenceLog,
    strikes: MisbehaviourStrikes,
}

impl Driver {
    fn note_round(&self, (height, round): (Height, u32)) {
        let old = self.counters.round.swap(round as u64, Relaxed);
        if round > 0 && round as u64 != old {
            self.counters.round_changes.fetch_add(1, Relaxed);
            tracing::info!(height, round, "round change");
        }
    }

    /// Hands a frame to the net shard. The net shard closing (at shutdown) is not an error:
    /// what consensus sends is best-effort anyway.
    async fn send_net(&self, cmd: NetCommand) -> Result<(), String> {
        self.stats.count_out();
        if self.to_net.send(cmd).await.is_err() {
            tracing::debug!("net shard closed; message not sent");
        }
        Ok(())
    }

    async fn send_exec(&self, req: ExecRequest) -> Result<(), String> {
        self.stats.count_out();
        self.to_exec
            .send(req)
            .await
            .map_err(|_| "the exec shard stopped".to_string())
    }

    async fn store(&self, req: StoreRequest) -> Result<StoreReply, String> {
        self.stats.count_out();
        self.to_store
            .send(req)
            .await
            .map_err(|_| "the store shard stopped".to_string())?;
        self.from_store
            .recv()
            .await
            .ok_or_else(|| "the store shard stopped before answering".to_string())
    }

    /// Carries out the queued effects in order.
    async fn drain(&mut self) -> Result<(), String> {
        while let Some(effect) = self.pending_effects.pop_front() {
            match effect {
                Effect::Persist(first) => {
                    let mut records = vec![first];
                    while let Some(Effect::Persist(_)) = self.pending_effects.front() {
                        if let Some(Effect::Persist(r)) = self.pending_effects.pop_front() {
                            records.push(r);
                        }
                    }
                    let waited = Instant::now();
                    let reply = self.store(StoreRequest::Persist(records)).await?;
                    assert_eq!(reply, StoreReply::Persisted, "store answers in order");
                    self.counters
                        .persist_wait_ns
                        .fetch_add(waited.elapsed().as_nanos() as u64, Relaxed);
                }
                Effect::Broadcast(message) => {
                    let frame = Arc::new(encode_message(&message));
                    self.send_net(NetCommand::Broadcast(frame)).await?;
                }
                Effect::SendTo(peer, message) => {
                    let frame = Arc::new(encode_message(&message));
                    self.send_net(NetCommand::SendTo(peer, frame)).await?;
                }
                Effect::Schedule { timer, at } => {
                    let events = self.events.clone();
                    glommio::spawn_local(async move {
                        let wait = at.saturating_sub(now_ms());
                        glommio::timer::sleep(std::time::Duration::from_millis(wait)).await;
                        let _ = events.try_send(Event::Input(Input::Timer(timer)));
                    })
                    .detach();
                }
                Effect::BuildBlock {
                    height,
                    round,
                    parent,
                } => {
                    self.send_exec(ExecRequest::Build {
                        height,
                        round,
                        parent,
                    })
                    .await?;
                }
                Effect::VerifyBlock(block) => {
                    self.send_exec(ExecRequest::Verify(Box::new(block))).await?;
                }
                Effect::Commit {
                    block,
                    certificate,
                    tx_hashes,
                } => {
                    let height = block.header.height;
                    let txs = block.transactions.len() as u64;
                    let finalized = Arc::new(FinalizedBlock { block, certificate });
                    let waited = Instant::now();
                    let reply = self.store(StoreRequest::Commit(finalized.clone())).await?;
                    self.counters
                        .commit_wait_ns
                        .fetch_add(waited.elapsed().as_nanos() as u64, Relaxed);
                    assert_eq!(
                        reply,
                        StoreReply::Committed(height),
                        "store answers in order"
                    );
                    // Durable: now it may be reported final.
                    self.counters.height.store(height, Relaxed);
                    self.counters.blocks.fetch_add(1, Relaxed);
                    self.counters.finalized_txs.fetch_add(txs, Relaxed);
                    tracing::debug!(height, txs, "finalized");
                    let frame = Arc::new(encode_frame(&*finalized));
                    self.send_exec(ExecRequest::Finalized {
                        block: finalized,
                        tx_hashes,
                    })
                    .await?;
                    // The PNs of this CN's cell pass it down to the ENs.
                    self.send_net(NetCommand::Finalized {
                        height,
                        frame: Some(frame),
                        from: None,
                    })
                    .await?;
                }
                Effect::RequestSync { peer, from_height } => {
                    let frame = Arc::new(sync_request_frame(from_height));
                    self.send_net(NetCommand::SendTo(peer, frame)).await?;
                }
                Effect::OfferSync { peer, from_height } => {
                    // Fire and forget: the net shard hands it to the store within the peer's
                    // sync budget; consensus never waits on the disk for a lagging peer.
                    self.send_net(NetCommand::OfferSync { peer, from_height })
                        .await?;
                }
                Effect::Evidence(evidence) => {
                    self.counters.evidence.fetch_add(1, Relaxed);
                    *self
                        .counters
                        .evidence_by_signer
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .entry(evidence.signer)
                        .or_default() += 1;
                    let logged = self.evidence_log.record(&evidence, now_ms());
                    tracing::warn!(
                        signer = evidence.signer,
                        height = evidence.height,
                        round = evidence.round,
                        kind = evidence.kind.name(),
                        logged,
                        "equivocation evidence"
                    );
                }
                Effect::Rejected { from, reason } => {
                    self.counters.rejected.fetch_add(1, Relaxed);
                    self.counters.rejected_by_reason[reason as usize].fetch_add(1, Relaxed);
                    tracing::debug!(from, ?reason, "message rejected");
                    if matches!(reason, Rejection::BadCertificate | Rejection::ForgedBody) {
                        // A finalized block that is not final, named for the member whose own
                        // connection it came over: an honest member sends only blocks it
                        // checked and stored.
                        self.send_net(NetCommand::Ban {
                            peer: from,
                            reason: format!(
                                "sent a finalized block that is not final ({})",
                                reason.name()
                            ),
                        })
                        .await?;
                    } else if reason.is_misbehaviour() && self.strikes.strike(from, Instant::now())
                    {
                        // Only the member itself can have sent it: the net shard takes a
                        // member's messages only over that member's own connection.
                        self.send_net(NetCommand::Ban {
                            peer: from,
                            reason: format!(
                                "{} refused messages within {} s (bad signatures, unjustified \
                                 proposals, bad round changes, far-round spam; the last: {})",
                                evidence::STRIKE_BAN_THRESHOLD,
                                evidence::STRIKE_WINDOW.as_secs(),
                                reason.name()
                            ),
                        })
                        .await?;
                    }
                }
            }
        }
        Ok(())
    }
}

/// The frame of a consensus message.
pub fn encode_message(message: &ConsensusMessage) -> Vec<u8> {
    match message {
        ConsensusMessage::Proposal(p) => encode_frame(&**p),
        ConsensusMessage::Vote(v) => encode_frame(v),
        ConsensusMessage::RoundChange(rc) => encode_frame(rc),
        ConsensusMessage::Finalized { block, .. } => encode_frame(&**block),
    }
}
