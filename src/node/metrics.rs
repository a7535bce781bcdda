//! The Prometheus metrics endpoint: `GET /metrics` on the node's `[metrics] listen` address.
//!
//! The shards count into atomics ([`NodeCounters`]); a plain thread (not an executor: it must
//! never stall a shard) serves HTTP and, per scrape, copies the atomics into a fresh
//! `prometheus-client` registry and encodes it in the text format. Requests are bounded
//! ([`MAX_REQUEST_BYTES`], [`REQUEST_TIMEOUT`]); anything but `GET /metrics` gets a 404.
//!
//! Metrics (all prefixed `corecell_`): `height`, `round`, `round_changes`, `blocks`,
//! `finalized_txs`, `finalized_tps` (between the last two scrapes), `rejected_messages` (and per
//! reason, label `reason`, `rejected_by_reason`), `evidence` (and per equivocating council
//! member, label `signer` = its council index, `evidence_by_signer`), `peers`, `peers_cn`, `peers_pn`, `peers_en`, `relayed_frames`,
//! `duplicate_frames`, `bytes_in`, `bytes_out`, `dropped_frames`, `peer_violations`, `link_auth_failures`,
//! `refused_handshakes`, `ingress_connections`, `ingress_refused`, `ingress_idle`, `ingress_slow`, `ingress_evicted`,
//! `pool_pending`, `pool_admitted`, `pool_refused`, per shard (label
//! `shard`) `shard_busy_seconds`, `shard_messages_in`, `shard_messages_out`,
//! `shard_queue_depth`, and `process_cpu_seconds`, `process_max_rss_bytes`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::consensus::Rejection;
use crate::consensus_shard::ConsensusCounters;
use crate::exec::ExecCounters;
use crate::net::NetCounters;
use crate::runtime::NodeShardStats;

/// Largest HTTP request read.
pub const MAX_REQUEST_BYTES: usize = 8 * 1024;
/// A scrape request must arrive within this.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

/// Every counter of a node.
#[derive(Clone)]
pub struct NodeCounters {
    /// Consensus shard.
    pub consensus: Arc<ConsensusCounters>,
    /// Net shard.
    pub net: Arc<NetCounters>,
    /// Exec shard.
    pub exec: Arc<ExecCounters>,
    /// Per-shard accounting.
    pub shards: NodeShardStats,
}

/// CPU seconds (user + system) and maximum resident set size in bytes of this process.
pub fn process_usage() -> (f64, u64) {
    // SAFETY: getrusage writes into the struct we pass; RUSAGE_SELF is always valid.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return (0.0, 0);
    }
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    // `ru_maxrss` survives execve: a node started by a large parent (the testnet holding its
    // pre-signed load) would report the parent's peak. The kernel's high-water mark of this
    // process's own memory (`VmHWM`) does not; `ru_maxrss` is the fallback off Linux.
    let peak = peak_resident_bytes().unwrap_or(usage.ru_maxrss.max(0) as u64 * 1024);
    (secs(usage.ru_utime) + secs(usage.ru_stime), peak)
}

/// This process's peak resident memory, bytes (`VmHWM` in `/proc/self/status`).
fn peak_resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(kib * 1024)
}

fn gauge(registry: &mut Registry, name: &str, help: &str, value: f64) {
    let g: Gauge<f64, std::sync::atomic::AtomicU64> = Gauge::default();
    g.set(value);
    registry.register(name, help, g);
}

fn counter(registry: &mut Registry, name: &str, help: &str, value: &AtomicU64) {
    let c: Counter = Counter::default();
    c.inc_by(value.load(Relaxed));
    registry.register(name, help, c);
}

/// Renders the text exposition of `counters`; `tps` is the finalized rate to report.
pub fn render(counters: &NodeCounters, tps: f64) -> String {
    let mut r = Registry::with_prefix("corecell");
    let c = &counters.consensus;
    gauge(
        &mut r,
        "height",
        "Height of the last finalized block",
        c.height.load(Relaxed) as f64,
    );
    gauge(
        &mut r,
        "round",
        "Current consensus round",
        c.round.load(Relaxed) as f64,
    );
    counter(
        &mut r,
        "round_changes",
        "Rounds above 0 entered",
        &c.round_changes,
    );
    counter(&mut r, "blocks", "Blocks finalized since start", &c.blocks);
    counter(
        &mut r,
        "finalized_txs",
        "Transactions finalized since start",
        &c.finalized_txs,
    );
    gauge(
        &mut r,
        "finalized_tps",
        "Finalized transactions per second between the last two scrapes",
        tps,
    );
    counter(
        &mut r,
        "rejected_messages",
        "Consensus messages refused",
        &c.rejected,
    );
    let by_reason: Family<Vec<(String, String)>, Counter> = Family::default();
    for reason in Rejection::ALL {
        by_reason
            .get_or_create(&vec![("reason".to_string(), reason.name().to_string())])
            .inc_by(c.rejected_by_reason[reason as usize].load(Relaxed));
    }
    r.register(
        "rejected_by_reason",
        "Consensus messages refused, per reason",
        by_reason,
    );
    counter(
        &mut r,
        "evidence",
        "Equivocation evidence recorded",
        &c.evidence,
    );
    let by_signer: Family<Vec<(String, String)>, Counter> = Family::default();
    let evidence_by_signer = c
        .evidence_by_signer
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    for (signer, n) in evidence_by_signer {
        by_signer
            .get_or_create(&vec![("signer".to_string(), signer.to_string())])
            .inc_by(n);
    }
    r.register(
        "evidence_by_signer",
        "Equivocation evidence recorded, per equivocating council member (its council index)",
        by_signer,
    );
    gauge(
        &mut r,
        "persist_wait_seconds",
        "Seconds consensus waited for WAL records to be durable (votes wait for this)",
        c.persist_wait_ns.load(Relaxed) as f64 / 1e9,
    );
    gauge(
        &mut r,
        "commit_wait_seconds",
        "Seconds consensus waited for finalized blocks to be durable",
        c.commit_wait_ns.load(Relaxed) as f64 / 1e9,
    );
    let n = &counters.net;
    gauge(
        &mut r,
        "peers",
        "Connected peers (bootnode: registered nodes)",
        n.peers.load(Relaxed) as f64,
    );
    for (i, role) in ["cn", "pn", "en"].into_iter().enumerate() {
        gauge(
            &mut r,
            &format!("peers_{role}"),
            &format!("Connected peers that are {}s", role.to_uppercase()),
            n.peers_by_role[i].load(Relaxed) as f64,
        );
    }
    counter(
        &mut r,
        "relayed_frames",
        "Frames relayed by a PN (blocks toward ENs, transaction batches toward CNs)",
        &n.relayed,
    );
    counter(
        &mut r,
        "duplicate_frames",
        "Frames dropped as duplicates (blocks already final here, batches already relayed)",
        &n.duplicates,
    );
    counter(&mut r, "bytes_in", "Bytes received", &n.bytes_in);
    counter(&mut r, "bytes_out", "Bytes sent", &n.bytes_out);
    counter(
        &mut r,
        "dropped_frames",
        "Frames dropped on full queues",
        &n.dropped,
    );
    counter(
        &mut r,
        "peer_violations",
        "Connections closed and banned for a violation",
        &n.violations,
    );
    counter(
        &mut r,
        "link_auth_failures",
        "Peer links closed because a record failed authentication (tampering on the path; no ban)",
        &n.link_failures,
    );
    counter(
        &mut r,
        "refused_handshakes",
        "Handshakes refused",
        &n.refused_handshakes,
    );
    gauge(
        &mut r,
        "ingress_connections",
        "Ingress connections open",
        n.ingress_connections.load(Relaxed) as f64,
    );
    counter(
        &mut r,
        "ingress_refused",
        "Ingress connections refused (every slot busy with an active client, or the address's share used)",
        &n.ingress_refused,
    );
    counter(
        &mut r,
        "ingress_idle",
        &format!(
            "Ingress connections closed for completing no frame in {} s",
            crate::net::INGRESS_IDLE_TIMEOUT.as_secs()
        ),
        &n.ingress_idle,
    );
    counter(
        &mut r,
        "ingress_slow",
        &format!(
            "Ingress connections closed for not completing a begun frame in {} s (slowloris)",
            crate::net::INGRESS_FRAME_TIMEOUT.as_secs()
        ),
        &n.ingress_slow,
    );
    counter(
        &mut r,
        "ingress_evicted",
        "Ingress connections closed to give their slot to a new connection",
        &n.ingress_evicted,
    );
    let e = &counters.exec;
    gauge(
        &mut r,
        "pool_pending",
        "Transactions waiting for a block",
        e.pending.load(Relaxed) as f64,
    );
    counter(
        &mut r,
        "pool_admitted",
        "Transactions admitted to the pool",
        &e.admitted,
    );
    counter(
        &mut r,
        "pool_refused",
        "Transactions refused at admission (any reason)",
        &e.refused,
    );
    counter(
        &mut r,
        "admission_shed",
        "Transactions not admitted because their batch waited too long (overload)",
        &e.shed,
    );
    counter(
        &mut r,
        "pool_dropped",
        "Admitted transactions dropped before any block included them",
        &e.dropped,
    );
    counter(
        &mut r,
        "signature_recoveries",
        "Transaction signature recoveries done",
        &e.recoveries,
    );
    counter(
        &mut r,
        "block_txs_pooled",
        "Transactions of checked or finalized blocks found decoded in the pool (gossip hits)",
        &e.block_txs_pooled,
    );
    counter(
        &mut r,
        "block_txs_recovered",
        "Transactions of checked or finalized blocks decoded and recovered at block time",
        &e.block_txs_recovered,
    );
    gauge(
        &mut r,
        "state_height",
        "Height of the executed, finalized account state",
        e.state_height.load(Relaxed) as f64,
    );
    let busy: Family<Vec<(String, String)>, Gauge<f64, AtomicU64>> = Family::default();
    let ins: Family<Vec<(String, String)>, Counter> = Family::default();
    let outs: Family<Vec<(String, String)>, Counter> = Family::default();
    let depth: Family<Vec<(String, String)>, Gauge> = Family::default();
    for (shard, stats) in &counters.shards {
        let label = vec![("shard".to_string(), shard.name().to_string())];
        busy.get_or_create(&label)
            .set(stats.busy_ns.load(Relaxed) as f64 / 1e9);
        ins.get_or_create(&label)
            .inc_by(stats.messages_in.load(Relaxed));
        outs.get_or_create(&label)
            .inc_by(stats.messages_out.load(Relaxed));
        depth
            .get_or_create(&label)
            .set(stats.queue_depth.load(Relaxed) as i64);
    }
    r.register(
        "shard_busy_seconds",
        "Seconds each shard spent handling messages",
        busy,
    );
    r.register("shard_messages_in", "Messages into each shard", ins);
    r.register("shard_messages_out", "Messages out of each shard", outs);
    r.register(
        "shard_queue_depth",
        "Messages waiting for each shard",
        depth,
    );
    let (cpu, rss) = process_usage();
    gauge(
        &mut r,
        "process_cpu_seconds",
        "CPU seconds used by this process",
        cpu,
    );
    gauge(
        &mut r,
        "process_max_rss_bytes",
        "Largest resident set size",
        rss as f64,
    );
    let mut out = String::new();
    // Encoding into a String cannot fail.
    let _ = encode(&mut out, &r);
    out
}

/// Serves metrics on `addr` on a thread of its own until `stop` is set.
pub fn serve(
    addr: SocketAddr,
    counters: NodeCounters,
    stop: Arc<AtomicBool>,
) -> Result<std::thread::JoinHandle<()>, String> {
    let listener =
        TcpListener::bind(addr).map_err(|e| format!("binding metrics address {addr}: {e}"))?;
    listener
        .set_nonblocking(true)
        .map_err(|e| format!("metrics listener: {e}"))?;
    std::thread::Builder::new()
        .name("metrics".into())
        .spawn(move || {
            let mut last = (
                Instant::now(),
                counters.consensus.finalized_txs.load(Relaxed),
            );
            let mut tps = 0.0;
            while !stop.load(Relaxed) {
                let stream = match listener.accept() {
                    Ok((s, _)) => s,
                    Err(_) => {
                        std::thread::sleep(Duration::from_millis(20));
                        continue;
                    }
                };
                let now = Instant::now();
                let txs = counters.consensus.finalized_txs.load(Relaxed);
                let dt = now.duration_since(last.0).as_secs_f64();
                if dt >= 0.5 {
                    tps = txs.saturating_sub(last.1) as f64 / dt;
                    last = (now, txs);
                }
                let _ = answer(stream, &counters, tps);
            }
        })
        .map_err(|e| format!("starting the metrics thread: {e}"))
}

fn answer(
    mut stream: std::net::TcpStream,
    counters: &NodeCounters,
    tps: f64,
) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(REQUEST_TIMEOUT))?;
    stream.set_write_timeout(Some(REQUEST_TIMEOUT))?;
    let mut request = Vec::new();
    let mut buf = [0u8; 1024];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf)?;
        if n == 0 || request.len() + n > MAX_REQUEST_BYTES {
            return Ok(());
        }
        request.extend_from_slice(&buf[..n]);
    }
    let (status, body) = if request.starts_with(b"GET /metrics ") {
        ("200 OK", render(counters, tps))
    } else {
        ("404 Not Found", "only GET /metrics is served\n".to_string())
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes())?;
    stream.write_all(body.as_bytes())
}

/// Fetches `/metrics` from `addr` and returns the value of each unlabelled sample (and
/// `name{labels}` for labelled ones). Used by the testnet and tests.
pub fn scrape(addr: SocketAddr, timeout: Duration) -> Result<Vec<(String, f64)>, String> {
    let mut stream = std::net::TcpStream::connect_timeout(&addr, timeout)
        .map_err(|e| format!("metrics {addr}: {e}"))?;
    // A connection to a loopback port nobody listens on can connect to itself when the port
    // lies in the ephemeral range and the kernel picks it as the source port (TCP
    // simultaneous open); it would then hold the port a node is about to bind.
    if stream.local_addr().ok() == Some(addr) {
        return Err(format!("metrics {addr}: nothing listens there yet"));
    }
    stream
        .set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .map_err(|e| e.to_string())?;
    let mut body = String::new();
    stream
        .take(16 * 1024 * 1024)
        .read_to_string(&mut body)
        .map_err(|e| e.to_string())?;
    let text = body.split("\r\n\r\n").nth(1).unwrap_or("");
    Ok(text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            Some((name.to_string(), value.parse().ok()?))
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_names_every_shard_and_counter() {
        let shards: NodeShardStats = crate::config::node::Role::Cn
            .shards()
            .iter()
            .map(|s| (*s, Arc::default()))
            .collect();
        let counters = NodeCounters {
            consensus: Arc::default(),
            net: Arc::default(),
            exec: Arc::default(),
            shards,
        };
        counters.consensus.height.store(42, Relaxed);
        counters.consensus.finalized_txs.store(7, Relaxed);
        counters.consensus.rejected_by_reason[Rejection::TooFarAhead as usize].store(4, Relaxed);
        counters
            .consensus
            .evidence_by_signer
            .lock()
            .unwrap()
            .insert(3, 2);
        let text = render(&counters, 3.5);
        assert!(
            text.contains("corecell_rejected_by_reason_total{reason=\"too_far_ahead\"} 4"),
            "{text}"
        );
        assert!(
            text.contains("corecell_rejected_by_reason_total{reason=\"bad_signature\"} 0"),
            "{text}"
        );
        assert!(
            text.contains("corecell_evidence_by_signer_total{signer=\"3\"} 2"),
            "{text}"
        );
        assert!(text.contains("corecell_height 42"), "{text}");
        assert!(text.contains("corecell_finalized_txs_total 7"), "{text}");
        assert!(text.contains("corecell_finalized_tps 3.5"), "{text}");
        for shard in ["net", "consensus", "exec", "store"] {
            assert!(
                text.contains(&format!("corecell_shard_busy_seconds{{shard=\"{shard}\"}}")),
                "{text}"
            );
        }
    }

    #[test]
    fn serves_and_scrapes_over_loopback() {
        let stop = Arc::new(AtomicBool::new(false));
        let counters = NodeCounters {
            consensus: Arc::default(),
            net: Arc::default(),
            exec: Arc::default(),
            shards: NodeShardStats::new(),
        };
        counters.consensus.blocks.store(5, Relaxed);
        let probe = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = probe.local_addr().unwrap();
        drop(probe);
        let handle = serve(addr, counters, stop.clone()).unwrap();
        let samples = scrape(addr, Duration::from_secs(2)).unwrap();
        assert!(samples.contains(&("corecell_blocks_total".to_string(), 5.0)));
        // A bad request gets a 404, not a crash; the server keeps serving.
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.write_all(b"POST /x HTTP/1.1\r\n\r\n").unwrap();
        let mut reply = String::new();
        s.read_to_string(&mut reply).unwrap();
        assert!(reply.starts_with("HTTP/1.1 404"));
        assert!(scrape(addr, Duration::from_secs(2)).is_ok());
        stop.store(true, Relaxed);
        handle.join().unwrap();
    }
}
