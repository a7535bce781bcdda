//! The client ingress port: one task per connection reading `TxBatch` frames for the exec
//! shard and writing its `IngressAck`s back, closing idle and slow clients (slots and
//! eviction: [`super::rules::IngressSlots`]).

use super::*;

/// Serves one client ingress connection (which holds a slot, taken at accept).
pub(super) async fn run_client(
    state: Shared,
    stream: TcpStream,
    connection: u64,
    remote: Option<std::net::IpAddr>,
) {
    let _ = stream.set_nodelay(true);
    let (outbox, queue, doorbell) = new_outbox(&state);
    let (evict, evicted) = local_channel::new_bounded(1);
    let mut last_frame = Instant::now();
    let counters = {
        let mut s = state.borrow_mut();
        s.clients.insert(connection, outbox);
        s.client_evictions.insert(connection, evict);
        s.counters.clone()
    };
    let (mut reader, mut writer) = futures_lite::io::split(stream);
    let writer_task = glommio::spawn_local({
        let counters = counters.clone();
        let stats = state.borrow().stats.clone();
        let queue = queue.clone();
        async move { write_frames(&mut writer, None, queue, doorbell, counters, stats).await }
    });
    let mut decoder = FrameDecoder::new();
    let mut buf = vec![0u8; READ_CHUNK];
    // When the frame now in the decoder began (None between frames).
    let mut frame_began: Option<Instant> = None;
    let to_exec = state
        .borrow()
        .to_exec
        .clone()
        .expect("ingress runs only beside an exec shard (checked when the shard starts)");
    'read: loop {
        // See `run_peer`: one busy client must not starve the executor's other tasks.
        futures_lite::future::yield_now().await;
        // The read races the connection's deadline and its eviction; a read is dropped only
        // when the connection closes, so no received byte is ever lost.
        let idle_at = last_frame + INGRESS_IDLE_TIMEOUT;
        let deadline = frame_began.map_or(idle_at, |t| idle_at.min(t + INGRESS_FRAME_TIMEOUT));
        let read = futures_lite::future::or(
            async { Ok(reader.read(&mut buf).await) },
            futures_lite::future::or(
                async {
                    glommio::timer::sleep(deadline.saturating_duration_since(Instant::now())).await;
                    Err(
                        if frame_began.is_some_and(|t| t + INGRESS_FRAME_TIMEOUT <= idle_at) {
                            ClientClose::Slow
                        } else {
                            ClientClose::Idle
                        },
                    )
                },
                async {
                    evicted.recv().await;
                    Err(ClientClose::Evicted)
                },
            ),
        )
        .await;
        let n = match read {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => n,
            Err(close) => {
                match close {
                    ClientClose::Idle => counters.ingress_idle.fetch_add(1, Relaxed),
                    ClientClose::Slow => counters.ingress_slow.fetch_add(1, Relaxed),
                    // Counted by the eviction.
                    ClientClose::Evicted => 0,
                };
                tracing::info!(
                    connection,
                    ?remote,
                    reason = close.name(),
                    "ingress client dropped"
                );
                break;
            }
        };
        counters.bytes_in.fetch_add(n as u64, Relaxed);
        let mut input = &buf[..n];
        let mut completed = false;
        loop {
            // Busy time: decoding and checking (not the wait for room in exec's inbox).
            let handling = Instant::now();
            let frame = match decoder.decode(&mut input) {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                Err(e) => {
                    tracing::info!(connection, reason = %e, "ingress client dropped");
                    break 'read;
                }
            };
            let ok = frame.kind == FrameKind::TxBatch && frame.message().is_ok();
            if !ok {
                tracing::info!(
                    connection,
                    kind = frame.kind.name(),
                    "ingress client sent a bad frame; dropped"
                );
                break 'read;
            }
            state.borrow().stats.count_in();
            state.borrow().stats.add_busy(handling);
            let batch = BatchIn {
                origin: BatchOrigin::Client { connection },
                frame,
                received: Instant::now(),
            };
            if to_exec.send(batch).await.is_err() {
                break 'read;
            }
            completed = true;
        }
        // Stamped after the hand-over to exec: time spent waiting on exec's back-pressure is
        // the node's, not the client's.
        let now = Instant::now();
        if completed {
            last_frame = now;
            state
                .borrow_mut()
                .ingress_slots
                .frame_completed(connection, now);
        }
        frame_began = match decoder.buffered() {
            0 => None,
            _ if completed => Some(now),
            _ => Some(frame_began.unwrap_or(now)),
        };
        if state.borrow().stop.load(Relaxed) {
            break;
        }
    }
    {
        let mut s = state.borrow_mut();
        s.clients.remove(&connection);
        // None if it was evicted (its slot is someone else's now).
        s.release_client_slot(connection);
    }
    writer_task.await;
    // The outbox is out of the tables now, so nothing more is queued: frames left behind leave
    // the queue-depth gauge with the connection.
    let left = std::mem::take(&mut queue.borrow_mut().frames).len() as u64;
    state.borrow().stats.queue_depth.fetch_sub(left, Relaxed);
}

/// Why the node closed an ingress connection of its own accord.
#[derive(Debug, Clone, Copy)]
pub(super) enum ClientClose {
    /// No whole frame for [`INGRESS_IDLE_TIMEOUT`].
    Idle,
    /// A frame begun and not completed within [`INGRESS_FRAME_TIMEOUT`].
    Slow,
    /// Its slot was given to a new connection.
    Evicted,
}

impl ClientClose {
    fn name(self) -> &'static str {
        match self {
            ClientClose::Idle => "idle",
            ClientClose::Slow => "slow",
            ClientClose::Evicted => "evicted",
        }
    }
}
