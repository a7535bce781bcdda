//! Ethereum JSON-RPC, served by an endpoint node (EN), bridged to the exec shard.
//!
//! # Job
//!
//! [`start`] runs a `jsonrpsee` HTTP server on **its own OS thread** with a current-thread
//! tokio runtime (optionally pinned to a CPU). Every method that needs chain data asks the
//! exec shard through the [`RpcBridge`]: a **bounded** flume channel of [`RpcRequest`](crate::exec::queries::RpcRequest)s, each
//! with a tokio oneshot for the [`RpcAnswer`](crate::exec::queries::RpcAnswer). The exec shard (a glommio executor) awaits the
//! channel with `recv_async` and answers from its engine and its
//! [`ChainIndex`](crate::exec::chain_index::ChainIndex) (see `exec::run_with_rpc`). The shard
//! only does look-ups (and, for `eth_sendRawTransaction`, the admission); the JSON is built
//! here, on the RPC thread.
//!
//! # Methods
//!
//! Under `eth_`, and the same under `kaia_` and `klay_`: `chainId`, `blockNumber`,
//! `getBalance`, `getTransactionCount`, `sendRawTransaction`, `getTransactionByHash`,
//! `getTransactionReceipt`, `getBlockByNumber`, `getBlockByHash`, `gasPrice`,
//! `maxPriorityFeePerGas`, `estimateGas`, `feeHistory`, `syncing`; and `net_version`,
//! `web3_clientVersion`, `corecell_getBlockByNumber`, `corecell_getCertificate`. The module
//! [`methods`] documents what each answers and how fields are filled.
//!
//! - **State** (`getBalance`, `getTransactionCount`): the latest state only. `latest`,
//!   `pending`, `safe`, `finalized`, the head's number or hash are accepted (finality is
//!   immediate, so they are one state; `pending` adds the sender's pooled transactions to the
//!   nonce); anything older answers error -32000 "historical state is not available".
//! - **Blocks and transactions** come from the exec shard's index of recent blocks (bounded by
//!   [`CHAIN_INDEX_MAX_BYTES`](crate::exec::chain_index::CHAIN_INDEX_MAX_BYTES)): a block or
//!   transaction older than the index, or unknown, answers `null` (as geth does for unknown
//!   ones). Block 0 is served from the genesis header (`earliest`).
//! - A **raw** chain (opaque transactions) has no accounts nor Ethereum transactions: state
//!   and transaction methods answer error -32000 "not available on a raw chain"; blocks are
//!   served with transaction hashes (keccak-256 of the bytes).
//!
//! # Errors
//!
//! Malformed parameters: -32602 (jsonrpsee). A refused transaction: -32000 with geth's message
//! ([`crate::exec::mempool::Refusal::eth_message`]). Over a limit (bridge queue full, request
//! rate): -32005 "limit exceeded" with the reason. Exec shard gone: -32603.
//!
//! # Limits (all named constants, defaults of [`RpcConfig`])
//!
//! Request body bytes ([`DEFAULT_MAX_BODY_BYTES`]), response body bytes
//! ([`DEFAULT_MAX_RESPONSE_BYTES`]), requests per batch ([`DEFAULT_MAX_BATCH_REQUESTS`]),
//! connections ([`DEFAULT_MAX_CONNECTIONS`]; jsonrpsee counts, for HTTP, the requests being
//! processed at once: an idle keep-alive connection holds no slot, a request over the limit is
//! answered HTTP 429), method calls per second **for the whole
//! server** (a token bucket shared by all clients, each call of a batch counting;
//! [`DEFAULT_REQUESTS_PER_SECOND`]), and the bridge queue ([`DEFAULT_BRIDGE_QUEUE`]): when the
//! exec shard is behind by that many queries, a call is answered "node busy" at once rather
//! than queued without bound.
//!
//! # Invariants
//!
//! - Nothing a client sends is unwrapped: every parse failure is an error answer.
//! - The RPC thread never blocks on the exec shard: `try_send` on the bounded queue, then an
//!   await on the oneshot.
//! - The exec shard is never blocked by the RPC thread: it answers with `Arc`s of indexed
//!   blocks and plain values.

pub mod bench;
pub mod methods;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::config::genesis::{ExecutionMode, Genesis};
use crate::exec::queries::RpcBridge;
use crate::types::BlockHeader;

/// Default largest request body, in bytes (a batch of raw transactions fits).
pub const DEFAULT_MAX_BODY_BYTES: u32 = 5 * 1024 * 1024;
/// Default largest response body, in bytes (a full block of transactions fits).
pub const DEFAULT_MAX_RESPONSE_BYTES: u32 = 64 * 1024 * 1024;
/// Default most calls in one batch request.
pub const DEFAULT_MAX_BATCH_REQUESTS: u32 = 100;
/// Default most method calls per second for the whole server (all clients together).
pub const DEFAULT_REQUESTS_PER_SECOND: u32 = 50_000;
/// Default most HTTP requests processed at once (jsonrpsee's "connections").
pub const DEFAULT_MAX_CONNECTIONS: u32 = 256;
/// Default capacity of the bridge queue to the exec shard.
pub const DEFAULT_BRIDGE_QUEUE: usize = 4096;
/// How often the server thread checks its stop flag.
pub const STOP_POLL: Duration = Duration::from_millis(20);
/// The `web3_clientVersion` answer.
pub const CLIENT_VERSION: &str = concat!("corecell/v", env!("CARGO_PKG_VERSION"));

/// The chain facts the RPC thread answers from without asking the exec shard.
#[derive(Debug, Clone)]
pub struct ChainInfo {
    /// EIP-155 chain id.
    pub chain_id: u64,
    /// Transfers (executed) or raw.
    pub execution: ExecutionMode,
    /// Council members' node ids, by council index (a block's `miner` is its proposer's).
    pub council_node_ids: Vec<[u8; 20]>,
    /// Committee size per height.
    pub committee_size: usize,
    /// The genesis header (block 0).
    pub genesis_header: BlockHeader,
}

impl ChainInfo {
    /// The facts of a validated genesis.
    pub fn from_genesis(genesis: &Genesis) -> ChainInfo {
        ChainInfo {
            chain_id: genesis.chain_id,
            execution: genesis.execution,
            council_node_ids: genesis.council.iter().map(|m| m.node_id).collect(),
            committee_size: genesis.committee_size,
            genesis_header: genesis.header(),
        }
    }
}

/// The server's settings.
#[derive(Debug, Clone)]
pub struct RpcConfig {
    /// Where to listen (bound before [`start`] returns).
    pub listen: SocketAddr,
    /// The chain served.
    pub chain: ChainInfo,
    /// Largest request body, bytes.
    pub max_body_bytes: u32,
    /// Largest response body, bytes.
    pub max_response_bytes: u32,
    /// Most calls in one batch.
    pub max_batch_requests: u32,
    /// Most method calls per second, for the whole server (0: unlimited).
    pub requests_per_second: u32,
    /// Most HTTP requests processed at once (jsonrpsee's connection limit; HTTP 429 above).
    pub max_connections: u32,
    /// Pin the server thread to this CPU.
    pub cpu: Option<usize>,
}

impl RpcConfig {
    /// The default limits for `chain`, listening on `listen`.
    pub fn new(listen: SocketAddr, chain: ChainInfo) -> RpcConfig {
        RpcConfig {
            listen,
            chain,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
            max_batch_requests: DEFAULT_MAX_BATCH_REQUESTS,
            requests_per_second: DEFAULT_REQUESTS_PER_SECOND,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            cpu: None,
        }
    }
}

/// A token bucket: at most `rate` calls per second, bursts up to one second's worth.
#[derive(Debug)]
pub struct RateLimiter {
    rate: f64,
    state: Mutex<(f64, Instant)>,
}

impl RateLimiter {
    /// At most `per_second` calls per second (0: unlimited).
    pub fn new(per_second: u32) -> RateLimiter {
        RateLimiter {
            rate: f64::from(per_second),
            state: Mutex::new((f64::from(per_second), Instant::now())),
        }
    }

    /// Takes one token if there is one.
    pub fn try_take(&self, now: Instant) -> bool {
        if self.rate == 0.0 {
            return true;
        }
        let Ok(mut state) = self.state.lock() else {
            return true;
        };
        let (tokens, last) = &mut *state;
        let elapsed = now.saturating_duration_since(*last).as_secs_f64();
        *tokens = (*tokens + elapsed * self.rate).min(self.rate);
        *last = now.max(*last);
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// A running server.
#[derive(Debug)]
pub struct RpcServer {
    /// The address it listens on (the port chosen when `listen` had port 0).
    pub local_addr: SocketAddr,
    /// The server thread; it ends once the stop flag is set.
    pub thread: std::thread::JoinHandle<()>,
}

/// Binds `config.listen` and serves JSON-RPC on a new thread until `stop` is set. A bind
/// error is returned, naming the address.
pub fn start(
    config: RpcConfig,
    bridge: RpcBridge,
    stop: Arc<AtomicBool>,
) -> Result<RpcServer, String> {
    let listener = std::net::TcpListener::bind(config.listen)
        .map_err(|e| format!("JSON-RPC cannot listen on {}: {e}", config.listen))?;
    listener
        .set_nonblocking(true)
        .map_err(|e| format!("JSON-RPC listener on {}: {e}", config.listen))?;
    let local_addr = listener
        .local_addr()
        .map_err(|e| format!("JSON-RPC listener on {}: {e}", config.listen))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
        .map_err(|e| format!("JSON-RPC runtime: {e}"))?;
    let thread = std::thread::Builder::new()
        .name("rpc".into())
        .spawn(move || {
            if let Some(cpu) = config.cpu {
                pin_current_thread(cpu);
            }
            runtime.block_on(serve(config, bridge, listener, stop));
        })
        .map_err(|e| format!("JSON-RPC thread: {e}"))?;
    Ok(RpcServer { local_addr, thread })
}

/// The jsonrpsee server settings of `config`: body, response and batch limits, requests in
/// flight, HTTP only.
pub fn server_config(config: &RpcConfig) -> jsonrpsee::server::ServerConfig {
    use jsonrpsee::server::{BatchRequestConfig, ServerConfig};
    ServerConfig::builder()
        .max_request_body_size(config.max_body_bytes)
        .max_response_body_size(config.max_response_bytes)
        .max_connections(config.max_connections)
        .set_batch_request_config(BatchRequestConfig::Limit(config.max_batch_requests))
        .http_only()
        .build()
}

async fn serve(
    config: RpcConfig,
    bridge: RpcBridge,
    listener: std::net::TcpListener,
    stop: Arc<AtomicBool>,
) {
    use jsonrpsee::server::Server;
    let server_config = server_config(&config);
    let server = match Server::builder()
        .set_config(server_config)
        .build_from_tcp(listener)
    {
        Ok(server) => server,
        Err(e) => {
            tracing::error!(error = %e, "JSON-RPC server did not start");
            return;
        }
    };
    let module = match methods::module(&config, bridge) {
        Ok(module) => module,
        Err(e) => {
            tracing::error!(error = %e, "JSON-RPC methods");
            return;
        }
    };
    let handle = server.start(module);
    tracing::info!(listen = %config.listen, "JSON-RPC serving");
    while !stop.load(Ordering::Relaxed) {
        tokio::time::sleep(STOP_POLL).await;
    }
    let _ = handle.stop();
    handle.stopped().await;
}

/// Pins the calling thread to `cpu` (logs and goes on unpinned if it cannot).
fn pin_current_thread(cpu: usize) {
    // SAFETY: cpu_set_t is plain data; CPU_SET writes within it for cpu < CPU_SETSIZE.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if cpu >= libc::CPU_SETSIZE as usize {
            tracing::warn!(cpu, "JSON-RPC thread not pinned: no such CPU");
            return;
        }
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            tracing::warn!(cpu, "JSON-RPC thread not pinned: sched_setaffinity failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rate_limiter_allows_a_second_of_burst_then_refills() {
        let limiter = RateLimiter::new(10);
        let t0 = Instant::now();
        assert_eq!((0..20).filter(|_| limiter.try_take(t0)).count(), 10);
        assert!(!limiter.try_take(t0));
        assert!(
            limiter.try_take(t0 + Duration::from_millis(150)),
            "refilled"
        );
        let unlimited = RateLimiter::new(0);
        assert!((0..1000).all(|_| unlimited.try_take(t0)));
    }

    #[test]
    fn a_busy_address_is_refused_with_its_name() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = taken.local_addr().expect("addr");
        let genesis_like = ChainInfo {
            chain_id: 1,
            execution: ExecutionMode::Transfer,
            council_node_ids: vec![[0; 20]],
            committee_size: 1,
            genesis_header: crate::store::fixtures::genesis_header(),
        };
        let (bridge, _inbox) = RpcBridge::new(4);
        let err = start(
            RpcConfig::new(addr, genesis_like),
            bridge,
            Arc::new(AtomicBool::new(true)),
        )
        .expect_err("address in use");
        assert!(err.contains(&addr.to_string()), "{err}");
    }
}
