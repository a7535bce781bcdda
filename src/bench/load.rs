//! The open-loop load generator of the `raw` workload: opaque transactions of a fixed size sent
//! in batches to CNs' native ingress ports, with each batch's send time recorded and its
//! finality taken from the node's `IngressAck`.
//!
//! Open loop: batches leave on a fixed schedule (every [`BATCH_INTERVAL`]) whatever the
//! network does; a batch's transactions are due at the schedule's time, and when the sender
//! falls behind its schedule (the socket blocks, or the machine is saturated) the lag is
//! measured and reported, never hidden: latency is counted from the scheduled time, so a
//! late sender shows as latency, and `behind_ms` says by how much it ran late.
//!
//! Transactions are unique: `run id (8) | target (4) | sequence (8) | padding`, so no two
//! transactions of a run, or of two runs, collide in the pools' dedup.
//!
//! Threads: per target, one sender and one receiver (plain threads, not executors: the load
//! generator is not the node). Shared per target: the send time of each batch (by batch id),
//! written before the batch is sent and read when its ack arrives.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::report::LatencyHistogram;
use crate::exec::batch_frame;
use crate::types::chain::SignedTransaction;
use crate::types::frame::{FrameDecoder, FrameKind, Message};
use crate::types::network::{IngressAck, MAX_BATCH_TXS, MAX_BATCH_TX_BYTES};

/// How often a target gets a batch.
pub const BATCH_INTERVAL: Duration = Duration::from_millis(5);
/// Smallest raw transaction (room for the uniqueness prefix).
pub const MIN_TX_SIZE: usize = 20;

/// What to send.
#[derive(Debug, Clone)]
pub struct LoadSpec {
    /// Ingress addresses, one connection each; the rate is split evenly.
    pub targets: Vec<SocketAddr>,
    /// Transactions per second, in total.
    pub rate: u64,
    /// Bytes per transaction.
    pub tx_size: usize,
}

/// Live and final figures of a load run, shared with the caller.
#[derive(Debug, Default)]
pub struct LoadStats {
    /// Transactions sent.
    pub submitted: AtomicU64,
    /// Transactions acknowledged final.
    pub finalized: AtomicU64,
    /// Transactions refused by a node.
    pub refused: AtomicU64,
    /// Largest lag of a sender behind its schedule, in ms.
    pub behind_ms: AtomicU64,
    /// Finality latency of every final transaction since the start.
    pub latency: Mutex<LatencyHistogram>,
    /// Finality latency since the last [`LoadStats::take_window`].
    pub window: Mutex<LatencyHistogram>,
    /// Connection errors seen.
    pub errors: Mutex<Vec<String>>,
}

impl LoadStats {
    /// The latency histogram of the last window, reset.
    pub fn take_window(&self) -> LatencyHistogram {
        let mut w = self.window.lock().unwrap_or_else(|e| e.into_inner());
        std::mem::take(&mut *w)
    }
}

/// A running load.
pub struct Load {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
    /// Figures.
    pub stats: Arc<LoadStats>,
}

impl Load {
    /// Connects to every target and starts sending.
    pub fn start(spec: &LoadSpec) -> Result<Load, String> {
        if spec.targets.is_empty() {
            return Err("no ingress target to send to".into());
        }
        if spec.tx_size < MIN_TX_SIZE || spec.tx_size > crate::crypto::tx::MAX_TX_BYTES {
            return Err(format!(
                "--tx-size {} is outside {MIN_TX_SIZE}..={}",
                spec.tx_size,
                crate::crypto::tx::MAX_TX_BYTES
            ));
        }
        let mut run_id = [0u8; 8];
        getrandom::fill(&mut run_id).map_err(|e| format!("no randomness: {e}"))?;
        let stats = Arc::new(LoadStats::default());
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        let per_target = spec.rate as f64 / spec.targets.len() as f64;
        for (t, addr) in spec.targets.iter().enumerate() {
            let stream = TcpStream::connect_timeout(addr, Duration::from_secs(5))
                .map_err(|e| format!("connecting to ingress {addr}: {e}"))?;
            let _ = stream.set_nodelay(true);
            let reader = stream
                .try_clone()
                .map_err(|e| format!("ingress {addr}: {e}"))?;
            let sent_at: Arc<Mutex<std::collections::HashMap<u64, (Instant, u32)>>> =
                Arc::default();
            let start = Instant::now();
            let sender = Sender {
                stream,
                target: t as u32,
                run_id,
                rate: per_target,
                tx_size: spec.tx_size,
                sent_at: sent_at.clone(),
                stats: stats.clone(),
                stop: stop.clone(),
                start,
            };
            threads.push(
                std::thread::Builder::new()
                    .name(format!("load-send-{t}"))
                    .spawn(move || sender.run())
                    .map_err(|e| e.to_string())?,
            );
            let (stats, stop, addr) = (stats.clone(), stop.clone(), *addr);
            threads.push(
                std::thread::Builder::new()
                    .name(format!("load-recv-{t}"))
                    .spawn(move || receive(reader, addr, sent_at, stats, stop))
                    .map_err(|e| e.to_string())?,
            );
        }
        Ok(Load {
            stop,
            threads,
            stats,
        })
    }

    /// Stops sending (acks still in flight are not waited for) and joins the threads.
    pub fn stop(self) -> Arc<LoadStats> {
        self.stop.store(true, Relaxed);
        for t in self.threads {
            let _ = t.join();
        }
        self.stats
    }
}

struct Sender {
    stream: TcpStream,
    target: u32,
    run_id: [u8; 8],
    rate: f64,
    tx_size: usize,
    sent_at: Arc<Mutex<std::collections::HashMap<u64, (Instant, u32)>>>,
    stats: Arc<LoadStats>,
    stop: Arc<AtomicBool>,
    start: Instant,
}

impl Sender {
    fn run(mut self) {
        let max_per_batch = MAX_BATCH_TXS.min(MAX_BATCH_TX_BYTES / self.tx_size).max(1);
        let mut seq: u64 = 0;
        let mut batch_id: u64 = 0;
        let mut tick: u32 = 0;
        while !self.stop.load(Relaxed) {
            tick += 1;
            let due = self.start + BATCH_INTERVAL * tick;
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            } else {
                let behind = (now - due).as_millis() as u64;
                self.stats.behind_ms.fetch_max(behind, Relaxed);
            }
            // Transactions due by this tick, minus those already sent.
            let target_total = (self.rate * (BATCH_INTERVAL * tick).as_secs_f64()) as u64;
            let mut owed = target_total.saturating_sub(seq);
            while owed > 0 {
                let n = owed.min(max_per_batch as u64) as usize;
                let txs: Vec<SignedTransaction> = (0..n as u64)
                    .map(|i| SignedTransaction {
                        bytes: self.transaction(seq + i),
                    })
                    .collect();
                let frame = batch_frame(batch_id, txs);
                if let Ok(mut m) = self.sent_at.lock() {
                    m.insert(batch_id, (due, n as u32));
                }
                if let Err(e) = self.stream.write_all(&frame) {
                    if let Ok(mut errors) = self.stats.errors.lock() {
                        errors.push(format!("sending to target {}: {e}", self.target));
                    }
                    return;
                }
                self.stats.submitted.fetch_add(n as u64, Relaxed);
                seq += n as u64;
                batch_id += 1;
                owed -= n as u64;
            }
        }
        let _ = self.stream.shutdown(std::net::Shutdown::Write);
    }

    fn transaction(&self, seq: u64) -> Vec<u8> {
        let mut bytes = vec![0x5a; self.tx_size];
        bytes[..8].copy_from_slice(&self.run_id);
        bytes[8..12].copy_from_slice(&self.target.to_be_bytes());
        bytes[12..20].copy_from_slice(&seq.to_be_bytes());
        bytes
    }
}

fn receive(
    mut stream: TcpStream,
    addr: SocketAddr,
    sent_at: Arc<Mutex<std::collections::HashMap<u64, (Instant, u32)>>>,
    stats: Arc<LoadStats>,
    stop: Arc<AtomicBool>,
) {
    let _ = stream.set_read_timeout(Some(Duration::from_millis(100)));
    let mut decoder = FrameDecoder::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match stream.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                if stop.load(Relaxed) {
                    return;
                }
                continue;
            }
            Err(e) => {
                if !stop.load(Relaxed) {
                    if let Ok(mut errors) = stats.errors.lock() {
                        errors.push(format!("reading from {addr}: {e}"));
                    }
                }
                return;
            }
        };
        let now = Instant::now();
        let mut input = &buf[..n];
        loop {
            let frame = match decoder.decode(&mut input) {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) => {
                    if let Ok(mut errors) = stats.errors.lock() {
                        errors.push(format!("bad frame from {addr}: {e}"));
                    }
                    return;
                }
            };
            let Ok(Message::IngressAck(ack)) = frame.message() else {
                if let Ok(mut errors) = stats.errors.lock() {
                    errors.push(format!(
                        "{addr} sent a {} frame on the ingress port",
                        frame.kind.name()
                    ));
                }
                debug_assert_ne!(frame.kind, FrameKind::IngressAck);
                return;
            };
            let id = ack.batch_id.to_native();
            let count = ack.count.to_native() as u64;
            let sent = sent_at.lock().ok().and_then(|mut m| m.remove(&id));
            if ack.status == IngressAck::FINAL {
                stats.finalized.fetch_add(count, Relaxed);
                if let Some((due, _)) = sent {
                    let us = now.saturating_duration_since(due).as_micros() as u64;
                    if let Ok(mut h) = stats.latency.lock() {
                        h.record_n(us, count);
                    }
                    if let Ok(mut h) = stats.window.lock() {
                        h.record_n(us, count);
                    }
                }
            } else {
                stats.refused.fetch_add(count, Relaxed);
            }
        }
    }
}
