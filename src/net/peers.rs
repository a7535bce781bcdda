//! Peer connections: the handshake ([`super::handshake`]) and admission
//! ([`super::rules::admit`]), the per-connection reader with its rate limits, and the routing of
//! each frame a peer sends ([`super::rules::route`]) to the shard it is for.

use super::*;

/// An authenticated peer: its slot and proven identity (role, node id, key).
pub(super) struct Admitted {
    pub(super) slot: PeerSlot,
    pub(super) identity: PeerIdentity,
    pub(super) keys: SessionKeys,
}

/// Runs the handshake on a fresh stream; returns the admitted peer.
pub(super) async fn run_handshake(
    state: &Shared,
    stream: &mut TcpStream,
    side: Side,
    expect: Option<&DialTarget>,
) -> Result<Admitted, String> {
    let (secret, chain_id, my_role, encrypt) = {
        let s = state.borrow();
        (
            s.config.secret.clone(),
            s.config.chain_id,
            s.config.role,
            s.config.encryption,
        )
    };
    let mut nonce = [0u8; 32];
    let mut ephemeral = [0u8; 32];
    getrandom::fill(&mut nonce)
        .and_then(|()| getrandom::fill(&mut ephemeral))
        .map_err(|e| format!("no randomness for the handshake: {e}"))?;
    let exchange = KeyExchange {
        secret: ephemeral,
        encrypt,
    };
    let mut hs = Handshake::new(side, &secret, chain_id, my_role, nonce, exchange);
    let stream_ref = stream;
    let work = async {
        let hello_bytes = hs.hello();
        stream_ref
            .write_all(&hello_bytes)
            .await
            .map_err(|e| e.to_string())?;
        let mut hello = [0u8; HELLO_LEN];
        stream_ref
            .read_exact(&mut hello)
            .await
            .map_err(|e| format!("reading hello: {e}"))?;
        let auth = hs
            .on_peer_hello(&hello, |role, node_id| {
                state.borrow_mut().admit(role, &node_id, expect)
            })
            .map_err(|e| e.to_string())?;
        stream_ref
            .write_all(&auth)
            .await
            .map_err(|e| e.to_string())?;
        let mut peer_auth = [0u8; AUTH_LEN];
        stream_ref
            .read_exact(&mut peer_auth)
            .await
            .map_err(|e| format!("reading auth: {e}"))?;
        hs.on_peer_auth(&peer_auth).map_err(|e| e.to_string())
    };
    let session = within(HANDSHAKE_TIMEOUT, work)
        .await
        .ok_or_else(|| "handshake timed out".to_string())??;
    let identity = session.peer;
    let slot = state.borrow_mut().slot_of(identity.role, &identity.node_id);
    Ok(Admitted {
        slot,
        identity,
        keys: session.keys,
    })
}

/// Token bucket of one connection's frames.
pub(super) struct RateLimit {
    pub(super) per_second: f64,
    pub(super) tokens: f64,
    pub(super) last: Instant,
}

impl RateLimit {
    fn new(per_second: u32) -> RateLimit {
        RateLimit {
            per_second: per_second as f64,
            tokens: per_second as f64,
            last: Instant::now(),
        }
    }

    fn take(&mut self) -> bool {
        let now = Instant::now();
        let elapsed = now.duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.per_second).min(self.per_second);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Serves one authenticated peer connection until it closes or misbehaves.
pub(super) async fn run_peer(state: Shared, stream: TcpStream, admitted: Admitted) {
    let Admitted {
        slot,
        identity,
        keys,
    } = admitted;
    let role = identity.role;
    let _ = stream.set_nodelay(true);
    {
        use std::os::fd::{AsRawFd, BorrowedFd};
        // SAFETY: `stream` owns the descriptor and outlives this borrow.
        let fd = unsafe { BorrowedFd::borrow_raw(stream.as_raw_fd()) };
        if let Err(e) = set_peer_liveness(socket2::SockRef::from(&fd)) {
            tracing::warn!(peer = slot, error = %e, "cannot set the peer link's keepalive and user timeout");
        }
    }
    let (outbox, queue, doorbell) = new_outbox(&state);
    let connection = outbox.connection;
    let counters = {
        let mut s = state.borrow_mut();
        // A newer connection replaces an older one (its writer ends when its outbox drops).
        s.peers.insert(
            slot,
            Peer {
                role,
                node_id: identity.node_id,
                outbox,
                sync_offers: SyncBudget::default(),
            },
        );
        s.publish_peers();
        if s.config.role == Role::Cn && role == Role::Cn {
            // Dropped if consensus is flooded: then the next round timeout re-sends anyway.
            if s.to_consensus
                .try_send(Inbound::Connected { peer: slot })
                .is_err()
            {
                s.counters.dropped.fetch_add(1, Relaxed);
            }
        }
        s.counters.clone()
    };
    tracing::info!(peer = slot, role = role.name(), "peer connected");
    let (mut reader, mut writer) = futures_lite::io::split(stream);
    let writer_task = glommio::spawn_local({
        let counters = counters.clone();
        let stats = state.borrow().stats.clone();
        let queue = queue.clone();
        let sealer = Some(keys.sealer());
        async move { write_frames(&mut writer, sealer, queue, doorbell, counters, stats).await }
    });
    let limits = state.borrow().config.limits.clone();
    let mut rate = RateLimit::new(limits.messages_per_second);
    let mut consensus_rate = RateLimit::new(limits.consensus_messages_per_second);
    let mut sync_requests = SyncBudget::default();
    let mut decoder = FrameDecoder::new();
    // Records are read into the opener's buffer and opened in place there; the decoder reads
    // the plaintext where it lies.
    let mut opener = keys.opener();
    let mut link_failure: Option<record::RecordError> = None;
    let violation: Option<String> = 'read: loop {
        // A read of data already buffered does not suspend: yield so that one busy connection
        // cannot starve the other tasks of this executor (other peers, the exec shard).
        futures_lite::future::yield_now().await;
        let n = match reader.read(opener.spare()).await {
            Ok(0) | Err(_) => break None,
            Ok(n) => n,
        };
        opener.filled(n);
        counters.bytes_in.fetch_add(n as u64, Relaxed);
        // Busy time: opening, decoding, checking and handing on what this read brought.
        let handling = Instant::now();
        loop {
            let mut input = match opener.next_plaintext() {
                Ok(Some(plain)) => plain,
                Ok(None) => break,
                Err(e) => {
                    // The path changed, injected or replayed bytes: the peer is not to blame.
                    link_failure = Some(e);
                    break 'read None;
                }
            };
            loop {
                let frame = match decoder.decode(&mut input) {
                    Ok(Some(frame)) => frame,
                    Ok(None) => break,
                    Err(e) => break 'read Some(format!("bad frame: {e}")),
                };
                if !rate.take() {
                    break 'read Some(format!(
                        "more than {} frames per second",
                        limits.messages_per_second
                    ));
                }
                let costs_consensus = matches!(
                    frame.kind,
                    FrameKind::Proposal
                        | FrameKind::Vote
                        | FrameKind::RoundChange
                        | FrameKind::FinalizedBlock
                );
                if costs_consensus && !consensus_rate.take() {
                    break 'read Some(format!(
                        "more than {} consensus frames per second",
                        limits.consensus_messages_per_second
                    ));
                }
                let from = Sender { slot, role };
                if let Err(reason) = dispatch_peer_frame(&state, from, frame, &mut sync_requests) {
                    break 'read Some(reason);
                }
            }
        }
        state.borrow().stats.add_busy(handling);
        if state.borrow().stop.load(Relaxed) {
            break None;
        }
        // Is this still the peer's current connection (not replaced, not banned)?
        if state.borrow().peers.get(&slot).map(|p| p.outbox.connection) != Some(connection) {
            break None;
        }
    };
    {
        let mut s = state.borrow_mut();
        if s.peers.get(&slot).map(|p| p.outbox.connection) == Some(connection) {
            s.peers.remove(&slot);
        }
        s.publish_peers();
        if let Some(reason) = &violation {
            let ban = s.config.limits.ban;
            s.bans.ban(identity.node_id, Instant::now(), ban);
            s.counters.violations.fetch_add(1, Relaxed);
            tracing::warn!(peer = slot, role = role.name(), %reason, ban_s = s.config.limits.ban.as_secs(), "peer banned");
        } else if let Some(e) = link_failure {
            s.counters.link_failures.fetch_add(1, Relaxed);
            tracing::warn!(peer = slot, role = role.name(), error = %e, "peer link closed: a record failed authentication (the path, not the peer; not banned, the link is dialed again)");
        } else {
            tracing::info!(peer = slot, role = role.name(), "peer disconnected");
        }
    }
    writer_task.await;
    // The outbox is out of the tables now, so nothing more is queued: frames left behind leave
    // the queue-depth gauge with the connection.
    let left = std::mem::take(&mut queue.borrow_mut().frames).len() as u64;
    state.borrow().stats.queue_depth.fetch_sub(left, Relaxed);
}

/// Makes the kernel end a peer link whose path went silent (dropping every packet, no reset
/// ever coming), so the node notices as it does a closed connection. An idle link is probed
/// after [`PEER_KEEPALIVE_IDLE`] and ended when [`PEER_KEEPALIVE_PROBES`] probes go
/// unanswered; a link with data in flight is ended when it stays unacknowledged for
/// [`PEER_USER_TIMEOUT`], instead of the default retransmissions' quarter of an hour. Without
/// this, an EN whose link to the PN carrying its transactions went silent would keep sending
/// them there.
pub fn set_peer_liveness(socket: socket2::SockRef<'_>) -> std::io::Result<()> {
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(PEER_KEEPALIVE_IDLE)
        .with_interval(PEER_KEEPALIVE_INTERVAL)
        .with_retries(PEER_KEEPALIVE_PROBES);
    socket.set_tcp_keepalive(&keepalive)?;
    socket.set_tcp_user_timeout(Some(PEER_USER_TIMEOUT))
}

/// The peer a frame came from.
#[derive(Debug, Clone, Copy)]
pub(super) struct Sender {
    pub(super) slot: PeerSlot,
    pub(super) role: Role,
}

/// Routes one frame from an authenticated peer (the table of the module doc); `Err` is a
/// protocol violation.
pub(super) fn dispatch_peer_frame(
    state: &Shared,
    from: Sender,
    frame: Frame,
    sync_requests: &mut SyncBudget,
) -> Result<(), String> {
    let mut s = state.borrow_mut();
    s.stats.count_in();
    let message = frame.message().map_err(|e| e.to_string())?;
    let de = |e: rkyv::rancor::Error| format!("decoding: {e}");
    let me = s.config.role;
    let kind = frame.kind;
    let not_here = || {
        Err(format!(
            "a {} sent a {} frame, which a {} does not take from it",
            from.role.name(),
            kind.name(),
            me.name()
        ))
    };
    let Some(route) = rules::route(me, from.role, kind) else {
        return not_here();
    };
    let inbound = match (route, message) {
        // The CN mesh.
        (Route::Consensus, Message::Proposal(p)) => {
            if p.proposer.to_native() != from.slot {
                return Err("proposal signed by another member (no relaying in the mesh)".into());
            }
            ConsensusMessage::Proposal(Box::new(
                rkyv::deserialize::<_, rkyv::rancor::Error>(p).map_err(de)?,
            ))
        }
        (Route::Consensus, Message::Vote(v)) => {
            if v.signer.to_native() != from.slot {
                return Err("vote signed by another member".into());
            }
            ConsensusMessage::Vote(rkyv::deserialize::<_, rkyv::rancor::Error>(v).map_err(de)?)
        }
        (Route::Consensus, Message::RoundChange(rc)) => {
            if rc.signer.to_native() != from.slot {
                return Err("round change signed by another member".into());
            }
            ConsensusMessage::RoundChange(
                rkyv::deserialize::<_, rkyv::rancor::Error>(rc).map_err(de)?,
            )
        }
        (Route::Consensus, Message::FinalizedBlock(f)) => ConsensusMessage::Finalized {
            sender: from.slot,
            block: Box::new(rkyv::deserialize::<_, rkyv::rancor::Error>(f).map_err(de)?),
        },
        // Transactions into a CN: gossip from the mesh, or relayed by a PN of its cell.
        (Route::Exec(origin), Message::TxBatch(_)) => {
            let sent = s.to_exec.as_ref().is_some_and(|to_exec| {
                to_exec
                    .try_send(BatchIn {
                        origin,
                        frame,
                        received: Instant::now(),
                    })
                    .is_ok()
            });
            if !sent {
                s.counters.dropped.fetch_add(1, Relaxed);
            }
            return Ok(());
        }
        // Blocks down the tiers, into the follower.
        (Route::Follower, Message::FinalizedBlock(f)) => {
            let height = f.block.header.height.to_native();
            if height <= s.head {
                s.counters.duplicates.fetch_add(1, Relaxed);
                return Ok(());
            }
            let block: crate::types::FinalizedBlock =
                rkyv::deserialize::<_, rkyv::rancor::Error>(f).map_err(de)?;
            // A PN relays the very bytes of the copy its follower adopts (after checking it
            // whole), so the frame travels with the block.
            let received = (me == Role::Pn).then(|| Arc::new(frame_bytes(&frame)));
            if s.to_consensus
                .try_send(Inbound::Block {
                    from: from.slot,
                    block: Box::new(block),
                    received,
                })
                .is_err()
            {
                s.counters.dropped.fetch_add(1, Relaxed);
            }
            return Ok(());
        }
        // Transactions up the tiers (PN relay).
        (Route::RelayUp, Message::TxBatch(batch)) => {
            let cn = s.first_of(&[Role::Cn]).is_some();
            let pn = s.first_of(&[Role::Pn]).is_some();
            let Some(upstream) = rules::relay_upstream(from.role, cn, pn) else {
                // Nowhere to send it: dropped, and not remembered, so that the sender's
                // next copy of it (the EN re-sends what stays unconfirmed) goes through.
                s.counters.dropped.fetch_add(1, Relaxed);
                return Ok(());
            };
            let bytes = match relay_fresh_transactions(&mut s.relayed_txs, batch) {
                BatchRelay::Duplicate => {
                    s.counters.duplicates.fetch_add(1, Relaxed);
                    return Ok(());
                }
                BatchRelay::AsReceived => Arc::new(frame_bytes(&frame)),
                BatchRelay::Reencoded(bytes) => Arc::new(bytes),
            };
            s.send_to_roles(upstream, None, &bytes);
            s.counters.relayed.fetch_add(1, Relaxed);
            return Ok(());
        }
        // Sync requests: a CN serves the mesh and its PNs; a PN serves PNs and ENs.
        (Route::SyncServe, Message::SyncRequest(r)) => {
            let from_height = r.from_height.to_native();
            if !sync_requests.take(Instant::now(), SYNC_REQUEST_INTERVAL) {
                s.counters.dropped.fetch_add(1, Relaxed);
                return Ok(());
            }
            if s.to_store
                .try_send(SyncServe {
                    peer: from.slot,
                    from_height,
                })
                .is_err()
            {
                s.counters.dropped.fetch_add(1, Relaxed);
            }
            return Ok(());
        }
        // The route follows from the frame's kind, so its message matches; anything else
        // would be a decoder bug, refused like any frame out of place.
        _ => return not_here(),
    };
    if s.to_consensus
        .try_send(Inbound::Message {
            from: from.slot,
            message: inbound,
        })
        .is_err()
    {
        s.counters.dropped.fetch_add(1, Relaxed);
    }
    Ok(())
}
