//! Measuring JSON-RPC: an in-process endpoint node ([`LocalNode`]) and a load generator
//! ([`run_load`]) for `corecell rpc-bench`, the tests and `benches/rpc.rs`.
//!
//! # LocalNode
//!
//! The pieces an EN serves JSON-RPC with, in one process: the exec shard (`exec::run_with_rpc`
//! with a [`TransferEngine`] over a genesis of funded accounts) on a glommio executor, the RPC
//! server ([`super::start`]) on its own thread, and a driver executor standing in for
//! consensus and the net shard: on [`LocalNode::make_block`] it asks the exec shard to build
//! the next block and hands it back as finalized with a dummy certificate (the exec shard
//! does not check certificates), and it counts the gossip frames the shard sends to the net.
//!
//! # Load generator
//!
//! `concurrency` OS threads, each with one keep-alive HTTP/1.1 connection, send one JSON-RPC
//! call at a time (a closed loop) for `duration` or until `max_requests` in all, and record each
//! call's latency. Bounded in count and time; it stops by itself. `send-raw` sends transfers
//! signed beforehand (signing is not measured) from the generated test accounts
//! ([`test_account_secret`]), each account's nonces in order.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use alloy_primitives::U256;

use super::{ChainInfo, RpcConfig, RpcServer, DEFAULT_BRIDGE_QUEUE};
use crate::config::genesis::{test_account_secret, ExecutionMode, GenesisAccount};
use crate::crypto::tx::{address_of_secret, sign_transfer, Transfer, TxType};
use crate::exec::chain_index::CHAIN_INDEX_MAX_BYTES;
use crate::exec::queries::RpcBridge;
use crate::exec::state::State;
use crate::exec::transfer::BASE_FEE_WEI;
use crate::exec::{
    BatchIn, Engine, ExecChannels, ExecCounters, ExecReply, ExecRequest, ExecToNet, RpcService,
    TransferEngine,
};
use crate::runtime::{Link, ShardStats};
use crate::types::chain::{transactions_root, Block, BlockHeader};
use crate::types::{FinalizedBlock, Height, QuorumCertificate, VoteKind};

/// Council size of a [`LocalNode`]'s chain (node ids `[1; 20]`, `[2; 20]`, ...).
pub const LOCAL_COUNCIL: usize = 4;
/// Most calls one [`run_load`] makes, whatever its duration.
pub const MAX_LOAD_REQUESTS: u64 = 10_000_000;
/// Longest [`run_load`] run.
pub const MAX_LOAD_DURATION: Duration = Duration::from_secs(300);
/// Most client threads of one [`run_load`].
pub const MAX_LOAD_CONCURRENCY: usize = 256;

/// What a [`LocalNode`] runs.
#[derive(Debug, Clone)]
pub struct LocalNodeSpec {
    /// Chain id.
    pub chain_id: u64,
    /// Funded accounts.
    pub accounts: Vec<GenesisAccount>,
    /// Listen address of the RPC server.
    pub listen: SocketAddr,
    /// Change the server's limits (and pinning) before it starts.
    pub tweak: fn(&mut RpcConfig),
    /// Pin the exec shard's executor to this CPU (else unbound).
    pub exec_cpu: Option<usize>,
    /// The chain index's byte budget.
    pub index_max_bytes: usize,
    /// The bridge queue's capacity.
    pub bridge_capacity: usize,
    /// Pin the RPC thread to this CPU (applied after `tweak`).
    pub rpc_cpu: Option<usize>,
}

impl LocalNodeSpec {
    /// `n` test accounts ([`test_account_secret`]) with `balance` wei each, on loopback port 0,
    /// default limits.
    pub fn with_test_accounts(chain_id: u64, n: u64, balance: U256) -> LocalNodeSpec {
        let accounts = (0..n)
            .filter_map(|i| address_of_secret(&test_account_secret(i)).ok())
            .map(|address| GenesisAccount { address, balance })
            .collect();
        LocalNodeSpec {
            chain_id,
            accounts,
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            tweak: |_| {},
            exec_cpu: None,
            index_max_bytes: CHAIN_INDEX_MAX_BYTES,
            bridge_capacity: DEFAULT_BRIDGE_QUEUE,
            rpc_cpu: None,
        }
    }
}

type BlockReply = flume::Sender<Result<(Height, usize), String>>;

/// An in-process EN (see the module doc). Dropping it stops everything.
pub struct LocalNode {
    /// Where the RPC server listens.
    pub addr: SocketAddr,
    /// The bridge's highest-known height (drives `eth_syncing`).
    pub highest_known: Arc<AtomicU64>,
    /// Gossip frames the exec shard sent to the (stub) net shard.
    pub gossip_frames: Arc<AtomicU64>,
    /// The exec shard's counters.
    pub counters: Arc<ExecCounters>,
    /// The exec shard's stats (busy time).
    pub exec_stats: Arc<ShardStats>,
    blocks: Option<flume::Sender<BlockReply>>,
    stop: Arc<AtomicBool>,
    server: Option<RpcServer>,
    executors: Vec<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for LocalNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalNode")
            .field("addr", &self.addr)
            .finish()
    }
}

fn spawn_executor<F, Fut>(
    name: &str,
    cpu: Option<usize>,
    make: F,
) -> Result<std::thread::JoinHandle<()>, String>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + 'static,
{
    let placement = match cpu {
        Some(cpu) => glommio::Placement::Fixed(cpu),
        None => glommio::Placement::Unbound,
    };
    let builder = glommio::LocalExecutorBuilder::new(placement)
        .name(name)
        .io_memory(1 << 20);
    let name = name.to_string();
    // glommio's own join handle is not a std one: run the executor inside a std thread.
    std::thread::Builder::new()
        .name(format!("{name}-host"))
        .spawn(move || match builder.make() {
            Ok(executor) => executor.run(make()),
            Err(e) => tracing::error!(error = %e, "executor {name} did not start"),
        })
        .map_err(|e| e.to_string())
}

impl LocalNode {
    /// Starts the exec shard, the driver and the RPC server.
    pub fn start(spec: LocalNodeSpec) -> Result<LocalNode, String> {
        let mut state =
            State::from_genesis(spec.chain_id, &spec.accounts).map_err(|e| e.to_string())?;
        let genesis_root = state.root();
        let genesis_header = BlockHeader {
            parent_hash: [0; 32],
            height: 0,
            round: 0,
            timestamp_ms: crate::config::clock::now_ms(),
            proposer: 0,
            randao_reveal: [0; 96],
            mix: [7; 32],
            transactions_root: transactions_root(std::iter::empty()),
            state_root: genesis_root,
            committee_digest: [0; 32],
        };
        let chain = ChainInfo {
            chain_id: spec.chain_id,
            execution: ExecutionMode::Transfer,
            council_node_ids: (1..=LOCAL_COUNCIL as u8).map(|i| [i; 20]).collect(),
            committee_size: LOCAL_COUNCIL,
            genesis_header: genesis_header.clone(),
        };
        let (bridge, inbox) = RpcBridge::new(spec.bridge_capacity);
        let highest_known = bridge.highest_known.clone();
        let cons_exec: Link<ExecRequest> = Link::new(64);
        let exec_cons: Link<ExecReply> = Link::new(64);
        let net_exec: Link<BatchIn> = Link::new(64);
        let exec_net: Link<ExecToNet> = Link::new(1024);
        let counters = Arc::new(ExecCounters::default());
        let exec_stats = Arc::new(ShardStats::default());
        let mut executors = Vec::new();
        {
            let (from_consensus, to_consensus) = (cons_exec.receiver, exec_cons.sender);
            let (from_net, to_net) = (net_exec.receiver, exec_net.sender);
            let counters = counters.clone();
            let stats = exec_stats.clone();
            let index_max_bytes = spec.index_max_bytes;
            executors.push(spawn_executor("exec", spec.exec_cpu, move || async move {
                let channels = ExecChannels {
                    from_consensus: from_consensus.connect().await,
                    to_consensus: to_consensus.connect().await,
                    from_net: from_net.connect().await,
                    to_net: to_net.connect().await,
                    to_store: None,
                };
                let engine = Engine::Transfer(Box::new(TransferEngine::new(state)));
                let rpc = RpcService {
                    inbox,
                    index_max_bytes,
                };
                if let Err(e) = crate::exec::run_with_rpc(
                    engine,
                    None,
                    channels,
                    Some(rpc),
                    None,
                    stats,
                    counters,
                )
                .await
                {
                    tracing::error!(error = %e, "exec shard stopped");
                }
            })?);
        }
        let (blocks, block_requests) = flume::unbounded::<BlockReply>();
        let gossip_frames = Arc::new(AtomicU64::new(0));
        {
            let gossip_frames = gossip_frames.clone();
            let (to_exec, from_exec) = (cons_exec.sender, exec_cons.receiver);
            let (to_exec_net, from_exec_net) = (net_exec.sender, exec_net.receiver);
            executors.push(spawn_executor("driver", None, move || async move {
                let to_exec = to_exec.connect().await;
                let from_exec = from_exec.connect().await;
                // Held open so that the exec shard's ingress stays up.
                let _to_exec_net = to_exec_net.connect().await;
                let from_exec_net = from_exec_net.connect().await;
                let counting = glommio::spawn_local(async move {
                    while let Some(m) = from_exec_net.recv().await {
                        if matches!(m, ExecToNet::Gossip(_)) {
                            gossip_frames.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                });
                let mut parent = genesis_header;
                while let Ok(reply) = block_requests.recv_async().await {
                    let result = drive_one_block(&to_exec, &from_exec, &parent).await;
                    if let Ok((header, _)) = &result {
                        parent = header.clone();
                    }
                    let _ = reply.send(result.map(|(h, n)| (h.height, n)));
                }
                drop(to_exec);
                counting.cancel().await;
            })?);
        }
        let stop = Arc::new(AtomicBool::new(false));
        let mut config = RpcConfig::new(spec.listen, chain);
        (spec.tweak)(&mut config);
        if spec.rpc_cpu.is_some() {
            config.cpu = spec.rpc_cpu;
        }
        let server = super::start(config, bridge, stop.clone())?;
        Ok(LocalNode {
            addr: server.local_addr,
            highest_known,
            gossip_frames,
            counters,
            exec_stats,
            blocks: Some(blocks),
            stop,
            server: Some(server),
            executors,
        })
    }

    /// The server's URL.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Builds the next block from the pool and finalizes it; returns its height and
    /// transaction count once the exec shard has it (the exec shard indexes it right after,
    /// on the same queue).
    pub async fn make_block(&self) -> Result<(Height, usize), String> {
        let (reply, answer) = flume::bounded(1);
        self.blocks
            .as_ref()
            .ok_or("stopped")?
            .send_async(reply)
            .await
            .map_err(|_| "the driver stopped".to_string())?;
        answer
            .recv_async()
            .await
            .map_err(|_| "the driver stopped".to_string())?
    }
}

impl Drop for LocalNode {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // The driver ends when its request channel closes; it drops its end of consensus's
        // channel, and the exec shard ends.
        self.blocks = None;
        if let Some(server) = self.server.take() {
            let _ = server.thread.join();
        }
        for e in self.executors.drain(..) {
            let _ = e.join();
        }
    }
}

/// Asks the exec shard for the block after `parent`, then finalizes it.
async fn drive_one_block(
    to_exec: &crate::runtime::Tx<ExecRequest>,
    from_exec: &crate::runtime::Rx<ExecReply>,
    parent: &BlockHeader,
) -> Result<(BlockHeader, usize), String> {
    let height = parent.height + 1;
    to_exec
        .send(ExecRequest::Build {
            height,
            round: 0,
            parent: parent.clone(),
        })
        .await
        .map_err(|_| "exec shard gone")?;
    let Some(ExecReply::Built {
        transactions,
        state_root,
        ..
    }) = from_exec.recv().await
    else {
        return Err("exec shard did not build".into());
    };
    let committee = crate::crypto::election::Committee::elect(
        LOCAL_COUNCIL,
        LOCAL_COUNCIL,
        height,
        &parent.mix,
    );
    let header = BlockHeader {
        parent_hash: parent.hash(),
        height,
        round: 0,
        timestamp_ms: crate::config::clock::now_ms(),
        proposer: committee.proposer(0),
        randao_reveal: [0; 96],
        mix: crate::crypto::election::next_mix(&parent.mix, &[0; 96]),
        transactions_root: transactions_root(transactions.iter().map(|t| t.bytes.as_slice())),
        state_root,
        committee_digest: committee.digest(),
    };
    let count = transactions.len();
    let block = Block {
        header: header.clone(),
        transactions,
    };
    let mut signers = crate::types::signers::empty(LOCAL_COUNCIL);
    for &m in committee.members().iter().take(committee.quorum()) {
        crate::types::signers::set(&mut signers, m);
    }
    let finalized = FinalizedBlock {
        certificate: QuorumCertificate {
            kind: VoteKind::Commit,
            height,
            round: 0,
            block_hash: block.hash(),
            signers,
            signature: [0; 96],
        },
        block,
    };
    to_exec
        .send(ExecRequest::Finalized {
            block: Arc::new(finalized),
            tx_hashes: None,
        })
        .await
        .map_err(|_| "exec shard gone")?;
    Ok((header, count))
}

/// Which call the load generator makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoadMethod {
    /// `eth_getBalance` of the test accounts, round robin.
    Balance,
    /// `eth_sendRawTransaction` of pre-signed transfers.
    SendRaw,
}

/// A load to run.
#[derive(Debug, Clone)]
pub struct LoadSpec {
    /// The server.
    pub addr: SocketAddr,
    /// The call.
    pub method: LoadMethod,
    /// Client threads (connections).
    pub concurrency: usize,
    /// How long.
    pub duration: Duration,
    /// At most this many calls in all.
    pub max_requests: u64,
    /// Chain id (signing).
    pub chain_id: u64,
    /// Test accounts to use ([`test_account_secret`] 0..accounts).
    pub accounts: u64,
    /// For `send-raw`: the first nonce of every account (the accounts' current nonces).
    pub first_nonce: u64,
    /// For `send-raw`: transactions per account signed beforehand.
    pub txs_per_account: u64,
}

/// What a load achieved.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadReport {
    /// Calls answered with a result.
    pub ok: u64,
    /// Calls answered with a JSON-RPC error (or an HTTP error status).
    pub errors: u64,
    /// The first error answer seen, if any.
    pub first_error: Option<String>,
    /// Wall time of the run.
    pub elapsed: Duration,
    /// Answered calls per second.
    pub per_second: f64,
    /// Median latency.
    pub p50: Duration,
    /// 99th percentile latency.
    pub p99: Duration,
}

impl std::fmt::Display for LoadReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} ok, {} errors in {:.2} s: {:.0} req/s, p50 {} us, p99 {} us",
            self.ok,
            self.errors,
            self.elapsed.as_secs_f64(),
            self.per_second,
            self.p50.as_micros(),
            self.p99.as_micros()
        )?;
        if let Some(e) = &self.first_error {
            write!(f, " (first error: {e})")?;
        }
        Ok(())
    }
}

/// The request bodies one client thread cycles through.
fn bodies(spec: &LoadSpec, thread: usize) -> Result<Vec<String>, String> {
    let accounts: Vec<u64> = (0..spec.accounts.max(1))
        .filter(|a| (*a as usize) % spec.concurrency == thread)
        .collect();
    let mut out = Vec::new();
    match spec.method {
        LoadMethod::Balance => {
            for a in accounts {
                let address =
                    address_of_secret(&test_account_secret(a)).map_err(|e| e.to_string())?;
                out.push(format!(
                    r#"{{"jsonrpc":"2.0","id":1,"method":"eth_getBalance","params":["0x{}","latest"]}}"#,
                    hex::encode(address)
                ));
            }
        }
        LoadMethod::SendRaw => {
            // Nonce-major order: every account's nonce n goes before any account's n + 1.
            for n in 0..spec.txs_per_account {
                for &a in &accounts {
                    let secret = test_account_secret(a);
                    let bytes = sign_transfer(
                        &secret,
                        TxType::Eip1559,
                        &Transfer {
                            chain_id: spec.chain_id,
                            nonce: spec.first_nonce + n,
                            to: [0xee; 20],
                            value: U256::from(1u8),
                            gas_limit: 21_000,
                            max_fee_per_gas: 2 * BASE_FEE_WEI,
                            max_priority_fee_per_gas: 1,
                        },
                    )
                    .map_err(|e| e.to_string())?;
                    out.push(format!(
                        r#"{{"jsonrpc":"2.0","id":1,"method":"eth_sendRawTransaction","params":["0x{}"]}}"#,
                        hex::encode(bytes)
                    ));
                }
            }
        }
    }
    Ok(out)
}

/// One keep-alive HTTP/1.1 connection (a minimal client: `Content-Length` bodies only).
pub struct Connection {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    head: String,
}

impl Connection {
    /// Connects.
    pub fn open(addr: SocketAddr) -> std::io::Result<Connection> {
        let stream = TcpStream::connect(addr)?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        Ok(Connection {
            reader: BufReader::new(stream.try_clone()?),
            writer: stream,
            head: format!("POST / HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n"),
        })
    }

    /// Posts `body`; returns the HTTP status and the response body.
    pub fn post(&mut self, body: &str) -> std::io::Result<(u16, String)> {
        let request = format!(
            "{}Content-Length: {}\r\n\r\n{}",
            self.head,
            body.len(),
            body
        );
        self.writer.write_all(request.as_bytes())?;
        let mut line = String::new();
        self.reader.read_line(&mut line)?;
        let status = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse::<u16>().ok())
            .ok_or_else(|| std::io::Error::other(format!("bad status line {line:?}")))?;
        let mut length = None;
        loop {
            line.clear();
            if self.reader.read_line(&mut line)? == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((name, value)) = l.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse::<usize>().ok();
                }
            }
        }
        let length =
            length.ok_or_else(|| std::io::Error::other("response without content-length"))?;
        let mut body = vec![0u8; length];
        self.reader.read_exact(&mut body)?;
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    }
}

/// Posts one body on a new connection (tests of limits, `rpc-bench` set-up calls).
pub fn post_once(addr: SocketAddr, body: &str) -> std::io::Result<(u16, String)> {
    Connection::open(addr)?.post(body)
}

/// Runs a load (see the module doc).
pub fn run_load(spec: &LoadSpec) -> Result<LoadReport, String> {
    if spec.concurrency == 0 || spec.concurrency > MAX_LOAD_CONCURRENCY {
        return Err(format!(
            "concurrency must be within 1..={MAX_LOAD_CONCURRENCY}"
        ));
    }
    let duration = spec.duration.min(MAX_LOAD_DURATION);
    let max_requests = spec.max_requests.min(MAX_LOAD_REQUESTS);
    let per_thread: Vec<Vec<String>> = (0..spec.concurrency)
        .map(|t| bodies(spec, t))
        .collect::<Result<_, _>>()?;
    let sent = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let deadline = start + duration;
    let threads: Vec<_> = per_thread
        .into_iter()
        .map(|bodies| {
            let sent = sent.clone();
            let addr = spec.addr;
            let cycle = spec.method == LoadMethod::Balance;
            std::thread::spawn(move || -> Result<(Vec<u32>, u64, Option<String>), String> {
                let mut latencies = Vec::new();
                let mut errors = 0u64;
                let mut first_error = None;
                if bodies.is_empty() {
                    return Ok((latencies, errors, first_error));
                }
                let mut conn = Connection::open(addr).map_err(|e| e.to_string())?;
                let mut i = 0usize;
                while Instant::now() < deadline
                    && sent.fetch_add(1, Ordering::Relaxed) < max_requests
                {
                    if i == bodies.len() {
                        if !cycle {
                            break;
                        }
                        i = 0;
                    }
                    let t0 = Instant::now();
                    let (status, body) = conn.post(&bodies[i]).map_err(|e| e.to_string())?;
                    let us = u32::try_from(t0.elapsed().as_micros()).unwrap_or(u32::MAX);
                    i += 1;
                    if status == 200 && body.contains("\"result\"") {
                        latencies.push(us);
                    } else {
                        errors += 1;
                        if first_error.is_none() {
                            first_error = Some(format!("HTTP {status}: {body}"));
                        }
                    }
                }
                Ok((latencies, errors, first_error))
            })
        })
        .collect();
    let mut latencies = Vec::new();
    let mut errors = 0;
    let mut first_error = None;
    for t in threads {
        let (l, e, f) = t.join().map_err(|_| "a client thread panicked")??;
        latencies.extend(l);
        errors += e;
        first_error = first_error.or(f);
    }
    let elapsed = start.elapsed();
    latencies.sort_unstable();
    let percentile = |p: f64| -> Duration {
        if latencies.is_empty() {
            return Duration::ZERO;
        }
        let i = ((latencies.len() as f64 * p).ceil() as usize).clamp(1, latencies.len()) - 1;
        Duration::from_micros(u64::from(latencies[i]))
    };
    Ok(LoadReport {
        ok: latencies.len() as u64,
        errors,
        first_error,
        elapsed,
        per_second: latencies.len() as f64 / elapsed.as_secs_f64().max(1e-9),
        p50: percentile(0.50),
        p99: percentile(0.99),
    })
}

/// `corecell rpc-bench`: what to measure, where.
#[derive(Debug, Clone)]
pub struct RpcBenchArgs {
    /// A running node's JSON-RPC address (`host:port` or `http://host:port`); `None`: start
    /// an in-process node ([`LocalNode`]) on loopback.
    pub url: Option<String>,
    /// The call.
    pub method: LoadMethod,
    /// Client threads.
    pub concurrency: usize,
    /// How long.
    pub duration: Duration,
    /// At most this many calls.
    pub max_requests: u64,
    /// Test accounts used (and funded, in process).
    pub accounts: u64,
    /// `send-raw`: transactions per account (at most the pool's per-sender limit, 64).
    pub txs_per_account: u64,
    /// `send-raw`: the accounts' next nonce (remote nodes).
    pub first_nonce: u64,
    /// Chain id; `None`: asked with `eth_chainId`.
    pub chain_id: Option<u64>,
    /// In process: pin the RPC thread here.
    pub rpc_cpu: Option<usize>,
    /// In process: pin the exec shard here.
    pub exec_cpu: Option<usize>,
}

/// Parses `balance` / `send-raw`.
pub fn parse_load_method(text: &str) -> Result<LoadMethod, String> {
    match text {
        "balance" => Ok(LoadMethod::Balance),
        "send-raw" => Ok(LoadMethod::SendRaw),
        other => Err(format!("`{other}`: expected `balance` or `send-raw`")),
    }
}

fn resolve(url: &str) -> Result<SocketAddr, String> {
    use std::net::ToSocketAddrs;
    let hostport = url
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    hostport
        .to_socket_addrs()
        .map_err(|e| format!("`{url}`: {e}"))?
        .next()
        .ok_or_else(|| format!("`{url}`: no address"))
}

/// Runs `corecell rpc-bench`; returns the report to print.
pub fn rpc_bench(args: &RpcBenchArgs) -> Result<String, String> {
    const IN_PROCESS_CHAIN: u64 = 1001;
    let mut local = None;
    let addr = match &args.url {
        Some(url) => resolve(url)?,
        None => {
            let mut spec = LocalNodeSpec::with_test_accounts(
                IN_PROCESS_CHAIN,
                args.accounts,
                U256::from(10u128.pow(24)),
            );
            spec.tweak = |c| c.requests_per_second = 0;
            spec.rpc_cpu = args.rpc_cpu;
            spec.exec_cpu = args.exec_cpu;
            let node = LocalNode::start(spec)?;
            let addr = node.addr;
            local = Some(node);
            addr
        }
    };
    let chain_id = match args.chain_id {
        Some(id) => id,
        None => {
            let (_, body) = post_once(
                addr,
                r#"{"jsonrpc":"2.0","id":1,"method":"eth_chainId","params":[]}"#,
            )
            .map_err(|e| format!("eth_chainId on {addr}: {e}"))?;
            let value: serde_json::Value =
                serde_json::from_str(&body).map_err(|e| format!("eth_chainId: {e}"))?;
            value["result"]
                .as_str()
                .and_then(|s| u64::from_str_radix(s.trim_start_matches("0x"), 16).ok())
                .ok_or_else(|| format!("eth_chainId answered {body}"))?
        }
    };
    let spec = LoadSpec {
        addr,
        method: args.method,
        concurrency: args.concurrency,
        duration: args.duration,
        max_requests: args.max_requests,
        chain_id,
        accounts: args.accounts,
        first_nonce: args.first_nonce,
        txs_per_account: args.txs_per_account,
    };
    let busy_before = local
        .as_ref()
        .map_or(0, |n| n.exec_stats.busy_ns.load(Ordering::Relaxed));
    let report = run_load(&spec)?;
    let mut out = format!(
        "rpc-bench {} against {addr} ({}), {} client threads: {report}",
        match args.method {
            LoadMethod::Balance => "eth_getBalance",
            LoadMethod::SendRaw => "eth_sendRawTransaction",
        },
        if local.is_some() {
            "in process"
        } else {
            "remote"
        },
        args.concurrency,
    );
    if let Some(node) = &local {
        let busy = node.exec_stats.busy_ns.load(Ordering::Relaxed) - busy_before;
        out.push_str(&format!(
            "\nexec shard busy {:.1} us per answered call (rpc thread pinned: {:?}, exec pinned: {:?})",
            busy as f64 / 1000.0 / report.ok.max(1) as f64,
            args.rpc_cpu,
            args.exec_cpu
        ));
    }
    Ok(out)
}
